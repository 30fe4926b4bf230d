//! The Koji source against a hub that serves answers marshalled by Koji's
//! own library (`fixtures/real/generate.py`; a Koji hub cannot run here),
//! and the files under its top URL, publishing to a real registry.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;
use support::{registry_tag, registry_tags, Auth, Registry};

fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/real/data/koji")
}

/// The (method, first parameter) of an XML-RPC call.
fn call_of(body: &str) -> (String, String) {
    let method = body
        .split("<methodName>")
        .nth(1)
        .and_then(|s| s.split('<').next())
        .unwrap_or("")
        .to_string();
    let param = body
        .split("<param>")
        .nth(1)
        .and_then(|p| p.split("</param>").next())
        .map(|p| {
            // <value><int>1</int></value>, <value><string>x</string></value> or <value>x</value>
            let inner = p.trim().trim_start_matches("<value>");
            let inner = inner.split("</value>").next().unwrap_or("");
            match inner.strip_prefix('<') {
                Some(tagged) => tagged
                    .split_once('>')
                    .and_then(|(_, rest)| rest.split('<').next())
                    .unwrap_or("")
                    .to_string(),
                None => inner.to_string(),
            }
        })
        .unwrap_or_default();
    (method, param)
}

struct Hub {
    server: support::Server,
    calls: Arc<std::sync::Mutex<Vec<(String, String)>>>,
}

impl Hub {
    fn url(&self) -> String {
        format!("http://{}", self.server.addr)
    }

    fn calls(&self, method: &str) -> usize {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|(m, _)| m == method)
            .count()
    }
}

/// `/kojihub` answers from `answers/METHOD-PARAM.xml`; `/files/` serves topurl.
fn hub() -> Hub {
    let root = data();
    let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = calls.clone();
    let server = support::Server::start(move |req: hyper::Request<hyper::body::Incoming>| {
        let (root, seen) = (root.clone(), seen.clone());
        async move {
            use http_body_util::BodyExt;
            let path = req.uri().path().to_string();
            if let Some(file) = path.strip_prefix("/files/") {
                return Ok(match fs::read(root.join("topurl").join(file)) {
                    Ok(bytes) => support::respond(200, &[], bytes),
                    Err(_) => support::respond(404, &[], ""),
                });
            }
            let body = req
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let call = call_of(&String::from_utf8_lossy(&body));
            seen.lock().unwrap().push(call.clone());
            let file = root
                .join("answers")
                .join(format!("{}-{}.xml", call.0, call.1));
            Ok(match fs::read(&file) {
                Ok(a) => support::respond(200, &[("content-type", "text/xml")], a),
                Err(_) => support::respond(500, &[], format!("no recorded answer for {call:?}")),
            })
        }
    });
    Hub { server, calls }
}

/// Runs archgate with a config for `repo`: `HOST/PATH` on a plain-HTTP
/// registry, or an `oci:` layout.
fn run(dir: &Path, hub: &str, repo: &str, args: &[&str]) -> (i32, String, String) {
    let (registry, repository) = match repo.strip_prefix("oci:") {
        Some(_) => (String::new(), repo.to_string()),
        None => (
            format!(
                "[registry.\"{}\"]\ntls-verify = false\n\n",
                repo.split('/').next().unwrap()
            ),
            format!("docker://{repo}"),
        ),
    };
    fs::write(
        dir.join("archgate.toml"),
        format!(
            "[source]\nkind = \"koji\"\nhub = \"{hub}/kojihub\"\ntopurl = \"{hub}/files\"\n\n{registry}[[image]]\nname = \"fedora\"\nmatch = {{ name = \"Fedora-Container-Base\" }}\nrepositories = [\"{repository}\"]\ntags = [\"{{release}}\"]\n"
        ),
    )
    .unwrap();
    support::archgate(dir, args)
}

