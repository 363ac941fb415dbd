//! Client-side encryption of backup objects with age (age-encryption.org/v1): each object is
//! encrypted in the stream, below zstd and above the upload, so no plaintext reaches the disk or
//! the repository. Backups are encrypted to X25519 public keys (`age1…`), which can back up but
//! not restore, or to a passphrase (age's scrypt mode). The stored objects are plain age files:
//! `age -d -i key.txt database.pgdump.zst.age | zstd -dc | pg_restore …` restores without us.

use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

use age::secrecy::SecretString;
use age::x25519;

use super::error::{BackupError, KeyMismatch};
use super::manifest::{AGE_SUFFIX, BackupManifest, EncryptionRecord, StoredObject};
use super::object_reader::blocking_reader;
use super::repo::Repository;

/// age's own default (about a second on a current CPU, 256 MiB of memory). Fixed rather than
/// measured, so a backup taken on a fast server still opens on a slow laptop.
const SCRYPT_WORK_FACTOR: u8 = 18;
/// The most work a passphrase backup may ask of a restore (1 GiB of memory).
const SCRYPT_MAX_WORK_FACTOR: u8 = 20;

/// What a backup is encrypted to.
#[derive(Clone)]
pub enum EncryptTo {
    Recipients(Vec<x25519::Recipient>),
    Passphrase(SecretString),
}

impl fmt::Debug for EncryptTo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Recipients(r) => f.debug_tuple("Recipients").field(r).finish(),
            Self::Passphrase(_) => f.write_str("Passphrase(..)"),
        }
    }
}

impl EncryptTo {
    /// What the manifest records: public keys, or only that a passphrase was used.
    pub fn record(&self) -> EncryptionRecord {
        match self {
            Self::Recipients(r) => EncryptionRecord::Recipients {
                recipients: r.iter().map(ToString::to_string).collect(),
            },
            Self::Passphrase(_) => EncryptionRecord::Passphrase,
        }
    }

    /// What the writer of a backup can decrypt it with: the passphrase it encrypted with; for
    /// public keys nothing, since their private keys are not on the server that backs up.
    pub fn writer_key(&self) -> DecryptWith {
        match self {
            Self::Recipients(_) => DecryptWith::default(),
            Self::Passphrase(passphrase) => DecryptWith {
                passphrase: Some(passphrase.clone()),
                ..Default::default()
            },
        }
    }

    fn encryptor(&self) -> io::Result<age::Encryptor> {
        match self {
            Self::Recipients(recipients) => {
                age::Encryptor::with_recipients(recipients.iter().map(|r| r as &dyn age::Recipient))
                    .map_err(|e| io::Error::other(format!("age: {e}")))
            }
            Self::Passphrase(passphrase) => {
                let mut recipient = age::scrypt::Recipient::new(passphrase.clone());
                recipient.set_work_factor(SCRYPT_WORK_FACTOR);
                age::Encryptor::with_recipients(std::iter::once(&recipient as &dyn age::Recipient))
                    .map_err(|e| io::Error::other(format!("age: {e}")))
            }
        }
    }
}

/// What a restore, drill or verify decrypts with: private keys, a passphrase, both or neither.
#[derive(Clone, Default)]
pub struct DecryptWith {
    pub identities: Vec<x25519::Identity>,
    /// Where the identities came from, for messages (`--identity key.txt`).
    pub identity_source: Option<String>,
    pub passphrase: Option<SecretString>,
}

impl fmt::Debug for DecryptWith {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DecryptWith")
            .field("public_keys", &self.public_keys())
            .field("identity_source", &self.identity_source)
            .field("passphrase", &self.passphrase.as_ref().map(|_| ".."))
            .finish()
    }
}

impl DecryptWith {
    /// The public keys of the identities given: safe to show.
    pub fn public_keys(&self) -> Vec<String> {
        self.identities
            .iter()
            .map(|i| i.to_public().to_string())
            .collect()
    }

    /// Whether a key of the kind this record needs was given (not whether it is the right one).
    pub fn has_key_for(&self, record: &EncryptionRecord) -> bool {
        match record {
            EncryptionRecord::Recipients { .. } => !self.identities.is_empty(),
            EncryptionRecord::Passphrase => self.passphrase.is_some(),
        }
    }

