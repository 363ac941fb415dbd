//! `dhis2ctl get` and `dhis2ctl status`: what the operator reports, read from the cluster the way
//! kubectl reads it (kubeconfig, `--context`, `-n`, `-A`).

use std::process::ExitCode;

use clap::{Args, ValueEnum};
use k8s_openapi::api::core::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::ResourceExt;
use kube::api::{Api, ListParams};

use crate::crd::{Dhis2Database, Dhis2Instance};
use crate::output::{OutputFormat, render_structured, render_table};

use super::kube_access::{ClusterError, KubeArgs, age, api_error, connect};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum GetKind {
    #[value(alias = "instance", alias = "d2", alias = "dhis2instances")]
    Instances,
    #[value(alias = "database", alias = "d2db", alias = "dhis2databases")]
    Databases,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    pub kind: GetKind,
    #[command(flatten)]
    pub kube: KubeArgs,
    /// All namespaces.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The Dhis2Instance.
    pub instance: String,
    #[command(flatten)]
    pub kube: KubeArgs,
}

fn condition_status(conditions: &[Condition], kind: &str) -> String {
    conditions
        .iter()
        .find(|c| c.type_ == kind)
        .map(|c| c.status.clone())
        .unwrap_or_else(|| "-".into())
}

pub async fn get(args: GetArgs, output: OutputFormat) -> Result<ExitCode, ClusterError> {
    let (client, namespace) = connect(&args.kube).await?;
    let all = args.all_namespaces;
    let mut headers: Vec<&str> = if all { vec!["namespace"] } else { vec![] };
    let text = match args.kind {
        GetKind::Instances => {
            let api: Api<Dhis2Instance> = if all {
                Api::all(client)
            } else {
                Api::namespaced(client, &namespace)
            };
            let items = api
                .list(&ListParams::default())
                .await
                .map_err(api_error)?
                .items;
            if let Some(s) = render_structured(output, &items) {
                s
            } else {
                headers.extend(["name", "phase", "version", "ready", "environment", "age"]);
                if output == OutputFormat::Wide {
                    headers.extend(["replicas", "database", "endpoint"]);
                }
                let rows = items
                    .iter()
                    .map(|i| {
                        let st = i.status.clone().unwrap_or_default();
                        let mut row = if all {
                            vec![i.namespace().unwrap_or_default()]
                        } else {
                            vec![]
                        };
                        row.extend([
                            i.name_any(),
                            st.phase.clone().unwrap_or_default(),
                            st.version
                                .clone()
                                .unwrap_or_else(|| format!("({})", i.spec.version)),
                            condition_status(&st.conditions, "Ready"),
                            format!("{:?}", i.spec.environment).to_lowercase(),
                            age(i.metadata.creation_timestamp.as_ref()),
                        ]);
                        if output == OutputFormat::Wide {
                            row.extend([
                                format!("{}/{}", st.ready_replicas.unwrap_or(0), i.spec.replicas),
                                i.spec
                                    .database_ref
                                    .clone()
                                    .unwrap_or_else(|| format!("{}-db", i.name_any())),
                                st.endpoint.clone().unwrap_or_default(),
                            ]);
                        }
                        row
                    })
                    .collect();
                empty_or_table(&headers, rows, &namespace, all)
            }
        }
        GetKind::Databases => {
            let api: Api<Dhis2Database> = if all {
                Api::all(client)
            } else {
                Api::namespaced(client, &namespace)
            };
            let items = api
                .list(&ListParams::default())
                .await
                .map_err(api_error)?
                .items;
            if let Some(s) = render_structured(output, &items) {
                s
            } else {
                headers.extend(["name", "provider", "phase", "version", "ready", "age"]);
                if output == OutputFormat::Wide {
                    headers.extend(["endpoint", "deletion"]);
                }
                let rows = items
                    .iter()
                    .map(|d| {
                        let st = d.status.clone().unwrap_or_default();
                        let mut row = if all {
                            vec![d.namespace().unwrap_or_default()]
                        } else {
                            vec![]
                        };
                        row.extend([
                            d.name_any(),
                            format!("{:?}", d.spec.provider).to_lowercase(),
                            st.phase.clone().unwrap_or_default(),
                            st.server_version.clone().unwrap_or_default(),
                            condition_status(&st.conditions, "Ready"),
                            age(d.metadata.creation_timestamp.as_ref()),
                        ]);
                        if output == OutputFormat::Wide {
                            row.extend([
                                st.endpoint.clone().unwrap_or_default(),
                                format!("{:?}", d.spec.deletion_policy),
                            ]);
                        }
                        row
                    })
                    .collect();
                empty_or_table(&headers, rows, &namespace, all)
            }
        }
    };
    super::print_stdout(&text);
    Ok(ExitCode::SUCCESS)
}

