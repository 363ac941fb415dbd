//! The objects schedules create (pure): a `Dhis2Backup` at each fire time of a
//! `Dhis2BackupSchedule`, a `Dhis2Drill` at each fire time of an instance's drill schedule.
//! Names come from the fire time, so creating one twice meets AlreadyExists.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, ResourceExt};

use crate::crd::backup_common::{DEFAULT_DEADLINE_SECONDS, RetentionSpec};
use crate::crd::dhis2_backup::{Dhis2Backup, Dhis2BackupSpec};
use crate::crd::dhis2_backup_schedule::Dhis2BackupSchedule;
use crate::crd::dhis2_drill::{Dhis2Drill, Dhis2DrillSpec};
use crate::crd::dhis2_instance::Dhis2Instance;

use crate::operator::schedule::plan::{MAX_NAME_LEN, fire_time_name, shorten_name};
use crate::rules::names::{INSTANCE_LABEL, SCHEDULE_LABEL};

/// On each object a schedule created: its fire time (RFC 3339, UTC).
pub const SCHEDULED_TIME_ANNOTATION: &str = "dhis2operator.io/scheduled-time";
/// On a `Dhis2BackupSchedule` that has not fired yet: when the operator first saw it (RFC 3339,
/// the operator's clock). Fire times after it are due; earlier ones are not caught up.
pub const SCHEDULE_SINCE_ANNOTATION: &str = "dhis2operator.io/schedule-since";
/// On a `Dhis2Instance` with a drill schedule: the fire time of its last scheduled drill, or when
/// the operator first saw the drill schedule. Fire times after it are due.
pub const DRILL_SCHEDULE_SINCE_ANNOTATION: &str = "dhis2operator.io/drill-schedule-since";
/// The `dhis2operator.io/schedule` label of drills the instance's drill schedule created.
pub const DRILL_SCHEDULE: &str = "drill";
/// Finished scheduled drills kept (their reports stay readable for a month of weekly drills).
pub const SCHEDULED_DRILL_HISTORY: usize = 4;

pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

pub fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// When the object was created, by the API server's clock.
pub fn creation_time(meta: &ObjectMeta) -> Option<DateTime<Utc>> {
    meta.creation_timestamp
        .as_ref()
        .and_then(|t| DateTime::from_timestamp(t.0.as_second(), 0))
}

/// The fire time an object was created for.
pub fn scheduled_time(meta: &ObjectMeta) -> Option<DateTime<Utc>> {
    meta.annotations
        .as_ref()?
        .get(SCHEDULED_TIME_ANNOTATION)
        .and_then(|t| parse_time(t))
}

/// When an object ran, for ordering a schedule's history: its fire time, else its creation.
pub fn run_time(meta: &ObjectMeta) -> DateTime<Utc> {
    scheduled_time(meta)
        .or_else(|| creation_time(meta))
        .unwrap_or(DateTime::UNIX_EPOCH)
}

/// The `dhis2operator.io/schedule` label value of a schedule's objects (a label value holds 63
/// characters; an object's name may be longer).
pub fn schedule_label_value(schedule_name: &str) -> String {
    shorten_name(schedule_name, MAX_NAME_LEN)
}

fn scheduled_meta(
    name: String,
    namespace: Option<String>,
    instance: &str,
    schedule: String,
    fire_time: DateTime<Utc>,
    owner: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>,
) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace,
        labels: Some(BTreeMap::from([
            (INSTANCE_LABEL.to_string(), instance.to_string()),
            (SCHEDULE_LABEL.to_string(), schedule),
        ])),
        annotations: Some(BTreeMap::from([(
            SCHEDULED_TIME_ANNOTATION.to_string(),
            rfc3339(fire_time),
        )])),
        owner_references: owner.map(|o| vec![o]),
        ..Default::default()
    }
}

/// The backup a schedule makes at `fire_time`: the schedule's settings, its retention in its
/// time zone; owned by the schedule (deleted with it; the backup in the repository stays).
pub fn build_scheduled_backup(
    schedule: &Dhis2BackupSchedule,
    fire_time: DateTime<Utc>,
) -> Dhis2Backup {
    let spec = &schedule.spec;
    let retention = spec
        .retention
        .clone()
        .filter(|r| *r != RetentionSpec::default());
    Dhis2Backup {
        metadata: scheduled_meta(
            fire_time_name(&schedule.name_any(), fire_time),
            schedule.namespace(),
            &spec.instance_ref,
            schedule_label_value(&schedule.name_any()),
            fire_time,
            schedule.controller_owner_ref(&()),
        ),
        spec: Dhis2BackupSpec {
            instance_ref: spec.instance_ref.clone(),
            include_file_store: spec.include_file_store,
            include_analytics: spec.include_analytics,
            repository: None,
            retention_time_zone: retention.as_ref().map(|_| spec.time_zone.clone()),
            retention,
            deadline_seconds: spec.deadline_seconds,
            verify: spec.verify,
            purpose: crate::crd::dhis2_backup::BackupPurpose::Routine,
        },
        status: None,
    }
}

