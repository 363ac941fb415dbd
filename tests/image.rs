//! The image as an OCI archive (scripts/image.sh, no Docker, no registry) against the Dockerfile:
//! the same user, entrypoint, command and labels, the same Debian release, the PostgreSQL client
//! tools of the Dockerfile's PG_MAJOR and no other, the emergency-restore tools, and the three
//! binaries in /usr/local/bin; and containerd imports it.
//!
//! Building the archive needs root, mmdebstrap and Debian's archive, so these tests check one
//! built beforehand:
//!
//!   scripts/image.sh --out /tmp/dhis2-operator.oci.tar
//!   DHIS2_OPERATOR_IMAGE_ARCHIVE=/tmp/dhis2-operator.oci.tar cargo test --test image
//!
//! An archive built with `--pg-major N` (where apt.postgresql.org is unreachable) is not the
//! Dockerfile's image: DHIS2_OPERATOR_IMAGE_PG_MAJOR=N says which major to expect instead.
//! DHIS2_TEST_CONTAINERD_ADDRESS (a containerd socket) adds `ctr images import` of the archive.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn archive() -> Option<PathBuf> {
    match std::env::var_os("DHIS2_OPERATOR_IMAGE_ARCHIVE") {
        Some(path) if !path.is_empty() => Some(PathBuf::from(path)),
        _ => {
            eprintln!(
                "skipped: DHIS2_OPERATOR_IMAGE_ARCHIVE is not set (build one with scripts/image.sh, \
                 which needs root, mmdebstrap and Debian's archive)"
            );
            None
        }
    }
}

/// Runs a program; its stdout, or a panic with its stderr.
fn output(program: &str, args: &[&str]) -> Vec<u8> {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

// The Dockerfile ------------------------------------------------------------------------------

/// What the Dockerfile says about the runtime image.
#[derive(Debug)]
struct Dockerfile {
    debian_release: String,
    pg_major: u32,
    user: String,
    entrypoint: Value,
    cmd: Value,
    labels: BTreeMap<String, String>,
}

/// Instructions with their continuation lines joined and comments dropped.
fn instructions(text: &str) -> Vec<(String, String)> {
    let mut all = Vec::new();
    let mut current = String::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
            continue;
        }
        if let Some(part) = line.strip_suffix('\\') {
            current.push_str(part);
            current.push(' ');
            continue;
        }
        current.push_str(line);
        let (keyword, rest) = current
            .trim()
            .split_once(' ')
            .unwrap_or((current.trim(), ""));
        all.push((keyword.to_uppercase(), rest.trim().to_string()));
        current.clear();
    }
    all
}

/// `KEY="a value" OTHER=word` (LABEL's form) as pairs.
fn key_values(text: &str) -> BTreeMap<String, String> {
    let mut pairs = BTreeMap::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return pairs;
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                value.push(c);
            }
        }
        pairs.insert(key.trim().to_string(), value);
    }
}

fn parse_dockerfile(text: &str) -> Dockerfile {
    let all = instructions(text);
    let arg = |name: &str| {
        all.iter()
            .filter(|(k, _)| k == "ARG")
            .filter_map(|(_, rest)| rest.strip_prefix(&format!("{name}=")))
            .next_back()
            .unwrap_or_else(|| panic!("no ARG {name}= in the Dockerfile"))
            .trim()
            .to_string()
    };
    let runtime_start = all
        .iter()
        .rposition(|(k, _)| k == "FROM")
        .expect("FROM in the Dockerfile");
    let runtime = &all[runtime_start..];
    assert_eq!(
        runtime[0].1, "debian:${DEBIAN_RELEASE}-slim",
        "the runtime stage's base is what scripts/image.sh builds"
    );
    let last = |keyword: &str| {
        runtime
            .iter()
            .filter(|(k, _)| k == keyword)
            .map(|(_, rest)| rest.clone())
            .next_back()
            .unwrap_or_else(|| panic!("no {keyword} in the Dockerfile's runtime stage"))
    };
    let json = |keyword: &str| -> Value {
        serde_json::from_str(&last(keyword))
            .unwrap_or_else(|e| panic!("{keyword} is not in JSON (exec) form: {e}"))
    };
    Dockerfile {
        debian_release: arg("DEBIAN_RELEASE"),
        pg_major: arg("PG_MAJOR").parse().expect("ARG PG_MAJOR= is a number"),
        user: last("USER"),
        entrypoint: json("ENTRYPOINT"),
        cmd: json("CMD"),
        labels: runtime
            .iter()
            .filter(|(k, _)| k == "LABEL")
            .flat_map(|(_, rest)| key_values(rest))
            .collect(),
    }
}

fn dockerfile() -> Dockerfile {
    let text = std::fs::read_to_string(repo().join("Dockerfile")).expect("read Dockerfile");
    parse_dockerfile(&text)
}

