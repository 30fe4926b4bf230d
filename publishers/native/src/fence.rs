//! A run's fence: once tripped, no request of that run reaches a registry
//! any more. The service trips it when it loses the message a run is for
//! (its connection to the broker broke): the broker hands the message to
//! another consumer, and the run that outlived its delivery must write
//! nothing more. A request in flight when the fence trips is dropped (its
//! connection closed); no new one is sent.

use tokio_util::sync::CancellationToken;

/// A run's fence (cheap to clone: every clone is the same fence).
#[derive(Debug, Clone, Default)]
pub struct Fence(CancellationToken);

impl Fence {
    /// A fence not tripped.
    pub fn new() -> Fence {
        Fence::default()
    }

    /// A fence that trips with this one (and may trip alone).
    pub fn child(&self) -> Fence {
        Fence(self.0.child_token())
    }

    /// Trips it: from now on, nothing more is sent.
    pub fn trip(&self) {
        self.0.cancel();
    }

    /// Whether it was tripped.
    pub fn is_tripped(&self) -> bool {
        self.0.is_cancelled()
    }

    /// Resolves once it is tripped.
    pub async fn tripped(&self) {
        self.0.cancelled().await
    }
}

/// The error a fenced request ends in.
pub(crate) fn stopped(host: &str) -> anyhow::Error {
    crate::kinded(
        archgate_core::ErrorKind::Cancelled,
        format!("{host}: not sent: the run was stopped (its message went back to the broker)"),
    )
}
