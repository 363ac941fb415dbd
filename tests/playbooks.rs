//! The Ansible playbooks (playbooks/): every playbook passes `ansible-playbook --syntax-check`
//! and `ansible-lint` with the production profile. The plain-server playbook runs for real on
//! this machine (`-c local`, into a temporary root: no systemd here, so nothing is started), twice,
//! the second run changing nothing; the backup unit it wrote, run as systemd runs it (its
//! ExecStart with its EnvironmentFile and nothing else), backs the real DHIS2 2.42 database up
//! into S3 and writes the textfile metrics; the copy and prune units follow; drill.yml passes a
//! drill and fails loudly, with dhis2ctl's message, on one that cannot pass. `dhis2ctl man`
//! prints the man page the playbook installs.

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;

use support::prometheus::assert_promtool_accepts_metrics;
use support::*;

fn playbooks_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("playbooks")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// An Ansible tool, found or the test fails saying how to install it (never skipped).
fn ansible(tool: &str) -> std::process::Command {
    let mut cmd = std::process::Command::new(tool);
    cmd.env("ANSIBLE_NOCOLOR", "1")
        .env("ANSIBLE_FORCE_COLOR", "0")
        .env("ANSIBLE_RETRY_FILES_ENABLED", "0")
        .env("NO_COLOR", "1")
        .current_dir(playbooks_dir());
    cmd
}

fn run(mut cmd: std::process::Command, what: &str) -> Output {
    cmd.output().unwrap_or_else(|e| {
        panic!("{what}: {e}; install Ansible with scripts/testenv/install.sh (Debian packages ansible, ansible-lint)")
    })
}

fn playbooks() -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(playbooks_dir())
        .expect("read playbooks/")
        .map(|e| e.expect("playbooks/ entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yml"))
        .filter(|p| {
            !p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("inventory")
        })
        .collect();
    found.sort();
    found
}

#[test]
fn every_playbook_passes_the_syntax_check() {
    let books = playbooks();
    assert!(books.len() >= 3, "playbooks found: {books:?}");
    for book in books {
        let mut cmd = ansible("ansible-playbook");
        cmd.args(["--syntax-check", "-i", "inventory.example.yml"])
            .arg(&book);
        let out = run(cmd, "ansible-playbook");
        assert!(
            out.status.success(),
            "syntax check of {}:\n{}",
            book.display(),
            text(&out)
        );
    }
}

#[test]
fn ansible_lint_is_clean_with_the_production_profile() {
    let mut cmd = ansible("ansible-lint");
    // playbooks/.ansible-lint says profile: production; said again so the test cannot pass on
    // a weaker profile.
    cmd.args([
        "--offline",
        "--profile",
        "production",
        "-c",
        ".ansible-lint",
    ]);
    let out = run(cmd, "ansible-lint");
    assert!(out.status.success(), "ansible-lint:\n{}", text(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn dhis2ctl_man_prints_a_roff_page_with_every_command() {
    let out = dhis2ctl(&["man"]).await;
    assert_success(&out, "dhis2ctl man");
    let page = stdout(&out);
    assert!(page.contains(".TH dhis2ctl 1"), "{page}");
    for name in [
        "dhis2ctl backup run",
        "dhis2ctl backup copy",
        "dhis2ctl drill",
        "dhis2ctl restore",
    ] {
        assert!(page.contains(name), "{name} is not on the page:\n{page}");
    }
    // man(1) itself renders it without complaint, where man is installed.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dhis2ctl.1");
    std::fs::write(&file, &page).unwrap();
    if let Ok(rendered) = std::process::Command::new("man")
        .args(["--warnings", "-l", "-P", "cat"])
        .arg(&file)
        .env("MANWIDTH", "100")
        .output()
    {
        let shown = String::from_utf8_lossy(&rendered.stdout);
        assert!(rendered.status.success(), "{}", text(&rendered));
        assert!(shown.contains("dhis2ctl backup run"), "{shown}");
    }
}

/// `KEY="value"` lines as systemd's EnvironmentFile= and sh read them (double quotes; `\`
/// escapes `\ " $ \``), which is all the role writes.
fn parse_env_file(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (key, raw) = l
                .split_once('=')
                .unwrap_or_else(|| panic!("not KEY=VALUE: {l}"));
            let inner = raw
                .strip_prefix('"')
                .and_then(|r| r.strip_suffix('"'))
                .unwrap_or_else(|| panic!("{key}: the role always double-quotes: {raw}"));
            let mut value = String::new();
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.push(chars.next().expect("escape at the end")),
                    c => value.push(c),
                }
            }
            (key.to_string(), value)
        })
        .collect()
}

