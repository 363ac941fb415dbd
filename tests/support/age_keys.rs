//! age key pairs for the encryption tests, made by the real `age-keygen` (Debian package age).

use std::path::{Path, PathBuf};

/// A key pair made by the real `age-keygen`: `(identity file, public key)`.
pub fn age_keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    let path = dir.join(name);
    let status = std::process::Command::new("age-keygen")
        .arg("-o")
        .arg(&path)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run age-keygen (Debian package age; scripts/testenv/install.sh installs it)");
    assert!(status.success(), "age-keygen failed");
    let out = std::process::Command::new("age-keygen")
        .arg("-y")
        .arg(&path)
        .output()
        .expect("age-keygen -y");
    (
        path,
        String::from_utf8(out.stdout).unwrap().trim().to_string(),
    )
}
