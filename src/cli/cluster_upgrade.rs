//! `dhis2ctl upgrade INSTANCE --to VERSION`: checks the request against the instance, prints the
//! plan, and (without `--dry-run`) declares the intent by patching `spec.version`; the operator
//! upgrades. `--wait` follows `status.upgrade` until the upgrade ends.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde::Serialize;
use serde_json::json;

use crate::crd::backup_common::RunPhase;
use crate::crd::dhis2_database::DatabaseProvider;
use crate::crd::upgrade::UpgradeRecord;
use crate::crd::{Dhis2Backup, Dhis2Database, Dhis2Instance};
use crate::output::{OutputFormat, render_structured};
use crate::postgres::DatabaseTarget;
use crate::rules::deployed_version::deployed_of;
use crate::rules::duration::parse_duration;
use crate::rules::names::{ACCEPT_MIGRATED_DATABASE_ANNOTATION, dedicated_database_name};
use crate::upgrade::{
    CurrentVersion, Dhis2Version, UpgradeCheck, UpgradeError, check_upgrade, read_database_facts,
};

use super::CliError;
use super::kube_access::{ClusterError, KubeArgs, api_error, connect};
use super::upgrade_plan::{
    Intent, LastBackup, Progress, Refusal, UpgradePlan, UpgradeRequest, accept_target, assess,
    plan, progress, render_plan,
};

/// How long `--retry` waits for the operator to clear the finished upgrade.
const CLEAR_TIMEOUT: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(250);

#[derive(Debug, Args)]
pub struct ClusterUpgradeArgs {
    /// The Dhis2Instance to upgrade.
    #[arg(value_name = "INSTANCE", required = true)]
    pub instance: Option<String>,
    /// The DHIS2 version to upgrade to, e.g. 2.42.1 (the dhis2/core image tag).
    #[arg(
        long,
        value_name = "VERSION",
        required_unless_present = "accept_migrated_database"
    )]
    pub to: Option<String>,
    /// After an upgrade and its rollback both failed, DHIS2 stays stopped because its database
    /// may be half-migrated. Accept the database as that upgrade left it and start the previous
    /// version on it (only when a restore of the pre-upgrade backup is not possible: restoring
    /// it is the safe way).
    #[arg(long, conflicts_with_all = ["to", "dry_run", "retry", "approve", "wait", "image"])]
    pub accept_migrated_database: bool,
    /// Print the plan (and run the checks with --database-url) and change nothing.
    #[arg(long, conflicts_with_all = ["wait", "retry", "approve"])]
    pub dry_run: bool,
    /// Approve the upgrade as WHO (spec.upgrade.approvedBy, approvedVersion: VERSION); needed
    /// with spec.upgrade.policy: Manual, recorded in the history either way.
    #[arg(long, value_name = "WHO")]
    pub approve: Option<String>,
    /// The image of the new version, when the instance sets spec.image (a private registry).
    #[arg(long, value_name = "IMAGE")]
    pub image: Option<String>,
    /// Retry a refused or failed upgrade to VERSION: spec.version goes back to the running
    /// version until the operator clears it, then to VERSION again.
    #[arg(long)]
    pub retry: bool,
    /// Follow the upgrade until it ends (exit 1 unless it succeeded).
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up waiting after this long (90s, 30m, 2h, 1d); the upgrade goes on.
    #[arg(long, requires = "wait", value_parser = |text: &str| parse_duration(text, "--timeout"))]
    pub timeout: Option<Duration>,
    /// Also run the operator's database checks here, against this database
    /// (postgresql://USER@HOST:PORT/DATABASE; PGPASSWORD for the password). Only reads.
    #[arg(long)]
    pub database_url: Option<String>,
    #[command(flatten)]
    pub kube: KubeArgs,
}

/// What `-o json|yaml` prints.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct UpgradeReport {
    #[serde(skip_serializing_if = "Option::is_none")]
    plan: Option<UpgradePlan>,
    dry_run: bool,
    /// What was changed on the instance, in order (`spec.version: 2.42.1`, …).
    changed: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<String>,
    /// With --wait: how the upgrade ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    outcome: Option<UpgradeRecord>,
}

