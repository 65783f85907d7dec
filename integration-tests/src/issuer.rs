//! A Kubernetes service-account token issuer for tests: an RSA key generated at test time, its JWKS and OIDC
//! discovery documents, and projected service-account tokens in the exact shape kube-apiserver issues them, so
//! that the fake Entra (and wisp) see what a real cluster would hand to kubelet.

use std::fmt;
use std::time::Duration;

use aws_lc_rs::digest;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{Jwk, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use rcgen::PublicKeyData as _;
use serde::Serialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use wisp_shared::contract::workload_identity::DEFAULT_AUDIENCE;

#[derive(Debug, thiserror::Error)]
pub enum IssuerError {
    #[error("generating the RSA signing key failed: {0}")]
    KeyGeneration(String),
    #[error("signing the JWT failed: {0}")]
    Signing(String),
    #[error("time {0} is outside the range a JWT can carry")]
    TimeOutOfRange(String),
}

/// Random bytes from the system CSPRNG, for key ids, versions and trace ids.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    // The system RNG only fails when the OS has no entropy source at all, which no test machine lacks; an
    // all-zero id would still be well-formed, so the result is not worth propagating.
    let _ = SystemRandom::new().fill(&mut out);
    out
}

/// A random UUID (version 4 layout), as kube-apiserver writes `jti` and object uids.
pub fn random_uuid() -> String {
    let mut b = random_bytes::<16>();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    uuid_from_bytes(&b)
}

/// A UUID-shaped string derived from a name, so the same ServiceAccount always gets the same uid.
pub fn stable_uuid(name: &str) -> String {
    let d = digest::digest(&digest::SHA256, name.as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&d.as_ref()[..16]);
    b[6] = (b[6] & 0x0f) | 0x50;
    b[8] = (b[8] & 0x3f) | 0x80;
    uuid_from_bytes(&b)
}

fn uuid_from_bytes(b: &[u8; 16]) -> String {
    let h = hex_lower(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

pub(crate) fn hex_lower(bytes: &[u8]) -> String {
    use fmt::Write as _;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

pub(crate) fn unix(t: OffsetDateTime) -> i64 {
    t.unix_timestamp()
}

/// RFC 3339 in UTC with whole seconds, as Go's `metav1.Time` marshals it (`2026-01-02T03:04:05Z`).
pub fn rfc3339_seconds(t: OffsetDateTime) -> Result<String, IssuerError> {
    let t = t
        .replace_nanosecond(0)
        .map_err(|e| IssuerError::TimeOutOfRange(e.to_string()))?;
    t.to_offset(time::UtcOffset::UTC)
        .format(&Rfc3339)
        .map_err(|e| IssuerError::TimeOutOfRange(e.to_string()))
}

/// An RS256 signing key with its JWK. Used by the SA-token issuer and by the fake Entra for access tokens.
#[derive(Clone)]
pub struct RsaSigningKey {
    kid: String,
    encoding: EncodingKey,
    jwk: Jwk,
    decoding: DecodingKey,
}

impl fmt::Debug for RsaSigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RsaSigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl RsaSigningKey {
    /// A fresh 2048-bit key. The key id is kube-apiserver's: base64url(SHA-256(SubjectPublicKeyInfo DER)).
    pub fn generate() -> Result<Self, IssuerError> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256)
            .map_err(|e| IssuerError::KeyGeneration(e.to_string()))?;
        let kid = URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, &key.subject_public_key_info()));
        let encoding = EncodingKey::from_rsa_pem(key.serialize_pem().as_bytes())
            .map_err(|e| IssuerError::KeyGeneration(e.to_string()))?;
        let mut jwk = Jwk::from_encoding_key(&encoding, Algorithm::RS256)
            .map_err(|e| IssuerError::KeyGeneration(e.to_string()))?;
        jwk.common.key_id = Some(kid.clone());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        jwk.common.key_algorithm = Some(KeyAlgorithm::RS256);
        let decoding = DecodingKey::from_jwk(&jwk).map_err(|e| IssuerError::KeyGeneration(e.to_string()))?;
        Ok(Self {
            kid,
            encoding,
            jwk,
            decoding,
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as a JWK (`kty`, `use: sig`, `alg: RS256`, `kid`, `n`, `e`).
    pub fn jwk(&self) -> &Jwk {
        &self.jwk
    }

    pub fn jwks(&self) -> JwkSet {
        JwkSet {
            keys: vec![self.jwk.clone()],
        }
    }

    pub fn decoding_key(&self) -> &DecodingKey {
        &self.decoding
    }

    /// Signs `claims` with header `{"alg":"RS256","kid":...}` plus `typ` when given (kube-apiserver sends none,
    /// Entra sends `JWT`).
    pub fn sign(&self, claims: &impl Serialize, typ: Option<&str>) -> Result<String, IssuerError> {
        let mut header = Header::new(Algorithm::RS256);
        header.typ = typ.map(str::to_string);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).map_err(|e| IssuerError::Signing(e.to_string()))
    }
}

/// A projected service-account token and its expiry, as kubelet receives them from the TokenRequest API.
#[derive(Clone)]
pub struct MintedToken {
    pub token: String,
    pub expiration: OffsetDateTime,
}

impl fmt::Debug for MintedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MintedToken")
            .field("token", &"<redacted>")
            .field("expiration", &self.expiration)
            .finish()
    }
}

