//! What deploy/ holds, checked with the tools that run it: the systemd
//! template unit (systemd-analyze verify and security; what the tools
//! engines call, against what it allows), the OpenShift objects as Fedora
//! deploys apps (parsed; production and staging; their probes are what the
//! health listener serves, with the ConfigMap's configuration run for
//! real), and the Containerfile's pinned bases, init and commit.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use support::consume::Consumer;
use support::Rabbit;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

#[test]
fn the_systemd_unit_verifies_and_is_hardened() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let unit = dir.join("archgate-consume@.service");
    std::fs::copy(deploy().join("archgate-consume@.service"), &unit).unwrap();
    // Documentation=man:archgate-consume(1): the man page archgate makes.
    let man = dir.join("man");
    let (code, _, err) = support::archgate(dir, &["manpages", man.join("man1").to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .env("MANPATH", &man)
        .output()
        .expect("systemd-analyze is needed (apt-get install systemd)");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && text.trim().is_empty(), "{text}");

    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes"])
        .arg(&unit)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let overall = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("{text}"));
    let rating = overall.split_whitespace().nth_back(1).unwrap_or_default();
    assert!(["OK", "SAFE", "PERFECT"].contains(&rating), "{overall}");
    let unit_text = std::fs::read_to_string(&unit).unwrap();
    for line in ["Type=notify", "WatchdogSec=", "NotifyAccess=main"] {
        assert!(unit_text.contains(line), "no {line}");
    }
}

/// A group of `systemd-analyze syscall-filter`, its nested groups expanded.
fn syscall_group(name: &str) -> std::collections::BTreeSet<String> {
    let out = Command::new("systemd-analyze")
        .args(["syscall-filter", name])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut calls = std::collections::BTreeSet::new();
    for line in text.lines().skip(1) {
        let item = line.trim();
        if item.is_empty() || item.starts_with('#') {
            continue;
        }
        match item.starts_with('@') {
            true => calls.extend(syscall_group(item)),
            false => {
                calls.insert(item.to_string());
            }
        }
    }
    calls
}

/// The system calls a unit's `SystemCallFilter=` lines allow, and the
/// namespace types its `RestrictNamespaces=` lets it make.
fn unit_allows(unit: &str) -> (std::collections::BTreeSet<String>, Vec<String>) {
    let mut allowed = std::collections::BTreeSet::new();
    let mut denied = std::collections::BTreeSet::new();
    let mut namespaces = Vec::new();
    for line in unit.lines() {
        if let Some(v) = line.strip_prefix("SystemCallFilter=") {
            let (deny, v) = match v.strip_prefix('~') {
                Some(rest) => (true, rest),
                None => (false, v),
            };
            for item in v.split_whitespace() {
                let set = match item.starts_with('@') {
                    true => syscall_group(item),
                    false => [item.to_string()].into(),
                };
                match deny {
                    true => denied.extend(set),
                    false => allowed.extend(set),
                }
            }
        }
        if let Some(v) = line.strip_prefix("RestrictNamespaces=") {
            namespaces = v.split_whitespace().map(str::to_string).collect();
        }
    }
    (&allowed - &denied, namespaces)
}

/// The system calls, and the namespaces made, of `command` run as
/// `nobody` (as the unit's dynamic user runs the tools) under strace.
fn traced(dir: &Path, command: &[&str]) -> (std::collections::BTreeSet<String>, Vec<String>) {
    let trace = dir.join("trace");
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "env"])
        .arg(format!("HOME={}", dir.display()))
        .arg(format!("XDG_RUNTIME_DIR={}", dir.display()))
        .args(["strace", "-f", "-qq", "-o"])
        .arg(&trace)
        .args(command)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&trace).unwrap();
    let mut calls = std::collections::BTreeSet::new();
    let mut namespaces = Vec::new();
    for line in text.lines() {
        let rest = line
            .split_once(' ')
            .map(|(_, r)| r.trim_start())
            .unwrap_or("");
        let rest = rest.strip_prefix("<... ").unwrap_or(rest);
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if name.is_empty() || rest.starts_with("+++") || rest.starts_with("---") {
            continue;
        }
        for (flag, ns) in [("CLONE_NEWUSER", "user"), ("CLONE_NEWNS", "mnt")] {
            if rest.contains(flag) && !namespaces.contains(&ns.to_string()) {
                namespaces.push(ns.to_string());
            }
        }
        calls.insert(name);
    }
    (calls, namespaces)
}

