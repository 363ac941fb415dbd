//! What the CRD schema cannot express, checked before anything is built (pure). Each problem
//! names the field and the fix; the controller reports them as a `Degraded` condition and an
//! Event and builds nothing until they are fixed.

use crate::crd::dhis2_database::{DatabaseProvider, Dhis2DatabaseSpec};
use crate::crd::dhis2_instance::Dhis2InstanceSpec;
use crate::upgrade::version::{Dhis2Version, Major};

use crate::operator::instance::dhis_conf::is_valid_key;
use crate::rules::moment::parse_moment;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub field: &'static str,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

pub fn validate_instance(spec: &Dhis2InstanceSpec) -> Vec<Problem> {
    let mut problems = Vec::new();
    match Dhis2Version::parse(&spec.version) {
        Ok(version) if version.major() < Major(30) => problems.push(Problem {
            field: "spec.version",
            message: format!(
                "DHIS2 {} is older than 2.30, which this operator cannot run or upgrade; upgrade to 2.30 or later first",
                spec.version
            ),
        }),
        Ok(_) => {}
        Err(bad) => problems.push(Problem {
            field: "spec.version",
            message: bad.to_string(),
        }),
    }
    if spec.replicas > 1 && spec.redis.is_none() {
        problems.push(Problem {
            field: "spec.replicas",
            message: format!(
                "{} replicas need spec.redis: DHIS2 runs more than one replica only as a cluster, which shares sessions and caches through Redis; set spec.redis or use 1 replica",
                spec.replicas
            ),
        });
    }
    if let Some(fs) = &spec.file_store {
        if fs.volume.is_some() && fs.s3.is_some() {
            problems.push(Problem {
                field: "spec.fileStore",
                message: "give either volume or s3, not both".into(),
            });
        }
        if spec.replicas > 1 && fs.s3.is_none() {
            problems.push(Problem {
                field: "spec.fileStore",
                message: "more than one replica needs a shared file store: set spec.fileStore.s3"
                    .into(),
            });
        }
    } else if spec.replicas > 1 {
        problems.push(Problem {
            field: "spec.fileStore",
            message: "more than one replica needs a shared file store: set spec.fileStore.s3"
                .into(),
        });
    }
    for key in spec.dhis_conf.keys() {
        if !is_valid_key(key) {
            problems.push(Problem {
                field: "spec.dhisConf",
                message: format!(
                    "key {key:?} is not a dhis.conf key: use letters, digits, '.', '_' and '-' only (a key with '=', ':', blanks, '\\' or line breaks would change what DHIS2 reads)"
                ),
            });
        }
    }
    if spec.database_ref.is_some() && spec.database_storage.is_some() {
        problems.push(Problem {
            field: "spec.databaseStorage",
            message: "applies only to the dedicated database; with spec.databaseRef set it on that Dhis2Database".into(),
        });
    }
    problems
}

/// A database that was Ready with one provider keeps it: its data lives on that server, and
/// another provider would hand DHIS2 an empty database.
pub fn provider_change(
    spec: &Dhis2DatabaseSpec,
    ready_with: Option<DatabaseProvider>,
) -> Option<Problem> {
    let was = ready_with.filter(|was| *was != spec.provider)?;
    Some(Problem {
        field: "spec.provider",
        message: format!(
            "the data of this database is on its {} server, which spec.provider: {} would leave behind (DHIS2 would start on an empty database): set spec.provider: {} again; to move, restore a backup into a new Dhis2Database with the new provider and point the instance's spec.databaseRef at it",
            was.as_str(),
            spec.provider.as_str(),
            was.as_str()
        ),
    })
}

