//! Signatures on a registry repository, in cosign's form (docs/configuration.md,
//! `[sign]`): under the tag `sha256-HEX.sig` of the signed digest, an image
//! manifest whose layers are simple-signing payloads, each with its base64
//! signature in a layer annotation.
//!
//! [`prepare`] and [`finish`] (called through the `Store` trait, as
//! `sign_all` does) put archgate's signature of a digest in place before
//! any tag points at it: another signer's signatures are kept (ours is
//! added beside them, in a new manifest under the same tag), and ours is
//! never written twice. [`read`] lists what a digest carries and [`verify`]
//! says whether a key signed it (for `status` and `inspect`). Nothing here
//! removes a signature or any other manifest.

use anyhow::{anyhow, Context, Result};
use archgate_sign::{
    claim, config_for, payload, signature_tag, SigningKey, VerifyingKey, SIGNATURE_ANNOTATION,
    SIMPLE_SIGNING,
};
use serde_json::{json, Value};

use crate::oci::{Descriptor, OCI_CONFIG, OCI_MANIFEST};
use crate::registry::RegistryRepo;
use crate::transport::Store;

/// The docker reference a signature names for a repository: `HOST/PATH`.
pub fn identity(repo: &RegistryRepo) -> String {
    repo.name()
}

/// A signature ready to be put in place: everything it needs is in the
/// registry but the manifest under its tag (which makes it visible).
#[derive(Debug, Clone)]
pub struct Prepared {
    digest: String,
    /// The manifest to put under the signature tag; none when ours is
    /// there already.
    manifest: Option<(Descriptor, Vec<u8>)>,
}

/// Everything a signature of `digest` needs but its manifest, in one round
/// of requests at once: what the signature tag holds now (another
/// signer's signatures are kept), our payload, and the config of a manifest
/// of our layer alone (one more upload when others' layers are there). It
/// can run while other work goes on: nothing is visible until [`finish`].
///
/// With `ahead`, its uploads take the upload sessions opened ahead in the
/// repository ([`crate::Store::sign_soon`]): publishing's signature of an
/// index, whose digest was known last.
pub async fn prepare(
    repo: &RegistryRepo,
    key: &SigningKey,
    digest: &str,
    ahead: bool,
) -> Result<Prepared> {
    let registry = &repo.registry;
    let done = |manifest| Prepared {
        digest: digest.to_string(),
        manifest,
    };
    if registry.is_signed(&repo.path, digest) {
        return Ok(done(None));
    }
    if let Some(ahead) = registry.take_prepared(&repo.path, digest) {
        return Ok(ahead);
    }
    let body = payload(&identity(repo), digest);
    let layer = Descriptor::new(SIMPLE_SIGNING, &body);
    let alone = config_for(std::slice::from_ref(&layer.digest));
    let alone_desc = Descriptor::new(OCI_CONFIG, &alone);
    let tag = signature_tag(digest);
    let (current, pushed, config) = tokio::join!(
        repo.read_tag(&tag),
        registry.upload_whole(&repo.path, &layer, &body, ahead),
        registry.upload_whole(&repo.path, &alone_desc, &alone, ahead),
    );
    let current = current.with_context(|| format!("reading the signatures of {digest}"))?;
    pushed.with_context(|| format!("the signature payload of {digest}"))?;
    let mut layers = match &current {
        Some((_, bytes)) => layers_of(bytes),
        None => Vec::new(),
    };
    if layers
        .iter()
        .any(|l| is_ours(l, &layer.digest, &body, &key.verifying_key()))
    {
        registry.mark_signed(&repo.path, digest);
        return Ok(done(None));
    }
    layers.push(json!({
        "mediaType": SIMPLE_SIGNING,
        "digest": layer.digest,
        "size": layer.size,
        "annotations": {SIGNATURE_ANNOTATION: key.sign(&body)},
    }));
    let config_desc = match layers.len() {
        1 => {
            config.with_context(|| format!("the signature config of {digest}"))?;
            alone_desc
        }
        _ => {
            let digests: Vec<String> = layers
                .iter()
                .filter_map(|l| l["digest"].as_str().map(str::to_string))
                .collect();
            let bytes = config_for(&digests);
            let desc = Descriptor::new(OCI_CONFIG, &bytes);
            registry
                .upload_whole(&repo.path, &desc, &bytes, false)
                .await?;
            desc
        }
    };
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_desc.digest, "size": config_desc.size},
        "layers": layers,
    });
    let bytes = serde_json::to_vec(&manifest)?;
    Ok(done(Some((Descriptor::new(OCI_MANIFEST, &bytes), bytes))))
}

