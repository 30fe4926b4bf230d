//! Faults archgate must survive without losing an arch or hanging: dead,
//! stalling and dripping registries give up within the deadline; an index
//! entry whose arch cannot be read is an error under every policy.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant};

use archgate_fixtures::{write_dir_compose, ArchFixture, Image};
use support::{archgate, registry_tag, Auth, Fault, FaultKind, Proxy, Registry};

fn config(dir: &Path, host: &str, extra: &str, repos: &[&str]) -> String {
    let repos: Vec<String> = repos
        .iter()
        .map(|r| format!("\"docker://{host}/{r}\""))
        .collect();
    let text = format!(
        "[source]\nkind = \"dir\"\n\n[registry.\"{host}\"]\ntls-verify = false\n{extra}\n[[image]]\nname = \"fedora\"\nrepositories = [{}]\ntags = [\"{{release}}\", \"latest\"]\n",
        repos.join(", ")
    );
    let path = dir.join("a.toml");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

/// A server that accepts and reads, then never answers.
fn stalling() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in l.incoming().flatten() {
            held.push(s); // kept open, never answered
        }
    });
    addr
}

/// A server that answers one byte every 500 ms, forever.
fn dripping() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut line = String::new();
                let _ = r.read_line(&mut line);
                let mut s = s;
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.index.v1+json\r\nConnection: close\r\n\r\n");
                for _ in 0..10_000 {
                    if s.write_all(b"x").is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(500));
                }
            });
        }
    });
    addr
}

#[test]
fn dead_stalling_and_dripping_registries_give_up_in_time() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    support::two_arch_compose(&dir.join("c1"), "Test-41-c1", "41", "one");
    let closed = format!("127.0.0.1:{}", support::free_port());
    for (what, host) in [
        ("dead", closed),
        ("stalling", stalling()),
        ("dripping", dripping()),
    ] {
        let cfg = config(
            dir,
            &host,
            "timeout = \"4s\"\n",
            &["fedora", "mirror/fedora", "third/fedora"],
        );
        let started = Instant::now();
        let (code, stdout, stderr) = archgate(
            dir,
            &["publish", "-c", &cfg, "--compose", "c1", "--format", "json"],
        );
        let took = started.elapsed();
        assert_eq!(code, 1, "{what}: {stderr}");
        // 6 targets on one host: the first gives up within the deadline
        // (plus a connect timeout), the others fail fast.
        assert!(took < Duration::from_secs(30), "{what}: took {took:?}");
        let r: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        for t in r["targets"].as_array().unwrap() {
            assert_eq!(t["decision"], "error", "{what}: {t}");
            assert!(
                t["reasons"].to_string().contains(&host),
                "{what}: the host is named: {t}"
            );
        }
        assert!(
            r["targets"].to_string().contains("gave up after")
                || r["targets"].to_string().contains("not tried"),
            "{what}: {stdout}"
        );
    }
}

/// A token endpoint that answers without end: 64 KiB chunks, as fast as
/// they are read.
fn endless_token_server() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut line = String::new();
                let _ = r.read_line(&mut line);
                let mut s = s;
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n");
                let chunk = format!("10000\r\n{}\r\n", "a".repeat(0x10000));
                while s.write_all(chunk.as_bytes()).is_ok() {}
            });
        }
    });
    addr
}

/// A token server's endless answer is a clear error naming the token
/// server, read no further than the bound (RELIABILITY.md), not a process
/// that grows until it is killed.
#[test]
fn an_endless_token_answer_is_a_bounded_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    support::two_arch_compose(&dir.join("c1"), "Test-41-c1", "41", "one");
    let realm = format!("http://{}/token", endless_token_server());
    // A registry that asks for a bearer token from that realm.
    let registry = support::Server::start(move |_req| {
        let challenge = format!("Bearer realm=\"{realm}\",service=\"test\"");
        async move {
            Ok(support::respond(
                401,
                &[("www-authenticate", &challenge)],
                "",
            ))
        }
    });
    let host = registry.addr.to_string();
    let cfg = config(dir, &host, "", &["fedora"]);
    let (code, stdout, stderr) = archgate(
        dir,
        &["publish", "-c", &cfg, "--compose", "c1", "--format", "json"],
    );
    assert_eq!(code, 1, "{stderr}");
    let r: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    for t in r["targets"].as_array().unwrap() {
        assert_eq!(t["decision"], "error", "{t}");
        let why = t["reasons"].to_string();
        assert!(
            why.contains("the token server's answer") && why.contains("larger than 8388608 bytes"),
            "{why}"
        );
    }
}

