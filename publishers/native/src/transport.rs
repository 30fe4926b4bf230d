//! The transport: what a target is, whatever holds it. One interface, many
//! transports (as in containers/image): [`crate::layout::OciLayout`] and
//! [`crate::registry::RegistryRepo`] implement it; reading the current
//! index and publishing (`crate::store`) are written once over it.

use std::path::Path;

use anyhow::Result;

use crate::oci::Descriptor;

/// Where a streamed blob's bytes go: a registry's upload session, opened
/// while the blob was checked (nothing for a layout).
#[derive(Debug, Default)]
pub struct Intake {
    /// The session's URL, with the digest.
    pub(crate) session: Option<String>,
}

/// A repository: an OCI layout directory or a registry repository.
#[allow(async_fn_in_trait)]
pub trait Store {
    /// `oci:DIR` or `HOST/PATH`, for messages.
    fn name(&self) -> String;
    /// Holds off other archgate processes writing this store until the
    /// guard is dropped (a layout: an advisory lock on a file in it).
    async fn lock(&self) -> Result<Option<Box<dyn std::any::Any + Send>>> {
        Ok(None)
    }
    /// Get ready to be written (a layout creates its directory).
    async fn prepare(&self) -> Result<()> {
        Ok(())
    }
    /// Holds off others checking and pushing the same `key` (a digest, an
    /// archive) in this store until the guard is dropped.
    async fn guard(&self, _key: &str) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        None
    }
    /// [`Store::guard`] without waiting: `None` when somebody holds it,
    /// else the guard (itself `None` for a store without flights).
    fn try_guard(&self, _key: &str) -> Option<Option<tokio::sync::OwnedMutexGuard<()>>> {
        Some(None)
    }
    /// What a tag points to, or `None`.
    async fn resolve_tag(&self, tag: &str) -> Result<Option<Descriptor>>;
    /// What a tag points to and its bytes (a registry does it in one GET).
    async fn read_tag(&self, tag: &str) -> Result<Option<(Descriptor, Vec<u8>)>> {
        match self.resolve_tag(tag).await? {
            Some(desc) => {
                let bytes = self.fetch_manifest(&desc).await?;
                Ok(Some((desc, bytes)))
            }
            None => Ok(None),
        }
    }
    /// A manifest or index by digest, checked against its descriptor.
    async fn fetch_manifest(&self, desc: &Descriptor) -> Result<Vec<u8>>;
    /// A small blob (a config) by digest, checked against its descriptor.
    async fn fetch_blob(&self, desc: &Descriptor) -> Result<Vec<u8>>;
    /// Whether a blob is in the store.
    async fn has_blob(&self, desc: &Descriptor) -> Result<bool>;
    /// Whether a manifest is in the store.
    async fn has_manifest(&self, desc: &Descriptor) -> Result<bool>;
    /// Stores a blob read from a file, checked against its descriptor.
    async fn push_blob(&self, desc: &Descriptor, from: &Path) -> Result<()>;
    /// Gets a blob without sending it (a registry mounts it from another
    /// repository); `false` when that cannot be done.
    async fn mount_blob(&self, _desc: &Descriptor) -> Result<bool> {
        Ok(false)
    }
    /// Stores a small blob held in memory (a config).
    async fn push_blob_bytes(&self, desc: &Descriptor, bytes: &[u8]) -> Result<()>;
    /// Stores a blob that arrives as a stream of chunks (from an archive
    /// pass), checked against its descriptor. Not retried: the stream is gone.
    async fn push_blob_stream<C>(&self, desc: &Descriptor, chunks: C) -> Result<()>
    where
        C: futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Send + Sync + 'static;
    /// Whether this run already knows the store has the blob (nothing asked).
    fn knows_blob(&self, _desc: &Descriptor) -> bool {
        false
    }
    /// Whether the store itself checks a streamed blob's bytes against its
    /// digest before keeping it (a registry on `PUT ?digest=`, a layout
    /// before its rename), so that a pass need not hash what it sends.
    fn checks_digests(&self) -> bool {
        false
    }
    /// Gets ready to take a blob that arrives as a stream: `None` when the
    /// store has it (or got it by a mount), else where its bytes go. A
    /// registry asks whether it has the blob and opens the upload session
    /// at once: one round trip for both.
    async fn intake(&self, desc: &Descriptor) -> Result<Option<Intake>> {
        let there = self.has_blob(desc).await? || self.mount_blob(desc).await?;
        Ok((!there).then(Intake::default))
    }
    /// Just before the bytes of an intake go: `None` when the blob came
    /// in meanwhile (another image of the run sent it, and it was found or
    /// mounted; the intake is given up), else the intake.
    async fn settle(&self, _desc: &Descriptor, intake: Intake) -> Result<Option<Intake>> {
        Ok(Some(intake))
    }
    /// Sends a streamed blob into its intake (see [`Store::intake`]).
    async fn push_stream_into<C>(&self, desc: &Descriptor, _intake: Intake, chunks: C) -> Result<()>
    where
        C: futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Send + Sync + 'static,
    {
        self.push_blob_stream(desc, chunks).await
    }
    /// Stores a manifest or index by digest, and points `tag` at it if given.
    async fn push_manifest(&self, desc: &Descriptor, bytes: &[u8], tag: Option<&str>)
        -> Result<()>;
    /// Gets `key`'s signature of `digest` ready in the store (sigstore's
    /// form) without making it visible; `None` for a store that holds no
    /// signatures (an OCI layout).
    async fn prepare_signature(
        &self,
        _key: &archgate_sign::SigningKey,
        _digest: &str,
    ) -> Result<Option<crate::signatures::Prepared>> {
        Ok(None)
    }
    /// Gets `key`'s signature of `digest` ready ahead of publishing (while
    /// the archives are read), for [`Store::prepare_signature`] to take
    /// then; nothing visible. Nothing for a store that holds no signatures.
    /// The caller holds the digest's signing turn
    /// ([`Store::guard`] of [`signing_turn`]) until this returns.
    async fn prepare_signature_ahead(
        &self,
        _key: &archgate_sign::SigningKey,
        _digest: &str,
    ) -> Result<()> {
        Ok(())
    }
    /// This store will sign an image's index in this run (its arch
    /// manifests are being signed ahead): gets ready what that needs
    /// before the index's digest is known, nothing visible (a registry
    /// opens the upload sessions its signature's uploads will take).
    /// Nothing for a store that holds no signatures.
    fn sign_soon(&self) {}
    /// Puts a prepared signature in place: from then on the digest is signed.
    async fn finish_signature(&self, _prepared: crate::signatures::Prepared) -> Result<()> {
        Ok(())
    }
}

/// The [`Store::guard`] key of a digest's signing turn: one target (or
/// the reading stage, ahead) at a time prepares and puts in place the
/// signature of a digest in a store.
pub fn signing_turn(digest: &str) -> String {
    format!("sign {digest}")
}
