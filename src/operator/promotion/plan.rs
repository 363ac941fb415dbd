//! What a `Dhis2Promotion` does next (pure): its gates, each judged on its own from what the
//! staging and production instances report, and the step that follows. Setting production's
//! version is the one action; production's own upgrade (checks, verified backup, rollback) does
//! the rest, and its history says how it ended.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};

use crate::crd::dhis2_instance::Dhis2Instance;
use crate::crd::dhis2_promotion::{Dhis2PromotionSpec, Dhis2PromotionStatus, PromotionGate};
use crate::crd::upgrade::{UpgradeOutcome, UpgradeRecord};
use crate::rules::duration::{format_duration, parse_duration};
use crate::upgrade::Dhis2Version;

use kube::ResourceExt;

use crate::operator::kit::conditions::is_true;
use crate::operator::schedule::build::creation_time;
use crate::rules::deployed_version::dhis2_image;
use crate::rules::deployed_version::same_version;

#[derive(Debug, Clone, PartialEq)]
pub enum PromotionStep {
    /// A gate has not passed (or the version cannot be known yet): report, look again later.
    Blocked {
        version: Option<String>,
        gates: Vec<PromotionGate>,
        message: String,
    },
    /// Every gate passed: set production's `spec.version` (with the approval) and, when
    /// production names its image (a mirror, a private registry), `spec.image` to the image
    /// staging proved that version with.
    Promote {
        version: String,
        image: Option<String>,
        gates: Vec<PromotionGate>,
    },
    /// Production is upgrading.
    Wait(String),
    Succeeded {
        backup_id: Option<String>,
        message: String,
    },
    Failed(String),
    /// Finished earlier: nothing to do.
    Done,
}

pub struct PromotionObserved<'a> {
    pub spec: &'a Dhis2PromotionSpec,
    pub status: &'a Dhis2PromotionStatus,
    pub staging: Option<&'a Dhis2Instance>,
    /// Why staging could not be read (another namespace the operator may not read).
    pub staging_unreadable: Option<&'a str>,
    pub production: Option<&'a Dhis2Instance>,
    pub now: DateTime<Utc>,
}

fn gate(name: &str, passed: bool, message: impl Into<String>) -> PromotionGate {
    PromotionGate {
        name: name.into(),
        passed,
        message: message.into(),
    }
}

fn parse_time(t: Option<&str>) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(t?)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn human(d: chrono::Duration) -> String {
    let d = Duration::from_secs(u64::try_from(d.num_seconds().max(0)).unwrap_or(0));
    format_duration(d)
}

/// The version to promote: as asked, else what staging runs.
pub fn promoted_version(
    spec: &Dhis2PromotionSpec,
    staging: Option<&Dhis2Instance>,
) -> Option<String> {
    spec.version.clone().or_else(|| {
        let s = staging?.status.as_ref()?;
        s.deployed_version.clone().or(s.version.clone())
    })
}

/// Since when staging has run `version`: the end of its upgrade to it, else its creation when
/// it was made on that version.
fn running_since(staging: &Dhis2Instance, version: &str) -> Option<DateTime<Utc>> {
    let status = staging.status.as_ref()?;
    let upgraded = status
        .upgrade_history
        .iter()
        .find(|r| r.outcome == UpgradeOutcome::Succeeded && same_version(&r.to_version, version));
    match upgraded {
        Some(r) => parse_time(Some(&r.finished_at)),
        None if status.upgrade_history.is_empty() => creation_time(&staging.metadata),
        None => None,
    }
}

