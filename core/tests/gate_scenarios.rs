//! The gate's rules as a table of scenarios, each rendered and snapshotted.
//! Review every snapshot against docs/gate.md before accepting it.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use archgate_core::parse_rfc3339;
use archgate_core::{
    decide, Arch, ArchInput, Compose, ComposeStamp, ComposeStatus, CurrentIndex, Entry, GateInput,
    GateSettings, Platform, Policy,
};

const NOW: &str = "2024-11-01T00:00:00Z";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// A built arch: `("x86_64", 2)` is build 2 of x86_64.
fn built(arch: &str, build: u32) -> (&str, Result<ArchInput, ()>) {
    (arch, Ok(ArchInput::Built(entry_for(arch, build, None))))
}

fn failed<'a>(arch: &'a str, reason: &str) -> (&'a str, Result<ArchInput, ()>) {
    (arch, Ok(ArchInput::Failed(reason.to_string())))
}

fn entry_for(arch: &str, build: u32, created: Option<&str>) -> Entry {
    let platform = arch
        .parse::<Arch>()
        .map(Arch::default_platform)
        .unwrap_or(Platform {
            os: "linux".into(),
            architecture: arch.into(),
            variant: None,
        });
    Entry {
        platform,
        digest: format!("sha256:{arch}-build{build}"),
        size: 500 + u64::from(build),
        media_type: OCI_MANIFEST.into(),
        annotations: BTreeMap::new(),
        created: created.map(str::to_string),
    }
}

/// An entry of the current index, created at the given time (or unknown).
fn was(arch: &str, build: u32, created: Option<&str>) -> Entry {
    entry_for(arch, build, created)
}

fn index(entries: Vec<Entry>) -> Option<CurrentIndex> {
    Some(CurrentIndex {
        digest: "sha256:current-index".into(),
        media_type: "application/vnd.oci.image.index.v1+json".into(),
        entries,
        annotations: BTreeMap::new(),
    })
}

fn arches(names: &[&str]) -> Vec<Arch> {
    names.iter().map(|n| n.parse().unwrap()).collect()
}

