//! TLS to PostgreSQL the way libpq does it: `sslmode` (`disable`, `allow`, `prefer`, `require`,
//! `verify-ca`, `verify-full`), `sslrootcert`, `sslcert` and `sslkey` from the URL or the libpq
//! environment (`PGSSLMODE`, `PGSSLROOTCERT`, `PGSSLCERT`, `PGSSLKEY`), for our own connections
//! (rustls) and, through the environment, for `pg_dump` / `pg_restore`. Managed PostgreSQL (RDS,
//! Azure, Cloud SQL) requires TLS by default.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{WebPkiServerVerifier, verify_server_cert_signed_by_trust_anchor};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

/// The URL parameters this module takes over from tokio-postgres (which knows only
/// disable/prefer/require and no certificate files).
pub const TLS_URL_PARAMETERS: [&str; 4] = ["sslmode", "sslrootcert", "sslcert", "sslkey"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    /// libpq tries without TLS first; we try TLS first. Either way both are accepted.
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    pub fn parse(value: &str) -> Option<Self> {
        Some(match value {
            "disable" => Self::Disable,
            "allow" => Self::Allow,
            "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Allow => "allow",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }

    /// What tokio-postgres is told: whether TLS is optional or mandatory.
    pub fn negotiation(self) -> tokio_postgres::config::SslMode {
        match self {
            Self::Disable => tokio_postgres::config::SslMode::Disable,
            Self::Allow | Self::Prefer => tokio_postgres::config::SslMode::Prefer,
            Self::Require | Self::VerifyCa | Self::VerifyFull => {
                tokio_postgres::config::SslMode::Require
            }
        }
    }
}

/// Where trusted CA certificates come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCert {
    File(PathBuf),
    /// `sslrootcert=system`: the operating system's CA store (as libpq 16+).
    System,
}

/// How the server's certificate is checked (pure decision from the settings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    /// Encrypt, but trust any certificate (libpq's `prefer` and `require` without a root CA).
    EncryptOnly,
    /// The chain must lead to a trusted CA; the host name is not checked.
    Chain(RootCert),
    /// Chain and host name (`verify-full`).
    ChainAndHost(RootCert),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub mode: SslMode,
    pub root_cert: Option<RootCert>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

impl Default for TlsSettings {
    fn default() -> Self {
        Self {
            mode: SslMode::Prefer,
            root_cert: None,
            client_cert: None,
            client_key: None,
        }
    }
}

impl TlsSettings {
    /// URL parameters win over the environment, as in libpq. `lookup` reads the environment.
    pub fn from_parameters(
        url_parameters: &[(String, String)],
        lookup: impl Fn(&str) -> Option<String>,
        flag: &'static str,
    ) -> Result<Self, String> {
        let get = |param: &str, env: &str| {
            url_parameters
                .iter()
                .rev()
                .find(|(k, _)| k == param)
                .map(|(_, v)| v.clone())
                .or_else(|| lookup(env))
                .filter(|v| !v.is_empty())
        };
        let mode = match get("sslmode", "PGSSLMODE") {
            None => SslMode::Prefer,
            Some(v) => SslMode::parse(&v).ok_or_else(|| {
                format!(
                    "{flag}: sslmode={v} is not a PostgreSQL sslmode; use disable, allow, prefer, require, verify-ca or verify-full"
                )
            })?,
        };
        let root_cert = get("sslrootcert", "PGSSLROOTCERT").map(|v| {
            if v == "system" {
                RootCert::System
            } else {
                RootCert::File(PathBuf::from(v))
            }
        });
        let client_cert = get("sslcert", "PGSSLCERT").map(PathBuf::from);
        let client_key = get("sslkey", "PGSSLKEY").map(PathBuf::from);
        if client_cert.is_some() != client_key.is_some() {
            return Err(format!(
                "{flag}: a client certificate needs both sslcert and sslkey (or PGSSLCERT and PGSSLKEY)"
            ));
        }
        Ok(Self {
            mode,
            root_cert,
            client_cert,
            client_key,
        })
    }

    /// libpq's rules: `verify-*` need a root certificate; `require` with one behaves like
    /// `verify-ca`; `prefer`/`allow` never check the certificate.
    pub fn verification(&self, flag: &str) -> Result<Option<Verification>, String> {
        Ok(match (self.mode, &self.root_cert) {
            (SslMode::Disable, _) => None,
            (SslMode::Allow | SslMode::Prefer, _) | (SslMode::Require, None) => {
                Some(Verification::EncryptOnly)
            }
            (SslMode::Require | SslMode::VerifyCa, Some(root)) => {
                Some(Verification::Chain(root.clone()))
            }
            (SslMode::VerifyFull, Some(root)) => Some(Verification::ChainAndHost(root.clone())),
            (mode @ (SslMode::VerifyCa | SslMode::VerifyFull), None) => {
                return Err(format!(
                    "{flag}: sslmode={} needs the CA certificate that signed the server's: add sslrootcert=/path/to/ca.crt to the URL (or set PGSSLROOTCERT), or sslrootcert=system to trust the system's CAs",
                    mode.as_str()
                ));
            }
        })
    }

    /// Settings for libpq-based child processes (`pg_dump`, `pg_restore`).
    pub fn libpq_env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![("PGSSLMODE", self.mode.as_str().to_string())];
        match &self.root_cert {
            Some(RootCert::File(p)) => env.push(("PGSSLROOTCERT", p.display().to_string())),
            Some(RootCert::System) => env.push(("PGSSLROOTCERT", "system".to_string())),
            None => {}
        }
        if let (Some(cert), Some(key)) = (&self.client_cert, &self.client_key) {
            env.push(("PGSSLCERT", cert.display().to_string()));
            env.push(("PGSSLKEY", key.display().to_string()));
        }
        env
    }

    /// A rustls client configuration implementing these settings (None for `disable`).
    pub fn client_config(&self, flag: &str) -> Result<Option<rustls::ClientConfig>, String> {
        let Some(verification) = self.verification(flag)? else {
            return Ok(None);
        };
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup failed: {e}"))?;
        let verifier: Arc<dyn ServerCertVerifier> = match &verification {
            Verification::EncryptOnly => Arc::new(LibpqVerifier {
                roots: None,
                provider,
            }),
            Verification::Chain(root) => Arc::new(LibpqVerifier {
                roots: Some(Arc::new(root_store(root, flag)?)),
                provider,
            }),
            Verification::ChainAndHost(root) => WebPkiServerVerifier::builder_with_provider(
                Arc::new(root_store(root, flag)?),
                provider,
            )
            .build()
            .map_err(|e| format!("{flag}: sslrootcert: {e}"))?,
        };
        let builder = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let config = match (&self.client_cert, &self.client_key) {
            (Some(cert), Some(key)) => {
                let chain = read_certificates(cert, "sslcert", flag)?;
                let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                    format!(
                        "{flag}: sslkey {}: not a readable PEM private key ({e})",
                        key.display()
                    )
                })?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| format!("{flag}: sslcert/sslkey do not form a usable pair: {e}"))?
            }
            _ => builder.with_no_client_auth(),
        };
        Ok(Some(config))
    }
}

