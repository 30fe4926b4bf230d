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

/// One message per registry repository a target was published to: the
/// repository is the last part of its path (`fedora`), the registry the
/// rest (`registry.fedoraproject.org`, `quay.io/fedora`), as FIU names them.
/// No message for refused or unchanged targets, nor for `oci:` layouts.
pub fn published(report: &Report, release: i64) -> Vec<Published> {
    let mut by_repo: BTreeMap<String, Published> = BTreeMap::new();
    for t in &report.targets {
        if t.decision != Decision::Published {
            continue;
        }
        if t.reference.starts_with("oci:") {
            continue;
        }
        let Some((name, tag)) = t.reference.rsplit_once(':').filter(|(n, _)| !n.is_empty()) else {
            continue;
        };
        // A registry port is not a tag: HOST:PORT/PATH:TAG splits at the last colon.
        let (registry, repository) = match name.rsplit_once('/') {
            Some((r, p)) => (r.to_string(), p.to_string()),
            None => continue,
        };
        let architectures: Vec<String> = t
            .arches
            .iter()
            .filter(|a| {
                matches!(
                    a.action,
                    Action::Added | Action::Updated | Action::Unchanged | Action::Carried
                )
            })
            .map(|a| a.arch.to_string())
            .collect();
        let entry = by_repo
            .entry(name.to_string())
            .or_insert_with(|| Published {
                architectures: architectures.clone(),
                compose_id: report.compose.id.clone(),
                registries: vec![registry],
                release,
                repository,
                tags: Vec::new(),
            });
        entry.tags.push(tag.to_string());
        for a in architectures {
            if !entry.architectures.contains(&a) {
                entry.architectures.push(a);
            }
        }
    }
    by_repo.into_values().collect()
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
