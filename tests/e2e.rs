//! End-to-end: the `archgate` binary over dir-source composes and `oci:`
//! layout targets, checked by reading the layouts (with archgate's reader
//! and with skopeo), not the logs.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use archgate_fixtures::{write_dir_compose, write_layout, ArchFixture, Image};
use serde_json::Value;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn archgate(dir: &Path, args: &[&str]) -> Run {
    let (code, stdout, stderr) = support::archgate(dir, args);
    Run {
        code,
        stdout,
        stderr,
    }
}

fn json(run: &Run) -> Value {
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}\nstderr: {}",
            run.stdout, run.stderr
        )
    })
}

/// A work dir with a config; composes are added per test.
struct Work {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
}

impl Work {
    fn new(config_extra: &str) -> Work {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        fs::write(
            dir.join("archgate.toml"),
            format!(
                "[source]\nkind = \"dir\"\nlocation = \"c1\"\n\n{config_extra}\n[[image]]\nname = \"fedora\"\nrepositories = [\"oci:out/fedora\"]\ntags = [\"{{release}}\", \"latest\"]\n"
            ),
        )
        .unwrap();
        Work { _tmp: tmp, dir }
    }

    fn compose(&self, name: &str, status: &str, arches: &[(&str, ArchFixture<'_>)]) {
        let arches: Vec<(&str, &str, ArchFixture<'_>)> = arches
            .iter()
            .map(|(a, f)| ("fedora", *a, f.clone()))
            .collect();
        write_dir_compose(
            &self.dir.join(name),
            &format!("Test-41-20241101.n.{}", name.len()),
            status,
            "41",
            &arches,
        )
        .unwrap();
    }

    fn run(&self, args: &[&str]) -> Run {
        archgate(&self.dir, args)
    }

    fn out(&self) -> PathBuf {
        self.dir.join("out/fedora")
    }

    fn index_json(&self) -> Vec<u8> {
        fs::read(self.out().join("index.json")).unwrap()
    }

    /// tag → digest, from the target layout's index.json.
    fn tags(&self) -> Vec<(String, String)> {
        let index: Value = serde_json::from_slice(&self.index_json()).unwrap();
        let mut tags: Vec<(String, String)> = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                (
                    d["annotations"]["org.opencontainers.image.ref.name"]
                        .as_str()
                        .unwrap()
                        .to_string(),
                    d["digest"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        tags.sort();
        tags
    }

    fn tag(&self, tag: &str) -> Option<String> {
        self.tags()
            .into_iter()
            .find(|(t, _)| t == tag)
            .map(|(_, d)| d)
    }

    /// (platform, digest) of the entries of the index a tag points to, read by skopeo.
    fn skopeo_entries(&self, tag: &str) -> Vec<(String, String)> {
        let raw = skopeo(&[
            "inspect",
            "--raw",
            &format!("oci:{}:{tag}", self.out().display()),
        ]);
        let index: Value = serde_json::from_str(&raw).unwrap();
        index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                let p = &d["platform"];
                (
                    format!(
                        "{}/{}",
                        p["os"].as_str().unwrap(),
                        p["architecture"].as_str().unwrap()
                    ),
                    d["digest"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }
}

fn skopeo(args: &[&str]) -> String {
    let out = Command::new("skopeo")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("skopeo is needed by this test and could not run ({e}); install it: apt-get install skopeo"));
    assert!(
        out.status.success(),
        "skopeo {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn built<'a>(arch: &str, content: &'a str) -> ArchFixture<'a> {
    ArchFixture::Built(Image::for_arch(arch, content))
}

fn arch_digest(report: &Value, target: usize, arch: &str) -> Value {
    report["targets"][target]["arches"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["arch"] == arch)
        .unwrap()
        .clone()
}

/// Two builds of x86_64 and aarch64 published, then the second compose.
fn published_then(
    second: &[(&str, ArchFixture<'_>)],
    status: &str,
    args: &[&str],
) -> (Work, Value, Run) {
    let w = Work::new("");
    w.compose(
        "c1",
        "FINISHED",
        &[
            ("x86_64", built("x86_64", "x1")),
            ("aarch64", built("aarch64", "a1")),
        ],
    );
    w.compose("c2", status, second);
    let first = w.run(&["publish", "--format", "json"]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    let mut full = vec!["publish", "--compose", "c2"];
    full.extend_from_slice(args);
    if !args.contains(&"--format") {
        full.extend(["--format", "json"]);
    }
    // --compose is relative to the working directory.
    let second = w.run(&full);
    (w, json(&first), second)
}

#[test]
fn demo_publishes_then_refuses() {
    let tmp = tempfile::tempdir().unwrap();
    archgate_fixtures::write_demo(tmp.path()).unwrap();
    let cfg = tmp.path().join("archgate.toml");
    let cfg = cfg.to_str().unwrap();
    let c2 = tmp.path().join("compose-2");

    let first = archgate(tmp.path(), &["publish", "-c", cfg, "--format", "json"]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    let report = json(&first);
    insta::assert_json_snapshot!("demo_compose_1", report);
    let out = tmp.path().join("out/fedora");
    let digest = report["targets"][0]["digest"].as_str().unwrap();
    let raw = skopeo(&["inspect", "--raw", &format!("oci:{}:41", out.display())]);
    assert_eq!(
        archgate_native::sha256_digest(raw.as_bytes()),
        digest,
        "skopeo reads the index archgate reported"
    );
    let index_before = fs::read(out.join("index.json")).unwrap();

    let second = archgate(
        tmp.path(),
        &[
            "publish",
            "-c",
            cfg,
            "--compose",
            c2.to_str().unwrap(),
            "--format",
            "json",
        ],
    );
    assert_eq!(second.code, 3, "{}", second.stderr);
    let report2 = json(&second);
    insta::assert_json_snapshot!("demo_compose_2", report2);
    let after: Value = serde_json::from_slice(&fs::read(out.join("index.json")).unwrap()).unwrap();
    let before: Value = serde_json::from_slice(&index_before).unwrap();
    let tag_digest = |v: &Value, tag: &str| {
        v["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["annotations"]["org.opencontainers.image.ref.name"] == tag)
            .map(|d| d["digest"].clone())
    };
    assert_eq!(
        tag_digest(&after, "41"),
        tag_digest(&before, "41"),
        "refuse leaves the index tag as it was"
    );
    assert_ne!(
        tag_digest(&after, "41-x86_64"),
        tag_digest(&before, "41-x86_64"),
        "the built arch tag moves on"
    );
    assert_eq!(
        tag_digest(&after, "41-aarch64"),
        tag_digest(&before, "41-aarch64")
    );
}

#[test]
fn text_output_is_one_line_per_arch() {
    let (_w, _, second) = published_then(
        &[
            ("x86_64", built("x86_64", "x2")),
            ("aarch64", ArchFixture::Failed("oom")),
        ],
        "FINISHED_INCOMPLETE",
        &["--format", "text"],
    );
    assert_eq!(second.code, 3);
    let lines: Vec<&str> = second.stdout.lines().collect();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("refused   oci:out/fedora:41 ")),
        "{}",
        second.stdout
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("  aarch64  linux/arm64    failed  blocked")),
        "{}",
        second.stdout
    );
    assert!(second
        .stdout
        .contains("because aarch64 is in the current index but failed in this compose: oom"));
}

#[test]
fn lose_drops_the_failed_arch() {
    let (w, first, second) = published_then(
        &[
            ("x86_64", built("x86_64", "x2")),
            ("aarch64", ArchFixture::Failed("oom")),
        ],
        "FINISHED_INCOMPLETE",
        &["--policy", "lose"],
    );
    assert_eq!(second.code, 0, "{}", second.stderr);
    let r = json(&second);
    assert_eq!(r["targets"][0]["decision"], "published");
    assert_eq!(arch_digest(&r, 0, "aarch64")["action"], "lost");
    assert_eq!(
        arch_digest(&r, 0, "aarch64")["digest"],
        arch_digest(&first, 0, "aarch64")["digest"]
    );
    let entries = w.skopeo_entries("41");
    assert_eq!(
        entries,
        vec![(
            "linux/amd64".to_string(),
            arch_digest(&r, 0, "x86_64")["digest"]
                .as_str()
                .unwrap()
                .to_string()
        )]
    );
    assert_eq!(w.tag("41").as_deref(), r["targets"][0]["digest"].as_str());
    assert_eq!(
        w.tag("latest").as_deref(),
        r["targets"][1]["digest"].as_str()
    );
}

#[test]
fn hybrid_carries_the_old_entry() {
    let (w, first, second) = published_then(
        &[
            ("x86_64", built("x86_64", "x2")),
            ("aarch64", ArchFixture::Failed("oom")),
        ],
        "FINISHED_INCOMPLETE",
        &["--policy", "hybrid"],
    );
    assert_eq!(second.code, 0, "{}", second.stderr);
    let r = json(&second);
    assert_eq!(arch_digest(&r, 0, "aarch64")["action"], "carried");
    let old_aarch64 = arch_digest(&first, 0, "aarch64")["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let new_x86 = arch_digest(&r, 0, "x86_64")["digest"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(
        new_x86,
        arch_digest(&first, 0, "x86_64")["digest"].as_str().unwrap()
    );
    assert_eq!(
        w.skopeo_entries("41"),
        vec![
            ("linux/amd64".into(), new_x86),
            ("linux/arm64".into(), old_aarch64)
        ]
    );
}

#[test]
fn unchanged_rerun_writes_nothing() {
    let w = Work::new("");
    w.compose(
        "c1",
        "FINISHED",
        &[
            ("x86_64", built("x86_64", "x1")),
            ("aarch64", built("aarch64", "a1")),
        ],
    );
    assert_eq!(w.run(&["publish"]).code, 0);
    let before = w.index_json();
    let mtime = fs::metadata(w.out().join("index.json"))
        .unwrap()
        .modified()
        .unwrap();
    let again = w.run(&["publish", "--format", "json"]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    let r = json(&again);
    for t in 0..2 {
        assert_eq!(r["targets"][t]["decision"], "unchanged");
        assert_eq!(
            r["targets"][t]["digest"],
            r["targets"][t]["previous_digest"]
        );
    }
    assert_eq!(w.index_json(), before);
    assert_eq!(
        fs::metadata(w.out().join("index.json"))
            .unwrap()
            .modified()
            .unwrap(),
        mtime
    );
}

#[test]
fn plan_and_dry_run_write_nothing_and_agree_with_publish() {
    let w = Work::new("");
    w.compose(
        "c1",
        "FINISHED",
        &[
            ("x86_64", built("x86_64", "x1")),
            ("aarch64", built("aarch64", "a1")),
        ],
    );
    let plan = w.run(&["plan", "--format", "json"]);
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    let dry = w.run(&["publish", "--dry-run", "--format", "json"]);
    assert_eq!(dry.code, 0);
    assert!(
        !w.dir.join("out").exists(),
        "plan and dry run must not write"
    );
    let plan = json(&plan);
    assert_eq!(plan["dry_run"], true);
    assert_eq!(plan, json(&dry));
    let real = w.run(&["publish", "--format", "json", "--report", "report.json"]);
    assert_eq!(real.code, 0);
    let real = json(&real);
    let file: Value =
        serde_json::from_slice(&fs::read(w.dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(real, file);
    for t in 0..2 {
        assert_eq!(
            plan["targets"][t]["digest"], real["targets"][t]["digest"],
            "a plan's digest is the one publish writes"
        );
        assert_eq!(
            w.tag(if t == 0 { "41" } else { "latest" }).as_deref(),
            real["targets"][t]["digest"].as_str()
        );
    }
    // A plan of the refusal exits like the publish would.
    w.compose("c2", "FINISHED", &[("x86_64", built("x86_64", "x2"))]);
    let before = w.index_json();
    assert_eq!(w.run(&["plan", "--compose", "c2"]).code, 3);
    assert_eq!(w.index_json(), before);
}

#[test]
fn unfinished_compose_pushes_nothing_at_all() {
    for status in ["STARTED", "DOOMED", "TERMINATED"] {
        let w = Work::new("");
        w.compose("c1", status, &[("x86_64", built("x86_64", "x1"))]);
        let r = w.run(&["publish", "--format", "json"]);
        assert_eq!(r.code, 3, "{status}: {}", r.stderr);
        let r = json(&r);
        assert_eq!(r["targets"][0]["decision"], "refused");
        assert_eq!(r["targets"][0]["arch_tags"], Value::Array(vec![]));
        assert!(
            !w.dir.join("out").exists(),
            "{status}: a hard refusal writes nothing"
        );
    }
}

#[test]
fn artifact_for_another_arch_fails_that_arch() {
    let (w, _, second) = published_then(
        &[
            ("x86_64", built("x86_64", "x2")),
            ("aarch64", built("x86_64", "mislabelled")),
        ],
        "FINISHED",
        &[],
    );
    assert_eq!(second.code, 3, "{}", second.stderr);
    let r = json(&second);
    let a = arch_digest(&r, 0, "aarch64");
    assert_eq!(
        (a["result"].as_str(), a["action"].as_str()),
        (Some("failed"), Some("blocked"))
    );
    let reasons = r["targets"][0]["reasons"].to_string();
    assert!(reasons.contains("c2/fedora/aarch64: its config says linux/amd64 (x86_64), but it was delivered as aarch64"), "{reasons}");
    assert!(w.tag("41-aarch64").is_some());
}

#[test]
fn corrupt_blob_fails_that_arch() {
    let w = Work::new("");
    w.compose(
        "c1",
        "FINISHED",
        &[
            ("x86_64", built("x86_64", "x1")),
            ("aarch64", built("aarch64", "a1")),
        ],
    );
    // Damage the aarch64 layer.
    let blobs = w.dir.join("c1/fedora/aarch64/blobs/sha256");
    let manifest: Value = {
        let index: Value =
            serde_json::from_slice(&fs::read(w.dir.join("c1/fedora/aarch64/index.json")).unwrap())
                .unwrap();
        let d = index["manifests"][0]["digest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:")
            .to_string();
        serde_json::from_slice(&fs::read(blobs.join(d)).unwrap()).unwrap()
    };
    let layer = manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let mut bytes = fs::read(blobs.join(&layer)).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    fs::write(blobs.join(&layer), bytes).unwrap();

    let r = w.run(&["publish", "--format", "json"]);
    assert_eq!(
        r.code, 0,
        "first publish goes ahead with what was built: {}",
        r.stderr
    );
    let r = json(&r);
    let a = arch_digest(&r, 0, "aarch64");
    assert_eq!(
        (a["result"].as_str(), a["action"].as_str()),
        (Some("failed"), Some("none"))
    );
    assert!(r["targets"][0]["reasons"]
        .to_string()
        .contains("content is sha256:"));
    assert_eq!(w.skopeo_entries("41").len(), 1);
}

#[test]
fn unreadable_artifact_fails_that_arch() {
    let w = Work::new("");
    w.compose(
        "c1",
        "FINISHED",
        &[
            ("x86_64", built("x86_64", "x1")),
            ("aarch64", built("aarch64", "a1")),
        ],
    );
    assert_eq!(w.run(&["publish"]).code, 0);
    w.compose(
        "c2",
        "FINISHED",
        &[
            ("x86_64", built("x86_64", "x2")),
            ("aarch64", built("aarch64", "a2")),
        ],
    );
    fs::write(w.dir.join("c2/fedora/aarch64/index.json"), "{ not json").unwrap();
    let before = w.tag("41");
    let r = w.run(&["publish", "--compose", "c2", "--format", "json"]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    let reasons = json(&r)["targets"][0]["reasons"].to_string();
    assert!(
        reasons.contains("c2/fedora/aarch64/index.json: not a valid OCI index"),
        "{reasons}"
    );
    assert_eq!(w.tag("41"), before);
}

#[test]
fn current_single_arch_manifest_becomes_an_index() {
    let w = Work::new("");
    w.compose(
        "c1",
        "FINISHED",
        &[
            ("x86_64", built("x86_64", "x1")),
            ("aarch64", built("aarch64", "a1")),
        ],
    );
    // The target holds a single x86_64 manifest tagged 41, as a layout build leaves it.
    let old = write_layout(&w.out(), &Image::for_arch("x86_64", "old single")).unwrap();
    let index = fs::read_to_string(w.out().join("index.json"))
        .unwrap()
        .replace("\"latest\"", "\"41\"");
    fs::write(w.out().join("index.json"), index).unwrap();
    let r = w.run(&["publish", "--format", "json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = json(&r);
    assert_eq!(r["targets"][0]["previous_digest"], old.as_str());
    assert_eq!(arch_digest(&r, 0, "x86_64")["action"], "updated");
    assert_eq!(arch_digest(&r, 0, "aarch64")["action"], "added");
    assert_eq!(w.skopeo_entries("41").len(), 2);
}

#[test]
fn retired_and_required_arches() {
    let w = Work::new("[gate]\nretired-arches = [\"aarch64\"]\n");
    w.compose(
        "c1",
        "FINISHED",
        &[
            ("x86_64", built("x86_64", "x1")),
            ("aarch64", built("aarch64", "a1")),
        ],
    );
    w.compose("c2", "FINISHED", &[("x86_64", built("x86_64", "x2"))]);
    assert_eq!(w.run(&["publish"]).code, 0);
    let r = w.run(&["publish", "--compose", "c2", "--format", "json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(arch_digest(&json(&r), 0, "aarch64")["action"], "dropped");
    assert_eq!(w.skopeo_entries("41").len(), 1);

    let w = Work::new("[gate]\nrequired-arches = [\"aarch64\"]\npolicy = \"lose\"\n");
    w.compose(
        "c1",
        "FINISHED",
        &[
            ("x86_64", built("x86_64", "x1")),
            ("aarch64", ArchFixture::Failed("oom")),
        ],
    );
    let r = w.run(&["publish", "--format", "json"]);
    assert_eq!(r.code, 3);
    assert!(json(&r)["targets"][0]["reasons"]
        .to_string()
        .contains("aarch64 is a required arch"));
    assert!(!w.dir.join("out").exists());
}

#[test]
fn skopeo_copies_the_published_index() {
    let w = Work::new("");
    w.compose(
        "c1",
        "FINISHED",
        &[
            ("x86_64", built("x86_64", "x1")),
            ("aarch64", built("aarch64", "a1")),
        ],
    );
    assert_eq!(w.run(&["publish"]).code, 0);
    let dest = w.dir.join("copy");
    skopeo(&[
        "copy",
        "--all",
        &format!("oci:{}:41", w.out().display()),
        &format!("oci:{}:41", dest.display()),
    ]);
    let copied = skopeo(&["inspect", "--raw", &format!("oci:{}:41", dest.display())]);
    let copied: Value = serde_json::from_str(&copied).unwrap();
    let digests: Vec<&str> = copied["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["digest"].as_str().unwrap())
        .collect();
    let ours: Vec<String> = w.skopeo_entries("41").into_iter().map(|(_, d)| d).collect();
    assert_eq!(
        digests, ours,
        "skopeo copy keeps the manifests archgate wrote"
    );
    let arch = skopeo(&["inspect", &format!("oci:{}:41-aarch64", w.out().display())]);
    assert!(arch.contains("\"Architecture\": \"arm64\""), "{arch}");
}

#[test]
fn bad_input_is_one_line_and_writes_nothing() {
    let w = Work::new("");
    w.compose("c1", "FINISHED", &[("x86_64", built("x86_64", "x1"))]);
    let cfg = fs::read_to_string(w.dir.join("archgate.toml")).unwrap();
    let cases: Vec<(&str, String, i32, &str)> = vec![
        ("missing config", String::new(), 2, "nope.toml: cannot read"),
        ("unknown key", cfg.replace("tags =", "tagz ="), 2, "bad.toml:9: unknown field `tagz`"),
        ("unknown policy", format!("{cfg}policy = \"yolo\"\n"), 2, "unknown variant `yolo`, expected one of `refuse`, `lose`, `hybrid` (key `image[0].policy`)"),
        ("unknown arch", format!("{cfg}arches = [\"arm64\"]\n"), 2, "unknown arch `arm64`"),
        ("empty tags", cfg.replace("[\"{release}\", \"latest\"]", "[]"), 2, "`tags` is empty"),
        ("missing compose", cfg.replace("location = \"c1\"", "location = \"c9\""), 1, "c9 does not exist"),
    ];
    for (what, text, code, needle) in cases {
        let args: Vec<&str> = if text.is_empty() {
            vec!["publish", "-c", "nope.toml"]
        } else {
            fs::write(w.dir.join("bad.toml"), &text).unwrap();
            vec!["publish", "-c", "bad.toml"]
        };
        let r = w.run(&args);
        assert_eq!(r.code, code, "{what}: {}", r.stderr);
        assert!(r.stderr.contains(needle), "{what}: {}", r.stderr);
        assert_eq!(
            r.stderr.trim_end().lines().count(),
            1,
            "{what}: one line: {}",
            r.stderr
        );
        assert!(r.stdout.is_empty(), "{what}: nothing on stdout");
        assert!(!w.dir.join("out").exists(), "{what}: nothing written");
    }
    // Bad usage.
    assert_eq!(w.run(&["publish", "--policy", "yolo"]).code, 2);
    assert_eq!(w.run(&["frobnicate"]).code, 2);

    // A target layout whose index.json is not JSON: that target is in error, exit 1.
    fs::create_dir_all(w.out()).unwrap();
    fs::write(w.out().join("index.json"), "garbage").unwrap();
    let r = w.run(&["publish", "--format", "json"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let report = json(&r);
    assert_eq!(report["targets"][0]["decision"], "error");
    assert!(report["targets"][0]["reasons"]
        .to_string()
        .contains("out/fedora/index.json: not a valid OCI index"));
    assert_eq!(
        fs::read_to_string(w.out().join("index.json")).unwrap(),
        "garbage"
    );
}

#[test]
fn inspect_shows_digest_and_entries() {
    let w = Work::new("");
    w.compose(
        "c1",
        "FINISHED",
        &[
            ("x86_64", built("x86_64", "x1")),
            ("aarch64", built("aarch64", "a1")),
        ],
    );
    let published = json(&w.run(&["publish", "--format", "json"]));
    let r = w.run(&["inspect", "oci:out/fedora:41", "--format", "json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v = json(&r);
    assert_eq!(v["digest"], published["targets"][0]["digest"]);
    assert_eq!(v["media_type"], "application/vnd.oci.image.index.v1+json");
    let platforms: Vec<&str> = v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["platform"].as_str().unwrap())
        .collect();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64"]);
    let text = w.run(&["inspect", "oci:out/fedora:41-x86_64"]);
    assert!(
        text.stdout
            .contains("application/vnd.oci.image.manifest.v1+json"),
        "{}",
        text.stdout
    );
    assert_eq!(w.run(&["inspect", "oci:out/fedora:42"]).code, 1);
    assert_eq!(w.run(&["inspect", "not a reference"]).code, 2);
}

/// Compose order (docs/gate.md): once a tag holds a compose, an older one
/// is refused there as `stale` (nothing written, arch tags neither), in
/// `plan` as in `publish`; `--allow-older` rolls back on purpose.
#[test]
fn an_older_compose_never_moves_a_tag_back() {
    let w = Work::new("");
    let compose = |name: &str, id: &str, arches: &[(&str, &str)]| {
        let arches: Vec<(&str, &str, ArchFixture<'_>)> = arches
            .iter()
            .map(|(a, c)| ("fedora", *a, built(a, c)))
            .collect();
        write_dir_compose(&w.dir.join(name), id, "FINISHED", "41", &arches).unwrap();
    };
    compose(
        "new",
        "Test-41-20241102.n.0",
        &[("x86_64", "x2"), ("aarch64", "a2"), ("s390x", "s2")],
    );
    compose(
        "old",
        "Test-41-20241101.n.0",
        &[("x86_64", "x1"), ("aarch64", "a1")],
    );
    let newer = w.run(&["publish", "--compose", "new"]);
    assert_eq!(newer.code, 0, "{}", newer.stderr);
    let before = w.tags();
    let index: Value = serde_json::from_str(&skopeo(&[
        "inspect",
        "--raw",
        &format!("oci:{}:41", w.out().display()),
    ]))
    .unwrap();
    assert_eq!(
        index["annotations"]["dev.archgate.compose"],
        "Test-41-20241102.n.0"
    );

    for cmd in ["plan", "publish"] {
        let r = w.run(&[cmd, "--compose", "old", "--format", "json"]);
        assert_eq!(r.code, 3, "{cmd}: {}", r.stderr);
        for t in json(&r)["targets"].as_array().unwrap() {
            assert_eq!(t["decision"], "refused", "{cmd}: {t}");
            assert_eq!(t["stale"], true, "{cmd}: {t}");
            assert_eq!(t["arch_tags"], serde_json::json!([]), "{t}");
            let why = t["reasons"].to_string();
            assert!(
                why.contains("stale")
                    && why.contains("Test-41-20241102.n.0")
                    && why.contains("Test-41-20241101.n.0"),
                "{why}"
            );
        }
        assert_eq!(
            w.tags(),
            before,
            "{cmd}: nothing written, arch tags neither"
        );
    }

    // An intended rollback (dropping s390x on purpose).
    let back = w.run(&[
        "publish",
        "--compose",
        "old",
        "--allow-older",
        "--policy",
        "lose",
        "--format",
        "json",
    ]);
    assert_eq!(back.code, 0, "{}", back.stderr);
    let t = &json(&back)["targets"][0];
    assert_eq!(
        (&t["decision"], &t["stale"]),
        (&"published".into(), &false.into())
    );
    let index: Value = serde_json::from_str(&skopeo(&[
        "inspect",
        "--raw",
        &format!("oci:{}:41", w.out().display()),
    ]))
    .unwrap();
    assert_eq!(
        index["annotations"]["dev.archgate.compose"],
        "Test-41-20241101.n.0"
    );
    // And forward again: the newer compose is newer than what the tag holds.
    let again = w.run(&["publish", "--compose", "new", "--policy", "lose"]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_eq!(w.tags(), before, "the same index as the first time");
}

/// Another tool's entry on a platform that is no compose arch (here
/// linux/loong64, added to the index by hand) is an arch of X: refused by
/// `refuse`, reported `lost` by `lose`, carried by `hybrid`.
#[test]
fn an_entry_of_no_compose_arch_is_never_dropped_silently() {
    let (w, _, second) = published_then(
        &[
            ("x86_64", built("x86_64", "x1")),
            ("aarch64", built("aarch64", "a1")),
        ],
        "FINISHED",
        &[],
    );
    assert_eq!(second.code, 0, "{}", second.stderr);
    // Add a loong64 entry to the index under 41 (its manifest is x86_64's:
    // the index's platform is what the gate reads).
    let layout = w.out();
    let blob = |d: &str| layout.join("blobs/sha256").join(&d[7..]);
    let tag41 = w.tag("41").unwrap();
    let mut index: Value = serde_json::from_slice(&fs::read(blob(&tag41)).unwrap()).unwrap();
    let mut loong = index["manifests"][0].clone();
    loong["platform"] = serde_json::json!({"os": "linux", "architecture": "loong64"});
    index["manifests"].as_array_mut().unwrap().push(loong);
    let bytes = serde_json::to_vec(&index).unwrap();
    let digest = support::sha256(&bytes);
    fs::write(blob(&digest), &bytes).unwrap();
    let text = String::from_utf8(w.index_json()).unwrap();
    let mut top: Value = serde_json::from_str(&text.replace(&tag41, &digest)).unwrap();
    for m in top["manifests"].as_array_mut().unwrap() {
        if m["digest"] == digest {
            m["size"] = bytes.len().into();
        }
    }
    fs::write(layout.join("index.json"), serde_json::to_vec(&top).unwrap()).unwrap();
    w.compose(
        "c3",
        "FINISHED",
        &[
            ("x86_64", built("x86_64", "x3")),
            ("aarch64", built("aarch64", "a3")),
        ],
    );
    let row = |r: &Value| {
        r["targets"][0]["arches"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["arch"] == "linux/loong64")
            .cloned()
            .unwrap_or_else(|| panic!("no loong64 row: {r}"))
    };
    let refused = w.run(&["publish", "--compose", "c3", "--format", "json"]);
    assert_eq!(refused.code, 3, "{}", refused.stderr);
    let r = json(&refused);
    assert_eq!(row(&r)["action"], "blocked");
    assert!(r["targets"][0]["reasons"]
        .to_string()
        .contains("linux/loong64 is in the current index"));
    for (policy, action) in [("hybrid", "carried"), ("lose", "lost")] {
        let r = w.run(&[
            "plan",
            "--compose",
            "c3",
            "--policy",
            policy,
            "--format",
            "json",
        ]);
        assert_eq!(r.code, 0, "{policy}: {}", r.stderr);
        let r = json(&r);
        assert_eq!(row(&r)["action"], action, "{policy}");
        assert_eq!(row(&r)["platform"], "linux/loong64");
    }
    let kept = w.run(&["publish", "--compose", "c3", "--policy", "hybrid"]);
    assert_eq!(kept.code, 0, "{}", kept.stderr);
    let platforms: Vec<String> = w.skopeo_entries("41").into_iter().map(|(p, _)| p).collect();
    assert!(
        platforms.contains(&"linux/loong64".to_string()),
        "{platforms:?}"
    );
}
