//! `archgate inspect REFERENCE`: what a reference points to (digest, media
//! type, each entry's platform and digest) and, in a registry, the
//! signatures that digest carries (checked against `[sign] public-key` when
//! `-c` gives one).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use archgate_config::Loaded;
use archgate_core::{CurrentIndex, Reference, Repository};
use archgate_native::signatures::{self, Found};
use archgate_native::{read_current, AnyStore, Depth};
use archgate_runner::{RepoSpec, Runner};
use serde_json::json;

/// `loaded` gives `[registry]` settings (TLS, auth file) and `[sign]
/// public-key` when a configuration is at hand.
pub fn inspect(reference: &str, as_json: bool, loaded: Option<&Loaded>) -> u8 {
    match look(reference, loaded) {
        Ok((parsed, current, signatures)) => {
            let out = match as_json {
                true => to_json(&parsed, &current, &signatures),
                false => to_text(&parsed, &current, &signatures),
            };
            print!("{out}");
            0
        }
        Err((code, message)) => {
            eprintln!("archgate: {message}");
            code
        }
    }
}

type Looked = (Reference, CurrentIndex, Option<Vec<Found>>);

/// The reference, what it points to, and its signatures (none for a layout).
fn look(reference: &str, loaded: Option<&Loaded>) -> Result<Looked, (u8, String)> {
    let parsed = Reference::parse(reference).map_err(|e| (2, e.to_string()))?;
    let Some(tag) = parsed.tag.clone() else {
        return Err((
            2,
            format!("{reference}: name a tag, e.g. {reference}:latest"),
        ));
    };
    let mut registries = BTreeMap::new();
    if let Repository::Registry { host, .. } = &parsed.repository {
        let spec = archgate_config::registry_spec(loaded, host).map_err(|e| (2, e.0))?;
        registries.insert(host.clone(), spec);
    }
    let key = match loaded {
        Some(l) => l.public_key().map_err(|e| (2, e.0))?,
        None => None,
    };
    let rt = crate::runtime().map_err(|e| (e.exit_code(), e.to_string()))?;
    let runner = Runner::new(crate::env());
    let stores = runner
        .stores(&registries)
        .map_err(|e| (e.exit_code(), e.to_string()))?;
    // Layout paths in a reference are relative to the working directory.
    let store = stores.store(&RepoSpec {
        repository: parsed.repository.clone(),
        layout_dir: None,
    });
    rt.block_on(async {
        let current = match read_current(&store, &tag, Depth::Configs).await {
            Ok(Some(c)) => c,
            Ok(None) => return Err((1, format!("{reference}: no such tag"))),
            Err(e) => return Err((1, format!("{reference}: {e:#}"))),
        };
        let signatures = match &store {
            AnyStore::Registry(repo) => Some(
                signatures::read(repo, &current.digest, key.as_ref())
                    .await
                    .map_err(|e| (1, format!("{reference}: its signatures: {e:#}")))?,
            ),
            AnyStore::Layout(_) => None,
        };
        Ok((parsed, current, signatures))
    })
}

fn signature_json(f: &Found) -> serde_json::Value {
    json!({
        "layer": f.layer,
        "repository": f.repository,
        "digest": f.digest,
        "by_key": f.by_key,
    })
}

fn to_json(parsed: &Reference, current: &CurrentIndex, sigs: &Option<Vec<Found>>) -> String {
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
        "signatures": sigs.as_ref().map(|s| s.iter().map(signature_json).collect::<Vec<_>>()),
    });
    serde_json::to_string_pretty(&doc).expect("json") + "\n"
}

fn to_text(parsed: &Reference, current: &CurrentIndex, sigs: &Option<Vec<Found>>) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{parsed}\ndigest:     {}\nmedia type: {}",
        current.digest, current.media_type
    );
    for e in &current.entries {
        let _ = writeln!(s, "  {:<14} {}", e.platform.to_string(), e.digest);
    }
    match sigs {
        None => {}
        Some(list) if list.is_empty() => {
            let _ = writeln!(s, "signatures: none");
        }
        Some(list) => {
            let _ = writeln!(s, "signatures: {}", list.len());
            for f in list {
                let by_key = match f.by_key {
                    Some(true) => "  valid, by the [sign] public key",
                    Some(false) => "  not by the [sign] public key",
                    None => "",
                };
                let claims = match (&f.repository, &f.digest) {
                    (Some(r), Some(d)) => format!("{r}@{d}"),
                    _ => "not a container image signature".to_string(),
                };
                let _ = writeln!(s, "  {} {claims}{by_key}", f.layer);
            }
        }
    }
    s
}
