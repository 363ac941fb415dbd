//! Schedules in the cluster, against the real kube-apiserver: `Dhis2BackupSchedule` creating
//! `Dhis2Backup` objects at its fire times, and an instance's drill schedule creating
//! `Dhis2Drill` objects. The operator reads "now" from a clock file: tests move time by writing
//! it and nudging the object, never by sleeping until 02:00 in Phnom Penh.

mod support;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use dhis2_operator::crd::backup_common::RunPhase;
use dhis2_operator::crd::{Dhis2Backup, Dhis2BackupSchedule, Dhis2Drill, Dhis2Instance};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::json;
use support::cluster_objects::s3_credentials;
use support::fixtures::Instance;
use support::kube_env::*;
use support::world::World;

/// An operator in its own namespace whose clock is a file the test writes (no FakeKubelet, no
/// Secrets, no bucket: `WorldBuilder::bare`).
async fn world(prefix: &str, now: &str) -> World {
    World::builder(prefix)
        .clock(TestClock::at(now))
        .bare()
        .start()
        .await
}

impl World {
    /// Moves the operator's clock to `now` and wakes the schedule `name` (a Dhis2BackupSchedule,
    /// or a Dhis2Instance for its drill schedule).
    async fn at<K>(&self, now: &str, name: &str)
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
    {
        self.clock().set_to(now);
        nudge(&self.api::<K>(), name).await;
    }

    async fn create_schedule(&self, name: &str, spec: serde_json::Value) {
        self.create::<Dhis2BackupSchedule>(json!({
            "apiVersion": "dhis2operator.io/v1alpha1", "kind": "Dhis2BackupSchedule",
            "metadata": {"name": name}, "spec": spec
        }))
        .await;
    }

    /// Waits until the schedule's status satisfies `check`.
    async fn wait_schedule(
        &self,
        name: &str,
        what: &str,
        check: impl Fn(&Dhis2BackupSchedule) -> bool,
    ) -> Dhis2BackupSchedule {
        let api = self.api::<Dhis2BackupSchedule>();
        wait_for(30, what, || {
            let api = api.clone();
            let check = &check;
            async move { api.get(name).await.ok().filter(|s| check(s)) }
        })
        .await
    }

    /// The names of the Dhis2Backups the schedule made, sorted.
    async fn backups(&self, schedule: &str) -> Vec<String> {
        let mut names: Vec<String> = self
            .api::<Dhis2Backup>()
            .list(&ListParams::default().labels(&format!("dhis2operator.io/schedule={schedule}")))
            .await
            .unwrap()
            .into_iter()
            .map(|b| b.name_any())
            .collect();
        names.sort();
        names
    }

    async fn wait_backups(&self, schedule: &str, want: &[&str]) {
        let want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
        wait_for(30, &format!("Dhis2Backups {want:?}"), || async {
            let have = self.backups(schedule).await;
            (have == want).then_some(())
        })
        .await;
    }