/// Sets `dhis2operator.io/accept-migrated-database` to the failed upgrade's start: the
/// operator lets DHIS2 run again on the database that upgrade left.
async fn accept_migrated_database(
    args: ClusterUpgradeArgs,
    output: OutputFormat,
) -> Result<ExitCode, CliError> {
    let Some(name) = args.instance.clone() else {
        return Err(usage("name the instance".into()));
    };
    let (client, ns) = connect(&args.kube).await?;
    let instances: Api<Dhis2Instance> = Api::namespaced(client, &ns);
    let instance = get_instance(&instances, &name, &ns).await?;
    let started_at = accept_target(&instance).map_err(refused)?;
    let patch =
        json!({"metadata": {"annotations": {ACCEPT_MIGRATED_DATABASE_ANNOTATION: started_at}}});
    instances
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(api_error)?;
    let report = UpgradeReport {
        plan: None,
        dry_run: false,
        changed: vec![format!(
            "{ACCEPT_MIGRATED_DATABASE_ANNOTATION}: {started_at}"
        )],
        note: Some(format!(
            "accepted: DHIS2 of {name} starts again on the database as the failed upgrade left it"
        )),
        outcome: None,
    };
    finish(
        output,
        &report,
        &format!(
            "accepted: the operator starts DHIS2 of {name} again on the database as the failed upgrade (started {started_at}) left it. Follow it with `dhis2ctl status {name}`"
        ),
    );
    Ok(ExitCode::SUCCESS)
}

fn usage(text: String) -> CliError {
    CliError::Upgrade(UpgradeError::Usage(text))
}

fn refused(refusal: Refusal) -> CliError {
    CliError::Cluster(match refusal {
        Refusal::Usage(why) => ClusterError::Refused(why),
        Refusal::NotNow(why) => ClusterError::NotNow(why),
    })
}

pub async fn upgrade(args: ClusterUpgradeArgs, output: OutputFormat) -> Result<ExitCode, CliError> {
    if args.accept_migrated_database {
        return accept_migrated_database(args, output).await;
    }
    // The command line first: nothing is read or changed when it is wrong.
    let (Some(name), Some(to_text)) = (args.instance.clone(), args.to.clone()) else {
        return Err(usage("name the instance and --to VERSION".into()));
    };
    let to_text = to_text.trim().to_string();
    let to = Dhis2Version::parse(&to_text).map_err(|e| usage(format!("--to: {e}")))?;
    if args.approve.as_deref().is_some_and(|w| w.trim().is_empty()) {
        return Err(usage(
            "--approve: name who approves the upgrade, e.g. --approve \"Dr Sok Chenda\"".into(),
        ));
    }
    if args.image.as_deref().is_some_and(|i| i.trim().is_empty()) {
        return Err(usage("--image: give the image of the new version".into()));
    }
    let database = args
        .database_url
        .as_deref()
        .map(|url| DatabaseTarget::parse(url, "--database-url"))
        .transpose()
        .map_err(|e| CliError::Upgrade(e.into()))?;

    let (client, ns) = connect(&args.kube).await?;
    let instances: Api<Dhis2Instance> = Api::namespaced(client.clone(), &ns);
    let instance = get_instance(&instances, &name, &ns).await?;
    let req = UpgradeRequest {
        to_text: &to_text,
        to: &to,
        approve: args.approve.as_deref().map(str::trim),
        image: args.image.as_deref().map(str::trim),
        retry: args.retry,
        database_provider: database_provider(&client, &ns, &instance).await,
    };
    let intent = assess(&instance, &req).map_err(refused)?;
    let mut report = UpgradeReport {
        plan: None,
        dry_run: args.dry_run,
        changed: Vec::new(),
        note: None,
        outcome: None,
    };
    let say = |text: &str| {
        if !output.is_machine() {
            super::print_stdout(text);
        }
    };

    match &intent {
        Intent::NothingToDo(why) => {
            report.note = Some(why.clone());
            finish(output, &report, why);
            return Ok(ExitCode::SUCCESS);
        }
        Intent::SetBack { version, .. } => {
            let text = format!(
                "--to {to_text} is the version {name} runs: spec.version goes back to {version}, which ends the upgrade that was asked for (a refused or failed one stays in `dhis2ctl history {name}`)"
            );
            report.note = Some(text.clone());
            say(&text);
        }
        Intent::Approve => {
            let text = format!(
                "the upgrade of {name} to {to_text} waits for an approval: approving it as {}",
                req.approve.unwrap_or_default()
            );
            report.note = Some(text.clone());
            say(&text);
        }
        Intent::Upgrade | Intent::Retry { .. } => {
            let local = match &database {
                Some(db) => Some(local_check(db, &instance, &to).await?),
                None => None,
            };
            let last = last_backup(&client, &ns, &name).await?;
            let p = plan(&instance, &ns, &req, last.as_ref(), local);
            say(&render_plan(&p));
            let blocked = p.local_check.as_ref().is_some_and(UpgradeCheck::is_blocked);
            report.plan = Some(p);
            if blocked && !args.dry_run {
                finish(output, &report, "");
                return Err(CliError::Cluster(ClusterError::NotNow(format!(
                    "the checks block the upgrade to {to_text} (above); nothing was changed: fix them, then run this again"
                ))));
            }
            if args.dry_run {
                finish(output, &report, "\ndry run: nothing was changed");
                return Ok(if blocked {
                    ExitCode::from(super::EXIT_FAILURE)
                } else {
                    ExitCode::SUCCESS
                });
            }
        }
    }
    if args.dry_run {
        finish(output, &report, "dry run: nothing was changed");
        return Ok(ExitCode::SUCCESS);
    }

    let approval = req
        .approve
        .map(|who| json!({"approvedBy": who, "approvedVersion": to_text}));
    match &intent {
        // Returned above.
        Intent::NothingToDo(_) => {}
        Intent::SetBack { version, image } => {
            patch_spec(
                &instances,
                &name,
                spec_patch(version, image.as_deref(), None),
            )
            .await?;
            report.changed.push(format!("spec.version: {version}"));
        }
        Intent::Approve => {
            let upgrade = approval.clone().unwrap_or_default();
            patch_spec(&instances, &name, json!({"upgrade": upgrade})).await?;
            report.changed.push(format!(
                "spec.upgrade.approvedBy: {}",
                req.approve.unwrap_or_default()
            ));
        }
        Intent::Upgrade => {
            patch_spec(
                &instances,
                &name,
                spec_patch(&to_text, req.image, approval.clone()),
            )
            .await?;
            report.changed.push(format!("spec.version: {to_text}"));
            if let Some(who) = req.approve {
                report
                    .changed
                    .push(format!("spec.upgrade.approvedBy: {who}"));
            }
            say(&format!(
                "\nspec.version of {name} is now {to_text}: the operator upgrades it."
            ));
        }
        Intent::Retry {
            back,
            back_image,
            again_image,
        } => {
            say(&format!(
                "\n--retry: spec.version goes back to {back} until the operator clears the ended upgrade, then to {to_text} again"
            ));
            patch_spec(
                &instances,
                &name,
                spec_patch(back, back_image.as_deref(), None),
            )
            .await?;
            report.changed.push(format!("spec.version: {back}"));
            wait_cleared(&instances, &name, &to_text, back).await?;
            say(&format!("cleared; spec.version: {to_text} again"));
            patch_spec(
                &instances,
                &name,
                spec_patch(&to_text, again_image.as_deref(), approval.clone()),
            )
            .await?;
            report.changed.push(format!("spec.version: {to_text}"));
            if let Some(who) = req.approve {
                report
                    .changed
                    .push(format!("spec.upgrade.approvedBy: {who}"));
            }
        }
    }
    let manual = instance
        .spec
        .upgrade
        .as_ref()
        .is_some_and(|u| u.policy == crate::crd::upgrade::UpgradePolicy::Manual);
    let upgrading = matches!(intent, Intent::Upgrade | Intent::Retry { .. });
    let approved = report
        .plan
        .as_ref()
        .is_some_and(|p| p.approved_by.is_some());
    if upgrading && manual && !approved {
        let text = format!(
            "spec.upgrade.policy is Manual: the upgrade waits for an approval; give it with `dhis2ctl upgrade {name} --to {to_text} --approve NAME`"
        );
        say(&text);
        report.note = Some(text);
    }
    if !args.wait || matches!(intent, Intent::SetBack { .. }) {
        finish(output, &report, "");
        return Ok(ExitCode::SUCCESS);
    }
    let (succeeded, message, record) =
        follow(&instances, &name, &to_text, &instance, args.timeout, output).await?;
    report.outcome = record;
    finish(output, &report, &message);
    Ok(if succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(super::EXIT_FAILURE)
    })
}

