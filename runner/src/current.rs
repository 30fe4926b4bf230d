//! Stage 3: read the current states. Every target's current index, read at
//! once (bounded per registry by its client): one GET per tag, configs
//! only where the gate needs them.

use std::collections::HashMap;

use archgate_core::{ComposeResults, CurrentIndex, Policy};
use archgate_native::{read_current, AnyStore, Depth};
use futures_util::StreamExt;

use crate::spec::RunSpec;
use crate::stores::RunStores;
use crate::targets::Target;

/// Holds every target a run may write, before its current index is read:
/// this process's lock on it (the service runs one consumer at a time per
/// queue, so this is the one writer per target), one target after another
/// in the order of their names, so that runs sharing targets never wait on
/// each other in a circle. Targets whose tag could not be named, and those
/// of images the compose's results already refuse (nothing built, a
/// required arch missing, an unfinished compose), are not held: nothing is
/// written there.
pub(crate) async fn hold_all(
    spec: &RunSpec,
    stores: &RunStores,
    results: &ComposeResults,
    targets: &mut [Target],
) {
    let mut order: Vec<(String, usize)> = targets
        .iter()
        .enumerate()
        .filter(|(_, t)| t.named && crate::compose::may_write(spec, results, &spec.images[t.image]))
        .map(|(i, t)| {
            let store = stores.store(&spec.images[t.image].repositories[t.repo]);
            (crate::stores::store_tag(&store, &t.tag), i)
        })
        .collect();
    order.sort();
    for (name, i) in order {
        targets[i].hold = Some(stores.target_lock(&name).await);
    }
}

/// How many current indexes [`read_all`] reads at once on each registry
/// (by host): one per named target there.
pub(crate) fn reads_at_once(spec: &RunSpec, targets: &[Target]) -> HashMap<String, usize> {
    let mut reads = HashMap::new();
    for t in targets.iter().filter(|t| t.named) {
        let repo = &spec.images[t.image].repositories[t.repo];
        if let archgate_core::Repository::Registry { host, .. } = &repo.repository {
            *reads.entry(host.clone()).or_default() += 1;
        }
    }
    reads
}

/// What each target holds now, in target order.
pub(crate) async fn read_all(
    spec: &RunSpec,
    stores: &RunStores,
    targets: &[Target],
) -> Vec<Result<Option<CurrentIndex>, anyhow::Error>> {
    // (Futures made before they are streamed: a closure in the stream
    // would keep this future from being `Send`.)
    let mut reads = Vec::new();
    for t in targets {
        let store = stores.store(&spec.images[t.image].repositories[t.repo]);
        let depth = match (t.policy, spec.gate.max_carry_age) {
            (Policy::Hybrid, Some(_)) => Depth::Configs,
            _ => Depth::Index,
        };
        reads.push(current_of(store, t.named.then(|| t.tag.clone()), depth));
    }
    futures_util::stream::iter(reads)
        .buffered(64)
        .collect()
        .await
}

/// The current index under `tag`; none for an unnamed target.
async fn current_of(
    store: AnyStore,
    tag: Option<String>,
    depth: Depth,
) -> Result<Option<CurrentIndex>, anyhow::Error> {
    match tag {
        Some(tag) => read_current(&store, &tag, depth).await,
        None => Ok(None),
    }
}
