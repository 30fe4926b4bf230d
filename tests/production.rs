//! Production registries and Fedora's tags, against real docker-registry
//! processes: TLS with a CA of the test's own, mutual TLS, the default
//! certs.d location, credentials from the environment (native and skopeo
//! engines); tag rules; index annotations; `archgate status`.

mod support;

use std::fs;
use std::path::Path;

use serde_json::Value;
use support::{archgate_env, registry_tag, registry_tags, skopeo_raw_with, Auth, Pki, Registry};

const ENGINES: [&str; 2] = ["native", "skopeo"];

/// Runs archgate with a HOME, TMPDIR and auth-file environment of the test's own.
fn run(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let home = dir.join("home");
    let tmp = dir.join("tmp");
    fs::create_dir_all(&home).unwrap();
    fs::create_dir_all(&tmp).unwrap();
    let (home, tmp) = (
        home.to_str().unwrap().to_string(),
        tmp.to_str().unwrap().to_string(),
    );
    let mut all = vec![
        ("HOME", home.as_str()),
        ("TMPDIR", tmp.as_str()),
        ("REGISTRY_AUTH_FILE", ""),
        ("DOCKER_CONFIG", ""),
        ("XDG_RUNTIME_DIR", ""),
    ];
    all.extend_from_slice(env);
    archgate_env(dir, args, &all)
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

fn config(engine: &str, host: &str, registry: &str, repo: &str) -> String {
    format!(
        "[source]\nkind = \"dir\"\n\n[publisher]\nengine = \"{engine}\"\n\n[registry.\"{host}\"]\n{registry}\n[[image]]\nname = \"fedora\"\nrepositories = [\"docker://{host}/{repo}\"]\ntags = [\"{{release}}\"]\n"
    )
}

#[test]
fn tls_with_a_private_ca_in_the_cert_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pki = Pki::new(&dir.join("pki"));
    let registry = Registry::start_with(Auth::None, Some(pki.tls(false)));
    let host = registry.host();
    let certs = pki.cert_dir(&dir.join("certs"), None);
    let c = support::two_arch_compose(&dir.join("c1"), "C-41-1", "41", "tls");
    for engine in ENGINES {
        let repo = format!("fedora-{engine}");
        let cfg = write(
            dir,
            &format!("{engine}.toml"),
            &config(
                engine,
                &host,
                &format!("cert-dir = \"{}\"\n", certs.display()),
                &repo,
            ),
        );
        let (code, stdout, stderr) = run(
            dir,
            &["publish", "-c", &cfg, "--compose", &c, "--format", "json"],
            &[],
        );
        assert_eq!(code, 0, "{engine}: {stderr}");
        let r: Value = serde_json::from_str(&stdout).unwrap();
        let raw =
            skopeo_raw_with(&format!("{host}/{repo}:41"), None, Some(&certs)).expect("published");
        assert_eq!(
            Some(support::sha256(&raw).as_str()),
            r["targets"][0]["digest"].as_str(),
            "{engine}"
        );

        // Without the CA: the registry's certificate has an unknown issuer.
        let cfg = write(
            dir,
            &format!("{engine}-noca.toml"),
            &config(engine, &host, "", &repo),
        );
        let (code, _, stderr) = run(dir, &["publish", "-c", &cfg, "--compose", &c], &[]);
        assert_eq!(code, 1, "{engine}: {stderr}");
        assert!(
            stderr.contains(&format!(
                "{host}: TLS: the registry's certificate is signed by an unknown issuer"
            )),
            "{engine}: {stderr}"
        );
    }
    // A configured cert-dir that does not exist is a config error.
    let cfg = write(
        dir,
        "missing.toml",
        &config("native", &host, "cert-dir = \"no/such/dir\"\n", "x"),
    );
    let (code, _, stderr) = run(dir, &["plan", "-c", &cfg, "--compose", &c], &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("cert-dir")
            && stderr.contains("no/such/dir")
            && stderr.contains("is not a directory"),
        "{stderr}"
    );
}

