//! The `registry` source against a real registry (Debian's
//! `docker-registry`): per-platform images pushed by skopeo, as a CI
//! pipeline's per-platform jobs push them, then merged by archgate. The
//! tests assert what the registry holds afterwards.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use archgate_fixtures::{write_layout, Image};
use serde_json::Value;
use support::{archgate, index_platforms, registry_tag, Auth, Registry};

/// Pushes a fixture image for `arch` with skopeo under `repo:tag` (as a
/// platform's job does): its manifest digest.
fn push(dir: &Path, registry: &Registry, repo: &str, tag: &str, image: &Image) -> String {
    let layout = dir.join(format!("layout-{repo}-{tag}").replace('/', "_"));
    write_layout(&layout, image).unwrap();
    let digestfile = dir.join("digest");
    let out = Command::new("skopeo")
        .args(["copy", "--quiet", "--dest-tls-verify=false", "--digestfile"])
        .arg(&digestfile)
        .arg(format!("oci:{}", layout.display()))
        .arg(format!("docker://{}/{repo}:{tag}", registry.host()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    fs::read_to_string(&digestfile).unwrap().trim().to_string()
}

/// A digests directory as build-push-action's pattern leaves it: one
/// empty file per pushed image, named by its digest's hex.
fn digests_dir(dir: &Path, name: &str, digests: &[&str]) -> PathBuf {
    let d = dir.join(name);
    fs::create_dir_all(&d).unwrap();
    for digest in digests {
        fs::write(d.join(digest.trim_start_matches("sha256:")), "").unwrap();
    }
    d
}

fn config(dir: &Path, registry: &Registry, source: &str, policy: &str) -> PathBuf {
    let host = registry.host();
    let path = dir.join(format!("archgate-{policy}.toml"));
    fs::write(
        &path,
        format!(
            "[source]\nkind = \"registry\"\n{source}\n\n[registry.\"{host}\"]\ntls-verify = false\n\n[gate]\npolicy = \"{policy}\"\n\n[[image]]\nname = \"app\"\nrepositories = [\"docker://{host}/app\"]\ntags = [\"{{release}}\", \"latest\"]\n"
        ),
    )
    .unwrap();
    path
}

fn run(dir: &Path, cfg: &Path, extra: &[&str]) -> (i32, Value, String) {
    let mut args = vec!["publish", "-c", cfg.to_str().unwrap(), "--format", "json"];
    args.extend_from_slice(extra);
    let (code, out, err) = archgate(dir, &args);
    let report = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}\n{err}"));
    (code, report, err)
}

fn decision(report: &Value, tag: &str) -> String {
    report["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| {
            t["reference"]
                .as_str()
                .unwrap()
                .ends_with(&format!(":{tag}"))
        })
        .map(|t| t["decision"].as_str().unwrap().to_string())
        .unwrap_or_default()
}

const ARCHES: [&str; 4] = ["x86_64", "aarch64", "ppc64le", "s390x"];

