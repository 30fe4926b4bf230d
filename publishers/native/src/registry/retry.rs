//! Errors and the retry policy: which failures are worth another try
//! (408, 429, 5xx, dropped or silent connections), bounded backoff within a
//! deadline, a host that did not answer failing the rest of the run fast,
//! and answers read no further than a limit.

use std::future::Future;
use std::time::Duration;

use anyhow::{anyhow, Result};
use reqwest::header::RETRY_AFTER;
use reqwest::{Response, StatusCode};

use super::{header, Registry};

/// Bounded exponential backoff for transient failures.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Tries in all, the first included.
    pub attempts: u32,
    /// The first wait between tries; it doubles.
    pub base_delay: Duration,
    /// The longest wait between tries.
    pub max_delay: Duration,
    /// One operation (all its tries, and the waits between them) gives up
    /// after this long; so does a single try of anything but an upload.
    pub deadline: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(30),
            deadline: Duration::from_secs(60),
        }
    }
}

/// Why one try failed: worth another try, or not.
pub(super) enum Failure {
    Transient {
        why: String,
        retry_after: Option<Duration>,
        /// Nothing answered (no connection, no answer in time), as opposed
        /// to an answer that says "later" (5xx, 429).
        unreachable: bool,
    },
    Fatal(anyhow::Error),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Transient { why, .. } => f.write_str(why),
            Failure::Fatal(e) => write!(f, "{e:#}"),
        }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Fatal(e)
    }
}

/// The whole chain of an error, one cause after another.
pub(super) fn chain_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

pub(super) fn from_reqwest(e: reqwest::Error) -> Failure {
    let why = e.to_string();
    let why = match std::error::Error::source(&e) {
        Some(source) => format!("{why}: {source}"),
        None => why,
    };
    if e.is_connect() || e.is_timeout() || e.is_request() || e.is_body() || e.is_decode() {
        Failure::Transient {
            why,
            retry_after: None,
            unreachable: e.is_connect() || e.is_timeout() || e.is_request(),
        }
    } else {
        Failure::Fatal(anyhow!(why))
    }
}

impl Registry {
    /// Runs one operation, again on transient failures, with backoff, each
    /// try within the deadline; the whole within the deadline too.
    pub(super) async fn retrying<T, F, Fut>(&self, what: &str, op: F) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        self.retrying_with(what, true, op).await
    }

    /// [`Registry::retrying`]; `bounded_tries` false for uploads, whose one
    /// try may take as long as the blob takes (the deadline still bounds
    /// the retries).
    pub(super) async fn retrying_with<T, F, Fut>(
        &self,
        what: &str,
        bounded_tries: bool,
        op: F,
    ) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let policy = self.settings.retry;
        if let Some(why) = self.seen.down.lock().expect("lock").clone() {
            return Err(crate::kinded(
                archgate_core::ErrorKind::Transient,
                format!(
                    "{}: {what}: not tried: the registry is unreachable ({why})",
                    self.host
                ),
            ));
        }
        let started = std::time::Instant::now();
        let mut attempt = 1;
        loop {
            let result = if bounded_tries {
                match tokio::time::timeout(policy.deadline, op()).await {
                    Ok(r) => r,
                    Err(_) => Err(Failure::Transient {
                        why: format!("no answer within {} s", policy.deadline.as_secs()),
                        retry_after: None,
                        unreachable: true,
                    }),
                }
            } else {
                op().await
            };
            match result {
                Ok(v) => return Ok(v),
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Transient {
                    why,
                    retry_after,
                    unreachable,
                }) => {
                    let backoff = policy.base_delay.saturating_mul(1 << (attempt - 1).min(16));
                    let delay = retry_after.unwrap_or(backoff).min(policy.max_delay);
                    let out_of_time = started.elapsed() + delay > policy.deadline;
                    if attempt >= policy.attempts || out_of_time {
                        let secs = started.elapsed().as_secs_f32();
                        // Unreachable (nothing answered): the other targets
                        // of this run do not wait for it again.
                        if unreachable {
                            *self.seen.down.lock().expect("lock") = Some(format!(
                                "{why}; gave up after {attempt} tries in {secs:.0} s"
                            ));
                        }
                        return Err(crate::kinded(
                            archgate_core::ErrorKind::Transient,
                            format!(
                                "{}: {what}: {why} (gave up after {attempt} tries in {secs:.0} s)",
                                self.host
                            ),
                        ));
                    }
                    tracing::warn!(host = %self.host, attempt, delay_ms = delay.as_millis() as u64, "{what}: {why}; retrying");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
            }
        }
    }
}