#[test]
fn mutual_tls_needs_the_right_client_pair() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pki = Pki::new(&dir.join("pki"));
    let registry = Registry::start_with(Auth::None, Some(pki.tls(true)));
    let host = registry.host();
    let good = pki.cert_dir(&dir.join("good"), Some(&pki.client));
    let none = pki.cert_dir(&dir.join("none"), None);
    let stranger = pki.cert_dir(&dir.join("stranger"), Some(&pki.stranger));
    let c = support::two_arch_compose(&dir.join("c1"), "C-41-1", "41", "mtls");
    for engine in ENGINES {
        let repo = format!("fedora-{engine}");
        let with = |name: &str, certs: &Path| {
            write(
                dir,
                &format!("{engine}-{name}.toml"),
                &config(
                    engine,
                    &host,
                    &format!("cert-dir = \"{}\"\n", certs.display()),
                    &repo,
                ),
            )
        };
        let (code, _, stderr) = run(
            dir,
            &["publish", "-c", &with("good", &good), "--compose", &c],
            &[],
        );
        assert_eq!(code, 0, "{engine}: {stderr}");
        assert!(skopeo_raw_with(&format!("{host}/{repo}:41"), None, Some(&good)).is_some());
        assert!(
            skopeo_raw_with(&format!("{host}/{repo}:41"), None, Some(&none)).is_none(),
            "the registry itself refuses a client without a certificate"
        );

        let (code, _, stderr) = run(
            dir,
            &["plan", "-c", &with("none", &none), "--compose", &c],
            &[],
        );
        assert_eq!(code, 1, "{engine}: {stderr}");
        assert!(
            stderr.contains(&format!(
                "{host}: TLS: the registry requires a client certificate"
            )),
            "{engine}: {stderr}"
        );

        let (code, _, stderr) = run(
            dir,
            &["plan", "-c", &with("stranger", &stranger), "--compose", &c],
            &[],
        );
        assert_eq!(code, 1, "{engine}: {stderr}");
        assert!(
            stderr.contains(&format!(
                "{host}: TLS: the registry refused the client certificate"
            )),
            "{engine}: {stderr}"
        );
    }

    // The default location, under HOME: ~/.config/containers/certs.d/HOST.
    pki.cert_dir(
        &dir.join("home/.config/containers/certs.d").join(&host),
        Some(&pki.client),
    );
    let c2 = support::two_arch_compose(&dir.join("c2"), "C-41-2", "41", "mtls default dir");
    for engine in ENGINES {
        let cfg = write(
            dir,
            &format!("{engine}-default.toml"),
            &config(engine, &host, "", &format!("default-{engine}")),
        );
        let (code, stdout, stderr) = run(
            dir,
            &["publish", "-c", &cfg, "--compose", &c2, "--format", "json"],
            &[],
        );
        assert_eq!(code, 0, "{engine}: {stderr}");
        let r: Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(r["targets"][0]["decision"], "published");
        assert!(
            skopeo_raw_with(&format!("{host}/default-{engine}:41"), None, Some(&good)).is_some()
        );
    }
}

