//! TLS material for a registry, the containers way (containers-certs.d(5)):
//! a directory per `HOST[:PORT]` whose `*.crt` files are CAs trusted beside
//! the system's roots, and whose `NAME.cert` + `NAME.key` pair is the client
//! certificate presented to the registry.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};

/// What a cert dir holds, read.
#[derive(Clone, Default)]
pub struct TlsFiles {
    /// Where it was read from, for messages.
    pub dir: Option<PathBuf>,
    /// PEM CA certificates (`*.crt`).
    pub cas: Vec<Vec<u8>>,
    /// The client certificate chain and its key, as one PEM (`NAME.cert`
    /// then `NAME.key`).
    pub identity: Option<Vec<u8>>,
}

impl std::fmt::Debug for TlsFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("TlsFiles")
            .field("dir", &self.dir)
            .field("cas", &self.cas.len())
            .field("identity", &self.identity.is_some())
            .finish()
    }
}

/// The cert dirs looked at for `host` when none is configured, in order:
/// `/etc/containers/certs.d/HOST`, then `~/.config/containers/certs.d/HOST`.
pub fn default_cert_dirs(host: &str) -> Vec<PathBuf> {
    let mut dirs = vec![Path::new("/etc/containers/certs.d").join(host)];
    if let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        dirs.push(
            PathBuf::from(home)
                .join(".config/containers/certs.d")
                .join(host),
        );
    }
    dirs
}

/// The cert dir for `host`: the configured one (which must exist), else the
/// first default one that exists, else none.
pub fn cert_dir(host: &str, configured: Option<&Path>) -> Result<Option<PathBuf>> {
    if let Some(dir) = configured {
        if !dir.is_dir() {
            bail!("cert-dir {} is not a directory", dir.display());
        }
        return Ok(Some(dir.to_path_buf()));
    }
    Ok(default_cert_dirs(host).into_iter().find(|d| d.is_dir()))
}

/// Reads a cert dir: every `*.crt` as a CA; the `NAME.cert` + `NAME.key`
/// pair (the first by name, when there are several). A `.cert` without its
/// `.key`, or the reverse, is an error, as in the containers tools.
pub fn load(dir: &Path) -> Result<TlsFiles> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| anyhow!("cert-dir {}: cannot read: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    names.sort();
    let read =
        |p: &Path| std::fs::read(p).map_err(|e| anyhow!("{}: cannot read: {e}", p.display()));
    let ext = |p: &Path| p.extension().and_then(|e| e.to_str()).map(str::to_string);
    let mut files = TlsFiles {
        dir: Some(dir.to_path_buf()),
        ..TlsFiles::default()
    };
    for path in &names {
        match ext(path).as_deref() {
            Some("crt") => {
                let pem = read(path)?;
                reqwest::Certificate::from_pem_bundle(&pem)
                    .map_err(|e| anyhow!("{}: not a PEM certificate: {e}", path.display()))?;
                files.cas.push(pem);
            }
            Some("cert") => {
                let key = path.with_extension("key");
                if !key.is_file() {
                    bail!(
                        "{}: client certificate without its key {}",
                        path.display(),
                        key.display()
                    );
                }
                if files.identity.is_none() {
                    let mut pem = read(path)?;
                    pem.push(b'\n');
                    pem.extend(read(&key)?);
                    reqwest::Identity::from_pem(&pem).map_err(|e| {
                        anyhow!(
                            "{} + {}: not a PEM certificate and key: {e}",
                            path.display(),
                            key.display()
                        )
                    })?;
                    files.identity = Some(pem);
                } else {
                    tracing::warn!(cert = %path.display(), "more than one client certificate in the cert dir; using the first by name");
                }
            }
            Some("key") if !path.with_extension("cert").is_file() => {
                bail!(
                    "{}: key without its client certificate {}",
                    path.display(),
                    path.with_extension("cert").display()
                );
            }
            _ => {}
        }
    }
    Ok(files)
}

/// A sentence for a TLS failure found anywhere in an error's text: what
/// failed, and what to do. `None` when the text shows no TLS problem.
/// `presented` says whether archgate presented a client certificate: a
/// registry refuses a missing one and a wrong one with the same alert.
pub fn explain(
    text: &str,
    cert_dir: Option<&Path>,
    presented: bool,
) -> Option<(archgate_core::ErrorKind, String)> {
    use archgate_core::ErrorKind::{Auth, External};
    let dir = match cert_dir {
        Some(d) => format!("the cert dir {}", d.display()),
        None => "a cert dir (cert-dir, or /etc/containers/certs.d/HOST)".to_string(),
    };
    let has = |needles: &[&str]| needles.iter().any(|n| text.contains(n));
    Some(if has(&["UnknownIssuer", "unknown issuer"]) {
        (External, format!("TLS: the registry's certificate is signed by an unknown issuer; put its CA as a *.crt file in {dir}, or set tls-verify = false"))
    } else if has(&["NotValidForName", "not valid for name"]) {
        (
            External,
            "TLS: the registry's certificate is not valid for this host name".to_string(),
        )
    } else if has(&["Expired", "NotValidYet"]) {
        (
            External,
            "TLS: the registry's certificate has expired or is not valid yet".to_string(),
        )
    } else if has(&["CertificateRequired", "certificate required"])
        || (!presented && has(&["BadCertificate", "bad certificate"]))
    {
        (
            Auth,
            format!("TLS: the registry requires a client certificate; put NAME.cert and NAME.key in {dir}"),
        )
    } else if has(&[
        "BadCertificate",
        "bad certificate",
        "UnknownCA",
        "unknown ca",
        "DecryptError",
    ]) {
        (Auth, format!("TLS: the registry refused the client certificate (is it signed by a CA the registry trusts?); see {dir}"))
    } else if has(&["InvalidCertificate", "invalid peer certificate"]) {
        (
            External,
            format!("TLS: the registry's certificate is not valid; see {dir}"),
        )
    } else {
        return None;
    })
}
