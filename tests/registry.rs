//! The native engine against a real registry (Debian's `docker-registry`),
//! plain, with htpasswd basic auth, and with token auth. The tests assert
//! what the registry holds afterwards (read with skopeo), and what requests
//! reached it (through a recording proxy), not log lines.

mod support;

use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::Ordering;

use archgate_fixtures::{write_dir_compose, ArchFixture, Image};
use serde_json::Value;
use support::{skopeo_raw, Auth, Fault, FaultKind, Proxy, Registry, TokenServer};

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", self.stdout, self.stderr))
    }
}

/// A work dir with composes c1 (x86_64, aarch64 built) and c2 (aarch64 failed).
struct Work {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
}

fn built<'a>(arch: &str, content: &'a str) -> ArchFixture<'a> {
    ArchFixture::Built(Image::for_arch(arch, content))
}

impl Work {
    /// `repos` are written as given; `registry` gets `tls-verify = false` and `extra` lines.
    fn new(registry_host: &str, registry_extra: &str, repos: &[String]) -> Work {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let repos: Vec<String> = repos.iter().map(|r| format!("\"{r}\"")).collect();
        fs::write(
            dir.join("archgate.toml"),
            format!(
                "[source]\nkind = \"dir\"\nlocation = \"c1\"\n\n[registry.\"{registry_host}\"]\ntls-verify = false\n{registry_extra}\n[[image]]\nname = \"fedora\"\nrepositories = [{}]\ntags = [\"{{release}}\", \"latest\"]\n",
                repos.join(", ")
            ),
        )
        .unwrap();
        let fedora = |arches: &[(&'static str, ArchFixture<'static>)]| -> Vec<(&'static str, &'static str, ArchFixture<'static>)> {
            arches.iter().map(|(a, f)| ("fedora", *a, f.clone())).collect()
        };
        write_dir_compose(
            &dir.join("c1"),
            "Test-41-20241101.n.0",
            "FINISHED",
            "41",
            &fedora(&[
                ("x86_64", built("x86_64", "x1")),
                ("aarch64", built("aarch64", "a1")),
            ]),
        )
        .unwrap();
        write_dir_compose(
            &dir.join("c2"),
            "Test-41-20241102.n.0",
            "FINISHED_INCOMPLETE",
            "41",
            &fedora(&[
                ("x86_64", built("x86_64", "x2")),
                ("aarch64", ArchFixture::Failed("createImage FAILED")),
            ]),
        )
        .unwrap();
        Work { _tmp: tmp, dir }
    }

    fn run(&self, args: &[&str]) -> Run {
        self.run_env(args, &[])
    }

    fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let (code, stdout, stderr) = support::archgate_env(&self.dir, args, env);
        Run {
            code,
            stdout,
            stderr,
        }
    }

    fn publish(&self, compose: &str, extra: &[&str]) -> Run {
        let mut args = vec!["publish", "--compose", compose, "--format", "json"];
        args.extend_from_slice(extra);
        self.run(&args)
    }

    fn write_auth(&self, name: &str, host: &str, user: &str, password: &str) -> PathBuf {
        use base64::Engine as _;
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let path = self.dir.join(name);
        fs::write(
            &path,
            format!("{{\"auths\":{{\"{host}\":{{\"auth\":\"{auth}\"}}}}}}"),
        )
        .unwrap();
        path
    }
}

/// The raw index (or manifest) a tag points to, read with skopeo.
fn raw(reference: &str) -> Option<Vec<u8>> {
    skopeo_raw(reference, None)
}

/// (platform, digest) of the entries of an index.
fn entries(raw_index: &[u8]) -> Vec<(String, String)> {
    let v: Value = serde_json::from_slice(raw_index).unwrap();
    v["manifests"]
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

fn arch<'a>(report: &'a Value, target: usize, arch: &str) -> &'a Value {
    report["targets"][target]["arches"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["arch"] == arch)
        .unwrap()
}

