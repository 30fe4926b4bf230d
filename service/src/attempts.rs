//! Each message's tries, counted on disk (`state-dir`), so that a cap
//! holds whatever ends a try: an error, a panic, a run that kills the
//! process, or one the broker takes back (`consumer_timeout`). A classic
//! queue only says that a message was delivered before, never how often;
//! the count is archgate's own, kept before each run starts.
//!
//! One small JSON file per message that is being tried, named by a digest
//! of its key (the message id fedora-messaging gives every message, else a
//! digest of its routing key and body), written whole (a temp file, synced,
//! renamed) and removed when the message ends (acknowledged or set aside).
//! Each consumer counts what it ran: replicas on their own disks count
//! apart, so a message that kills every consumer is run at most
//! `max-attempts` times by each.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// Records older than this are of messages another consumer ended long
/// ago: removed at start.
const FORGET_AFTER: Duration = Duration::from_secs(30 * 86_400);

/// What is known of one message's tries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Record {
    /// The compose it names, for people reading the directory.
    pub compose: String,
    /// When its first try started (Unix seconds).
    pub first: i64,
    /// Runs started.
    pub tries: u32,
    /// Runs that ended (with an error; a run that ends well ends the
    /// message). `tries - ended` runs died with the process or were
    /// taken back by the broker.
    pub ended: u32,
    /// When the last try started (Unix seconds): the next one waits the
    /// backoff of `tries` after it, as the configuration says now.
    pub last_start: i64,
    /// The last error, for the set-aside message.
    pub last_error: Option<String>,
    /// Set aside for this reason, but the copy could not be sent yet.
    pub aside: Option<String>,
}

impl Record {
    /// Runs that started and never ended.
    pub fn died(&self) -> u32 {
        self.tries.saturating_sub(self.ended)
    }
}

pub(crate) use crate::clock::now;

/// The records of one consumer.
#[derive(Debug, Clone)]
pub(crate) struct Attempts {
    dir: PathBuf,
}

impl Attempts {
    /// Opens (makes) `state_dir/attempts`, checks that it can be written,
    /// and forgets records older than a month.
    pub fn open(state_dir: &Path) -> Result<Attempts> {
        let dir = state_dir.join("attempts");
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("{}: cannot create", dir.display()))?;
        let probe = dir.join(format!(".probe-{}", std::process::id()));
        std::fs::write(&probe, b"")
            .with_context(|| format!("{}: cannot write there", dir.display()))?;
        let _ = std::fs::remove_file(&probe);
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                let old = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > FORGET_AFTER);
                if old {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        Ok(Attempts { dir })
    }

    fn path(&self, key: &str) -> PathBuf {
        let digest = archgate_native::sha256_digest(key.as_bytes());
        let hex = digest.trim_start_matches("sha256:");
        self.dir.join(format!("{hex}.json"))
    }

    /// The record of `key`; an empty one when there is none (or it cannot
    /// be read: a try is then counted from scratch, never refused).
    pub async fn load(&self, key: &str) -> Record {
        match tokio::fs::read(self.path(key)).await {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_default(),
            Err(_) => Record::default(),
        }
    }

    /// Writes the record of `key` whole: a temp file, synced, renamed.
    pub async fn save(&self, key: &str, record: &Record) -> Result<()> {
        let path = self.path(key);
        let bytes = serde_json::to_vec(record)?;
        tokio::task::spawn_blocking(move || {
            let tmp = path.with_extension(format!("tmp{}", std::process::id()));
            let write = || -> std::io::Result<()> {
                use std::io::Write;
                let mut f = std::fs::File::create(&tmp)?;
                f.write_all(&bytes)?;
                f.sync_all()?;
                std::fs::rename(&tmp, &path)
            };
            write().with_context(|| format!("{}: cannot write", path.display()))
        })
        .await?
    }

    /// Forgets `key` (its message ended).
    pub async fn remove(&self, key: &str) {
        let _ = tokio::fs::remove_file(self.path(key)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn records_survive_and_go() {
        let dir = tempfile::tempdir().unwrap();
        let a = Attempts::open(dir.path()).unwrap();
        assert_eq!(a.load("m1").await, Record::default());
        let r = Record {
            compose: "C".into(),
            tries: 2,
            ended: 1,
            ..Record::default()
        };
        a.save("m1", &r).await.unwrap();
        // Another consumer process on the same disk reads it.
        let b = Attempts::open(dir.path()).unwrap();
        assert_eq!(b.load("m1").await, r);
        assert_eq!(b.load("m1").await.died(), 1);
        assert_eq!(b.load("m2").await, Record::default());
        b.remove("m1").await;
        assert_eq!(a.load("m1").await, Record::default());
    }
}
