//! The manual lives in the project and stays true: every config key the
//! code accepts is in docs/configuration.md, the report schema rejects what
//! it should, completions load, man pages render, `--version` names the
//! commit, progress never reaches stdout, and nothing points to files
//! outside the project.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use support::archgate;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

const BASE: &str = "[source]\nkind = \"dir\"\nlocation = \"c\"\n\n[[image]]\nname = \"fedora\"\nrepositories = [\"oci:out\"]\ntags = [\"x\"]\n";

/// The keys a table accepts, as the code says when given an unknown one.
fn accepted_keys(dir: &Path, config: &str) -> Vec<String> {
    fs::write(dir.join("probe.toml"), config).unwrap();
    let (code, _, stderr) = archgate(dir, &["plan", "-c", "probe.toml"]);
    assert_eq!(code, 2, "{stderr}");
    let expected = stderr
        .split("unknown field `zzz_unknown`, expected ")
        .nth(1)
        .unwrap_or_else(|| panic!("no list of keys in: {stderr}"));
    let expected = expected.split(" (key").next().unwrap();
    let keys: Vec<String> = expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect();
    assert!(!keys.is_empty(), "{stderr}");
    keys
}

#[test]
fn every_config_key_is_documented() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let doc = fs::read_to_string(root().join("docs/configuration.md")).unwrap();
    let image = BASE.replace("tags = [\"x\"]\n", "tags = [\"x\"]\nzzz_unknown = 1\n");
    let tables: Vec<(&str, String)> = vec![
        ("top level", format!("zzz_unknown = 1\n{BASE}")),
        (
            "[source]",
            BASE.replace("kind = \"dir\"\n", "kind = \"dir\"\nzzz_unknown = 1\n"),
        ),
        ("[gate]", format!("{BASE}\n[gate]\nzzz_unknown = 1\n")),
        (
            "[publisher]",
            format!("{BASE}\n[publisher]\nzzz_unknown = 1\n"),
        ),
        (
            "[registry.HOST]",
            format!("{BASE}\n[registry.\"h\"]\nzzz_unknown = 1\n"),
        ),
        ("[release]", format!("{BASE}\n[release]\nzzz_unknown = 1\n")),
        ("[sign]", format!("{BASE}\n[sign]\nzzz_unknown = 1\n")),
        (
            "[consume]",
            format!("{BASE}\n[consume]\namqp-url = \"amqp://h\"\nzzz_unknown = 1\n"),
        ),
        ("[[image]]", image),
        (
            "a tag table",
            BASE.replace(
                "tags = [\"x\"]",
                "tags = [{ tag = \"x\", zzz_unknown = 1 }]",
            ),
        ),
    ];
    let mut seen = 0;
    for (table, config) in tables {
        for key in accepted_keys(dir, &config) {
            seen += 1;
            let documented = if table == "top level" {
                doc.contains(&format!("`[{key}]"))
                    || doc.contains(&format!("`[[{key}]]`"))
                    || doc.contains(&format!("`[{key}.\""))
            } else {
                doc.contains(&format!("`{key}`"))
            };
            assert!(
                documented,
                "{table} accepts `{key}`, which docs/configuration.md does not describe"
            );
        }
    }
    assert!(seen > 25, "only {seen} keys found: the probe is broken");
}

#[test]
fn the_schema_rejects_a_broken_report() {
    let good = serde_json::json!({
        "compose": {"id": "C", "status": "FINISHED"},
        "dry_run": true,
        "targets": [{
            "image": "fedora", "reference": "oci:out:41", "policy": "refuse",
            "decision": "published", "stale": false, "previous_digest": null,
            "digest": format!("sha256:{}", "a".repeat(64)),
            "arches": [{"arch": "x86_64", "platform": "linux/amd64", "result": "built", "action": "added", "digest": format!("sha256:{}", "b".repeat(64))}],
            "arch_tags": ["oci:out:41-x86_64"], "reasons": [], "signed": []
        }]
    });
    support::check_report(&good);
    let schema = support::report_schema();
    for (what, path, value) in [
        (
            "an unknown decision",
            "/targets/0/decision",
            serde_json::json!("maybe"),
        ),
        (
            "a published target without a digest",
            "/targets/0/digest",
            serde_json::Value::Null,
        ),
        (
            "an unknown action",
            "/targets/0/arches/0/action",
            serde_json::json!("kept"),
        ),
        (
            "a stale target that is not refused",
            "/targets/0/stale",
            serde_json::json!(true),
        ),
        (
            "an unknown arch",
            "/targets/0/arches/0/arch",
            serde_json::json!("sparc"),
        ),
        (
            "a digest that is not sha256",
            "/targets/0/arches/0/digest",
            serde_json::json!("md5:00"),
        ),
    ] {
        let mut bad = good.clone();
        *bad.pointer_mut(path).unwrap() = value;
        assert!(!schema.is_valid(&bad), "the schema accepts {what}");
    }
    let mut extra = good.clone();
    extra["targets"][0]["surprise"] = serde_json::json!(1);
    assert!(
        !schema.is_valid(&extra),
        "the schema accepts an unknown field"
    );
}

