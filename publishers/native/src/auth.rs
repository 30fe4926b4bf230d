//! Registry credentials: where they come from (the containers and Docker
//! auth files, in containers' order) and the `WWW-Authenticate` challenges
//! that say how to use them. Secrets never reach a log line or a message.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};
use docker_credential::{CredentialRetrievalError, DockerCredential};

/// A password or token: printed as `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// A secret holding `s`.
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Credentials for a registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// A user name and password (basic auth, or for a token server).
    Basic {
        /// The user name.
        username: String,
        /// The password.
        password: Secret,
    },
    /// An identity (refresh) token, sent to the token server.
    IdentityToken(Secret),
}

impl Credentials {
    /// Who, for messages: the user name, never the secret.
    pub fn who(&self) -> String {
        match self {
            Credentials::Basic { username, .. } => format!("user {username}"),
            Credentials::IdentityToken(_) => "an identity token".to_string(),
        }
    }
}

/// The auth files looked at, in order, when `[registry."HOST"] auth-file` is
/// not set: REGISTRY_AUTH_FILE, $XDG_RUNTIME_DIR/containers/auth.json,
/// ~/.config/containers/auth.json, $DOCKER_CONFIG/config.json,
/// ~/.docker/config.json.
pub fn default_auth_files() -> Vec<PathBuf> {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let home = env("HOME");
    let mut files = Vec::new();
    files.extend(env("REGISTRY_AUTH_FILE"));
    files.extend(env("XDG_RUNTIME_DIR").map(|d| d.join("containers/auth.json")));
    files.extend(
        home.as_ref()
            .map(|h| h.join(".config/containers/auth.json")),
    );
    files.extend(env("DOCKER_CONFIG").map(|d| d.join("config.json")));
    files.extend(home.as_ref().map(|h| h.join(".docker/config.json")));
    files
}

/// Credentials from the environment variables named by `username-env` and
/// `password-env`. An unset or empty variable is an error naming it (never
/// its value).
pub fn from_env(username_var: &str, password_var: &str) -> Result<Credentials> {
    let get = |var: &str, key: &str| {
        std::env::var(var)
            .ok()
            .filter(|v| !v.is_empty())
            .ok_or_else(|| anyhow!("{key} names the environment variable {var}, which is not set"))
    };
    Ok(Credentials::Basic {
        username: get(username_var, "username-env")?,
        password: Secret(get(password_var, "password-env")?),
    })
}

/// The credentials for `host`: from `auth_file` if given (it must exist),
/// else from the first default auth file that has an entry for the host.
pub fn lookup(host: &str, auth_file: Option<&Path>) -> Result<Option<Credentials>> {
    if let Some(file) = auth_file {
        if !file.is_file() {
            return Err(anyhow!("auth file {} does not exist", file.display()));
        }
        return from_file(file, host);
    }
    for file in default_auth_files() {
        if file.is_file() {
            if let Some(c) = from_file(&file, host)? {
                tracing::debug!(host, file = %file.display(), "credentials found");
                return Ok(Some(c));
            }
        }
    }
    Ok(None)
}

fn from_file(file: &Path, host: &str) -> Result<Option<Credentials>> {
    for key in [
        host.to_string(),
        format!("https://{host}"),
        format!("http://{host}"),
    ] {
        let reader = std::fs::File::open(file)
            .map_err(|e| anyhow!("{}: cannot read: {e}", file.display()))?;
        match docker_credential::get_credential_from_reader(reader, &key) {
            Ok(DockerCredential::UsernamePassword(username, password)) => {
                return Ok(Some(Credentials::Basic {
                    username,
                    password: Secret(password),
                }))
            }
            Ok(DockerCredential::IdentityToken(t)) => {
                return Ok(Some(Credentials::IdentityToken(Secret(t))))
            }
            Err(CredentialRetrievalError::NoCredentialConfigured) => continue,
            Err(CredentialRetrievalError::HelperFailure { helper, .. }) => {
                return Err(anyhow!(
                    "{}: credential helper `{helper}` failed for {host}",
                    file.display()
                ))
            }
            Err(e) => {
                return Err(anyhow!(
                    "{}: cannot read credentials for {host}: {e}",
                    file.display()
                ))
            }
        }
    }
    Ok(None)
}

/// How a registry wants to be authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

/// Parses a `WWW-Authenticate` header value.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut realm = None;
    let mut service = None;
    for (k, v) in params(rest) {
        match k.to_ascii_lowercase().as_str() {
            "realm" => realm = Some(v),
            "service" => service = Some(v),
            _ => {}
        }
    }
    Some(Challenge::Bearer {
        realm: realm?,
        service,
    })
}

/// `k="v", k2=v2` pairs; quoted values may hold commas.
fn params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let Some(eq) = rest.find('=') else { break };
        let key = rest[..eq].trim().trim_start_matches(',').trim().to_string();
        rest = &rest[eq + 1..];
        let value;
        if let Some(r) = rest.strip_prefix('"') {
            let end = r.find('"').unwrap_or(r.len());
            value = r[..end].to_string();
            rest = r.get(end + 1..).unwrap_or("");
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            value = rest[..end].trim().to_string();
            rest = &rest[end..];
        }
        rest = rest.trim_start().trim_start_matches(',').trim_start();
        out.push((key, value));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        assert_eq!(
            parse_challenge("Basic realm=\"Registry Realm\""),
            Some(Challenge::Basic)
        );
        assert_eq!(
            parse_challenge("Bearer realm=\"http://127.0.0.1:5/token\",service=\"reg\",scope=\"repository:a,b:pull\""),
            Some(Challenge::Bearer { realm: "http://127.0.0.1:5/token".into(), service: Some("reg".into()) })
        );
        assert_eq!(parse_challenge("Bearer service=x"), None);
        assert_eq!(parse_challenge("Negotiate"), None);
    }

    #[test]
    fn secrets_do_not_print() {
        let c = Credentials::Basic {
            username: "rel".into(),
            password: Secret::new("hunter2"),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
        assert_eq!(c.who(), "user rel");
    }

    #[test]
    fn auth_files_podman_and_docker_shapes() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("auth.json");
        // "rel:s3cret"
        std::fs::write(
            &f,
            r#"{"auths":{"127.0.0.1:5000":{"auth":"cmVsOnMzY3JldA=="}}}"#,
        )
        .unwrap();
        let c = lookup("127.0.0.1:5000", Some(&f)).unwrap().unwrap();
        assert_eq!(
            c,
            Credentials::Basic {
                username: "rel".into(),
                password: Secret::new("s3cret")
            }
        );
        assert_eq!(lookup("other:5000", Some(&f)).unwrap(), None);
        assert!(lookup("x", Some(&tmp.path().join("missing.json")))
            .unwrap_err()
            .to_string()
            .contains("does not exist"));
        std::fs::write(&f, "not json").unwrap();
        let e = lookup("127.0.0.1:5000", Some(&f)).unwrap_err().to_string();
        assert!(e.contains("auth.json: cannot read credentials"), "{e}");
    }
}
