//! One delivery, from its body to its end. Every delivery ends in one of
//! three ways ([`End`]): acknowledged, set aside (a copy in
//! `QUEUE.failed`, then acknowledged), or handed back to the broker
//! (`nack` with requeue), which delivers it again at once. When even that
//! cannot be done (the channel broke), the session is told, and closing
//! the connection hands the message back.
//!
//! A failed try is tried again in this process, on the same message: it
//! waits (unacknowledged, never longer than half the broker's
//! `consumer_timeout`: past that it is handed back, and waits on when it
//! comes again), and a try always starts on a message delivered less than
//! a minute ago, so that it has the broker's whole `consumer_timeout` to
//! run. Tries are counted on disk before each run starts
//! (`crate::attempts`): a run that panics, kills the process or is taken
//! back by the broker counts, and waits, like one that failed. So every
//! way a message goes back is delayed, and capped.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use archgate_core::{untrusted, Checked, Decision, ErrorKind, Report};
use archgate_native::Fence;
use archgate_runner::{RunError, SourceSpec};
use futures_util::FutureExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use lapin::types::AMQPValue;
use tokio::sync::{mpsc, watch};

use crate::attempts;
use crate::publisher::Publisher;
use crate::retry::{self, Next};
use crate::session::stopped;
use crate::{messages, results, Service};

/// A try runs only on a message delivered less than this long ago (else
/// the message is handed back first, and comes again fresh).
const FRESH: Duration = Duration::from_secs(60);

/// What a delivery's task is handed.
#[derive(Clone)]
pub(crate) struct Ctx {
    pub(crate) service: Arc<Service>,
    pub(crate) publisher: Arc<Publisher>,
    /// The session's fence: each run gets a child of it.
    pub(crate) fence: Fence,
    pub(crate) shutdown: watch::Receiver<bool>,
    pub(crate) takeover: Arc<Takeover>,
    /// Told when a delivery cannot be ended on its channel.
    pub(crate) broken: mpsc::UnboundedSender<String>,
}

/// After taking over messages another consumer had, runs wait: that
/// consumer may have been cut off from the broker and not know it yet.
pub(crate) struct Takeover {
    since: Instant,
    grace: Duration,
    /// A message delivered again came in this session.
    again: AtomicBool,
    told: AtomicBool,
}

impl Takeover {
    /// Became active now; runs wait `grace` after this moment once a
    /// message comes that was delivered before.
    pub(crate) fn new(grace: Duration) -> Takeover {
        Takeover {
            since: Instant::now(),
            grace,
            again: AtomicBool::new(false),
            told: AtomicBool::new(false),
        }
    }

    /// Waits as the rule says; `false` when the shutdown came meanwhile.
    async fn wait(&self, redelivered: bool, shutdown: &mut watch::Receiver<bool>) -> bool {
        if redelivered {
            self.again.store(true, Ordering::Relaxed);
        }
        let until = self.since + self.grace;
        if !self.again.load(Ordering::Relaxed) || Instant::now() >= until {
            return true;
        }
        if !self.told.swap(true, Ordering::Relaxed) {
            tracing::info!(
                "took over messages another consumer had: running nothing for {} after becoming active, so that a consumer cut off from the broker has stopped writing",
                retry::text(self.grace)
            );
        }
        tokio::select! {
            _ = tokio::time::sleep_until(until.into()) => true,
            _ = stopped(shutdown) => false,
        }
    }
}

/// How a delivery ends.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// Done with: published, unchanged, refused, stale, skipped.
    Ack,
    /// Into `QUEUE.failed`, with the reason and the runs it had.
    SetAside { why: String, tries: u32 },
    /// Back to the broker, which delivers it again: to wait on, to run on a
    /// fresh delivery, or for the next consumer after a shutdown.
    Requeue,
}