#[test]
fn credentials_from_the_environment_never_printed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    const PASSWORD: &str = "s3cret-Pa55word";
    const WRONG: &str = "wr0ng-Pa55word";
    let registry = Registry::start(Auth::Basic("releng", PASSWORD));
    let host = registry.host();
    // An auth file with other credentials: the environment takes precedence.
    let auth_dir = dir.join("home/.config/containers");
    fs::create_dir_all(&auth_dir).unwrap();
    fs::write(
        auth_dir.join("auth.json"),
        format!("{{\"auths\": {{\"{host}\": {{\"auth\": \"b3RoZXI6b3RoZXItcGFzcw==\"}}}}}}"),
    )
    .unwrap();
    let c = support::two_arch_compose(&dir.join("c1"), "C-41-1", "41", "env creds");
    let registry_cfg =
        "tls-verify = false\nusername-env = \"QUAY_USER\"\npassword-env = \"QUAY_PASSWORD\"\n";
    for engine in ENGINES {
        let repo = format!("fedora-{engine}");
        let cfg = write(
            dir,
            &format!("{engine}.toml"),
            &config(engine, &host, registry_cfg, &repo),
        );
        let (code, stdout, stderr) = run(
            dir,
            &[
                "publish",
                "-vv",
                "-c",
                &cfg,
                "--compose",
                &c,
                "--format",
                "json",
            ],
            &[("QUAY_USER", "releng"), ("QUAY_PASSWORD", PASSWORD)],
        );
        assert_eq!(code, 0, "{engine}: {stderr}");
        assert!(
            !stdout.contains(PASSWORD) && !stderr.contains(PASSWORD),
            "{engine}: the secret was printed"
        );
        let creds = format!("releng:{PASSWORD}");
        assert!(support::skopeo_raw(&format!("{host}/{repo}:41"), Some(&creds)).is_some());
        // The auth file written for the tools went with the run's temp dir.
        assert_eq!(
            fs::read_dir(dir.join("tmp")).unwrap().count(),
            0,
            "{engine}: temp files left"
        );

        let (code, stdout, stderr) = run(
            dir,
            &["publish", "-vv", "-c", &cfg, "--compose", &c],
            &[("QUAY_USER", "releng"), ("QUAY_PASSWORD", WRONG)],
        );
        assert_eq!(code, 1, "{engine}: {stderr}");
        assert!(
            stdout.contains("authentication failed (user releng)")
                || stderr.contains("authentication failed (user releng)"),
            "{engine}: {stdout}{stderr}"
        );
        assert!(
            !stdout.contains(WRONG) && !stderr.contains(WRONG),
            "{engine}: the secret was printed"
        );

        let (code, _, stderr) = run(
            dir,
            &["plan", "-c", &cfg, "--compose", &c],
            &[("QUAY_USER", "releng")],
        );
        assert_eq!(code, 2, "{engine}: {stderr}");
        assert!(
            stderr.contains(
                "password-env names the environment variable QUAY_PASSWORD, which is not set"
            ),
            "{stderr}"
        );
    }
}

fn tags_of(repo: &str) -> Vec<String> {
    registry_tags(repo)
}

#[test]
fn tag_rules_follow_the_release_kind() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let registry = Registry::start(Auth::None);
    let host = registry.host();
    let rules = r#"tags = ["{version}", { tag = "latest", when = "latest" }, { tag = "rawhide", when = "rawhide" }, { tag = "branched", when = "branched" }, { tag = "stable", when = "stable" }]"#;
    for (release, want) in [
        ("41", vec!["41", "stable"]),
        ("42", vec!["42", "latest", "stable"]),
        ("43", vec!["43", "branched"]),
        ("Rawhide", vec!["44", "rawhide"]),
    ] {
        let repo = format!("fedora-{}", release.to_lowercase());
        let c = support::two_arch_compose(
            &dir.join(&repo),
            &format!("Fedora-{release}-20241101.n.0"),
            release,
            release,
        );
        let cfg = write(
            dir,
            &format!("{repo}.toml"),
            &format!(
                "[source]\nkind = \"dir\"\n\n[release]\nlatest = \"42\"\nrawhide = 44\n\n[registry.\"{host}\"]\ntls-verify = false\n\n[[image]]\nname = \"fedora\"\nrepositories = [\"docker://{host}/{repo}\"]\n{rules}\narch-tag = \"{{tag}}-{{arch}}\"\n"
            ),
        );
        let (code, _, stderr) = run(dir, &["publish", "-c", &cfg, "--compose", &c], &[]);
        assert_eq!(code, 0, "{release}: {stderr}");
        let mut expected: Vec<String> = Vec::new();
        for t in &want {
            expected.push(t.to_string());
            expected.push(format!("{t}-x86_64"));
            expected.push(format!("{t}-aarch64"));
        }
        expected.sort();
        assert_eq!(tags_of(&format!("{host}/{repo}")), expected, "{release}");
    }

    // A condition that is not one of the four, and one that needs [release] latest.
    let bad = write(
        dir,
        "bad.toml",
        "[source]\nkind = \"dir\"\n\n[[image]]\nname = \"fedora\"\nrepositories = [\"oci:out\"]\ntags = [\"{release}\", { tag = \"x\", when = \"nightly\" }]\n",
    );
    let (code, _, stderr) = run(dir, &["plan", "-c", &bad], &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("bad.toml:7: unknown condition `nightly`; expected one of rawhide, latest, branched, stable (key `image[0].tags[1].when`)"), "{stderr}");
    let unset = write(
        dir,
        "unset.toml",
        "[source]\nkind = \"dir\"\n\n[[image]]\nname = \"fedora\"\nrepositories = [\"oci:out\"]\ntags = [\"{release}\", { tag = \"latest\", when = \"latest\" }]\n",
    );
    let (code, _, stderr) = run(dir, &["plan", "-c", &unset], &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("unset.toml:5: image `fedora`: tag `latest` has `when = \"latest\"`, which needs `[release] latest`"), "{stderr}");
}

