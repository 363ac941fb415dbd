//! The operator binary: `run` the controllers, or print the `crd`s.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "dhis2-operator",
    version,
    about = "Kubernetes operator for DHIS2"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controllers (kubeconfig or in-cluster credentials).
    Run(Box<RunArgs>),
    /// Print the CustomResourceDefinitions as YAML (kubectl apply -f -).
    Crd,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Watch only this namespace (default: all).
    #[arg(long, env = "WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// Address for /healthz, /readyz and /metrics.
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// Honour the dhis2operator.io/endpoint-override annotation (development and tests only:
    /// an operator outside the cluster reaching DHIS2). Off by default; without it the
    /// annotation is ignored with a warning Event.
    #[arg(long)]
    allow_endpoint_override: bool,
    /// Let a Dhis2Backup or Dhis2Restore name any backup repository. Off by default: they may
    /// name only the spec.backup.repository of an instance of their own namespace, so that who
    /// may create them cannot send health data to, or restore a dump from, a store of their
    /// choosing.
    #[arg(long, env = "ALLOW_ANY_REPOSITORY")]
    allow_any_repository: bool,
    /// Log format on stderr.
    #[arg(long, value_parser = ["text", "json"], default_value = "json")]
    log_format: String,
    /// Image of the backup, restore and drill Jobs: the operator's own (it carries dhis2ctl).
    #[arg(long, env = "ENGINE_IMAGE", default_value = concat!("dhis2-operator:", env!("CARGO_PKG_VERSION")))]
    engine_image: String,
    /// Run the controllers only while holding a Lease, so that two or more replicas can run
    /// and one takes over within ~15 s when the leader dies.
    #[arg(long, env = "LEADER_ELECT")]
    leader_elect: bool,
    /// Name of the leader Lease.
    #[arg(long, env = "LEASE_NAME", default_value = "dhis2-operator")]
    lease_name: String,
    /// Namespace of the leader Lease (default: the pod's own namespace).
    #[arg(long, env = "POD_NAMESPACE")]
    lease_namespace: Option<String>,
    /// This replica's name in the election (default: POD_NAME, else host name and pid).
    #[arg(long, env = "POD_NAME")]
    lease_identity: Option<String>,
    /// Reconciles each controller runs at once; more wait their turn (0: no limit).
    #[arg(long, env = "MAX_CONCURRENT_RECONCILES", default_value_t = 10)]
    max_concurrent_reconciles: u16,
    /// Read the current time from this file (RFC 3339). Tests only.
    #[arg(long, hide = true)]
    clock_file: Option<std::path::PathBuf>,
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Crd => {
            print!("{}", dhis2_operator::crd::crds_yaml());
            ExitCode::SUCCESS
        }
        Command::Run(args) => {
            let RunArgs {
                namespace,
                metrics_addr,
                allow_endpoint_override,
                allow_any_repository,
                log_format,
                engine_image,
                leader_elect,
                lease_name,
                lease_namespace,
                lease_identity,
                max_concurrent_reconciles,
                clock_file,
            } = *args;
            use dhis2_operator::operator::kit::leadership;
            let leader_election = if leader_elect {
                let Some(namespace) = leadership::lease_namespace(lease_namespace) else {
                    eprintln!(
                        "error: --leader-elect needs the Lease's namespace: set --lease-namespace (or POD_NAMESPACE from the downward API)"
                    );
                    return ExitCode::from(2);
                };
                Some(leadership::LeaderElection {
                    lease_name,
                    namespace,
                    identity: leadership::default_identity(lease_identity),
                })
            } else {
                None
            };
            let filter =
                tracing_subscriber::EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| {
                    tracing_subscriber::EnvFilter::new("info,kube=warn,aws_config=error")
                });
            let builder = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_writer(std::io::stderr);
            if log_format == "json" {
                builder.json().init();
            } else {
                builder.init();
            }
            dhis2_operator::install_crypto_provider();
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(dhis2_operator::operator::run::run(
                dhis2_operator::operator::run::RunOptions {
                    namespace,
                    metrics_addr,
                    allow_endpoint_override,
                    allow_any_repository,
                    clock_file,
                    engine_image,
                    leader_election,
                    max_concurrent_reconciles,
                },
            )) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
