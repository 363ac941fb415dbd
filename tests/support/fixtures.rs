//! The `Dhis2Instance` the cluster tests make, in one place: DHIS2 2.41.3 in production with one
//! replica, and what a test sets on top (its fake DHIS2, database, repository, environment …).

use serde_json::json;

use dhis2_operator::rules::names::ENDPOINT_OVERRIDE_ANNOTATION;

use super::cluster_objects::{ADMIN_SECRET, s3_repository};
use super::kube_env::Dhis2State;

/// The version [`Instance::new`] runs.
pub const VERSION: &str = "2.41.3";

/// DHIS2 [`VERSION`] up and answering, for a `FakeDhis2` serving an [`Instance::new`].
pub fn up() -> Dhis2State {
    Dhis2State::Up {
        version: VERSION.into(),
        revision: "a1b2c3d".into(),
    }
}

/// A `Dhis2Instance` as JSON, built up from [`Instance::new`].
#[derive(Clone, Debug)]
pub struct Instance(serde_json::Value);

impl Instance {
    /// `name`: DHIS2 [`VERSION`], production, one replica.
    pub fn new(name: &str) -> Self {
        Self(
            json!({"apiVersion": "dhis2operator.io/v1alpha1", "kind": "Dhis2Instance",
            "metadata": {"name": name},
            "spec": {"version": VERSION, "environment": "production", "replicas": 1}}),
        )
    }

    /// DHIS2 played by a fake at `url`: the operator (started with `--allow-endpoint-override`)
    /// probes it there, through the endpoint override annotation, with the admin account of
    /// [`ADMIN_SECRET`] (`adminSecretRef`).
    pub fn served_by(self, url: &str) -> Self {
        self.annotation(ENDPOINT_OVERRIDE_ANNOTATION, url)
            .spec("adminSecretRef", json!(ADMIN_SECRET))
    }

    pub fn version(self, version: &str) -> Self {
        self.spec("version", json!(version))
    }

    pub fn environment(self, environment: &str) -> Self {
        self.spec("environment", json!(environment))
    }

    pub fn replicas(self, replicas: i32) -> Self {
        self.spec("replicas", json!(replicas))
    }

    /// `spec.databaseRef`.
    pub fn database(self, database: &str) -> Self {
        self.spec("databaseRef", json!(database))
    }

    /// `spec.backup.repository`: the S3 repository in `bucket` (`cluster_objects::s3_repository`).
    pub fn repository(self, bucket: &str) -> Self {
        self.spec("backup", json!({"repository": s3_repository(bucket)}))
    }

    pub fn annotation(mut self, name: &str, value: &str) -> Self {
        self.0["metadata"]["annotations"][name] = json!(value);
        self
    }

    /// Any other field of the spec (`upgrade`, `backup` …), replacing what was there.
    pub fn spec(mut self, field: &str, value: serde_json::Value) -> Self {
        self.0["spec"][field] = value;
        self
    }

    pub fn json(self) -> serde_json::Value {
        self.0
    }
}
