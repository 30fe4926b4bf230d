//! A registry client for what archgate needs of the distribution API:
//! manifests by tag and digest (every media type in `Accept`), blob checks,
//! streamed uploads, cross-repository mounts, with the token and basic auth
//! flows, and retries.
//!
//! Written on reqwest rather than on oci-client: archgate needs the
//! response headers (`Retry-After`, `Docker-Content-Digest`), a 202 answer to
//! a mount, a fresh token on a 401 in the middle of a publish, and a retry
//! policy around whole operations; oci-client hides or refuses each of these.
//!
//! In parts: [`session`] (the HTTP client, first contact, authentication,
//! tokens, TLS problems), [`retry`] (errors and the retry policy),
//! [`manifests`], [`blobs`] (uploads and mounts), [`known`] (what one view
//! knows) and [`repo`] (a repository as a `Store`).

mod blobs;
mod bound;
mod known;
mod manifests;
mod repo;
mod retry;
mod session;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::Result;
use reqwest::header::{HeaderMap, CONTENT_TYPE};

use crate::auth::{Challenge, Credentials, Secret};

pub use repo::RegistryRepo;
pub use retry::RetryPolicy;

/// How a registry is reached.
#[derive(Debug, Clone)]
pub struct RegistrySettings {
    /// Verify TLS certificates; when false, plain HTTP is also tried.
    pub tls_verify: bool,
    /// Credentials, if any (else anonymous).
    pub credentials: Option<Credentials>,
    /// CAs and a client certificate, from the registry's cert dir.
    pub tls: crate::tls::TlsFiles,
    /// How transient failures are retried.
    pub retry: RetryPolicy,
}

#[derive(Default)]
struct State {
    /// `https://HOST` or `http://HOST`, once known.
    base: Option<String>,
    challenge: Option<Challenge>,
    /// Bearer tokens by scope.
    tokens: HashMap<String, Secret>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("host", &self.host)
            .finish()
    }
}

/// One registry host. The HTTP client (its connections) and the tokens are
/// shared by every [`Registry::view`]; what is known to exist where, and the
/// documents already read, belong to one view (one run), since a registry
/// may change between runs.
pub struct Registry {
    host: String,
    http: reqwest::Client,
    /// For blob bodies: HTTP/1.1 only, a connection each. Over HTTP/2 every
    /// request shares one connection and its flow-control window (1 MB at
    /// docker-registry: a megabyte per round trip for all uploads
    /// together), which would cap uploads far below a fast link; small
    /// requests multiplex there at no cost.
    http_blobs: reqwest::Client,
    settings: Arc<RegistrySettings>,
    state: Arc<tokio::sync::Mutex<State>>,
    /// How many requests may be in flight to the host, across views.
    limit: Arc<bound::Bound>,
    /// Image-manifest and index PUTs kept apart, per repository, across
    /// views (see [`known::Phases`]).
    phases: Arc<known::Phases>,
    /// What this view (one run) knows.
    seen: known::Seen,
    /// The connections this view will want at first contact.
    expect: Expect,
    /// This view's run: once tripped, nothing more is sent.
    fence: Option<crate::Fence>,
}

/// How many requests a run will send at once right after first contact,
/// and how many blob uploads: connections opened beside the first contact.
#[derive(Default)]
struct Expect {
    requests: AtomicUsize,
    uploads: AtomicUsize,
}

impl Expect {
    /// The counts, once (first contact takes them).
    fn take(&self) -> (usize, usize) {
        (
            self.requests.swap(0, Ordering::Relaxed),
            self.uploads.swap(0, Ordering::Relaxed),
        )
    }
}

impl Registry {
    /// A client for `host` (`HOST[:PORT]`).
    pub fn new(host: &str, settings: RegistrySettings) -> Result<Registry> {
        let http = session::client(host, &settings, None, false)?;
        let http_blobs = session::client(host, &settings, None, true)?;
        Ok(Registry {
            host: host.to_string(),
            http,
            http_blobs,
            settings: Arc::new(settings),
            state: Default::default(),
            limit: Default::default(),
            phases: Default::default(),
            seen: Default::default(),
            expect: Default::default(),
            fence: None,
        })
    }

    /// A view for one run: the same connections, tokens and request bound,
    /// nothing known yet about what is where.
    pub fn view(&self) -> Registry {
        Registry {
            host: self.host.clone(),
            http: self.http.clone(),
            http_blobs: self.http_blobs.clone(),
            settings: self.settings.clone(),
            state: self.state.clone(),
            limit: self.limit.clone(),
            phases: self.phases.clone(),
            seen: Default::default(),
            expect: Default::default(),
            fence: None,
        }
    }

    /// This view, sending nothing once `fence` is tripped (a request in
    /// flight then is dropped).
    pub fn fenced(mut self, fence: crate::Fence) -> Registry {
        self.fence = Some(fence);
        self
    }

    /// Says what this view will send at once right after its first contact
    /// with the registry: `requests` small requests (at most the starting
    /// bound of requests in flight counts) and `uploads` blob uploads. First
    /// contact then opens that many connections beside its own, in the same
    /// round trips. Nothing happens when the client has made first contact
    /// already (an earlier run's connections serve).
    pub fn expect(&self, requests: usize, uploads: usize) {
        self.expect
            .requests
            .store(requests.min(bound::START), Ordering::Relaxed);
        self.expect
            .uploads
            .store(uploads.min(bound::START), Ordering::Relaxed);
    }

    /// Waits for, and holds, this view's one flight for `key`.
    pub async fn single_flight(&self, key: String) -> tokio::sync::OwnedMutexGuard<()> {
        self.flight(key).lock_owned().await
    }

    /// This view's one flight for `key` if nobody holds it; `None` if
    /// somebody does.
    pub fn try_single_flight(&self, key: String) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        self.flight(key).try_lock_owned().ok()
    }

    fn flight(&self, key: String) -> Arc<tokio::sync::Mutex<()>> {
        let mut flights = self.seen.flights.lock().expect("lock");
        flights.entry(key).or_default().clone()
    }

    /// `HOST[:PORT]`.
    pub fn host(&self) -> &str {
        &self.host
    }
}

fn pull(repo: &str) -> String {
    format!("repository:{repo}:pull")
}

fn push(repo: &str) -> String {
    format!("repository:{repo}:pull,push")
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn content_type(headers: &HeaderMap) -> String {
    header(headers, CONTENT_TYPE.as_str())
        .map(|v| v.split(';').next().unwrap_or("").trim().to_string())
        .unwrap_or_default()
}

fn absolute(base: &str, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        location.to_string()
    } else {
        format!("{base}{location}")
    }
}
