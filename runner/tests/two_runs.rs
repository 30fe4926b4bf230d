//! Two runs in one process at the same time, on one Runner: different
//! composes (served over HTTP, so each run spools its downloads), different
//! targets. Both succeed, and each removes its own temp files only.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use archgate_core::{Decision, Repository, TagRule, Template};
use archgate_runner::{Engine, Env, GateSpec, ImageSpec, RepoSpec, RunSpec, Runner, SourceSpec};

/// A tiny static file server on 127.0.0.1 (one thread per connection).
fn serve(root: PathBuf) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let root = root.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    return;
                }
                // Skip the headers.
                let mut header = String::new();
                while reader.read_line(&mut header).is_ok_and(|n| n > 2) {
                    header.clear();
                }
                let path = line
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or("/")
                    .trim_start_matches('/');
                let mut stream = stream;
                match std::fs::read(root.join(path)) {
                    Ok(body) if !path.split('/').any(|c| c == "..") => {
                        let _ = write!(
                            stream,
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        );
                        let _ = stream.write_all(&body);
                    }
                    _ => {
                        let _ = write!(stream, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                    }
                }
            });
        }
    });
    format!("http://{addr}")
}

fn spec(location: String, out: &Path) -> RunSpec {
    RunSpec {
        source: SourceSpec::Pungi { location },
        engine: Engine::Native,
        gate: GateSpec::default(),
        policy_override: None,
        releases: Default::default(),
        registries: BTreeMap::new(),
        images: vec![ImageSpec {
            name: "fedora".into(),
            origin: "test".into(),
            matcher: BTreeMap::from([("subvariant".into(), "Container_Base".into())]),
            repositories: vec![RepoSpec {
                repository: Repository::parse("oci:out/fedora").unwrap(),
                layout_dir: Some(out.to_path_buf()),
            }],
            tags: vec![TagRule {
                template: Template::parse("{release}").unwrap(),
                when: None,
            }],
            arch_tag: Template::parse("{tag}-{arch}").unwrap(),
            annotations: BTreeMap::new(),
            arches: None,
            policy: None,
            sign: true,
        }],
        dry_run: false,
        allow_older: false,
        allowed_locations: None,
        fence: None,
        read_timeout: None,
        spool_limit: None,
        sign: Default::default(),
    }
}

#[test]
fn two_runs_at_once_each_with_its_own_temp_files() {
    let tmp = tempfile::tempdir().unwrap();
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/real/data/pungi");
    let base = serve(data);
    let temp_root = tmp.path().join("temp");
    std::fs::create_dir_all(&temp_root).unwrap();
    // Someone else's file in the same temp root: never touched.
    std::fs::write(temp_root.join("not-archgate.txt"), "keep me").unwrap();
    let runner = Runner::new(Env {
        cache_dir: Some(tmp.path().join("cache")),
        temp_root: temp_root.clone(),
        clock: Arc::new(|| 1_730_419_200),
    });
    let a = spec(
        format!("{base}/f41-incomplete/compose"),
        &tmp.path().join("out-a"),
    );
    let b = spec(format!("{base}/f30-armhfp"), &tmp.path().join("out-b"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (ra, rb) = rt.block_on(async {
        // Each planned first, so that both hold their temp dirs at once.
        let (pa, pb) = tokio::join!(runner.plan(&a), runner.plan(&b));
        let (pa, pb) = (pa.unwrap(), pb.unwrap());
        let dirs: Vec<_> = std::fs::read_dir(&temp_root)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("archgate-run-"))
            .collect();
        assert_eq!(dirs.len(), 2, "two runs, two temp dirs: {dirs:?}");
        // Run on other tasks of the runtime: the futures are Send.
        let runner = &runner;
        tokio::join!(runner.publish(pa), runner.publish(pb))
    });
    for (name, report, arches) in [("a", &ra, 4), ("b", &rb, 2)] {
        assert_eq!(report.targets.len(), 1, "{name}");
        let t = &report.targets[0];
        assert_eq!(t.decision, Decision::Published, "{name}: {:?}", t.reasons);
        assert_eq!(t.arches.len(), arches, "{name}");
    }
    assert_eq!(rb.targets[0].arches[1].platform.to_string(), "linux/arm/v7");
    let left: Vec<_> = std::fs::read_dir(&temp_root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        left,
        ["not-archgate.txt"],
        "each run removed its own temp dir, and only that"
    );
}
