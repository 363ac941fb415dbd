//! What a `Dhis2Restore` does next (pure): whether it may overwrite its target, which backup it
//! restores from where, what a new target instance looks like, and which step follows from what
//! its status records and the cluster shows. Everything a step needs is in the status, so an
//! operator restarted mid-restore carries on where it stopped.
//!
//! ScalingDown → Restoring → Starting → Completed, or Failed; a finished restore never runs again.

use std::collections::BTreeMap;

use crate::crd::backup_common::RepositorySpec;
use crate::crd::backup_common::RunPhase;
use crate::crd::dhis2_backup::Dhis2Backup;
use crate::crd::dhis2_instance::{Dhis2Instance, Dhis2InstanceSpec};
use crate::crd::dhis2_restore::RestorePhase;
use crate::crd::dhis2_restore::{Dhis2RestoreSpec, NewInstanceOverrides, RestoreSource};
use crate::job_report::RestoreJobReport;

use crate::operator::jobs::outcome::JobOutcome;
use crate::rules::names::RESTORE_IN_PROGRESS_ANNOTATION;
use crate::rules::repository_protection::{RepositoryUse, check_protection};

/// The backup to restore: the engine's instance name, the backup id (or `latest`) and the
/// repository.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedSource {
    pub instance: String,
    pub backup_id: String,
    pub repository: RepositorySpec,
}

/// Why the source cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceProblem {
    /// Not yet (a backup still running) or not as written (fixable by editing the spec).
    Blocked(String),
    /// Never: the named backup failed.
    Unusable(String),
}

/// Which backup, from where: `backupRef` (a `Completed` `Dhis2Backup`) or `backupId` (default
/// `latest`); the repository from `spec.source.repository`, else the backup's, else the source
/// instance's `spec.backup.repository`.
pub fn resolve_source(
    source: &RestoreSource,
    backup: Option<&Dhis2Backup>,
    source_instance: Option<&Dhis2Instance>,
) -> Result<ResolvedSource, SourceProblem> {
    use SourceProblem::{Blocked, Unusable};
    let src = &source.instance;
    let backup_id = match (&source.backup_ref, &source.backup_id) {
        (Some(_), Some(_)) => {
            return Err(Blocked(
                "spec.source: set backupRef or backupId, not both".into(),
            ));
        }
        (Some(name), None) => {
            let Some(backup) = backup else {
                return Err(Blocked(format!(
                    "Dhis2Backup {name} (spec.source.backupRef) does not exist in this namespace"
                )));
            };
            if backup.spec.instance_ref != *src {
                return Err(Blocked(format!(
                    "Dhis2Backup {name} is a backup of {}, not of spec.source.instance {src}: set spec.source.instance: {}",
                    backup.spec.instance_ref, backup.spec.instance_ref
                )));
            }
            let status = backup.status.clone().unwrap_or_default();
            match status.phase {
                Some(RunPhase::Completed) => match status.backup_id {
                    Some(id) => id,
                    None => {
                        return Err(Unusable(format!(
                            "Dhis2Backup {name} is Completed but records no backup id; use spec.source.backupId"
                        )));
                    }
                },
                Some(RunPhase::Failed) => {
                    return Err(Unusable(format!(
                        "Dhis2Backup {name} failed ({}); restore another backup",
                        status
                            .failure_reason
                            .as_deref()
                            .unwrap_or("no reason recorded")
                    )));
                }
                _ => {
                    return Err(Blocked(format!(
                        "waiting for Dhis2Backup {name} to complete"
                    )));
                }
            }
        }
        (None, id) => id.clone().unwrap_or_else(|| "latest".into()),
    };
    let (repository, field) = source
        .repository
        .clone()
        .map(|r| (r, "spec.source.repository".to_string()))
        .or_else(|| {
            backup.and_then(|b| {
                let name = b.metadata.name.as_deref().unwrap_or_default();
                b.spec.repository.clone().map(|r| {
                    (r, format!("spec.repository of Dhis2Backup {name}"))
                })
            })
        })
        .or_else(|| {
            source_instance
                .and_then(|i| i.spec.backup.as_ref())
                .and_then(|b| b.repository.clone())
                .map(|r| (r, format!("spec.backup.repository of Dhis2Instance {src}")))
        })
        .filter(|(r, _)| r.s3.is_some() || r.volume.is_some())
        .ok_or_else(|| {
            Blocked(format!(
                "no backup repository: set spec.source.repository, or spec.backup.repository on Dhis2Instance {src}"
            ))
        })?;
    check_protection(&repository, &field, RepositoryUse::Read).map_err(Blocked)?;
    Ok(ResolvedSource {
        instance: src.clone(),
        backup_id,
        repository,
    })
}

/// The repository as people read it (no credentials): `s3://bucket/prefix`, or
/// `pvc://claim/path`.
pub fn repository_location(repository: &RepositorySpec) -> String {
    let join = |base: String, path: Option<&str>| match path.map(|p| p.trim_matches('/')) {
        Some(p) if !p.is_empty() => format!("{base}/{p}"),
        _ => base,
    };
    match (&repository.s3, &repository.volume) {
        (Some(s3), _) => join(format!("s3://{}", s3.bucket), s3.prefix.as_deref()),
        (None, Some(v)) => join(format!("pvc://{}", v.claim_name), v.path.as_deref()),
        (None, None) => String::new(),
    }
}