impl Prepared {
    /// The digest it signs.
    pub fn digest(&self) -> &str {
        &self.digest
    }
}

/// Puts a prepared signature's manifest under its tag (one request): from
/// then on the digest is signed. Two callers that prepared the same digest
/// at once write the same manifest.
pub async fn finish(repo: &RegistryRepo, prepared: Prepared) -> Result<()> {
    let digest = &prepared.digest;
    if let Some((desc, bytes)) = &prepared.manifest {
        repo.push_manifest(desc, bytes, Some(&signature_tag(digest)))
            .await
            .with_context(|| format!("the signature manifest of {digest}"))?;
        tracing::info!(store = %repo.name(), %digest, "signed");
    }
    repo.registry.mark_signed(&repo.path, digest);
    Ok(())
}

/// The layers of a signature manifest (none if it is not one).
fn layers_of(bytes: &[u8]) -> Vec<Value> {
    serde_json::from_slice::<Value>(bytes)
        .ok()
        .and_then(|m| m["layers"].as_array().cloned())
        .unwrap_or_default()
}

/// Whether a layer is our signature of this very payload.
fn is_ours(layer: &Value, payload_digest: &str, payload: &[u8], key: &VerifyingKey) -> bool {
    layer["digest"] == payload_digest
        && layer["annotations"][SIGNATURE_ANNOTATION]
            .as_str()
            .is_some_and(|s| key.verify(payload, s))
}

/// One signature a digest carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The payload layer's digest.
    pub layer: String,
    /// The repository and digest the payload claims (none for a layer that
    /// is no container image signature).
    pub repository: Option<String>,
    /// The manifest digest the payload claims.
    pub digest: Option<String>,
    /// Whether the given key made it (when a key was given), for this
    /// repository and digest.
    pub by_key: Option<bool>,
}

/// The signatures `digest` carries in `repo`, each checked against `key`
/// when one is given. Empty when it has none.
pub async fn read(
    repo: &RegistryRepo,
    digest: &str,
    key: Option<&VerifyingKey>,
) -> Result<Vec<Found>> {
    let Some((_, bytes)) = repo.read_tag(&signature_tag(digest)).await? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for layer in layers_of(&bytes) {
        let desc: Descriptor = serde_json::from_value(layer.clone())
            .map_err(|e| anyhow!("a signature layer of {digest}: {e}"))?;
        desc.check()?;
        if desc.media_type != SIMPLE_SIGNING {
            continue;
        }
        let payload = repo.fetch_blob(&desc).await?;
        let claimed = claim(&payload);
        let matches = claimed
            .as_ref()
            .is_some_and(|c| c.digest == digest && c.repository == identity(repo));
        let by_key = key.map(|k| {
            matches
                && layer["annotations"][SIGNATURE_ANNOTATION]
                    .as_str()
                    .is_some_and(|s| k.verify(&payload, s))
        });
        out.push(Found {
            layer: desc.digest.clone(),
            repository: claimed.as_ref().map(|c| c.repository.clone()),
            digest: claimed.map(|c| c.digest),
            by_key,
        });
    }
    Ok(out)
}

/// What a key says of a digest's signatures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A signature by the key, for this repository and digest.
    Signed,
    /// No signature at all.
    Unsigned,
    /// Signatures, but none by the key for this repository and digest.
    NotByKey,
}

/// Whether `key` signed `digest` in `repo`.
pub async fn verify(repo: &RegistryRepo, digest: &str, key: &VerifyingKey) -> Result<Verdict> {
    let found = read(repo, digest, Some(key)).await?;
    Ok(if found.iter().any(|f| f.by_key == Some(true)) {
        Verdict::Signed
    } else if found.is_empty() {
        Verdict::Unsigned
    } else {
        Verdict::NotByKey
    })
}
