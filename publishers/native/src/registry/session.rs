//! Sessions and authentication: the HTTP client (CAs, client certificate,
//! timeouts), the first contact that finds the scheme and how the registry
//! authenticates, basic credentials and bearer tokens (fetched per scope,
//! refreshed once on a 401), and TLS problems explained.

use std::time::Duration;

use anyhow::{anyhow, Result};
use reqwest::header::{HeaderMap, WWW_AUTHENTICATE};
use reqwest::{RequestBuilder, Response, StatusCode};

use super::retry::{chain_text, error_text, from_reqwest, read_limited, transient_status, Failure};
use super::{Registry, RegistrySettings};
use crate::auth::{parse_challenge, Challenge, Credentials, Secret};
use crate::oci::MAX_DOCUMENT;

/// How long a connection may take to open.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// An HTTP client for a registry: its CAs, client certificate and checks.
pub(super) fn client(
    host: &str,
    settings: &RegistrySettings,
    max_tls: Option<reqwest::tls::Version>,
    http1_only: bool,
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
        if http1_only {
            builder = builder.http1_only();
        }
        builder
            .build()
            .map_err(|e| anyhow!("{host}: cannot set up an HTTP client: {e}"))
    }
}

impl Registry {
    /// Why a first HTTPS contact failed, when it was TLS: with TLS 1.3 a
    /// registry's refusal of the client certificate comes after the client
    /// thinks the handshake is done, and the request often fails without
    /// the alert. A TLS 1.2 handshake ends with the alert itself, so one
    /// such probe (made only after a failure) tells what happened.
    pub(super) async fn diagnose_tls(&self, url: &str) -> Option<anyhow::Error> {
        let probe = client(
            &self.host,
            &self.settings,
            Some(reqwest::tls::Version::TLS_1_2),
            false,
        )
        .ok()?;
        match probe.get(url).send().await {
            Ok(_) => None,
            Err(e) => self.tls_problem(&e),
        }
    }

    /// A failed request: a TLS problem is fatal (another try would fail the
    /// same way) and says what failed and what to do; the rest as
    /// [`from_reqwest`] says.
    pub(super) fn failure(&self, e: reqwest::Error) -> Failure {
        match self.tls_problem(&e) {
            Some(problem) => Failure::Fatal(problem),
            None => from_reqwest(e),
        }
    }

    /// A TLS problem behind `e`, naming the host, of the kind that says
    /// who mends it: the registry's own certificate (expired, of an unknown
    /// issuer, for another name) is theirs (`external`, tried again over a
    /// long horizon); our client certificate refused or missing is ours
    /// (`auth`, set aside).
    pub(super) fn tls_problem(&self, e: &reqwest::Error) -> Option<anyhow::Error> {
        let text = chain_text(e);
        let tls = &self.settings.tls;
        let (kind, why) = crate::tls::explain(&text, tls.dir.as_deref(), tls.identity.is_some())?;
        Some(crate::kinded(
            kind,
            format!("{}: {why} ({text})", self.host),
        ))
    }

    /// Who archgate is on this registry, for messages: never the secret.
    pub(super) fn who(&self) -> String {
        let who = self.settings.credentials.as_ref().map(Credentials::who);
        who.unwrap_or_else(|| "no credentials".into())
    }