/// An index whose entries list no platform, and whose configs cannot be
/// read: the arches of the current index cannot be established, so the
/// target fails, whatever the policy; nothing is dropped or written.
#[test]
fn an_unreadable_current_entry_is_an_error_under_every_policy() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    support::two_arch_compose(&dir.join("c1"), "Test-41-c1", "41", "one");
    support::two_arch_compose(&dir.join("c2"), "Test-41-c2", "41", "two");
    let reg = Registry::start(Auth::None);
    let proxy = Proxy::start(format!("http://{}", reg.host()));
    let host = proxy.host();
    let cfg = config(dir, &host, "", &["fedora"]);
    let (code, _, stderr) = archgate(dir, &["publish", "-c", &cfg, "--compose", "c1"]);
    assert_eq!(code, 0, "{stderr}");
    // Rewrite the index under 41 without platforms (the manifests are there).
    let (index, _) = registry_tag(&format!("{}/fedora:41", reg.host())).unwrap();
    let mut bare = index.clone();
    for m in bare["manifests"].as_array_mut().unwrap() {
        m.as_object_mut().unwrap().remove("platform");
    }
    let bytes = serde_json::to_vec(&bare).unwrap();
    let put = reqwest::blocking::Client::new()
        .put(format!("http://{}/v2/fedora/manifests/41", reg.host()))
        .header("content-type", "application/vnd.oci.image.index.v1+json")
        .body(bytes)
        .send()
        .unwrap();
    assert!(put.status().is_success(), "{}", put.status());
    let before = registry_tag(&format!("{}/fedora:41", reg.host()))
        .unwrap()
        .1;
    // Every config read fails.
    proxy.fault(Fault {
        method: "GET",
        path_contains: "/blobs/sha256:".into(),
        skip: 0,
        times: 1000,
        kind: FaultKind::Status(404, None),
    });
    for policy in ["refuse", "lose", "hybrid"] {
        let (code, stdout, stderr) = archgate(
            dir,
            &[
                "publish",
                "-c",
                &cfg,
                "--compose",
                "c2",
                "--policy",
                policy,
                "--format",
                "json",
            ],
        );
        assert_eq!(code, 1, "{policy}: {stderr}");
        let r: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        let t = &r["targets"][0];
        assert_eq!(t["decision"], "error", "{policy}: {t}");
        assert!(
            t["reasons"]
                .to_string()
                .contains("lists no platform, and its config cannot be read"),
            "{policy}: {t}"
        );
        assert_eq!(
            registry_tag(&format!("{}/fedora:41", reg.host()))
                .unwrap()
                .1,
            before,
            "{policy}: not written"
        );
    }
}