#[test]
fn annotations_are_written_and_a_new_compose_makes_a_new_index() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let registry = Registry::start(Auth::None);
    let host = registry.host();
    let cfg = write(
        dir,
        "a.toml",
        &format!(
            "[source]\nkind = \"dir\"\n\n[registry.\"{host}\"]\ntls-verify = false\n\n[[image]]\nname = \"fedora\"\nrepositories = [\"docker://{host}/fedora\"]\ntags = [\"{{version}}\"]\nannotations = {{ \"org.opencontainers.image.version\" = \"{{version}}\", \"org.fedoraproject.compose-id\" = \"{{compose_id}}\" }}\n"
        ),
    );
    let c1 = support::two_arch_compose(
        &dir.join("c1"),
        "Fedora-41-20241101.n.0",
        "41",
        "same build",
    );
    let c2 = support::two_arch_compose(
        &dir.join("c2"),
        "Fedora-41-20241102.n.0",
        "41",
        "same build",
    );
    let publish = |c: &str| {
        let (code, stdout, stderr) = run(
            dir,
            &["publish", "-c", &cfg, "--compose", c, "--format", "json"],
            &[],
        );
        assert_eq!(code, 0, "{stderr}");
        serde_json::from_str::<Value>(&stdout).unwrap()
    };
    let first = publish(&c1);
    let (index, digest) = registry_tag(&format!("{host}/fedora:41")).unwrap();
    assert_eq!(
        Some(digest.as_str()),
        first["targets"][0]["digest"].as_str()
    );
    assert_eq!(
        index["annotations"],
        serde_json::json!({
            "org.fedoraproject.compose-id": "Fedora-41-20241101.n.0",
            "org.opencontainers.image.version": "41",
            // Every index names its compose (docs/gate.md, compose order).
            "dev.archgate.compose": "Fedora-41-20241101.n.0",
            "dev.archgate.compose.order": "date=20241101 type=nightly respin=0",
            "org.opencontainers.image.created": "2024-11-01T00:00:00Z",
        })
    );
    // The same compose again: nothing to write.
    let again = publish(&c1);
    assert_eq!(again["targets"][0]["decision"], "unchanged");
    assert_eq!(
        registry_tag(&format!("{host}/fedora:41")).unwrap().1,
        digest
    );
    // A new compose with the same images: a new index, the same entries.
    let next = publish(&c2);
    let t = &next["targets"][0];
    assert_eq!(t["decision"], "published");
    assert!(
        t["arches"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["action"] == "unchanged"),
        "{t}"
    );
    let (index2, digest2) = registry_tag(&format!("{host}/fedora:41")).unwrap();
    assert_ne!(digest2, digest);
    assert_eq!(index2["manifests"], index["manifests"]);
    assert_eq!(
        index2["annotations"]["org.fedoraproject.compose-id"],
        "Fedora-41-20241102.n.0"
    );
}

/// Every tag and its digest in the given repositories, read straight from the registries.
fn snapshot(repos: &[String]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for repo in repos {
        for tag in registry_tags(repo) {
            let digest = registry_tag(&format!("{repo}:{tag}")).unwrap().1;
            out.push((format!("{repo}:{tag}"), digest));
        }
    }
    out
}

