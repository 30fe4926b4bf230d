//! Source plugins: the Rust example (built with the SDK) and a C plugin
//! (compiled here with the system `cc`), published end to end to an `oci:`
//! target; and every kind of bad plugin, which must fail cleanly.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use archgate_fixtures::{tar_of, write_layout, write_oci_archive, Compress, Image};
use serde_json::Value;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The Rust example plugin, built (once) into its own target directory so
/// that this build does not wait on the one running the tests.
fn rust_plugin() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let target = workspace().join("target/plugin-example");
            let status = Command::new(env!("CARGO"))
                .args([
                    "build",
                    "-q",
                    "-p",
                    "archgate-plugin-example",
                    "--target-dir",
                ])
                .arg(&target)
                .current_dir(workspace())
                .status()
                .expect("cargo runs");
            assert!(status.success(), "building the example plugin failed");
            target.join("debug/libarchgate_plugin_example.so")
        })
        .clone()
}

/// The C example, compiled with `cc` and the given defines.
fn c_plugin(dir: &Path, name: &str, defines: &[&str]) -> PathBuf {
    let out = dir.join(format!("lib{name}.so"));
    let src = workspace().join("sources/plugin/c");
    let status = Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&out)
        .args(defines)
        .arg(src.join("example.c"))
        .arg(format!("-I{}", src.display()))
        .status()
        .expect("the system cc is needed (apt-get install gcc)");
    assert!(status.success());
    out
}

use support::archgate;

fn config(dir: &Path, library: &Path, location: &str, settings: &str) -> String {
    let path = dir.join("archgate.toml");
    fs::write(
        &path,
        format!(
            "[source]\nkind = \"plugin\"\nlibrary = \"{}\"\nlocation = \"{location}\"\nsettings = {settings}\n\n[[image]]\nname = \"fedora\"\nrepositories = [\"oci:out/fedora\"]\ntags = [\"{{release}}\"]\n",
            library.display()
        ),
    )
    .unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn the_rust_example_plugin_publishes_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let builds = dir.join("builds");
    write_oci_archive(
        &builds.join("fedora-x86_64.oci.tar.xz"),
        &Image::for_arch("x86_64", "remix"),
        Compress::Xz,
    )
    .unwrap();
    write_layout(
        &builds.join("fedora-aarch64"),
        &Image::for_arch("aarch64", "remix"),
    )
    .unwrap();
    fs::write(
        builds.join("results.txt"),
        "# compose MyRemix-1-20241101.0 FINISHED 1\nfedora x86_64 built fedora-x86_64.oci.tar.xz\nfedora aarch64 built fedora-aarch64\nfedora s390x failed out of disk\n",
    )
    .unwrap();
    let cfg = config(dir, &rust_plugin(), "builds/results.txt", "{}");
    let (code, stdout, stderr) = archgate(dir, &["publish", "-c", &cfg, "--format", "json"]);
    assert_eq!(code, 0, "{stderr}");
    let r: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(r["compose"]["id"], "MyRemix-1-20241101.0");
    let t = &r["targets"][0];
    assert_eq!(
        (t["reference"].as_str(), t["decision"].as_str()),
        (Some("oci:out/fedora:1"), Some("published"))
    );
    assert!(t["reasons"]
        .to_string()
        .contains("s390x failed in this compose: out of disk"));
    let (code, out, _) = archgate(dir, &["inspect", "--format", "json", "oci:out/fedora:1"]);
    assert_eq!(code, 0);
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["entries"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    let lib = rust_plugin();
    let (code, out, err) = archgate(
        dir,
        &[
            "plugin",
            "check",
            lib.to_str().unwrap(),
            "--location",
            "builds/results.txt",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("name: example-results-file") && out.contains("ABI version: 1"),
        "{out}"
    );
    assert!(
        out.contains("image fedora: x86_64 built, aarch64 built, s390x failed"),
        "{out}"
    );
}

#[test]
fn a_c_plugin_publishes_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let builds = dir.join("builds");
    fs::create_dir_all(&builds).unwrap();
    // An uncompressed oci-archive: a tar of a layout.
    let layout = dir.join("layout");
    write_layout(&layout, &Image::for_arch("x86_64", "c remix")).unwrap();
    let mut files = Vec::new();
    for rel in ["oci-layout", "index.json"] {
        files.push((rel.to_string(), fs::read(layout.join(rel)).unwrap()));
    }
    for e in fs::read_dir(layout.join("blobs/sha256")).unwrap() {
        let p = e.unwrap().path();
        files.push((
            format!("blobs/sha256/{}", p.file_name().unwrap().to_string_lossy()),
            fs::read(&p).unwrap(),
        ));
    }
    fs::write(builds.join("x86_64.oci.tar"), tar_of(&files).unwrap()).unwrap();
    let lib = c_plugin(dir, "cexample", &[]);
    let cfg = config(dir, &lib, &builds.display().to_string(), "{}");
    let (code, stdout, stderr) = archgate(dir, &["publish", "-c", &cfg, "--format", "json"]);
    assert_eq!(code, 0, "{stderr}");
    let r: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(r["compose"]["status"], "FINISHED_INCOMPLETE");
    assert_eq!(r["targets"][0]["decision"], "published");
    assert!(r["targets"][0]["reasons"]
        .to_string()
        .contains("the C remix's aarch64 builder is offline"));
}

#[test]
fn bad_plugins_fail_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let text = dir.join("libtext.so");
    fs::write(&text, "not a library").unwrap();
    let nosym = dir.join("libnosym.so");
    fs::write(dir.join("nosym.c"), "int something(void) { return 1; }\n").unwrap();
    assert!(Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&nosym)
        .arg(dir.join("nosym.c"))
        .status()
        .unwrap()
        .success());
    let cases: Vec<(PathBuf, &str, &str)> = vec![
        (dir.join("libmissing.so"), "{}", "no such file"),
        (text, "{}", "cannot load it as a shared library"),
        (nosym, "{}", "no `archgate_plugin_entry` symbol"),
        (
            c_plugin(dir, "abi2", &["-DABI=2"]),
            "{}",
            "it speaks ABI version 2; this archgate speaks version 1",
        ),
        (
            c_plugin(dir, "badjson", &["-DMODE=1"]),
            "{}",
            "does not follow the ABI's JSON schema",
        ),
        (
            c_plugin(dir, "schema", &["-DMODE=2"]),
            "{}",
            "does not follow the ABI's JSON schema",
        ),
        (
            c_plugin(dir, "err", &["-DMODE=3"]),
            "{}",
            "the build system is down",
        ),
        (
            rust_plugin(),
            "{ panic = true }",
            "the plugin panicked: asked to panic",
        ),
    ];
    for (lib, settings, needle) in cases {
        let cfg = config(dir, &lib, "nowhere", settings);
        let (code, stdout, stderr) = archgate(dir, &["publish", "-c", &cfg]);
        let name = lib.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(code, 1, "{name}: {stderr}");
        assert!(stderr.contains(needle), "{name}: {stderr}");
        assert!(
            stderr.contains(&name),
            "{name}: the error names the library: {stderr}"
        );
        assert_eq!(stderr.trim_end().lines().count(), 1, "{name}: {stderr}");
        assert!(
            stdout.is_empty() && !dir.join("out").exists(),
            "{name}: nothing published"
        );
    }
}
