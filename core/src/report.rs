//! The report (docs/report.md): the plans plus what happened, as JSON or text.

use std::fmt::Write as _;

use serde::Serialize;

use crate::arch::{Platform, Slot};
use crate::gate::{Action, ArchPlan, ArchStatus, Decision, Policy};
use crate::model::ComposeStatus;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub compose: ComposeSummary,
    pub dry_run: bool,
    pub targets: Vec<TargetReport>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ComposeSummary {
    pub id: String,
    pub status: ComposeStatus,
    /// The release number (`{version}`), when known; not in the JSON
    /// report (the service puts it in its result messages).
    #[serde(skip)]
    pub version: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetReport {
    pub image: String,
    pub reference: String,
    pub policy: Policy,
    pub decision: Decision,
    /// Refused because the target holds a newer compose (docs/gate.md).
    pub stale: bool,
    pub previous_digest: Option<String>,
    pub digest: Option<String>,
    pub arches: Vec<ArchReport>,
    pub arch_tags: Vec<String>,
    pub reasons: Vec<String>,
    /// The digests whose signature this publish put in place (arch
    /// manifests and the index written to a registry target, with `[sign]`).
    pub signed: Vec<String>,
    /// For a target in error: what kind of error (not in the JSON report;
    /// the service decides by it).
    #[serde(skip)]
    pub error_kind: Option<crate::model::ErrorKind>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArchReport {
    /// The compose arch, or a platform of the current index that is none.
    pub arch: Slot,
    pub platform: Platform,
    pub result: ArchStatus,
    pub action: Action,
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

/// `sha256:` and the first 12 hex digits.
fn short(digest: &str) -> &str {
    digest.get(..19).unwrap_or(digest)
}
