//! Backups, restores and drills in the cluster: the CLI declares intent (creates a `Dhis2Backup`,
//! `Dhis2Restore` or `Dhis2Drill`) and, with `--wait`, follows its status; the operator acts.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use kube::api::{Api, ListParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use k8s_openapi::api::core::v1::Secret;

use crate::crd::backup_common::{RepositorySpec, RunPhase};
use crate::crd::dhis2_backup::Dhis2BackupStatus;
use crate::crd::dhis2_drill::Dhis2DrillStatus;
use crate::crd::dhis2_restore::RestorePhase;
use crate::crd::dhis2_restore::{NewInstanceOverrides, RestoreSource, RestoreTarget};
use crate::crd::{
    Dhis2Backup, Dhis2BackupSpec, Dhis2Drill, Dhis2DrillSpec, Dhis2Instance, Dhis2Restore,
    Dhis2RestoreSpec,
};
use crate::output::{OutputFormat, human_duration, render_structured, render_table};
use crate::rules::restore_consent::{Refusal, check_consent};

use super::kube_access::{ClusterError, KubeArgs, age, api_error, connect};

#[derive(Debug, Args)]
pub struct CreateBackupArgs {
    /// The Dhis2Instance to back up.
    pub instance: String,
    #[command(flatten)]
    pub kube: KubeArgs,
    /// Follow the backup until it completes or fails (exit 1 when it fails).
    #[arg(long)]
    pub wait: bool,
    /// Also keep the data of analytics and resource tables (DHIS2 regenerates it).
    #[arg(long)]
    pub include_analytics: bool,
    /// Leave the file store out.
    #[arg(long)]
    pub no_file_store: bool,
    /// Re-read the whole backup from the repository after writing it (spec.verify).
    #[arg(long)]
    pub verify: bool,
    /// Keep what is there just before a restore (the runbook's step 2; spec.beforeRestore): a
    /// restore or drill of `latest` never picks this backup.
    #[arg(long)]
    pub before_restore: bool,
}

use crate::rules::moment::parse_moment;
use crate::rules::names::MAX_RECOVERY_RESTORE_NAME;

#[derive(Debug, Args)]
pub struct ClusterRestoreArgs {
    /// A Dhis2Backup's name, a backup id, or `latest` (not with --point-in-time).
    #[arg(
        required_unless_present = "point_in_time",
        conflicts_with = "point_in_time"
    )]
    pub backup: Option<String>,
    /// Instead of a backup: the database as it was at this moment, e.g.
    /// 2026-12-07T10:13:00+07:00 (a cnpg database with WAL archiving; CloudNativePG replays its
    /// archive into a new database, the instance is moved to it, the old one is kept).
    #[arg(long, value_name = "RFC3339")]
    pub point_in_time: Option<String>,
    /// The instance the backup was made of.
    #[arg(long = "from", value_name = "INSTANCE")]
    pub from: String,
    /// The namespace of --from, when it is not this one (-n): the restore reads that
    /// instance's repository, with Secrets of the same names in this namespace.
    #[arg(long, value_name = "NAMESPACE", conflicts_with_all = ["point_in_time", "database"])]
    pub from_namespace: Option<String>,
    /// The instance to restore into: a new name creates a new instance from the source's spec.
    #[arg(long = "to", value_name = "NAME")]
    pub to: String,
    /// For a new instance: the Dhis2Database it uses (default: its own managed one).
    #[arg(long, value_name = "DHIS2DATABASE")]
    pub database: Option<String>,
    /// Required to restore over an existing instance: its name, typed again.
    #[arg(long, value_name = "NAME")]
    pub confirm_overwrite: Option<String>,
    /// Required (with --confirm-overwrite) to restore over a production instance.
    #[arg(long, value_name = "WHO")]
    pub approved_by: Option<String>,
    /// Do not ask DHIS2 to regenerate analytics tables afterwards.
    #[arg(long)]
    pub no_analytics: bool,
    /// Restore without first checking that the database server has room for the restored
    /// database beside the current one (spec.skipSpaceCheck).
    #[arg(long)]
    pub skip_space_check: bool,
    #[command(flatten)]
    pub kube: KubeArgs,
    /// Follow the restore until it completes or fails.
    #[arg(long)]
    pub wait: bool,
}

/// `<instance>-<what>-<UTC time>-`: the apiserver completes it with 5 random characters
/// (`generateName`), so names stay readable and sortable and two requests in one second differ.
fn name_prefix(instance: &str, what: &str) -> String {
    name_prefix_within(instance, what, 63)
}