#[test]
fn completions_load_and_man_pages_render() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    for shell in ["bash", "zsh", "fish"] {
        let (code, out, stderr) = archgate(dir, &["completions", shell]);
        assert_eq!(code, 0, "{stderr}");
        assert!(
            out.contains("archgate") && out.contains("status"),
            "{shell}"
        );
        if shell == "bash" {
            fs::write(dir.join("archgate.bash"), &out).unwrap();
            let check = Command::new("bash")
                .arg("-n")
                .arg(dir.join("archgate.bash"))
                .output()
                .unwrap();
            assert!(
                check.status.success(),
                "bash -n: {}",
                String::from_utf8_lossy(&check.stderr)
            );
            // And it defines the completion function when sourced.
            let load = Command::new("bash")
                .arg("-c")
                .arg(format!(
                    "source {} && complete -p archgate",
                    dir.join("archgate.bash").display()
                ))
                .output()
                .unwrap();
            assert!(
                load.status.success(),
                "{}",
                String::from_utf8_lossy(&load.stderr)
            );
        }
    }
    let (code, _, stderr) = archgate(dir, &["manpages", "man1"]);
    assert_eq!(code, 0, "{stderr}");
    for page in [
        "archgate",
        "archgate-publish",
        "archgate-status",
        "archgate-plan",
    ] {
        let path = dir.join("man1").join(format!("{page}.1"));
        let out = Command::new("man")
            .arg("-l")
            .arg(&path)
            .env("MANWIDTH", "100")
            .env("MANPAGER", "cat")
            .output()
            .expect("man is needed (apt-get install man-db)");
        assert!(
            out.status.success(),
            "{page}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("NAME") && text.contains(page) && text.contains("SYNOPSIS"),
            "{page}: {text}"
        );
    }
}

#[test]
fn version_names_the_commit() {
    let tmp = tempfile::tempdir().unwrap();
    let (code, out, _) = archgate(tmp.path(), &["--version"]);
    assert_eq!(code, 0);
    assert!(
        out.starts_with(&format!("archgate {} (commit ", env!("CARGO_PKG_VERSION"))),
        "{out}"
    );
    let git = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(root())
        .output();
    if let Some(git) = git.ok().filter(|g| g.status.success()) {
        let head = String::from_utf8_lossy(&git.stdout).trim().to_string();
        assert!(out.contains(&head), "{out} does not name HEAD {head}");
    }
}

/// With stderr on a terminal (a pty from `script`) the progress display is
/// drawn there, and stdout, redirected to a file, holds exactly the report.
#[test]
fn progress_is_drawn_on_a_terminal_and_never_on_stdout() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let compose = root().join("fixtures/real/data/pungi/f41-checksums");
    fs::write(
        dir.join("a.toml"),
        "[source]\nkind = \"pungi\"\n\n[[image]]\nname = \"fedora\"\nmatch = { subvariant = \"Container_Base\" }\nrepositories = [\"oci:out/fedora\"]\ntags = [\"{release}\"]\n",
    )
    .unwrap();
    let run = |extra: &str, name: &str| {
        let command = format!(
            "{} publish -c a.toml --compose {} --format json {extra} > {name}.json",
            env!("CARGO_BIN_EXE_archgate"),
            compose.display()
        );
        let out = Command::new("script")
            .args(["-q", "-e", "-c", &command, "/dev/null"])
            .current_dir(dir)
            .env("HOME", dir)
            .env("ARCHGATE_CACHE_DIR", dir.join(format!("cache-{name}")))
            .env_remove("ARCHGATE_LOG")
            .output()
            .expect("script is needed (util-linux)");
        let tty = String::from_utf8_lossy(&out.stdout).into_owned();
        let report: serde_json::Value =
            serde_json::from_slice(&fs::read(dir.join(format!("{name}.json"))).unwrap())
                .unwrap_or_else(|e| panic!("stdout is not just the report ({e}); terminal: {tty}"));
        support::check_report(&report);
        (out.status.code(), tty)
    };
    let (code, tty) = run("", "shown");
    assert_eq!(code, Some(0), "{tty}");
    assert!(
        tty.contains("read x86_64 Fedora-Container-Base"),
        "no read progress on the terminal: {tty}"
    );
    assert!(
        tty.contains("targets"),
        "no target progress on the terminal: {tty}"
    );
    let (code, tty) = run("--quiet", "quiet");
    assert_eq!(code, Some(0));
    assert!(
        !tty.contains("targets") && !tty.contains("read x86_64"),
        "--quiet still draws: {tty}"
    );
    // Not a terminal: nothing drawn on stderr either.
    let (code, stdout, stderr) = archgate(
        dir,
        &[
            "publish",
            "-c",
            "a.toml",
            "--compose",
            compose.to_str().unwrap(),
            "--format",
            "json",
        ],
    );
    assert_eq!(code, 0);
    serde_json::from_str::<serde_json::Value>(&stdout).unwrap();
    assert!(!stderr.contains("targets"), "{stderr}");
}

/// A user's clone has only the project: no file of it points elsewhere.
#[test]
fn nothing_points_outside_the_project() {
    let files = Command::new("git")
        .args(["ls-files"])
        .current_dir(root())
        .output()
        .unwrap();
    if !files.status.success() {
        return; // not a git checkout (a packaged source): nothing to list
    }
    let needle = ["..", "shared"].join("/");
    for file in String::from_utf8_lossy(&files.stdout).lines() {
        if file.starts_with(".ci/") || file.ends_with(".xz") || file.contains("/data/") {
            continue;
        }
        let Ok(text) = fs::read_to_string(root().join(file)) else {
            continue;
        };
        assert!(!text.contains(&needle), "{file} points to {needle}");
    }
}