/// A new target instance, made from the source's spec: its own database (managed, unless
/// `newInstance.databaseRef`), no hostname unless given (two instances never answer on one
/// name), the source's environment unless overridden, never the source's S3 file store bucket,
/// the source's backup settings. It is born held by the restore: DHIS2 never starts on its
/// empty database.
pub fn new_target_instance(
    restore_name: &str,
    namespace: &str,
    target: &str,
    source: &Dhis2InstanceSpec,
    overrides: Option<&NewInstanceOverrides>,
) -> Dhis2Instance {
    let overrides = overrides.cloned().unwrap_or_default();
    let mut spec = source.clone();
    spec.database_ref = overrides.database_ref;
    spec.hostname = overrides.hostname;
    if spec.hostname.is_none() {
        spec.ingress = None;
    } else if let Some(ingress) = spec.ingress.as_mut() {
        // The source's certificate is for the source's host name.
        ingress.tls_secret_name = None;
    }
    if let Some(environment) = overrides.environment {
        spec.environment = environment;
    }
    if let Some(file_store) = spec.file_store.as_mut()
        && file_store.s3.is_some()
    {
        file_store.s3 = None;
    }
    let mut instance = Dhis2Instance::new(target, spec);
    instance.metadata.namespace = Some(namespace.to_string());
    instance.metadata.annotations = Some(BTreeMap::from([(
        RESTORE_IN_PROGRESS_ANNOTATION.to_string(),
        restore_name.to_string(),
    )]));
    instance
}

/// Whether the target keeps uploaded files on a volume (the file store claim), which the
/// restore fills when the spec asks for it.
pub fn restores_file_store(spec: &Dhis2RestoreSpec, target: &Dhis2InstanceSpec) -> bool {
    spec.include_file_store && target.file_store.as_ref().is_none_or(|f| f.s3.is_none())
}

/// What a held target looks like now (read by the controller).
#[derive(Debug, Clone, PartialEq)]
pub struct TargetFacts {
    /// Who holds it: the `restore-in-progress` annotation.
    pub held_by: Option<String>,
    /// `spec.replicas` of the target (0: its owner keeps it stopped).
    pub spec_replicas: i32,
    /// Its Deployment asks for no replica and reports none (or does not exist yet).
    pub deployment_stopped: bool,
    /// DHIS2 pods still there.
    pub dhis2_pods: usize,
    /// The database to restore into is known (`Err`: why not yet).
    pub database: Result<(), String>,
    /// The file store claim to restore into, when the restore fills one: does it exist?
    pub file_store_claim: Option<(String, bool)>,
    /// The instance reports Ready and its Deployment runs all its replicas again.
    pub ready: bool,
    /// The instance's own account of itself, for messages.
    pub instance_message: String,
}

/// What the status records and the cluster shows (read by the controller).
#[derive(Debug, Clone, PartialEq)]
pub struct Observed<'a> {
    pub phase: RestorePhase,
    pub restore_name: &'a str,
    pub target_name: &'a str,
    /// The restore created the target (recorded in status before creating it).
    pub target_created: bool,
    /// `None`: the target instance does not exist.
    pub target: Option<TargetFacts>,
    /// The restore Job's outcome, in `Restoring`.
    pub job: Option<JobOutcome>,
    pub job_name: &'a str,
    pub regenerate_analytics: bool,
    /// A point-in-time recovery: its new database, instead of a Job.
    pub point_in_time: Option<RecoveryFacts>,
    /// `spec.deadlineSeconds` have passed since the restore started (left Pending).
    pub overdue: bool,
    /// Asked of the target's database server when the Job ended without a report (deleted, or
    /// its termination message lost): whether the restored database was swapped in.
    pub swap_evidence: Option<SwapEvidence>,
}

/// What the target's database server shows of a restore Job that ended without a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SwapEvidence {
    /// A `<database>__replaced_<time>` made since the restore started: the Job swapped the
    /// restored database in, and that is the database the target had.
    Swapped { replaced: String },
    /// None: the target still holds its own database.
    NotSwapped,
    /// The server could not be asked: why.
    Unknown(String),
}

/// The Job ended without the report the engine writes once it has swapped the database in.
pub fn ended_without_report(job: Option<&JobOutcome>) -> bool {
    matches!(
        job,
        Some(JobOutcome::Missing) | Some(JobOutcome::Failed { report: None, .. })
    )
}

/// The new database of a point-in-time recovery, as the cluster shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryFacts {
    /// The cnpg `Dhis2Database` being recovered.
    pub database: String,
    pub exists: bool,
    /// The target's `spec.databaseRef` names it already.
    pub target_uses_it: bool,
    /// `spec.deadlineSeconds` have passed since the restore started.
    pub overdue: bool,
}

