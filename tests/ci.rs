//! The CI pipelines' merge step (docs/ci.md) run here as each pipeline
//! runs it, against docker-registry with per-platform images pushed by
//! skopeo: the GitHub Action's step (action.yml, with GitHub's
//! environment: GITHUB_STEP_SUMMARY, GITHUB_OUTPUT), the Tekton Task's
//! script (deploy/tekton/archgate-merge.yaml) and the GitLab example's
//! merge job (examples/gitlab-ci.yml). Each file is read as the pipeline
//! reads it (YAML, parsed by PyYAML), its placeholders filled as the
//! pipeline would.

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use archgate_fixtures::Image;
use serde_json::Value;
use support::{index_platforms, registry_tag, yaml, Auth, Registry};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Pushes a fixture image for `arch` to `builds:TAG`: its digest.
fn push(dir: &Path, registry: &Registry, tag: &str, arch: &str, content: &str) -> String {
    support::push_image(
        dir,
        registry,
        "builds",
        tag,
        &Image::for_arch(arch, content),
    )
}

/// Replaces every `open NAME close` in `text` by `values[NAME]` (GitHub's
/// `${{ inputs.NAME }}`, Tekton's `$(params.NAME)`).
fn fill(text: &str, open: &str, close: &str, values: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find(open) {
        out.push_str(&rest[..i]);
        let after = &rest[i + open.len()..];
        let j = after
            .find(close)
            .unwrap_or_else(|| panic!("unclosed {open} in {text}"));
        let name = after[..j].trim();
        let value = values
            .get(name)
            .unwrap_or_else(|| panic!("no value for {name} in {text}"));
        out.push_str(value);
        rest = &after[j + close.len()..];
    }
    out.push_str(rest);
    out
}

struct Ran {
    code: i32,
    stdout: String,
}

fn bash(script: &str, env: &BTreeMap<String, String>, cwd: &Path) -> Ran {
    let out = Command::new("bash")
        .arg("-c")
        .arg(script)
        .current_dir(cwd)
        .env("HOME", cwd)
        .envs(env)
        .output()
        .unwrap();
    Ran {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr),
    }
}

/// Runs action.yml's merge step with these inputs, as GitHub does: the
/// run script with the step's `env`, the inputs (and their defaults)
/// filled, GITHUB_ACTION_PATH the repository. (exit code, summary,
/// outputs, log).
fn action(dir: &Path, inputs: &[(&str, String)]) -> (i32, String, String, String) {
    let action = &yaml(&root().join("action.yml"))[0];
    let mut values: BTreeMap<String, String> = BTreeMap::new();
    for (name, spec) in action["inputs"].as_object().unwrap() {
        let default = spec["default"].as_str().unwrap_or_default();
        // GitHub's own expressions in a default: as a run would give them.
        let default = default.replace("${{ github.run_number }}.${{ github.run_attempt }}", "7.1");
        values.insert(format!("inputs.{name}"), default);
    }
    for (name, value) in inputs {
        values.insert(format!("inputs.{name}"), value.clone());
    }
    let temp = dir.join("runner-temp");
    fs::create_dir_all(&temp).unwrap();
    values.insert("runner.temp".into(), temp.display().to_string());
    let step = action["runs"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "merge")
        .unwrap();
    let mut env: BTreeMap<String, String> = step["env"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), fill(v.as_str().unwrap(), "${{", "}}", &values)))
        .collect();
    let (summary, output) = (dir.join("step-summary"), dir.join("output"));
    let _ = fs::remove_file(&summary);
    let _ = fs::remove_file(&output);
    env.insert("GITHUB_ACTION_PATH".into(), root().display().to_string());
    env.insert("RUNNER_TEMP".into(), temp.display().to_string());
    env.insert("GITHUB_STEP_SUMMARY".into(), summary.display().to_string());
    env.insert("GITHUB_OUTPUT".into(), output.display().to_string());
    // A plain-HTTP registry: what the test's registry needs.
    env.insert("ARCHGATE_TLS_VERIFY".into(), "false".into());
    let run = fill(step["run"].as_str().unwrap(), "${{", "}}", &values);
    let ran = bash(&run, &env, dir);
    let read = |p: &Path| fs::read_to_string(p).unwrap_or_default();
    (ran.code, read(&summary), read(&output), ran.stdout)
}

