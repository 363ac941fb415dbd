//! What `dhis2ctl upgrade INSTANCE --to VERSION` may ask of an instance now, and the plan it
//! prints (pure): the same rules the operator's state machine (`operator::upgrade_steps`)
//! follows, said before anything is changed.

use serde::Serialize;

use crate::crd::Dhis2Instance;
use crate::crd::dhis2_backup::Dhis2BackupSpec;
use crate::crd::dhis2_database::DatabaseProvider;
use crate::crd::upgrade::{
    UpgradeOutcome, UpgradePhase, UpgradePolicy, UpgradeRecord, UpgradeSpec, UpgradeStatus,
};
use crate::output::human_duration;
use crate::rules::deployed_version::deployed_of;
use crate::rules::deployed_version::{CRASH_LOOP_RESTARTS, Deployed, same_version};
use crate::rules::repository::{backup_repository, describe_repository};
use crate::rules::repository_protection::{RepositoryUse, check_protection};
use crate::upgrade::{Dhis2Version, UpgradeCheck};

/// What the command line asks for.
#[derive(Debug, Clone)]
pub struct UpgradeRequest<'a> {
    /// `--to` as typed (the image tag); already parsed into `to`.
    pub to_text: &'a str,
    pub to: &'a Dhis2Version,
    pub approve: Option<&'a str>,
    pub image: Option<&'a str>,
    pub retry: bool,
    /// The provider of the instance's Dhis2Database, when it could be read.
    pub database_provider: Option<DatabaseProvider>,
}

/// What the command does to the instance, once it may.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Intent {
    /// Nothing: DHIS2 runs that version and nothing else is asked for.
    NothingToDo(String),
    /// Set `spec.version` to the new version: the operator upgrades.
    Upgrade,
    /// The upgrade waits for an approval: set only `spec.upgrade.approvedBy`/`approvedVersion`.
    Approve,
    /// `spec.version` back to the running version: clears a refused or failed upgrade (or a
    /// request not started yet). `image` is the running image when `spec.image` is set.
    SetBack {
        version: String,
        image: Option<String>,
    },
    /// `--retry`: back to the running version, wait until the operator cleared the finished
    /// upgrade, then the new version again.
    Retry {
        back: String,
        back_image: Option<String>,
        again_image: Option<String>,
    },
}

/// Why the command changes nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The command line asks for what the operator refuses (exit 2).
    Usage(String),
    /// The instance's state does not allow it now (exit 1).
    NotNow(String),
}

fn phase_name(phase: UpgradePhase) -> String {
    format!("{phase:?}")
}

fn outcome_name(outcome: Option<UpgradeOutcome>) -> String {
    outcome
        .map(|o| format!("{o:?}"))
        .unwrap_or_else(|| "-".into())
}

/// The pre-upgrade backup that took `from` to `to`: the way back to `from`.
fn backup_before(history: &[UpgradeRecord], from: &str, to: &str) -> Option<String> {
    history
        .iter()
        .find(|r| {
            r.outcome == UpgradeOutcome::Succeeded
                && same_version(&r.from_version, from)
                && same_version(&r.to_version, to)
        })
        .and_then(|r| r.backup_id.clone())
}

