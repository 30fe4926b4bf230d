//! The gate (docs/gate.md): one pure decision per target.
//!
//! [`decide`] takes what this compose built for an image, what the target
//! holds now, and the gate settings, and returns a [`TargetPlan`]: the
//! decision, one line per arch, the reason sentences, and the entries of the
//! index to write. No I/O and no clock: the caller passes `now`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::arch::{Arch, Platform};
use crate::model::{ArchInput, ComposeStatus, CurrentIndex, Entry};
use crate::time::{parse_rfc3339, Age};

/// What the gate does when an arch of the current index was not built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    #[default]
    Refuse,
    Lose,
    Hybrid,
}

impl Policy {
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Refuse => "refuse",
            Policy::Lose => "lose",
            Policy::Hybrid => "hybrid",
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Policy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "refuse" => Ok(Policy::Refuse),
            "lose" => Ok(Policy::Lose),
            "hybrid" => Ok(Policy::Hybrid),
            _ => Err(format!(
                "unknown policy `{s}`; expected refuse, lose or hybrid"
            )),
        }
    }
}

/// The gate settings in force for one image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GateSettings {
    pub policy: Policy,
    /// Must be built in this compose, or the image is refused outright.
    pub required: Vec<Arch>,
    /// May leave an index without counting as failed.
    pub retired: Vec<Arch>,
    /// The image's expected arches: one with no result counts as failed.
    pub expected: Vec<Arch>,
    /// Hybrid only: the oldest current entry that may be carried.
    pub max_carry_age: Option<Age>,
}

/// Everything the gate looks at for one target.
#[derive(Debug, Clone)]
pub struct GateInput<'a> {
    pub status: &'a ComposeStatus,
    /// One result per arch. Two results for one arch are an error.
    pub results: &'a [(Arch, ArchInput)],
    pub current: Option<&'a CurrentIndex>,
    pub settings: &'a GateSettings,
    /// The annotations the new index carries (rendered for this target).
    pub annotations: &'a BTreeMap<String, String>,
    /// Unix seconds, for `max-carry-age`.
    pub now: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Published,
    Unchanged,
    Refused,
    Error,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Published => "published",
            Decision::Unchanged => "unchanged",
            Decision::Refused => "refused",
            Decision::Error => "error",
        }
    }
}

/// What this compose gave for an arch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ArchStatus {
    Built,
    Failed,
    /// No result at all for that arch.
    Absent,
}

/// What happens to an arch in the new index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Added,
    Updated,
    Unchanged,
    Carried,
    Dropped,
    Lost,
    Blocked,
    None,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Added => "added",
            Action::Updated => "updated",
            Action::Unchanged => "unchanged",
            Action::Carried => "carried",
            Action::Dropped => "dropped",
            Action::Lost => "lost",
            Action::Blocked => "blocked",
            Action::None => "none",
        }
    }
}

/// One arch of a target plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchPlan {
    pub arch: Arch,
    pub platform: Platform,
    pub result: ArchStatus,
    pub action: Action,
    /// The manifest digest in the new index; for blocked, lost and carried
    /// arches the one in the current index.
    pub digest: Option<String>,
}

/// The gate's answer for one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetPlan {
    /// `Published` means "publish this index"; never `Error`.
    pub decision: Decision,
    /// A refusal that pushes nothing at all for the image, arch tags included.
    pub hard_refusal: bool,
    pub arches: Vec<ArchPlan>,
    pub reasons: Vec<String>,
    /// The entries of the index to write, in arch order. Empty when refused.
    pub index: Vec<Entry>,
    /// Built arches whose arch tags are pushed (none on a hard refusal).
    pub arch_tags: Vec<Arch>,
    /// The annotations of the index to write.
    pub annotations: BTreeMap<String, String>,
}

/// Bad input to the gate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GateError {
    DuplicateResult(Arch),
}

impl fmt::Display for GateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GateError::DuplicateResult(arch) => write!(
                f,
                "the compose reports more than one result for {arch}; one per arch is expected"
            ),
        }
    }
}

