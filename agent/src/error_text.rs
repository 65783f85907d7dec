//! Errors as one line of text, for messages that reach users (a pod's events, a log line) where `Display`
//! alone would drop the cause, or would show what must not be shown.

/// An error and its sources on one line (reqwest's top-level message alone says little, e.g. "error sending
/// request").
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

/// A JSON parse error by its kind and position only. `serde_json`'s own text quotes the value it did not expect
/// (`invalid type: string "eyJ…", expected struct Entry`): in a document that carries tokens or secrets (the
/// volume context's service-account tokens, the provider protocol's attributes and secrets, a Key Vault secret
/// bundle, an OAuth token response) that value can be the secret itself.
pub(crate) fn json_problem(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let kind = match e.classify() {
        Category::Eof => "unexpected end of JSON input",
        Category::Syntax => "invalid JSON",
        Category::Data => "a value of the wrong JSON type",
        Category::Io => "unreadable JSON",
    };
    match e.column() {
        0 => kind.to_string(),
        column => format!("{kind} at line {} column {column}", e.line()),
    }
}

/// The shortest value [`redact`] looks for.
pub(crate) const MIN_REDACTED_LEN: usize = 8;

/// `text` with every occurrence of each of `secrets` replaced by `[redacted]`: for texts a server wrote (an OAuth
/// `error_description`, Key Vault's error message, a body shown as it came) that can quote what the request sent
/// or what the answer carries, and that reach a pod's events and the agent's log. A value shorter than
/// [`MIN_REDACTED_LEN`] is left: it is no real credential (tokens and assertions are JWTs of hundreds of characters,
/// Entra's client secrets 40) and would be found inside ordinary words, garbling the text.
pub(crate) fn redact(text: &str, secrets: &[&str]) -> String {
    let mut text = text.to_string();
    // Longest first: a secret inside another must not leave the rest of the longer one behind.
    let mut secrets: Vec<&str> = secrets
        .iter()
        .copied()
        .filter(|s| s.len() >= MIN_REDACTED_LEN)
        .collect();
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    for secret in secrets {
        if text.contains(secret) {
            text = text.replace(secret, "[redacted]");
        }
    }
    text
}

/// The string values of `fields` at the top of a JSON object `body` (none when the body is not one): the secret
/// members of an answer (`access_token`, a secret bundle's `value`) that an error text built from that body must
/// not show.
pub(crate) fn json_secret_fields(body: &[u8], fields: &[&str]) -> Vec<String> {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(map)) => fields
            .iter()
            .filter_map(|f| map.get(*f).and_then(|v| v.as_str()).map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_replaces_every_occurrence_of_long_values_only() {
        assert_eq!(
            redact("bad secret p4ss-w0rd-1 (p4ss-w0rd-1) for t", &["p4ss-w0rd-1", "t", ""]),
            "bad secret [redacted] ([redacted]) for t"
        );
        assert_eq!(
            json_secret_fields(
                br#"{"access_token":"abc","value":1,"id_token":"def"}"#,
                &["access_token", "value", "id_token"]
            ),
            ["abc", "def"]
        );
        assert!(json_secret_fields(b"[\"abc\"]", &["access_token"]).is_empty());
    }
}
