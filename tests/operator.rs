//! The operator against a real kube-apiserver + controller-manager (v1.20.2), run under the
//! ServiceAccount and Role of manifests/operator/namespaced/ (never as cluster-admin): children
//! with the right specs and owners, spec changes that roll through, children that come back,
//! deletion policies and retained data taken back, bad specs reported, ownership by UID, lost
//! credentials reported, storage changes expanded or reported, the pod security context and
//! dhis.conf escaping, least privilege, DHIS2 health in status, and convergence after a crash.

mod support;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Event, PersistentVolumeClaim, Secret, Service};
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use dhis2_operator::crd::{Dhis2Database, Dhis2Instance};
use dhis2_operator::rules::names::ENDPOINT_OVERRIDE_ANNOTATION as ANNOTATION;
use support::kube_env::*;

async fn create_instance(
    client: &Client,
    ns: &str,
    name: &str,
    spec: serde_json::Value,
    endpoint: Option<&str>,
) {
    let mut meta = json!({"name": name});
    if let Some(url) = endpoint {
        meta["annotations"] = json!({ ANNOTATION: url });
    }
    let obj: Dhis2Instance = serde_json::from_value(json!({
        "apiVersion": "dhis2operator.io/v1alpha1", "kind": "Dhis2Instance", "metadata": meta, "spec": spec
    }))
    .expect("instance");
    Api::<Dhis2Instance>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &obj)
        .await
        .expect("create instance");
}