struct Scenario {
    name: &'static str,
    status: &'static str,
    results: Vec<(&'static str, Result<ArchInput, ()>)>,
    current: Option<CurrentIndex>,
    settings: GateSettings,
    annotations: BTreeMap<String, String>,
    /// The compose stamp of this compose (the gate orders by it).
    compose: Option<ComposeStamp>,
}

fn scenario(
    name: &'static str,
    results: Vec<(&'static str, Result<ArchInput, ()>)>,
    current: Option<CurrentIndex>,
) -> Scenario {
    Scenario {
        name,
        status: "FINISHED",
        results,
        current,
        settings: GateSettings::default(),
        annotations: BTreeMap::new(),
        compose: None,
    }
}

impl Scenario {
    fn policy(mut self, policy: Policy) -> Self {
        self.settings.policy = policy;
        self
    }
    fn status(mut self, status: &'static str) -> Self {
        self.status = status;
        self
    }
    /// Annotations for the new index; `current` too, for the current one.
    fn annotations(mut self, new: &[(&str, &str)], current: &[(&str, &str)]) -> Self {
        let map = |kv: &[(&str, &str)]| {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        self.annotations = map(new);
        if let Some(c) = &mut self.current {
            c.annotations = map(current);
        }
        self
    }
}

impl Scenario {
    /// This compose is `mine`; the current index names `held` (when given)
    /// as archgate writes it.
    fn composes(mut self, mine: &str, held: Option<&str>) -> Self {
        let stamp = |id: &str| ComposeStamp::of(&Compose::from_id(id, ComposeStatus::Finished));
        let mine = stamp(mine);
        self.annotations.extend(mine.annotations());
        self.compose = Some(mine);
        if let (Some(c), Some(held)) = (&mut self.current, held) {
            c.annotations.extend(stamp(held).annotations());
        }
        self
    }

    fn allow_older(mut self) -> Self {
        self.settings.allow_older = true;
        self
    }
}

/// An entry of the current index on a platform that is no compose arch.
fn foreign(os: &str, arch: &str, variant: Option<&str>) -> Entry {
    Entry {
        platform: Platform {
            os: os.into(),
            architecture: arch.into(),
            variant: variant.map(str::to_string),
        },
        digest: format!("sha256:{os}-{arch}-{}", variant.unwrap_or("none")),
        ..entry_for("x86_64", 1, None)
    }
}

/// An attestation manifest (as BuildKit writes them) about `about`.
fn attestation(about: &Entry) -> Entry {
    Entry {
        platform: Platform {
            os: "unknown".into(),
            architecture: "unknown".into(),
            variant: None,
        },
        digest: format!("sha256:attestation-of-{}", &about.digest[7..]),
        annotations: BTreeMap::from([
            (
                "vnd.docker.reference.type".to_string(),
                "attestation-manifest".to_string(),
            ),
            (
                "vnd.docker.reference.digest".to_string(),
                about.digest.clone(),
            ),
        ]),
        ..entry_for("x86_64", 1, None)
    }
}

/// Runs the gate and writes down everything it decided.
fn render(s: &Scenario) -> String {
    let mut out = String::new();
    let status = ComposeStatus::parse(s.status);
    let _ = writeln!(out, "compose: {status}, policy: {}", s.settings.policy);
    let mut results = Vec::new();
    for (name, r) in &s.results {
        match name.parse::<Arch>() {
            Ok(arch) => results.push((arch, r.clone().unwrap())),
            Err(e) => {
                let _ = writeln!(out, "error: {e}");
                return out;
            }
        }
    }
    let input = GateInput {
        status: &status,
        results: &results,
        current: s.current.as_ref(),
        settings: &s.settings,
        annotations: &s.annotations,
        compose: s.compose.as_ref(),
        now: parse_rfc3339(NOW).unwrap(),
    };
    let plan = match decide(&input) {
        Ok(plan) => plan,
        Err(e) => {
            let _ = writeln!(out, "error: {e}");
            return out;
        }
    };
    let hard = match (plan.hard_refusal, plan.stale) {
        (true, true) => " (hard, stale: nothing pushed)",
        (true, false) => " (hard: nothing pushed)",
        _ => "",
    };
    let _ = writeln!(out, "decision: {}{hard}", plan.decision.as_str());
    for a in &plan.arches {
        let _ = writeln!(
            out,
            "  {:<8} {:<13} {:<7} {:<9} {}",
            a.arch.as_str(),
            a.platform.to_string(),
            format!("{:?}", a.result).to_lowercase(),
            a.action.as_str(),
            a.digest.as_deref().unwrap_or("-")
        );
    }
    let index: Vec<String> = plan
        .index
        .iter()
        .map(|e| format!("{} {}", e.platform, e.digest))
        .collect();
    let _ = writeln!(out, "new index: [{}]", index.join(", "));
    if !plan.annotations.is_empty() {
        let _ = writeln!(out, "index annotations: {:?}", plan.annotations);
    }
    let tags: Vec<&str> = plan.arch_tags.iter().map(|a| a.as_str()).collect();
    let _ = writeln!(out, "arch tags: [{}]", tags.join(", "));
    for r in &plan.reasons {
        let _ = writeln!(out, "reason: {r}");
    }
    out
}

fn scenarios() -> Vec<Scenario> {
    let both_v1 = || index(vec![was("x86_64", 1, None), was("aarch64", 1, None)]);
    let origin = || {
        vec![
            built("x86_64", 2),
            failed("aarch64", "createImage task 1234 FAILED"),
        ]
    };
    let mut list = vec![
        // The case that started it all, under each policy.
        scenario("origin_refuse", origin(), both_v1()),
        scenario("origin_lose", origin(), both_v1()).policy(Policy::Lose),
        scenario("origin_hybrid", origin(), both_v1()).policy(Policy::Hybrid),
        // The Pungi shape of it: the failed arch is simply absent.
        scenario("absent_arch_refuse", vec![built("x86_64", 2)], both_v1()),
        scenario(
            "first_publish",
            vec![built("x86_64", 1), built("aarch64", 1)],
            None,
        ),
        scenario(
            "new_arch_added",
            vec![built("x86_64", 2), built("aarch64", 2), built("s390x", 1)],
            both_v1(),
        ),
        scenario(
            "all_built_updated",
            vec![built("x86_64", 2), built("aarch64", 2)],
            both_v1(),
        ),
        scenario(
            "identical_is_unchanged",
            vec![built("x86_64", 1), built("aarch64", 1)],
            both_v1(),
        ),
        scenario(
            "identical_in_other_order_is_unchanged",
            vec![built("x86_64", 1), built("aarch64", 1)],
            index(vec![was("aarch64", 1, None), was("x86_64", 1, None)]),
        ),
        scenario(
            "one_arch_rebuilt_one_same",
            vec![built("x86_64", 2), built("aarch64", 1)],
            both_v1(),
        ),
        scenario(
            "failed_arch_never_in_index",
            vec![
                built("x86_64", 2),
                built("aarch64", 2),
                failed("s390x", "kiwi: package conflict"),
            ],
            both_v1(),
        ),
        scenario(
            "nothing_built",
            vec![failed("x86_64", "oom"), failed("aarch64", "timeout")],
            both_v1(),
        ),
        scenario("nothing_built_first_publish", vec![], None),
        scenario(
            "compose_started",
            vec![built("x86_64", 2), built("aarch64", 2)],
            both_v1(),
        )
        .status("STARTED"),
        scenario(
            "compose_doomed",
            vec![built("x86_64", 2), built("aarch64", 2)],
            both_v1(),
        )
        .status("DOOMED"),
        // A source need not read an unfinished compose's images (Pungi's
        // STARTED has no images.json): the status is the one reason.
        scenario("compose_doomed_unread", vec![], both_v1()).status("DOOMED"),
        // Annotations (docs/configuration.md): same entries and same annotations are
        // unchanged; a new compose's annotations make a new index of the
        // same, unchanged entries.
        scenario(
            "annotations_same",
            vec![built("x86_64", 1), built("aarch64", 1)],
            both_v1(),
        )
        .annotations(
            &[("org.fedoraproject.compose-id", "C1")],
            &[("org.fedoraproject.compose-id", "C1")],
        ),
        scenario(
            "annotations_new_compose",
            vec![built("x86_64", 1), built("aarch64", 1)],
            both_v1(),
        )
        .annotations(
            &[("org.fedoraproject.compose-id", "C2")],
            &[("org.fedoraproject.compose-id", "C1")],
        ),
        scenario(
            "compose_terminated",
            vec![built("x86_64", 2), built("aarch64", 2)],
            both_v1(),
        )
        .status("TERMINATED"),
        scenario(
            "compose_finished_incomplete",
            vec![built("x86_64", 2), built("aarch64", 2)],
            both_v1(),
        )
        .status("FINISHED_INCOMPLETE"),
        scenario(
            "current_is_single_arch_manifest",
            vec![built("x86_64", 2), built("aarch64", 1)],
            Some(CurrentIndex {
                digest: "sha256:x86_64-build1".into(),
                media_type: OCI_MANIFEST.into(),
                entries: vec![was("x86_64", 1, None)],
                annotations: BTreeMap::new(),
            }),
        ),
        scenario(
            "current_single_arch_manifest_identical",
            vec![built("x86_64", 1)],
            Some(CurrentIndex {
                digest: "sha256:x86_64-build1".into(),
                media_type: OCI_MANIFEST.into(),
                entries: vec![was("x86_64", 1, None)],
                annotations: BTreeMap::new(),
            }),
        ),
        scenario(
            "current_has_entry_of_no_compose_arch",
            vec![built("x86_64", 2), built("aarch64", 2)],
            index(vec![
                was("x86_64", 1, None),
                was("aarch64", 1, None),
                was("unknown", 1, None),
            ]),
        ),
        scenario(
            "duplicate_results_for_one_arch",
            vec![built("x86_64", 2), failed("x86_64", "again")],
            both_v1(),
        ),
        scenario(
            "unknown_arch_name",
            vec![built("x86_64", 2), built("arm64", 2)],
            both_v1(),
        ),
        scenario(
            "platform_variant_from_config_updates_entry",
            vec![
                built("x86_64", 1),
                (
                    "aarch64",
                    Ok(ArchInput::Built(Entry {
                        platform: Platform {
                            os: "linux".into(),
                            architecture: "arm64".into(),
                            variant: Some("v8".into()),
                        },
                        ..entry_for("aarch64", 1, None)
                    })),
                ),
            ],
            both_v1(),
        ),
    ];

    let mut retired = scenario(
        "retired_arch_dropped",
        vec![built("x86_64", 2), built("aarch64", 2)],
        index(vec![
            was("x86_64", 1, None),
            was("aarch64", 1, None),
            was("armhfp", 1, None),
        ]),
    );
    retired.settings.retired = arches(&["armhfp"]);
    list.push(retired);

    let mut retired_built = scenario(
        "retired_arch_still_built_is_kept",
        vec![built("x86_64", 2), built("armhfp", 2)],
        index(vec![was("x86_64", 1, None), was("armhfp", 1, None)]),
    );
    retired_built.settings.retired = arches(&["armhfp"]);
    list.push(retired_built);

    let mut required = scenario("required_arch_failed", origin(), both_v1()).policy(Policy::Lose);
    required.settings.required = arches(&["x86_64", "aarch64"]);
    list.push(required);

    let mut required_absent = scenario(
        "required_arch_absent_first_publish",
        vec![built("x86_64", 1)],
        None,
    );
    required_absent.settings.required = arches(&["ppc64le"]);
    list.push(required_absent);

    let mut expected = scenario(
        "expected_arch_absent_not_in_index",
        vec![built("x86_64", 2), built("aarch64", 2)],
        both_v1(),
    );
    expected.settings.expected = arches(&["x86_64", "aarch64", "s390x"]);
    list.push(expected);

    let mut expected_lose = scenario(
        "expected_arch_absent_in_index_lose",
        vec![built("x86_64", 2)],
        both_v1(),
    )
    .policy(Policy::Lose);
    expected_lose.settings.expected = arches(&["x86_64", "aarch64"]);
    list.push(expected_lose);

    let hybrid_aged = |name, created: Option<&str>| {
        let mut s = scenario(
            name,
            origin(),
            index(vec![
                was("x86_64", 1, Some("2024-10-01T00:00:00Z")),
                was("aarch64", 1, created),
            ]),
        )
        .policy(Policy::Hybrid);
        s.settings.max_carry_age = Some("14d".parse().unwrap());
        s
    };
    list.push(hybrid_aged(
        "hybrid_max_carry_age_exceeded",
        Some("2024-10-01T00:00:00Z"),
    ));
    list.push(hybrid_aged("hybrid_max_carry_age_unknown", None));
    list.push(hybrid_aged(
        "hybrid_max_carry_age_within",
        Some("2024-10-25T00:00:00Z"),
    ));
    list.push(hybrid_aged(
        "hybrid_max_carry_age_unreadable",
        Some("last tuesday"),
    ));
    list.extend(compose_order_scenarios());
    list.extend(foreign_entry_scenarios());
    list
}

/// Compose order (docs/gate.md): a tag never goes back to an older compose.
fn compose_order_scenarios() -> Vec<Scenario> {
    let both_v1 = || index(vec![was("x86_64", 1, None), was("aarch64", 1, None)]);
    let both_v2 = || vec![built("x86_64", 2), built("aarch64", 2)];
    vec![
        scenario("order_newer_compose_held_is_stale", both_v2(), both_v1())
            .composes("Fedora-41-20241101.n.0", Some("Fedora-41-20241102.n.0")),
        // Whatever the policy, and even where the compose built more.
        scenario(
            "order_stale_under_lose_with_a_new_arch",
            vec![built("x86_64", 2), built("aarch64", 2), built("s390x", 1)],
            both_v1(),
        )
        .policy(Policy::Lose)
        .composes("Fedora-41-20241101.n.0", Some("Fedora-41-20241101.n.1")),
        scenario("order_allow_older_rolls_back", both_v2(), both_v1())
            .composes("Fedora-41-20241101.n.0", Some("Fedora-41-20241102.n.0"))
            .allow_older(),
        scenario("order_older_compose_held_publishes", both_v2(), both_v1())
            .composes("Fedora-41-20241102.n.0", Some("Fedora-41-20241101.n.0")),
        // The same compose again (a retry, a re-run) is not older.
        scenario(
            "order_same_compose_again_is_unchanged",
            vec![built("x86_64", 1), built("aarch64", 1)],
            both_v1(),
        )
        .composes("Fedora-41-20241102.n.0", Some("Fedora-41-20241102.n.0")),
        // Another tool's index names no compose: not ordered.
        scenario(
            "order_index_without_stamp_is_not_ordered",
            both_v2(),
            both_v1(),
        )
        .composes("Fedora-41-20241101.n.0", None),
        // A newer compose that built the very same: the stamp alone is no
        // difference, nothing is written.
        scenario(
            "order_new_compose_same_entries_unchanged",
            vec![built("x86_64", 1), built("aarch64", 1)],
            both_v1(),
        )
        .composes("Fedora-41-20241103.n.0", Some("Fedora-41-20241102.n.0")),
        // An unfinished compose: its status is the one reason.
        scenario("order_unfinished_and_older", both_v2(), both_v1())
            .status("DOOMED")
            .composes("Fedora-41-20241101.n.0", Some("Fedora-41-20241102.n.0")),
    ]
}

/// Entries whose platform is no compose arch count as arches of X; an
/// attestation manifest follows the entry it is about.
fn foreign_entry_scenarios() -> Vec<Scenario> {
    let with_foreign = || {
        index(vec![
            was("x86_64", 1, None),
            was("aarch64", 1, None),
            foreign("linux", "loong64", None),
            foreign("linux", "amd64", Some("v2")),
            foreign("windows", "amd64", None),
        ])
    };
    let both_v2 = || vec![built("x86_64", 2), built("aarch64", 2)];
    let x1 = was("x86_64", 1, None);
    let a1 = was("aarch64", 1, None);
    let attested = || {
        index(vec![
            x1.clone(),
            a1.clone(),
            attestation(&x1),
            attestation(&a1),
        ])
    };
    vec![
        scenario("foreign_platforms_refuse", both_v2(), with_foreign()),
        scenario("foreign_platforms_lose", both_v2(), with_foreign()).policy(Policy::Lose),
        scenario("foreign_platforms_hybrid", both_v2(), with_foreign()).policy(Policy::Hybrid),
        // aarch64 carried with its attestation; x86_64's goes with its old build.
        scenario("attestations_follow_hybrid", origin_v2(), attested()).policy(Policy::Hybrid),
        scenario("attestations_follow_lose", origin_v2(), attested()).policy(Policy::Lose),
        // Never a reason to refuse: both updated, both attestations go.
        scenario("attestations_never_refuse", both_v2(), attested()),
        scenario(
            "attestations_kept_with_unchanged_entries",
            vec![built("x86_64", 1), built("aarch64", 1)],
            attested(),
        ),
    ]
}

fn origin_v2() -> Vec<(&'static str, Result<ArchInput, ()>)> {
    vec![
        built("x86_64", 2),
        failed("aarch64", "createImage task 1234 FAILED"),
    ]
}

#[test]
fn gate_scenarios() {
    let list = scenarios();
    assert!(list.len() >= 20);
    let mut names: Vec<&str> = list.iter().map(|s| s.name).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), list.len(), "scenario names must be unique");
    for s in &list {
        insta::assert_snapshot!(s.name, render(s));
    }
}
