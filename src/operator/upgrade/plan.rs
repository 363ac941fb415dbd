//! What an upgrade of a `Dhis2Instance` does next (pure): from what `status.upgrade` records and
//! what the cluster shows, the one action to take and the status to record once it is done.
//! Every action is idempotent and recorded after it succeeded, so an operator killed at any
//! point resumes where it was and never makes a second backup or a second restore.
//!
//! Checking → (AwaitingApproval →) Stopping → BackingUp → Preparing → Migrating → done;
//! Migrating → RollingBack → Failed when the new version never answers; Refused when a check
//! blocks. DHIS2 is stopped *before* the backup: the backup is the way back, and nothing written
//! after it may be lost by a rollback.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};

use crate::crd::backup_common::RunPhase;
use crate::crd::upgrade::{
    UpgradeOutcome, UpgradePhase, UpgradePolicy, UpgradeRecord, UpgradeSpec, UpgradeStatus,
};
use crate::upgrade::{CheckOutcome, Dhis2Version, UpgradeCheck};

use crate::crd::dhis2_restore::RestorePhase;
use crate::rules::deployed_version::{CRASH_LOOP_RESTARTS, Deployed, same_version};
use crate::rules::names::ACCEPT_MIGRATED_DATABASE_ANNOTATION;

/// The pre-upgrade backup as the cluster shows it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BackupSeen {
    pub phase: Option<RunPhase>,
    pub backup_id: Option<String>,
    /// Re-read in full from the repository after it was written.
    pub verified: bool,
    pub failure_reason: Option<String>,
}

/// The rollback's restore as the cluster shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreSeen {
    pub phase: RestorePhase,
    pub message: Option<String>,
    /// The database the restore put aside (the migrated one, with whatever was written to it).
    pub replaced_database: Option<String>,
    /// The backup's database is in place (also when the restore failed after the swap).
    pub database_swapped: bool,
}

/// Whether the operator will be able to tell that the new version runs: DHIS2 reports its
/// version only to an authenticated `/api/system/info`, so without a working admin account every
/// upgrade would end in a rollback that discards what users wrote to the new version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Confirmation {
    /// The running DHIS2 answered the admin account with its version.
    Confirmed,
    /// The account cannot confirm anything: why, and the fix.
    Unusable(String),
    /// DHIS2 does not answer now (starting, no ready pod): ask again.
    NoAnswer(String),
}

/// What Checking reads besides the database: the safeguards an upgrade needs before DHIS2 is
/// stopped, since afterwards only a rollback brings it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Safeguards {
    pub confirmation: Confirmation,
    /// Whether the operator could restore the pre-upgrade backup (`Err`: why not, and the fix).
    pub way_back: Result<(), String>,
}

/// How long Checking may wait for the database or DHIS2 to answer; nothing was changed yet, so
/// the upgrade is refused and DHIS2 keeps running.
pub const CHECKING_DEADLINE_SECONDS: i64 = 15 * 60;
/// How long DHIS2's pods may take to go before the upgrade gives up (nothing touched yet).
pub const STOPPING_DEADLINE_SECONDS: i64 = 15 * 60;
/// Beyond the pre-upgrade backup's and the rollback restore's own `deadlineSeconds`: the
/// upgrade ends even when their controllers never record an end.
pub const DEADLINE_MARGIN_SECONDS: i64 = 30 * 60;

/// Everything the decision needs; the shell gathers only what the current phase asks for.
#[derive(Debug, Clone)]
pub struct UpgradeObserved<'a> {
    pub instance: &'a str,
    pub spec_version: &'a str,
    /// The image `spec.version` runs (`spec.image`, or `dhis2/core:<spec.version>`).
    pub spec_image: &'a str,
    pub deployed: &'a Deployed,
    pub upgrade: Option<&'a UpgradeStatus>,
    pub settings: &'a UpgradeSpec,
    pub now: DateTime<Utc>,
    /// Checking: the upgrade check against the database, or why it could not be read.
    pub check: Option<&'a Result<UpgradeCheck, String>>,
    /// DHIS2 pods that exist (running or not).
    pub dhis2_pods: usize,
    /// Restarts of the DHIS2 containers of the pods that exist.
    pub dhis2_restarts: i32,
    /// The version `/api/system/info` reports, when DHIS2 answers.
    pub reported_version: Option<&'a str>,
    /// BackingUp: the pre-upgrade backup (`None`: it does not exist).
    pub backup: Option<&'a BackupSeen>,
    /// RollingBack: the rollback's restore (`None`: it does not exist).
    pub restore: Option<&'a RestoreSeen>,
    /// Checking: the safeguards (`None`: not read yet).
    pub safeguards: Option<&'a Safeguards>,
    /// DHIS2 answers `/api/system/ping`: users may be writing to it.
    pub dhis2_answering: bool,
    /// After a failed rollback: a `Dhis2Restore` over the instance that restored its database
    /// since (Starting or Completed).
    pub recovery_restore: Option<&'a str>,
    /// The instance's `dhis2operator.io/accept-migrated-database` annotation.
    pub accepted_migrated_database: Option<&'a str>,
    /// The `deadlineSeconds` of the pre-upgrade backup and the rollback's restore.
    pub job_deadline_seconds: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Create the pre-upgrade `Dhis2Backup` (verified) of the instance.
    CreateBackup { name: String },
    /// Drop DHIS2's materialized SQL views; the shell records their names.
    DropMaterializedViews,
    /// Create the `Dhis2Restore` of the pre-upgrade backup over the instance.
    CreateRestore { name: String, backup_name: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpgradeEvent {
    pub warning: bool,
    pub reason: &'static str,
    pub message: String,
}

/// What to do now and what to record once it is done.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub action: Option<Action>,
    /// `status.upgrade` afterwards (`None`: no upgrade to show).
    pub upgrade: Option<UpgradeStatus>,
    /// A finished upgrade to add to `status.upgradeHistory`.
    pub finished: Option<UpgradeRecord>,
    /// The version DHIS2 runs from now on, when it changed.
    pub deployed: Option<Deployed>,
    pub event: Option<UpgradeEvent>,
    /// How soon to look again while an upgrade is in progress.
    pub requeue: Option<Duration>,
}

impl Decision {
    fn keep(upgrade: Option<&UpgradeStatus>) -> Self {
        Self {
            action: None,
            upgrade: upgrade.cloned(),
            finished: None,
            deployed: None,
            event: None,
            requeue: None,
        }
    }

    fn to(upgrade: UpgradeStatus) -> Self {
        let requeue = (!upgrade.phase.is_finished()).then_some(Duration::from_secs(2));
        Self {
            upgrade: Some(upgrade),
            requeue,
            ..Self::keep(None)
        }
    }

    fn with_action(mut self, action: Action) -> Self {
        self.action = Some(action);
        self
    }

    fn with_event(mut self, warning: bool, reason: &'static str, message: String) -> Self {
        self.event = Some(UpgradeEvent {
            warning,
            reason,
            message,
        });
        self
    }