/// Every gate, judged on its own.
pub fn evaluate_gates(o: &PromotionObserved, version: &str) -> Vec<PromotionGate> {
    let from = &o.spec.from;
    let to = &o.spec.to;
    let mut gates = Vec::new();
    let since = o.staging.and_then(|s| running_since(s, version));

    gates.push(match o.staging {
        None => gate(
            "StagingReady",
            false,
            match (o.staging_unreadable, &o.spec.from_namespace) {
                (Some(why), _) => why.to_string(),
                (None, Some(ns)) => {
                    format!("Dhis2Instance {from} (spec.from) does not exist in namespace {ns}")
                }
                (None, None) => format!("Dhis2Instance {from} (spec.from) does not exist"),
            },
        ),
        Some(s) => {
            let status = s.status.clone().unwrap_or_default();
            let ready = is_true(&status.conditions, "Ready");
            let reported = status.version.clone().unwrap_or_default();
            let upgrading = status
                .upgrade
                .as_ref()
                .is_some_and(|u| !u.phase.is_finished());
            if !ready {
                gate("StagingReady", false, format!("{from} is not Ready"))
            } else if upgrading || !same_version(&reported, version) {
                gate(
                    "StagingReady",
                    false,
                    format!("{from} runs {reported}, not {version}"),
                )
            } else {
                gate(
                    "StagingReady",
                    true,
                    format!("{from} is Ready on {version}"),
                )
            }
        }
    });

    gates.push(
        match (parse_duration(&o.spec.min_soak, "spec.minSoak"), since) {
            (Err(why), _) => gate("Soaked", false, why),
            (Ok(_), None) => gate("Soaked", false, format!("{from} has not run {version} yet")),
            (Ok(min), Some(since)) => {
                let ran = o.now - since;
                let passed = ran.num_seconds() >= i64::try_from(min.as_secs()).unwrap_or(i64::MAX);
                gate(
                    "Soaked",
                    passed,
                    format!(
                        "{from} has run {version} for {} of {}",
                        human(ran),
                        o.spec.min_soak
                    ),
                )
            }
        },
    );

    gates.push(match o.staging.and_then(|s| s.status.as_ref()?.backup.clone()) {
        None => gate("StagingDrillPassed", false, format!("{from} has had no restore drill")),
        Some(b) => {
            let drilled = parse_time(b.last_drill_time.as_deref());
            let passed_result = b.last_drill_result.as_deref() == Some("Passed");
            match (drilled, since) {
                (None, _) => gate("StagingDrillPassed", false, format!("{from} has had no restore drill")),
                (Some(_), _) if !passed_result => gate(
                    "StagingDrillPassed",
                    false,
                    format!("{from}'s latest restore drill did not pass ({})", b.last_drill_result.unwrap_or_default()),
                ),
                (Some(at), Some(since)) if at < since => gate(
                    "StagingDrillPassed",
                    false,
                    format!("{from}'s latest passed drill ({}) is older than its move to {version}: run one (dhis2ctl drill {from})", rfc3339(at)),
                ),
                (Some(at), _) => gate("StagingDrillPassed", true, format!("{from}'s latest restore drill passed at {}", rfc3339(at))),
            }
        }
    });

    gates.push(
        match (
            parse_duration(&o.spec.max_backup_age, "spec.maxBackupAge"),
            o.production,
        ) {
            (Err(why), _) => gate("ProductionBackupFresh", false, why),
            (Ok(_), None) => gate(
                "ProductionBackupFresh",
                false,
                format!("Dhis2Instance {to} (spec.to) does not exist"),
            ),
            (Ok(max), Some(p)) => {
                let last = parse_time(
                    p.status
                        .as_ref()
                        .and_then(|s| s.backup.as_ref()?.last_backup_time.as_deref()),
                );
                match last {
                    None => gate(
                        "ProductionBackupFresh",
                        false,
                        format!("{to} has no completed backup"),
                    ),
                    Some(at) => {
                        let age = o.now - at;
                        let fresh =
                            age.num_seconds() <= i64::try_from(max.as_secs()).unwrap_or(i64::MAX);
                        gate(
                            "ProductionBackupFresh",
                            fresh,
                            format!(
                                "{to}'s newest backup is {} old (at most {})",
                                human(age),
                                o.spec.max_backup_age
                            ),
                        )
                    }
                }
            }
        },
    );

    gates.push(match o.spec.approved_by.as_deref().map(str::trim) {
        Some(who) if !who.is_empty() => gate("Approved", true, format!("approved by {who}")),
        _ => gate(
            "Approved",
            false,
            "set spec.approvedBy to the person who approves taking it to production",
        ),
    });
    gates
}