/// Decides what the request does to `instance`, or why it does nothing.
pub fn assess(instance: &Dhis2Instance, req: &UpgradeRequest) -> Result<Intent, Refusal> {
    let name = instance.metadata.name.clone().unwrap_or_default();
    let status = instance.status.clone().unwrap_or_default();
    let deployed = deployed_of(instance);
    let to = req.to_text;
    let upgrade = status.upgrade.as_ref();

    if let Some(u) = upgrade.filter(|u| !u.phase.is_finished()) {
        if u.phase == UpgradePhase::AwaitingApproval
            && same_version(&u.to_version, to)
            && req.approve.is_some()
            && !req.retry
        {
            return Ok(Intent::Approve);
        }
        let mut why = format!(
            "an upgrade of {name} from {} to {} is in progress (phase {}: {}); nothing was changed. Follow it with `dhis2ctl history {name}`",
            u.from_version,
            u.to_version,
            phase_name(u.phase),
            u.message.as_deref().unwrap_or("-")
        );
        if u.phase == UpgradePhase::AwaitingApproval {
            why.push_str(&format!(
                "; it waits for an approval: `dhis2ctl upgrade {name} --to {} --approve WHO`",
                u.to_version
            ));
        }
        return Err(Refusal::NotNow(why));
    }

    if let Ok(running) = Dhis2Version::parse(&deployed.version)
        && *req.to < running
    {
        let from = &deployed.version;
        let way_back = match backup_before(&status.upgrade_history, to, from) {
            Some(id) => format!(
                "restore the backup taken before the upgrade to {from} (`dhis2ctl restore {id} --from {name} --to {name} --confirm-overwrite {name} --approved-by WHO`)"
            ),
            None => format!(
                "restore the backup taken before the upgrade to {from} (`dhis2ctl restore ID --from {name} --to {name} --confirm-overwrite {name} --approved-by WHO`; `dhis2ctl history {name}` names it)"
            ),
        };
        return Err(Refusal::Usage(format!(
            "--to {to} is older than the running DHIS2 {from}: DHIS2 cannot be downgraded once Flyway has migrated its database; keep {from}, or, to go back to {to}, {way_back} and then set spec.version: {to}"
        )));
    }

    let finished_same =
        upgrade.filter(|u| u.phase.is_finished() && same_version(&u.to_version, to));
    let spec_image_set = instance.spec.image.is_some();
    if req.retry {
        let Some(u) = finished_same else {
            return Err(Refusal::Usage(format!(
                "--retry: there is no refused or failed upgrade of {name} to {to} to retry; without --retry, `dhis2ctl upgrade {name} --to {to}` asks for it"
            )));
        };
        if u.outcome == Some(UpgradeOutcome::RollbackFailed) {
            return Err(Refusal::NotNow(format!(
                "the upgrade to {to} failed and so did its rollback: DHIS2 is stopped and its database may be half-migrated. Restore the pre-upgrade backup {} first (`dhis2ctl restore {} --from {name} --to {name} --confirm-overwrite {name} --approved-by WHO`), then retry",
                u.backup_id.as_deref().unwrap_or("-"),
                u.backup_id.as_deref().unwrap_or("ID"),
            )));
        }
        return Ok(Intent::Retry {
            back: deployed.version.clone(),
            back_image: spec_image_set.then(|| deployed.image.clone()),
            again_image: spec_image_set
                .then(|| req.image.map(str::to_string).unwrap_or(u.to_image.clone())),
        });
    }
    if let Some(u) = finished_same {
        return Err(Refusal::Usage(format!(
            "the upgrade of {name} to {to} ended {} ({}): {}. Fix what it names, then `dhis2ctl upgrade {name} --to {to} --retry` (sets spec.version back to {} until the operator clears it, then to {to} again)",
            phase_name(u.phase),
            outcome_name(u.outcome),
            u.message.as_deref().unwrap_or("no message"),
            deployed.version
        )));
    }

    if same_version(to, &deployed.version) {
        return if same_version(&instance.spec.version, &deployed.version) {
            Ok(Intent::NothingToDo(format!(
                "{name} already runs DHIS2 {}; nothing to do",
                deployed.version
            )))
        } else {
            Ok(Intent::SetBack {
                version: deployed.version.clone(),
                image: spec_image_set.then(|| deployed.image.clone()),
            })
        };
    }

    if spec_image_set && req.image.is_none() {
        return Err(Refusal::Usage(format!(
            "{name} sets spec.image ({}), which spec.version does not change: add --image IMAGE, the image of DHIS2 {to}",
            instance.spec.image.as_deref().unwrap_or_default()
        )));
    }
    if instance.spec.admin_secret_ref.is_none() {
        return Err(Refusal::NotNow(format!(
            "{name} has no spec.adminSecretRef: DHIS2 reports its version only to an authenticated /api/system/info, so the operator could never tell that {to} runs and would roll the upgrade back, discarding what users wrote to it. Create a Secret with the keys username and password of a DHIS2 superuser and set spec.adminSecretRef to its name; nothing was changed"
        )));
    }
    if let Err(why) = pre_upgrade_repository(instance) {
        return Err(Refusal::NotNow(format!(
            "the operator's pre-upgrade backup of {name} would fail, so the upgrade would stop DHIS2 for nothing: {why}"
        )));
    }
    Ok(Intent::Upgrade)
}