fn empty_or_table(headers: &[&str], rows: Vec<Vec<String>>, namespace: &str, all: bool) -> String {
    if rows.is_empty() {
        if all {
            "No resources found".to_string()
        } else {
            format!("No resources found in {namespace} namespace.")
        }
    } else {
        render_table(headers, rows)
    }
}

pub async fn status(args: StatusArgs, output: OutputFormat) -> Result<ExitCode, ClusterError> {
    let (client, namespace) = connect(&args.kube).await?;
    let instances: Api<Dhis2Instance> = Api::namespaced(client.clone(), &namespace);
    let instance = instances
        .get_opt(&args.instance)
        .await
        .map_err(api_error)?
        .ok_or_else(|| ClusterError::NotFound {
            name: args.instance.clone(),
            namespace: namespace.clone(),
        })?;
    let events: Api<Event> = Api::namespaced(client.clone(), &namespace);
    let mut recent: Vec<Event> = events
        .list(&ListParams::default().fields(&format!("involvedObject.name={}", args.instance)))
        .await
        .map_err(api_error)?
        .items;
    recent.sort_by_key(|e| {
        e.event_time
            .as_ref()
            .map(|t| t.0.as_second())
            .or(e.last_timestamp.as_ref().map(|t| t.0.as_second()))
    });
    let recent: Vec<Event> = recent.into_iter().rev().take(5).collect();
    let db_name = instance
        .spec
        .database_ref
        .clone()
        .unwrap_or_else(|| format!("{}-db", args.instance));
    let database = Api::<Dhis2Database>::namespaced(client, &namespace)
        .get_opt(&db_name)
        .await
        .map_err(api_error)?;
    if output.is_machine() {
        let report = serde_json::json!({
            "instance": instance,
            "database": database,
            "events": recent,
        });
        super::print_stdout(&render_structured(output, &report).unwrap_or_default());
        return Ok(ExitCode::SUCCESS);
    }
    let st = instance.status.clone().unwrap_or_default();
    let db_status = database
        .as_ref()
        .and_then(|d| d.status.clone())
        .unwrap_or_default();
    let mut text = format!(
        "Instance:     {}/{} ({:?})\nPhase:        {}\nVersion:      {} (spec {})\nReplicas:     {}/{} ready\nEndpoint:     {}\nHealth:       {}\nDatabase:     {} — {} {}\n",
        namespace,
        args.instance,
        instance.spec.environment,
        st.phase.clone().unwrap_or_else(|| "-".into()),
        st.version.clone().unwrap_or_else(|| "-".into()),
        instance.spec.version,
        st.ready_replicas.unwrap_or(0),
        instance.spec.replicas,
        st.endpoint.clone().unwrap_or_else(|| "-".into()),
        st.last_health_check.clone().unwrap_or_else(|| "-".into()),
        db_name,
        db_status
            .phase
            .clone()
            .unwrap_or_else(|| if database.is_some() {
                "-".into()
            } else {
                "not found".into()
            }),
        db_status.server_version.clone().unwrap_or_default(),
    );
    let backups = super::backup_freshness::backup_lines(
        &st.backup.clone().unwrap_or_default(),
        chrono::Utc::now(),
    );
    text.push_str(&backups);
    text.push_str(&super::upgrade_history::status_lines(&st));
    text.push('\n');
    text.push_str("Conditions:\n");
    text.push_str(&render_table(
        &["type", "status", "reason", "message"],
        st.conditions
            .iter()
            .map(|c| {
                vec![
                    c.type_.clone(),
                    c.status.clone(),
                    c.reason.clone(),
                    c.message.clone(),
                ]
            })
            .collect(),
    ));
    text.push_str("\n\nRecent events:\n");
    if recent.is_empty() {
        text.push_str("  none");
    } else {
        text.push_str(&render_table(
            &["type", "reason", "message"],
            recent
                .iter()
                .map(|e| {
                    vec![
                        e.type_.clone().unwrap_or_default(),
                        e.reason.clone().unwrap_or_default(),
                        e.message.clone().unwrap_or_default(),
                    ]
                })
                .collect(),
        ));
    }
    super::print_stdout(&text);
    Ok(ExitCode::SUCCESS)
}