async fn admin_secret(client: &Client, ns: &str) {
    let s: Secret = serde_json::from_value(json!({
        "metadata": {"name": "dhis2-admin"},
        "stringData": {"username": ADMIN.0, "password": ADMIN.1}
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &s)
        .await
        .unwrap();
}

async fn phase_of(client: &Client, ns: &str, name: &str) -> Option<(String, Dhis2Instance)> {
    let i = Api::<Dhis2Instance>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .ok()?;
    let phase = i.status.as_ref()?.phase.clone()?;
    Some((phase, i))
}

async fn wait_phase(client: &Client, ns: &str, name: &str, want: &str) -> Dhis2Instance {
    wait_for(60, &format!("{name} to reach phase {want}"), || async {
        match phase_of(client, ns, name).await {
            Some((p, i)) if p == want => Some(i),
            _ => None,
        }
    })
    .await
}

fn owned_by(
    obj_owner: Option<&Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>>,
    uid: &str,
) -> bool {
    obj_owner.is_some_and(|o| o.iter().any(|r| r.uid == uid && r.controller == Some(true)))
}

#[tokio::test(flavor = "multi_thread")]
async fn an_instance_gets_its_database_and_dhis2_and_reports_what_dhis2_says() {
    let client = client().await;
    let ns = namespace(&client, "op-ready").await;
    let _kubelet = FakeKubelet::start(client.clone(), &ns);
    let dhis2 = FakeDhis2::start(Dhis2State::Up {
        version: "2.41.3".into(),
        revision: "a1b2c3d".into(),
    })
    .await;
    let _operator = Operator::start(&client, &ns).await;
    admin_secret(&client, &ns).await;
    create_instance(
        &client,
        &ns,
        "hmis",
        json!({"version": "2.41.3", "environment": "production", "hostname": "hmis.moh.gov.kh",
               "adminSecretRef": "dhis2-admin", "databaseStorage": {"size": "200Gi"}}),
        Some(&dhis2.url),
    )
    .await;
    let instance = wait_phase(&client, &ns, "hmis", "Ready").await;
    let status = instance.status.clone().unwrap();
    assert_eq!(
        status.version.as_deref(),
        Some("2.41.3"),
        "version as DHIS2 reports it"
    );
    assert_eq!(status.revision.as_deref(), Some("a1b2c3d"));
    assert!(
        status
            .conditions
            .iter()
            .any(|c| c.type_ == "DatabaseReady" && c.status == "True")
    );
    assert_eq!(status.observed_generation, instance.metadata.generation);
    let uid = instance.uid().unwrap();

    let deployment = Api::<Deployment>::namespaced(client.clone(), &ns)
        .get("hmis")
        .await
        .unwrap();
    assert!(owned_by(
        deployment.metadata.owner_references.as_ref(),
        &uid
    ));
    let spec = &deployment.spec;
    assert_eq!(
        spec.strategy.as_ref().unwrap().type_.as_deref(),
        Some("Recreate"),
        "two DHIS2 versions never share a database"
    );
    let container = &spec.template.spec.as_ref().unwrap().containers[0];
    assert_eq!(container.image.as_deref(), Some("dhis2/core:2.41.3"));
    for name in ["hmis"] {
        let svc = Api::<Service>::namespaced(client.clone(), &ns)
            .get(name)
            .await
            .unwrap();
        assert!(owned_by(svc.metadata.owner_references.as_ref(), &uid));
    }
    let ingress = Api::<Ingress>::namespaced(client.clone(), &ns)
        .get("hmis")
        .await
        .unwrap();
    assert_eq!(
        ingress.spec.unwrap().rules.unwrap()[0].host.as_deref(),
        Some("hmis.moh.gov.kh")
    );
    let conf = Api::<Secret>::namespaced(client.clone(), &ns)
        .get("hmis-dhis-conf")
        .await
        .unwrap();
    let text = String::from_utf8(conf.data.unwrap()["dhis.conf"].0.clone()).unwrap();
    assert!(
        text.contains(&format!(
            "connection.url = jdbc:postgresql://hmis-db-postgresql.{ns}.svc:5432/dhis2"
        )),
        "{text}"
    );
    assert!(text.contains("server.base.url = http://hmis.moh.gov.kh"));

    let db = Api::<Dhis2Database>::namespaced(client.clone(), &ns)
        .get("hmis-db")
        .await
        .unwrap();
    assert!(
        owned_by(db.metadata.owner_references.as_ref(), &uid),
        "the dedicated database belongs to the instance"
    );
    let sts = Api::<StatefulSet>::namespaced(client.clone(), &ns)
        .get("hmis-db")
        .await
        .unwrap();
    let claim = &sts.spec.volume_claim_templates.unwrap()[0];
    assert_eq!(
        claim
            .spec
            .as_ref()
            .unwrap()
            .resources
            .as_ref()
            .unwrap()
            .requests
            .as_ref()
            .unwrap()["storage"]
            .0,
        "200Gi"
    );

    // Printer columns, as an officer sees them.
    let out = std::process::Command::new("kubectl")
        .args(["get", "d2", "-n", &ns])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Ready") && text.contains("2.41.3") && text.contains("production"),
        "{text}"
    );

    // The CLI reads the same: dhis2ctl get / status (also `kubectl dhis2 …`).
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dhis2ctl"))
        .args(["get", "instances", "-n", &ns, "-o", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list[0]["status"]["version"], "2.41.3");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kubectl-dhis2"))
        .args(["status", "hmis", "-n", &ns])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "Phase:        Ready",
        "Version:      2.41.3",
        "Replicas:     1/1 ready",
        "DatabaseReady  True",
    ] {
        assert!(text.contains(line), "status lacks '{line}':\n{text}");
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dhis2ctl"))
        .args(["status", "no-such-instance", "-n", &ns])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Dhis2Instance no-such-instance not found")
    );

    // A spec change rolls through (a new image of the same version: a version change is an
    // upgrade, tests/cluster_upgrade.rs); a deleted child comes back.
    Api::<Dhis2Instance>::namespaced(client.clone(), &ns)
        .patch(
            "hmis",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"image": "registry.moh.gov.kh/dhis2/core:2.41.3"}})),
        )
        .await
        .unwrap();
    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns);
    wait_for(30, "the Deployment to run the mirrored image", || async {
        let d = deployments.get("hmis").await.ok()?;
        (d.spec.template.spec?.containers[0].image.as_deref()
            == Some("registry.moh.gov.kh/dhis2/core:2.41.3"))
        .then_some(())
    })
    .await;
    let services = Api::<Service>::namespaced(client.clone(), &ns);
    services
        .delete("hmis", &DeleteParams::default())
        .await
        .unwrap();
    wait_for(30, "the deleted Service to come back", || async {
        services.get_opt("hmis").await.ok()?.map(|_| ())
    })
    .await;
    // Removing the hostname prunes the Ingress.
    Api::<Dhis2Instance>::namespaced(client.clone(), &ns)
        .patch(
            "hmis",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"hostname": null}})),
        )
        .await
        .unwrap();
    let ingresses = Api::<Ingress>::namespaced(client.clone(), &ns);
    wait_for(30, "the Ingress to be pruned", || async {
        ingresses
            .get_opt("hmis")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn dhis2_starting_or_silent_is_not_ready_and_says_why() {
    let client = client().await;
    let ns = namespace(&client, "op-health").await;
    let _kubelet = FakeKubelet::start(client.clone(), &ns);
    let dhis2 = FakeDhis2::start(Dhis2State::Migrating).await;
    let _operator = Operator::start(&client, &ns).await;
    create_instance(
        &client,
        &ns,
        "hmis",
        json!({"version": "2.41.3", "environment": "staging"}),
        Some(&dhis2.url),
    )
    .await;
    let i = wait_phase(&client, &ns, "hmis", "Migrating").await;
    let ready = i
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(ready.status, "False");
    assert!(ready.message.contains("Flyway"), "{}", ready.message);

    dhis2.set(Dhis2State::Up {
        version: "2.41.3".into(),
        revision: "r".into(),
    });
    wait_phase(&client, &ns, "hmis", "Ready").await;
    dhis2.stop();
    let i = wait_for(90, "Ready=False once DHIS2 stops answering", || async {
        let (_, i) = phase_of(&client, &ns, "hmis").await?;
        let c = i
            .status
            .as_ref()?
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")?
            .clone();
        (c.status == "False").then_some(c)
    })
    .await;
    assert_eq!(i.reason, "NotAnswering");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_specs_and_hand_made_objects_are_reported_not_overwritten() {
    let client = client().await;
    let ns = namespace(&client, "op-bad").await;
    let _kubelet = FakeKubelet::start(client.clone(), &ns);
    let _operator = Operator::start(&client, &ns).await;
    create_instance(
        &client,
        &ns,
        "cluster",
        json!({"version": "2.41.3", "environment": "production", "replicas": 2}),
        None,
    )
    .await;
    let i = wait_phase(&client, &ns, "cluster", "Degraded").await;
    let degraded = i
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Degraded")
        .unwrap();
    assert_eq!(degraded.status, "True");
    assert!(
        degraded.message.contains("spec.replicas") && degraded.message.contains("Redis"),
        "{}",
        degraded.message
    );
    let events = Api::<Event>::namespaced(client.clone(), &ns);
    wait_for(30, "an InvalidSpec event", || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items
            .iter()
            .any(|e| e.reason.as_deref() == Some("InvalidSpec"))
            .then_some(())
    })
    .await;
    assert!(
        Api::<Deployment>::namespaced(client.clone(), &ns)
            .get_opt("cluster")
            .await
            .unwrap()
            .is_none(),
        "nothing is built from an invalid spec"
    );

    // A Service somebody made by hand, with the name the instance needs.
    let svc: Service = serde_json::from_value(
        json!({"metadata": {"name": "handmade", "labels": {"team": "moh"}},
        "spec": {"ports": [{"port": 9999, "protocol": "TCP"}]}}),
    )
    .unwrap();
    Api::<Service>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &svc)
        .await
        .unwrap();
    create_instance(
        &client,
        &ns,
        "handmade",
        json!({"version": "2.41.3", "environment": "staging"}),
        None,
    )
    .await;
    let i = wait_for(60, "a conflict to be reported", || async {
        let (_, i) = phase_of(&client, &ns, "handmade").await?;
        let c = i
            .status
            .as_ref()?
            .conditions
            .iter()
            .find(|c| c.type_ == "Degraded" && c.status == "True")?
            .clone();
        Some(c)
    })
    .await;
    assert_eq!(i.reason, "Conflict");
    assert!(
        i.message
            .contains("Service handmade exists and is not managed"),
        "{}",
        i.message
    );
    let svc = Api::<Service>::namespaced(client.clone(), &ns)
        .get("handmade")
        .await
        .unwrap();
    assert_eq!(
        svc.spec.unwrap().ports.unwrap()[0].port,
        9999,
        "the hand-made Service is untouched"
    );
}

async fn deletion_case(policy: &str) -> (Client, String) {
    let client = client().await;
    let ns = namespace(&client, &format!("op-del-{}", policy.to_lowercase())).await;
    let _kubelet = FakeKubelet::start(client.clone(), &ns);
    let dhis2 = FakeDhis2::start(Dhis2State::Up {
        version: "2.41.3".into(),
        revision: "r".into(),
    })
    .await;
    let _operator = Operator::start(&client, &ns).await;
    create_instance(
        &client,
        &ns,
        "hmis",
        json!({"version": "2.41.3", "environment": "training", "deletionPolicy": policy}),
        Some(&dhis2.url),
    )
    .await;
    wait_phase(&client, &ns, "hmis", "Ready").await;
    let claims = Api::<PersistentVolumeClaim>::namespaced(client.clone(), &ns);
    wait_for(30, "the database volume claim", || async {
        claims.get_opt("data-hmis-db-0").await.ok()?.map(|_| ())
    })
    .await;
    Api::<Dhis2Instance>::namespaced(client.clone(), &ns)
        .delete("hmis", &DeleteParams::background())
        .await
        .unwrap();
    let dbs = Api::<Dhis2Database>::namespaced(client.clone(), &ns);
    wait_for(60, "the dedicated database to be deleted", || async {
        dbs.get_opt("hmis-db").await.ok()?.is_none().then_some(())
    })
    .await;
    (client, ns)
}

#[tokio::test(flavor = "multi_thread")]
async fn deletion_retains_health_data_by_default() {
    let (client, ns) = deletion_case("Retain").await;
    let claims = Api::<PersistentVolumeClaim>::namespaced(client.clone(), &ns);
    let secrets = Api::<Secret>::namespaced(client.clone(), &ns);
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert!(
        claims.get_opt("data-hmis-db-0").await.unwrap().is_some(),
        "database volume kept"
    );
    assert!(
        claims.get_opt("hmis-files").await.unwrap().is_some(),
        "file store kept"
    );
    assert!(
        secrets
            .get_opt("hmis-db-credentials")
            .await
            .unwrap()
            .is_some(),
        "credentials kept"
    );

    // Re-created under the same name, the instance takes its retained data back (the kept
    // objects name it in dhis2operator.io/retained-for): same password, no Conflict.
    let password = password_of(&secrets.get("hmis-db-credentials").await.unwrap());
    let _kubelet = FakeKubelet::start(client.clone(), &ns);
    let dhis2 = FakeDhis2::start(Dhis2State::Up {
        version: "2.41.3".into(),
        revision: "r".into(),
    })
    .await;
    let _operator = Operator::start(&client, &ns).await;
    create_instance(
        &client,
        &ns,
        "hmis",
        json!({"version": "2.41.3", "environment": "training"}),
        Some(&dhis2.url),
    )
    .await;
    wait_phase(&client, &ns, "hmis", "Ready").await;
    assert_eq!(
        password_of(&secrets.get("hmis-db-credentials").await.unwrap()),
        password,
        "the retained password is kept"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn deletion_policy_delete_removes_everything() {
    let (client, ns) = deletion_case("Delete").await;
    let claims = Api::<PersistentVolumeClaim>::namespaced(client.clone(), &ns);
    let secrets = Api::<Secret>::namespaced(client.clone(), &ns);
    wait_for(60, "volumes and credentials to go", || async {
        let gone = claims.get_opt("data-hmis-db-0").await.ok()?.is_none()
            && claims.get_opt("hmis-files").await.ok()?.is_none()
            && secrets.get_opt("hmis-db-credentials").await.ok()?.is_none();
        gone.then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_operator_converges_after_being_killed_mid_reconcile() {
    let client = client().await;
    let ns = namespace(&client, "op-crash").await;
    let _kubelet = FakeKubelet::start(client.clone(), &ns);
    let dhis2 = FakeDhis2::start(Dhis2State::Up {
        version: "2.40.5".into(),
        revision: "r".into(),
    })
    .await;
    let mut operator = Operator::start(&client, &ns).await;
    create_instance(
        &client,
        &ns,
        "hmis",
        json!({"version": "2.40.5", "environment": "staging"}),
        Some(&dhis2.url),
    )
    .await;
    // Kill it as soon as it has started creating children.
    let secrets = Api::<Secret>::namespaced(client.clone(), &ns);
    wait_for(30, "the first child", || async {
        secrets
            .get_opt("hmis-db-credentials")
            .await
            .ok()?
            .map(|_| ())
    })
    .await;
    operator.kill().await;
    let password_before = secrets
        .get("hmis-db-credentials")
        .await
        .unwrap()
        .data
        .unwrap()["password"]
        .clone();
    operator.restart();
    wait_phase(&client, &ns, "hmis", "Ready").await;
    let password_after = secrets
        .get("hmis-db-credentials")
        .await
        .unwrap()
        .data
        .unwrap()["password"]
        .clone();
    assert_eq!(
        password_before, password_after,
        "a restart never changes the database password"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_external_database_is_checked_for_real() {
    let env = support::env();
    let client = client().await;
    let ns = namespace(&client, "op-ext").await;
    let _operator = Operator::start(&client, &ns).await;
    let rest = env.pg_url.trim_start_matches("postgresql://");
    let (userinfo, hostpart) = rest.split_once('@').unwrap();
    let (user, password) = userinfo.split_once(':').unwrap();
    let (hostport, database) = hostpart.split_once('/').unwrap();
    let (host, port) = hostport.split_once(':').unwrap();
    let secret: Secret = serde_json::from_value(json!({"metadata": {"name": "moh-pg"},
        "stringData": {"host": host, "port": port, "database": database, "username": user, "password": password}}))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let db: Dhis2Database = serde_json::from_value(json!({"apiVersion": "dhis2operator.io/v1alpha1", "kind": "Dhis2Database",
        "metadata": {"name": "moh"}, "spec": {"provider": "external", "externalSecretRef": "moh-pg"}}))
    .unwrap();
    let dbs = Api::<Dhis2Database>::namespaced(client.clone(), &ns);
    dbs.create(&PostParams::default(), &db).await.unwrap();
    let status = wait_for(30, "the external database to be Ready", || async {
        let s = dbs.get("moh").await.ok()?.status?;
        (s.phase.as_deref() == Some("Ready")).then_some(s)
    })
    .await;
    assert!(status.server_version.unwrap().starts_with("15."));
    let json = serde_json::to_string(&dbs.get("moh").await.unwrap()).unwrap();
    assert!(
        !json.contains(password),
        "no password in the resource or its status"
    );
}

async fn create_database(client: &Client, ns: &str, name: &str, spec: serde_json::Value) {
    let db: Dhis2Database =
        serde_json::from_value(json!({"apiVersion": "dhis2operator.io/v1alpha1",
        "kind": "Dhis2Database", "metadata": {"name": name}, "spec": spec}))
        .expect("database");
    Api::<Dhis2Database>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &db)
        .await
        .expect("create database");
}

async fn wait_db_phase(client: &Client, ns: &str, name: &str, want: &str) -> Dhis2Database {
    let dbs = Api::<Dhis2Database>::namespaced(client.clone(), ns);
    wait_for(
        60,
        &format!("Dhis2Database {name} to reach phase {want}"),
        || async {
            let db = dbs.get(name).await.ok()?;
            (db.status.as_ref()?.phase.as_deref() == Some(want)).then_some(db)
        },
    )
    .await
}

/// Waits for the database's Degraded condition to be True with `reason`.
async fn wait_db_degraded(
    client: &Client,
    ns: &str,
    name: &str,
    reason: &str,
) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    let dbs = Api::<Dhis2Database>::namespaced(client.clone(), ns);
    wait_for(60, &format!("{name} Degraded with {reason}"), || async {
        let db = dbs.get(name).await.ok()?;
        db.status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Degraded" && c.status == "True" && c.reason == reason)
    })
    .await
}

/// A change to the object wakes its controller now rather than at the next requeue.
async fn nudge<K>(api: &Api<K>, name: &str)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let patch = json!({"metadata": {"annotations": {"test/nudge": support::unique("n")}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("nudge");
}

async fn wait_event(client: &Client, ns: &str, reason: &str) -> String {
    let events = Api::<Event>::namespaced(client.clone(), ns);
    wait_for(60, &format!("a {reason} event"), || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items
            .into_iter()
            .find(|e| e.reason.as_deref() == Some(reason))
            .and_then(|e| e.message)
    })
    .await
}

fn password_of(secret: &Secret) -> Option<Vec<u8>> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get("password"))
        .map(|p| p.0.clone())
}

#[tokio::test(flavor = "multi_thread")]
async fn lost_credentials_are_reported_and_never_regenerated() {
    let client = client().await;
    let ns = namespace(&client, "op-cred").await;
    let _kubelet = FakeKubelet::start(client.clone(), &ns);
    let _operator = Operator::start(&client, &ns).await;
    create_database(&client, &ns, "pg", json!({"storage": {"size": "1Gi"}})).await;
    wait_db_phase(&client, &ns, "pg", "Ready").await;
    let claims = Api::<PersistentVolumeClaim>::namespaced(client.clone(), &ns);
    assert!(claims.get_opt("data-pg-0").await.unwrap().is_some());
    let secrets = Api::<Secret>::namespaced(client.clone(), &ns);
    let dbs = Api::<Dhis2Database>::namespaced(client.clone(), &ns);
    let original = password_of(&secrets.get("pg-credentials").await.unwrap()).unwrap();

    // The Secret is deleted while the data volume exists.
    secrets
        .delete("pg-credentials", &DeleteParams::default())
        .await
        .unwrap();
    nudge(&dbs, "pg").await;
    let c = wait_db_degraded(&client, &ns, "pg", "CredentialsMissing").await;
    assert!(
        c.message.contains("Secret pg-credentials was deleted")
            && c.message.contains(&format!(
                "kubectl -n {ns} create secret generic pg-credentials"
            )),
        "{}",
        c.message
    );
    let note = wait_event(&client, &ns, "CredentialsMissing").await;
    assert!(
        note.contains("create secret generic pg-credentials"),
        "{note}"
    );
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert!(
        secrets.get_opt("pg-credentials").await.unwrap().is_none(),
        "no new password was generated"
    );

    // Restored as the message says: back to Ready with the password the volume knows.
    let restored: Secret = serde_json::from_value(json!({"metadata": {"name": "pg-credentials",
        "annotations": {"dhis2operator.io/retained-for": "Dhis2Database/pg"}},
        "data": {"password": k8s_openapi::ByteString(original.clone())}}))
    .unwrap();
    secrets
        .create(&PostParams::default(), &restored)
        .await
        .unwrap();
    nudge(&dbs, "pg").await;
    wait_for(60, "pg Ready with the restored Secret", || async {
        let db = dbs.get("pg").await.ok()?;
        let s = db.status?;
        let degraded = s
            .conditions
            .iter()
            .any(|c| c.type_ == "Degraded" && c.status == "True");
        (s.phase.as_deref() == Some("Ready") && !degraded).then_some(())
    })
    .await;
    let secret = secrets.get("pg-credentials").await.unwrap();
    assert_eq!(password_of(&secret).unwrap(), original);
    assert!(
        secret.data.as_ref().unwrap().contains_key("host"),
        "the operator re-adds what it can derive"
    );

    // The Secret loses its password key.
    secrets
        .patch(
            "pg-credentials",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"password": null}})),
        )
        .await
        .unwrap();
    nudge(&dbs, "pg").await;
    let c = wait_db_degraded(&client, &ns, "pg", "CredentialsMissing").await;
    assert!(c.message.contains("has no key 'password'"), "{}", c.message);
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert!(
        password_of(&secrets.get("pg-credentials").await.unwrap()).is_none(),
        "no new password was generated"
    );
}

fn service_port(svc: &Service) -> i32 {
    svc.spec.as_ref().unwrap().ports.as_ref().unwrap()[0].port
}

#[tokio::test(flavor = "multi_thread")]
async fn children_are_owned_by_uid_and_names_never_collide() {
    let client = client().await;
    let ns = namespace(&client, "op-own").await;
    let _kubelet = FakeKubelet::start(client.clone(), &ns);
    let _operator = Operator::start(&client, &ns).await;
    // A Dhis2Database and a Dhis2Instance of the same name: once they fought over Service hmis.
    create_database(&client, &ns, "hmis", json!({})).await;
    create_instance(
        &client,
        &ns,
        "hmis",
        json!({"version": "2.41.3", "environment": "staging", "databaseRef": "hmis"}),
        None,
    )
    .await;
    let db = wait_db_phase(&client, &ns, "hmis", "Ready").await;
    let services = Api::<Service>::namespaced(client.clone(), &ns);
    let instances = Api::<Dhis2Instance>::namespaced(client.clone(), &ns);
    wait_for(60, "the instance's Service", || async {
        services.get_opt("hmis").await.ok()?.map(|_| ())
    })
    .await;
    let instance_uid = instances.get("hmis").await.unwrap().uid().unwrap();
    for _ in 0..5 {
        let dhis2 = services.get("hmis").await.unwrap();
        let pg = services.get("hmis-postgresql").await.unwrap();
        assert_eq!(service_port(&dhis2), 80, "Service hmis is DHIS2's");
        assert!(owned_by(
            dhis2.metadata.owner_references.as_ref(),
            &instance_uid
        ));
        assert_eq!(service_port(&pg), 5432);
        assert!(owned_by(
            pg.metadata.owner_references.as_ref(),
            &db.uid().unwrap()
        ));
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
    let conf = Api::<Secret>::namespaced(client.clone(), &ns)
        .get("hmis-dhis-conf")
        .await
        .unwrap();
    let text = String::from_utf8(conf.data.unwrap()["dhis.conf"].0.clone()).unwrap();
    assert!(
        text.contains(&format!("hmis-postgresql.{ns}.svc:5432")),
        "{text}"
    );

    // Objects with our labels but another controller's UID: reported, never taken over.
    let cm: k8s_openapi::api::core::v1::ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "someone-else"}})).unwrap();
    let cm = Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &cm)
        .await
        .unwrap();
    let foreign_owner = json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "someone-else",
        "uid": cm.uid().unwrap(), "controller": true}]);
    let our_labels = |instance: &str| {
        json!({"app.kubernetes.io/name": "dhis2", "app.kubernetes.io/instance": instance,
               "app.kubernetes.io/component": "dhis2", "app.kubernetes.io/managed-by": "dhis2-operator"})
    };
    let svc: Service = serde_json::from_value(json!({"metadata": {"name": "victim",
        "labels": our_labels("victim"), "ownerReferences": foreign_owner},
        "spec": {"ports": [{"port": 9999, "protocol": "TCP"}]}}))
    .unwrap();
    services.create(&PostParams::default(), &svc).await.unwrap();
    create_instance(
        &client,
        &ns,
        "victim",
        json!({"version": "2.41.3", "environment": "staging", "databaseRef": "hmis"}),
        None,
    )
    .await;
    let c = wait_for(60, "the conflict to be reported", || async {
        let (_, i) = phase_of(&client, &ns, "victim").await?;
        i.status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Degraded" && c.status == "True")
    })
    .await;
    assert_eq!(c.reason, "Conflict");
    assert!(c.message.contains("Service victim"), "{}", c.message);
    let svc = services.get("victim").await.unwrap();
    assert_eq!(service_port(&svc), 9999, "not overwritten");
    assert!(owned_by(
        svc.metadata.owner_references.as_ref(),
        &cm.uid().unwrap()
    ));

    // An Ingress labelled as hmis's but owned by someone else is not pruned.
    let ingresses = Api::<Ingress>::namespaced(client.clone(), &ns);
    let ing: Ingress = serde_json::from_value(json!({"metadata": {"name": "hmis-extra",
        "labels": our_labels("hmis"), "ownerReferences": foreign_owner},
        "spec": {"defaultBackend": {"service": {"name": "x", "port": {"number": 80}}}}}))
    .unwrap();
    ingresses
        .create(&PostParams::default(), &ing)
        .await
        .unwrap();
    let generation = instances
        .patch(
            "hmis",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"jvmOptions": "-Xss1m"}})),
        )
        .await
        .unwrap()
        .metadata
        .generation;
    wait_for(60, "the changed instance to be reconciled", || async {
        let i = instances.get("hmis").await.ok()?;
        (i.status?.observed_generation == generation).then_some(())
    })
    .await;
    assert!(
        ingresses.get_opt("hmis-extra").await.unwrap().is_some(),
        "another owner's Ingress is not pruned"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn dhis2_runs_unprivileged_and_dhis_conf_cannot_be_injected() {
    let client = client().await;
    let ns = namespace(&client, "op-sec").await;
    let _kubelet = FakeKubelet::start(client.clone(), &ns);
    let _operator = Operator::start(&client, &ns).await;
    create_database(&client, &ns, "pg", json!({})).await;
    create_instance(
        &client,
        &ns,
        "hmis",
        json!({"version": "2.41.3", "environment": "staging", "databaseRef": "pg",
               "dhisConf": {"system.session.timeout": "3600\nconnection.url = jdbc:postgresql://evil/db\\"}}),
        None,
    )
    .await;
    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns);
    let deployment = wait_for(90, "the DHIS2 Deployment", || async {
        deployments.get_opt("hmis").await.ok()?
    })
    .await;
    let pod = deployment.spec.template.spec.unwrap();
    let psc = pod.security_context.unwrap();
    assert_eq!(
        (psc.run_as_user, psc.run_as_group, psc.fs_group),
        (Some(65534), Some(65534), Some(65534))
    );
    assert_eq!(psc.run_as_non_root, Some(true));
    let sc = pod.containers[0].security_context.clone().unwrap();
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.capabilities.unwrap().drop, Some(vec!["ALL".to_string()]));
    let volumes = pod.volumes.unwrap();
    let mode = volumes
        .iter()
        .find(|v| v.name == "dhis-conf")
        .and_then(|v| v.secret.as_ref()?.default_mode)
        .unwrap();
    assert_eq!(mode & 0o007, 0, "dhis.conf is not world-readable: {mode:o}");
    let mounts = pod.containers[0].volume_mounts.clone().unwrap();
    for path in [
        "/usr/local/tomcat/temp",
        "/usr/local/tomcat/work",
        "/usr/local/tomcat/logs",
    ] {
        let m = mounts.iter().find(|m| m.mount_path == path).unwrap();
        assert!(
            volumes
                .iter()
                .any(|v| v.name == m.name && v.empty_dir.is_some()),
            "{path} is a writable emptyDir"
        );
    }
    let conf = Api::<Secret>::namespaced(client.clone(), &ns)
        .get("hmis-dhis-conf")
        .await
        .unwrap();
    let text = String::from_utf8(conf.data.unwrap()["dhis.conf"].0.clone()).unwrap();
    let urls: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("connection.url"))
        .collect();
    assert_eq!(
        urls,
        vec![
            format!("connection.url = jdbc:postgresql://pg-postgresql.{ns}.svc:5432/dhis2")
                .as_str()
        ],
        "{text}"
    );
    assert!(
        text.contains(
            "system.session.timeout = 3600\\nconnection.url = jdbc:postgresql://evil/db\\\\\n"
        ),
        "the value is escaped, not cut into keys:\n{text}"
    );

    // A key that would inject another is refused, naming the field.
    create_instance(
        &client,
        &ns,
        "bad",
        json!({"version": "2.41.3", "environment": "staging", "databaseRef": "pg",
               "dhisConf": {"connection.url = jdbc:postgresql://evil/db\nx": "y"}}),
        None,
    )
    .await;
    let i = wait_phase(&client, &ns, "bad", "Degraded").await;
    let c = i
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Degraded")
        .unwrap();
    assert_eq!(c.reason, "InvalidSpec");
    assert!(c.message.contains("spec.dhisConf"), "{}", c.message);
    assert!(deployments.get_opt("bad").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_operator_has_only_the_rights_its_namespaced_manifests_grant() {
    let client = client().await;
    let ns = namespace(&client, "op-rbac").await;
    let other = namespace(&client, "op-other").await;
    let secret = |name: &str| -> Secret {
        serde_json::from_value(
            json!({"metadata": {"name": name}, "stringData": {"password": "s3cret"}}),
        )
        .unwrap()
    };
    Api::<Secret>::namespaced(client.clone(), &other)
        .create(&PostParams::default(), &secret("moh-pg"))
        .await
        .unwrap();
    Api::<Secret>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &secret("mine"))
        .await
        .unwrap();
    let _kubelet = FakeKubelet::start(client.clone(), &ns);
    let dhis2 = FakeDhis2::start(Dhis2State::Up {
        version: "2.41.3".into(),
        revision: "r".into(),
    })
    .await;
    let operator = Operator::start_with(
        &client,
        &ns,
        OperatorOptions {
            allow_endpoint_override: false,
            ..Default::default()
        },
    )
    .await;
    let as_operator = client_from(&operator.kubeconfig).await;
    fn forbidden<T>(r: Result<T, kube::Error>) -> bool {
        matches!(r, Err(kube::Error::Api(e)) if e.code == 403)
    }
    assert!(
        forbidden(
            Api::<Secret>::namespaced(as_operator.clone(), &other)
                .get("moh-pg")
                .await
        ),
        "a Secret in a namespace the operator does not manage is out of reach"
    );
    assert!(
        forbidden(
            Api::<Secret>::namespaced(as_operator.clone(), &ns)
                .list(&ListParams::default())
                .await
        ),
        "Secrets are read by name, never listed"
    );
    assert!(forbidden(
        Api::<Secret>::all(as_operator.clone())
            .list(&ListParams::default())
            .await
    ));
    assert!(forbidden(
        Api::<k8s_openapi::api::core::v1::Namespace>::all(as_operator.clone())
            .list(&ListParams::default())
            .await
    ));
    Api::<Secret>::namespaced(as_operator.clone(), &ns)
        .get("mine")
        .await
        .expect("a Secret by name where it works");

    // Without --allow-endpoint-override the annotation is ignored, with a warning Event: the
    // fake DHIS2 it points at is never asked.
    create_instance(
        &client,
        &ns,
        "hmis",
        json!({"version": "2.41.3", "environment": "staging"}),
        Some(&dhis2.url),
    )
    .await;
    let note = wait_event(&client, &ns, "EndpointOverrideIgnored").await;
    assert!(note.contains("--allow-endpoint-override"), "{note}");
    // The instance is built all the same, under the operator's own rights.
    wait_for(90, "the DHIS2 Deployment", || async {
        Api::<Deployment>::namespaced(client.clone(), &ns)
            .get_opt("hmis")
            .await
            .ok()?
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let (_, i) = phase_of(&client, &ns, "hmis").await.unwrap();
    assert_eq!(
        i.status.unwrap().version,
        None,
        "the overridden endpoint was not probed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn storage_changes_are_made_on_the_claim_or_reported() {
    use k8s_openapi::api::storage::v1::StorageClass;
    let client = client().await;
    let ns = namespace(&client, "op-storage").await;
    let _kubelet = FakeKubelet::start(client.clone(), &ns);
    let _operator = Operator::start(&client, &ns).await;
    // Two StorageClasses of this test's own (cluster-scoped: deleted at the end).
    let classes = Api::<StorageClass>::all(client.clone());
    let growable = support::unique("growable");
    let fixed = support::unique("fixed");
    for (name, expand) in [(&growable, true), (&fixed, false)] {
        let sc: StorageClass = serde_json::from_value(json!({"metadata": {"name": name},
            "provisioner": "example.org/none", "allowVolumeExpansion": expand}))
        .unwrap();
        classes.create(&PostParams::default(), &sc).await.unwrap();
    }
    create_database(
        &client,
        &ns,
        "grow",
        json!({"storage": {"size": "1Gi", "storageClassName": growable}}),
    )
    .await;
    create_database(
        &client,
        &ns,
        "fixed",
        json!({"storage": {"size": "1Gi", "storageClassName": fixed}}),
    )
    .await;
    let claims = Api::<PersistentVolumeClaim>::namespaced(client.clone(), &ns);
    for db in ["grow", "fixed"] {
        wait_db_phase(&client, &ns, db, "Ready").await;
        let claim = format!("data-{db}-0");
        wait_for(30, &claim, || async {
            claims.get_opt(&claim).await.ok()?.map(|_| ())
        })
        .await;
        // Plays the volume binder (not running here): only bound claims can grow.
        claims
            .patch_status(
                &claim,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"phase": "Bound",
                    "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"]}})),
            )
            .await
            .unwrap();
    }
    let dbs = Api::<Dhis2Database>::namespaced(client.clone(), &ns);
    let request = |c: PersistentVolumeClaim| {
        c.spec.unwrap().resources.unwrap().requests.unwrap()["storage"]
            .0
            .clone()
    };

    // Where the class allows it, the claim grows.
    dbs.patch(
        "grow",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"storage": {"size": "2Gi"}}})),
    )
    .await
    .unwrap();
    wait_for(60, "data-grow-0 to ask for 2Gi", || async {
        (request(claims.get("data-grow-0").await.ok()?) == "2Gi").then_some(())
    })
    .await;
    let generation = dbs.get("grow").await.unwrap().metadata.generation;
    wait_for(60, "grow reconciled without a problem", || async {
        let s = dbs.get("grow").await.ok()?.status?;
        (s.observed_generation == generation && s.phase.as_deref() == Some("Ready")).then_some(())
    })
    .await;

    // Where it does not: Degraded with what to do, while the other changes still apply.
    dbs.patch(
        "fixed",
        &PatchParams::default(),
        &Patch::Merge(
            json!({"spec": {"storage": {"size": "2Gi"}, "parameters": {"work_mem": "32MB"}}}),
        ),
    )
    .await
    .unwrap();
    let c = wait_db_degraded(&client, &ns, "fixed", "VolumeNotExpandable").await;
    assert!(
        c.message.contains("allowVolumeExpansion") && c.message.contains("restore"),
        "{}",
        c.message
    );
    let statefulsets = Api::<StatefulSet>::namespaced(client.clone(), &ns);
    wait_for(30, "work_mem to reach the StatefulSet", || async {
        let sts = statefulsets.get("fixed").await.ok()?;
        let args = sts.spec.template.spec?.containers[0].args.clone()?;
        args.contains(&"work_mem=32MB".to_string()).then_some(())
    })
    .await;
    assert_eq!(request(claims.get("data-fixed-0").await.unwrap()), "1Gi");

    // A class cannot change in place: reported, with the way out.
    dbs.patch(
        "grow",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"storage": {"storageClassName": fixed}}})),
    )
    .await
    .unwrap();
    let c = wait_db_degraded(&client, &ns, "grow", "StorageClassChange").await;
    assert!(c.message.contains("backup"), "{}", c.message);

    for name in [&growable, &fixed] {
        let _ = classes.delete(name, &DeleteParams::default()).await;
    }
}
