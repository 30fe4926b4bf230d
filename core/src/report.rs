//! The report (docs/report.md): the plans plus what happened, as JSON or text.

use std::fmt::Write as _;

use serde::Serialize;

use crate::arch::{Platform, Slot};
use crate::gate::{Action, ArchPlan, ArchStatus, Decision, Policy};
use crate::model::ComposeStatus;

/// The report of a run (docs/report.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The compose.
    pub compose: ComposeSummary,
    /// Nothing was written (`plan`, `publish --dry-run`).
    pub dry_run: bool,
    /// One per target, in configuration order.
    pub targets: Vec<TargetReport>,
}

/// The compose, as the report names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ComposeSummary {
    /// The compose id.
    pub id: String,
    /// Its status.
    pub status: ComposeStatus,
    /// The release number (`{version}`), when known; not in the JSON
    /// report (the service puts it in its result messages).
    #[serde(skip)]
    pub version: Option<String>,
}

/// One target of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetReport {
    /// The `[[image]] name`.
    pub image: String,
    /// `HOST/PATH:TAG` or `oci:DIR:TAG`.
    pub reference: String,
    /// The policy applied.
    pub policy: Policy,
    /// What became of it.
    pub decision: Decision,
    /// Refused because the target holds a newer compose (docs/gate.md).
    pub stale: bool,
    /// What the target held when it was read.
    pub previous_digest: Option<String>,
    /// What it holds afterwards (or would, in a plan); none when refused or in error.
    pub digest: Option<String>,
    /// One line per arch at stake.
    pub arches: Vec<ArchReport>,
    /// The arch tags pushed (or that would be).
    pub arch_tags: Vec<String>,
    /// The reason sentences.
    pub reasons: Vec<String>,
    /// The digests whose signature this publish put in place (arch
    /// manifests and the index written to a registry target, with `[sign]`).
    pub signed: Vec<String>,
    /// For a target in error: what kind of error (not in the JSON report;
    /// the service decides by it).
    #[serde(skip)]
    pub error_kind: Option<crate::model::ErrorKind>,
    /// The compose the target's index named when it was read (its
    /// `dev.archgate.compose`); not in the JSON report. An `unchanged`
    /// target whose index names this compose was written by it, in an
    /// earlier try: the service announces it again after a failure.
    #[serde(skip)]
    pub current_compose: Option<String>,
}

/// One arch of a target in the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArchReport {
    /// The compose arch, or a platform of the current index that is none.
    pub arch: Slot,
    /// Its platform.
    pub platform: Platform,
    /// What this compose gave for it.
    pub result: ArchStatus,
    /// What happened to it.
    pub action: Action,
    /// Its manifest digest in the new index, or for `blocked` and `lost` in the current one.
    pub digest: Option<String>,
}

impl From<&ArchPlan> for ArchReport {
    fn from(p: &ArchPlan) -> Self {
        ArchReport {
            arch: p.arch.clone(),
            platform: p.platform.clone(),
            result: p.result,
            action: p.action,
            digest: p.digest.clone(),
        }
    }
}

impl Report {
    /// the CLI (README): 0 all published or unchanged, 3 a refusal and no
    /// error, 1 an error.
    pub fn exit_code(&self) -> i32 {
        let any = |d: Decision| self.targets.iter().any(|t| t.decision == d);
        if any(Decision::Error) {
            1
        } else if any(Decision::Refused) {
            3
        } else {
            0
        }
    }

    /// What a person reads at a glance: per target the decision, then one
    /// line per arch, then the reasons.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let dry = if self.dry_run {
            " (dry run: nothing written)"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "compose {} ({}){dry}",
            self.compose.id, self.compose.status
        );
        for t in &self.targets {
            let digest = t.digest.as_deref().map(short).unwrap_or("-");
            let _ = writeln!(
                out,
                "\n{:<9} {}  [{}, policy {}]  {digest}",
                t.decision.as_str(),
                t.reference,
                t.image,
                t.policy
            );
            for a in &t.arches {
                let _ = writeln!(
                    out,
                    "  {:<8} {:<14} {:<7} {:<9} {}",
                    a.arch.as_str(),
                    a.platform.to_string(),
                    format!("{:?}", a.result).to_lowercase(),
                    a.action.as_str(),
                    a.digest.as_deref().map(short).unwrap_or("-")
                );
            }
            for tag in &t.arch_tags {
                let _ = writeln!(out, "  arch tag {tag}");
            }
            for r in &t.reasons {
                let _ = writeln!(out, "  because {r}");
            }
        }
        out
    }
}

impl Report {
    /// A CI job summary (GitHub's `$GITHUB_STEP_SUMMARY`, a merge request
    /// note): one table row per target (decision, arches, digest), then
    /// each target's reasons.
    pub fn to_markdown(&self) -> String {
        let cell = |s: &str| s.replace('|', "\\|").replace('\n', " ");
        let mut out = String::new();
        let dry = if self.dry_run {
            " (dry run: nothing written)"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "### archgate: {} ({}){dry}\n",
            cell(&self.compose.id),
            self.compose.status
        );
        let _ = writeln!(out, "| target | decision | arches | digest |");
        let _ = writeln!(out, "|---|---|---|---|");
        for t in &self.targets {
            let arches: Vec<String> = t
                .arches
                .iter()
                .map(|a| format!("{} {}", a.arch.as_str(), a.action.as_str()))
                .collect();
            let digest = t
                .digest
                .as_deref()
                .map(|d| format!("`{}`", short(d)))
                .unwrap_or_else(|| "-".into());
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | {digest} |",
                cell(&t.reference),
                t.decision.as_str(),
                cell(&arches.join(", "))
            );
        }
        for t in self.targets.iter().filter(|t| !t.reasons.is_empty()) {
            let _ = writeln!(
                out,
                "\n**`{}`** {}:\n",
                cell(&t.reference),
                t.decision.as_str()
            );
            for r in &t.reasons {
                let _ = writeln!(out, "- {}", cell(r));
            }
        }
        out
    }
}

/// `sha256:` and the first 12 hex digits.
fn short(digest: &str) -> &str {
    digest.get(..19).unwrap_or(digest)
}
