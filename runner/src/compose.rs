//! Stage 1: load the compose. A source (Pungi, Koji, dir, a plugin) reads it
//! and reports one result per arch for every configured image.

use archgate_core::{Arch, ComposeResults, ErrorKind, ImageQuery, Outcome, Source};

use crate::spec::{ImageSpec, RunSpec, SourceSpec};
use crate::stores::RunStores;
use crate::RunError;

/// Reads the compose: its results for every image of `spec`. The
/// `registry` source reads through the run's registry views (`stores`).
pub(crate) async fn load(spec: &RunSpec, stores: &RunStores) -> Result<ComposeResults, RunError> {
    if let SourceSpec::Registry(settings) = &spec.source {
        let mut results = archgate_source_registry::load(settings, &Views(stores))
            .await
            .map_err(|e| RunError::input(e.to_string()))?;
        // One build, the same results for every configured image.
        let list = results.images.remove("").unwrap_or_default();
        results.images = spec
            .images
            .iter()
            .map(|i| (i.name.clone(), list.clone()))
            .collect();
        return Ok(results);
    }
    let source = spec.source.clone();
    let allowed = spec.allowed_locations.clone();
    let queries: Vec<ImageQuery> = spec
        .images
        .iter()
        .map(|i| ImageQuery {
            name: i.name.clone(),
            matcher: i.matcher.clone(),
        })
        .collect();
    // Sources block (files, a blocking HTTP client, a plugin): they are
    // made, used and dropped on a blocking thread.
    tokio::task::spawn_blocking(move || {
        let source = make_source(&source, &allowed)?;
        source
            .load(&queries)
            .map_err(|e| RunError::input(e.to_string()))
    })
    .await
    .map_err(|e| {
        RunError::new(
            ErrorKind::Internal,
            format!("internal error: the compose reader stopped: {e}"),
        )
    })?
}

/// The `registry` source's reads, through the run's registry views (what
/// it reads is kept there: the artifacts' reads ask nothing again).
struct Views<'a>(&'a RunStores);

impl Views<'_> {
    fn view(&self, host: &str) -> anyhow::Result<std::sync::Arc<archgate_native::Registry>> {
        self.0
            .registry(host)
            .ok_or_else(|| anyhow::anyhow!("internal error: no client for the registry {host}"))
    }
}

impl archgate_source_registry::Fetch for Views<'_> {
    async fn manifest(
        &self,
        host: &str,
        repository: &str,
        reference: &str,
    ) -> anyhow::Result<Option<archgate_source_registry::Document>> {
        let got = self.view(host)?.get_tag(repository, reference).await?;
        Ok(got.map(|(desc, bytes)| archgate_source_registry::Document {
            digest: desc.digest,
            bytes,
        }))
    }

    async fn blob(&self, host: &str, repository: &str, digest: &str) -> anyhow::Result<Vec<u8>> {
        let desc = archgate_native::Descriptor::of_digest(digest);
        self.view(host)?.get_blob(repository, &desc).await
    }
}

fn make_source(
    spec: &SourceSpec,
    allowed: &Option<archgate_core::AllowedLocations>,
) -> Result<Box<dyn Source>, RunError> {
    use archgate_source_pungi::{HttpCompose, PungiSource};
    Ok(match spec {
        SourceSpec::Dir { location } => Box::new(archgate_source_dir::DirSource::new(location)),
        SourceSpec::Pungi { location } => {
            if location.starts_with("http://") || location.starts_with("https://") {
                let http = HttpCompose::new(location, allowed.clone())
                    .map_err(|e| RunError::input(e.to_string()))?;
                Box::new(PungiSource::new(http))
            } else {
                Box::new(PungiSource::local(location))
            }
        }
        SourceSpec::Koji { hub, topurl, task } => Box::new(
            archgate_source_koji::KojiSource::new(hub, topurl, task)
                .map_err(|e| RunError::config(e.to_string()))?,
        ),
        SourceSpec::Registry(_) => {
            return Err(RunError::new(
                ErrorKind::Internal,
                "internal error: the registry source is read with the run's registries",
            ))
        }
        SourceSpec::Plugin {
            library,
            location,
            settings,
        } => Box::new(
            archgate_source_plugin::PluginSource::load(library, location.clone(), settings.clone())
                .map_err(|e| RunError::input(e.to_string()))?,
        ),
    })
}

/// Whether anything of `image` may be written: what the compose's results
/// already show of the gate's hard refusals does not hold (an unfinished
/// compose, nothing built, a required arch not built). What the targets
/// hold (a newer compose) is told only once they are read.
pub(crate) fn may_write(spec: &RunSpec, results: &ComposeResults, image: &ImageSpec) -> bool {
    if !results.compose.status.is_finished() {
        return false;
    }
    let built: Vec<Arch> = results
        .images
        .get(&image.name)
        .into_iter()
        .flatten()
        .filter(|r| matches!(r.outcome, Outcome::Built(_)))
        .map(|r| r.arch)
        .collect();
    !built.is_empty() && spec.gate.required.iter().all(|a| built.contains(a))
}
