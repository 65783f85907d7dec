//! The fake Key Vault's model and rules, with no HTTP: vaults with their tenant and access list, objects with
//! their versions (names case-insensitive, case kept), how seeding creates versions (a certificate is a
//! certificate, a managed key and a managed secret of one name and version), disabling and deleting, and how a
//! bearer token is verified (Entra's signature, the vault resource as audience, the vault's tenant, expiry).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};
use time::OffsetDateTime;

use super::material::{self, CertContentType, CertificateSpec, KeyType};
use crate::issuer::{hex_lower, random_bytes, unverified_claims, unverified_header};
use crate::traffic::Traffic;

/// The newest api-version the fake knows, named in Key Vault's "not recognized" error.
pub const LATEST_API_VERSION: &str = "2025-07-01";
/// api-versions accepted (7.4 and newer, as the brief of the fake requires).
pub const API_VERSIONS: &[&str] = &["7.4", "7.5", "7.6", LATEST_API_VERSION];
/// Key Vault's largest page for list operations.
pub const MAX_PAGE_SIZE: usize = 25;

/// How the server is addressed and who it trusts.
#[derive(Debug, Clone)]
pub struct KeyVaultConfig {
    /// Vault hosts are `{vault}.{dns_suffix}`, e.g. `vault.wisp.test`.
    pub dns_suffix: String,
    /// The token audience, e.g. `https://vault.wisp.test` (the cloud's Key Vault resource).
    pub resource: String,
    /// Entra's authority host with a trailing `/`, put in the 401 challenge, e.g. `https://login.wisp.test:1234/`.
    pub authority_host: String,
    /// Largest page of version lists (1..=25); small values make clients follow `nextLink`.
    pub page_size: usize,
}

impl KeyVaultConfig {
    pub fn new(dns_suffix: &str, resource: &str, authority_host: &str) -> Self {
        let mut authority_host = authority_host.to_string();
        if !authority_host.ends_with('/') {
            authority_host.push('/');
        }
        Self {
            dns_suffix: dns_suffix.trim_start_matches('.').to_ascii_lowercase(),
            resource: resource.trim_end_matches('/').to_string(),
            authority_host,
            page_size: MAX_PAGE_SIZE,
        }
    }
}

/// Which collection an object lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ObjectKind {
    Secret,
    Key,
    Certificate,
}

impl ObjectKind {
    /// The URL collection segment.
    pub fn collection(self) -> &'static str {
        match self {
            ObjectKind::Secret => "secrets",
            ObjectKind::Key => "keys",
            ObjectKind::Certificate => "certificates",
        }
    }

    pub(super) fn noun(self) -> &'static str {
        match self {
            ObjectKind::Secret => "secret",
            ObjectKind::Key => "key",
            ObjectKind::Certificate => "certificate",
        }
    }

    pub(super) fn not_found_code(self) -> &'static str {
        match self {
            ObjectKind::Secret => "SecretNotFound",
            ObjectKind::Key => "KeyNotFound",
            ObjectKind::Certificate => "CertificateNotFound",
        }
    }
}

#[derive(Debug, Clone)]
pub(super) struct Attributes {
    pub(super) enabled: bool,
    pub(super) created: i64,
    pub(super) updated: i64,
    pub(super) nbf: Option<i64>,
    pub(super) exp: Option<i64>,
}

impl Attributes {
    pub(super) fn now() -> Self {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        Self {
            enabled: true,
            created: now,
            updated: now,
            nbf: None,
            exp: None,
        }
    }
}

#[derive(Debug, Clone)]
pub(super) struct SecretVersion {
    pub(super) version: String,
    pub(super) value: String,
    pub(super) content_type: Option<String>,
    /// For certificate-backed secrets: the certificate's name (its key and secret share name and version).
    pub(super) certificate: Option<String>,
    /// The PEM form of a PKCS#12 certificate secret, served for `outContentType=application/x-pem-file`.
    pub(super) pem_form: Option<String>,
    pub(super) attributes: Attributes,
}

#[derive(Debug, Clone)]
pub(super) struct KeyVersion {
    pub(super) version: String,
    pub(super) jwk_fields: Map<String, Value>,
    pub(super) key_ops: Vec<&'static str>,
    pub(super) managed: bool,
    pub(super) attributes: Attributes,
}

