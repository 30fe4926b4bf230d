//! archgate's native engine: artifact readers, the OCI layout reader and
//! writer, and the code that carries a target plan out.
//!
//! Registries (`docker://`) come next; today targets are `oci:` layouts.

pub mod artifact;
pub mod current;
pub mod layout;
pub mod oci;
pub mod publish;

pub use artifact::{resolve, ResolvedArtifact};
pub use layout::OciLayout;