    /// The scheme and host, found by a first `GET /v2/`; also learns how the
    /// registry wants to be authenticated.
    pub(super) async fn base(&self) -> Result<String, Failure> {
        let mut state = self.state.lock().await;
        if let Some(base) = &state.base {
            return Ok(base.clone());
        }
        let https = format!("https://{}", self.host);
        let http = format!("http://{}", self.host);
        // With tls-verify off, plain HTTP is asked at the same time (one
        // round trip, not two). HTTPS wins when it answers, unless plain
        // HTTP answers first as a registry (a port speaks one or the other).
        // The plain request is a task of its own: a process's first TLS
        // handshake may hold its thread while the TLS set-up is made.
        let plain = (!self.settings.tls_verify)
            .then(|| tokio::spawn(self.http.get(format!("{http}/v2/")).send()));
        let candidates: Vec<&str> = match self.settings.tls_verify {
            true => vec![&https],
            false => vec![&https, &http],
        };
        let ahead = self.open_ahead(&candidates);
        let secure = self.http.get(format!("{https}/v2/")).send();
        let stopped = |e: tokio::task::JoinError| {
            Failure::Fatal(anyhow!("{}: first contact stopped: {e}", self.host))
        };
        let (secure, plain) = match plain {
            None => (Some(secure.await), None),
            Some(mut task) => {
                tokio::pin!(secure);
                tokio::select! {
                    s = &mut secure => (Some(s), Some(task.await.map_err(stopped)?)),
                    p = &mut task => match p.map_err(stopped)? {
                        Ok(resp) if speaks_registry(&resp) => (None, Some(Ok(resp))),
                        p => (Some(secure.await), Some(p)),
                    },
                }
            }
        };
        let (base, resp) = match secure {
            None => {
                tracing::debug!(host = %self.host, "plain HTTP answers as a registry; tls-verify is off");
                let Some(Ok(resp)) = plain else {
                    unreachable!("only a plain answer settles first contact alone")
                };
                (http, resp)
            }
            Some(Ok(resp)) => (https, resp),
            Some(Err(e)) => self.no_https(e, plain, https, http).await?,
        };
        if let Some(f) = transient_status(&resp) {
            return Err(f);
        }
        if resp.status() == StatusCode::UNAUTHORIZED {
            state.challenge = challenge_of(resp.headers());
        }
        state.base = Some(base.clone());
        // The connections opened beside the first contact are ready with it.
        futures_util::future::join_all(ahead).await;
        Ok(base)
    }

    /// First contact when HTTPS failed with `e`: plain HTTP (with
    /// tls-verify off) if it answered and HTTPS could not connect; else why
    /// not: a TLS problem (found again by a TLS 1.2 probe when the first
    /// attempt hid it), or the failure itself with a hint.
    async fn no_https(
        &self,
        e: reqwest::Error,
        plain: Option<reqwest::Result<Response>>,
        https: String,
        http: String,
    ) -> Result<(String, Response), Failure> {
        if let Some(problem) = self.tls_problem(&e) {
            return Err(Failure::Fatal(problem));
        }
        let connecting = e.is_connect() || e.is_request();
        match plain {
            Some(Ok(resp)) if connecting => {
                tracing::debug!(host = %self.host, "no HTTPS ({e}); plain HTTP because tls-verify is off");
                return Ok((http, resp));
            }
            Some(Err(plain)) if connecting => {
                if let Some(problem) = self.diagnose_tls(&format!("{https}/v2/")).await {
                    return Err(Failure::Fatal(problem));
                }
                return Err(self.failure(plain));
            }
            _ => {}
        }
        if connecting {
            if let Some(problem) = self.diagnose_tls(&format!("{https}/v2/")).await {
                return Err(Failure::Fatal(problem));
            }
        }
        let hint = if connecting {
            "; if it speaks plain HTTP or has a self-signed certificate, set tls-verify = false for it"
        } else {
            ""
        };
        Err(match from_reqwest(e) {
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
        })
    }

    /// Opens, beside the first `GET /v2/`, the connections this view said it
    /// will need at once right after it ([`Registry::expect`]), so that its
    /// first requests do not each wait for a connection to open (a round
    /// trip, and over TLS another). Each is opened by a `GET /v2/` of its
    /// own, whose answer is read and forgotten. Blob connections (HTTP/1.1,
    /// one per upload) are opened for every scheme that may be the one;
    /// small requests only over plain HTTP (over TLS they share one HTTP/2
    /// connection where the registry offers it). Returns the tasks opening
    /// those for small requests: first contact waits for them (they take
    /// the same round trips as it does).
    fn open_ahead(&self, candidates: &[&str]) -> Vec<tokio::task::JoinHandle<()>> {
        let (requests, uploads) = self.expect.take();
        let open = |client: &reqwest::Client, url: String| {
            let request = client.get(url).send();
            tokio::spawn(async move {
                // Read to its end, so that the connection goes back to the pool.
                if let Ok(resp) = request.await {
                    let _ = resp.bytes().await;
                }
            })
        };
        for base in candidates {
            for _ in 0..uploads {
                open(&self.http_blobs, format!("{base}/v2/"));
            }
        }
        let plain = candidates.iter().filter(|b| b.starts_with("http://"));
        plain
            .flat_map(|base| (1..requests).map(move |_| format!("{base}/v2/")))
            .map(|url| open(&self.http, url))
            .collect()
    }

