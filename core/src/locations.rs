//! Where a service may read composes from (`[consume] allowed-locations`):
//! a boundary, not a text match. A location is compared after the
//! normalization that fetching it applies (WHATWG URL parsing: percent-
//! encoded dots, backslashes, `..`), by scheme, host, port and whole path
//! segments; a path is compared on its real path (the caller resolves
//! links: this module does no I/O).

use std::path::{Component, Path, PathBuf};

/// URL or absolute-path prefixes that compose locations must be under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedLocations {
    urls: Vec<url::Url>,
    paths: Vec<PathBuf>,
    /// As configured, for messages.
    given: Vec<String>,
}

/// Where a location led, once checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checked {
    /// The normalized URL (what is fetched).
    Url(String),
    /// The real path (what is read).
    Path(PathBuf),
}

impl Checked {
    /// As text: the URL, or the path.
    pub fn as_text(&self) -> String {
        match self {
            Checked::Url(u) => u.clone(),
            Checked::Path(p) => p.display().to_string(),
        }
    }
}

impl AllowedLocations {
    /// The prefixes as configured: each an `http(s)://` URL or an absolute
    /// path. `Err` names the one that is neither.
    pub fn new(prefixes: &[String]) -> Result<AllowedLocations, String> {
        let mut out = AllowedLocations {
            urls: Vec::new(),
            paths: Vec::new(),
            given: prefixes.to_vec(),
        };
        for p in prefixes {
            if p.starts_with("http://") || p.starts_with("https://") {
                let url = normalized_url(p)
                    .map_err(|why| format!("`{p}` is not a URL archgate can compare: {why}"))?;
                out.urls.push(url);
            } else if Path::new(p).is_absolute() {
                out.paths.push(
                    lexical(Path::new(p)).ok_or_else(|| {
                        format!("`{p}` has a `..` part: name the directory itself")
                    })?,
                );
            } else {
                return Err(format!(
                    "`{p}` is neither an http(s) URL nor an absolute path"
                ));
            }
        }
        Ok(out)
    }

    /// The prefixes as configured.
    pub fn given(&self) -> &[String] {
        &self.given
    }

    /// Whether `location` (a URL, or an absolute path) is under a prefix.
    /// `real` resolves a path to its real path (`std::fs::canonicalize`);
    /// a path prefix is resolved the same way where it exists. `Ok` gives
    /// the location to read, normalized; `Err` says why not.
    pub fn check(
        &self,
        location: &str,
        real: &dyn Fn(&Path) -> std::io::Result<PathBuf>,
    ) -> Result<Checked, String> {
        if location.starts_with("http://") || location.starts_with("https://") {
            return self.check_url(location).map(Checked::Url);
        }
        let path = Path::new(location);
        if !path.is_absolute() {
            return Err(format!(
                "{location:?} is neither an http(s) URL nor an absolute path"
            ));
        }
        let lexical = lexical(path).ok_or_else(|| format!("{location:?} has a `..` part"))?;
        // The real path where it exists (links resolved); where it does not
        // the run finds nothing to read there either.
        let resolved = real(&lexical).unwrap_or(lexical);
        let under = self.paths.iter().any(|prefix| {
            let prefix = real(prefix).unwrap_or_else(|_| prefix.clone());
            resolved.starts_with(&prefix)
        });
        match under {
            true => Ok(Checked::Path(resolved)),
            false => Err(format!(
                "{location:?} (really {}) is not under an allowed location ({})",
                resolved.display(),
                self.given.join(", ")
            )),
        }
    }

    /// Whether a URL is under one of the URL prefixes: its normalized form
    /// when it is. Also what a redirect is checked with, at each hop.
    pub fn check_url(&self, location: &str) -> Result<String, String> {
        let url = normalized_url(location).map_err(|why| format!("{location:?}: {why}"))?;
        let under = self.urls.iter().any(|prefix| url_under(&url, prefix));
        match under {
            true => Ok(url.to_string()),
            false => Err(format!(
                "{location:?} (normalized: {url}) is not under an allowed location ({})",
                self.given.join(", ")
            )),
        }
    }
}

/// The most redirects a fetch follows.
pub const MAX_REDIRECTS: usize = 10;

impl AllowedLocations {
    /// Whether a fetch may follow a redirect to `url`, after `hops`
    /// redirects already followed: under a prefix, and not past
    /// [`MAX_REDIRECTS`]. `Err` says why not.
    pub fn redirect(&self, url: &str, hops: usize) -> Result<(), String> {
        self.check_url(url)
            .map_err(|why| format!("a redirect outside allowed-locations: {why}"))?;
        match hops < MAX_REDIRECTS {
            true => Ok(()),
            false => Err(format!("more than {MAX_REDIRECTS} redirects")),
        }
    }
}

