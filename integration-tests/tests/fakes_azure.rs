//! The fake Entra, IMDS and Key Vault enforce the real services' rules, checked over real HTTPS with a client
//! trusting only the test CA; and the Azure SDK crates the agent uses work against them.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use integration_tests::fake_entra::{FakeEntra, FederatedCredential};
use integration_tests::fake_keyvault::{
    CertContentType, CertificateSpec, EcCurve, FakeKeyVault, KeyType, KeyVaultConfig, ObjectKind,
};
use integration_tests::https_server::ServerTls;
use integration_tests::issuer::{SaTokenSpec, TestIssuer, tokens_json, unverified_claims};
use integration_tests::local_cloud::{LOGIN_HOST, VAULT_DNS_SUFFIX, VAULT_RESOURCE};
use integration_tests::pki::TestPki;
use pretty_assertions::assert_eq;
use serde_json::{Value, json};
use time::OffsetDateTime;

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const OTHER_TENANT: &str = "0e3e2e88-8caf-41ca-b4da-e3b33b6c52ec";
const CLIENT_ID: &str = "fad7d5b3-69d6-4b48-9259-8d12124e1cf1";
const SECRET_CLIENT_ID: &str = "3975aeed-7d08-453b-b6f4-445f32698091";
const MI_SYSTEM: &str = "0b5e1f0a-0000-4000-8000-00000000aaaa";
const MI_USER: &str = "0b5e1f0a-0000-4000-8000-00000000bbbb";
const OTHER_RESOURCE: &str = "https://management.wisp.test";
const ISSUER_URL: &str = "https://oidc.wisp.test/cluster-1";
const VAULT: &str = "kv1";
const SECRET: &str = "s3cr3t-value";

struct Env {
    _pki: TestPki,
    entra: FakeEntra,
    kv: FakeKeyVault,
    issuer: TestIssuer,
    client: reqwest::Client,
    transport_client: reqwest::Client,
}

fn reqwest_for(pki: &TestPki, entra: &FakeEntra, kv: &FakeKeyVault) -> reqwest::ClientBuilder {
    let ca = reqwest::Certificate::from_pem(pki.ca_pem().as_bytes()).expect("CA PEM");
    reqwest::Client::builder()
        .tls_certs_only([ca])
        .resolve(LOGIN_HOST, entra.https_addr())
        .resolve(&kv.vault_host(VAULT), kv.addr())
        .resolve(&kv.vault_host("kv2"), kv.addr())
}

async fn env_with_page_size(page_size: usize) -> Env {
    let pki = TestPki::new();
    let entra = FakeEntra::start(LOGIN_HOST, &ServerTls::from(pki.server_cert(&[LOGIN_HOST])))
        .await
        .expect("entra");
    entra.add_tenant(TENANT);
    entra.add_tenant(OTHER_TENANT);
    entra.add_resource(VAULT_RESOURCE);
    entra.add_resource(OTHER_RESOURCE);
    let issuer = TestIssuer::new(ISSUER_URL).expect("issuer");
    entra.trust_issuer(ISSUER_URL, issuer.jwks());
    entra.add_federated_credential(
        TENANT,
        CLIENT_ID,
        FederatedCredential::for_service_account(ISSUER_URL, "default", "workload-identity-sa"),
    );
    entra.add_client_secret(TENANT, SECRET_CLIENT_ID, "the-client-secret");
    entra.set_node_identities(TENANT, Some(MI_SYSTEM), &[MI_USER]);

    let wildcard = format!("*.{VAULT_DNS_SUFFIX}");
    let kv_tls = ServerTls::from(pki.server_cert(&[&wildcard]));
    let kv = if page_size == 25 {
        FakeKeyVault::start_for(&entra, VAULT_DNS_SUFFIX, VAULT_RESOURCE, &kv_tls)
            .await
            .expect("key vault")
    } else {
        let mut config = KeyVaultConfig::new(VAULT_DNS_SUFFIX, VAULT_RESOURCE, &entra.authority_host());
        config.page_size = page_size;
        FakeKeyVault::start(config, &kv_tls, entra.jwks())
            .await
            .expect("key vault")
    };
    kv.add_vault(VAULT, TENANT);
    kv.add_vault("kv2", OTHER_TENANT);
    for id in [CLIENT_ID, SECRET_CLIENT_ID, MI_SYSTEM, MI_USER] {
        kv.grant(id, VAULT).expect("grant");
    }
    let client = reqwest_for(&pki, &entra, &kv).build().expect("client");
    let transport_client = reqwest_for(&pki, &entra, &kv)
        .proxy(reqwest::Proxy::http(entra.imds_proxy_url()).expect("proxy url"))
        .build()
        .expect("client");
    Env {
        _pki: pki,
        entra,
        kv,
        issuer,
        client,
        transport_client,
    }
}

async fn env() -> Env {
    env_with_page_size(25).await
}

/// [`env`] with the secret `s1` holding [`SECRET`] in [`VAULT`].
async fn env_with_s1() -> Env {
    let env = env().await;
    env.kv.add_secret(VAULT, "s1", SECRET, None).unwrap();
    env
}

fn token_url(entra: &FakeEntra, tenant: &str) -> String {
    format!("{}{tenant}/oauth2/v2.0/token", entra.authority_host())
}

fn sa_token(issuer: &TestIssuer, namespace: &str, sa: &str) -> String {
    issuer
        .mint_sa_token(
            namespace,
            sa,
            "pod-1",
            "11111111-1111-1111-1111-111111111111",
            "api://AzureADTokenExchange",
            Duration::from_secs(3600),
        )
        .expect("mint")
        .token
}

fn assertion_form(client_id: &str, assertion: &str, scope: &str) -> Vec<(&'static str, String)> {
    vec![
        ("client_assertion", assertion.to_string()),
        (
            "client_assertion_type",
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".to_string(),
        ),
        ("client_id", client_id.to_string()),
        ("grant_type", "client_credentials".to_string()),
        ("scope", scope.to_string()),
    ]
}

async fn post_token(env: &Env, tenant: &str, form: &[(&str, String)]) -> (u16, Value) {
    let response = env
        .client
        .post(token_url(&env.entra, tenant))
        .form(form)
        .send()
        .await
        .expect("send");
    let status = response.status().as_u16();
    (status, response.json().await.expect("json body"))
}

/// Entra's error body for the n-th error this fake answered; `timestamp` is taken from the actual body after
/// checking its format, everything else is exact.
fn entra_error(actual: &Value, error: &str, code: u32, message: &str, n: u32) -> Value {
    let timestamp = actual["timestamp"].as_str().expect("timestamp").to_string();
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]Z");
    time::PrimitiveDateTime::parse(&timestamp, &format).expect("Entra timestamp format");
    let trace = format!("00000000-0000-0000-0000-{n:012x}");
    json!({
        "error": error,
        "error_description": format!("AADSTS{code}: {message} Trace ID: {trace} Correlation ID: {trace} Timestamp: {timestamp}"),
        "error_codes": [code],
        "timestamp": timestamp,
        "trace_id": trace,
        "correlation_id": trace,
        "error_uri": format!("https://{LOGIN_HOST}/error?code={code}"),
    })
}

