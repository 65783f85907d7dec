//! Azure cloud environments as the upstream projects name them (go-autorest's `EnvironmentFromName`), and
//! custom clouds from a JSON environment file (`AzureStackCloud`).

use std::path::Path;

use serde::Deserialize;

/// The endpoints wisp needs from a cloud.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudEnvironment {
    /// Canonical name, e.g. `AzurePublicCloud`.
    pub name: String,
    /// Microsoft Entra authority host, with a trailing `/`, e.g. `https://login.microsoftonline.com/`.
    pub active_directory_endpoint: String,
    /// Key Vault resource (token audience), e.g. `https://vault.azure.net`, without a trailing `/`.
    pub key_vault_resource: String,
    /// DNS suffix of vault hosts, e.g. `vault.azure.net`.
    pub key_vault_dns_suffix: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CloudError {
    #[error("There is no cloud environment matching the name \"{0}\"")]
    UnknownName(String),
    #[error("cloud environment file {path}: {reason}")]
    EnvironmentFile { path: String, reason: String },
}

pub const AZURE_PUBLIC_CLOUD: &str = "AzurePublicCloud";
pub const AZURE_US_GOVERNMENT_CLOUD: &str = "AzureUSGovernmentCloud";
pub const AZURE_CHINA_CLOUD: &str = "AzureChinaCloud";
pub const AZURE_GERMAN_CLOUD: &str = "AzureGermanCloud";
pub const AZURE_STACK_CLOUD: &str = "AzureStackCloud";

fn builtin(name: &str, authority: &str, vault_host: &str) -> CloudEnvironment {
    CloudEnvironment {
        name: name.to_string(),
        active_directory_endpoint: authority.to_string(),
        key_vault_resource: format!("https://{vault_host}"),
        key_vault_dns_suffix: vault_host.to_string(),
    }
}

impl CloudEnvironment {
    /// A built-in cloud by name, case-insensitively, accepting go-autorest's aliases. `AzureStackCloud` is not
    /// built in: it needs an environment file, see [`CloudEnvironment::from_file`].
    pub fn builtin(name: &str) -> Result<Self, CloudError> {
        match name.trim().to_ascii_uppercase().as_str() {
            "AZUREPUBLICCLOUD" | "AZURECLOUD" => Ok(builtin(
                AZURE_PUBLIC_CLOUD,
                "https://login.microsoftonline.com/",
                "vault.azure.net",
            )),
            "AZUREUSGOVERNMENTCLOUD" | "AZUREUSGOVERNMENT" => Ok(builtin(
                AZURE_US_GOVERNMENT_CLOUD,
                "https://login.microsoftonline.us/",
                "vault.usgovcloudapi.net",
            )),
            "AZURECHINACLOUD" => Ok(builtin(
                AZURE_CHINA_CLOUD,
                "https://login.chinacloudapi.cn/",
                "vault.azure.cn",
            )),
            "AZUREGERMANCLOUD" => Ok(builtin(
                AZURE_GERMAN_CLOUD,
                "https://login.microsoftonline.de/",
                "vault.microsoftazure.de",
            )),
            _ => Err(CloudError::UnknownName(name.to_string())),
        }
    }

    pub fn is_stack_cloud(name: &str) -> bool {
        name.trim().eq_ignore_ascii_case(AZURE_STACK_CLOUD)
    }

