//! The SecretSync's status after a reconcile: the `Create` and `Update` conditions with
//! kubernetes-sigs/secrets-store-sync-controller's reasons, statuses and messages (its `conditions.go`, exact
//! texts), `syncHash` and `lastSuccessfulSyncTime`, following its reconcile: a condition's message is fixed per
//! reason (the error itself goes to the log and to a Warning Event), a failed write keeps the previous hash and
//! time, and a success clears every failed condition. Pure: the caller passes the clock.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::secretsync::SecretSyncStatus;

pub const TYPE_CREATE: &str = "Create";
pub const TYPE_UPDATE: &str = "Update";

/// Every reason upstream sets on a `Create` or `Update` condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    CreateSucceeded,
    ProviderError,
    InvalidClusterSecretLabelError,
    InvalidClusterSecretAnnotationError,
    UpdateNoValueChangeSucceeded,
    UpdateValueChangeOrForceUpdateSucceeded,
    UnknownError,
    ValidatingAdmissionPolicyCheckFailed,
    ControllerInternalError,
    ControllerSpcError,
    UserInputValidationFailed,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::CreateSucceeded => "CreateSucceeded",
            Reason::ProviderError => "ProviderError",
            Reason::InvalidClusterSecretLabelError => "InvalidClusterSecretLabelError",
            Reason::InvalidClusterSecretAnnotationError => "InvalidClusterSecretAnnotationError",
            Reason::UpdateNoValueChangeSucceeded => "UpdateNoValueChangeSucceeded",
            Reason::UpdateValueChangeOrForceUpdateSucceeded => "UpdateValueChangeOrForceUpdateSucceeded",
            Reason::UnknownError => "UnknownError",
            Reason::ValidatingAdmissionPolicyCheckFailed => "ValidatingAdmissionPolicyCheckFailed",
            Reason::ControllerInternalError => "ControllerInternalError",
            Reason::ControllerSpcError => "ControllerSPCError",
            Reason::UserInputValidationFailed => "UserInputValidationFailed",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Reason::CreateSucceeded => "Secret created successfully.",
            Reason::ProviderError => {
                "Secret creation failed due to provider error, check the logs or the events for more information."
            }
            Reason::InvalidClusterSecretLabelError => {
                "The secret operation failed because a label reserved for the controller is applied on the secret."
            }
            Reason::InvalidClusterSecretAnnotationError => {
                "The secret create failed because an annotation reserved for the controller is applied on the secret."
            }
            Reason::UpdateNoValueChangeSucceeded => {
                "The secret was updated successfully at the end of the poll interval and no value change was detected."
            }
            Reason::UpdateValueChangeOrForceUpdateSucceeded => {
                "The secret was updated successfully: a value change or a force update was detected."
            }
            Reason::UnknownError => {
                "Secret patch failed due to unknown error, check the logs or the events for more information."
            }
            Reason::ValidatingAdmissionPolicyCheckFailed => {
                "Secret update failed due to validating admission policy check failure, check the logs or the events \
                 for more information."
            }
            Reason::ControllerInternalError => {
                "Secret update failed due to controller internal error, check the logs or the events for more \
                 information."
            }
            Reason::ControllerSpcError => {
                "Secret update failed because the controller could not retrieve the Secret Provider Class or the SPC \
                 is misconfigured. Check the logs or the events for more information."
            }
            Reason::UserInputValidationFailed => {
                "Secret create or update failed due to SecretProviderClass or SecretSync error, check the logs or the \
                 events for more information."
            }
        }
    }

    /// The condition's status for this reason.
    pub fn status(self) -> &'static str {
        match self {
            Reason::CreateSucceeded
            | Reason::UpdateNoValueChangeSucceeded
            | Reason::UpdateValueChangeOrForceUpdateSucceeded => "True",
            Reason::UnknownError | Reason::ControllerInternalError => "Unknown",
            _ => "False",
        }
    }

    /// Upstream's `FailedConditionsTriggeringRetry`: a condition with one of these reasons makes the next
    /// successful fetch write the Secret even when the hash is unchanged.
    pub fn triggers_retry(reason: &str) -> bool {
        [
            Reason::ControllerSpcError,
            Reason::InvalidClusterSecretAnnotationError,
            Reason::InvalidClusterSecretLabelError,
            Reason::ProviderError,
            Reason::UnknownError,
            Reason::ValidatingAdmissionPolicyCheckFailed,
            Reason::UserInputValidationFailed,
        ]
        .iter()
        .any(|r| r.as_str() == reason)
    }
}