impl std::error::Error for GateError {}

/// Decide one target: the steps of docs/gate.md, in its order.
pub fn decide(input: &GateInput<'_>) -> Result<TargetPlan, GateError> {
    let built = ComposeGave::collect(input.results)?;
    let (held, mut reasons) = TargetHolds::read(input.current);
    let at_stake = arches_at_stake(&built, &held, input.settings);
    let rows = Rows {
        built: &built,
        held: &held,
    };
    if let Some(plan) = hard_refusal(input, &rows, &at_stake) {
        return Ok(plan);
    }
    let outcome = apply_policy(input.settings, input.now, &rows, &at_stake, &mut reasons);
    Ok(finish(input, &built, outcome, reasons))
}

/// What the compose gave for the image, per arch (B and its failures):
/// "Let B be the arches built in this compose".
struct ComposeGave<'a> {
    built: BTreeMap<Arch, &'a Entry>,
    failed: BTreeMap<Arch, &'a str>,
}

impl<'a> ComposeGave<'a> {
    /// One result per arch; a second one for an arch is bad input.
    fn collect(results: &'a [(Arch, ArchInput)]) -> Result<ComposeGave<'a>, GateError> {
        let mut gave = ComposeGave {
            built: BTreeMap::new(),
            failed: BTreeMap::new(),
        };
        for (arch, result) in results {
            if gave.built.contains_key(arch) || gave.failed.contains_key(arch) {
                return Err(GateError::DuplicateResult(*arch));
            }
            match result {
                ArchInput::Built(entry) => {
                    gave.built.insert(*arch, entry);
                }
                ArchInput::Failed(reason) => {
                    gave.failed.insert(*arch, reason.as_str());
                }
            }
        }
        Ok(gave)
    }

    fn result_of(&self, arch: &Arch) -> ArchStatus {
        if self.built.contains_key(arch) {
            ArchStatus::Built
        } else if self.failed.contains_key(arch) {
            ArchStatus::Failed
        } else {
            ArchStatus::Absent
        }
    }

    /// "failed in this compose: why" or "has no result in this compose".
    fn what_happened(&self, arch: &Arch) -> String {
        match self.failed.get(arch) {
            Some(reason) => format!("failed in this compose: {reason}"),
            None => "has no result in this compose".to_string(),
        }
    }
}

/// What the target holds now, per arch (C): "Let C be the arches in the
/// current index".
struct TargetHolds<'a> {
    entries: BTreeMap<Arch, &'a Entry>,
}

impl<'a> TargetHolds<'a> {
    /// The current entries by arch, and a sentence for each entry that is
    /// not kept (a second entry for an arch, a platform that is no compose
    /// arch).
    fn read(current: Option<&'a CurrentIndex>) -> (TargetHolds<'a>, Vec<String>) {
        let mut entries: BTreeMap<Arch, &Entry> = BTreeMap::new();
        let mut reasons = Vec::new();
        for entry in current.map(|c| c.entries.as_slice()).unwrap_or_default() {
            match Arch::from_platform(&entry.platform) {
                Some(arch) if !entries.contains_key(&arch) => {
                    entries.insert(arch, entry);
                }
                Some(arch) => reasons.push(format!(
                    "the current index has a second entry for {arch} ({}, {}); it is not kept",
                    entry.platform, entry.digest
                )),
                None => reasons.push(format!(
                    "the current index has an entry for {} ({}) that is no compose arch; it is not kept",
                    entry.platform, entry.digest
                )),
            }
        }
        (TargetHolds { entries }, reasons)
    }
}

/// Every arch the decision is about: built, failed, held by the target,
/// expected or required.
fn arches_at_stake(
    built: &ComposeGave<'_>,
    held: &TargetHolds<'_>,
    settings: &GateSettings,
) -> BTreeSet<Arch> {
    built
        .built
        .keys()
        .chain(built.failed.keys())
        .chain(held.entries.keys())
        .chain(&settings.expected)
        .chain(&settings.required)
        .copied()
        .collect()
}

