//! docs/disaster-recovery.md as a script: its `sh` blocks, run in order through bash with the
//! variables its `export` lines name, as an on-call officer would (tests/dr_runbook.rs on the
//! harness, tests/real_node.rs on the real node).

use std::collections::BTreeMap;
use std::time::Duration;

use super::Env;

const RUNBOOK: &str = include_str!("../../docs/disaster-recovery.md");

/// One `sh` block: the variables its `export` lines set, and its other lines (commands).
#[derive(Debug)]
pub struct Block {
    pub settings: Vec<String>,
    pub commands: Vec<String>,
}

/// The `sh` blocks of the runbook's section headed `## {heading}…`.
pub fn blocks(heading: &str) -> Vec<Block> {
    let start = RUNBOOK
        .find(&format!("\n## {heading}"))
        .unwrap_or_else(|| panic!("no section {heading:?} in the runbook"));
    let section = &RUNBOOK[start + 1..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |e| e + 3)];
    let mut blocks = vec![];
    let mut current: Option<Block> = None;
    for line in section.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```sh") => {
                current = Some(Block {
                    settings: vec![],
                    commands: vec![],
                })
            }
            (Some(_), "```") => blocks.push(current.take().unwrap()),
            (Some(block), text) if text.starts_with("export ") => {
                block.settings.extend(settings_of(text));
            }
            (Some(block), text) if !text.is_empty() && !text.starts_with('#') => {
                block.commands.push(text.to_string());
            }
            _ => {}
        }
    }
    assert!(current.is_none(), "an unclosed sh block under {heading:?}");
    blocks
}

/// The variable names of `export A=1 B="two words" C=3`.
pub fn settings_of(line: &str) -> Vec<String> {
    let words = shell_words(line.trim_start_matches("export "));
    words
        .iter()
        .map(|w| w.split_once('=').expect("NAME=value").0.to_string())
        .collect()
}

/// The words of `text` as the officer's shell splits them (quotes and all).
pub fn shell_words(text: &str) -> Vec<String> {
    let script = format!("set -- {text}; for w in \"$@\"; do printf '%s\\0' \"$w\"; done");
    let out = std::process::Command::new("bash")
        .args(["-c", &script])
        .output()
        .expect("bash");
    String::from_utf8_lossy(&out.stdout)
        .split('\0')
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

/// Runs one runbook command through bash with `vars` (and dhis2ctl on PATH); panics with its
/// output unless it succeeds. Returns stdout.
pub async fn run(command: &str, vars: &BTreeMap<&str, String>, env: &Env) -> String {
    let dhis2ctl_dir = std::path::Path::new(env!("CARGO_BIN_EXE_dhis2ctl"))
        .parent()
        .unwrap()
        .to_path_buf();
    let path = format!(
        "{}:{}",
        dhis2ctl_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = tokio::process::Command::new("bash");
    cmd.args(["-euo", "pipefail", "-c", command])
        .env("PATH", path)
        .env("DHIS2_S3_ENDPOINT", &env.s3_endpoint)
        .env_remove("DHIS2_LOG");
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(300), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("`{command}` still running after 5 minutes"))
        .expect("bash");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(
        out.status.success(),
        "runbook command `{command}` failed ({}):\nstdout: {stdout}\nstderr: {stderr}",
        out.status
    );
    for secret in env.secrets() {
        assert!(
            !stdout.contains(&secret) && !stderr.contains(&secret),
            "`{command}` printed a secret"
        );
    }
    println!("$ {command}\n{stdout}");
    stdout
}

/// Every block's settings are what the test provides, and every command runs.
pub async fn follow(heading: &str, vars: &BTreeMap<&str, String>, env: &Env) -> usize {
    let mut ran = 0;
    for block in blocks(heading) {
        for name in &block.settings {
            assert!(
                vars.contains_key(name.as_str()) && name != "BACKUP",
                "the runbook sets {name}, which the test does not provide"
            );
        }
        for command in &block.commands {
            run(command, vars, env).await;
            ran += 1;
        }
    }
    ran
}