#[test]
fn status_says_whether_the_repositories_agree_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (r1, r2) = (Registry::start(Auth::None), Registry::start(Auth::None));
    let (h1, h2) = (r1.host(), r2.host());
    let image = |name: &str, repos: &[&str]| {
        let repos: Vec<String> = repos
            .iter()
            .map(|r| format!("\"docker://{r}/{name}\""))
            .collect();
        format!("[[image]]\nname = \"{name}\"\nrepositories = [{}]\ntags = [\"{{release}}\", \"latest\"]\n\n", repos.join(", "))
    };
    let head = format!("[source]\nkind = \"dir\"\n\n[registry.\"{h1}\"]\ntls-verify = false\n\n[registry.\"{h2}\"]\ntls-verify = false\n\n");
    let both = write(
        dir,
        "both.toml",
        &format!("{head}{}", image("fedora", &[&h1, &h2])),
    );
    let only_one = write(
        dir,
        "one.toml",
        &format!("{head}{}", image("fedora", &[&h1])),
    );
    let c1 = support::two_arch_compose(&dir.join("c1"), "C-41-1", "41", "first");
    let c2 = support::two_arch_compose(&dir.join("c2"), "C-41-2", "41", "second");
    let repos = vec![format!("{h1}/fedora"), format!("{h2}/fedora")];

    let status = |cfg: &str| {
        let (code, stdout, stderr) = run(
            dir,
            &["status", "-c", cfg, "--compose", &c1, "--format", "json"],
            &[],
        );
        (
            code,
            serde_json::from_str::<Value>(&stdout)
                .unwrap_or_else(|e| panic!("{e}: {stdout} {stderr}")),
        )
    };

    // Nothing anywhere yet: nothing disagrees.
    let (code, s) = status(&both);
    assert_eq!(code, 0, "{s}");
    assert!(s["images"][0]["tags"][0]["repositories"][0]["digest"].is_null());

    let (code, _, stderr) = run(dir, &["publish", "-c", &both, "--compose", &c1], &[]);
    assert_eq!(code, 0, "{stderr}");
    let before = snapshot(&repos);
    let (code, s) = status(&both);
    assert_eq!(code, 0, "{s}");
    assert_eq!(s["agree"], true);
    let t = &s["images"][0]["tags"][0];
    assert_eq!(t["tag"], "41");
    assert_eq!(t["repositories"][0]["registry"], h1.as_str());
    assert_eq!(
        t["repositories"][0]["digest"],
        t["repositories"][1]["digest"]
    );
    assert_eq!(
        t["repositories"][1]["arches"],
        serde_json::json!(["x86_64", "aarch64"])
    );
    assert_eq!(snapshot(&repos), before, "status writes nothing");

    // The first registry moves on alone: the digests differ.
    let (code, _, stderr) = run(dir, &["publish", "-c", &only_one, "--compose", &c2], &[]);
    assert_eq!(code, 0, "{stderr}");
    let before = snapshot(&repos);
    let (code, s) = status(&both);
    assert_eq!(code, 4, "{s}");
    assert_eq!(s["agree"], false);
    assert_eq!(s["images"][0]["tags"][1]["agree"], false);
    let (code, text, _) = run(dir, &["status", "-c", &both, "--compose", &c1], &[]);
    assert_eq!(code, 4);
    assert!(
        text.contains("fedora: DISAGREE") && text.contains("  latest: DISAGREE"),
        "{text}"
    );
    assert_eq!(snapshot(&repos), before, "status writes nothing");

    // A tag present in one repository and missing in the other.
    let extra = write(
        dir,
        "extra.toml",
        &format!("{head}[[image]]\nname = \"fedora\"\nrepositories = [\"docker://{h1}/fedora\"]\ntags = [\"extra\"]\n"),
    );
    let (code, _, stderr) = run(dir, &["publish", "-c", &extra, "--compose", &c2], &[]);
    assert_eq!(code, 0, "{stderr}");
    let with_extra = write(
        dir,
        "with-extra.toml",
        &format!("{head}[[image]]\nname = \"fedora\"\nrepositories = [\"docker://{h1}/fedora\", \"docker://{h2}/fedora\"]\ntags = [\"extra\"]\n"),
    );
    let (code, s) = status(&with_extra);
    assert_eq!(code, 4, "{s}");
    let repos_of = &s["images"][0]["tags"][0]["repositories"];
    assert!(repos_of[0]["digest"].is_string());
    assert!(
        repos_of[1]["digest"].is_null(),
        "missing in the second: {s}"
    );
}
