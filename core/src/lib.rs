//! archgate's core: the gate and the records it works on.
//!
//! Pure logic, no I/O: sources turn a compose into [`ArchResult`]s, the
//! publishers read the current index of each target, and [`gate::decide`]
//! says per target what may be published. See ARCHITECTURE.md.

pub mod arch;
pub mod gate;
pub mod model;
pub mod order;
pub mod report;
pub mod repository;
pub mod source;
pub mod template;
pub mod text;
pub mod time;

pub use arch::{Arch, Platform, UnknownArch};
pub use gate::{
    decide, Action, ArchPlan, ArchStatus, Decision, GateError, GateInput, GateSettings, Policy,
    TargetPlan,
};
pub use model::{
    ArchInput, ArchResult, Artifact, Checksum, ChecksumAlgo, Compose, ComposeResults,
    ComposeStatus, CurrentIndex, Entry, ErrorKind, KindedError, Location, Outcome,
};
pub use order::{ComposeOrder, ComposeStamp, ComposeType};
pub use report::{ArchReport, ComposeSummary, Report, TargetReport};
pub use repository::{Reference, Repository};
pub use source::{ImageQuery, Source, SourceError};
pub use template::{Releases, TagRule, Template, When};
