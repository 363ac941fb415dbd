//! Renders `dhis.conf` for an instance (pure). The operator's keys — connection, base URL, file
//! store, cluster — win over extra keys from the spec, so a typo in `spec.dhisConf` cannot point
//! DHIS2 at another database.
//!
//! DHIS2 reads dhis.conf with `java.util.Properties.load`: a newline in a value would start a
//! new key, a trailing `\` would swallow the next line, `\` escapes vanish, leading blanks are
//! dropped and bytes are read as ISO-8859-1. Every value is therefore escaped the way
//! `Properties.store` does, so what DHIS2 reads is exactly what was given; keys from the spec are
//! restricted to DHIS2's own key alphabet (checked in `validate`, see [`is_valid_key`]).

use std::collections::BTreeMap;

use crate::crd::dhis2_instance::Dhis2InstanceSpec;
use crate::operator::database::connection_settings::DatabaseConnection;

/// Secret values the file store and Redis need, read from their Secrets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterSecrets {
    pub s3_access_key: Option<String>,
    pub s3_secret_key: Option<String>,
    pub redis_password: Option<String>,
}

pub fn render_dhis_conf(
    spec: &Dhis2InstanceSpec,
    db: &DatabaseConnection,
    secrets: &ClusterSecrets,
) -> String {
    let mut keys: BTreeMap<String, String> = spec.dhis_conf.clone();
    let mut set = |k: &str, v: String| {
        keys.insert(k.to_string(), v);
    };
    set(
        "connection.url",
        format!("jdbc:postgresql://{}:{}/{}", db.host, db.port, db.database),
    );
    set("connection.username", db.username.clone());
    set("connection.password", db.password.clone());
    if let Some(host) = &spec.hostname {
        let scheme = if spec
            .ingress
            .as_ref()
            .and_then(|i| i.tls_secret_name.as_ref())
            .is_some()
        {
            "https"
        } else {
            "http"
        };
        set("server.base.url", format!("{scheme}://{host}"));
    }
    match spec.file_store.as_ref().and_then(|f| f.s3.as_ref()) {
        Some(s3) => {
            set(
                "filestore.provider",
                if s3.endpoint.is_some() {
                    "s3"
                } else {
                    "aws-s3"
                }
                .into(),
            );
            set("filestore.container", s3.bucket.clone());
            if let Some(e) = &s3.endpoint {
                set("filestore.endpoint", e.clone());
            }
            if let Some(r) = &s3.region {
                set("filestore.location", r.clone());
            }
            if let Some(a) = &secrets.s3_access_key {
                set("filestore.identity", a.clone());
            }
            if let Some(s) = &secrets.s3_secret_key {
                set("filestore.secret", s.clone());
            }
        }
        None => set("filestore.provider", "filesystem".into()),
    }
    if let Some(redis) = &spec.redis {
        set("redis.enabled", "on".into());
        set("redis.host", redis.host.clone());
        set("redis.port", redis.port.to_string());
        set(
            "redis.use.ssl",
            if redis.ssl { "true" } else { "false" }.into(),
        );
        if let Some(p) = &secrets.redis_password {
            set("redis.password", p.clone());
        }
    }
    // Metrics for /api/metrics unless the spec says otherwise.
    for key in [
        "monitoring.api.enabled",
        "monitoring.jvm.enabled",
        "monitoring.dbpool.enabled",
        "monitoring.uptime.enabled",
    ] {
        keys.entry(key.to_string())
            .or_insert_with(|| "on".to_string());
    }
    let mut out =
        String::from("# Rendered by dhis2-operator; edit the Dhis2Instance, not this file.\n");
    for (k, v) in keys {
        // Keys from the spec were validated; a bad one never reaches here, but never write one.
        if is_valid_key(&k) {
            out.push_str(&format!("{k} = {}\n", escape_value(&v)));
        }
    }
    out
}