    /// Parses a go-autorest environment JSON document (the format of `AZURE_ENVIRONMENT_FILEPATH` files).
    pub fn from_json(path_for_errors: &str, json: &[u8]) -> Result<Self, CloudError> {
        let fail = |reason: String| CloudError::EnvironmentFile {
            path: path_for_errors.to_string(),
            reason,
        };
        let file: EnvironmentFile = serde_json::from_slice(json).map_err(|e| fail(format!("invalid JSON: {e}")))?;
        let required = |value: Option<String>, field: &str| -> Result<String, CloudError> {
            match value.map(|v| v.trim().to_string()) {
                Some(v) if !v.is_empty() => Ok(v),
                _ => Err(fail(format!("field {field} is missing or empty"))),
            }
        };
        // Both become URLs with the tenant or vault name put into them: a query, fragment, path or user part would
        // move those (and the token sent there) elsewhere, and an authority that is not an https URL with a host
        // would make the tenant the host.
        let mut authority = required(file.active_directory_endpoint, "activeDirectoryEndpoint")?;
        if !is_https_base_url(&authority) {
            return Err(fail(format!(
                "field activeDirectoryEndpoint {authority:?} is not an https URL without query or fragment; set the \
                 authority's URL, e.g. https://login.microsoftonline.com/"
            )));
        }
        if !authority.ends_with('/') {
            authority.push('/');
        }
        let dns_suffix = required(file.key_vault_dns_suffix, "keyVaultDNSSuffix")?;
        if !is_host_and_port(&dns_suffix) {
            return Err(fail(format!(
                "field keyVaultDNSSuffix {dns_suffix:?} is not a DNS name; set the vaults' domain, optionally with \
                 a port, e.g. vault.azure.net"
            )));
        }
        // go-autorest environments carry the vault resource twice; the resource identifier is the one used as
        // the token audience, `keyVaultEndpoint` the fallback.
        let resource = file
            .resource_identifiers
            .and_then(|r| r.key_vault)
            .filter(|v| !v.trim().is_empty())
            .or(file.key_vault_endpoint)
            .map(|v| v.trim().trim_end_matches('/').to_string())
            .filter(|v| !v.is_empty())
            .ok_or_else(|| fail("fields resourceIdentifiers.keyVault and keyVaultEndpoint are both missing".into()))?;
        Ok(CloudEnvironment {
            name: file
                .name
                .filter(|n| !n.trim().is_empty())
                .unwrap_or_else(|| AZURE_STACK_CLOUD.to_string()),
            active_directory_endpoint: authority,
            key_vault_resource: resource,
            key_vault_dns_suffix: dns_suffix,
        })
    }

    /// Reads a custom cloud's environment file.
    pub fn from_file(path: &Path) -> Result<Self, CloudError> {
        let shown = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| CloudError::EnvironmentFile {
            path: shown.clone(),
            reason: e.to_string(),
        })?;
        Self::from_json(&shown, &bytes)
    }

    /// `https://{vault}.{suffix}/`
    pub fn vault_url(&self, vault_name: &str) -> String {
        format!("https://{vault_name}.{}/", self.key_vault_dns_suffix)
    }

    /// The OAuth scope for Key Vault tokens.
    pub fn key_vault_scope(&self) -> String {
        format!("{}/.default", self.key_vault_resource)
    }
}

/// `https://host[:port]`, then any path without a query, fragment or space (Microsoft's SDKs refuse an authority
/// that is not https too).
fn is_https_base_url(text: &str) -> bool {
    let Some(rest) = text.strip_prefix("https://") else {
        return false;
    };
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    is_host_and_port(host) && !path.contains(['?', '#']) && !path.contains(char::is_whitespace)
}

