//! One delivery, from its body to its end. Every delivery ends in one of
//! four ways ([`End`]): acknowledged, sent back (a copy through the delay
//! queue), set aside (a copy in `QUEUE.failed`), or handed back to the
//! broker (`nack` with requeue). When even that cannot be done (the channel
//! broke), the session is told, and closing the connection hands the
//! message back. A run that panics is an internal error of that attempt;
//! a panic anywhere else in here hands the message back.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use archgate_core::{untrusted, Checked, Decision, ErrorKind, Report};
use archgate_runner::{RunError, SourceSpec};
use futures_util::FutureExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use lapin::Channel;
use tokio::sync::{mpsc, watch};

use crate::lease::BrokerLeases;
use crate::retry::{self, attempts_so_far, busy_so_far, worth_retrying};
use crate::{messages, results, Service};

/// What a delivery's task is handed.
pub(crate) struct Taken {
    pub(crate) service: Arc<Service>,
    pub(crate) publisher: Channel,
    pub(crate) leases: Arc<BrokerLeases>,
    pub(crate) shutdown: watch::Receiver<bool>,
    /// Told when a delivery cannot be ended on its channel.
    pub(crate) broken: mpsc::UnboundedSender<String>,
}

/// How a delivery ends.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// Done with: published, unchanged, refused, stale, skipped.
    Ack,
    /// Tried again after `retry-delay`, with these counts.
    Retry { attempts: u32, busy: u32 },
    /// Into `QUEUE.failed`, with the reason.
    SetAside(String),
    /// Back to the broker as it is (a shutdown in the middle of a wait, a
    /// result message that could not be sent).
    HandBack,
}

/// What happened to one message, for the log line and the metrics.
enum Outcome {
    /// published, unchanged, refused or stale; and the counts.
    Done(&'static str, String),
    Skipped(String),
    Retried(String),
    /// Targets' leases held by other consumers too long: sent back.
    Busy(String),
    Failed(String),
    Invalid(String),
}

impl Taken {
    /// Handles one delivery and ends it, whatever happens.
    pub(crate) async fn handle(self, delivery: Delivery) {
        let metrics = self.service.metrics.clone();
        metrics.run_started();
        let decided = AssertUnwindSafe(self.decide(&delivery))
            .catch_unwind()
            .await;
        metrics.run_ended();
        let (end, compose, outcome) = match decided {
            Ok(d) => d,
            Err(_) => {
                tracing::error!("internal error: handling a message panicked; handing it back");
                (End::HandBack, None, None)
            }
        };
        if let Err(why) = self.end(&delivery, end).await {
            tracing::error!("{why}; closing the connection so the broker takes the message back");
            let _ = self.broken.send(why);
            return;
        }
        if let Some(outcome) = outcome {
            log(&self.service, compose.as_deref(), outcome);
        }
    }

    /// What to do with the message, and why.
    async fn decide(&self, delivery: &Delivery) -> (End, Option<String>, Option<Outcome>) {
        let spec = &self.service.spec;
        let message = match read(spec, &delivery.data) {
            Ok(m) => m,
            Err(why) => {
                return (
                    End::SetAside(why.clone()),
                    None,
                    Some(Outcome::Invalid(why)),
                )
            }
        };
        let compose = Some(untrusted(&message.compose_id));
        if !spec.statuses.contains(&message.status) {
            let why = format!(
                "status {} is not one of {}",
                untrusted(&message.status),
                spec.statuses.join(", ")
            );
            return (End::Ack, compose, Some(Outcome::Skipped(why)));
        }
        let (end, outcome) = self.run(delivery, &message).await;
        (end, compose, Some(outcome))
    }