    fn waiting(upgrade: &UpgradeStatus, message: String, every: Duration) -> Self {
        let mut u = upgrade.clone();
        u.message = Some(message);
        Self {
            upgrade: Some(u),
            requeue: Some(every),
            ..Self::keep(None)
        }
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The pre-upgrade backup's name: one per upgrade (its start time), at most 63 characters.
pub fn pre_upgrade_backup_name(instance: &str, started_at: &str) -> String {
    format!("{}-pre-upgrade-{}", short(instance), stamp(started_at))
}

/// The rollback's restore name, one per upgrade.
pub fn rollback_restore_name(instance: &str, started_at: &str) -> String {
    format!("{}-rollback-{}", short(instance), stamp(started_at))
}

fn short(instance: &str) -> &str {
    let end = instance.len().min(34);
    instance[..end].trim_end_matches('-')
}

/// `2026-12-06T05:12:09Z` → `20261206t051209`.
fn stamp(rfc3339: &str) -> String {
    rfc3339
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(15)
        .collect::<String>()
        .to_lowercase()
}

/// The image and replicas DHIS2's Deployment gets now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentPlan {
    pub image: String,
    pub replicas: i32,
}

/// Two versions never run against one database: the previous version runs until it is
/// stopped for the backup, the new one alone while it migrates, the previous one again only on
/// the restored database.
pub fn deployment_plan(
    spec_version: &str,
    spec_image: &str,
    spec_replicas: i32,
    deployed: &Deployed,
    upgrade: Option<&UpgradeStatus>,
    restore: Option<&RestoreSeen>,
) -> DeploymentPlan {
    let previous = |u: &UpgradeStatus| u.from_image.clone().unwrap_or(deployed.image.clone());
    let (image, replicas) = match upgrade {
        None if same_version(spec_version, &deployed.version) => {
            (spec_image.to_string(), spec_replicas)
        }
        None => (deployed.image.clone(), spec_replicas),
        Some(u) => match u.phase {
            UpgradePhase::Checking | UpgradePhase::AwaitingApproval | UpgradePhase::Refused => {
                (previous(u), spec_replicas)
            }
            UpgradePhase::Stopping | UpgradePhase::BackingUp | UpgradePhase::Preparing => {
                (previous(u), 0)
            }
            UpgradePhase::Migrating => (u.to_image.clone(), 1),
            UpgradePhase::RollingBack => {
                let restored = restore.is_some_and(|r| {
                    matches!(r.phase, RestorePhase::Starting | RestorePhase::Completed)
                });
                (previous(u), if restored { spec_replicas } else { 0 })
            }
            UpgradePhase::Failed
                if u.outcome == Some(UpgradeOutcome::RollbackFailed)
                    && u.recovered_by.is_none() =>
            {
                (previous(u), 0)
            }
            UpgradePhase::Failed => (previous(u), spec_replicas),
        },
    };
    DeploymentPlan { image, replicas }
}

/// Whether the shell must read the database's facts for this decision.
pub fn needs_check(upgrade: Option<&UpgradeStatus>) -> bool {
    upgrade.is_some_and(|u| u.phase == UpgradePhase::Checking)
}

/// Whether DHIS2 is held stopped after a failed rollback: the shell then looks for a restore
/// that recovered the database since `status.upgrade.phaseStartedAt`.
pub fn awaits_recovery(upgrade: Option<&UpgradeStatus>) -> bool {
    upgrade.is_some_and(|u| {
        u.outcome == Some(UpgradeOutcome::RollbackFailed) && u.recovered_by.is_none()
    })
}

pub fn decide(o: &UpgradeObserved) -> Decision {
    let Some(u) = o.upgrade else {
        return if same_version(o.spec_version, &o.deployed.version) {
            Decision::keep(None)
        } else {
            begin(o)
        };
    };
    if u.outcome == Some(UpgradeOutcome::RollbackFailed) && u.recovered_by.is_none() {
        return after_failed_rollback(o, u);
    }
    if u.phase.is_finished() {
        return if same_version(o.spec_version, &u.to_version) {
            Decision::keep(Some(u))
        } else if same_version(o.spec_version, &o.deployed.version) {
            // spec.version is back at what runs: the finished upgrade is in the history.
            Decision::keep(None)
        } else {
            begin(o)
        };
    }
    if !same_version(o.spec_version, &u.to_version)
        && let Some(cancelled) = cancel(o, u)
    {
        return cancelled;
    }
    match u.phase {
        UpgradePhase::Checking => checking(o, u),
        UpgradePhase::AwaitingApproval => awaiting_approval(o, u),
        UpgradePhase::Stopping => stopping(o, u),
        UpgradePhase::BackingUp => backing_up(o, u),
        UpgradePhase::Preparing => {
            let mut next = phase(u, UpgradePhase::Migrating, o.now);
            next.message = Some(format!(
                "DHIS2 {} started with one replica; Flyway migrates the database",
                u.to_version
            ));
            Decision::to(next).with_action(Action::DropMaterializedViews)
        }
        UpgradePhase::Migrating => migrating(o, u),
        UpgradePhase::RollingBack => rolling_back(o, u),
        UpgradePhase::Refused | UpgradePhase::Failed => Decision::keep(Some(u)),
    }
}

fn phase(u: &UpgradeStatus, phase: UpgradePhase, now: DateTime<Utc>) -> UpgradeStatus {
    let mut next = u.clone();
    next.phase = phase;
    next.phase_started_at = Some(rfc3339(now));
    next
}

fn record(u: &UpgradeStatus, outcome: UpgradeOutcome, now: DateTime<Utc>) -> UpgradeRecord {
    UpgradeRecord {
        from_version: u.from_version.clone(),
        to_version: u.to_version.clone(),
        started_at: u.started_at.clone(),
        finished_at: rfc3339(now),
        outcome,
        backup_id: u.backup_id.clone(),
        approved_by: u.approved_by.clone(),
        message: u.message.clone(),
    }
}

/// Ends the upgrade: the status keeps it (Refused, Failed) with the outcome, the history too.
fn finish(
    u: &UpgradeStatus,
    end: UpgradePhase,
    outcome: UpgradeOutcome,
    message: String,
    now: DateTime<Utc>,
) -> Decision {
    let mut last = phase(u, end, now);
    last.outcome = Some(outcome);
    if last.failure_reason.is_none() && outcome != UpgradeOutcome::Cancelled {
        last.failure_reason = Some(message.clone());
    }
    last.message = Some(message);
    Decision {
        finished: Some(record(&last, outcome, now)),
        ..Decision::to(last)
    }
}

fn begin(o: &UpgradeObserved) -> Decision {
    let now = rfc3339(o.now);
    let started = UpgradeStatus {
        phase: UpgradePhase::Checking,
        from_version: o.deployed.version.clone(),
        to_version: o.spec_version.to_string(),
        from_image: Some(o.deployed.image.clone()),
        to_image: o.spec_image.to_string(),
        started_at: now.clone(),
        phase_started_at: Some(now),
        backup_name: None,
        backup_id: None,
        restore_name: None,
        dropped_views: Vec::new(),
        warnings: Vec::new(),
        approved_by: None,
        outcome: None,
        failure_reason: None,
        new_version_answered_at: None,
        recovered_by: None,
        message: Some("checking the new version against the database".into()),
    };
    let (from, to) = (&o.deployed.version, o.spec_version);
    if let (Ok(running), Ok(wanted)) = (Dhis2Version::parse(from), Dhis2Version::parse(to))
        && wanted < running
    {
        let refused = finish(
            &started,
            UpgradePhase::Refused,
            UpgradeOutcome::Refused,
            format!(
                "spec.version {to} is older than the running DHIS2 {from}: DHIS2 cannot be downgraded once Flyway has migrated its database; set spec.version: {from} to keep it, or, to go back to {to}, restore the backup taken before the upgrade to {from} (a Dhis2Restore over this instance) and then set spec.version: {to}"
            ),
            o.now,
        );
        let message = refused.upgrade.as_ref().and_then(|u| u.message.clone());
        return refused.with_event(true, "UpgradeRefused", message.unwrap_or_default());
    }
    Decision::to(started).with_event(
        false,
        "UpgradeStarted",
        format!("upgrade of DHIS2 from {from} to {to} started: checking"),
    )
}

/// A new spec.version while the database is untouched ends this upgrade; once DHIS2 was
/// stopped for the backup, the upgrade runs to its end first.
fn cancel(o: &UpgradeObserved, u: &UpgradeStatus) -> Option<Decision> {
    match u.phase {
        UpgradePhase::Checking | UpgradePhase::AwaitingApproval | UpgradePhase::Stopping => {
            let message = format!(
                "cancelled: spec.version changed to {} before the database was touched",
                o.spec_version
            );
            let mut d = finish(
                u,
                UpgradePhase::Failed,
                UpgradeOutcome::Cancelled,
                message.clone(),
                o.now,
            );
            d.upgrade = None;
            d.requeue = Some(Duration::from_secs(1));
            Some(d.with_event(false, "UpgradeCancelled", message))
        }
        _ => None,
    }
}

fn approved(settings: &UpgradeSpec, to: &str) -> Option<String> {
    if settings.policy == UpgradePolicy::Automatic {
        return Some(
            settings
                .approved_by
                .clone()
                .unwrap_or_else(|| "policy: Automatic".into()),
        );
    }
    let who = settings.approved_by.as_deref().map(str::trim)?;
    let version = settings.approved_version.as_deref()?;
    (!who.is_empty() && same_version(version, to)).then(|| who.to_string())
}

/// Ends the upgrade Failed with `outcome`, said in an Event `reason`.
fn ended(
    o: &UpgradeObserved,
    u: &UpgradeStatus,
    outcome: UpgradeOutcome,
    reason: &'static str,
    message: String,
) -> Decision {
    finish(u, UpgradePhase::Failed, outcome, message.clone(), o.now)
        .with_event(true, reason, message)
}

/// Refuses the upgrade: nothing was changed and DHIS2 keeps running.
fn refuse(o: &UpgradeObserved, u: &UpgradeStatus, why: &str) -> Decision {
    let message = format!(
        "refused, nothing was changed and DHIS2 {} keeps running: {why}",
        u.from_version
    );
    finish(
        u,
        UpgradePhase::Refused,
        UpgradeOutcome::Refused,
        message.clone(),
        o.now,
    )
    .with_event(true, "UpgradeRefused", message)
}

/// Waits in Checking, at most `CHECKING_DEADLINE_SECONDS` in all.
fn checking_waits(o: &UpgradeObserved, u: &UpgradeStatus, why: String) -> Decision {
    if seconds_in_phase(u, o.now) >= CHECKING_DEADLINE_SECONDS {
        return refuse(
            o,
            u,
            &format!(
                "the upgrade could not be checked within {} min: {why}",
                CHECKING_DEADLINE_SECONDS / 60
            ),
        );
    }
    Decision::waiting(u, why, Duration::from_secs(30))
}

fn checking(o: &UpgradeObserved, u: &UpgradeStatus) -> Decision {
    let check = match o.check {
        None => return Decision::waiting(u, "checking".into(), Duration::from_secs(2)),
        Some(Err(why)) => {
            return checking_waits(
                o,
                u,
                format!("cannot read the database for the upgrade checks: {why}"),
            );
        }
        Some(Ok(check)) => check,
    };
    let Some(safeguards) = o.safeguards else {
        return Decision::waiting(u, "checking".into(), Duration::from_secs(2));
    };
    let mut blocked: Vec<String> = check
        .blocked()
        .map(|c| format!("{}: {}", c.check, c.detail))
        .collect();
    if let Err(why) = &safeguards.way_back {
        blocked.push(format!(
            "the operator could not roll this upgrade back (restore the pre-upgrade backup): {why}"
        ));
    }
    if let Confirmation::Unusable(why) = &safeguards.confirmation {
        blocked.push(format!(
            "the operator could not tell that DHIS2 {} runs (it reports its version only to an authenticated /api/system/info), so the upgrade would end in a rollback that discards what users wrote to it: {why}",
            u.to_version
        ));
    }
    if blocked.is_empty()
        && let Confirmation::NoAnswer(why) = &safeguards.confirmation
    {
        return checking_waits(
            o,
            u,
            format!(
                "waiting for DHIS2 {} to answer, to check the admin account (spec.adminSecretRef) before stopping it: {why}",
                u.from_version
            ),
        );
    }
    if !blocked.is_empty() {
        return refuse(o, u, &blocked.join("; "));
    }
    let mut checked = u.clone();
    checked.warnings = check
        .checks
        .iter()
        .filter(|c| c.outcome == CheckOutcome::Warning)
        .map(|c| format!("{}: {}", c.check, c.detail))
        .collect();
    match approved(o.settings, &u.to_version) {
        Some(who) => {
            checked.approved_by = Some(who);
            let mut next = phase(&checked, UpgradePhase::Stopping, o.now);
            next.message = Some(format!(
                "checks passed; stopping DHIS2 {} for the pre-upgrade backup",
                u.from_version
            ));
            Decision::to(next)
        }
        None => {
            let mut next = phase(&checked, UpgradePhase::AwaitingApproval, o.now);
            let message = format!(
                "checks passed; spec.upgrade.policy is Manual: set spec.upgrade.approvedBy (who approves) and spec.upgrade.approvedVersion: {} to start (DHIS2 {} keeps running until then)",
                u.to_version, u.from_version
            );
            next.message = Some(message.clone());
            Decision::to(next).with_event(false, "UpgradeAwaitingApproval", message)
        }
    }
}

fn awaiting_approval(o: &UpgradeObserved, u: &UpgradeStatus) -> Decision {
    match approved(o.settings, &u.to_version) {
        // Checked again: the database may have changed while the approval was awaited.
        Some(_) => {
            let mut next = phase(u, UpgradePhase::Checking, o.now);
            next.message = Some("approved; checking the database again".into());
            Decision::to(next)
        }
        None => Decision::keep(Some(u)),
    }
}

fn stopping(o: &UpgradeObserved, u: &UpgradeStatus) -> Decision {
    if o.dhis2_pods > 0 && seconds_in_phase(u, o.now) >= STOPPING_DEADLINE_SECONDS {
        let message = format!(
            "DHIS2 {} did not stop within {} min ({} pod(s) left: kubectl get pods -l app.kubernetes.io/instance={}); no backup was taken and nothing was changed: DHIS2 {} is started again. Set spec.version: {} and again {} to retry",
            u.from_version,
            STOPPING_DEADLINE_SECONDS / 60,
            o.dhis2_pods,
            o.instance,
            u.from_version,
            u.from_version,
            u.to_version
        );
        return ended(o, u, UpgradeOutcome::TimedOut, "UpgradeFailed", message);
    }
    if o.dhis2_pods > 0 {
        return Decision::waiting(
            u,
            format!(
                "stopping DHIS2 {} for the pre-upgrade backup ({} pod(s) left)",
                u.from_version, o.dhis2_pods
            ),
            Duration::from_secs(2),
        );
    }
    let name = pre_upgrade_backup_name(o.instance, &u.started_at);
    let mut next = phase(u, UpgradePhase::BackingUp, o.now);
    next.backup_name = Some(name.clone());
    next.message = Some(format!("DHIS2 is stopped; pre-upgrade backup {name} runs"));
    Decision::to(next).with_action(Action::CreateBackup { name })
}

fn backing_up(o: &UpgradeObserved, u: &UpgradeStatus) -> Decision {
    let name = u
        .backup_name
        .clone()
        .unwrap_or_else(|| pre_upgrade_backup_name(o.instance, &u.started_at));
    let Some(backup) = o.backup else {
        return Decision::waiting(
            u,
            format!("creating the pre-upgrade backup {name}"),
            Duration::from_secs(2),
        )
        .with_action(Action::CreateBackup { name });
    };
    match backup.phase {
        Some(RunPhase::Completed) if !backup.verified => {
            let message = format!(
                "the pre-upgrade backup {name} completed but was not verified (its status.verified is not true); nothing was changed: DHIS2 {} is started again. Set spec.version: {} and again {} to retry",
                u.from_version, u.from_version, u.to_version
            );
            ended(o, u, UpgradeOutcome::BackupFailed, "UpgradeFailed", message)
        }
        Some(RunPhase::Completed) => {
            let mut next = phase(u, UpgradePhase::Preparing, o.now);
            next.backup_id = backup.backup_id.clone();
            next.message = Some(format!(
                "pre-upgrade backup {} completed and verified; dropping materialized SQL views",
                backup.backup_id.as_deref().unwrap_or(&name)
            ));
            Decision::to(next)
        }
        Some(RunPhase::Failed) => {
            let message = format!(
                "the pre-upgrade backup {name} failed ({}); nothing was changed: DHIS2 {} is started again. Fix the backup (kubectl describe d2backup {name}), then set spec.version: {} and again {} to retry",
                backup
                    .failure_reason
                    .as_deref()
                    .unwrap_or("no reason recorded"),
                u.from_version,
                u.from_version,
                u.to_version
            );
            ended(o, u, UpgradeOutcome::BackupFailed, "UpgradeFailed", message)
        }
        _ if seconds_in_phase(u, o.now) >= o.job_deadline_seconds + DEADLINE_MARGIN_SECONDS => {
            let message = format!(
                "the pre-upgrade backup {name} recorded no end within {} min (its deadlineSeconds and {} min more); nothing was changed: DHIS2 {} is started again. See kubectl describe d2backup {name}, then set spec.version: {} and again {} to retry",
                (o.job_deadline_seconds + DEADLINE_MARGIN_SECONDS) / 60,
                DEADLINE_MARGIN_SECONDS / 60,
                u.from_version,
                u.from_version,
                u.to_version
            );
            ended(o, u, UpgradeOutcome::BackupFailed, "UpgradeFailed", message)
        }
        _ => Decision::waiting(
            u,
            format!("the pre-upgrade backup {name} is running; DHIS2 is stopped"),
            Duration::from_secs(5),
        ),
    }
}

fn seconds_in_phase(u: &UpgradeStatus, now: DateTime<Utc>) -> i64 {
    u.phase_started_at
        .as_deref()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| (now - t.with_timezone(&Utc)).num_seconds())
        .unwrap_or(0)
}

