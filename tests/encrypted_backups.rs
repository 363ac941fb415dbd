//! Backups encrypted with age (issue 8): public keys back up, only a private key restores; the
//! repository holds no plaintext; a wrong or missing key is refused before anything is touched;
//! verify checks what it can without the key and everything with it; passphrase mode works.

mod support;

use std::path::Path;

use support::age_keys::age_keygen;
use support::*;

fn secret_of(identity: &Path) -> String {
    std::fs::read_to_string(identity)
        .unwrap()
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-"))
        .unwrap()
        .to_string()
}

/// Every stored object under `prefix` in `bucket`, as `(key, bytes)`.
async fn s3_objects(env: &Env, bucket: &str) -> Vec<(String, Vec<u8>)> {
    let s3 = env.s3_client();
    let mut out = Vec::new();
    for key in env.s3_keys(bucket).await {
        let body = s3
            .get_object()
            .bucket(bucket)
            .key(&key)
            .send()
            .await
            .unwrap()
            .body
            .collect()
            .await
            .unwrap()
            .into_bytes()
            .to_vec();
        out.push((key, body));
    }
    out
}

/// Every file under a local repository, as `(path, bytes)`.
fn local_objects(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.display().to_string(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out
}

/// Which of `needles` occur in the stored bytes, or in what they decompress to (zstd codes its
/// literals, so a name in a plain `.zst` object is found only after decompressing).
fn found_in(objects: &[(String, Vec<u8>)], needles: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for (name, bytes) in objects {
        let decompressed = zstd::stream::decode_all(&bytes[..]).unwrap_or_default();
        for needle in needles {
            let n = needle.as_bytes();
            let hit = |hay: &[u8]| hay.windows(n.len()).any(|w| w == n);
            if hit(bytes) || hit(&decompressed) {
                found.push(format!("{needle} in {name}"));
            }
        }
    }
    found
}

/// The tables DHIS2 regenerates: their rows are not backed up (see tests/real_dhis2.rs).
fn regenerated(table: &str) -> bool {
    let name = table.trim_start_matches("public.");
    name.starts_with("analytics") || name.starts_with('_')
}

#[tokio::test(flavor = "multi_thread")]
async fn an_encrypted_backup_of_the_real_database_restores_only_with_its_key() {
    let env = env();
    let keys = tempfile::tempdir().unwrap();
    let (key1, pub1) = age_keygen(keys.path(), "ministry.txt");
    let (key2, pub2) = age_keygen(keys.path(), "offsite.txt");
    let (stranger, stranger_pub) = age_keygen(keys.path(), "stranger.txt");
    let recipients_file = keys.path().join("recipients.txt");
    std::fs::write(&recipients_file, format!("# off-site copy\n{pub2}\n")).unwrap();

    let (src, src_url) = env.real_dhis2_database("enc_src").await;
    let khmer_name: String = env
        .client(&src)
        .await
        .query_one(
            "SELECT name FROM organisationunit WHERE name LIKE 'មណ្ឌលសុខភាព%' ORDER BY name LIMIT 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let files = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(files.path().join("document")).unwrap();
    std::fs::write(files.path().join("document/report.txt"), "របាយការណ៍ខែមករា").unwrap();
    let conf_dir = tempfile::tempdir().unwrap();
    let conf = conf_dir.path().join("dhis.conf");
    let password = format!("pw-{:016x}", rand::random::<u64>());
    std::fs::write(&conf, format!("encryption.password = {password}\n")).unwrap();
    let needles = [khmer_name.as_str(), password.as_str(), "របាយការណ៍ខែមករា"];
    let with_files = [
        "--files-dir",
        files.path().to_str().unwrap(),
        "--dhis-conf",
        conf.to_str().unwrap(),
    ];

    // The search finds all three in an unencrypted backup of the same data: it can fail.
    let plain = tempfile::tempdir().unwrap();
    let out = backup_run(
        &src_url,
        plain.path().to_str().unwrap(),
        "hmis",
        &with_files,
    )
    .await;
    assert_success(&out, "unencrypted backup run");
    assert_eq!(
        found_in(&local_objects(plain.path()), &needles).len(),
        3,
        "the plaintext search must find the name, the password and the file in a plain backup"
    );

    let (bucket, repo) = env.create_bucket("enc-real").await;
    let mut args = vec!["--encrypt-to", &pub1, "--recipients-file"];
    args.push(recipients_file.to_str().unwrap());
    args.extend_from_slice(&with_files);
    args.extend_from_slice(&["-o", "json"]);
    let out = backup_run(&src_url, &repo, "hmis", &args).await;
    assert_success(&out, "encrypted backup run");
    let manifest = json(&out);
    let objects = manifest["objects"].as_array().unwrap();
    let names: Vec<&str> = objects
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "database.pgdump.zst.age",
            "filestore.tar.zst.age",
            "dhis.conf.zst.age"
        ]
    );
    for o in objects {
        assert_eq!(
            o["encryption"],
            serde_json::json!({"mode": "recipients", "recipients": [pub1, pub2]}),
            "{o}"
        );
    }

    // No plaintext, and no secret, anywhere in the repository (manifest included).
    let stored = s3_objects(&env, &bucket).await;
    assert!(
        stored.len() >= 4,
        "{:?}",
        stored.iter().map(|s| &s.0).collect::<Vec<_>>()
    );
    assert_eq!(found_in(&stored, &needles), Vec::<String>::new());
    let secrets = [secret_of(&key1), secret_of(&key2)];
    let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
    assert_eq!(found_in(&stored, &secrets), Vec::<String>::new());

    let out = dhis2ctl(&["backup", "list", "--repo", &repo, "-o", "json"]).await;
    assert_success(&out, "backup list");
    assert_eq!(json(&out)[0]["encrypted"], true);

    // A target holding data: a wrong or missing key leaves it, and the server, as they were.
    let (dst, dst_url) = env.create_database("enc_dst").await;
    env.client(&dst)
        .await
        .batch_execute("CREATE TABLE marker (note text); INSERT INTO marker VALUES ('keep me')")
        .await
        .unwrap();
    let databases_before = databases_like(&env, &format!("{dst}%")).await;
    let restored = tempfile::tempdir().unwrap();
    let restored_files = restored.path().join("files");
    let restored_conf = restored.path().join("dhis.conf");
    let restore_files = [
        "--files-dir",
        restored_files.to_str().unwrap(),
        "--dhis-conf",
        restored_conf.to_str().unwrap(),
        "--force",
        "--drop-replaced",
    ];
    let wrong = format!("--identity={}", stranger.display());
    let mut extra = vec![wrong.as_str()];
    extra.extend_from_slice(&restore_files);
    let out = dhis2ctl(&restore_args(&repo, &dst_url, &extra)).await;
    assert_clear_failure(&out, "is encrypted to");
    let err = stderr(&out);
    assert!(
        err.contains(&pub1) && err.contains(&pub2),
        "names the recipients: {err}"
    );
    assert!(err.contains(&stranger_pub), "names the key given: {err}");
    assert!(!err.contains(&secret_of(&stranger)), "{err}");
    assert_eq!(out.status.code(), Some(1));
    let out = dhis2ctl(&restore_args(&repo, &dst_url, &restore_files)).await;
    assert_clear_failure(&out, "--identity FILE or DHIS2_BACKUP_IDENTITY_FILE");
    assert!(stderr(&out).contains(&pub1), "{}", stderr(&out));
    assert_eq!(
        databases_like(&env, &format!("{dst}%")).await,
        databases_before
    );
    assert_eq!(
        count(&env, &dst, "marker").await,
        1,
        "the target is untouched"
    );
    assert!(!restored_files.exists() && !restored_conf.exists());

    // The second recipient's key, given through the variable the operator's Jobs use.
    let out = dhis2ctl_with_env(
        &restore_args(&repo, &dst_url, &restore_files),
        &[("DHIS2_BACKUP_IDENTITY_FILE", key2.to_str().unwrap())],
    )
    .await;
    assert_success(&out, "restore with the off-site key");
    let before = env.table_fingerprints(&src).await;
    let after = env.table_fingerprints(&dst).await;
    assert!(before.len() >= 300, "{} tables", before.len());
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>()
    );
    for (table, source) in &before {
        if regenerated(table) {
            assert_eq!(after[table].rows, 0, "{table}");
        } else {
            assert_eq!(&after[table], source, "{table}");
        }
    }
    assert_eq!(
        std::fs::read_to_string(restored_files.join("document/report.txt")).unwrap(),
        "របាយការណ៍ខែមករា"
    );
    assert_eq!(
        std::fs::read_to_string(&restored_conf).unwrap(),
        format!("encryption.password = {password}\n")
    );

    // A drill decrypts in the stream too; without the key it refuses and creates nothing.
    let (scratch, scratch_url) = env.create_database("enc_scratch").await;
    let drill = |extra: Vec<String>| {
        let mut args: Vec<String> = [
            "drill",
            "--repo",
            &repo,
            "--instance",
            "hmis",
            "--scratch-database-url",
            &scratch_url,
            "-o",
            "json",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra);
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            dhis2ctl(&args).await
        }
    };
    let out = drill(vec![]).await;
    assert_clear_failure(&out, "is encrypted to");
    assert_eq!(
        databases_like(&env, &format!("{scratch}%")).await,
        vec![scratch.clone()]
    );
    let out = drill(vec!["--identity".into(), key1.display().to_string()]).await;
    assert_success(&out, "drill with the ministry's key");
    assert_eq!(json(&out)["passed"], true, "{}", stdout(&out));
    env.delete_bucket(&bucket).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_checks_an_encrypted_backup_without_its_key_and_fully_with_it() {
    let env = env();
    let keys = tempfile::tempdir().unwrap();
    let (key, public) = age_keygen(keys.path(), "key.txt");
    let (other, _) = age_keygen(keys.path(), "other.txt");
    let (_src, src_url) = env.seeded_database("enc_verify").await;
    let repo = tempfile::tempdir().unwrap();
    let repo_path = repo.path().to_str().unwrap();
    let out = backup_run(&src_url, repo_path, "hmis", &["--encrypt-to", &public]).await;
    assert_success(&out, "backup run");
    let verify = |extra: &[&str]| {
        let mut args = vec![
            "backup",
            "verify",
            "--repo",
            repo_path,
            "--instance",
            "hmis",
            "latest",
            "-o",
            "json",
        ];
        args.extend_from_slice(extra);
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            dhis2ctl(&args).await
        }
    };
    let identity = key.to_str().unwrap();

    let out = verify(&[]).await;
    assert_success(&out, "verify without the key");
    let report = json(&out);
    assert_eq!(report["objects"][0]["encrypted"], true, "{report}");
    assert_eq!(report["objects"][0]["contentsChecked"], false, "{report}");
    assert_eq!(report["objects"][0]["entries"], serde_json::Value::Null);

    let out = verify(&["--identity", identity]).await;
    assert_success(&out, "verify with the key");
    let report = json(&out);
    assert_eq!(report["objects"][0]["contentsChecked"], true, "{report}");
    assert!(
        report["objects"][0]["entries"].as_u64().unwrap() > 20,
        "{report}"
    );

    let out = verify(&["--identity", other.to_str().unwrap()]).await;
    assert_clear_failure(&out, &public);

    // One flipped byte deep in the dump: found with and without the key.
    let id = json(&dhis2ctl(&["backup", "list", "--repo", repo_path, "-o", "json"]).await)[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let dump = repo
        .path()
        .join("hmis")
        .join(&id)
        .join("database.pgdump.zst.age");
    let mut bytes = std::fs::read(&dump).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    std::fs::write(&dump, &bytes).unwrap();
    for extra in [&[][..], &["--identity", identity][..]] {
        let out = verify(extra).await;
        assert_clear_failure(&out, "database.pgdump.zst.age");
        assert!(stderr(&out).contains("is damaged"), "{}", stderr(&out));
        assert!(stderr(&out).contains("SHA-256"), "{}", stderr(&out));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_passphrase_backup_round_trips_and_a_wrong_passphrase_touches_nothing() {
    let env = env();
    let (src, src_url) = env.seeded_database("enc_pass_src").await;
    let secrets = tempfile::tempdir().unwrap();
    let passphrase = format!("ព្រះរាជាណាចក្រ {:x}", rand::random::<u64>());
    let pass_file = secrets.path().join("passphrase");
    std::fs::write(&pass_file, format!("{passphrase}\n")).unwrap();
    let (bucket, repo) = env.create_bucket("enc-pass").await;

    let out = dhis2ctl_with_env(
        &[
            "backup",
            "run",
            "--database-url",
            &src_url,
            "--repo",
            &repo,
            "--instance",
            "hmis",
            "-o",
            "json",
        ],
        &[("DHIS2_BACKUP_PASSPHRASE_FILE", pass_file.to_str().unwrap())],
    )
    .await;
    assert_success(&out, "passphrase backup");
    let manifest = json(&out);
    assert_eq!(
        manifest["objects"][0]["encryption"],
        serde_json::json!({"mode": "passphrase"})
    );
    let stored = s3_objects(&env, &bucket).await;
    assert_eq!(found_in(&stored, &[&passphrase]), Vec::<String>::new());
    assert!(!stdout(&out).contains(&passphrase) && !stderr(&out).contains(&passphrase));

    let (dst, dst_url) = env.create_database("enc_pass_dst").await;
    let out = dhis2ctl_with_env(
        &restore_args(&repo, &dst_url, &[]),
        &[("DHIS2_BACKUP_PASSPHRASE", "not the passphrase")],
    )
    .await;
    assert_clear_failure(&out, "the passphrase given does not open backup");
    assert!(!stderr(&out).contains("not the passphrase"));
    assert_eq!(
        databases_like(&env, &format!("{dst}%")).await,
        vec![dst.clone()],
        "no side database was created"
    );
    let out = dhis2ctl(&restore_args(&repo, &dst_url, &[])).await;
    assert_clear_failure(&out, "is encrypted with a passphrase");

    let pass_arg = format!("--passphrase-file={}", pass_file.display());
    let out = dhis2ctl(&restore_args(&repo, &dst_url, &[&pass_arg])).await;
    assert_success(&out, "restore with the passphrase");
    for table in ["datavalue", "organisationunit"] {
        assert_eq!(
            count(&env, &dst, table).await,
            count(&env, &src, table).await,
            "{table}"
        );
    }
    let out = dhis2ctl(&[
        "backup",
        "verify",
        "--repo",
        &repo,
        "--instance",
        "hmis",
        "latest",
        &pass_arg,
        "-o",
        "json",
    ])
    .await;
    assert_success(&out, "verify with the passphrase");
    assert_eq!(json(&out)["objects"][0]["contentsChecked"], true);
    env.delete_bucket(&bucket).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_encryption_flags_are_usage_errors_that_show_no_secret() {
    let keys = tempfile::tempdir().unwrap();
    let (key, public) = age_keygen(keys.path(), "key.txt");
    let secret = secret_of(&key);
    let repo = tempfile::tempdir().unwrap();
    let repo = repo.path().to_str().unwrap();
    let url = "postgresql://nobody@127.0.0.1:1/none";
    let pass = keys.path().join("pass");
    std::fs::write(&pass, "x\n").unwrap();
    let empty = keys.path().join("empty.txt");
    std::fs::write(&empty, "# nobody yet\n").unwrap();
    for (extra, needle) in [
        (vec!["--encrypt-to", secret.as_str()], "--encrypt-to"),
        (
            vec!["--encrypt-to", "age1nonsense"],
            "not a valid age public key",
        ),
        (
            vec![
                "--encrypt-to",
                public.as_str(),
                "--passphrase-file",
                pass.to_str().unwrap(),
            ],
            "not both",
        ),
        (
            vec!["--recipients-file", empty.to_str().unwrap()],
            "holds no age public key",
        ),
    ] {
        let out = backup_run(url, repo, "hmis", &extra).await;
        assert_clear_failure(&out, needle);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(!stderr(&out).contains(&secret[15..]), "{}", stderr(&out));
    }
    // A public key where the private key belongs.
    std::fs::write(keys.path().join("pub.txt"), format!("{public}\n")).unwrap();
    let identity = keys.path().join("pub.txt");
    let out = dhis2ctl(&restore_args(
        repo,
        url,
        &["--identity", identity.to_str().unwrap()],
    ))
    .await;
    assert_clear_failure(&out, "line 1 is a public key");
    assert_eq!(out.status.code(), Some(2));
}