/// Who a service-account token is for.
#[derive(Debug, Clone)]
pub struct SaTokenSpec<'a> {
    pub namespace: &'a str,
    pub service_account: &'a str,
    pub pod_name: &'a str,
    pub pod_uid: &'a str,
    pub audiences: Vec<String>,
    pub ttl: Duration,
    /// `iat`/`nbf`; `None` is now. A time in the past makes expired tokens.
    pub issued_at: Option<OffsetDateTime>,
}

/// The OIDC issuer of a test cluster's service-account tokens.
#[derive(Debug, Clone)]
pub struct TestIssuer {
    issuer: String,
    key: RsaSigningKey,
}

impl TestIssuer {
    /// `issuer` is the `iss` claim and the base of the discovery URLs, e.g. `https://oidc.wisp.test/cluster1`.
    pub fn new(issuer: impl Into<String>) -> Result<Self, IssuerError> {
        Ok(Self {
            issuer: issuer.into(),
            key: RsaSigningKey::generate()?,
        })
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn key(&self) -> &RsaSigningKey {
        &self.key
    }

    /// `/openid/v1/jwks` as kube-apiserver serves it.
    pub fn jwks(&self) -> JwkSet {
        self.key.jwks()
    }

    /// `/.well-known/openid-configuration` as kube-apiserver serves it.
    pub fn openid_configuration(&self) -> Value {
        json!({
            "issuer": self.issuer,
            "jwks_uri": format!("{}/openid/v1/jwks", self.issuer.trim_end_matches('/')),
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
        })
    }

    /// The claims kube-apiserver puts in a pod-bound projected token (Kubernetes 1.33 shape, without the node
    /// binding, which wisp does not read).
    pub fn sa_token_claims(&self, spec: &SaTokenSpec<'_>) -> Result<(Value, OffsetDateTime), IssuerError> {
        let iat = spec
            .issued_at
            .unwrap_or_else(OffsetDateTime::now_utc)
            .replace_nanosecond(0)
            .map_err(|e| IssuerError::TimeOutOfRange(e.to_string()))?;
        let ttl = time::Duration::try_from(spec.ttl).map_err(|e| IssuerError::TimeOutOfRange(e.to_string()))?;
        let exp = iat
            .checked_add(ttl)
            .ok_or_else(|| IssuerError::TimeOutOfRange(format!("{iat} + {ttl}")))?;
        let claims = json!({
            "aud": spec.audiences,
            "exp": unix(exp),
            "iat": unix(iat),
            "iss": self.issuer,
            "jti": random_uuid(),
            "kubernetes.io": {
                "namespace": spec.namespace,
                "pod": { "name": spec.pod_name, "uid": spec.pod_uid },
                "serviceaccount": {
                    "name": spec.service_account,
                    "uid": stable_uuid(&format!("{}/{}", spec.namespace, spec.service_account)),
                },
            },
            "nbf": unix(iat),
            "sub": format!("system:serviceaccount:{}:{}", spec.namespace, spec.service_account),
        });
        Ok((claims, exp))
    }

    pub fn mint(&self, spec: &SaTokenSpec<'_>) -> Result<MintedToken, IssuerError> {
        let (claims, expiration) = self.sa_token_claims(spec)?;
        Ok(MintedToken {
            token: self.key.sign(&claims, None)?,
            expiration,
        })
    }

    /// A token for one audience, issued now.
    pub fn mint_sa_token(
        &self,
        namespace: &str,
        sa_name: &str,
        pod_name: &str,
        pod_uid: &str,
        audience: &str,
        ttl: Duration,
    ) -> Result<MintedToken, IssuerError> {
        self.mint(&SaTokenSpec {
            namespace,
            service_account: sa_name,
            pod_name,
            pod_uid,
            audiences: vec![audience.to_string()],
            ttl,
            issued_at: None,
        })
    }

    /// Signs arbitrary claims with the issuer's key (for tokens a real API server would never issue).
    pub fn sign_claims(&self, claims: &Value) -> Result<String, IssuerError> {
        self.key.sign(claims, None)
    }

    /// The `csi.storage.k8s.io/serviceAccount.tokens` volume_context value for a pod, holding one token for
    /// `api://AzureADTokenExchange`, exactly as kubelet builds it.
    pub fn csi_tokens_json(
        &self,
        namespace: &str,
        sa_name: &str,
        pod_name: &str,
        pod_uid: &str,
        ttl: Duration,
    ) -> Result<String, IssuerError> {
        let token = self.mint_sa_token(namespace, sa_name, pod_name, pod_uid, DEFAULT_AUDIENCE, ttl)?;
        tokens_json(&[(DEFAULT_AUDIENCE, &token)])
    }
}

/// kubelet's `csi.storage.k8s.io/serviceAccount.tokens` JSON: `{"<audience>":{"token":"...",
/// "expirationTimestamp":"RFC3339"}}` (Go's map marshalling sorts the audiences).
pub fn tokens_json(tokens: &[(&str, &MintedToken)]) -> Result<String, IssuerError> {
    let mut map = serde_json::Map::new();
    for (audience, minted) in tokens {
        map.insert(
            (*audience).to_string(),
            json!({ "token": minted.token, "expirationTimestamp": rfc3339_seconds(minted.expiration)? }),
        );
    }
    Ok(Value::Object(map).to_string())
}

/// Decodes a JWT's payload without verifying it (for tests that look at what was issued).
pub fn unverified_claims(jwt: &str) -> Option<Value> {
    let payload = jwt.split('.').nth(1)?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()
}

/// Decodes a JWT's header without verifying it.
pub fn unverified_header(jwt: &str) -> Option<Value> {
    let header = jwt.split('.').next()?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).ok()?).ok()
}
