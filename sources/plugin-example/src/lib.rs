//! An example source plugin. Its `location` is a build-results file:
//!
//! ```text
//! # compose MyRemix-1-20241101.0 FINISHED 1
//! fedora x86_64 built /builds/fedora-x86_64.oci.tar.xz
//! fedora aarch64 failed out of disk space on the builder
//! ```
//!
//! The first line names the compose (id, status, release); each other line
//! is `IMAGE ARCH built PATH` or `IMAGE ARCH failed REASON`. Relative paths
//! are relative to the file. `settings.panic = true` makes it panic (for
//! archgate's tests of a misbehaving plugin).
#![warn(missing_docs)]

use archgate_plugin_sdk::{export_plugin, ArchResult, Compose, Request};

fn load(req: &Request) -> Result<Compose, String> {
    if req.settings.get("panic").and_then(|v| v.as_bool()) == Some(true) {
        panic!("asked to panic");
    }
    let location = req
        .location
        .as_deref()
        .ok_or("no location: give the build-results file")?;
    let text = std::fs::read_to_string(location).map_err(|e| format!("{location}: {e}"))?;
    let base = std::path::Path::new(location)
        .parent()
        .unwrap_or(std::path::Path::new("."));
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header = lines.next().ok_or(format!("{location}: empty"))?;
    let head: Vec<&str> = header.trim_start_matches('#').split_whitespace().collect();
    let ["compose", id, status, release] = head.as_slice() else {
        return Err(format!(
            "{location}: the first line must be `# compose ID STATUS RELEASE`"
        ));
    };
    let mut compose = Compose::new(id, status);
    compose.release = Some(release.to_string());
    for (n, line) in lines.enumerate() {
        let mut parts = line.splitn(4, ' ');
        let (Some(image), Some(arch), Some(kind), Some(rest)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(format!(
                "{location}:{}: expected IMAGE ARCH built|failed ...",
                n + 2
            ));
        };
        if !req.images.iter().any(|i| i.name == image) {
            continue;
        }
        let result = match kind {
            "built" => ArchResult::built(arch, &base.join(rest).to_string_lossy()),
            "failed" => ArchResult::failed(arch, rest),
            other => {
                return Err(format!(
                    "{location}:{}: `{other}` is neither built nor failed",
                    n + 2
                ))
            }
        };
        compose.add(image, result);
    }
    Ok(compose)
}

export_plugin!("example-results-file", load);