#[derive(Debug, Clone)]
pub(super) struct CertVersion {
    pub(super) version: String,
    pub(super) cer: Vec<u8>,
    pub(super) subject: String,
    pub(super) dns_names: Vec<String>,
    pub(super) key_type: KeyType,
    pub(super) content_type: CertContentType,
    pub(super) self_signed: bool,
    pub(super) attributes: Attributes,
}

#[derive(Debug, Clone)]
pub(super) struct Entry<T> {
    /// The name as created (Key Vault names are case-insensitive but keep their case in ids).
    pub(super) name: String,
    pub(super) versions: Vec<T>,
}

#[derive(Debug, Default)]
pub(super) struct Vault {
    pub(super) tenant: String,
    pub(super) secrets: BTreeMap<String, Entry<SecretVersion>>,
    pub(super) keys: BTreeMap<String, Entry<KeyVersion>>,
    pub(super) certificates: BTreeMap<String, Entry<CertVersion>>,
    /// Client ids (appid) allowed to get and list everything.
    pub(super) granted: BTreeSet<String>,
    /// The last `created` time handed out.
    pub(super) last_created: i64,
}

impl Vault {
    /// Stamps a new version's `created`/`updated`: now, but strictly after the vault's previous version, so
    /// versions created within one second still sort by creation time as clients (provider-azure's
    /// `objectVersionHistory`) expect.
    fn stamp(&mut self, attributes: &mut Attributes) {
        let created = attributes.created.max(self.last_created + 1);
        self.last_created = created;
        attributes.created = created;
        attributes.updated = created;
    }
}

#[derive(Debug, Default)]
pub(super) struct KvState {
    pub(super) vaults: BTreeMap<String, Vault>,
}

/// What `add_rsa_key`/`add_ec_key` created.
#[derive(Debug, Clone)]
pub struct SeededKey {
    pub version: String,
    /// SubjectPublicKeyInfo DER of the key (what a PEM public key file holds).
    pub public_key_spki_der: Vec<u8>,
    /// The JWK fields without `kid`/`key_ops`.
    pub jwk_fields: Map<String, Value>,
}

/// What `add_certificate` created: the certificate, key and secret objects share name and version.
#[derive(Clone)]
pub struct SeededCertificate {
    pub version: String,
    /// Leaf first, then the issuing CA when the spec asked for one.
    pub chain_der: Vec<Vec<u8>>,
    pub private_key_pkcs8_der: Vec<u8>,
    pub public_key_spki_der: Vec<u8>,
    /// The certificate-backed secret's value as served.
    pub secret_value: String,
    pub pfx: Vec<u8>,
    pub pem_bundle: String,
    pub x5t: String,
    pub not_before: i64,
    pub not_after: i64,
}

impl std::fmt::Debug for SeededCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeededCertificate")
            .field("version", &self.version)
            .field("x5t", &self.x5t)
            .finish_non_exhaustive()
    }
}

/// A new Key Vault version id: 32 lower-case hex digits.
pub fn new_version() -> String {
    hex_lower(&random_bytes::<16>())
}

/// The service behind the wire: its configuration, the issuer keys it trusts, its vaults and its traffic.
pub(super) struct Service {
    pub(super) config: KeyVaultConfig,
    pub(super) entra_keys: JwkSet,
    pub(super) state: Mutex<KvState>,
    pub(super) traffic: Traffic,
}