// The archive ---------------------------------------------------------------------------------

/// One entry of a layer, as `tar -tv --numeric-owner` shows it.
#[derive(Debug)]
struct Entry {
    mode: String,
    owner: String,
    link: Option<String>,
}

#[derive(Debug)]
struct Image {
    name: String,
    config: Value,
    /// Every path of the root filesystem (layers applied in order, whiteouts honoured), without
    /// a leading `./` or `/`.
    files: BTreeMap<String, Entry>,
    /// Each layer's own entry for its root directory, if it has one.
    root_modes: Vec<String>,
    /// The last layer's `usr/lib/os-release`.
    os_release: String,
}

fn blob(archive: &Path, digest: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    output(
        "tar",
        &[
            "-xOf",
            archive.to_str().unwrap(),
            &format!("blobs/sha256/{hex}"),
        ],
    )
}

/// `tar ARGS` run on a layer of the archive, streamed (a layer is some hundred megabytes).
fn in_layer(archive: &Path, digest: &str, args: &[&str]) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    let member = format!("blobs/sha256/{hex}");
    let mut all = vec![
        "-o",
        "pipefail",
        "-c",
        r#"archive=$1 member=$2; shift 2; tar -xOf "$archive" "$member" | tar -f - "$@""#,
        "bash",
        archive.to_str().unwrap(),
        &member,
    ];
    all.extend_from_slice(args);
    output("bash", &all)
}

fn json_blob(archive: &Path, digest: &str) -> Value {
    serde_json::from_slice(&blob(archive, digest)).expect("JSON blob")
}

/// `tar` options that read a layer of this media type.
fn decompress_flag(media_type: &str) -> &'static str {
    if media_type.ends_with("+gzip") {
        "-z"
    } else if media_type.ends_with("+zstd") {
        "--zstd"
    } else {
        assert!(
            media_type.ends_with(".tar"),
            "unknown layer media type {media_type}"
        );
        "--no-auto-compress"
    }
}

/// The first `n` whitespace-separated fields of a line, and the rest of it as it is (a name may
/// hold spaces).
fn split_fields(line: &str, n: usize) -> (Vec<&str>, &str) {
    let mut fields = Vec::new();
    let mut rest = line.trim_start();
    while fields.len() < n {
        let end = rest
            .find(char::is_whitespace)
            .unwrap_or_else(|| panic!("unexpected listing line: {line}"));
        fields.push(&rest[..end]);
        rest = rest[end..].trim_start();
    }
    (fields, rest)
}

fn normalize(path: &str) -> String {
    path.trim_start_matches("./")
        .trim_start_matches('/')
        .trim_end_matches('/')
        .to_string()
}

fn read_image(archive: &Path) -> Image {
    let index: Value = serde_json::from_slice(&output(
        "tar",
        &["-xOf", archive.to_str().unwrap(), "index.json"],
    ))
    .expect("index.json");
    let descriptor = &index["manifests"][0];
    let name = descriptor["annotations"]["io.containerd.image.name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let manifest = json_blob(
        archive,
        descriptor["digest"].as_str().expect("manifest digest"),
    );
    let config = json_blob(
        archive,
        manifest["config"]["digest"].as_str().expect("config"),
    );
    let mut files: BTreeMap<String, Entry> = BTreeMap::new();
    let mut root_modes = Vec::new();
    let mut os_release = String::new();
    for layer in manifest["layers"].as_array().expect("layers") {
        let digest = layer["digest"].as_str().expect("layer digest");
        let flag = decompress_flag(layer["mediaType"].as_str().unwrap_or_default());
        let listing = String::from_utf8(in_layer(
            archive,
            digest,
            &[flag, "--numeric-owner", "--quoting-style=literal", "-tv"],
        ))
        .expect("UTF-8 listing");
        for line in listing.lines() {
            // drwxr-xr-x 0/0 0 1970-01-01 00:00 ./usr/ (symbolic links: NAME -> TARGET)
            let (fields, rest) = split_fields(line, 5);
            let (mode, owner) = (fields[0], fields[1]);
            let (name, link) = match rest.split_once(" -> ") {
                Some((n, target)) => (n, Some(target.to_string())),
                None => (rest.split(" link to ").next().unwrap(), None),
            };
            let name = normalize(name);
            if name.is_empty() {
                root_modes.push(mode.to_string());
                continue;
            }
            let (parent, base) = name.rsplit_once('/').unwrap_or(("", &name));
            if base == ".wh..wh..opq" {
                let prefix = format!("{parent}/");
                files.retain(|p, _| !p.starts_with(&prefix));
                continue;
            }
            if let Some(hidden) = base.strip_prefix(".wh.") {
                let gone = if parent.is_empty() {
                    hidden.to_string()
                } else {
                    format!("{parent}/{hidden}")
                };
                let prefix = format!("{gone}/");
                files.retain(|p, _| *p != gone && !p.starts_with(&prefix));
                continue;
            }
            files.insert(
                name,
                Entry {
                    mode: mode.to_string(),
                    owner: owner.to_string(),
                    link,
                },
            );
        }
        if let Some(member) = listing
            .lines()
            .filter_map(|l| l.split_whitespace().last())
            .find(|n| normalize(n) == "usr/lib/os-release")
        {
            os_release = String::from_utf8(in_layer(archive, digest, &[flag, "-xO", member]))
                .expect("UTF-8 os-release");
        }
    }
    Image {
        name,
        config,
        files,
        root_modes,
        os_release,
    }
}