/// The unit lets every engine the configuration may choose run: skopeo
/// and buildah, run as a user that is not root (as the unit's dynamic user
/// runs them), make only system calls its filter allows and only the
/// namespaces it lets them make. (Run for real under systemd where it is
/// the init; here it checks what the tools call against what the unit
/// allows, with strace and systemd-analyze.)
#[test]
fn the_systemd_unit_lets_every_engine_run() {
    let root = std::process::Command::new("id").arg("-u").output().unwrap();
    if String::from_utf8_lossy(&root.stdout).trim() != "0" {
        eprintln!("skipped: tracing the tools as another user needs root here");
        return;
    }
    let unit = std::fs::read_to_string(deploy().join("archgate-consume@.service")).unwrap();
    let (allowed, may_make) = unit_allows(&unit);
    assert!(allowed.len() > 200, "{allowed:?}");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let image = archgate_fixtures::Image::for_arch("x86_64", "unit");
    archgate_fixtures::write_layout(&dir.join("src"), &image).unwrap();
    Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(dir)
        .status()
        .unwrap();
    let src = format!("oci:{}/src", dir.display());
    let mut used = std::collections::BTreeSet::new();
    let mut made = Vec::new();
    for command in [
        vec!["skopeo", "copy", &src, "oci-archive:copy.tar"],
        vec!["buildah", "manifest", "create", "list"],
        vec!["buildah", "manifest", "add", "list", &src],
        vec!["buildah", "manifest", "rm", "list"],
    ] {
        let (calls, namespaces) = traced(dir, &command);
        used.extend(calls);
        made.extend(namespaces);
    }
    let refused: Vec<&String> = used.difference(&allowed).collect();
    assert!(
        refused.is_empty(),
        "the tools call what the unit refuses: {refused:?}"
    );
    for ns in &made {
        assert!(
            may_make.contains(ns),
            "the tools make a {ns} namespace: {may_make:?}"
        );
    }
    assert!(
        made.contains(&"user".to_string()),
        "buildah, not root, makes a user namespace"
    );
}

/// Every object a kustomization applies, its resources followed (files,
/// and directories with a kustomization of their own).
fn kustomized(dir: &Path) -> Vec<Value> {
    let kustomization = &support::yaml(&dir.join("kustomization.yaml"))[0];
    let mut docs = Vec::new();
    for r in kustomization["resources"].as_array().unwrap() {
        let path = dir.join(r.as_str().unwrap());
        match path.is_dir() {
            true => docs.extend(kustomized(&path)),
            false => docs.extend(support::yaml(&path)),
        }
    }
    docs
}

