//! Errors of the operator's reconcile loops, one variant per failing step.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {what}: {source}")]
    Kube {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error(
        "{kind} {name} exists and is not managed by dhis2-operator for this resource (its controller owner reference is not this resource's UID); rename or delete it, the operator will not overwrite it"
    )]
    Conflict { kind: String, name: String },
    /// A step of an upgrade that failed and is retried (e.g. the database did not answer).
    #[error("upgrade: {0}")]
    Upgrade(String),
}

impl Error {
    pub fn kube(what: impl Into<String>, source: kube::Error) -> Self {
        Self::Kube {
            what: what.into(),
            source,
        }
    }

    /// A short label for the error metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Kube { .. } => "kube",
            Self::Conflict { .. } => "conflict",
            Self::Upgrade(_) => "upgrade",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
