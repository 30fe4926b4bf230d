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

/// Decide one target.
pub fn decide(input: &GateInput<'_>) -> Result<TargetPlan, GateError> {
    let settings = input.settings;

    // What this compose gave, per arch.
    let mut built: BTreeMap<Arch, &Entry> = BTreeMap::new();
    let mut failed: BTreeMap<Arch, &str> = BTreeMap::new();
    for (arch, result) in input.results {
        if built.contains_key(arch) || failed.contains_key(arch) {
            return Err(GateError::DuplicateResult(*arch));
        }
        match result {
            ArchInput::Built(entry) => {
                built.insert(*arch, entry);
            }
            ArchInput::Failed(reason) => {
                failed.insert(*arch, reason.as_str());
            }
        }
    }

    // What the target holds, per arch (C). Entries that are no compose arch
    // are reported and not carried.
    let mut current: BTreeMap<Arch, &Entry> = BTreeMap::new();
    let mut reasons = Vec::new();
    for entry in input
        .current
        .map(|c| c.entries.as_slice())
        .unwrap_or_default()
    {
        match Arch::from_platform(&entry.platform) {
            Some(arch) if !current.contains_key(&arch) => {
                current.insert(arch, entry);
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

    let arches: BTreeSet<Arch> = built
        .keys()
        .chain(failed.keys())
        .chain(current.keys())
        .chain(&settings.expected)
        .chain(&settings.required)
        .copied()
        .collect();

    let result_of = |arch: &Arch| {
        if built.contains_key(arch) {
            ArchStatus::Built
        } else if failed.contains_key(arch) {
            ArchStatus::Failed
        } else {
            ArchStatus::Absent
        }
    };
    // "failed in this compose: why" or "has no result in this compose".
    let what_happened = |arch: &Arch| match failed.get(arch) {
        Some(reason) => format!("failed in this compose: {reason}"),
        None => "has no result in this compose".to_string(),
    };
    let platform_of = |arch: &Arch| {
        built
            .get(arch)
            .or_else(|| current.get(arch))
            .map(|e| e.platform.clone())
            .unwrap_or_else(|| arch.default_platform())
    };
    let row = |arch: Arch, action: Action, digest: Option<String>| ArchPlan {
        arch,
        platform: platform_of(&arch),
        result: result_of(&arch),
        action,
        digest,
    };

    // Hard refusals: nothing at all is pushed for the image.
    let mut hard = Vec::new();
    let unfinished = !input.status.is_finished();
    if unfinished {
        // The one cause: what an unfinished compose holds (or lacks) is not
        // looked at, and sources need not even read it.
        hard.push(format!(
            "the compose is {}, not FINISHED or FINISHED_INCOMPLETE; nothing is published",
            input.status
        ));
    } else if built.is_empty() {
        hard.push(
            "nothing was built for this image in this compose; nothing is published".to_string(),
        );
    }
    let missing_required: Vec<Arch> = settings
        .required
        .iter()
        .filter(|a| !unfinished && !built.contains_key(a))
        .copied()
        .collect();
    for arch in &missing_required {
        hard.push(format!(
            "{arch} is a required arch and {}; nothing is published",
            what_happened(arch)
        ));
    }
    if !hard.is_empty() {
        let arches = arches
            .iter()
            .map(|&arch| {
                if missing_required.contains(&arch) {
                    row(
                        arch,
                        Action::Blocked,
                        current.get(&arch).map(|e| e.digest.clone()),
                    )
                } else {
                    row(arch, Action::None, None)
                }
            })
            .collect();
        return Ok(TargetPlan {
            decision: Decision::Refused,
            hard_refusal: true,
            arches,
            reasons: hard,
            index: Vec::new(),
            arch_tags: Vec::new(),
            annotations: BTreeMap::new(),
        });
    }

    // Per arch, in order. X = C - B - retired is what the policy decides on.
    let mut rows = Vec::new();
    let mut index = Vec::new();
    let mut refused = false;
    for &arch in &arches {
        let now_built = built.get(&arch);
        let was = current.get(&arch);
        let (action, digest) = match (now_built, was) {
            (Some(new), Some(old)) => {
                index.push((*new).clone());
                let action = if new.same_descriptor(old) {
                    Action::Unchanged
                } else {
                    Action::Updated
                };
                (action, Some(new.digest.clone()))
            }
            (Some(new), None) => {
                index.push((*new).clone());
                (Action::Added, Some(new.digest.clone()))
            }
            (None, Some(_)) if settings.retired.contains(&arch) => {
                reasons.push(format!(
                    "{arch} is retired and {}; it is dropped from the index",
                    what_happened(&arch)
                ));
                (Action::Dropped, None)
            }
            (None, Some(old)) => {
                let why = format!(
                    "{arch} is in the current index but {}",
                    what_happened(&arch)
                );
                match settings.policy {
                    Policy::Refuse => {
                        refused = true;
                        reasons.push(format!("{why}; policy refuse leaves the index as it is"));
                        (Action::Blocked, Some(old.digest.clone()))
                    }
                    Policy::Lose => {
                        reasons.push(format!("{why}; policy lose drops it from the index"));
                        (Action::Lost, Some(old.digest.clone()))
                    }
                    Policy::Hybrid => match too_old(old, settings.max_carry_age, input.now) {
                        Some(age_problem) => {
                            refused = true;
                            reasons.push(format!("{why}; {age_problem}, so it is not carried and the index is left as it is"));
                            (Action::Blocked, Some(old.digest.clone()))
                        }
                        None => {
                            index.push((*old).clone());
                            reasons.push(format!(
                                "{why}; policy hybrid carries its current entry {}",
                                old.digest
                            ));
                            (Action::Carried, Some(old.digest.clone()))
                        }
                    },
                }
            }
            (None, None) => {
                let expected = if settings.expected.contains(&arch) {
                    " and is expected for this image"
                } else {
                    ""
                };
                reasons.push(format!(
                    "{arch} {}{expected}; it is not in the current index, so nothing is lost",
                    what_happened(&arch)
                ));
                (Action::None, None)
            }
        };
        rows.push(row(arch, action, digest));
    }

    let arch_tags: Vec<Arch> = built.keys().copied().collect();
    if refused {
        return Ok(TargetPlan {
            decision: Decision::Refused,
            hard_refusal: false,
            arches: rows,
            reasons,
            index: Vec::new(),
            arch_tags,
            annotations: BTreeMap::new(),
        });
    }

    // Same entries and same annotations: nothing to write. Same entries
    // with other annotations (a new compose's) make a new index whose
    // entries are all `unchanged`.
    let unchanged = input
        .current
        .is_some_and(|c| same_entries(&c.entries, &index) && &c.annotations == input.annotations);
    Ok(TargetPlan {
        decision: if unchanged {
            Decision::Unchanged
        } else {
            Decision::Published
        },
        hard_refusal: false,
        arches: rows,
        reasons,
        index,
        arch_tags,
        annotations: input.annotations.clone(),
    })
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