/// A dhis.conf key as DHIS2 names them (`connection.url`, `oidc.provider.google.client_id`):
/// ASCII letters, digits, `.`, `_`, `-`. Anything else (`=`, `:`, blanks, `\`, `#`, `!`,
/// control characters) would change how `Properties.load` splits the line.
pub fn is_valid_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// A value escaped for `Properties.load`, as `Properties.store` writes it: `\\`, `\n`, `\r`,
/// `\t`, `\f`, a leading blank as `\ `, and everything outside printable ASCII as `\uXXXX`.
pub fn escape_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for (i, c) in value.chars().enumerate() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{0c}' => out.push_str("\\f"),
            ' ' if i == 0 => out.push_str("\\ "),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04X}"));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::dhis2_instance::{FileStore, RedisSpec, S3FileStore};

    fn spec(yaml: &str) -> Dhis2InstanceSpec {
        serde_saphyr::from_str(yaml).expect("fixture")
    }

    fn db() -> DatabaseConnection {
        DatabaseConnection {
            host: "hmis-db".into(),
            port: "5432".into(),
            database: "dhis2".into(),
            username: "dhis".into(),
            password: "pw".into(),
        }
    }

    #[test]
    fn operator_keys_win_over_extra_keys() {
        let s = spec(
            "version: '2.41.3'\nenvironment: production\nhostname: hmis.moh.gov.kh\ndhisConf:\n  connection.url: jdbc:postgresql://evil/db\n  system.session.timeout: '3600'\n",
        );
        let conf = render_dhis_conf(&s, &db(), &ClusterSecrets::default());
        assert!(
            conf.contains("connection.url = jdbc:postgresql://hmis-db:5432/dhis2\n"),
            "{conf}"
        );
        assert!(!conf.contains("evil"));
        assert!(conf.contains("system.session.timeout = 3600\n"));
        assert!(conf.contains("server.base.url = http://hmis.moh.gov.kh\n"));
        assert!(conf.contains("filestore.provider = filesystem\n"));
    }

    /// A reader of the rendered file as `java.util.Properties.load` reads it (the subset we
    /// write: one `key = value` per line, the escapes of `escape_value`).
    fn properties_load(text: &str) -> BTreeMap<String, String> {
        let mut map = BTreeMap::new();
        for line in text.lines() {
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            assert!(
                !line.ends_with('\\') || line.ends_with("\\\\"),
                "continuation: {line}"
            );
            let (k, v) = line.split_once(" = ").expect("key = value");
            let mut value = String::new();
            let mut chars = v.chars();
            while let Some(c) = chars.next() {
                if c != '\\' {
                    value.push(c);
                    continue;
                }
                match chars.next().unwrap() {
                    'n' => value.push('\n'),
                    'r' => value.push('\r'),
                    't' => value.push('\t'),
                    'f' => value.push('\u{0c}'),
                    'u' => {
                        let hex: String = chars.by_ref().take(4).collect();
                        let unit = u16::from_str_radix(&hex, 16).unwrap();
                        // Surrogate pairs: good enough to decode what escape_value wrote.
                        value.push_str(&String::from_utf16_lossy(&[unit]));
                    }
                    other => value.push(other),
                }
            }
            map.insert(k.to_string(), value);
        }
        map
    }

    #[test]
    fn values_cannot_inject_keys_and_read_back_exactly() {
        let mut s = spec("version: '2.41.3'\nenvironment: production\n");
        s.dhis_conf.insert(
            "system.session.timeout".into(),
            "3600\nconnection.url = jdbc:postgresql://evil/db".into(),
        );
        s.dhis_conf.insert(
            "server.https".into(),
            "off\\\nconnection.username = root".into(),
        );
        s.dhis_conf
            .insert("ldap.search.filter".into(), " (uid={0})\r\té".into());
        let mut conn = db();
        conn.password = "p\\w=:#! x\n".into();
        let conf = render_dhis_conf(&s, &conn, &ClusterSecrets::default());
        let read = properties_load(&conf);
        assert_eq!(
            read["connection.url"],
            "jdbc:postgresql://hmis-db:5432/dhis2"
        );
        assert_eq!(read["connection.username"], "dhis");
        assert_eq!(read["connection.password"], "p\\w=:#! x\n");
        assert_eq!(
            read["system.session.timeout"],
            "3600\nconnection.url = jdbc:postgresql://evil/db"
        );
        assert_eq!(read["server.https"], "off\\\nconnection.username = root");
        assert_eq!(read["ldap.search.filter"], " (uid={0})\r\té");
        assert_eq!(
            conf.lines()
                .filter(|l| l.starts_with("connection.url"))
                .count(),
            1
        );
        assert!(conf.is_ascii());
    }

    #[test]
    fn keys_outside_dhis2s_alphabet_are_invalid() {
        for good in ["connection.url", "oidc.provider.google.client_id", "a-b"] {
            assert!(is_valid_key(good), "{good}");
        }
        for bad in [
            "",
            "a=b",
            "a:b",
            "a b",
            "a\\",
            "#x",
            "!x",
            "a\nb",
            "connection\\u002eurl",
            "é",
        ] {
            assert!(!is_valid_key(bad), "{bad:?}");
        }
    }

    #[test]
    fn s3_file_store_and_redis_keys() {
        let mut s = spec("version: '2.41.3'\nenvironment: production\nreplicas: 2\n");
        s.file_store = Some(FileStore {
            volume: None,
            s3: Some(S3FileStore {
                bucket: "hmis-files".into(),
                endpoint: Some("https://minio.moh".into()),
                region: None,
                credentials_secret_ref: "s3".into(),
            }),
        });
        s.redis = Some(RedisSpec {
            host: "redis".into(),
            port: 6379,
            password_secret_ref: None,
            ssl: false,
        });
        let secrets = ClusterSecrets {
            s3_access_key: Some("AK".into()),
            s3_secret_key: Some("SK".into()),
            redis_password: Some("rp".into()),
        };
        let conf = render_dhis_conf(&s, &db(), &secrets);
        for line in [
            "filestore.provider = s3",
            "filestore.container = hmis-files",
            "filestore.identity = AK",
            "redis.enabled = on",
            "redis.host = redis",
            "redis.password = rp",
        ] {
            assert!(conf.contains(line), "{line} missing:\n{conf}");
        }
    }
}
