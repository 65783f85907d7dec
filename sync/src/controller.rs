//! The kube-runtime controller: watches SecretSyncs (every namespace) and SecretProviderClasses. The classes feed
//! a reflector store that reconciles read (no GET per sync); a change of a class reconciles the SecretSyncs of its
//! namespace that name it. The reconciler ([`crate::reconcile`]) decides whether a sync is due and asks to be
//! called again after the rotation interval.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::StreamExt;
use kube::api::Api;
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, watcher};

use crate::readiness::{Phase, Readiness};
use crate::reconcile::{Context, ReconcileError, reconcile};
use crate::secretsync::{SecretProviderClass, SecretSync};

/// Reconciles running at once: each mostly waits on Entra, Key Vault or the API server.
const CONCURRENCY: u16 = 16;

/// A reconcile that could not start or could not write its status is retried after this.
const ERROR_REQUEUE: std::time::Duration = std::time::Duration::from_secs(5);

fn error_policy(sync: Arc<SecretSync>, error: &ReconcileError, _ctx: Arc<Context>) -> Action {
    tracing::warn!(
        secretsync = %format!("{}/{}", sync.metadata.namespace.as_deref().unwrap_or(""), sync.metadata.name.as_deref().unwrap_or("")),
        error = %wisp_agent::library::error_chain(error),
        "reconcile failed"
    );
    Action::requeue(ERROR_REQUEUE)
}

/// Which of the two caches hold a full list; turns `readiness` to [`Phase::Serving`] when both do. Driven by the
/// watch streams' `InitDone` events: a store's own `wait_until_ready` wakes only one waiter, and the controller's
/// runner is already that waiter.
#[derive(Debug, Clone)]
struct CachesListed {
    syncs: Arc<AtomicBool>,
    classes: Arc<AtomicBool>,
    readiness: Readiness,
}

impl CachesListed {
    fn new(readiness: Readiness) -> Self {
        readiness.set(Phase::ListingCaches);
        Self {
            syncs: Arc::new(AtomicBool::new(false)),
            classes: Arc::new(AtomicBool::new(false)),
            readiness,
        }
    }

    /// Records `event` of the cache `listed` (one of this struct's flags).
    fn observe<K>(&self, listed: &AtomicBool, event: &Result<watcher::Event<K>, watcher::Error>) {
        if !matches!(event, Ok(watcher::Event::InitDone)) || listed.swap(true, Ordering::AcqRel) {
            return;
        }
        if self.syncs.load(Ordering::Acquire)
            && self.classes.load(Ordering::Acquire)
            && self.readiness.phase() != Phase::Serving
        {
            self.readiness.set(Phase::Serving);
            tracing::info!("SecretSync and SecretProviderClass caches synced");
        }
    }
}

/// Runs the controller until `shutdown` resolves. `classes` is the writer of the store `ctx` reads classes from;
/// `readiness` turns to [`Phase::Serving`] once both caches hold a full list.
pub async fn run(
    ctx: Arc<Context>,
    classes: reflector::store::Writer<SecretProviderClass>,
    readiness: Readiness,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let listed = CachesListed::new(readiness);
    let (syncs, sync_writer) = reflector::store::<SecretSync>();
    let sync_events = reflector::reflector(
        sync_writer,
        watcher(Api::<SecretSync>::all(client.clone()), watcher::Config::default()).inspect({
            let listed = listed.clone();
            move |event| listed.observe(&listed.syncs, event)
        }),
    )
    .default_backoff()
    .applied_objects();
    let class_events = reflector::reflector(
        classes,
        watcher(Api::<SecretProviderClass>::all(client), watcher::Config::default()).inspect({
            let listed = listed.clone();
            move |event| listed.observe(&listed.classes, event)
        }),
    )
    .default_backoff()
    .touched_objects();
    Controller::for_stream(sync_events, syncs.clone())
        .with_config(ControllerConfig::default().concurrency(CONCURRENCY))
        .watches_stream(class_events, move |spc: SecretProviderClass| {
            let namespace = spc.metadata.namespace.clone().unwrap_or_default();
            let name = spc.metadata.name.clone().unwrap_or_default();
            syncs
                .state()
                .into_iter()
                .filter(|sync| {
                    sync.metadata.namespace.as_deref() == Some(namespace.as_str())
                        && sync.spec.secret_provider_class_name == name
                })
                .map(|sync| ObjectRef::from_obj(sync.as_ref()))
                .collect::<Vec<_>>()
        })
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "controller event");
            }
        })
        .await;
}
