//! One SecretSync reconciled, in upstream's order: checks of the SecretSync, its identity ([`crate::identity`]: a
//! service-account token from the TokenRequest API with the ServiceAccount's annotations, or a service principal's
//! credentials Secret), the SecretProviderClass from the SecretSync's namespace (the controller's cache), the
//! in-process provider's content (the same parameters, identities and token
//! cache as a mount; Key Vault reads shared by every SecretSync of a rotation round), the Secret's data and
//! `syncHash`, a server-side apply of the Secret when something changed, and the status. A failure leaves the
//! Secret as it is, sets the condition with upstream's reason and records a Warning Event with the error's text.
//!
//! When: at once for a SecretSync not seen yet, or whose generation (spec, `forceSynchronization`) or class
//! changed; otherwise once per `--rotation-poll-interval` (a failed one is retried sooner). Every watch event
//! reaches [`reconcile`], including those of its own status writes, which find nothing due.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{ObjectReference, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::{ObjectRef, Store};
use serde_json::json;
use tokio::time::Instant;
use wisp_agent::library::{Freshness, MountInput, Provider, apply_workload_identity_defaults, error_chain};
use wisp_shared::contract::secrets_store::{
    CTX_POD_NAME, CTX_POD_NAMESPACE, CTX_POD_UID, CTX_SERVICE_ACCOUNT_NAME, CTX_SERVICE_ACCOUNT_TOKENS, PROVIDER_AZURE,
};

use crate::conditions::{self, Plan, Reason};
use crate::hash::{self, HashCache, HashInputs};
use crate::identity::{Identities, IdentityError, NODE_PUBLISH_SECRET_REF_ANNOTATION};
use crate::metrics::SyncMetrics;
use crate::secret::{self, FIELD_MANAGER, SecretError};
use crate::secretsync::{API_VERSION, KIND, SecretProviderClass, SecretSync, SecretSyncStatus};

/// Longest wait for one sync's provider content (Entra and Key Vault, retries included).
const FETCH_TIMEOUT: Duration = Duration::from_secs(60);
/// A failed sync is tried again after this, or after the rotation interval if that is shorter.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(30);

/// Why a reconcile could not even start (the sync's own failures are statuses and Events, not errors).
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("SecretSync has no namespace or name")]
    Unnamed,
    #[error("writing the status of SecretSync {sync} failed")]
    Status {
        sync: String,
        #[source]
        source: kube::Error,
    },
}

/// Settings of every reconcile.
#[derive(Debug, Clone)]
pub struct ReconcileConfig {
    /// `--rotation-poll-interval`.
    pub interval: Duration,
    /// `--controller-name`: SecretSyncs naming another `secretSyncControllerName` are left alone.
    pub controller_name: String,
    /// This pod's name and uid (the downward API's `SYNC_CONTROLLER_POD_NAME`/`_UID`), passed to the provider as a
    /// mount's pod, as upstream does.
    pub pod_name: String,
    pub pod_uid: String,
}

/// A failure of one sync: the condition reason and the text of the Warning Event and the log.
#[derive(Debug)]
struct SyncFailure {
    reason: Reason,
    message: String,
}

impl SyncFailure {
    fn new(reason: Reason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }

    /// A missing or unusable ServiceAccount or credentials Secret: `UserInputValidationFailed`; the API server
    /// failing or refusing: as [`SyncFailure::api_refusal`].
    fn identity(error: &IdentityError) -> Self {
        let text = error.to_string();
        if error.is_user_input() {
            Self::new(Reason::UserInputValidationFailed, text)
        } else {
            Self::api_refusal(text)
        }
    }

    /// An API server refusal: `ValidatingAdmissionPolicyCheckFailed` if a policy refused, else `UnknownError`.
    fn api_refusal(text: String) -> Self {
        let reason = if conditions::is_admission_policy_refusal(&text) {
            Reason::ValidatingAdmissionPolicyCheckFailed
        } else {
            Reason::UnknownError
        };
        Self::new(reason, text)
    }
}

/// What the last attempt of one SecretSync saw, to tell whether the next is due.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Observed {
    generation: i64,
    class: String,
    at: Instant,
    failed: bool,
}