#[test]
fn a_completed_build_is_read_from_its_images_directory_and_checked() {
    let hub = hub();
    let registry = Registry::start(Auth::None);
    let repo = format!("{}/fedora", registry.host());
    let tmp = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) = run(
        tmp.path(),
        &hub.url(),
        &repo,
        &["publish", "--compose", "120000", "--format", "json"],
    );
    assert_eq!(code, 0, "{stderr}");
    let r: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(r["compose"]["id"], "koji-task-120000");
    assert_eq!(r["compose"]["status"], "FINISHED_INCOMPLETE");
    let t = &r["targets"][0];
    assert_eq!(
        t["reference"],
        format!("{repo}:41"),
        "{{release}} is the build's version"
    );
    assert_eq!(support::arch_of(t, "x86_64")["action"], "added");
    // aarch64's file does not match the md5 of Koji's archive record.
    assert_eq!(support::arch_of(t, "aarch64")["result"], "failed");
    let reasons = t["reasons"].to_string();
    assert!(
        reasons.contains("checksum mismatch: the file's md5 is"),
        "{reasons}"
    );
    assert!(
        reasons.contains(
            "Koji task 120003 (createKiwiImage, s390x) is FAILED: koji.GenericError: Kiwi failed"
        ),
        "{reasons}"
    );
    // Nothing says x86_64 went unchecked: it had a sha256 from Koji.
    assert!(!reasons.contains("not checked"), "{reasons}");
    // The files came from packages/..., never from work/tasks.
    assert_eq!(hub.calls("getBuild"), 1, "one build lookup for the N-V-R");
    assert_eq!(hub.calls("listArchives"), 1);

    let (index, digest) = registry_tag(&format!("{repo}:41")).expect("the index was pushed");
    assert_eq!(Some(digest.as_str()), t["digest"].as_str());
    assert_eq!(support::index_platforms(&index), ["linux/amd64"]);
    assert_eq!(registry_tags(&repo), ["41", "41-x86_64"]);
}

#[test]
fn a_scratch_build_is_read_from_the_task_and_said_to_be_unchecked() {
    let hub = hub();
    let registry = Registry::start(Auth::None);
    let repo = format!("{}/fedora", registry.host());
    let tmp = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) = run(
        tmp.path(),
        &hub.url(),
        &repo,
        &["publish", "--compose", "130000", "--format", "json"],
    );
    assert_eq!(code, 0, "{stderr}");
    let r: Value = serde_json::from_str(&stdout).unwrap();
    let t = &r["targets"][0];
    assert_eq!(t["decision"], "published");
    assert_eq!(support::arch_of(t, "x86_64")["action"], "added");
    let reasons = t["reasons"].as_array().unwrap();
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(
        reasons[0].as_str().unwrap().starts_with(
            "x86_64: Koji has no completed build Fedora-Container-Base-41-20241102.0 (a scratch build), so no checksum for"
        ),
        "{reasons:?}"
    );
    assert!(registry_tag(&format!("{repo}:41")).is_some());
}

#[test]
fn a_running_task_is_an_unfinished_compose() {
    let hub = hub();
    let tmp = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) = run(
        tmp.path(),
        &hub.url(),
        "oci:out/fedora",
        &["plan", "--compose", "140000", "--format", "json"],
    );
    assert_eq!(code, 3, "{stderr}");
    let r: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(r["compose"]["status"], "STARTED");
    assert_eq!(r["targets"][0]["decision"], "refused");
}

#[test]
fn faults_and_unreachable_hubs_are_one_line_errors() {
    let hub = hub();
    let tmp = tempfile::tempdir().unwrap();
    let url = hub.url();
    let (code, stdout, stderr) = run(
        tmp.path(),
        &url,
        "oci:out/fedora",
        &["publish", "--compose", "150000"],
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(
            "/kojihub getTaskInfo: Koji fault 1000: koji.GenericError: No such task: 150000"
        ),
        "{stderr}"
    );
    assert_eq!(stderr.trim_end().lines().count(), 1);
    assert!(stdout.is_empty());

    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (code, _, stderr) = run(
        tmp.path(),
        &format!("http://{closed}"),
        "oci:out/fedora",
        &["plan", "--compose", "120000"],
    );
    assert_eq!(code, 1);
    assert!(stderr.contains("cannot reach the hub"), "{stderr}");

    let (code, _, stderr) = run(
        tmp.path(),
        &url,
        "oci:out/fedora",
        &["plan", "--compose", "not-a-task"],
    );
    assert_eq!(code, 2);
    assert!(stderr.contains("`not-a-task` is not a task id"), "{stderr}");
}

#[test]
fn the_codec_reads_what_koji_marshals() {
    // Every recorded answer parses; big ints (<i8>), <nil/> and date strings included.
    for entry in fs::read_dir(data().join("answers")).unwrap() {
        let path = entry.unwrap().path();
        let text = fs::read_to_string(&path).unwrap();
        let parsed = archgate_source_koji::xmlrpc::response(&text)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if path
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("getBuild-Fedora-Container-Base-41-20241101.0")
        {
            let build = parsed.unwrap();
            assert_eq!(
                build
                    .get("id")
                    .and_then(archgate_source_koji::xmlrpc::Value::as_int),
                Some(2_600_000_000)
            );
        }
    }
}
