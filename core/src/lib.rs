//! archgate's core: the gate and the records it works on.
//!
//! Pure logic, no I/O: sources turn a compose into [`ArchResult`]s, the
//! publishers read the current index of each target, and [`gate::decide`]
//! says per target what may be published. See ARCHITECTURE.md.
//!
//! What it offers is re-exported here: the gate ([`decide`] and its
//! input and plan), the records sources and publishers exchange, the
//! compose order, the report, references, templates, and two helpers
//! ([`untrusted`] for text from outside, [`parse_rfc3339`] and [`Age`]).
#![warn(missing_docs)]

mod arch;
mod gate;
mod locations;
mod model;
mod order;
mod report;
mod repository;
mod source;
mod template;
mod text;
mod time;

pub use arch::{Arch, Platform, Slot, UnknownArch};
pub use gate::{
    decide, newer_compose_held, Action, ArchPlan, ArchStatus, Decision, GateError, GateInput,
    GateSettings, Policy, TargetPlan,
};
pub use locations::{AllowedLocations, Checked};
pub use model::{
    ArchInput, ArchResult, Artifact, Checksum, ChecksumAlgo, Compose, ComposeResults,
    ComposeStatus, CurrentIndex, Entry, ErrorKind, ImageRef, KindedError, Location, Outcome,
};
pub use order::{
    ComposeOrder, ComposeStamp, ComposeType, COMPOSE_ANNOTATION, CREATED_ANNOTATION,
    ORDER_ANNOTATION,
};
pub use report::{ArchReport, ComposeSummary, Report, TargetReport};
pub use repository::{is_sha256_digest, Reference, Repository};
pub use source::{ImageQuery, Source, SourceError};
pub use template::{Releases, TagRule, Template, TemplateError, Vars, When};
pub use text::{untrusted, MAX_UNTRUSTED};
pub use time::{parse_rfc3339, Age, BadAge};