/// Prints the report as JSON/YAML, or `text` (when not empty) for people.
fn finish(output: OutputFormat, report: &UpgradeReport, text: &str) {
    match render_structured(output, report) {
        Some(s) => super::print_stdout(&s),
        None if !text.is_empty() => super::print_stdout(text),
        None => {}
    }
}

async fn get_instance(
    api: &Api<Dhis2Instance>,
    name: &str,
    ns: &str,
) -> Result<Dhis2Instance, ClusterError> {
    api.get_opt(name)
        .await
        .map_err(api_error)?
        .ok_or_else(|| ClusterError::NotFound {
            name: name.to_string(),
            namespace: ns.to_string(),
        })
}

fn newest_record(instance: &Dhis2Instance) -> Option<UpgradeRecord> {
    instance
        .status
        .as_ref()
        .and_then(|s| s.upgrade_history.first().cloned())
}

fn spec_patch(
    version: &str,
    image: Option<&str>,
    approval: Option<serde_json::Value>,
) -> serde_json::Value {
    let mut spec = json!({"version": version});
    if let Some(image) = image {
        spec["image"] = json!(image);
    }
    if let Some(approval) = approval {
        spec["upgrade"] = approval;
    }
    spec
}

async fn patch_spec(
    api: &Api<Dhis2Instance>,
    name: &str,
    spec: serde_json::Value,
) -> Result<(), ClusterError> {
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({ "spec": spec })),
    )
    .await
    .map_err(api_error)?;
    Ok(())
}

