//! Check results and how they are shown: one line per check (`ok: ...`, `FAIL: <what is wrong> — <the fix>`,
//! `skip: ...` for a check an earlier failure leaves nothing to look at), grouped under each pod, or the same as
//! JSON. Pure.

use serde::Serialize;

/// What one check found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum Outcome {
    Ok { detail: String },
    Fail { problem: String, fix: String },
    Skip { reason: String },
}

/// One check, named by a stable id (for `-o json` readers) and, for per-volume checks, the volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub check: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volume: Option<String>,
    #[serde(flatten)]
    pub outcome: Outcome,
}

impl Check {
    pub fn ok(check: &'static str, detail: impl Into<String>) -> Self {
        Self {
            check,
            volume: None,
            outcome: Outcome::Ok { detail: detail.into() },
        }
    }

    pub fn fail(check: &'static str, problem: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            check,
            volume: None,
            outcome: Outcome::Fail {
                problem: problem.into(),
                fix: fix.into(),
            },
        }
    }

    pub fn skip(check: &'static str, reason: impl Into<String>) -> Self {
        Self {
            check,
            volume: None,
            outcome: Outcome::Skip { reason: reason.into() },
        }
    }

    /// A check that could not read what it needs from the API server.
    pub fn unreadable(check: &'static str, error: &str) -> Self {
        Self::fail(
            check,
            format!("cannot check: {error}"),
            "run doctor as a user who may read it (kubectl auth can-i get <resource>)",
        )
    }

    pub fn for_volume(mut self, volume: &str) -> Self {
        self.volume = Some(volume.to_string());
        self
    }

    pub fn is_ok(&self) -> bool {
        matches!(self.outcome, Outcome::Ok { .. })
    }

    pub fn failed(&self) -> bool {
        matches!(self.outcome, Outcome::Fail { .. })
    }

    /// The check's line, without indentation.
    pub fn line(&self) -> String {
        match &self.outcome {
            Outcome::Ok { detail } => format!("ok: {detail}"),
            Outcome::Fail { problem, fix } => format!("FAIL: {problem} — {fix}"),
            Outcome::Skip { reason } => format!("skip: {reason}"),
        }
    }
}

/// The checks of one pod (or, for a deployment without pods, of the deployment).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Section {
    /// `pod` or `deployment`.
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    pub checks: Vec<Check>,
}

/// Everything doctor found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// No check failed.
    pub ok: bool,
    pub sections: Vec<Section>,
}

impl Report {
    pub fn new(sections: Vec<Section>) -> Self {
        let ok = sections.iter().flat_map(|s| &s.checks).all(|check| !check.failed());
        Self { ok, sections }
    }

    /// One heading per section, then one indented line per check.
    pub fn text(&self) -> String {
        let mut text = String::new();
        for section in &self.sections {
            text.push_str(&format!("{} {}/{}", section.kind, section.namespace, section.name));
            if let Some(node) = &section.node {
                text.push_str(&format!(" (node {node})"));
            }
            text.push('\n');
            for check in &section.checks {
                text.push_str("  ");
                text.push_str(&check.line());
                text.push('\n');
            }
        }
        text
    }

    pub fn json(&self) -> String {
        // Plain strings and lists only: serializing cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default() + "\n"
    }
}

#[cfg(test)]
mod tests {
    use pretty_assertions::assert_eq;
    use serde_json::json;

    use super::*;

    fn report() -> Report {
        Report::new(vec![Section {
            kind: "pod",
            namespace: "default".into(),
            name: "web".into(),
            node: Some("node-1".into()),
            checks: vec![
                Check::ok("label", "label azure.workload.identity/use: \"true\""),
                Check::fail("class", "SecretProviderClass default/kv does not exist", "create it").for_volume("kv"),
                Check::skip("pod-status", "see the class above").for_volume("kv"),
            ],
        }])
    }

    #[test]
    fn text_has_one_line_per_check_under_its_pod() {
        assert_eq!(
            report().text(),
            "pod default/web (node node-1)\n  ok: label azure.workload.identity/use: \"true\"\n  FAIL: \
             SecretProviderClass default/kv does not exist — create it\n  skip: see the class above\n"
        );
    }

    #[test]
    fn json_is_the_same_as_data() {
        let report = report();
        assert!(!report.ok);
        let value: serde_json::Value = serde_json::from_str(&report.json()).unwrap();
        assert_eq!(
            value,
            json!({"ok": false, "sections": [{"kind": "pod", "namespace": "default", "name": "web", "node": "node-1",
            "checks": [
                {"check": "label", "status": "ok", "detail": "label azure.workload.identity/use: \"true\""},
                {"check": "class", "volume": "kv", "status": "fail",
                 "problem": "SecretProviderClass default/kv does not exist", "fix": "create it"},
                {"check": "pod-status", "volume": "kv", "status": "skip", "reason": "see the class above"},
            ]}]})
        );
    }
}