impl Service {
    pub(super) fn state(&self) -> MutexGuard<'_, KvState> {
        // A panicking test thread must not hide the vaults from the others.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The caller a request's bearer `token` (if any) proves, for a vault of `tenant`; the message of Key Vault's
    /// 401 otherwise.
    pub(super) fn authenticate(&self, token: Option<&str>, tenant: &str) -> Result<Caller, String> {
        let Some(token) = token else {
            return Err("AKV10000: Request is missing a Bearer or PoP token.".to_string());
        };
        let invalid =
            || "AKV10000: Invalid token: the token is malformed or its signature does not verify.".to_string();
        let header = unverified_header(token).ok_or_else(invalid)?;
        let kid = header.get("kid").and_then(Value::as_str);
        let jwk = self
            .entra_keys
            .keys
            .iter()
            .find(|k| k.common.key_id.as_deref() == kid)
            .ok_or_else(invalid)?;
        let key = DecodingKey::from_jwk(jwk).map_err(|_| invalid())?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.validate_exp = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        jsonwebtoken::decode::<Value>(token, &key, &validation).map_err(|_| invalid())?;
        let claims = unverified_claims(token).ok_or_else(invalid)?;
        let text = |name: &str| claims.get(name).and_then(Value::as_str).unwrap_or_default().to_string();
        let aud = text("aud");
        if aud.trim_end_matches('/') != self.config.resource {
            return Err(format!(
                "AKV10022: Invalid audience. Expected {}, found: {aud}.",
                self.config.resource
            ));
        }
        let iss = text("iss");
        let token_tenant = text("tid");
        if token_tenant != tenant {
            return Err(format!(
                "AKV10032: Invalid issuer. Expected one of https://sts.windows.net/{tenant}/, \
                     https://login.microsoftonline.com/{tenant}/v2.0, found {iss}."
            ));
        }
        let exp = claims.get("exp").and_then(Value::as_i64).unwrap_or(0);
        if exp <= OffsetDateTime::now_utc().unix_timestamp() {
            return Err("AKV10000: Invalid token: the token is expired.".to_string());
        }
        Ok(Caller {
            appid: text("appid"),
            oid: text("oid"),
            tenant: token_tenant,
        })
    }
}

/// The authenticated caller.
pub(super) struct Caller {
    pub(super) appid: String,
    pub(super) oid: String,
    pub(super) tenant: String,
}

impl Vault {
    /// Adds a new (now latest) version of a secret; returns its version id.
    pub(super) fn add_secret(&mut self, name: &str, value: &str, content_type: Option<&str>) -> String {
        let version = new_version();
        let mut secret = SecretVersion {
            version: version.clone(),
            value: value.to_string(),
            content_type: content_type.map(str::to_string),
            certificate: None,
            pem_form: None,
            attributes: Attributes::now(),
        };
        self.stamp(&mut secret.attributes);
        push_version(&mut self.secrets, name, secret);
        version
    }

    /// Adds a new version of a key generated as `generated`; returns its version id.
    pub(super) fn add_key(&mut self, name: &str, key_type: KeyType, generated: &material::GeneratedKey) -> String {
        let version = new_version();
        let mut key = KeyVersion {
            version: version.clone(),
            jwk_fields: generated.jwk_fields.clone(),
            key_ops: key_ops(key_type),
            managed: false,
            attributes: Attributes::now(),
        };
        self.stamp(&mut key.attributes);
        push_version(&mut self.keys, name, key);
        version
    }

    /// Creates a certificate the way Key Vault does: a certificate object, plus a managed key and a managed
    /// secret of the same name and version (the secret holds the key and chain as PKCS#12 or PEM).
    pub(super) fn add_certificate(
        &mut self,
        name: &str,
        spec: &CertificateSpec,
        generated: &material::GeneratedCertificate,
    ) -> String {
        let version = new_version();
        let leaf = generated.chain_der.first().cloned().unwrap_or_default();
        let mut attributes = Attributes::now();
        attributes.nbf = Some(generated.not_before.unix_timestamp());
        attributes.exp = Some(generated.not_after.unix_timestamp());
        let mut cert = CertVersion {
            version: version.clone(),
            cer: leaf,
            subject: format!("CN={}", spec.subject_cn),
            dns_names: spec.dns_names.clone(),
            key_type: spec.key_type,
            content_type: spec.content_type,
            self_signed: !spec.issued_by_ca,
            attributes: attributes.clone(),
        };
        let mut key = KeyVersion {
            version: version.clone(),
            jwk_fields: generated.key.jwk_fields.clone(),
            key_ops: key_ops(spec.key_type),
            managed: true,
            attributes: attributes.clone(),
        };
        let mut secret = SecretVersion {
            version: version.clone(),
            value: generated.secret_value.clone(),
            content_type: Some(spec.content_type.mime().to_string()),
            certificate: Some(name.to_string()),
            pem_form: (spec.content_type == CertContentType::Pkcs12).then(|| generated.pem_bundle.clone()),
            attributes,
        };
        self.stamp(&mut cert.attributes);
        for a in [&mut key.attributes, &mut secret.attributes] {
            a.created = cert.attributes.created;
            a.updated = cert.attributes.updated;
        }
        push_version(&mut self.certificates, name, cert);
        push_version(&mut self.keys, name, key);
        push_version(&mut self.secrets, name, secret);
        version
    }

