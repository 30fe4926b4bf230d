//! Stage 1: load the compose. A source (Pungi, Koji, dir, a plugin) reads it
//! and reports one result per arch for every configured image.

use archgate_core::{Arch, ComposeResults, ErrorKind, ImageQuery, Outcome, Source};

use crate::spec::{ImageSpec, RunSpec, SourceSpec};
use crate::RunError;

/// Reads the compose: its results for every image of `spec`.
pub(crate) async fn load(spec: &RunSpec) -> Result<ComposeResults, RunError> {
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
