//! A seeded soak: rounds of publishes through a proxy injecting dropped
//! connections, 503s, 429s and delays, each round checked against the
//! registry directly: every tag holds the old or the new complete index,
//! every blob and manifest it references is there, the report says what
//! the registry holds, and a plain re-run (same cache) succeeds.
//!
//! `ARCHGATE_SOAK_ROUNDS` (default 50; 4 targets each) and
//! `ARCHGATE_SOAK_SEED` (default 1) change it. The figures are printed.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use archgate_fixtures::{write_dir_compose, ArchFixture, Image};
use serde_json::Value;
use support::{archgate, Auth, Fault, FaultKind, Proxy, Registry};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// What a reference holds, straight from the registry: (digest, body).
fn get(
    http: &reqwest::blocking::Client,
    reg: &str,
    repo: &str,
    reference: &str,
) -> Option<(String, Value)> {
    let r = http
        .get(format!("http://{reg}/v2/{repo}/manifests/{reference}"))
        .header("accept", ACCEPT)
        .send()
        .ok()?;
    if !r.status().is_success() {
        return None;
    }
    let bytes = r.bytes().ok()?;
    Some((
        support::sha256(&bytes),
        serde_json::from_slice(&bytes).ok()?,
    ))
}

/// Every manifest and blob an index references is in `repo`.
fn complete(
    http: &reqwest::blocking::Client,
    reg: &str,
    repo: &str,
    index: &Value,
) -> Result<(), String> {
    for m in index["manifests"].as_array().ok_or("not an index")? {
        let digest = m["digest"].as_str().ok_or("no digest")?;
        let (_, manifest) =
            get(http, reg, repo, digest).ok_or(format!("manifest {digest} missing"))?;
        let mut blobs = vec![manifest["config"]["digest"]
            .as_str()
            .unwrap_or("")
            .to_string()];
        for l in manifest["layers"].as_array().cloned().unwrap_or_default() {
            blobs.push(l["digest"].as_str().unwrap_or("").to_string());
        }
        for b in blobs {
            let s = http
                .head(format!("http://{reg}/v2/{repo}/blobs/{b}"))
                .send()
                .map_err(|e| e.to_string())?
                .status();
            if !s.is_success() {
                return Err(format!("blob {b} of {digest} missing ({s})"));
            }
        }
    }
    Ok(())
}