/// The operator's checks, run here against `db` (they only read).
async fn local_check(
    db: &DatabaseTarget,
    instance: &Dhis2Instance,
    to: &Dhis2Version,
) -> Result<UpgradeCheck, CliError> {
    let from = deployed_of(instance).version;
    let from = Dhis2Version::parse(&from).map_err(|e| {
        ClusterError::NotNow(format!(
            "the running version '{from}' of {} is not a DHIS2 version ({e}); the checks cannot run",
            instance.name_any()
        ))
    })?;
    let facts = read_database_facts(db).await?;
    Ok(check_upgrade(&CurrentVersion::Release(from), to, &facts))
}

/// The newest completed Dhis2Backup of the instance that recorded how long it took.
async fn last_backup(
    client: &Client,
    ns: &str,
    instance: &str,
) -> Result<Option<LastBackup>, ClusterError> {
    let backups = Api::<Dhis2Backup>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .map_err(api_error)?
        .items;
    Ok(backups
        .into_iter()
        .filter(|b| b.spec.instance_ref == instance)
        .filter_map(|b| {
            let st = b.status.clone()?;
            let seconds = st
                .duration_seconds
                .filter(|_| st.phase == Some(RunPhase::Completed))?;
            Some((b.metadata.creation_timestamp.clone(), b.name_any(), seconds))
        })
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, name, duration_seconds)| LastBackup {
            name,
            duration_seconds,
        }))
}

/// `--retry`: waits until the operator no longer shows the ended upgrade to `to`.
async fn wait_cleared(
    api: &Api<Dhis2Instance>,
    name: &str,
    to: &str,
    back: &str,
) -> Result<(), ClusterError> {
    let deadline = tokio::time::Instant::now() + CLEAR_TIMEOUT;
    loop {
        let instance = api.get(name).await.map_err(api_error)?;
        let still = instance
            .status
            .and_then(|s| s.upgrade)
            .is_some_and(|u| crate::rules::deployed_version::same_version(&u.to_version, to));
        if !still {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(ClusterError::NotNow(format!(
                "--retry: the operator did not clear the ended upgrade to {to} within {} s (is it running?); spec.version of {name} is {back} now: run this again once `dhis2ctl history {name}` shows no upgrade in progress",
                CLEAR_TIMEOUT.as_secs()
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// `--wait`: follows status.upgrade with a spinner until the upgrade to `to` ends.
async fn follow(
    api: &Api<Dhis2Instance>,
    name: &str,
    to: &str,
    before: &Dhis2Instance,
    timeout: Option<Duration>,
    output: OutputFormat,
) -> Result<(bool, String, Option<UpgradeRecord>), ClusterError> {
    let newest_before = newest_record(before);
    let spinner = if output.is_machine() || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        indicatif::ProgressBar::hidden()
    } else {
        let bar = indicatif::ProgressBar::new_spinner().with_style(
            indicatif::ProgressStyle::with_template("{spinner} {elapsed:>4} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    };
    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    loop {
        let now = api.get(name).await.map_err(api_error)?;
        let status = now.status.clone().unwrap_or_default();
        match progress(
            status.upgrade.as_ref(),
            &status.upgrade_history,
            newest_before.as_ref(),
            to,
        ) {
            Progress::Ended { succeeded, message } => {
                spinner.finish_and_clear();
                let record = status
                    .upgrade_history
                    .first()
                    .filter(|r| Some(*r) != newest_before.as_ref())
                    .cloned();
                return Ok((succeeded, message, record));
            }
            Progress::Running(line) => {
                spinner.set_message(line.clone());
                if deadline.is_some_and(|d| tokio::time::Instant::now() > d) {
                    spinner.finish_and_clear();
                    return Err(ClusterError::NotNow(format!(
                        "--timeout: the upgrade of {name} to {to} has not ended ({line}); it goes on in the cluster: `dhis2ctl history {name}`"
                    )));
                }
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The provider of the instance's Dhis2Database; `None` when it cannot be read (absent, or the
/// user may not read Dhis2Databases): the plan then says what the copy does where it is made.
async fn database_provider(
    client: &Client,
    ns: &str,
    instance: &Dhis2Instance,
) -> Option<DatabaseProvider> {
    let name = instance
        .spec
        .database_ref
        .clone()
        .unwrap_or_else(|| dedicated_database_name(&instance.name_any()));
    Api::<Dhis2Database>::namespaced(client.clone(), ns)
        .get_opt(&name)
        .await
        .ok()
        .flatten()
        .map(|db| db.spec.provider)
}
