//! Blobs: existence checks, small blobs read whole (configs), uploads
//! (one POST and one PUT, retried together; a stream sent once) and
//! cross-repository mounts (a 202 answer means declined).

use anyhow::{anyhow, bail, Result};
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use reqwest::{Method, StatusCode};

use super::retry::{read_limited, Failure};
use super::{absolute, header, pull, push, Registry};
use crate::oci::{sha256_digest, Descriptor, MAX_DOCUMENT};

impl Registry {
    /// Whether a blob is in a repository; what this view saw is not asked again.
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
                    _ => Err(self.refused(&what, resp).await),
                }
            })
            .await?;
        self.count_check(repo, found);
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
        let what = format!("GET blob {repo}@{}", desc.digest);
        let body = self
            .retrying(&what, || async {
                let resp = self.blob_answer(repo, desc, &what).await?;
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
                    _ => Err(self.refused(&what, resp).await),
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
                    self.delete_session(repo, &absolute(&base, &location)).await;
                }
                Ok(false)
            }
        }
    }

    /// Opens an upload session; returns the URL to PUT the blob to.
    pub(super) async fn start_upload(
        &self,
        repo: &str,
        desc: &Descriptor,
        what: &str,
    ) -> Result<String, Failure> {
        let url = self.open_location(repo, what).await?;
        Ok(with_digest(&url, &desc.digest))
    }

    /// Opens an upload session (one `POST`): its absolute URL.
    async fn open_location(&self, repo: &str, what: &str) -> Result<String, Failure> {
        let resp = self
            .send(&[push(repo)], &|base| {
                self.http
                    .post(format!("{base}/v2/{repo}/blobs/uploads/"))
                    .header(CONTENT_LENGTH, "0")
            })
            .await?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(self.refused(what, resp).await);
        }
        self.location(&resp, what).await
    }

    /// Where an opened upload session (a 202 answer) takes content: its
    /// `Location`, absolute.
    async fn location(&self, resp: &reqwest::Response, what: &str) -> Result<String, Failure> {
        let location = header(resp.headers(), LOCATION.as_str()).ok_or_else(|| {
            Failure::Fatal(anyhow!(
                "{}/{what}: no Location for the upload session",
                self.host
            ))
        })?;
        Ok(absolute(&self.base().await?, &location))
    }

    /// Opens `n` upload sessions in `repo` now, for small uploads that
    /// will come later and take them ([`Registry::upload_whole`] with
    /// `ahead`), so that those cost one round trip instead of two: the
    /// signatures of an index, whose digest is known only once every arch
    /// is read. Once per repository per run (later calls do nothing).
    /// Those no upload took are given up by
    /// [`Registry::give_up_sessions_ahead`].
    pub fn open_sessions_ahead(self: &std::sync::Arc<Self>, repo: &str, n: usize) {
        let mut ahead = self.seen.ahead.lock().expect("lock");
        if ahead.contains_key(repo) {
            return;
        }
        let opening = (0..n)
            .map(|_| {
                let (registry, repo) = (self.clone(), repo.to_string());
                tokio::spawn(async move {
                    let what = format!("an upload session opened ahead in {repo}");
                    match registry.open_location(&repo, &what).await {
                        Ok(url) => Some(url),
                        Err(e) => {
                            tracing::debug!(host = %registry.host, %repo, "no upload session opened ahead: {e}");
                            None
                        }
                    }
                })
            })
            .collect();
        ahead.insert(repo.to_string(), opening);
    }

    /// An upload session opened ahead in `repo`, once open (none when none
    /// is left, or it could not be opened).
    async fn take_session_ahead(&self, repo: &str) -> Option<String> {
        let opening = {
            let mut ahead = self.seen.ahead.lock().expect("lock");
            let list = ahead.get_mut(repo)?;
            (!list.is_empty()).then(|| list.remove(0))?
        };
        opening.await.ok().flatten()
    }

    /// Gives up every upload session opened ahead that no upload took
    /// (one `DELETE` each, all at once), so that none is left open on the
    /// registry; waits for those still being opened.
    pub async fn give_up_sessions_ahead(&self) {
        let left: Vec<(String, tokio::task::JoinHandle<Option<String>>)> = {
            let mut ahead = self.seen.ahead.lock().expect("lock");
            ahead
                .iter_mut()
                .flat_map(|(repo, list)| list.drain(..).map(|h| (repo.clone(), h)))
                .collect()
        };
        let deleting = left.into_iter().map(|(repo, opening)| async move {
            if let Ok(Some(url)) = opening.await {
                self.delete_session(&repo, &url).await;
            }
        });
        futures_util::future::join_all(deleting).await;
    }

    /// PUTs the content of a session; 201 or a failure.
    pub(super) async fn finish_upload(
        &self,
        repo: &str,
        url: &str,
        desc: &Descriptor,
        what: &str,
        body: &(dyn Fn() -> reqwest::Body + Sync),
    ) -> Result<(), Failure> {
        let resp = self
            .send(&[push(repo)], &|_| {
                self.http_blobs
                    .put(url)
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .header(CONTENT_LENGTH, desc.size)
                    .body(body())
            })
            .await?;
        if resp.status() != StatusCode::CREATED {
            return Err(self.refused(what, resp).await);
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

    /// Uploads a small blob in one request (a single `POST` with the
    /// digest and the content, as the distribution API allows); when the
    /// registry answers with an upload session instead (202), the content
    /// goes to it with one `PUT`. Retried as a whole on transient failures.
    /// With `ahead`, a session opened ahead in the repository
    /// ([`Registry::open_sessions_ahead`]) is taken first if there is one:
    /// one `PUT`; if that fails, the upload is made as above.
    pub async fn upload_whole(
        &self,
        repo: &str,
        desc: &Descriptor,
        bytes: &[u8],
        ahead: bool,
    ) -> Result<()> {
        let what = format!("upload {} to {repo}", desc.digest);
        let body = bytes::Bytes::copy_from_slice(bytes);
        let again = || reqwest::Body::from(body.clone());
        let opened = match ahead {
            true => self.take_session_ahead(repo).await,
            false => None,
        };
        if let Some(url) = opened {
            let url = with_digest(&url, &desc.digest);
            match self.finish_upload(repo, &url, desc, &what, &again).await {
                Ok(()) => {
                    self.remember(&desc.digest, repo);
                    return Ok(());
                }
                Err(e) => {
                    tracing::debug!(host = %self.host, %repo, digest = %desc.digest, "the upload session opened ahead did not take the blob; uploading it anew: {e}");
                }
            }
        }
        self.retrying(&what, || async {
            let resp = self
                .send(&[push(repo)], &|base| {
                    self.http
                        .post(format!("{base}/v2/{repo}/blobs/uploads/"))
                        .query(&[("digest", desc.digest.as_str())])
                        .header(CONTENT_TYPE, "application/octet-stream")
                        .header(CONTENT_LENGTH, desc.size)
                        .body(again())
                })
                .await?;
            match resp.status() {
                StatusCode::CREATED => Ok(()),
                StatusCode::ACCEPTED => {
                    let url = with_digest(&self.location(&resp, &what).await?, &desc.digest);
                    self.finish_upload(repo, &url, desc, &what, &again).await
                }
                _ => Err(self.refused(&what, resp).await),
            }
        })
        .await?;
        self.remember(&desc.digest, repo);
        Ok(())
    }

    /// Opens an upload session for `desc` in `repo` (retried): the URL its
    /// bytes go to.
    pub async fn open_session(&self, repo: &str, desc: &Descriptor) -> Result<String> {
        let what = format!("upload {} to {repo}", desc.digest);
        self.retrying(&what, || self.start_upload(repo, desc, &what))
            .await
    }

    /// Gives up an upload session (its answer does not matter: a registry
    /// purges forgotten sessions in days anyway).
    async fn delete_session(&self, repo: &str, url: &str) {
        let _ = self
            .send(&[push(repo)], &|_| self.http.request(Method::DELETE, url))
            .await;
    }

    /// [`Registry::delete_session`] without waiting for it.
    pub fn cancel_session(self: &std::sync::Arc<Self>, repo: &str, url: String) {
        let registry = self.clone();
        let repo = repo.to_string();
        tokio::spawn(async move { registry.delete_session(&repo, &url).await });
    }

    /// Uploads a blob arriving as a stream (from an archive pass), into
    /// `session` when one was opened already. The session is retried; the
    /// stream can be sent only once.
    pub async fn upload_stream<C>(
        &self,
        repo: &str,
        desc: &Descriptor,
        session: Option<String>,
        chunks: C,
    ) -> Result<()>
    where
        C: futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Send + Sync + 'static,
    {
        let what = format!("upload {} to {repo}", desc.digest);
        let url = match session {
            Some(url) => url,
            None => self.open_session(repo, desc).await?,
        };
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
}

impl Registry {
    /// A blob's bytes as they arrive (a layer copied from one registry to
    /// another, never on disk): the store it goes to checks its digest.
    pub async fn blob_chunks(
        &self,
        repo: &str,
        desc: &Descriptor,
    ) -> Result<
        impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Send + Sync + 'static,
    > {
        let what = format!("GET blob {repo}@{}", desc.digest);
        let resp = self
            .retrying(&what, || self.blob_answer(repo, desc, &what))
            .await?;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(4);
        tokio::spawn(async move {
            use futures_util::StreamExt;
            let mut body = resp.bytes_stream();
            while let Some(chunk) = body.next().await {
                let item = chunk.map_err(std::io::Error::other);
                let end = item.is_err();
                if tx.send(item).await.is_err() || end {
                    return;
                }
            }
        });
        Ok(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)))
    }

    /// One GET of a blob: the registry's answer, once it is a success.
    async fn blob_answer(
        &self,
        repo: &str,
        desc: &Descriptor,
        what: &str,
    ) -> std::result::Result<reqwest::Response, Failure> {
        let scopes = [pull(repo)];
        let resp = self
            .send(&scopes, &|base| {
                self.http
                    .get(format!("{base}/v2/{repo}/blobs/{}", desc.digest))
            })
            .await?;
        if !resp.status().is_success() {
            return Err(self.refused(what, resp).await);
        }
        Ok(resp)
    }

    /// This run knows `digest` is in `repo` (read from there): a
    /// repository of this registry that needs it mounts it from there.
    pub(crate) fn note_present(&self, repo: &str, digest: &str) {
        self.remember(digest, repo);
    }
}

/// An upload session's URL with the digest its content is PUT under.
fn with_digest(url: &str, digest: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}digest={digest}")
}
