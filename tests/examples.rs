//! manifests/examples/: what an MoH IT officer copies to start. Each example is what the operator
//! accepts (the CRD schemas on the real kube-apiserver of scripts/test.sh, the operator's own
//! validation and schedule parsing), does what its comments say (02:00 Asia/Phnom_Penh, 7/4/12
//! retention, a weekly drill), and holds placeholders, never keys.

mod install_support;

use clap::Parser;
use dhis2_operator::crd::{Dhis2BackupSchedule, Dhis2Database, Dhis2Instance};
use dhis2_operator::operator::instance::validate::{validate_database, validate_instance};
use dhis2_operator::rules::cron_schedule::Schedule;
use dhis2_operator::rules::repository_protection::{RepositoryUse, check_protection};
use install_support::{docs, ensure_namespace, install_crds, kubernetes_validate, read};
use serde_json::Value;

const EXAMPLES: [&str; 3] = ["staging.yaml", "production.yaml", "offsite-copy.yaml"];

fn example(file: &str) -> (String, Vec<Value>) {
    let text = read(&format!("manifests/examples/{file}"));
    let objects = docs(&text);
    (text, objects)
}

fn of_kind<T: serde::de::DeserializeOwned>(objects: &[Value], kind: &str) -> Vec<T> {
    objects
        .iter()
        .filter(|d| d["kind"] == kind)
        .map(|d| serde_json::from_value(d.clone()).unwrap_or_else(|e| panic!("{kind}: {e}")))
        .collect()
}

/// 2026-01-05 00:00 in Phnom Penh (UTC+7, no daylight saving) is 2026-01-04 17:00 UTC.
fn a_monday_midnight_in_phnom_penh() -> chrono::DateTime<chrono::Utc> {
    "2026-01-04T17:00:00Z".parse().unwrap()
}

#[test]
fn staging_and_production_are_valid_instances_with_nightly_backups_and_weekly_drills() {
    for file in ["staging.yaml", "production.yaml"] {
        let (_, objects) = example(file);
        let instances: Vec<Dhis2Instance> = of_kind(&objects, "Dhis2Instance");
        assert_eq!(instances.len(), 1, "{file}: one instance");
        let instance = &instances[0];
        assert_eq!(
            validate_instance(&instance.spec),
            vec![],
            "{file}: the operator refuses the instance"
        );
        for db in of_kind::<Dhis2Database>(&objects, "Dhis2Database") {
            assert_eq!(validate_database(&db.spec), vec![], "{file}");
        }
        let name = instance.metadata.name.clone().unwrap();
        let expected_environment = if file == "staging.yaml" {
            "staging"
        } else {
            "production"
        };
        assert_eq!(
            serde_json::to_value(instance.spec.environment).unwrap(),
            expected_environment
        );

        // Nightly at 02:00 Phnom Penh time = 19:00 UTC the day before, 7/4/12 retention.
        let schedules: Vec<Dhis2BackupSchedule> = of_kind(&objects, "Dhis2BackupSchedule");
        assert_eq!(schedules.len(), 1, "{file}: one backup schedule");
        let nightly = &schedules[0].spec;
        assert_eq!(nightly.instance_ref, name);
        let schedule = Schedule::parse(&nightly.schedule, &nightly.time_zone, "spec")
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(
            schedule
                .next_after(a_monday_midnight_in_phnom_penh())
                .unwrap()
                .to_rfc3339(),
            "2026-01-04T19:00:00+00:00",
            "{file}: backups at 02:00 Asia/Phnom_Penh"
        );
        let retention = nightly.retention.as_ref().expect("retention");
        assert_eq!(
            (
                retention.keep_daily,
                retention.keep_weekly,
                retention.keep_monthly
            ),
            (Some(7), Some(4), Some(12)),
            "{file}"
        );

        // The weekly drill: Sunday 03:00 Phnom Penh time, after that night's backup.
        let backup = instance.spec.backup.as_ref().expect("spec.backup");
        let drill = backup.drill.as_ref().expect("spec.backup.drill");
        let drill = Schedule::parse(&drill.schedule, &drill.time_zone, "spec.backup.drill")
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(
            drill
                .next_after(a_monday_midnight_in_phnom_penh())
                .unwrap()
                .to_rfc3339(),
            "2026-01-10T20:00:00+00:00",
            "{file}: drills on Sunday 03:00 Asia/Phnom_Penh"
        );

        // Backups go to S3 with credentials from a Secret the example declares.
        let repository = backup.repository.as_ref().expect("spec.backup.repository");
        let s3 = repository.s3.as_ref().expect("an S3 repository");
        let secrets: Vec<&Value> = objects.iter().filter(|d| d["kind"] == "Secret").collect();
        let credentials = secrets
            .iter()
            .find(|s| s["metadata"]["name"] == s3.credentials_secret_ref.as_str())
            .unwrap_or_else(|| panic!("{file}: no Secret {}", s3.credentials_secret_ref));
        for key in ["accessKey", "secretKey"] {
            assert!(
                credentials["stringData"][key]
                    .as_str()
                    .is_some_and(|v| v.starts_with("REPLACE_WITH_")),
                "{file}: {key} must be a placeholder"
            );
        }
    }
}