/// The file at `path`, following symbolic links in the image (e.g. /bin -> usr/bin).
fn resolve<'a>(image: &'a Image, path: &str) -> Option<&'a Entry> {
    let mut path = normalize(path);
    for _ in 0..16 {
        // A symbolic link among the leading directories first.
        let mut resolved = None;
        let parts: Vec<&str> = path.split('/').collect();
        for i in 1..=parts.len() {
            let prefix = parts[..i].join("/");
            let entry = image.files.get(&prefix)?;
            if let Some(target) = &entry.link {
                let base = parts[..i - 1].join("/");
                let target = if target.starts_with('/') || base.is_empty() {
                    normalize(target)
                } else {
                    format!("{base}/{target}")
                };
                let rest = parts[i..].join("/");
                resolved = Some(if rest.is_empty() {
                    target
                } else {
                    format!("{target}/{rest}")
                });
                break;
            }
        }
        match resolved {
            Some(next) => path = collapse_dots(&next),
            None => return image.files.get(&path),
        }
    }
    None
}

fn collapse_dots(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            p => out.push(p),
        }
    }
    out.join("/")
}

fn executable(image: &Image, path: &str) -> bool {
    resolve(image, path).is_some_and(|e| e.mode.starts_with('-') && e.mode.contains('x'))
}

/// Everything wrong with the archive, measured against the Dockerfile.
fn disagreements(docker: &Dockerfile, image: &Image, pg_major: u32) -> Vec<String> {
    let mut wrong = Vec::new();
    let config = &image.config["config"];
    if config["User"].as_str() != Some(docker.user.as_str()) {
        wrong.push(format!(
            "User {} (Dockerfile: {})",
            config["User"], docker.user
        ));
    }
    if config["Entrypoint"] != docker.entrypoint {
        wrong.push(format!(
            "Entrypoint {} (Dockerfile: {})",
            config["Entrypoint"], docker.entrypoint
        ));
    }
    if config["Cmd"] != docker.cmd {
        wrong.push(format!(
            "Cmd {} (Dockerfile: {})",
            config["Cmd"], docker.cmd
        ));
    }
    for (key, value) in &docker.labels {
        if config["Labels"][key].as_str() != Some(value.as_str()) {
            wrong.push(format!(
                "label {key}: {} (Dockerfile: {value:?})",
                config["Labels"][key]
            ));
        }
    }
    if image.config["os"] != "linux" || image.config["architecture"] != "amd64" {
        wrong.push(format!(
            "platform {}/{}",
            image.config["os"], image.config["architecture"]
        ));
    }
    if !image
        .name
        .ends_with(&format!("dhis2-operator:{}", env!("CARGO_PKG_VERSION")))
    {
        // Not wrong in itself (--repository/--tag), but the chart would not find it.
        eprintln!(
            "note: the archive names {} (the chart's default is dhis2-operator:{})",
            image.name,
            env!("CARGO_PKG_VERSION")
        );
    }
    let codename = image
        .os_release
        .lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .unwrap_or("(no usr/lib/os-release)");
    if codename != docker.debian_release {
        wrong.push(format!(
            "Debian {codename} (Dockerfile: debian:{}-slim)",
            docker.debian_release
        ));
    }
    for mode in &image.root_modes {
        if mode != "drwxr-xr-x" {
            wrong.push(format!(
                "a layer sets / to {mode}: uid 65532 could not reach anything"
            ));
        }
    }
    for tool in ["pg_dump", "pg_restore", "psql"] {
        let path = format!("usr/lib/postgresql/{pg_major}/bin/{tool}");
        if !executable(image, &path) {
            wrong.push(format!("no /{path}"));
        }
    }
    let majors: Vec<&String> = image
        .files
        .keys()
        .filter(|p| {
            p.strip_prefix("usr/lib/postgresql/")
                .and_then(|r| r.strip_suffix("/bin/pg_dump"))
                .is_some_and(|m| m != pg_major.to_string())
        })
        .collect();
    if !majors.is_empty() {
        wrong.push(format!(
            "another PostgreSQL major's pg_dump: {majors:?} (the engine takes the newest)"
        ));
    }
    for tool in ["zstd", "age", "tar", "jq"] {
        if !executable(image, &format!("usr/bin/{tool}"))
            && !executable(image, &format!("bin/{tool}"))
        {
            wrong.push(format!("no {tool} (an emergency restore by hand needs it)"));
        }
    }
    if resolve(image, "etc/ssl/certs/ca-certificates.crt").is_none() {
        wrong.push("no /etc/ssl/certs/ca-certificates.crt (S3 over HTTPS)".into());
    }
    for bin in ["dhis2-operator", "dhis2ctl", "kubectl-dhis2"] {
        match image.files.get(&format!("usr/local/bin/{bin}")) {
            None => wrong.push(format!("no /usr/local/bin/{bin}")),
            Some(e) if e.mode != "-rwxr-xr-x" || e.owner != "0/0" => wrong.push(format!(
                "/usr/local/bin/{bin} is {} {} (want -rwxr-xr-x 0/0)",
                e.mode, e.owner
            )),
            Some(_) => {}
        }
    }
    wrong
}