/// `host` or `host:port`, the host of letters, digits, `-` and `.`: what can follow `https://{vault}.`.
fn is_host_and_port(text: &str) -> bool {
    let (host, port) = match text.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (text, None),
    };
    !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EnvironmentFile {
    name: Option<String>,
    active_directory_endpoint: Option<String>,
    key_vault_endpoint: Option<String>,
    #[serde(rename = "keyVaultDNSSuffix")]
    key_vault_dns_suffix: Option<String>,
    resource_identifiers: Option<ResourceIdentifiers>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ResourceIdentifiers {
    key_vault: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_clouds_match_go_autorest() {
        let cases = [
            (
                "AzurePublicCloud",
                "https://login.microsoftonline.com/",
                "https://vault.azure.net",
                "vault.azure.net",
            ),
            (
                "azurecloud",
                "https://login.microsoftonline.com/",
                "https://vault.azure.net",
                "vault.azure.net",
            ),
            (
                "AZUREUSGOVERNMENTCLOUD",
                "https://login.microsoftonline.us/",
                "https://vault.usgovcloudapi.net",
                "vault.usgovcloudapi.net",
            ),
            (
                "AzureChinaCloud",
                "https://login.chinacloudapi.cn/",
                "https://vault.azure.cn",
                "vault.azure.cn",
            ),
            (
                "azuregermancloud",
                "https://login.microsoftonline.de/",
                "https://vault.microsoftazure.de",
                "vault.microsoftazure.de",
            ),
        ];
        for (name, authority, resource, suffix) in cases {
            let cloud = CloudEnvironment::builtin(name).unwrap();
            assert_eq!(cloud.active_directory_endpoint, authority, "{name}");
            assert_eq!(cloud.key_vault_resource, resource, "{name}");
            assert_eq!(cloud.key_vault_dns_suffix, suffix, "{name}");
        }
        assert_eq!(
            CloudEnvironment::builtin("AzurePublicCloud").unwrap().vault_url("kv1"),
            "https://kv1.vault.azure.net/"
        );
        assert_eq!(
            CloudEnvironment::builtin("AzureChinaCloud").unwrap().key_vault_scope(),
            "https://vault.azure.cn/.default"
        );
    }

    #[test]
    fn unknown_cloud_is_named_in_the_error() {
        let err = CloudEnvironment::builtin("AzureMoonCloud").unwrap_err();
        assert_eq!(
            err.to_string(),
            "There is no cloud environment matching the name \"AzureMoonCloud\""
        );
        assert!(CloudEnvironment::builtin("AzureStackCloud").is_err());
    }

    #[test]
    fn environment_file_prefers_resource_identifier_and_normalises_slashes() {
        let json = br#"{"name":"AzureStackCloud","activeDirectoryEndpoint":"https://login.local:8443",
            "keyVaultEndpoint":"https://vault.local/","keyVaultDNSSuffix":"vault.local:9443",
            "resourceIdentifiers":{"keyVault":"https://vault.local/"}}"#;
        let cloud = CloudEnvironment::from_json("env.json", json).unwrap();
        assert_eq!(
            cloud,
            CloudEnvironment {
                name: "AzureStackCloud".into(),
                active_directory_endpoint: "https://login.local:8443/".into(),
                key_vault_resource: "https://vault.local".into(),
                key_vault_dns_suffix: "vault.local:9443".into(),
            }
        );
        assert_eq!(cloud.vault_url("kv"), "https://kv.vault.local:9443/");
    }

    #[test]
    fn environment_file_errors_name_the_field() {
        let err =
            CloudEnvironment::from_json("/etc/env.json", br#"{"activeDirectoryEndpoint":"https://a/"}"#).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cloud environment file /etc/env.json: field keyVaultDNSSuffix is missing or empty"
        );
        let err = CloudEnvironment::from_json("/etc/env.json", b"{").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cloud environment file /etc/env.json: invalid JSON: "),
            "{err}"
        );
        let err = CloudEnvironment::from_file(Path::new("/nonexistent/env.json")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cloud environment file /nonexistent/env.json: No such file or directory (os error 2)"
        );
    }

    /// Found through the `cloud_env` fuzz target's check (`fuzz/corpus/cloud_env/crash-suffix-path`,
    /// `crash-authority-query`, `crash-authority-no-scheme`): a suffix with a `/`, `@` or `?` put the vault name,
    /// and the Key Vault token, on another path or host than `https://{vault}.{suffix}/`; an authority with a
    /// query moved the tenant out of the token endpoint's path, and one without `https://` and a host (the fuzzer's
    /// `hZZZ…ttps://`) made the tenant the host.
    #[test]
    fn environment_file_urls_cannot_be_redirected() {
        let file = |authority: &str, suffix: &str| {
            format!(
                r#"{{"activeDirectoryEndpoint":"{authority}","keyVaultDNSSuffix":"{suffix}","keyVaultEndpoint":"https://v/"}}"#
            )
        };
        for suffix in [
            "vault.local/x",
            "vault.azure.net@evil.example",
            "vault.local?",
            "vault local",
            "v:0",
            "v:x",
        ] {
            let err = CloudEnvironment::from_json("/e.json", file("https://login/", suffix).as_bytes()).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "cloud environment file /e.json: field keyVaultDNSSuffix {suffix:?} is not a DNS name; set the \
                     vaults' domain, optionally with a port, e.g. vault.azure.net"
                )
            );
        }
        for authority in [
            "https://login/?x=",
            "https://login/#",
            "https://log in/",
            "https://user@login/",
            "http://login/",
            "hZZZttps://",
        ] {
            let err = CloudEnvironment::from_json("/e.json", file(authority, "v").as_bytes()).unwrap_err();
            assert!(err.to_string().contains("field activeDirectoryEndpoint"), "{err}");
        }
        let cloud = CloudEnvironment::from_json("/e.json", file("https://login:8443", "vault.local:9443").as_bytes());
        assert_eq!(cloud.unwrap().vault_url("kv"), "https://kv.vault.local:9443/");
    }
}