/// What happened to one message, for the log line and the metrics.
enum Outcome {
    /// published, unchanged, refused or stale; and the counts.
    Done(&'static str, String),
    Skipped(String),
    Failed(String),
    Invalid(String),
}

/// The key a message's tries are counted under: the message id
/// fedora-messaging gives every message, else a digest of its routing key
/// and body.
fn message_key(delivery: &Delivery) -> String {
    if let Some(id) = delivery.properties.message_id() {
        if !id.as_str().is_empty() {
            return format!("id:{}", id.as_str());
        }
    }
    let mut bytes = delivery.routing_key.as_str().as_bytes().to_vec();
    bytes.push(0);
    bytes.extend_from_slice(&delivery.data);
    archgate_native::sha256_digest(&bytes)
}

/// Handles one delivery and ends it, whatever happens.
pub(crate) async fn handle(ctx: Ctx, delivery: Delivery) {
    let received = Instant::now();
    let key = message_key(&delivery);
    let decided = AssertUnwindSafe(decide(&ctx, &delivery, &key, received))
        .catch_unwind()
        .await;
    let (end, compose, outcome) = match decided {
        Ok(d) => d,
        Err(_) => {
            // A fault in the handling itself (not in a run): the message
            // goes back after a pause, its tries counted as they were.
            let pause = ctx.service.spec.retry_delay;
            tracing::error!(
                "internal error: handling a message panicked; handing it back in {}",
                retry::text(pause)
            );
            let mut shutdown = ctx.shutdown.clone();
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = stopped(&mut shutdown) => {}
            }
            (End::Requeue, None, None)
        }
    };
    let done = match end {
        End::SetAside { why, tries } => {
            set_aside(&ctx, &delivery, &key, &why, tries, received).await
        }
        End::Ack => ack(&delivery).await.map(|()| true),
        End::Requeue => requeue(&delivery).await.map(|()| false),
    };
    match done {
        Err(why) => {
            tracing::error!("{why}; closing the connection so the broker takes the message back");
            let _ = ctx.broken.send(why);
        }
        Ok(ended) => {
            if !ended {
                return;
            }
            ctx.service.attempts.remove(&key).await;
            if let Some(outcome) = outcome {
                log(&ctx.service, compose.as_deref(), outcome);
            }
        }
    }
}

async fn ack(delivery: &Delivery) -> Result<(), String> {
    let done = delivery.ack(BasicAckOptions::default()).await;
    on_channel(done, "acknowledging")
}

async fn requeue(delivery: &Delivery) -> Result<(), String> {
    let requeue = BasicNackOptions {
        requeue: true,
        ..Default::default()
    };
    on_channel(delivery.nack(requeue).await, "handing back")
}

/// Whether ending a delivery (`what`) reached its channel.
fn on_channel(done: lapin::Result<bool>, what: &str) -> Result<(), String> {
    match done {
        Ok(true) => Ok(()),
        Ok(false) => Err("the delivery's channel is closed".into()),
        Err(e) => Err(format!("{what} a delivery failed: {e}")),
    }
}

/// Sets the message aside: a copy in `QUEUE.failed`, then the original
/// acknowledged (`Ok(true)`). A copy that cannot be sent (the queue
/// missing, the broker refusing it) is tried again with backoff while the
/// message is held, and the reason is kept on disk; past the hold the
/// message goes back (`Ok(false)`) and is set aside when it comes again.
/// Never dropped.
async fn set_aside(
    ctx: &Ctx,
    delivery: &Delivery,
    key: &str,
    why: &str,
    tries: u32,
    received: Instant,
) -> Result<bool, String> {
    let spec = &ctx.service.spec;
    let props = retry::aside_properties(delivery, why, tries);
    let mut failures = 0;
    loop {
        match ctx
            .publisher
            .set_aside(spec, &delivery.data, props.clone())
            .await
        {
            Ok(()) => return ack(delivery).await.map(|()| true),
            Err(e) => {
                failures += 1;
                let wait = retry::backoff(spec, failures);
                tracing::error!(
                    queue = %spec.failed_queue(),
                    "cannot set a message aside: {e:#}; it is kept, and tried again in {}",
                    retry::text(wait)
                );
                let mut record = ctx.service.attempts.load(key).await;
                if record.aside.is_none() {
                    record.aside = Some(why.to_string());
                    record.tries = record.tries.max(tries);
                    if let Err(e) = ctx.service.attempts.save(key, &record).await {
                        tracing::warn!("{e:#}");
                    }
                }
                if !hold(ctx, wait, received).await {
                    return requeue(delivery).await.map(|()| false);
                }
            }
        }
    }
}