/// Everything reconciles share.
pub struct Context {
    pub client: kube::Client,
    pub provider: Arc<Provider>,
    pub recorder: Recorder,
    pub config: ReconcileConfig,
    pub metrics: Arc<SyncMetrics>,
    /// SecretProviderClasses, kept by the controller's watch.
    pub classes: Store<SecretProviderClass>,
    identities: Identities,
    hashes: HashCache,
    /// One permit per core for the sync hash's key derivation.
    hashing: tokio::sync::Semaphore,
    observed: Mutex<HashMap<(String, String), Observed>>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Context {
    pub fn new(
        client: kube::Client,
        provider: Arc<Provider>,
        recorder: Recorder,
        config: ReconcileConfig,
        metrics: Arc<SyncMetrics>,
        classes: Store<SecretProviderClass>,
    ) -> Self {
        Self {
            identities: Identities::new(client.clone()),
            client,
            provider,
            recorder,
            config,
            metrics,
            classes,
            hashes: HashCache::new(),
            hashing: tokio::sync::Semaphore::new(std::thread::available_parallelism().map_or(1, usize::from)),
            observed: Mutex::new(HashMap::new()),
        }
    }

    fn retry_delay(&self) -> Duration {
        RETRY_AFTER_FAILURE.min(self.config.interval)
    }

    /// Whether `sync` is due now, and if not, how long until it is.
    fn due(&self, key: &(String, String), generation: i64, class: &str) -> Result<Option<Freshness>, Duration> {
        let observed = lock(&self.observed).get(key).cloned();
        let Some(observed) = observed else {
            return Ok(None);
        };
        if observed.generation != generation || observed.class != class {
            return Ok(Some(Freshness::Fresh));
        }
        let wait = if observed.failed {
            self.retry_delay()
        } else {
            self.config.interval
        };
        let elapsed = observed.at.elapsed();
        if elapsed >= wait {
            // The round is that of the time it became due: a sync that queued behind others still shares the reads
            // of the SecretSyncs due with it.
            Ok(Some(Freshness::SharedRound {
                due: observed.at + wait,
            }))
        } else {
            Err(wait - elapsed)
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The class as the due check compares it: its uid and resourceVersion, or `missing`.
fn class_version(spc: Option<&SecretProviderClass>) -> String {
    match spc {
        Some(spc) => format!(
            "{}/{}",
            spc.metadata.uid.as_deref().unwrap_or(""),
            spc.metadata.resource_version.as_deref().unwrap_or("")
        ),
        None => "missing".to_string(),
    }
}

/// Reconciles one SecretSync (the kube-runtime controller's reconciler).
pub async fn reconcile(sync: Arc<SecretSync>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let (Some(namespace), Some(name)) = (sync.metadata.namespace.clone(), sync.metadata.name.clone()) else {
        return Err(ReconcileError::Unnamed);
    };
    let wanted = &sync.spec.secret_sync_controller_name;
    if !wanted.is_empty() && *wanted != ctx.config.controller_name {
        return Ok(Action::await_change());
    }
    let spc = ctx
        .classes
        .get(&ObjectRef::new(&sync.spec.secret_provider_class_name).within(&namespace));
    let class = class_version(spc.as_deref());
    let key = (namespace.clone(), name.clone());
    let generation = sync.metadata.generation.unwrap_or(0);
    let previous = sync.status.clone().unwrap_or_default();
    let freshness = match ctx.due(&key, generation, &class) {
        Err(wait) => return Ok(Action::requeue(wait)),
        Ok(Some(freshness)) => freshness,
        // Not seen by this process: a new SecretSync reads Key Vault now; one synced before (by an earlier run or
        // another replica) joins the round.
        Ok(None) if previous.sync_hash.is_empty() => Freshness::Fresh,
        Ok(None) => Freshness::SharedRound { due: Instant::now() },
    };

    let shown = format!("{namespace}/{name}");
    let now = Time(Timestamp::now());
    let started = Instant::now();
    let outcome = sync_once(&sync, spc, freshness, &ctx).await;
    ctx.metrics
        .reconciled(&namespace, outcome.is_ok(), started.elapsed().as_secs_f64());
    let (status, failed) = match outcome {
        Ok(Synced::Unchanged(status)) => {
            tracing::debug!(secretsync = %shown, "no value change");
            (status, false)
        }
        Ok(Synced::Written(status)) => {
            tracing::info!(secretsync = %shown, "secret written");
            (status, false)
        }
        Err(failure) => {
            tracing::warn!(secretsync = %shown, reason = failure.reason.as_str(), error = %failure.message, "sync failed");
            // Only the provider's failures can come from a cached identity (a revoked token, a rotated client
            // secret, a changed annotation); identity lookups that fail cache nothing, and other failures
            // (class, Secret write) would only cost a new token at every retry.
            if failure.reason == Reason::ProviderError {
                ctx.identities
                    .forget(&namespace, &sync.spec.service_account_name, credentials_secret(&sync));
            }
            publish_warning(&ctx, &sync, &failure).await;
            let status = match failure.reason {
                Reason::UnknownError | Reason::ValidatingAdmissionPolicyCheckFailed => {
                    conditions::write_failed(&previous, failure.reason, &now)
                }
                reason => conditions::failed(&previous, reason, &now),
            };
            (status, true)
        }
    };
    lock(&ctx.observed).insert(
        key,
        Observed {
            generation,
            class,
            at: Instant::now(),
            failed,
        },
    );
    if status != previous {
        let api: Api<SecretSync> = Api::namespaced(ctx.client.clone(), &namespace);
        api.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await
        .map_err(|source| ReconcileError::Status { sync: shown, source })?;
    }
    Ok(Action::requeue(if failed {
        ctx.retry_delay()
    } else {
        ctx.config.interval
    }))
}

enum Synced {
    Unchanged(SecretSyncStatus),
    Written(SecretSyncStatus),
}

/// The name of the service principal's credentials Secret the SecretSync's annotation gives, if any.
fn credentials_secret(sync: &SecretSync) -> Option<&str> {
    sync.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(NODE_PUBLISH_SECRET_REF_ANNOTATION))
        .map(|name| name.trim())
        .filter(|name| !name.is_empty())
}

async fn sync_once(
    sync: &SecretSync,
    spc: Option<Arc<SecretProviderClass>>,
    freshness: Freshness,
    ctx: &Context,
) -> Result<Synced, SyncFailure> {
    let namespace = sync.metadata.namespace.as_deref().unwrap_or("");
    let previous = sync.status.clone().unwrap_or_default();
    secret::validate(sync).map_err(|e| SyncFailure::new(e.reason(), e.to_string()))?;

    let sa = &sync.spec.service_account_name;
    let account = ctx
        .identities
        .account(namespace, sa)
        .await
        .map_err(|e| SyncFailure::identity(&e))?;

    let class_name = &sync.spec.secret_provider_class_name;
    let Some(spc) = spc else {
        return Err(SyncFailure::new(
            Reason::ControllerSpcError,
            format!(
                "failed to get SecretProviderClass {namespace}/{class_name}: not found; create it in the \
                 SecretSync's namespace or fix spec.secretProviderClassName"
            ),
        ));
    };
    if spc.spec.provider != PROVIDER_AZURE {
        return Err(SyncFailure::new(
            Reason::ControllerSpcError,
            format!(
                "SecretProviderClass {namespace}/{class_name} has provider {:?}; wisp-sync serves provider \
                 {PROVIDER_AZURE} only",
                spc.spec.provider
            ),
        ));
    }

    let credentials = match credentials_secret(sync) {
        Some(secret) => Some(
            ctx.identities
                .credentials(namespace, secret)
                .await
                .map_err(|e| SyncFailure::identity(&e))?,
        ),
        None => None,
    };

    let mut parameters: BTreeMap<String, String> = spc.spec.parameters.clone();
    // A named service principal is the SecretSync's choice of identity: the ServiceAccount's client ID must not
    // turn it into a workload identity.
    if credentials.is_none() {
        apply_workload_identity_defaults(&mut parameters, account.workload_identity_defaults());
    }
    parameters.insert(CTX_POD_NAME.to_string(), ctx.config.pod_name.clone());
    parameters.insert(CTX_POD_UID.to_string(), ctx.config.pod_uid.clone());
    parameters.insert(CTX_POD_NAMESPACE.to_string(), namespace.to_string());
    parameters.insert(CTX_SERVICE_ACCOUNT_NAME.to_string(), sa.clone());
    parameters.insert(CTX_SERVICE_ACCOUNT_TOKENS.to_string(), account.tokens_json.to_string());
    let no_credentials = BTreeMap::new();
    let input = MountInput {
        parameters: &parameters,
        secrets: credentials.as_ref().map_or(&no_credentials, |c| &c.data),
        pod_namespace: namespace,
        service_account_name: Some(sa),
    };
    let content = ctx
        .provider
        .content(input, Instant::now() + FETCH_TIMEOUT, freshness)
        .await
        .map_err(|e| {
            SyncFailure::new(
                Reason::ProviderError,
                format!("fetching secrets from the provider failed: {e}"),
            )
        })?;

    let data = secret::data_of(sync, &content.files)
        .map_err(|e: SecretError| SyncFailure::new(e.reason(), error_chain(&e)))?;
    let inputs = HashInputs {
        spc_uid: spc.metadata.uid.as_deref().unwrap_or(""),
        spc_generation: spc.metadata.generation.unwrap_or(0),
        sync_uid: sync.metadata.uid.as_deref().unwrap_or(""),
        sync_generation: sync.metadata.generation.unwrap_or(0),
        force_synchronization: &sync.spec.force_synchronization,
    };
    let message = hash::message(&data, &inputs);
    let sync_uid = inputs.sync_uid.to_string();
    let (fingerprint, known) = ctx.hashes.lookup(&sync_uid, &message);
    let hash = match known {
        Some(hash) => hash,
        None => {
            // About 40 ms of CPU (see `hash`): off the async workers, and no more at once than there are cores (a
            // round of changed SecretSyncs otherwise starts a blocking thread each, and gains nothing by it).
            let salt = sync_uid.clone();
            let _core = ctx.hashing.acquire().await.map_err(|e| {
                SyncFailure::new(
                    Reason::ControllerInternalError,
                    format!("computing the sync hash failed: {e}"),
                )
            })?;
            let hash = tokio::task::spawn_blocking(move || hash::derive(&message, &salt))
                .await
                .map_err(|e| {
                    SyncFailure::new(
                        Reason::ControllerInternalError,
                        format!("computing the sync hash failed: {e}"),
                    )
                })?;
            ctx.hashes.remember(&sync_uid, fingerprint, &hash);
            hash
        }
    };

    let now = Time(Timestamp::now());
    match conditions::after_fetch(&previous, &hash, &now) {
        Plan::Unchanged(status) => Ok(Synced::Unchanged(status)),
        Plan::Write(status) => {
            let apply = secret::build_secret(sync, &data);
            let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &apply.namespace);
            let started = Instant::now();
            let written = secrets
                .patch(
                    &apply.name,
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(&apply.body),
                )
                .await;
            ctx.metrics
                .secret_written(namespace, written.is_ok(), started.elapsed().as_secs_f64());
            written.map_err(|e| {
                let text = format!("failed to patch secret {:?}: {}", apply.name, error_chain(&e));
                SyncFailure::api_refusal(text)
            })?;
            Ok(Synced::Written(status))
        }
    }
}

fn reference(sync: &SecretSync) -> ObjectReference {
    ObjectReference {
        api_version: Some(API_VERSION.to_string()),
        kind: Some(KIND.to_string()),
        name: sync.metadata.name.clone(),
        namespace: sync.metadata.namespace.clone(),
        uid: sync.metadata.uid.clone(),
        resource_version: sync.metadata.resource_version.clone(),
        ..ObjectReference::default()
    }
}

async fn publish_warning(ctx: &Context, sync: &SecretSync, failure: &SyncFailure) {
    let event = Event {
        type_: EventType::Warning,
        reason: failure.reason.as_str().to_string(),
        note: Some(failure.message.clone()),
        action: "SyncSecret".to_string(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &reference(sync)).await {
        tracing::warn!(error = %e, "cannot record the sync failure as an Event");
    }
}
