//! The `dir` source: a directory of build outputs (docs/configuration.md).
//!
//! ```text
//! LOCATION/compose.toml          optional: id, status, release, date, respin
//! LOCATION/<dir>/<arch>/         one artifact: an OCI layout, or one archive file
//! LOCATION/<dir>/<arch>/FAILED   marks the arch failed; its text is the reason
//! ```
#![warn(missing_docs)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use archgate_core::{
    Arch, ArchResult, Artifact, Compose, ComposeResults, ComposeStatus, ImageQuery, Location,
    Outcome, Source, SourceError,
};
use serde::Deserialize;

/// Reads a directory of per-arch build outputs.
#[derive(Debug, Clone)]
pub struct DirSource {
    location: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ComposeFile {
    id: Option<String>,
    status: Option<String>,
    release: Option<String>,
    date: Option<String>,
    respin: Option<u32>,
}

impl DirSource {
    /// The compose in the directory `location`.
    pub fn new(location: impl Into<PathBuf>) -> DirSource {
        DirSource {
            location: location.into(),
        }
    }

    fn compose(&self) -> Result<Compose, SourceError> {
        let file = self.location.join("compose.toml");
        let default_id = self
            .location
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "local".to_string());
        let text = match fs::read_to_string(&file) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Compose::from_id(&default_id, ComposeStatus::Finished));
            }
            Err(e) => return Err(SourceError(format!("{}: cannot read: {e}", file.display()))),
        };
        let parsed: ComposeFile = toml::from_str(&text).map_err(|e| {
            let msg = e.message().trim().to_string();
            match e.span().map(|s| line_of(&text, s.start)) {
                Some(line) => SourceError(format!("{}:{line}: {msg}", file.display())),
                None => SourceError(format!("{}: {msg}", file.display())),
            }
        })?;
        let id = parsed.id.unwrap_or(default_id);
        let status = parsed
            .status
            .map(|s| ComposeStatus::parse(&s))
            .unwrap_or(ComposeStatus::Finished);
        let mut compose = Compose::from_id(&id, status);
        compose.release = parsed.release.map(|r| r.to_lowercase());
        if parsed.date.is_some() {
            compose.date = parsed.date;
        }
        if parsed.respin.is_some() {
            compose.respin = parsed.respin;
        }
        Ok(compose)
    }

    fn image(&self, query: &ImageQuery) -> Result<Vec<ArchResult>, SourceError> {
        let mut dir_name = query.name.as_str();
        for (key, value) in &query.matcher {
            match key.as_str() {
                "dir" => dir_name = value,
                other => {
                    return Err(SourceError(format!(
                        "image {}: the dir source has no match key `{other}` (it knows `dir`)",
                        query.name
                    )))
                }
            }
        }
        if dir_name.is_empty() || Path::new(dir_name).components().count() != 1 || dir_name == ".."
        {
            return Err(SourceError(format!(
                "image {}: match dir `{dir_name}` must be one directory name inside the compose",
                query.name
            )));
        }
        let image_dir = self.location.join(dir_name);
        let entries = match fs::read_dir(&image_dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::warn!(image = %query.name, dir = %image_dir.display(), "no directory for this image in the compose");
                return Ok(Vec::new());
            }
            Err(e) => {
                return Err(SourceError(format!(
                    "{}: cannot read: {e}",
                    image_dir.display()
                )))
            }
        };
        let mut results = Vec::new();
        for entry in entries {
            let entry = entry
                .map_err(|e| SourceError(format!("{}: cannot read: {e}", image_dir.display())))?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || !path.is_dir() {
                tracing::debug!(path = %path.display(), "not an arch directory; skipped");
                continue;
            }
            let arch: Arch = name
                .parse()
                .map_err(|e| SourceError(format!("{}: {e}", path.display())))?;
            let outcome = match leads_outside(&self.location, &path) {
                Some(reason) => Outcome::Failed { reason },
                None => arch_outcome(&self.location, &path)?,
            };
            results.push(ArchResult { arch, outcome });
        }
        results.sort_by_key(|r| r.arch);
        Ok(results)
    }
}

/// Why `path` may not be read as part of the compose at `root`: it leads
/// (through a symbolic link) outside it. `None` when it is inside.
fn leads_outside(root: &Path, path: &Path) -> Option<String> {
    let root = fs::canonicalize(root).ok()?;
    let real = fs::canonicalize(path).ok()?;
    (!real.starts_with(&root)).then(|| {
        format!(
            "{}: leads outside the compose (to {}); refused",
            path.display(),
            real.display()
        )
    })
}

