//! `[registry."HOST"]`: how each registry is reached (TLS, credentials,
//! timeouts), resolved into what the runner needs.

use std::path::PathBuf;

use serde::Deserialize;

use crate::values::{some_duration, yes};
use crate::{ConfigError, Loaded};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RegistryConfig {
    #[serde(default = "yes")]
    pub tls_verify: bool,
    pub auth_file: Option<String>,
    /// containers-certs.d(5): `*.crt` CAs, `NAME.cert` + `NAME.key` pairs.
    pub cert_dir: Option<String>,
    /// Environment variables holding the user name and password.
    pub username_env: Option<String>,
    pub password_env: Option<String>,
    /// How long one operation on this registry may take, tries included.
    #[serde(default, deserialize_with = "some_duration")]
    pub timeout: Option<std::time::Duration>,
}

impl Loaded {
    /// How `host` is reached: `[registry."HOST"]` with the credentials
    /// (environment variables first, then auth files) and the cert dir read.
    pub fn registry_spec(&self, host: &str) -> Result<archgate_runner::RegistrySpec, ConfigError> {
        registry_spec(Some(self), host)
    }
}

/// [`Loaded::registry_spec`], or the defaults for a host without a
/// configuration (`archgate inspect` without `-c`).
pub fn registry_spec(
    loaded: Option<&Loaded>,
    host: &str,
) -> Result<archgate_runner::RegistrySpec, ConfigError> {
    let configured = loaded.and_then(|l| l.config.registry.get(host));
    let resolve = |f: &str| match loaded {
        Some(l) => l.resolve_path(f),
        None => PathBuf::from(f),
    };
    let error = |e: anyhow::Error| {
        let place = loaded
            .map(|l| format!("{}: ", l.path.display()))
            .unwrap_or_default();
        ConfigError(format!("{place}[registry.\"{host}\"]: {e:#}"))
    };
    let auth_file = configured.and_then(|c| c.auth_file.as_deref()).map(resolve);
    let env_credentials = match configured
        .and_then(|c| c.username_env.as_deref().zip(c.password_env.as_deref()))
    {
        Some((user, pass)) => Some(archgate_native::env_credentials(user, pass).map_err(error)?),
        None => None,
    };
    let from_env = env_credentials.is_some();
    let credentials = match env_credentials {
        Some(c) => Some(c),
        None => archgate_native::lookup_credentials(host, auth_file.as_deref()).map_err(error)?,
    };
    let configured_dir = configured.and_then(|c| c.cert_dir.as_deref()).map(resolve);
    let cert_dir = archgate_native::cert_dir(host, configured_dir.as_deref()).map_err(error)?;
    let tls = match &cert_dir {
        Some(dir) => archgate_native::load_cert_dir(dir).map_err(error)?,
        None => Default::default(),
    };
    if let Some(dir) = &cert_dir {
        tracing::debug!(host, dir = %dir.display(), cas = tls.cas.len(), client_certificate = tls.identity.is_some(), "cert dir");
    }
    Ok(archgate_runner::RegistrySpec {
        timeout: configured
            .and_then(|c| c.timeout)
            .unwrap_or(std::time::Duration::from_secs(60)),
        tls_verify: configured.is_none_or(|c| c.tls_verify),
        credentials,
        cert_dir,
        tls,
        auth_file,
        env_credentials: from_env,
    })
}
