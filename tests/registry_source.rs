//! The `registry` source against a real registry (Debian's
//! `docker-registry`): per-platform images pushed by skopeo, as a CI
//! pipeline's per-platform jobs push them, then merged by archgate. The
//! tests assert what the registry holds afterwards.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use archgate_fixtures::Image;
use serde_json::Value;
use support::{archgate, index_platforms, registry_tag, Auth, Registry};

/// Pushes a fixture image under `repo:tag` (as a platform's job does):
/// its manifest digest.
fn push(dir: &Path, registry: &Registry, repo: &str, tag: &str, image: &Image) -> String {
    support::push_image(dir, registry, repo, tag, image)
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

/// Writes a blob into an OCI layout: its descriptor.
fn blob(layout: &Path, media_type: &str, bytes: &[u8]) -> Value {
    let digest = support::sha256(bytes);
    let dir = layout.join("blobs/sha256");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join(digest.trim_start_matches("sha256:")), bytes).unwrap();
    serde_json::json!({"mediaType": media_type, "digest": digest, "size": bytes.len()})
}

/// Pushes `image` as buildx pushes a platform's build with provenance: an
/// index of the image and its attestation manifest (`unknown/unknown`,
/// naming the image). (index digest, image digest, attestation digest).
fn push_with_attestation(
    dir: &Path,
    registry: &Registry,
    tag: &str,
    image: &Image,
) -> (String, String, String) {
    let layout = dir.join(format!("attested-{tag}"));
    let (image_digest, manifest) = archgate_fixtures::write_image_blobs(&layout, image).unwrap();
    fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let statement = br#"{"_type":"https://in-toto.io/Statement/v0.1","predicateType":"https://slsa.dev/provenance/v0.2","subject":[],"predicate":{}}"#;
    let layer = blob(&layout, "application/vnd.in-toto+json", statement);
    let config = blob(
        &layout,
        "application/vnd.oci.image.config.v1+json",
        br#"{"architecture":"unknown","os":"unknown","config":{},"rootfs":{"type":"layers","diff_ids":[]}}"#,
    );
    let att = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config,
        "layers": [layer],
    });
    let att = blob(
        &layout,
        "application/vnd.oci.image.manifest.v1+json",
        &serde_json::to_vec(&att).unwrap(),
    );
    let platform = serde_json::json!({"os": "linux", "architecture": image.architecture});
    let mut image_desc = serde_json::json!({
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": image_digest, "size": manifest.len(), "platform": platform,
    });
    if let Some(v) = image.variant {
        image_desc["platform"]["variant"] = v.into();
    }
    let mut att_desc = att.clone();
    att_desc["platform"] = serde_json::json!({"os": "unknown", "architecture": "unknown"});
    att_desc["annotations"] = serde_json::json!({
        "vnd.docker.reference.digest": image_digest,
        "vnd.docker.reference.type": "attestation-manifest",
    });
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [image_desc, att_desc],
    });
    let index = blob(
        &layout,
        "application/vnd.oci.image.index.v1+json",
        &serde_json::to_vec(&index).unwrap(),
    );
    fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": [index]})).unwrap(),
    )
    .unwrap();
    let digestfile = dir.join("digest");
    let out = Command::new("skopeo")
        .args([
            "copy",
            "--quiet",
            "--all",
            "--preserve-digests",
            "--dest-tls-verify=false",
            "--digestfile",
        ])
        .arg(&digestfile)
        .arg(format!("oci:{}", layout.display()))
        .arg(format!("docker://{}/ci/app:{tag}", registry.host()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pushed = fs::read_to_string(&digestfile).unwrap().trim().to_string();
    assert_eq!(pushed, index["digest"].as_str().unwrap());
    (
        pushed,
        image_digest,
        att["digest"].as_str().unwrap().to_string(),
    )
}

/// A platform pushed with its provenance (buildx's index of the image and
/// an attestation manifest): the merged index lists the attestation right
/// after its image, and the attestation is in the target repository; the
/// platform pushed without one has none.
#[test]
fn attestations_are_kept_with_their_image() {
    let registry = Registry::start(Auth::None);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let host = registry.host();
    let (x86, x86_image, x86_att) =
        push_with_attestation(dir, &registry, "b1-x86_64", &Image::for_arch("x86_64", "x"));
    let arm = push(
        dir,
        &registry,
        "ci/app",
        "b1-aarch64",
        &Image::for_arch("aarch64", "a"),
    );
    let d = digests_dir(dir, "digests", &[&x86, &arm]);
    let source = format!(
        "location = \"{}\"\nrepository = \"{host}/ci/app\"\narches = [\"x86_64\", \"aarch64\"]\nversion = \"1.0\"\n",
        d.display()
    );
    let cfg = config(dir, &registry, &source, "refuse");
    let (code, report, err) = run(dir, &cfg, &["--build-id", "1"]);
    assert_eq!(code, 0, "{report}\n{err}");
    let (index, _) = registry_tag(&format!("{host}/app:1.0")).unwrap();
    let digests: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["digest"].as_str().unwrap())
        .collect();
    assert_eq!(
        digests,
        [x86_image.as_str(), x86_att.as_str(), arm.as_str()],
        "{index}"
    );
    let att = &index["manifests"][1];
    assert_eq!(att["annotations"]["vnd.docker.reference.digest"], x86_image);
    assert_eq!(att["platform"]["architecture"], "unknown");
    assert!(support::skopeo_raw(&format!("{host}/app@{x86_att}"), None).is_some());
    // A re-run of the same build changes nothing.
    let (_, report, err) = run(dir, &cfg, &["--build-id", "1"]);
    assert_eq!(decision(&report, "1.0"), "unchanged", "{report}\n{err}");
}

