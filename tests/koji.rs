//! The Koji source against a hub that serves recorded XML-RPC answers (a
//! Koji hub cannot run here) and task files under its top URL.

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::sync::Arc;

use archgate_fixtures::{write_oci_archive, Compress, Image};
use serde_json::Value;

fn member(name: &str, value: &str) -> String {
    format!("<member><name>{name}</name><value>{value}</value></member>")
}

fn task(id: i64, state: i64, method: &str, arch: &str) -> String {
    format!(
        "<value><struct>{}{}{}{}{}{}</struct></value>",
        member("id", &format!("<int>{id}</int>")),
        member("state", &format!("<int>{state}</int>")),
        member("method", &format!("<string>{method}</string>")),
        member("arch", &format!("<string>{arch}</string>")),
        member("label", &format!("<string>{arch}</string>")),
        member("completion_time", "<nil/>"),
    )
}

fn answer(value: &str) -> String {
    format!("<?xml version='1.0'?>\n<methodResponse>\n<params>\n<param>\n{value}\n</param>\n</params>\n</methodResponse>\n")
}

fn fault(message: &str) -> String {
    format!(
        "<?xml version='1.0'?>\n<methodResponse><fault><value><struct>{}{}</struct></value></fault></methodResponse>\n",
        member("faultCode", "<int>1000</int>"),
        member("faultString", &format!("<string>{message}</string>"))
    )
}

fn result(name: &str, arch: &str, file: &str) -> String {
    answer(&format!(
        "<value><struct>{}{}{}{}{}</struct></value>",
        member("arch", &format!("<string>{arch}</string>")),
        member("name", &format!("<string>{name}</string>")),
        member("version", "<string>41</string>"),
        member("release", "<string>1.4</string>"),
        member("files", &format!("<array><data><value><string>{file}</string></value><value><string>image.log</string></value></data></array>")),
    ))
}

/// Recorded answers, by (method, first parameter).
fn recorded(files: &Path) -> BTreeMap<(String, i64), String> {
    let mut r = BTreeMap::new();
    let mut put = |m: &str, id: i64, body: String| {
        r.insert((m.to_string(), id), body);
    };
    // Task 1000: x86_64 built, aarch64 failed, s390x canceled.
    put(
        "getTaskInfo",
        1000,
        answer(&task(1000, 2, "image", "noarch")),
    );
    put(
        "getTaskChildren",
        1000,
        answer(&format!(
            "<value><array><data>{}{}{}</data></array></value>",
            task(1001, 2, "createImage", "x86_64"),
            task(1002, 5, "createImage", "aarch64"),
            task(1003, 3, "createImage", "s390x")
        )),
    );
    let file = "Fedora-Container-Base-41-1.4.x86_64.oci.tar.xz";
    write_oci_archive(
        &files.join("work/tasks/1001/1001").join(file),
        &Image::for_arch("x86_64", "koji"),
        Compress::Xz,
    )
    .unwrap();
    put(
        "getTaskResult",
        1001,
        result("Fedora-Container-Base", "x86_64", file),
    );
    put(
        "getTaskResult",
        1002,
        fault("GenericError: Image build failed. OZ error: timeout"),
    );
    put("getTaskResult", 1003, fault("TaskCanceled"));
    // Task 2000: still running.
    let request = "<array><data><value><string>Fedora-Container-Base</string></value><value><string>41</string></value><value><string>f41-candidate</string></value></data></array>";
    let running = task(2000, 1, "image", "noarch").replace(
        "</struct>",
        &format!("{}</struct>", member("request", request)),
    );
    put("getTaskInfo", 2000, answer(&running));
    put(
        "getTaskChildren",
        2000,
        answer(&format!(
            "<value><array><data>{}</data></array></value>",
            task(2001, 1, "createImage", "x86_64")
        )),
    );
    // Task 3000: the hub answers with a fault.
    put(
        "getTaskInfo",
        3000,
        fault("koji.GenericError: no such task: 3000"),
    );
    r
}

struct Hub {
    server: support::Server,
    _files: tempfile::TempDir,
}

