//! The operator against a real kube-apiserver + controller-manager (v1.20.2): children with the
//! right specs and owners, spec changes that roll through, children that come back, deletion
//! policies, bad specs reported, DHIS2 health in status, and convergence after a crash.

mod support;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Event, PersistentVolumeClaim, Secret, Service};
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use dhis2_operator::crd::{Dhis2Database, Dhis2Instance};
use support::kube_env::*;

const ANNOTATION: &str = "dhis2operator.io/endpoint-override";

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
    let _operator = Operator::start(&ns);
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
            "connection.url = jdbc:postgresql://hmis-db.{ns}.svc:5432/dhis2"
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

    // A spec change rolls through; a deleted child comes back.
    Api::<Dhis2Instance>::namespaced(client.clone(), &ns)
        .patch(
            "hmis",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"version": "2.42.1"}})),
        )
        .await
        .unwrap();
    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns);
    wait_for(30, "the Deployment to run 2.42.1", || async {
        let d = deployments.get("hmis").await.ok()?;
        (d.spec.template.spec?.containers[0].image.as_deref() == Some("dhis2/core:2.42.1"))
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
    let _operator = Operator::start(&ns);
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
    let _operator = Operator::start(&ns);
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
    let _operator = Operator::start(&ns);
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
    let mut operator = Operator::start(&ns);
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
    let _operator = Operator::start(&ns);
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