/// Special files and escapes in a compose: a FIFO, a link to /dev/zero and a
/// link that leaves the compose are refused without blocking or reading
/// forever; an artifact longer than images.json says stops at that size.
#[test]
fn special_files_and_escapes_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let from =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/real/data/pungi/f41-checksums");
    let cfg = dir.join("p.toml");
    std::fs::write(
        &cfg,
        "[source]\nkind = \"pungi\"\n\n[[image]]\nname = \"fedora\"\nmatch = { subvariant = \"Container_Base\" }\nrepositories = [\"oci:out/fedora\"]\ntags = [\"{release}\"]\n",
    )
    .unwrap();
    let cfg = cfg.to_str().unwrap();
    let fresh = |name: &str| {
        let to = dir.join(name);
        let status = std::process::Command::new("cp")
            .arg("-a")
            .arg(&from)
            .arg(&to)
            .status()
            .unwrap();
        assert!(status.success());
        to
    };
    let artifact = |root: &Path, arch: &str| {
        let d = root.join("compose/Container").join(arch).join("images");
        std::fs::read_dir(&d)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path()
    };
    let run = |root: &Path| {
        archgate(
            dir,
            &[
                "plan",
                "-c",
                cfg,
                "--compose",
                root.to_str().unwrap(),
                "--format",
                "json",
            ],
        )
    };

    // A FIFO and /dev/zero in place of artifacts.
    let c = fresh("special");
    let x86 = artifact(&c, "x86_64");
    std::fs::remove_file(&x86).unwrap();
    assert!(std::process::Command::new("mkfifo")
        .arg(&x86)
        .status()
        .unwrap()
        .success());
    let ppc = artifact(&c, "ppc64le");
    std::fs::remove_file(&ppc).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &ppc).unwrap();
    // Each is its arch's failure (docs/sources.md); the gate decides, and
    // with no current index the other arches are planned as usual.
    let failed_with = |stdout: &str, arch: &str, why: &str| {
        let report: serde_json::Value = serde_json::from_str(stdout).unwrap();
        let t = &report["targets"][0];
        assert_eq!(t["decision"], "published", "{stdout}");
        assert_eq!(support::arch_of(t, arch)["result"], "failed", "{stdout}");
        assert_eq!(support::arch_of(t, "s390x")["result"], "built", "{stdout}");
        let reasons = t["reasons"].to_string();
        assert!(reasons.contains(why), "{arch}: {why}: {reasons}");
    };
    let (code, stdout, stderr) = run(&c);
    assert_eq!(code, 0, "{stdout} {stderr}");
    failed_with(&stdout, "x86_64", "not a regular file");
    failed_with(&stdout, "ppc64le", "leads outside the compose");

    // A link that leaves the compose, to a real archive elsewhere.
    let c = fresh("escape");
    let outside = dir.join("outside.oci.tar.xz");
    let x86 = artifact(&c, "x86_64");
    std::fs::copy(&x86, &outside).unwrap();
    std::fs::remove_file(&x86).unwrap();
    std::os::unix::fs::symlink(&outside, &x86).unwrap();
    let (code, stdout, stderr) = run(&c);
    assert_eq!(code, 0, "{stderr}");
    failed_with(&stdout, "x86_64", "leads outside the compose");

    // A directory (an OCI layout, even) where an archive file should be.
    let c = fresh("directory");
    let x86 = artifact(&c, "x86_64");
    std::fs::remove_file(&x86).unwrap();
    std::fs::create_dir_all(x86.join("blobs")).unwrap();
    std::fs::write(x86.join("oci-layout"), "{\"imageLayoutVersion\":\"1.0.0\"}").unwrap();
    let (code, stdout, stderr) = run(&c);
    assert_eq!(code, 0, "{stderr}");
    failed_with(
        &stdout,
        "x86_64",
        "a directory where an archive file should be",
    );

    // An artifact longer than its size in images.json: read only that far.
    let c = fresh("long");
    let s390x = artifact(&c, "s390x");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&s390x)
        .unwrap();
    f.write_all(&vec![0u8; 1 << 20]).unwrap();
    let (code, stdout, _) = run(&c);
    assert_eq!(code, 0);
    assert!(
        stdout.contains("s390x") && stdout.contains("size mismatch"),
        "{stdout}"
    );
}

