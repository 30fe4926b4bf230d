//! `archgate inspect REFERENCE`.

use std::fmt::Write as _;

use archgate_core::{Reference, Repository};
use archgate_native::current::read_layout_tag;
use archgate_native::OciLayout;
use serde_json::json;

pub fn inspect(reference: &str, as_json: bool) -> u8 {
    let parsed = match Reference::parse(reference) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("archgate: {e}");
            return 2;
        }
    };
    let Some(tag) = parsed.tag.as_deref() else {
        eprintln!("archgate: {reference}: name a tag, e.g. {reference}:latest");
        return 2;
    };
    let current = match &parsed.repository {
        Repository::Layout { dir } => read_layout_tag(&OciLayout::new(dir), tag),
        Repository::Registry { .. } => Err(anyhow::anyhow!(
            "registry references are not available in this build yet"
        )),
    };
    let current = match current {
        Ok(Some(c)) => c,
        Ok(None) => {
            eprintln!("archgate: {reference}: no such tag");
            return 1;
        }
        Err(e) => {
            eprintln!("archgate: {reference}: {e:#}");
            return 1;
        }
    };
    let out = if as_json {
        let entries: Vec<_> = current
            .entries
            .iter()
            .map(|e| {
                json!({
                    "platform": e.platform.to_string(),
                    "digest": e.digest,
                    "media_type": e.media_type,
                    "size": e.size,
                    "created": e.created,
                })
            })
            .collect();
        let doc = json!({
            "reference": parsed.to_string(),
            "digest": current.digest,
            "media_type": current.media_type,
            "entries": entries,
        });
        serde_json::to_string_pretty(&doc).expect("json") + "\n"
    } else {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{parsed}\ndigest:     {}\nmedia type: {}",
            current.digest, current.media_type
        );
        for e in &current.entries {
            let _ = writeln!(s, "  {:<14} {}", e.platform.to_string(), e.digest);
        }
        s
    };
    print!("{out}");
    0
}
