//! How many requests go to one registry at once: a bound that adapts to
//! the registry's answers instead of a fixed number. It starts at
//! [`START`] and grows by one with each answer (doubling per round trip)
//! until the registry first says it is busy (429 or 503); from then on it
//! grows by one per full round of answers, and each busy answer halves it
//! (never below [`LEAST`], never above [`MOST`]). Over HTTP/2 the requests
//! share connections; over HTTP/1.1 each one in flight is a connection.

use std::sync::Mutex;

use tokio::sync::{Semaphore, SemaphorePermit};

/// The bound a registry starts with.
pub const START: usize = 16;
/// The bound never goes below this.
pub const LEAST: usize = 4;
/// The bound never goes above this.
pub const MOST: usize = 64;

/// What an answer said about the registry's load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Load {
    /// An answer that was not a busy signal.
    Fine,
    /// 429 or 503: too many requests.
    Busy,
}

struct State {
    /// The bound now.
    size: usize,
    /// Permits to drop as they come back, after the bound was lowered.
    debt: usize,
    /// Answers since the bound last grew.
    streak: usize,
    /// Whether the registry has said it is busy (growth is then slow).
    throttled: bool,
}

/// The bound on requests in flight to one registry.
pub(super) struct Bound {
    permits: Semaphore,
    state: Mutex<State>,
}

impl Default for Bound {
    fn default() -> Self {
        Bound {
            permits: Semaphore::new(START),
            state: Mutex::new(State {
                size: START,
                debt: 0,
                streak: 0,
                throttled: false,
            }),
        }
    }
}

impl Bound {
    /// Waits for a request's turn.
    pub(super) async fn acquire(&self) -> SemaphorePermit<'_> {
        self.permits.acquire().await.expect("never closed")
    }

    /// A request ended with `load`: its permit goes back, and the bound
    /// adapts.
    pub(super) fn release(&self, permit: SemaphorePermit<'_>, load: Load) {
        let mut s = self.state.lock().expect("lock");
        match load {
            Load::Busy => {
                s.throttled = true;
                s.streak = 0;
                let lower = (s.size / 2).max(LEAST);
                // Free permits go at once; those in use as they come back.
                let cut = s.size - lower;
                s.debt += cut - self.permits.forget_permits(cut);
                s.size = lower;
            }
            Load::Fine => {
                s.streak += 1;
                let due = if s.throttled { s.size } else { 1 };
                if s.streak >= due && s.size < MOST {
                    s.streak = 0;
                    if s.debt > 0 {
                        s.debt -= 1;
                    } else {
                        self.permits.add_permits(1);
                    }
                    s.size += 1;
                }
            }
        }
        if s.debt > 0 {
            s.debt -= 1;
            permit.forget();
        }
    }

    /// The bound now.
    #[cfg(test)]
    pub(super) fn size(&self) -> usize {
        self.state.lock().expect("lock").size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` requests, one after another, each answered as `load` says.
    async fn answers(b: &Bound, n: usize, load: Load) {
        for _ in 0..n {
            let p = b.acquire().await;
            b.release(p, load);
        }
    }

    #[tokio::test]
    async fn grows_until_busy_then_halves_and_grows_slowly() {
        let b = Bound::default();
        answers(&b, 10, Load::Fine).await;
        assert_eq!(b.size(), START + 10);
        assert_eq!(b.permits.available_permits(), START + 10);
        answers(&b, 1, Load::Busy).await;
        assert_eq!(b.size(), (START + 10) / 2);
        // The permits lowered are dropped as they come back.
        assert_eq!(b.permits.available_permits(), (START + 10) / 2);
        // Now one more per full round of answers.
        answers(&b, (START + 10) / 2, Load::Fine).await;
        assert_eq!(b.size(), (START + 10) / 2 + 1);
        assert_eq!(b.permits.available_permits(), b.size());
    }

    #[tokio::test]
    async fn stays_within_its_limits() {
        let b = Bound::default();
        answers(&b, 10, Load::Busy).await;
        assert_eq!(b.size(), LEAST);
        assert_eq!(b.permits.available_permits(), LEAST);
        answers(&b, 1000, Load::Fine).await;
        assert!(b.size() <= MOST);
        assert_eq!(b.permits.available_permits(), b.size());
    }

    #[tokio::test]
    async fn a_lowered_bound_takes_back_permits_in_use() {
        let b = Bound::default();
        let held: Vec<_> = futures_util::future::join_all((0..START).map(|_| b.acquire())).await;
        let mut held = held.into_iter();
        b.release(held.next().unwrap(), Load::Busy);
        for p in held {
            b.release(p, Load::Fine);
        }
        assert_eq!(b.permits.available_permits(), b.size());
    }
}
