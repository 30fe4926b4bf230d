//! Reading what a target points to now, as a [`CurrentIndex`].

use anyhow::{anyhow, bail, Result};
use archgate_core::{CurrentIndex, Entry, Platform};

use crate::layout::OciLayout;
use crate::oci::{is_index, is_manifest, Config, Descriptor, Index, Manifest};

/// The current index of `tag` in a layout; `None` when the tag (or the
/// layout) does not exist.
pub fn read_layout_tag(layout: &OciLayout, tag: &str) -> Result<Option<CurrentIndex>> {
    let Some(desc) = layout.find_tag(tag)? else {
        return Ok(None);
    };
    if is_index(&desc.media_type) {
        let index: Index = serde_json::from_slice(&layout.read_blob(&desc)?)
            .map_err(|e| anyhow!("index {} is not a valid index: {e}", desc.digest))?;
        let mut entries = Vec::new();
        for child in &index.manifests {
            child.check()?;
            let (config_platform, created) = match child_config(layout, child) {
                Ok(config) => (config.platform(), config.created),
                Err(e) => {
                    tracing::debug!(digest = %child.digest, "cannot read the config of an index entry: {e:#}");
                    (None, None)
                }
            };
            let platform = child
                .platform
                .as_ref()
                .map(Platform::from)
                .or(config_platform)
                .unwrap_or_else(unknown_platform);
            entries.push(Entry {
                platform,
                digest: child.digest.clone(),
                size: child.size,
                media_type: child.media_type.clone(),
                annotations: child.annotations.clone().unwrap_or_default(),
                created,
            });
        }
        Ok(Some(CurrentIndex {
            digest: desc.digest,
            media_type: desc.media_type,
            entries,
        }))
    } else if is_manifest(&desc.media_type) {
        let config = child_config(layout, &desc)?;
        let entry = Entry {
            platform: config.platform().unwrap_or_else(unknown_platform),
            digest: desc.digest.clone(),
            size: desc.size,
            media_type: desc.media_type.clone(),
            annotations: Default::default(),
            created: config.created,
        };
        Ok(Some(CurrentIndex {
            digest: desc.digest,
            media_type: desc.media_type,
            entries: vec![entry],
        }))
    } else {
        bail!(
            "tag {tag} points to {} ({}), which is neither an index nor an image manifest",
            desc.digest,
            desc.media_type
        )
    }
}

fn child_config(layout: &OciLayout, manifest: &Descriptor) -> Result<Config> {
    let m: Manifest = serde_json::from_slice(&layout.read_blob(manifest)?).map_err(|e| {
        anyhow!(
            "manifest {} is not a valid image manifest: {e}",
            manifest.digest
        )
    })?;
    m.config.check()?;
    serde_json::from_slice(&layout.read_blob(&m.config)?).map_err(|e| {
        anyhow!(
            "config {} is not a valid image config: {e}",
            m.config.digest
        )
    })
}

fn unknown_platform() -> Platform {
    Platform {
        os: "unknown".into(),
        architecture: "unknown".into(),
        variant: None,
    }
}