    /// Sends a request with authentication, fetching or refreshing a token
    /// once on a 401. 408, 429 and 5xx come back as transient failures.
    pub(super) async fn send(
        &self,
        scopes: &[String],
        make: &(dyn Fn(&str) -> RequestBuilder + Sync),
    ) -> Result<Response, Failure> {
        match &self.fence {
            None => self.send_unfenced(scopes, make).await,
            Some(fence) if fence.is_tripped() => {
                Err(Failure::Fatal(crate::fence::stopped(&self.host)))
            }
            Some(fence) => tokio::select! {
                biased;
                _ = fence.tripped() => Err(Failure::Fatal(crate::fence::stopped(&self.host))),
                answer = self.send_unfenced(scopes, make) => answer,
            },
        }
    }

    async fn send_unfenced(
        &self,
        scopes: &[String],
        make: &(dyn Fn(&str) -> RequestBuilder + Sync),
    ) -> Result<Response, Failure> {
        let base = self.base().await?;
        let key = scopes.join(" ");
        let mut refreshed = false;
        let asked = std::time::Instant::now();
        let permit = self.limit.acquire().await;
        let waited = asked.elapsed();
        let mut load = super::bound::Load::Fine;
        let answer = async {
            loop {
                let req = self.authorize(make(&base), scopes, &key).await?;
                let (method, path) = match req.try_clone().and_then(|r| r.build().ok()) {
                    Some(r) => (r.method().clone(), r.url().path().to_string()),
                    None => (reqwest::Method::PUT, "(a body)".into()),
                };
                let sent = std::time::Instant::now();
                let resp = req.send().await.map_err(|e| self.failure(e))?;
                tracing::trace!(host = %self.host, %method, %path, status = resp.status().as_u16(), waited_ms = waited.as_millis() as u64, took_ms = sent.elapsed().as_millis() as u64, "answered");
                crate::progress::answered(&self.host);
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
                if matches!(
                    resp.status(),
                    StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
                ) {
                    load = super::bound::Load::Busy;
                }
                if let Some(f) = transient_status(&resp) {
                    return Err(f);
                }
                return Ok(resp);
            }
        }
        .await;
        self.limit.release(permit, load);
        answer
    }

    pub(super) async fn authorize(
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

    pub(super) async fn fetch_token(
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
        // Bounded like every registry answer: an endless or huge body stops
        // at the limit, an error naming the token endpoint.
        let bytes = read_limited(resp, MAX_DOCUMENT)
            .await
            .map_err(|f| match f {
                Failure::Fatal(e) => {
                    Failure::Fatal(anyhow!("{}: the token server's answer: {e:#}", self.host))
                }
                transient => transient,
            })?;
        let body: TokenResponse = serde_json::from_slice(&bytes).map_err(|e| {
            Failure::Fatal(anyhow!(
                "{}: the token server's answer ({realm}) is not a token: {e}",
                self.host
            ))
        })?;
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
}

/// Whether an answer to `GET /v2/` comes from a registry (the distribution
/// API's version header, which the registries archgate meets send): a
/// plain-HTTP answer of that kind settles first contact.
fn speaks_registry(resp: &Response) -> bool {
    let api = resp.headers().get("docker-distribution-api-version");
    api.is_some() && matches!(resp.status(), StatusCode::OK | StatusCode::UNAUTHORIZED)
}

pub(super) fn challenge_of(headers: &HeaderMap) -> Option<Challenge> {
    headers
        .get_all(WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(parse_challenge)
}