fn expected_pg_major(docker: &Dockerfile) -> u32 {
    match std::env::var("DHIS2_OPERATOR_IMAGE_PG_MAJOR") {
        Ok(m) if !m.is_empty() => {
            let m = m
                .parse()
                .expect("DHIS2_OPERATOR_IMAGE_PG_MAJOR is a number");
            if m != docker.pg_major {
                eprintln!(
                    "note: expecting PostgreSQL {m} client tools (DHIS2_OPERATOR_IMAGE_PG_MAJOR), \
                     not the Dockerfile's {}",
                    docker.pg_major
                );
            }
            m
        }
        _ => docker.pg_major,
    }
}

#[test]
fn the_dockerfile_is_read_as_docker_reads_it() {
    let docker = parse_dockerfile(
        "ARG DEBIAN_RELEASE=bookworm\nFROM rust:1-slim-${DEBIAN_RELEASE} AS build\nUSER 1\n\
         CMD [\"build\"]\nFROM debian:${DEBIAN_RELEASE}-slim\n# a comment\nARG PG_MAJOR=15\n\
         USER 65532:65532\nLABEL a=\"x \\\"y\\\"\" \\\n      b=plain\nENTRYPOINT [\"op\"]\nCMD [\"run\"]\n",
    );
    assert_eq!(docker.debian_release, "bookworm");
    assert_eq!(docker.pg_major, 15);
    assert_eq!(docker.user, "65532:65532");
    assert_eq!(docker.entrypoint, serde_json::json!(["op"]));
    assert_eq!(docker.cmd, serde_json::json!(["run"]));
    assert_eq!(docker.labels["a"], "x \"y\"");
    assert_eq!(docker.labels["b"], "plain");
    // The repository's own Dockerfile parses.
    let docker = dockerfile();
    assert!(docker.labels.contains_key("org.opencontainers.image.title"));
}

#[test]
fn the_archive_is_the_dockerfiles_image() {
    let Some(archive) = archive() else { return };
    let docker = dockerfile();
    let image = read_image(&archive);
    let wrong = disagreements(&docker, &image, expected_pg_major(&docker));
    assert!(
        wrong.is_empty(),
        "{} differs from the Dockerfile's image:\n  {}",
        archive.display(),
        wrong.join("\n  ")
    );
}

#[test]
fn containerd_imports_the_archive() {
    let Some(archive) = archive() else { return };
    let address = match std::env::var("DHIS2_TEST_CONTAINERD_ADDRESS") {
        Ok(a) if !a.is_empty() => a,
        _ => {
            eprintln!("skipped: DHIS2_TEST_CONTAINERD_ADDRESS (a containerd socket) is not set");
            return;
        }
    };
    let name = read_image(&archive).name;
    let archive = archive.to_str().unwrap();
    // Kubernetes' namespace: the kubelet finds the image there.
    let ctr = |args: &[&str]| {
        let mut all = vec!["-a", address.as_str(), "-n", "k8s.io"];
        all.extend_from_slice(args);
        String::from_utf8(output("ctr", &all)).expect("UTF-8")
    };
    ctr(&["images", "import", "--all-platforms", archive]);
    let listed = ctr(&["images", "ls", "-q"]);
    assert!(
        listed.lines().any(|l| l == name),
        "ctr images ls does not list {name} after the import:\n{listed}"
    );
    let checked = ctr(&["images", "check", &format!("name=={name}")]);
    assert!(
        checked.contains("complete"),
        "ctr images check {name}: {checked}"
    );
}