/// The action's merge: four platforms, then a build whose aarch64 job
/// failed. The first publishes (the summary's row says so, with the four
/// arches and the digest; `decision=published`); the second is refused
/// (the step fails, `decision=refused`, the summary gives the reason) and
/// the tag keeps serving aarch64.
#[test]
fn the_github_action_merges_and_says_so_in_the_job_summary() {
    let registry = Registry::start(Auth::None);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let host = registry.host();
    let digests = |name: &str, list: &[String]| {
        let d = dir.join(name);
        fs::create_dir_all(&d).unwrap();
        for digest in list {
            fs::write(d.join(digest.trim_start_matches("sha256:")), "").unwrap();
        }
        d.display().to_string()
    };
    let arches = ["x86_64", "aarch64", "ppc64le", "s390x"];
    let first: Vec<String> = arches
        .iter()
        .map(|a| push(dir, &registry, &format!("1-{a}"), a, &format!("{a}-1")))
        .collect();
    let inputs = |d: String| {
        vec![
            ("digests", d),
            ("source", format!("{host}/builds")),
            ("image", format!("{host}/app")),
            ("tags", "{release}, latest".to_string()),
            ("arches", "amd64 arm64 ppc64le s390x".to_string()),
            ("version", "1.0".to_string()),
            ("archgate", env!("CARGO_BIN_EXE_archgate").to_string()),
        ]
    };
    let (code, summary, output, log) = action(dir, &inputs(digests("d1", &first)));
    assert_eq!(code, 0, "{log}");
    let (index, v1) = registry_tag(&format!("{host}/app:1.0")).unwrap();
    assert_eq!(index_platforms(&index).len(), 4);
    let digest = &v1[..19];
    let row = format!("| `{host}/app:1.0` | published | x86_64 added, aarch64 added, ppc64le added, s390x added | `{digest}` |");
    assert!(summary.contains(&row), "{summary}");
    assert!(
        summary.contains("### archgate: build-7.1 (FINISHED)"),
        "{summary}"
    );
    assert!(output.contains("decision=published"), "{output}");
    let report_line = output.lines().find(|l| l.starts_with("report=")).unwrap();
    let report: Value =
        serde_json::from_str(&fs::read_to_string(&report_line["report=".len()..]).unwrap())
            .unwrap();
    assert_eq!(report["targets"].as_array().unwrap().len(), 2);

    let second: Vec<String> = ["x86_64", "ppc64le", "s390x"]
        .iter()
        .map(|a| push(dir, &registry, &format!("2-{a}"), a, &format!("{a}-2")))
        .collect();
    let mut later = inputs(digests("d2", &second));
    later.push(("build-id", "8.1".to_string()));
    let (code, summary, output, log) = action(dir, &later);
    assert_eq!(code, 3, "{log}");
    assert!(output.contains("decision=refused"), "{output}");
    assert!(
        summary.contains(&format!(
            "| `{host}/app:1.0` | refused | x86_64 updated, aarch64 blocked,"
        )),
        "{summary}"
    );
    assert!(
        summary.contains("no image was pushed for aarch64"),
        "{summary}"
    );
    assert_eq!(registry_tag(&format!("{host}/app:1.0")).unwrap().1, v1);
}