/// Text from a compose reaches the terminal and the report escaped.
#[test]
fn untrusted_text_is_escaped() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_dir_compose(
        &dir.join("c1"),
        "Test-41-c1",
        "FINISHED",
        "41",
        &[
            (
                "fedora",
                "x86_64",
                ArchFixture::Built(Image::for_arch("x86_64", "x")),
            ),
            (
                "fedora",
                "aarch64",
                ArchFixture::Failed("oom\n\u{1b}[2J\u{1b}[31mFAKE: all good"),
            ),
        ],
    )
    .unwrap();
    std::fs::write(
        dir.join("a.toml"),
        "[source]\nkind = \"dir\"\n\n[[image]]\nname = \"fedora\"\nrepositories = [\"oci:out/fedora\"]\ntags = [\"{release}\"]\n",
    )
    .unwrap();
    for format in ["text", "json"] {
        let (code, stdout, stderr) = archgate(
            dir,
            &[
                "plan",
                "-c",
                "a.toml",
                "--compose",
                "c1",
                "--format",
                format,
            ],
        );
        assert_eq!(code, 0, "{stderr}");
        assert!(
            !stdout.contains('\u{1b}') && !stderr.contains('\u{1b}'),
            "{format}: a raw escape sequence: {stdout:?}"
        );
        assert!(
            stdout.contains("oom\\\\n\\\\u{1b}[2J") || stdout.contains("oom\\n\\u{1b}[2J"),
            "{format}: {stdout}"
        );
    }
    // A Pungi STATUS with a newline and an escape sequence.
    let from =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/real/data/pungi/f41-checksums");
    let c = dir.join("status");
    assert!(std::process::Command::new("cp")
        .arg("-a")
        .arg(&from)
        .arg(&c)
        .status()
        .unwrap()
        .success());
    std::fs::write(c.join("STATUS"), "FINISHED\n\u{1b}[2Jrm -rf /\n").unwrap();
    std::fs::write(dir.join("p.toml"), "[source]\nkind = \"pungi\"\n\n[[image]]\nname = \"fedora\"\nmatch = { subvariant = \"Container_Base\" }\nrepositories = [\"oci:out/p\"]\ntags = [\"{release}\"]\n").unwrap();
    let (code, _, stderr) = archgate(
        dir,
        &["plan", "-c", "p.toml", "--compose", c.to_str().unwrap()],
    );
    assert_eq!(code, 1);
    assert!(
        !stderr.contains('\u{1b}') && stderr.contains("is not a compose status"),
        "{stderr:?}"
    );
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr:?}");
}

/// SIGTERM and SIGINT stop a publish and leave no temp files; what a
/// SIGKILLed run left (its temp dir with the HTTP spool, temp files in a
/// layout) is removed by the next run.
#[test]
fn interrupts_leave_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/real/data/pungi");
    let (server, _) = support::serve_dir(data);
    let reg = Registry::start(Auth::None);
    let proxy = Proxy::start(format!("http://{}", reg.host()));
    let host = proxy.host();
    std::fs::write(
        dir.join("a.toml"),
        format!("[source]\nkind = \"pungi\"\n\n[registry.\"{host}\"]\ntls-verify = false\n\n[[image]]\nname = \"fedora\"\nmatch = {{ subvariant = \"Container_Base\" }}\nrepositories = [\"docker://{host}/fedora\", \"oci:out/fedora\"]\ntags = [\"{{release}}\"]\n"),
    )
    .unwrap();
    let temp = dir.join("tmp");
    std::fs::create_dir_all(&temp).unwrap();
    let url = format!("http://{}/f41-incomplete/compose", server.addr);
    let start = |n: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_archgate"))
            .args(["publish", "-c", "a.toml", "--compose", &url])
            .current_dir(dir)
            .env("HOME", dir)
            .env("TMPDIR", &temp)
            .env("ARCHGATE_CACHE_DIR", dir.join(format!("cache-{n}")))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let runs = |p: &Path| -> Vec<String> {
        std::fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };
    // Each run is stopped while the proxy holds one of its PUTs: the run is
    // in the middle of publishing, and stays there until it is signalled.
    for (signal, code) in [("-TERM", 143), ("-INT", 130)] {
        let gate = proxy.hold("PUT", "/");
        let child = start(signal);
        let pid = child.id().to_string();
        gate.wait_held(1, 60);
        assert_eq!(runs(&temp).len(), 1, "the run's temp dir, while it runs");
        std::process::Command::new("kill")
            .args([signal, &pid])
            .status()
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{signal}: {stderr}");
        assert!(stderr.contains("stopped by SIG"), "{signal}: {stderr}");
        assert!(runs(&temp).is_empty(), "{signal}: left {:?}", runs(&temp));
        gate.release();
        proxy.clear_faults();
    }
    // SIGKILL: the temp dir stays; the next run removes it.
    let gate = proxy.hold("PUT", "/");
    let mut child = start("kill");
    gate.wait_held(1, 60);
    child.kill().unwrap();
    child.wait().unwrap();
    gate.release();
    proxy.clear_faults();
    assert_eq!(runs(&temp).len(), 1, "the killed run's temp dir");
    let mut child = start("after");
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(runs(&temp).is_empty(), "left {:?}", runs(&temp));
    // A layout temp file of a dead run (pid 4194303 is above Linux's
    // pid_max default): the next run that writes the layout removes it.
    let stale = dir.join("out/fedora/.archgate-tmp-4194303-0");
    std::fs::write(&stale, "torn").unwrap();
    let (code, _, stderr) = archgate(
        dir,
        &[
            "publish",
            "-c",
            "a.toml",
            "--compose",
            &format!("http://{}/f41-kiwi-star", server.addr),
        ],
    );
    assert_eq!(
        code, 3,
        "refused (two arches failed), arch tags written: {stderr}"
    );
    assert!(!stale.exists(), "the dead run's temp file is gone");
}