/// Production's finished upgrade to `version` that began after the promotion set it.
/// The image production gets with `version`: none to set when production names no image (it
/// runs `dhis2/core:<version>`); otherwise the image staging runs (or is set to run) that
/// version with, since production's `spec.image` still names the old version's image.
fn promoted_image(
    production: &Dhis2Instance,
    staging: Option<&Dhis2Instance>,
    version: &str,
) -> Result<Option<String>, String> {
    if production.spec.image.is_none() {
        return Ok(None);
    }
    let status = staging.and_then(|s| s.status.as_ref());
    let deployed = status
        .filter(|s| {
            s.deployed_version
                .as_deref()
                .is_some_and(|v| same_version(v, version))
        })
        .and_then(|s| s.deployed_image.clone());
    let specified = staging
        .filter(|s| same_version(&s.spec.version, version))
        .map(dhis2_image);
    deployed.or(specified).map(Some).ok_or_else(|| {
        format!(
            "{} sets spec.image: the image of {version} is not known (staging does not run it); set it on {} with `dhis2ctl upgrade {} --to {version} --image IMAGE`",
            production.name_any(),
            production.name_any(),
            production.name_any()
        )
    })
}

fn production_outcome<'a>(
    production: &'a Dhis2Instance,
    version: &str,
    started: Option<DateTime<Utc>>,
) -> Option<&'a UpgradeRecord> {
    production
        .status
        .as_ref()?
        .upgrade_history
        .iter()
        .find(|r| {
            same_version(&r.to_version, version)
                && match (started, parse_time(Some(&r.started_at))) {
                    (Some(s), Some(r)) => r >= s - chrono::Duration::seconds(5),
                    _ => true,
                }
        })
}

pub fn next_step(o: &PromotionObserved) -> PromotionStep {
    let phase = o.status.phase.as_deref();
    if matches!(phase, Some("Succeeded") | Some("Failed")) {
        return PromotionStep::Done;
    }
    let Some(production) = o.production else {
        if phase == Some("Upgrading") {
            return PromotionStep::Failed(format!(
                "Dhis2Instance {} was deleted during its upgrade",
                o.spec.to
            ));
        }
        let version = promoted_version(o.spec, o.staging);
        let gates = version
            .as_deref()
            .map(|v| evaluate_gates(o, v))
            .unwrap_or_default();
        return PromotionStep::Blocked {
            version,
            gates,
            message: format!("Dhis2Instance {} (spec.to) does not exist", o.spec.to),
        };
    };
    if phase == Some("Upgrading") {
        let version = o.status.version.clone().unwrap_or_default();
        return upgrading(o, production, &version);
    }
    let Some(version) = promoted_version(o.spec, o.staging) else {
        return PromotionStep::Blocked {
            version: None,
            gates: Vec::new(),
            message: match o.staging_unreadable {
                Some(why) => format!("the version to promote is not known: {why}"),
                None => format!(
                    "the version to promote is not known: {} reports none yet (or set spec.version)",
                    o.spec.from
                ),
            },
        };
    };
    if let Err(e) = Dhis2Version::parse(&version) {
        return PromotionStep::Failed(format!("spec.version: {e}"));
    }
    let running = production
        .status
        .as_ref()
        .and_then(|s| s.deployed_version.clone())
        .unwrap_or_else(|| production.spec.version.clone());
    if same_version(&running, &version) {
        return PromotionStep::Succeeded {
            backup_id: None,
            message: format!("{} already runs {version}: nothing to promote", o.spec.to),
        };
    }
    if let (Ok(r), Ok(v)) = (Dhis2Version::parse(&running), Dhis2Version::parse(&version))
        && v < r
    {
        return PromotionStep::Failed(format!(
            "{} runs {running}, newer than {version}: a promotion never downgrades (DHIS2 cannot be downgraded)",
            o.spec.to
        ));
    }
    let gates = evaluate_gates(o, &version);
    let blocked: Vec<String> = gates
        .iter()
        .filter(|g| !g.passed)
        .map(|g| format!("{}: {}", g.name, g.message))
        .collect();
    if blocked.is_empty() {
        match promoted_image(production, o.staging, &version) {
            Ok(image) => PromotionStep::Promote {
                version,
                image,
                gates,
            },
            Err(message) => PromotionStep::Blocked {
                version: Some(version),
                gates,
                message,
            },
        }
    } else {
        PromotionStep::Blocked {
            version: Some(version),
            gates,
            message: format!(
                "waiting for {} gate(s): {}",
                blocked.len(),
                blocked.join("; ")
            ),
        }
    }
}

