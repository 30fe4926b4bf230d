//! `/live`, `/ready` and `/metrics` (Prometheus text) on the `health`
//! address: the consumer's state for a supervisor and a scraper.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type Labels = Vec<(String, String)>;

/// What the service counts.
pub struct Metrics {
    registry: Registry,
    messages: Family<Labels, Counter>,
    targets: Family<Labels, Counter>,
    lease_waits: Counter,
    runs: Histogram,
    /// Connected to the broker and consuming.
    pub ready: AtomicBool,
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
        let lease_waits = Counter::default();
        registry.register(
            "lease_waits",
            "Times a run waited for a target's lease that another consumer held",
            lease_waits.clone(),
        );
        let runs = Histogram::new(exponential_buckets(0.25, 2.0, 14));
        registry.register("run_duration_seconds", "How long a run took", runs.clone());
        Arc::new(Metrics {
            registry,
            messages,
            targets,
            lease_waits,
            runs,
            ready: AtomicBool::new(false),
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

    /// A run found a target's lease held by another consumer.
    pub fn lease_wait(&self) {
        self.lease_waits.inc();
    }

    /// How long a run took.
    pub fn run_took(&self, seconds: f64) {
        self.runs.observe(seconds);
    }

    /// Connected and consuming (`/ready`), or not.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    fn text(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("metrics encode to a string");
        out
    }
}

/// Serves the three paths until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, metrics: Arc<Metrics>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
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
            if tokio::time::timeout(std::time::Duration::from_secs(5), read_line)
                .await
                .is_err()
            {
                return;
            }
            let request = String::from_utf8_lossy(&buf);
            let path = request.split_whitespace().nth(1).unwrap_or("/");
            let (status, content_type, body) = match path {
                "/live" => ("200 OK", "text/plain", "live\n".to_string()),
                "/ready" if metrics.ready.load(Ordering::Relaxed) => {
                    ("200 OK", "text/plain", "ready\n".to_string())
                }
                "/ready" => (
                    "503 Service Unavailable",
                    "text/plain",
                    "not ready\n".to_string(),
                ),
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
