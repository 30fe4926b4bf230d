//! Stage 6: report. The report is the plans plus what happened.

use archgate_core::Vars;
use archgate_core::{
    ArchReport, Compose, ComposeSummary, Decision, Report, TargetReport, COMPOSE_ANNOTATION,
};

use crate::spec::RunSpec;
use crate::targets::Target;

pub(crate) fn make_report(
    spec: &RunSpec,
    compose: &Compose,
    targets: Vec<Target>,
    dry_run: bool,
) -> Report {
    Report {
        compose: ComposeSummary {
            id: compose.id.clone(),
            status: compose.status.clone(),
            version: archgate_core::Template::parse("{version}")
                .ok()
                .and_then(|t| {
                    t.render_text(&Vars {
                        compose,
                        releases: &spec.releases,
                        tag: None,
                        arch: None,
                    })
                    .ok()
                }),
        },
        dry_run,
        targets: targets
            .into_iter()
            .map(|t| target_report(spec, t))
            .collect(),
    }
}

fn target_report(spec: &RunSpec, t: Target) -> TargetReport {
    let failed = !t.errors.is_empty();
    let (arches, mut reasons) = match &t.plan {
        Some(plan) => (
            plan.arches.iter().map(ArchReport::from).collect(),
            plan.reasons.clone(),
        ),
        None => (Vec::new(), Vec::new()),
    };
    reasons.extend(t.errors);
    let refused_hard = t.plan.as_ref().is_some_and(|p| p.hard_refusal);
    let repository = &spec.images[t.image].repositories[t.repo].repository;
    let current_compose = t
        .current
        .as_ref()
        .and_then(|c| c.annotations.get(COMPOSE_ANNOTATION).cloned());
    TargetReport {
        image: spec.images[t.image].name.clone(),
        reference: t.reference,
        policy: t.policy,
        decision: if failed { Decision::Error } else { t.decision },
        stale: !failed && t.plan.as_ref().is_some_and(|p| p.stale),
        previous_digest: t.current.map(|c| c.digest),
        digest: if failed { None } else { t.digest },
        arches,
        arch_tags: if failed || refused_hard {
            Vec::new()
        } else {
            t.arch_tags
                .iter()
                .map(|(_, tag)| repository.tagged(tag))
                .collect()
        },
        reasons,
        signed: t.signed,
        error_kind: t.error_kind,
        current_compose,
    }
}
