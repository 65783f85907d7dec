//! What doctor is asked to look at: `pod/NAME` (or `NAME`) or `deployment/NAME`, in kubectl's spellings. Pure.

use crate::names;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Pod(String),
    Deployment(String),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    #[error("{0:?} is not something doctor checks; write pod/NAME or deployment/NAME")]
    UnknownKind(String),
    #[error("{0:?} is not a pod or deployment name (lower-case letters, digits, '-' and '.')")]
    InvalidName(String),
}

impl Target {
    pub fn parse(text: &str) -> Result<Self, TargetError> {
        let (kind, name) = text.split_once('/').unwrap_or(("pod", text));
        let make: fn(String) -> Target = match kind.to_ascii_lowercase().as_str() {
            "pod" | "pods" | "po" => Target::Pod,
            "deployment" | "deployments" | "deploy" | "deployment.apps" | "deployments.apps" => Target::Deployment,
            _ => return Err(TargetError::UnknownKind(kind.to_string())),
        };
        if !names::is_dns_subdomain(name) {
            return Err(TargetError::InvalidName(name.to_string()));
        }
        Ok(make(name.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectl_spellings() {
        assert_eq!(Target::parse("web-0"), Ok(Target::Pod("web-0".into())));
        assert_eq!(Target::parse("po/web-0"), Ok(Target::Pod("web-0".into())));
        assert_eq!(Target::parse("deploy/web"), Ok(Target::Deployment("web".into())));
        assert_eq!(
            Target::parse("statefulset/web"),
            Err(TargetError::UnknownKind("statefulset".into()))
        );
        assert_eq!(Target::parse("pod/Web"), Err(TargetError::InvalidName("Web".into())));
    }
}
