//! A Pungi compose served over HTTP (written by the fixtures as productmd
//! writes them), published to real docker-registry instances: each artifact
//! is downloaded once and feeds every registry and layout in that one pass;
//! nothing of it is written to disk when the server offers Range requests;
//! a broken transfer resumes where it stopped; a pass done again fetches
//! the artifact again; a server without ranges gets a bounded spool; an
//! artifact two images use is fetched once; an image is published while
//! another image's artifacts are still crossing.

mod support;

use std::fs;
use std::path::{Path, PathBuf};

use archgate_fixtures::{pungi_fixtures, write_pungi_compose};
use serde_json::Value;
use support::consume::wait_for;
use support::{archgate_env, Auth, Fault, FaultKind, Gate, Proxy, Registry, Served, Serving};

/// The rawhide fixture compose (Container_Base for x86_64 and aarch64).
fn setup() -> tempfile::TempDir {
    setup_compose("rawhide")
}

/// The fixture compose `name`, written as productmd writes it.
fn setup_compose(wanted: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for (name, compose) in pungi_fixtures() {
        if name == wanted {
            write_pungi_compose(&tmp.path().join(name), &compose).unwrap();
        }
    }
    fs::create_dir_all(tmp.path().join("tmp")).unwrap();
    tmp
}

/// The compose's artifact for `arch`: its path and its relative URL path.
fn artifact(dir: &Path, arch: &str) -> (PathBuf, String) {
    let mut stack = vec![dir.join("rawhide")];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p
                .to_string_lossy()
                .ends_with(&format!(".{arch}.oci.tar.xz"))
            {
                let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                return (p, rel);
            }
        }
    }
    panic!("no {arch} artifact in the fixture");
}

/// The first layer of the artifact at `path`.
fn layer(path: &Path, arch: archgate_core::Arch) -> String {
    let at = archgate_core::Artifact::at(archgate_core::Location::Path(path.to_path_buf()));
    archgate_native::resolve(arch, &at).unwrap().layers[0]
        .digest
        .clone()
}

fn config(dir: &Path, repos: &[String], extra: &str) -> String {
    config_images(dir, &[("fedora", "Container_Base", repos)], extra)
}

/// A configuration of several images: (name, subvariant, repositories).
fn config_images(dir: &Path, images: &[(&str, &str, &[String])], extra: &str) -> String {
    let mut registries = String::new();
    let mut tables = String::new();
    for (name, subvariant, repos) in images {
        for r in repos.iter().filter_map(|r| r.strip_prefix("docker://")) {
            let host = r.split('/').next().unwrap();
            let table = format!("[registry.\"{host}\"]\ntls-verify = false\n");
            if !registries.contains(&table) {
                registries.push_str(&table);
            }
        }
        let repos: Vec<String> = repos.iter().map(|r| format!("\"{r}\"")).collect();
        tables.push_str(&format!(
            "\n[[image]]\nname = \"{name}\"\nmatch = {{ subvariant = \"{subvariant}\" }}\nrepositories = [{}]\ntags = [\"{{release}}\"]\n",
            repos.join(", ")
        ));
    }
    let text = format!("[source]\nkind = \"pungi\"\n{extra}\n{registries}{tables}");
    let path = dir.join("http.toml");
    fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

/// Publishes the served compose on a thread (TMPDIR under `dir`).
fn publish(dir: &Path, cfg: &str, url: String) -> std::thread::JoinHandle<(i32, String, String)> {
    let dir = dir.to_path_buf();
    let cfg = cfg.to_string();
    std::thread::spawn(move || {
        let tmp = dir.join("tmp");
        archgate_env(
            &dir,
            &[
                "publish",
                "-v",
                "-c",
                &cfg,
                "--compose",
                &url,
                "--format",
                "json",
            ],
            &[("TMPDIR", tmp.to_str().unwrap())],
        )
    })
}

/// Whether `host` (plain HTTP) has blob `digest` in `repo`.
fn has_blob(host: &str, repo: &str, digest: &str) -> bool {
    reqwest::blocking::Client::new()
        .head(format!("http://{host}/v2/{repo}/blobs/{digest}"))
        .send()
        .is_ok_and(|r| r.status().is_success())
}

/// Every file under `dir`, with its size.
fn files(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten() {
            let p = e.unwrap().path();
            match p.is_dir() {
                true => stack.push(p),
                false => out.push((p.clone(), fs::metadata(&p).map_or(0, |m| m.len()))),
            }
        }
    }
    out
}

