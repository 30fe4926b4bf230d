//! The Pungi source end to end: fixture composes that look like Fedora's,
//! planned (and published) through the binary. Each plan is snapshotted;
//! review them against docs/gate.md.

mod support;

use std::fs;
use std::path::Path;

use archgate_fixtures::{pungi_fixtures, write_pungi_compose};
use serde_json::Value;

use support::archgate;

/// A config publishing `images` (name, subvariant) from a compose to layouts.
fn config(dir: &Path, name: &str, images: &[(&str, &str)]) -> String {
    let mut text = String::from("[source]\nkind = \"pungi\"\n\n");
    for (image, sub) in images {
        text.push_str(&format!(
            "[[image]]\nname = \"{image}\"\nmatch = {{ subvariant = \"{sub}\" }}\nrepositories = [\"oci:out/{name}/{image}\"]\ntags = [\"{{release}}\", \"latest\"]\n\n"
        ));
    }
    let path = dir.join(format!("{name}.toml"));
    fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

fn plan(dir: &Path, cfg: &str, compose: &str) -> (i32, Value) {
    let (code, stdout, stderr) = archgate(
        dir,
        &["plan", "-c", cfg, "--compose", compose, "--format", "json"],
    );
    assert!(code == 0 || code == 3, "{code}: {stderr}");
    let redacted = stdout.replace(&dir.display().to_string(), "[TMP]");
    (
        code,
        serde_json::from_str(&redacted).unwrap_or_else(|e| panic!("{e}: {stdout}")),
    )
}

const FEDORA: [(&str, &str); 3] = [
    ("fedora", "Container_Base"),
    ("fedora-minimal", "Container_Minimal_Base"),
    ("fedora-toolbox", "Container_Toolbox"),
];

fn setup() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for (name, compose) in pungi_fixtures() {
        write_pungi_compose(&tmp.path().join(name), &compose).unwrap();
    }
    tmp
}

#[test]
fn pungi_plans() {
    let tmp = setup();
    let dir = tmp.path();
    let fedora = config(dir, "fedora", &FEDORA);

    // Fedora 41: the previous compose is published, then the nightly where
    // toolbox failed on aarch64.
    let (code, _, stderr) = archgate(
        dir,
        &["publish", "-c", &fedora, "--compose", "fedora-41-previous"],
    );
    assert_eq!(code, 0, "{stderr}");
    let (code, report) = plan(dir, &fedora, "fedora-41-incomplete");
    assert_eq!(code, 3);
    insta::assert_json_snapshot!("fedora_41_incomplete", report);

    let (code, report) = plan(dir, &fedora, "doomed");
    assert_eq!(code, 3);
    insta::assert_json_snapshot!("doomed", report);

    let base = config(dir, "base", &[("fedora", "Container_Base")]);
    let (code, report) = plan(dir, &base, "rawhide");
    assert_eq!(code, 0);
    insta::assert_json_snapshot!("rawhide", report);

    let (code, report) = plan(
        dir,
        &config(dir, "old", &[("fedora-30", "Container_Base")]),
        "pre-kiwi",
    );
    assert_eq!(code, 0);
    insta::assert_json_snapshot!("pre_kiwi_docker_archives", report);

    let (code, report) = plan(
        dir,
        &config(dir, "bootc", &[("fedora-bootc", "Bootc")]),
        "bootc",
    );
    assert_eq!(code, 0);
    insta::assert_json_snapshot!("bootc", report);
}

#[test]
fn a_checksum_mismatch_fails_only_that_arch() {
    let tmp = setup();
    let dir = tmp.path();
    let base = config(dir, "base", &[("fedora", "Container_Base")]);
    let images = dir.join("rawhide/compose/Container/aarch64/images");
    let file = fs::read_dir(&images)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut bytes = fs::read(&file).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    fs::write(&file, bytes).unwrap();
    let (code, report) = plan(dir, &base, "rawhide");
    assert_eq!(code, 0, "a first publish goes ahead with x86_64");
    let arches = report["targets"][0]["arches"].as_array().unwrap();
    assert_eq!(arches[0]["result"], "built");
    assert_eq!(arches[1]["result"], "failed");
    assert!(
        report["targets"][0]["reasons"]
            .to_string()
            .contains("checksum mismatch"),
        "{report}"
    );
}