#[test]
fn first_publish_then_refuse_keeps_the_index_byte_identical() {
    let reg = Registry::start(Auth::None);
    let host = reg.host();
    let w = Work::new(&host, "", &[format!("docker://{host}/fedora")]);
    let first = w.publish("c1", &[]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    let r1 = first.json();
    let index41 = raw(&format!("{host}/fedora:41")).expect("tag 41 exists");
    assert_eq!(
        support::sha256(&index41),
        r1["targets"][0]["digest"].as_str().unwrap()
    );
    assert_eq!(
        entries(&index41),
        vec![
            (
                "linux/amd64".to_string(),
                arch(&r1, 0, "x86_64")["digest"]
                    .as_str()
                    .unwrap()
                    .to_string()
            ),
            (
                "linux/arm64".to_string(),
                arch(&r1, 0, "aarch64")["digest"]
                    .as_str()
                    .unwrap()
                    .to_string()
            ),
        ]
    );
    // The artifacts' manifest digests are preserved under the arch tags.
    let x86 = raw(&format!("{host}/fedora:41-x86_64")).unwrap();
    assert_eq!(
        support::sha256(&x86),
        arch(&r1, 0, "x86_64")["digest"].as_str().unwrap()
    );
    assert_eq!(raw(&format!("{host}/fedora:latest")).unwrap(), index41);

    let second = w.publish("c2", &[]);
    assert_eq!(second.code, 3, "{}", second.stderr);
    let r2 = second.json();
    assert_eq!(r2["targets"][0]["decision"], "refused");
    assert_eq!(
        raw(&format!("{host}/fedora:41")).unwrap(),
        index41,
        "refuse leaves the index byte-identical"
    );
    let x86_now = raw(&format!("{host}/fedora:41-x86_64")).unwrap();
    assert_eq!(
        support::sha256(&x86_now),
        arch(&r2, 0, "x86_64")["digest"].as_str().unwrap(),
        "the built arch tag moves on"
    );

    // archgate inspect reads the registry the same way.
    let inspect = w.run(&[
        "inspect",
        "-c",
        "archgate.toml",
        "--format",
        "json",
        &format!("docker://{host}/fedora:41"),
    ]);
    assert_eq!(inspect.code, 0, "{}", inspect.stderr);
    assert_eq!(
        inspect.json()["digest"].as_str().unwrap(),
        support::sha256(&index41)
    );
}

#[test]
fn lose_drops_and_hybrid_carries() {
    let reg = Registry::start(Auth::None);
    let host = reg.host();
    let w = Work::new(
        &host,
        "",
        &[
            format!("docker://{host}/lose"),
            format!("docker://{host}/hybrid"),
        ],
    );
    let first = w.publish("c1", &[]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    let old_aarch64 = arch(&first.json(), 0, "aarch64")["digest"]
        .as_str()
        .unwrap()
        .to_string();

    // Each repository with its own policy: run twice with one repository each.
    fs::write(
        w.dir.join("lose.toml"),
        fs::read_to_string(w.dir.join("archgate.toml"))
            .unwrap()
            .replace(&format!(", \"docker://{host}/hybrid\""), ""),
    )
    .unwrap();
    fs::write(
        w.dir.join("hybrid.toml"),
        fs::read_to_string(w.dir.join("archgate.toml"))
            .unwrap()
            .replace(&format!("\"docker://{host}/lose\", "), ""),
    )
    .unwrap();
    let lose = w.run(&[
        "publish",
        "-c",
        "lose.toml",
        "--compose",
        "c2",
        "--policy",
        "lose",
        "--format",
        "json",
    ]);
    assert_eq!(lose.code, 0, "{}", lose.stderr);
    let r = lose.json();
    assert_eq!(arch(&r, 0, "aarch64")["action"], "lost");
    let new_x86 = arch(&r, 0, "x86_64")["digest"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        entries(&raw(&format!("{host}/lose:41")).unwrap()),
        vec![("linux/amd64".to_string(), new_x86.clone())]
    );

    let hybrid = w.run(&[
        "publish",
        "-c",
        "hybrid.toml",
        "--compose",
        "c2",
        "--policy",
        "hybrid",
        "--format",
        "json",
    ]);
    assert_eq!(hybrid.code, 0, "{}", hybrid.stderr);
    assert_eq!(arch(&hybrid.json(), 0, "aarch64")["action"], "carried");
    assert_eq!(
        entries(&raw(&format!("{host}/hybrid:41")).unwrap()),
        vec![
            ("linux/amd64".to_string(), new_x86),
            ("linux/arm64".to_string(), old_aarch64)
        ]
    );
}

#[test]
fn unchanged_rerun_pushes_nothing() {
    let reg = Registry::start(Auth::None);
    let proxy = Proxy::start(format!("http://{}", reg.host()));
    let host = proxy.host();
    let w = Work::new(&host, "", &[format!("docker://{host}/fedora")]);
    assert_eq!(w.publish("c1", &[]).code, 0);
    let before = raw(&format!("{}/fedora:41", reg.host())).unwrap();
    proxy.clear_log();
    let again = w.publish("c1", &[]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    let r = again.json();
    assert_eq!(r["targets"][0]["decision"], "unchanged");
    assert_eq!(r["targets"][1]["decision"], "unchanged");
    assert_eq!(
        proxy.count("PUT", "/manifests/"),
        0,
        "no manifest pushed: {:?}",
        proxy.requests()
    );
    assert_eq!(
        proxy.count("POST", "/blobs/uploads/"),
        0,
        "no blob pushed: {:?}",
        proxy.requests()
    );
    assert_eq!(raw(&format!("{}/fedora:41", reg.host())).unwrap(), before);
}

#[test]
fn second_repository_mounts_blobs_and_falls_back_on_202() {
    let reg = Registry::start(Auth::None);
    let proxy = Proxy::start(format!("http://{}", reg.host()));
    let host = proxy.host();
    let w = Work::new(
        &host,
        "",
        &[
            format!("docker://{host}/fedora"),
            format!("docker://{host}/mirror/fedora"),
        ],
    );
    let run = w.publish("c1", &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    // 4 blobs (2 configs, 2 layers): uploaded once, mounted into the mirror.
    assert_eq!(
        proxy.count("PUT", "/v2/fedora/blobs/uploads/"),
        4,
        "{:?}",
        proxy.requests()
    );
    assert_eq!(proxy.count("PUT", "/v2/mirror/fedora/blobs/uploads/"), 0);
    assert_eq!(
        proxy.count("POST", "/v2/mirror/fedora/blobs/uploads/?mount="),
        4
    );
    let r = run.json();
    assert_eq!(
        raw(&format!("{}/mirror/fedora:41", reg.host()))
            .map(|b| support::sha256(&b))
            .as_deref(),
        r["targets"][2]["digest"].as_str()
    );

    // A registry that declines mounts (202) gets the blobs uploaded instead.
    let w2 = Work::new(
        &host,
        "",
        &[
            format!("docker://{host}/other"),
            format!("docker://{host}/other-mirror"),
        ],
    );
    proxy.fault(Fault {
        method: "POST",
        path_contains: "mount=".into(),
        skip: 0,
        times: 100,
        kind: FaultKind::DeclineMount,
    });
    proxy.clear_log();
    let run = w2.publish("c2", &["--policy", "lose"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        proxy.count("POST", "/v2/other-mirror/blobs/uploads/?mount=") >= 1,
        "{:?}",
        proxy.requests()
    );
    assert_eq!(
        proxy.count("PUT", "/v2/other-mirror/blobs/uploads/"),
        2,
        "{:?}",
        proxy.requests()
    );
    assert!(raw(&format!("{}/other-mirror:41", reg.host())).is_some());
}

#[test]
fn a_tag_moved_during_publish_is_not_overwritten() {
    let reg = Registry::start(Auth::None);
    let proxy = Proxy::start(format!("http://{}", reg.host()));
    let host = proxy.host();
    let w = Work::new(&host, "", &[format!("docker://{host}/fedora")]);
    assert_eq!(w.publish("c1", &[]).code, 0);
    let x86_manifest = raw(&format!("{}/fedora:41-x86_64", reg.host())).unwrap();
    // Someone points 41 at the x86_64 manifest between archgate's plan (the
    // first HEAD of the tag) and its index write (the second).
    proxy.fault(Fault {
        method: "HEAD",
        path_contains: "/v2/fedora/manifests/41".into(),
        skip: 1,
        times: 1,
        kind: FaultKind::PutFirst {
            path: "/v2/fedora/manifests/41".into(),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            bytes: x86_manifest.clone(),
        },
    });
    let run = w.publish("c2", &["--policy", "lose"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let r = run.json();
    assert_eq!(r["targets"][0]["decision"], "error");
    let reasons = r["targets"][0]["reasons"].to_string();
    let planned = r["targets"][0]["previous_digest"].as_str().unwrap();
    assert!(
        reasons.contains("moved")
            && reasons.contains(planned)
            && reasons.contains(&support::sha256(&x86_manifest)),
        "{reasons}"
    );
    assert_eq!(
        raw(&format!("{}/fedora:41", reg.host())).unwrap(),
        x86_manifest,
        "the moved tag is left alone"
    );
    assert_eq!(
        r["targets"][1]["decision"], "published",
        "the other target goes on"
    );
}

#[test]
fn transient_failures_are_retried_and_permanent_ones_are_not() {
    let reg = Registry::start(Auth::None);
    let proxy = Proxy::start(format!("http://{}", reg.host()));
    let host = proxy.host();
    let w = Work::new(&host, "", &[format!("docker://{host}/fedora")]);
    proxy.fault(Fault {
        method: "POST",
        path_contains: "/blobs/uploads/".into(),
        skip: 0,
        times: 2,
        kind: FaultKind::Status(503, None),
    });
    proxy.fault(Fault {
        method: "HEAD",
        path_contains: "/manifests/41-aarch64".into(),
        skip: 0,
        times: 1,
        kind: FaultKind::Status(429, Some("1")),
    });
    proxy.fault(Fault {
        method: "PUT",
        path_contains: "/manifests/latest".into(),
        skip: 0,
        times: 1,
        kind: FaultKind::Drop,
    });
    proxy.fault(Fault {
        method: "GET",
        path_contains: "/v2/".into(),
        skip: 0,
        times: 1,
        kind: FaultKind::Status(500, None),
    });
    let run = w.publish("c1", &["-v"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let r = run.json();
    for t in 0..2 {
        assert_eq!(
            raw(&format!("{}/fedora:{}", reg.host(), ["41", "latest"][t]))
                .map(|b| support::sha256(&b))
                .as_deref(),
            r["targets"][t]["digest"].as_str()
        );
    }
    let injected: Vec<_> = proxy
        .requests()
        .into_iter()
        .filter(|(_, _, s)| [0, 429, 500, 503].contains(s))
        .collect();
    assert_eq!(injected.len(), 5, "{injected:?}");
    assert!(
        run.stderr.contains("retrying"),
        "every retry is logged: {}",
        run.stderr
    );

    // A 403 on the index write cannot change: one try, exit 1.
    proxy.fault(Fault {
        method: "PUT",
        path_contains: "/manifests/41".into(),
        skip: 0,
        times: 100,
        kind: FaultKind::Status(403, None),
    });
    proxy.clear_log();
    let run = w.publish("c2", &["--policy", "lose"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(
        proxy.count("PUT", "/manifests/41"),
        1,
        "{:?}",
        proxy.requests()
    );
}

#[test]
fn basic_auth_from_auth_files_and_wrong_password() {
    let reg = Registry::start(Auth::Basic("rel", "s3cret-pw"));
    let host = reg.host();
    let w = Work::new(
        &host,
        "auth-file = \"good.json\"\n",
        &[format!("docker://{host}/fedora")],
    );
    w.write_auth("good.json", &host, "rel", "s3cret-pw");
    let bad = w.write_auth("bad.json", &host, "rel", "wrong-pw");
    let run = w.publish("c1", &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(skopeo_raw(&format!("{host}/fedora:41"), Some("rel:s3cret-pw")).is_some());

    // Wrong password: exit 1, a clear message, the secret nowhere, nothing written.
    let cfg = fs::read_to_string(w.dir.join("archgate.toml")).unwrap();
    fs::write(
        w.dir.join("bad.toml"),
        cfg.replace("good.json", "bad.json")
            .replace("/fedora", "/other"),
    )
    .unwrap();
    let run = w.run(&["publish", "-c", "bad.toml", "--format", "json"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let all = format!("{}{}", run.stdout, run.stderr);
    assert!(all.contains("authentication failed (user rel)"), "{all}");
    assert!(
        !all.contains("wrong-pw") && !all.contains("s3cret-pw"),
        "a secret leaked: {all}"
    );
    assert!(
        skopeo_raw(&format!("{host}/other:41"), Some("rel:s3cret-pw")).is_none(),
        "nothing written"
    );

    // Without auth-file, the containers' chain: REGISTRY_AUTH_FILE comes before DOCKER_CONFIG.
    fs::write(
        w.dir.join("chain.toml"),
        cfg.replace("auth-file = \"good.json\"\n", "")
            .replace("/fedora", "/chain"),
    )
    .unwrap();
    let docker = w.dir.join("docker");
    fs::create_dir_all(&docker).unwrap();
    fs::copy(&bad, docker.join("config.json")).unwrap();
    let good = w.dir.join("good.json");
    let run = w.run_env(
        &["publish", "-c", "chain.toml"],
        &[
            ("REGISTRY_AUTH_FILE", good.to_str().unwrap()),
            ("DOCKER_CONFIG", docker.to_str().unwrap()),
        ],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let run = w.run_env(
        &["publish", "-c", "chain.toml"],
        &[("DOCKER_CONFIG", docker.to_str().unwrap())],
    );
    assert_eq!(
        run.code, 1,
        "DOCKER_CONFIG's wrong password is used when nothing comes before it: {}",
        run.stderr
    );
}

#[test]
fn token_auth_with_a_fresh_token_after_a_401() {
    let tokens = TokenServer::start("rel", "t0ken-pw");
    let reg = Registry::start(Auth::Token(tokens.clone()));
    let host = reg.host();
    let w = Work::new(
        &host,
        "auth-file = \"auth.json\"\n",
        &[
            format!("docker://{host}/fedora"),
            format!("docker://{host}/mirror"),
        ],
    );
    w.write_auth("auth.json", &host, "rel", "t0ken-pw");
    // The first token for each scope has run out: every new scope meets a 401 first.
    tokens.expire_first.store(true, Ordering::SeqCst);
    let run = w.publish("c1", &[]);
    tokens.expire_first.store(false, Ordering::SeqCst);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let r = run.json();
    let scopes = tokens.scopes_seen.lock().unwrap().len();
    assert!(
        scopes >= 4,
        "pull, push and mount scopes of two repositories"
    );
    assert!(
        tokens.issued.load(Ordering::SeqCst) >= 2 * scopes,
        "every expired token was replaced after its 401"
    );
    for (t, reference) in [(0, "fedora:41"), (3, "mirror:latest")] {
        let got =
            skopeo_raw(&format!("{host}/{reference}"), Some("rel:t0ken-pw")).expect("published");
        assert_eq!(
            Some(support::sha256(&got).as_str()),
            r["targets"][t]["digest"].as_str()
        );
    }
    assert!(!run.stderr.contains("t0ken-pw") && !run.stdout.contains("t0ken-pw"));

    let w2 = Work::new(
        &host,
        "auth-file = \"auth.json\"\n",
        &[format!("docker://{host}/denied")],
    );
    w2.write_auth("auth.json", &host, "rel", "nope");
    let run = w2.publish("c1", &[]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        format!("{}{}", run.stdout, run.stderr).contains("token server refused user rel"),
        "{}",
        run.stderr
    );
}

#[test]
fn tls_is_verified_unless_turned_off() {
    let reg = Registry::start(Auth::None);
    let host = reg.host();
    let w = Work::new(&host, "", &[format!("docker://{host}/fedora")]);
    let cfg = fs::read_to_string(w.dir.join("archgate.toml")).unwrap();
    fs::write(
        w.dir.join("strict.toml"),
        cfg.replace("tls-verify = false\n", ""),
    )
    .unwrap();
    let run = w.run(&["plan", "-c", "strict.toml", "--format", "json"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.json()["targets"][0]["reasons"]
            .to_string()
            .contains("tls-verify = false"),
        "{}",
        run.stdout
    );
}

#[test]
fn reads_docker_lists_and_single_manifests() {
    let reg = Registry::start(Auth::None);
    let host = reg.host();
    let w = Work::new(&host, "", &[format!("docker://{host}/fedora")]);
    // A layout index copied as a Docker manifest list (skopeo converts it).
    assert_eq!(w.run(&["publish", "-c", "archgate.toml"]).code, 0);
    let out = Command::new("skopeo")
        .args([
            "copy",
            "--all",
            "--format",
            "v2s2",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
        ])
        .arg(format!("docker://{host}/fedora:41"))
        .arg(format!("docker://{host}/docker:41"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let inspect = w.run(&[
        "inspect",
        "-c",
        "archgate.toml",
        "--format",
        "json",
        &format!("{host}/docker:41"),
    ]);
    assert_eq!(inspect.code, 0, "{}", inspect.stderr);
    let v = inspect.json();
    assert_eq!(
        v["media_type"],
        "application/vnd.docker.distribution.manifest.list.v2+json"
    );
    assert_eq!(v["entries"].as_array().unwrap().len(), 2);
    // A single manifest counts as an index of one entry, its arch from its config.
    let single = w.run(&[
        "inspect",
        "-c",
        "archgate.toml",
        "--format",
        "json",
        &format!("{host}/docker:41-nope"),
    ]);
    assert_eq!(single.code, 1);
    let single = w.run(&[
        "inspect",
        "-c",
        "archgate.toml",
        "--format",
        "json",
        &format!("{host}/fedora:41-aarch64"),
    ]);
    assert_eq!(single.code, 0, "{}", single.stderr);
    assert_eq!(single.json()["entries"][0]["platform"], "linux/arm64");
    // A Docker v2 schema 2 manifest too.
    let out = Command::new("skopeo")
        .args([
            "copy",
            "--format",
            "v2s2",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
        ])
        .arg(format!("docker://{host}/fedora:41-x86_64"))
        .arg(format!("docker://{host}/docker-single:1"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let single = w.run(&[
        "inspect",
        "-c",
        "archgate.toml",
        "--format",
        "json",
        &format!("{host}/docker-single:1"),
    ]);
    assert_eq!(single.code, 0, "{}", single.stderr);
    let v = single.json();
    assert_eq!(
        v["media_type"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert_eq!(v["entries"][0]["platform"], "linux/amd64");
}

#[test]
fn archives_stream_to_registry_and_layout() {
    use archgate_fixtures::{write_docker_archive, write_oci_archive, Compress};
    let reg = Registry::start(Auth::None);
    let proxy = Proxy::start(format!("http://{}", reg.host()));
    let host = proxy.host();
    let w = Work::new(
        &host,
        "",
        &[
            format!("docker://{host}/fedora"),
            "oci:out/fedora".to_string(),
        ],
    );
    let c3 = w.dir.join("c3/fedora");
    fs::create_dir_all(c3.join("x86_64")).unwrap();
    fs::create_dir_all(c3.join("aarch64")).unwrap();
    fs::write(
        w.dir.join("c3/compose.toml"),
        "id = \"Test-41-20241103.n.0\"\nstatus = \"FINISHED\"\nrelease = \"41\"\n",
    )
    .unwrap();
    let oci_digest = write_oci_archive(
        &c3.join("x86_64/Fedora-Container-41.x86_64.oci.tar.xz"),
        &Image::for_arch("x86_64", "x3"),
        Compress::Xz,
    )
    .unwrap();
    write_docker_archive(
        &c3.join("aarch64/Fedora-Container-41.aarch64.tar.gz"),
        &Image::for_arch("aarch64", "a3"),
        Compress::Gzip,
    )
    .unwrap();
    // Two streamed uploads are cut off: the x86_64 layer while its archive is
    // first read (the read goes on; publishing streams the archive again for
    // that registry), and the aarch64 layer (converted from the
    // docker-archive, so only pushed when publishing) in the publishing pass
    // (the archive is streamed again).
    let layer = {
        let tmp = tempfile::tempdir().unwrap();
        let (_, manifest) =
            archgate_fixtures::write_image_blobs(tmp.path(), &Image::for_arch("x86_64", "x3"))
                .unwrap();
        let manifest: Value = serde_json::from_slice(&manifest).unwrap();
        manifest["layers"][0]["digest"]
            .as_str()
            .unwrap()
            .to_string()
    };
    proxy.fault(Fault {
        method: "PUT",
        path_contains: format!("digest={layer}"),
        skip: 0,
        times: 1,
        kind: FaultKind::Drop,
    });
    let docker = archgate_native::resolve(
        archgate_core::Arch::Aarch64,
        &archgate_core::Artifact::at(archgate_core::Location::Path(
            c3.join("aarch64/Fedora-Container-41.aarch64.tar.gz"),
        )),
    )
    .unwrap();
    let docker_layer = docker.layers[0].digest.clone();
    proxy.fault(Fault {
        method: "PUT",
        path_contains: format!("digest={docker_layer}"),
        skip: 0,
        times: 1,
        kind: FaultKind::Drop,
    });

    let run = w.publish("c3", &["-v"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let r = run.json();
    assert_eq!(
        arch(&r, 0, "x86_64")["digest"],
        oci_digest.as_str(),
        "an oci-archive keeps its manifest digest"
    );
    assert!(
        run.stderr.contains("streaming while reading failed"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("reading it again"), "{}", run.stderr);
    let index = raw(&format!("{}/fedora:41", reg.host())).unwrap();
    assert_eq!(
        Some(support::sha256(&index).as_str()),
        r["targets"][0]["digest"].as_str()
    );
    assert_eq!(entries(&index).len(), 2);
    let aarch64 = raw(&format!("{}/fedora:41-aarch64", reg.host())).unwrap();
    assert_eq!(
        Some(support::sha256(&aarch64).as_str()),
        arch(&r, 0, "aarch64")["digest"].as_str()
    );
    // The layout target got the same index.
    let out = Command::new("skopeo")
        .arg("inspect")
        .arg("--raw")
        .arg(format!("oci:{}:41", w.dir.join("out/fedora").display()))
        .output()
        .unwrap();
    assert_eq!(out.stdout, index);

    proxy.clear_log();
    let again = w.publish("c3", &[]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_eq!(again.json()["targets"][0]["decision"], "unchanged");
    assert_eq!(proxy.count("PUT", "/"), 0, "{:?}", proxy.requests());
}

/// Two images built from the same blobs (as the atomic desktops share
/// their chunked layers), in two repositories of one registry, published
/// at once: each blob crosses to the registry once, whichever image it
/// belongs to; the other repository mounts it.
#[test]
fn a_blob_goes_up_once_per_registry_whichever_image_it_belongs_to() {
    let reg = Registry::start(Auth::None);
    let proxy = Proxy::start(format!("http://{}", reg.host()));
    let host = proxy.host();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let image = |name: &str| {
        format!("\n[[image]]\nname = \"{name}\"\nrepositories = [\"docker://{host}/{name}\"]\ntags = [\"{{release}}\"]\n")
    };
    fs::write(
        dir.join("archgate.toml"),
        format!(
            "[source]\nkind = \"dir\"\nlocation = \"c1\"\n\n[registry.\"{host}\"]\ntls-verify = false\n{}{}",
            image("silverblue"),
            image("kinoite")
        ),
    )
    .unwrap();
    let mut arches = Vec::new();
    for name in ["silverblue", "kinoite"] {
        for arch in ["x86_64", "aarch64"] {
            arches.push((name, arch, built(arch, "shared")));
        }
    }
    write_dir_compose(
        &dir.join("c1"),
        "Test-41-20241101.n.0",
        "FINISHED",
        "41",
        &arches,
    )
    .unwrap();
    let (code, _, err) = support::archgate(dir, &["publish"]);
    assert_eq!(code, 0, "{err}");
    // Each blob (a config per arch, the layer they share) uploaded once in
    // all, and mounted into the other repository.
    let uploads: Vec<String> = proxy
        .requests()
        .into_iter()
        .filter(|(m, p, _)| m == "PUT" && p.contains("/blobs/uploads/"))
        .filter_map(|(_, p, _)| p.split("digest=").nth(1).map(str::to_string))
        .collect();
    let distinct: std::collections::BTreeSet<&String> = uploads.iter().collect();
    assert_eq!(
        uploads.len(),
        distinct.len(),
        "a blob went up twice: {uploads:#?}"
    );
    assert_eq!(uploads.len(), 3, "{uploads:#?}");
    let mounts = proxy.count("POST", "/blobs/uploads/?mount=");
    assert_eq!(mounts, 3, "{:?}", proxy.requests());
    for name in ["silverblue", "kinoite"] {
        assert!(raw(&format!("{}/{name}:41", reg.host())).is_some());
    }
}

/// The artifacts are read while the current indexes are (issue 25), but
/// nothing of an image is sent before it is known not to be stale: an
/// older compose read against a tag holding a newer one uploads, mounts
/// and opens nothing.
#[test]
fn a_stale_image_sends_nothing_while_it_is_read() {
    let reg = Registry::start(Auth::None);
    let proxy = Proxy::start(format!("http://{}", reg.host()));
    let host = proxy.host();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    fs::write(
        dir.join("archgate.toml"),
        format!(
            "[source]\nkind = \"dir\"\nlocation = \"new\"\n\n[registry.\"{host}\"]\ntls-verify = false\n\n[[image]]\nname = \"fedora\"\nrepositories = [\"docker://{host}/fedora\", \"docker://{host}/mirror/fedora\"]\ntags = [\"{{release}}\"]\n"
        ),
    )
    .unwrap();
    for (name, id, content) in [
        ("new", "Test-41-20241102.n.0", "new"),
        ("old", "Test-41-20241101.n.0", "old"),
    ] {
        let arches: Vec<_> = ["x86_64", "aarch64"]
            .iter()
            .map(|a| ("fedora", *a, built(a, content)))
            .collect();
        write_dir_compose(&dir.join(name), id, "FINISHED", "41", &arches).unwrap();
        // Archives, as Pungi writes them (a layout is read in place, never
        // streamed while it is read).
        for arch in ["x86_64", "aarch64"] {
            let at = dir.join(name).join("fedora").join(arch);
            fs::remove_dir_all(&at).unwrap();
            fs::create_dir_all(&at).unwrap();
            archgate_fixtures::write_oci_archive(
                &at.join(format!("Fedora-41.{arch}.oci.tar.xz")),
                &Image::for_arch(arch, content),
                archgate_fixtures::Compress::Xz,
            )
            .unwrap();
        }
    }
    let (code, _, err) = support::archgate(dir, &["publish"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        proxy.count("PUT", "/blobs/uploads/") > 0,
        "the first publish sent its blobs"
    );
    proxy.clear_log();
    let (code, out, err) = support::archgate(dir, &["publish", "--compose", "old"]);
    assert_eq!(code, 3, "{out}{err}");
    assert!(out.contains("stale"), "{out}");
    let sent: Vec<_> = proxy
        .requests()
        .into_iter()
        .filter(|(m, p, _)| p.contains("/blobs/") && m != "HEAD" && m != "GET")
        .collect();
    assert!(sent.is_empty(), "a stale image sent: {sent:#?}");
}

/// First contact opens, beside its own `GET /v2/`, the connections the run
/// said it will want at once right after it: those of its small requests
/// (plain HTTP here; ready before its first request goes) and those of its
/// uploads (in the background), each by a `GET /v2/` of its own, so that
/// the first requests and uploads do not each wait for a connection to
/// open (a round trip, over TLS two).
#[test]
fn first_contact_opens_the_connections_the_run_will_want() {
    use archgate_native::{RegistryRepo, Store};
    let reg = Registry::start(Auth::None);
    let conns = support::Connections::start(reg.host().parse().unwrap());
    let host = conns.addr.to_string();
    let (rt, view) = direct_view(&host);
    rt.block_on(async {
        view.expect(4, 2);
        let repo = RegistryRepo {
            registry: view,
            path: "fedora".into(),
        };
        assert_eq!(repo.resolve_tag("41").await.unwrap(), None);
    });
    // Each connection opened ahead is opened by a `GET /v2/` of its own
    // (which connection each request takes is the HTTP client's business:
    // on loopback an answer can come back before another request goes).
    let lines = conns.lines();
    let first_read = lines
        .iter()
        .position(|(_, l)| l == "HEAD /v2/fedora/manifests/41")
        .unwrap_or_else(|| panic!("the tag was read: {lines:#?}"));
    let pings = |lines: &[(usize, String)]| lines.iter().filter(|(_, l)| l == "GET /v2/").count();
    assert!(
        pings(&lines[..first_read]) >= 4,
        "the first contact and 3 more before the first read: {lines:#?}"
    );
    // The uploads' 2 come too, whenever they are ready.
    conns.wait_until(|lines| pings(lines) >= 6);
}

/// Upload sessions opened ahead (for an index's signature, whose digest
/// comes last): the uploads that take them cost one request each, with
/// no session opened then; they are opened once per repository; and those
/// nothing took are given up, none left open on the registry.
#[test]
fn uploads_take_the_sessions_opened_ahead_and_none_is_left_open() {
    use archgate_native::Descriptor;
    let reg = Registry::start(Auth::None);
    let proxy = Proxy::start(format!("http://{}", reg.host()));
    let host = proxy.host();
    let uploads = |repo: &str| {
        reg.dir
            .path()
            .join("data/docker/registry/v2/repositories")
            .join(repo)
            .join("_uploads")
    };
    // An open session is a directory with its `startedat` (a session
    // given up loses it; docker-registry may leave a hash state behind).
    let open_here = |repo: &str| {
        fs::read_dir(uploads(repo)).map_or(0, |d| {
            d.filter(|e| e.as_ref().unwrap().path().join("startedat").exists())
                .count()
        })
    };
    let sessions_opened = || proxy.count("POST", "/blobs/uploads/");
    let (rt, view) = direct_view(&host);
    rt.block_on(async {
        view.open_sessions_ahead("fedora", 2);
        // Once per repository: asked again, nothing more is opened.
        view.open_sessions_ahead("fedora", 2);
        let blob = |text: &str| {
            let mut desc = Descriptor::new("application/octet-stream", text.as_bytes());
            desc.media_type = "application/octet-stream".into();
            (desc, text.as_bytes().to_vec())
        };
        let (a, b, c) = (blob("payload"), blob("config"), blob("third"));
        // Both are open (answered: a count that only grows).
        while sessions_opened() < 2 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(sessions_opened(), 2, "{:#?}", proxy.requests());
        assert_eq!(open_here("fedora"), 2);
        proxy.clear_log();
        for (desc, bytes) in [&a, &b] {
            view.upload_whole("fedora", desc, bytes, true)
                .await
                .unwrap();
        }
        assert_eq!(
            sessions_opened(),
            0,
            "the uploads took the sessions opened ahead: {:#?}",
            proxy.requests()
        );
        assert_eq!(proxy.count("PUT", "/v2/fedora/blobs/uploads/"), 2);
        // None is left: the next upload opens its own.
        view.upload_whole("fedora", &c.0, &c.1, true).await.unwrap();
        assert_eq!(sessions_opened(), 1, "{:#?}", proxy.requests());
        // Sessions that nothing takes are given up at the end.
        view.open_sessions_ahead("mirror/fedora", 1);
        while proxy.count("POST", "/v2/mirror/fedora/blobs/uploads/") < 1 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(open_here("mirror/fedora"), 1);
        view.give_up_sessions_ahead().await;
        assert_eq!(proxy.count("DELETE", "/v2/mirror/fedora/blobs/uploads/"), 1);
        for (desc, _) in [&a, &b, &c] {
            assert!(view.blob_exists("fedora", &desc.digest).await.unwrap());
        }
    });
    assert_eq!(open_here("fedora"), 0, "no session is left open");
    assert_eq!(open_here("mirror/fedora"), 0, "no session is left open");
}

/// A runtime, and a run's view of a registry client for `host` (plain
/// HTTP allowed), for tests that drive the client itself.
fn direct_view(
    host: &str,
) -> (
    tokio::runtime::Runtime,
    std::sync::Arc<archgate_native::Registry>,
) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let settings = archgate_native::RegistrySettings {
        tls_verify: false,
        credentials: None,
        tls: Default::default(),
        retry: Default::default(),
    };
    let client = archgate_native::Registry::new(host, settings).unwrap();
    (rt, std::sync::Arc::new(client.view()))
}