/// The drill an instance's drill schedule makes at `fire_time`: of the latest backup, in the
/// instance's repository; owned by the instance.
pub fn build_scheduled_drill(instance: &Dhis2Instance, fire_time: DateTime<Utc>) -> Dhis2Drill {
    let name = instance.name_any();
    Dhis2Drill {
        metadata: scheduled_meta(
            fire_time_name(&format!("{name}-drill"), fire_time),
            instance.namespace(),
            &name,
            DRILL_SCHEDULE.to_string(),
            fire_time,
            instance.controller_owner_ref(&()),
        ),
        spec: Dhis2DrillSpec {
            instance_ref: name,
            backup_id: None,
            repository: None,
            postgis_image: None,
            deadline_seconds: DEFAULT_DEADLINE_SECONDS,
        },
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(yaml: &str) -> Dhis2BackupSchedule {
        serde_saphyr::from_str(yaml).unwrap()
    }

    #[test]
    fn a_scheduled_backup_carries_the_schedule_settings_labels_and_owner() {
        let s = schedule(
            r#"
apiVersion: dhis2operator.io/v1alpha1
kind: Dhis2BackupSchedule
metadata: {name: hmis-nightly, namespace: moh, uid: u-1}
spec:
  instanceRef: hmis
  schedule: "0 2 * * *"
  timeZone: Asia/Phnom_Penh
  includeAnalytics: true
  deadlineSeconds: 3600
  verify: true
  retention: {keepDaily: 7, keepWeekly: 4}
"#,
        );
        let fire = parse_time("2026-11-24T19:00:00Z").unwrap();
        let b = build_scheduled_backup(&s, fire);
        assert_eq!(b.name_any(), "hmis-nightly-202611241900");
        assert_eq!(b.namespace().as_deref(), Some("moh"));
        assert_eq!(b.labels()[INSTANCE_LABEL], "hmis");
        assert_eq!(b.labels()[SCHEDULE_LABEL], "hmis-nightly");
        assert_eq!(
            b.annotations()[SCHEDULED_TIME_ANNOTATION],
            "2026-11-24T19:00:00Z"
        );
        assert_eq!(scheduled_time(&b.metadata), Some(fire));
        let owner = &b.owner_references()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("Dhis2BackupSchedule", "u-1")
        );
        assert_eq!(owner.controller, Some(true));
        assert_eq!(b.spec.instance_ref, "hmis");
        assert!(b.spec.include_file_store);
        assert!(b.spec.include_analytics);
        assert_eq!(b.spec.deadline_seconds, 3600);
        assert!(b.spec.verify);
        assert_eq!(b.spec.retention.as_ref().unwrap().keep_daily, Some(7));
        assert_eq!(
            b.spec.retention_time_zone.as_deref(),
            Some("Asia/Phnom_Penh")
        );
    }

    #[test]
    fn no_retention_means_none_and_no_time_zone() {
        let s = schedule(
            r#"
metadata: {name: s, namespace: moh, uid: u-1}
apiVersion: dhis2operator.io/v1alpha1
kind: Dhis2BackupSchedule
spec: {instanceRef: hmis, schedule: "0 2 * * *", retention: {}}
"#,
        );
        let b = build_scheduled_backup(&s, Utc::now());
        assert_eq!(b.spec.retention, None);
        assert_eq!(b.spec.retention_time_zone, None);
        assert!(!b.spec.verify, "verify is off unless asked for");
    }

    #[test]
    fn a_long_schedule_name_still_gives_a_63_character_name_and_label() {
        let long = format!("{}-nightly", "a".repeat(70));
        let s = schedule(&format!(
            "apiVersion: dhis2operator.io/v1alpha1\nkind: Dhis2BackupSchedule\nmetadata: {{name: {long}, uid: u}}\nspec: {{instanceRef: hmis, schedule: '0 2 * * *'}}\n"
        ));
        let b = build_scheduled_backup(&s, Utc::now());
        assert!(b.name_any().len() <= 63);
        assert!(b.labels()[SCHEDULE_LABEL].len() <= 63);
    }

    #[test]
    fn a_scheduled_drill_is_owned_by_the_instance() {
        let instance: Dhis2Instance = serde_saphyr::from_str(
            r#"
apiVersion: dhis2operator.io/v1alpha1
kind: Dhis2Instance
metadata: {name: hmis, namespace: moh, uid: i-1}
spec:
  version: "2.41.3"
  environment: production
  backup:
    drill: {schedule: "0 3 * * 0", timeZone: Asia/Phnom_Penh}
"#,
        )
        .unwrap();
        let d = build_scheduled_drill(&instance, parse_time("2026-11-28T20:00:00Z").unwrap());
        assert_eq!(d.name_any(), "hmis-drill-202611282000");
        assert_eq!(d.labels()[SCHEDULE_LABEL], DRILL_SCHEDULE);
        assert_eq!(d.labels()[INSTANCE_LABEL], "hmis");
        assert_eq!(d.owner_references()[0].uid, "i-1");
        assert_eq!(d.spec.instance_ref, "hmis");
        assert_eq!(d.spec.backup_id, None);
    }
}