#[test]
fn broken_metadata_is_a_one_line_error_and_nothing_is_written() {
    let cases: [(&str, &str, &str); 4] = [
        (
            "compose/metadata/images.json",
            "{\"header\": {\"type\": \"productmd.images\", \"ver",
            "images.json: not valid productmd.images metadata",
        ),
        (
            "compose/metadata/images.json",
            "{\"header\": {\"type\": \"productmd.images\", \"version\": \"2.0\"}, \"payload\": {}}",
            "header version 2.0 is not one archgate reads",
        ),
        (
            "compose/metadata/composeinfo.json",
            "not json",
            "composeinfo.json: not valid productmd.composeinfo metadata",
        ),
        ("STATUS", "", "STATUS: \"\" is not a compose status"),
    ];
    for (file, text, needle) in cases {
        let tmp = setup();
        let dir = tmp.path();
        let fedora = config(dir, "fedora", &FEDORA);
        fs::write(dir.join("rawhide").join(file), text).unwrap();
        let (code, stdout, stderr) =
            archgate(dir, &["publish", "-c", &fedora, "--compose", "rawhide"]);
        assert_eq!(code, 1, "{file}: {stderr}");
        assert!(stderr.contains(needle), "{file}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
        assert!(stdout.is_empty());
        assert!(!dir.join("out").exists());
    }
    // A path that leaves the compose root.
    let tmp = setup();
    let dir = tmp.path();
    let images = dir.join("rawhide/compose/metadata/images.json");
    let text = fs::read_to_string(&images).unwrap();
    fs::write(
        &images,
        text.replacen("\"path\": \"Container/", "\"path\": \"../../../etc/", 1),
    )
    .unwrap();
    let (code, _, stderr) = archgate(
        dir,
        &[
            "plan",
            "-c",
            &config(dir, "base", &[("fedora", "Container_Base")]),
            "--compose",
            "rawhide",
        ],
    );
    assert_eq!(code, 1);
    assert!(stderr.contains("leaves the compose; refused"), "{stderr}");
}

#[test]
fn a_compose_over_http_plans_like_the_same_compose_on_disk() {
    let tmp = setup();
    let dir = tmp.path();
    let (server, _) = support::serve_dir(dir.to_path_buf());
    let base = config(dir, "base", &[("fedora", "Container_Base")]);
    let (code, local) = plan(dir, &base, "rawhide");
    assert_eq!(code, 0);
    let url = format!("http://{}/rawhide", server.addr);
    let (code, remote) = plan(dir, &base, &url);
    assert_eq!(code, 0);
    assert_eq!(
        local["targets"], remote["targets"],
        "same digests and decisions"
    );
    // Published from HTTP, and the spool is gone afterwards.
    let (code, _, stderr) = archgate(dir, &["publish", "-c", &base, "--compose", &url]);
    assert_eq!(code, 0, "{stderr}");
    let (code, out, _) = archgate(
        dir,
        &["inspect", "--format", "json", "oci:out/base/fedora:rawhide"],
    );
    assert_eq!(code, 0);
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["digest"],
        local["targets"][0]["digest"]
    );

    // 404, 500 and an unreachable host: one line naming the URL, exit 1.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    for (compose, needle) in [
        (
            format!("http://{}/nothing-here", server.addr),
            "STATUS: not found".to_string(),
        ),
        (
            format!("http://{}/fail/rawhide", server.addr),
            "HTTP 500".to_string(),
        ),
        (
            format!("http://{closed}/rawhide"),
            format!("http://{closed}/rawhide/STATUS: cannot fetch"),
        ),
    ] {
        let (code, stdout, stderr) = archgate(dir, &["plan", "-c", &base, "--compose", &compose]);
        assert_eq!(code, 1, "{compose}: {stderr}");
        assert!(stderr.contains(&needle), "{compose}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
        assert!(stdout.is_empty());
    }
}

#[test]
fn a_compose_over_http_streams_into_a_registry() {
    let tmp = setup();
    let dir = tmp.path();
    let (server, log) = support::serve_dir(dir.to_path_buf());
    let reg = support::Registry::start(support::Auth::None);
    let host = reg.host();
    let cfg = dir.join("reg.toml");
    fs::write(
        &cfg,
        format!(
            "[source]\nkind = \"pungi\"\n\n[registry.\"{host}\"]\ntls-verify = false\n\n[[image]]\nname = \"fedora\"\nmatch = {{ subvariant = \"Container_Base\" }}\nrepositories = [\"docker://{host}/fedora\", \"oci:out/http/fedora\"]\ntags = [\"{{release}}\"]\n"
        ),
    )
    .unwrap();
    let cfg = cfg.to_str().unwrap();
    let url = format!("http://{}/rawhide", server.addr);
    let (code, stdout, stderr) = archgate(
        dir,
        &[
            "publish",
            "-v",
            "-c",
            cfg,
            "--compose",
            &url,
            "--format",
            "json",
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("artifact streamed from HTTP"), "{stderr}");
    let r: Value = serde_json::from_str(&stdout).unwrap();
    let raw = support::skopeo_raw(&format!("{host}/fedora:rawhide"), None).expect("published");
    assert_eq!(
        Some(support::sha256(&raw).as_str()),
        r["targets"][0]["digest"].as_str()
    );
    assert_eq!(
        r["targets"][1]["digest"], r["targets"][0]["digest"],
        "the layout target, from the spooled copy"
    );
    let artifacts: Vec<String> = log
        .lock()
        .unwrap()
        .iter()
        .filter(|p| p.ends_with(".oci.tar.xz"))
        .cloned()
        .collect();
    assert_eq!(
        artifacts.len(),
        2,
        "each artifact is downloaded once: {artifacts:?}"
    );
}