/// The compose under `dir` served with Range requests, as Fedora's
/// compose servers serve it.
fn serve(dir: &Path) -> (support::Server, Served) {
    support::serve_compose(
        dir.to_path_buf(),
        Serving {
            ranges: true,
            ..Default::default()
        },
    )
}

/// How many times `rel` was asked for.
fn gets(served: &Served, rel: &str) -> usize {
    served
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|p| *p == rel)
        .count()
}

fn index(host: &str, repo: &str) -> Vec<u8> {
    support::skopeo_raw(&format!("{host}/{repo}:rawhide"), None).expect("published")
}

/// Whether `host` (plain HTTP) has `tag` in `repo`.
fn has_tag(host: &str, repo: &str, tag: &str) -> bool {
    reqwest::blocking::Client::new()
        .head(format!("http://{host}/v2/{repo}/manifests/{tag}"))
        .header(
            "Accept",
            "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json",
        )
        .send()
        .is_ok_and(|r| r.status().is_success())
}

#[test]
fn an_artifact_two_images_use_is_fetched_once() {
    let tmp = setup();
    let dir = tmp.path();
    let (_, x86_rel) = artifact(dir, "x86_64");
    let (_, arm_rel) = artifact(dir, "aarch64");
    let (server, served) = serve(dir);
    let (a, b) = (Registry::start(Auth::None), Registry::start(Auth::None));
    let (ha, hb) = (a.host(), b.host());
    // Two images of the same artifacts (as the atomic desktops share
    // theirs): one on both registries, one on the first only.
    let first = [
        format!("docker://{ha}/fedora"),
        format!("docker://{hb}/fedora"),
    ];
    let second = [format!("docker://{ha}/fedora-again")];
    let cfg = config_images(
        dir,
        &[
            ("fedora", "Container_Base", &first),
            ("again", "Container_Base", &second),
        ],
        "",
    );
    let (code, stdout, stderr) = publish(dir, &cfg, format!("http://{}/rawhide", server.addr))
        .join()
        .unwrap();
    assert_eq!(code, 0, "{stderr}");
    let r: Value = serde_json::from_str(&stdout).unwrap();
    for (i, (host, repo)) in [(&ha, "fedora"), (&hb, "fedora"), (&ha, "fedora-again")]
        .into_iter()
        .enumerate()
    {
        assert_eq!(
            Some(support::sha256(&index(host, repo)).as_str()),
            r["targets"][i]["digest"].as_str(),
            "{host}/{repo}"
        );
    }
    assert_eq!(gets(&served, &x86_rel), 1, "one read for both images");
    assert_eq!(gets(&served, &arm_rel), 1, "one read for both images");
}

#[test]
fn an_image_is_published_while_another_is_still_crossing() {
    let tmp = setup_compose("fedora-41-previous");
    let dir = tmp.path();
    let held = Gate::default();
    let (server, served) = support::serve_compose(
        dir.to_path_buf(),
        Serving {
            ranges: true,
            hold: Some((
                "Toolbox-41-20241031.0.aarch64.oci.tar.xz".into(),
                held.clone(),
            )),
            ..Default::default()
        },
    );
    let reg = Registry::start(Auth::None);
    let host = reg.host();
    let base = [format!("docker://{host}/fedora")];
    let toolbox = [format!("docker://{host}/toolbox")];
    let cfg = config_images(
        dir,
        &[
            ("toolbox", "Container_Toolbox", &toolbox),
            ("fedora", "Container_Base", &base),
        ],
        "",
    );
    let run = publish(
        dir,
        &cfg,
        format!("http://{}/fedora-41-previous", server.addr),
    );
    // While one of toolbox's artifacts is held at the server (a state that
    // stays until the test opens it), the base image is published whole:
    // its index, and every arch tag, which come after its blobs.
    wait_for("the base image's index", 60, || {
        has_tag(&host, "fedora", "41")
    });
    for arch in ["x86_64", "aarch64", "ppc64le", "s390x"] {
        assert!(has_tag(&host, "fedora", &format!("41-{arch}")), "{arch}");
    }
    let held_rel = served
        .log
        .lock()
        .unwrap()
        .iter()
        .find(|p| p.ends_with("Toolbox-41-20241031.0.aarch64.oci.tar.xz"))
        .cloned();
    assert!(
        held_rel.is_some(),
        "toolbox's aarch64 artifact was asked for"
    );
    assert!(
        !has_tag(&host, "toolbox", "41"),
        "toolbox is still crossing"
    );
    held.open();
    let (code, stdout, stderr) = run.join().unwrap();
    assert_eq!(code, 0, "{stderr}");
    let r: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(r["targets"][0]["image"], "toolbox");
    let raw = support::skopeo_raw(&format!("{host}/toolbox:41"), None).expect("published");
    assert_eq!(
        Some(support::sha256(&raw).as_str()),
        r["targets"][0]["digest"].as_str()
    );
}