/// A URL as a fetch sees it, refused where a server could still read it
/// as another path: a query or fragment, credentials, or a segment that
/// decodes to `.`, `..`, or holds a slash, a backslash or a NUL.
fn normalized_url(text: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(text).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("not an http(s) URL".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("a compose location has no query or fragment".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("a compose location carries no credentials".into());
    }
    for segment in url.path().split('/') {
        let decoded = percent_decode(segment);
        if decoded == b"." || decoded == b".." {
            return Err(format!("the path segment {segment:?} is a dot segment"));
        }
        if decoded.iter().any(|b| matches!(b, b'/' | b'\\' | 0)) {
            return Err(format!(
                "the path segment {segment:?} holds an encoded separator"
            ));
        }
    }
    Ok(url)
}

/// `url` is `prefix` or below it, segment by segment; same scheme, host and port.
fn url_under(url: &url::Url, prefix: &url::Url) -> bool {
    if url.scheme() != prefix.scheme()
        || url.host_str() != prefix.host_str()
        || url.port_or_known_default() != prefix.port_or_known_default()
    {
        return false;
    }
    let segments = |u: &url::Url| -> Vec<String> {
        u.path()
            .split('/')
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(&percent_decode(s)).into_owned())
            .collect()
    };
    let (have, want) = (segments(url), segments(prefix));
    have.len() >= want.len() && have[..want.len()] == want[..]
}

fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// An absolute path without `.` parts; `None` if it has a `..` part.
fn lexical(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => return None,
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_links(p: &Path) -> std::io::Result<PathBuf> {
        Ok(p.to_path_buf())
    }

    fn allow() -> AllowedLocations {
        AllowedLocations::new(&[
            "http://h.example/compose/allowed/".to_string(),
            "https://kojipkgs.example/compose".to_string(),
            "/mnt/koji/compose".to_string(),
        ])
        .unwrap()
    }

    #[test]
    fn inside_is_allowed_and_normalized() {
        let a = allow();
        for (ok, to) in [
            (
                "http://h.example/compose/allowed/F-41/compose",
                "http://h.example/compose/allowed/F-41/compose",
            ),
            (
                "http://H.EXAMPLE:80/compose/allowed/x/../F-41",
                "http://h.example/compose/allowed/F-41",
            ),
            (
                "https://kojipkgs.example/compose/41/F-41",
                "https://kojipkgs.example/compose/41/F-41",
            ),
        ] {
            assert_eq!(a.check(ok, &no_links), Ok(Checked::Url(to.into())), "{ok}");
        }
        assert_eq!(
            a.check("/mnt/koji/compose/./F-41", &no_links),
            Ok(Checked::Path("/mnt/koji/compose/F-41".into()))
        );
    }

    #[test]
    fn escapes_are_refused() {
        let a = allow();
        for bad in [
            "http://h.example/compose/allowed/%2e%2e/secret/ID/compose",
            "http://h.example/compose/allowed/.%2E/secret/ID/compose",
            "http://h.example/compose/allowed/%2E%2e/%2e%2e/etc",
            "http://h.example/compose/allowed/..%2fsecret",
            "http://h.example/compose/allowed/..%5csecret",
            "http://h.example/compose/allowed\\..\\secret",
            "http://h.example/compose/allowed-other/x",
            "http://h.example/compose/allowe",
            "http://h.example.evil/compose/allowed/x",
            "http://h.example:8080/compose/allowed/x",
            "http://kojipkgs.example/compose/41/F-41",
            "https://kojipkgs.example/compose-x/41",
            "https://kojipkgs.example/compose/41?x=/../..",
            "https://user@kojipkgs.example/compose/41",
            "/mnt/koji/compose/../../etc",
            "/mnt/koji/compose-other/F-41",
            "/etc",
            "relative/compose",
            "file:///mnt/koji/compose/x",
        ] {
            assert!(a.check(bad, &no_links).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_path_is_compared_on_its_real_path() {
        let a = allow();
        let link = |p: &Path| -> std::io::Result<PathBuf> {
            Ok(match p.strip_prefix("/mnt/koji/compose/link") {
                Ok(rest) => Path::new("/srv/secret").join(rest),
                Err(_) => p.to_path_buf(),
            })
        };
        let e = a.check("/mnt/koji/compose/link/F-41", &link).unwrap_err();
        assert!(e.contains("/srv/secret/F-41"), "{e}");
    }

    #[test]
    fn redirects_stay_inside_and_end() {
        let a = allow();
        let inside = "http://h.example/compose/allowed/F-41";
        assert_eq!(a.redirect(inside, 0), Ok(()));
        assert!(a
            .redirect(inside, MAX_REDIRECTS)
            .unwrap_err()
            .contains("more than"));
        let e = a
            .redirect("http://h.example/compose/secret/F-41", 0)
            .unwrap_err();
        assert!(e.contains("outside allowed-locations"), "{e}");
    }

    #[test]
    fn bad_prefixes_are_named() {
        assert!(AllowedLocations::new(&["compose/".into()]).is_err());
        assert!(AllowedLocations::new(&["/mnt/../etc".into()]).is_err());
    }
}
