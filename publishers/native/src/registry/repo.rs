//! One repository on a registry, as a [`Store`].

use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, Result};

use super::Registry;
use crate::oci::Descriptor;
use crate::transport::{Intake, Store};

/// One repository on a registry, as a [`Store`].
#[derive(Clone)]
pub struct RegistryRepo {
    /// The registry's view of this run.
    pub registry: Arc<Registry>,
    /// The repository's path on it.
    pub path: String,
}

impl RegistryRepo {
    /// A blob's digest is one flight per registry; any other key one per
    /// repository (see [`Store::guard`]).
    fn flight_key(&self, key: &str) -> String {
        match archgate_core::is_sha256_digest(key) {
            true => format!("blob\0{key}"),
            false => format!("{}\0{key}", self.path),
        }
    }

    /// Whether the blob is here without uploading it: known to be, or
    /// mounted now from another repository of this registry.
    async fn in_without_upload(&self, desc: &Descriptor) -> Result<bool> {
        Ok(self.knows_blob(desc) || self.mounted(desc).await?)
    }

    /// Mounts the blob from another repository of this registry that has it;
    /// `false` when none is known or the registry declines.
    async fn mounted(&self, desc: &Descriptor) -> Result<bool> {
        let Some(other) = self.registry.known_elsewhere(&desc.digest, &self.path) else {
            return Ok(false);
        };
        let mounted = self
            .registry
            .mount(&self.path, &other, &desc.digest)
            .await?;
        if mounted {
            tracing::info!(host = %self.registry.host, repo = %self.path, from = %other, digest = %desc.digest, "blob mounted");
        }
        Ok(mounted)
    }
}

impl Store for RegistryRepo {
    fn name(&self) -> String {
        format!("{}/{}", self.registry.host, self.path)
    }

    /// The registry checks an upload against the digest it is PUT under
    /// (`DIGEST_INVALID` otherwise).
    fn checks_digests(&self) -> bool {
        true
    }

