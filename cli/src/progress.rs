//! The progress display: bars drawn on stderr from the progress events of
//! `archgate_native::progress`, only when stderr is a terminal and
//! `--quiet` is not given. Never on stdout. Log lines are printed above the
//! bars, so the two do not tear each other.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Mutex;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::Context;

/// Draws the bars.
pub struct ProgressLayer {
    multi: MultiProgress,
    bars: Mutex<HashMap<String, ProgressBar>>,
}

impl ProgressLayer {
    pub fn new() -> ProgressLayer {
        ProgressLayer {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            bars: Mutex::new(HashMap::new()),
        }
    }

    /// A writer for log lines that prints above the bars.
    pub fn writer(&self) -> SuspendingWriter {
        SuspendingWriter(self.multi.clone())
    }

    fn bar(&self, label: &str, total: Option<u64>, bytes: bool) -> ProgressBar {
        let mut bars = self.bars.lock().expect("progress bars");
        bars.entry(label.to_string())
            .or_insert_with(|| {
                let bar = match total {
                    Some(t) if t > 0 => ProgressBar::new(t),
                    _ => ProgressBar::no_length(),
                };
                let template = match (bytes, total.is_some_and(|t| t > 0)) {
                    (true, true) => {
                        "{msg:50} {bytes:>10}/{total_bytes:<10} {bar:30} {binary_bytes_per_sec}"
                    }
                    (true, false) => "{msg:50} {bytes:>10} {binary_bytes_per_sec}",
                    (false, _) => "{msg:50} {pos}/{len}",
                };
                bar.set_style(ProgressStyle::with_template(template).expect("a valid template"));
                bar.set_message(label.to_string());
                self.multi.add(bar)
            })
            .clone()
    }
}

#[derive(Default)]
struct Fields {
    kind: String,
    label: String,
    done: Option<u64>,
    total: Option<u64>,
    bytes: Option<u64>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "kind" => self.kind = value.to_string(),
            "label" => self.label = value.to_string(),
            _ => {}
        }
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        match field.name() {
            "done" => self.done = Some(value),
            "total" => self.total = Some(value),
            "bytes" => self.bytes = Some(value),
            _ => {}
        }
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.record_u64(field, value.max(0) as u64);
    }
    fn record_debug(&mut self, _: &Field, _: &dyn std::fmt::Debug) {}
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for ProgressLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        if event.metadata().target() != archgate_native::progress::TARGET {
            return;
        }
        let mut f = Fields::default();
        event.record(&mut f);
        let total = f.total.filter(|t| *t > 0);
        match f.kind.as_str() {
            "read" => {
                let bar = self.bar(&f.label, total, true);
                if let Some(t) = total {
                    bar.set_length(t);
                }
                bar.set_position(f.done.unwrap_or(0));
                if total.is_some_and(|t| f.done >= Some(t)) {
                    bar.finish();
                }
            }
            "push" => self.bar(&f.label, None, true).inc(f.bytes.unwrap_or(0)),
            "targets" => {
                let bar = self.bar(&f.label, total, false);
                bar.set_position(f.done.unwrap_or(0));
                if total.is_some_and(|t| f.done >= Some(t)) {
                    bar.finish();
                }
            }
            _ => {}
        }
    }
}

/// Writes log lines with the bars out of the way.
#[derive(Clone)]
pub struct SuspendingWriter(MultiProgress);

impl Write for SuspendingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.suspend(|| std::io::stderr().write_all(buf))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for SuspendingWriter {
    type Writer = SuspendingWriter;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}
