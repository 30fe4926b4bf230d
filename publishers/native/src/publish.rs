//! Carrying out a target plan on an OCI image layout (SPEC section 4):
//! blobs, then each arch's manifest and arch tag, then the index, with the
//! moved-tag check before the index write and a read-back after it.

use std::collections::BTreeMap;
use std::fs::File;

use anyhow::{anyhow, bail, Result};
use archgate_core::{Arch, Decision, TargetPlan};

use crate::artifact::ResolvedArtifact;
use crate::layout::OciLayout;
use crate::oci::{render_index, Descriptor, OCI_INDEX};

/// One target in a layout.
pub struct LayoutTarget<'a> {
    pub layout: &'a OciLayout,
    pub tag: &'a str,
    /// What the tag pointed to when the plan was made.
    pub planned_from: Option<&'a str>,
}

/// Writes what the plan says. Returns the index digest the tag holds after.
pub fn publish_to_layout(
    target: &LayoutTarget<'_>,
    plan: &TargetPlan,
    artifacts: &BTreeMap<Arch, ResolvedArtifact>,
    arch_tags: &[(Arch, String)],
) -> Result<Option<String>> {
    if plan.hard_refusal {
        return Ok(None);
    }
    let layout = target.layout;
    layout.init()?;

    // Blobs and manifests of the built arches.
    let mut tags = Vec::new();
    for (arch, arch_tag) in arch_tags {
        let art = artifacts
            .get(arch)
            .ok_or_else(|| anyhow!("internal: no artifact read for built arch {arch}"))?;
        for blob in &art.blobs {
            if layout.has_blob(&blob.digest, blob.size) {
                continue;
            }
            let from = art.layout.blob_path(&blob.digest)?;
            let file =
                File::open(&from).map_err(|e| anyhow!("{}: cannot read: {e}", from.display()))?;
            layout.write_blob(blob, file)?;
            tracing::debug!(%arch, digest = %blob.digest, size = blob.size, "blob written");
        }
        let desc = Descriptor::of_entry(&art.entry);
        if !layout.has_blob(&desc.digest, desc.size) {
            layout.write_blob(&desc, art.manifest.as_slice())?;
        }
        tags.push((arch_tag.clone(), desc));
    }
    // Carried entries must already be here.
    for entry in &plan.index {
        if !layout.has_blob(&entry.digest, entry.size) {
            bail!(
                "index entry {} ({}) is not in {}",
                entry.digest,
                entry.platform,
                layout.root().display()
            );
        }
    }
    layout.set_tags(&tags, None)?;
    for (tag, desc) in &tags {
        tracing::info!(tag = %tag, digest = %desc.digest, "arch tag set");
    }

    match plan.decision {
        Decision::Published => {
            let bytes = render_index(&plan.index);
            let index = layout.write_blob_bytes(OCI_INDEX, &bytes)?;
            layout.set_tags(
                &[(target.tag.to_string(), index.clone())],
                Some((target.tag, target.planned_from)),
            )?;
            // Read back.
            let now = layout.find_tag(target.tag)?.ok_or_else(|| {
                anyhow!("read-back: tag {} is missing after the write", target.tag)
            })?;
            if now.digest != index.digest {
                bail!(
                    "read-back: tag {} points to {}, expected {}",
                    target.tag,
                    now.digest,
                    index.digest
                );
            }
            layout.read_blob(&now)?;
            tracing::info!(tag = %target.tag, digest = %index.digest, "index written");
            Ok(Some(index.digest))
        }
        Decision::Unchanged => Ok(target.planned_from.map(str::to_string)),
        Decision::Refused | Decision::Error => Ok(None),
    }
}
