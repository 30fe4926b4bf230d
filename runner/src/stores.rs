//! Where a run reads and writes: a view of one registry client per host
//! (clients, with their connections and tokens, live as long as the
//! [`crate::Runner`]), and the layouts. Also this process's one publish per
//! target at a time.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use archgate_core::Repository;
use archgate_native::{AnyStore, OciLayout, Store};
use archgate_native::{Registry, RegistryRepo, RegistrySettings, RetryPolicy};

use crate::spec::{RegistrySpec, RepoSpec};
use crate::RunError;

/// What identifies a registry client: the same settings reuse it.
#[derive(PartialEq)]
struct ClientKey {
    timeout: std::time::Duration,
    tls_verify: bool,
    credentials: Option<archgate_native::Credentials>,
    cas: Vec<Vec<u8>>,
    identity: Option<Vec<u8>>,
}

impl ClientKey {
    fn of(spec: &RegistrySpec) -> ClientKey {
        ClientKey {
            timeout: spec.timeout,
            tls_verify: spec.tls_verify,
            credentials: spec.credentials.clone(),
            cas: spec.tls.cas.clone(),
            identity: spec.tls.identity.clone(),
        }
    }
}

/// Locks by target reference: one publish per target at a time in this
/// process (the service may run several messages at once).
pub(crate) type TargetLocks = Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>;

/// The registry clients of a runner, by host.
#[derive(Default)]
pub(crate) struct Clients {
    by_host: Mutex<HashMap<String, (ClientKey, Arc<Registry>)>>,
}

impl Clients {
    /// A fresh view of a client for every registry `registries` names,
    /// reusing the client (connections, tokens) of earlier runs where the
    /// settings are the same.
    pub(crate) fn views(
        &self,
        registries: &BTreeMap<String, RegistrySpec>,
        targets: &TargetLocks,
        fence: Option<&archgate_native::Fence>,
    ) -> Result<RunStores, RunError> {
        let mut clients = self.by_host.lock().expect("clients");
        let mut views = HashMap::new();
        for (host, spec) in registries {
            let key = ClientKey::of(spec);
            let reuse = clients
                .get(host)
                .filter(|(k, _)| *k == key)
                .map(|(_, r)| r.clone());
            let client = match reuse {
                Some(c) => c,
                None => {
                    let client = Arc::new(new_client(host, spec)?);
                    clients.insert(host.clone(), (key, client.clone()));
                    client
                }
            };
            let view = match fence {
                Some(f) => client.view().fenced(f.clone()),
                None => client.view(),
            };
            views.insert(host.clone(), Arc::new(view));
        }
        Ok(RunStores {
            registries: views,
            specs: registries.clone(),
            targets: targets.clone(),
        })
    }
}

fn new_client(host: &str, spec: &RegistrySpec) -> Result<Registry, RunError> {
    let settings = RegistrySettings {
        tls_verify: spec.tls_verify,
        credentials: spec.credentials.clone(),
        tls: spec.tls.clone(),
        retry: RetryPolicy {
            deadline: spec.timeout,
            ..Default::default()
        },
    };
    Registry::new(host, settings).map_err(|e| RunError::config(format!("{e:#}")))
}

/// The registries and layouts of one run.
pub struct RunStores {
    registries: HashMap<String, Arc<Registry>>,
    pub(crate) specs: BTreeMap<String, RegistrySpec>,
    targets: TargetLocks,
}

impl RunStores {
    /// Waits for, and holds, this process's one publish of `reference`.
    pub(crate) async fn target_lock(&self, reference: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = self
            .targets
            .lock()
            .expect("target locks")
            .entry(reference.to_string())
            .or_default()
            .clone();
        if let Ok(held) = lock.clone().try_lock_owned() {
            return held;
        }
        tracing::info!(target = %reference, "waiting for {reference}: another run of this process is publishing it");
        let held = lock.lock_owned().await;
        tracing::info!(target = %reference, "{reference}: the other run is done; going on");
        held
    }

    /// Tells each registry what the run will send at once right after its
    /// first contact: small requests, and blob uploads (by host).
    pub(crate) fn expect(&self, requests: &HashMap<String, usize>, uploads: &HashMap<&str, usize>) {
        for (host, registry) in &self.registries {
            let n = |m: Option<&usize>| m.copied().unwrap_or(0);
            registry.expect(n(requests.get(host)), n(uploads.get(host.as_str())));
        }
    }

    /// Gives up the upload sessions opened ahead that nothing took
    /// (`Store::sign_soon`), on every registry at once: none is left open.
    pub(crate) async fn give_up_sessions_ahead(&self) {
        let giving_up = self.registries.values().map(|r| r.give_up_sessions_ahead());
        futures_util::future::join_all(giving_up).await;
    }

    /// The run's view of the registry at `host`.
    pub(crate) fn registry(&self, host: &str) -> Option<Arc<Registry>> {
        self.registries.get(host).cloned()
    }

    /// The store of a repository.
    pub fn store(&self, repo: &RepoSpec) -> AnyStore {
        match &repo.repository {
            Repository::Layout { dir } => AnyStore::Layout(OciLayout::new(
                repo.layout_dir
                    .clone()
                    .unwrap_or_else(|| PathBuf::from(dir)),
            )),
            Repository::Registry { host, path } => AnyStore::Registry(RegistryRepo {
                registry: self.registries[host].clone(),
                path: path.clone(),
            }),
        }
    }
}

/// What names a target across processes: its store (a registry repository
/// `HOST/PATH`, or `oci:` and the layout's directory) and its tag.
pub(crate) fn store_tag(store: &AnyStore, tag: &str) -> String {
    format!("{}:{tag}", store.name())
}