/// Holds the message `wait` longer; `false` when it must go back first:
/// it would be held past half the broker's `consumer_timeout` (it then is
/// held until then), or the shutdown came.
async fn hold(ctx: &Ctx, wait: Duration, received: Instant) -> bool {
    let limit = ctx.service.spec.consumer_timeout / 2;
    let left = limit.saturating_sub(received.elapsed());
    let mut shutdown = ctx.shutdown.clone();
    tokio::select! {
        _ = tokio::time::sleep(wait.min(left)) => wait < left,
        _ = stopped(&mut shutdown) => false,
    }
}

/// What to do with the message, and why.
async fn decide(
    ctx: &Ctx,
    delivery: &Delivery,
    key: &str,
    received: Instant,
) -> (End, Option<String>, Option<Outcome>) {
    let spec = &ctx.service.spec;
    let invalid = |why: String| {
        (
            End::SetAside {
                why: why.clone(),
                tries: 0,
            },
            None,
            Some(Outcome::Invalid(why)),
        )
    };
    let parsed = match messages::parse(&delivery.data) {
        Ok(m) => m,
        Err(messages::Invalid(why)) => return invalid(why),
    };
    let compose = Some(untrusted(&parsed.compose_id));
    if !spec.statuses.contains(&parsed.status) {
        let why = format!(
            "status {} is not one of {}",
            untrusted(&parsed.status),
            spec.statuses.join(", ")
        );
        return (End::Ack, compose, Some(Outcome::Skipped(why)));
    }
    // A location that did not answer before waits its backoff first.
    if !backed_off(ctx, key, received).await {
        return (End::Requeue, None, None);
    }
    let message = loop {
        match read(ctx, &parsed).await {
            Ok(m) => break m,
            Err(Unread::Refused(why)) => return invalid(why),
            Err(Unread::Unanswered(why)) => match unanswered(ctx, key, &parsed, why).await {
                Ok(wait) if hold(ctx, wait, received).await => continue,
                Ok(_) => return (End::Requeue, None, None),
                Err((end, outcome)) => return (end, Some(untrusted(&parsed.compose_id)), outcome),
            },
        }
    };
    let compose = Some(untrusted(&message.compose_id));
    let (end, outcome) = tries(ctx, delivery, key, &message, received).await;
    (end, compose, outcome)
}

/// Waits until `due` (Unix seconds); `false` when the message must go
/// back first (held too long, or the shutdown came).
async fn wait_until(ctx: &Ctx, due: i64, received: Instant) -> bool {
    let wait = Duration::from_secs(due.saturating_sub(attempts::now()).max(0) as u64);
    wait.is_zero() || hold(ctx, wait, received).await
}