    /// Runs the message's compose; its end by how the run went.
    async fn run(&self, delivery: &Delivery, message: &Message) -> (End, Outcome) {
        let service = &self.service;
        let spec = &service.spec;
        let (attempts, busy) = (attempts_so_far(delivery), busy_so_far(delivery));
        let started = Instant::now();
        let result = self.run_caught(message).await;
        service.metrics.run_took(started.elapsed().as_secs_f64());
        if let Ok(report) = &result {
            log_targets(service, report);
            // Announced before the message ends, whichever way it ends.
            let tried_before = attempts > 0;
            if let Err(e) = results::announce(service, &self.publisher, report, tried_before).await
            {
                let why = format!("announcing what was published failed: {e:#}");
                return (End::HandBack, Outcome::Retried(why));
            }
        }
        match ended(result) {
            Ended::Done(report) => (
                End::Ack,
                Outcome::Done(outcome_of(&report), summary(&report)),
            ),
            Ended::Busy(why) if *self.shutdown.borrow() => (
                End::HandBack,
                Outcome::Retried(format!("stopped by the shutdown while busy: {why}")),
            ),
            Ended::Busy(why) if busy + 1 > spec.max_attempts => {
                let why = format!(
                    "waited for other consumers' leases {} times; last: {why}",
                    busy + 1
                );
                (End::SetAside(why.clone()), Outcome::Failed(why))
            }
            Ended::Busy(why) => (
                End::Retry {
                    attempts,
                    busy: busy + 1,
                },
                Outcome::Busy(why),
            ),
            Ended::Failed(kind, error) if !worth_retrying(kind) => {
                let why = format!("{} error, not worth another try: {error}", kind.as_str());
                (End::SetAside(why.clone()), Outcome::Failed(why))
            }
            Ended::Failed(_, error) => {
                let attempt = attempts + 1;
                if attempt >= spec.max_attempts {
                    let why = format!("failed {attempt} times; last error: {error}");
                    (End::SetAside(why.clone()), Outcome::Failed(why))
                } else {
                    let why = format!(
                        "attempt {attempt} of {}: {error}; again in {}",
                        spec.max_attempts,
                        retry::delay_text(spec.retry_delay)
                    );
                    (
                        End::Retry {
                            attempts: attempt,
                            busy,
                        },
                        Outcome::Retried(why),
                    )
                }
            }
        }
    }

    /// The run, on a task of its own: a panic in it is an internal error
    /// of this attempt, not the end of the consumer.
    async fn run_caught(&self, message: &Message) -> Result<Report, RunError> {
        let service = self.service.clone();
        let leases = self.leases.clone();
        let mut run = service.template.clone();
        run.source = SourceSpec::Pungi {
            location: message.location.clone(),
        };
        run.allowed_locations = Some(service.spec.allowed_locations.clone());
        let compose = message.compose_id.clone();
        let task = tokio::spawn(async move {
            injected_panic(&compose);
            service.runner.run_with(&run, &*leases).await
        });
        match task.await {
            Ok(result) => result,
            Err(e) => Err(RunError::new(
                ErrorKind::Internal,
                format!("internal error: the run stopped: {e}"),
            )),
        }
    }

    /// Ends the delivery as `end` says. `Err` when the channel cannot end
    /// it: the session must close the connection.
    async fn end(&self, delivery: &Delivery, end: End) -> Result<(), String> {
        let spec = &self.service.spec;
        let copied = match &end {
            End::Ack | End::HandBack => None,
            End::Retry { attempts, busy } => {
                Some(retry::send_back(&self.publisher, spec, delivery, *attempts, *busy).await)
            }
            End::SetAside(why) => {
                Some(retry::set_aside(&self.publisher, spec, delivery, why).await)
            }
        };
        let ack = match copied {
            None => end == End::Ack,
            Some(Ok(())) => true,
            Some(Err(e)) => {
                tracing::warn!("a copy of the message could not be published ({e:#}); handing the message back");
                false
            }
        };
        let done = match ack {
            true => delivery.ack(BasicAckOptions::default()).await,
            false => {
                let requeue = BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                };
                delivery.nack(requeue).await
            }
        };
        match done {
            Ok(true) => Ok(()),
            Ok(false) => Err("the delivery's channel is closed".into()),
            Err(e) => Err(format!("ending a delivery failed: {e}")),
        }
    }
}

