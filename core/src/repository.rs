//! Repository and reference names, in the containers transports' syntax:
//! `docker://HOST/PATH` (or bare `HOST/PATH`) and `oci:DIR`.

use std::fmt;

/// Transports archgate does not publish to.
const OTHER_TRANSPORTS: [&str; 6] = [
    "oci-archive:",
    "docker-archive:",
    "containers-storage:",
    "dir:",
    "docker-daemon:",
    "http:",
];

/// Where a target's tags live.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Repository {
    /// An OCI image layout directory; tags are `org.opencontainers.image.ref.name`
    /// annotations of its `index.json`.
    Layout {
        /// The directory, as configured.
        dir: String,
    },
    /// A repository on a registry.
    Registry {
        /// `HOST[:PORT]`.
        host: String,
        /// The repository's path on it (`fedora`, `fedora/fedora`).
        path: String,
    },
}

/// A repository with a tag or a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// The repository.
    pub repository: Repository,
    /// The tag, if one is named.
    pub tag: Option<String>,
    /// The digest, if one is named.
    pub digest: Option<String>,
}

impl Repository {
    /// `docker://HOST/PATH`, a bare `HOST/PATH`, or `oci:DIR`.
    pub fn parse(s: &str) -> Result<Repository, String> {
        if let Some(dir) = s.strip_prefix("oci:") {
            if dir.is_empty() {
                return Err("`oci:` needs a directory, e.g. `oci:out/fedora`".into());
            }
            return Ok(Repository::Layout {
                dir: dir.to_string(),
            });
        }
        let name = s.strip_prefix("docker://").unwrap_or(s);
        if name.contains("://") || OTHER_TRANSPORTS.iter().any(|t| s.starts_with(t)) {
            let transport = s.split(':').next().unwrap_or(s);
            return Err(format!(
                "unsupported transport `{transport}:` in `{s}`; use docker://HOST/PATH or oci:DIR"
            ));
        }
        let Some((host, path)) = name.split_once('/') else {
            return Err(format!(
                "`{s}` names no registry host; write docker://HOST/PATH"
            ));
        };
        if !(host.contains('.') || host.contains(':') || host == "localhost") {
            return Err(format!(
                "`{s}` names no registry host (`{host}` is not a host name); write docker://HOST/PATH"
            ));
        }
        if !path.split('/').all(is_path_component) {
            return Err(format!(
                "`{path}` in `{s}` is not a valid repository path (lower case letters, digits, `.`, `_`, `-`, separated by `/`)"
            ));
        }
        Ok(Repository::Registry {
            host: host.to_string(),
            path: path.to_string(),
        })
    }

    /// The reference of a tag in this repository, as reports show it:
    /// `HOST/PATH:TAG` or `oci:DIR:TAG`.
    pub fn tagged(&self, tag: &str) -> String {
        format!("{self}:{tag}")
    }
}

impl fmt::Display for Repository {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Repository::Layout { dir } => write!(f, "oci:{dir}"),
            Repository::Registry { host, path } => write!(f, "{host}/{path}"),
        }
    }
}

impl Reference {
    /// `oci:DIR:TAG`, `docker://HOST/PATH:TAG`, `HOST/PATH@sha256:HEX`.
    pub fn parse(s: &str) -> Result<Reference, String> {
        if let Some(rest) = s.strip_prefix("oci:") {
            let (dir, tag) = match rest.rsplit_once(':') {
                Some((dir, tag)) if !tag.contains('/') => (dir, Some(tag.to_string())),
                _ => (rest, None),
            };
            return Ok(Reference {
                repository: Repository::parse(&format!("oci:{dir}"))?,
                tag,
                digest: None,
            });
        }
        let name = s.strip_prefix("docker://").unwrap_or(s);
        let (name, digest) = match name.split_once('@') {
            Some((n, d)) => (n, Some(d.to_string())),
            None => (name, None),
        };
        let (name, tag) = match name.rsplit_once(':') {
            Some((n, t)) if !t.contains('/') => (n, Some(t.to_string())),
            _ => (name, None),
        };
        if let Some(d) = &digest {
            if !is_sha256_digest(d) {
                return Err(format!("`{d}` in `{s}` is not a sha256 digest"));
            }
        }
        Ok(Reference {
            repository: Repository::parse(name)?,
            tag,
            digest,
        })
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

fn is_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|&x| {
            x.is_ascii_lowercase() || x.is_ascii_digit() || matches!(x, b'.' | b'_' | b'-')
        })
}

/// `sha256:` and 64 lower-case hex digits.
pub fn is_sha256_digest(d: &str) -> bool {
    d.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repositories() {
        let r = Repository::parse("docker://registry.example.org/fedora").unwrap();
        assert_eq!(
            r,
            Repository::Registry {
                host: "registry.example.org".into(),
                path: "fedora".into()
            }
        );
        assert_eq!(Repository::parse("registry.example.org/fedora").unwrap(), r);
        assert_eq!(r.tagged("41"), "registry.example.org/fedora:41");
        let local = Repository::parse("127.0.0.1:5000/fedora/base").unwrap();
        assert_eq!(local.tagged("41"), "127.0.0.1:5000/fedora/base:41");
        let oci = Repository::parse("oci:out/fedora").unwrap();
        assert_eq!(
            oci,
            Repository::Layout {
                dir: "out/fedora".into()
            }
        );
        assert_eq!(oci.tagged("41"), "oci:out/fedora:41");
        assert!(Repository::parse("fedora")
            .unwrap_err()
            .contains("no registry host"));
        assert!(Repository::parse("fedora/base")
            .unwrap_err()
            .contains("not a host name"));
        assert!(Repository::parse("registry.example.org/Fedora")
            .unwrap_err()
            .contains("not a valid repository path"));
        assert!(Repository::parse("oci-archive:/tmp/x.tar")
            .unwrap_err()
            .contains("unsupported transport"));
        assert!(Repository::parse("oci:").is_err());
    }

    #[test]
    fn references() {
        let r = Reference::parse("oci:out/fedora:41").unwrap();
        assert_eq!(
            r.repository,
            Repository::Layout {
                dir: "out/fedora".into()
            }
        );
        assert_eq!(r.tag.as_deref(), Some("41"));
        let r = Reference::parse("docker://127.0.0.1:5000/fedora:41").unwrap();
        assert_eq!(
            r.repository,
            Repository::Registry {
                host: "127.0.0.1:5000".into(),
                path: "fedora".into()
            }
        );
        assert_eq!(r.tag.as_deref(), Some("41"));
        let d = format!("sha256:{}", "a".repeat(64));
        let r = Reference::parse(&format!("127.0.0.1:5000/fedora@{d}")).unwrap();
        assert_eq!((r.tag, r.digest), (None, Some(d)));
        let r = Reference::parse("127.0.0.1:5000/fedora").unwrap();
        assert_eq!(r.tag, None);
        assert!(Reference::parse("127.0.0.1:5000/fedora@sha256:abc").is_err());
    }
}