/// The failed upgrade whose database `--accept-migrated-database` accepts: its `startedAt`.
pub fn accept_target(instance: &Dhis2Instance) -> Result<String, Refusal> {
    let name = instance.metadata.name.clone().unwrap_or_default();
    match instance.status.as_ref().and_then(|s| s.upgrade.as_ref()) {
        Some(u)
            if u.outcome == Some(UpgradeOutcome::RollbackFailed) && u.recovered_by.is_none() =>
        {
            Ok(u.started_at.clone())
        }
        Some(u) if u.recovered_by.is_some() => Err(Refusal::NotNow(format!(
            "{name} is not held: {} already let DHIS2 run again; nothing was changed",
            u.recovered_by.as_deref().unwrap_or_default()
        ))),
        _ => Err(Refusal::Usage(format!(
            "--accept-migrated-database: {name} has no upgrade whose rollback failed; nothing was changed"
        ))),
    }
}

/// Where the pre-upgrade backup goes (the instance's `spec.backup.repository`), as people read it.
fn pre_upgrade_repository(instance: &Dhis2Instance) -> Result<String, String> {
    let backup = Dhis2BackupSpec {
        instance_ref: instance.metadata.name.clone().unwrap_or_default(),
        include_file_store: true,
        include_analytics: false,
        repository: None,
        retention: None,
        retention_time_zone: None,
        deadline_seconds: crate::crd::backup_common::DEFAULT_DEADLINE_SECONDS,
        verify: true,
        purpose: crate::crd::dhis2_backup::BackupPurpose::PreUpgrade,
    };
    let repository = backup_repository(&backup, &instance.spec)?;
    check_protection(
        repository,
        "the Dhis2Instance's spec.backup.repository",
        RepositoryUse::Read,
    )
    .map_err(|why| {
        format!("the operator could not restore the pre-upgrade backup to roll back: {why}")
    })?;
    let mut text = describe_repository(repository);
    if repository.encryption.is_some() {
        text.push_str(" (encrypted)");
    }
    Ok(text)
}

/// The last completed backup of the instance: how long the pre-upgrade backup may take.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LastBackup {
    pub name: String,
    pub duration_seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DowntimeEstimate {
    /// The last completed backup's duration; the migration's is unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup_seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub based_on_backup: Option<String>,
    /// The migration is rolled back after this long (`spec.upgrade.timeoutSeconds`).
    pub migration_timeout_seconds: i64,
    pub text: String,
}

/// What the upgrade will do, in the order the operator does it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UpgradePlan {
    pub instance: String,
    pub namespace: String,
    pub from_version: String,
    pub to_version: String,
    pub from_image: String,
    pub to_image: String,
    pub policy: UpgradePolicy,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
    pub backup_repository: String,
    pub steps: Vec<String>,
    /// What the operator checks against the database before it stops DHIS2.
    pub operator_checks: Vec<String>,
    /// The same checks run here (`--database-url`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_check: Option<UpgradeCheck>,
    pub downtime: DowntimeEstimate,
    pub rollback: String,
    /// What `spec.upgrade.readOnlyDuringUpgrade` does for this instance, when it is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_only_copy: Option<String>,
}

/// The approval the upgrade will carry: `--approve`, else one already in the spec for `to`.
fn approval(settings: &UpgradeSpec, approve: Option<&str>, to: &str) -> Option<String> {
    approve.map(str::to_string).or_else(|| {
        settings
            .approved_by
            .clone()
            .filter(|_| {
                settings
                    .approved_version
                    .as_deref()
                    .is_some_and(|v| same_version(v, to))
            })
            .filter(|who| !who.trim().is_empty())
    })
}

fn downtime(last_backup: Option<&LastBackup>, timeout: i64) -> DowntimeEstimate {
    let backup = match last_backup {
        Some(b) => format!(
            "the pre-upgrade backup, about {} (the last completed backup, {}, took that; this one is also re-read to verify it)",
            human_duration(b.duration_seconds.round() as i64),
            b.name
        ),
        None => "the pre-upgrade backup (no completed backup of this instance to estimate it from)"
            .to_string(),
    };
    DowntimeEstimate {
        backup_seconds: last_backup.map(|b| b.duration_seconds),
        based_on_backup: last_backup.map(|b| b.name.clone()),
        migration_timeout_seconds: timeout,
        text: format!(
            "{backup} + the migration (unknown: minutes, or hours on a large database; rolled back after {}, spec.upgrade.timeoutSeconds)",
            human_duration(timeout)
        ),
    }
}

