//! Where backups live: `s3://bucket/prefix` or a local directory (`file:///path` or a plain path).

use std::fmt;
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepoLocation {
    Local { root: PathBuf },
    S3 { bucket: String, prefix: String },
}

impl RepoLocation {
    /// Parses `--repo`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err("--repo: empty; give s3://BUCKET/PREFIX or a local directory".into());
        }
        if let Some(rest) = text.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if !is_valid_bucket_name(bucket) {
                return Err(format!(
                    "--repo: '{bucket}' is not a valid S3 bucket name (3-63 characters: lowercase letters, digits, '.', '-'); use s3://BUCKET/PREFIX"
                ));
            }
            let prefix = prefix.trim_matches('/').to_string();
            return Ok(Self::S3 {
                bucket: bucket.to_string(),
                prefix,
            });
        }
        if let Some(path) = text.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(format!(
                    "--repo: file URLs need an absolute path (file:///var/backups/dhis2), got '{text}'"
                ));
            }
            return Ok(Self::Local { root: path.into() });
        }
        if let Some((scheme, _)) = text.split_once("://") {
            return Err(format!(
                "--repo: unknown repository scheme '{scheme}://'; use s3://BUCKET/PREFIX, file:///PATH or a plain directory path"
            ));
        }
        Ok(Self::Local { root: text.into() })
    }
}

impl fmt::Display for RepoLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Local { root } => write!(f, "{}", root.display()),
            Self::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            Self::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

fn is_valid_bucket_name(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_s3_and_local_forms() {
        assert_eq!(
            RepoLocation::parse("s3://moh-backups/hmis/prod/").unwrap(),
            RepoLocation::S3 {
                bucket: "moh-backups".into(),
                prefix: "hmis/prod".into()
            }
        );
        assert_eq!(
            RepoLocation::parse("s3://moh-backups").unwrap().to_string(),
            "s3://moh-backups"
        );
        assert_eq!(
            RepoLocation::parse("file:///var/backups").unwrap(),
            RepoLocation::Local {
                root: "/var/backups".into()
            }
        );
        assert_eq!(
            RepoLocation::parse("./backups").unwrap(),
            RepoLocation::Local {
                root: "./backups".into()
            }
        );
    }

    #[test]
    fn bad_repos_name_the_flag_and_the_fix() {
        let e = RepoLocation::parse("gs://bucket/x").unwrap_err();
        assert!(
            e.contains("--repo") && e.contains("unknown repository scheme 'gs://'"),
            "{e}"
        );
        let e = RepoLocation::parse("s3://Bad_Bucket/x").unwrap_err();
        assert!(e.contains("not a valid S3 bucket name"), "{e}");
        let e = RepoLocation::parse("file://relative/path").unwrap_err();
        assert!(e.contains("absolute path"), "{e}");
    }
}
