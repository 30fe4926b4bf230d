//! Pungi composes whose metadata productmd itself wrote
//! (`fixtures/real/generate.py`), end to end through the binary: plans
//! snapshotted over layouts, publishes checked in a real registry.

mod support;

use std::fs;
use std::path::Path;

use serde_json::Value;
use support::{
    archgate, archgate_env, index_platforms, registry_tag, registry_tags, Auth, Registry,
};

/// A copy of the committed composes in a temp dir (tests may break them).
fn composes() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/real/data/pungi");
    support::copy_tree(&from, &tmp.path().join("c"));
    tmp
}

const FEDORA: [(&str, &str); 2] = [
    ("fedora", "Container_Base"),
    ("fedora-toolbox", "Container_Toolbox"),
];

/// A config publishing `images` (name, subvariant) to `repo_of(name)`.
fn config(dir: &Path, name: &str, images: &[(&str, &str)], registry: Option<&str>) -> String {
    let mut text = String::from("[source]\nkind = \"pungi\"\n\n");
    if let Some(host) = registry {
        text.push_str(&format!("[registry.\"{host}\"]\ntls-verify = false\n\n"));
    }
    for (image, sub) in images {
        let repo = match registry {
            Some(host) => format!("docker://{host}/{image}"),
            None => format!("oci:out/{name}/{image}"),
        };
        text.push_str(&format!(
            "[[image]]\nname = \"{image}\"\nmatch = {{ subvariant = \"{sub}\" }}\nrepositories = [\"{repo}\"]\ntags = [\"{{release}}\"]\n\n"
        ));
    }
    let path = dir.join(format!("{name}.toml"));
    fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

fn report(dir: &Path, code_ok: &[i32], args: &[&str]) -> (i32, Value) {
    report_env(dir, code_ok, args, &[])
}

fn report_env(dir: &Path, code_ok: &[i32], args: &[&str], env: &[(&str, &str)]) -> (i32, Value) {
    let mut full = args.to_vec();
    full.extend(["--format", "json"]);
    let (code, stdout, stderr) = archgate_env(dir, &full, env);
    assert!(code_ok.contains(&code), "exit {code}: {stderr}");
    let redacted = stdout.replace(&dir.display().to_string(), "[TMP]");
    (
        code,
        serde_json::from_str(&redacted).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}")),
    )
}

fn reasons(target: &Value) -> String {
    target["reasons"].to_string()
}

fn compose(dir: &Path, name: &str) -> String {
    dir.join("c").join(name).to_str().unwrap().to_string()
}