const FIC_HINT: &str = "Please check your federated identity credential Subject, Audience and Issuer against the presented assertion. https://learn.microsoft.com/entra/workload-id/workload-identity-federation";

async fn vault_token(env: &Env) -> String {
    let assertion = sa_token(&env.issuer, "default", "workload-identity-sa");
    let (status, body) = post_token(
        env,
        TENANT,
        &assertion_form(CLIENT_ID, &assertion, &format!("{VAULT_RESOURCE}/.default")),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["access_token"].as_str().expect("access_token").to_string()
}

async fn kv_get(
    env: &Env,
    vault: &str,
    path_and_query: &str,
    token: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let url = format!("{}{}", env.kv.vault_url(vault), path_and_query.trim_start_matches('/'));
    let mut request = env.client.get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("send");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.expect("body");
    (
        status,
        headers,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// GETs `path_and_query` from `vault` and asserts the exact status and body of the answer.
async fn assert_kv_answer(env: &Env, vault: &str, path_and_query: &str, token: Option<&str>, expected: (u16, Value)) {
    let (status, _, body) = kv_get(env, vault, path_and_query, token).await;
    assert_eq!((status, body), expected, "GET {path_and_query}");
}

/// Key Vault's error body.
fn kv_error(code: &str, message: &str) -> Value {
    json!({"error": {"code": code, "message": message}})
}

/// An Entra error answer: its status, `error`, AADSTS code and message, and which error of the fake it is (its
/// trace id).
struct Refusal<'a> {
    status: u16,
    error: &'a str,
    code: u32,
    message: &'a str,
    n: u32,
}

/// POSTs `form` to `tenant`'s token endpoint and asserts Entra's exact error answer.
async fn assert_entra_refusal(env: &Env, tenant: &str, form: &[(&str, String)], expected: Refusal<'_>) {
    let (status, body) = post_token(env, tenant, form).await;
    assert_eq!(status, expected.status, "{body}");
    assert_eq!(
        body,
        entra_error(&body, expected.error, expected.code, expected.message, expected.n)
    );
}

// ---------------------------------------------------------------- issuer

#[tokio::test]
async fn issuer_mints_kube_apiserver_shaped_tokens_and_kubelet_tokens_json() {
    let issuer = TestIssuer::new(ISSUER_URL).unwrap();
    let issued_at = OffsetDateTime::from_unix_timestamp(1_900_000_000).unwrap();
    let token = issuer
        .mint(&SaTokenSpec {
            namespace: "ns1",
            service_account: "sa1",
            pod_name: "pod-a",
            pod_uid: "uid-a",
            audiences: vec!["api://AzureADTokenExchange".into()],
            ttl: Duration::from_secs(3600),
            issued_at: Some(issued_at),
        })
        .unwrap();
    let mut claims = unverified_claims(&token.token).unwrap();
    let jti = claims["jti"].as_str().unwrap().to_string();
    assert_eq!(jti.len(), 36);
    let sa_uid = claims["kubernetes.io"]["serviceaccount"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    claims.as_object_mut().unwrap().remove("jti");
    assert_eq!(
        claims,
        json!({
            "aud": ["api://AzureADTokenExchange"],
            "exp": 1_900_003_600,
            "iat": 1_900_000_000,
            "nbf": 1_900_000_000,
            "iss": ISSUER_URL,
            "sub": "system:serviceaccount:ns1:sa1",
            "kubernetes.io": {
                "namespace": "ns1",
                "pod": {"name": "pod-a", "uid": "uid-a"},
                "serviceaccount": {"name": "sa1", "uid": sa_uid},
            },
        })
    );
    let header = integration_tests::issuer::unverified_header(&token.token).unwrap();
    assert_eq!(header, json!({"alg": "RS256", "kid": issuer.key().kid()}));
    // The signature verifies with the published JWKS.
    let key = jsonwebtoken::DecodingKey::from_jwk(&issuer.jwks().keys[0]).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.validate_exp = false;
    validation.set_audience(&["api://AzureADTokenExchange"]);
    jsonwebtoken::decode::<Value>(&token.token, &key, &validation).unwrap();

    assert_eq!(
        tokens_json(&[("api://AzureADTokenExchange", &token)]).unwrap(),
        format!(
            r#"{{"api://AzureADTokenExchange":{{"expirationTimestamp":"2030-03-17T18:46:40Z","token":"{}"}}}}"#,
            token.token
        )
    );
}

// ---------------------------------------------------------------- Entra

#[tokio::test]
async fn federated_assertion_is_exchanged_for_a_vault_token() {
    let env = env().await;
    let assertion = sa_token(&env.issuer, "default", "workload-identity-sa");
    let (status, body) = post_token(
        &env,
        TENANT,
        &assertion_form(CLIENT_ID, &assertion, "https://vault.wisp.test/.default"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let token = body["access_token"].as_str().unwrap();
    assert_eq!(
        body,
        json!({"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": token})
    );
    let key = jsonwebtoken::DecodingKey::from_jwk(&env.entra.jwks().keys[0]).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_audience(&[VAULT_RESOURCE]);
    let claims = jsonwebtoken::decode::<Value>(token, &key, &validation).unwrap().claims;
    let oid = env.entra.object_id(TENANT, CLIENT_ID).unwrap();
    assert_eq!(claims["aud"], VAULT_RESOURCE);
    assert_eq!(claims["appid"], CLIENT_ID);
    assert_eq!(claims["appidacr"], "2");
    assert_eq!(claims["oid"], oid.as_str());
    assert_eq!(claims["tid"], TENANT);
    assert_eq!(claims["iss"], format!("https://sts.windows.net/{TENANT}/"));
    assert_eq!(claims["ver"], "1.0");
    assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 3599);
    assert_eq!(env.entra.token_requests(TENANT), 1);
}

#[tokio::test]
async fn assertion_for_another_service_account_is_700213() {
    let env = env().await;
    let assertion = sa_token(&env.issuer, "default", "other-sa");
    let message = format!(
        "No matching federated identity record found for presented assertion subject 'system:serviceaccount:default:other-sa'. \
         Please note that the matching is done using a case-sensitive comparison. {FIC_HINT}"
    );
    assert_entra_refusal(
        &env,
        TENANT,
        &assertion_form(CLIENT_ID, &assertion, "https://vault.wisp.test/.default"),
        Refusal {
            status: 401,
            error: "invalid_client",
            code: 700213,
            message: &message,
            n: 1,
        },
    )
    .await;
}

#[tokio::test]
async fn assertion_from_an_unknown_issuer_is_700211() {
    let env = env().await;
    let stranger = TestIssuer::new("https://evil.example/issuer").unwrap();
    let assertion = sa_token(&stranger, "default", "workload-identity-sa");
    let message = format!(
        "No matching federated identity record found for presented assertion issuer 'https://evil.example/issuer'. {FIC_HINT}"
    );
    assert_entra_refusal(
        &env,
        TENANT,
        &assertion_form(CLIENT_ID, &assertion, "https://vault.wisp.test/.default"),
        Refusal {
            status: 401,
            error: "invalid_client",
            code: 700211,
            message: &message,
            n: 1,
        },
    )
    .await;
}

#[tokio::test]
async fn assertion_with_the_wrong_audience_is_700212() {
    let env = env().await;
    let assertion = env
        .issuer
        .mint_sa_token(
            "default",
            "workload-identity-sa",
            "p",
            "u",
            "https://kubernetes.default.svc",
            Duration::from_secs(600),
        )
        .unwrap();
    let message = format!(
        "No matching federated identity record found for presented assertion audience 'https://kubernetes.default.svc'. {FIC_HINT}"
    );
    assert_entra_refusal(
        &env,
        TENANT,
        &assertion_form(CLIENT_ID, &assertion.token, "https://vault.wisp.test/.default"),
        Refusal {
            status: 401,
            error: "invalid_client",
            code: 700212,
            message: &message,
            n: 1,
        },
    )
    .await;
}

#[tokio::test]
async fn assertion_with_a_forged_signature_is_rejected() {
    let env = env().await;
    // Same issuer URL and claims, but signed by a key the issuer never published, under the published kid.
    let forger = TestIssuer::new(ISSUER_URL).unwrap();
    let (claims, _) = forger
        .sa_token_claims(&SaTokenSpec {
            namespace: "default",
            service_account: "workload-identity-sa",
            pod_name: "p",
            pod_uid: "u",
            audiences: vec!["api://AzureADTokenExchange".into()],
            ttl: Duration::from_secs(600),
            issued_at: None,
        })
        .unwrap();
    let forged = forger.sign_claims(&claims).unwrap();
    let (status, body) = post_token(
        &env,
        TENANT,
        &assertion_form(CLIENT_ID, &forged, "https://vault.wisp.test/.default"),
    )
    .await;
    assert_eq!(status, 401);
    let message = format!(
        "The certificate with identifier used to sign the client assertion is not registered on application. [Reason - The \
         key was not found., Thumbprint of key used by client: '{}', Please visit the Azure Portal, Graph Explorer or \
         directly use MS Graph to see configured keys for app Id '{ISSUER_URL}'.]",
        forger.key().kid()
    );
    assert_eq!(body, entra_error(&body, "invalid_client", 700027, &message, 1));

    // With the right kid in the header but the wrong key, the signature check itself fails.
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.typ = None;
    header.kid = Some(env.issuer.key().kid().to_string());
    let [h, p, s]: [&str; 3] = forged.split('.').collect::<Vec<_>>().try_into().unwrap();
    let _ = h;
    let header_b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).unwrap());
    let spliced = format!("{header_b64}.{p}.{s}");
    let (status, body) = post_token(
        &env,
        TENANT,
        &assertion_form(CLIENT_ID, &spliced, "https://vault.wisp.test/.default"),
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(
        body,
        entra_error(
            &body,
            "invalid_client",
            7000274,
            "Key was found, but use of the key to verify the signature failed.",
            2
        )
    );
}

#[tokio::test]
async fn expired_assertion_is_700024() {
    let env = env().await;
    let issued_at = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
    let expired = env
        .issuer
        .mint(&SaTokenSpec {
            namespace: "default",
            service_account: "workload-identity-sa",
            pod_name: "p",
            pod_uid: "u",
            audiences: vec!["api://AzureADTokenExchange".into()],
            ttl: Duration::from_secs(3600),
            issued_at: Some(issued_at),
        })
        .unwrap();
    let (status, body) = post_token(
        &env,
        TENANT,
        &assertion_form(CLIENT_ID, &expired.token, "https://vault.wisp.test/.default"),
    )
    .await;
    assert_eq!(status, 401);
    let description = body["error_description"].as_str().unwrap();
    // "Current time" is the server's clock; everything around it is fixed.
    let current = description
        .split("Current time: ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .unwrap()
        .to_string();
    let message = format!(
        "Client assertion is not within its valid time range. Current time: {current}, assertion valid from \
         2023-11-14T22:13:20.0000000Z, expiry time of assertion 2023-11-14T23:13:20.0000000Z. Review the documentation \
         at https://learn.microsoft.com/entra/identity-platform/certificate-credentials ."
    );
    assert_eq!(body, entra_error(&body, "invalid_client", 700024, &message, 1));
}

#[tokio::test]
async fn unknown_client_tenant_and_bad_scope_are_rejected_like_entra() {
    let env = env().await;
    let assertion = sa_token(&env.issuer, "default", "workload-identity-sa");
    let unknown = "99999999-9999-9999-9999-999999999999";
    let unknown_client = format!(
        "Application with identifier '{unknown}' was not found in the directory '{TENANT}'. This can happen if the \
         application has not been installed by the administrator of the tenant or consented to by any user in the \
         tenant. You may have sent your authentication request to the wrong tenant."
    );
    let unknown_resource = format!(
        "The resource principal named https://unknown.wisp.test was not found in the tenant named {TENANT}. This can \
         happen if the application has not been installed by the administrator of the tenant or consented to by any \
         user in the tenant. You might have sent your authentication request to the wrong tenant."
    );
    // (tenant, client, scope) and the answer, in order: each error's trace id counts up.
    let cases = [
        (
            TENANT,
            unknown,
            "https://vault.wisp.test/.default",
            Refusal {
                status: 400,
                error: "unauthorized_client",
                code: 700016,
                message: &unknown_client,
                n: 1,
            },
        ),
        (
            "no-such-tenant",
            CLIENT_ID,
            "https://vault.wisp.test/.default",
            Refusal {
                status: 400,
                error: "invalid_request",
                code: 90002,
                message: "Tenant 'no-such-tenant' not found. Check to make sure you have the correct tenant ID and are \
                          signing into the correct cloud. Check with your subscription administrator, this may happen if \
                          there are no active subscriptions for the tenant.",
                n: 2,
            },
        ),
        (
            TENANT,
            CLIENT_ID,
            "https://vault.wisp.test",
            Refusal {
                status: 400,
                error: "invalid_scope",
                code: 1002012,
                message: "The provided value for scope https://vault.wisp.test is not valid. Client credential flows \
                          must have a scope value with /.default suffixed to the resource identifier (application ID URI).",
                n: 3,
            },
        ),
        (
            TENANT,
            CLIENT_ID,
            "https://unknown.wisp.test/.default",
            Refusal {
                status: 400,
                error: "invalid_resource",
                code: 500011,
                message: &unknown_resource,
                n: 4,
            },
        ),
    ];
    for (tenant, client, scope, expected) in cases {
        assert_entra_refusal(&env, tenant, &assertion_form(client, &assertion, scope), expected).await;
    }
    assert_eq!(env.entra.token_requests(TENANT), 3);
}

#[tokio::test]
async fn client_secret_is_checked() {
    let env = env().await;
    let form = |secret: &str| {
        vec![
            ("client_id", SECRET_CLIENT_ID.to_string()),
            ("client_secret", secret.to_string()),
            ("grant_type", "client_credentials".to_string()),
            ("scope", format!("{VAULT_RESOURCE}/.default")),
        ]
    };
    let message = format!(
        "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the \
         client secret ID, for a secret added to app '{SECRET_CLIENT_ID}'."
    );
    let wrong_secret = Refusal {
        status: 401,
        error: "invalid_client",
        code: 7000215,
        message: &message,
        n: 1,
    };
    assert_entra_refusal(&env, TENANT, &form("wrong"), wrong_secret).await;

    let (status, body) = post_token(&env, TENANT, &form("the-client-secret")).await;
    assert_eq!(status, 200, "{body}");
    let claims = unverified_claims(body["access_token"].as_str().unwrap()).unwrap();
    assert_eq!(claims["appid"], SECRET_CLIENT_ID);
    assert_eq!(claims["appidacr"], "1");

    let no_secret = Refusal {
        status: 401,
        error: "invalid_client",
        code: 7000218,
        message: "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        n: 2,
    };
    assert_entra_refusal(&env, TENANT, &form(""), no_secret).await;
}

#[tokio::test]
async fn discovery_documents_are_served() {
    let env = env().await;
    let base = env.entra.authority_host();
    let doc: Value = env
        .client
        .get(format!("{base}{TENANT}/v2.0/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let host = base.trim_end_matches('/');
    assert_eq!(doc["token_endpoint"], format!("{host}/{TENANT}/oauth2/v2.0/token"));
    assert_eq!(doc["issuer"], format!("{host}/{TENANT}/v2.0"));
    assert_eq!(doc["jwks_uri"], format!("{host}/{TENANT}/discovery/v2.0/keys"));
    let keys: Value = env
        .client
        .get(format!("{host}/{TENANT}/discovery/v2.0/keys"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(keys, serde_json::to_value(env.entra.jwks()).unwrap());
}

#[tokio::test]
async fn token_endpoint_faults_are_injected() {
    let env = env().await;
    env.entra
        .fail_token_requests(TENANT, 1, http::StatusCode::TOO_MANY_REQUESTS, Some(7));
    let assertion = sa_token(&env.issuer, "default", "workload-identity-sa");
    let form = assertion_form(CLIENT_ID, &assertion, "https://vault.wisp.test/.default");
    let response = env
        .client
        .post(token_url(&env.entra, TENANT))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 429);
    assert_eq!(response.headers()["retry-after"], "7");
    let body: Value = response.json().await.unwrap();
    let message = "The server terminated an operation because it encountered a client request loop.";
    assert_eq!(body, entra_error(&body, "temporarily_unavailable", 50196, message, 1));
    let (status, _) = post_token(&env, TENANT, &form).await;
    assert_eq!(status, 200);
    assert_eq!(env.entra.token_requests(TENANT), 2);
}

// ---------------------------------------------------------------- IMDS

async fn imds_get(env: &Env, query: &str, metadata: bool) -> (u16, Value) {
    let mut request = env.client.get(format!("{}?{query}", env.entra.imds_token_url()));
    if metadata {
        request = request.header("Metadata", "true");
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn imds_requires_the_metadata_header_and_a_known_identity() {
    let env = env().await;
    let resource = "resource=https%3A%2F%2Fvault.wisp.test";
    let refused = |description: &str| {
        (
            400,
            json!({"error": "invalid_request", "error_description": description}),
        )
    };
    // (query, whether `Metadata: true` is sent) and the answer.
    let cases = [
        (
            format!("api-version=2018-02-01&{resource}"),
            false,
            refused("Required metadata header not specified"),
        ),
        (
            resource.to_string(),
            true,
            refused("Required query variable 'api-version' is missing"),
        ),
        (
            format!("api-version=2018-02-01&{resource}&client_id=nobody"),
            true,
            refused("Identity not found"),
        ),
    ];
    for (query, metadata, expected) in cases {
        assert_eq!(imds_get(&env, &query, metadata).await, expected, "{query}");
    }
    assert_eq!(env.entra.imds_requests(), 3);
}

#[tokio::test]
async fn imds_issues_tokens_for_system_and_user_assigned_identities() {
    let env = env().await;
    for (query, client) in [
        ("", MI_SYSTEM),
        ("&client_id=0b5e1f0a-0000-4000-8000-00000000bbbb", MI_USER),
    ] {
        let (status, body) = imds_get(
            &env,
            &format!("api-version=2018-02-01&resource=https%3A%2F%2Fvault.wisp.test{query}"),
            true,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let token = body["access_token"].as_str().unwrap();
        let not_before: i64 = body["not_before"].as_str().unwrap().parse().unwrap();
        assert_eq!(
            body,
            json!({
                "access_token": token,
                "client_id": client,
                "expires_in": "3599",
                "expires_on": (not_before + 3599).to_string(),
                "ext_expires_in": "3599",
                "not_before": not_before.to_string(),
                "resource": VAULT_RESOURCE,
                "token_type": "Bearer",
            })
        );
        let claims = unverified_claims(token).unwrap();
        assert_eq!(claims["appid"], client);
        assert_eq!(claims["aud"], VAULT_RESOURCE);
    }
}

// ---------------------------------------------------------------- Key Vault

fn challenge(env: &Env, tenant: &str) -> String {
    format!(
        "Bearer authorization=\"{}{tenant}\", resource=\"{VAULT_RESOURCE}\"",
        env.entra.authority_host()
    )
}

#[tokio::test]
async fn unauthenticated_request_gets_the_bearer_challenge() {
    let env = env_with_s1().await;
    let (status, headers, body) = kv_get(&env, VAULT, "secrets/s1/?api-version=2025-07-01", None).await;
    assert_eq!(status, 401);
    assert_eq!(headers["www-authenticate"], challenge(&env, TENANT).as_str());
    assert_eq!(
        body,
        json!({"error": {"code": "Unauthorized", "message": "AKV10000: Request is missing a Bearer or PoP token."}})
    );
    let (_, headers, _) = kv_get(&env, "kv2", "secrets/s1?api-version=7.4", None).await;
    assert_eq!(headers["www-authenticate"], challenge(&env, OTHER_TENANT).as_str());
}

#[tokio::test]
async fn tokens_for_another_audience_tenant_or_signer_are_401() {
    let env = env_with_s1().await;
    let assertion = sa_token(&env.issuer, "default", "workload-identity-sa");
    let (_, body) = post_token(
        &env,
        TENANT,
        &assertion_form(CLIENT_ID, &assertion, &format!("{OTHER_RESOURCE}/.default")),
    )
    .await;
    let wrong_audience = body["access_token"].as_str().unwrap();
    let (status, headers, body) = kv_get(&env, VAULT, "secrets/s1?api-version=7.4", Some(wrong_audience)).await;
    assert_eq!(status, 401);
    assert_eq!(headers["www-authenticate"], challenge(&env, TENANT).as_str());
    assert_eq!(
        body,
        json!({"error": {"code": "Unauthorized", "message": "AKV10022: Invalid audience. Expected https://vault.wisp.test, found: https://management.wisp.test."}})
    );

    // A token from the right Entra for the right resource, but for another tenant than the vault's.
    let token = vault_token(&env).await;
    let other_issuer = kv_error(
        "Unauthorized",
        &format!(
            "AKV10032: Invalid issuer. Expected one of https://sts.windows.net/{OTHER_TENANT}/, https://login.microsoftonline.com/{OTHER_TENANT}/v2.0, found https://sts.windows.net/{TENANT}/."
        ),
    );
    assert_kv_answer(
        &env,
        "kv2",
        "secrets/s1?api-version=7.4",
        Some(&token),
        (401, other_issuer),
    )
    .await;

    // A token signed by someone else (the SA issuer) is not accepted.
    let forged = env.issuer.sign_claims(&unverified_claims(&token).unwrap()).unwrap();
    let bad_signature = kv_error(
        "Unauthorized",
        "AKV10000: Invalid token: the token is malformed or its signature does not verify.",
    );
    assert_kv_answer(
        &env,
        VAULT,
        "secrets/s1?api-version=7.4",
        Some(&forged),
        (401, bad_signature),
    )
    .await;
}

#[tokio::test]
async fn api_version_is_required_and_checked() {
    let env = env_with_s1().await;
    let token = vault_token(&env).await;
    let missing = kv_error("BadParameter", "The 'api-version' query parameter is missing.");
    assert_kv_answer(&env, VAULT, "secrets/s1", Some(&token), (400, missing)).await;
    let unknown = kv_error(
        "BadParameter",
        "The specified version (7.3) is not recognized. Consider using the latest supported version (2025-07-01).",
    );
    assert_kv_answer(&env, VAULT, "secrets/s1?api-version=7.3", Some(&token), (400, unknown)).await;
}

#[tokio::test]
async fn secrets_are_served_by_latest_and_by_version_with_404_and_403_bodies() {
    let env = env().await;
    let v1 = env
        .kv
        .add_secret(VAULT, "db-password", "first", Some("text/plain"))
        .unwrap();
    let v2 = env.kv.add_secret(VAULT, "db-password", "second", None).unwrap();
    assert_eq!(v1.len(), 32);
    assert_ne!(v1, v2);
    let token = vault_token(&env).await;
    let base = env.kv.vault_url(VAULT);

    let (status, _, body) = kv_get(&env, VAULT, "secrets/db-password/?api-version=2025-07-01", Some(&token)).await;
    assert_eq!(status, 200);
    let attributes = body["attributes"].clone();
    assert_eq!(attributes["enabled"], true);
    assert_eq!(attributes["recoveryLevel"], "Recoverable+Purgeable");
    assert_eq!(
        body,
        json!({"value": "second", "id": format!("{base}secrets/db-password/{v2}"), "attributes": attributes, "tags": {}})
    );

    let (status, _, body) = kv_get(
        &env,
        VAULT,
        &format!("secrets/DB-PASSWORD/{v1}?api-version=7.4"),
        Some(&token),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["value"], "first");
    assert_eq!(body["contentType"], "text/plain");
    assert_eq!(body["id"], format!("{base}secrets/db-password/{v1}"));

    // Key Vault's NotFound message names the object's kind and what the request named.
    let not_found = |noun: &str, id: &str| {
        format!(
            "A {noun} with (name/id) {id} was not found in this key vault. If you recently deleted this {noun} you may \
             be able to recover it using the correct recovery command. For help resolving this issue, please see \
             https://go.microsoft.com/fwlink/?linkid=2125182"
        )
    };
    for (path, code, noun, id) in [
        ("secrets/nope?api-version=7.4", "SecretNotFound", "secret", "nope"),
        ("keys/nope/0123?api-version=7.4", "KeyNotFound", "key", "nope/0123"),
    ] {
        assert_kv_answer(
            &env,
            VAULT,
            path,
            Some(&token),
            (404, kv_error(code, &not_found(noun, id))),
        )
        .await;
    }
    let (status, _, body) = kv_get(&env, VAULT, "certificates/nope?api-version=7.4", Some(&token)).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "CertificateNotFound");

    env.kv
        .disable_version(VAULT, ObjectKind::Secret, "db-password", &v2)
        .unwrap();
    let disabled = json!({"error": {"code": "Forbidden", "message": "Operation get is not allowed on a disabled secret.", "innererror": {"code": "SecretDisabled"}}});
    assert_kv_answer(
        &env,
        VAULT,
        "secrets/db-password?api-version=7.4",
        Some(&token),
        (403, disabled),
    )
    .await;
    let (status, _, body) = kv_get(
        &env,
        VAULT,
        &format!("secrets/db-password/{v1}?api-version=7.4"),
        Some(&token),
    )
    .await;
    assert_eq!((status, body["value"].clone()), (200, json!("first")));
}

#[tokio::test]
async fn identities_without_a_grant_get_403_access_denied() {
    let env = env_with_s1().await;
    env.kv.revoke(CLIENT_ID, VAULT).unwrap();
    let token = vault_token(&env).await;
    let oid = env.entra.object_id(TENANT, CLIENT_ID).unwrap();
    let (status, _, body) = kv_get(&env, VAULT, "secrets/s1?api-version=7.4", Some(&token)).await;
    assert_eq!(status, 403);
    assert_eq!(
        body,
        json!({"error": {"code": "Forbidden", "message": format!(
            "The user, group or application 'appid={CLIENT_ID};oid={oid};iss=https://sts.windows.net/{TENANT}/' does not have secrets get permission on key vault 'kv1;location=eastus'. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125287"
        ), "innererror": {"code": "AccessDenied"}}})
    );
}

#[tokio::test]
async fn version_lists_page_through_next_link() {
    let env = env_with_page_size(2).await;
    let versions: Vec<String> = (0..5)
        .map(|i| env.kv.add_secret(VAULT, "rotating", &format!("v{i}"), None).unwrap())
        .collect();
    let token = vault_token(&env).await;
    let mut url = format!("{}secrets/rotating/versions?api-version=7.4", env.kv.vault_url(VAULT));
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let body: Value = env
            .client
            .get(&url)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        pages += 1;
        for item in body["value"].as_array().unwrap() {
            seen.push(item["id"].as_str().unwrap().rsplit('/').next().unwrap().to_string());
        }
        match body["nextLink"].as_str() {
            Some(next) => {
                assert!(next.contains("api-version=7.4&$skiptoken="), "{next}");
                url = next.to_string();
            }
            None => {
                assert_eq!(body["nextLink"], Value::Null);
                break;
            }
        }
    }
    assert_eq!((pages, seen), (3, versions));
    // Versions created within one second still get strictly increasing creation times.
    let created: Vec<i64> = {
        let body: Value = env
            .client
            .get(format!(
                "{}secrets/rotating/versions?api-version=7.4&maxresults=2",
                env.kv.vault_url(VAULT)
            ))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body["value"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["attributes"]["created"].as_i64().unwrap())
            .collect()
    };
    assert_eq!(created.len(), 2);
    assert!(created[0] < created[1], "{created:?}");
    assert_eq!(env.kv.request_count(VAULT, "/secrets/rotating/versions"), 4);
    let out_of_range = kv_error(
        "BadParameter",
        "The value '26' of parameter maxresults is out of range: it must be between 1 and 25.",
    );
    assert_kv_answer(
        &env,
        VAULT,
        "secrets/rotating/versions?api-version=7.4&maxresults=26",
        Some(&token),
        (400, out_of_range),
    )
    .await;
}

#[tokio::test]
async fn throttling_errors_and_dropped_connections_are_injected() {
    let env = env_with_s1().await;
    let token = vault_token(&env).await;
    env.kv.throttle(VAULT, "/secrets/s1", 2, 3);
    for _ in 0..2 {
        let (status, headers, body) = kv_get(&env, VAULT, "secrets/s1?api-version=7.4", Some(&token)).await;
        assert_eq!(status, 429);
        assert_eq!(headers["retry-after"], "3");
        assert_eq!(
            body,
            json!({"error": {"code": "Throttled", "message": "Request was not processed because too many requests were received. Reason: VaultRequestTypeLimitReached"}})
        );
    }
    let (status, _, body) = kv_get(&env, VAULT, "secrets/s1?api-version=7.4", Some(&token)).await;
    assert_eq!((status, body["value"].clone()), (200, json!(SECRET)));
    assert_eq!(env.kv.request_count(VAULT, "/secrets/s1"), 3);

    env.kv.fail_with_500(VAULT, "", 1);
    let internal = kv_error(
        "InternalServerError",
        "An unexpected error occurred while processing the request.",
    );
    assert_kv_answer(&env, VAULT, "secrets/s1?api-version=7.4", Some(&token), (500, internal)).await;

    env.kv.drop_connections(VAULT, "/secrets/s1", 1);
    let url = format!("{}secrets/s1?api-version=7.4", env.kv.vault_url(VAULT));
    let outcome = match env.client.get(&url).bearer_auth(&token).send().await {
        Err(_) => Err(()),
        Ok(response) => response.bytes().await.map(|_| ()).map_err(|_| ()),
    };
    assert_eq!(outcome, Err(()));
    let (status, _, _) = kv_get(&env, VAULT, "secrets/s1?api-version=7.4", Some(&token)).await;
    assert_eq!(status, 200);
    assert_eq!(env.kv.object_requests(VAULT, ObjectKind::Secret, "s1"), 6);
}

#[tokio::test]
async fn certificates_create_linked_certificate_key_and_secret() {
    let env = env().await;
    let spec = CertificateSpec {
        issued_by_ca: true,
        ..CertificateSpec::self_signed("app.wisp.test")
    };
    let seeded = env.kv.add_certificate(VAULT, "tls-cert", &spec).unwrap();
    let token = vault_token(&env).await;
    let base = env.kv.vault_url(VAULT);
    let v = &seeded.version;

    let (status, _, cert) = kv_get(&env, VAULT, "certificates/tls-cert?api-version=7.4", Some(&token)).await;
    assert_eq!(status, 200);
    assert_eq!(cert["id"], format!("{base}certificates/tls-cert/{v}"));
    assert_eq!(cert["kid"], format!("{base}keys/tls-cert/{v}"));
    assert_eq!(cert["sid"], format!("{base}secrets/tls-cert/{v}"));
    assert_eq!(cert["x5t"], seeded.x5t.as_str());
    assert_eq!(
        STANDARD.decode(cert["cer"].as_str().unwrap()).unwrap(),
        seeded.chain_der[0]
    );
    assert_eq!(cert["attributes"]["nbf"], seeded.not_before);
    assert_eq!(cert["attributes"]["exp"], seeded.not_after);
    assert_eq!(
        cert["policy"]["secret_props"],
        json!({"contentType": "application/x-pkcs12"})
    );
    assert_eq!(seeded.chain_der.len(), 2);

    let (status, _, secret) = kv_get(
        &env,
        VAULT,
        &format!("secrets/tls-cert/{v}?api-version=7.4"),
        Some(&token),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(secret["contentType"], "application/x-pkcs12");
    assert_eq!(secret["kid"], format!("{base}keys/tls-cert/{v}"));
    assert_eq!(secret["managed"], true);
    let pfx = STANDARD.decode(secret["value"].as_str().unwrap()).unwrap();
    let store = p12_keystore::KeyStore::from_pkcs12(&pfx, "", p12_keystore::Pkcs12ImportPolicy::Strict).unwrap();
    let (_, chain) = store.private_key_chain().unwrap();
    assert_eq!(chain.key().as_der(), seeded.private_key_pkcs8_der.as_slice());
    let certs: Vec<Vec<u8>> = chain.certs().iter().map(|c| c.as_der().to_vec()).collect();
    assert_eq!(certs, seeded.chain_der);

    let (_, _, pem) = kv_get(
        &env,
        VAULT,
        &format!("secrets/tls-cert/{v}?api-version=7.4&outContentType=application/x-pem-file"),
        Some(&token),
    )
    .await;
    assert_eq!(pem["contentType"], "application/x-pem-file");
    assert_eq!(pem["value"], seeded.pem_bundle.as_str());
    assert!(seeded.pem_bundle.starts_with("-----BEGIN PRIVATE KEY-----\n"));
    assert_eq!(seeded.pem_bundle.matches("-----BEGIN CERTIFICATE-----").count(), 2);

    let (status, _, key) = kv_get(&env, VAULT, "keys/tls-cert?api-version=7.4", Some(&token)).await;
    assert_eq!(status, 200);
    assert_eq!(key["key"]["kid"], format!("{base}keys/tls-cert/{v}"));
    assert_eq!(key["key"]["kty"], "RSA");
    assert_eq!(key["managed"], true);

    // Disabling the certificate disables its secret too.
    env.kv
        .disable_version(VAULT, ObjectKind::Certificate, "tls-cert", v)
        .unwrap();
    let (status, _, _) = kv_get(&env, VAULT, "secrets/tls-cert?api-version=7.4", Some(&token)).await;
    assert_eq!(status, 403);
    let (status, _, cert) = kv_get(&env, VAULT, "certificates/tls-cert?api-version=7.4", Some(&token)).await;
    assert_eq!((status, cert["attributes"]["enabled"].clone()), (200, json!(false)));

    let pem_spec = CertificateSpec {
        content_type: CertContentType::Pem,
        key_type: KeyType::Ec(EcCurve::P256),
        ..CertificateSpec::self_signed("pem.wisp.test")
    };
    let pem_cert = env.kv.add_certificate(VAULT, "pem-cert", &pem_spec).unwrap();
    let (_, _, secret) = kv_get(&env, VAULT, "secrets/pem-cert?api-version=7.4", Some(&token)).await;
    assert_eq!(secret["contentType"], "application/x-pem-file");
    assert_eq!(secret["value"], pem_cert.pem_bundle.as_str());
    let (_, _, list) = kv_get(
        &env,
        VAULT,
        "certificates/pem-cert/versions?api-version=7.4",
        Some(&token),
    )
    .await;
    assert_eq!(
        list,
        json!({"value": [{
            "id": format!("{base}certificates/pem-cert/{}", pem_cert.version),
            "x5t": pem_cert.x5t,
            "attributes": list["value"][0]["attributes"],
            "tags": {},
        }], "nextLink": null})
    );
}

#[tokio::test]
async fn keys_are_served_as_jwk() {
    let env = env().await;
    let rsa = env.kv.add_rsa_key(VAULT, "rsa1").unwrap();
    let token = vault_token(&env).await;
    let base = env.kv.vault_url(VAULT);
    let (status, _, body) = kv_get(&env, VAULT, "keys/rsa1?api-version=7.4", Some(&token)).await;
    assert_eq!(status, 200);
    assert_eq!(
        body["key"],
        json!({
            "kid": format!("{base}keys/rsa1/{}", rsa.version),
            "kty": "RSA",
            "key_ops": ["encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey"],
            "n": rsa.jwk_fields["n"],
            "e": "AQAB",
        })
    );
    for (curve, name, len) in [
        (EcCurve::P256, "P-256", 32),
        (EcCurve::P384, "P-384", 48),
        (EcCurve::P521, "P-521", 66),
    ] {
        let ec = env.kv.add_ec_key(VAULT, &format!("ec-{name}"), curve).unwrap();
        let (status, _, body) = kv_get(
            &env,
            VAULT,
            &format!("keys/ec-{name}/{}?api-version=7.4", ec.version),
            Some(&token),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(body["key"]["kty"], "EC");
        assert_eq!(body["key"]["crv"], name);
        assert_eq!(body["key"]["key_ops"], json!(["sign", "verify"]));
        let x = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(body["key"]["x"].as_str().unwrap())
            .unwrap();
        let y = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(body["key"]["y"].as_str().unwrap())
            .unwrap();
        assert_eq!((x.len(), y.len()), (len, len));
        // The SPKI ends with the uncompressed point 04 || x || y.
        let point: Vec<u8> = [vec![4u8], x, y].concat();
        assert!(ec.public_key_spki_der.ends_with(&point));
    }
}

// ---------------------------------------------------------------- the Azure SDK against the fakes

#[derive(Debug)]
struct FixedAssertion(String);

#[async_trait::async_trait]
impl azure_identity::ClientAssertion for FixedAssertion {
    async fn secret(&self, _: Option<azure_core::http::ClientMethodOptions<'_>>) -> azure_core::Result<String> {
        Ok(self.0.clone())
    }
}

fn sdk_client_options(env: &Env) -> azure_core::http::ClientOptions {
    let mut cloud = azure_core::cloud::CustomConfiguration::default();
    cloud.authority_host = env.entra.authority_host();
    azure_core::http::ClientOptions {
        transport: Some(azure_core::http::Transport::new(Arc::new(env.transport_client.clone()))),
        cloud: Some(Arc::new(cloud.into())),
        retry: azure_core::http::RetryOptions::none(),
        ..Default::default()
    }
}

#[tokio::test]
async fn azure_sdk_credentials_and_secret_client_work_against_the_fakes() {
    use azure_core::credentials::TokenCredential;

    let env = env().await;
    env.kv
        .add_secret(VAULT, "ExampleSecret", "MyAKSExampleSecret", None)
        .unwrap();
    let scope = format!("{VAULT_RESOURCE}/.default");

    let assertion = FixedAssertion(sa_token(&env.issuer, "default", "workload-identity-sa"));
    let workload = azure_identity::ClientAssertionCredential::new(
        TENANT.to_string(),
        CLIENT_ID.to_string(),
        assertion,
        Some(azure_identity::ClientAssertionCredentialOptions {
            client_options: sdk_client_options(&env),
        }),
    )
    .unwrap();
    let token = workload.get_token(&[&scope], None).await.unwrap();
    assert_eq!(unverified_claims(token.token.secret()).unwrap()["appid"], CLIENT_ID);

    let secret_credential = azure_identity::ClientSecretCredential::new(
        TENANT,
        SECRET_CLIENT_ID.to_string(),
        azure_core::credentials::Secret::new("the-client-secret"),
        Some(azure_identity::ClientSecretCredentialOptions {
            client_options: sdk_client_options(&env),
        }),
    )
    .unwrap();
    let token = secret_credential.get_token(&[&scope], None).await.unwrap();
    assert_eq!(
        unverified_claims(token.token.secret()).unwrap()["appid"],
        SECRET_CLIENT_ID
    );

    let mi_options = azure_identity::ManagedIdentityCredentialOptions {
        user_assigned_id: Some(azure_identity::UserAssignedId::ClientId(MI_USER.to_string())),
        client_options: sdk_client_options(&env),
    };
    let managed = azure_identity::ManagedIdentityCredential::new(Some(mi_options)).unwrap();
    let token = managed.get_token(&[&scope], None).await.unwrap();
    assert_eq!(unverified_claims(token.token.secret()).unwrap()["appid"], MI_USER);
    assert_eq!(env.entra.imds_requests(), 1);

    let wrong = FixedAssertion(sa_token(&env.issuer, "default", "not-federated"));
    let rejected = azure_identity::ClientAssertionCredential::new(
        TENANT.to_string(),
        CLIENT_ID.to_string(),
        wrong,
        Some(azure_identity::ClientAssertionCredentialOptions {
            client_options: sdk_client_options(&env),
        }),
    )
    .unwrap();
    let err = rejected.get_token(&[&scope], None).await.unwrap_err().to_string();
    assert!(err.contains("AADSTS700213"), "{err}");

    let kv_options = azure_security_keyvault_secrets::SecretClientOptions {
        client_options: sdk_client_options(&env),
        ..Default::default()
    };
    let secrets = azure_security_keyvault_secrets::SecretClient::new(
        &env.kv.vault_url(VAULT),
        workload.clone(),
        Some(kv_options),
    )
    .unwrap();
    let secret = secrets
        .get_secret("ExampleSecret", None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert_eq!(secret.value.as_deref(), Some("MyAKSExampleSecret"));
    // One unauthenticated request answered by the challenge, then the authorized retry.
    assert_eq!(env.kv.request_count(VAULT, "/secrets/ExampleSecret/"), 2);

    // The SDK's pager follows the fake's nextLink (page size 25, so 30 versions take two pages).
    let versions: Vec<String> = (0..29)
        .map(|i| {
            env.kv
                .add_secret(VAULT, "ExampleSecret", &format!("v{i}"), None)
                .unwrap()
        })
        .collect();
    let listed: Vec<azure_security_keyvault_secrets::models::SecretProperties> =
        futures::TryStreamExt::try_collect(secrets.list_secret_properties_versions("ExampleSecret", None).unwrap())
            .await
            .unwrap();
    let listed: Vec<String> = listed
        .iter()
        .map(|p| p.id.as_deref().unwrap().rsplit('/').next().unwrap().to_string())
        .collect();
    assert_eq!(listed.len(), 30);
    assert_eq!(listed[1..].to_vec(), versions);
    assert_eq!(env.kv.request_count(VAULT, "/secrets/ExampleSecret/versions"), 2);
}

#[tokio::test]
async fn cloud_environment_file_points_wisp_at_the_fakes() {
    let env = env().await;
    let json = env.kv.cloud_environment_json().to_string();
    let cloud = wisp_shared::cloud::CloudEnvironment::from_json("env.json", json.as_bytes()).unwrap();
    assert_eq!(cloud.active_directory_endpoint, env.entra.authority_host());
    assert_eq!(cloud.vault_url(VAULT), env.kv.vault_url(VAULT));
    assert_eq!(cloud.key_vault_scope(), format!("{VAULT_RESOURCE}/.default"));
}

#[tokio::test]
async fn minted_tokens_are_accepted_and_deleted_objects_are_gone() {
    let env = env().await;
    let spec = CertificateSpec::self_signed("gone.wisp.test");
    env.kv.add_certificate(VAULT, "gone", &spec).unwrap();
    let token = env
        .entra
        .mint_access_token(TENANT, MI_USER, "https://vault.wisp.test/")
        .unwrap();
    assert_eq!(unverified_claims(&token).unwrap()["aud"], VAULT_RESOURCE);
    let (status, _, _) = kv_get(&env, VAULT, "secrets/gone?api-version=7.4", Some(&token)).await;
    assert_eq!(status, 200);
    assert!(env.kv.delete_object(VAULT, ObjectKind::Certificate, "GONE").unwrap());
    assert!(!env.kv.delete_object(VAULT, ObjectKind::Certificate, "gone").unwrap());
    for (path, code) in [
        ("secrets", "SecretNotFound"),
        ("keys", "KeyNotFound"),
        ("certificates", "CertificateNotFound"),
    ] {
        let (status, _, body) = kv_get(&env, VAULT, &format!("{path}/gone?api-version=7.4"), Some(&token)).await;
        assert_eq!((status, body["error"]["code"].clone()), (404, json!(code)), "{path}");
    }
    assert_eq!(env.entra.token_requests(TENANT), 0);
}

#[tokio::test]
async fn azure_sdk_key_and_certificate_clients_parse_the_fakes_answers() {
    let env = env().await;
    let credential = azure_identity::ClientSecretCredential::new(
        TENANT,
        SECRET_CLIENT_ID.to_string(),
        azure_core::credentials::Secret::new("the-client-secret"),
        Some(azure_identity::ClientSecretCredentialOptions {
            client_options: sdk_client_options(&env),
        }),
    )
    .unwrap();
    let rsa = env.kv.add_rsa_key(VAULT, "key1").unwrap();
    let ec = env.kv.add_ec_key(VAULT, "ec1", EcCurve::P384).unwrap();
    let spec = CertificateSpec {
        issued_by_ca: true,
        ..CertificateSpec::self_signed("cert1.wisp.test")
    };
    let cert = env.kv.add_certificate(VAULT, "cert1", &spec).unwrap();

    let keys = azure_security_keyvault_keys::KeyClient::new(
        &env.kv.vault_url(VAULT),
        credential.clone(),
        Some(azure_security_keyvault_keys::KeyClientOptions {
            client_options: sdk_client_options(&env),
            ..Default::default()
        }),
    )
    .unwrap();
    let key = keys.get_key("key1", None).await.unwrap().into_model().unwrap();
    let jwk = key.key.unwrap();
    let n = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(rsa.jwk_fields["n"].as_str().unwrap())
        .unwrap();
    assert_eq!(jwk.n.as_deref(), Some(n.as_slice()));
    assert_eq!(jwk.e.as_deref(), Some(&[1u8, 0, 1][..]));
    assert_eq!(
        jwk.kid.as_deref(),
        Some(format!("{}keys/key1/{}", env.kv.vault_url(VAULT), rsa.version).as_str())
    );
    let options = azure_security_keyvault_keys::models::KeyClientGetKeyOptions {
        key_version: Some(ec.version.clone()),
        ..Default::default()
    };
    let ec_key = keys
        .get_key("ec1", Some(options))
        .await
        .unwrap()
        .into_model()
        .unwrap()
        .key
        .unwrap();
    assert_eq!(ec_key.x.as_ref().map(Vec::len), Some(48));

    let certificates = azure_security_keyvault_certificates::CertificateClient::new(
        &env.kv.vault_url(VAULT),
        credential,
        Some(azure_security_keyvault_certificates::CertificateClientOptions {
            client_options: sdk_client_options(&env),
            ..Default::default()
        }),
    )
    .unwrap();
    let fetched = certificates
        .get_certificate("cert1", None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert_eq!(fetched.cer.as_deref(), Some(cert.chain_der[0].as_slice()));
    assert_eq!(
        fetched.kid.as_deref(),
        Some(format!("{}keys/cert1/{}", env.kv.vault_url(VAULT), cert.version).as_str())
    );
    assert!(fetched.policy.is_some());
}

/// Set for the child process of [`imds_is_reached_through_http_proxy_with_default_sdk_options`].
const IMDS_CHILD_ENV: &str = "WISP_FAKES_IMDS_CHILD";

#[tokio::test]
async fn imds_is_reached_through_http_proxy_with_default_sdk_options() {
    // A separate process like the agent: default ManagedIdentityCredential options (the SDK's own reqwest
    // client), only HTTP_PROXY pointing at the fake IMDS. Environment variables cannot be set in this process
    // safely, so the credential runs in a child copy of this test binary.
    let env = env().await;
    let exe = std::env::current_exe().unwrap();
    let mut command = tokio::process::Command::new(exe);
    command
        .args([
            "--ignored",
            "--exact",
            "imds_child_gets_a_token_with_default_options",
            "--test-threads=1",
        ])
        .env(IMDS_CHILD_ENV, "1")
        .env("HTTP_PROXY", env.entra.imds_proxy_url())
        .env("http_proxy", env.entra.imds_proxy_url());
    for var in [
        "NO_PROXY",
        "no_proxy",
        "ALL_PROXY",
        "all_proxy",
        "IDENTITY_ENDPOINT",
        "MSI_ENDPOINT",
    ] {
        command.env_remove(var);
    }
    let output = command.output().await.unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("1 passed"), "{stdout}");
    assert_eq!(env.entra.imds_requests(), 1);
}

#[tokio::test]
#[ignore = "child process of imds_is_reached_through_http_proxy_with_default_sdk_options"]
async fn imds_child_gets_a_token_with_default_options() {
    use azure_core::credentials::TokenCredential;

    // Under `--include-ignored` this runs without its parent's fake IMDS; the parent's assertions (one passed
    // test, one IMDS request) are what make this test meaningful.
    if std::env::var(IMDS_CHILD_ENV).as_deref() != Ok("1") {
        return;
    }
    let credential =
        azure_identity::ManagedIdentityCredential::new(Some(azure_identity::ManagedIdentityCredentialOptions {
            user_assigned_id: Some(azure_identity::UserAssignedId::ClientId(MI_USER.to_string())),
            ..Default::default()
        }))
        .unwrap();
    let token = credential
        .get_token(&[&format!("{VAULT_RESOURCE}/.default")], None)
        .await
        .unwrap();
    assert_eq!(unverified_claims(token.token.secret()).unwrap()["appid"], MI_USER);
}
