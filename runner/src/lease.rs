//! One writer per target (docs/gate.md, "One writer per target"). A run
//! that is to publish holds each target it will write from reading its
//! current index until its read-back: this process's lock on the target,
//! and a [`Leases`] lease that other processes respect (the service takes
//! them on RabbitMQ). Targets are taken in one global order (by reference),
//! so two runs that share targets never wait on each other in a circle.
//! A hold is given back lease first, then the local lock: another run of
//! this process never takes a target whose lease is still being released.

use std::future::Future;
use std::pin::Pin;
use std::time::Instant;

use crate::RunError;

/// A lease held until it is released (or dropped: then released in the
/// background, as well as that can be done).
pub trait Lease: Send + Sync {
    /// Gives the lease back, and returns once it is given back.
    fn release(self: Box<Self>) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}

/// A held lease.
pub type Held = Box<dyn Lease>;

/// The future [`Leases::acquire`] returns.
pub type Acquiring<'a> = Pin<Box<dyn Future<Output = Result<Held, RunError>> + Send + 'a>>;

/// Leases on targets that other processes respect. The CLI has none; the
/// service holds one per target on its broker connection.
pub trait Leases: Send + Sync {
    /// Waits for, and holds until it is released, the lease on `target`
    /// (a reference, `HOST/PATH:TAG` or `oci:DIR:TAG`). `since` is when the
    /// run began taking its leases: one bound holds for all of them.
    fn acquire<'a>(&'a self, target: &'a str, since: Instant) -> Acquiring<'a>;
}

/// No leases: only this process's own lock holds a target.
pub struct NoLeases;

struct NoLease;

impl Lease for NoLease {
    fn release(self: Box<Self>) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async {})
    }
}

impl Leases for NoLeases {
    fn acquire<'a>(&'a self, _target: &'a str, _since: Instant) -> Acquiring<'a> {
        Box::pin(async { Ok(Box::new(NoLease) as Held) })
    }
}

/// A target held: this process's lock and the lease.
pub(crate) struct Hold {
    pub(crate) local: tokio::sync::OwnedMutexGuard<()>,
    pub(crate) lease: Held,
}

impl Hold {
    /// The lease given back first, then the local lock.
    pub(crate) async fn release(self) {
        let Hold { local, lease } = self;
        lease.release().await;
        drop(local);
    }
}
