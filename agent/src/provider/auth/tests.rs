use super::*;
use std::sync::atomic::{AtomicUsize, Ordering};

fn cloud() -> CloudEnvironment {
    CloudEnvironment::builtin("AzurePublicCloud").unwrap()
}

fn wi(ns: &str, sa: &str, client: &str) -> Identity {
    Identity::WorkloadIdentity {
        tenant_id: "tenant-1".into(),
        client_id: client.into(),
        service_account: ServiceAccountRef {
            namespace: ns.into(),
            name: sa.into(),
        },
        assertion: SecretString::from("jwt"),
    }
}

fn token(value: &str) -> AccessToken {
    AccessToken {
        token: SecretString::from(value.to_string()),
        expires_in: Duration::from_secs(3600),
    }
}

#[test]
fn tokens_json_parsing_matches_upstream_errors() {
    let json = r#"{"api://AzureADTokenExchange":{"token":"abc","expirationTimestamp":"2030-01-01T00:00:00Z"},
                   "api://AKSIdentityBinding":{"token":"def","expirationTimestamp":"2030-01-01T00:00:00Z"}}"#;
    assert_eq!(
        token_for_audience(json, workload_identity_audience())
            .unwrap()
            .expose_secret(),
        "abc"
    );
    assert_eq!(
        token_for_audience("", DEFAULT_AUDIENCE).unwrap_err().to_string(),
        "service account tokens not found"
    );
    assert_eq!(
        token_for_audience(r#"{"aud1":{"token":"x"}}"#, DEFAULT_AUDIENCE)
            .unwrap_err()
            .to_string(),
        "token for audience api://AzureADTokenExchange not found"
    );
    assert_eq!(
        token_for_audience(r#"{"api://AzureADTokenExchange":{"token":""}}"#, DEFAULT_AUDIENCE)
            .unwrap_err()
            .to_string(),
        "token for audience api://AzureADTokenExchange not found"
    );
    assert_eq!(
        token_for_audience("{not json", DEFAULT_AUDIENCE)
            .unwrap_err()
            .to_string(),
        "failed to unmarshal service account tokens, error: invalid JSON at line 1 column 2; kubelet sends \
         csi.storage.k8s.io/serviceAccount.tokens as a JSON object of audience to {\"token\", \"expirationTimestamp\"}"
    );
}

/// Found by the `volume_context` fuzz target (`fuzz/corpus/volume_context/crash-token-in-error`): a token where
/// its `{token, expirationTimestamp}` object belongs was quoted by serde_json's error text, and so shown in the
/// pod's events and the agent's log.
#[test]
fn a_mistyped_token_is_not_shown_in_the_error() {
    let token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW0ifQ.c2lnbmF0dXJl";
    for tokens in [
        format!(r#"{{"api://AzureADTokenExchange":"{token}"}}"#),
        format!(r#"{{"api://AzureADTokenExchange":{{"token":["{token}"]}}}}"#),
        format!(r#""{token}""#),
    ] {
        let text = token_for_audience(&tokens, DEFAULT_AUDIENCE).unwrap_err().to_string();
        assert!(!text.contains(token), "{text}");
        assert!(
            text.contains("a value of the wrong JSON type at line 1 column"),
            "{text}"
        );
    }
}

#[test]
fn service_principal_keys_are_case_insensitive() {
    let secrets = BTreeMap::from([
        ("ClientID".to_string(), "id".to_string()),
        ("CLIENTSECRET".to_string(), "s".to_string()),
    ]);
    let (id, secret) = service_principal_credentials(&secrets).unwrap();
    assert_eq!((id.as_str(), secret.expose_secret()), ("id", "s"));
    assert_eq!(
        service_principal_credentials(&BTreeMap::new()).unwrap_err().to_string(),
        "failed to get credentials, nodePublishSecretRef secret is not set"
    );
    let only_id = BTreeMap::from([("clientid".to_string(), "id".to_string())]);
    assert_eq!(
        service_principal_credentials(&only_id).unwrap_err().to_string(),
        "could not find clientsecret in secrets"
    );
    let only_secret = BTreeMap::from([("clientsecret".to_string(), "s".to_string())]);
    assert_eq!(
        service_principal_credentials(&only_secret).unwrap_err().to_string(),
        "could not find clientid in secrets"
    );
}

#[test]
fn debug_output_redacts_secrets() {
    let id = wi("ns", "sa", "client");
    let text = format!("{id:?}");
    assert_eq!(
        text,
        "WorkloadIdentity { tenant_id: \"tenant-1\", client_id: \"client\", service_account: ServiceAccountRef { \
         namespace: \"ns\", name: \"sa\" }, assertion: \"[redacted]\" }"
    );
    let sp = Identity::ServicePrincipal {
        tenant_id: "t".into(),
        client_id: "c".into(),
        client_secret: SecretString::from("hunter2"),
    };
    let key = IdentityKey::new(&sp, &cloud(), "http://imds");
    assert!(!format!("{sp:?}{key:?}").contains("hunter2"));
}

#[test]
fn identity_keys_separate_service_accounts_and_secrets() {
    let c = cloud();
    let a = IdentityKey::new(&wi("ns", "sa-a", "client-a"), &c, "");
    let a_again = IdentityKey::new(&wi("ns", "sa-a", "client-a"), &c, "");
    let b_same_client = IdentityKey::new(&wi("ns", "sa-b", "client-a"), &c, "");
    let other_ns = IdentityKey::new(&wi("ns2", "sa-a", "client-a"), &c, "");
    assert_eq!(a, a_again);
    assert_ne!(a, b_same_client);
    assert_ne!(a, other_ns);
    let sp = |secret: &str| Identity::ServicePrincipal {
        tenant_id: "t".into(),
        client_id: "c".into(),
        client_secret: SecretString::from(secret.to_string()),
    };
    assert_eq!(IdentityKey::new(&sp("s1"), &c, ""), IdentityKey::new(&sp("s1"), &c, ""));
    assert_ne!(IdentityKey::new(&sp("s1"), &c, ""), IdentityKey::new(&sp("s2"), &c, ""));
}

#[tokio::test]
async fn cache_never_hands_one_identitys_token_to_another() {
    let cache = TokenCache::new();
    let calls = AtomicUsize::new(0);
    let c = cloud();
    let key_a = IdentityKey::new(&wi("ns", "sa-a", "client-a"), &c, "");
    let key_b = IdentityKey::new(&wi("ns", "sa-b", "client-a"), &c, "");
    let fetch = |v: &'static str| {
        calls.fetch_add(1, Ordering::SeqCst);
        async move { Ok(token(v)) }
    };
    assert_eq!(
        cache
            .get_or_fetch(key_a.clone(), || fetch("token-a"))
            .await
            .unwrap()
            .expose_secret(),
        "token-a"
    );
    assert_eq!(
        cache
            .get_or_fetch(key_a.clone(), || fetch("unused"))
            .await
            .unwrap()
            .expose_secret(),
        "token-a"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let refused = cache
        .get_or_fetch(key_b.clone(), || async {
            Err(AuthError::Entra {
                client_id: "client-a".into(),
                tenant: "tenant-1".into(),
                status: 400,
                error: ", invalid_client".into(),
                description: "AADSTS700213: No matching federated identity record found".into(),
            })
        })
        .await
        .unwrap_err();
    assert_eq!(
        refused.to_string(),
        "Microsoft Entra ID refused a token for client ID client-a in tenant tenant-1 (HTTP 400, invalid_client): \
         AADSTS700213: No matching federated identity record found"
    );
    // A failure is not cached: the next request for B asks again.
    assert_eq!(
        cache
            .get_or_fetch(key_b, || fetch("token-b"))
            .await
            .unwrap()
            .expose_secret(),
        "token-b"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn short_lived_tokens_are_refetched() {
    let cache = TokenCache::new();
    let key = IdentityKey::new(&Identity::ManagedIdentity { client_id: None }, &cloud(), "http://imds");
    let expired = AccessToken {
        token: SecretString::from("old"),
        expires_in: Duration::ZERO,
    };
    assert_eq!(
        cache
            .get_or_fetch(key.clone(), || async { Ok(expired) })
            .await
            .unwrap()
            .expose_secret(),
        "old"
    );
    assert_eq!(
        cache
            .get_or_fetch(key, || async { Ok(token("new")) })
            .await
            .unwrap()
            .expose_secret(),
        "new"
    );
}

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_796_169_600)
}

fn parse(body: &str) -> Result<AccessToken, AuthError> {
    parse_token("https://login/t/oauth2/v2.0/token", 200, body.as_bytes(), now())
}

fn parse_err(body: &str) -> String {
    parse(body).unwrap_err().to_string()
}

#[test]
fn token_responses() {
    let t = parse(r#"{"access_token":"at","expires_in":3599,"token_type":"Bearer"}"#).unwrap();
    assert_eq!(
        (t.token.expose_secret(), t.expires_in),
        ("at", Duration::from_secs(3599))
    );
    let t = parse(r#"{"access_token":"at","expires_in":"86399"}"#).unwrap();
    assert_eq!(t.expires_in, Duration::from_secs(86399));
    assert_eq!(
        parse_err(r#"{"access_token":"at"}"#),
        "https://login/t/oauth2/v2.0/token returned an unreadable token response (HTTP 200): neither expires_in nor expires_on is present"
    );
    assert_eq!(
        oauth_error(br#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided.\r\nTrace ID: 1"}"#, &[]),
        (", invalid_client".to_string(), "AADSTS7000215: Invalid client secret provided. Trace ID: 1".to_string())
    );
    assert_eq!(
        oauth_error(b"<html>bad gateway</html>", &[]),
        (String::new(), "<html>bad gateway</html>".to_string())
    );
}

#[test]
fn unreadable_token_responses_name_the_member() {
    let reason = |body: &str| parse_err(body).split_once("(HTTP 200): ").unwrap().1.to_string();
    assert_eq!(
        reason(r#"{"token_type":"Bearer","expires_in":3599}"#),
        "access_token is missing"
    );
    assert_eq!(
        reason(r#"{"access_token":"","expires_in":3599}"#),
        "access_token is empty"
    );
    assert_eq!(
        reason(r#"{"access_token":12345678,"expires_in":3599}"#),
        "access_token is not a string"
    );
    assert_eq!(
        reason(r#"["eyJ0eXAiOiJKV1QifQ.e30.sig"]"#),
        "not an OAuth token response: the body is JSON but not an object"
    );
    assert_eq!(
        reason("<html>"),
        "not an OAuth token response: invalid JSON at line 1 column 1"
    );
    assert_eq!(
        reason(r#"{"access_token":"at","expires_in":"3599.5"}"#),
        "expires_in is not a whole number of seconds (a number or a string of digits)"
    );
    assert_eq!(
        reason(r#"{"access_token":"at","expires_in":-1}"#),
        "expires_in is not a whole number of seconds (a number or a string of digits)"
    );
    assert_eq!(
        reason(r#"{"access_token":"at","expires_in":0}"#),
        "expires_in is 0: the token has already expired"
    );
    assert_eq!(
        reason(r#"{"access_token":"at","expires_on":"06/20/2019 02:57:58 +00:00"}"#),
        "expires_on is not a Unix time in whole seconds (a number or a string of digits)"
    );
    assert_eq!(
        reason(r#"{"access_token":"at","expires_on":"1796169600"}"#),
        "expires_on 1796169600 is not in the future (now is 1796169600): the token has already expired"
    );
}

#[test]
fn expires_on_gives_the_lifetime_when_expires_in_is_missing() {
    // IMDS and Azure Arc send Unix seconds as a string, Entra's v1 endpoint as a number.
    let t = parse(r#"{"access_token":"at","expires_on":"1796173199","resource":"https://vault.azure.net"}"#).unwrap();
    assert_eq!(t.expires_in, Duration::from_secs(3599));
    let t = parse(r#"{"access_token":"at","expires_on":1796169660}"#).unwrap();
    assert_eq!(t.expires_in, Duration::from_secs(60));
    // expires_in wins when both are there.
    let t = parse(r#"{"access_token":"at","expires_in":"120","expires_on":"1796173199"}"#).unwrap();
    assert_eq!(t.expires_in, Duration::from_secs(120));
}

#[tokio::test]
async fn a_huge_lifetime_is_cut_to_a_day_and_does_not_overflow_the_refresh_time() {
    // `expires_in` of u64::MAX seconds: the cache added it to `Instant::now()`, which panics on overflow.
    let t = parse(r#"{"access_token":"at","expires_in":18446744073709551615}"#).unwrap();
    assert_eq!(t.expires_in, Duration::from_secs(86_400));
    let t = parse(r#"{"access_token":"at","expires_on":"18446744073709551615"}"#).unwrap();
    assert_eq!(t.expires_in, Duration::from_secs(86_400));
    assert_eq!(refresh_after(Duration::MAX), Duration::from_secs(86_100));
    assert_eq!(refresh_after(Duration::from_secs(3599)), Duration::from_secs(3299));
    assert_eq!(refresh_after(Duration::from_secs(60)), Duration::from_secs(30));
    let cache = TokenCache::new();
    let key = IdentityKey::new(&Identity::ManagedIdentity { client_id: None }, &cloud(), "http://imds");
    let forever = AccessToken {
        token: SecretString::from("forever"),
        expires_in: Duration::MAX,
    };
    assert_eq!(
        cache
            .get_or_fetch(key, || async { Ok(forever) })
            .await
            .unwrap()
            .expose_secret(),
        "forever"
    );
}

#[test]
fn refusals_never_show_what_the_request_sent_or_a_token_of_the_answer() {
    let assertion = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzIn0.c2ln";
    let entra = TokenEndpoint::Entra {
        url: "https://login/t/oauth2/v2.0/token",
        tenant: "t",
        client_id: "c",
    };
    // A description that quotes the assertion (whole, or split over lines) shows neither it nor part of it.
    let body = format!(
        r#"{{"error":"invalid_client","error_description":"AADSTS700024: Client assertion {assertion} is not within its valid time range."}}"#
    );
    assert_eq!(
        token_answer(&entra, 401, body.as_bytes(), &[assertion], now())
            .unwrap_err()
            .to_string(),
        "Microsoft Entra ID refused a token for client ID c in tenant t (HTTP 401, invalid_client): AADSTS700024: \
         Client assertion [redacted] is not within its valid time range."
    );
    // A body that is not an OAuth error is shown as it came, without the client secret or a token it carries.
    let body = br#"{"error":7,"access_token":"eyJ0eXAiOiJKV1QifQ.e30.sig","echo":"p@ss~word~1234"}"#;
    assert_eq!(
        token_answer(&entra, 500, body, &["p@ss~word~1234"], now())
            .unwrap_err()
            .to_string(),
        r#"Microsoft Entra ID refused a token for client ID c in tenant t (HTTP 500): {"error":7,"access_token":"[redacted]","echo":"[redacted]"}"#
    );
    // Cut to 512 characters after redaction, so no prefix of the secret is left at the end.
    let body = format!("{}{assertion}", "x".repeat(500));
    let imds = TokenEndpoint::Imds {
        url: "http://imds/metadata/identity/oauth2/token",
        client_id: Some("c"),
    };
    let err = token_answer(&imds, 502, body.as_bytes(), &[assertion], now()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "the managed identity endpoint (IMDS) refused a token for client ID c (HTTP 502): {}[redacted]",
            "x".repeat(500)
        )
    );
    assert!(!format!("{err:?}").contains("eyJ"));
}

#[test]
fn a_blank_description_or_a_cut_at_a_space_still_reads_as_one() {
    assert_eq!(
        oauth_error(br#"{"error":" ","error_description":" \r\n "}"#, &[]),
        (String::new(), "no error description".to_string())
    );
    // A body that is no OAuth error, cut at 512 characters just after a space, ends at the word before it.
    let body = format!("{} Trace ID: 0b6e3c3a", "x".repeat(501));
    assert_eq!(
        oauth_error(body.as_bytes(), &[]),
        (String::new(), format!("{} Trace ID:", "x".repeat(501)))
    );
}
