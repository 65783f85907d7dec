//! Every name and value wisp shares with the upstream projects. A user's manifests reference these strings, so
//! they are defined once here and never spelled out elsewhere.

/// Azure Workload Identity (webhook) names.
pub mod workload_identity {
    /// Pod label that opts a pod in to mutation.
    pub const USE_LABEL: &str = "azure.workload.identity/use";
    pub const CLIENT_ID_ANNOTATION: &str = "azure.workload.identity/client-id";
    pub const TENANT_ID_ANNOTATION: &str = "azure.workload.identity/tenant-id";
    pub const TOKEN_EXPIRATION_ANNOTATION: &str = "azure.workload.identity/service-account-token-expiration";
    pub const SKIP_CONTAINERS_ANNOTATION: &str = "azure.workload.identity/skip-containers";
    pub const INJECT_PROXY_SIDECAR_ANNOTATION: &str = "azure.workload.identity/inject-proxy-sidecar";
    pub const PROXY_SIDECAR_PORT_ANNOTATION: &str = "azure.workload.identity/proxy-sidecar-port";
    /// wisp extension: name of a SecretProviderClass whose CSI volume the webhook adds.
    pub const SECRET_PROVIDER_CLASS_ANNOTATION: &str = "azure.workload.identity/secret-provider-class";
    /// wisp extension: where that CSI volume is mounted.
    pub const SECRETS_MOUNT_PATH_ANNOTATION: &str = "azure.workload.identity/secrets-mount-path";
    pub const DEFAULT_SECRETS_MOUNT_PATH: &str = "/mnt/secrets-store";
    /// Name of the inline CSI volume the wisp extension adds.
    pub const SECRETS_STORE_VOLUME_NAME: &str = "secrets-store-inline";

    pub const ENV_CLIENT_ID: &str = "AZURE_CLIENT_ID";
    pub const ENV_TENANT_ID: &str = "AZURE_TENANT_ID";
    pub const ENV_FEDERATED_TOKEN_FILE: &str = "AZURE_FEDERATED_TOKEN_FILE";
    pub const ENV_AUTHORITY_HOST: &str = "AZURE_AUTHORITY_HOST";

    pub const TOKEN_VOLUME_NAME: &str = "azure-identity-token";
    pub const TOKEN_MOUNT_PATH: &str = "/var/run/secrets/azure/tokens";
    pub const TOKEN_PATH: &str = "azure-identity-token";
    pub const TOKEN_FILE_PATH: &str = "/var/run/secrets/azure/tokens/azure-identity-token";
    pub const DEFAULT_AUDIENCE: &str = "api://AzureADTokenExchange";

    pub const MIN_TOKEN_EXPIRATION_SECONDS: i64 = 3600;
    pub const MAX_TOKEN_EXPIRATION_SECONDS: i64 = 86400;
    pub const DEFAULT_TOKEN_EXPIRATION_SECONDS: i64 = 3600;
    pub const DEFAULT_PROXY_SIDECAR_PORT: u16 = 8000;

    pub const PROXY_INIT_CONTAINER_NAME: &str = "azwi-proxy-init";
    pub const PROXY_SIDECAR_CONTAINER_NAME: &str = "azwi-proxy";
}

/// Secrets Store CSI driver names.
pub mod secrets_store {
    pub const DRIVER_NAME: &str = "secrets-store.csi.k8s.io";
    pub const API_GROUP: &str = "secrets-store.csi.x-k8s.io";
    pub const API_VERSION: &str = "secrets-store.csi.x-k8s.io/v1";
    pub const PROVIDER_AZURE: &str = "azure";

    /// volume_context keys kubelet sends on NodePublishVolume.
    pub const CTX_SECRET_PROVIDER_CLASS: &str = "secretProviderClass";
    pub const CTX_POD_NAME: &str = "csi.storage.k8s.io/pod.name";
    pub const CTX_POD_NAMESPACE: &str = "csi.storage.k8s.io/pod.namespace";
    pub const CTX_POD_UID: &str = "csi.storage.k8s.io/pod.uid";
    pub const CTX_SERVICE_ACCOUNT_NAME: &str = "csi.storage.k8s.io/serviceAccount.name";
    pub const CTX_SERVICE_ACCOUNT_TOKENS: &str = "csi.storage.k8s.io/serviceAccount.tokens";
    pub const CTX_EPHEMERAL: &str = "csi.storage.k8s.io/ephemeral";

    pub const NODE_NAME_LABEL: &str = "internal.secrets-store.csi.k8s.io/node-name";
    pub const MANAGED_SECRET_LABEL: &str = "secrets-store.csi.k8s.io/managed";
}

/// Names of the objects the wisp Helm chart (`helm/wisp`) creates in the release namespace. The webhook's
/// self-managed certificates (`--cert-rotation`) use them to find its Secret, Service DNS name and
/// MutatingWebhookConfiguration; the chart tests assert the same strings.
pub mod deploy {
    pub const WEBHOOK_SERVICE_NAME: &str = "wisp-webhook";
    pub const WEBHOOK_CERT_SECRET_NAME: &str = "wisp-webhook-server-cert";
    pub const MUTATING_WEBHOOK_CONFIGURATION_NAME: &str = "wisp-webhook";
    /// `webhooks[0].name`, kept as upstream's so tooling that looks for it still finds it.
    pub const MUTATING_WEBHOOK_NAME: &str = "mutation.azure-workload-identity.io";
    pub const WEBHOOK_PATH: &str = "/mutate-v1-pod";
}

/// SecretProviderClass `parameters` keys of the Azure provider, and the keys of each `objects` entry.
pub mod provider_azure {
    pub const USE_POD_IDENTITY: &str = "usePodIdentity";
    pub const USE_VM_MANAGED_IDENTITY: &str = "useVMManagedIdentity";
    pub const USE_AZURE_TOKEN_PROXY: &str = "useAzureTokenProxy";
    pub const USER_ASSIGNED_IDENTITY_ID: &str = "userAssignedIdentityID";
    pub const CLIENT_ID: &str = "clientID";
    pub const KEYVAULT_NAME: &str = "keyvaultName";
    pub const CLOUD_NAME: &str = "cloudName";
    pub const CLOUD_ENV_FILE_NAME: &str = "cloudEnvFileName";
    /// Read first; [`TENANT_ID_LEGACY`] is the fallback.
    pub const TENANT_ID: &str = "tenantID";
    pub const TENANT_ID_LEGACY: &str = "tenantId";
    pub const OBJECTS: &str = "objects";

    pub const OBJECT_NAME: &str = "objectName";
    pub const OBJECT_ALIAS: &str = "objectAlias";
    pub const OBJECT_TYPE: &str = "objectType";
    pub const OBJECT_VERSION: &str = "objectVersion";
    pub const OBJECT_VERSION_HISTORY: &str = "objectVersionHistory";
    pub const OBJECT_FORMAT: &str = "objectFormat";
    pub const OBJECT_ENCODING: &str = "objectEncoding";
    pub const FILE_PERMISSION: &str = "filePermission";

    /// Mode of a file whose object has no `filePermission` (the driver's default, 0644).
    pub const DEFAULT_FILE_MODE: u32 = 0o644;
}