#[test]
fn plans_over_productmd_composes() {
    let tmp = composes();
    let dir = tmp.path();
    let cfg = config(dir, "layout", &FEDORA, None);
    for (name, code) in [
        ("f41-incomplete", 0),
        // These build no toolbox: that image is refused (nothing built).
        ("f41-checksums", 3),
        ("f41-started", 3),
        ("Fedora-Rawhide-20241105.n.0", 3),
        ("f30-armhfp", 3),
    ] {
        let (got, r) = report(
            dir,
            &[code],
            &["plan", "-c", &cfg, "--compose", &compose(dir, name)],
        );
        assert_eq!(got, code, "{name}");
        insta::assert_json_snapshot!(format!("real_{name}"), r);
    }
    // After the first compose is published, the one whose kiwibuild failed
    // as a whole on ppc64le and s390x is refused.
    let (code, _, stderr) = archgate(
        dir,
        &[
            "publish",
            "-c",
            &cfg,
            "--compose",
            &compose(dir, "f41-incomplete"),
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    let (_, r) = report(
        dir,
        &[3],
        &[
            "plan",
            "-c",
            &cfg,
            "--compose",
            &compose(dir, "f41-kiwi-star"),
        ],
    );
    insta::assert_json_snapshot!("real_f41-kiwi-star_after_f41-incomplete", r);
}

#[test]
fn deliverables_in_every_shape_pungi_writes() {
    let tmp = composes();
    let dir = tmp.path();
    let registry = Registry::start(Auth::None);
    let host = registry.host();
    let cfg = config(dir, "reg", &FEDORA, Some(&host));

    // Unrelated failures (Cloud's kiwibuild on "*", a Server live image
    // with no subvariant, an ostree phase with no variant) are ignored;
    // toolbox's own failure on aarch64 explains its missing arch.
    let (code, r) = report(
        dir,
        &[0],
        &[
            "publish",
            "-c",
            &cfg,
            "--compose",
            &compose(dir, "f41-incomplete"),
        ],
    );
    assert_eq!(code, 0);
    let toolbox = &r["targets"][1];
    assert_eq!(support::arch_of(toolbox, "aarch64")["result"], "failed");
    assert!(
        reasons(toolbox).contains("Pungi lists the image-build deliverable Container/aarch64/Container_Toolbox as failed (logs/global/deliverables.json)"),
        "{toolbox}"
    );
    assert!(
        !reasons(&r["targets"][0]).contains("Pungi lists"),
        "{}",
        r["targets"][0]
    );
    let (index, _) = registry_tag(&format!("{host}/fedora:41")).unwrap();
    assert_eq!(
        index_platforms(&index),
        ["linux/amd64", "linux/arm64", "linux/ppc64le", "linux/s390x"]
    );
    let (index, _) = registry_tag(&format!("{host}/fedora-toolbox:41")).unwrap();
    assert_eq!(
        index_platforms(&index),
        ["linux/amd64", "linux/ppc64le", "linux/s390x"]
    );

    // Container's kiwibuild failed as a whole: ["Container", "*", null].
    // Refused: ppc64le and s390x are in the index and failed.
    let before = registry_tag(&format!("{host}/fedora:41")).unwrap().1;
    let (code, r) = report(
        dir,
        &[3],
        &[
            "publish",
            "-c",
            &cfg,
            "--compose",
            &compose(dir, "f41-kiwi-star"),
        ],
    );
    assert_eq!(code, 3);
    let fedora = &r["targets"][0];
    assert_eq!(fedora["decision"], "refused");
    for a in ["ppc64le", "s390x"] {
        assert_eq!(support::arch_of(fedora, a)["result"], "failed");
        assert_eq!(support::arch_of(fedora, a)["action"], "blocked");
    }
    assert!(
        reasons(fedora).contains("Pungi lists the kiwibuild phase as failed on every arch for Container/*/- (logs/global/deliverables.json)"),
        "{fedora}"
    );
    assert_eq!(
        registry_tag(&format!("{host}/fedora:41")).unwrap().1,
        before,
        "not touched"
    );

    // Under `lose`, the index holds what was built, and says what it lost.
    let (code, r) = report(
        dir,
        &[0, 3],
        &[
            "publish",
            "-c",
            &cfg,
            "--compose",
            &compose(dir, "f41-kiwi-star"),
            "--policy",
            "lose",
        ],
    );
    let fedora = &r["targets"][0];
    assert_eq!(fedora["decision"], "published", "exit {code}: {fedora}");
    assert_eq!(support::arch_of(fedora, "s390x")["action"], "lost");
    let (index, digest) = registry_tag(&format!("{host}/fedora:41")).unwrap();
    assert_eq!(Some(digest.as_str()), fedora["digest"].as_str());
    assert_eq!(index_platforms(&index), ["linux/amd64", "linux/arm64"]);
}

#[test]
fn unfinished_composes_need_no_metadata() {
    let tmp = composes();
    let dir = tmp.path();
    let registry = Registry::start(Auth::None);
    let host = registry.host();
    let cfg = config(dir, "reg", &FEDORA, Some(&host));
    for (name, status, id) in [
        ("f41-started", "STARTED", "Fedora-41-20241104.n.0"),
        (
            "Fedora-Rawhide-20241105.n.0",
            "DOOMED",
            "Fedora-Rawhide-20241105.n.0",
        ),
    ] {
        let (code, r) = report(
            dir,
            &[3],
            &["publish", "-c", &cfg, "--compose", &compose(dir, name)],
        );
        assert_eq!(code, 3, "{name}");
        assert_eq!(r["compose"]["status"], status);
        assert_eq!(r["compose"]["id"], id);
        for t in r["targets"].as_array().unwrap() {
            assert_eq!(t["decision"], "refused", "{t}");
            assert!(reasons(t).contains(status), "{t}");
            assert!(t["arch_tags"].as_array().unwrap().is_empty());
        }
    }
    assert!(
        registry_tags(&format!("{host}/fedora")).is_empty(),
        "nothing pushed"
    );

    // A finished compose without its images.json is an error: exit 1.
    let broken = dir.join("c/f41-checksums");
    fs::remove_file(broken.join("compose/metadata/images.json")).unwrap();
    let (code, stdout, stderr) = archgate(
        dir,
        &["publish", "-c", &cfg, "--compose", broken.to_str().unwrap()],
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("compose/metadata/images.json: not found"),
        "{stderr}"
    );
    assert!(stdout.is_empty());
    assert!(registry_tags(&format!("{host}/fedora")).is_empty());
}

#[test]
fn every_checksum_the_metadata_gives_is_checked() {
    let tmp = composes();
    let dir = tmp.path();
    let registry = Registry::start(Auth::None);
    let host = registry.host();
    let cfg = config(dir, "reg", &FEDORA[..1], Some(&host));
    let (code, r) = report(
        dir,
        &[0],
        &[
            "publish",
            "-c",
            &cfg,
            "--compose",
            &compose(dir, "f41-checksums"),
        ],
    );
    assert_eq!(code, 0);
    let t = &r["targets"][0];
    // aarch64: both md5 and sha512 wrong; the strongest (sha512) is checked.
    assert_eq!(support::arch_of(t, "aarch64")["result"], "failed");
    assert!(
        reasons(t).contains("checksum mismatch: the file's sha512 is"),
        "{t}"
    );
    // x86_64 (md5 + sha512) and ppc64le (sha1 only) are right.
    assert_eq!(support::arch_of(t, "x86_64")["action"], "added");
    assert_eq!(support::arch_of(t, "ppc64le")["action"], "added");
    // s390x: no checksum at all; published, and the report says so.
    assert_eq!(support::arch_of(t, "s390x")["action"], "added");
    assert!(
        reasons(t).contains("s390x: compose/metadata/images.json gives no checksum archgate knows (md5, sha1, sha256, sha512) for Container/s390x/images/"),
        "{t}"
    );
    assert_eq!(t["reasons"].as_array().unwrap().len(), 2, "{t}");
    let (index, digest) = registry_tag(&format!("{host}/fedora:41")).unwrap();
    assert_eq!(Some(digest.as_str()), t["digest"].as_str());
    assert_eq!(
        index_platforms(&index),
        ["linux/amd64", "linux/ppc64le", "linux/s390x"]
    );
}

#[test]
fn compose_locations_may_end_in_compose() {
    let tmp = composes();
    let dir = tmp.path();
    let cfg = config(dir, "layout", &FEDORA[..1], None);
    let root = compose(dir, "f41-checksums");
    let (_, by_root) = report(dir, &[0], &["plan", "-c", &cfg, "--compose", &root]);
    let (server, _) = support::serve_dir(dir.join("c"));
    for location in [
        format!("{root}/compose"),
        format!("{root}/compose/"),
        format!("http://{}/f41-checksums/compose", server.addr),
        format!("http://{}/f41-checksums/compose/", server.addr),
        format!("http://{}/f41-checksums", server.addr),
    ] {
        let (_, r) = report(dir, &[0], &["plan", "-c", &cfg, "--compose", &location]);
        assert_eq!(r["compose"], by_root["compose"], "{location}");
        let digests = |r: &Value| -> Vec<Value> {
            r["targets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["digest"].clone())
                .collect()
        };
        assert_eq!(digests(&r), digests(&by_root), "{location}");
    }
    // The DOOMED compose's id comes from its directory, also through /compose.
    let doomed = compose(dir, "Fedora-Rawhide-20241105.n.0");
    fs::create_dir_all(format!("{doomed}/compose")).unwrap();
    let (_, r) = report(
        dir,
        &[3],
        &[
            "plan",
            "-c",
            &cfg,
            "--compose",
            &format!("{doomed}/compose"),
        ],
    );
    assert_eq!(r["compose"]["id"], "Fedora-Rawhide-20241105.n.0");
}

#[test]
fn an_armhfp_image_keeps_its_platform() {
    let tmp = composes();
    let dir = tmp.path();
    let registry = Registry::start(Auth::None);
    let host = registry.host();
    let cfg = config(dir, "reg", &FEDORA[..1], Some(&host));
    let (_, r) = report(
        dir,
        &[0],
        &[
            "publish",
            "-c",
            &cfg,
            "--compose",
            &compose(dir, "f30-armhfp"),
        ],
    );
    assert_eq!(
        support::arch_of(&r["targets"][0], "armhfp")["platform"],
        "linux/arm/v7"
    );
    let (index, _) = registry_tag(&format!("{host}/fedora:30")).unwrap();
    assert_eq!(index_platforms(&index), ["linux/amd64", "linux/arm/v7"]);
    // A re-run finds the same entries: unchanged.
    let (_, r) = report(
        dir,
        &[0],
        &[
            "publish",
            "-c",
            &cfg,
            "--compose",
            &compose(dir, "f30-armhfp"),
        ],
    );
    assert_eq!(r["targets"][0]["decision"], "unchanged");
}

/// archgate's own fault while reading an artifact (here a panic, injected
/// into a debug build) is an error for the image's targets under every
/// policy: never a `failed` arch that `lose` would drop, and nothing pushed.
#[test]
fn a_panicking_reader_is_an_error_not_a_failed_arch() {
    let tmp = composes();
    let dir = tmp.path();
    let registry = Registry::start(Auth::None);
    let host = registry.host();
    let cfg = config(dir, "reg", &FEDORA[..1], Some(&host));
    let (code, _, stderr) = archgate(
        dir,
        &[
            "publish",
            "-c",
            &cfg,
            "--compose",
            &compose(dir, "f41-incomplete"),
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    let tag = |t: &str| registry_tag(&format!("{host}/fedora:{t}")).unwrap().1;
    let before: Vec<String> = ["41", "41-x86_64", "41-aarch64"]
        .iter()
        .map(|t| tag(t))
        .collect();
    let tags_before = registry_tags(&format!("{host}/fedora"));
    for policy in ["refuse", "lose", "hybrid"] {
        let (code, r) = report_env(
            dir,
            &[1],
            &[
                "publish",
                "-c",
                &cfg,
                "--compose",
                &compose(dir, "f41-kiwi-star"),
                "--policy",
                policy,
            ],
            &[
                ("ARCHGATE_TEST_PANIC_READER", "aarch64"),
                ("RUST_BACKTRACE", "0"),
            ],
        );
        assert_eq!(code, 1, "{policy}");
        let t = &r["targets"][0];
        assert_eq!(t["decision"], "error", "{policy}: {t}");
        assert!(t["digest"].is_null());
        assert!(t["arch_tags"].as_array().unwrap().is_empty());
        assert!(
            reasons(t).contains("aarch64: internal error: the artifact reader stopped"),
            "{policy}: {t}"
        );
        assert!(!t["arches"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["result"] == "failed" && a["arch"] == "aarch64"));
        let after: Vec<String> = ["41", "41-x86_64", "41-aarch64"]
            .iter()
            .map(|t| tag(t))
            .collect();
        assert_eq!(after, before, "{policy}: nothing of the target is written");
        assert_eq!(registry_tags(&format!("{host}/fedora")), tags_before);
    }
    // Without the fault the same run goes through (refused: ppc64le and s390x failed).
    let (code, _) = report(
        dir,
        &[3],
        &[
            "publish",
            "-c",
            &cfg,
            "--compose",
            &compose(dir, "f41-kiwi-star"),
        ],
    );
    assert_eq!(code, 3);
}

/// A cache entry that does not parse or make sense (once, `"blobs": []`
/// panicked) is a miss: the archive is read again and nothing changes.
#[test]
fn a_broken_cache_entry_is_a_miss() {
    let tmp = composes();
    let dir = tmp.path();
    let registry = Registry::start(Auth::None);
    let host = registry.host();
    let cfg = config(dir, "reg", &FEDORA[..1], Some(&host));
    let run = || {
        report(
            dir,
            &[0],
            &[
                "publish",
                "-c",
                &cfg,
                "--compose",
                &compose(dir, "f41-incomplete"),
            ],
        )
        .1
    };
    let first = run();
    assert_eq!(first["targets"][0]["decision"], "published");
    let entries: Vec<_> = fs::read_dir(dir.join("cache"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(entries.len(), 4, "one entry per archive");
    for (i, entry) in entries.iter().enumerate() {
        let text = match i % 2 {
            0 => r#"{"digest": "sha256:00", "blobs": [], "layers": [], "config": {}}"#.to_string(),
            _ => "not json at all".to_string(),
        };
        fs::write(entry, text).unwrap();
    }
    let again = run();
    let t = &again["targets"][0];
    assert_eq!(t["decision"], "unchanged", "{t}");
    assert_eq!(t["digest"], first["targets"][0]["digest"]);
    for entry in &entries {
        let v: Value = serde_json::from_slice(&fs::read(entry).unwrap()).expect("rewritten");
        assert!(v["layers"].as_array().is_some_and(|l| !l.is_empty()));
    }
}

/// `examples/fedora.toml` in `dir`, its two registries as layouts there.
fn fedora_example(dir: &Path) -> std::path::PathBuf {
    let example =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/fedora.toml"))
            .unwrap();
    let text = example
        .replace(
            "docker://registry.fedoraproject.org/",
            "oci:out/registry.fedoraproject.org/",
        )
        .replace("docker://quay.io/fedora/", "oci:out/quay.io/fedora/");
    assert_ne!(text, example);
    let cfg = dir.join("fedora.toml");
    fs::write(&cfg, text).unwrap();
    cfg
}

/// `examples/fedora.toml`, Fedora's own mapping, planned over a compose
/// productmd wrote; its two registries stand in as layouts.
#[test]
fn the_fedora_example_plans() {
    let tmp = composes();
    let dir = tmp.path();
    let cfg = fedora_example(dir);
    let cfg = cfg.to_str().unwrap();
    // fedora-minimal is not in this compose: refused, exit 3.
    let (_, r) = report(
        dir,
        &[3],
        &[
            "plan",
            "-c",
            cfg,
            "--compose",
            &format!("{}/compose", compose(dir, "f41-incomplete")),
        ],
    );
    insta::assert_json_snapshot!("fedora_example_f41_incomplete", r);
    let references: Vec<&str> = r["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["reference"].as_str().unwrap())
        .collect();
    assert!(
        references.contains(&"oci:out/quay.io/fedora/fedora:latest"),
        "{references:?}"
    );
    assert!(
        !references.iter().any(|r| r.ends_with(":rawhide")),
        "{references:?}"
    );
}

/// The manifest digest of the one image an archive holds (its
/// `index.json`'s entry), read with xz and tar: what archgate must publish
/// from that file.
fn archive_digest(file: &Path) -> String {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg("xz -dcf \"$1\" | tar -xO index.json")
        .arg("sh")
        .arg(file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let index: Value = serde_json::from_slice(&out.stdout).unwrap();
    index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

/// `examples/fedora.toml` against FIU's own mapping, over a compose that
/// productmd wrote holding every image FIU publishes (each with its real
/// variant, subvariant, type and format; IoT's bootc image beside the base
/// one): every one of the ten repositories, on both registries, gets the
/// image of the subvariant FIU maps to it, read from its own file.
#[test]
fn the_fedora_example_maps_every_image_fiu_publishes() {
    let tmp = composes();
    let dir = tmp.path();
    let cfg = fedora_example(dir);
    let root = compose(dir, "f41-everything");
    let (code, r) = report(
        dir,
        &[0],
        &["plan", "-c", cfg.to_str().unwrap(), "--compose", &root],
    );
    assert_eq!(code, 0, "{r:#}");
    // fedora-image-uploader's [consumer_config.container.repos].
    let fiu = [
        ("Container_Toolbox", "fedora-toolbox"),
        ("Container_Minimal_Base", "fedora-minimal"),
        ("Container_Base", "fedora"),
        ("BaseOS", "eln"),
        ("Silverblue", "fedora-silverblue"),
        ("Kinoite", "fedora-kinoite"),
        ("Onyx", "fedora-budgie-atomic"),
        ("Sericea", "fedora-sway-atomic"),
        ("base", "fedora-bootc"),
        ("IoT", "fedora-iot"),
    ];
    let images: Value = serde_json::from_str(
        &fs::read_to_string(Path::new(&root).join("compose/metadata/images.json")).unwrap(),
    )
    .unwrap();
    let targets = r["targets"].as_array().unwrap();
    let mut seen = 0;
    for (subvariant, repo) in fiu {
        let mut file = None;
        for variant in images["payload"]["images"].as_object().unwrap().values() {
            for entry in variant["x86_64"].as_array().into_iter().flatten() {
                if entry["subvariant"] == subvariant {
                    file = Some(entry["path"].as_str().unwrap().to_string());
                }
            }
        }
        let file = file.unwrap_or_else(|| panic!("no {subvariant} image in the compose"));
        let want = archive_digest(&Path::new(&root).join("compose").join(&file));
        let tag = if repo == "eln" { "latest" } else { "41" };
        for registry in ["registry.fedoraproject.org", "quay.io/fedora"] {
            let reference = format!("oci:out/{registry}/{repo}:{tag}");
            let t = targets
                .iter()
                .find(|t| t["reference"] == reference.as_str())
                .unwrap_or_else(|| panic!("no {reference} in the plan"));
            assert_eq!(t["decision"], "published", "{t:#}");
            assert_eq!(
                support::arch_of(t, "x86_64")["digest"],
                want.as_str(),
                "{reference}: not the {subvariant} image ({file})"
            );
            seen += 1;
        }
    }
    assert_eq!(seen, 20);
}