    /// Whether every encrypted object of the backup can be decrypted with what was given.
    pub fn covers(&self, manifest: &BackupManifest) -> bool {
        manifest
            .objects
            .iter()
            .filter_map(|o| o.encryption.as_ref())
            .all(|r| self.has_key_for(r))
    }

    fn decrypt<R: Read>(
        &self,
        record: &EncryptionRecord,
        decryptor: age::Decryptor<R>,
    ) -> Result<age::stream::StreamReader<R>, age::DecryptError> {
        match record {
            EncryptionRecord::Recipients { .. } => {
                decryptor.decrypt(self.identities.iter().map(|i| i as &dyn age::Identity))
            }
            EncryptionRecord::Passphrase => {
                let passphrase = self
                    .passphrase
                    .clone()
                    .ok_or(age::DecryptError::NoMatchingKeys)?;
                let mut identity = age::scrypt::Identity::new(passphrase);
                identity.set_max_work_factor(SCRYPT_MAX_WORK_FACTOR);
                decryptor.decrypt(std::iter::once(&identity as &dyn age::Identity))
            }
        }
    }
}

fn backup_name(manifest: &BackupManifest) -> String {
    format!("{}/{}", manifest.instance, manifest.id)
}

/// Whether `key` can open every encrypted object of the backup, judged from the manifest alone
/// (pure): a missing key, or identities that are none of the recipients.
pub fn check_key_fits(manifest: &BackupManifest, key: &DecryptWith) -> Result<(), KeyMismatch> {
    for record in manifest
        .objects
        .iter()
        .filter_map(|o| o.encryption.as_ref())
    {
        match record {
            EncryptionRecord::Recipients { recipients } => {
                let shown = recipients.join(", ");
                if key.identities.is_empty() {
                    return Err(KeyMismatch::IdentityMissing {
                        backup: backup_name(manifest),
                        recipients: shown,
                    });
                }
                let given = key.public_keys();
                if !given.iter().any(|g| recipients.contains(g)) {
                    return Err(KeyMismatch::WrongIdentity {
                        backup: backup_name(manifest),
                        recipients: shown,
                        origin: key
                            .identity_source
                            .clone()
                            .unwrap_or_else(|| "the identity file".into()),
                        given: given.join(", "),
                    });
                }
            }
            EncryptionRecord::Passphrase if key.passphrase.is_none() => {
                return Err(KeyMismatch::PassphraseMissing {
                    backup: backup_name(manifest),
                });
            }
            EncryptionRecord::Passphrase => {}
        }
    }
    Ok(())
}

/// Checks the key against the manifest, then opens the first encrypted object's age header
/// with it: a wrong passphrase (or a manifest that lies about its recipients) is found before
/// anything is written.
pub async fn check_key_opens(
    repo: &Repository,
    manifest: &BackupManifest,
    key: &DecryptWith,
) -> Result<(), BackupError> {
    check_key_fits(manifest, key).map_err(BackupError::Key)?;
    let Some((object, record)) = manifest
        .objects
        .iter()
        .find_map(|o| o.encryption.clone().map(|r| (o.clone(), r)))
    else {
        return Ok(());
    };
    let reader = blocking_reader(repo, manifest, &object).await?;
    let (m, key) = (manifest.clone(), key.clone());
    tokio::task::spawn_blocking(move || {
        let decryptor = age::Decryptor::new(reader).map_err(|e| damaged(&m, &object, &e))?;
        match key.decrypt(&record, decryptor) {
            Ok(_) => Ok(()),
            Err(
                age::DecryptError::NoMatchingKeys
                | age::DecryptError::DecryptionFailed
                | age::DecryptError::KeyDecryptionFailed,
            ) => Err(BackupError::Key(match record {
                EncryptionRecord::Passphrase => KeyMismatch::WrongPassphrase {
                    backup: backup_name(&m),
                },
                EncryptionRecord::Recipients { recipients } => KeyMismatch::WrongIdentity {
                    backup: backup_name(&m),
                    recipients: recipients.join(", "),
                    origin: key
                        .identity_source
                        .clone()
                        .unwrap_or_else(|| "the identity file".into()),
                    given: key.public_keys().join(", "),
                },
            })),
            Err(e) => Err(damaged(&m, &object, &e)),
        }
    })
    .await
    .map_err(|e| BackupError::io("checking the backup's key", io::Error::other(e)))?
}