#[test]
fn production_backups_are_refused_until_the_encryption_key_placeholder_is_replaced() {
    let (_, objects) = example("production.yaml");
    let instance: Dhis2Instance = of_kind(&objects, "Dhis2Instance").remove(0);
    let mut repository = instance.spec.backup.unwrap().repository.unwrap();
    let field = "the Dhis2Instance's spec.backup.repository";
    let refused = check_protection(&repository, field, RepositoryUse::Backup)
        .expect_err("a placeholder is no age public key");
    assert!(
        refused.contains("spec.backup.repository.encryption.recipients[0]"),
        "{refused}"
    );
    // With a real public key (as `age-keygen` prints it) backups and drills may go ahead: the
    // drill reads with the identity Secret the example declares.
    let identity = age::x25519::Identity::generate();
    repository.encryption.as_mut().unwrap().recipients = vec![identity.to_public().to_string()];
    check_protection(&repository, field, RepositoryUse::Backup).expect("backups");
    check_protection(&repository, field, RepositoryUse::Read).expect("drills");
    let identity_secret = repository.encryption.unwrap().identity_secret_ref.unwrap();
    assert!(
        objects
            .iter()
            .any(|d| d["kind"] == "Secret" && d["metadata"]["name"] == identity_secret.as_str()),
        "the identity Secret {identity_secret} is declared"
    );
}

/// The off-site copy is a CronJob running dhis2ctl: its arguments must be ones dhis2ctl takes.
#[test]
fn the_offsite_copy_runs_dhis2ctl_commands_that_exist() {
    let (_, objects) = example("offsite-copy.yaml");
    let cronjob = objects
        .iter()
        .find(|d| d["kind"] == "CronJob")
        .expect("a CronJob");
    let pod = &cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    let containers: Vec<&Value> = pod["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .chain(pod["containers"].as_array().unwrap())
        .collect();
    assert_eq!(containers.len(), 2, "copy, then prune off site");
    for container in containers {
        assert_eq!(container["command"], serde_json::json!(["dhis2ctl"]));
        let mut argv = vec!["dhis2ctl".to_string()];
        argv.extend(
            container["args"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap().to_string()),
        );
        if let Err(e) = dhis2_operator::cli::Cli::try_parse_from(&argv) {
            panic!("dhis2ctl refuses {argv:?}:\n{e}");
        }
    }
    let copy = &pod["initContainers"][0]["args"];
    assert!(copy.as_array().unwrap().iter().any(|a| a == "--missing"));
}

#[test]
fn secrets_hold_placeholders_only() {
    for file in EXAMPLES {
        let (text, objects) = example(file);
        for secret in objects.iter().filter(|d| d["kind"] == "Secret") {
            for (key, value) in secret["stringData"].as_object().expect("stringData") {
                let value = value.as_str().unwrap();
                let lines: Vec<&str> = value
                    .lines()
                    .filter(|l| l.contains('=') || !l.starts_with('['))
                    .collect();
                assert!(
                    lines.iter().all(|l| l.contains("REPLACE_WITH_")),
                    "{file}: Secret {} key {key} holds something other than a placeholder",
                    secret["metadata"]["name"]
                );
            }
        }
        assert!(!text.contains("AGE-SECRET-KEY-"), "{file}");
        assert!(!text.contains("AKIA"), "{file}: looks like an AWS key id");
    }
}

#[test]
fn every_example_passes_strict_schemas_and_the_apiserver() {
    for file in EXAMPLES {
        let (text, _) = example(file);
        kubernetes_validate(&text, file);
    }
    // batch/v1 CronJob is GA from Kubernetes 1.21: the test apiserver (1.20) has only
    // batch/v1beta1, so offsite-copy.yaml is checked by kubernetes-validate above, not here.
    install_crds();
    for file in ["staging.yaml", "production.yaml"] {
        let (text, objects) = example(file);
        // The namespaces must exist for a dry run of what goes into them.
        for ns in objects.iter().filter(|d| d["kind"] == "Namespace") {
            ensure_namespace(ns["metadata"]["name"].as_str().unwrap());
        }
        let out = install_support::server_dry_run(&text);
        for object in objects.iter().filter(|d| {
            d["apiVersion"]
                .as_str()
                .is_some_and(|v| v.starts_with("dhis2operator.io/"))
        }) {
            let kind = object["kind"].as_str().unwrap().to_lowercase();
            let name = object["metadata"]["name"].as_str().unwrap();
            assert!(
                out.contains(&format!("{kind}.dhis2operator.io/{name}")),
                "{file}: {kind} {name} missing from: {out}"
            );
        }
    }
}