/// The tries of one message: each waits for its time, runs, and ends the
/// message or counts a failure and waits for the next.
async fn tries(
    ctx: &Ctx,
    delivery: &Delivery,
    key: &str,
    message: &Message,
    received: Instant,
) -> (End, Option<Outcome>) {
    let service = &ctx.service;
    let compose = untrusted(&message.compose_id);
    loop {
        let mut record = service.attempts.load(key).await;
        if let Some(why) = record
            .aside
            .clone()
            .or_else(|| retry::before(&service.spec, &record))
        {
            return set_aside_for(why, record.tries);
        }
        let Some(permit) = ready(ctx, delivery, &record, received, &compose).await else {
            return (End::Requeue, None);
        };
        let started = attempts::now();
        if record.tries == 0 {
            record.first = started;
            record.compose = compose.clone();
        }
        record.tries += 1;
        record.last_start = started;
        if let Err(e) = service.attempts.save(key, &record).await {
            tracing::error!(%compose, "the try cannot be counted: {e:#}");
        }
        let tried_before =
            record.tries > 1 || delivery.redelivered || redelivered_count(delivery) > 0;
        let result = run_and_announce(ctx, message, tried_before).await;
        drop(permit);
        let (kind, error) = match ended(result).map_err(|(k, e)| (k, message.show(&e))) {
            Ok(report) => {
                let outcome = Outcome::Done(outcome_of(&report), summary(&report));
                return (End::Ack, Some(outcome));
            }
            Err(failed) => failed,
        };
        if kind == ErrorKind::Cancelled {
            // The session broke: this task is being stopped with it.
            return (End::Requeue, None);
        }
        record.ended += 1;
        record.last_error = Some(error.clone());
        match retry::after(&service.spec, &record, kind, &error, attempts::now()) {
            Next::SetAside(why) => return set_aside_for(why, record.tries),
            Next::Retry(wait) => retried(service, key, &record, &error, wait).await,
        }
    }
}

/// A failed try that is tried again after `wait`: counted, and said.
async fn retried(
    service: &Service,
    key: &str,
    record: &attempts::Record,
    error: &str,
    wait: Duration,
) {
    let compose = &record.compose;
    if let Err(e) = service.attempts.save(key, record).await {
        tracing::error!(%compose, "the try cannot be counted: {e:#}");
    }
    service.metrics.message("retried");
    tracing::warn!(
        %compose,
        outcome = "retried",
        "try {} failed: {error}; again in {}",
        record.tries,
        retry::text(wait)
    );
}

/// The end that sets the message aside, and its outcome.
fn set_aside_for(why: String, tries: u32) -> (End, Option<Outcome>) {
    let outcome = Outcome::Failed(why.clone());
    (End::SetAside { why, tries }, Some(outcome))
}

/// Waits until the message may be tried: its time come (after a failed
/// try), on a fresh delivery, past a takeover's grace, with a run slot.
/// `None`: the message goes back first (held too long, not fresh, or the
/// shutdown came).
async fn ready(
    ctx: &Ctx,
    delivery: &Delivery,
    record: &attempts::Record,
    received: Instant,
    compose: &str,
) -> Option<tokio::sync::OwnedSemaphorePermit> {
    let spec = &ctx.service.spec;
    if record.tries > 0 {
        let due = retry::due(spec, record);
        if !wait_until(ctx, due, received).await || received.elapsed() > FRESH {
            return None;
        }
    }
    let mut shutdown = ctx.shutdown.clone();
    if !ctx.takeover.wait(delivery.redelivered, &mut shutdown).await {
        return None;
    }
    let permits = ctx.service.permits.clone();
    if let Ok(p) = permits.clone().try_acquire_owned() {
        return Some(p);
    }
    tracing::info!(
        %compose,
        "waiting for a run slot: {} run(s) at once (concurrency)",
        spec.concurrency
    );
    tokio::select! {
        p = permits.acquire_owned() => Some(p.expect("the permits are never closed")),
        _ = stopped(&mut shutdown) => None,
    }
}

/// One run, and the announcement of what it published (before the message
/// ends, whichever way it ends); a failed announcement fails the try.
async fn run_and_announce(
    ctx: &Ctx,
    message: &Message,
    tried_before: bool,
) -> Result<Report, RunError> {
    let report = run(ctx, message).await?;
    log_targets(&ctx.service, &report, message);
    match results::announce(&ctx.service, &ctx.publisher, &report, tried_before).await {
        Ok(()) => Ok(report),
        Err(e) => Err(RunError::new(
            ErrorKind::Transient,
            format!("announcing what was published failed: {e:#}"),
        )),
    }
}