fn damaged(manifest: &BackupManifest, object: &StoredObject, e: &dyn fmt::Display) -> BackupError {
    BackupError::Damaged {
        backup: backup_name(manifest),
        object: object.name.clone(),
        reason: format!("age header: {e}"),
    }
}

/// The writing end below zstd: the upload itself, or age encrypting into it.
pub enum SealingWriter<W: Write> {
    Plain(W),
    Age(age::stream::StreamWriter<W>),
}

impl<W: Write> SealingWriter<W> {
    pub fn new(inner: W, to: Option<&EncryptTo>) -> io::Result<Self> {
        Ok(match to {
            None => Self::Plain(inner),
            Some(to) => Self::Age(to.encryptor()?.wrap_output(inner)?),
        })
    }

    /// Writes age's last chunk; without it the object does not decrypt.
    pub fn finish(self) -> io::Result<W> {
        match self {
            Self::Plain(w) => Ok(w),
            Self::Age(w) => w.finish(),
        }
    }
}

impl<W: Write> Write for SealingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Plain(w) => w.write(buf),
            Self::Age(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::Plain(w) => w.flush(),
            Self::Age(w) => w.flush(),
        }
    }
}

/// The compressed stream a stored object holds: decrypted when the object is encrypted, the
/// bytes themselves when not. Every failure is an I/O error of reading the object, so that a
/// checksum mismatch found afterwards explains it.
pub fn open_compressed<'a, R: Read + 'a>(
    object: &StoredObject,
    stored: R,
    key: &DecryptWith,
) -> io::Result<Box<dyn Read + 'a>> {
    let Some(record) = &object.encryption else {
        return Ok(Box::new(stored));
    };
    let decryptor =
        age::Decryptor::new(stored).map_err(|e| io::Error::other(format!("age header: {e}")))?;
    let reader = key
        .decrypt(record, decryptor)
        .map_err(|e| io::Error::other(format!("age: {e}")))?;
    Ok(Box::new(reader))
}

/// Without a key: the object starts with an age header of the kind the manifest records.
pub fn check_age_header<R: Read>(record: &EncryptionRecord, stored: R) -> Result<(), String> {
    let decryptor = age::Decryptor::new(stored).map_err(|e| format!("age header: {e}"))?;
    match (record, decryptor.is_scrypt()) {
        (EncryptionRecord::Passphrase, false) => {
            Err("the manifest says passphrase, the age header names recipients".into())
        }
        (EncryptionRecord::Recipients { .. }, true) => {
            Err("the manifest names recipients, the age header says passphrase".into())
        }
        _ => Ok(()),
    }
}

/// One public key from `--encrypt-to`, `DHIS2_BACKUP_RECIPIENTS` or a recipients file
/// (`origin` names which, for the message). Only a value shaped like a public key is ever
/// repeated in an error: anything else might be a secret pasted in the wrong place.
pub fn parse_recipient(value: &str, origin: &str) -> Result<x25519::Recipient, String> {
    let value = value.trim();
    if value.to_ascii_uppercase().starts_with("AGE-SECRET-KEY-") {
        return Err(format!(
            "{origin}: that is a private key (AGE-SECRET-KEY-…), and a backup needs only the public key: `age-keygen -y key.txt` prints it; keep the private key off the server that backs up"
        ));
    }
    if value.starts_with("ssh-") || value.starts_with("ecdsa-") {
        return Err(format!(
            "{origin}: SSH keys are not supported; create an age key with `age-keygen -o key.txt` and give its public key (age1…)"
        ));
    }
    if !value.starts_with("age1") {
        return Err(format!(
            "{origin}: not an age public key; give one that starts with age1 (`age-keygen -y key.txt` prints it)"
        ));
    }
    x25519::Recipient::from_str(value).map_err(|e| {
        format!(
            "{origin}: {value} is not a valid age public key ({e}); copy it again from `age-keygen -y key.txt`"
        )
    })
}