/// A message that may be run: its compose and where it really is.
struct Message {
    compose_id: String,
    status: String,
    /// The checked location: the normalized URL or the real path.
    location: String,
}

/// Parses a body and checks its location: `Err` says why it is set aside.
fn read(spec: &crate::ConsumeSpec, body: &[u8]) -> Result<Message, String> {
    let m = messages::parse(body).map_err(|messages::Invalid(why)| why)?;
    let checked = spec
        .allowed_locations
        .check(&m.root, &|p| std::fs::canonicalize(p))
        .map_err(|why| format!("`location`: {}; refused", untrusted(&why)))?;
    let location = match checked {
        Checked::Url(u) => u,
        Checked::Path(p) => p.display().to_string(),
    };
    Ok(Message {
        compose_id: m.compose_id,
        status: m.status,
        location,
    })
}

/// A fault a test can ask a debug build for: `ARCHGATE_TEST_PANIC_RUN=ID`
/// makes the run of compose ID panic, as a bug in it would. Release
/// builds have no such switch.
fn injected_panic(compose: &str) {
    #[cfg(debug_assertions)]
    if std::env::var("ARCHGATE_TEST_PANIC_RUN").is_ok_and(|c| c == compose) {
        panic!("injected fault: the run of {compose} panics (ARCHGATE_TEST_PANIC_RUN)");
    }
    let _ = compose;
}

/// How a run ended, for the message.
enum Ended {
    Done(Report),
    /// Another consumer held a target too long: not a failure.
    Busy(String),
    /// An error, of the first kind that matters.
    Failed(ErrorKind, String),
}

fn ended(result: Result<Report, RunError>) -> Ended {
    let report = match result {
        Ok(report) => report,
        Err(e) if e.kind == ErrorKind::Busy => return Ended::Busy(e.message),
        Err(e) => return Ended::Failed(e.kind, format!("{} error: {e}", e.kind.as_str())),
    };
    let errors: Vec<_> = report
        .targets
        .iter()
        .filter(|t| t.decision == Decision::Error)
        .collect();
    if errors.is_empty() {
        return Ended::Done(report);
    }
    // A kind no retry mends decides; else the first.
    let kinds = errors
        .iter()
        .map(|t| t.error_kind.unwrap_or(ErrorKind::Internal));
    let kind = kinds
        .clone()
        .find(|k| !worth_retrying(*k))
        .or_else(|| kinds.clone().next())
        .unwrap_or(ErrorKind::Internal);
    let text: Vec<String> = errors
        .iter()
        .map(|t| format!("{}: {}", t.reference, t.reasons.join("; ")))
        .collect();
    Ended::Failed(kind, text.join(" | "))
}

/// Each target of a finished run counted; a refusal logged at WARN with
/// its reasons, a stale target at INFO.
fn log_targets(service: &Service, report: &Report) {
    for t in &report.targets {
        service.metrics.target(t.decision.as_str());
        if t.decision != Decision::Refused {
            continue;
        }
        let reasons = t.reasons.join("; ");
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
        Outcome::Retried(why) => {
            service.metrics.message("retried");
            tracing::warn!(compose, outcome = "retried", "{why}");
        }
        Outcome::Busy(why) => {
            service.metrics.message("busy");
            tracing::warn!(compose, outcome = "busy", "{why}");
        }
        Outcome::Failed(why) => {
            service.metrics.message("failed");
            tracing::error!(compose, outcome = "failed", "{why}");
        }
        Outcome::Invalid(why) => {
            service.metrics.message("invalid");
            tracing::error!(compose, outcome = "invalid", "{why}");
        }
    }
}
