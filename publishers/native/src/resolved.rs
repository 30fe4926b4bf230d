//! What reading an artifact gives: the resolved artifact (its manifest,
//! config and layers, and where its blobs are read from when publishing),
//! why one could not be read, and where a run keeps what it reads. Types
//! only, below the readers (`crate::artifact`) and the cache.

use std::path::PathBuf;

use archgate_core::{Arch, Entry};

use crate::archive::Compression;
use crate::layout::OciLayout;
use crate::oci::Descriptor;

/// Where the blobs of a resolved artifact are read from when publishing.
#[derive(Debug, Clone)]
pub enum BlobSource {
    /// An OCI layout: blobs are files.
    Layout(OciLayout),
    /// Read again in one streaming pass.
    Archive {
        /// Where the archive is read from again.
        at: ArchiveAt,
        /// How it is compressed.
        compression: Compression,
        /// docker-archive layer paths and the gzip layers they become.
        layers: crate::archive::LayerMap,
    },
    /// An image already in a registry (the `registry` source): blobs are
    /// mounted within that registry, streamed from it to any other store.
    Registry {
        /// The run's view of that registry.
        registry: std::sync::Arc<crate::Registry>,
        /// The repository the image is in.
        repository: String,
        /// The attestation manifests that came with the image (they go
        /// where it goes, and the index lists them after it).
        attestations: Vec<Attached>,
    },
}

/// Where an archive is read from when a pass must be done again (a
/// destination that failed while it was first read, a layout target).
#[derive(Debug, Clone)]
pub enum ArchiveAt {
    /// A file on this machine.
    File(PathBuf),
    /// An artifact served over HTTP: fetched again (resuming with Range
    /// requests where the server offers them), or read from the run's
    /// bounded spool where it was kept (a server without Range).
    Http(std::sync::Arc<HttpArtifact>),
}

/// An archive served over HTTP, as a pass reads it again.
#[derive(Debug)]
pub struct HttpArtifact {
    /// Its URL.
    pub url: String,
    /// How it is fetched (allowed locations, read timeout).
    pub env: ReadEnv,
    /// Its copy in the run's spool, when it was kept (a server that offers
    /// no Range requests, within `[source] spool-limit`).
    pub spooled: Option<PathBuf>,
}

impl ArchiveAt {
    /// For messages, and the key of one pass at a time per store.
    pub fn name(&self) -> String {
        match self {
            ArchiveAt::File(p) => p.display().to_string(),
            ArchiveAt::Http(h) => h.url.clone(),
        }
    }

    /// Its bytes from the start, on a blocking thread: the file, the
    /// spooled copy, or a new fetch.
    pub fn open(&self) -> anyhow::Result<Box<dyn std::io::Read + Send>> {
        use anyhow::anyhow;
        let file = |p: &std::path::Path| {
            std::fs::File::open(p).map_err(|e| anyhow!("{}: cannot read: {e}", p.display()))
        };
        match self {
            ArchiveAt::File(p) => Ok(Box::new(file(p)?)),
            ArchiveAt::Http(h) => match &h.spooled {
                Some(p) => Ok(Box::new(file(p)?)),
                None => {
                    tracing::info!(url = %h.url, "fetching the artifact again (not kept on disk)");
                    let body =
                        crate::http::Body::get(&h.url, &h.env).map_err(|e| anyhow!("{e}"))?;
                    Ok(Box::new(body))
                }
            },
        }
    }
}

/// An attestation manifest of an image in a registry, read.
#[derive(Debug, Clone)]
pub struct Attached {
    /// Its index entry (`unknown/unknown`, naming the image).
    pub entry: archgate_core::Entry,
    /// The manifest's bytes.
    pub manifest: Vec<u8>,
    /// Its config and layers.
    pub blobs: Vec<crate::oci::Descriptor>,
}

/// A built artifact, read and checked: ready to publish.
#[derive(Debug, Clone)]
pub struct ResolvedArtifact {
    /// The arch it was built for.
    pub arch: Arch,
    /// Where its blobs are read from.
    pub source: BlobSource,
    /// The index entry it gets: platform from its config, manifest digest.
    pub entry: Entry,
    /// The manifest's bytes (pushed as they are).
    pub manifest: Vec<u8>,
    /// The image config's descriptor, and its bytes (pushed from memory).
    pub config: Descriptor,
    /// The config's bytes.
    pub config_json: Vec<u8>,
    /// The layers, in manifest order.
    pub layers: Vec<Descriptor>,
}

