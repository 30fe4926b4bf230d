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
pub mod store;
pub mod tls;

pub use artifact::{resolve, resolve_cached, ReadFailure, ResolvedArtifact};
pub use layout::OciLayout;
pub use store::{publish, read_current, resolve_and_push, AnyStore, Store, Target};