    /// Disables one version; whether it existed. Disabling a certificate version disables its key and secret
    /// too, as Key Vault does.
    pub(super) fn disable_version(&mut self, kind: ObjectKind, name: &str, version: &str) -> bool {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let disable = |a: &mut Attributes| {
            a.enabled = false;
            a.updated = now;
        };
        let lname = name.to_ascii_lowercase();
        match kind {
            ObjectKind::Secret => find_version_mut(&mut self.secrets, &lname, version, |s| &s.version)
                .map(|s| disable(&mut s.attributes))
                .is_some(),
            ObjectKind::Key => find_version_mut(&mut self.keys, &lname, version, |k| &k.version)
                .map(|k| disable(&mut k.attributes))
                .is_some(),
            ObjectKind::Certificate => {
                let found = find_version_mut(&mut self.certificates, &lname, version, |c| &c.version)
                    .map(|c| disable(&mut c.attributes))
                    .is_some();
                if found {
                    if let Some(s) = find_version_mut(&mut self.secrets, &lname, version, |s| &s.version) {
                        disable(&mut s.attributes);
                    }
                    if let Some(k) = find_version_mut(&mut self.keys, &lname, version, |k| &k.version) {
                        disable(&mut k.attributes);
                    }
                }
                found
            }
        }
    }

    /// Deletes an object with all its versions (a deleted and purged object). Deleting a certificate deletes its
    /// key and secret too. Returns whether anything existed.
    pub(super) fn delete_object(&mut self, kind: ObjectKind, name: &str) -> bool {
        let lname = name.to_ascii_lowercase();
        match kind {
            ObjectKind::Secret => self.secrets.remove(&lname).is_some(),
            ObjectKind::Key => self.keys.remove(&lname).is_some(),
            ObjectKind::Certificate => {
                let existed = self.certificates.remove(&lname).is_some();
                if existed {
                    self.keys.remove(&lname);
                    self.secrets.remove(&lname);
                }
                existed
            }
        }
    }
}

fn key_ops(key_type: KeyType) -> Vec<&'static str> {
    match key_type {
        KeyType::Rsa2048 => vec!["encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey"],
        KeyType::Ec(_) => vec!["sign", "verify"],
    }
}

fn push_version<T>(map: &mut BTreeMap<String, Entry<T>>, name: &str, version: T) {
    map.entry(name.to_ascii_lowercase())
        .or_insert_with(|| Entry {
            name: name.to_string(),
            versions: Vec::new(),
        })
        .versions
        .push(version);
}

fn find_version_mut<'a, T>(
    map: &'a mut BTreeMap<String, Entry<T>>,
    lname: &str,
    version: &str,
    id: impl Fn(&T) -> &str,
) -> Option<&'a mut T> {
    map.get_mut(lname)?
        .versions
        .iter_mut()
        .find(|v| id(v).eq_ignore_ascii_case(version))
}

pub(super) fn pick<'a, T>(
    entry: Option<&'a Entry<T>>,
    version: Option<&str>,
    id: impl Fn(&T) -> &str,
) -> Option<(&'a str, &'a T)> {
    let entry = entry?;
    let found = match version {
        None => entry.versions.last(),
        Some(v) => entry.versions.iter().find(|x| id(x).eq_ignore_ascii_case(v)),
    }?;
    Some((entry.name.as_str(), found))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_32_lowercase_hex_digits() {
        let v = new_version();
        assert_eq!(v.len(), 32);
        assert!(
            v.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
            "{v}"
        );
        assert_ne!(v, new_version());
    }

    #[test]
    fn names_are_case_insensitive_but_keep_their_case() {
        let mut map: BTreeMap<String, Entry<SecretVersion>> = BTreeMap::new();
        let version = |v: &str| SecretVersion {
            version: v.into(),
            value: v.into(),
            content_type: None,
            certificate: None,
            pem_form: None,
            attributes: Attributes::now(),
        };
        push_version(&mut map, "MySecret", version("aa"));
        push_version(&mut map, "mysecret", version("bb"));
        let (name, latest) = pick(map.get("mysecret"), None, |s| &s.version).unwrap();
        assert_eq!((name, latest.value.as_str()), ("MySecret", "bb"));
        let (_, first) = pick(map.get("mysecret"), Some("AA"), |s| &s.version).unwrap();
        assert_eq!(first.value, "aa");
        assert!(pick(map.get("mysecret"), Some("cc"), |s| &s.version).is_none());
    }
}