/// `--encrypt-to` values and `DHIS2_BACKUP_RECIPIENTS` (comma- or space-separated) and the lines
/// of a recipients file (`#` comments and blank lines ignored), deduplicated, in order.
pub fn collect_recipients(
    values: &[String],
    files: &[(String, String)],
) -> Result<Vec<x25519::Recipient>, String> {
    // A file without keys would silently give unencrypted backups.
    if let Some((name, _)) = files.iter().find(|(_, text)| {
        text.lines()
            .all(|l| l.trim().is_empty() || l.trim().starts_with('#'))
    }) {
        return Err(format!(
            "--recipients-file {name}: holds no age public key; put one age1… key a line in it"
        ));
    }
    let mut out: Vec<x25519::Recipient> = Vec::new();
    let flag_values = values
        .iter()
        .flat_map(|v| v.split(|c: char| c == ',' || c.is_whitespace()))
        .filter(|v| !v.is_empty())
        .map(|v| {
            (
                v.to_string(),
                "--encrypt-to (or DHIS2_BACKUP_RECIPIENTS)".to_string(),
            )
        });
    let file_values = files.iter().flat_map(|(name, text)| {
        text.lines().enumerate().filter_map(move |(i, line)| {
            let line = line.trim();
            (!line.is_empty() && !line.starts_with('#')).then(|| {
                (
                    line.to_string(),
                    format!("--recipients-file {name} line {}", i + 1),
                )
            })
        })
    });
    for (value, origin) in flag_values.chain(file_values) {
        let recipient = parse_recipient(&value, &origin)?;
        if !out.contains(&recipient) {
            out.push(recipient);
        }
    }
    Ok(out)
}

/// The private keys in an age identity file (`age-keygen -o key.txt`). Errors name the line,
/// never its content.
pub fn parse_identity_file(text: &str, origin: &str) -> Result<Vec<x25519::Identity>, String> {
    let mut identities = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let problem = if line.starts_with("AGE-SECRET-KEY-1") {
            match x25519::Identity::from_str(line) {
                Ok(identity) => {
                    identities.push(identity);
                    continue;
                }
                Err(_) => "is not a valid age private key (damaged or cut short)",
            }
        } else if line.starts_with("AGE-PLUGIN-") {
            "is a plugin identity (a hardware key), which dhis2ctl cannot use; decrypt with the age CLI instead (docs/emergency-restore.md)"
        } else if line.starts_with("age1") {
            "is a public key: restoring needs the private key (AGE-SECRET-KEY-1…) that `age-keygen` wrote"
        } else {
            "is not an age private key (AGE-SECRET-KEY-1…); create keys with `age-keygen -o key.txt`"
        };
        return Err(format!("{origin}: line {} {problem}", i + 1));
    }
    if identities.is_empty() {
        return Err(format!(
            "{origin}: holds no age private key (AGE-SECRET-KEY-1…); give the file `age-keygen -o` wrote"
        ));
    }
    Ok(identities)
}

/// A passphrase from a file or a variable: one trailing newline is not part of it.
pub fn parse_passphrase(text: &str, origin: &str) -> Result<SecretString, String> {
    let text = text
        .strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .unwrap_or(text);
    if text.is_empty() {
        return Err(format!(
            "{origin}: the passphrase is empty; put the passphrase in it (one line)"
        ));
    }
    Ok(SecretString::from(text.to_string()))
}

