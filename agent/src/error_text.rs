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