fn hub() -> Hub {
    let files = tempfile::tempdir().unwrap();
    let answers = Arc::new(recorded(files.path()));
    let root = files.path().to_path_buf();
    let server = support::Server::start(move |req: hyper::Request<hyper::body::Incoming>| {
        let (answers, root) = (answers.clone(), root.clone());
        async move {
            use http_body_util::BodyExt;
            let path = req.uri().path().to_string();
            if let Some(file) = path.strip_prefix("/files/") {
                return Ok(match fs::read(root.join(file)) {
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
            let body = String::from_utf8_lossy(&body).into_owned();
            let method = body
                .split("<methodName>")
                .nth(1)
                .and_then(|s| s.split('<').next())
                .unwrap_or("")
                .to_string();
            let id: i64 = body
                .split("<int>")
                .nth(1)
                .and_then(|s| s.split('<').next())
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            Ok(match answers.get(&(method, id)) {
                Some(a) => support::respond(200, &[("content-type", "text/xml")], a.clone()),
                None => support::respond(200, &[], fault("unexpected call")),
            })
        }
    });
    Hub {
        server,
        _files: files,
    }
}

fn run(dir: &Path, hub: &str, args: &[&str]) -> (i32, String, String) {
    fs::write(
        dir.join("archgate.toml"),
        format!(
            "[source]\nkind = \"koji\"\nhub = \"{hub}/kojihub\"\ntopurl = \"{hub}/files\"\n\n[[image]]\nname = \"fedora\"\nmatch = {{ name = \"Fedora-Container-Base\" }}\nrepositories = [\"oci:out/fedora\"]\ntags = [\"{{release}}\"]\n"
        ),
    )
    .unwrap();
    support::archgate(dir, args)
}

#[test]
fn children_give_built_and_failed_arches() {
    let hub = hub();
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("http://{}", hub.server.addr);
    let (code, stdout, stderr) = run(
        tmp.path(),
        &url,
        &["publish", "--compose", "1000", "--format", "json"],
    );
    assert_eq!(code, 0, "{stderr}");
    let r: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(r["compose"]["id"], "koji-task-1000");
    assert_eq!(r["compose"]["status"], "FINISHED_INCOMPLETE");
    let t = &r["targets"][0];
    assert_eq!(
        t["reference"], "oci:out/fedora:41",
        "{{release}} is the build's version"
    );
    let arch = |a: &str| {
        t["arches"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["arch"] == a)
            .unwrap()
            .clone()
    };
    assert_eq!(arch("x86_64")["action"], "added");
    assert_eq!(arch("aarch64")["result"], "failed");
    let reasons = t["reasons"].to_string();
    assert!(
        reasons.contains(
            "Koji task 1002 (createImage, aarch64) is FAILED: GenericError: Image build failed"
        ),
        "{reasons}"
    );
    assert!(
        reasons.contains("Koji task 1003 (createImage, s390x) is CANCELED"),
        "{reasons}"
    );
    let (code, out, _) = run(
        tmp.path(),
        &url,
        &["inspect", "--format", "json", "oci:out/fedora:41"],
    );
    assert_eq!(code, 0);
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["digest"],
        t["digest"]
    );
}

#[test]
fn a_running_task_is_an_unfinished_compose() {
    let hub = hub();
    let tmp = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) = run(
        tmp.path(),
        &format!("http://{}", hub.server.addr),
        &["plan", "--compose", "2000", "--format", "json"],
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
    let url = format!("http://{}", hub.server.addr);
    let (code, stdout, stderr) = run(tmp.path(), &url, &["publish", "--compose", "3000"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(
            "/kojihub getTaskInfo: Koji fault 1000: koji.GenericError: no such task: 3000"
        ),
        "{stderr}"
    );
    assert_eq!(stderr.trim_end().lines().count(), 1);
    assert!(stdout.is_empty() && !tmp.path().join("out").exists());

    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (code, _, stderr) = run(
        tmp.path(),
        &format!("http://{closed}"),
        &["plan", "--compose", "1000"],
    );
    assert_eq!(code, 1);
    assert!(stderr.contains("cannot reach the hub"), "{stderr}");

    let (code, _, stderr) = run(tmp.path(), &url, &["plan", "--compose", "not-a-task"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("`not-a-task` is not a task id"), "{stderr}");
}