/// `Create` while the SecretSync has never been synced (no `syncHash`), `Update` afterwards.
pub fn condition_type(status: &SecretSyncStatus) -> &'static str {
    if status.sync_hash.is_empty() {
        TYPE_CREATE
    } else {
        TYPE_UPDATE
    }
}

/// apimachinery's `meta.SetStatusCondition`: the transition time changes only when the status does.
pub fn set_condition(conditions: &mut Vec<Condition>, type_: &str, reason: Reason, now: &Time) {
    let status = reason.status();
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(existing) => {
            if existing.status != status {
                existing.status = status.to_string();
                existing.last_transition_time = now.clone();
            }
            existing.reason = reason.as_str().to_string();
            existing.message = reason.message().to_string();
        }
        None => conditions.push(Condition {
            type_: type_.to_string(),
            status: status.to_string(),
            reason: reason.as_str().to_string(),
            message: reason.message().to_string(),
            last_transition_time: now.clone(),
            observed_generation: None,
        }),
    }
}

fn remove_condition(conditions: &mut Vec<Condition>, type_: &str) {
    conditions.retain(|c| c.type_ != type_);
}

/// The status after a failure before the Secret was written: hash and time stay, the current condition type
/// gets `reason`.
pub fn failed(previous: &SecretSyncStatus, reason: Reason, now: &Time) -> SecretSyncStatus {
    let mut status = previous.clone();
    set_condition(&mut status.conditions, condition_type(previous), reason, now);
    status
}

/// The status after a failed Secret write: hash and time stay, `Create` and `Update` are reset and the current
/// type gets `reason` (`ValidatingAdmissionPolicyCheckFailed` or `UnknownError`).
pub fn write_failed(previous: &SecretSyncStatus, reason: Reason, now: &Time) -> SecretSyncStatus {
    let mut status = previous.clone();
    remove_condition(&mut status.conditions, TYPE_CREATE);
    remove_condition(&mut status.conditions, TYPE_UPDATE);
    set_condition(&mut status.conditions, condition_type(previous), reason, now);
    status
}

/// What a successful fetch means for the Secret.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// Nothing changed and no earlier failure is pending: no write; the status says so.
    Unchanged(SecretSyncStatus),
    /// Write the Secret, then this status (with the new hash and time).
    Write(SecretSyncStatus),
}

/// Upstream's decision after a successful fetch with hash `hash`.
pub fn after_fetch(previous: &SecretSyncStatus, hash: &str, now: &Time) -> Plan {
    let type_ = condition_type(previous);
    let hash_changed = hash != previous.sync_hash;
    let failed_pending = previous.conditions.iter().any(|c| Reason::triggers_retry(&c.reason));
    let mut status = previous.clone();
    if !failed_pending && !hash_changed {
        set_condition(&mut status.conditions, type_, Reason::UpdateNoValueChangeSucceeded, now);
        return Plan::Unchanged(status);
    }
    if type_ == TYPE_CREATE {
        set_condition(&mut status.conditions, type_, Reason::CreateSucceeded, now);
    } else if hash_changed {
        set_condition(
            &mut status.conditions,
            type_,
            Reason::UpdateValueChangeOrForceUpdateSucceeded,
            now,
        );
    }
    status.sync_hash = hash.to_string();
    status.last_successful_sync_time = Some(now.clone());
    // Every failed condition goes. Upstream also removes the failed condition's type before this, which after a
    // failed first sync drops the `Create` condition it has just set to CreateSucceeded; wisp keeps it.
    status.conditions.retain(|c| !Reason::triggers_retry(&c.reason));
    Plan::Write(status)
}

/// Whether an error text from the API server may be shown as a ValidatingAdmissionPolicy refusal (upstream's
/// `checkIfErrorMessageCanBeDisplayed`).
pub fn is_admission_policy_refusal(error_text: &str) -> bool {
    error_text.to_lowercase().contains("validatingadmissionpolicy")
}

#[cfg(test)]
mod tests;
