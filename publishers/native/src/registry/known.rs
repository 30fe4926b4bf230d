//! What one view (one run) knows: documents already read (immutable, by
//! digest), what exists in which repository, what carries archgate's
//! signature, where a blob is for a mount, and whether the host answered.
//! Never kept across runs: a registry changes between them.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use super::Registry;

/// (repository, digest) pairs.
type Pairs = Mutex<HashSet<(String, String)>>;

/// What a view has seen; a new view starts with nothing.
#[derive(Default)]
pub(super) struct Seen {
    /// Where a blob is known to be, for cross-repository mounts.
    known: Mutex<HashMap<String, String>>,
    /// Blobs and manifests known to exist.
    present: Pairs,
    /// Digests known to carry archgate's signature.
    signed: Pairs,
    /// Manifests and configs read, by (repository, digest): immutable.
    documents: Mutex<HashMap<(String, String), Vec<u8>>>,
    /// One check-then-push at a time per key (a blob, an archive pass), so
    /// that concurrent targets do not push or mount the same thing twice.
    pub(super) flights: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Set when the registry did not answer at all: why. The rest of the
    /// run fails fast instead of waiting for it again.
    pub(super) down: Mutex<Option<String>>,
}

fn has(pairs: &Pairs, repo: &str, digest: &str) -> bool {
    pairs
        .lock()
        .expect("lock")
        .contains(&(repo.to_string(), digest.to_string()))
}

fn add(pairs: &Pairs, repo: &str, digest: &str) {
    pairs
        .lock()
        .expect("lock")
        .insert((repo.to_string(), digest.to_string()));
}

impl Registry {
    pub(super) fn kept(&self, repo: &str, digest: &str) -> Option<Vec<u8>> {
        self.seen
            .documents
            .lock()
            .expect("lock")
            .get(&(repo.to_string(), digest.to_string()))
            .cloned()
    }

    pub(super) fn keep(&self, repo: &str, digest: &str, body: &[u8]) {
        self.seen
            .documents
            .lock()
            .expect("lock")
            .insert((repo.to_string(), digest.to_string()), body.to_vec());
        self.mark_present(repo, digest);
    }

    pub(super) fn is_present(&self, repo: &str, digest: &str) -> bool {
        has(&self.seen.present, repo, digest)
    }

    pub(super) fn mark_present(&self, repo: &str, digest: &str) {
        add(&self.seen.present, repo, digest)
    }

    pub(super) fn remember(&self, digest: &str, repo: &str) {
        self.mark_present(repo, digest);
        self.seen
            .known
            .lock()
            .expect("lock")
            .entry(digest.to_string())
            .or_insert_with(|| repo.to_string());
    }

    pub(super) fn known_elsewhere(&self, digest: &str, repo: &str) -> Option<String> {
        self.seen
            .known
            .lock()
            .expect("lock")
            .get(digest)
            .filter(|r| r.as_str() != repo)
            .cloned()
    }

    /// Whether this view knows `digest` in `repo` carries archgate's signature.
    pub(crate) fn is_signed(&self, repo: &str, digest: &str) -> bool {
        has(&self.seen.signed, repo, digest)
    }

    /// Notes that `digest` in `repo` carries archgate's signature.
    pub(crate) fn mark_signed(&self, repo: &str, digest: &str) {
        add(&self.seen.signed, repo, digest)
    }
}
