//! The gate (docs/gate.md): one pure decision per target.
//!
//! [`decide`] takes what this compose built for an image, what the target
//! holds now, and the gate settings, and returns a [`TargetPlan`]: the
//! decision, one line per arch, the reason sentences, and the entries of the
//! index to write. No I/O and no clock: the caller passes `now`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::arch::{Arch, Platform, Slot};
use crate::model::{ArchInput, ComposeStatus, CurrentIndex, Entry};
use crate::order::ComposeStamp;
use crate::time::{parse_rfc3339, Age};

/// What the gate does when an arch of the current index was not built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// The index is not touched; the arches of X are named and `blocked`.
    #[default]
    Refuse,
    /// The new index holds only the built arches; the arches of X are `lost`.
    Lose,
    /// The new index carries the current entries of X, unchanged.
    Hybrid,
}

impl Policy {
    /// `refuse`, `lose` or `hybrid`.
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
    /// What happens when an arch of X is not built.
    pub policy: Policy,
    /// Must be built in this compose, or the image is refused outright.
    pub required: Vec<Arch>,
    /// May leave an index without counting as failed.
    pub retired: Vec<Arch>,
    /// The image's expected arches: one with no result counts as failed.
    pub expected: Vec<Arch>,
    /// Hybrid only: the oldest current entry that may be carried.
    pub max_carry_age: Option<Age>,
    /// `publish --allow-older`: the compose order is not enforced (an
    /// intended rollback).
    pub allow_older: bool,
}

/// Everything the gate looks at for one target.
#[derive(Debug, Clone)]
pub struct GateInput<'a> {
    /// The compose's status (unfinished composes are refused).
    pub status: &'a ComposeStatus,
    /// One result per arch. Two results for one arch are an error.
    pub results: &'a [(Arch, ArchInput)],
    /// What the target holds now; `None` when the tag does not exist.
    pub current: Option<&'a CurrentIndex>,
    /// The image's gate settings.
    pub settings: &'a GateSettings,
    /// The annotations the new index carries (rendered for this target,
    /// the compose stamp included).
    pub annotations: &'a BTreeMap<String, String>,
    /// The compose this index would come from, for the compose order;
    /// `None` orders nothing.
    pub compose: Option<&'a ComposeStamp>,
    /// Unix seconds, for `max-carry-age`.
    pub now: i64,
}

/// What the gate (and then publishing) made of a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// A new index is (or in a plan, would be) written.
    Published,
    /// The target already holds this index: nothing is written.
    Unchanged,
    /// Refused by the gate (by the policy, or a hard refusal).
    Refused,
    /// Reading or publishing failed (set by the runner, never by the gate).
    Error,
}

impl Decision {
    /// The word the report uses.
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
    /// Built in this compose.
    Built,
    /// Failed in this compose (the source said so, or its artifact is unusable).
    Failed,
    /// No result at all for that arch.
    Absent,
}

/// What happens to an arch in the new index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// New in the index (built now, not in the current index).
    Added,
    /// Built again, with another manifest than the current entry's.
    Updated,
    /// Built again, the very same entry.
    Unchanged,
    /// Not built; its current entry kept (hybrid).
    Carried,
    /// A retired arch no longer built: left out on purpose.
    Dropped,
    /// Not built; left out of the new index by policy lose.
    Lost,
    /// Not built; it made the gate refuse.
    Blocked,
    /// Nothing happens to it (not in the current index, or a hard refusal).
    None,
}

impl Action {
    /// The word the report uses.
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
    /// A compose arch, or a platform of the current index that is none.
    pub arch: Slot,
    /// Its platform (from its config, or the current entry, or the default).
    pub platform: Platform,
    /// What this compose gave for it.
    pub result: ArchStatus,
    /// What happens to it in the new index.
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
    /// Refused because the target holds a newer compose (a hard refusal).
    pub stale: bool,
    /// One line per arch at stake, in arch order.
    pub arches: Vec<ArchPlan>,
    /// The reason sentences, one per cause.
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
    /// The compose reports two results for one arch.
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
    let mut outcome = apply_policy(input.settings, input.now, &rows, &at_stake, &mut reasons);
    follow_attestations(&held, &mut outcome, &mut reasons);
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

    fn built(&self, slot: &Slot) -> Option<&'a Entry> {
        slot.arch().and_then(|a| self.built.get(&a).copied())
    }

    fn result_of(&self, slot: &Slot) -> ArchStatus {
        match slot.arch() {
            Some(a) if self.built.contains_key(&a) => ArchStatus::Built,
            Some(a) if self.failed.contains_key(&a) => ArchStatus::Failed,
            _ => ArchStatus::Absent,
        }
    }

    /// "failed in this compose: why", "has no result in this compose", or
    /// for a foreign platform why no compose can build it.
    fn what_happened(&self, slot: &Slot) -> String {
        let Some(arch) = slot.arch() else {
            return "is no compose arch, so no compose builds it".to_string();
        };
        match self.failed.get(&arch) {
            Some(reason) => format!("failed in this compose: {reason}"),
            None => "has no result in this compose".to_string(),
        }
    }
}