/// The plan of an upgrade of `instance` to `to` (an `Intent::Upgrade` or `Retry`).
pub fn plan(
    instance: &Dhis2Instance,
    namespace: &str,
    req: &UpgradeRequest,
    last_backup: Option<&LastBackup>,
    local_check: Option<UpgradeCheck>,
) -> UpgradePlan {
    let name = instance.metadata.name.clone().unwrap_or_default();
    let Deployed {
        version: from,
        image: from_image,
    } = deployed_of(instance);
    let to = req.to_text.to_string();
    let to_image = req
        .image
        .map(str::to_string)
        .or_else(|| {
            instance
                .status
                .as_ref()
                .and_then(|s| s.upgrade.as_ref())
                .filter(|u| req.retry && same_version(&u.to_version, &to))
                .map(|u| u.to_image.clone())
        })
        .unwrap_or_else(|| format!("dhis2/core:{to}"));
    let settings = instance.spec.upgrade.clone().unwrap_or_default();
    let approved_by = approval(&settings, req.approve, &to);
    let repository = pre_upgrade_repository(instance).unwrap_or_else(|why| why);
    let timeout = settings.timeout_seconds;
    let replicas = instance.spec.replicas;

    let mut steps = vec![format!(
        "Checking: the operator checks DHIS2 {to} against the database (below); DHIS2 {from} keeps running. A blocked check refuses the upgrade and changes nothing"
    )];
    match (settings.policy, &approved_by) {
        (UpgradePolicy::Manual, None) => steps.push(format!(
            "AwaitingApproval: spec.upgrade.policy is Manual: the upgrade waits until approved (`dhis2ctl upgrade {name} --to {to} --approve WHO`); DHIS2 {from} keeps running, and the checks run again once approved"
        )),
        (UpgradePolicy::Manual, Some(who)) => steps.push(format!(
            "AwaitingApproval: approved by {who} (spec.upgrade.policy is Manual); the checks run again"
        )),
        (UpgradePolicy::Automatic, _) => {}
    }
    steps.extend([
        format!(
            "Stopping: DHIS2 {from} is stopped ({replicas} replica(s) to 0): the downtime starts, nothing is written after the backup"
        ),
        format!(
            "BackingUp: a pre-upgrade Dhis2Backup into {repository}, re-read to verify it; if it fails or is not verified, DHIS2 {from} is started again on the untouched database"
        ),
        "Preparing: DHIS2's materialized SQL views are dropped (DHIS2 recreates them)".into(),
        format!(
            "Migrating: DHIS2 {to} ({to_image}) starts with one replica and Flyway migrates the database; done once /api/system/info reports {to}, then {replicas} replica(s)"
        ),
    ]);
    let operator_checks = vec![
        format!(
            "{to} is a known DHIS2 release, newer than {from}, and no release line is skipped that must not be"
        ),
        format!(
            "PostgreSQL, PostGIS and the extensions postgis, pg_trgm, btree_gin meet what {to} needs"
        ),
        "no failed migration in flyway_schema_history".into(),
        format!("none of the data DHIS2's migrations to {to} are known to fail on"),
    ];
    let rollback = format!(
        "If DHIS2 {to} does not report its version within {} or restarts {CRASH_LOOP_RESTARTS} times, the operator restores the pre-upgrade backup over {name} (a Dhis2Restore) and starts DHIS2 {from} again; the upgrade ends Failed (RolledBack). DHIS2 was stopped before the backup, so the backup holds everything written before the upgrade; what users write to DHIS2 {to} before the rollback is not in it, and stays only in the migrated database the restore puts aside (its name in the Dhis2Restore's status.replacedDatabase). The operator refuses the upgrade up front when it could not confirm {to} runs (spec.adminSecretRef) or could not read the backup back (an encryption key missing in the cluster)",
        human_duration(timeout)
    );
    let read_only_copy = settings.read_only_during_upgrade.then(|| {
        if req.database_provider == Some(DatabaseProvider::Cnpg) {
            format!(
                "spec.upgrade.readOnlyDuringUpgrade has no effect here: {name}'s database is a cnpg database, on which the operator makes no copy (CloudNativePG's application role may not create the copy's database), so users wait for DHIS2 {to} during the whole downtime; set it to false to say so"
            )
        } else {
            format!(
                "spec.upgrade.readOnlyDuringUpgrade: while DHIS2 {to} migrates, users read a copy of DHIS2 {from} made from the pre-upgrade backup (the Service points at it; nothing can be written there). It needs room for a second database on the same server and its own file store; a copy that cannot be made is reported in status.readOnlyCopy and the upgrade goes on without it"
            )
        }
    });
    UpgradePlan {
        instance: name,
        namespace: namespace.to_string(),
        from_version: from,
        to_version: to,
        from_image,
        to_image,
        policy: settings.policy,
        approved_by,
        backup_repository: repository,
        steps,
        operator_checks,
        local_check,
        downtime: downtime(last_backup, timeout),
        rollback,
        read_only_copy,
    }
}