/// One `[Service]` unit as systemd would run it: argv of ExecStart=, EnvironmentFile=,
/// Environment=.
struct Unit {
    argv: Vec<String>,
    env_file: PathBuf,
    environment: Vec<(String, String)>,
    text: String,
}

fn parse_unit(path: &Path) -> Unit {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let value = |key: &str| -> Vec<String> {
        text.lines()
            .filter_map(|l| l.strip_prefix(&format!("{key}=")))
            .map(str::to_string)
            .collect()
    };
    let exec = value("ExecStart");
    assert_eq!(exec.len(), 1, "one ExecStart in {}", path.display());
    let env_file = value("EnvironmentFile");
    assert_eq!(
        env_file.len(),
        1,
        "one EnvironmentFile in {}",
        path.display()
    );
    Unit {
        argv: split_exec(&exec[0]),
        env_file: PathBuf::from(env_file[0].trim_start_matches('-')),
        environment: value("Environment")
            .iter()
            .map(|kv| {
                let (k, v) = kv.split_once('=').expect("Environment=KEY=VALUE");
                (k.to_string(), v.to_string())
            })
            .collect(),
        text,
    }
}

/// systemd's splitting of a command line (systemd.service(5)): words, double quotes with
/// backslash escapes, `%%` and `$$`.
fn split_exec(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.peek() == Some(&' ') {
            chars.next();
        }
        let Some(&first) = chars.peek() else {
            break;
        };
        let mut word = String::new();
        if first == '"' {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '"' => break,
                    '\\' => word.push(chars.next().expect("escape")),
                    c => word.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ' ' {
                    break;
                }
                word.push(c);
                chars.next();
            }
        }
        words.push(word.replace("%%", "%").replace("$$", "$"));
    }
    words
}

/// Runs a unit's command the way systemd does: an environment of PATH and the unit's files
/// only (not the test's AWS keys), so the keys must come from what the role wrote.
fn run_unit(unit: &Unit) -> Output {
    let env_text = std::fs::read_to_string(&unit.env_file).expect("read the EnvironmentFile");
    let mut cmd = std::process::Command::new(&unit.argv[0]);
    cmd.args(&unit.argv[1..])
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .envs(parse_env_file(&env_text))
        .envs(unit.environment.iter().cloned());
    cmd.output().expect("run the unit's ExecStart")
}

fn assert_no_secret(text: &str, secrets: &[String], what: &str) {
    for secret in secrets {
        assert!(
            !text.contains(secret.as_str()),
            "{what} printed a secret:\n{text}"
        );
    }
}

/// `changed=N` of the PLAY RECAP line for localhost.
fn changed(recap: &str) -> u32 {
    let line = recap
        .lines()
        .rev()
        .find(|l| l.starts_with("localhost") && l.contains("changed="))
        .unwrap_or_else(|| panic!("no PLAY RECAP in:\n{recap}"));
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("changed="))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no changed= in {line}"))
}