/// As Fedora deploys an app (a BuildConfig building this repository's
/// Containerfile into an ImageStream, the Deployment rolled out by an
/// image trigger, FIU's Secrets and paths, metrics scraped), in production
/// and in staging (registry.stg.fedoraproject.org only,
/// `org.fedoraproject.stg`); production's images are examples/fedora.toml's.
#[test]
fn the_openshift_manifests_are_as_fedora_deploys() {
    let secrets = support::yaml(&deploy().join("openshift/secrets.example.yaml"));
    let secret_keys = |name: &str| -> Vec<String> {
        let s = secrets
            .iter()
            .find(|d| d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no Secret {name} in secrets.example.yaml"));
        s["stringData"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    };
    for env in ["production", "staging"] {
        let docs = kustomized(&deploy().join("openshift").join(env));
        let kind = |k: &str| {
            docs.iter()
                .find(|d| d["kind"] == k)
                .unwrap_or_else(|| panic!("{env}: no {k}"))
        };
        let build = kind("BuildConfig");
        let strategy = &build["spec"]["strategy"];
        assert_eq!(strategy["type"], "Docker");
        let containerfile = strategy["dockerStrategy"]["dockerfilePath"]
            .as_str()
            .unwrap();
        assert!(
            deploy().join("..").join(containerfile).is_file(),
            "{containerfile}"
        );
        assert_eq!(build["spec"]["output"]["to"]["name"], "archgate:latest");
        let stream = kind("ImageStream");
        assert_eq!(stream["metadata"]["name"], "archgate");
        let deployment = kind("Deployment");
        let triggers: Value = serde_json::from_str(
            deployment["metadata"]["annotations"]["image.openshift.io/triggers"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        let pod = &deployment["spec"]["template"]["spec"];
        let container = &pod["containers"][0];
        let name = container["name"].as_str().unwrap();
        assert_eq!(triggers[0]["from"]["name"], "archgate:latest");
        assert!(
            triggers[0]["fieldPath"]
                .as_str()
                .unwrap()
                .contains(&format!("\"{name}\"")),
            "{triggers}"
        );
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        assert!(
            pod["securityContext"].get("runAsUser").is_none(),
            "an arbitrary UID"
        );

        // The configuration: a ConfigMap key, where FEDORA_MESSAGING_CONF
        // looks, in a mounted volume.
        let env_of = |var: &str| {
            container["env"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["name"] == var)
                .cloned()
                .unwrap_or_else(|| panic!("{env}: no {var}"))
        };
        let conf = env_of("FEDORA_MESSAGING_CONF")["value"]
            .as_str()
            .unwrap()
            .to_string();
        let mounts: Vec<(String, String)> = container["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["name"].as_str().unwrap().into(),
                    m["mountPath"].as_str().unwrap().into(),
                )
            })
            .collect();
        let mounted = |path: &str| mounts.iter().any(|(_, m)| path.starts_with(m.as_str()));
        assert!(mounted(&conf), "{conf}");
        let key = conf.rsplit('/').next().unwrap();
        let text = kind("ConfigMap")["data"][key].as_str().unwrap();
        let config: toml::Table = text.parse().unwrap();
        for file in ["ca_cert", "keyfile", "certfile"] {
            let path = config["tls"][file].as_str().unwrap();
            assert!(mounted(path), "{env}: {path}");
        }
        assert_eq!(config["passive_declares"].as_bool(), Some(true));
        let cc = &config["consumer_config"];
        for (host, registry) in cc["registry"].as_table().unwrap() {
            if let Some(dir) = registry.get("cert-dir").and_then(|v| v.as_str()) {
                assert!(mounted(dir), "{host}: {dir}");
            }
            for k in ["username-env", "password-env"] {
                let var = registry[k].as_str().unwrap();
                let from = &env_of(var)["valueFrom"]["secretKeyRef"];
                let secret = from["name"].as_str().unwrap();
                let key = from["key"].as_str().unwrap().to_string();
                assert!(secret_keys(secret).contains(&key), "{var}: {secret}/{key}");
            }
        }
        // The state dir and the spool are on the pod's volume, sized to
        // hold every concurrent run's bounded spool, and room to spare.
        let state = cc["consume"]["state-dir"].as_str().unwrap();
        assert!(mounted(state), "{state}");
        let work = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| {
                mounts
                    .iter()
                    .any(|(n, m)| n == v["name"].as_str().unwrap() && m == "/var/lib/archgate")
            })
            .unwrap();
        let size = work["ephemeral"]["volumeClaimTemplate"]["spec"]["resources"]["requests"]
            ["storage"]
            .as_str()
            .unwrap();
        let gib: u64 = size.trim_end_matches("Gi").parse().unwrap();
        let spool = cc["source"]["spool-limit"].as_str().unwrap();
        let spool: u64 = spool.trim_end_matches("GiB").parse().unwrap();
        let runs = cc["consume"]["concurrency"].as_integer().unwrap() as u64;
        assert!(
            gib > runs * spool,
            "{size}: {runs} runs of a {spool} GiB spool"
        );
        // Metrics scraped from the health port.
        let service = kind("Service");
        let monitor = kind("ServiceMonitor");
        assert_eq!(
            monitor["spec"]["selector"]["matchLabels"],
            service["metadata"]["labels"]
        );
        let port = monitor["spec"]["endpoints"][0]["port"].as_str().unwrap();
        assert!(service["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == port));
        assert_eq!(monitor["spec"]["endpoints"][0]["path"], "/metrics");

        let images = cc["image"].as_array().unwrap();
        let repos: Vec<&str> = images
            .iter()
            .flat_map(|i| i["repositories"].as_array().unwrap())
            .map(|r| r.as_str().unwrap())
            .collect();
        if env == "staging" {
            assert!(
                repos
                    .iter()
                    .all(|r| r.starts_with("docker://registry.stg.fedoraproject.org/")),
                "{repos:?}"
            );
            assert_eq!(
                config["topic_prefix"].as_str(),
                Some("org.fedoraproject.stg")
            );
        } else {
            let example: toml::Table =
                std::fs::read_to_string(deploy().join("../examples/fedora.toml"))
                    .unwrap()
                    .parse()
                    .unwrap();
            assert_eq!(
                &example["image"], &cc["image"],
                "production's images are examples/fedora.toml's"
            );
            assert_eq!(
                config["topic_prefix"].as_str(),
                Some("org.fedoraproject.prod")
            );
            run_the_config(config, container);
        }
    }
}

/// Runs a ConfigMap's configuration on a test broker: the probes' paths
/// answer on the health port.
fn run_the_config(mut config: toml::Table, container: &Value) {
    let probes: Vec<(String, u64)> = ["livenessProbe", "readinessProbe"]
        .iter()
        .map(|p| {
            let get = &container[*p]["httpGet"];
            (
                get["path"].as_str().unwrap().to_string(),
                get["port"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        probes.iter().map(|p| p.0.as_str()).collect::<Vec<_>>(),
        ["/live", "/ready"]
    );
    let health = config["consumer_config"]["consume"]["health"]
        .as_str()
        .unwrap()
        .to_string();
    let port: u64 = health.rsplit(':').next().unwrap().parse().unwrap();
    assert!(
        probes.iter().all(|(_, p)| *p == port),
        "{probes:?} vs {health}"
    );
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let rabbit = Rabbit::start();
    config.insert("amqp_url".into(), rabbit.url().into());
    config.insert("passive_declares".into(), false.into());
    config.remove("tls");
    config.remove("log_config");
    let cc = config["consumer_config"].as_table_mut().unwrap();
    let consume = cc["consume"].as_table_mut().unwrap();
    consume.insert("health".into(), "HEALTH".into());
    consume.insert(
        "state-dir".into(),
        dir.join("state").display().to_string().into(),
    );
    let mut wanted = Vec::new();
    for (_, registry) in cc["registry"].as_table_mut().unwrap().iter_mut() {
        let registry = registry.as_table_mut().unwrap();
        if registry.get("cert-dir").is_some() {
            registry.insert("cert-dir".into(), dir.display().to_string().into());
        }
        for k in ["username-env", "password-env"] {
            wanted.push(registry[k].as_str().unwrap().to_string());
        }
    }
    let values: Vec<(&str, &str)> = wanted.iter().map(|v| (v.as_str(), "x")).collect();
    let consumer = Consumer::start_env(
        dir,
        "openshift",
        &toml::to_string(&config).unwrap(),
        &values,
    );
    for (path, _) in &probes {
        assert_eq!(consumer.get(path).0, 200, "{path}");
    }
}

#[test]
fn the_container_image_is_pinned_and_has_an_init() {
    let file = std::fs::read_to_string(deploy().join("Containerfile")).unwrap();
    for from in file.lines().filter(|l| l.starts_with("FROM ")) {
        let image = from.split_whitespace().nth(1).unwrap();
        let tag = image.rsplit_once(':').map(|(_, t)| t).unwrap_or("");
        assert!(
            tag.chars().next().is_some_and(|c| c.is_ascii_digit()) || tag.contains("-20"),
            "{image}: pin a release"
        );
        assert!(!tag.contains("latest"), "{image}");
    }
    assert!(
        file.contains("ENTRYPOINT [\"/usr/bin/tini\", \"--\""),
        "an init for PID 1"
    );
    assert!(
        file.contains("chgrp -R 0") && file.contains("g=u"),
        "an arbitrary UID can write"
    );
    let ignore =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../.containerignore"))
            .unwrap();
    assert!(ignore.lines().any(|l| l.trim() == "target/"), "{ignore}");
    // The image knows its commit: .git is in the build context, or the
    // commit comes in as a build argument.
    assert!(
        !ignore.lines().any(|l| l.trim().starts_with(".git")),
        "{ignore}"
    );
    assert!(
        file.contains("ARG ARCHGATE_COMMIT"),
        "the commit as a build argument"
    );
}
