//! Asks DHIS2 how it is: `GET /api/system/ping` (no authentication; `pong` when up) and
//! `GET /api/system/info` (with an account, since non-superusers get a stripped answer) for the
//! version and revision DHIS2 itself reports.

use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dhis2Health {
    /// Answered `pong`; version and revision when /api/system/info answered too.
    Up {
        version: Option<String>,
        revision: Option<String>,
        /// The HTTP status of `/api/system/info` when it gave no version (401: the account was
        /// refused or none was sent).
        info_status: Option<u16>,
    },
    /// Tomcat answers but DHIS2 is not up yet: starting, or running Flyway migrations.
    Starting { http_status: u16 },
    /// Nothing useful answered.
    Down { reason: String },
}

impl Dhis2Health {
    /// One line for `status.lastHealthCheck`.
    pub fn summary(&self) -> String {
        match self {
            Self::Up {
                version: Some(v), ..
            } => format!("pong (DHIS2 {v})"),
            Self::Up { .. } => "pong".to_string(),
            Self::Starting { http_status } => format!(
                "DHIS2 is starting (HTTP {http_status} from /api/system/ping); Flyway migrations can take long on big databases"
            ),
            Self::Down { reason } => format!("no answer from DHIS2: {reason}"),
        }
    }
}

#[derive(Debug, Deserialize)]
struct SystemInfo {
    version: Option<String>,
    revision: Option<String>,
}

/// What a ping answer means (pure).
pub fn interpret_ping(status: u16, body: &str) -> Dhis2Health {
    match status {
        200 if body.trim().trim_matches('"') == "pong" => Dhis2Health::Up {
            version: None,
            revision: None,
            info_status: None,
        },
        200 => Dhis2Health::Down {
            reason: "/api/system/ping answered without pong: is this DHIS2?".into(),
        },
        404 | 502 | 503 => Dhis2Health::Starting {
            http_status: status,
        },
        _ => Dhis2Health::Down {
            reason: format!("/api/system/ping answered HTTP {status}"),
        },
    }
}

pub async fn probe(
    http: &reqwest::Client,
    base_url: &str,
    account: Option<(&str, &str)>,
) -> Dhis2Health {
    let base = base_url.trim_end_matches('/');
    let ping = http
        .get(format!("{base}/api/system/ping"))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    let response = match ping {
        Ok(r) => r,
        Err(e) => {
            return Dhis2Health::Down {
                reason: if e.is_timeout() {
                    "timed out after 5s".to_string()
                } else if e.is_connect() {
                    format!("cannot connect to {base}")
                } else {
                    e.to_string()
                },
            };
        }
    };
    let status = response.status().as_u16();
    let body = response.text().await.unwrap_or_default();
    let health = interpret_ping(status, &body);
    if !matches!(health, Dhis2Health::Up { .. }) {
        return health;
    }
    let mut info = http
        .get(format!("{base}/api/system/info"))
        .timeout(Duration::from_secs(10));
    if let Some((user, password)) = account {
        info = info.basic_auth(user, Some(password));
    }
    let (parsed, info_status) = match info.send().await {
        Ok(r) if r.status().is_success() => {
            let status = r.status().as_u16();
            let parsed = r.json::<SystemInfo>().await.ok();
            let answered = parsed.as_ref().is_some_and(|i| i.version.is_some());
            (parsed, (!answered).then_some(status))
        }
        Ok(r) => (None, Some(r.status().as_u16())),
        Err(_) => (None, None),
    };
    Dhis2Health::Up {
        version: parsed.as_ref().and_then(|i| i.version.clone()),
        revision: parsed.and_then(|i| i.revision),
        info_status,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_answers() {
        assert!(matches!(
            interpret_ping(200, "pong"),
            Dhis2Health::Up { .. }
        ));
        assert!(matches!(
            interpret_ping(200, "\"pong\""),
            Dhis2Health::Up { .. }
        ));
        assert_eq!(
            interpret_ping(503, ""),
            Dhis2Health::Starting { http_status: 503 }
        );
        assert!(matches!(
            interpret_ping(200, "<html>"),
            Dhis2Health::Down { .. }
        ));
        assert!(matches!(interpret_ping(500, ""), Dhis2Health::Down { .. }));
    }
}
