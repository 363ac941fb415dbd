//! Asks DHIS2 to regenerate its analytics tables after a restore: they are not in the backup
//! (and UNLOGGED since 2.41), so dashboards stay empty until they are rebuilt.
//! `POST /api/resourceTables/analytics` with an account allowed to run maintenance; DHIS2 starts
//! the job and answers at once with a web message naming it.

use std::time::Duration;

use serde::Deserialize;

use crate::crd::dhis2_instance::Dhis2Instance;

use crate::rules::names::ENDPOINT_OVERRIDE_ANNOTATION;

/// Where the operator reaches an instance's DHIS2: its Service, or the endpoint-override
/// annotation when the operator was started to honour it (development and tests).
pub fn dhis2_base_url(instance: &Dhis2Instance, allow_endpoint_override: bool) -> String {
    let name = instance.metadata.name.clone().unwrap_or_default();
    let ns = instance
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    instance
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ENDPOINT_OVERRIDE_ANNOTATION))
        .filter(|_| allow_endpoint_override)
        .cloned()
        .unwrap_or_else(|| format!("http://{name}.{ns}.svc"))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WebMessage {
    message: Option<String>,
    response: Option<JobResponse>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct JobResponse {
    id: Option<String>,
    job_type: Option<String>,
}

/// What DHIS2's answer means (pure): `Ok` with what DHIS2 started (its web message), or why the
/// request was not accepted, in words an administrator can act on.
pub fn interpret_analytics_answer(status: u16, body: &str) -> Result<String, String> {
    let message: Option<WebMessage> = serde_json::from_str(body).ok();
    let text = message
        .as_ref()
        .and_then(|m| m.message.clone())
        .unwrap_or_default();
    match status {
        200..=299 => {
            let job = message.as_ref().and_then(|m| m.response.as_ref());
            let mut said = if text.is_empty() {
                "analytics table generation started".to_string()
            } else {
                text
            };
            if let Some(JobResponse {
                id: Some(id),
                job_type: Some(kind),
            }) = job
            {
                said.push_str(&format!(" (job {kind} {id})"));
            }
            Ok(said)
        }
        // One is running already (e.g. asked twice after an operator restart): that one
        // regenerates the tables.
        409 => Ok(if text.is_empty() {
            "an analytics job is running already".to_string()
        } else {
            text
        }),
        401 => Err(
            "DHIS2 refused the account of spec.adminSecretRef (HTTP 401): check its username and password"
                .into(),
        ),
        403 => Err(
            "the account of spec.adminSecretRef may not run analytics (HTTP 403): give it the authority F_PERFORM_MAINTENANCE"
                .into(),
        ),
        _ if text.is_empty() => Err(format!(
            "DHIS2 answered HTTP {status} to POST /api/resourceTables/analytics"
        )),
        _ => Err(format!("DHIS2 answered HTTP {status}: {text}")),
    }
}

/// Asks DHIS2 at `base_url` to regenerate analytics tables with `account`.
pub async fn request_analytics(
    http: &reqwest::Client,
    base_url: &str,
    account: (&str, &str),
) -> Result<String, String> {
    let url = format!(
        "{}/api/resourceTables/analytics",
        base_url.trim_end_matches('/')
    );
    let answer = http
        .post(&url)
        .basic_auth(account.0, Some(account.1))
        .header("Accept", "application/json")
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .map_err(|e| {
            if e.is_timeout() {
                "DHIS2 did not answer POST /api/resourceTables/analytics within 30s".to_string()
            } else {
                format!("cannot reach DHIS2 at {base_url}: {e}")
            }
        })?;
    let status = answer.status().as_u16();
    let body = answer.text().await.unwrap_or_default();
    interpret_analytics_answer(status, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dhis2s_web_message_names_the_job_it_started() {
        let body = r#"{"httpStatus":"OK","httpStatusCode":200,"status":"OK","message":"Initiated inMemoryAnalyticsJob",
            "response":{"responseType":"JobConfigurationWebMessageResponse","name":"inMemoryAnalyticsJob",
            "id":"dTCOgCXRIgS","jobType":"ANALYTICS_TABLE","jobStatus":"SCHEDULED",
            "relativeNotifierEndpoint":"/api/system/tasks/ANALYTICS_TABLE/dTCOgCXRIgS"}}"#;
        assert_eq!(
            interpret_analytics_answer(200, body).unwrap(),
            "Initiated inMemoryAnalyticsJob (job ANALYTICS_TABLE dTCOgCXRIgS)"
        );
    }

    #[test]
    fn a_running_job_counts_and_refusals_say_what_to_fix() {
        let busy = r#"{"httpStatus":"Conflict","httpStatusCode":409,"status":"ERROR","message":"Job of type ANALYTICS_TABLE is already running"}"#;
        assert!(interpret_analytics_answer(409, busy).is_ok());
        assert!(
            interpret_analytics_answer(401, "")
                .unwrap_err()
                .contains("spec.adminSecretRef")
        );
        assert!(
            interpret_analytics_answer(403, "")
                .unwrap_err()
                .contains("F_PERFORM_MAINTENANCE")
        );
        assert!(
            interpret_analytics_answer(503, "")
                .unwrap_err()
                .contains("HTTP 503")
        );
    }

    #[test]
    fn the_override_is_used_only_when_the_operator_allows_it() {
        let mut i = Dhis2Instance::new(
            "hmis",
            serde_json::from_value(
                serde_json::json!({"version": "2.41.3", "environment": "staging"}),
            )
            .unwrap(),
        );
        i.metadata.namespace = Some("moh".into());
        i.metadata.annotations = Some(
            [(
                ENDPOINT_OVERRIDE_ANNOTATION.to_string(),
                "http://127.0.0.1:8080".to_string(),
            )]
            .into(),
        );
        assert_eq!(dhis2_base_url(&i, false), "http://hmis.moh.svc");
        assert_eq!(dhis2_base_url(&i, true), "http://127.0.0.1:8080");
    }
}