pub fn render_plan(plan: &UpgradePlan) -> String {
    let mut text = format!(
        "Upgrade of {}/{}: DHIS2 {} → {} ({} → {})\nPolicy:       {:?}{}\nBackup into:  {}\n\nSteps (as the operator runs them):\n",
        plan.namespace,
        plan.instance,
        plan.from_version,
        plan.to_version,
        plan.from_image,
        plan.to_image,
        plan.policy,
        plan.approved_by
            .as_deref()
            .map(|w| format!(", approved by {w}"))
            .unwrap_or_default(),
        plan.backup_repository,
    );
    for (i, step) in plan.steps.iter().enumerate() {
        text.push_str(&format!("  {}. {step}\n", i + 1));
    }
    text.push_str("\nChecked against the database by the operator:\n");
    for check in &plan.operator_checks {
        text.push_str(&format!("  - {check}\n"));
    }
    match &plan.local_check {
        Some(check) => {
            text.push_str("\nThe same checks, run here (--database-url):\n");
            text.push_str(&super::check_render::render_check(check));
            text.push('\n');
        }
        None => text.push_str("  (give --database-url to run them here now)\n"),
    }
    text.push_str(&format!(
        "\nExpected downtime (an estimate): {}\n\nRollback: {}",
        plan.downtime.text, plan.rollback
    ));
    if let Some(copy) = &plan.read_only_copy {
        text.push_str(&format!("\n\nRead-only copy: {copy}"));
    }
    text
}

/// Where `--wait` stands: still going, or how the upgrade to `to` ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    /// The operator has not started it yet, or it runs: the spinner's line.
    Running(String),
    Ended {
        succeeded: bool,
        message: String,
    },
}