#[test]
fn soak_through_injected_faults() {
    let rounds: u64 = std::env::var("ARCHGATE_SOAK_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    let seed: u64 = std::env::var("ARCHGATE_SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let reg = Registry::start(Auth::None);
    let proxy = Proxy::start(format!("http://{}", reg.host()));
    let host = proxy.host();
    let direct = reg.host();
    let repos = ["fedora", "mirror/fedora"];
    let tags = ["41", "latest"];
    std::fs::write(
        dir.join("a.toml"),
        format!(
            "[source]\nkind = \"dir\"\n\n[registry.\"{host}\"]\ntls-verify = false\ntimeout = \"20s\"\n\n[[image]]\nname = \"fedora\"\nrepositories = [\"docker://{host}/fedora\", \"docker://{host}/mirror/fedora\"]\ntags = [\"{{release}}\", \"latest\"]\n"
        ),
    )
    .unwrap();
    let http = reqwest::blocking::Client::new();
    let holds = |repo: &str, tag: &str| get(&http, &direct, repo, tag);
    let (
        mut targets,
        mut faults,
        mut torn,
        mut incomplete,
        mut lies,
        mut rerun_failures,
        mut errors,
    ) = (0u64, 0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
    let started = Instant::now();
    for round in 0..rounds {
        let name = format!("c{round}");
        let content = format!("round {round}");
        write_dir_compose(
            &dir.join(&name),
            &format!("Soak-41-{round}"),
            "FINISHED",
            "41",
            &[
                (
                    "fedora",
                    "x86_64",
                    ArchFixture::Built(Image::for_arch("x86_64", &content)),
                ),
                (
                    "fedora",
                    "aarch64",
                    ArchFixture::Built(Image::for_arch("aarch64", &content)),
                ),
            ],
        )
        .unwrap();
        let before: BTreeMap<(usize, usize), Option<String>> = (0..2)
            .flat_map(|r| (0..2).map(move |t| (r, t)))
            .map(|(r, t)| ((r, t), holds(repos[r], tags[t]).map(|(d, _)| d)))
            .collect();
        // What the new indexes are, planned without faults.
        let (code, out, err) = archgate(
            dir,
            &[
                "plan",
                "-c",
                "a.toml",
                "--compose",
                &name,
                "--format",
                "json",
            ],
        );
        assert_eq!(code, 0, "round {round} plan: {err}");
        let planned: Value = serde_json::from_str(&out).unwrap();

        // Faults for this round.
        let n = 1 + rng.below(3);
        for _ in 0..n {
            let kind = match rng.below(4) {
                0 => FaultKind::Drop,
                1 => FaultKind::Status(503, None),
                2 => FaultKind::Status(429, Some("0")),
                _ => FaultKind::Delay(Duration::from_millis(50)),
            };
            let method = ["GET", "HEAD", "PUT", "POST", "PATCH"][rng.below(5) as usize];
            let path = ["/manifests/", "/blobs/", "/v2/"][rng.below(3) as usize];
            proxy.fault(Fault {
                method,
                path_contains: path.into(),
                skip: rng.below(6) as usize,
                // Up to 8 in a row: some outlast the client's 5 tries.
                times: 1 + rng.below(8) as usize,
                kind,
            });
            faults += 1;
        }
        let (_, out, err) = archgate(
            dir,
            &[
                "publish",
                "-c",
                "a.toml",
                "--compose",
                &name,
                "--format",
                "json",
            ],
        );
        proxy.clear_faults();
        let report: Value =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("round {round}: {e}: {err}"));
        for (i, t) in report["targets"].as_array().unwrap().iter().enumerate() {
            targets += 1;
            let (r, tg) = (i / 2, i % 2);
            let now = holds(repos[r], tags[tg]);
            let new = planned["targets"][i]["digest"].as_str().map(str::to_string);
            let now_digest = now.as_ref().map(|(d, _)| d.clone());
            if now_digest != before[&(r, tg)] && now_digest != new {
                torn += 1;
                eprintln!(
                    "round {round}: {}:{} holds {now_digest:?}, neither old nor new",
                    repos[r], tags[tg]
                );
            }
            if let Some((_, index)) = &now {
                if let Err(e) = complete(&http, &direct, repos[r], index) {
                    incomplete += 1;
                    eprintln!("round {round}: {}:{}: {e}", repos[r], tags[tg]);
                }
            }
            match t["decision"].as_str().unwrap() {
                "published" | "unchanged" => {
                    if t["digest"].as_str() != now_digest.as_deref() {
                        lies += 1;
                        eprintln!(
                            "round {round}: report says {} for {}, registry holds {now_digest:?}",
                            t["digest"], t["reference"]
                        );
                    }
                }
                "error" => {
                    errors += 1;
                    // An error report keeps what was read.
                    if t["previous_digest"].is_string() || before[&(r, tg)].is_some() {
                        assert_eq!(
                            t["previous_digest"].as_str(),
                            before[&(r, tg)].as_deref(),
                            "round {round}: previous_digest of an error: {t}"
                        );
                    }
                }
                other => panic!("round {round}: unexpected decision {other}: {t}"),
            }
        }
        // A plain re-run, same cache: everything gets there.
        let (code, out, err) = archgate(
            dir,
            &[
                "publish",
                "-c",
                "a.toml",
                "--compose",
                &name,
                "--format",
                "json",
            ],
        );
        let again: Value = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("round {round} re-run: {e}: {err}"));
        if code != 0 {
            rerun_failures += 1;
            eprintln!("round {round}: the re-run failed: {err}");
        }
        for (i, t) in again["targets"].as_array().unwrap().iter().enumerate() {
            let now = holds(repos[i / 2], tags[i % 2]).map(|(d, _)| d);
            assert_eq!(
                now.as_deref(),
                planned["targets"][i]["digest"].as_str(),
                "round {round}: after the re-run: {t}"
            );
        }
    }
    eprintln!(
        "soak (seed {seed}): {rounds} rounds, {targets} target publishes, {faults} faults injected, {errors} targets in error, \
         {torn} torn tags, {incomplete} incomplete indexes, {lies} report lies, {rerun_failures} re-run failures, {:.0} s",
        started.elapsed().as_secs_f32()
    );
    assert_eq!((torn, incomplete, lies, rerun_failures), (0, 0, 0, 0));
    assert!(targets >= 200 || rounds < 50);
}
