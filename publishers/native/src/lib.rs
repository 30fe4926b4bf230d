//! archgate's native engine: artifact readers, the OCI layout reader and
//! writer, and the code that carries a target plan out.
//!
//! Targets are OCI layouts (`oci:`) and registry repositories (`docker://`),
//! both behind [`Store`].
#![warn(missing_docs)]

mod archive;
mod artifact;
mod auth;
mod cache;
mod fence;
mod http;
mod layout;
mod oci;
pub mod progress;
mod registry;
mod resolved;
pub mod signatures;
mod store;
mod stream;
mod tls;
mod transport;

pub use archive::{decompress, Compression};
pub use artifact::{
    is_archive, resolve, resolve_cached, resolve_image, resolve_in, ReadEnv, ReadFailure,
    ResolvedArtifact,
};
pub use auth::{from_env as env_credentials, lookup as lookup_credentials, Credentials, Secret};
pub use cache::{default_dir as default_cache_dir, holds as cache_holds};
pub use fence::Fence;
pub use layout::{remove_stale_temp, write_atomic, OciLayout};
pub use oci::{render_index, sha256_digest, Descriptor, OCI_INDEX};
pub use registry::{Registry, RegistryRepo, RegistrySettings, RetryPolicy};
pub use resolved::{
    ArchiveAt, Attached, BlobSource, HttpArtifact, DEFAULT_READ_TIMEOUT, DEFAULT_SPOOL_LIMIT,
};
pub use store::{
    check_not_moved, knows_all_blobs, nothing_to_write, publish, read_back, read_current,
    read_only, resolve_and_push, resolve_and_push_then, sign_all, AnyStore, Depth, Destination,
    Published, Target,
};
pub use stream::{allowed as may_send, Go, Reading};
pub use tls::{cert_dir, load as load_cert_dir, TlsFiles};
pub use transport::{signing_turn, Intake, Store};

/// An error of the given kind, as an `anyhow` error.
pub fn kinded(kind: archgate_core::ErrorKind, message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(archgate_core::KindedError {
        kind,
        message: message.into(),
    })
}

/// Whether an I/O error is a disk (or a quota) full: ENOSPC, EDQUOT.
pub fn io_disk_full(e: &std::io::Error) -> bool {
    // Linux's ENOSPC and EDQUOT.
    matches!(e.raw_os_error(), Some(28) | Some(122))
}

/// Whether an error says, anywhere in its chain, that a disk is full.
pub fn disk_full(e: &anyhow::Error) -> bool {
    e.chain()
        .filter_map(|c| c.downcast_ref::<std::io::Error>())
        .any(io_disk_full)
}

/// The kind an error says it is, anywhere in its chain; a disk (or quota)
/// full is `external`, mended as it empties, whatever else it says.
pub fn error_kind(e: &anyhow::Error) -> Option<archgate_core::ErrorKind> {
    if disk_full(e) {
        return Some(archgate_core::ErrorKind::External);
    }
    e.chain()
        .find_map(|c| c.downcast_ref::<archgate_core::KindedError>())
        .map(|k| k.kind)
}
