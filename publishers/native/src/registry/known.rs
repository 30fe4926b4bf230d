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
    /// Signatures prepared ahead (while the archives were read), by
    /// (repository, digest), until publishing takes them.
    prepared: Mutex<HashMap<(String, String), crate::signatures::Prepared>>,
    /// Manifests and configs read, by (repository, digest): immutable.
    documents: Mutex<HashMap<(String, String), Vec<u8>>>,
    /// Per repository, how many blob checks found the blob and how many
    /// did not: whether opening an upload session along with a check is
    /// likely to be of use.
    checks: Mutex<HashMap<String, (u32, u32)>>,
    /// Per repository, upload sessions opened ahead (each the task opening
    /// it: its URL, or nothing when it could not be opened), for the
    /// signatures publishing will upload there ([`Registry::open_sessions_ahead`]).
    /// A repository is in the map once sessions were opened there.
    pub(super) ahead: Mutex<HashMap<String, Vec<tokio::task::JoinHandle<Option<String>>>>>,
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

    pub(super) fn count_check(&self, repo: &str, found: bool) {
        let mut checks = self.seen.checks.lock().expect("lock");
        let (yes, no) = checks.entry(repo.to_string()).or_default();
        match found {
            true => *yes += 1,
            false => *no += 1,
        }
    }

    /// Whether a blob check in `repo` should open an upload session at the
    /// same time: yes until checks there find more blobs than they miss (a
    /// new repository, a new compose), so that a blob found costs no
    /// session where most are found.
    pub(super) fn expects_missing(&self, repo: &str) -> bool {
        let checks = self.seen.checks.lock().expect("lock");
        let (yes, no) = checks.get(repo).copied().unwrap_or_default();
        no >= yes
    }

    /// Keeps a signature prepared ahead for publishing to take.
    pub(crate) fn keep_prepared(&self, repo: &str, prepared: crate::signatures::Prepared) {
        let key = (repo.to_string(), prepared.digest().to_string());
        self.seen
            .prepared
            .lock()
            .expect("lock")
            .insert(key, prepared);
    }

    /// Takes the signature of `digest` prepared ahead in `repo`, if any.
    pub(crate) fn take_prepared(
        &self,
        repo: &str,
        digest: &str,
    ) -> Option<crate::signatures::Prepared> {
        let key = (repo.to_string(), digest.to_string());
        self.seen.prepared.lock().expect("lock").remove(&key)
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

/// Which kind of manifest PUT holds a repository's [`Phases`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Image manifests: each PUT (re)writes the manifest's link.
    Manifests,
    /// Indexes: each PUT reads the links of the manifests it names.
    Indexes,
}

/// Keeps image-manifest PUTs and index PUTs of one repository apart (each
/// kind runs with others of its kind). docker-registry's filesystem
/// storage rewrites a manifest's link in place on every PUT of it (under
/// any tag), and an index PUT that reads that link meanwhile finds it
/// empty and is refused (`DIGEST_INVALID`, `MANIFEST_BLOB_UNKNOWN`).
#[derive(Default)]
pub(super) struct Phases {
    state: Mutex<HashMap<String, (Phase, usize)>>,
    changed: tokio::sync::Notify,
}

/// A PUT's hold on its repository's phase; released when dropped.
pub(super) struct PhaseHold<'a> {
    phases: &'a Phases,
    repo: String,
}

impl Phases {
    /// Waits until `repo` has no PUT of the other kind, then holds it.
    pub(super) async fn enter(&self, repo: &str, phase: Phase) -> PhaseHold<'_> {
        loop {
            let changed = self.changed.notified();
            {
                let mut state = self.state.lock().expect("lock");
                let entry = state.entry(repo.to_string()).or_insert((phase, 0));
                if entry.1 == 0 || entry.0 == phase {
                    *entry = (phase, entry.1 + 1);
                    return PhaseHold {
                        phases: self,
                        repo: repo.to_string(),
                    };
                }
            }
            changed.await;
        }
    }
}

impl Drop for PhaseHold<'_> {
    fn drop(&mut self) {
        let mut state = self.phases.state.lock().expect("lock");
        if let Some(entry) = state.get_mut(&self.repo) {
            entry.1 -= 1;
            if entry.1 == 0 {
                state.remove(&self.repo);
            }
        }
        drop(state);
        self.phases.changed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;

    #[tokio::test]
    async fn manifest_and_index_puts_of_one_repository_never_overlap() {
        let phases = Phases::default();
        let m1 = phases.enter("r", Phase::Manifests).await;
        // Its own kind shares the repository; another repository is apart.
        let m2 = phases.enter("r", Phase::Manifests).now_or_never().unwrap();
        let other = phases.enter("s", Phase::Indexes).now_or_never().unwrap();
        // An index PUT waits for both manifest PUTs.
        let mut index = Box::pin(phases.enter("r", Phase::Indexes));
        assert!((&mut index).now_or_never().is_none());
        drop(m1);
        assert!((&mut index).now_or_never().is_none());
        drop(m2);
        let i = index
            .now_or_never()
            .expect("free once the manifests are in");
        // And a manifest PUT waits for the index PUT.
        let mut manifest = Box::pin(phases.enter("r", Phase::Manifests));
        assert!((&mut manifest).now_or_never().is_none());
        drop(i);
        assert!(manifest.now_or_never().is_some());
        drop(other);
    }
}