/// [`name_prefix`] for names of at most `max` characters.
fn name_prefix_within(instance: &str, what: &str, max: usize) -> String {
    let stamp = chrono::Utc::now().format("%Y%m%d%H%M%S");
    let mut base = format!("{instance}-{what}");
    // The base, '-', 14 digits, '-' and the apiserver's 5.
    base.truncate(max - 21);
    format!("{}-{stamp}-", base.trim_end_matches('-'))
}

/// Lets the apiserver name `obj` from `prefix`.
fn generate_name<K: Resource>(mut obj: K, prefix: String) -> K {
    let meta = obj.meta_mut();
    meta.name = None;
    meta.generate_name = Some(prefix);
    obj
}

async fn instance_exists(client: &Client, ns: &str, name: &str) -> Result<(), ClusterError> {
    Api::<Dhis2Instance>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .map_err(api_error)?
        .map(|_| ())
        .ok_or_else(|| ClusterError::NotFound {
            name: name.to_string(),
            namespace: ns.to_string(),
        })
}

/// The backup id and repository of `from` in namespace `other`, for a restore made in `ns`
/// (refresh of staging from production kept in a namespace of its own). The restore reads the
/// repository with the Secrets it names, which must exist in `ns` too.
async fn other_namespace_source(
    client: &Client,
    ns: &str,
    other: &str,
    from: &str,
    to: &str,
    backup: &str,
    target_exists: bool,
) -> Result<(String, RepositorySpec), ClusterError> {
    if !target_exists {
        return Err(ClusterError::Refused(format!(
            "--from-namespace restores over an instance of namespace {ns}, and Dhis2Instance {to} does not exist there: create it first (its spec is not copied from another namespace)"
        )));
    }
    let source = Api::<Dhis2Instance>::namespaced(client.clone(), other)
        .get_opt(from)
        .await
        .map_err(api_error)?
        .ok_or_else(|| ClusterError::NotFound {
            name: from.to_string(),
            namespace: other.to_string(),
        })?;
    let Some(repository) = source.spec.backup.and_then(|b| b.repository) else {
        return Err(ClusterError::Refused(format!(
            "Dhis2Instance {from} in namespace {other} has no spec.backup.repository to restore from"
        )));
    };
    if repository.volume.is_some() {
        return Err(ClusterError::Refused(format!(
            "the repository of {from} is a volume claim of namespace {other}, which a restore in namespace {ns} cannot mount: use an S3 repository to restore across namespaces"
        )));
    }
    let id = match Api::<Dhis2Backup>::namespaced(client.clone(), other)
        .get_opt(backup)
        .await
        .map_err(api_error)?
    {
        Some(b) => {
            let status = b.status.unwrap_or_default();
            match (status.phase, status.backup_id) {
                (Some(RunPhase::Completed), Some(id)) => id,
                _ => {
                    return Err(ClusterError::Refused(format!(
                        "Dhis2Backup {backup} in namespace {other} has not completed; name a completed one, a backup id or latest"
                    )));
                }
            }
        }
        None => backup.to_string(),
    };
    let secrets = Api::<Secret>::namespaced(client.clone(), ns);
    let mut missing = Vec::new();
    for name in repository_secrets(&repository) {
        if secrets.get_opt(&name).await.map_err(api_error)?.is_none() {
            missing.push(name);
        }
    }
    if !missing.is_empty() {
        let copy = missing
            .iter()
            .map(|s| format!("kubectl -n {other} get secret {s} -o json | jq 'del(.metadata | .namespace, .uid, .resourceVersion, .creationTimestamp, .ownerReferences, .managedFields)' | kubectl -n {ns} apply -f -"))
            .collect::<Vec<_>>()
            .join("; ");
        return Err(ClusterError::Refused(format!(
            "the restore in namespace {ns} reads the repository of {from} with the Secrets it names, and {} not in {ns}: copy them (`{copy}`), then run this again; nothing was created",
            missing.join(", ") + if missing.len() == 1 { " is" } else { " are" }
        )));
    }
    Ok((id, repository))
}

/// The Secrets a restore needs to read `repository`: its keys and what decrypts it.
fn repository_secrets(repository: &RepositorySpec) -> Vec<String> {
    let mut names = Vec::new();
    if let Some(s3) = &repository.s3 {
        names.push(s3.credentials_secret_ref.clone());
    }
    if let Some(e) = &repository.encryption {
        names.extend(e.identity_secret_ref.clone());
        names.extend(e.passphrase_secret_ref.clone());
    }
    names.dedup();
    names
}