fn upgrading(o: &PromotionObserved, production: &Dhis2Instance, version: &str) -> PromotionStep {
    let started = parse_time(o.status.started_at.as_deref());
    if let Some(r) = production_outcome(production, version, started) {
        return if r.outcome == UpgradeOutcome::Succeeded {
            PromotionStep::Succeeded {
                backup_id: r.backup_id.clone(),
                message: format!(
                    "{} runs {version} (was {}); pre-upgrade backup {}",
                    o.spec.to,
                    r.from_version,
                    r.backup_id.as_deref().unwrap_or("-")
                ),
            }
        } else {
            PromotionStep::Failed(format!(
                "{}'s upgrade to {version} ended {:?}: {}",
                o.spec.to,
                r.outcome,
                r.message.as_deref().unwrap_or("see its status.upgrade")
            ))
        };
    }
    let status = production.status.clone().unwrap_or_default();
    if status.upgrade.is_none()
        && status
            .deployed_version
            .as_deref()
            .is_some_and(|d| same_version(d, version))
    {
        return PromotionStep::Succeeded {
            backup_id: None,
            message: format!("{} runs {version}", o.spec.to),
        };
    }
    PromotionStep::Wait(match status.upgrade {
        Some(u) => format!(
            "{} is upgrading ({:?}): {}",
            o.spec.to,
            u.phase,
            u.message.unwrap_or_default()
        ),
        None => format!(
            "waiting for {} to begin its upgrade to {version}",
            o.spec.to
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::dhis2_instance::{Dhis2InstanceStatus, InstanceBackupStatus};
    use crate::crd::dhis2_promotion::Dhis2Promotion;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

    fn at(day_hour: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(&format!("2026-12-{day_hour}:00:00Z"))
            .unwrap()
            .with_timezone(&Utc)
    }

    fn ready() -> Condition {
        crate::operator::kit::conditions::condition("Ready", true, "Up", "", None)
    }

    fn instance(name: &str, version: &str, status: Dhis2InstanceStatus) -> Dhis2Instance {
        let mut i = Dhis2Instance::new(
            name,
            serde_saphyr::from_str(&format!("version: '{version}'\nenvironment: staging\n"))
                .unwrap(),
        );
        i.status = Some(status);
        i
    }

    /// Staging upgraded to 2.43.1 on the 1st at 00:00, drilled on the 3rd; production on
    /// 2.42.4, backed up on the 4th at 01:00.
    fn staging() -> Dhis2Instance {
        instance(
            "staging",
            "2.43.1",
            Dhis2InstanceStatus {
                conditions: vec![ready()],
                version: Some("2.43.1".into()),
                deployed_version: Some("2.43.1".into()),
                upgrade_history: vec![UpgradeRecord {
                    from_version: "2.42.4".into(),
                    to_version: "2.43.1".into(),
                    started_at: "2026-12-01T00:00:00Z".into(),
                    finished_at: "2026-12-01T00:00:00Z".into(),
                    outcome: UpgradeOutcome::Succeeded,
                    backup_id: None,
                    approved_by: None,
                    message: None,
                }],
                backup: Some(InstanceBackupStatus {
                    last_drill_time: Some("2026-12-03T02:00:00Z".into()),
                    last_drill_result: Some("Passed".into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
    }

    fn staging_drilled(result: &str, at: &str) -> Dhis2Instance {
        let mut s = staging();
        let backup = s.status.as_mut().unwrap().backup.as_mut().unwrap();
        backup.last_drill_result = Some(result.into());
        backup.last_drill_time = Some(at.into());
        s
    }

    fn production() -> Dhis2Instance {
        instance(
            "hmis",
            "2.42.4",
            Dhis2InstanceStatus {
                conditions: vec![ready()],
                version: Some("2.42.4".into()),
                deployed_version: Some("2.42.4".into()),
                backup: Some(InstanceBackupStatus {
                    last_backup_time: Some("2026-12-04T01:00:00Z".into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
    }

    fn spec(approved: Option<&str>) -> Dhis2PromotionSpec {
        let mut p = Dhis2Promotion::new(
            "p",
            serde_saphyr::from_str("from: staging\nto: hmis\n").unwrap(),
        );
        p.spec.approved_by = approved.map(Into::into);
        p.spec
    }

    fn step(
        spec: &Dhis2PromotionSpec,
        status: &Dhis2PromotionStatus,
        staging: &Dhis2Instance,
        production: &Dhis2Instance,
        now: DateTime<Utc>,
    ) -> PromotionStep {
        next_step(&PromotionObserved {
            spec,
            status,
            staging: Some(staging),
            staging_unreadable: None,
            production: Some(production),
            now,
        })
    }

    fn failing(s: &PromotionStep) -> Vec<String> {
        match s {
            PromotionStep::Blocked { gates, .. } => gates
                .iter()
                .filter(|g| !g.passed)
                .map(|g| g.name.clone())
                .collect(),
            other => panic!("not blocked: {other:?}"),
        }
    }

    #[test]
    fn production_on_a_mirror_gets_the_image_staging_proved_the_version_with() {
        let status = Dhis2PromotionStatus::default();
        let approved = spec(Some("Dr. Sok Dara"));
        let now = at("04T02");
        let mirror = |version: &str| format!("registry.moh.gov.kh/dhis2/core:{version}");
        let mut production = production();
        production.spec.image = Some(mirror("2.42.4"));
        let mut staging = staging();
        staging.spec.image = Some(mirror("2.43.1"));
        staging.status.as_mut().unwrap().deployed_image = Some(mirror("2.43.1"));
        match step(&approved, &status, &staging, &production, now) {
            PromotionStep::Promote { version, image, .. } => {
                assert_eq!(version, "2.43.1");
                // Not the old 2.42.4 image under the new version's name.
                assert_eq!(image, Some(mirror("2.43.1")));
            }
            other => panic!("not promoted: {other:?}"),
        }
        // Staging no longer runs it: the image cannot be known, the promotion says so.
        let mut moved_on = staging.clone();
        moved_on.spec.version = "2.43.2".into();
        let st = moved_on.status.as_mut().unwrap();
        st.deployed_version = Some("2.43.2".into());
        st.deployed_image = Some(mirror("2.43.2"));
        let mut pinned = approved.clone();
        pinned.version = Some("2.43.1".into());
        assert!(!matches!(
            step(&pinned, &status, &moved_on, &production, now),
            PromotionStep::Promote { .. }
        ));
        let unknown = promoted_image(&production, Some(&moved_on), "2.43.1").unwrap_err();
        assert!(unknown.contains("hmis sets spec.image"), "{unknown}");
        // Production on dhis2/core: nothing to set but the version.
        assert_eq!(
            promoted_image(&self::production(), Some(&staging), "2.43.1"),
            Ok(None)
        );
    }

    #[test]
    fn each_gate_blocks_on_its_own_then_all_pass_and_production_gets_the_version() {
        let status = Dhis2PromotionStatus::default();
        let approved = spec(Some("Dr. Sok Dara"));
        let now = at("04T02");
        assert_eq!(
            step(&approved, &status, &staging(), &production(), now),
            PromotionStep::Promote {
                version: "2.43.1".into(),
                image: None,
                gates: evaluate_gates(
                    &PromotionObserved {
                        spec: &approved,
                        status: &status,
                        staging: Some(&staging()),
                        staging_unreadable: None,
                        production: Some(&production()),
                        now
                    },
                    "2.43.1"
                )
            }
        );

        assert_eq!(
            failing(&step(&spec(None), &status, &staging(), &production(), now)),
            ["Approved"]
        );
        // Soaked 2 days 2 hours, not 72 h.
        let early = at("03T02");
        assert_eq!(
            failing(&step(&approved, &status, &staging(), &production(), early)),
            ["Soaked"]
        );
        let mut s = staging();
        s.status.as_mut().unwrap().conditions.clear();
        assert_eq!(
            failing(&step(&approved, &status, &s, &production(), now)),
            ["StagingReady"]
        );
        let s = staging_drilled("Failed", "2026-12-03T02:00:00Z");
        assert_eq!(
            failing(&step(&approved, &status, &s, &production(), now)),
            ["StagingDrillPassed"]
        );
        let s = staging_drilled("Passed", "2026-11-30T02:00:00Z");
        let blocked = step(&approved, &status, &s, &production(), now);
        assert_eq!(
            failing(&blocked),
            ["StagingDrillPassed"],
            "a drill before the move proves nothing"
        );
        // 27 hours after production's newest backup.
        assert_eq!(
            failing(&step(
                &approved,
                &status,
                &staging(),
                &production(),
                at("05T04")
            )),
            ["ProductionBackupFresh"]
        );
        let mut odd = approved.clone();
        odd.min_soak = "three days".into();
        let PromotionStep::Blocked { gates, .. } =
            step(&odd, &status, &staging(), &production(), now)
        else {
            panic!()
        };
        let soak = gates.iter().find(|g| g.name == "Soaked").unwrap();
        assert!(
            soak.message
                .starts_with("spec.minSoak: 'three days' is not a duration"),
            "{}",
            soak.message
        );
    }

    #[test]
    fn the_promotion_follows_productions_upgrade_to_its_end() {
        let approved = spec(Some("Dr. Sok Dara"));
        let status = Dhis2PromotionStatus {
            phase: Some("Upgrading".into()),
            version: Some("2.43.1".into()),
            started_at: Some("2026-12-04T02:00:00Z".into()),
            ..Default::default()
        };
        let mut p = production();
        let s = step(&approved, &status, &staging(), &p, at("04T02"));
        assert!(matches!(s, PromotionStep::Wait(_)), "{s:?}");
        let record = |outcome| UpgradeRecord {
            from_version: "2.42.4".into(),
            to_version: "2.43.1".into(),
            started_at: "2026-12-04T02:00:01Z".into(),
            finished_at: "2026-12-04T03:00:00Z".into(),
            outcome,
            backup_id: Some("20261204T020100Z".into()),
            approved_by: None,
            message: Some("DHIS2 2.43.1 did not report its version".into()),
        };
        p.status.as_mut().unwrap().upgrade_history = vec![record(UpgradeOutcome::RolledBack)];
        let PromotionStep::Failed(why) = step(&approved, &status, &staging(), &p, at("04T03"))
        else {
            panic!()
        };
        assert!(
            why.contains("RolledBack") && why.contains("did not report"),
            "{why}"
        );
        p.status.as_mut().unwrap().upgrade_history = vec![record(UpgradeOutcome::Succeeded)];
        let s = step(&approved, &status, &staging(), &p, at("04T03"));
        assert!(
            matches!(&s, PromotionStep::Succeeded { backup_id: Some(id), .. } if id == "20261204T020100Z"),
            "{s:?}"
        );
        let done = Dhis2PromotionStatus {
            phase: Some("Succeeded".into()),
            ..status
        };
        assert_eq!(
            step(&approved, &done, &staging(), &p, at("04T03")),
            PromotionStep::Done
        );
    }

    #[test]
    fn a_promotion_never_downgrades_and_has_nothing_to_do_when_production_runs_the_version() {
        let approved = spec(Some("Dr. Sok Dara"));
        let status = Dhis2PromotionStatus::default();
        let mut old = approved.clone();
        old.version = Some("2.41.9".into());
        let PromotionStep::Failed(why) =
            step(&old, &status, &staging(), &production(), at("04T02"))
        else {
            panic!()
        };
        assert!(why.contains("never downgrades"), "{why}");
        let mut same = approved.clone();
        same.version = Some("42.4.0".into());
        assert!(matches!(
            step(&same, &status, &staging(), &production(), at("04T02")),
            PromotionStep::Succeeded { .. }
        ));
    }
}
