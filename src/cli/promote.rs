//! `dhis2ctl promote STAGING --to PRODUCTION [--approve WHO]`: asks the operator to take the
//! version staging has proven to production (a `Dhis2Promotion`), or approves the one that
//! exists, and shows each gate as the operator judged it.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;

use crate::crd::Dhis2Instance;
use crate::crd::dhis2_promotion::{Dhis2Promotion, Dhis2PromotionSpec, Dhis2PromotionStatus};
use crate::output::{OutputFormat, render_structured, render_table};
use crate::rules::duration::parse_duration;
use crate::upgrade::Dhis2Version;

use super::kube_access::{ClusterError, KubeArgs, api_error, connect};

#[derive(Debug, Args)]
pub struct PromoteArgs {
    /// The staging Dhis2Instance that proved the version.
    #[arg(value_name = "STAGING")]
    pub staging: String,
    /// The production Dhis2Instance to upgrade (in -n, where the promotion is made).
    #[arg(long = "to", value_name = "PRODUCTION")]
    pub to: String,
    /// The namespace of STAGING, when it is not production's (-n).
    #[arg(long, value_name = "NAMESPACE")]
    pub from_namespace: Option<String>,
    /// Approve taking the version to production, as WHO (recorded on production's upgrade).
    #[arg(long, value_name = "WHO")]
    pub approve: Option<String>,
    /// The version to promote (default: the version staging runs).
    #[arg(long, value_name = "VERSION")]
    pub version: Option<String>,
    /// How long staging must have run the version (72h, 3d).
    #[arg(long, default_value = "72h")]
    pub min_soak: String,
    /// How old production's newest backup may be.
    #[arg(long, default_value = "26h")]
    pub max_backup_age: String,
    #[command(flatten)]
    pub kube: KubeArgs,
}

/// The promotion's name: one per staging/production pair.
pub fn promotion_name(staging: &str, production: &str) -> String {
    let name = format!("{staging}-to-{production}");
    name.chars()
        .take(63)
        .collect::<String>()
        .trim_end_matches('-')
        .to_string()
}

fn check_arguments(args: &PromoteArgs) -> Result<(), ClusterError> {
    parse_duration(&args.min_soak, "--min-soak").map_err(ClusterError::Refused)?;
    parse_duration(&args.max_backup_age, "--max-backup-age").map_err(ClusterError::Refused)?;
    if let Some(v) = &args.version {
        Dhis2Version::parse(v).map_err(|e| ClusterError::Refused(format!("--version: {e}")))?;
    }
    if args.approve.as_deref().is_some_and(|w| w.trim().is_empty()) {
        return Err(ClusterError::Refused(
            "--approve: give the name of the person who approves".into(),
        ));
    }
    if args.staging == args.to && args.from_namespace.is_none() {
        return Err(ClusterError::Refused(format!(
            "--to {}: production must be another instance than staging",
            args.to
        )));
    }
    Ok(())
}

pub async fn promote(args: PromoteArgs, output: OutputFormat) -> Result<ExitCode, ClusterError> {
    check_arguments(&args)?;
    let (client, ns) = connect(&args.kube).await?;
    let staging_ns = args.from_namespace.clone().unwrap_or(ns.clone());
    for (name, namespace) in [(&args.staging, &staging_ns), (&args.to, &ns)] {
        let instances: Api<Dhis2Instance> = Api::namespaced(client.clone(), namespace);
        if instances.get_opt(name).await.map_err(api_error)?.is_none() {
            return Err(ClusterError::NotFound {
                name: name.clone(),
                namespace: namespace.clone(),
            });
        }
    }
    let api: Api<Dhis2Promotion> = Api::namespaced(client, &ns);
    let name = promotion_name(&args.staging, &args.to);
    let existing = api.get_opt(&name).await.map_err(api_error)?;
    let phase = existing
        .as_ref()
        .and_then(|p| p.status.as_ref()?.phase.clone());
    let finished = matches!(phase.as_deref(), Some("Succeeded") | Some("Failed"));
    if finished {
        // A finished promotion is history: a new one starts afresh.
        api.delete(&name, &Default::default())
            .await
            .map_err(api_error)?;
        wait_gone(&api, &name).await?;
    }
    let spec = Dhis2PromotionSpec {
        from: args.staging.clone(),
        from_namespace: args.from_namespace.clone(),
        to: args.to.clone(),
        version: args.version.clone(),
        min_soak: args.min_soak.clone(),
        max_backup_age: args.max_backup_age.clone(),
        approved_by: args.approve.clone(),
    };
    if existing.is_some() && !finished {
        let patch = json!({"spec": spec});
        api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(api_error)?;
    } else {
        api.create(&PostParams::default(), &Dhis2Promotion::new(&name, spec))
            .await
            .map_err(api_error)?;
    }
    // The operator judges the gates within a moment; show what it found.
    let status = wait_for_judgement(&api, &name).await?;
    if let Some(text) = render_structured(output, &status) {
        println!("{text}");
        return Ok(ExitCode::SUCCESS);
    }
    println!("{}", render_promotion(&name, &status));
    Ok(ExitCode::SUCCESS)
}

async fn wait_gone(api: &Api<Dhis2Promotion>, name: &str) -> Result<(), ClusterError> {
    for _ in 0..100 {
        if api.get_opt(name).await.map_err(api_error)?.is_none() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(ClusterError::NotNow(format!(
        "Dhis2Promotion {name} is still being deleted; run the command again"
    )))
}

/// The status once the operator has judged the current spec (up to 20 s; then as it is).
async fn wait_for_judgement(
    api: &Api<Dhis2Promotion>,
    name: &str,
) -> Result<Dhis2PromotionStatus, ClusterError> {
    let mut status = Dhis2PromotionStatus::default();
    for _ in 0..80 {
        let p = api.get(name).await.map_err(api_error)?;
        status = p.status.clone().unwrap_or_default();
        if status.observed_generation.is_some()
            && status.observed_generation == p.metadata.generation
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(status)
}

pub fn render_promotion(name: &str, status: &Dhis2PromotionStatus) -> String {
    let rows = status
        .gates
        .iter()
        .map(|g| {
            vec![
                g.name.clone(),
                if g.passed { "passed" } else { "waiting" }.to_string(),
                g.message.clone(),
            ]
        })
        .collect();
    let mut text = format!(
        "Dhis2Promotion {name}: {} {}\n",
        status
            .phase
            .as_deref()
            .unwrap_or("Pending (the operator has not judged it yet)"),
        status.version.as_deref().unwrap_or("")
    );
    if !status.gates.is_empty() {
        text.push_str(&render_table(&["GATE", "STATE", "DETAIL"], rows));
        text.push('\n');
    }
    if let Some(m) = &status.message {
        text.push_str(m);
    }
    text
}