pub fn validate_database(spec: &Dhis2DatabaseSpec) -> Vec<Problem> {
    let mut problems = Vec::new();
    if spec.provider == DatabaseProvider::External && spec.external_secret_ref.is_none() {
        problems.push(Problem {
            field: "spec.externalSecretRef",
            message: "an external database needs a Secret with host, port, database, username and password; name it in spec.externalSecretRef".into(),
        });
    }
    if spec.provider == DatabaseProvider::External && spec.storage.is_some() {
        problems.push(Problem {
            field: "spec.storage",
            message: "applies only to provider: managed or cnpg".into(),
        });
    }
    if spec.provider != DatabaseProvider::Cnpg && spec.cnpg.is_some() {
        problems.push(Problem {
            field: "spec.cnpg",
            message: "applies only to provider: cnpg; remove it or set spec.provider: cnpg".into(),
        });
    }
    if let Some(time) = spec
        .cnpg
        .as_ref()
        .and_then(|c| c.recovery.as_ref())
        .and_then(|r| r.target_time.as_deref())
        && let Err(why) = parse_moment(time)
    {
        problems.push(Problem {
            field: "spec.cnpg.recovery.targetTime",
            message: why,
        });
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(yaml: &str) -> Dhis2InstanceSpec {
        serde_saphyr::from_str(yaml).expect("fixture")
    }

    #[test]
    fn a_database_keeps_the_provider_it_was_ready_with() {
        let spec: Dhis2DatabaseSpec = serde_saphyr::from_str("provider: cnpg\n").unwrap();
        assert_eq!(provider_change(&spec, None), None);
        assert_eq!(provider_change(&spec, Some(DatabaseProvider::Cnpg)), None);
        let refused = provider_change(&spec, Some(DatabaseProvider::Managed)).unwrap();
        assert_eq!(refused.field, "spec.provider");
        assert!(
            refused.message.contains("on its managed server")
                && refused.message.contains("set spec.provider: managed again"),
            "{}",
            refused.message
        );
    }

    #[test]
    fn a_version_is_read_as_everywhere_else_and_too_old_ones_are_refused() {
        let problem = |version: &str| {
            validate_instance(&instance(&format!(
                "version: '{version}'\nenvironment: staging\n"
            )))
            .into_iter()
            .find(|p| p.field == "spec.version")
            .map(|p| p.message)
        };
        assert_eq!(problem("2.41.3"), None);
        assert_eq!(problem("41.3.0"), None);
        assert!(problem("2.29").unwrap().contains("older than 2.30"));
        assert!(problem("x").unwrap().contains("write it like 2.42"));
    }

    #[test]
    fn a_plain_instance_is_valid() {
        assert_eq!(
            validate_instance(&instance("version: '2.41.3'\nenvironment: staging\n")),
            vec![]
        );
    }

    #[test]
    fn replicas_without_redis_are_refused_with_the_reason() {
        let p = validate_instance(&instance(
            "version: '2.41.3'\nenvironment: production\nreplicas: 3\nfileStore:\n  s3:\n    bucket: b\n    credentialsSecretRef: s\n",
        ));
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].field, "spec.replicas");
        assert!(p[0].message.contains("Redis"));
    }

    #[test]
    fn old_versions_and_conflicts_are_refused() {
        let p = validate_instance(&instance(
            "version: '2.29.1'\nenvironment: staging\ndatabaseRef: db\ndatabaseStorage:\n  size: 10Gi\n",
        ));
        let fields: Vec<&str> = p.iter().map(|p| p.field).collect();
        assert_eq!(fields, vec!["spec.version", "spec.databaseStorage"]);
    }

    #[test]
    fn dhis_conf_keys_that_would_inject_are_refused_by_name() {
        let mut spec = instance("version: '2.41.3'\nenvironment: staging\n");
        spec.dhis_conf
            .insert("connection.url = x\nfoo".into(), "v".into());
        spec.dhis_conf
            .insert("ok.key".into(), "line\nbreaks are escaped".into());
        let p = validate_instance(&spec);
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].field, "spec.dhisConf");
        assert!(
            p[0].message.contains("connection.url = x\\nfoo"),
            "{}",
            p[0]
        );
    }

    #[test]
    fn external_databases_need_a_secret() {
        let spec: Dhis2DatabaseSpec = serde_saphyr::from_str("provider: external\n").unwrap();
        assert_eq!(validate_database(&spec)[0].field, "spec.externalSecretRef");
    }
}