#[test]
fn one_download_feeds_two_registries_and_a_layout_and_nothing_is_kept() {
    let tmp = setup();
    let dir = tmp.path();
    let (x86, x86_rel) = artifact(dir, "x86_64");
    let (arm, arm_rel) = artifact(dir, "aarch64");
    let held = Gate::default();
    let (server, served) = support::serve_compose(
        dir.to_path_buf(),
        Serving {
            ranges: true,
            hold: Some((".aarch64.oci.tar.xz".into(), held.clone())),
            ..Default::default()
        },
    );
    let (a, b) = (Registry::start(Auth::None), Registry::start(Auth::None));
    let (ha, hb) = (a.host(), b.host());
    let cfg = config(
        dir,
        &[
            format!("docker://{ha}/fedora"),
            format!("docker://{ha}/mirror/fedora"),
            format!("docker://{hb}/fedora"),
            "oci:out/fedora".into(),
        ],
        "",
    );
    let run = publish(dir, &cfg, format!("http://{}/rawhide", server.addr));
    // While the aarch64 transfer is held, x86_64's layer is in both
    // registries and the layout (a state that stays), from one download,
    // and the run has written nothing of it to disk.
    let x86_layer = layer(&x86, archgate_core::Arch::X86_64);
    let blob_file = dir.join(format!("out/fedora/blobs/sha256/{}", &x86_layer[7..]));
    wait_for("x86_64's layer everywhere", 60, || {
        has_blob(&ha, "fedora", &x86_layer)
            && has_blob(&hb, "fedora", &x86_layer)
            && blob_file.is_file()
    });
    assert_eq!(gets(&served, &arm_rel), 1, "aarch64's transfer is held");
    let kept = files(&dir.join("tmp"));
    assert!(
        kept.is_empty(),
        "nothing of an artifact is on disk: {kept:?}"
    );
    held.open();
    let (code, stdout, stderr) = run.join().unwrap();
    assert_eq!(code, 0, "{stderr}");
    let r: Value = serde_json::from_str(&stdout).unwrap();
    for (i, (host, repo)) in [(&ha, "fedora"), (&ha, "mirror/fedora"), (&hb, "fedora")]
        .into_iter()
        .enumerate()
    {
        let raw = index(host, repo);
        assert_eq!(
            Some(support::sha256(&raw).as_str()),
            r["targets"][i]["digest"].as_str(),
            "{host}/{repo}"
        );
    }
    assert_eq!(r["targets"][3]["digest"], r["targets"][0]["digest"]);
    // Each artifact crossed once: asked for once, its bytes sent once.
    assert_eq!(gets(&served, &x86_rel), 1);
    assert_eq!(gets(&served, &arm_rel), 1);
    let size = |p: &Path| fs::metadata(p).unwrap().len() as usize;
    assert_eq!(
        served.bytes.load(std::sync::atomic::Ordering::SeqCst),
        size(&x86) + size(&arm) + served_metadata(dir, &served)
    );
}

/// Bytes the server sent of files other than the artifacts (the compose's
/// metadata).
fn served_metadata(dir: &Path, served: &Served) -> usize {
    let log = served.log.lock().unwrap().clone();
    log.iter()
        .filter(|p| !p.ends_with(".oci.tar.xz"))
        .filter_map(|p| fs::metadata(dir.join(p)).ok())
        .filter(|m| m.is_file())
        .map(|m| m.len() as usize)
        .sum()
}

#[test]
fn a_broken_transfer_resumes_where_it_stopped() {
    let tmp = setup();
    let dir = tmp.path();
    let (x86, x86_rel) = artifact(dir, "x86_64");
    let (_, arm_rel) = artifact(dir, "aarch64");
    let cut = (fs::metadata(&x86).unwrap().len() / 2) as usize;
    let (server, served) = support::serve_compose(
        dir.to_path_buf(),
        Serving {
            ranges: true,
            cut: Some((".x86_64.oci.tar.xz".into(), cut)),
            ..Default::default()
        },
    );
    let reg = Registry::start(Auth::None);
    let host = reg.host();
    let cfg = config(dir, &[format!("docker://{host}/fedora")], "");
    let (code, stdout, stderr) = publish(dir, &cfg, format!("http://{}/rawhide", server.addr))
        .join()
        .unwrap();
    assert_eq!(code, 0, "{stderr}");
    let r: Value = serde_json::from_str(&stdout).unwrap();
    let raw = index(&host, "fedora");
    assert_eq!(
        Some(support::sha256(&raw).as_str()),
        r["targets"][0]["digest"].as_str()
    );
    assert_eq!(
        support::index_platforms(&serde_json::from_slice(&raw).unwrap()).len(),
        2
    );
    // The rest asked for from where it broke, with the first answer's ETag.
    let ranges = served.ranges.lock().unwrap().clone();
    assert_eq!(ranges, vec![(x86_rel.clone(), format!("bytes={cut}-"))]);
    assert_eq!(gets(&served, &x86_rel), 2);
    assert_eq!(gets(&served, &arm_rel), 1);
}