/// What the target holds now (C): its entries by arch or foreign platform,
/// and its attestation manifests.
struct TargetHolds<'a> {
    entries: BTreeMap<Slot, &'a Entry>,
    /// Entries `unknown/unknown` that are attestations of another entry.
    attestations: Vec<&'a Entry>,
}

/// The annotation that marks an attestation manifest, and its value.
const REFERENCE_TYPE: (&str, &str) = ("vnd.docker.reference.type", "attestation-manifest");
/// The annotation of an attestation manifest that names the entry it is about.
const REFERENCE_DIGEST: &str = "vnd.docker.reference.digest";

impl<'a> TargetHolds<'a> {
    /// The current entries by slot, and a sentence for each entry that is
    /// not kept (a second entry for one platform).
    fn read(current: Option<&'a CurrentIndex>) -> (TargetHolds<'a>, Vec<String>) {
        let mut held = TargetHolds {
            entries: BTreeMap::new(),
            attestations: Vec::new(),
        };
        let mut reasons = Vec::new();
        for entry in current.map(|c| c.entries.as_slice()).unwrap_or_default() {
            let (kind, value) = REFERENCE_TYPE;
            if entry.annotations.get(kind).map(String::as_str) == Some(value) {
                held.attestations.push(entry);
                continue;
            }
            match held.entries.entry(Slot::of(&entry.platform)) {
                std::collections::btree_map::Entry::Vacant(v) => {
                    v.insert(entry);
                }
                std::collections::btree_map::Entry::Occupied(o) => reasons.push(format!(
                    "the current index has a second entry for {} ({}, {}); it is not kept",
                    o.key(),
                    entry.platform,
                    entry.digest
                )),
            }
        }
        (held, reasons)
    }
}

/// Every arch the decision is about: built, failed, held by the target
/// (foreign platforms included), expected or required.
fn arches_at_stake(
    built: &ComposeGave<'_>,
    held: &TargetHolds<'_>,
    settings: &GateSettings,
) -> BTreeSet<Slot> {
    let arches = built
        .built
        .keys()
        .chain(built.failed.keys())
        .chain(&settings.expected)
        .chain(&settings.required)
        .map(|&a| Slot::Arch(a));
    arches.chain(held.entries.keys().cloned()).collect()
}

/// Builds the report rows: an arch's platform and result come from what
/// was built and what is held.
struct Rows<'a> {
    built: &'a ComposeGave<'a>,
    held: &'a TargetHolds<'a>,
}

impl Rows<'_> {
    fn row(&self, slot: &Slot, action: Action, digest: Option<String>) -> ArchPlan {
        let platform = match self
            .built
            .built(slot)
            .or_else(|| self.held.entries.get(slot).copied())
        {
            Some(e) => e.platform.clone(),
            None => match slot {
                Slot::Arch(a) => a.default_platform(),
                Slot::Foreign(p, _) => p.clone(),
            },
        };
        ArchPlan {
            arch: slot.clone(),
            platform,
            result: self.built.result_of(slot),
            action,
            digest,
        }
    }

    /// The digest a slot has in the current index.
    fn held_digest(&self, slot: &Slot) -> Option<String> {
        self.held.entries.get(slot).map(|e| e.digest.clone())
    }
}

/// "Hard refusals": refused whatever the policy, nothing at all pushed (arch
/// tags neither). `None` when none applies.
fn hard_refusal(
    input: &GateInput<'_>,
    rows: &Rows<'_>,
    at_stake: &BTreeSet<Slot>,
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
    }
    let stale = !unfinished && stale(input, &mut hard);
    if !unfinished && built.built.is_empty() {
        hard.push(
            "nothing was built for this image in this compose; nothing is published".to_string(),
        );
    }
    let missing_required: Vec<Slot> = input
        .settings
        .required
        .iter()
        .filter(|a| !unfinished && !built.built.contains_key(a))
        .map(|&a| Slot::Arch(a))
        .collect();
    for slot in &missing_required {
        hard.push(format!(
            "{slot} is a required arch and {}; nothing is published",
            built.what_happened(slot)
        ));
    }
    if hard.is_empty() {
        return None;
    }
    let arches = at_stake
        .iter()
        .map(|slot| match missing_required.contains(slot) {
            true => rows.row(slot, Action::Blocked, rows.held_digest(slot)),
            false => rows.row(slot, Action::None, None),
        })
        .collect();
    Some(TargetPlan {
        decision: Decision::Refused,
        hard_refusal: true,
        stale,
        arches,
        reasons: hard,
        index: Vec::new(),
        arch_tags: Vec::new(),
        annotations: BTreeMap::new(),
    })
}

