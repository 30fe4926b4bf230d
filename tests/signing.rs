//! Signed publishing (docs/configuration.md, `[sign]`) against a real
//! docker-registry, checked by an independent verifier: the `sigstore`
//! crate's cosign verification with the public key, and the payload checks
//! of containers/image's `sigstoreSigned` policy (tests/support/sigstore_peer.rs).
//! Keys are made the way `cosign generate-key-pair` makes them.

#[path = "support/sigstore_peer.rs"]
mod sigstore_peer;
mod support;

use std::path::PathBuf;

use serde_json::Value;
use sigstore_peer::{make_keys, sign_as_other, verify, Keys};
use support::{archgate_env, registry_tag, registry_tags, Auth, Proxy, Registry};

const PASSPHRASE: &str = "correct horse battery staple";

/// A test's registry (behind a watching proxy), work dir and keys.
struct Setup {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    registry: Registry,
    proxy: Proxy,
    keys: Keys,
}

impl Setup {
    fn new() -> Setup {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let registry = Registry::start(Auth::None);
        let proxy = Proxy::start(format!("http://{}", registry.host()));
        proxy.watch_signatures();
        let keys = make_keys(&dir, "cosign", PASSPHRASE);
        std::fs::write(dir.join("cosign.pass"), format!("{PASSPHRASE}\n")).unwrap();
        Setup {
            _tmp: tmp,
            dir,
            registry,
            proxy,
            keys,
        }
    }

    /// `HOST/fedora` as archgate names it (through the proxy): the identity
    /// its signatures claim.
    fn identity(&self) -> String {
        format!("{}/fedora", self.proxy.host())
    }

    /// `HOST/fedora` on the registry itself, where the peer reads.
    fn direct(&self) -> String {
        format!("{}/fedora", self.registry.host())
    }

    /// A configuration: `[sign]` as given, one image to the registry and a
    /// layout, `extra` lines in the image.
    fn config(&self, name: &str, sign: &str, engine: &str, extra: &str) -> String {
        let host = self.proxy.host();
        let text = format!(
            "[source]\nkind = \"dir\"\n\n[publisher]\nengine = \"{engine}\"\n\n[registry.\"{host}\"]\ntls-verify = false\n\n{sign}\n[[image]]\nname = \"fedora\"\nrepositories = [\"docker://{host}/fedora\", \"oci:out/fedora\"]\ntags = [\"{{release}}\", \"latest\"]\n{extra}"
        );
        let path = self.dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    }

    fn sign_table(&self) -> String {
        format!(
            "[sign]\nsigstore-private-key = \"{}\"\npassphrase-file = \"cosign.pass\"\npublic-key = \"{}\"\n",
            self.keys.private.display(),
            self.keys.public.display()
        )
    }

    fn compose(&self, name: &str, id: &str, content: &str) -> String {
        support::two_arch_compose(&self.dir.join(name), id, "41", content)
    }

    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
        archgate_env(&self.dir, args, env)
    }

    fn publish(&self, cfg: &str, compose: &str) -> Value {
        let (code, stdout, stderr) = self.run(
            &[
                "publish",
                "-c",
                cfg,
                "--compose",
                compose,
                "--format",
                "json",
            ],
            &[],
        );
        assert_eq!(code, 0, "{stderr}");
        serde_json::from_str(&stdout).unwrap()
    }

    /// Every tag of the repository on the registry, `.sig` tags apart.
    fn tags(&self) -> (Vec<String>, Vec<String>) {
        registry_tags(&self.direct())
            .into_iter()
            .partition(|t| !t.ends_with(".sig"))
    }

    /// The digest of the signature manifest of `digest` (None: unsigned).
    fn signature_manifest(&self, digest: &str) -> Option<String> {
        let tag = format!("{}.sig", digest.replacen(':', "-", 1));
        registry_tag(&format!("{}:{tag}", self.direct())).map(|(_, d)| d)
    }

    /// Every tag (index and arch tags) verifies with `keys`.
    fn every_tag_verifies(&self, keys: &Keys) {
        let (tags, _) = self.tags();
        assert!(tags.len() >= 4, "{tags:?}");
        for tag in tags {
            let image = format!("{}:{tag}", self.direct());
            verify(&image, &keys.public, &self.identity())
                .unwrap_or_else(|e| panic!("{tag} does not verify: {e}"));
        }
    }

    /// Each tag PUT found the signature of its digest already there.
    fn signed_before_every_tag(&self) {
        let puts = self.proxy.tag_puts();
        assert!(!puts.is_empty());
        let unsigned: Vec<_> = puts.iter().filter(|(_, _, signed)| !signed).collect();
        assert!(
            unsigned.is_empty(),
            "tags put before their signature: {unsigned:#?}"
        );
    }
}