/// Build 1 of all four platforms, merged; build 2 with aarch64's job
/// failed (no digest file): `refuse` keeps build 1's index, `hybrid`
/// carries its aarch64 entry beside build 2's three, `lose` drops it on
/// purpose.
#[test]
fn a_digests_directory_with_one_platform_missing() {
    let registry = Registry::start(Auth::None);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let host = registry.host();
    let mut first = Vec::new();
    for arch in ARCHES {
        first.push(push(
            dir,
            &registry,
            "ci/app",
            &format!("b1-{arch}"),
            &Image::for_arch(arch, &format!("{arch}-1")),
        ));
    }
    let refs: Vec<&str> = first.iter().map(String::as_str).collect();
    let d1 = digests_dir(dir, "digests-1", &refs);
    let source = |d: &Path| {
        format!(
            "location = \"{}\"\nrepository = \"{host}/ci/app\"\narches = [\"x86_64\", \"aarch64\", \"ppc64le\", \"s390x\"]\nversion = \"1.0\"\n",
            d.display()
        )
    };
    let cfg = config(dir, &registry, &source(&d1), "refuse");
    let (code, report, err) = run(dir, &cfg, &["--build-id", "1"]);
    assert_eq!(code, 0, "{report}\n{err}");
    let (index, v1) = registry_tag(&format!("{host}/app:1.0")).unwrap();
    assert_eq!(index_platforms(&index).len(), 4, "{index}");
    assert_eq!(index["annotations"]["dev.archgate.compose"], "build-1");
    // The entries are the pushed images themselves.
    let mut digests: Vec<String> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["digest"].as_str().unwrap().to_string())
        .collect();
    digests.sort();
    let mut pushed = first.clone();
    pushed.sort();
    assert_eq!(digests, pushed);

    let mut second = Vec::new();
    for arch in ["x86_64", "ppc64le", "s390x"] {
        second.push(push(
            dir,
            &registry,
            "ci/app",
            &format!("b2-{arch}"),
            &Image::for_arch(arch, &format!("{arch}-2")),
        ));
    }
    let refs: Vec<&str> = second.iter().map(String::as_str).collect();
    let d2 = digests_dir(dir, "digests-2", &refs);
    let cfg = config(dir, &registry, &source(&d2), "refuse");
    let (_, report, err) = run(dir, &cfg, &["--build-id", "2"]);
    assert_eq!(decision(&report, "1.0"), "refused", "{report}\n{err}");
    assert_eq!(registry_tag(&format!("{host}/app:1.0")).unwrap().1, v1);

    let cfg = config(dir, &registry, &source(&d2), "hybrid");
    let (_, report, err) = run(dir, &cfg, &["--build-id", "2"]);
    assert_eq!(decision(&report, "1.0"), "published", "{report}\n{err}");
    let (index, _) = registry_tag(&format!("{host}/app:1.0")).unwrap();
    let entries = index["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 4, "{index}");
    let aarch64 = entries
        .iter()
        .find(|m| m["platform"]["architecture"] == "arm64")
        .unwrap();
    assert_eq!(
        aarch64["digest"].as_str().unwrap(),
        first[1],
        "carried from build 1"
    );

    let cfg = config(dir, &registry, &source(&d2), "lose");
    let (_, report, err) = run(dir, &cfg, &["--build-id", "3"]);
    assert_eq!(decision(&report, "1.0"), "published", "{report}\n{err}");
    let (index, _) = registry_tag(&format!("{host}/app:1.0")).unwrap();
    assert_eq!(index_platforms(&index).len(), 3, "{index}");
}

/// Per-arch tags named by a template in Docker's platform names; an
/// image whose platform is not its slot's is refused with its name; an
/// older build is refused as stale.
#[test]
fn arch_tags_from_a_template_mismatches_and_older_builds() {
    let registry = Registry::start(Auth::None);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let host = registry.host();
    for (arch, goarch) in [("x86_64", "amd64"), ("aarch64", "arm64")] {
        push(
            dir,
            &registry,
            "ci/app",
            &format!("2.0-{goarch}"),
            &Image::for_arch(arch, arch),
        );
    }
    let source = format!(
        "template = \"{host}/ci/app:{{version}}-{{goarch}}\"\narches = [\"x86_64\", \"aarch64\"]\nversion = \"2.0\"\n"
    );
    let cfg = config(dir, &registry, &source, "refuse");
    let (code, report, err) = run(dir, &cfg, &["--build-id", "20261207.10"]);
    assert_eq!(code, 0, "{report}\n{err}");
    let (index, v1) = registry_tag(&format!("{host}/app:2.0")).unwrap();
    assert_eq!(index_platforms(&index).len(), 2, "{index}");

    // An older build (9 < 10, as numbers): stale, nothing written.
    let (_, report, err) = run(dir, &cfg, &["--build-id", "20261207.9"]);
    assert_eq!(decision(&report, "2.0"), "refused", "{report}\n{err}");
    assert!(report.to_string().contains("older"), "{report}");
    assert_eq!(registry_tag(&format!("{host}/app:2.0")).unwrap().1, v1);

    // The arm64 image pushed under the amd64 tag: its x86_64 fails, named;
    // `latest`, which serves x86_64, is refused and keeps its index.
    let (_, latest) = registry_tag(&format!("{host}/app:latest")).unwrap();
    push(
        dir,
        &registry,
        "ci/app",
        "2.1-amd64",
        &Image::for_arch("aarch64", "wrong"),
    );
    push(
        dir,
        &registry,
        "ci/app",
        "2.1-arm64",
        &Image::for_arch("aarch64", "right"),
    );
    let source = source.replace("2.0", "2.1");
    let cfg = config(dir, &registry, &source, "refuse");
    let (_, report, err) = run(dir, &cfg, &["--build-id", "20261208.1"]);
    assert_eq!(decision(&report, "latest"), "refused", "{report}\n{err}");
    let text = report.to_string();
    assert!(
        text.contains(&format!(
            "{host}/ci/app:2.1-amd64 is an image of linux/arm64, not x86_64"
        )),
        "{report}"
    );
    assert_eq!(
        registry_tag(&format!("{host}/app:latest")).unwrap().1,
        latest
    );
}