fn reports_target(reported: &str, to: &str) -> bool {
    match (Dhis2Version::parse(reported), Dhis2Version::parse(to)) {
        // An image tag may carry a build number (2.43.1.1) the application reports too.
        (Ok(r), Ok(t)) => r.major() == t.major() && r >= t,
        _ => reported == to,
    }
}

fn migrating(o: &UpgradeObserved, u: &UpgradeStatus) -> Decision {
    if o.reported_version
        .is_some_and(|v| reports_target(v, &u.to_version))
    {
        let message = format!(
            "DHIS2 runs {} (was {}); pre-upgrade backup {}",
            u.to_version,
            u.from_version,
            u.backup_id.as_deref().unwrap_or("-")
        );
        let mut done = u.clone();
        done.outcome = Some(UpgradeOutcome::Succeeded);
        done.message = Some(message.clone());
        return Decision {
            action: None,
            upgrade: None,
            finished: Some(record(&done, UpgradeOutcome::Succeeded, o.now)),
            deployed: Some(Deployed {
                version: u.to_version.clone(),
                image: u.to_image.clone(),
            }),
            event: None,
            requeue: Some(Duration::from_secs(2)),
        }
        .with_event(false, "UpgradeSucceeded", message);
    }
    let elapsed = seconds_in_phase(u, o.now);
    let timeout = o.settings.timeout_seconds;
    let why = if o.dhis2_restarts >= CRASH_LOOP_RESTARTS {
        Some(format!(
            "DHIS2 {} restarted {} times while migrating (see kubectl logs deploy/{} --previous)",
            u.to_version, o.dhis2_restarts, o.instance
        ))
    } else if elapsed >= timeout {
        Some(format!(
            "DHIS2 {} did not report its version within spec.upgrade.timeoutSeconds ({timeout} s): the migration failed or is still running",
            u.to_version
        ))
    } else {
        None
    };
    let mut u = u.clone();
    if o.dhis2_answering && u.new_version_answered_at.is_none() {
        u.new_version_answered_at = Some(rfc3339(o.now));
    }
    let u = &u;
    let Some(why) = why else {
        return Decision::waiting(
            u,
            format!(
                "DHIS2 {} is migrating the database: {} of at most {} min",
                u.to_version,
                minutes(elapsed),
                timeout / 60
            ),
            Duration::from_secs(5),
        );
    };
    let restore = rollback_restore_name(o.instance, &u.started_at);
    let backup_name = u
        .backup_name
        .clone()
        .unwrap_or_else(|| pre_upgrade_backup_name(o.instance, &u.started_at));
    let mut next = phase(u, UpgradePhase::RollingBack, o.now);
    next.restore_name = Some(restore.clone());
    next.failure_reason = Some(why.clone());
    let message = format!(
        "{why}; rolling back: DHIS2 {} is stopped, the pre-upgrade backup {} is restored ({restore}) and DHIS2 {} started again{}",
        u.to_version,
        u.backup_id.as_deref().unwrap_or(&backup_name),
        u.from_version,
        writes_at_risk(u)
    );
    next.message = Some(message.clone());
    Decision::to(next)
        .with_action(Action::CreateRestore {
            name: restore,
            backup_name,
        })
        .with_event(true, "UpgradeRollingBack", message)
}