#[test]
fn a_pass_done_again_fetches_the_artifact_again() {
    let tmp = setup();
    let dir = tmp.path();
    let (x86, x86_rel) = artifact(dir, "x86_64");
    let (server, served) = serve(dir);
    // The second registry drops x86_64's layer upload once, while the
    // artifact is first read: the first registry gets it in that pass, the
    // second in a pass done again when publishing, from a new download.
    let (a, b) = (Registry::start(Auth::None), Registry::start(Auth::None));
    let proxy = Proxy::start(format!("http://{}", b.host()));
    let x86_layer = layer(&x86, archgate_core::Arch::X86_64);
    proxy.fault(Fault {
        method: "PUT",
        path_contains: format!("digest={x86_layer}"),
        skip: 0,
        times: 1,
        kind: FaultKind::Drop,
    });
    let (ha, hb) = (a.host(), proxy.host());
    let cfg = config(
        dir,
        &[
            format!("docker://{ha}/fedora"),
            format!("docker://{hb}/fedora"),
        ],
        "",
    );
    let (code, stdout, stderr) = publish(dir, &cfg, format!("http://{}/rawhide", server.addr))
        .join()
        .unwrap();
    assert_eq!(code, 0, "{stderr}");
    let r: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        Some(support::sha256(&index(&ha, "fedora")).as_str()),
        r["targets"][0]["digest"].as_str()
    );
    assert_eq!(
        Some(support::sha256(&index(&b.host(), "fedora")).as_str()),
        r["targets"][1]["digest"].as_str()
    );
    assert!(has_blob(&b.host(), "fedora", &x86_layer));
    assert_eq!(
        gets(&served, &x86_rel),
        2,
        "fetched again for the pass done again"
    );
}

#[test]
fn without_ranges_the_spool_keeps_what_its_limit_allows() {
    let tmp = setup();
    let dir = tmp.path();
    let (x86, _) = artifact(dir, "x86_64");
    let (_, arm_rel) = artifact(dir, "aarch64");
    let x86_size = fs::metadata(&x86).unwrap().len();
    // The limit has room for x86_64's artifact alone: kept whole while the
    // aarch64 one (no room left) is held mid-run.
    for (limit, kept_sizes) in [(x86_size + 10, vec![x86_size]), (x86_size - 1, vec![])] {
        let held = Gate::default();
        let (server, served) = support::serve_compose(
            dir.to_path_buf(),
            Serving {
                hold: Some((".aarch64.oci.tar.xz".into(), held.clone())),
                ..Default::default()
            },
        );
        let reg = Registry::start(Auth::None);
        let host = reg.host();
        let cfg = config(
            dir,
            &[format!("docker://{host}/fedora")],
            &format!("spool-limit = {limit}\n"),
        );
        let run = publish(dir, &cfg, format!("http://{}/rawhide", server.addr));
        let x86_layer = layer(&x86, archgate_core::Arch::X86_64);
        wait_for("x86_64's layer", 60, || {
            has_blob(&host, "fedora", &x86_layer)
        });
        wait_for("aarch64's transfer asked for", 60, || {
            gets(&served, &arm_rel) == 1
        });
        // Kept: once x86_64's copy is whole (renamed from `.part`), it is
        // all the spool holds. Not kept: nothing is ever written.
        let sizes = || -> Vec<u64> {
            files(&dir.join("tmp"))
                .into_iter()
                .map(|(_, n)| n)
                .collect()
        };
        if !kept_sizes.is_empty() {
            wait_for("x86_64's copy whole", 60, || {
                files(&dir.join("tmp"))
                    .iter()
                    .any(|(p, _)| p.extension().is_none())
            });
        }
        assert_eq!(sizes(), kept_sizes, "spool-limit = {limit}");
        held.open();
        let (code, _, stderr) = run.join().unwrap();
        assert_eq!(code, 0, "{stderr}");
        assert!(stderr.contains("offers no Range requests"), "{stderr}");
        assert!(
            files(&dir.join("tmp")).is_empty(),
            "the spool goes with the run"
        );
    }
}
