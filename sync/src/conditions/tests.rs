use k8s_openapi::jiff::Timestamp;
use pretty_assertions::assert_eq;

use super::*;

fn at(seconds: i64) -> Time {
    Time(Timestamp::from_second(seconds).unwrap())
}

fn condition(type_: &str, reason: Reason, seconds: i64) -> Condition {
    Condition {
        type_: type_.to_string(),
        status: reason.status().to_string(),
        reason: reason.as_str().to_string(),
        message: reason.message().to_string(),
        last_transition_time: at(seconds),
        observed_generation: None,
    }
}

#[test]
fn reasons_statuses_and_messages_are_upstreams() {
    let table = [
        (
            Reason::CreateSucceeded,
            "CreateSucceeded",
            "True",
            "Secret created successfully.",
        ),
        (
            Reason::ProviderError,
            "ProviderError",
            "False",
            "Secret creation failed due to provider error, check the logs or the events for more information.",
        ),
        (
            Reason::InvalidClusterSecretLabelError,
            "InvalidClusterSecretLabelError",
            "False",
            "The secret operation failed because a label reserved for the controller is applied on the secret.",
        ),
        (
            Reason::InvalidClusterSecretAnnotationError,
            "InvalidClusterSecretAnnotationError",
            "False",
            "The secret create failed because an annotation reserved for the controller is applied on the secret.",
        ),
        (
            Reason::UpdateNoValueChangeSucceeded,
            "UpdateNoValueChangeSucceeded",
            "True",
            "The secret was updated successfully at the end of the poll interval and no value change was detected.",
        ),
        (
            Reason::UpdateValueChangeOrForceUpdateSucceeded,
            "UpdateValueChangeOrForceUpdateSucceeded",
            "True",
            "The secret was updated successfully: a value change or a force update was detected.",
        ),
        (
            Reason::UnknownError,
            "UnknownError",
            "Unknown",
            "Secret patch failed due to unknown error, check the logs or the events for more information.",
        ),
        (
            Reason::ValidatingAdmissionPolicyCheckFailed,
            "ValidatingAdmissionPolicyCheckFailed",
            "False",
            "Secret update failed due to validating admission policy check failure, check the logs or the events for \
             more information.",
        ),
        (
            Reason::ControllerInternalError,
            "ControllerInternalError",
            "Unknown",
            "Secret update failed due to controller internal error, check the logs or the events for more information.",
        ),
        (
            Reason::ControllerSpcError,
            "ControllerSPCError",
            "False",
            "Secret update failed because the controller could not retrieve the Secret Provider Class or the SPC is \
             misconfigured. Check the logs or the events for more information.",
        ),
        (
            Reason::UserInputValidationFailed,
            "UserInputValidationFailed",
            "False",
            "Secret create or update failed due to SecretProviderClass or SecretSync error, check the logs or the \
             events for more information.",
        ),
    ];
    for (reason, name, status, message) in table {
        assert_eq!(
            (reason.as_str(), reason.status(), reason.message()),
            (name, status, message)
        );
    }
    let retrying: Vec<&str> = table
        .iter()
        .map(|(r, ..)| r.as_str())
        .filter(|r| Reason::triggers_retry(r))
        .collect();
    assert_eq!(
        retrying,
        [
            "ProviderError",
            "InvalidClusterSecretLabelError",
            "InvalidClusterSecretAnnotationError",
            "UnknownError",
            "ValidatingAdmissionPolicyCheckFailed",
            "ControllerSPCError",
            "UserInputValidationFailed"
        ]
    );
}

#[test]
fn first_sync_creates() {
    let plan = after_fetch(&SecretSyncStatus::default(), "h1", &at(10));
    assert_eq!(
        plan,
        Plan::Write(SecretSyncStatus {
            sync_hash: "h1".into(),
            last_successful_sync_time: Some(at(10)),
            conditions: vec![condition(TYPE_CREATE, Reason::CreateSucceeded, 10)],
        })
    );
}