    /// A blob's digest is one flight per registry, whichever repository
    /// asks: a blob goes up once per registry in a run, and every other
    /// repository that waited for it mounts it. Any other key is one
    /// flight per repository.
    async fn guard(&self, key: &str) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        Some(self.registry.single_flight(self.flight_key(key)).await)
    }

    fn try_guard(&self, key: &str) -> Option<Option<tokio::sync::OwnedMutexGuard<()>>> {
        self.registry
            .try_single_flight(self.flight_key(key))
            .map(Some)
    }

    async fn mount_blob(&self, desc: &Descriptor) -> Result<bool> {
        self.mounted(desc).await
    }

    async fn resolve_tag(&self, tag: &str) -> Result<Option<Descriptor>> {
        self.registry.head_manifest(&self.path, tag).await
    }

    async fn read_tag(&self, tag: &str) -> Result<Option<(Descriptor, Vec<u8>)>> {
        self.registry.get_tag(&self.path, tag).await
    }

    async fn fetch_manifest(&self, desc: &Descriptor) -> Result<Vec<u8>> {
        self.registry.get_manifest(&self.path, desc).await
    }

    async fn fetch_blob(&self, desc: &Descriptor) -> Result<Vec<u8>> {
        self.registry.get_blob(&self.path, desc).await
    }

    async fn has_blob(&self, desc: &Descriptor) -> Result<bool> {
        self.registry.blob_exists(&self.path, &desc.digest).await
    }

    async fn has_manifest(&self, desc: &Descriptor) -> Result<bool> {
        self.registry.manifest_exists(&self.path, desc).await
    }

    async fn push_blob(&self, desc: &Descriptor, from: &Path) -> Result<()> {
        if self.mounted(desc).await? {
            return Ok(());
        }
        std::fs::metadata(from).map_err(|e| anyhow!("{}: cannot read: {e}", from.display()))?;
        let body = || match std::fs::File::open(from) {
            Ok(file) => reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(
                tokio::fs::File::from_std(file),
                256 * 1024,
            )),
            // Gone since it was checked: an empty body, which the registry refuses.
            Err(_) => reqwest::Body::from(Vec::new()),
        };
        self.registry.upload(&self.path, desc, &body).await
    }

    async fn push_blob_bytes(&self, desc: &Descriptor, bytes: &[u8]) -> Result<()> {
        if self.mounted(desc).await? {
            return Ok(());
        }
        let bytes = bytes::Bytes::copy_from_slice(bytes);
        self.registry
            .upload(&self.path, desc, &|| reqwest::Body::from(bytes.clone()))
            .await
    }

    async fn push_blob_stream<C>(&self, desc: &Descriptor, chunks: C) -> Result<()>
    where
        C: futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Send + Sync + 'static,
    {
        if self.mounted(desc).await? {
            return Ok(());
        }
        self.registry
            .upload_stream(&self.path, desc, None, chunks)
            .await
    }

    fn knows_blob(&self, desc: &Descriptor) -> bool {
        self.registry.is_present(&self.path, &desc.digest)
    }

    /// Known here: nothing asked. Known in another repository of the
    /// registry: mounted. Otherwise a HEAD, and (while checks here miss
    /// more than they find) the upload session opened at the same time.
    async fn intake(&self, desc: &Descriptor) -> Result<Option<Intake>> {
        if self.in_without_upload(desc).await? {
            return Ok(None);
        }
        if !self.registry.expects_missing(&self.path) {
            let there = self.has_blob(desc).await?;
            return Ok((!there).then(Intake::default));
        }
        let (there, session) = tokio::join!(
            self.has_blob(desc),
            self.registry.open_session(&self.path, desc)
        );
        match there? {
            true => {
                if let Ok(url) = session {
                    self.registry.cancel_session(&self.path, url);
                }
                Ok(None)
            }
            false => Ok(Some(Intake {
                session: Some(session?),
            })),
        }
    }

    async fn settle(&self, desc: &Descriptor, intake: Intake) -> Result<Option<Intake>> {
        if self.in_without_upload(desc).await? {
            if let Some(url) = intake.session {
                self.registry.cancel_session(&self.path, url);
            }
            return Ok(None);
        }
        Ok(Some(intake))
    }

    async fn push_stream_into<C>(&self, desc: &Descriptor, intake: Intake, chunks: C) -> Result<()>
    where
        C: futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Send + Sync + 'static,
    {
        self.registry
            .upload_stream(&self.path, desc, intake.session, chunks)
            .await
    }

    async fn push_manifest(
        &self,
        desc: &Descriptor,
        bytes: &[u8],
        tag: Option<&str>,
    ) -> Result<()> {
        // Under a tag, one PUT: the registry stores it by digest too, and
        // says which digest it stored (checked).
        let reference = tag.unwrap_or(&desc.digest);
        self.registry
            .put_manifest(&self.path, reference, desc, bytes)
            .await
    }

    async fn prepare_signature(
        &self,
        key: &archgate_sign::SigningKey,
        digest: &str,
    ) -> Result<Option<crate::signatures::Prepared>> {
        crate::signatures::prepare(self, key, digest, true)
            .await
            .map(Some)
    }

    /// The caller holds the digest's signing turn (as publishing takes
    /// it), so that a target never prepares the same signature at the same
    /// time, and finds this one ready once it gets its turn.
    async fn prepare_signature_ahead(
        &self,
        key: &archgate_sign::SigningKey,
        digest: &str,
    ) -> Result<()> {
        let prepared = crate::signatures::prepare(self, key, digest, false).await?;
        self.registry.keep_prepared(&self.path, prepared);
        Ok(())
    }

    async fn finish_signature(&self, prepared: crate::signatures::Prepared) -> Result<()> {
        crate::signatures::finish(self, prepared).await
    }

    /// Two upload sessions opened now (once per repository and run): the
    /// payload and the config of the index's signature go up in one round
    /// trip each once its digest is known.
    fn sign_soon(&self) {
        self.registry.open_sessions_ahead(&self.path, 2);
    }
}
