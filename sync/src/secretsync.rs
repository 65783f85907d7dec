//! The typed views wisp-sync reads: `secret-sync.x-k8s.io/v1alpha1` `SecretSync` (every field of
//! kubernetes-sigs/secrets-store-sync-controller's API, with its defaults) and the part of a
//! `secrets-store.csi.x-k8s.io/v1` `SecretProviderClass` a sync uses. Both are `kube::Resource`s written by hand
//! (the workspace builds kube without its derive feature). Pure.

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};
use kube::Resource;
use kube::core::NamespaceResourceScope;
use serde::{Deserialize, Serialize};

pub const GROUP: &str = "secret-sync.x-k8s.io";
pub const VERSION: &str = "v1alpha1";
pub const API_VERSION: &str = "secret-sync.x-k8s.io/v1alpha1";
pub const KIND: &str = "SecretSync";
pub const PLURAL: &str = "secretsyncs";
/// `spec.secretObject.type` when not given (the CRD's default).
pub const DEFAULT_SECRET_TYPE: &str = "Opaque";

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
pub struct SecretSync {
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: SecretSyncSpec,
    #[serde(default)]
    pub status: Option<SecretSyncStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretSyncSpec {
    /// Which controller serves this SecretSync; empty (the default) means any.
    #[serde(default)]
    pub secret_sync_controller_name: String,
    #[serde(default)]
    pub secret_provider_class_name: String,
    #[serde(default)]
    pub service_account_name: String,
    #[serde(default)]
    pub secret_object: SecretObject,
    /// Changing it forces a synchronization.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub force_synchronization: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretObject {
    /// The Secret's type; empty reads as [`DEFAULT_SECRET_TYPE`].
    #[serde(default, rename = "type")]
    pub secret_type: String,
    #[serde(default)]
    pub data: Vec<SecretObjectData>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretObjectData {
    /// A file path the mount would have written: an alias, `alias/<n>` for version history.
    #[serde(default)]
    pub source_path: String,
    /// The key in the Secret's `data`.
    #[serde(default)]
    pub target_key: String,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretSyncStatus {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sync_hash: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_sync_time: Option<Time>,
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

impl SecretObject {
    /// The type as written, or the CRD's default.
    pub fn type_or_default(&self) -> &str {
        if self.secret_type.trim().is_empty() {
            DEFAULT_SECRET_TYPE
        } else {
            self.secret_type.trim()
        }
    }
}

impl Resource for SecretSync {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(KIND)
    }
    fn group(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(GROUP)
    }
    fn version(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(VERSION)
    }
    fn plural(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(PLURAL)
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// What a sync reads of a SecretProviderClass.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
pub struct SecretProviderClass {
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: SecretProviderClassSpec,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
pub struct SecretProviderClassSpec {
    #[serde(default)]
    pub provider: String,
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
}

impl Resource for SecretProviderClass {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("SecretProviderClass")
    }
    fn group(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(wisp_shared::contract::secrets_store::API_GROUP)
    }
    fn version(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("v1")
    }
    fn plural(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("secretproviderclasses")
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

#[cfg(test)]
mod tests {
    use pretty_assertions::assert_eq;
    use serde_json::json;

    use super::*;

    #[test]
    fn reads_upstream_manifest_with_defaults() {
        let sync: SecretSync = serde_json::from_value(json!({
            "apiVersion": API_VERSION, "kind": KIND,
            "metadata": {"name": "sse2esecret", "namespace": "default"},
            "spec": {
                "serviceAccountName": "default",
                "secretProviderClassName": "e2e-providerspc",
                "secretObject": {"data": [{"sourcePath": "foo", "targetKey": "bar"}]}
            }
        }))
        .unwrap();
        assert_eq!(
            sync.spec,
            SecretSyncSpec {
                secret_sync_controller_name: String::new(),
                secret_provider_class_name: "e2e-providerspc".into(),
                service_account_name: "default".into(),
                secret_object: SecretObject {
                    secret_type: String::new(),
                    data: vec![SecretObjectData {
                        source_path: "foo".into(),
                        target_key: "bar".into()
                    }],
                    labels: BTreeMap::new(),
                    annotations: BTreeMap::new(),
                },
                force_synchronization: String::new(),
            }
        );
        assert_eq!(sync.spec.secret_object.type_or_default(), "Opaque");
        assert_eq!(sync.status, None);
        assert_eq!(SecretSync::api_version(&()), API_VERSION);
    }
}