/// What a rollback puts aside: what users wrote to the new version, when it answered them.
fn writes_at_risk(u: &UpgradeStatus) -> String {
    match &u.new_version_answered_at {
        Some(since) => format!(
            ". DHIS2 {} answered users since {since}: what they wrote to it is not in the pre-upgrade backup; the restore keeps it in the migrated database it puts aside (the Dhis2Restore's status.replacedDatabase)",
            u.to_version
        ),
        None => format!(
            ". DHIS2 {} never answered users, so nothing was written after the backup",
            u.to_version
        ),
    }
}

fn minutes(seconds: i64) -> String {
    if seconds < 60 {
        format!("{seconds} s")
    } else {
        format!("{} min", seconds / 60)
    }
}

fn rolling_back(o: &UpgradeObserved, u: &UpgradeStatus) -> Decision {
    let name = u
        .restore_name
        .clone()
        .unwrap_or_else(|| rollback_restore_name(o.instance, &u.started_at));
    let Some(restore) = o.restore else {
        let backup_name = u
            .backup_name
            .clone()
            .unwrap_or_else(|| pre_upgrade_backup_name(o.instance, &u.started_at));
        return Decision::waiting(
            u,
            format!("creating the rollback restore {name}"),
            Duration::from_secs(2),
        )
        .with_action(Action::CreateRestore { name, backup_name });
    };
    let why = u
        .failure_reason
        .clone()
        .unwrap_or_else(|| "the migration failed".into());
    let overdue = seconds_in_phase(u, o.now) >= o.job_deadline_seconds + DEADLINE_MARGIN_SECONDS;
    let put_aside = match (&restore.replaced_database, &u.new_version_answered_at) {
        (Some(db), Some(since)) => format!(
            "; what users wrote to DHIS2 {} since {since} is in the migrated database, kept as {db}",
            u.to_version
        ),
        (Some(db), None) => format!("; the migrated database is kept as {db}"),
        (None, _) => String::new(),
    };
    match restore.phase {
        RestorePhase::Completed => {
            let message = format!(
                "upgrade to {} rolled back: {why}; the pre-upgrade backup {} was restored and DHIS2 {} runs again{put_aside}. Set spec.version: {} to stop retrying",
                u.to_version,
                u.backup_id.as_deref().unwrap_or("-"),
                u.from_version,
                u.from_version
            );
            ended(o, u, UpgradeOutcome::RolledBack, "UpgradeFailed", message)
        }
        // The pre-upgrade database is back: not half-migrated, whatever failed after the swap.
        RestorePhase::Failed if restore.database_swapped => {
            let message = format!(
                "upgrade to {} rolled back: {why}; the pre-upgrade backup {} was restored{put_aside}, but the restore {name} then failed ({}): see kubectl describe d2restore {name}",
                u.to_version,
                u.backup_id.as_deref().unwrap_or("-"),
                restore.message.as_deref().unwrap_or("no reason recorded")
            );
            ended(o, u, UpgradeOutcome::RolledBack, "UpgradeFailed", message)
        }
        RestorePhase::Failed => {
            let message = format!(
                "upgrade to {} failed ({why}) and its rollback failed too: the restore {name} did not complete ({}). DHIS2 is left stopped because its database may be half-migrated; restore the pre-upgrade backup {} with a new Dhis2Restore",
                u.to_version,
                restore
                    .message
                    .as_deref()
                    .unwrap_or("see kubectl describe d2restore"),
                u.backup_id.as_deref().unwrap_or("-")
            );
            ended(
                o,
                u,
                UpgradeOutcome::RollbackFailed,
                "UpgradeRollbackFailed",
                message,
            )
        }
        RestorePhase::Starting if overdue => {
            let message = format!(
                "upgrade to {} rolled back: {why}; the pre-upgrade backup {} was restored{put_aside}, but DHIS2 {} was not ready within {} min (see kubectl describe d2restore {name})",
                u.to_version,
                u.backup_id.as_deref().unwrap_or("-"),
                u.from_version,
                (o.job_deadline_seconds + DEADLINE_MARGIN_SECONDS) / 60
            );
            ended(o, u, UpgradeOutcome::RolledBack, "UpgradeFailed", message)
        }
        _ if overdue => {
            let message = format!(
                "upgrade to {} failed ({why}) and its rollback did not end: the restore {name} recorded no end within {} min (its deadlineSeconds and {} min more; it is {}). DHIS2 is left stopped because its database may be half-migrated; see kubectl describe d2restore {name}",
                u.to_version,
                (o.job_deadline_seconds + DEADLINE_MARGIN_SECONDS) / 60,
                DEADLINE_MARGIN_SECONDS / 60,
                restore.phase.as_str()
            );
            ended(
                o,
                u,
                UpgradeOutcome::RollbackFailed,
                "UpgradeRollbackFailed",
                message,
            )
        }
        _ => Decision::waiting(
            u,
            format!(
                "{why}; rolling back: the restore {name} is {}",
                restore.phase.as_str()
            ),
            Duration::from_secs(5),
        ),
    }
}

