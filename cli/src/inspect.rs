//! `archgate inspect REFERENCE`.

use std::fmt::Write as _;

use std::collections::BTreeMap;

use archgate_core::{Reference, Repository};
use archgate_native::{read_current, Depth};
use archgate_runner::{RepoSpec, Runner};
use serde_json::json;

use archgate_config::Loaded;

/// `loaded` gives `[registry]` settings (TLS, auth file) when a configuration is at hand.
pub fn inspect(reference: &str, as_json: bool, loaded: Option<&Loaded>) -> u8 {
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
    let mut registries = BTreeMap::new();
    if let Repository::Registry { host, .. } = &parsed.repository {
        match archgate_config::registry_spec(loaded, host) {
            Ok(spec) => {
                registries.insert(host.clone(), spec);
            }
            Err(e) => {
                eprintln!("archgate: {e}");
                return 2;
            }
        }
    }
    let rt = match crate::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("archgate: {e}");
            return e.exit_code();
        }
    };
    let runner = Runner::new(crate::env());
    let stores = match runner.stores(&registries) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("archgate: {e}");
            return e.exit_code();
        }
    };
    // Layout paths in a reference are relative to the working directory.
    let store = stores.store(&RepoSpec {
        repository: parsed.repository.clone(),
        layout_dir: None,
    });
    let current = rt.block_on(read_current(&store, tag, Depth::Configs));
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