/// What one `<dir>/<arch>/` holds. An artifact that is not safe to read (a
/// link out of the compose, a FIFO or a device) makes the arch failed.
fn arch_outcome(root: &Path, dir: &Path) -> Result<Outcome, SourceError> {
    let failed = dir.join("FAILED");
    if failed.exists() {
        let text = fs::read_to_string(&failed)
            .map_err(|e| SourceError(format!("{}: cannot read: {e}", failed.display())))?;
        let reason = text.trim();
        let reason = if reason.is_empty() {
            format!("marked failed by {}", failed.display())
        } else {
            archgate_core::untrusted(reason)
        };
        return Ok(Outcome::Failed { reason });
    }
    let built = |path: PathBuf| Outcome::Built(Artifact::at(Location::Path(path)));
    if dir.join("oci-layout").exists() || dir.join("index.json").exists() {
        return Ok(built(dir.to_path_buf()));
    }
    let files: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(|e| SourceError(format!("{}: cannot read: {e}", dir.display())))?
        .filter_map(Result::ok)
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.path())
        .collect();
    Ok(match files.as_slice() {
        [one] => match leads_outside(root, one) {
            Some(reason) => Outcome::Failed { reason },
            None if one.is_file() => built(one.clone()),
            None => Outcome::Failed {
                reason: format!(
                    "{}: not a regular file or an OCI layout (a FIFO, a device, a socket, or a directory that is no layout); refused",
                    one.display()
                ),
            },
        },
        [] => Outcome::Failed {
            reason: format!("{} holds no artifact", dir.display()),
        },
        _ => Outcome::Failed {
            reason: format!(
                "{} holds {} entries; expected one artifact (an OCI layout or one archive file)",
                dir.display(),
                files.len()
            ),
        },
    })
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

impl Source for DirSource {
    fn load(&self, images: &[ImageQuery]) -> Result<ComposeResults, SourceError> {
        if !self.location.is_dir() {
            return Err(SourceError(format!(
                "compose directory {} does not exist",
                self.location.display()
            )));
        }
        let compose = self.compose()?;
        let mut out = BTreeMap::new();
        for query in images {
            out.insert(query.name.clone(), self.image(query)?);
        }
        Ok(ComposeResults {
            compose,
            images: out,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &str) -> ImageQuery {
        ImageQuery {
            name: name.into(),
            matcher: BTreeMap::new(),
        }
    }

    fn write(path: &Path, text: &str) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }

    #[test]
    fn reads_compose_and_results() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("Fedora-41-20241101.n.0");
        write(
            &root.join("compose.toml"),
            "status = \"FINISHED_INCOMPLETE\"\nrelease = \"Rawhide\"\n",
        );
        write(&root.join("fedora/x86_64/oci-layout"), "{}");
        write(&root.join("fedora/aarch64/FAILED"), "  out of disk\n");
        write(&root.join("fedora/s390x/Fedora-41.s390x.oci.tar.xz"), "xz");
        fs::create_dir_all(root.join("fedora/ppc64le")).unwrap();
        write(&root.join("fedora/riscv64/a.tar"), "");
        write(&root.join("fedora/riscv64/b.tar"), "");
        write(&root.join("fedora/README"), "not an arch");

        let results = DirSource::new(&root)
            .load(&[query("fedora"), query("toolbox")])
            .unwrap();
        assert_eq!(results.compose.id, "Fedora-41-20241101.n.0");
        assert_eq!(results.compose.status, ComposeStatus::FinishedIncomplete);
        assert_eq!(results.compose.release.as_deref(), Some("rawhide"));
        assert_eq!(results.compose.date.as_deref(), Some("20241101"));
        assert_eq!(results.compose.respin, Some(0));
        assert!(results.images["toolbox"].is_empty());

        let fedora = &results.images["fedora"];
        let arches: Vec<Arch> = fedora.iter().map(|r| r.arch).collect();
        assert_eq!(
            arches,
            [
                Arch::X86_64,
                Arch::Aarch64,
                Arch::Ppc64le,
                Arch::S390x,
                Arch::Riscv64
            ]
        );
        assert!(
            matches!(&fedora[0].outcome, Outcome::Built(a) if a.location == Location::Path(root.join("fedora/x86_64")))
        );
        assert_eq!(
            fedora[1].outcome,
            Outcome::Failed {
                reason: "out of disk".into()
            }
        );
        assert!(
            matches!(&fedora[2].outcome, Outcome::Failed { reason } if reason.contains("holds no artifact"))
        );
        assert!(
            matches!(&fedora[3].outcome, Outcome::Built(a) if a.location == Location::Path(root.join("fedora/s390x/Fedora-41.s390x.oci.tar.xz")))
        );
        assert!(
            matches!(&fedora[4].outcome, Outcome::Failed { reason } if reason.contains("holds 2 entries"))
        );
    }

    #[test]
    fn bad_input_names_the_place() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let err = DirSource::new(root.join("nope"))
            .load(&[query("fedora")])
            .unwrap_err();
        assert!(err.0.contains("nope does not exist"), "{err}");

        write(&root.join("fedora/arm64/oci-layout"), "{}");
        let err = DirSource::new(root).load(&[query("fedora")]).unwrap_err();
        assert!(
            err.0.contains("fedora/arm64: unknown arch `arm64`"),
            "{err}"
        );

        write(
            &root.join("compose.toml"),
            "id = \"x\"\nstatsu = \"FINISHED\"\n",
        );
        let err = DirSource::new(root).load(&[query("fedora")]).unwrap_err();
        assert!(
            err.0.contains("compose.toml:2: unknown field `statsu`"),
            "{err}"
        );

        let mut q = query("fedora");
        q.matcher
            .insert("subvariant".into(), "Container_Base".into());
        write(&root.join("compose.toml"), "");
        let err = DirSource::new(root).load(&[q]).unwrap_err();
        assert!(err.0.contains("no match key `subvariant`"), "{err}");
    }
}
