//! One writer per target (docs/gate.md, "One writer per target"). A run
//! that is to publish holds each of its targets from reading its current
//! index until its read-back: this process's lock on the target, and a
//! [`Leases`] lease that other processes respect (the service takes them
//! on RabbitMQ). Targets are taken in one global order (by reference), so
//! two runs that share targets never wait on each other in a circle.

use std::future::Future;
use std::pin::Pin;

use crate::RunError;

/// Something held until it is dropped.
pub type Held = Box<dyn Send + Sync>;

/// The future [`Leases::acquire`] returns.
pub type Acquiring<'a> = Pin<Box<dyn Future<Output = Result<Held, RunError>> + Send + 'a>>;

/// Leases on targets that other processes respect. The CLI has none; the
/// service holds one per target on its broker connection.
pub trait Leases: Send + Sync {
    /// Waits for, and holds until the returned value is dropped, the lease
    /// on `target` (a reference, `HOST/PATH:TAG` or `oci:DIR:TAG`).
    fn acquire<'a>(&'a self, target: &'a str) -> Acquiring<'a>;
}

/// No leases: only this process's own lock holds a target.
pub struct NoLeases;

impl Leases for NoLeases {
    fn acquire<'a>(&'a self, _target: &'a str) -> Acquiring<'a> {
        Box::pin(async { Ok(Box::new(()) as Held) })
    }
}
