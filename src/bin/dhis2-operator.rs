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
    Run {
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
        /// Log format on stderr.
        #[arg(long, value_parser = ["text", "json"], default_value = "json")]
        log_format: String,
        /// Image of the backup, restore and drill Jobs: the operator's own (it carries dhis2ctl).
        #[arg(long, env = "ENGINE_IMAGE", default_value = concat!("dhis2-operator:", env!("CARGO_PKG_VERSION")))]
        engine_image: String,
        /// Read the current time from this file (RFC 3339). Tests only.
        #[arg(long, hide = true)]
        clock_file: Option<std::path::PathBuf>,
    },
    /// Print the CustomResourceDefinitions as YAML (kubectl apply -f -).
    Crd,
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Crd => {
            print!("{}", dhis2_operator::crd::crds_yaml());
            ExitCode::SUCCESS
        }
        Command::Run {
            namespace,
            metrics_addr,
            allow_endpoint_override,
            log_format,
            engine_image,
            clock_file,
        } => {
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
                    clock_file,
                    engine_image,
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
