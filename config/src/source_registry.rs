//! `[source]` of kind `registry` (docs/sources.md): which images, which
//! arches, which build.

use std::path::PathBuf;
use std::str::FromStr;

use archgate_core::{Arch, Reference, Repository};
use archgate_source_registry::{render, Inputs, Settings};

use crate::{ConfigError, Loaded, Options, SourceKind};

/// An arch by archgate's name (`x86_64`), Docker's (`arm64v8`) or the
/// platform's (`arm64`).
fn any_arch(name: &str) -> Option<Arch> {
    Arch::from_str(name).ok().or_else(|| {
        Arch::ALL
            .into_iter()
            .find(|a| a.docker_name() == name || a.goarch() == name)
    })
}

impl Loaded {
    /// The `registry` source's settings; `location` is the digests
    /// directory, if any.
    pub(crate) fn registry_source(
        &self,
        opts: &Options,
        location: Option<String>,
    ) -> Result<Settings, ConfigError> {
        let source = &self.config.source;
        let file = self.path.display();
        let err = |why: String| ConfigError(format!("{file}: [source] kind \"registry\": {why}"));
        let arches = source
            .arches
            .iter()
            .flatten()
            .map(|a| any_arch(a).ok_or_else(|| err(format!("`arches`: unknown arch `{a}`"))))
            .collect::<Result<Vec<_>, _>>()?;
        let inputs = match (&location, &source.template, &source.references) {
            (Some(dir), None, None) => Inputs::Digests {
                dir: PathBuf::from(dir),
                repository: source.repository.clone().ok_or_else(|| {
                    err("a digests directory needs `repository`, where its images were pushed".into())
                })?,
            },
            (None, Some(t), None) => Inputs::Template(t.clone()),
            (None, None, Some(refs)) => Inputs::References(
                refs.iter()
                    .map(|(a, r)| {
                        any_arch(a)
                            .map(|a| (a, r.clone()))
                            .ok_or_else(|| err(format!("`references`: unknown arch `{a}`")))
                    })
                    .collect::<Result<_, _>>()?,
            ),
            _ => {
                return Err(err(
                    "name the images one way: a digests directory (`location` or --compose, with `repository`), `template`, or `references`".into(),
                ))
            }
        };
        if arches.is_empty() && !matches!(inputs, Inputs::References(_)) {
            return Err(err(
                "`arches`: the arches that should be there (one with no image is a failed arch)"
                    .into(),
            ));
        }
        let settings = Settings {
            inputs,
            arches,
            build: opts.build.clone().or_else(|| source.build.clone()),
            version: source.version.clone(),
        };
        for r in self.references(&settings).map_err(err)? {
            Reference::parse(&r).map_err(err)?;
        }
        Ok(settings)
    }

    /// Every registry host the source reads (they get clients as the
    /// targets' do: `[registry."HOST"]` applies).
    pub(crate) fn source_hosts(&self, opts: &Options) -> Result<Vec<String>, ConfigError> {
        if self.config.source.kind != SourceKind::Registry {
            return Ok(Vec::new());
        }
        let location = opts
            .compose
            .clone()
            .or_else(|| self.config.source.location.clone());
        let settings = self.registry_source(opts, location)?;
        let mut hosts = Vec::new();
        for r in self.references(&settings).map_err(ConfigError)? {
            let parsed = Reference::parse(&r).map_err(ConfigError)?;
            if let Repository::Registry { host, .. } = parsed.repository {
                hosts.push(host);
            }
        }
        Ok(hosts)
    }

    /// The references the settings name (a digests directory: its
    /// repository).
    fn references(&self, settings: &Settings) -> Result<Vec<String>, String> {
        Ok(match &settings.inputs {
            Inputs::Digests { repository, .. } => vec![repository.clone()],
            Inputs::Template(t) => settings
                .arches
                .iter()
                .map(|a| render(t, *a, settings.version.as_deref()))
                .collect::<Result<_, _>>()?,
            Inputs::References(refs) => refs.values().cloned().collect(),
        })
    }
}