/// The Tekton Task's script, with its params filled as a TaskRun fills
/// them (the per-platform images as references), writes its results.
#[test]
fn the_tekton_task_runs_the_same_merge() {
    let registry = Registry::start(Auth::None);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let host = registry.host();
    let x86 = push(dir, &registry, "x", "x86_64", "x");
    let arm = push(dir, &registry, "a", "aarch64", "a");
    let task = &yaml(&root().join("deploy/tekton/archgate-merge.yaml"))[0];
    let mut values = BTreeMap::new();
    for p in task["spec"]["params"].as_array().unwrap() {
        let default = p["default"].as_str().unwrap_or_default().to_string();
        values.insert(format!("params.{}", p["name"].as_str().unwrap()), default);
    }
    let set = |values: &mut BTreeMap<String, String>, k: &str, v: String| {
        values.insert(format!("params.{k}"), v);
    };
    set(
        &mut values,
        "images",
        format!("x86_64={host}/builds@{x86} aarch64={host}/builds@{arm}"),
    );
    set(&mut values, "image", format!("{host}/app"));
    set(&mut values, "tags", "{release}".into());
    set(&mut values, "arches", "x86_64 aarch64".into());
    set(&mut values, "version", "3.0".into());
    set(&mut values, "build-id", "run-41".into());
    let results = dir.join("results");
    fs::create_dir_all(&results).unwrap();
    for r in ["decision", "summary"] {
        values.insert(
            format!("results.{r}.path"),
            results.join(r).display().to_string(),
        );
    }
    values.insert("workspaces.registry-auth.path".into(), String::new());
    let step = &task["spec"]["steps"][0];
    let mut env: BTreeMap<String, String> = step["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let v = fill(e["value"].as_str().unwrap(), "$(", ")", &values);
            (e["name"].as_str().unwrap().to_string(), v)
        })
        .collect();
    env.insert("ARCHGATE".into(), env!("CARGO_BIN_EXE_archgate").into());
    env.insert(
        "ARCHGATE_MERGE".into(),
        root().join("ci/merge.sh").display().to_string(),
    );
    env.insert("ARCHGATE_TLS_VERIFY".into(), "false".into());
    env.insert("ARCHGATE_OUT".into(), dir.join("out").display().to_string());
    let script = fill(step["script"].as_str().unwrap(), "$(", ")", &values);
    let ran = bash(&script, &env, dir);
    assert_eq!(ran.code, 0, "{}", ran.stdout);
    assert_eq!(
        fs::read_to_string(results.join("decision")).unwrap().trim(),
        "published"
    );
    let summary = fs::read_to_string(results.join("summary")).unwrap();
    assert!(
        summary.contains("| published | x86_64 added, aarch64 added |"),
        "{summary}"
    );
    let (index, _) = registry_tag(&format!("{host}/app:3.0")).unwrap();
    assert_eq!(index["annotations"]["dev.archgate.compose"], "build-run-41");
}

/// The GitLab example's merge job (its variables, its script), after a
/// pipeline whose s390x build failed: refused, the tag untouched.
#[test]
fn the_gitlab_example_refuses_a_missing_platform() {
    let registry = Registry::start(Auth::None);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let host = registry.host();
    let pipeline = &yaml(&root().join("examples/gitlab-ci.yml"))[0];
    let job = &pipeline["merge"];
    let run = |iid: &str, pushed: &[(&str, &str)]| {
        let digests = dir.join("digests");
        let _ = fs::remove_dir_all(&digests);
        fs::create_dir_all(&digests).unwrap();
        for (arch, content) in pushed {
            let d = push(dir, &registry, &format!("{iid}-{arch}"), arch, content);
            fs::write(digests.join(d.trim_start_matches("sha256:")), "").unwrap();
        }
        let mut env: BTreeMap<String, String> = BTreeMap::new();
        let ci: BTreeMap<&str, String> = BTreeMap::from([
            ("$BUILDS", format!("{host}/builds")),
            ("$CI_REGISTRY_IMAGE", format!("{host}/app")),
            ("$CI_COMMIT_TAG", "5.0".to_string()),
            ("$CI_PIPELINE_IID", iid.to_string()),
        ]);
        for (k, v) in job["variables"].as_object().unwrap() {
            let mut v = v.as_str().unwrap().to_string();
            for (name, value) in &ci {
                v = v.replace(name, value);
            }
            env.insert(k.clone(), v);
        }
        env.insert("ARCHGATE".into(), env!("CARGO_BIN_EXE_archgate").into());
        env.insert("ARCHGATE_TLS_VERIFY".into(), "false".into());
        let merge = root().join("ci/merge.sh").display().to_string();
        let script: Vec<String> = job["script"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                l.as_str()
                    .unwrap()
                    .replace("/usr/libexec/archgate/merge.sh", &merge)
            })
            // The registry login line: the test registry needs none.
            .filter(|l| !l.contains("CI_REGISTRY_PASSWORD"))
            .collect();
        bash(&script.join("\n"), &env, dir)
    };
    let all = [
        ("x86_64", "x1"),
        ("aarch64", "a1"),
        ("ppc64le", "p1"),
        ("s390x", "s1"),
    ];
    let first = run("10", &all);
    assert_eq!(first.code, 0, "{}", first.stdout);
    let (_, v1) = registry_tag(&format!("{host}/app:5.0")).unwrap();
    let failed = run(
        "11",
        &[("x86_64", "x2"), ("aarch64", "a2"), ("ppc64le", "p2")],
    );
    assert_eq!(failed.code, 3, "{}", failed.stdout);
    assert!(
        failed.stdout.contains("no image was pushed for s390x"),
        "{}",
        failed.stdout
    );
    assert_eq!(registry_tag(&format!("{host}/app:5.0")).unwrap().1, v1);
    assert_eq!(
        fs::read_to_string(dir.join("archgate/decision"))
            .unwrap()
            .trim(),
        "refused"
    );
}
