//! `dhis2ctl refresh STAGING --from PRODUCTION`: staging gets production's latest backup (a
//! `Dhis2Restore` over staging), so what is tested before a promotion is what production holds.
//! Naming staging is the consent to overwrite it; a production instance is never refreshed
//! (`dhis2ctl restore … --confirm-overwrite … --approved-by …` is the deliberate way).

use std::process::ExitCode;

use clap::Args;
use kube::api::Api;

use crate::crd::Dhis2Instance;
use crate::crd::dhis2_instance::Environment;

use super::OutputFormat;
use super::cluster_backup::{ClusterRestoreArgs, restore};
use super::kube_access::{ClusterError, KubeArgs, api_error, connect};

#[derive(Debug, Args)]
pub struct RefreshArgs {
    /// The instance to overwrite (staging, training; never production).
    pub instance: String,
    /// The instance whose backup it gets (usually production).
    #[arg(long = "from", value_name = "INSTANCE")]
    pub from: String,
    /// The namespace of --from, when it is not this one (-n); the repository's Secrets must
    /// exist in this namespace too.
    #[arg(long, value_name = "NAMESPACE")]
    pub from_namespace: Option<String>,
    /// Which backup: a Dhis2Backup's name, a backup id, or `latest`.
    #[arg(long, default_value = "latest")]
    pub backup: String,
    /// Do not ask DHIS2 to regenerate analytics tables afterwards.
    #[arg(long)]
    pub no_analytics: bool,
    /// Refresh without first checking that the database server has room for the restored
    /// database beside the current one (spec.skipSpaceCheck).
    #[arg(long)]
    pub skip_space_check: bool,
    #[command(flatten)]
    pub kube: KubeArgs,
    /// Follow the restore until it completes or fails.
    #[arg(long)]
    pub wait: bool,
}

/// Why `refresh` will not overwrite the instance (pure).
pub fn refresh_refusal(
    instance: &str,
    from: &str,
    same_namespace: bool,
    environment: Option<Environment>,
) -> Option<String> {
    if instance == from && same_namespace {
        return Some(format!(
            "{instance} cannot be refreshed from itself: name the instance whose backup it gets in --from"
        ));
    }
    match environment {
        None => Some(format!(
            "Dhis2Instance {instance} does not exist: refresh overwrites an existing instance; `dhis2ctl restore latest --from {from} --to {instance}` makes a new one"
        )),
        Some(Environment::Production) => Some(format!(
            "Dhis2Instance {instance} is a production instance and is never refreshed: to overwrite it use `dhis2ctl restore BACKUP --from {from} --to {instance} --confirm-overwrite {instance} --approved-by WHO`"
        )),
        Some(_) => None,
    }
}

pub async fn refresh(args: RefreshArgs, output: OutputFormat) -> Result<ExitCode, ClusterError> {
    let (client, ns) = connect(&args.kube).await?;
    let target = Api::<Dhis2Instance>::namespaced(client, &ns)
        .get_opt(&args.instance)
        .await
        .map_err(api_error)?;
    let same_namespace = args
        .from_namespace
        .as_ref()
        .is_none_or(|other| *other == ns);
    if let Some(why) = refresh_refusal(
        &args.instance,
        &args.from,
        same_namespace,
        target.map(|t| t.spec.environment),
    ) {
        return Err(ClusterError::Refused(why));
    }
    restore(
        ClusterRestoreArgs {
            backup: Some(args.backup),
            point_in_time: None,
            from: args.from,
            from_namespace: args.from_namespace,
            to: args.instance.clone(),
            database: None,
            confirm_overwrite: Some(args.instance),
            approved_by: None,
            no_analytics: args.no_analytics,
            skip_space_check: args.skip_space_check,
            kube: args.kube,
            wait: args.wait,
        },
        output,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_existing_instance_other_than_production_and_the_source_is_refreshed() {
        assert_eq!(
            refresh_refusal("hmis-staging", "hmis", true, Some(Environment::Staging)),
            None
        );
        assert_eq!(
            refresh_refusal("hmis-training", "hmis", true, Some(Environment::Training)),
            None
        );
        let why =
            refresh_refusal("hmis", "hmis-staging", true, Some(Environment::Production)).unwrap();
        assert!(
            why.contains("production") && why.contains("--approved-by"),
            "{why}"
        );
        let why = refresh_refusal("hmis-staging", "hmis", true, None).unwrap();
        assert!(
            why.contains("does not exist") && why.contains("--to hmis-staging"),
            "{why}"
        );
        let why = refresh_refusal("hmis", "hmis", true, Some(Environment::Staging)).unwrap();
        assert!(why.contains("--from"), "{why}");
        // The same name in another namespace is another instance.
        assert_eq!(
            refresh_refusal("hmis", "hmis", false, Some(Environment::Staging)),
            None
        );
    }
}
