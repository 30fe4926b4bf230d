//! Manifests and indexes: HEAD and GET by tag or digest (every media type
//! archgate understands in `Accept`), checked against their digests, and
//! PUT under a tag or a digest (the digest the registry stored is checked).

use anyhow::{anyhow, bail, Result};
use reqwest::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE};
use reqwest::StatusCode;

use super::retry::{read_limited, Failure};
use super::{content_type, header, pull, push, Registry};
use crate::oci::{Descriptor, MAX_DOCUMENT};

/// Every manifest media type archgate understands; the distribution registry
/// answers 404 for a type that is not listed.
pub(super) const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

impl Registry {
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
                _ => Err(self.refused(&what, resp).await),
            }
        })
        .await
    }

    pub(super) async fn get_manifest_raw(
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
                return Err(self.refused(&what, resp).await);
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
        let phase = match crate::oci::is_index(&desc.media_type) {
            true => super::known::Phase::Indexes,
            false => super::known::Phase::Manifests,
        };
        let _phase = self.phases.enter(repo, phase).await;
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
                return Err(self.refused(&what, resp).await);
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