/// What the Job that looks for `latest` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// Still looking (or not started yet).
    Looking,
    /// The concrete backup id to record before anything is stopped.
    Found(String),
    /// No backup can be restored: why.
    NotFound(String),
}

/// The outcome of the resolve Job of `instance`'s backup (`None`: not created yet).
pub fn resolution(outcome: Option<&JobOutcome>, instance: &str) -> Resolution {
    use crate::job_report::JobReport;
    match outcome {
        None | Some(JobOutcome::Running) | Some(JobOutcome::Missing) => Resolution::Looking,
        Some(JobOutcome::Succeeded(Some(JobReport::Resolved(r))))
            if r.instance == instance && !r.id.is_empty() =>
        {
            Resolution::Found(r.id.clone())
        }
        Some(JobOutcome::Succeeded(_)) => Resolution::NotFound(
            "the Job that looks for the newest backup ended without saying which one".into(),
        ),
        Some(JobOutcome::Failed { reason, .. }) => Resolution::NotFound(reason.clone()),
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Check again later; the reason goes into `status.message`.
    Wait(String),
    /// Create the new target instance (born held).
    CreateTarget,
    /// Put the restore's name on the target: its DHIS2 stops.
    HoldTarget,
    /// DHIS2 is stopped and the database known: start the engine's Job.
    StartJob,
    /// The Job succeeded: record the engine's report, then start DHIS2 again.
    JobSucceeded(Option<RestoreJobReport>),
    /// Point-in-time recovery: create the new cnpg database (CloudNativePG starts replaying).
    CreateRecoveryDatabase,
    /// DHIS2 is stopped and the recovered database is ready: point the target at it.
    SwitchDatabase,
    /// The target uses the recovered database: record it, then start DHIS2 again.
    RecoveryFinished,
    /// The Job failed (the engine left the target untouched): record why, start DHIS2 again.
    JobFailed(String),
    /// The Job failed after it swapped the restored database in (its report says so, and
    /// whether the file store was restored): record what was swapped, start DHIS2 again.
    JobFailedAfterSwap(RestoreJobReport),
    /// The Job ended without a report, and the database server shows it swapped the restored
    /// database in (`Swapped`) or cannot say (`Unknown`): record that, never "left as it was".
    JobEndedUnreported {
        reason: String,
        evidence: SwapEvidence,
    },
    /// Take the restore's name off the target: DHIS2 starts again.
    ReleaseTarget,
    /// The restore failed into an instance it created: set that instance's `spec.replicas` to 0
    /// before releasing it, so DHIS2 never starts on an empty database (it would make a new,
    /// empty system with DHIS2's default admin account).
    StopCreatedTarget,
    /// DHIS2 is up on the restored database: ask it to regenerate analytics, then complete.
    RegenerateAnalytics,
    /// Done, without asking for analytics (`regenerateAnalytics: false`, or DHIS2 is kept
    /// stopped by its own spec); the reason goes into `status.analyticsRegeneration`.
    Complete(String),
    /// Stop here, with the reason.
    Fail(String),
    /// Finished and the target released: nothing more, ever.
    Done,
}

/// The next step of a started restore (Pending is decided by [`check_consent`] and
/// [`resolve_source`]).
pub fn next_step(o: &Observed) -> Step {
    let step = step_now(o);
    match step {
        // No wait lasts for ever: DHIS2 must not stay down, nor a restore hang unfinished.
        Step::Wait(why) if o.overdue => overdue(o, &why),
        step => step,
    }
}

/// What ends a restore that still waits once `spec.deadlineSeconds` have passed.
fn overdue(o: &Observed, why: &str) -> Step {
    let target = o.target_name;
    match o.phase {
        RestorePhase::ScalingDown => Step::Fail(format!(
            "the restore did not begin within spec.deadlineSeconds ({why}); nothing was restored: {target} was left as it was and DHIS2 starts again"
        )),
        RestorePhase::Starting => Step::Fail(format!(
            "the database of {target} was restored, but DHIS2 did not become ready on it within spec.deadlineSeconds ({why}); the restored database stays in place: see kubectl describe d2 {target}"
        )),
        // The Job's own deadline (activeDeadlineSeconds) ends Restoring; Pending stops nothing.
        _ => Step::Wait(why.to_string()),
    }
}

fn step_now(o: &Observed) -> Step {
    let target = o.target_name;
    let held_by_us = o
        .target
        .as_ref()
        .is_some_and(|t| t.held_by.as_deref() == Some(o.restore_name));
    match o.phase {
        RestorePhase::Pending => Step::Wait("not started".into()),
        RestorePhase::Failed
            if held_by_us
                && o.target_created
                && o.target.as_ref().is_some_and(|t| t.spec_replicas > 0) =>
        {
            Step::StopCreatedTarget
        }
        RestorePhase::Completed | RestorePhase::Failed if held_by_us => Step::ReleaseTarget,
        RestorePhase::Completed | RestorePhase::Failed => Step::Done,
        RestorePhase::ScalingDown => {
            let Some(t) = &o.target else {
                return if o.target_created {
                    Step::CreateTarget
                } else {
                    Step::Fail(format!(
                        "Dhis2Instance {target} was deleted before the restore began; nothing was restored"
                    ))
                };
            };
            match t.held_by.as_deref() {
                Some(us) if us == o.restore_name => {}
                // Created by this restore, yet not held by it: someone else made it first.
                _ if o.target_created => {
                    return Step::Fail(format!(
                        "Dhis2Instance {target} was created by someone else while this restore began; nothing was restored: to restore over it, create a new Dhis2Restore with spec.confirmOverwrite: {target}"
                    ));
                }
                Some(other) => {
                    return Step::Wait(format!(
                        "Dhis2Restore {other} is restoring into {target}; waiting for it to finish"
                    ));
                }
                None => return Step::HoldTarget,
            }
            // The recovery may take long: it starts while DHIS2 stops.
            if o.point_in_time.as_ref().is_some_and(|p| !p.exists) {
                return Step::CreateRecoveryDatabase;
            }
            if !t.deployment_stopped || t.dhis2_pods > 0 {
                return Step::Wait(format!(
                    "waiting for DHIS2 of {target} to stop ({} pod(s) left)",
                    t.dhis2_pods
                ));
            }
            if let Some(p) = &o.point_in_time {
                if let Err(why) = &t.database
                    && p.overdue
                    && !p.target_uses_it
                {
                    // DHIS2 must not stay down for ever: it starts again on what it had.
                    return Step::Fail(format!(
                        "CloudNativePG did not finish recovering Dhis2Database {} within spec.deadlineSeconds: {why}; {target} was left on its database as it was (Dhis2Database {} is kept for inspection: kubectl cnpg status {})",
                        p.database, p.database, p.database
                    ));
                }
                if let Err(why) = &t.database {
                    return Step::Wait(format!(
                        "CloudNativePG is recovering Dhis2Database {} to the point in time: {why}",
                        p.database
                    ));
                }
                return if p.target_uses_it {
                    Step::RecoveryFinished
                } else {
                    Step::SwitchDatabase
                };
            }
            if let Err(why) = &t.database {
                return Step::Wait(format!("waiting for the database of {target}: {why}"));
            }
            if let Some((claim, false)) = &t.file_store_claim {
                return Step::Wait(format!(
                    "waiting for the file store claim {claim} of {target}"
                ));
            }
            Step::StartJob
        }
        RestorePhase::Restoring => match &o.job {
            None | Some(JobOutcome::Running) => {
                Step::Wait(format!("the restore Job {} is running", o.job_name))
            }
            Some(JobOutcome::Succeeded(report)) => {
                let report = match report {
                    Some(crate::job_report::JobReport::Restore(r)) => Some(r.clone()),
                    _ => None,
                };
                Step::JobSucceeded(report)
            }
            Some(JobOutcome::Failed {
                report: Some(crate::job_report::JobReport::Restore(r)),
                ..
            }) => Step::JobFailedAfterSwap(r.clone()),
            Some(outcome @ (JobOutcome::Failed { .. } | JobOutcome::Missing)) => {
                let reason = match outcome {
                    JobOutcome::Failed { reason, .. } => reason.clone(),
                    _ => format!(
                        "the restore Job {} vanished before it finished (deleted by someone?)",
                        o.job_name
                    ),
                };
                match &o.swap_evidence {
                    None | Some(SwapEvidence::NotSwapped) => Step::JobFailed(reason),
                    Some(evidence) => Step::JobEndedUnreported {
                        reason,
                        evidence: evidence.clone(),
                    },
                }
            }
        },
        RestorePhase::Starting => {
            let Some(t) = &o.target else {
                return Step::Fail(format!(
                    "Dhis2Instance {target} was deleted after its database was restored"
                ));
            };
            if held_by_us {
                return Step::ReleaseTarget;
            }
            if t.spec_replicas == 0 {
                return Step::Complete(format!(
                    "not requested: DHIS2 of {target} is stopped (spec.replicas: 0)"
                ));
            }
            if !t.ready {
                return Step::Wait(format!(
                    "waiting for DHIS2 of {target} to start on the restored database: {}",
                    t.instance_message
                ));
            }
            if o.regenerate_analytics {
                Step::RegenerateAnalytics
            } else {
                Step::Complete("not requested (spec.regenerateAnalytics: false)".into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::dhis2_backup::Dhis2BackupStatus;
    use crate::crd::dhis2_instance::Environment;
    use crate::crd::dhis2_restore::Dhis2Restore;
    use crate::job_report::JobReport;

    fn restore(yaml: &str) -> Dhis2RestoreSpec {
        Dhis2Restore::new("r", serde_saphyr::from_str(yaml).expect("fixture")).spec
    }

    fn instance(name: &str, yaml: &str) -> Dhis2Instance {
        let mut i = Dhis2Instance::new(name, serde_saphyr::from_str(yaml).expect("fixture"));
        i.metadata.namespace = Some("moh".into());
        i
    }

    fn production() -> Dhis2Instance {
        instance("hmis", "version: '2.41.3'\nenvironment: production\n")
    }

    fn with_repository() -> Dhis2Instance {
        instance(
            "hmis",
            "version: '2.41.3'\nenvironment: production\nbackup:\n  repository:\n    s3: {bucket: moh-backups, prefix: hmis, credentialsSecretRef: s3}\n",
        )
    }

    fn backup(phase: Option<RunPhase>, id: Option<&str>) -> Dhis2Backup {
        let mut b = Dhis2Backup::new(
            "nightly-1",
            serde_saphyr::from_str("instanceRef: hmis\n").unwrap(),
        );
        b.status = Some(Dhis2BackupStatus {
            phase,
            backup_id: id.map(str::to_string),
            failure_reason: Some("disk full".into()),
            ..Default::default()
        });
        b
    }

    #[test]
    fn the_source_defaults_to_the_latest_backup_in_the_instances_repository() {
        let spec = restore("source: {instance: hmis}\ntarget: {instance: copy}\n");
        let source = resolve_source(&spec.source, None, Some(&with_repository())).unwrap();
        assert_eq!(source.backup_id, "latest");
        assert_eq!(source.instance, "hmis");
        assert_eq!(
            repository_location(&source.repository),
            "s3://moh-backups/hmis"
        );

        let none = resolve_source(&spec.source, None, Some(&production())).unwrap_err();
        assert!(
            matches!(&none, SourceProblem::Blocked(m) if m.contains("spec.source.repository")),
            "{none:?}"
        );
        // The instance may be gone (a disaster): the repository named in the restore suffices.
        let named = restore(
            "source: {instance: hmis, backupId: 20261125T020000Z-1a2b3c4d, repository: {volume: {claimName: nfs, path: moh}}}\ntarget: {instance: hmis}\n",
        );
        let source = resolve_source(&named.source, None, None).unwrap();
        assert_eq!(source.backup_id, "20261125T020000Z-1a2b3c4d");
        assert_eq!(repository_location(&source.repository), "pvc://nfs/moh");
    }

    #[test]
    fn a_backup_ref_must_be_completed() {
        let spec =
            restore("source: {instance: hmis, backupRef: nightly-1}\ntarget: {instance: copy}\n");
        let instance = with_repository();
        let done = backup(Some(RunPhase::Completed), Some("20261125T020000Z-1a2b3c4d"));
        assert_eq!(
            resolve_source(&spec.source, Some(&done), Some(&instance))
                .unwrap()
                .backup_id,
            "20261125T020000Z-1a2b3c4d"
        );
        let running = backup(Some(RunPhase::Running), None);
        assert!(matches!(
            resolve_source(&spec.source, Some(&running), Some(&instance)),
            Err(SourceProblem::Blocked(m)) if m.contains("waiting for Dhis2Backup nightly-1")
        ));
        let failed = backup(Some(RunPhase::Failed), None);
        assert!(matches!(
            resolve_source(&spec.source, Some(&failed), Some(&instance)),
            Err(SourceProblem::Unusable(m)) if m.contains("disk full")
        ));
        assert!(matches!(
            resolve_source(&spec.source, None, Some(&instance)),
            Err(SourceProblem::Blocked(m)) if m.contains("does not exist")
        ));
        let both = restore(
            "source: {instance: hmis, backupRef: nightly-1, backupId: latest}\ntarget: {instance: copy}\n",
        );
        assert!(matches!(
            resolve_source(&both.source, Some(&done), Some(&instance)),
            Err(SourceProblem::Blocked(m)) if m.contains("not both")
        ));
        let other = restore(
            "source: {instance: dhis-old, backupRef: nightly-1}\ntarget: {instance: copy}\n",
        );
        assert!(matches!(
            resolve_source(&other.source, Some(&done), Some(&instance)),
            Err(SourceProblem::Blocked(m)) if m.contains("set spec.source.instance: hmis")
        ));
    }

    #[test]
    fn a_new_instance_is_the_source_with_its_own_database_and_name() {
        let source = instance(
            "hmis",
            "version: '2.41.3'\nenvironment: production\nreplicas: 1\ndatabaseRef: hmis-pg\nhostname: hmis.moh.gov.kh\n\
             ingress: {className: nginx, tlsSecretName: hmis-tls}\nadminSecretRef: dhis2-admin\n\
             backup:\n  repository:\n    s3: {bucket: moh-backups, credentialsSecretRef: s3}\n",
        );
        let copy = new_target_instance("refresh", "moh", "hmis-copy", &source.spec, None);
        assert_eq!(copy.metadata.name.as_deref(), Some("hmis-copy"));
        assert_eq!(copy.metadata.namespace.as_deref(), Some("moh"));
        assert_eq!(copy.spec.database_ref, None, "its own managed database");
        assert_eq!(copy.spec.hostname, None);
        assert_eq!(copy.spec.ingress, None);
        assert_eq!(copy.spec.environment, Environment::Production);
        assert_eq!(copy.spec.backup, source.spec.backup);
        assert_eq!(copy.spec.admin_secret_ref.as_deref(), Some("dhis2-admin"));
        assert_eq!(copy.spec.version, "2.41.3");
        assert_eq!(
            copy.metadata
                .annotations
                .as_ref()
                .unwrap()
                .get(RESTORE_IN_PROGRESS_ANNOTATION)
                .map(String::as_str),
            Some("refresh"),
            "born stopped: DHIS2 never starts on the empty database"
        );
        assert!(
            copy.metadata.owner_references.is_none(),
            "outlives the restore"
        );

        let overrides = NewInstanceOverrides {
            database_ref: Some("staging-pg".into()),
            hostname: Some("staging.moh.gov.kh".into()),
            environment: Some(Environment::Staging),
        };
        let staging =
            new_target_instance("refresh", "moh", "staging", &source.spec, Some(&overrides));
        assert_eq!(staging.spec.database_ref.as_deref(), Some("staging-pg"));
        assert_eq!(staging.spec.hostname.as_deref(), Some("staging.moh.gov.kh"));
        assert_eq!(staging.spec.environment, Environment::Staging);
        let ingress = staging.spec.ingress.unwrap();
        assert_eq!(ingress.class_name.as_deref(), Some("nginx"));
        assert_eq!(
            ingress.tls_secret_name, None,
            "not the source's certificate"
        );
    }

    #[test]
    fn a_new_instance_never_shares_the_sources_file_store_bucket() {
        let source = instance(
            "hmis",
            "version: '2.41.3'\nenvironment: production\nfileStore:\n  s3: {bucket: hmis-files, credentialsSecretRef: s3}\n",
        );
        let copy = new_target_instance("r", "moh", "copy", &source.spec, None);
        assert!(copy.spec.file_store.as_ref().unwrap().s3.is_none());
        let spec = restore("source: {instance: hmis}\ntarget: {instance: copy}\n");
        assert!(restores_file_store(&spec, &copy.spec));
        assert!(!restores_file_store(&spec, &source.spec));
        let without = restore(
            "source: {instance: hmis}\ntarget: {instance: copy}\nincludeFileStore: false\n",
        );
        assert!(!restores_file_store(&without, &copy.spec));
    }

    fn held(by: Option<&str>) -> TargetFacts {
        TargetFacts {
            held_by: by.map(str::to_string),
            spec_replicas: 1,
            deployment_stopped: true,
            dhis2_pods: 0,
            database: Ok(()),
            file_store_claim: Some(("copy-files".into(), true)),
            ready: false,
            instance_message: "0/1 replicas ready".into(),
        }
    }

    fn observed(phase: RestorePhase, target: Option<TargetFacts>) -> Observed<'static> {
        Observed {
            phase,
            restore_name: "refresh",
            target_name: "copy",
            target_created: false,
            target,
            job: None,
            job_name: "refresh-restore",
            regenerate_analytics: true,
            point_in_time: None,
            overdue: false,
            swap_evidence: None,
        }
    }

    #[test]
    fn no_wait_outlasts_the_deadline() {
        let mut stopping = held(Some("refresh"));
        stopping.deployment_stopped = false;
        stopping.dhis2_pods = 1;
        let mut o = observed(RestorePhase::ScalingDown, Some(stopping));
        assert!(matches!(next_step(&o), Step::Wait(_)));
        o.overdue = true;
        let Step::Fail(why) = next_step(&o) else {
            panic!("fails at the deadline");
        };
        assert!(
            why.contains("nothing was restored") && why.contains("1 pod(s) left"),
            "{why}"
        );

        let mut o = observed(RestorePhase::Starting, Some(held(None)));
        assert!(matches!(next_step(&o), Step::Wait(_)));
        o.overdue = true;
        let Step::Fail(why) = next_step(&o) else {
            panic!("fails at the deadline");
        };
        assert!(
            why.contains("was restored, but DHIS2 did not become ready"),
            "{why}"
        );
        assert!(why.contains("0/1 replicas ready"), "{why}");
    }

    #[test]
    fn a_point_in_time_recovery_creates_its_database_waits_for_it_then_switches_the_target() {
        let pitr = |exists: bool, target_uses_it: bool, target: TargetFacts| {
            let mut o = observed(RestorePhase::ScalingDown, Some(target));
            o.point_in_time = Some(RecoveryFacts {
                database: "refresh-db".into(),
                exists,
                target_uses_it,
                overdue: false,
            });
            next_step(&o)
        };
        // Created at once, while DHIS2 is still stopping.
        let mut stopping = held(Some("refresh"));
        stopping.deployment_stopped = false;
        stopping.dhis2_pods = 1;
        assert_eq!(
            pitr(false, false, stopping.clone()),
            Step::CreateRecoveryDatabase
        );
        assert!(matches!(pitr(true, false, stopping), Step::Wait(m) if m.contains("to stop")));
        let mut recovering = held(Some("refresh"));
        recovering.database = Err("CloudNativePG cluster refresh-db: Setting up primary".into());
        assert!(matches!(
            pitr(true, false, recovering),
            Step::Wait(m) if m.contains("recovering Dhis2Database refresh-db") && m.contains("Setting up primary")
        ));
        assert_eq!(
            pitr(true, false, held(Some("refresh"))),
            Step::SwitchDatabase
        );
        assert_eq!(
            pitr(true, true, held(Some("refresh"))),
            Step::RecoveryFinished
        );
        // Never while someone else holds the target.
        assert!(matches!(
            pitr(false, false, held(Some("other"))),
            Step::Wait(_)
        ));

        // A recovery that never ends fails after spec.deadlineSeconds: DHIS2 starts again on
        // the database it had.
        let mut o = observed(RestorePhase::ScalingDown, Some(held(Some("refresh"))));
        if let Some(t) = o.target.as_mut() {
            t.database = Err("CloudNativePG cluster refresh-db: Setting up primary".into());
        }
        o.point_in_time = Some(RecoveryFacts {
            database: "refresh-db".into(),
            exists: true,
            target_uses_it: false,
            overdue: true,
        });
        assert!(matches!(
            next_step(&o),
            Step::Fail(m) if m.contains("within spec.deadlineSeconds") && m.contains("left on its database as it was")
        ));
    }

    #[test]
    fn dhis2_is_stopped_before_the_job_starts() {
        let free = observed(RestorePhase::ScalingDown, Some(held(None)));
        assert_eq!(next_step(&free), Step::HoldTarget);

        let mut running = held(Some("refresh"));
        running.deployment_stopped = false;
        running.dhis2_pods = 1;
        assert!(matches!(
            next_step(&observed(RestorePhase::ScalingDown, Some(running))),
            Step::Wait(m) if m.contains("to stop (1 pod(s) left)")
        ));
        let mut terminating = held(Some("refresh"));
        terminating.dhis2_pods = 1;
        assert!(matches!(
            next_step(&observed(RestorePhase::ScalingDown, Some(terminating))),
            Step::Wait(_)
        ));
        let mut no_db = held(Some("refresh"));
        no_db.database = Err("Dhis2Database copy-db is not ready".into());
        assert!(matches!(
            next_step(&observed(RestorePhase::ScalingDown, Some(no_db))),
            Step::Wait(m) if m.contains("copy-db is not ready")
        ));
        let mut no_claim = held(Some("refresh"));
        no_claim.file_store_claim = Some(("copy-files".into(), false));
        assert!(matches!(
            next_step(&observed(RestorePhase::ScalingDown, Some(no_claim))),
            Step::Wait(m) if m.contains("copy-files")
        ));
        assert_eq!(
            next_step(&observed(
                RestorePhase::ScalingDown,
                Some(held(Some("refresh")))
            )),
            Step::StartJob
        );
    }

    #[test]
    fn one_restore_at_a_time_per_target() {
        assert!(matches!(
            next_step(&observed(RestorePhase::ScalingDown, Some(held(Some("other"))))),
            Step::Wait(m) if m.contains("Dhis2Restore other is restoring into copy")
        ));
    }

    #[test]
    fn a_created_target_is_created_again_after_a_restart_but_never_taken_from_someone_else() {
        let mut o = observed(RestorePhase::ScalingDown, None);
        o.target_created = true;
        assert_eq!(next_step(&o), Step::CreateTarget);
        o.target = Some(held(None));
        assert!(matches!(next_step(&o), Step::Fail(m) if m.contains("someone else")));
        o.target = Some(held(Some("refresh")));
        assert_eq!(next_step(&o), Step::StartJob);
        // An existing target deleted before the restore began.
        let gone = observed(RestorePhase::ScalingDown, None);
        assert!(matches!(next_step(&gone), Step::Fail(m) if m.contains("nothing was restored")));
    }

    #[test]
    fn the_jobs_outcome_decides_and_dhis2_starts_again_either_way() {
        let mut o = observed(RestorePhase::Restoring, Some(held(Some("refresh"))));
        o.job = Some(JobOutcome::Running);
        assert!(matches!(next_step(&o), Step::Wait(_)));
        let report = RestoreJobReport {
            id: "20261125T020000Z-1a2b3c4d".into(),
            target: "copy".into(),
            duration_seconds: 12.5,
            replaced_database: Some("copy__replaced_20261125T030000Z".into()),
            ..Default::default()
        };
        o.job = Some(JobOutcome::Succeeded(Some(JobReport::Restore(
            report.clone(),
        ))));
        assert_eq!(next_step(&o), Step::JobSucceeded(Some(report.clone())));
        o.job = Some(JobOutcome::Failed {
            reason: "backup latest of hmis: no such backup".into(),
            report: None,
        });
        assert!(matches!(next_step(&o), Step::JobFailed(m) if m.contains("no such backup")));
        o.job = Some(JobOutcome::Missing);
        assert!(matches!(next_step(&o), Step::JobFailed(m) if m.contains("vanished")));
        // Failed after the swap: the report says what was swapped, never "left as it was".
        let swapped = RestoreJobReport {
            failure: Some("writing /opt/dhis2/dhis.conf: Not a directory".into()),
            files_dir: None,
            ..report.clone()
        };
        o.job = Some(JobOutcome::Failed {
            reason: "writing /opt/dhis2/dhis.conf: Not a directory".into(),
            report: Some(JobReport::Restore(swapped.clone())),
        });
        assert_eq!(next_step(&o), Step::JobFailedAfterSwap(swapped));

        // Ended without a report (the Job deleted, its termination message lost): what the
        // database server shows decides, never "left as it was" on a swapped database.
        assert!(!ended_without_report(o.job.as_ref()));
        o.job = Some(JobOutcome::Missing);
        assert!(ended_without_report(o.job.as_ref()));
        o.swap_evidence = Some(SwapEvidence::NotSwapped);
        assert!(matches!(next_step(&o), Step::JobFailed(m) if m.contains("vanished")));
        o.swap_evidence = Some(SwapEvidence::Swapped {
            replaced: "copy__replaced_20261125t030000z".into(),
        });
        assert!(matches!(
            next_step(&o),
            Step::JobEndedUnreported { reason, evidence: SwapEvidence::Swapped { replaced } }
                if reason.contains("vanished") && replaced == "copy__replaced_20261125t030000z"
        ));
        o.job = Some(JobOutcome::Failed {
            reason: "OOMKilled".into(),
            report: None,
        });
        o.swap_evidence = Some(SwapEvidence::Unknown("no answer within 30 s".into()));
        assert!(matches!(
            next_step(&o),
            Step::JobEndedUnreported { reason, evidence: SwapEvidence::Unknown(_) } if reason == "OOMKilled"
        ));
        o.swap_evidence = None;

        // Failed or completed: the hold comes off, then nothing ever runs again.
        let failed = observed(RestorePhase::Failed, Some(held(Some("refresh"))));
        assert_eq!(next_step(&failed), Step::ReleaseTarget);
        assert_eq!(
            next_step(&observed(RestorePhase::Failed, Some(held(None)))),
            Step::Done
        );
        assert_eq!(
            next_step(&observed(RestorePhase::Completed, Some(held(None)))),
            Step::Done
        );
        assert_eq!(
            next_step(&observed(RestorePhase::Completed, None)),
            Step::Done
        );
    }

    #[test]
    fn a_failed_restore_never_starts_dhis2_on_the_empty_database_of_an_instance_it_created() {
        let mut o = observed(RestorePhase::Failed, Some(held(Some("refresh"))));
        o.target_created = true;
        assert_eq!(next_step(&o), Step::StopCreatedTarget);
        // Stopped (spec.replicas: 0): now it may be released; it stays stopped.
        o.target.as_mut().unwrap().spec_replicas = 0;
        assert_eq!(next_step(&o), Step::ReleaseTarget);
        // A target that existed before is the user's: it starts again as it was.
        let mut existing = observed(RestorePhase::Failed, Some(held(Some("refresh"))));
        existing.target_created = false;
        assert_eq!(next_step(&existing), Step::ReleaseTarget);
        // A completed restore into a created instance starts DHIS2 on the restored data.
        let mut completed = observed(RestorePhase::Completed, Some(held(Some("refresh"))));
        completed.target_created = true;
        assert_eq!(next_step(&completed), Step::ReleaseTarget);
    }

    #[test]
    fn analytics_are_requested_once_dhis2_is_ready_unless_declined() {
        let held_still = observed(RestorePhase::Starting, Some(held(Some("refresh"))));
        assert_eq!(next_step(&held_still), Step::ReleaseTarget);
        let starting = observed(RestorePhase::Starting, Some(held(None)));
        assert!(matches!(next_step(&starting), Step::Wait(m) if m.contains("0/1 replicas ready")));
        let mut up = held(None);
        up.ready = true;
        assert_eq!(
            next_step(&observed(RestorePhase::Starting, Some(up.clone()))),
            Step::RegenerateAnalytics
        );
        let mut declined = observed(RestorePhase::Starting, Some(up));
        declined.regenerate_analytics = false;
        assert!(
            matches!(next_step(&declined), Step::Complete(m) if m.contains("regenerateAnalytics: false"))
        );
        let mut stopped = held(None);
        stopped.spec_replicas = 0;
        assert!(matches!(
            next_step(&observed(RestorePhase::Starting, Some(stopped))),
            Step::Complete(m) if m.contains("spec.replicas: 0")
        ));
    }

    #[test]
    fn latest_is_found_before_anything_is_stopped() {
        use crate::job_report::ResolvedBackupReport;
        assert_eq!(resolution(None, "hmis"), Resolution::Looking);
        assert_eq!(
            resolution(Some(&JobOutcome::Running), "hmis"),
            Resolution::Looking
        );
        let found = JobOutcome::Succeeded(Some(JobReport::Resolved(ResolvedBackupReport {
            instance: "hmis".into(),
            id: "20261125T020000Z-1a2b3c4d".into(),
        })));
        assert_eq!(
            resolution(Some(&found), "hmis"),
            Resolution::Found("20261125T020000Z-1a2b3c4d".into())
        );
        // An answer about another instance is no answer.
        assert!(matches!(
            resolution(Some(&found), "hmis-old"),
            Resolution::NotFound(_)
        ));
        let none = JobOutcome::Failed {
            reason: "no complete backup of hmis in s3://moh/hmis".into(),
            report: None,
        };
        assert!(matches!(
            resolution(Some(&none), "hmis"),
            Resolution::NotFound(m) if m.contains("no complete backup")
        ));
    }
}
