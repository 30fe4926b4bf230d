//! What one view (one run) knows: documents already read (immutable, by
//! digest), what exists in which repository, and where a blob is for a
//! mount. Never kept across runs: a registry changes between them.

use super::Registry;

impl Registry {
    pub(super) fn kept(&self, repo: &str, digest: &str) -> Option<Vec<u8>> {
        self.documents
            .lock()
            .expect("lock")
            .get(&(repo.to_string(), digest.to_string()))
            .cloned()
    }

    pub(super) fn keep(&self, repo: &str, digest: &str, body: &[u8]) {
        self.documents
            .lock()
            .expect("lock")
            .insert((repo.to_string(), digest.to_string()), body.to_vec());
        self.mark_present(repo, digest);
    }

    pub(super) fn is_present(&self, repo: &str, digest: &str) -> bool {
        self.present
            .lock()
            .expect("lock")
            .contains(&(repo.to_string(), digest.to_string()))
    }

    pub(super) fn mark_present(&self, repo: &str, digest: &str) {
        self.present
            .lock()
            .expect("lock")
            .insert((repo.to_string(), digest.to_string()));
    }

    pub(super) fn remember(&self, digest: &str, repo: &str) {
        self.mark_present(repo, digest);
        self.known
            .lock()
            .expect("lock")
            .entry(digest.to_string())
            .or_insert_with(|| repo.to_string());
    }

    pub(super) fn known_elsewhere(&self, digest: &str, repo: &str) -> Option<String> {
        self.known
            .lock()
            .expect("lock")
            .get(digest)
            .filter(|r| r.as_str() != repo)
            .cloned()
    }

    /// Whether this view knows `digest` in `repo` carries archgate's signature.
    pub(crate) fn is_signed(&self, repo: &str, digest: &str) -> bool {
        self.signed
            .lock()
            .expect("lock")
            .contains(&(repo.to_string(), digest.to_string()))
    }

    pub(crate) fn mark_signed(&self, repo: &str, digest: &str) {
        self.signed
            .lock()
            .expect("lock")
            .insert((repo.to_string(), digest.to_string()));
    }
}
