//! PostgreSQL connection settings: parsed once from a URL, shown without the password, and handed
//! to child processes (`pg_dump`, `pg_restore`) through the environment, never the command line.

use std::fmt;
use std::str::FromStr;

use tokio_postgres::config::Host;
use tokio_postgres::{Client, NoTls};

use crate::postgres_tls::{TLS_URL_PARAMETERS, TlsSettings};

#[derive(Debug, thiserror::Error)]
pub enum PostgresError {
    #[error(
        "{flag}: not a PostgreSQL connection URL ({reason}); expected postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE"
    )]
    BadUrl { flag: &'static str, reason: String },
    #[error(
        "{flag}: the URL names no database; add it after the host, e.g. postgresql://dhis@db.example:5432/dhis2"
    )]
    NoDatabase { flag: &'static str },
    #[error("{0}")]
    Tls(String),
    #[error("cannot connect to PostgreSQL at {target}: {reason}")]
    Connect { target: String, reason: String },
    /// Nothing listens there (yet): a server starting or restarting, a Service with no ready
    /// endpoint, or a wrong port.
    #[error("cannot connect to PostgreSQL at {target}: {reason}")]
    Refused { target: String, reason: String },
    #[error("query on {target} failed ({what}): {reason}")]
    Query {
        target: String,
        what: &'static str,
        reason: String,
    },
}

impl PostgresError {
    pub fn is_connection_refused(&self) -> bool {
        matches!(self, PostgresError::Refused { .. })
    }
}

/// The connection was refused (no listener), as the socket said.
fn refused(e: &tokio_postgres::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return io.kind() == std::io::ErrorKind::ConnectionRefused;
        }
        source = err.source();
    }
    false
}

/// Connection settings for one database. `Display` never shows the password.
#[derive(Clone)]
pub struct DatabaseTarget {
    config: tokio_postgres::Config,
    host: String,
    port: u16,
    user: String,
    dbname: String,
    password: Option<String>,
    tls: TlsSettings,
    flag: &'static str,
}

/// Splits the TLS parameters (which tokio-postgres cannot handle: it knows no `verify-full` and
/// no certificate files) off the URL's query string.
fn split_tls_parameters(url: &str) -> (String, Vec<(String, String)>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_string(), Vec::new());
    };
    let (tls, rest): (Vec<_>, Vec<_>) = url::form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .partition(|(k, _)| TLS_URL_PARAMETERS.contains(&k.as_str()));
    if rest.is_empty() {
        return (base.to_string(), tls);
    }
    let query = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(rest)
        .finish();
    (format!("{base}?{query}"), tls)
}

impl DatabaseTarget {
    /// Parses a connection URL; `flag` names the argument in error messages.
    pub fn parse(url: &str, flag: &'static str) -> Result<Self, PostgresError> {
        if !(url.starts_with("postgresql://") || url.starts_with("postgres://")) {
            return Err(PostgresError::BadUrl {
                flag,
                reason: "it must start with postgresql://".into(),
            });
        }
        let (url, tls_parameters) = split_tls_parameters(url);
        let tls = TlsSettings::from_parameters(&tls_parameters, |k| std::env::var(k).ok(), flag)
            .map_err(PostgresError::Tls)?;
        // tokio-postgres' own messages never echo the input, so the password stays out of them.
        let mut config =
            tokio_postgres::Config::from_str(&url).map_err(|e| PostgresError::BadUrl {
                flag,
                reason: e.to_string(),
            })?;
        config.ssl_mode(tls.mode.negotiation());
        // Like libpq: a URL without a password takes PGPASSWORD, which keeps the password out of
        // shell history and process listings.
        if config.get_password().is_none()
            && let Ok(password) = std::env::var("PGPASSWORD")
        {
            config.password(password);
        }
        let host = match config.get_hosts().first() {
            Some(Host::Tcp(h)) => h.clone(),
            Some(Host::Unix(p)) => p.display().to_string(),
            None => "localhost".to_string(),
        };
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let user = config.get_user().unwrap_or("postgres").to_string();
        let dbname = config
            .get_dbname()
            .map(str::to_string)
            .ok_or(PostgresError::NoDatabase { flag })?;
        let password = config
            .get_password()
            .map(|p| String::from_utf8_lossy(p).into_owned());
        Ok(Self {
            config,
            host,
            port,
            user,
            dbname,
            password,
            tls,
            flag,
        })
    }

    /// The server runs on this machine (a Unix socket or a loopback address): what it says of
    /// its data directory can be measured here.
    pub fn is_local(&self) -> bool {
        let host = self.host.trim_start_matches('[').trim_end_matches(']');
        host.is_empty()
            || host.starts_with('/')
            || host.eq_ignore_ascii_case("localhost")
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }

    pub fn dbname(&self) -> &str {
        &self.dbname
    }

    /// The same server, another database (used by the drill and the demo to create databases).
    pub fn with_dbname(&self, dbname: &str) -> Self {
        let mut other = self.clone();
        other.config.dbname(dbname);
        other.dbname = dbname.to_string();
        other
    }