/// The times a quorum queue delivered the message before.
fn redelivered_count(delivery: &Delivery) -> i64 {
    let count = delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("x-delivery-count").cloned());
    match count {
        Some(AMQPValue::LongLongInt(n)) => n,
        Some(AMQPValue::LongInt(n)) => i64::from(n),
        Some(AMQPValue::LongUInt(n)) => i64::from(n),
        Some(AMQPValue::ShortInt(n)) => i64::from(n),
        Some(AMQPValue::ShortShortInt(n)) => i64::from(n),
        _ => 0,
    }
}

/// The run, on a task of its own (a panic in it is an internal error of
/// this try, not the end of the consumer), fenced by the session: when
/// the session breaks, it sends nothing more and is aborted with the
/// delivery's task.
async fn run(ctx: &Ctx, message: &Message) -> Result<Report, RunError> {
    let service = ctx.service.clone();
    let mut run = service.template.clone();
    run.source = SourceSpec::Pungi {
        location: message.location.clone(),
    };
    run.allowed_locations = Some(service.spec.allowed_locations.clone());
    run.fence = Some(ctx.fence.child());
    let compose = message.compose_id.clone();
    let _running = service.metrics.run_started();
    let started = Instant::now();
    let task = archgate_runner::AbortOnDrop(tokio::spawn(async move {
        injected_fault(&compose);
        service.runner.run(&run).await
    }));
    let result = match task.await {
        Ok(result) => result,
        Err(e) => Err(RunError::new(
            ErrorKind::Internal,
            format!("internal error: the run stopped: {e}"),
        )),
    };
    ctx.service
        .metrics
        .run_took(started.elapsed().as_secs_f64());
    result
}

/// A message that may be run: its compose and where it really is.
struct Message {
    compose_id: String,
    /// Where the run reads: the normalized URL, or for a local compose the
    /// directory that was checked, through the descriptor this holds
    /// (`/proc/PID/fd/N`): never its name again, which could lead
    /// elsewhere by then.
    location: String,
    /// A local compose's directory, held open for the message's runs.
    _root: Option<std::fs::File>,
    /// (what the run reads through, what the operator knows it by), for
    /// messages.
    shown: Option<(String, String)>,
}

impl Message {
    /// `text` with the descriptor's path named by the checked directory.
    fn show(&self, text: &str) -> String {
        match &self.shown {
            Some((through, real)) => text.replace(through.as_str(), real),
            None => text.to_string(),
        }
    }
}

/// Opens a local compose's directory as it is now (without reading
/// anything: `O_PATH`, so a FIFO or a device does nothing) and says where
/// it really is, from the open descriptor: what is checked is what is
/// open.
fn open_dir(path: &std::path::Path) -> std::io::Result<(std::fs::File, std::path::PathBuf)> {
    use std::os::unix::fs::OpenOptionsExt;
    use std::os::unix::io::AsRawFd;
    let dir = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(path)?;
    let real = std::fs::read_link(format!("/proc/self/fd/{}", dir.as_raw_fd()))?;
    Ok((dir, real))
}

/// Why a message's location was not read.
enum Unread {
    /// Refused (not allowed, not there): the message is set aside.
    Refused(String),
    /// Its file system did not answer within `[source] read-timeout` (a
    /// hung mount): a failed try, retried like any `external` error.
    Unanswered(String),
}