/// The name an object gets in the repository: `.age` appended when it is encrypted.
pub fn stored_name(base: &str, encrypted: bool) -> String {
    if encrypted {
        format!("{base}{AGE_SUFFIX}")
    } else {
        base.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use age::secrecy::ExposeSecret;

    fn key() -> (x25519::Identity, String, String) {
        let identity = x25519::Identity::generate();
        let public = identity.to_public().to_string();
        let secret = identity.to_string().expose_secret().to_string();
        (identity, public, secret)
    }

    #[test]
    fn recipients_come_from_flags_env_and_files_deduplicated() {
        let (_, a, _) = key();
        let (_, b, _) = key();
        let (_, c, _) = key();
        let flags = vec![a.clone(), format!("{b}, {a}")];
        let file = format!("# the ministry's offline key\n\n{c}\n  {b}  \n");
        let got = collect_recipients(&flags, &[("keys.txt".into(), file)]).unwrap();
        let got: Vec<String> = got.iter().map(ToString::to_string).collect();
        assert_eq!(got, vec![a, b, c]);
        let e = collect_recipients(&[], &[("k.txt".into(), "# none yet\n".into())]).unwrap_err();
        assert!(
            e.starts_with("--recipients-file k.txt: holds no age public key"),
            "{e}"
        );
    }

    #[test]
    fn a_private_key_given_as_recipient_is_refused_without_being_shown() {
        let (_, _, secret) = key();
        let e = collect_recipients(std::slice::from_ref(&secret), &[]).unwrap_err();
        assert!(e.starts_with("--encrypt-to"), "{e}");
        assert!(e.contains("private key"), "{e}");
        assert!(!e.contains(&secret[15..]), "the secret leaked: {e}");
        let e = collect_recipients(&[], &[("k.txt".into(), format!("\n{secret}\n"))]).unwrap_err();
        assert!(e.starts_with("--recipients-file k.txt line 2"), "{e}");
        assert!(!e.contains(&secret[15..]), "{e}");
    }

    #[test]
    fn bad_recipients_name_the_flag_and_the_fix() {
        let e = parse_recipient("hunter2", "--encrypt-to").unwrap_err();
        assert!(e.starts_with("--encrypt-to: not an age public key"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
        let e = parse_recipient("ssh-ed25519 AAAA", "--encrypt-to").unwrap_err();
        assert!(e.contains("SSH keys are not supported"), "{e}");
        let (_, public, _) = key();
        let cut = &public[..public.len() - 3];
        let e = parse_recipient(cut, "--encrypt-to").unwrap_err();
        assert!(e.contains("is not a valid age public key"), "{e}");
        assert!(e.contains(cut), "a public key may be shown: {e}");
    }

    #[test]
    fn identity_files_parse_like_age_keygen_writes_them() {
        let (_, public, secret) = key();
        let file = format!("# created: 2026-01-01\n# public key: {public}\n{secret}\n");
        let ids = parse_identity_file(&file, "--identity key.txt").unwrap();
        assert_eq!(ids[0].to_public().to_string(), public);

        let err = |text: &str, origin: &str| parse_identity_file(text, origin).err().unwrap();
        let e = err("# nothing\n", "--identity key.txt");
        assert!(e.contains("holds no age private key"), "{e}");
        let e = err(&format!("{public}\n"), "--identity k");
        assert!(e.starts_with("--identity k: line 1 is a public key"), "{e}");
        // One character changed (bech32's checksum catches any single change). Changing it to a
        // fixed letter would leave one key in 32 undamaged, the one that already ends in it.
        let last = secret.chars().last().unwrap();
        let other = if last == 'Q' { 'P' } else { 'Q' };
        let damaged = format!("{}{other}", &secret[..secret.len() - 1]);
        let e = err(&damaged, "--identity k");
        assert!(e.contains("line 1 is not a valid age private key"), "{e}");
        assert!(!e.contains(&secret[20..40]), "{e}");
    }

    #[test]
    fn passphrases_lose_one_trailing_newline_and_may_not_be_empty() {
        let p = parse_passphrase("correct horse\n", "--passphrase-file p").unwrap();
        assert_eq!(p.expose_secret(), "correct horse");
        let p = parse_passphrase("  spaced  \r\n", "x").unwrap();
        assert_eq!(p.expose_secret(), "  spaced  ");
        let e = parse_passphrase("\n", "--passphrase-file p").unwrap_err();
        assert!(
            e.starts_with("--passphrase-file p: the passphrase is empty"),
            "{e}"
        );
    }

    fn manifest_with(records: &[Option<EncryptionRecord>]) -> BackupManifest {
        let objects: Vec<serde_json::Value> = records
            .iter()
            .enumerate()
            .map(|(i, r)| {
                serde_json::json!({
                    "name": format!("o{i}.zst{}", if r.is_some() { ".age" } else { "" }),
                    "kind": if i == 0 { "database" } else { "fileStore" },
                    "sizeBytes": 1, "sha256": "0".repeat(64), "uncompressedBytes": 1,
                    "encryption": r,
                })
            })
            .collect();
        serde_json::from_value(serde_json::json!({
            "formatVersion": 1, "id": "20261125T010000Z-00000000", "instance": "hmis",
            "startedAt": "2026-11-25T01:00:00Z", "completedAt": "2026-11-25T04:00:00Z",
            "database": "dhis2", "dhis2SchemaVersion": null, "postgresVersion": "15",
            "extensions": [], "includeAnalytics": false, "objects": objects, "tables": [],
            "skippedTableData": [],
            "tool": {"name": "dhis2ctl", "version": "0", "pgDump": ""}
        }))
        .unwrap()
    }

    #[test]
    fn the_key_must_fit_the_backup() {
        let (identity, public, _) = key();
        let (other, other_public, _) = key();
        let to_us = EncryptionRecord::Recipients {
            recipients: vec![public.clone(), "age1someoneelse".into()],
        };
        let m = manifest_with(&[Some(to_us.clone()), Some(to_us)]);
        let none = DecryptWith::default();
        let e = check_key_fits(&m, &none).unwrap_err().to_string();
        assert!(e.contains(&public) && e.contains("--identity FILE"), "{e}");

        let wrong = DecryptWith {
            identities: vec![other],
            identity_source: Some("--identity old.txt".into()),
            passphrase: None,
        };
        let e = check_key_fits(&m, &wrong).unwrap_err().to_string();
        assert!(e.contains("--identity old.txt"), "{e}");
        assert!(e.contains(&other_public) && e.contains(&public), "{e}");

        let right = DecryptWith {
            identities: vec![identity],
            ..Default::default()
        };
        assert_eq!(check_key_fits(&m, &right), Ok(()));

        let pass = manifest_with(&[Some(EncryptionRecord::Passphrase)]);
        assert!(matches!(
            check_key_fits(&pass, &right),
            Err(KeyMismatch::PassphraseMissing { .. })
        ));
        // An unencrypted backup opens with anything, or nothing.
        assert_eq!(check_key_fits(&manifest_with(&[None, None]), &none), Ok(()));
        assert_eq!(check_key_fits(&manifest_with(&[None]), &right), Ok(()));
    }

    #[test]
    fn what_is_sealed_opens_only_with_the_right_key() {
        let (identity, _, _) = key();
        let (other, _, _) = key();
        let to = EncryptTo::Recipients(vec![identity.to_public()]);
        let plaintext = "ខេត្តកំពង់ចាម".repeat(10_000).into_bytes();
        let mut w = SealingWriter::new(Vec::new(), Some(&to)).unwrap();
        w.write_all(&plaintext).unwrap();
        let sealed = w.finish().unwrap();
        assert!(!sealed.windows(12).any(|w| w == &plaintext[..12]));
        let object: StoredObject = serde_json::from_value(serde_json::json!({
            "name": "x.zst.age", "kind": "database", "sizeBytes": 1, "sha256": "0",
            "uncompressedBytes": 1, "encryption": to.record(),
        }))
        .unwrap();
        let right = DecryptWith {
            identities: vec![identity],
            ..Default::default()
        };
        let mut opened = Vec::new();
        open_compressed(&object, &sealed[..], &right)
            .unwrap()
            .read_to_end(&mut opened)
            .unwrap();
        assert_eq!(opened, plaintext);
        let wrong = DecryptWith {
            identities: vec![other],
            ..Default::default()
        };
        assert!(open_compressed(&object, &sealed[..], &wrong).is_err());
        assert_eq!(
            check_age_header(object.encryption.as_ref().unwrap(), &sealed[..]),
            Ok(())
        );
        assert!(check_age_header(&EncryptionRecord::Passphrase, &sealed[..]).is_err());
        assert!(check_age_header(&EncryptionRecord::Passphrase, &b"(\xb5/\xfd"[..]).is_err());
    }

    #[test]
    fn debug_output_never_shows_a_secret() {
        let (identity, public, secret) = key();
        let key = DecryptWith {
            identities: vec![identity],
            identity_source: None,
            passphrase: Some(SecretString::from("hunter2".to_string())),
        };
        let shown = format!("{key:?}");
        assert!(shown.contains(&public), "{shown}");
        assert!(
            !shown.contains("hunter2") && !shown.contains(&secret),
            "{shown}"
        );
        let to = EncryptTo::Passphrase(SecretString::from("hunter2".to_string()));
        assert!(!format!("{to:?}").contains("hunter2"));
    }
}
