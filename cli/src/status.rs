//! `archgate status`: what every repository of every configured image holds
//! now, per tag, and whether the repositories of one image agree. Reads only.

use std::fmt::Write as _;

use archgate_core::{Arch, ComposeSummary, Repository};
use archgate_native::signatures::{verify, Verdict};
use archgate_native::{read_current, AnyStore, Depth};
use archgate_runner::{image_tags, RunError, RunSpec, Runner};
use futures_util::StreamExt;
use serde::Serialize;

/// What one repository holds under one tag.
#[derive(Debug, Serialize)]
pub struct Holding {
    /// As configured: `docker://HOST/PATH` or `oci:DIR`.
    pub repository: String,
    /// The registry host, or null for a layout.
    pub registry: Option<String>,
    pub reference: String,
    /// The index (or manifest) digest; null when the tag is missing.
    pub digest: Option<String>,
    /// Compose arches, or the platform where an entry is no compose arch.
    pub arches: Vec<String>,
    /// Why it could not be read; null when it was.
    pub error: Option<String>,
    /// With `[sign] public-key`, for an index in a registry: `signed` (a
    /// valid signature by that key), `unsigned` (no signature), or
    /// `not-by-key` (signatures, none valid by that key); null otherwise.
    pub signature: Option<&'static str>,
}

#[derive(Debug, Serialize)]
pub struct TagStatus {
    pub tag: String,
    /// Every repository holds the same digest, or none holds the tag.
    pub agree: bool,
    pub repositories: Vec<Holding>,
}

#[derive(Debug, Serialize)]
pub struct ImageStatus {
    pub image: String,
    pub agree: bool,
    pub tags: Vec<TagStatus>,
}

#[derive(Debug, Serialize)]
pub struct Status {
    pub compose: ComposeSummary,
    pub agree: bool,
    /// With `[sign] public-key`: every index in a registry is signed by it.
    pub signed: bool,
    pub images: Vec<ImageStatus>,
}

impl Status {
    /// `1` when something could not be read, else `4` when an image's
    /// repositories disagree or an index is not signed by `[sign]
    /// public-key`, else `0`.
    pub fn exit_code(&self) -> u8 {
        let errors = self.images.iter().any(|i| {
            i.tags
                .iter()
                .any(|t| t.repositories.iter().any(|r| r.error.is_some()))
        });
        match (errors, self.agree && self.signed) {
            (true, _) => 1,
            (false, false) => 4,
            (false, true) => 0,
        }
    }

    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "compose {} ({})", self.compose.id, self.compose.status);
        for image in &self.images {
            let word = |agree: bool| if agree { "agree" } else { "DISAGREE" };
            let _ = writeln!(out, "{}: {}", image.image, word(image.agree));
            for tag in &image.tags {
                let _ = writeln!(out, "  {}: {}", tag.tag, word(tag.agree));
                let width = tag
                    .repositories
                    .iter()
                    .map(|r| r.reference.len())
                    .max()
                    .unwrap_or(0);
                for r in &tag.repositories {
                    let what = match (&r.error, &r.digest) {
                        (Some(e), _) => format!("error: {e}"),
                        (None, None) => "missing".to_string(),
                        (None, Some(d)) => format!("{d}  {}", r.arches.join(" ")),
                    };
                    let what = match r.signature {
                        Some("signed") | None => what,
                        Some("unsigned") => format!("{what}  UNSIGNED"),
                        Some(_) => format!("{what}  NOT SIGNED BY THE KEY"),
                    };
                    let _ = writeln!(out, "    {:<width$}  {what}", r.reference);
                }
            }
        }
        out
    }
}

/// Reads every (image, tag, repository) concurrently (bounded per registry).
pub async fn status(runner: &Runner, spec: &RunSpec) -> Result<Status, RunError> {
    let results = runner.compose(spec).await?;
    let stores = runner.stores(&spec.registries)?;

    let mut reads = Vec::new();
    let mut images = Vec::new();
    for image in &spec.images {
        let tags = image_tags(image, &results.compose, &spec.releases)?;
        let mut tag_list = Vec::new();
        for (tag, _) in tags.into_iter().filter(|(_, named)| *named) {
            for repo in &image.repositories {
                let registry = match &repo.repository {
                    Repository::Registry { host, .. } => Some(host.clone()),
                    Repository::Layout { .. } => None,
                };
                reads.push(holding(
                    stores.store(repo),
                    tag.clone(),
                    repo.repository.to_string(),
                    registry,
                    repo.repository.tagged(&tag),
                    spec.sign.public.clone(),
                ));
            }
            tag_list.push(tag);
        }
        images.push((image.name.clone(), image.repositories.len(), tag_list));
    }
    let held: Vec<Holding> = futures_util::stream::iter(reads)
        .buffered(64)
        .collect()
        .await;
    let mut held = held.into_iter();
    let mut out = Vec::new();
    for (name, repositories, tags) in images {
        let mut tag_status = Vec::new();
        for tag in tags {
            let repositories: Vec<Holding> = held.by_ref().take(repositories).collect();
            let first = repositories.first().map(|r| &r.digest);
            let agree = repositories
                .iter()
                .all(|r| r.error.is_none() && Some(&r.digest) == first);
            tag_status.push(TagStatus {
                tag,
                agree,
                repositories,
            });
        }
        out.push(ImageStatus {
            image: name,
            agree: tag_status.iter().all(|t| t.agree),
            tags: tag_status,
        });
    }
    Ok(Status {
        compose: ComposeSummary {
            id: results.compose.id.clone(),
            status: results.compose.status.clone(),
            version: None,
        },
        agree: out.iter().all(|i| i.agree),
        signed: out.iter().all(|i| {
            i.tags.iter().all(|t| {
                t.repositories
                    .iter()
                    .all(|r| matches!(r.signature, None | Some("signed")))
            })
        }),
        images: out,
    })
}

/// What one repository holds under `tag`.
async fn holding(
    store: AnyStore,
    tag: String,
    repository: String,
    registry: Option<String>,
    reference: String,
    key: Option<archgate_sign::VerifyingKey>,
) -> Holding {
    let (digest, arches, error) = match read_current(&store, &tag, Depth::Index).await {
        Ok(Some(c)) => {
            let arches = c
                .entries
                .iter()
                .map(|e| match Arch::from_platform(&e.platform) {
                    Some(a) => a.to_string(),
                    None => e.platform.to_string(),
                })
                .collect();
            (Some(c.digest), arches, None)
        }
        Ok(None) => (None, Vec::new(), None),
        Err(e) => (None, Vec::new(), Some(format!("{e:#}"))),
    };
    let (signature, error) = match (&store, &digest, key) {
        (AnyStore::Registry(repo), Some(d), Some(key)) => match verify(repo, d, &key).await {
            Ok(Verdict::Signed) => (Some("signed"), error),
            Ok(Verdict::Unsigned) => (Some("unsigned"), error),
            Ok(Verdict::NotByKey) => (Some("not-by-key"), error),
            Err(e) => (None, Some(format!("reading the signatures of {d}: {e:#}"))),
        },
        _ => (None, error),
    };
    Holding {
        repository,
        registry,
        reference,
        digest,
        arches,
        error,
        signature,
    }
}
