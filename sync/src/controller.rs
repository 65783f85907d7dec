//! The kube-runtime controller: watches SecretSyncs (every namespace) and SecretProviderClasses; a change of a
//! class reconciles the SecretSyncs of its namespace that name it. The reconciler ([`crate::reconcile`]) decides
//! whether a sync is due and asks to be called again after the rotation interval.

use std::sync::Arc;

use futures::StreamExt;
use kube::api::Api;
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;

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

/// Runs the controller until `shutdown` resolves.
pub async fn run(ctx: Arc<Context>, shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static) {
    let client = ctx.client.clone();
    let syncs: Api<SecretSync> = Api::all(client.clone());
    let classes: Api<SecretProviderClass> = Api::all(client);
    let controller = Controller::new(syncs, watcher::Config::default())
        .with_config(ControllerConfig::default().concurrency(CONCURRENCY));
    let store = controller.store();
    controller
        .watches(classes, watcher::Config::default(), move |spc: SecretProviderClass| {
            let namespace = spc.metadata.namespace.clone().unwrap_or_default();
            let name = spc.metadata.name.clone().unwrap_or_default();
            store
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