    /// The same target with a password given separately (e.g. read from a Kubernetes Secret).
    pub fn with_password(&self, password: &str) -> Self {
        let mut other = self.clone();
        other.config.password(password);
        other.password = Some(password.to_string());
        other
    }

    /// Environment for libpq-based tools: keeps the password out of `ps` output and logs.
    pub fn libpq_env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("PGHOST", self.host.clone()),
            ("PGPORT", self.port.to_string()),
            ("PGUSER", self.user.clone()),
            ("PGDATABASE", self.dbname.clone()),
            ("PGCONNECT_TIMEOUT", "10".to_string()),
            ("PGAPPNAME", "dhis2ctl".to_string()),
        ];
        if let Some(p) = &self.password {
            env.push(("PGPASSWORD", p.clone()));
        }
        env.extend(self.tls.libpq_env());
        env
    }

    pub async fn connect(&self) -> Result<Client, PostgresError> {
        let connect_error = |e: tokio_postgres::Error| {
            if refused(&e) {
                return PostgresError::Refused {
                    target: self.to_string(),
                    reason: describe_pg_error(&e),
                };
            }
            let mut reason = describe_pg_error(&e);
            if reason.contains("invalid peer certificate") {
                reason.push_str(
                    " (the server's certificate is not signed by the CA in sslrootcert, or, with sslmode=verify-full, was not issued for this host name)",
                );
            }
            PostgresError::Connect {
                target: self.to_string(),
                reason,
            }
        };
        let client = match self
            .tls
            .client_config(self.flag)
            .map_err(PostgresError::Tls)?
        {
            None => {
                let (client, connection) =
                    self.config.connect(NoTls).await.map_err(connect_error)?;
                spawn_connection(connection);
                client
            }
            Some(tls) => {
                let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls);
                let (client, connection) = self.config.connect(tls).await.map_err(connect_error)?;
                spawn_connection(connection);
                client
            }
        };
        Ok(client)
    }

    pub fn query_error(&self, what: &'static str, e: tokio_postgres::Error) -> PostgresError {
        PostgresError::Query {
            target: self.to_string(),
            what,
            reason: describe_pg_error(&e),
        }
    }
}

fn spawn_connection<S, T>(connection: tokio_postgres::Connection<S, T>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "postgres connection closed");
        }
    });
}

impl fmt::Display for DatabaseTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "postgresql://{}@{}:{}/{}",
            self.user, self.host, self.port, self.dbname
        )
    }
}

impl fmt::Debug for DatabaseTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The server's own message when there is one ("password authentication failed for user …").
pub fn describe_pg_error(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return db.message().to_string();
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Quotes an SQL identifier.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_errors_never_show_the_password() {
        let t = DatabaseTarget::parse(
            "postgresql://dhis:s3cret@db.moh.gov.kh:5433/dhis2",
            "--database-url",
        )
        .expect("valid url");
        assert_eq!(t.to_string(), "postgresql://dhis@db.moh.gov.kh:5433/dhis2");
        assert!(!format!("{t:?}").contains("s3cret"));
        let env = t.libpq_env();
        assert!(env.contains(&("PGPASSWORD", "s3cret".to_string())));
        assert!(env.contains(&("PGPORT", "5433".to_string())));
    }

    #[test]
    fn bad_urls_name_the_flag() {
        let e = DatabaseTarget::parse("mysql://x@y/z", "--database-url").unwrap_err();
        assert!(e.to_string().starts_with("--database-url:"), "{e}");
        let e = DatabaseTarget::parse("postgresql://dhis:pw@host:notaport/db", "--database-url")
            .unwrap_err();
        assert!(e.to_string().contains("--database-url"), "{e}");
        assert!(!e.to_string().contains("pw@"), "{e}");
        let e = DatabaseTarget::parse("postgresql://dhis@host:5432", "--scratch-database-url")
            .unwrap_err();
        assert!(e.to_string().contains("names no database"), "{e}");
    }

    #[test]
    fn tls_parameters_are_taken_off_the_url() {
        let (url, tls) = split_tls_parameters(
            "postgresql://dhis@db/dhis2?sslmode=verify-full&application_name=x&sslrootcert=%2Fetc%2Fca.crt",
        );
        assert_eq!(url, "postgresql://dhis@db/dhis2?application_name=x");
        assert_eq!(
            tls,
            vec![
                ("sslmode".to_string(), "verify-full".to_string()),
                ("sslrootcert".to_string(), "/etc/ca.crt".to_string())
            ]
        );
        let t = DatabaseTarget::parse(
            "postgresql://dhis:pw@db/dhis2?sslmode=require",
            "--database-url",
        )
        .expect("valid url");
        assert!(
            t.libpq_env()
                .contains(&("PGSSLMODE", "require".to_string()))
        );
        let e = DatabaseTarget::parse(
            "postgresql://dhis:pw@db/dhis2?sslmode=bogus",
            "--database-url",
        )
        .unwrap_err();
        assert!(
            e.to_string().starts_with("--database-url: sslmode=bogus"),
            "{e}"
        );
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
