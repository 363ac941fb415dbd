//! `scripts/release.sh` builds what a Ministry installs from: the .deb installs dhis2ctl with
//! its man page, completions and examples into a throw-away root and runs there; the tarball
//! holds the same files; the image archive imports into containerd (the node's, as
//! `ctr images import` on an air-gapped site) under the name the chart uses; the chart package
//! carries its CRDs as templates; install.yaml is the committed one; SHA256SUMS verifies.
//! Built from the debug binaries `cargo test` has anyway (the packaging is what is tested).

mod install_support;

use std::path::{Path, PathBuf};

use install_support::{repo, run};

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn target_debug() -> PathBuf {
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo().join("target"));
    target.join("debug")
}

fn ok(program: &str, args: &[&str]) -> String {
    let (ok, out, err) = run(program, args, None);
    assert!(ok, "{program} {}: {out}{err}", args.join(" "));
    out
}

fn files_under(root: &Path) -> Vec<String> {
    let out = ok(
        "find",
        &[root.to_str().unwrap(), "-type", "f", "-printf", "%P\n"],
    );
    let mut files: Vec<String> = out.lines().map(str::to_string).collect();
    files.sort();
    files
}

#[test]
fn a_release_installs_runs_and_imports_as_a_ministry_uses_it() {
    let dist = tempfile::tempdir().expect("tempdir");
    let out = dist.path().to_str().unwrap();
    let pg_major = std::env::var("DHIS2_OPERATOR_IMAGE_PG_MAJOR").unwrap_or_else(|_| "15".into());
    let debug = target_debug();
    // The binaries this packages are built by up.sh (`cargo build --bins`) before the tests.
    // (No cargo from inside a test: its CARGO_MANIFEST_DIR would make ring's build script,
    // and everything above it, rebuild.)
    let built = ok(
        "scripts/release.sh",
        &[
            VERSION,
            "--binaries",
            debug.to_str().unwrap(),
            "--pg-major",
            &pg_major,
            "--out",
            out,
        ],
    );
    println!("{built}");

    // SHA256SUMS names every artifact, and they verify.
    let deb = format!("dhis2ctl_{VERSION}-1_amd64.deb");
    let tarball = format!("dhis2ctl-{VERSION}-x86_64-linux.tar.gz");
    let image = format!("dhis2-operator-image-{VERSION}.oci.tar");
    let chart = format!("dhis2-operator-{VERSION}.tgz");
    let sums = std::fs::read_to_string(dist.path().join("SHA256SUMS")).expect("SHA256SUMS");
    for artifact in [&deb, &tarball, &image, &chart, "install.yaml"] {
        assert!(
            sums.contains(&format!("  {artifact}\n")),
            "{artifact} not in SHA256SUMS:\n{sums}"
        );
    }
    let (verified, text, err) = run(
        "bash",
        &["-c", &format!("cd {out} && sha256sum -c SHA256SUMS")],
        None,
    );
    assert!(verified, "{text}{err}");

    // The .deb, installed into a throw-away root.
    let root = tempfile::tempdir().expect("tempdir");
    let root_path = root.path().to_str().unwrap();
    let info = ok(
        "dpkg-deb",
        &["--info", dist.path().join(&deb).to_str().unwrap()],
    );
    for field in [
        "Package: dhis2ctl".to_string(),
        format!("Version: {VERSION}-1"),
        "Architecture: amd64".to_string(),
        "Depends: libc6 (>= 2.".to_string(),
        "Recommends: postgresql-client".to_string(),
        "kubectl plugin \"kubectl dhis2\"".to_string(),
    ] {
        assert!(info.contains(&field), "control lacks {field}:\n{info}");
    }
    ok(
        "dpkg-deb",
        &["-x", dist.path().join(&deb).to_str().unwrap(), root_path],
    );
    let deb_files = files_under(root.path());
    for file in [
        "usr/bin/dhis2ctl",
        "usr/bin/kubectl-dhis2",
        "usr/share/man/man1/dhis2ctl.1.gz",
        "usr/share/bash-completion/completions/dhis2ctl",
        "usr/share/zsh/vendor-completions/_dhis2ctl",
        "usr/share/fish/vendor_completions.d/dhis2ctl.fish",
        "usr/share/doc/dhis2ctl/copyright",
        "usr/share/doc/dhis2ctl/changelog.gz",
        "usr/share/doc/dhis2ctl/examples/staging.yaml",
        "usr/share/doc/dhis2ctl/examples/production.yaml",
    ] {
        assert!(
            deb_files.contains(&file.to_string()),
            "the .deb lacks {file}: {deb_files:?}"
        );
    }
    let installed = root.path().join("usr/bin/dhis2ctl");
    let version = ok(installed.to_str().unwrap(), &["--version"]);
    assert!(version.contains(VERSION), "{version}");
    ok(
        root.path().join("usr/bin/kubectl-dhis2").to_str().unwrap(),
        &["--help"],
    );
    let man = ok(
        "bash",
        &[
            "-c",
            &format!("gzip -dc {root_path}/usr/share/man/man1/dhis2ctl.1.gz"),
        ],
    );
    assert!(
        man.starts_with(".ie") || man.contains(".TH dhis2ctl"),
        "not a man page: {}",
        &man[..200.min(man.len())]
    );
    assert!(
        man.contains("backup run"),
        "the man page lists the commands"
    );
    let completion = std::fs::read_to_string(
        root.path()
            .join("usr/share/bash-completion/completions/dhis2ctl"),
    )
    .unwrap();
    assert!(
        completion.contains("complete -F") && completion.contains("dhis2ctl"),
        "{completion}"
    );
    let (parses, o, e) = run(
        "bash",
        &[
            "-n",
            root.path()
                .join("usr/share/bash-completion/completions/dhis2ctl")
                .to_str()
                .unwrap(),
        ],
        None,
    );
    assert!(parses, "{o}{e}");

    // The tarball: the same files, under dhis2ctl-VERSION/.
    let unpacked = tempfile::tempdir().expect("tempdir");
    ok(
        "tar",
        &[
            "-xzf",
            dist.path().join(&tarball).to_str().unwrap(),
            "-C",
            unpacked.path().to_str().unwrap(),
        ],
    );
    let top = unpacked.path().join(format!("dhis2ctl-{VERSION}"));
    let tar_files: Vec<String> = files_under(&top)
        .into_iter()
        .map(|f| format!("usr/{f}"))
        .collect();
    assert_eq!(
        tar_files, deb_files,
        "the tarball and the .deb hold the same files"
    );
    assert!(ok(top.join("bin/dhis2ctl").to_str().unwrap(), &["--version"]).contains(VERSION));

    // The chart package: this version, its CRDs in templates.
    let listing = ok("tar", &["-tzf", dist.path().join(&chart).to_str().unwrap()]);
    assert!(
        listing.contains("dhis2-operator/templates/crds.yaml"),
        "{listing}"
    );
    assert!(!listing.contains("dhis2-operator/crds/"), "{listing}");
    let chart_yaml = ok(
        "tar",
        &[
            "-xzOf",
            dist.path().join(&chart).to_str().unwrap(),
            "dhis2-operator/Chart.yaml",
        ],
    );
    assert!(
        chart_yaml.contains(&format!("version: {VERSION}")),
        "{chart_yaml}"
    );
    assert!(
        chart_yaml.contains(&format!("appVersion: {VERSION}"))
            || chart_yaml.contains(&format!("appVersion: \"{VERSION}\"")),
        "{chart_yaml}"
    );
    assert_eq!(
        std::fs::read_to_string(dist.path().join("install.yaml")).unwrap(),
        std::fs::read_to_string(repo().join("manifests/install.yaml")).unwrap()
    );

    // The image archive imports into containerd under the name the chart and install.yaml use.
    let address = std::env::var("DHIS2_TEST_CONTAINERD_ADDRESS").expect(
        "DHIS2_TEST_CONTAINERD_ADDRESS is not set: run with scripts/test.sh, whose node runs containerd",
    );
    let namespace = "dhis2-release-test";
    ok(
        "ctr",
        &[
            "-a",
            &address,
            "-n",
            namespace,
            "images",
            "import",
            "--all-platforms",
            dist.path().join(&image).to_str().unwrap(),
        ],
    );
    let images = ok(
        "ctr",
        &["-a", &address, "-n", namespace, "images", "ls", "-q"],
    );
    let name = format!("docker.io/library/dhis2-operator:{VERSION}");
    let _ = run(
        "ctr",
        &["-a", &address, "-n", namespace, "images", "rm", &name],
        None,
    );
    assert!(images.lines().any(|l| l == name), "imported: {images}");
    let install_yaml = std::fs::read_to_string(repo().join("manifests/install.yaml")).unwrap();
    assert!(
        install_yaml.contains(&format!("image: \"dhis2-operator:{VERSION}\"")),
        "install.yaml names dhis2-operator:{VERSION}"
    );
}
