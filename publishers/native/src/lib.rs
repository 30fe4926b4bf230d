//! archgate's native engine: artifact readers, the OCI layout reader and
//! writer, and the code that carries a target plan out.
//!
//! Targets are OCI layouts (`oci:`) and registry repositories (`docker://`),
//! both behind [`Store`].

pub mod archive;
pub mod artifact;
pub mod auth;
pub mod cache;
pub mod layout;
pub mod oci;
pub mod progress;
pub mod registry;
pub mod resolved;
pub mod signatures;
pub mod store;
pub mod tls;
pub mod transport;

pub use artifact::{resolve, resolve_cached, resolve_in, ReadEnv, ReadFailure, ResolvedArtifact};
pub use layout::OciLayout;
pub use store::{
    publish, read_current, resolve_and_push, AnyStore, Depth, Published, Store, Target,
};

/// An error of the given kind, as an `anyhow` error.
pub fn kinded(kind: archgate_core::ErrorKind, message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(archgate_core::KindedError {
        kind,
        message: message.into(),
    })
}

/// The kind an error says it is, anywhere in its chain.
pub fn error_kind(e: &anyhow::Error) -> Option<archgate_core::ErrorKind> {
    e.chain()
        .find_map(|c| c.downcast_ref::<archgate_core::KindedError>())
        .map(|k| k.kind)
}
