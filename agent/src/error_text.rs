//! Errors as one line of text, for messages that reach users (a pod's events, a log line) where `Display`
//! alone would drop the cause.

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