impl ResolvedArtifact {
    /// Every blob the manifest names: the config, then the layers.
    pub fn blobs(&self) -> impl Iterator<Item = &Descriptor> {
        std::iter::once(&self.config).chain(&self.layers)
    }
}

/// Why an artifact could not be used. The kinds lead to different ends,
/// and must never be mixed: only [`ReadFailure::Unusable`] may make an arch
/// `failed` (which `lose` would then drop from an index).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadFailure {
    /// The artifact itself cannot be used: missing, unreadable, bad
    /// checksum, unsafe or broken archive, built for another arch. Its arch
    /// counts as failed (docs/gate.md).
    Unusable(String),
    /// archgate's own fault: a reader that panicked or stopped, I/O on its
    /// own files (the spool). Every target of the image is an error and
    /// nothing of it is pushed.
    Internal(String),
    /// The artifact could not be read now, for a cause another try later
    /// mends: the compose server's or the network's trouble (a timeout, a
    /// stalled or dropped transfer, a 5xx or 429: `transient`), or this
    /// machine's disk full (`external`). Every target of the image is an
    /// error of that kind; nothing of it is pushed, and the arch is not
    /// `failed`.
    Later(archgate_core::ErrorKind, String),
}

impl ReadFailure {
    /// A reader task that did not return (it panicked or was cancelled).
    pub fn stopped(e: impl std::fmt::Display) -> ReadFailure {
        ReadFailure::Internal(format!("internal error: the artifact reader stopped: {e}"))
    }
}

impl std::fmt::Display for ReadFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadFailure::Unusable(m) | ReadFailure::Internal(m) | ReadFailure::Later(_, m) => {
                f.write_str(m)
            }
        }
    }
}

/// Where a run keeps what it reads: the archive cache (kept between runs)
/// and the spool of artifacts fetched over HTTP (the run's own, removed
/// with it). Handed in by the run; nothing here is process-wide.
#[derive(Debug, Clone, Default)]
pub struct ReadEnv {
    /// The archive cache directory, if any.
    pub cache: Option<PathBuf>,
    /// The run's spool for HTTP artifacts from a server that offers no
    /// Range requests, if any.
    pub spool: Option<PathBuf>,
    /// How many bytes the spool may hold, all artifacts together
    /// (`[source] spool-limit`); none: [`DEFAULT_SPOOL_LIMIT`].
    pub spool_limit: Option<u64>,
    /// Bytes the spool holds or has promised (shared by the run's reads).
    pub spool_used: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Where artifacts may be fetched from, at every request and redirect
    /// (the service's `allowed-locations`); none: anywhere.
    pub allowed: Option<archgate_core::AllowedLocations>,
    /// How long a fetch over HTTP may wait for its next bytes before it
    /// gives up (a stalled transfer: transient); none: the default,
    /// [`DEFAULT_READ_TIMEOUT`].
    pub read_timeout: Option<std::time::Duration>,
}

/// How many bytes a run's spool may hold, unless told: 2 GiB.
pub const DEFAULT_SPOOL_LIMIT: u64 = 2 << 30;

impl ReadEnv {
    /// How long a fetch over HTTP waits for its next bytes: `read_timeout`,
    /// else [`DEFAULT_READ_TIMEOUT`].
    pub(crate) fn stall_limit(&self) -> std::time::Duration {
        self.read_timeout.unwrap_or(DEFAULT_READ_TIMEOUT)
    }

    /// Room in the spool for `n` more bytes: taken (true) or not.
    pub(crate) fn spool_room(&self, n: u64) -> bool {
        use std::sync::atomic::Ordering;
        let limit = self.spool_limit.unwrap_or(DEFAULT_SPOOL_LIMIT);
        self.spool_used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                (used.checked_add(n)? <= limit).then_some(used + n)
            })
            .is_ok()
    }
}

/// How long a fetch over HTTP waits for its next bytes, unless told.
pub const DEFAULT_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

#[cfg(test)]
mod tests {
    use super::ReadEnv;

    #[test]
    fn the_spool_takes_what_its_limit_has_room_for() {
        let env = ReadEnv {
            spool_limit: Some(100),
            ..Default::default()
        };
        assert!(env.spool_room(60));
        assert!(!env.spool_room(41), "60 + 41 is over the limit");
        assert!(env.spool_room(40));
        assert!(!env.spool_room(1));
        // Shared by the clones a run hands to its reads.
        let clone = env.clone();
        assert!(!clone.spool_room(1));
        assert!(ReadEnv::default().spool_room(2 << 30));
        assert!(!ReadEnv::default().spool_room((2 << 30) + 1));
    }
}
