//! Stage 4: decide. The gate (`archgate_core::decide`, pure) once per
//! target, over what reading the artifacts gave and what the target holds;
//! then the arch tags to push and the digest the target will hold. An
//! image is decided as soon as its own artifacts are read (and every
//! current state is known), while other images' artifacts are still read.

use archgate_core::Vars;
use archgate_core::{
    decide, Compose, ComposeResults, ComposeStamp, CurrentIndex, Decision, ErrorKind, GateInput,
    GateSettings, TargetPlan,
};
use archgate_native::{render_index, sha256_digest};

use crate::artifacts::ImageInputs;
use crate::spec::RunSpec;
use crate::targets::{image_error, Target};
use crate::RunError;

/// Decides the targets of one image over what reading its artifacts gave.
/// A target whose current state could not be read, or whose image met
/// archgate's own fault while reading, is an error and is not decided.
pub(crate) fn decide_image(
    spec: &RunSpec,
    compose: &Compose,
    read: &ImageInputs,
    targets: &mut [Target],
    currents: Vec<Result<Option<CurrentIndex>, anyhow::Error>>,
    now: i64,
) -> Result<(), RunError> {
    let stamp = ComposeStamp::of(compose);
    for (target, current) in targets.iter_mut().zip(currents) {
        match current {
            Ok(c) => target.current = c,
            Err(e) => {
                let msg = format!(
                    "cannot read the current index of {}: {e:#}",
                    target.reference
                );
                // A warning here: whoever runs the run says whether the
                // target's error needs an operator (the CLI's exit code,
                // the service's set-aside).
                tracing::warn!("{msg}");
                target.fail(
                    msg,
                    archgate_native::error_kind(&e).unwrap_or(ErrorKind::Transient),
                );
                continue;
            }
        }
        if !read.errors.is_empty() {
            // Not the artifacts' fault (archgate's own, or a server's
            // trouble now): nothing of this target is decided or pushed.
            for (kind, e) in &read.errors {
                tracing::warn!(target = %target.reference, "{e}");
                target.fail(e.clone(), *kind);
            }
            continue;
        }
        if let Some(plan) = gate(spec, (compose, &stamp), read, target, now) {
            settle(spec, compose, target, plan)?;
        }
    }
    Ok(())
}

/// The gate for one target, with the notes of its built arches added.
fn gate(
    spec: &RunSpec,
    (compose, stamp): (&Compose, &ComposeStamp),
    read: &ImageInputs,
    target: &mut Target,
    now: i64,
) -> Option<TargetPlan> {
    let image = &spec.images[target.image];
    let settings = GateSettings {
        policy: target.policy,
        required: spec.gate.required.clone(),
        retired: spec.gate.retired.clone(),
        expected: image.arches.clone().unwrap_or_default(),
        max_carry_age: spec.gate.max_carry_age,
        allow_older: spec.allow_older,
    };
    let input = GateInput {
        status: &compose.status,
        results: &read.inputs,
        current: target.current.as_ref(),
        settings: &settings,
        annotations: &target.annotations,
        compose: Some(stamp),
        now,
    };
    let mut plan = match decide(&input) {
        Ok(plan) => plan,
        Err(e) => {
            tracing::warn!(target = %target.reference, "{e}");
            target.fail(e.to_string(), ErrorKind::InvalidInput);
            return None;
        }
    };
    if plan.decision == Decision::Published {
        attach(&mut plan.index, &read.resolved);
    }
    // Built arches that are pushed but could not be checked against
    // the compose: the report says so.
    plan.reasons.extend(
        read.notes
            .iter()
            .filter(|(arch, _)| plan.arch_tags.contains(arch))
            .map(|(_, note)| note.clone()),
    );
    Some(plan)
}

/// Records a target's plan: its arch tags (rendered), its decision, and the
/// index digest it will hold.
fn settle(
    spec: &RunSpec,
    compose: &Compose,
    target: &mut Target,
    plan: TargetPlan,
) -> Result<(), RunError> {
    for &arch in &plan.arch_tags {
        let tag = match target.arch_tag_names.get(&arch) {
            Some(tag) => tag.clone(),
            None => arch_tag(spec, compose, target, arch)?,
        };
        target.arch_tags.push((arch, tag));
    }
    target.decision = plan.decision;
    target.digest = match plan.decision {
        Decision::Published => Some(sha256_digest(&render_index(&plan.index, &plan.annotations))),
        Decision::Unchanged => target.current.as_ref().map(|c| c.digest.clone()),
        Decision::Refused | Decision::Error => None,
    };
    tracing::info!(target = %target.reference, decision = plan.decision.as_str(), "planned");
    target.plan = Some(plan);
    Ok(())
}

/// Renders every named target's arch tag for each arch its image's results
/// have, before anything is read or written: a template that cannot be
/// rendered stops the run here, never between two images' publishes.
pub(crate) fn name_arch_tags(
    spec: &RunSpec,
    results: &ComposeResults,
    targets: &mut [Target],
) -> Result<(), RunError> {
    for target in targets.iter_mut().filter(|t| t.named) {
        let image = &spec.images[target.image];
        let list = results.images.get(&image.name).into_iter().flatten();
        for r in list {
            let tag = arch_tag(spec, &results.compose, target, r.arch)?;
            target.arch_tag_names.insert(r.arch, tag);
        }
    }
    Ok(())
}

/// A target's arch tag for `arch`.
fn arch_tag(
    spec: &RunSpec,
    compose: &Compose,
    target: &Target,
    arch: archgate_core::Arch,
) -> Result<String, RunError> {
    let image = &spec.images[target.image];
    let vars = Vars {
        compose,
        releases: &spec.releases,
        tag: Some(&target.tag),
        arch: Some(arch),
    };
    image
        .arch_tag
        .render(&vars)
        .map_err(|e| image_error(image, e))
}

/// The attestation manifests that came with a built image (the `registry`
/// source) follow it into the index, right after it.
fn attach(
    index: &mut Vec<archgate_core::Entry>,
    resolved: &std::collections::BTreeMap<archgate_core::Arch, archgate_native::ResolvedArtifact>,
) {
    for art in resolved.values() {
        let archgate_native::BlobSource::Registry { attestations, .. } = &art.source else {
            continue;
        };
        let Some(at) = index.iter().position(|e| e.digest == art.entry.digest) else {
            continue;
        };
        let mut after = at + 1;
        for a in attestations {
            if !index.iter().any(|e| e.digest == a.entry.digest) {
                index.insert(after, a.entry.clone());
                after += 1;
            }
        }
    }
}