    /// Asserts the schedule's backups stay exactly `want` for a few seconds: what must NOT
    /// happen (a backup before its time, a second one) has no event to wait for.
    async fn backups_stay(&self, schedule: &str, want: &[&str]) {
        for _ in 0..15 {
            let have = self.backups(schedule).await;
            assert_eq!(have, want, "Dhis2Backups of {schedule}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn set_phase<K>(&self, name: &str, status: serde_json::Value)
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
    {
        self.api::<K>()
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": status })),
            )
            .await
            .unwrap_or_else(|e| panic!("status of {name}: {e}"));
    }
}

/// Real backups for a `World`: an instance `hmis` on an external database (a seeded
/// DHIS2-shaped database on the test PostgreSQL), an S3 repository in a fresh bucket on the
/// test SeaweedFS; the World's Job harness runs the engine's Jobs.
struct Repository {
    repo: String,
    pg_password: String,
}

impl World {
    async fn instance_with_repository(&self) -> Repository {
        let env = &self.env;
        let (database, _) = env.seeded_database("sched").await;
        self.external_database("moh", &database).await;
        let (bucket, repo) = env.create_bucket("sched").await;
        s3_credentials(env, &self.client, &self.ns).await;
        self.create_instance(Instance::new("hmis").database("moh").repository(&bucket))
            .await;
        let secrets = self.api::<Secret>();
        wait_for(60, "the instance's dhis.conf Secret", || async {
            secrets.get_opt("hmis-dhis-conf").await.ok().flatten()
        })
        .await;
        let userinfo = env.pg_url.trim_start_matches("postgresql://");
        let (_, password) = userinfo.split_once('@').unwrap().0.split_once(':').unwrap();
        Repository {
            repo,
            pg_password: password.to_string(),
        }
    }

    /// Waits until the Dhis2Backup `name` exists and reached `phase`.
    async fn wait_backup_phase(&self, name: &str, phase: RunPhase) -> Dhis2Backup {
        let backups = self.api::<Dhis2Backup>();
        wait_for(180, &format!("Dhis2Backup {name} {phase:?}"), || async {
            backups
                .get(name)
                .await
                .ok()
                .filter(|b| b.status.as_ref().and_then(|s| s.phase) == Some(phase))
        })
        .await
    }
}

impl Repository {
    /// The ids `dhis2ctl backup list` finds for `hmis` in the repository, sorted.
    async fn listed(&self) -> Vec<String> {
        let mut ids = support::listed_backup_ids(&self.repo, Some("hmis")).await;
        ids.sort();
        ids
    }
}

/// Touches an annotation so the object's controllers reconcile it now.
async fn nudge<K>(api: &Api<K>, name: &str)
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst).to_string();
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {"test.dhis2operator.io/nudge": n}}})),
    )
    .await
    .unwrap_or_else(|e| panic!("nudge {name}: {e}"));
}

fn condition<'a>(
    s: &'a Dhis2BackupSchedule,
    kind: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    s.status
        .as_ref()
        .and_then(|st| st.conditions.iter().find(|c| c.type_ == kind))
}

fn status_field(
    s: &Dhis2BackupSchedule,
    f: impl Fn(&dhis2_operator::crd::dhis2_backup_schedule::Dhis2BackupScheduleStatus) -> Option<String>,
) -> Option<String> {
    s.status.as_ref().and_then(f)
}

const NIGHTLY: &str = "hmis-nightly";

fn nightly_spec() -> serde_json::Value {
    json!({"instanceRef": "hmis", "schedule": "0 2 * * *", "timeZone": "Asia/Phnom_Penh",
           "retention": {"keepDaily": 7, "keepWeekly": 4}, "includeAnalytics": true,
           "deadlineSeconds": 7200})
}