/// Two archgate processes writing different tags into one `oci:` layout at
/// once: the layout's lock keeps both (index.json is read, changed and
/// written whole).
#[test]
fn concurrent_publishers_into_one_layout_keep_every_tag() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    for round in 0..8 {
        let name = format!("c{round}");
        support::two_arch_compose(
            &dir.join(&name),
            &format!("Test-41-{name}"),
            "41",
            &format!("round {round}"),
        );
        let cfg = |tag: &str| {
            let path = dir.join(format!("{tag}.toml"));
            std::fs::write(
                &path,
                format!("[source]\nkind = \"dir\"\n\n[[image]]\nname = \"fedora\"\nrepositories = [\"oci:out/fedora\"]\ntags = [\"{tag}-{{release}}\", \"{tag}\"]\narch-tag = \"{{tag}}-{{arch}}\"\n"),
            )
            .unwrap();
            path
        };
        let spawn = |tag: &str| {
            std::process::Command::new(env!("CARGO_BIN_EXE_archgate"))
                .args(["publish", "-c"])
                .arg(cfg(tag))
                .args(["--compose", &name])
                .current_dir(dir)
                .env("HOME", dir)
                .env("ARCHGATE_CACHE_DIR", dir.join(format!("cache-{tag}")))
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        };
        let (a, b) = (spawn("a"), spawn("b"));
        for (who, child) in [("a", a), ("b", b)] {
            let out = child.wait_with_output().unwrap();
            assert_eq!(
                out.status.code(),
                Some(0),
                "round {round} {who}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("out/fedora/index.json")).unwrap())
                .unwrap();
        let tags: Vec<&str> = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|m| m["annotations"]["org.opencontainers.image.ref.name"].as_str())
            .collect();
        for tag in ["a", "b", "a-x86_64", "b-aarch64"] {
            assert!(tags.contains(&tag), "round {round}: {tag} lost: {tags:?}");
        }
    }
}