/// Checks a message's location. This runs on a blocking thread, within
/// `[source] read-timeout`: a hung mount blocks that thread (until the
/// mount answers), never the consumer. A local location is opened first
/// and the directory opened is what is checked and then read, through its
/// descriptor.
async fn read(ctx: &Ctx, m: &messages::ComposeMessage) -> Result<Message, Unread> {
    let allowed = ctx.service.spec.allowed_locations.clone();
    let root = m.root.clone();
    let check = tokio::task::spawn_blocking(move || {
        if !root.starts_with('/') {
            let checked = allowed.check(&root, &|p| std::fs::canonicalize(p));
            return checked.map(|c| (c, None));
        }
        let (dir, real) = open_dir(std::path::Path::new(&root))
            .map_err(|e| format!("{root:?}: cannot open the directory: {e}"))?;
        let real_text = real.to_string_lossy().into_owned();
        let checked = allowed.check(&real_text, &|p| std::fs::canonicalize(p))?;
        Ok((checked, Some(dir)))
    });
    let limit = ctx
        .service
        .template
        .read_timeout
        .unwrap_or(archgate_native::DEFAULT_READ_TIMEOUT);
    let checked = match tokio::time::timeout(limit, check).await {
        Err(_) => {
            return Err(Unread::Unanswered(format!(
                "`location` {}: its file system did not answer in {} (a hung mount?)",
                untrusted(&m.root),
                retry::text(limit)
            )))
        }
        Ok(joined) => joined
            .map_err(|e| Unread::Refused(format!("internal error: checking the location: {e}")))?
            .map_err(|why| Unread::Refused(format!("`location`: {}; refused", untrusted(&why))))?,
    };
    let (location, root, shown) = match checked {
        (Checked::Url(u), _) => (u, None, None),
        (Checked::Path(p), Some(dir)) => {
            use std::os::unix::io::AsRawFd;
            let through = format!("/proc/{}/fd/{}", std::process::id(), dir.as_raw_fd());
            let real = p.display().to_string();
            (through.clone(), Some(dir), Some((through, real)))
        }
        (Checked::Path(p), None) => (p.display().to_string(), None, None),
    };
    Ok(Message {
        compose_id: m.compose_id.clone(),
        location,
        _root: root,
        shown,
    })
}

/// Waits for the backoff of a message whose location did not answer
/// before; `false` when it must go back first.
async fn backed_off(ctx: &Ctx, key: &str, received: Instant) -> bool {
    let record = ctx.service.attempts.load(key).await;
    if record.tries == 0 {
        return true;
    }
    wait_until(ctx, retry::due(&ctx.service.spec, &record), received).await
}

/// Counts a try whose location did not answer: `Ok(wait)` before the next
/// one, or `Err` with the end that sets the message aside.
async fn unanswered(
    ctx: &Ctx,
    key: &str,
    m: &messages::ComposeMessage,
    error: String,
) -> Result<Duration, (End, Option<Outcome>)> {
    let service = &ctx.service;
    let compose = untrusted(&m.compose_id);
    let mut record = service.attempts.load(key).await;
    if let Some(why) = record.aside.clone() {
        return Err(set_aside_for(why, record.tries));
    }
    let now = attempts::now();
    if record.tries == 0 {
        record.first = now;
        record.compose = compose.clone();
    }
    record.tries += 1;
    record.ended += 1;
    record.last_start = now;
    record.last_error = Some(error.clone());
    match retry::after(&service.spec, &record, ErrorKind::External, &error, now) {
        Next::SetAside(why) => Err(set_aside_for(why, record.tries)),
        Next::Retry(wait) => {
            retried(service, key, &record, &error, wait).await;
            Ok(wait)
        }
    }
}

/// Faults a test can ask a debug build for: `ARCHGATE_TEST_PANIC_RUN=ID`
/// makes the run of compose ID panic, as a bug in it would;
/// `ARCHGATE_TEST_ABORT_RUN=ID` makes it kill the process. Release builds
/// have no such switch.
fn injected_fault(compose: &str) {
    #[cfg(debug_assertions)]
    {
        if std::env::var("ARCHGATE_TEST_PANIC_RUN").is_ok_and(|c| c == compose) {
            panic!("injected fault: the run of {compose} panics (ARCHGATE_TEST_PANIC_RUN)");
        }
        if std::env::var("ARCHGATE_TEST_ABORT_RUN").is_ok_and(|c| c == compose) {
            eprintln!(
                "injected fault: the run of {compose} kills the process (ARCHGATE_TEST_ABORT_RUN)"
            );
            std::process::abort();
        }
    }
    let _ = compose;
}

