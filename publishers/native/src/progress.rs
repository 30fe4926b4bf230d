//! Progress of long work, as `tracing` events on the target
//! [`TARGET`]: bytes read per artifact, bytes pushed per repository, targets
//! done. archgate's CLI draws them (on a terminal only); without a
//! subscriber for that target they cost next to nothing.

/// The `tracing` target of progress events.
pub const TARGET: &str = "archgate::progress";

/// `done` of `total` bytes of an artifact read (`label`: arch and file).
pub fn read(label: &str, done: u64, total: Option<u64>) {
    tracing::info!(target: "archgate::progress", kind = "read", label, done, total = total.unwrap_or(0));
}

/// `bytes` more pushed to a repository (`label`: the store's name).
pub fn pushed(label: &str, bytes: u64) {
    tracing::info!(target: "archgate::progress", kind = "push", label, bytes);
}

/// A registry answered a request (`label`: its host): work is moving,
/// for whoever watches (the service's `/live`); nothing to draw.
pub fn answered(label: &str) {
    tracing::info!(target: "archgate::progress", kind = "answer", label);
}

/// `done` of `total` targets finished.
pub fn targets(done: u64, total: u64) {
    tracing::info!(target: "archgate::progress", kind = "targets", label = "targets", done, total);
}

/// Reports reading progress every `STEP` bytes, and at least every
/// `EVERY` while bytes come: a slow transfer is seen moving (the
/// service's `/live`), not only a fast one.
pub struct ReadMeter {
    label: String,
    total: Option<u64>,
    next: u64,
    reported: u64,
    at: std::time::Instant,
}

const STEP: u64 = 4 << 20;
const EVERY: std::time::Duration = std::time::Duration::from_secs(1);

impl ReadMeter {
    /// A meter named `label` of `total` bytes (when known).
    pub fn new(label: String, total: Option<u64>) -> ReadMeter {
        read(&label, 0, total);
        ReadMeter {
            label,
            total,
            next: STEP,
            reported: 0,
            at: std::time::Instant::now(),
        }
    }

    /// `done` bytes read so far.
    pub fn at(&mut self, done: u64) {
        if done >= self.next || (done > self.reported && self.at.elapsed() >= EVERY) {
            read(&self.label, done, self.total);
            self.next = done + STEP;
            self.reported = done;
            self.at = std::time::Instant::now();
        }
    }

    /// The read is over: `done` bytes.
    pub fn finish(&self, done: u64) {
        read(&self.label, done, Some(self.total.unwrap_or(done)));
    }
}