/// "Compose order": whether the target holds a compose newer than this one
/// (a hard refusal, unless `--allow-older`); the sentence goes to `hard`.
fn stale(input: &GateInput<'_>, hard: &mut Vec<String>) -> bool {
    let Some(mine) = input.compose else {
        return false;
    };
    let Some(theirs) = newer_compose_held(input.current, mine, input.settings.allow_older) else {
        return false;
    };
    hard.push(format!(
        "stale: the target holds compose {}, which is newer than this compose {}; a tag never goes back to an older compose (publish --allow-older rolls back on purpose); nothing is published",
        crate::text::untrusted(&theirs.id),
        mine.id
    ));
    true
}

/// The compose `current` names, when it is newer than `mine` and the
/// compose order is enforced (not `allow_older`): what makes a target
/// stale. The one test of it, for the gate and for whoever must know early.
pub fn newer_compose_held(
    current: Option<&CurrentIndex>,
    mine: &ComposeStamp,
    allow_older: bool,
) -> Option<ComposeStamp> {
    if allow_older {
        return None;
    }
    let theirs = ComposeStamp::read(&current?.annotations)?;
    theirs.is_newer_than(mine).then_some(theirs)
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
/// policy decides on (foreign platforms of C included); built arches are
/// added or updated, retired ones dropped.
fn apply_policy(
    settings: &GateSettings,
    now: i64,
    rows: &Rows<'_>,
    at_stake: &BTreeSet<Slot>,
    reasons: &mut Vec<String>,
) -> PolicyOutcome {
    let built = rows.built;
    let mut out = PolicyOutcome::default();
    for slot in at_stake {
        let retired = slot.arch().is_some_and(|a| settings.retired.contains(&a));
        let (action, digest) = match (built.built(slot), rows.held.entries.get(slot)) {
            (Some(new), old) => {
                out.index.push(new.clone());
                let action = match old {
                    Some(old) if new.same_descriptor(old) => Action::Unchanged,
                    Some(_) => Action::Updated,
                    None => Action::Added,
                };
                (action, Some(new.digest.clone()))
            }
            (None, Some(_)) if retired => {
                reasons.push(format!(
                    "{slot} is retired and {}; it is dropped from the index",
                    built.what_happened(slot)
                ));
                (Action::Dropped, None)
            }
            (None, Some(old)) => not_built(settings, now, slot, old, built, &mut out, reasons),
            (None, None) => {
                let expected = match slot.arch().is_some_and(|a| settings.expected.contains(&a)) {
                    true => " and is expected for this image",
                    false => "",
                };
                reasons.push(format!(
                    "{slot} {}{expected}; it is not in the current index, so nothing is lost",
                    built.what_happened(slot)
                ));
                (Action::None, None)
            }
        };
        out.rows.push(rows.row(slot, action, digest));
    }
    out
}

/// An arch of X (in the current index, not built, not retired): the
/// policy's table row. Returns its action and digest.
fn not_built(
    settings: &GateSettings,
    now: i64,
    slot: &Slot,
    old: &Entry,
    built: &ComposeGave<'_>,
    out: &mut PolicyOutcome,
    reasons: &mut Vec<String>,
) -> (Action, Option<String>) {
    let why = format!(
        "{slot} is in the current index but {}",
        built.what_happened(slot)
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

/// Attestation manifests follow the entry they are about: kept while that
/// entry stays in the new index unchanged or carried, dropped with it
/// otherwise; never a reason to refuse.
fn follow_attestations(
    held: &TargetHolds<'_>,
    outcome: &mut PolicyOutcome,
    reasons: &mut Vec<String>,
) {
    if outcome.refused {
        return;
    }
    for att in &held.attestations {
        let about = att.annotations.get(REFERENCE_DIGEST);
        let kept = about.is_some_and(|d| outcome.index.iter().any(|e| &e.digest == d));
        if kept {
            outcome.index.push((*att).clone());
        } else {
            reasons.push(format!(
                "the attestation manifest {} of {} goes with the entry it is about, which leaves the index",
                att.digest,
                about.map(|d| crate::text::untrusted(d)).unwrap_or_else(|| "no entry".into())
            ));
        }
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
            stale: false,
            arches: outcome.rows,
            reasons,
            index: Vec::new(),
            arch_tags,
            annotations: BTreeMap::new(),
        };
    }
    // Same entries and same annotations: nothing to write. Same entries
    // with other annotations (a new compose's) make a new index whose
    // entries are all `unchanged`. The compose stamp alone is no
    // difference: a new compose that built the very same is `unchanged`.
    let unchanged = input.current.is_some_and(|c| {
        same_entries(&c.entries, &outcome.index)
            && without_stamp(&c.annotations) == without_stamp(input.annotations)
    });
    TargetPlan {
        decision: match unchanged {
            true => Decision::Unchanged,
            false => Decision::Published,
        },
        hard_refusal: false,
        stale: false,
        arches: outcome.rows,
        reasons,
        index: outcome.index,
        arch_tags,
        annotations: input.annotations.clone(),
    }
}

/// Annotations but those that name a compose.
fn without_stamp(annotations: &BTreeMap<String, String>) -> BTreeMap<&String, &String> {
    annotations
        .iter()
        .filter(|(k, _)| !ComposeStamp::is_stamp_key(k))
        .collect()
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
