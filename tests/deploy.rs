//! What deploy/ holds, checked with the tools that run it: the systemd
//! template unit (systemd-analyze verify and security), the OpenShift
//! manifests (parsed; their probes are what the health listener serves,
//! on its port, with the ConfigMap's configuration run for real), and the
//! Containerfile's pinned bases and init.

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

/// Each YAML document of a file, as JSON (parsed by PyYAML).
fn yaml(path: &Path) -> Vec<Value> {
    let python = std::env::var("ARCHGATE_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(python)
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps([d for d in yaml.safe_load_all(open(sys.argv[1])) if d is not None]))",
        ])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_openshift_manifests_run_as_they_say() {
    let base = deploy().join("openshift");
    let kustomization = &yaml(&base.join("kustomization.yaml"))[0];
    let mut docs = Vec::new();
    for r in kustomization["resources"].as_array().unwrap() {
        docs.extend(yaml(&base.join(r.as_str().unwrap())));
    }
    docs.extend(yaml(&base.join("secrets.example.yaml")));
    let kind = |k: &str| {
        docs.iter()
            .find(|d| d["kind"] == k)
            .unwrap_or_else(|| panic!("no {k}"))
    };
    let deployment = kind("Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let container = &pod["containers"][0];
    assert!(
        container["securityContext"].get("runAsUser").is_none()
            && pod["securityContext"].get("runAsUser").is_none(),
        "an arbitrary UID"
    );
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

    // The ConfigMap's configuration listens where the probes look.
    let config_map = kind("ConfigMap");
    let text = config_map["data"]["consume.toml"].as_str().unwrap();
    let mut config: toml::Table = text.parse().unwrap();
    let consume = config["consumer_config"]["consume"].as_table().unwrap();
    let health = consume["health"].as_str().unwrap().to_string();
    let port: u64 = health.rsplit(':').next().unwrap().parse().unwrap();
    assert!(
        probes.iter().all(|(_, p)| *p == port),
        "{probes:?} vs {health}"
    );
    // Every mount the configuration names is mounted, and every variable
    // it reads is set from a Secret.
    let mounts: Vec<&str> = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["mountPath"].as_str().unwrap())
        .collect();
    let args = container["args"].as_array().unwrap();
    let config_path = args.last().unwrap().as_str().unwrap();
    assert!(
        mounts.iter().any(|m| config_path.starts_with(m)),
        "{config_path} in {mounts:?}"
    );
    for file in ["ca_cert", "keyfile", "certfile"] {
        let path = config["tls"][file].as_str().unwrap();
        assert!(
            mounts.iter().any(|m| path.starts_with(m)),
            "{path} in {mounts:?}"
        );
    }
    let env: Vec<&str> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    let mut wanted = Vec::new();
    for (_, registry) in config["consumer_config"]["registry"].as_table().unwrap() {
        for key in ["username-env", "password-env"] {
            if let Some(var) = registry.get(key).and_then(|v| v.as_str()) {
                assert!(env.contains(&var), "{var} not in {env:?}");
                wanted.push(var.to_string());
            }
        }
    }

    // Run it, on a test broker: the probes' paths answer on the health port.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let rabbit = Rabbit::start();
    config.insert("amqp_url".into(), rabbit.url().into());
    config.remove("tls");
    let cc = config["consumer_config"].as_table_mut().unwrap();
    cc["consume"]
        .as_table_mut()
        .unwrap()
        .insert("health".into(), "HEALTH".into());
    for (_, registry) in cc["registry"].as_table_mut().unwrap().iter_mut() {
        if registry.get("cert-dir").is_some() {
            registry
                .as_table_mut()
                .unwrap()
                .insert("cert-dir".into(), dir.display().to_string().into());
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
}