/// Within the registry the images were pushed to, no blob bytes move:
/// every blob is mounted. To another registry the blobs are streamed (each
/// read once), and that registry then holds every image whole.
#[test]
fn blobs_are_mounted_within_a_registry_and_streamed_to_another() {
    let registry = Registry::start(Auth::None);
    let other = Registry::start(Auth::None);
    let proxy = support::Proxy::start(format!("http://{}", registry.host()));
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut digests = Vec::new();
    for arch in ARCHES {
        digests.push(push(
            dir,
            &registry,
            "ci/app",
            &format!("b-{arch}"),
            &Image::for_arch(arch, arch),
        ));
    }
    let refs: Vec<&str> = digests.iter().map(String::as_str).collect();
    let d = digests_dir(dir, "digests", &refs);
    let (via, far) = (proxy.host(), other.host());
    let cfg = dir.join("archgate.toml");
    fs::write(
        &cfg,
        format!(
            "[source]\nkind = \"registry\"\nlocation = \"{}\"\nrepository = \"{via}/ci/app\"\narches = [\"x86_64\", \"aarch64\", \"ppc64le\", \"s390x\"]\nversion = \"1.0\"\n\n[registry.\"{via}\"]\ntls-verify = false\n\n[registry.\"{far}\"]\ntls-verify = false\n\n[[image]]\nname = \"app\"\nrepositories = [\"docker://{via}/app\", \"docker://{far}/app\"]\ntags = [\"{{release}}\"]\n",
            d.display()
        ),
    )
    .unwrap();
    let (code, report, err) = run(dir, &cfg, &["--build-id", "1"]);
    assert_eq!(code, 0, "{report}\n{err}");
    let posts = proxy
        .requests()
        .into_iter()
        .filter(|(m, p, _)| m == "POST" && p.contains("/blobs/uploads") && !p.contains("mount="))
        .count();
    let uploads =
        posts + proxy.count("PATCH", "/blobs/uploads") + proxy.count("PUT", "/blobs/uploads");
    assert_eq!(uploads, 0, "{:#?}", proxy.requests());
    assert!(proxy.count("POST", "mount=") > 0, "{:#?}", proxy.requests());
    // Read once each: the four configs (for the platforms), and the four
    // layers as they stream to the other registry.
    let gets: Vec<String> = proxy
        .requests()
        .into_iter()
        .filter(|(m, p, _)| m == "GET" && p.contains("/blobs/"))
        .map(|(_, p, _)| p)
        .collect();
    let once: std::collections::BTreeSet<&String> = gets.iter().collect();
    assert_eq!(
        (gets.len(), once.len()),
        (2 * ARCHES.len(), 2 * ARCHES.len()),
        "{gets:#?}"
    );
    eprintln!(
        "requests to the registry the images were in: {}",
        proxy.requests().len()
    );
    let (index, _) = registry_tag(&format!("{far}/app:1.0")).unwrap();
    assert_eq!(index_platforms(&index).len(), 4, "{index}");
    let out = Command::new("skopeo")
        .args(["copy", "--quiet", "--all", "--src-tls-verify=false"])
        .arg(format!("docker://{far}/app:1.0"))
        .arg(format!("oci:{}", dir.join("copy").display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Docker's official images keep each arch in a namespace of its own
/// (`amd64/debian`, `arm64v8/debian`): a template in `{docker_arch}`
/// merges them into the shared tag; a namespace whose image is missing is
/// a failed arch, carried by `hybrid`, dropped by `lose`.
#[test]
fn arch_namespaces_merge_into_a_shared_tag() {
    let registry = Registry::start(Auth::None);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let host = registry.host();
    let mut pushed = Vec::new();
    for (arch, ns) in [
        ("x86_64", "amd64"),
        ("aarch64", "arm64v8"),
        ("armhfp", "arm32v7"),
    ] {
        pushed.push(push(
            dir,
            &registry,
            &format!("{ns}/debian"),
            "bookworm",
            &Image::for_arch(arch, arch),
        ));
    }
    let source = format!(
        "template = \"{host}/{{docker_arch}}/debian:bookworm\"\narches = [\"amd64\", \"arm64v8\", \"arm32v7\"]\nversion = \"bookworm\"\n"
    );
    let cfg = config(dir, &registry, &source, "refuse");
    let (code, report, err) = run(dir, &cfg, &["--build-id", "20261207"]);
    assert_eq!(code, 0, "{report}\n{err}");
    let (index, _) = registry_tag(&format!("{host}/app:bookworm")).unwrap();
    let mut platforms = index_platforms(&index);
    platforms.sort();
    assert_eq!(
        platforms,
        ["linux/amd64", "linux/arm/v7", "linux/arm64"],
        "{index}"
    );
    let mut digests: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["digest"].as_str().unwrap())
        .collect();
    digests.sort();
    let mut sorted = pushed.clone();
    sorted.sort();
    assert_eq!(digests, sorted);

    // The next build: arm32v7's job failed (its namespace keeps the old
    // image, so the template names a missing tag instead). hybrid carries
    // the current arm/v7 entry; lose drops it.
    for (arch, ns) in [("x86_64", "amd64"), ("aarch64", "arm64v8")] {
        push(
            dir,
            &registry,
            &format!("{ns}/debian"),
            "bookworm-2",
            &Image::for_arch(arch, "2"),
        );
    }
    let source = source.replace(":bookworm\"", ":bookworm-2\"");
    let cfg = config(dir, &registry, &source, "hybrid");
    let (_, report, err) = run(dir, &cfg, &["--build-id", "20261208"]);
    assert_eq!(
        decision(&report, "bookworm"),
        "published",
        "{report}\n{err}"
    );
    let (index, _) = registry_tag(&format!("{host}/app:bookworm")).unwrap();
    let arm = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["platform"]["architecture"] == "arm")
        .unwrap();
    assert_eq!(arm["digest"].as_str().unwrap(), pushed[2], "carried");
    assert!(report.to_string().contains("no image at"), "{report}");
    let cfg = config(dir, &registry, &source, "lose");
    let (_, report, err) = run(dir, &cfg, &["--build-id", "20261209"]);
    assert_eq!(
        decision(&report, "bookworm"),
        "published",
        "{report}\n{err}"
    );
    let (index, _) = registry_tag(&format!("{host}/app:bookworm")).unwrap();
    assert_eq!(index_platforms(&index).len(), 2, "{index}");
}

/// What a digests directory must not hold is an error that names it:
/// a file that is no digest, two images of one platform.
#[test]
fn bad_digest_files_are_errors_that_name_them() {
    let registry = Registry::start(Auth::None);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let host = registry.host();
    let a = push(
        dir,
        &registry,
        "ci/app",
        "a",
        &Image::for_arch("x86_64", "a"),
    );
    let b = push(
        dir,
        &registry,
        "ci/app",
        "b",
        &Image::for_arch("x86_64", "b"),
    );
    let source = |d: &Path| {
        format!(
            "location = \"{}\"\nrepository = \"{host}/ci/app\"\narches = [\"x86_64\"]\n",
            d.display()
        )
    };
    let d = digests_dir(dir, "not-a-digest", &[&a]);
    fs::write(d.join("digest.txt"), "").unwrap();
    let cfg = config(dir, &registry, &source(&d), "refuse");
    let (code, _, err) = archgate(
        dir,
        &["publish", "-c", cfg.to_str().unwrap(), "--build-id", "1"],
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!(
            "{}: not a digest file",
            d.join("digest.txt").display()
        )),
        "{err}"
    );
    let d = digests_dir(dir, "two", &[&a, &b]);
    let cfg = config(dir, &registry, &source(&d), "refuse");
    let (code, _, err) = archgate(
        dir,
        &["publish", "-c", cfg.to_str().unwrap(), "--build-id", "1"],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("two images for x86_64"), "{err}");
    assert!(registry_tag(&format!("{host}/app:latest")).is_none());
}