fn playbook(book: &str, inventory: &Path, vars: &Path, extra: &[&str]) -> Output {
    let mut cmd = ansible("ansible-playbook");
    cmd.args(["-c", "local", "-i"])
        .arg(inventory)
        .arg("-e")
        .arg(format!("@{}", vars.display()))
        .args(extra)
        .arg(book);
    run(cmd, "ansible-playbook")
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_server_playbook_installs_units_that_back_up_copy_prune_and_drill() {
    let env = env();
    let (db, db_url) = env.real_dhis2_database("pb_src").await;
    let (scratch, scratch_url) = env.create_database("pb_scratch").await;
    let (bucket, repo) = env.create_bucket("pb").await;
    let pg_password = env
        .secrets()
        .pop()
        .expect("the test PostgreSQL has a password");
    // The URL without its password: the role puts the password into PGPASSWORD.
    let url_without_password = db_url.replacen(&format!(":{pg_password}@"), "@", 1);
    assert_ne!(url_without_password, db_url);

    let root = tempfile::tempdir().unwrap();
    let r = |p: &str| root.path().join(p).to_str().unwrap().to_string();
    std::fs::create_dir_all(r("opt/dhis2/files/document")).unwrap();
    std::fs::write(r("opt/dhis2/files/document/report.pdf"), b"%PDF-1.4 demo").unwrap();
    std::fs::write(r("opt/dhis2/dhis.conf"), "encryption.password = demo\n").unwrap();
    let instance = "hmis";
    let textfile = r("node-exporter/dhis2.prom");
    let offsite = r("offsite");
    let vars = serde_json::json!({
        "dhis2ctl_binary_src": bin(),
        "dhis2ctl_install_dir": r("usr/local/bin"),
        "dhis2ctl_man_dir": r("usr/local/share/man"),
        "dhis2ctl_completions": {
            "bash": r("usr/local/share/bash-completion/completions/dhis2ctl"),
            "zsh": r("usr/local/share/zsh/site-functions/_dhis2ctl"),
            "fish": r("usr/local/share/fish/vendor_completions.d/dhis2ctl.fish"),
        },
        "dhis2_backup_instance": instance,
        "dhis2_backup_config_dir": r("etc/dhis2ctl"),
        "dhis2_backup_unit_dir": r("etc/systemd/system"),
        "dhis2_backup_wrapper_dir": r("usr/local/sbin"),
        "dhis2_backup_metrics_textfile": textfile,
        "dhis2_backup_metrics_environment": "production",
        "dhis2_backup_database_url": url_without_password,
        "dhis2_backup_database_password": pg_password,
        "dhis2_backup_files_dir": r("opt/dhis2/files"),
        "dhis2_backup_dhis_conf": r("opt/dhis2/dhis.conf"),
        "dhis2_backup_repo": repo,
        "dhis2_backup_s3_endpoint": env.s3_endpoint,
        "dhis2_backup_s3_access_key": env.access_key,
        "dhis2_backup_s3_secret_key": env.secret_key,
        "dhis2_backup_offsite_repo": offsite,
        "dhis2_backup_scratch_database_url": scratch_url,
    });
    let vars_file = root.path().join("vars.json");
    std::fs::write(&vars_file, vars.to_string()).unwrap();
    let inventory = root.path().join("inventory.yml");
    std::fs::write(
        &inventory,
        "dhis2_plain:\n  hosts:\n    localhost:\n      ansible_python_interpreter: /usr/bin/python3\n",
    )
    .unwrap();
    let secrets = env.secrets();

    // Twice: the second run finds everything as it should be.
    let first = playbook("plain-server.yml", &inventory, &vars_file, &[]);
    assert!(first.status.success(), "first run:\n{}", text(&first));
    assert_no_secret(&text(&first), &secrets, "the first run");
    assert!(changed(&text(&first)) > 0, "{}", text(&first));
    assert!(
        text(&first).contains("skipping: [localhost] => (item=dhis2-backup-hmis.timer)"),
        "no systemd as PID 1 here: the timers are written, not started:\n{}",
        text(&first)
    );
    let second = playbook("plain-server.yml", &inventory, &vars_file, &[]);
    assert!(second.status.success(), "second run:\n{}", text(&second));
    assert_eq!(changed(&text(&second)), 0, "second run:\n{}", text(&second));

    // What was installed: the binary, a man page and completions generated by it, root-only
    // secrets, units that name no secret.
    let man_page = std::fs::read_to_string(r("usr/local/share/man/man1/dhis2ctl.1")).unwrap();
    assert!(man_page.contains(".TH dhis2ctl 1"), "{man_page}");
    let bash =
        std::fs::read_to_string(r("usr/local/share/bash-completion/completions/dhis2ctl")).unwrap();
    assert!(bash.contains("dhis2ctl"), "{bash}");
    use std::os::unix::fs::PermissionsExt;
    for secret_file in ["etc/dhis2ctl/hmis.env", "etc/dhis2ctl/hmis.aws-credentials"] {
        let mode = std::fs::metadata(r(secret_file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{secret_file}");
    }
    let units = r("etc/systemd/system");
    let mut unit_files: Vec<PathBuf> = std::fs::read_dir(&units)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    unit_files.sort();
    let names: Vec<String> = unit_files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "dhis2-backup-copy-hmis.service",
            "dhis2-backup-hmis.service",
            "dhis2-backup-hmis.timer",
            "dhis2-backup-prune-hmis.service",
            "dhis2-backup-prune-offsite-hmis.service",
            "dhis2-drill-hmis.service",
            "dhis2-drill-hmis.timer",
        ]
    );
    for file in &unit_files {
        let unit = std::fs::read_to_string(file).unwrap();
        assert_no_secret(&unit, &secrets, &file.display().to_string());
    }
    let timer = std::fs::read_to_string(r("etc/systemd/system/dhis2-backup-hmis.timer")).unwrap();
    assert!(
        timer.contains("OnCalendar=*-*-* 02:00:00 Asia/Phnom_Penh"),
        "{timer}"
    );
    // systemd's own check of the units (executables exist, keys known, OnSuccess= targets
    // found), where systemd-analyze can run without systemd as PID 1, as in this container.
    let verify = std::process::Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(&unit_files)
        .output()
        .expect("systemd-analyze (Debian package systemd)");
    assert!(
        verify.status.success(),
        "systemd-analyze verify:\n{}",
        text(&verify)
    );

    // The backup unit, as systemd runs it: a backup that `backup list` shows, and the textfile.
    let backup_unit = parse_unit(&Path::new(&units).join("dhis2-backup-hmis.service"));
    assert!(backup_unit.text.contains("Type=oneshot"));
    assert!(
        backup_unit
            .text
            .contains("OnSuccess=dhis2-backup-copy-hmis.service")
    );
    let out = run_unit(&backup_unit);
    assert!(
        out.status.success(),
        "backup unit's ExecStart:\n{}",
        text(&out)
    );
    assert_no_secret(&text(&out), &secrets, "the backup unit");
    let ids = listed_backup_ids(&repo, Some(instance)).await;
    assert_eq!(ids.len(), 1, "{ids:?}");
    let metrics = std::fs::read_to_string(&textfile).expect("the unit wrote the textfile");
    assert!(
        metrics.contains(
            "dhis2_backup_last_success_timestamp_seconds{namespace=\"\",dhis2_instance=\"hmis\",environment=\"production\"}"
        ),
        "{metrics}"
    );
    assert_promtool_accepts_metrics(&metrics, &textfile);

    // What follows it on success: the off-site copy, then retention on both sides.
    let copy_unit = parse_unit(&Path::new(&units).join("dhis2-backup-copy-hmis.service"));
    let out = run_unit(&copy_unit);
    assert!(out.status.success(), "copy unit:\n{}", text(&out));
    assert_eq!(
        listed_backup_ids(&offsite, None).await,
        ids,
        "the backup is off site"
    );
    for prune in [
        "dhis2-backup-prune-hmis.service",
        "dhis2-backup-prune-offsite-hmis.service",
    ] {
        let out = run_unit(&parse_unit(&Path::new(&units).join(prune)));
        assert!(out.status.success(), "{prune}:\n{}", text(&out));
    }

    // A drill now (drill.yml): passes, and records it in the textfile.
    let drill = playbook("drill.yml", &inventory, &vars_file, &[]);
    assert!(drill.status.success(), "drill.yml:\n{}", text(&drill));
    assert!(text(&drill).contains("PASSED"), "{}", text(&drill));
    assert_no_secret(&text(&drill), &secrets, "drill.yml");
    let metrics = std::fs::read_to_string(&textfile).unwrap();
    assert!(
        metrics.contains(
            "dhis2_drill_last_success{namespace=\"\",dhis2_instance=\"hmis\",environment=\"production\"} 1"
        ),
        "{metrics}"
    );
    // A drill that cannot pass fails the play, with dhis2ctl's own words.
    let failed = playbook(
        "drill.yml",
        &inventory,
        &vars_file,
        &["-e", "dhis2_backup_drill_backup=20200101T000000Z-nope"],
    );
    let said = text(&failed);
    assert!(!failed.status.success(), "{said}");
    assert!(
        said.contains("Restore drill of hmis FAILED (exit"),
        "{said}"
    );
    assert!(said.contains("20200101T000000Z-nope"), "{said}");
    assert_no_secret(&said, &secrets, "the failed drill.yml");
    let metrics = std::fs::read_to_string(&textfile).unwrap();
    assert!(
        metrics.contains(
            "dhis2_drill_last_success{namespace=\"\",dhis2_instance=\"hmis\",environment=\"production\"} 0"
        ),
        "{metrics}"
    );

    let admin = env.client("postgres").await;
    for name in [&db, &scratch] {
        let _ = admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await;
    }
    env.delete_bucket(&bucket).await;
}