/// Builds the report rows: an arch's platform and result come from what
/// was built and what is held.
struct Rows<'a> {
    built: &'a ComposeGave<'a>,
    held: &'a TargetHolds<'a>,
}

impl Rows<'_> {
    fn row(&self, arch: Arch, action: Action, digest: Option<String>) -> ArchPlan {
        let platform = self
            .built
            .built
            .get(&arch)
            .or_else(|| self.held.entries.get(&arch))
            .map(|e| e.platform.clone())
            .unwrap_or_else(|| arch.default_platform());
        ArchPlan {
            arch,
            platform,
            result: self.built.result_of(&arch),
            action,
            digest,
        }
    }

    /// The digest an arch has in the current index.
    fn held_digest(&self, arch: &Arch) -> Option<String> {
        self.held.entries.get(arch).map(|e| e.digest.clone())
    }
}

/// "Hard refusals": refused whatever the policy, nothing at all pushed (arch
/// tags neither). `None` when none applies.
fn hard_refusal(
    input: &GateInput<'_>,
    rows: &Rows<'_>,
    at_stake: &BTreeSet<Arch>,
) -> Option<TargetPlan> {
    let built = rows.built;
    let mut hard = Vec::new();
    let unfinished = !input.status.is_finished();
    if unfinished {
        // The one cause: what an unfinished compose holds (or lacks) is not
        // looked at, and sources need not even read it.
        hard.push(format!(
            "the compose is {}, not FINISHED or FINISHED_INCOMPLETE; nothing is published",
            input.status
        ));
    } else if built.built.is_empty() {
        hard.push(
            "nothing was built for this image in this compose; nothing is published".to_string(),
        );
    }
    let missing_required: Vec<Arch> = input
        .settings
        .required
        .iter()
        .filter(|a| !unfinished && !built.built.contains_key(a))
        .copied()
        .collect();
    for arch in &missing_required {
        hard.push(format!(
            "{arch} is a required arch and {}; nothing is published",
            built.what_happened(arch)
        ));
    }
    if hard.is_empty() {
        return None;
    }
    let arches = at_stake
        .iter()
        .map(|&arch| match missing_required.contains(&arch) {
            true => rows.row(arch, Action::Blocked, rows.held_digest(&arch)),
            false => rows.row(arch, Action::None, None),
        })
        .collect();
    Some(TargetPlan {
        decision: Decision::Refused,
        hard_refusal: true,
        arches,
        reasons: hard,
        index: Vec::new(),
        arch_tags: Vec::new(),
        annotations: BTreeMap::new(),
    })
}

/// What the policy made of the arches at stake.
#[derive(Default)]
struct PolicyOutcome {
    rows: Vec<ArchPlan>,
    /// The entries of the new index, in arch order.
    index: Vec<Entry>,
    /// An arch of X stops the index (refuse, or hybrid past max-carry-age).
    refused: bool,
}

/// "Policies": per arch, in arch order. X = C - B - retired is what the
/// policy decides on; built arches are added or updated, retired ones
/// dropped.
fn apply_policy(
    settings: &GateSettings,
    now: i64,
    rows: &Rows<'_>,
    at_stake: &BTreeSet<Arch>,
    reasons: &mut Vec<String>,
) -> PolicyOutcome {
    let built = rows.built;
    let mut out = PolicyOutcome::default();
    for &arch in at_stake {
        let (action, digest) = match (built.built.get(&arch), rows.held.entries.get(&arch)) {
            (Some(new), old) => {
                out.index.push((*new).clone());
                let action = match old {
                    Some(old) if new.same_descriptor(old) => Action::Unchanged,
                    Some(_) => Action::Updated,
                    None => Action::Added,
                };
                (action, Some(new.digest.clone()))
            }
            (None, Some(_)) if settings.retired.contains(&arch) => {
                reasons.push(format!(
                    "{arch} is retired and {}; it is dropped from the index",
                    built.what_happened(&arch)
                ));
                (Action::Dropped, None)
            }
            (None, Some(old)) => not_built(settings, now, arch, old, built, &mut out, reasons),
            (None, None) => {
                let expected = match settings.expected.contains(&arch) {
                    true => " and is expected for this image",
                    false => "",
                };
                reasons.push(format!(
                    "{arch} {}{expected}; it is not in the current index, so nothing is lost",
                    built.what_happened(&arch)
                ));
                (Action::None, None)
            }
        };
        out.rows.push(rows.row(arch, action, digest));
    }
    out
}