/// `newest_before`: the newest history record before the command changed `spec.version`; a
/// different newest record is this upgrade's end.
pub fn progress(
    upgrade: Option<&UpgradeStatus>,
    history: &[UpgradeRecord],
    newest_before: Option<&UpgradeRecord>,
    to: &str,
) -> Progress {
    if let Some(u) = upgrade.filter(|u| same_version(&u.to_version, to)) {
        if u.phase.is_finished() {
            return Progress::Ended {
                succeeded: false,
                message: format!(
                    "upgrade to {to} {} ({}): {}",
                    phase_name(u.phase),
                    outcome_name(u.outcome),
                    u.message.as_deref().unwrap_or("-")
                ),
            };
        }
        return Progress::Running(format!(
            "{} {} → {}: {}",
            phase_name(u.phase),
            u.from_version,
            u.to_version,
            u.message.as_deref().unwrap_or("")
        ));
    }
    match history.first() {
        Some(r) if Some(r) != newest_before && same_version(&r.to_version, to) => Progress::Ended {
            succeeded: r.outcome == UpgradeOutcome::Succeeded,
            message: format!(
                "upgrade {} → {} {:?}: {}",
                r.from_version,
                r.to_version,
                r.outcome,
                r.message.as_deref().unwrap_or("-")
            ),
        },
        _ => Progress::Running(format!(
            "waiting for the operator to start the upgrade to {to}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::dhis2_instance::Dhis2InstanceStatus;

    fn instance(
        spec_version: &str,
        deployed: &str,
        upgrade: Option<UpgradeStatus>,
    ) -> Dhis2Instance {
        let mut i: Dhis2Instance = serde_json::from_value(serde_json::json!({
            "apiVersion": "dhis2operator.io/v1alpha1", "kind": "Dhis2Instance",
            "metadata": {"name": "hmis", "namespace": "moh"},
            "spec": {"version": spec_version, "environment": "production", "replicas": 2,
                "adminSecretRef": "dhis2-admin",
                "backup": {"repository": {"s3": {"bucket": "moh-backups", "prefix": "hmis",
                    "credentialsSecretRef": "backup-s3"}}}}
        }))
        .unwrap();
        i.status = Some(Dhis2InstanceStatus {
            deployed_version: Some(deployed.into()),
            deployed_image: Some(format!("dhis2/core:{deployed}")),
            upgrade,
            ..Default::default()
        });
        i
    }

    fn upgrade(phase: UpgradePhase, to: &str, outcome: Option<UpgradeOutcome>) -> UpgradeStatus {
        UpgradeStatus {
            phase,
            from_version: "2.41.3".into(),
            to_version: to.into(),
            from_image: Some("dhis2/core:2.41.3".into()),
            to_image: format!("dhis2/core:{to}"),
            started_at: "2026-12-06T05:00:00Z".into(),
            phase_started_at: None,
            backup_name: None,
            backup_id: Some("20261206T050100Z-ab12".into()),
            restore_name: None,
            dropped_views: vec![],
            warnings: vec![],
            approved_by: None,
            outcome,
            failure_reason: None,
            new_version_answered_at: None,
            recovered_by: None,
            message: Some("the message".into()),
        }
    }

    fn ask<'a>(
        to: &'a str,
        v: &'a Dhis2Version,
        retry: bool,
        approve: Option<&'a str>,
    ) -> UpgradeRequest<'a> {
        UpgradeRequest {
            to_text: to,
            to: v,
            approve,
            image: None,
            retry,
            database_provider: None,
        }
    }

    #[test]
    fn a_newer_version_is_an_upgrade_and_its_plan_names_the_steps_in_order() {
        let i = instance("2.41.3", "2.41.3", None);
        let v = Dhis2Version::parse("2.42.0").unwrap();
        let req = ask("2.42.0", &v, false, None);
        assert_eq!(assess(&i, &req), Ok(Intent::Upgrade));
        let p = plan(
            &i,
            "moh",
            &req,
            Some(&LastBackup {
                name: "hmis-nightly-1".into(),
                duration_seconds: 250.0,
            }),
            None,
        );
        assert_eq!(p.backup_repository, "s3://moh-backups/hmis");
        let order: Vec<&str> = p
            .steps
            .iter()
            .map(|s| s.split(':').next().unwrap())
            .collect();
        assert_eq!(
            order,
            [
                "Checking",
                "Stopping",
                "BackingUp",
                "Preparing",
                "Migrating"
            ]
        );
        assert!(
            p.downtime.text.contains("about 4m 10s"),
            "{}",
            p.downtime.text
        );
        assert!(p.downtime.text.contains("2h 0m"), "{}", p.downtime.text);
        let text = render_plan(&p);
        assert!(text.contains("DHIS2 2.41.3 → 2.42.0"), "{text}");
        assert!(
            !text.contains("backup-s3"),
            "no secret names needed: {text}"
        );
    }

    #[test]
    fn the_plan_says_what_the_read_only_copy_does_and_that_it_does_nothing_on_cnpg() {
        let mut i = instance("2.41.3", "2.41.3", None);
        let v = Dhis2Version::parse("2.42.0").unwrap();
        let p = plan(&i, "moh", &ask("2.42.0", &v, false, None), None, None);
        assert_eq!(p.read_only_copy, None);
        assert!(!render_plan(&p).contains("Read-only copy"));
        i.spec.upgrade = Some(UpgradeSpec {
            read_only_during_upgrade: true,
            ..Default::default()
        });
        let mut req = ask("2.42.0", &v, false, None);
        req.database_provider = Some(DatabaseProvider::Managed);
        let text = render_plan(&plan(&i, "moh", &req, None, None));
        assert!(
            text.contains("Read-only copy: spec.upgrade.readOnlyDuringUpgrade: while DHIS2 2.42.0 migrates, users read a copy of DHIS2 2.41.3"),
            "{text}"
        );
        req.database_provider = Some(DatabaseProvider::Cnpg);
        let text = render_plan(&plan(&i, "moh", &req, None, None));
        assert!(text.contains("has no effect here"), "{text}");
        assert!(text.contains("set it to false"), "{text}");
    }

    #[test]
    fn manual_policy_waits_for_an_approval_unless_given() {
        let mut i = instance("2.41.3", "2.41.3", None);
        i.spec.upgrade = Some(UpgradeSpec {
            policy: UpgradePolicy::Manual,
            ..Default::default()
        });
        let v = Dhis2Version::parse("2.42.0").unwrap();
        let p = plan(&i, "moh", &ask("2.42.0", &v, false, None), None, None);
        assert!(p.steps[1].contains("--approve WHO"), "{:?}", p.steps);
        let p = plan(
            &i,
            "moh",
            &ask("2.42.0", &v, false, Some("Dr Sok")),
            None,
            None,
        );
        assert!(p.steps[1].contains("approved by Dr Sok"), "{:?}", p.steps);
        assert!(p.downtime.text.contains("no completed backup"));
    }

    #[test]
    fn a_downgrade_is_refused_with_the_way_back() {
        let mut i = instance("2.42.0", "2.42.0", None);
        i.status.as_mut().unwrap().upgrade_history = vec![UpgradeRecord {
            from_version: "2.41.3".into(),
            to_version: "2.42.0".into(),
            started_at: "t".into(),
            finished_at: "t".into(),
            outcome: UpgradeOutcome::Succeeded,
            backup_id: Some("20261206T050100Z-ab12".into()),
            approved_by: None,
            message: None,
        }];
        let v = Dhis2Version::parse("2.41.3").unwrap();
        let Err(Refusal::Usage(why)) = assess(&i, &ask("2.41.3", &v, false, None)) else {
            panic!("a downgrade must be refused");
        };
        assert!(why.contains("cannot be downgraded"), "{why}");
        assert!(
            why.contains("dhis2ctl restore 20261206T050100Z-ab12"),
            "{why}"
        );
    }

    #[test]
    fn an_upgrade_in_progress_is_refused_with_its_phase_but_an_approval_is_given() {
        let i = instance(
            "2.42.0",
            "2.41.3",
            Some(upgrade(UpgradePhase::Migrating, "2.42.0", None)),
        );
        let v = Dhis2Version::parse("2.42.0").unwrap();
        let Err(Refusal::NotNow(why)) = assess(&i, &ask("2.42.0", &v, false, None)) else {
            panic!("in progress");
        };
        assert!(why.contains("phase Migrating"), "{why}");
        let i = instance(
            "2.42.0",
            "2.41.3",
            Some(upgrade(UpgradePhase::AwaitingApproval, "2.42.0", None)),
        );
        assert_eq!(
            assess(&i, &ask("2.42.0", &v, false, Some("Dr Sok"))),
            Ok(Intent::Approve)
        );
        let Err(Refusal::NotNow(why)) = assess(&i, &ask("2.42.0", &v, false, None)) else {
            panic!("awaiting approval");
        };
        assert!(why.contains("--approve WHO"), "{why}");
    }

    #[test]
    fn a_failed_upgrade_is_retried_only_with_retry_and_never_after_a_failed_rollback() {
        let v = Dhis2Version::parse("2.42.0").unwrap();
        let failed = upgrade(
            UpgradePhase::Failed,
            "2.42.0",
            Some(UpgradeOutcome::RolledBack),
        );
        let i = instance("2.42.0", "2.41.3", Some(failed.clone()));
        let Err(Refusal::Usage(why)) = assess(&i, &ask("2.42.0", &v, false, None)) else {
            panic!("needs --retry");
        };
        assert!(why.contains("--retry"), "{why}");
        assert_eq!(
            assess(&i, &ask("2.42.0", &v, true, None)),
            Ok(Intent::Retry {
                back: "2.41.3".into(),
                back_image: None,
                again_image: None
            })
        );
        let mut broken = failed;
        broken.outcome = Some(UpgradeOutcome::RollbackFailed);
        let i = instance("2.42.0", "2.41.3", Some(broken));
        assert!(matches!(
            assess(&i, &ask("2.42.0", &v, true, None)),
            Err(Refusal::NotNow(_))
        ));
        let i = instance("2.41.3", "2.41.3", None);
        assert!(matches!(
            assess(&i, &ask("2.42.0", &v, true, None)),
            Err(Refusal::Usage(_))
        ));
    }

    #[test]
    fn the_running_version_is_nothing_to_do_or_clears_a_finished_upgrade() {
        let v = Dhis2Version::parse("2.41.3").unwrap();
        let i = instance("2.41.3", "2.41.3", None);
        assert!(matches!(
            assess(&i, &ask("2.41.3", &v, false, None)),
            Ok(Intent::NothingToDo(_))
        ));
        let i = instance(
            "2.42.0",
            "2.41.3",
            Some(upgrade(
                UpgradePhase::Refused,
                "2.42.0",
                Some(UpgradeOutcome::Refused),
            )),
        );
        assert_eq!(
            assess(&i, &ask("2.41.3", &v, false, None)),
            Ok(Intent::SetBack {
                version: "2.41.3".into(),
                image: None
            })
        );
    }

    #[test]
    fn an_image_in_the_spec_needs_the_new_image_and_a_repository_is_needed() {
        let v = Dhis2Version::parse("2.42.0").unwrap();
        let mut i = instance("2.41.3", "2.41.3", None);
        i.spec.image = Some("registry.moh.gov.kh/dhis2:2.41.3".into());
        let Err(Refusal::Usage(why)) = assess(&i, &ask("2.42.0", &v, false, None)) else {
            panic!("needs --image");
        };
        assert!(why.contains("--image"), "{why}");
        let mut i = instance("2.41.3", "2.41.3", None);
        i.spec.backup = None;
        let Err(Refusal::NotNow(why)) = assess(&i, &ask("2.42.0", &v, false, None)) else {
            panic!("needs a repository");
        };
        assert!(why.contains("spec.backup.repository"), "{why}");
    }

    #[test]
    fn an_upgrade_the_operator_could_not_confirm_or_roll_back_is_refused_with_the_fix() {
        let v = Dhis2Version::parse("2.42.0").unwrap();
        let mut i = instance("2.41.3", "2.41.3", None);
        i.spec.admin_secret_ref = None;
        let Err(Refusal::NotNow(why)) = assess(&i, &ask("2.42.0", &v, false, None)) else {
            panic!("needs an admin account");
        };
        assert!(why.contains("spec.adminSecretRef"), "{why}");

        let mut i = instance("2.41.3", "2.41.3", None);
        let repository = i.spec.backup.as_mut().unwrap().repository.as_mut().unwrap();
        repository.encryption = Some(crate::crd::backup_common::EncryptionSpec {
            recipients: vec![
                "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p".into(),
            ],
            ..Default::default()
        });
        let Err(Refusal::NotNow(why)) = assess(&i, &ask("2.42.0", &v, false, None)) else {
            panic!("needs a way back");
        };
        assert!(
            why.contains("could not restore the pre-upgrade backup"),
            "{why}"
        );
        assert!(why.contains("identitySecretRef"), "{why}");
    }

    #[test]
    fn only_a_failed_rollback_can_be_accepted() {
        let mut failed = upgrade(
            UpgradePhase::Failed,
            "2.42.0",
            Some(UpgradeOutcome::RollbackFailed),
        );
        failed.started_at = "2026-12-06T05:00:00Z".into();
        let i = instance("2.42.0", "2.41.3", Some(failed.clone()));
        assert_eq!(accept_target(&i), Ok("2026-12-06T05:00:00Z".into()));
        failed.recovered_by = Some("Dhis2Restore manual".into());
        let i = instance("2.42.0", "2.41.3", Some(failed));
        assert!(matches!(accept_target(&i), Err(Refusal::NotNow(_))));
        let rolled_back = upgrade(
            UpgradePhase::Failed,
            "2.42.0",
            Some(UpgradeOutcome::RolledBack),
        );
        let i = instance("2.42.0", "2.41.3", Some(rolled_back));
        assert!(matches!(accept_target(&i), Err(Refusal::Usage(_))));
    }

    #[test]
    fn waiting_ends_on_a_new_record_or_a_finished_status_for_this_version() {
        let record = |outcome| UpgradeRecord {
            from_version: "2.41.3".into(),
            to_version: "2.42.0".into(),
            started_at: "a".into(),
            finished_at: "b".into(),
            outcome,
            backup_id: None,
            approved_by: None,
            message: Some("done".into()),
        };
        let old = record(UpgradeOutcome::Refused);
        assert!(matches!(
            progress(None, std::slice::from_ref(&old), Some(&old), "2.42.0"),
            Progress::Running(_)
        ));
        let new = record(UpgradeOutcome::Succeeded);
        let mut newer = new.clone();
        newer.started_at = "c".into();
        assert!(matches!(
            progress(None, &[newer.clone(), old.clone()], Some(&old), "2.42.0"),
            Progress::Ended {
                succeeded: true,
                ..
            }
        ));
        let running = upgrade(UpgradePhase::BackingUp, "2.42.0", None);
        let Progress::Running(line) = progress(Some(&running), &[], None, "2.42.0") else {
            panic!("running");
        };
        assert!(line.starts_with("BackingUp 2.41.3 → 2.42.0"), "{line}");
        let failed = upgrade(
            UpgradePhase::Failed,
            "2.42.0",
            Some(UpgradeOutcome::RolledBack),
        );
        assert!(matches!(
            progress(Some(&failed), &[], None, "2.42.0"),
            Progress::Ended {
                succeeded: false,
                ..
            }
        ));
        // A finished upgrade to another version is not this one.
        let other = upgrade(
            UpgradePhase::Refused,
            "2.43.0",
            Some(UpgradeOutcome::Refused),
        );
        assert!(matches!(
            progress(Some(&other), &[], None, "2.42.0"),
            Progress::Running(_)
        ));
    }
}
