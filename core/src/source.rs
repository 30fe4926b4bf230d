//! The seam every compose source implements (Pungi, Koji, dir, plugins).

use std::collections::BTreeMap;
use std::fmt;

use crate::model::ComposeResults;

/// One configured image, as a source is asked for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageQuery {
    /// The image's name (`[[image]] name`).
    pub name: String,
    /// How the source finds the image; the keys depend on the source.
    pub matcher: BTreeMap<String, String>,
}

/// Metadata that cannot be read at all: nothing is published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceError(pub String);

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SourceError {}

/// A compose source: reads the compose and reports, per image, one result per arch.
pub trait Source {
    /// Reads the compose: its id and status, and the results of every image asked for.
    fn load(&self, images: &[ImageQuery]) -> Result<ComposeResults, SourceError>;
}
