//! A registry client for what archgate needs of the distribution API:
//! manifests by tag and digest (every media type in `Accept`), blob checks,
//! streamed uploads, cross-repository mounts, with the token and basic auth
//! flows, and retries.
//!
//! Written on reqwest rather than on oci-client: archgate needs the
//! response headers (`Retry-After`, `Docker-Content-Digest`), a 202 answer to
//! a mount, a fresh token on a 401 in the middle of a publish, and a retry
//! policy around whole operations; oci-client hides or refuses each of these.

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use reqwest::header::{
    HeaderMap, ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, LOCATION, RETRY_AFTER, WWW_AUTHENTICATE,
};
use reqwest::{Method, RequestBuilder, Response, StatusCode};

use crate::auth::{parse_challenge, Challenge, Credentials, Secret};
use crate::oci::MAX_DOCUMENT;
use crate::oci::{sha256_digest, Descriptor};
use crate::transport::Store;

/// Every manifest media type archgate understands; the distribution registry
/// answers 404 for a type that is not listed.
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/// How a registry is reached.
#[derive(Debug, Clone)]
pub struct RegistrySettings {
    /// Verify TLS certificates; when false, plain HTTP is also tried.
    pub tls_verify: bool,
    pub credentials: Option<Credentials>,
    /// CAs and a client certificate, from the registry's cert dir.
    pub tls: crate::tls::TlsFiles,
    pub retry: RetryPolicy,
}

/// Bounded exponential backoff for transient failures.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Tries in all, the first included.
    pub attempts: u32,
    pub base_delay: Duration,
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
enum Failure {
    Transient {
        why: String,
        retry_after: Option<Duration>,
        /// Nothing answered (no connection, no answer in time), as opposed
        /// to an answer that says "later" (5xx, 429).
        unreachable: bool,
    },
    Fatal(anyhow::Error),
}

/// How long a connection may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Fatal(e)
    }
}

