//! How `dhis2ctl` reaches a cluster the way kubectl does (kubeconfig, `--context`, `-n`), and the
//! errors of commands that talk to one.

use clap::Args;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use crate::output::human_duration;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(
        "cannot load the Kubernetes configuration ({0}); name it with --kubeconfig FILE (or KUBECONFIG) and --context"
    )]
    Config(String),
    #[error("Kubernetes API: {0}")]
    Api(String),
    #[error(
        "Dhis2Instance {name} not found in namespace {namespace}; `dhis2ctl get instances -A` lists them all"
    )]
    NotFound { name: String, namespace: String },
    /// The command line asks for what the operator would refuse; nothing was created.
    #[error("{0}")]
    Refused(String),
    /// The instance's state does not allow it now (an upgrade in progress); nothing was changed.
    #[error("{0}")]
    NotNow(String),
}

#[derive(Debug, Clone, Args)]
pub struct KubeArgs {
    /// Namespace (default: the kubeconfig context's).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// kubeconfig context to use.
    #[arg(long)]
    pub context: Option<String>,
    /// kubeconfig file to use (default: KUBECONFIG, then ~/.kube/config, then the pod's
    /// service account).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<std::path::PathBuf>,
}

pub(super) async fn connect(args: &KubeArgs) -> Result<(Client, String), ClusterError> {
    let options = KubeConfigOptions {
        context: args.context.clone(),
        ..Default::default()
    };
    let read = match &args.kubeconfig {
        // A file named on the command line is the one to use: no fallback to another cluster.
        Some(path) => Ok(Kubeconfig::read_from(path)
            .map_err(|e| ClusterError::Config(format!("--kubeconfig {}: {e}", path.display())))?),
        None => Kubeconfig::read(),
    };
    let config = match read {
        Ok(kubeconfig) => Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .map_err(|e| ClusterError::Config(e.to_string()))?,
        Err(_) if args.context.is_none() => Config::infer()
            .await
            .map_err(|e| ClusterError::Config(e.to_string()))?,
        Err(e) => return Err(ClusterError::Config(e.to_string())),
    };
    let namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = Client::try_from(config).map_err(|e| ClusterError::Config(e.to_string()))?;
    Ok((client, namespace))
}

pub(super) fn age(t: Option<&Time>) -> String {
    t.map(|t| human_duration(k8s_openapi::jiff::Timestamp::now().as_second() - t.0.as_second()))
        .unwrap_or_else(|| "-".into())
}

pub(super) fn api_error(e: kube::Error) -> ClusterError {
    ClusterError::Api(e.to_string())
}
