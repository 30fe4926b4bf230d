//! Artifacts over HTTP: a GET whose every redirect hop is checked against
//! `allowed-locations`, and a body that resumes a broken transfer where it
//! stopped (a Range request, `If-Range` the first answer's validator) when
//! the server offers ranges. Nothing here writes to disk.

use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::resolved::{ReadEnv, ReadFailure};

/// How many times one transfer is resumed before it counts as broken.
const RESUMES: u32 = 3;

/// An artifact's bytes as they arrive over HTTP.
pub(crate) struct Body {
    url: String,
    env: ReadEnv,
    resp: reqwest::blocking::Response,
    /// Bytes read so far (where a resumed transfer starts).
    at: u64,
    /// Whether the server offers Range requests (`Accept-Ranges: bytes`).
    pub(crate) ranges: bool,
    /// The first answer's `ETag` (else `Last-Modified`): a resumed transfer
    /// is of the same file or fails.
    validator: Option<String>,
    resumes: u32,
    /// The body's length, when the server said.
    pub(crate) length: Option<u64>,
    /// Set when the transfer failed (the server's or the network's fault,
    /// not the bytes').
    pub(crate) failed: Arc<AtomicBool>,
}

impl Body {
    /// GETs `url` from its start.
    pub(crate) fn get(url: &str, env: &ReadEnv) -> Result<Body, ReadFailure> {
        let resp = fetch(url, env, None)?;
        let header = |name: reqwest::header::HeaderName| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let ranges = header(reqwest::header::ACCEPT_RANGES).is_some_and(|v| v.contains("bytes"));
        let validator =
            header(reqwest::header::ETAG).or_else(|| header(reqwest::header::LAST_MODIFIED));
        Ok(Body {
            url: url.to_string(),
            env: env.clone(),
            length: resp.content_length(),
            resp,
            at: 0,
            ranges,
            validator,
            resumes: 0,
            failed: Arc::default(),
        })
    }

    /// The rest of the file, from where the transfer broke.
    fn resume(&mut self, why: &io::Error) -> io::Result<()> {
        self.resumes += 1;
        tracing::warn!(url = %self.url, at = self.at, "the transfer broke ({why}); resuming it with a Range request");
        let from = Some((self.at, self.validator.as_deref()));
        let resp =
            fetch(&self.url, &self.env, from).map_err(|e| io::Error::other(e.to_string()))?;
        let start = resp
            .headers()
            .get(reqwest::header::CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("bytes "))
            .and_then(|v| v.split('-').next())
            .and_then(|v| v.parse::<u64>().ok());
        if resp.status() != reqwest::StatusCode::PARTIAL_CONTENT || start != Some(self.at) {
            return Err(io::Error::other(format!(
                "the server did not resume at byte {} (HTTP {}): the file changed or ranges are refused",
                self.at,
                resp.status()
            )));
        }
        self.resp = resp;
        Ok(())
    }
}

impl Read for Body {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let got = match self.resp.read(buf) {
                // Closed before the length it said: broken too.
                Ok(0) if !buf.is_empty() && self.length.is_some_and(|n| self.at < n) => {
                    Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed early"))
                }
                got => got,
            };
            match got {
                Ok(n) => {
                    self.at += n as u64;
                    return Ok(n);
                }
                Err(e) if self.ranges && self.resumes < RESUMES => {
                    if let Err(e) = self.resume(&e) {
                        self.failed.store(true, Ordering::Relaxed);
                        return Err(e);
                    }
                }
                Err(e) => {
                    self.failed.store(true, Ordering::Relaxed);
                    return Err(e);
                }
            }
        }
    }
}

/// The answer to a GET of `url` (from byte `from.0` on, if that file is
/// still the one `from.1` names), every redirect hop inside
/// `allowed-locations`; a refused location or a 4xx is the artifact's
/// fault (unusable), a failed connection, a timeout, a 5xx or 429 the
/// server's or the network's (transient).
pub(crate) fn fetch(
    url: &str,
    env: &ReadEnv,
    from: Option<(u64, Option<&str>)>,
) -> Result<reqwest::blocking::Response, ReadFailure> {
    // The blocking client's timeout holds for each read: a transfer that
    // stalls that long ends, as a server's trouble (transient).
    let read_timeout = env.stall_limit();
    let redirects = match env.allowed.clone() {
        None => reqwest::redirect::Policy::default(),
        Some(allowed) => {
            allowed
                .check_url(url)
                .map_err(|why| ReadFailure::Unusable(format!("{url}: refused: {why}")))?;
            reqwest::redirect::Policy::custom(move |hop| {
                match allowed.redirect(hop.url().as_str(), hop.previous().len()) {
                    Ok(()) => hop.follow(),
                    Err(why) => hop.error(why),
                }
            })
        }
    };
    let sent = reqwest::blocking::Client::builder()
        .redirect(redirects)
        .user_agent(concat!("archgate/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(std::time::Duration::from_secs(30))
        .timeout(read_timeout)
        .build()
        .and_then(|c| {
            let mut req = c.get(url);
            if let Some((at, validator)) = from {
                req = req.header(reqwest::header::RANGE, format!("bytes={at}-"));
                if let Some(v) = validator {
                    req = req.header(reqwest::header::IF_RANGE, v);
                }
            }
            req.send()
        });
    let resp = match sent {
        Ok(resp) => resp,
        Err(e) if e.is_redirect() => {
            return Err(ReadFailure::Unusable(format!("{url}: cannot fetch: {e}")))
        }
        Err(e) => return Err(transient(format!("{url}: cannot fetch: {e}"))),
    };
    let status = resp.status();
    if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        return Err(transient(format!("{url}: HTTP {status}")));
    }
    if !status.is_success() {
        return Err(ReadFailure::Unusable(format!("{url}: HTTP {status}")));
    }
    Ok(resp)
}

/// A fetch that another try later may mend: the server's or the
/// network's trouble.
pub(crate) fn transient(why: String) -> ReadFailure {
    ReadFailure::Later(archgate_core::ErrorKind::Transient, why)
}