#[test]
fn unchanged_refresh_writes_nothing_and_says_so() {
    let synced = SecretSyncStatus {
        sync_hash: "h1".into(),
        last_successful_sync_time: Some(at(10)),
        conditions: vec![condition(TYPE_CREATE, Reason::CreateSucceeded, 10)],
    };
    let plan = after_fetch(&synced, "h1", &at(20));
    assert_eq!(
        plan,
        Plan::Unchanged(SecretSyncStatus {
            conditions: vec![
                condition(TYPE_CREATE, Reason::CreateSucceeded, 10),
                condition(TYPE_UPDATE, Reason::UpdateNoValueChangeSucceeded, 20),
            ],
            ..synced.clone()
        })
    );
    // Once it says so, an unchanged refresh changes nothing at all (no status write).
    let Plan::Unchanged(again) = after_fetch(&synced, "h1", &at(20)) else {
        panic!()
    };
    assert_eq!(after_fetch(&again, "h1", &at(30)), Plan::Unchanged(again.clone()));
}

#[test]
fn value_change_updates() {
    let synced = SecretSyncStatus {
        sync_hash: "h1".into(),
        last_successful_sync_time: Some(at(10)),
        conditions: vec![
            condition(TYPE_CREATE, Reason::CreateSucceeded, 10),
            condition(TYPE_UPDATE, Reason::UpdateNoValueChangeSucceeded, 20),
        ],
    };
    assert_eq!(
        after_fetch(&synced, "h2", &at(30)),
        Plan::Write(SecretSyncStatus {
            sync_hash: "h2".into(),
            last_successful_sync_time: Some(at(30)),
            conditions: vec![
                condition(TYPE_CREATE, Reason::CreateSucceeded, 10),
                // Same status (True): the transition time stays.
                Condition {
                    last_transition_time: at(20),
                    ..condition(TYPE_UPDATE, Reason::UpdateValueChangeOrForceUpdateSucceeded, 30)
                },
            ],
        })
    );
}

#[test]
fn failures_keep_hash_and_time() {
    let synced = SecretSyncStatus {
        sync_hash: "h1".into(),
        last_successful_sync_time: Some(at(10)),
        conditions: vec![condition(TYPE_CREATE, Reason::CreateSucceeded, 10)],
    };
    let failed_update = failed(&synced, Reason::ProviderError, &at(40));
    assert_eq!(
        failed_update,
        SecretSyncStatus {
            conditions: vec![
                condition(TYPE_CREATE, Reason::CreateSucceeded, 10),
                condition(TYPE_UPDATE, Reason::ProviderError, 40),
            ],
            ..synced.clone()
        }
    );
    // The next success writes the Secret even with the same hash and clears the failure.
    assert_eq!(
        after_fetch(&failed_update, "h1", &at(50)),
        Plan::Write(SecretSyncStatus {
            sync_hash: "h1".into(),
            last_successful_sync_time: Some(at(50)),
            conditions: vec![condition(TYPE_CREATE, Reason::CreateSucceeded, 10)],
        })
    );
    // A failed first sync is a False Create condition; the success that follows makes it True.
    let failed_create = failed(&SecretSyncStatus::default(), Reason::ControllerSpcError, &at(5));
    assert_eq!(
        failed_create.conditions,
        vec![condition(TYPE_CREATE, Reason::ControllerSpcError, 5)]
    );
    let Plan::Write(created) = after_fetch(&failed_create, "h1", &at(6)) else {
        panic!()
    };
    assert_eq!(
        created.conditions,
        vec![condition(TYPE_CREATE, Reason::CreateSucceeded, 6)]
    );
}

#[test]
fn failed_write_resets_create_and_update() {
    let synced = SecretSyncStatus {
        sync_hash: "h1".into(),
        last_successful_sync_time: Some(at(10)),
        conditions: vec![
            condition(TYPE_CREATE, Reason::CreateSucceeded, 10),
            condition(TYPE_UPDATE, Reason::UpdateNoValueChangeSucceeded, 20),
        ],
    };
    assert_eq!(
        write_failed(&synced, Reason::ValidatingAdmissionPolicyCheckFailed, &at(30)),
        SecretSyncStatus {
            conditions: vec![condition(TYPE_UPDATE, Reason::ValidatingAdmissionPolicyCheckFailed, 30)],
            ..synced.clone()
        }
    );
    assert!(is_admission_policy_refusal(
        "admission webhook denied: ValidatingAdmissionPolicy 'x' with binding 'y' denied request"
    ));
    assert!(!is_admission_policy_refusal("connection refused"));
}