/// 408, 429 and 5xx are worth another try; `Retry-After` (seconds) is honoured.
pub(super) fn transient_status(resp: &Response) -> Option<Failure> {
    let s = resp.status();
    if s == StatusCode::REQUEST_TIMEOUT || s == StatusCode::TOO_MANY_REQUESTS || s.is_server_error()
    {
        let retry_after = header(resp.headers(), RETRY_AFTER.as_str())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        return Some(Failure::Transient {
            why: format!("{} from {}", s, resp.url().path()),
            retry_after,
            unreachable: false,
        });
    }
    None
}

pub(super) async fn read_limited(resp: Response, limit: u64) -> Result<Vec<u8>, Failure> {
    if resp.content_length().is_some_and(|n| n > limit) {
        return Err(Failure::Fatal(anyhow!(
            "{}: answer larger than {limit} bytes",
            resp.url()
        )));
    }
    // Read as it comes, never past the limit: an endless (chunked) answer
    // stops here. A body cut short is transient: another try reads it again.
    let url = resp.url().to_string();
    let mut resp = resp;
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(from_reqwest)? {
        body.extend_from_slice(&chunk);
        if body.len() as u64 > limit {
            return Err(Failure::Fatal(anyhow!(
                "{url}: answer larger than {limit} bytes"
            )));
        }
    }
    Ok(body)
}

impl Registry {
    /// An answer `what` did not expect: fatal, with the registry's error
    /// text (`HOST/WHAT: STATUS: message`), of the kind that says who
    /// mends it ([`denial_kind`]).
    pub(super) async fn refused(&self, what: &str, resp: Response) -> Failure {
        let status = resp.status();
        let text = error_text(resp).await;
        let why = format!("{}/{what}: {text}", self.host);
        match denial_kind(status, &text) {
            Some(kind) => Failure::Fatal(crate::kinded(kind, why)),
            None => Failure::Fatal(anyhow!(why)),
        }
    }
}

/// Who mends a refusal: a 401, or a 403 that denies our credentials, is
/// ours (`auth`: another try is refused the same way until the operator
/// mends them); a 403 that says a quota or limit is reached is the
/// registry's (`external`: it clears in hours, by itself or by its
/// owners). Other answers say nothing of that (`None`).
pub(super) fn denial_kind(
    status: reqwest::StatusCode,
    text: &str,
) -> Option<archgate_core::ErrorKind> {
    use archgate_core::ErrorKind::{Auth, External};
    let lower = text.to_ascii_lowercase();
    let limit = ["quota", "limit", "exceeded", "toomanyrequests", "storage"]
        .iter()
        .any(|w| lower.contains(w));
    match status {
        reqwest::StatusCode::UNAUTHORIZED => Some(Auth),
        reqwest::StatusCode::FORBIDDEN if limit => Some(External),
        reqwest::StatusCode::FORBIDDEN => Some(Auth),
        _ => None,
    }
}

/// `STATUS CODE: message` from a registry error answer.
pub(super) async fn error_text(resp: Response) -> String {
    let status = resp.status();
    // An error answer is read no further than 64 KiB.
    let body = match read_limited(resp, 64 << 10).await {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(_) => String::new(),
    };
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<ErrorItem>,
    }
    #[derive(serde::Deserialize)]
    struct ErrorItem {
        code: Option<String>,
        message: Option<String>,
    }
    match serde_json::from_str::<Errors>(&body) {
        Ok(e) if !e.errors.is_empty() => {
            let parts: Vec<String> = e
                .errors
                .iter()
                .map(|i| {
                    format!(
                        "{} {}",
                        i.code.as_deref().unwrap_or(""),
                        i.message.as_deref().unwrap_or("")
                    )
                    .trim()
                    .to_string()
                })
                .collect();
            format!("{status}: {}", archgate_core::untrusted(&parts.join("; ")))
        }
        _ => {
            let body: String = body.split_whitespace().collect::<Vec<_>>().join(" ");
            let body: String = body.chars().take(200).collect();
            if body.is_empty() {
                status.to_string()
            } else {
                format!("{status}: {}", archgate_core::untrusted(&body))
            }
        }
    }
}

#[cfg(test)]
mod denials {
    use super::*;
    use archgate_core::ErrorKind::{Auth, External};
    use reqwest::StatusCode;

    #[test]
    fn who_mends_a_refusal() {
        let denied = "403 Forbidden: DENIED requested access to the resource is denied";
        assert_eq!(denial_kind(StatusCode::FORBIDDEN, denied), Some(Auth));
        let quota = "403 Forbidden: DENIED Quota has been exceeded on namespace fedora";
        assert_eq!(denial_kind(StatusCode::FORBIDDEN, quota), Some(External));
        assert_eq!(denial_kind(StatusCode::UNAUTHORIZED, "401"), Some(Auth));
        assert_eq!(denial_kind(StatusCode::BAD_REQUEST, "400"), None);
    }
}