/// A finished run, or its error: of the first kind that matters.
fn ended(result: Result<Report, RunError>) -> Result<Report, (ErrorKind, String)> {
    let report = match result {
        Ok(report) => report,
        Err(e) => return Err((e.kind, format!("{} error: {e}", e.kind.as_str()))),
    };
    let errors: Vec<_> = report
        .targets
        .iter()
        .filter(|t| t.decision == Decision::Error)
        .collect();
    if errors.is_empty() {
        return Ok(report);
    }
    // A kind no retry mends decides; else the first.
    let kinds = errors
        .iter()
        .map(|t| t.error_kind.unwrap_or(ErrorKind::Internal));
    let kind = kinds
        .clone()
        .find(|k| matches!(k, ErrorKind::Auth | ErrorKind::Config))
        .or_else(|| kinds.clone().next())
        .unwrap_or(ErrorKind::Internal);
    let text: Vec<String> = errors
        .iter()
        .map(|t| format!("{}: {}", t.reference, t.reasons.join("; ")))
        .collect();
    Err((kind, text.join(" | ")))
}

/// Each target of a finished run counted; a refusal logged at WARN with
/// its reasons, a stale target at INFO.
fn log_targets(service: &Service, report: &Report, message: &Message) {
    for t in &report.targets {
        service.metrics.target(t.decision.as_str());
        if t.decision != Decision::Refused {
            continue;
        }
        let reasons = message.show(&t.reasons.join("; "));
        match t.stale {
            true => tracing::info!(target = %t.reference, "stale: {reasons}"),
            false => tracing::warn!(target = %t.reference, "refused: {reasons}"),
        }
    }
}

/// What a run came to, in one word: published if any target was, else
/// stale if any target holds a newer compose (a late retry, an old compose
/// again), else refused if any was, else unchanged.
fn outcome_of(report: &Report) -> &'static str {
    let any = |d: Decision| report.targets.iter().any(|t| t.decision == d);
    if any(Decision::Published) {
        "published"
    } else if report.targets.iter().any(|t| t.stale) {
        "stale"
    } else if any(Decision::Refused) {
        "refused"
    } else {
        "unchanged"
    }
}

/// `published 2, unchanged 4, refused 0` and the like.
fn summary(report: &Report) -> String {
    let count = |d: Decision| report.targets.iter().filter(|t| t.decision == d).count();
    format!(
        "published {}, unchanged {}, refused {}",
        count(Decision::Published),
        count(Decision::Unchanged),
        count(Decision::Refused)
    )
}

/// One log line per message, with its compose id and outcome; counted.
fn log(service: &Service, compose: Option<&str>, outcome: Outcome) {
    let compose = compose.unwrap_or("-");
    match outcome {
        Outcome::Done(word, what) => {
            service.metrics.message(word);
            tracing::info!(compose, outcome = word, "{what}");
        }
        Outcome::Skipped(why) => {
            service.metrics.message("skipped");
            tracing::info!(compose, outcome = "skipped", "{why}");
        }
        Outcome::Failed(why) => {
            service.metrics.message("failed");
            tracing::error!(compose, outcome = "failed", "set aside: {why}");
        }
        Outcome::Invalid(why) => {
            service.metrics.message("invalid");
            tracing::error!(compose, outcome = "invalid", "set aside: {why}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attempts::Record;

    #[test]
    fn the_first_kind_no_retry_mends_decides() {
        let err = RunError::new(ErrorKind::Transient, "down");
        assert_eq!(
            ended(Err(err)).unwrap_err(),
            (ErrorKind::Transient, "transient error: down".into())
        );
    }

    #[test]
    fn a_record_with_runs_that_died_is_not_retried_forever() {
        let spec = crate::tests::spec();
        let r = Record {
            tries: spec.max_attempts,
            ..Record::default()
        };
        assert!(retry::before(&spec, &r).is_some());
    }
}