#[tokio::test(flavor = "multi_thread")]
async fn a_schedule_fires_once_at_two_in_the_morning_phnom_penh_time() {
    // 01:00 in Phnom Penh (UTC+7) on 25 November is 18:00 UTC on the 24th.
    let w = world("sched-fire", "2026-11-25T01:00:00+07:00").await;
    w.create_schedule(NIGHTLY, nightly_spec()).await;
    let s = w
        .wait_schedule(NIGHTLY, "the next run", |s| {
            status_field(s, |st| st.next_run_time.clone()).as_deref()
                == Some("2026-11-24T19:00:00Z")
        })
        .await;
    let ready = condition(&s, "Ready").unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("True", "Scheduled")
    );
    assert_eq!(
        ready.message,
        "next backup 2026-11-25 02:00 Asia/Phnom_Penh"
    );
    assert_eq!(condition(&s, "Suspended").unwrap().status, "False");

    // One second before 02:00: nothing.
    w.at::<Dhis2BackupSchedule>("2026-11-25T01:59:59+07:00", NIGHTLY)
        .await;
    w.backups_stay(NIGHTLY, &[]).await;
    let before_two = k8s_openapi::jiff::Timestamp::now().as_second();

    // 02:00:30: exactly one backup, named after the fire time.
    w.at::<Dhis2BackupSchedule>("2026-11-25T02:00:30+07:00", NIGHTLY)
        .await;
    let name = "hmis-nightly-202611241900";
    w.wait_backups(NIGHTLY, &[name]).await;
    let backup = w.api::<Dhis2Backup>().get(name).await.unwrap();
    assert!(
        backup
            .metadata
            .creation_timestamp
            .as_ref()
            .unwrap()
            .0
            .as_second()
            >= before_two,
        "created once the clock passed 02:00, not at 01:59:59"
    );
    assert_eq!(backup.labels()["dhis2operator.io/instance"], "hmis");
    assert_eq!(backup.labels()["dhis2operator.io/schedule"], NIGHTLY);
    assert_eq!(
        backup.annotations()["dhis2operator.io/scheduled-time"],
        "2026-11-24T19:00:00Z"
    );
    let owner = &backup.owner_references()[0];
    assert_eq!(owner.kind, "Dhis2BackupSchedule");
    assert_eq!(Some(&owner.uid), s.metadata.uid.as_ref());
    assert_eq!(backup.spec.instance_ref, "hmis");
    assert!(backup.spec.include_file_store);
    assert!(backup.spec.include_analytics);
    assert_eq!(backup.spec.deadline_seconds, 7200);
    let retention = backup.spec.retention.as_ref().unwrap();
    assert_eq!(
        (retention.keep_daily, retention.keep_weekly),
        (Some(7), Some(4))
    );
    assert_eq!(
        backup.spec.retention_time_zone.as_deref(),
        Some("Asia/Phnom_Penh")
    );

    let s = w
        .wait_schedule(NIGHTLY, "status after the fire time", |s| {
            status_field(s, |st| st.next_run_time.clone()).as_deref()
                == Some("2026-11-25T19:00:00Z")
        })
        .await;
    let st = s.status.unwrap();
    assert_eq!(
        st.last_schedule_time.as_deref(),
        Some("2026-11-24T19:00:00Z")
    );
    assert_eq!(st.last_backup.as_deref(), Some(name));
    let created = w.events("Scheduled").await;
    assert!(
        created
            .iter()
            .any(|m| m.contains(name) && m.contains("2026-11-25 02:00")),
        "{created:?}"
    );

    // Later that night: still the one.
    w.at::<Dhis2BackupSchedule>("2026-11-25T03:00:00+07:00", NIGHTLY)
        .await;
    w.backups_stay(NIGHTLY, &[name]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_nightly_backup_waits_while_a_restore_holds_the_instance_then_runs_once() {
    let w = world("sched-held", "2026-11-25T01:00:00+07:00").await;
    w.create_instance(
        Instance::new("hmis")
            .version("2.42.1")
            .replicas(0)
            .annotation("dhis2operator.io/restore-in-progress", "hmis-dr-restore"),
    )
    .await;
    w.create_schedule(NIGHTLY, nightly_spec()).await;
    w.wait_schedule(NIGHTLY, "the next run", |s| {
        status_field(s, |st| st.next_run_time.clone()).as_deref() == Some("2026-11-24T19:00:00Z")
    })
    .await;

    // 02:00 passes while a restore holds hmis: no backup of a database being replaced (and no
    // retention run that could expire the backup being restored).
    w.at::<Dhis2BackupSchedule>("2026-11-25T02:00:30+07:00", NIGHTLY)
        .await;
    wait_for(30, "the Postponed event", || async {
        let m = w.events("Postponed").await;
        m.iter()
            .any(|m| m.contains("2026-11-25 02:00") && m.contains("hmis-dr-restore"))
            .then_some(())
    })
    .await;
    w.backups_stay(NIGHTLY, &[]).await;

    // The restore ends: the 02:00 backup runs once, late.
    w.api::<Dhis2Instance>()
        .patch(
            "hmis",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations":
                {"dhis2operator.io/restore-in-progress": null}}})),
        )
        .await
        .unwrap();
    w.at::<Dhis2BackupSchedule>("2026-11-25T02:10:00+07:00", NIGHTLY)
        .await;
    w.wait_backups(NIGHTLY, &["hmis-nightly-202611241900"])
        .await;
    w.at::<Dhis2BackupSchedule>("2026-11-25T02:20:00+07:00", NIGHTLY)
        .await;
    w.backups_stay(NIGHTLY, &["hmis-nightly-202611241900"])
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn three_days_down_is_one_catch_up_and_a_restart_never_doubles_it() {
    let mut w = world("sched-catchup", "2026-11-25T01:00:00+07:00").await;
    w.create_schedule(NIGHTLY, nightly_spec()).await;
    w.wait_schedule(NIGHTLY, "the first status", |s| s.status.is_some())
        .await;
    w.at::<Dhis2BackupSchedule>("2026-11-25T02:01:00+07:00", NIGHTLY)
        .await;
    let first = "hmis-nightly-202611241900";
    w.wait_backups(NIGHTLY, &[first]).await;

    // The operator is down for three days: the fire times of the 26th, 27th and 28th pass.
    w.operator.kill().await;
    w.clock().set_to("2026-11-28T10:00:00+07:00");
    w.operator.restart();
    let catch_up = "hmis-nightly-202611271900";
    w.wait_backups(NIGHTLY, &[first, catch_up]).await;
    w.backups_stay(NIGHTLY, &[first, catch_up]).await;
    let s = w
        .wait_schedule(NIGHTLY, "status after the catch-up", |s| {
            status_field(s, |st| st.last_schedule_time.clone()).as_deref()
                == Some("2026-11-27T19:00:00Z")
        })
        .await;
    assert_eq!(
        s.status.unwrap().next_run_time.as_deref(),
        Some("2026-11-28T19:00:00Z")
    );
    let created = w.events("Scheduled").await;
    assert!(
        created
            .iter()
            .any(|m| m.contains(catch_up) && m.contains("catch-up")),
        "{created:?}"
    );

    // Killed again, and this time the status write is lost too (rolled back by hand): the
    // restarted operator finds the backup it made and creates no second one.
    w.operator.kill().await;
    w.set_phase::<Dhis2BackupSchedule>(
        NIGHTLY,
        json!({"lastScheduleTime": "2026-11-24T19:00:00Z"}),
    )
    .await;
    w.operator.restart();
    w.wait_schedule(NIGHTLY, "the status repaired from the backups", |s| {
        status_field(s, |st| st.last_schedule_time.clone()).as_deref()
            == Some("2026-11-27T19:00:00Z")
    })
    .await;
    w.backups_stay(NIGHTLY, &[first, catch_up]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_suspended_schedule_makes_no_backups() {
    let w = world("sched-suspend", "2026-11-25T01:00:00+07:00").await;
    let mut spec = nightly_spec();
    spec["suspend"] = json!(true);
    w.create_schedule(NIGHTLY, spec).await;
    let s = w
        .wait_schedule(NIGHTLY, "Suspended", |s| {
            condition(s, "Suspended").is_some_and(|c| c.status == "True")
        })
        .await;
    assert_eq!(condition(&s, "Ready").unwrap().reason, "Suspended");
    assert_eq!(s.status.unwrap().next_run_time, None);

    for night in ["2026-11-25T02:30:00+07:00", "2026-11-26T02:30:00+07:00"] {
        w.at::<Dhis2BackupSchedule>(night, NIGHTLY).await;
        w.backups_stay(NIGHTLY, &[]).await;
    }

    // Resumed: like a CronJob, the latest fire time missed while suspended runs once.
    w.api::<Dhis2BackupSchedule>()
        .patch(
            NIGHTLY,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"suspend": false}})),
        )
        .await
        .unwrap();
    w.wait_backups(NIGHTLY, &["hmis-nightly-202611251900"])
        .await;
    w.wait_schedule(NIGHTLY, "resumed", |s| {
        condition(s, "Suspended").is_some_and(|c| c.status == "False")
            && status_field(s, |st| st.next_run_time.clone()).as_deref()
                == Some("2026-11-26T19:00:00Z")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn history_limits_delete_the_oldest_failed_backup_objects() {
    let w = world("sched-history", "2026-11-25T00:30:00Z").await;
    // An instance without a backup repository: the Dhis2Backup controller fails each backup at
    // once, naming what is missing.
    w.create_instance(Instance::new("hmis").environment("staging"))
        .await;
    let hourly = "hmis-hourly";
    w.create_schedule(
        hourly,
        json!({"instanceRef": "hmis", "schedule": "0 * * * *", "failedBackupsHistoryLimit": 2}),
    )
    .await;
    w.wait_schedule(hourly, "the first status", |s| s.status.is_some())
        .await;
    for hour in ["01", "02", "03", "04"] {
        w.at::<Dhis2BackupSchedule>(&format!("2026-11-25T{hour}:00:10Z"), hourly)
            .await;
        let name = format!("{hourly}-20261125{hour}00");
        let backups = w.api::<Dhis2Backup>();
        let failed = wait_for(30, &format!("Dhis2Backup {name} Failed"), || async {
            backups
                .get(&name)
                .await
                .ok()
                .filter(|b| b.status.as_ref().and_then(|s| s.phase) == Some(RunPhase::Failed))
        })
        .await;
        let reason = failed.status.unwrap().failure_reason.unwrap_or_default();
        assert!(reason.contains("repository"), "{reason}");
    }
    // Kept: the two newest failed; the objects only (nothing was in a repository).
    w.wait_backups(
        hourly,
        &["hmis-hourly-202611250300", "hmis-hourly-202611250400"],
    )
    .await;
    let s = w
        .wait_schedule(hourly, "the last backup", |s| {
            status_field(s, |st| st.last_backup.clone()).as_deref()
                == Some("hmis-hourly-202611250400")
        })
        .await;
    assert_eq!(s.status.unwrap().last_successful_time, None);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_time_zone_is_reported_on_the_schedule() {
    let w = world("sched-invalid", "2026-11-25T01:00:00+07:00").await;
    let mut spec = nightly_spec();
    spec["timeZone"] = json!("Asia/Phnom Penh");
    w.create_schedule(NIGHTLY, spec).await;
    let s = w
        .wait_schedule(NIGHTLY, "InvalidSpec", |s| {
            condition(s, "Ready").is_some_and(|c| c.reason == "InvalidSpec")
        })
        .await;
    let ready = condition(&s, "Ready").unwrap();
    assert_eq!(ready.status, "False");
    assert!(
        ready
            .message
            .starts_with("spec.timeZone: 'Asia/Phnom Penh'"),
        "{}",
        ready.message
    );
    assert!(
        ready.message.contains("Asia/Phnom_Penh"),
        "{}",
        ready.message
    );
    let events = w.events("InvalidSpec").await;
    assert!(
        events.iter().any(|m| m.contains("spec.timeZone")),
        "{events:?}"
    );
    w.at::<Dhis2BackupSchedule>("2026-11-25T02:30:00+07:00", NIGHTLY)
        .await;
    w.backups_stay(NIGHTLY, &[]).await;

    // Fixed: it schedules.
    w.api::<Dhis2BackupSchedule>()
        .patch(
            NIGHTLY,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"timeZone": "Asia/Phnom_Penh"}})),
        )
        .await
        .unwrap();
    w.wait_schedule(NIGHTLY, "Ready", |s| {
        condition(s, "Ready").is_some_and(|c| c.status == "True")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_instance_drill_schedule_creates_drills_and_keeps_the_newest_four() {
    // Sunday 29 November 2026, 02:00 in Phnom Penh.
    let w = world("sched-drill", "2026-11-29T02:00:00+07:00").await;
    let instance = w
        .create_instance(Instance::new("hmis").spec(
            "backup",
            json!({"drill": {"schedule": "0 3 * * 0", "timeZone": "Asia/Phnom_Penh"}}),
        ))
        .await;
    let instances = w.instances();
    wait_for(30, "the drill schedule's start recorded", || async {
        instances.get("hmis").await.ok().filter(|i| {
            i.annotations()
                .contains_key("dhis2operator.io/drill-schedule-since")
        })
    })
    .await;
    let drills = w.api::<Dhis2Drill>();
    let scheduled = || async {
        let mut names: Vec<String> = drills
            .list(&ListParams::default().labels("dhis2operator.io/schedule=drill"))
            .await
            .unwrap()
            .into_iter()
            .map(|d| d.name_any())
            .collect();
        names.sort();
        names
    };
    assert!(scheduled().await.is_empty());

    // 03:00 on Sunday is 20:00 UTC on Saturday.
    w.at::<Dhis2Instance>("2026-11-29T03:00:30+07:00", "hmis")
        .await;
    let first = "hmis-drill-202611282000";
    wait_for(30, "the scheduled drill", || async {
        (scheduled().await == [first]).then_some(())
    })
    .await;
    let drill = drills.get(first).await.unwrap();
    assert_eq!(drill.spec.instance_ref, "hmis");
    assert_eq!(drill.labels()["dhis2operator.io/instance"], "hmis");
    assert_eq!(drill.owner_references()[0].uid, instance.uid().unwrap());
    w.at::<Dhis2Instance>("2026-11-29T04:00:00+07:00", "hmis")
        .await;
    for _ in 0..15 {
        assert_eq!(scheduled().await, [first], "one drill per fire time");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Five more Sundays, each drill finished before the next: the newest four finished stay.
    // Finished by hand (Failed: what a drill controller also makes of a drill of an instance
    // without a repository, so the two never disagree).
    w.set_phase::<Dhis2Drill>(first, json!({"phase": "Failed", "passed": false}))
        .await;
    let mut all = vec![first.to_string()];
    for (sunday, fire) in [
        ("2026-12-06", "202612052000"),
        ("2026-12-13", "202612122000"),
        ("2026-12-20", "202612192000"),
        ("2026-12-27", "202612262000"),
        ("2027-01-03", "202701022000"),
    ] {
        w.at::<Dhis2Instance>(&format!("{sunday}T03:00:30+07:00"), "hmis")
            .await;
        let name = format!("hmis-drill-{fire}");
        wait_for(30, &format!("Dhis2Drill {name}"), || async {
            scheduled().await.contains(&name).then_some(())
        })
        .await;
        w.set_phase::<Dhis2Drill>(&name, json!({"phase": "Failed", "passed": false}))
            .await;
        all.push(name);
    }
    let newest_four: Vec<String> = all[2..].to_vec();
    wait_for(30, "the oldest scheduled drills deleted", || async {
        (scheduled().await == newest_four).then_some(())
    })
    .await;

    // A drill schedule that cannot be read is reported on the instance, naming the field.
    instances
        .patch(
            "hmis",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"backup": {"drill": {"schedule": "0 3 * * Sunday"}}}})),
        )
        .await
        .unwrap();
    let events = wait_for(30, "the InvalidDrillSchedule event", || async {
        let events = w.events("InvalidDrillSchedule").await;
        (!events.is_empty()).then_some(events)
    })
    .await;
    assert!(
        events[0].starts_with("spec.backup.drill.schedule: '0 3 * * Sunday'"),
        "{events:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn scheduled_backups_apply_retention_and_keep_their_history() {
    let w = world("sched-retain", "2026-11-25T01:00:00+07:00").await;
    let r = w.instance_with_repository().await;
    w.create_schedule(
        NIGHTLY,
        json!({"instanceRef": "hmis", "schedule": "0 2 * * *", "timeZone": "Asia/Phnom_Penh",
               "retention": {"keepLast": 2}, "successfulBackupsHistoryLimit": 1}),
    )
    .await;
    w.wait_schedule(NIGHTLY, "the first status", |s| s.status.is_some())
        .await;
    let mut ids = vec![];
    let mut retention = vec![];
    let mut last = None;
    for (night, fire) in [
        ("2026-11-25", "202611241900"),
        ("2026-11-26", "202611251900"),
        ("2026-11-27", "202611261900"),
    ] {
        w.at::<Dhis2BackupSchedule>(&format!("{night}T02:00:30+07:00"), NIGHTLY)
            .await;
        let name = format!("{NIGHTLY}-{fire}");
        let done = w.wait_backup_phase(&name, RunPhase::Completed).await;
        let status = done.status.clone().unwrap();
        ids.push(status.backup_id.clone().unwrap());
        retention.push(status.retention.clone().unwrap_or_default());
        last = Some((name, status));
    }
    // keepLast 2, applied by the engine after each success.
    assert_eq!(
        retention,
        [
            "kept 1, deleted 0",
            "kept 2, deleted 0",
            "kept 2, deleted 1"
        ]
    );
    let mut kept = ids[1..].to_vec();
    kept.sort();
    assert_eq!(
        r.listed().await,
        kept,
        "exactly the two newest backups remain"
    );
    // successfulBackupsHistoryLimit 1: one Dhis2Backup object is left, yet the backup whose
    // object was deleted is still in the repository (only retention deletes backups).
    let (name, status) = last.unwrap();
    w.wait_backups(NIGHTLY, &[name.as_str()]).await;
    let s = w
        .wait_schedule(NIGHTLY, "the last success and retention", |s| {
            status_field(s, |st| st.last_retention.clone()).as_deref() == Some("kept 2, deleted 1")
        })
        .await;
    let st = s.status.unwrap();
    assert_eq!(st.last_successful_time, status.completed_at);
    assert_eq!(st.last_backup.as_deref(), Some(name.as_str()));
    assert_eq!(
        st.last_schedule_time.as_deref(),
        Some("2026-11-26T19:00:00Z")
    );
    assert_eq!(w.jobs.runs().len(), 3, "one engine Job per fire time");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_scheduled_backup_does_not_stop_the_next_one() {
    let w = world("sched-failed", "2026-11-25T01:00:00+07:00").await;
    let r = w.instance_with_repository().await;
    w.set_pg_password("moh", "not-the-password").await;
    w.create_schedule(
        NIGHTLY,
        json!({"instanceRef": "hmis", "schedule": "0 2 * * *", "timeZone": "Asia/Phnom_Penh"}),
    )
    .await;
    w.wait_schedule(NIGHTLY, "the first status", |s| s.status.is_some())
        .await;

    w.at::<Dhis2BackupSchedule>("2026-11-25T02:00:30+07:00", NIGHTLY)
        .await;
    let first = "hmis-nightly-202611241900";
    let failed = w.wait_backup_phase(first, RunPhase::Failed).await;
    let reason = failed.status.unwrap().failure_reason.unwrap();
    assert!(
        reason.contains("password authentication failed"),
        "{reason}"
    );
    assert!(!reason.contains("not-the-password"), "{reason}");
    assert!(
        r.listed().await.is_empty(),
        "a failed backup is never listed"
    );
    let s = w
        .wait_schedule(NIGHTLY, "the failed backup reported", |s| {
            status_field(s, |st| st.last_backup.clone()).as_deref() == Some(first)
        })
        .await;
    assert_eq!(s.status.unwrap().last_successful_time, None);

    // Fixed the next day: the next fire time runs and completes.
    w.set_pg_password("moh", &r.pg_password).await;
    w.at::<Dhis2BackupSchedule>("2026-11-26T02:00:30+07:00", NIGHTLY)
        .await;
    let second = "hmis-nightly-202611251900";
    let done = w.wait_backup_phase(second, RunPhase::Completed).await;
    let status = done.status.unwrap();
    assert_eq!(r.listed().await, vec![status.backup_id.clone().unwrap()]);
    w.wait_schedule(NIGHTLY, "the last success", |s| {
        status_field(s, |st| st.last_successful_time.clone()) == status.completed_at
    })
    .await;
    // The failed one is kept (failedBackupsHistoryLimit 3) and stays failed.
    w.wait_backups(NIGHTLY, &[first, second]).await;
    let again = w.api::<Dhis2Backup>().get(first).await.unwrap();
    assert_eq!(again.status.unwrap().phase, Some(RunPhase::Failed));
}