/// After a failed rollback DHIS2 stays stopped (its database may be half-migrated; starting any
/// version on it could damage it further) until a restore over the instance has restored the
/// database, or someone accepts the database as it is for this very upgrade.
fn after_failed_rollback(o: &UpgradeObserved, u: &UpgradeStatus) -> Decision {
    let recovered = |by: String, warning: bool, reason: &'static str, message: String| {
        let mut next = u.clone();
        next.recovered_by = Some(by);
        next.message = Some(message.clone());
        Decision {
            requeue: Some(Duration::from_secs(1)),
            ..Decision::keep(Some(&next))
        }
        .with_event(warning, reason, message)
    };
    if let Some(restore) = o.recovery_restore {
        return recovered(
            format!("Dhis2Restore {restore}"),
            false,
            "UpgradeRecovered",
            format!(
                "the database was restored by Dhis2Restore {restore} after the failed rollback of the upgrade to {}: DHIS2 {} may run again",
                u.to_version, u.from_version
            ),
        );
    }
    if o.accepted_migrated_database == Some(u.started_at.as_str()) {
        return recovered(
            format!("{ACCEPT_MIGRATED_DATABASE_ANNOTATION}={}", u.started_at),
            true,
            "MigratedDatabaseAccepted",
            format!(
                "accepted ({ACCEPT_MIGRATED_DATABASE_ANNOTATION}): DHIS2 {} starts again on the database as the failed migration to {} left it",
                u.from_version, u.to_version
            ),
        );
    }
    let message = format!(
        "the upgrade to {} and its rollback failed: DHIS2 stays stopped whatever spec.version says, because its database may be half-migrated. Restore the pre-upgrade backup {} (`dhis2ctl restore {} --from {i} --to {i} --confirm-overwrite {i} --approved-by WHO`), or accept the database as it is (`dhis2ctl upgrade {i} --accept-migrated-database`)",
        u.to_version,
        u.backup_id.as_deref().unwrap_or("-"),
        u.backup_id.as_deref().unwrap_or("ID"),
        i = o.instance
    );
    if same_version(o.spec_version, &u.to_version) || u.message.as_deref() == Some(&message) {
        return Decision::keep(Some(u));
    }
    let mut held = u.clone();
    held.message = Some(message.clone());
    Decision::keep(Some(&held)).with_event(true, "UpgradeRollbackFailed", message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upgrade::facts::{
        CategoryOptionComboRow, DatabaseFacts, DefaultCategoryOptionCombos, ExtensionFact,
    };
    use crate::upgrade::{CurrentVersion, check_upgrade};

    fn at(hms: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(&format!("2026-12-06T{hms}Z"))
            .unwrap()
            .with_timezone(&Utc)
    }

    fn facts(default_combos: i64) -> DatabaseFacts {
        let ext = |name: &str, v: &str| ExtensionFact {
            name: name.into(),
            installed_version: Some(v.into()),
            available_version: Some(v.into()),
        };
        let row = |id, uid: &str| CategoryOptionComboRow {
            id,
            uid: uid.into(),
            name: "default".into(),
        };
        DatabaseFacts {
            server_version_num: 150018,
            extensions: vec![
                ext("postgis", "3.3.2"),
                ext("pg_trgm", "1.6"),
                ext("btree_gin", "1.3"),
            ],
            schema_version: Some(Dhis2Version::parse("2.42.52").unwrap()),
            default_category_option_combos: Some(DefaultCategoryOptionCombos {
                count: default_combos,
                canonical_present: default_combos == 1,
                listed: (0..default_combos)
                    .map(|i| row(26 + i, &format!("Dup{i:08}")))
                    .collect(),
            }),
            single_events_without_occurred_date: Some(0),
            tracker_associate_value_types: Some(Default::default()),
            ..Default::default()
        }
    }

    fn check(from: &str, to: &str, default_combos: i64) -> Result<UpgradeCheck, String> {
        Ok(check_upgrade(
            &CurrentVersion::Release(Dhis2Version::parse(from).unwrap()),
            &Dhis2Version::parse(to).unwrap(),
            &facts(default_combos),
        ))
    }

    /// One instance `hmis` running 2.42.4, asked for `spec_version`.
    struct World {
        spec_version: String,
        spec_image: String,
        deployed: Deployed,
        settings: UpgradeSpec,
        upgrade: Option<UpgradeStatus>,
        history: Vec<UpgradeRecord>,
        now: DateTime<Utc>,
        check: Option<Result<UpgradeCheck, String>>,
        pods: usize,
        restarts: i32,
        reported: Option<String>,
        backup: Option<BackupSeen>,
        restore: Option<RestoreSeen>,
        safeguards: Safeguards,
        answering: bool,
        recovery_restore: Option<String>,
        accepted: Option<String>,
        actions: Vec<Action>,
        events: Vec<&'static str>,
    }

    impl World {
        fn new(spec_version: &str) -> Self {
            Self {
                spec_version: spec_version.into(),
                spec_image: format!("dhis2/core:{spec_version}"),
                deployed: Deployed {
                    version: "2.42.4".into(),
                    image: "dhis2/core:2.42.4".into(),
                },
                settings: UpgradeSpec {
                    timeout_seconds: 3600,
                    ..Default::default()
                },
                upgrade: None,
                history: vec![],
                now: at("05:00:00"),
                check: None,
                pods: 2,
                restarts: 0,
                reported: Some("2.42.4".into()),
                backup: None,
                restore: None,
                safeguards: Safeguards {
                    confirmation: Confirmation::Confirmed,
                    way_back: Ok(()),
                },
                answering: true,
                recovery_restore: None,
                accepted: None,
                actions: vec![],
                events: vec![],
            }
        }

        /// Decides once and applies the decision as the shell would.
        fn step(&mut self) -> Decision {
            if needs_check(self.upgrade.as_ref()) && self.check.is_none() {
                let to = self.upgrade.as_ref().unwrap().to_version.clone();
                self.check = Some(check(&self.deployed.version, &to, 1));
            }
            let d = decide(&UpgradeObserved {
                instance: "hmis",
                spec_version: &self.spec_version,
                spec_image: &self.spec_image,
                deployed: &self.deployed,
                upgrade: self.upgrade.as_ref(),
                settings: &self.settings,
                now: self.now,
                check: self.check.as_ref(),
                dhis2_pods: self.pods,
                dhis2_restarts: self.restarts,
                reported_version: self.reported.as_deref(),
                backup: self.backup.as_ref(),
                restore: self.restore.as_ref(),
                safeguards: Some(&self.safeguards),
                dhis2_answering: self.answering,
                recovery_restore: self.recovery_restore.as_deref(),
                accepted_migrated_database: self.accepted.as_deref(),
                job_deadline_seconds: 6 * 3600,
            });
            self.actions.extend(d.action.clone());
            self.events.extend(d.event.as_ref().map(|e| e.reason));
            self.upgrade = d.upgrade.clone();
            self.history.extend(d.finished.clone());
            if let Some(deployed) = &d.deployed {
                self.deployed = deployed.clone();
            }
            d
        }

        fn phase(&self) -> Option<UpgradePhase> {
            self.upgrade.as_ref().map(|u| u.phase)
        }

        fn plan(&self) -> DeploymentPlan {
            deployment_plan(
                &self.spec_version,
                &self.spec_image,
                3,
                &self.deployed,
                self.upgrade.as_ref(),
                self.restore.as_ref(),
            )
        }

        /// Runs from the start to BackingUp: checked, DHIS2 stopped, the backup created.
        fn run_until_backing_up(&mut self) {
            self.step();
            self.step();
            assert_eq!(self.phase(), Some(UpgradePhase::Stopping));
            self.pods = 0;
            self.step();
            assert_eq!(self.phase(), Some(UpgradePhase::BackingUp));
        }

        /// The pre-upgrade backup ends (a completed one gets an id).
        fn backup_ends(&mut self, phase: RunPhase, verified: bool, failure: Option<&str>) {
            self.backup = Some(BackupSeen {
                phase: Some(phase),
                backup_id: (phase == RunPhase::Completed).then(|| "20261206T050010Z".into()),
                verified,
                failure_reason: failure.map(Into::into),
            });
        }

        /// Runs from the start to Migrating: checked, stopped, backed up, views dropped.
        fn run_until_migrating(&mut self) {
            self.run_until_backing_up();
            self.backup_ends(RunPhase::Completed, true, None);
            self.step();
            self.step();
            assert_eq!(self.phase(), Some(UpgradePhase::Migrating));
            self.pods = 1;
            self.reported = None;
            self.answering = false;
        }
    }

    fn plan(image: &str, replicas: i32) -> DeploymentPlan {
        DeploymentPlan {
            image: image.into(),
            replicas,
        }
    }

    #[test]
    fn the_same_version_needs_no_upgrade_and_runs_the_specs_image() {
        let mut w = World::new("2.42.4");
        w.spec_image = "registry.moh.gov.kh/dhis2/core:2.42.4".into();
        let d = w.step();
        assert_eq!(d, Decision::keep(None));
        assert_eq!(w.plan(), plan("registry.moh.gov.kh/dhis2/core:2.42.4", 3));
        // 42.4.0 is how newer documents write 2.42.4.
        let mut w = World::new("42.4.0");
        assert_eq!(w.step().upgrade, None);
    }

    #[test]
    fn a_successful_upgrade_stops_backs_up_prepares_migrates_and_records_it() {
        let mut w = World::new("2.43.1");
        // A new version is not run before the upgrade began.
        assert_eq!(w.plan(), plan("dhis2/core:2.42.4", 3));
        w.step();
        assert_eq!(w.phase(), Some(UpgradePhase::Checking));
        assert_eq!(w.events, vec!["UpgradeStarted"]);
        assert_eq!(w.plan(), plan("dhis2/core:2.42.4", 3));

        w.step();
        assert_eq!(w.phase(), Some(UpgradePhase::Stopping));
        assert_eq!(w.plan(), plan("dhis2/core:2.42.4", 0));
        let d = w.step();
        assert_eq!(d.action, None, "no backup while DHIS2 still runs");
        assert!(
            w.upgrade
                .as_ref()
                .unwrap()
                .message
                .as_ref()
                .unwrap()
                .contains("2 pod(s) left")
        );

        w.pods = 0;
        let d = w.step();
        let name = "hmis-pre-upgrade-20261206t050000".to_string();
        assert_eq!(d.action, Some(Action::CreateBackup { name: name.clone() }));
        assert_eq!(w.phase(), Some(UpgradePhase::BackingUp));
        assert_eq!(w.upgrade.as_ref().unwrap().backup_name, Some(name.clone()));
        // The backup object vanished or its creation was lost: created again, same name.
        let d = w.step();
        assert_eq!(d.action, Some(Action::CreateBackup { name: name.clone() }));
        w.backup = Some(BackupSeen {
            phase: Some(RunPhase::Running),
            ..Default::default()
        });
        assert_eq!(w.step().action, None);
        assert_eq!(w.phase(), Some(UpgradePhase::BackingUp));
        assert_eq!(w.plan(), plan("dhis2/core:2.42.4", 0));

        w.backup = Some(BackupSeen {
            phase: Some(RunPhase::Completed),
            backup_id: Some("20261206T050010Z".into()),
            verified: true,
            failure_reason: None,
        });
        w.step();
        assert_eq!(w.phase(), Some(UpgradePhase::Preparing));
        assert_eq!(w.plan(), plan("dhis2/core:2.42.4", 0));
        let d = w.step();
        assert_eq!(d.action, Some(Action::DropMaterializedViews));
        assert_eq!(w.phase(), Some(UpgradePhase::Migrating));
        assert_eq!(w.plan(), plan("dhis2/core:2.43.1", 1));

        w.pods = 1;
        w.reported = None;
        w.now = at("05:30:00");
        w.step();
        assert_eq!(w.phase(), Some(UpgradePhase::Migrating));
        w.reported = Some("2.43.1".into());
        w.step();
        assert_eq!(w.upgrade, None);
        assert_eq!(
            w.deployed,
            Deployed {
                version: "2.43.1".into(),
                image: "dhis2/core:2.43.1".into()
            }
        );
        assert_eq!(w.plan(), plan("dhis2/core:2.43.1", 3));
        assert_eq!(w.history.len(), 1);
        let done = &w.history[0];
        assert_eq!(done.outcome, UpgradeOutcome::Succeeded);
        assert_eq!(
            (done.from_version.as_str(), done.to_version.as_str()),
            ("2.42.4", "2.43.1")
        );
        assert_eq!(done.backup_id.as_deref(), Some("20261206T050010Z"));
        assert_eq!(done.approved_by.as_deref(), Some("policy: Automatic"));
        assert_eq!(w.events, vec!["UpgradeStarted", "UpgradeSucceeded"]);
        // And nothing more happens.
        assert_eq!(w.step(), Decision::keep(None));
    }

    #[test]
    fn a_downgrade_is_refused_with_the_way_back_and_the_running_version_stays() {
        let mut w = World::new("2.41.9");
        w.step();
        let u = w.upgrade.clone().unwrap();
        assert_eq!(u.phase, UpgradePhase::Refused);
        let message = u.message.unwrap();
        assert!(message.contains("cannot be downgraded"), "{message}");
        assert!(message.contains("set spec.version: 2.42.4"), "{message}");
        assert!(message.contains("restore the backup"), "{message}");
        assert_eq!(w.history[0].outcome, UpgradeOutcome::Refused);
        assert_eq!(w.events, vec!["UpgradeRefused"]);
        assert_eq!(w.plan(), plan("dhis2/core:2.42.4", 3));
        // It stays refused (no second record) until spec.version changes.
        assert_eq!(w.step().finished, None);
        w.spec_version = "2.42.4".into();
        w.step();
        assert_eq!(w.upgrade, None);
        assert_eq!(w.history.len(), 1);
    }

    #[test]
    fn a_blocking_check_refuses_the_upgrade_and_names_the_rows() {
        let mut w = World::new("2.43.1");
        w.step();
        w.check = Some(check("2.42.4", "2.43.1", 2));
        w.step();
        let u = w.upgrade.clone().unwrap();
        assert_eq!(u.phase, UpgradePhase::Refused);
        let message = u.message.unwrap();
        assert!(message.contains("DHIS2 2.42.4 keeps running"), "{message}");
        assert!(message.contains("Dup00000001"), "{message}");
        assert_eq!(w.plan(), plan("dhis2/core:2.42.4", 3));
        assert!(w.actions.is_empty());

        // The database cannot be read: waits, nothing is decided.
        let mut w = World::new("2.43.1");
        w.step();
        w.check = Some(Err("connection refused".into()));
        let d = w.step();
        assert_eq!(w.phase(), Some(UpgradePhase::Checking));
        assert_eq!(d.requeue, Some(Duration::from_secs(30)));
        assert!(
            w.upgrade
                .unwrap()
                .message
                .unwrap()
                .contains("connection refused"),
        );
    }

    #[test]
    fn the_manual_policy_waits_for_an_approval_of_this_very_version() {
        let mut w = World::new("2.43.1");
        w.settings.policy = UpgradePolicy::Manual;
        w.settings.approved_by = Some("Sok Dara".into());
        w.settings.approved_version = Some("2.43.0".into());
        w.step();
        w.step();
        assert_eq!(w.phase(), Some(UpgradePhase::AwaitingApproval));
        assert_eq!(w.plan(), plan("dhis2/core:2.42.4", 3));
        let message = w.upgrade.as_ref().unwrap().message.clone().unwrap();
        assert!(
            message.contains("spec.upgrade.approvedVersion: 2.43.1"),
            "{message}"
        );
        w.step();
        assert_eq!(w.phase(), Some(UpgradePhase::AwaitingApproval));

        w.settings.approved_version = Some("2.43.1".into());
        w.check = None;
        w.step();
        assert_eq!(w.phase(), Some(UpgradePhase::Checking), "checked again");
        w.step();
        assert_eq!(w.phase(), Some(UpgradePhase::Stopping));
        assert_eq!(w.upgrade.unwrap().approved_by.as_deref(), Some("Sok Dara"));
    }

    #[test]
    fn a_failed_backup_ends_the_upgrade_and_starts_the_previous_version_again() {
        let mut w = World::new("2.43.1");
        w.run_until_backing_up();
        w.backup_ends(RunPhase::Failed, false, Some("the bucket is full"));
        w.step();
        let u = w.upgrade.clone().unwrap();
        assert_eq!(u.phase, UpgradePhase::Failed);
        assert_eq!(u.outcome, Some(UpgradeOutcome::BackupFailed));
        assert!(u.message.unwrap().contains("the bucket is full"));
        assert_eq!(w.plan(), plan("dhis2/core:2.42.4", 3));
        assert_eq!(w.history[0].outcome, UpgradeOutcome::BackupFailed);
    }

    #[test]
    fn an_unverified_backup_is_no_way_back_and_ends_the_upgrade() {
        let mut w = World::new("2.43.1");
        w.run_until_backing_up();
        w.backup_ends(RunPhase::Completed, false, None);
        w.step();
        let u = w.upgrade.clone().unwrap();
        assert_eq!(u.outcome, Some(UpgradeOutcome::BackupFailed));
        assert!(u.message.unwrap().contains("not verified"));
        assert!(!w.actions.contains(&Action::DropMaterializedViews));
        assert_eq!(w.plan(), plan("dhis2/core:2.42.4", 3));
    }

    #[test]
    fn a_migration_that_never_answers_is_rolled_back_by_restoring_the_backup() {
        let mut w = World::new("2.43.1");
        w.run_until_migrating();
        w.now = at("05:59:59");
        w.step();
        assert_eq!(w.phase(), Some(UpgradePhase::Migrating));
        w.now = at("06:00:00");
        let d = w.step();
        let restore = "hmis-rollback-20261206t050000".to_string();
        assert_eq!(
            d.action,
            Some(Action::CreateRestore {
                name: restore.clone(),
                backup_name: "hmis-pre-upgrade-20261206t050000".into()
            })
        );
        assert_eq!(w.phase(), Some(UpgradePhase::RollingBack));
        // The previous version does not start on the migrated database before the restore.
        assert_eq!(w.plan(), plan("dhis2/core:2.42.4", 0));
        w.step();
        assert!(matches!(
            w.actions.last(),
            Some(Action::CreateRestore { .. })
        ));
        let actions = w.actions.len();
        w.restore = Some(RestoreSeen {
            phase: RestorePhase::Restoring,
            message: None,
            replaced_database: None,
            database_swapped: false,
        });
        w.step();
        assert_eq!(w.actions.len(), actions, "one restore");
        assert_eq!(w.plan(), plan("dhis2/core:2.42.4", 0));
        w.restore = Some(RestoreSeen {
            phase: RestorePhase::Starting,
            message: None,
            replaced_database: None,
            database_swapped: false,
        });
        w.step();
        assert_eq!(w.plan(), plan("dhis2/core:2.42.4", 3));
        w.restore = Some(RestoreSeen {
            phase: RestorePhase::Completed,
            message: None,
            replaced_database: None,
            database_swapped: false,
        });
        w.step();
        let u = w.upgrade.clone().unwrap();
        assert_eq!(u.outcome, Some(UpgradeOutcome::RolledBack));
        let message = u.message.unwrap();
        assert!(message.contains("did not report its version"), "{message}");
        assert!(message.contains("20261206T050010Z"), "{message}");
        assert_eq!(w.plan(), plan("dhis2/core:2.42.4", 3));
        assert_eq!(w.deployed.version, "2.42.4");
        assert_eq!(w.history[0].outcome, UpgradeOutcome::RolledBack);
        assert_eq!(
            w.events,
            vec!["UpgradeStarted", "UpgradeRollingBack", "UpgradeFailed"]
        );
        // Failed stays until spec.version changes; no second rollback.
        w.step();
        assert_eq!(w.history.len(), 1);
    }

    #[test]
    fn a_crash_loop_rolls_back_and_a_failed_rollback_leaves_dhis2_stopped() {
        let mut w = World::new("2.43.1");
        w.run_until_migrating();
        w.restarts = CRASH_LOOP_RESTARTS;
        w.step();
        let u = w.upgrade.clone().unwrap();
        assert_eq!(u.phase, UpgradePhase::RollingBack);
        assert!(u.failure_reason.unwrap().contains("restarted 5 times"));
        w.restore = Some(RestoreSeen {
            phase: RestorePhase::Failed,
            message: Some("the backup is unreadable".into()),
            replaced_database: None,
            database_swapped: false,
        });
        w.step();
        let u = w.upgrade.clone().unwrap();
        assert_eq!(u.outcome, Some(UpgradeOutcome::RollbackFailed));
        assert!(u.message.unwrap().contains("the backup is unreadable"));
        assert_eq!(w.plan(), plan("dhis2/core:2.42.4", 0));
    }

    #[test]
    fn a_new_version_cancels_an_upgrade_only_before_the_database_is_touched() {
        let mut w = World::new("2.43.1");
        w.step();
        w.step();
        assert_eq!(w.phase(), Some(UpgradePhase::Stopping));
        w.spec_version = "2.43.2".into();
        w.spec_image = "dhis2/core:2.43.2".into();
        w.step();
        assert_eq!(w.upgrade, None);
        assert_eq!(w.history[0].outcome, UpgradeOutcome::Cancelled);
        w.check = None;
        w.step();
        assert_eq!(w.upgrade.as_ref().unwrap().to_version, "2.43.2");

        let mut w = World::new("2.43.1");
        w.run_until_migrating();
        w.spec_version = "2.43.2".into();
        w.spec_image = "dhis2/core:2.43.2".into();
        w.step();
        assert_eq!(w.phase(), Some(UpgradePhase::Migrating));
        assert_eq!(
            w.plan(),
            plan("dhis2/core:2.43.1", 1),
            "the migration runs on"
        );
        w.reported = Some("2.43.1".into());
        w.step();
        assert_eq!(w.deployed.version, "2.43.1");
        // Then the next upgrade begins.
        w.step();
        assert_eq!(w.upgrade.as_ref().unwrap().from_version, "2.43.1");
        assert_eq!(w.upgrade.as_ref().unwrap().to_version, "2.43.2");
    }

    #[test]
    fn names_are_deterministic_and_fit_kubernetes() {
        let long = "a".repeat(63);
        let name = pre_upgrade_backup_name(&long, "2026-12-06T05:12:09Z");
        assert!(name.len() <= 63, "{name}");
        assert!(name.ends_with("-pre-upgrade-20261206t051209"));
        let name = rollback_restore_name("hmis", "2026-12-06T05:12:09Z");
        assert_eq!(name, "hmis-rollback-20261206t051209");
    }

    #[test]
    fn an_upgrade_whose_success_the_operator_cannot_confirm_is_refused_before_dhis2_stops() {
        for why in [
            "spec.adminSecretRef is not set",
            "DHIS2 refused the account in Secret dhis2-admin (HTTP 401)",
        ] {
            let mut w = World::new("2.43.1");
            w.safeguards.confirmation = Confirmation::Unusable(why.into());
            w.step();
            w.step();
            let u = w.upgrade.clone().unwrap();
            assert_eq!(u.phase, UpgradePhase::Refused);
            let message = u.message.unwrap();
            assert!(message.contains(why), "{message}");
            assert!(message.contains("nothing was changed"), "{message}");
            assert!(w.actions.is_empty());
            assert_eq!(
                w.plan(),
                plan("dhis2/core:2.42.4", 3),
                "DHIS2 keeps running"
            );
        }
    }

    #[test]
    fn an_upgrade_without_a_way_back_is_refused_before_dhis2_stops() {
        let mut w = World::new("2.43.1");
        w.safeguards.way_back = Err("no private key in the cluster".into());
        w.step();
        w.step();
        let u = w.upgrade.clone().unwrap();
        assert_eq!(u.phase, UpgradePhase::Refused);
        assert!(
            u.message
                .unwrap()
                .contains("could not roll this upgrade back")
        );
        assert_eq!(w.plan(), plan("dhis2/core:2.42.4", 3));
    }

    #[test]
    fn checking_waits_for_dhis2_to_answer_at_most_its_deadline_then_refuses() {
        let mut w = World::new("2.43.1");
        w.safeguards.confirmation = Confirmation::NoAnswer("no DHIS2 pod is ready".into());
        w.step();
        w.step();
        assert_eq!(w.phase(), Some(UpgradePhase::Checking));
        assert_eq!(w.plan(), plan("dhis2/core:2.42.4", 3));
        w.now = at("05:15:00");
        w.step();
        let u = w.upgrade.clone().unwrap();
        assert_eq!(u.phase, UpgradePhase::Refused);
        assert!(
            u.message
                .unwrap()
                .contains("could not be checked within 15 min")
        );
    }

    #[test]
    fn dhis2_that_never_stops_ends_the_upgrade_with_dhis2_started_again() {
        let mut w = World::new("2.43.1");
        w.step();
        w.step();
        assert_eq!(w.phase(), Some(UpgradePhase::Stopping));
        w.now = at("05:14:59");
        w.step();
        assert_eq!(w.phase(), Some(UpgradePhase::Stopping));
        w.now = at("05:15:00");
        w.step();
        let u = w.upgrade.clone().unwrap();
        assert_eq!(u.outcome, Some(UpgradeOutcome::TimedOut));
        assert!(u.message.unwrap().contains("did not stop within 15 min"));
        assert!(w.actions.is_empty(), "no backup");
        assert_eq!(w.plan(), plan("dhis2/core:2.42.4", 3));
    }

    #[test]
    fn a_backup_or_a_rollback_that_never_ends_ends_the_upgrade_at_its_deadline() {
        let mut w = World::new("2.43.1");
        w.run_until_backing_up();
        w.backup = Some(BackupSeen {
            phase: Some(RunPhase::Running),
            ..Default::default()
        });
        w.now = at("11:29:59");
        w.step();
        assert_eq!(w.phase(), Some(UpgradePhase::BackingUp));
        w.now = at("11:30:00");
        w.step();
        let u = w.upgrade.clone().unwrap();
        assert_eq!(u.outcome, Some(UpgradeOutcome::BackupFailed));
        assert!(
            u.message
                .unwrap()
                .contains("recorded no end within 390 min")
        );
        assert_eq!(
            w.plan(),
            plan("dhis2/core:2.42.4", 3),
            "the database is untouched"
        );

        let mut w = World::new("2.43.1");
        w.run_until_migrating();
        w.restarts = CRASH_LOOP_RESTARTS;
        w.step();
        assert_eq!(w.phase(), Some(UpgradePhase::RollingBack));
        let started = w.now;
        w.restore = Some(RestoreSeen {
            phase: RestorePhase::Pending,
            message: Some("waiting".into()),
            replaced_database: None,
            database_swapped: false,
        });
        w.now = started + chrono::Duration::seconds(6 * 3600 + 30 * 60);
        w.step();
        let u = w.upgrade.clone().unwrap();
        assert_eq!(u.outcome, Some(UpgradeOutcome::RollbackFailed));
        assert!(u.message.unwrap().contains("recorded no end within"));
        assert_eq!(
            w.plan(),
            plan("dhis2/core:2.42.4", 0),
            "half-migrated: stopped"
        );
    }

    #[test]
    fn a_rollback_that_failed_after_restoring_the_database_lets_the_old_version_run() {
        let mut w = World::new("2.43.1");
        w.run_until_migrating();
        w.restarts = CRASH_LOOP_RESTARTS;
        w.step();
        w.restore = Some(RestoreSeen {
            phase: RestorePhase::Failed,
            message: Some("DHIS2 did not become ready on it within spec.deadlineSeconds".into()),
            replaced_database: Some("hmis__replaced_20261206T061500Z".into()),
            database_swapped: true,
        });
        w.step();
        let u = w.upgrade.clone().unwrap();
        assert_eq!(u.outcome, Some(UpgradeOutcome::RolledBack));
        assert!(u.message.unwrap().contains("was restored"));
        assert_eq!(w.plan(), plan("dhis2/core:2.42.4", 3));
    }

    #[test]
    fn a_rollback_after_the_new_version_answered_says_where_its_writes_are_kept() {
        let mut w = World::new("2.43.1");
        w.run_until_migrating();
        w.now = at("05:10:00");
        w.answering = true;
        w.step();
        assert_eq!(
            w.upgrade
                .as_ref()
                .unwrap()
                .new_version_answered_at
                .as_deref(),
            Some("2026-12-06T05:10:00Z")
        );
        w.now = at("06:10:00");
        w.step();
        let u = w.upgrade.clone().unwrap();
        assert_eq!(u.phase, UpgradePhase::RollingBack);
        let message = u.message.unwrap();
        assert!(
            message.contains("answered users since 2026-12-06T05:10:00Z"),
            "{message}"
        );
        assert_eq!(
            w.plan().replicas,
            0,
            "writes stop as the rollback is decided"
        );
        w.restore = Some(RestoreSeen {
            phase: RestorePhase::Completed,
            message: None,
            replaced_database: Some("hmis__replaced_20261206T061500Z".into()),
            database_swapped: false,
        });
        w.step();
        let message = w.upgrade.clone().unwrap().message.unwrap();
        assert!(
            message.contains("since 2026-12-06T05:10:00Z is in the migrated database, kept as hmis__replaced_20261206T061500Z"),
            "{message}"
        );
    }

    #[test]
    fn after_a_failed_rollback_dhis2_stays_stopped_until_a_restore_or_an_acceptance() {
        let failed = || {
            let mut w = World::new("2.43.1");
            w.run_until_migrating();
            w.restarts = CRASH_LOOP_RESTARTS;
            w.step();
            w.restore = Some(RestoreSeen {
                phase: RestorePhase::Failed,
                message: Some("the backup is unreadable".into()),
                replaced_database: None,
                database_swapped: false,
            });
            w.step();
            assert_eq!(
                w.upgrade.as_ref().unwrap().outcome,
                Some(UpgradeOutcome::RollbackFailed)
            );
            w
        };
        // Setting spec.version back does not start the old version on the migrated database.
        let mut w = failed();
        w.spec_version = "2.42.4".into();
        w.spec_image = "dhis2/core:2.42.4".into();
        w.step();
        w.step();
        let u = w.upgrade.clone().unwrap();
        assert!(
            u.message
                .unwrap()
                .contains("stays stopped whatever spec.version says")
        );
        assert_eq!(w.plan(), plan("dhis2/core:2.42.4", 0));
        // A restore over the instance lets it run (and lets that restore start DHIS2).
        w.recovery_restore = Some("manual-restore".into());
        w.step();
        assert_eq!(
            w.upgrade.as_ref().unwrap().recovered_by.as_deref(),
            Some("Dhis2Restore manual-restore")
        );
        assert_eq!(w.plan(), plan("dhis2/core:2.42.4", 3));
        assert!(w.events.contains(&"UpgradeRecovered"));
        // Then spec.version at the running version clears it as any finished upgrade.
        w.step();
        assert_eq!(w.upgrade, None);

        // An acceptance counts only for this very upgrade.
        let mut w = failed();
        w.accepted = Some("2026-01-01T00:00:00Z".into());
        w.step();
        assert_eq!(w.plan(), plan("dhis2/core:2.42.4", 0));
        w.accepted = Some(w.upgrade.as_ref().unwrap().started_at.clone());
        w.step();
        assert_eq!(w.plan(), plan("dhis2/core:2.42.4", 3));
        assert!(w.events.contains(&"MigratedDatabaseAccepted"));
    }
}
