//! The objects the cluster tests set up the same way: an external `Dhis2Database` on the test
//! PostgreSQL, the S3 credentials Secret and an S3 repository on the test SeaweedFS, named as
//! a cluster would name it (the Job harness maps the name to the real endpoint).

use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, PostParams};
use serde_json::json;

use super::Env;

/// The S3 endpoint's host as the cluster would name it; `JobKubelet::map_host` maps it to the
/// test SeaweedFS.
pub const S3_SERVICE: &str = "seaweedfs.storage.svc";

/// The Secret holding the repository's S3 keys.
pub const S3_CREDENTIALS: &str = "backup-s3";

/// The Secret holding the fake DHIS2's admin account (`spec.adminSecretRef`).
pub const ADMIN_SECRET: &str = "dhis2-admin";

/// Creates a namespaced object from its JSON; the object as stored.
pub async fn create<K>(client: &Client, ns: &str, value: serde_json::Value) -> K
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let obj: K = serde_json::from_value(value).expect("object");
    Api::<K>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &obj)
        .await
        .unwrap_or_else(|e| panic!("create {}: {e}", K::kind(&Default::default())))
}

/// An external `Dhis2Database` named `name` for database `database` on the test PostgreSQL; its
/// connection Secret is `<name>-pg`.
pub async fn external_database(env: &Env, client: &Client, ns: &str, name: &str, database: &str) {
    let rest = env.pg_url.trim_start_matches("postgresql://");
    let (userinfo, hostpart) = rest.split_once('@').unwrap();
    let (user, password) = userinfo.split_once(':').unwrap();
    let (host, port) = hostpart.split_once('/').unwrap().0.split_once(':').unwrap();
    create::<Secret>(
        client,
        ns,
        json!({"metadata": {"name": format!("{name}-pg")},
            "stringData": {"host": host, "port": port, "database": database, "username": user, "password": password}}),
    )
    .await;
    create::<dhis2_operator::crd::Dhis2Database>(
        client,
        ns,
        json!({"apiVersion": "dhis2operator.io/v1alpha1", "kind": "Dhis2Database",
            "metadata": {"name": name},
            "spec": {"provider": "external", "externalSecretRef": format!("{name}-pg")}}),
    )
    .await;
}

/// Changes the password in the connection Secret of the external `Dhis2Database` `name` (a wrong
/// one makes the next engine Job fail to connect; the right one mends it).
pub async fn set_external_database_password(client: &Client, ns: &str, name: &str, password: &str) {
    Api::<Secret>::namespaced(client.clone(), ns)
        .patch(
            &format!("{name}-pg"),
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"stringData": {"password": password}})),
        )
        .await
        .unwrap();
}

/// The `S3_CREDENTIALS` Secret with the test environment's keys.
pub async fn s3_credentials(env: &Env, client: &Client, ns: &str) {
    create::<Secret>(
        client,
        ns,
        json!({"metadata": {"name": S3_CREDENTIALS},
            "stringData": {"accessKey": env.access_key, "secretKey": env.secret_key}}),
    )
    .await;
}

/// A repository (`spec.backup.repository`) in `bucket` under the prefix `dhis2`.
pub fn s3_repository(bucket: &str) -> serde_json::Value {
    json!({"s3": {
        "bucket": bucket, "prefix": "dhis2", "endpoint": format!("http://{S3_SERVICE}:8333"),
        "pathStyle": true, "credentialsSecretRef": S3_CREDENTIALS
    }})
}

/// The `ADMIN_SECRET` Secret with the fake DHIS2's admin account (`adminSecretRef`).
pub async fn admin_secret(client: &Client, ns: &str) {
    let (username, password) = super::kube_env::ADMIN;
    create::<Secret>(
        client,
        ns,
        json!({"metadata": {"name": ADMIN_SECRET},
            "stringData": {"username": username, "password": password}}),
    )
    .await;
}
