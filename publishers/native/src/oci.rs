//! The OCI (and Docker v2) JSON documents archgate reads and writes.
//!
//! Own small types rather than oci-spec's: what archgate writes is
//! content-addressed, so every map serializes in a fixed (sorted) order and
//! the same plan always gives the same index digest.

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use archgate_core::is_sha256_digest;
use archgate_core::{Entry, Platform};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// The largest manifest, index or config archgate reads into memory.
pub const MAX_DOCUMENT: u64 = 8 << 20;

/// An OCI image index's media type.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

pub fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_LIST
}

pub fn is_manifest(media_type: &str) -> bool {
    media_type == OCI_MANIFEST || media_type == DOCKER_MANIFEST
}

/// An OCI content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// The media type of what it describes.
    pub media_type: String,
    /// `sha256:HEX` of the content.
    pub digest: String,
    /// The content's size in bytes.
    pub size: u64,
    /// Where else the content may be fetched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
    /// The descriptor's annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    /// The platform (index entries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<PlatformJson>,
    /// The artifact type, where there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
}

impl Descriptor {
    /// Refuses digests that are not `sha256:` and 64 hex digits, so that a
    /// digest can safely name a file.
    pub fn check(&self) -> Result<()> {
        if !is_sha256_digest(&self.digest) {
            bail!("descriptor digest `{}` is not a sha256 digest", self.digest);
        }
        Ok(())
    }

    /// The descriptor of some bytes.
    pub fn new(media_type: &str, bytes: &[u8]) -> Descriptor {
        Descriptor {
            media_type: media_type.to_string(),
            digest: sha256_digest(bytes),
            size: bytes.len() as u64,
            urls: None,
            annotations: None,
            platform: None,
            artifact_type: None,
        }
    }

    /// The `org.opencontainers.image.ref.name` annotation (a layout's tag).
    pub fn ref_name(&self) -> Option<&str> {
        self.annotations.as_ref()?.get(REF_NAME).map(String::as_str)
    }

    /// What a read by digest asks for: the digest alone (media type and
    /// size are learnt from what is read).
    pub fn of_digest(digest: &str) -> Descriptor {
        Descriptor {
            media_type: String::new(),
            digest: digest.to_string(),
            size: 0,
            urls: None,
            annotations: None,
            platform: None,
            artifact_type: None,
        }
    }

    /// The index descriptor of an entry.
    pub fn of_entry(entry: &Entry) -> Descriptor {
        Descriptor {
            media_type: entry.media_type.clone(),
            digest: entry.digest.clone(),
            size: entry.size,
            urls: None,
            annotations: (!entry.annotations.is_empty()).then(|| entry.annotations.clone()),
            platform: Some(PlatformJson::from(&entry.platform)),
            artifact_type: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlatformJson {
    pub architecture: String,
    pub os: String,
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
    #[serde(
        rename = "os.features",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_features: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl From<&Platform> for PlatformJson {
    fn from(p: &Platform) -> Self {
        PlatformJson {
            architecture: p.architecture.clone(),
            os: p.os.clone(),
            os_version: None,
            os_features: None,
            variant: p.variant.clone(),
        }
    }
}

impl From<&PlatformJson> for Platform {
    fn from(p: &PlatformJson) -> Self {
        Platform {
            os: p.os.clone(),
            architecture: p.architecture.clone(),
            variant: p.variant.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

impl Index {
    pub fn empty() -> Index {
        Index {
            schema_version: 2,
            media_type: None,
            manifests: Vec::new(),
            annotations: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    #[serde(default)]
    pub media_type: Option<String>,
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
}

/// Whether `bytes` are an image manifest or an index (what a registry
/// takes under `/manifests/`, not as a blob): what [`Manifest`] or
/// [`Index`] reads. A config is neither.
pub fn is_manifest_document(bytes: &[u8]) -> bool {
    serde_json::from_slice::<Manifest>(bytes).is_ok()
        || serde_json::from_slice::<Index>(bytes).is_ok()
}

/// The parts of an image config archgate looks at.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Config {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub variant: Option<String>,
    #[serde(default)]
    pub created: Option<String>,
    #[serde(default)]
    pub rootfs: Option<RootFs>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RootFs {
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

impl Config {
    /// Its platform, or `None` when it names no architecture.
    pub fn platform(&self) -> Option<Platform> {
        (!self.architecture.is_empty()).then(|| Platform {
            os: if self.os.is_empty() {
                "linux".to_string()
            } else {
                self.os.clone()
            },
            architecture: self.architecture.clone(),
            variant: self.variant.clone().filter(|v| !v.is_empty()),
        })
    }
}

/// The new index for a plan's entries and annotations, as the bytes to write.
pub fn render_index(entries: &[Entry], annotations: &BTreeMap<String, String>) -> Vec<u8> {
    let index = Index {
        schema_version: 2,
        media_type: Some(OCI_INDEX.to_string()),
        manifests: entries.iter().map(Descriptor::of_entry).collect(),
        annotations: (!annotations.is_empty()).then(|| annotations.clone()),
    };
    serde_json::to_vec(&index).expect("an index always serializes")
}

/// `sha256:` and the hex SHA-256 of the bytes.
pub fn sha256_digest(bytes: &[u8]) -> String {
    hex_digest(&Sha256::digest(bytes))
}

/// `sha256:` and the hex of a finished SHA-256.
pub fn hex_digest(hash: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(7 + hash.len() * 2);
    s.push_str("sha256:");
    for b in hash {
        s.push(HEX[usize::from(b >> 4)] as char);
        s.push(HEX[usize::from(b & 0xf)] as char);
    }
    s
}