fn read_certificates(
    path: &Path,
    parameter: &str,
    flag: &str,
) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            format!(
                "{flag}: {parameter} {}: cannot read PEM certificates ({e})",
                path.display()
            )
        })?;
    if certs.is_empty() {
        return Err(format!(
            "{flag}: {parameter} {} holds no PEM certificate",
            path.display()
        ));
    }
    Ok(certs)
}

fn root_store(root: &RootCert, flag: &str) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    match root {
        RootCert::File(path) => {
            for cert in read_certificates(path, "sslrootcert", flag)? {
                store
                    .add(cert)
                    .map_err(|e| format!("{flag}: sslrootcert {}: {e}", path.display()))?;
            }
        }
        RootCert::System => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(format!(
                    "{flag}: sslrootcert=system, but no CA certificates were found on this machine (Debian: apt-get install ca-certificates)"
                ));
            }
        }
    }
    Ok(store)
}

/// Checks the server's certificate the way libpq's sslmode asks: without trusted roots
/// (`prefer`, `require` without a root CA) the connection is encrypted but the server not
/// authenticated, as in libpq; with them (`verify-ca`) the chain must end at a trusted CA and the
/// name in the certificate is not checked. Handshake signatures are always checked.
#[derive(Debug)]
struct LibpqVerifier {
    roots: Option<Arc<RootCertStore>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for LibpqVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(roots) = &self.roots else {
            return Ok(ServerCertVerified::assertion());
        };
        let cert = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &cert,
            roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )
        .map(|_| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(params: &[(&str, &str)], env: &[(&str, &str)]) -> Result<TlsSettings, String> {
        let params: Vec<(String, String)> = params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        TlsSettings::from_parameters(
            &params,
            |name| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()),
            "--database-url",
        )
    }

    #[test]
    fn default_is_prefer_without_verification() {
        let s = settings(&[], &[]).unwrap();
        assert_eq!(s.mode, SslMode::Prefer);
        assert_eq!(
            s.verification("f").unwrap(),
            Some(Verification::EncryptOnly)
        );
        assert_eq!(s.libpq_env(), vec![("PGSSLMODE", "prefer".to_string())]);
    }

    #[test]
    fn url_wins_over_environment() {
        let s = settings(
            &[("sslmode", "verify-full"), ("sslrootcert", "/etc/ca.crt")],
            &[("PGSSLMODE", "disable"), ("PGSSLROOTCERT", "/other.crt")],
        )
        .unwrap();
        assert_eq!(s.mode, SslMode::VerifyFull);
        assert_eq!(
            s.verification("f").unwrap(),
            Some(Verification::ChainAndHost(RootCert::File(
                "/etc/ca.crt".into()
            )))
        );
        let s = settings(&[], &[("PGSSLMODE", "disable")]).unwrap();
        assert_eq!(s.verification("f").unwrap(), None);
    }

    #[test]
    fn libpq_rules_for_each_mode() {
        let ca = [("sslrootcert", "/ca.crt")];
        let v = |mode: &str, with_ca: bool| {
            let mut p = vec![("sslmode", mode)];
            if with_ca {
                p.extend(ca);
            }
            settings(&p, &[]).unwrap().verification("--database-url")
        };
        let chain = Some(Verification::Chain(RootCert::File("/ca.crt".into())));
        assert_eq!(
            v("require", false).unwrap(),
            Some(Verification::EncryptOnly)
        );
        assert_eq!(v("require", true).unwrap(), chain);
        assert_eq!(v("verify-ca", true).unwrap(), chain);
        assert_eq!(v("prefer", true).unwrap(), Some(Verification::EncryptOnly));
        let e = v("verify-full", false).unwrap_err();
        assert!(
            e.starts_with("--database-url: sslmode=verify-full needs"),
            "{e}"
        );
        assert!(e.contains("sslrootcert"), "{e}");
        assert!(v("verify-ca", false).is_err());
    }

    #[test]
    fn bad_values_name_the_parameter() {
        let e = settings(&[("sslmode", "verify_full")], &[]).unwrap_err();
        assert!(e.contains("sslmode=verify_full"), "{e}");
        assert!(e.contains("verify-full"), "{e}");
        let e = settings(&[("sslcert", "/c.crt")], &[]).unwrap_err();
        assert!(e.contains("sslkey"), "{e}");
        let s = settings(&[("sslrootcert", "system")], &[]).unwrap();
        assert_eq!(s.root_cert, Some(RootCert::System));
    }

    #[test]
    fn a_missing_root_certificate_file_is_named() {
        let s = settings(
            &[
                ("sslmode", "verify-full"),
                ("sslrootcert", "/nonexistent/ca.crt"),
            ],
            &[],
        )
        .unwrap();
        let e = s.client_config("--database-url").unwrap_err();
        assert!(e.contains("sslrootcert /nonexistent/ca.crt"), "{e}");
    }
}
