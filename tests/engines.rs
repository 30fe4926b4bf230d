//! The same scenarios through the native, skopeo and buildah engines, each
//! against its own real docker-registry: every step must leave the same tags
//! pointing at indexes with the same entries (platforms and child digests).

mod support;

use std::fs;
use std::path::Path;

use archgate_fixtures::{write_dir_compose, ArchFixture, Image};
use serde_json::Value;
use support::{skopeo_raw, Auth, Registry};

fn built(arch: &str, content: &'static str) -> (&'static str, &'static str, ArchFixture<'static>) {
    let arch: &'static str = if arch == "x86_64" {
        "x86_64"
    } else {
        "aarch64"
    };
    (
        "fedora",
        arch,
        ArchFixture::Built(Image::for_arch(arch, content)),
    )
}

fn setup(dir: &Path, host: &str, engine: &str) {
    fs::write(
        dir.join("archgate.toml"),
        format!(
            "[source]\nkind = \"dir\"\nlocation = \"c1\"\n\n[publisher]\nengine = \"{engine}\"\n\n[registry.\"{host}\"]\ntls-verify = false\n\n[[image]]\nname = \"fedora\"\nrepositories = [\"docker://{host}/fedora\"]\ntags = [\"{{release}}\", \"latest\"]\n"
        ),
    )
    .unwrap();
    let failed = (
        "fedora",
        "aarch64",
        ArchFixture::Failed("createImage FAILED"),
    );
    write_dir_compose(
        &dir.join("c1"),
        "T-41-20241101.n.0",
        "FINISHED",
        "41",
        &[built("x86_64", "x1"), built("aarch64", "a1")],
    )
    .unwrap();
    write_dir_compose(
        &dir.join("c2"),
        "T-41-20241102.n.0",
        "FINISHED_INCOMPLETE",
        "41",
        &[built("x86_64", "x2"), failed.clone()],
    )
    .unwrap();
    write_dir_compose(
        &dir.join("c3"),
        "T-41-20241103.n.0",
        "FINISHED_INCOMPLETE",
        "41",
        &[built("x86_64", "x3"), failed],
    )
    .unwrap();
}

/// Per tag, what it holds.
type State = Vec<(String, Vec<String>)>;

/// What the registry holds: per tag, the sorted (platform, digest) entries
/// of an index, or the digest of a single manifest.
fn state(host: &str) -> State {
    let mut out = Vec::new();
    for tag in ["41", "latest", "41-x86_64", "41-aarch64", "latest-x86_64"] {
        let Some(raw) = skopeo_raw(&format!("{host}/fedora:{tag}"), None) else {
            out.push((tag.to_string(), vec!["(none)".to_string()]));
            continue;
        };
        let v: Value = serde_json::from_slice(&raw).unwrap();
        let mut entries: Vec<String> = match v["manifests"].as_array() {
            Some(list) => list
                .iter()
                .map(|d| {
                    format!(
                        "{}/{} {}",
                        d["platform"]["os"].as_str().unwrap(),
                        d["platform"]["architecture"].as_str().unwrap(),
                        d["digest"].as_str().unwrap()
                    )
                })
                .collect(),
            None => vec![format!("manifest {}", support::sha256(&raw))],
        };
        entries.sort();
        out.push((tag.to_string(), entries));
    }
    out
}

/// Runs the scenarios with one engine; returns (decisions, registry state) per step.
fn scenarios(engine: &str) -> Vec<(Vec<String>, State)> {
    let reg = Registry::start(Auth::None);
    let host = reg.host();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    setup(dir, &host, engine);
    let steps: [&[&str]; 5] = [
        &["--compose", "c1"],                       // first publish, two tags
        &["--compose", "c1"],                       // unchanged
        &["--compose", "c2"],                       // refuse
        &["--compose", "c2", "--policy", "hybrid"], // hybrid carries the old aarch64
        &["--compose", "c3", "--policy", "lose"],   // lose drops it
    ];
    let mut out = Vec::new();
    for args in steps {
        let mut full = vec!["publish", "--format", "json"];
        full.extend_from_slice(args);
        let (code, stdout, stderr) = support::archgate(dir, &full);
        assert!(
            code == 0 || code == 3,
            "{engine} {args:?}: exit {code}: {stderr}"
        );
        let r: Value = serde_json::from_str(&stdout).unwrap();
        let decisions = r["targets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["decision"].as_str().unwrap().to_string())
            .collect();
        out.push((decisions, state(&host)));
    }
    out
}

#[test]
fn native_skopeo_and_buildah_leave_the_same_registry_state() {
    let native = scenarios("native");
    assert_eq!(native[0].0, ["published", "published"]);
    assert_eq!(native[1].0, ["unchanged", "unchanged"]);
    assert_eq!(native[2].0, ["refused", "refused"]);
    assert_eq!(native[3].0, ["published", "published"]);
    assert_eq!(native[4].0, ["published", "published"]);
    assert_eq!(native[3].1[0].1.len(), 2, "hybrid: the old aarch64 carried");
    assert_eq!(native[4].1[0].1.len(), 1, "lose: one entry");
    for engine in ["skopeo", "buildah"] {
        let other = scenarios(engine);
        for (step, (a, b)) in native.iter().zip(&other).enumerate() {
            assert_eq!(a, b, "{engine} differs from native at step {step}");
        }
    }
}

#[test]
fn a_missing_tool_is_a_usage_error_naming_the_package() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    setup(dir, "127.0.0.1:1", "buildah");
    let (code, _, stderr) = support::archgate_env(dir, &["plan"], &[("PATH", "/nonexistent")]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("`buildah` is not installed") && stderr.contains("apt-get install buildah"),
        "{stderr}"
    );
}