async fn create<K>(api: &Api<K>, obj: &K) -> Result<K, ClusterError>
where
    K: Resource + Clone + DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    api.create(&PostParams::default(), obj)
        .await
        .map_err(api_error)
}

/// Creates `obj` (the CLI's whole act: the operator does the work). Without `wait`, says it was
/// created; with it, polls until `done`, showing `line` on a spinner, prints the outcome and
/// returns the finished object.
async fn create_and_follow<K>(
    api: &Api<K>,
    obj: K,
    output: OutputFormat,
    wait: bool,
    line: impl Fn(&str, &K) -> String,
    done: impl Fn(&K) -> bool,
) -> Result<Option<K>, ClusterError>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let created = create(api, &obj).await?;
    let name = created.name_any();
    if !wait {
        let kind = K::kind(&()).to_lowercase();
        let text = render_structured(output, &created)
            .unwrap_or_else(|| format!("{kind}.dhis2operator.io/{name} created"));
        super::print_stdout(&text);
        return Ok(None);
    }
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
    loop {
        let obj = api.get(&name).await.map_err(api_error)?;
        spinner.set_message(line(&name, &obj));
        if done(&obj) {
            spinner.finish_and_clear();
            let text = render_structured(output, &obj).unwrap_or_else(|| line(&name, &obj));
            super::print_stdout(&text);
            return Ok(Some(obj));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn phase_text(phase: Option<RunPhase>) -> String {
    phase
        .map(|p| format!("{p:?}"))
        .unwrap_or_else(|| "Pending".into())
}

fn backup_line(name: &str, st: &Dhis2BackupStatus) -> String {
    match st.phase {
        Some(RunPhase::Completed) => format!(
            "backup {name} completed: id {} in {}, {} in {}",
            st.backup_id.clone().unwrap_or_default(),
            st.repository.clone().unwrap_or_default(),
            st.size.clone().unwrap_or_default(),
            human_duration(st.duration_seconds.unwrap_or_default().round() as i64)
        ),
        Some(RunPhase::Failed) => format!(
            "backup {name} failed: {}",
            st.failure_reason.clone().unwrap_or_default()
        ),
        phase => format!("backup {name}: {}", phase_text(phase)),
    }
}

pub async fn create_backup(
    args: CreateBackupArgs,
    output: OutputFormat,
) -> Result<ExitCode, ClusterError> {
    let (client, ns) = connect(&args.kube).await?;
    instance_exists(&client, &ns, &args.instance).await?;
    let api: Api<Dhis2Backup> = Api::namespaced(client, &ns);
    let mut backup = Dhis2Backup::new(
        "",
        Dhis2BackupSpec {
            instance_ref: args.instance.clone(),
            include_file_store: !args.no_file_store,
            include_analytics: args.include_analytics,
            repository: None,
            retention: None,
            retention_time_zone: None,
            deadline_seconds: crate::crd::backup_common::DEFAULT_DEADLINE_SECONDS,
            verify: args.verify,
            purpose: if args.before_restore {
                crate::crd::dhis2_backup::BackupPurpose::BeforeRestore
            } else {
                crate::crd::dhis2_backup::BackupPurpose::Routine
            },
        },
    );
    backup.metadata.labels = Some(
        [(
            "dhis2operator.io/instance".to_string(),
            args.instance.clone(),
        )]
        .into(),
    );
    let finished = create_and_follow(
        &api,
        generate_name(backup, name_prefix(&args.instance, "backup")),
        output,
        args.wait,
        |name, b| backup_line(name, &b.status.clone().unwrap_or_default()),
        |b| {
            b.status
                .as_ref()
                .and_then(|s| s.phase)
                .is_some_and(RunPhase::is_finished)
        },
    )
    .await?;
    Ok(match finished.and_then(|b| b.status).map(|s| s.phase) {
        Some(Some(RunPhase::Failed)) => ExitCode::FAILURE,
        _ => ExitCode::SUCCESS,
    })
}

pub async fn list_backups(
    instance: &str,
    kube: &KubeArgs,
    output: OutputFormat,
) -> Result<ExitCode, ClusterError> {
    let (client, ns) = connect(kube).await?;
    let api: Api<Dhis2Backup> = Api::namespaced(client, &ns);
    let mut items: Vec<Dhis2Backup> = api
        .list(&ListParams::default())
        .await
        .map_err(api_error)?
        .items
        .into_iter()
        .filter(|b| b.spec.instance_ref == instance)
        .collect();
    items.sort_by_key(|b| std::cmp::Reverse(b.metadata.creation_timestamp.clone()));
    if let Some(text) = render_structured(output, &items) {
        super::print_stdout(&text);
        return Ok(ExitCode::SUCCESS);
    }
    if items.is_empty() {
        super::print_stdout(&format!(
            "no Dhis2Backups of {instance} in namespace {ns}; `dhis2ctl backup create {instance}` makes one"
        ));
        return Ok(ExitCode::SUCCESS);
    }
    let rows = items
        .iter()
        .map(|b| {
            let st = b.status.clone().unwrap_or_default();
            vec![
                b.name_any(),
                phase_text(st.phase),
                st.backup_id.unwrap_or_else(|| "-".into()),
                st.size.unwrap_or_else(|| "-".into()),
                st.duration_seconds
                    .map(|d| human_duration(d.round() as i64))
                    .unwrap_or_else(|| "-".into()),
                age(b.metadata.creation_timestamp.as_ref()),
                st.failure_reason.unwrap_or_default(),
            ]
        })
        .collect();
    super::print_stdout(&render_table(
        &[
            "name",
            "phase",
            "backup id",
            "size",
            "took",
            "age",
            "failure",
        ],
        rows,
    ));
    Ok(ExitCode::SUCCESS)
}

/// The operator's refusal to overwrite the target, in the command line's terms.
fn refusal_text(args: &ClusterRestoreArgs, refusal: &Refusal) -> String {
    let to = &args.to;
    match (refusal.reason, args.confirm_overwrite.as_deref()) {
        ("OverwriteNotConfirmed", Some(typed)) if !typed.is_empty() => {
            format!(
                "--confirm-overwrite is '{typed}', not the target's name: --confirm-overwrite {to}"
            )
        }
        ("OverwriteNotConfirmed", _) => format!(
            "Dhis2Instance {to} exists and would be overwritten: add --confirm-overwrite {to} to restore over it (its current database is kept as <database>__replaced_<time>), or name a new instance in --to"
        ),
        ("ApprovalRequired", _) => format!(
            "Dhis2Instance {to} is a production instance: add --approved-by WHO, the person who approved overwriting it"
        ),
        _ => refusal.message.clone(),
    }
}

pub async fn restore(
    args: ClusterRestoreArgs,
    output: OutputFormat,
) -> Result<ExitCode, ClusterError> {
    let (client, ns) = connect(&args.kube).await?;
    let elsewhere = args.from_namespace.clone().filter(|other| *other != ns);
    if elsewhere.is_none() {
        instance_exists(&client, &ns, &args.from).await?;
    }
    let target = Api::<Dhis2Instance>::namespaced(client.clone(), &ns)
        .get_opt(&args.to)
        .await
        .map_err(api_error)?;
    if let Some(Err(why)) = args.point_in_time.as_deref().map(parse_moment) {
        return Err(ClusterError::Refused(format!("--point-in-time {why}")));
    }
    // A Dhis2Backup of that name is meant; otherwise an id (or `latest`) in the repository.
    let (backup_ref, backup_id, repository) = match (&args.backup, &elsewhere) {
        (None, _) => (None, None, None),
        (Some(backup), Some(other)) => {
            let (id, repository) = other_namespace_source(
                &client,
                &ns,
                other,
                &args.from,
                &args.to,
                backup,
                target.is_some(),
            )
            .await?;
            (None, Some(id), Some(repository))
        }
        (Some(backup), None) => match Api::<Dhis2Backup>::namespaced(client.clone(), &ns)
            .get_opt(backup)
            .await
            .map_err(api_error)?
        {
            Some(b) => (Some(b.name_any()), None, None),
            None => (None, Some(backup.clone()), None),
        },
    };
    let api: Api<Dhis2Restore> = Api::namespaced(client, &ns);
    let mut restore = Dhis2Restore::new(
        "",
        Dhis2RestoreSpec {
            source: RestoreSource {
                instance: args.from.clone(),
                backup_ref,
                backup_id,
                repository,
            },
            target: RestoreTarget {
                instance: args.to.clone(),
                new_instance: args.database.clone().map(|database| NewInstanceOverrides {
                    database_ref: Some(database),
                    ..Default::default()
                }),
            },
            confirm_overwrite: args.confirm_overwrite.clone(),
            approved_by: args.approved_by.clone(),
            regenerate_analytics: !args.no_analytics,
            include_file_store: true,
            point_in_time: args.point_in_time.clone(),
            deadline_seconds: crate::crd::backup_common::DEFAULT_DEADLINE_SECONDS,
            skip_space_check: args.skip_space_check,
        },
    );
    restore.metadata.labels =
        Some([("dhis2operator.io/instance".to_string(), args.to.clone())].into());
    // The operator would refuse it and keep it Pending: say so now and create nothing.
    if let Err(refusal) = check_consent(&restore.spec, target.as_ref()) {
        return Err(ClusterError::Refused(refusal_text(&args, &refusal)));
    }
    if target.is_some() && args.database.is_some() {
        return Err(ClusterError::Refused(format!(
            "--database is for a new instance; Dhis2Instance {} exists and keeps its own database",
            args.to
        )));
    }
    let to = args.to.clone();
    let describe = move |name: &str, r: &Dhis2Restore| {
        let st = r.status.clone().unwrap_or_default();
        let mut line = format!("restore {name} into {to}: {}", st.phase.unwrap_or_default());
        if let Some(m) = st.failure_reason.or(st.message) {
            line.push_str(&format!(" — {m}"));
        }
        if let Some(r) = &st.recovery_database {
            line.push_str(&format!("\n  recovered into Dhis2Database {r}"));
        }
        if let Some(r) = &st.replaced_database {
            line.push_str(&format!("\n  previous database kept as {r}"));
        }
        if let Some(a) = &st.analytics_regeneration {
            line.push_str(&format!("\n  analytics regeneration: {a}"));
        }
        line
    };
    let finished = create_and_follow(
        &api,
        generate_name(
            restore,
            match args.point_in_time {
                // Its new database is `<restore>-db`; CloudNativePG's Services add `-rw`.
                Some(_) => name_prefix_within(&args.to, "pitr", MAX_RECOVERY_RESTORE_NAME),
                None => name_prefix(&args.to, "restore"),
            },
        ),
        output,
        args.wait,
        describe,
        |r| {
            r.status
                .as_ref()
                .and_then(|s| s.phase)
                .is_some_and(RestorePhase::is_finished)
        },
    )
    .await?;
    Ok(
        match finished.and_then(|r| r.status).and_then(|s| s.phase) {
            Some(RestorePhase::Failed) => ExitCode::FAILURE,
            _ => ExitCode::SUCCESS,
        },
    )
}

fn drill_line(name: &str, st: &Dhis2DrillStatus) -> String {
    match (st.phase, st.passed) {
        (Some(RunPhase::Completed), Some(passed)) => {
            let mut text = format!(
                "drill {name} of backup {}: {} — RTO {}, RPO {}",
                st.backup_id.clone().unwrap_or_default(),
                if passed { "PASSED" } else { "FAILED" },
                st.rto.clone().unwrap_or_default(),
                st.rpo.clone().unwrap_or_default()
            );
            for f in &st.failures {
                text.push_str(&format!("\n  failure: {f}"));
            }
            text
        }
        (Some(RunPhase::Failed), _) => {
            format!("drill {name} could not run: {}", st.failures.join("; "))
        }
        (phase, _) => format!("drill {name}: {}", phase_text(phase)),
    }
}

/// `dhis2ctl drill INSTANCE`: a Dhis2Drill of `backup` (an id or `latest`).
pub async fn drill(
    instance: &str,
    backup: &str,
    kube: &KubeArgs,
    wait: bool,
    output: OutputFormat,
) -> Result<ExitCode, ClusterError> {
    let (client, ns) = connect(kube).await?;
    instance_exists(&client, &ns, instance).await?;
    let api: Api<Dhis2Drill> = Api::namespaced(client, &ns);
    let mut drill = Dhis2Drill::new(
        "",
        Dhis2DrillSpec {
            instance_ref: instance.to_string(),
            backup_id: Some(backup.to_string()),
            repository: None,
            postgis_image: None,
            deadline_seconds: crate::crd::backup_common::DEFAULT_DEADLINE_SECONDS,
        },
    );
    drill.metadata.labels = Some(
        [(
            "dhis2operator.io/instance".to_string(),
            instance.to_string(),
        )]
        .into(),
    );
    let finished = create_and_follow(
        &api,
        generate_name(drill, name_prefix(instance, "drill")),
        output,
        wait,
        |name, d| drill_line(name, &d.status.clone().unwrap_or_default()),
        |d| {
            d.status
                .as_ref()
                .and_then(|s| s.phase)
                .is_some_and(RunPhase::is_finished)
        },
    )
    .await?;
    Ok(match finished.and_then(|d| d.status) {
        Some(st) if st.phase != Some(RunPhase::Completed) || st.passed != Some(true) => {
            ExitCode::FAILURE
        }
        _ => ExitCode::SUCCESS,
    })
}

/// One schedule of an instance, with its next runs, for `dhis2ctl schedule`.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleView {
    /// `backup` (a Dhis2BackupSchedule) or `drill` (the instance's spec.backup.drill).
    pub kind: &'static str,
    pub name: String,
    pub schedule: String,
    pub time_zone: String,
    pub suspended: bool,
    /// Next fire times in the schedule's time zone (RFC 3339 with its offset).
    pub next_runs: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_success: Option<String>,
    /// Why the schedule cannot run (a bad cron or time zone).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

fn schedule_view(
    kind: &'static str,
    name: String,
    spec: (&str, &str, bool),
    last_success: Option<String>,
    count: usize,
) -> ScheduleView {
    let (cron, zone, suspended) = spec;
    let field = if kind == "drill" {
        "spec.backup.drill"
    } else {
        "spec"
    };
    let (next_runs, problem) = match crate::rules::cron_schedule::Schedule::parse(cron, zone, field)
    {
        Ok(schedule) => {
            let mut runs = Vec::new();
            let mut t = chrono::Utc::now();
            while !suspended && runs.len() < count {
                let Some(next) = schedule.next_after(t) else {
                    break;
                };
                runs.push(
                    next.with_timezone(&schedule.zone())
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                );
                t = next;
            }
            (runs, None)
        }
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
    ScheduleView {
        kind,
        name,
        schedule: cron.to_string(),
        time_zone: zone.to_string(),
        suspended,
        next_runs,
        last_success,
        problem,
    }
}

/// `dhis2ctl schedule INSTANCE`: the instance's backup and drill schedules and their next runs in
/// local time.
pub async fn schedule(
    instance: &str,
    kube: &KubeArgs,
    count: usize,
    output: OutputFormat,
) -> Result<ExitCode, ClusterError> {
    let (client, ns) = connect(kube).await?;
    let found = Api::<Dhis2Instance>::namespaced(client.clone(), &ns)
        .get_opt(instance)
        .await
        .map_err(api_error)?
        .ok_or_else(|| ClusterError::NotFound {
            name: instance.to_string(),
            namespace: ns.clone(),
        })?;
    let schedules = Api::<crate::crd::Dhis2BackupSchedule>::namespaced(client, &ns)
        .list(&ListParams::default())
        .await
        .map_err(api_error)?
        .items;
    let mut views: Vec<ScheduleView> = schedules
        .iter()
        .filter(|s| s.spec.instance_ref == instance)
        .map(|s| {
            schedule_view(
                "backup",
                s.name_any(),
                (&s.spec.schedule, &s.spec.time_zone, s.spec.suspend),
                s.status
                    .as_ref()
                    .and_then(|st| st.last_successful_time.clone()),
                count,
            )
        })
        .collect();
    if let Some(drill) = found.spec.backup.as_ref().and_then(|b| b.drill.as_ref()) {
        views.push(schedule_view(
            "drill",
            format!("{instance} (spec.backup.drill)"),
            (&drill.schedule, &drill.time_zone, drill.suspend),
            found
                .status
                .as_ref()
                .and_then(|s| s.backup.as_ref())
                .and_then(|b| b.last_drill_time.clone()),
            count,
        ));
    }
    if let Some(text) = render_structured(output, &views) {
        super::print_stdout(&text);
        return Ok(ExitCode::SUCCESS);
    }
    if views.is_empty() {
        super::print_stdout(&format!(
            "{instance} has no backup schedule: nothing backs it up automatically. Create a Dhis2BackupSchedule (see docs/guides/backup.md: Backups in the cluster)"
        ));
        return Ok(ExitCode::SUCCESS);
    }
    let rows = views
        .iter()
        .map(|v| {
            vec![
                v.kind.to_string(),
                v.name.clone(),
                format!("{} ({})", v.schedule, v.time_zone),
                if v.suspended {
                    "suspended".into()
                } else if let Some(p) = &v.problem {
                    p.clone()
                } else {
                    v.next_runs.join("\n")
                },
                v.last_success.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    super::print_stdout(&render_table(
        &[
            "kind",
            "name",
            "schedule",
            "next runs (local time)",
            "last success",
        ],
        rows,
    ));
    Ok(ExitCode::SUCCESS)
}
