//! One namespace as the cluster tests set it up: the real operator (under its namespaced Role)
//! watching it, FakeKubelet playing DHIS2's pods, the Job harness (`JobKubelet`) running the
//! engine's Jobs against the test PostgreSQL and SeaweedFS (the cluster's S3 name mapped to it),
//! the S3 credentials and DHIS2 admin Secrets, and a fresh bucket for the repository.
//!
//! A test file keeps only what is its own: a struct holding `world: World` beside its extra
//! fields (dereferencing to the `World`), or methods in an `impl World` block of its own.

use kube::api::{Api, Patch, PatchParams};
use kube::{Client, Resource};
use serde_json::json;

use dhis2_operator::crd::Dhis2Instance;
use dhis2_operator::rules::names::ENDPOINT_OVERRIDE_ANNOTATION;

use super::Env;
use super::cluster_objects::{
    S3_SERVICE, admin_secret, create, external_database, s3_credentials,
    set_external_database_password,
};
use super::fixtures::Instance;
use super::job_kubelet::JobKubelet;
use super::kube_env::{
    FakeKubelet, Operator, OperatorOptions, TestClock, client, event_messages, list_all, namespace,
    wait_for,
};

/// What [`World::builder`] starts.
pub struct WorldBuilder {
    prefix: String,
    clock: Option<TestClock>,
    bare: bool,
}

impl WorldBuilder {
    /// The operator reads "now" from `clock` (`--clock-file`); the test moves it.
    pub fn clock(mut self, clock: TestClock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Only the namespace, the operator and the Job harness: no FakeKubelet (DHIS2's pods never
    /// become ready), no Secrets and no bucket.
    pub fn bare(mut self) -> Self {
        self.bare = true;
        self
    }

    pub async fn start(self) -> World {
        let env = super::env();
        let client = client().await;
        let ns = namespace(&client, &self.prefix).await;
        let kubelet = (!self.bare).then(|| FakeKubelet::start(client.clone(), &ns));
        let jobs = JobKubelet::start(client.clone(), &ns);
        jobs.map_host(S3_SERVICE, env.s3_endpoint.trim_start_matches("http://"));
        let options = OperatorOptions {
            clock_file: self.clock.as_ref().map(|c| c.path.clone()),
            ..Default::default()
        };
        let operator = Operator::start_with(&client, &ns, options).await;
        let mut bucket = None;
        if !self.bare {
            s3_credentials(&env, &client, &ns).await;
            admin_secret(&client, &ns).await;
            bucket = Some(env.create_bucket(&self.prefix).await.0);
        }
        World {
            env,
            client,
            ns,
            operator,
            jobs,
            clock: self.clock,
            bucket,
            _kubelet: kubelet,
        }
    }
}

pub struct World {
    pub env: Env,
    pub client: Client,
    pub ns: String,
    pub operator: Operator,
    pub jobs: JobKubelet,
    clock: Option<TestClock>,
    bucket: Option<String>,
    _kubelet: Option<FakeKubelet>,
}

impl World {
    /// A namespace named after `prefix`, with everything the module docs list.
    pub async fn start(prefix: &str) -> World {
        Self::builder(prefix).start().await
    }

    pub fn builder(prefix: &str) -> WorldBuilder {
        WorldBuilder {
            prefix: prefix.to_string(),
            clock: None,
            bare: false,
        }
    }

    /// The operator's clock (a world started with [`WorldBuilder::clock`]).
    pub fn clock(&self) -> &TestClock {
        self.clock
            .as_ref()
            .expect("this World's operator has no clock file")
    }

    /// The bucket of the repository (not in a [`WorldBuilder::bare`] world).
    pub fn bucket(&self) -> &str {
        self.bucket.as_deref().expect("a bare World has no bucket")
    }

    /// The repository in [`World::bucket`], as `dhis2ctl --repo` names it.
    pub fn repo(&self) -> String {
        format!("s3://{}/dhis2", self.bucket())
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    pub fn instances(&self) -> Api<Dhis2Instance> {
        self.api()
    }

    pub fn restores(&self) -> Api<dhis2_operator::crd::Dhis2Restore> {
        self.api()
    }

    /// Every object of a kind in the namespace.
    pub async fn list<K>(&self) -> Vec<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
        K::DynamicType: Default,
    {
        list_all(&self.client, &self.ns).await
    }

    /// Creates a namespaced object from its JSON; the object as stored.
    pub async fn create<K>(&self, value: serde_json::Value) -> K
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + serde::Serialize
            + std::fmt::Debug,
        K::DynamicType: Default,
    {
        create(&self.client, &self.ns, value).await
    }

    pub async fn create_instance(&self, instance: Instance) -> Dhis2Instance {
        self.create(instance.json()).await
    }

    /// The operator reaches the DHIS2 of instance `name` at `url` (there is no cluster network
    /// here): the endpoint override annotation, set on an instance made by someone else.
    pub async fn reach_dhis2_at(&self, name: &str, url: &str) {
        self.instances()
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(
                    json!({"metadata": {"annotations": {ENDPOINT_OVERRIDE_ANNOTATION: url}}}),
                ),
            )
            .await
            .unwrap_or_else(|e| panic!("endpoint override on {name}: {e}"));
    }

    /// An external `Dhis2Database` `name` for `database` on the test PostgreSQL (its connection
    /// Secret `<name>-pg`).
    pub async fn external_database(&self, name: &str, database: &str) {
        external_database(&self.env, &self.client, &self.ns, name, database).await;
    }

    /// Changes the password of the external `Dhis2Database` `name`.
    pub async fn set_pg_password(&self, name: &str, password: &str) {
        set_external_database_password(&self.client, &self.ns, name, password).await;
    }

    /// Waits until the instance reports phase Ready; the instance then.
    pub async fn ready(&self, name: &str) -> Dhis2Instance {
        let instances = self.instances();
        wait_for(90, &format!("{name} Ready"), || async {
            let i = instances.get(name).await.ok()?;
            (i.status.as_ref()?.phase.as_deref() == Some("Ready")).then_some(i)
        })
        .await
    }

    /// The replicas DHIS2's Deployment `name` asks for (None: no Deployment).
    pub async fn deployment_replicas(&self, name: &str) -> Option<i32> {
        self.api::<k8s_openapi::api::apps::v1::Deployment>()
            .get_opt(name)
            .await
            .unwrap()
            .and_then(|d| d.spec.replicas)
    }

    /// The messages of the namespace's Events with this reason.
    pub async fn events(&self, reason: &str) -> Vec<String> {
        event_messages(&self.client, &self.ns, reason).await
    }
}