/// The whole chain of an error, one cause after another.
fn chain_text(e: &(dyn std::error::Error + 'static)) -> String {
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

fn from_reqwest(e: reqwest::Error) -> Failure {
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

#[derive(Default)]
struct State {
    /// `https://HOST` or `http://HOST`, once known.
    base: Option<String>,
    challenge: Option<Challenge>,
    /// Bearer tokens by scope.
    tokens: HashMap<String, Secret>,
}

/// One registry host. The HTTP client (its connections) and the tokens are
/// shared by every [`Registry::view`]; what is known to exist where, and the
/// documents already read, belong to one view (one run), since a registry
/// may change between runs.
pub struct Registry {
    host: String,
    http: reqwest::Client,
    settings: Arc<RegistrySettings>,
    state: Arc<tokio::sync::Mutex<State>>,
    /// At most this many requests in flight to the host, across views.
    limit: Arc<tokio::sync::Semaphore>,
    /// Where a blob is known to be, for cross-repository mounts.
    known: Mutex<HashMap<String, String>>,
    /// (repository, digest) of blobs and manifests known to exist there.
    present: Mutex<std::collections::HashSet<(String, String)>>,
    /// Manifests and configs read, by (repository, digest): immutable.
    documents: Mutex<HashMap<(String, String), Vec<u8>>>,
    /// One check-then-push at a time per key (a blob, an archive pass), so
    /// that concurrent targets do not push or mount the same thing twice.
    flights: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Set when the registry did not answer at all: why. The rest of the
    /// run fails fast instead of waiting for it again.
    down: Mutex<Option<String>>,
}

/// Requests in flight to one registry host at once.
pub const REQUESTS_PER_REGISTRY: usize = 16;

impl Registry {
    pub fn new(host: &str, settings: RegistrySettings) -> Result<Registry> {
        let http = client(host, &settings, None)?;
        Ok(Registry {
            host: host.to_string(),
            http,
            settings: Arc::new(settings),
            state: Default::default(),
            limit: Arc::new(tokio::sync::Semaphore::new(REQUESTS_PER_REGISTRY)),
            known: Default::default(),
            present: Default::default(),
            documents: Default::default(),
            flights: Default::default(),
            down: Default::default(),
        })
    }

    /// A view for one run: the same connections, tokens and request bound,
    /// nothing known yet about what is where.
    pub fn view(&self) -> Registry {
        Registry {
            host: self.host.clone(),
            http: self.http.clone(),
            settings: self.settings.clone(),
            state: self.state.clone(),
            limit: self.limit.clone(),
            known: Default::default(),
            present: Default::default(),
            documents: Default::default(),
            flights: Default::default(),
            down: Default::default(),
        }
    }

    /// Waits for, and holds, this view's one flight for `key`.
    pub async fn single_flight(&self, key: String) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = self
            .flights
            .lock()
            .expect("lock")
            .entry(key)
            .or_default()
            .clone();
        lock.lock_owned().await
    }

    /// Why a first HTTPS contact failed, when it was TLS: with TLS 1.3 a
    /// registry's refusal of the client certificate comes after the client
    /// thinks the handshake is done, and the request often fails without
    /// the alert. A TLS 1.2 handshake ends with the alert itself, so one
    /// such probe (made only after a failure) tells what happened.
    async fn diagnose_tls(&self, url: &str) -> Option<String> {
        let probe = client(
            &self.host,
            &self.settings,
            Some(reqwest::tls::Version::TLS_1_2),
        )
        .ok()?;
        match probe.get(url).send().await {
            Ok(_) => None,
            Err(e) => self.tls_problem(&e),
        }
    }
}

/// An HTTP client for a registry: its CAs, client certificate and checks.
fn client(
    host: &str,
    settings: &RegistrySettings,
    max_tls: Option<reqwest::tls::Version>,
) -> Result<reqwest::Client> {
    {
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("archgate/", env!("CARGO_PKG_VERSION")))
            .danger_accept_invalid_certs(!settings.tls_verify)
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(settings.retry.deadline);
        let mut cas = Vec::new();
        for pem in &settings.tls.cas {
            cas.extend(
                reqwest::Certificate::from_pem_bundle(pem)
                    .map_err(|e| anyhow!("{host}: a CA of the cert dir: {e}"))?,
            );
        }
        if !cas.is_empty() && settings.tls_verify {
            builder = builder.tls_certs_merge(cas);
        }
        if let Some(pem) = &settings.tls.identity {
            let identity = reqwest::Identity::from_pem(pem)
                .map_err(|e| anyhow!("{host}: the client certificate of the cert dir: {e}"))?;
            builder = builder.identity(identity);
        }
        if let Some(v) = max_tls {
            builder = builder.tls_version_max(v);
        }
        builder
            .build()
            .map_err(|e| anyhow!("{host}: cannot set up an HTTP client: {e}"))
    }
}

impl Registry {
    pub fn host(&self) -> &str {
        &self.host
    }

    /// A failed request: a TLS problem is fatal (another try would fail the
    /// same way) and says what failed and what to do; the rest as
    /// [`from_reqwest`] says.
    fn failure(&self, e: reqwest::Error) -> Failure {
        match self.tls_problem(&e) {
            Some(why) => Failure::Fatal(crate::kinded(archgate_core::ErrorKind::Auth, why)),
            None => from_reqwest(e),
        }
    }

    /// The message for a TLS problem behind `e`, naming the host.
    fn tls_problem(&self, e: &reqwest::Error) -> Option<String> {
        let text = chain_text(e);
        let tls = &self.settings.tls;
        let why = crate::tls::explain(&text, tls.dir.as_deref(), tls.identity.is_some())?;
        Some(format!("{}: {why} ({text})", self.host))
    }

    /// Who archgate is on this registry, for messages: never the secret.
    fn who(&self) -> String {
        let who = self.settings.credentials.as_ref().map(Credentials::who);
        who.unwrap_or_else(|| "no credentials".into())
    }

    /// Runs one operation, again on transient failures, with backoff, each
    /// try within the deadline; the whole within the deadline too.
    async fn retrying<T, F, Fut>(&self, what: &str, op: F) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        self.retrying_with(what, true, op).await
    }

    /// [`Registry::retrying`]; `bounded_tries` false for uploads, whose one
    /// try may take as long as the blob takes (the deadline still bounds
    /// the retries).
    async fn retrying_with<T, F, Fut>(&self, what: &str, bounded_tries: bool, op: F) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let policy = self.settings.retry;
        if let Some(why) = self.down.lock().expect("lock").clone() {
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
                            *self.down.lock().expect("lock") = Some(format!(
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

    /// The scheme and host, found by a first `GET /v2/`; also learns how the
    /// registry wants to be authenticated.
    async fn base(&self) -> Result<String, Failure> {
        let mut state = self.state.lock().await;
        if let Some(base) = &state.base {
            return Ok(base.clone());
        }
        let https = format!("https://{}", self.host);
        let (base, resp) = match self.http.get(format!("{https}/v2/")).send().await {
            Ok(resp) => (https, resp),
            Err(e) => {
                if let Some(why) = self.tls_problem(&e) {
                    return Err(Failure::Fatal(crate::kinded(
                        archgate_core::ErrorKind::Auth,
                        why,
                    )));
                }
                let connecting = e.is_connect() || e.is_request();
                if connecting {
                    if let Some(why) = self.diagnose_tls(&format!("{https}/v2/")).await {
                        return Err(Failure::Fatal(crate::kinded(
                            archgate_core::ErrorKind::Auth,
                            why,
                        )));
                    }
                }
                if connecting && !self.settings.tls_verify {
                    let http = format!("http://{}", self.host);
                    tracing::debug!(host = %self.host, "no HTTPS ({e}); trying plain HTTP because tls-verify is off");
                    let resp = self
                        .http
                        .get(format!("{http}/v2/"))
                        .send()
                        .await
                        .map_err(|e| self.failure(e))?;
                    (http, resp)
                } else {
                    let hint = if connecting {
                        "; if it speaks plain HTTP or has a self-signed certificate, set tls-verify = false for it"
                    } else {
                        ""
                    };
                    return Err(match from_reqwest(e) {
                        Failure::Transient {
                            why,
                            retry_after,
                            unreachable,
                        } => Failure::Transient {
                            why: format!("{why}{hint}"),
                            retry_after,
                            unreachable,
                        },
                        fatal => fatal,
                    });
                }
            }
        };
        if let Some(f) = transient_status(&resp) {
            return Err(f);
        }
        if resp.status() == StatusCode::UNAUTHORIZED {
            state.challenge = challenge_of(resp.headers());
        }
        state.base = Some(base.clone());
        Ok(base)
    }

    /// Sends a request with authentication, fetching or refreshing a token
    /// once on a 401. 408, 429 and 5xx come back as transient failures.
    async fn send(
        &self,
        scopes: &[String],
        make: &(dyn Fn(&str) -> RequestBuilder + Sync),
    ) -> Result<Response, Failure> {
        let base = self.base().await?;
        let key = scopes.join(" ");
        let mut refreshed = false;
        let _permit = self
            .limit
            .acquire()
            .await
            .map_err(|e| Failure::Fatal(anyhow!(e)))?;
        loop {
            let req = self.authorize(make(&base), scopes, &key).await?;
            let resp = req.send().await.map_err(|e| self.failure(e))?;
            if resp.status() == StatusCode::UNAUTHORIZED {
                let mut state = self.state.lock().await;
                if let Some(c) = challenge_of(resp.headers()) {
                    state.challenge = Some(c);
                }
                state.tokens.remove(&key);
                drop(state);
                if !refreshed {
                    tracing::debug!(host = %self.host, "401: authenticating again");
                    refreshed = true;
                    continue;
                }
                let who = self.who();
                return Err(Failure::Fatal(crate::kinded(
                    archgate_core::ErrorKind::Auth,
                    format!(
                        "{}: authentication failed ({who}): {}",
                        self.host,
                        error_text(resp).await
                    ),
                )));
            }
            if let Some(f) = transient_status(&resp) {
                return Err(f);
            }
            return Ok(resp);
        }
    }

    async fn authorize(
        &self,
        req: RequestBuilder,
        scopes: &[String],
        key: &str,
    ) -> Result<RequestBuilder, Failure> {
        let challenge = self.state.lock().await.challenge.clone();
        match challenge {
            None => Ok(req),
            Some(Challenge::Basic) => Ok(match &self.settings.credentials {
                Some(Credentials::Basic { username, password }) => {
                    req.basic_auth(username, Some(password.expose()))
                }
                _ => req,
            }),
            Some(Challenge::Bearer { realm, service }) => {
                if let Some(token) = self.state.lock().await.tokens.get(key) {
                    return Ok(req.bearer_auth(token.expose()));
                }
                let token = self.fetch_token(&realm, service.as_deref(), scopes).await?;
                let req = req.bearer_auth(token.expose());
                self.state
                    .lock()
                    .await
                    .tokens
                    .insert(key.to_string(), token);
                Ok(req)
            }
        }
    }

    async fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scopes: &[String],
    ) -> Result<Secret, Failure> {
        let mut query: Vec<(&str, &str)> = scopes.iter().map(|s| ("scope", s.as_str())).collect();
        if let Some(s) = service {
            query.push(("service", s));
        }
        let req = match &self.settings.credentials {
            Some(Credentials::IdentityToken(t)) => {
                let mut form = vec![
                    ("grant_type", "refresh_token"),
                    ("refresh_token", t.expose()),
                    ("client_id", "archgate"),
                ];
                form.extend(query.iter().copied());
                self.http.post(realm).form(&form)
            }
            Some(Credentials::Basic { username, password }) => self
                .http
                .get(realm)
                .query(&query)
                .basic_auth(username, Some(password.expose())),
            None => self.http.get(realm).query(&query),
        };
        let resp = req.send().await.map_err(from_reqwest)?;
        if let Some(f) = transient_status(&resp) {
            return Err(f);
        }
        if !resp.status().is_success() {
            let who = self.who();
            return Err(Failure::Fatal(anyhow!(
                "{}: the token server refused {who}: {}",
                self.host,
                error_text(resp).await
            )));
        }
        #[derive(serde::Deserialize)]
        struct TokenResponse {
            token: Option<String>,
            access_token: Option<String>,
        }
        let body: TokenResponse = resp
            .json()
            .await
            .map_err(|e| Failure::Fatal(anyhow!("{}: token server answer: {e}", self.host)))?;
        body.token
            .or(body.access_token)
            .filter(|t| !t.is_empty())
            .map(Secret::new)
            .ok_or_else(|| {
                Failure::Fatal(anyhow!(
                    "{}: the token server answered without a token",
                    self.host
                ))
            })
    }

    /// What a tag or digest points to (HEAD), or `None`.
    pub async fn head_manifest(&self, repo: &str, reference: &str) -> Result<Option<Descriptor>> {
        let scopes = [pull(repo)];
        let what = format!("HEAD {repo}:{reference}");
        self.retrying(&what, || async {
            let resp = self
                .send(&scopes, &|base| {
                    self.http
                        .head(format!("{base}/v2/{repo}/manifests/{reference}"))
                        .header(ACCEPT, MANIFEST_ACCEPT)
                })
                .await?;
            match resp.status() {
                StatusCode::NOT_FOUND => Ok(None),
                s if s.is_success() => {
                    let headers = resp.headers();
                    let media_type = content_type(headers);
                    let size =
                        header(headers, CONTENT_LENGTH.as_str()).and_then(|v| v.parse().ok());
                    match (header(headers, "docker-content-digest"), size) {
                        (Some(digest), Some(size)) => {
                            let mut d = Descriptor::new(&media_type, b"");
                            d.digest = digest;
                            d.size = size;
                            d.check()?;
                            Ok(Some(d))
                        }
                        // No digest header: fetch the manifest and hash it.
                        _ => Ok(self
                            .get_manifest_raw(repo, reference)
                            .await
                            .map_err(Failure::Fatal)?
                            .map(|(d, _)| d)),
                    }
                }
                _ => Err(Failure::Fatal(anyhow!(
                    "{}/{what}: {}",
                    self.host,
                    error_text(resp).await
                ))),
            }
        })
        .await
    }

    async fn get_manifest_raw(
        &self,
        repo: &str,
        reference: &str,
    ) -> Result<Option<(Descriptor, Vec<u8>)>> {
        let scopes = [pull(repo)];
        let what = format!("GET manifest {repo}:{reference}");
        self.retrying(&what, || async {
            let resp = self
                .send(&scopes, &|base| {
                    self.http
                        .get(format!("{base}/v2/{repo}/manifests/{reference}"))
                        .header(ACCEPT, MANIFEST_ACCEPT)
                })
                .await?;
            if resp.status() == StatusCode::NOT_FOUND {
                return Ok(None);
            }
            if !resp.status().is_success() {
                return Err(Failure::Fatal(anyhow!(
                    "{}/{what}: {}",
                    self.host,
                    error_text(resp).await
                )));
            }
            let media_type = content_type(resp.headers());
            let body = read_limited(resp, MAX_DOCUMENT).await?;
            Ok(Some((Descriptor::new(&media_type, &body), body)))
        })
        .await
    }

    /// What a tag points to, and its bytes, in one GET; the bytes are kept
    /// for this view by digest. `None` when the tag does not exist.
    pub async fn get_tag(&self, repo: &str, tag: &str) -> Result<Option<(Descriptor, Vec<u8>)>> {
        let got = self.get_manifest_raw(repo, tag).await?;
        if let Some((desc, body)) = &got {
            self.keep(repo, &desc.digest, body);
        }
        Ok(got)
    }

    fn kept(&self, repo: &str, digest: &str) -> Option<Vec<u8>> {
        self.documents
            .lock()
            .expect("lock")
            .get(&(repo.to_string(), digest.to_string()))
            .cloned()
    }

    fn keep(&self, repo: &str, digest: &str, body: &[u8]) {
        self.documents
            .lock()
            .expect("lock")
            .insert((repo.to_string(), digest.to_string()), body.to_vec());
        self.mark_present(repo, digest);
    }

    fn is_present(&self, repo: &str, digest: &str) -> bool {
        self.present
            .lock()
            .expect("lock")
            .contains(&(repo.to_string(), digest.to_string()))
    }

    fn mark_present(&self, repo: &str, digest: &str) {
        self.present
            .lock()
            .expect("lock")
            .insert((repo.to_string(), digest.to_string()));
    }

    /// Whether a manifest exists by digest; what this view read, pushed or
    /// saw there is not asked about again.
    pub async fn manifest_exists(&self, repo: &str, desc: &Descriptor) -> Result<bool> {
        if self.is_present(repo, &desc.digest) {
            return Ok(true);
        }
        let found = self.head_manifest(repo, &desc.digest).await?.is_some();
        if found {
            self.mark_present(repo, &desc.digest);
        }
        Ok(found)
    }

    /// A manifest by its descriptor, checked (once per view).
    pub async fn get_manifest(&self, repo: &str, desc: &Descriptor) -> Result<Vec<u8>> {
        if let Some(body) = self.kept(repo, &desc.digest) {
            return Ok(body);
        }
        let (got, body) = self
            .get_manifest_raw(repo, &desc.digest)
            .await?
            .ok_or_else(|| anyhow!("{}/{repo}: manifest {} not found", self.host, desc.digest))?;
        if got.digest != desc.digest {
            bail!(
                "{}/{repo}: manifest {} has content {}",
                self.host,
                desc.digest,
                got.digest
            );
        }
        self.keep(repo, &desc.digest, &body);
        Ok(body)
    }

    pub async fn blob_exists(&self, repo: &str, digest: &str) -> Result<bool> {
        if self.is_present(repo, digest) {
            return Ok(true);
        }
        let scopes = [pull(repo)];
        let what = format!("HEAD blob {repo}@{digest}");
        let found = self
            .retrying(&what, || async {
                let resp = self
                    .send(&scopes, &|base| {
                        self.http.head(format!("{base}/v2/{repo}/blobs/{digest}"))
                    })
                    .await?;
                match resp.status() {
                    StatusCode::NOT_FOUND => Ok(false),
                    s if s.is_success() => Ok(true),
                    _ => Err(Failure::Fatal(anyhow!(
                        "{}/{what}: {}",
                        self.host,
                        error_text(resp).await
                    ))),
                }
            })
            .await?;
        if found {
            self.remember(digest, repo);
        }
        Ok(found)
    }

    /// A small blob (a config), checked (once per view).
    pub async fn get_blob(&self, repo: &str, desc: &Descriptor) -> Result<Vec<u8>> {
        if let Some(body) = self.kept(repo, &desc.digest) {
            return Ok(body);
        }
        if desc.size > MAX_DOCUMENT {
            bail!(
                "{}/{repo}: blob {} is too large to read whole ({} bytes)",
                self.host,
                desc.digest,
                desc.size
            );
        }
        let scopes = [pull(repo)];
        let what = format!("GET blob {repo}@{}", desc.digest);
        let body = self
            .retrying(&what, || async {
                let resp = self
                    .send(&scopes, &|base| {
                        self.http
                            .get(format!("{base}/v2/{repo}/blobs/{}", desc.digest))
                    })
                    .await?;
                if !resp.status().is_success() {
                    return Err(Failure::Fatal(anyhow!(
                        "{}/{what}: {}",
                        self.host,
                        error_text(resp).await
                    )));
                }
                read_limited(resp, MAX_DOCUMENT).await
            })
            .await?;
        let digest = sha256_digest(&body);
        if digest != desc.digest {
            bail!(
                "{}/{repo}: blob {} has content {digest}",
                self.host,
                desc.digest
            );
        }
        self.keep(repo, &desc.digest, &body);
        Ok(body)
    }

    fn remember(&self, digest: &str, repo: &str) {
        self.mark_present(repo, digest);
        self.known
            .lock()
            .expect("lock")
            .entry(digest.to_string())
            .or_insert_with(|| repo.to_string());
    }

    fn known_elsewhere(&self, digest: &str, repo: &str) -> Option<String> {
        self.known
            .lock()
            .expect("lock")
            .get(digest)
            .filter(|r| r.as_str() != repo)
            .cloned()
    }

    /// Mounts a blob from another repository; `false` when the registry
    /// declines (202: it opened an upload session instead, which is cancelled).
    pub async fn mount(&self, repo: &str, from: &str, digest: &str) -> Result<bool> {
        let scopes = [push(repo), pull(from)];
        let what = format!("mount {digest} from {from} into {repo}");
        let location = self
            .retrying(&what, || async {
                let resp = self
                    .send(&scopes, &|base| {
                        self.http
                            .post(format!("{base}/v2/{repo}/blobs/uploads/"))
                            .query(&[("mount", digest), ("from", from)])
                            .header(CONTENT_LENGTH, "0")
                    })
                    .await?;
                match resp.status() {
                    StatusCode::CREATED => Ok(None),
                    StatusCode::ACCEPTED => Ok(Some(header(resp.headers(), LOCATION.as_str()))),
                    _ => Err(Failure::Fatal(anyhow!(
                        "{}/{what}: {}",
                        self.host,
                        error_text(resp).await
                    ))),
                }
            })
            .await?;
        match location {
            None => {
                self.remember(digest, repo);
                Ok(true)
            }
            Some(location) => {
                tracing::debug!(host = %self.host, repo, digest, "mount declined (202); uploading instead");
                if let Some(location) = location {
                    let base = self
                        .base()
                        .await
                        .map_err(|_| anyhow!("{}: not reachable", self.host))?;
                    let url = absolute(&base, &location);
                    let _ = self
                        .send(&[push(repo)], &|_| self.http.request(Method::DELETE, &url))
                        .await;
                }
                Ok(false)
            }
        }
    }

    /// Opens an upload session; returns the URL to PUT the blob to.
    async fn start_upload(
        &self,
        repo: &str,
        desc: &Descriptor,
        what: &str,
    ) -> Result<String, Failure> {
        let resp = self
            .send(&[push(repo)], &|base| {
                self.http
                    .post(format!("{base}/v2/{repo}/blobs/uploads/"))
                    .header(CONTENT_LENGTH, "0")
            })
            .await?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(Failure::Fatal(anyhow!(
                "{}/{what}: {}",
                self.host,
                error_text(resp).await
            )));
        }
        let location = header(resp.headers(), LOCATION.as_str()).ok_or_else(|| {
            Failure::Fatal(anyhow!(
                "{}/{what}: no Location for the upload session",
                self.host
            ))
        })?;
        let url = absolute(&self.base().await?, &location);
        let sep = if url.contains('?') { '&' } else { '?' };
        Ok(format!("{url}{sep}digest={}", desc.digest))
    }

    /// PUTs the content of a session; 201 or a failure.
    async fn finish_upload(
        &self,
        repo: &str,
        url: &str,
        desc: &Descriptor,
        what: &str,
        body: &(dyn Fn() -> reqwest::Body + Sync),
    ) -> Result<(), Failure> {
        let resp = self
            .send(&[push(repo)], &|_| {
                self.http
                    .put(url)
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .header(CONTENT_LENGTH, desc.size)
                    .body(body())
            })
            .await?;
        if resp.status() != StatusCode::CREATED {
            return Err(Failure::Fatal(anyhow!(
                "{}/{what}: {}",
                self.host,
                error_text(resp).await
            )));
        }
        Ok(())
    }

    /// Uploads a blob whose content can be produced again for each try (a
    /// file, bytes): one POST for the session, one PUT with the whole
    /// content, both retried together on transient failures.
    pub async fn upload(
        &self,
        repo: &str,
        desc: &Descriptor,
        body: &(dyn Fn() -> reqwest::Body + Sync),
    ) -> Result<()> {
        let what = format!("upload {} to {repo}", desc.digest);
        self.retrying_with(&what, false, || async {
            let url = self.start_upload(repo, desc, &what).await?;
            self.finish_upload(repo, &url, desc, &what, body).await
        })
        .await?;
        self.remember(&desc.digest, repo);
        Ok(())
    }

    /// Uploads a blob arriving as a stream (from an archive pass). The
    /// session is retried; the stream can be sent only once.
    pub async fn upload_stream<C>(&self, repo: &str, desc: &Descriptor, chunks: C) -> Result<()>
    where
        C: futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Send + Sync + 'static,
    {
        let what = format!("upload {} to {repo}", desc.digest);
        let url = self
            .retrying(&what, || self.start_upload(repo, desc, &what))
            .await?;
        let body = std::sync::Mutex::new(Some(reqwest::Body::wrap_stream(chunks)));
        // A second send (after a 401) has no body left, and the registry refuses it.
        let take = || {
            body.lock()
                .expect("lock")
                .take()
                .unwrap_or_else(|| reqwest::Body::from(Vec::new()))
        };
        self.finish_upload(repo, &url, desc, &what, &take)
            .await
            .map_err(|f| match f {
                Failure::Fatal(e) => e,
                Failure::Transient { why, .. } => anyhow!("{}/{what}: {why}", self.host),
            })?;
        self.remember(&desc.digest, repo);
        Ok(())
    }

    /// PUTs a manifest or index under a tag or its digest.
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        desc: &Descriptor,
        bytes: &[u8],
    ) -> Result<()> {
        let scopes = [push(repo)];
        let what = format!("PUT manifest {repo}:{reference}");
        let body = bytes::Bytes::copy_from_slice(bytes);
        self.retrying(&what, || async {
            let resp = self
                .send(&scopes, &|base| {
                    self.http
                        .put(format!("{base}/v2/{repo}/manifests/{reference}"))
                        .header(CONTENT_TYPE, desc.media_type.as_str())
                        .body(body.clone())
                })
                .await?;
            if resp.status() != StatusCode::CREATED {
                return Err(Failure::Fatal(anyhow!(
                    "{}/{what}: {}",
                    self.host,
                    error_text(resp).await
                )));
            }
            match header(resp.headers(), "docker-content-digest") {
                Some(d) if d != desc.digest => Err(Failure::Fatal(anyhow!(
                    "{}/{what}: the registry stored {d}, expected {}",
                    self.host,
                    desc.digest
                ))),
                _ => Ok(()),
            }
        })
        .await?;
        self.mark_present(repo, &desc.digest);
        Ok(())
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

fn challenge_of(headers: &HeaderMap) -> Option<Challenge> {
    headers
        .get_all(WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(parse_challenge)
}

fn absolute(base: &str, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        location.to_string()
    } else {
        format!("{base}{location}")
    }
}

/// 408, 429 and 5xx are worth another try; `Retry-After` (seconds) is honoured.
fn transient_status(resp: &Response) -> Option<Failure> {
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

async fn read_limited(resp: Response, limit: u64) -> Result<Vec<u8>, Failure> {
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

/// `STATUS CODE: message` from a registry error answer.
async fn error_text(resp: Response) -> String {
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
            format!(
                "{status}: {}",
                archgate_core::text::untrusted(&parts.join("; "))
            )
        }
        _ => {
            let body: String = body.split_whitespace().collect::<Vec<_>>().join(" ");
            let body: String = body.chars().take(200).collect();
            if body.is_empty() {
                status.to_string()
            } else {
                format!("{status}: {}", archgate_core::text::untrusted(&body))
            }
        }
    }
}

/// One repository on a registry, as a [`Store`].
#[derive(Clone)]
pub struct RegistryRepo {
    pub registry: Arc<Registry>,
    pub path: String,
}

impl RegistryRepo {
    /// Mounts the blob from another repository of this registry that has it;
    /// `false` when none is known or the registry declines.
    async fn mounted(&self, desc: &Descriptor) -> Result<bool> {
        let Some(other) = self.registry.known_elsewhere(&desc.digest, &self.path) else {
            return Ok(false);
        };
        let mounted = self
            .registry
            .mount(&self.path, &other, &desc.digest)
            .await?;
        if mounted {
            tracing::info!(host = %self.registry.host, repo = %self.path, from = %other, digest = %desc.digest, "blob mounted");
        }
        Ok(mounted)
    }
}

impl Store for RegistryRepo {
    fn name(&self) -> String {
        format!("{}/{}", self.registry.host, self.path)
    }

    async fn guard(&self, key: &str) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        Some(
            self.registry
                .single_flight(format!("{}\0{key}", self.path))
                .await,
        )
    }

    async fn mount_blob(&self, desc: &Descriptor) -> Result<bool> {
        self.mounted(desc).await
    }

    async fn resolve_tag(&self, tag: &str) -> Result<Option<Descriptor>> {
        self.registry.head_manifest(&self.path, tag).await
    }

    async fn read_tag(&self, tag: &str) -> Result<Option<(Descriptor, Vec<u8>)>> {
        self.registry.get_tag(&self.path, tag).await
    }

    async fn fetch_manifest(&self, desc: &Descriptor) -> Result<Vec<u8>> {
        self.registry.get_manifest(&self.path, desc).await
    }

    async fn fetch_blob(&self, desc: &Descriptor) -> Result<Vec<u8>> {
        self.registry.get_blob(&self.path, desc).await
    }

    async fn has_blob(&self, desc: &Descriptor) -> Result<bool> {
        self.registry.blob_exists(&self.path, &desc.digest).await
    }

    async fn has_manifest(&self, desc: &Descriptor) -> Result<bool> {
        self.registry.manifest_exists(&self.path, desc).await
    }

    async fn push_blob(&self, desc: &Descriptor, from: &Path) -> Result<()> {
        if self.mounted(desc).await? {
            return Ok(());
        }
        std::fs::metadata(from).map_err(|e| anyhow!("{}: cannot read: {e}", from.display()))?;
        let body = || match std::fs::File::open(from) {
            Ok(file) => reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(
                tokio::fs::File::from_std(file),
                256 * 1024,
            )),
            // Gone since it was checked: an empty body, which the registry refuses.
            Err(_) => reqwest::Body::from(Vec::new()),
        };
        self.registry.upload(&self.path, desc, &body).await
    }

    async fn push_blob_bytes(&self, desc: &Descriptor, bytes: &[u8]) -> Result<()> {
        if self.mounted(desc).await? {
            return Ok(());
        }
        let bytes = bytes::Bytes::copy_from_slice(bytes);
        self.registry
            .upload(&self.path, desc, &|| reqwest::Body::from(bytes.clone()))
            .await
    }

    async fn push_blob_stream<C>(&self, desc: &Descriptor, chunks: C) -> Result<()>
    where
        C: futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Send + Sync + 'static,
    {
        if self.mounted(desc).await? {
            return Ok(());
        }
        self.registry.upload_stream(&self.path, desc, chunks).await
    }

    async fn push_manifest(
        &self,
        desc: &Descriptor,
        bytes: &[u8],
        tag: Option<&str>,
    ) -> Result<()> {
        // Under a tag, one PUT: the registry stores it by digest too, and
        // says which digest it stored (checked).
        let reference = tag.unwrap_or(&desc.digest);
        self.registry
            .put_manifest(&self.path, reference, desc, bytes)
            .await
    }
}
