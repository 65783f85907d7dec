//! What one mount asks of the provider, and how both callers assemble it from what they were sent: kubelet's
//! NodePublishVolume (the class's parameters with the volume attributes over them) and the upstream driver's
//! provider-protocol Mount (attributes it already merged the same way). The merge rules (volume attributes
//! over parameters, service-account tokens from the CSI secrets first) live here only.

use std::collections::BTreeMap;

use wisp_shared::contract::secrets_store::{CTX_POD_NAMESPACE, CTX_SERVICE_ACCOUNT_NAME, CTX_SERVICE_ACCOUNT_TOKENS};

/// What one mount asks of the provider.
#[derive(Debug, Clone, Copy)]
pub struct MountInput<'a> {
    /// SecretProviderClass parameters with the volume attributes (and tokens) merged in.
    pub parameters: &'a BTreeMap<String, String>,
    /// `nodePublishSecretRef` data.
    pub secrets: &'a BTreeMap<String, String>,
    pub pod_namespace: &'a str,
    /// `csi.storage.k8s.io/serviceAccount.name` as kubelet sent it.
    pub service_account_name: Option<&'a str>,
}

/// The provider's input for one mount, owned: the SecretProviderClass parameters with every volume attribute
/// over them and the service-account tokens (from the CSI secrets when kubelet ≥ 1.35 puts them there, else the
/// volume attributes); the `nodePublishSecretRef` data without the tokens.
///
/// NodePublishVolume builds it with [`MountData::merge`]; the provider protocol's Mount, whose attributes the
/// driver has already merged the same way, with [`MountData::from_attributes`].
#[derive(Clone, Default, PartialEq, Eq)]
pub struct MountData {
    pub parameters: BTreeMap<String, String>,
    pub secrets: BTreeMap<String, String>,
}

impl std::fmt::Debug for MountData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys only: parameters carry service-account tokens, secrets carry client secrets.
        f.debug_struct("MountData")
            .field("parameters", &self.parameters.keys().collect::<Vec<_>>())
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl MountData {
    /// As the driver does: `parameters`, then every volume attribute over them, then the tokens from `secrets`
    /// if present and not empty (else those of the volume attributes stay).
    pub fn merge<'a>(
        parameters: &BTreeMap<String, String>,
        volume_context: impl IntoIterator<Item = (&'a String, &'a String)>,
        secrets: impl IntoIterator<Item = (&'a String, &'a String)>,
    ) -> Self {
        let mut parameters = parameters.clone();
        parameters.extend(volume_context.into_iter().map(|(k, v)| (k.clone(), v.clone())));
        let mut secrets: BTreeMap<String, String> = secrets.into_iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        if let Some(tokens) = secrets.remove(CTX_SERVICE_ACCOUNT_TOKENS).filter(|t| !t.is_empty()) {
            parameters.insert(CTX_SERVICE_ACCOUNT_TOKENS.to_string(), tokens);
        }
        Self { parameters, secrets }
    }

    /// The provider protocol's attributes (already merged by the driver) and secrets.
    pub fn from_attributes(attributes: BTreeMap<String, String>, secrets: &BTreeMap<String, String>) -> Self {
        Self::merge(&attributes, std::iter::empty(), secrets)
    }

    /// The pod's namespace as kubelet sent it (empty if it did not).
    pub fn pod_namespace(&self) -> &str {
        self.parameters.get(CTX_POD_NAMESPACE).map(String::as_str).unwrap_or("")
    }

    pub fn input(&self) -> MountInput<'_> {
        MountInput {
            parameters: &self.parameters,
            secrets: &self.secrets,
            pod_namespace: self.pod_namespace(),
            service_account_name: self.parameters.get(CTX_SERVICE_ACCOUNT_NAME).map(String::as_str),
        }
    }
}

#[cfg(test)]
mod tests {
    use pretty_assertions::assert_eq;

    use super::*;

    #[test]
    fn merge_follows_the_driver() {
        let owned = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        let parameters = owned(&[("keyvaultName", "kv"), ("clientID", "from-spc")]);
        let context = owned(&[("clientID", "from-pod"), (CTX_SERVICE_ACCOUNT_TOKENS, "ctx-tokens")]);
        // Tokens in the CSI secrets win over the volume attributes; an empty entry there does not.
        let data = MountData::merge(
            &parameters,
            &context,
            &owned(&[(CTX_SERVICE_ACCOUNT_TOKENS, "secret-tokens")]),
        );
        assert_eq!(
            data,
            MountData {
                parameters: owned(&[
                    ("clientID", "from-pod"),
                    (CTX_SERVICE_ACCOUNT_TOKENS, "secret-tokens"),
                    ("keyvaultName", "kv"),
                ]),
                secrets: BTreeMap::new(),
            }
        );
        let data = MountData::merge(
            &parameters,
            &context,
            &owned(&[(CTX_SERVICE_ACCOUNT_TOKENS, ""), ("a", "b")]),
        );
        assert_eq!(data.parameters[CTX_SERVICE_ACCOUNT_TOKENS], "ctx-tokens");
        assert_eq!(data.secrets, owned(&[("a", "b")]));
    }
}