/// A read cut short is transient: the read-back of a new index whose first
/// answer is truncated is tried again, and the target is published.
#[test]
fn a_truncated_read_back_is_tried_again() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    support::two_arch_compose(&dir.join("c1"), "Test-41-c1", "41", "one");
    let reg = Registry::start(Auth::None);
    let proxy = Proxy::start(format!("http://{}", reg.host()));
    let host = proxy.host();
    let cfg = config(dir, &host, "", &["fedora"]);
    // The first GET of the tag is the plan's (there is nothing yet); the
    // second is the read-back after the index PUT: that one is cut short.
    proxy.fault(Fault {
        method: "GET",
        path_contains: "/v2/fedora/manifests/41".into(),
        skip: 1,
        times: 1,
        kind: FaultKind::Truncate,
    });
    let (code, stdout, stderr) = archgate(
        dir,
        &[
            "publish",
            "-c",
            &cfg,
            "--compose",
            "c1",
            "--format",
            "json",
            "-v",
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("retrying"),
        "the truncated answer was tried again: {stderr}"
    );
    let r: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let t = &r["targets"][0];
    assert_eq!(t["decision"], "published");
    assert_eq!(
        registry_tag(&format!("{}/fedora:41", reg.host()))
            .unwrap()
            .1
            .as_str(),
        t["digest"].as_str().unwrap()
    );
    let truncated = proxy
        .requests()
        .iter()
        .filter(|(m, p, _)| m == "GET" && p.contains("/v2/fedora/manifests/41"))
        .count();
    assert!(
        truncated >= 3,
        "plan, cut read-back, read-back again: {:?}",
        proxy.requests()
    );
}

/// Two processes publishing one `oci:` target at once, one adding an arch
/// the other did not build: never both succeed with the arch lost (the
/// layout's lock orders them; the second finds the tag moved).
#[test]
fn two_publishers_on_one_layout_target_never_both_lose_an_arch() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(
        dir.join("a.toml"),
        "[source]\nkind = \"dir\"\n\n[[image]]\nname = \"fedora\"\nrepositories = [\"oci:out/fedora\"]\ntags = [\"{release}\"]\n",
    )
    .unwrap();
    for round in 0..6 {
        let out = dir.join("out");
        let _ = std::fs::remove_dir_all(&out);
        // Round start: the target holds x86_64 only.
        archgate_fixtures::write_dir_compose(
            &dir.join(format!("base{round}")),
            "Test-41-base",
            "FINISHED",
            "41",
            &[(
                "fedora",
                "x86_64",
                ArchFixture::Built(Image::for_arch("x86_64", "base")),
            )],
        )
        .unwrap();
        let (code, _, e) = archgate(
            dir,
            &[
                "publish",
                "-c",
                "a.toml",
                "--compose",
                &format!("base{round}"),
            ],
        );
        assert_eq!(code, 0, "{e}");
        // A adds aarch64; B rebuilds x86_64 only.
        support::two_arch_compose(
            &dir.join(format!("a{round}")),
            "Test-41-a",
            "41",
            &format!("a {round}"),
        );
        archgate_fixtures::write_dir_compose(
            &dir.join(format!("b{round}")),
            "Test-41-b",
            "FINISHED",
            "41",
            &[(
                "fedora",
                "x86_64",
                ArchFixture::Built(Image::for_arch("x86_64", &format!("b {round}"))),
            )],
        )
        .unwrap();
        let spawn = |c: String| {
            std::process::Command::new(env!("CARGO_BIN_EXE_archgate"))
                .args(["publish", "-c", "a.toml", "--compose", &c])
                .current_dir(dir)
                .env("HOME", dir)
                .env("ARCHGATE_CACHE_DIR", dir.join("cache"))
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        };
        let (a, b) = (spawn(format!("a{round}")), spawn(format!("b{round}")));
        let (oa, ob) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("fedora/index.json")).unwrap()).unwrap();
        let tag41 = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == "41")
            .unwrap()["digest"]
            .as_str()
            .unwrap()
            .to_string();
        let (code, stdout, _) =
            archgate(dir, &["inspect", "--format", "json", "oci:out/fedora:41"]);
        assert_eq!(code, 0);
        let arches = stdout.matches("linux/").count();
        let both_ok = oa.status.success() && ob.status.success();
        assert!(
            !(both_ok && arches < 2),
            "round {round}: both exited 0 and {tag41} holds {arches} arch(es): {}\n{}",
            String::from_utf8_lossy(&oa.stderr),
            String::from_utf8_lossy(&ob.stderr)
        );
    }
}
