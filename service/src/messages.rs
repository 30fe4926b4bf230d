//! The messages: Pungi's `compose.status.change` coming in, in
//! fedora-messaging's wire format, and fedora-image-uploader's
//! `ContainerPublishedV1` going out, in the same format, so that consumers
//! of FIU's messages keep working.

use std::collections::BTreeMap;

use archgate_core::{Action, Decision, Report};
use serde::Serialize;

/// The schema name (fedora-messaging's `fedora_messaging_schema` header) of
/// the result message, and the end of its topic.
pub const RESULT_SCHEMA: &str = "fedora_image_uploader.published.v1.container";

/// fedora-messaging's INFO severity.
pub const SEVERITY_INFO: i64 = 20;

/// The package that holds the result message's schema, as fedora-messaging
/// names it in `fedora_messaging_schema_package`.
pub const RESULT_SCHEMA_PACKAGE: &str = "fedora_image_uploader_messages";

/// The largest message body archgate reads (Pungi's are under 2 KiB): a
/// larger one is set aside unread, so that a hostile body costs no more
/// memory than this.
pub const MAX_BODY: usize = 64 << 10;

/// A `pungi.compose.status.change` message, as much of it as archgate needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComposeMessage {
    /// `compose_id`.
    pub compose_id: String,
    /// `status` (`FINISHED`, ...).
    pub status: String,
    /// The compose root: the message's `location` without its `/compose`.
    pub root: String,
}

/// Why a message is not one archgate can act on: it is set aside at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid(pub String);

/// Reads a message body. `location` ends in `/compose`; the compose root is
/// its parent (the Pungi source accepts either, but the root names it).
pub fn parse(body: &[u8]) -> Result<ComposeMessage, Invalid> {
    if body.len() > MAX_BODY {
        return Err(Invalid(format!(
            "the body is {} bytes, more than the {MAX_BODY} a compose message may have",
            body.len()
        )));
    }
    let doc: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| Invalid(format!("the body is not JSON: {e}")))?;
    let field = |name: &str| -> Result<String, Invalid> {
        match doc.get(name) {
            Some(serde_json::Value::String(s)) if !s.trim().is_empty() => Ok(s.trim().to_string()),
            Some(_) => Err(Invalid(format!("`{name}` is not a string"))),
            None => Err(Invalid(format!("the body has no `{name}`"))),
        }
    };
    let location = field("location")?;
    let root = location.trim_end_matches('/');
    let root = root.strip_suffix("/compose").unwrap_or(root).to_string();
    if !(root.starts_with("http://") || root.starts_with("https://") || root.starts_with('/')) {
        return Err(Invalid(format!(
            "`location` {location:?} is neither an http(s) URL nor an absolute path"
        )));
    }
    Ok(ComposeMessage {
        compose_id: field("compose_id")?,
        status: field("status")?,
        root,
    })
}

/// The body of `ContainerPublishedV1`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Published {
    /// The arches of the index published.
    pub architectures: Vec<String>,
    /// The compose it came from.
    pub compose_id: String,
    /// The repository's path without its last part (`quay.io/fedora`).
    pub registries: Vec<String>,
    /// The release number.
    pub release: i64,
    /// The last part of the repository's path (`fedora`).
    pub repository: String,
    /// The tags published there.
    pub tags: Vec<String>,
}

/// What FIU sends: one message per image and repository name (the last
/// part of a repository's path, `fedora`), listing in `registries` every
/// registry (the rest of the path: `registry.fedoraproject.org`,
/// `quay.io/fedora`) where the run published it. Registries that got other
/// tags or arches than the rest (a target of one failed) get a message of
/// their own, so no message claims a tag a registry does not hold. No
/// message for refused or unchanged targets, nor for `oci:` layouts.
pub fn published(report: &Report, release: i64) -> Vec<Published> {
    // Per image and registry repository: its registry, name, tags, arches.
    type Repo = (String, String, Vec<String>, Vec<String>);
    let mut per_repo: BTreeMap<(String, String), Repo> = BTreeMap::new();
    for t in &report.targets {
        if t.decision != Decision::Published || t.reference.starts_with("oci:") {
            continue;
        }
        let Some((name, tag)) = t.reference.rsplit_once(':').filter(|(n, _)| !n.is_empty()) else {
            continue;
        };
        // A registry port is not a tag: HOST:PORT/PATH:TAG splits at the last colon.
        let Some((registry, repository)) = name.rsplit_once('/') else {
            continue;
        };
        let entry = per_repo
            .entry((t.image.clone(), name.to_string()))
            .or_insert_with(|| {
                (
                    registry.to_string(),
                    repository.to_string(),
                    Vec::new(),
                    Vec::new(),
                )
            });
        entry.2.push(tag.to_string());
        for a in t.arches.iter().filter(|a| {
            matches!(
                a.action,
                Action::Added | Action::Updated | Action::Unchanged | Action::Carried
            )
        }) {
            let arch = a.arch.to_string();
            if !entry.3.contains(&arch) {
                entry.3.push(arch);
            }
        }
    }
    let mut messages: BTreeMap<(String, String, Vec<String>, Vec<String>), Published> =
        BTreeMap::new();
    for ((image, _), (registry, repository, tags, architectures)) in per_repo {
        let key = (
            image,
            repository.clone(),
            tags.clone(),
            architectures.clone(),
        );
        let m = messages.entry(key).or_insert_with(|| Published {
            architectures,
            compose_id: report.compose.id.clone(),
            registries: Vec::new(),
            release,
            repository,
            tags,
        });
        m.registries.push(registry);
    }
    let mut out: Vec<Published> = messages.into_values().collect();
    for m in &mut out {
        m.registries.sort();
    }
    out
}

impl Published {
    /// The containers it names, `REGISTRY/REPOSITORY:TAG`, as
    /// fedora-image-uploader-messages lists them (its `containers`).
    pub fn containers(&self) -> Vec<String> {
        let mut out = Vec::new();
        for registry in &self.registries {
            for tag in &self.tags {
                out.push(format!("{registry}/{}:{tag}", self.repository));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pungi_message_gives_its_compose_root() {
        let m = parse(br#"{"status": "FINISHED", "compose_id": "Fedora-41-20241101.0", "location": "https://kojipkgs.example/compose/41/Fedora-41-20241101.0/compose", "compose_label": null}"#).unwrap();
        assert_eq!(
            m.root,
            "https://kojipkgs.example/compose/41/Fedora-41-20241101.0"
        );
        assert_eq!(m.status, "FINISHED");
        for (body, why) in [
            (&b"not json"[..], "not JSON"),
            (
                br#"{"status": "FINISHED", "compose_id": "x"}"#,
                "no `location`",
            ),
            (
                br#"{"status": "FINISHED", "compose_id": "x", "location": 3}"#,
                "not a string",
            ),
            (
                br#"{"status": "FINISHED", "compose_id": "x", "location": "relative/compose"}"#,
                "neither",
            ),
        ] {
            let e = parse(body).unwrap_err();
            assert!(
                e.0.contains(why),
                "{}: {}",
                String::from_utf8_lossy(body),
                e.0
            );
        }
    }
}
