//! `/live`, `/ready` and `/metrics` (Prometheus text) on the `health`
//! address: the consumer's state for a supervisor and a scraper.
//!
//! `/ready` answers 200 while the consumer is connected to the broker and
//! either consuming (the active consumer) or standing by to take over.
//! `/live` answers 200 while the process makes progress, past [`STALLED`]
//! without it answers 503: progress is work moving while runs are in
//! flight (bytes read or sent, registry answers: [`Metrics::progress`],
//! which `archgate consume` calls for every progress event of a run), and
//! the session's own loop ticking while none is; a run stuck on a stalled
//! transfer does not count as progress.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type Labels = Vec<(String, String)>;

/// How long without progress before `/live` fails.
pub const STALLED: Duration = Duration::from_secs(60);

/// [`STALLED`]; a debug build takes `ARCHGATE_TEST_STALLED` (seconds)
/// instead, so that a test sees a drain outlive it. Release builds have
/// no such switch.
fn stalled() -> Duration {
    #[cfg(debug_assertions)]
    if let Some(secs) = std::env::var("ARCHGATE_TEST_STALLED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        return Duration::from_secs(secs);
    }
    STALLED
}

/// What the service counts.
pub struct Metrics {
    registry: Registry,
    messages: Family<Labels, Counter>,
    targets: Family<Labels, Counter>,
    results_sent: Counter,
    runs: Histogram,
    connected: Gauge,
    active: Gauge,
    in_flight: Gauge,
    /// Connected to the broker and consuming.
    ready: AtomicBool,
    /// Milliseconds since `started` of the last sign of progress.
    progress: AtomicU64,
    /// [`STALLED`], or what a test asked for.
    stalled: Duration,
    started: Instant,
}

impl Metrics {
    /// New counters, not ready.
    pub fn new() -> Arc<Metrics> {
        let mut registry = Registry::with_prefix("archgate");
        let messages = Family::<Labels, Counter>::default();
        registry.register(
            "messages",
            "Messages handled, by outcome (published, unchanged, refused, stale, skipped, retried, busy, failed, invalid)",
            messages.clone(),
        );
        let targets = Family::<Labels, Counter>::default();
        registry.register(
            "targets",
            "Targets of finished runs, by decision",
            targets.clone(),
        );
        let results_sent = Counter::default();
        registry.register(
            "results_sent",
            "Result messages (ContainerPublishedV1) a queue took, confirmed by the broker",
            results_sent.clone(),
        );
        let runs = Histogram::new(exponential_buckets(0.25, 2.0, 14));
        registry.register("run_duration_seconds", "How long a run took", runs.clone());
        let connected = Gauge::default();
        registry.register(
            "consumer_connected",
            "1 while connected to the broker and consuming, else 0",
            connected.clone(),
        );
        let active = Gauge::default();
        registry.register(
            "consumer_active",
            "1 while this consumer is the queue's active one (0: standing by, or not connected)",
            active.clone(),
        );
        let in_flight = Gauge::default();
        registry.register("runs_in_flight", "Runs going on now", in_flight.clone());
        Arc::new(Metrics {
            registry,
            messages,
            targets,
            results_sent,
            runs,
            connected,
            active,
            in_flight,
            ready: AtomicBool::new(false),
            progress: AtomicU64::new(0),
            stalled: stalled(),
            started: Instant::now(),
        })
    }

    /// A message handled, by its outcome.
    pub fn message(&self, outcome: &str) {
        self.messages
            .get_or_create(&vec![("outcome".into(), outcome.into())])
            .inc();
    }

    /// A target of a finished run, by its decision.
    pub fn target(&self, decision: &str) {
        self.targets
            .get_or_create(&vec![("decision".into(), decision.into())])
            .inc();
    }

    /// A result message a queue took.
    pub fn result_sent(&self) {
        self.results_sent.inc();
    }

    /// How long a run took.
    pub fn run_took(&self, seconds: f64) {
        self.runs.observe(seconds);
    }

    /// A run starts: counted in flight until the guard is dropped (also
    /// when its task is aborted).
    pub fn run_started(self: &Arc<Self>) -> RunGuard {
        self.in_flight.inc();
        RunGuard(self.clone())
    }

    /// Connected, and the queue's active consumer.
    pub fn set_active(&self) {
        self.ready.store(true, Ordering::Relaxed);
        self.connected.set(1);
        self.active.set(1);
    }

    /// Connected, standing by while another consumer is active.
    pub fn set_standby(&self) {
        self.ready.store(true, Ordering::Relaxed);
        self.connected.set(1);
        self.active.set(0);
    }

    /// Not connected (`/ready` 503).
    pub fn set_connected(&self, connected: bool) {
        self.ready.store(connected, Ordering::Relaxed);
        self.connected.set(i64::from(connected));
        if !connected {
            self.active.set(0);
        }
    }

    /// The session's loop ticks: progress when no run is in flight (a run
    /// in flight says so by itself).
    pub fn idle_tick(&self) {
        if self.in_flight.get() == 0 {
            self.progress();
        }
    }

    /// The process makes progress (`/live`).
    pub fn progress(&self) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.progress.store(ms, Ordering::Relaxed);
    }

    /// Whether the process made progress lately (`/live`, the watchdog).
    pub fn live(&self) -> bool {
        let last = Duration::from_millis(self.progress.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(last) < self.stalled
    }

    fn text(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("metrics encode to a string");
        out
    }
}

/// A run in flight, until dropped.
pub struct RunGuard(Arc<Metrics>);

impl Drop for RunGuard {
    fn drop(&mut self) {
        self.0.in_flight.dec();
    }
}

/// Serves the three paths until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, metrics: Arc<Metrics>) {
    loop {
        let mut stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, say: wait rather than spin.
                tracing::warn!("health: accept: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            // Read up to the end of the request line (it may come in pieces).
            let mut buf = Vec::with_capacity(512);
            let read_line = async {
                let mut chunk = [0u8; 512];
                while !buf.contains(&b'\n') && buf.len() < 4096 {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            };
            if tokio::time::timeout(Duration::from_secs(5), read_line)
                .await
                .is_err()
            {
                return;
            }
            let request = String::from_utf8_lossy(&buf);
            let path = request.split_whitespace().nth(1).unwrap_or("/");
            let unavailable = "503 Service Unavailable";
            let (status, content_type, body) = match path {
                "/live" if metrics.live() => ("200 OK", "text/plain", "live\n".to_string()),
                "/live" => (unavailable, "text/plain", "stalled\n".to_string()),
                "/ready" if metrics.ready.load(Ordering::Relaxed) => {
                    ("200 OK", "text/plain", "ready\n".to_string())
                }
                "/ready" => (unavailable, "text/plain", "not ready\n".to_string()),
                "/metrics" => (
                    "200 OK",
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    metrics.text(),
                ),
                _ => ("404 Not Found", "text/plain", "not found\n".to_string()),
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(body.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}