fn digests_signed(report: &Value) -> Vec<String> {
    report["targets"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["signed"].as_array().unwrap().clone())
        .map(|d| d.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn every_published_tag_is_signed_before_it_exists_and_verifies_independently() {
    let s = Setup::new();
    let cfg = s.config("a.toml", &s.sign_table(), "native", "");
    s.compose("c1", "Test-41-20241101.0", "one");
    let report = s.publish(&cfg, "c1");
    s.every_tag_verifies(&s.keys);
    s.signed_before_every_tag();
    // A wrong key does not verify.
    let other = make_keys(&s.dir, "other", "another passphrase");
    let wrong = verify(&format!("{}:41", s.direct()), &other.public, &s.identity());
    assert!(wrong.is_err(), "{wrong:?}");
    // The report names what was signed: the index and both arch manifests,
    // in the registry only (an `oci:` layout is not signed).
    let index = report["targets"][0]["digest"].as_str().unwrap().to_string();
    let signed = digests_signed(&report);
    assert!(signed.contains(&index), "{signed:?}");
    for arch in ["x86_64", "aarch64"] {
        let d = support::arch_of(&report["targets"][0], arch)["digest"].clone();
        assert!(signed.iter().any(|s| *s == d), "{arch}: {signed:?}");
    }
    for t in report["targets"].as_array().unwrap() {
        if t["reference"].as_str().unwrap().starts_with("oci:") {
            assert_eq!(t["signed"], serde_json::json!([]), "{t}");
        }
    }
    // `status` verifies with the public key; `inspect` shows the signature.
    let (code, stdout, stderr) = s.run(
        &["status", "-c", &cfg, "--compose", "c1", "--format", "json"],
        &[],
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("\"signature\": \"signed\""), "{stdout}");
    let (code, stdout, _) = s.run(
        &[
            "inspect",
            "-c",
            &cfg,
            &format!("docker://{}:41", s.identity()),
        ],
        &[],
    );
    assert_eq!(code, 0);
    assert!(
        stdout.contains("signatures: 1") && stdout.contains("valid"),
        "{stdout}"
    );
}

#[test]
fn reruns_add_no_signature_and_old_signatures_stay() {
    let s = Setup::new();
    let cfg = s.config("a.toml", &s.sign_table(), "native", "");
    s.compose("c1", "Test-41-20241101.0", "one");
    let first = s.publish(&cfg, "c1");
    let old_index = first["targets"][0]["digest"].as_str().unwrap().to_string();
    let old_sig = s.signature_manifest(&old_index).unwrap();
    let (_, sigs_before) = s.tags();
    // The same compose again: unchanged, nothing signed, nothing added.
    let again = s.publish(&cfg, "c1");
    assert_eq!(again["targets"][0]["decision"], "unchanged");
    assert!(digests_signed(&again).is_empty());
    assert_eq!(s.tags().1, sigs_before);
    assert_eq!(s.signature_manifest(&old_index), Some(old_sig.clone()));
    // A new compose: its index is signed; the old index's signature stays.
    s.compose("c2", "Test-41-20241102.0", "two");
    let second = s.publish(&cfg, "c2");
    let new_index = second["targets"][0]["digest"].as_str().unwrap();
    assert_ne!(new_index, old_index);
    s.every_tag_verifies(&s.keys);
    assert_eq!(s.signature_manifest(&old_index), Some(old_sig));
    verify(
        &format!("{}@{old_index}", s.direct()),
        &s.keys.public,
        &s.identity(),
    )
    .unwrap();
    s.signed_before_every_tag();
}

#[test]
fn another_signers_signature_is_kept_beside_ours() {
    let s = Setup::new();
    let cfg = s.config("a.toml", &s.sign_table(), "native", "");
    s.compose("c1", "Test-41-20241101.0", "one");
    // What publishing will write (a plan names the very digests).
    let (code, stdout, stderr) = s.run(
        &["plan", "-c", &cfg, "--compose", "c1", "--format", "json"],
        &[],
    );
    assert_eq!(code, 0, "{stderr}");
    let plan: Value = serde_json::from_str(&stdout).unwrap();
    let index = plan["targets"][0]["digest"].as_str().unwrap().to_string();
    let other = make_keys(&s.dir, "other", "another passphrase");
    // The other signer signs the index first, in the registry.
    sign_as_other(&s.direct(), &index, &other);
    let theirs = s.signature_manifest(&index).unwrap();
    s.publish(&cfg, "c1");
    // Both signatures verify, each with its own key, on the same digest.
    let image = format!("{}@{index}", s.direct());
    let ours = verify(&image, &s.keys.public, &s.identity()).unwrap();
    assert_eq!(ours.layers.len(), 2, "{ours:?}");
    // (The sigstore crate names `repo@digest` as its identity.)
    verify(&image, &other.public, &image).unwrap();
    assert_ne!(s.signature_manifest(&index), Some(theirs.clone()));
    // The manifest that held theirs alone is still in the registry.
    assert!(support::skopeo_raw(&format!("{}@{theirs}", s.direct()), None).is_some());
}

#[test]
fn an_image_with_sign_false_is_not_signed() {
    let s = Setup::new();
    let cfg = s.config("a.toml", &s.sign_table(), "native", "sign = false\n");
    s.compose("c1", "Test-41-20241101.0", "one");
    let report = s.publish(&cfg, "c1");
    assert!(digests_signed(&report).is_empty());
    assert!(s.tags().1.is_empty(), "no .sig tag: {:?}", s.tags());
    // `status` with the public key: unsigned, exit 4, the tag named.
    let (code, stdout, _) = s.run(&["status", "-c", &cfg, "--compose", "c1"], &[]);
    assert_eq!(code, 4, "{stdout}");
    assert!(
        stdout.contains(&format!("{}:41", s.identity())) && stdout.contains("UNSIGNED"),
        "{stdout}"
    );
}

#[test]
fn the_tools_engines_sign_before_they_tag() {
    for engine in ["skopeo", "buildah"] {
        let s = Setup::new();
        let cfg = s.config("a.toml", &s.sign_table(), engine, "");
        s.compose("c1", "Test-41-20241101.0", "one");
        let report = s.publish(&cfg, "c1");
        assert!(!digests_signed(&report).is_empty(), "{engine}");
        s.every_tag_verifies(&s.keys);
        s.signed_before_every_tag();
    }
}

/// A key as cosign's older releases wrote it (`ENCRYPTED COSIGN PRIVATE
/// KEY`), and a passphrase from the environment.
#[test]
fn older_cosign_keys_and_passphrases_from_the_environment() {
    let s = Setup::new();
    let text = std::fs::read_to_string(&s.keys.private).unwrap();
    let older = s.dir.join("older.key");
    std::fs::write(
        &older,
        text.replace("SIGSTORE PRIVATE KEY", "COSIGN PRIVATE KEY"),
    )
    .unwrap();
    let sign = format!(
        "[sign]\nsigstore-private-key = \"{}\"\npassphrase-env = \"ARCHGATE_TEST_PASS\"\n",
        older.display()
    );
    let cfg = s.config("a.toml", &sign, "native", "");
    s.compose("c1", "Test-41-20241101.0", "one");
    let (code, _, stderr) = s.run(
        &["publish", "-c", &cfg, "--compose", "c1"],
        &[("ARCHGATE_TEST_PASS", PASSPHRASE)],
    );
    assert_eq!(code, 0, "{stderr}");
    s.every_tag_verifies(&s.keys);
}

/// Each bad key input: exit 2 before anything is pushed, naming the file;
/// the passphrase never shows, not even at -vv.
#[test]
fn bad_keys_fail_early_and_the_passphrase_is_never_printed() {
    let s = Setup::new();
    s.compose("c1", "Test-41-20241101.0", "one");
    std::fs::write(s.dir.join("not-a-key.pem"), "hello\n").unwrap();
    std::fs::write(s.dir.join("wrong.pass"), "not the passphrase\n").unwrap();
    let key = s.keys.private.display().to_string();
    let cases: Vec<(&str, String, &str)> = vec![
        ("missing", "[sign]\nsigstore-private-key = \"nowhere.key\"\npassphrase-file = \"cosign.pass\"\n".into(), "nowhere.key"),
        ("not a key", "[sign]\nsigstore-private-key = \"not-a-key.pem\"\npassphrase-file = \"cosign.pass\"\n".into(), "not-a-key.pem"),
        ("wrong passphrase", format!("[sign]\nsigstore-private-key = \"{key}\"\npassphrase-file = \"wrong.pass\"\n"), "wrong passphrase"),
        ("no passphrase variable", format!("[sign]\nsigstore-private-key = \"{key}\"\npassphrase-env = \"ARCHGATE_UNSET_VAR\"\n"), "ARCHGATE_UNSET_VAR"),
        ("not a public key", format!("[sign]\nsigstore-private-key = \"{key}\"\npassphrase-file = \"cosign.pass\"\npublic-key = \"not-a-key.pem\"\n"), "not-a-key.pem"),
    ];
    for (what, sign, names) in cases {
        let cfg = s.config("bad.toml", &sign, "native", "");
        let (code, stdout, stderr) = s.run(&["publish", "-c", &cfg, "--compose", "c1"], &[]);
        assert_eq!(code, 2, "{what}: {stderr}");
        assert!(stderr.contains(names), "{what}: {stderr}");
        assert!(!stderr.contains("not the passphrase") && !stdout.contains("not the passphrase"));
        assert!(
            registry_tags(&s.direct()).is_empty(),
            "{what}: nothing pushed"
        );
        assert!(!s.dir.join("out").exists(), "{what}: nothing written");
    }
    let cfg = s.config("a.toml", &s.sign_table(), "native", "");
    let (code, stdout, stderr) = s.run(
        &[
            "-vv",
            "publish",
            "-c",
            &cfg,
            "--compose",
            "c1",
            "--format",
            "json",
        ],
        &[("ARCHGATE_LOG", "trace")],
    );
    assert_eq!(code, 0, "{stderr}");
    for (what, text) in [("stdout", &stdout), ("stderr", &stderr)] {
        assert!(!text.contains(PASSPHRASE), "the passphrase in {what}");
        assert!(!text.contains("horse battery"), "the passphrase in {what}");
    }
}

/// Archives, as Pungi writes them, signed: while they are read (their
/// uploads held at the registry, so that the image cannot be decided),
/// the two upload sessions the index's signature will take are already
/// open beside the blobs' own; once let through, every tag is signed
/// before it exists, the index's signature went up into those sessions
/// (no session is given up or left open on the registry).
#[test]
fn the_index_signature_goes_up_into_sessions_opened_while_the_archives_are_read() {
    use archgate_core::{Arch, Artifact, Location};
    let s = Setup::new();
    let cfg = s.config("a.toml", &s.sign_table(), "native", "");
    let root = PathBuf::from(s.compose("c1", "Test-41-20241101.0", "one"));
    let mut blobs = std::collections::BTreeSet::new();
    for (arch, name) in [(Arch::X86_64, "x86_64"), (Arch::Aarch64, "aarch64")] {
        let at = root.join("fedora").join(name);
        std::fs::remove_dir_all(&at).unwrap();
        std::fs::create_dir_all(&at).unwrap();
        let file = at.join(format!("Fedora-41.{name}.oci.tar.xz"));
        archgate_fixtures::write_oci_archive(
            &file,
            &archgate_fixtures::Image::for_arch(name, "one"),
            archgate_fixtures::Compress::Xz,
        )
        .unwrap();
        let read = archgate_native::resolve(arch, &Artifact::at(Location::Path(file))).unwrap();
        blobs.extend(read.layers.iter().map(|l| l.digest.clone()));
        blobs.insert(read.config.digest);
    }
    // Sessions opened without content: one per blob (its intake) and the
    // two opened ahead (a small upload POSTs with its digest first).
    let plain_posts = || {
        s.proxy
            .requests()
            .iter()
            .filter(|(m, p, _)| m == "POST" && p == "/v2/fedora/blobs/uploads/")
            .count()
    };
    let held = s.proxy.hold("PUT", "/v2/fedora/blobs/uploads/");
    let run = std::thread::scope(|scope| {
        let publishing = scope.spawn(|| s.publish(&cfg, "c1"));
        held.wait_held(1, 60);
        let start = std::time::Instant::now();
        while plain_posts() < blobs.len() + 2 {
            assert!(
                start.elapsed() < std::time::Duration::from_secs(60),
                "{} blobs, and the sessions opened ahead: {:#?}",
                blobs.len(),
                s.proxy.requests()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        held.release();
        publishing.join().unwrap()
    });
    s.every_tag_verifies(&s.keys);
    s.signed_before_every_tag();
    let index = run["targets"][0]["digest"].as_str().unwrap();
    assert!(s.signature_manifest(index).is_some());
    assert_eq!(plain_posts(), blobs.len() + 2, "{:#?}", s.proxy.requests());
    assert_eq!(s.proxy.count("DELETE", "/blobs/uploads/"), 0);
    let uploads = s
        .registry
        .dir
        .path()
        .join("data/docker/registry/v2/repositories/fedora/_uploads");
    let open = std::fs::read_dir(&uploads).map_or(0, |d| {
        d.filter(|e| e.as_ref().unwrap().path().join("startedat").exists())
            .count()
    });
    assert_eq!(open, 0, "no upload session is left open");
}