/// An arch of X (in the current index, not built, not retired): the
/// policy's table row. Returns its action and digest.
fn not_built(
    settings: &GateSettings,
    now: i64,
    arch: Arch,
    old: &Entry,
    built: &ComposeGave<'_>,
    out: &mut PolicyOutcome,
    reasons: &mut Vec<String>,
) -> (Action, Option<String>) {
    let why = format!(
        "{arch} is in the current index but {}",
        built.what_happened(&arch)
    );
    let held = Some(old.digest.clone());
    match settings.policy {
        Policy::Refuse => {
            out.refused = true;
            reasons.push(format!("{why}; policy refuse leaves the index as it is"));
            (Action::Blocked, held)
        }
        Policy::Lose => {
            reasons.push(format!("{why}; policy lose drops it from the index"));
            (Action::Lost, held)
        }
        Policy::Hybrid => match too_old(old, settings.max_carry_age, now) {
            Some(age_problem) => {
                out.refused = true;
                reasons.push(format!(
                    "{why}; {age_problem}, so it is not carried and the index is left as it is"
                ));
                (Action::Blocked, held)
            }
            None => {
                out.index.push(old.clone());
                reasons.push(format!(
                    "{why}; policy hybrid carries its current entry {}",
                    old.digest
                ));
                (Action::Carried, held)
            }
        },
    }
}

/// The plan: refused by the policy (arch tags still pushed), unchanged
/// (the same entries and annotations: nothing to write), or published.
fn finish(
    input: &GateInput<'_>,
    built: &ComposeGave<'_>,
    outcome: PolicyOutcome,
    reasons: Vec<String>,
) -> TargetPlan {
    let arch_tags: Vec<Arch> = built.built.keys().copied().collect();
    if outcome.refused {
        return TargetPlan {
            decision: Decision::Refused,
            hard_refusal: false,
            arches: outcome.rows,
            reasons,
            index: Vec::new(),
            arch_tags,
            annotations: BTreeMap::new(),
        };
    }
    // Same entries and same annotations: nothing to write. Same entries
    // with other annotations (a new compose's) make a new index whose
    // entries are all `unchanged`.
    let unchanged = input.current.is_some_and(|c| {
        same_entries(&c.entries, &outcome.index) && &c.annotations == input.annotations
    });
    TargetPlan {
        decision: match unchanged {
            true => Decision::Unchanged,
            false => Decision::Published,
        },
        hard_refusal: false,
        arches: outcome.rows,
        reasons,
        index: outcome.index,
        arch_tags,
        annotations: input.annotations.clone(),
    }
}

/// Why a current entry may not be carried under `max-carry-age`, if it may not.
fn too_old(entry: &Entry, max_age: Option<Age>, now: i64) -> Option<String> {
    let max_age = max_age?;
    let Some(created) = entry.created.as_deref() else {
        return Some(
            "its current entry has no known creation time and max-carry-age is set".to_string(),
        );
    };
    let Some(at) = parse_rfc3339(created) else {
        return Some(format!(
            "its current entry's creation time `{created}` cannot be read and max-carry-age is set"
        ));
    };
    let age = now - at;
    (age > max_age.seconds).then(|| {
        format!(
            "its current entry was created {created}, {} days ago, older than max-carry-age",
            age / 86_400
        )
    })
}

/// The same descriptors, whatever their order.
fn same_entries(a: &[Entry], b: &[Entry]) -> bool {
    a.len() == b.len() && a.iter().all(|x| b.iter().any(|y| x.same_descriptor(y)))
}
