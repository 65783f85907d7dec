//! The AdmissionReview wire types: the request half as kube-apiserver sends it (read borrowing from the body)
//! and the response half as it expects it back.

use std::borrow::Cow;

use base64::Engine;
use kube::core::admission::Operation;
use serde::Deserialize;

use crate::mutate::JsonPatch;
use crate::pod::{self, Pod};

/// The request half of an AdmissionReview, borrowing from the body. The pod is read as a [`Pod`] view: only the
/// fields the mutation reads, none dropped from the patch (it only adds). Fields wisp does not read (userInfo,
/// oldObject, options) are skipped.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReviewIn<'a> {
    #[serde(default, borrow)]
    api_version: Cow<'a, str>,
    #[serde(default, borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    request: Option<RequestIn<'a>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RequestIn<'a> {
    #[serde(borrow)]
    uid: Cow<'a, str>,
    #[serde(borrow)]
    pub(crate) kind: GroupVersionKind<'a>,
    #[serde(default, borrow)]
    pub(crate) namespace: Option<Cow<'a, str>>,
    pub(crate) operation: Operation,
    /// `None` when absent or not an object.
    #[serde(default, borrow, deserialize_with = "pod::lenient")]
    pub(crate) object: Option<Pod<'a>>,
}

/// kube-core's `GroupVersionKind`, borrowed (same name and fields, so the same parse errors).
#[derive(Debug, Deserialize)]
pub(crate) struct GroupVersionKind<'a> {
    #[serde(borrow)]
    #[allow(dead_code)]
    group: Cow<'a, str>,
    #[serde(borrow)]
    #[allow(dead_code)]
    version: Cow<'a, str>,
    #[serde(borrow)]
    pub(crate) kind: Cow<'a, str>,
}

pub(crate) fn parse_review(body: &[u8]) -> Result<(Cow<'_, str>, RequestIn<'_>), String> {
    let review: ReviewIn =
        serde_json::from_slice(body).map_err(|e| format!("request body is not an AdmissionReview: {e}"))?;
    if review.kind != "AdmissionReview"
        || !matches!(
            review.api_version.as_ref(),
            "admission.k8s.io/v1" | "admission.k8s.io/v1beta1"
        )
    {
        return Err(format!(
            "request body is not an AdmissionReview: expected kind AdmissionReview and apiVersion admission.k8s.io/v1 or admission.k8s.io/v1beta1, got kind {:?} apiVersion {:?}",
            review.kind, review.api_version
        ));
    }
    let request = review
        .request
        .ok_or_else(|| "request body is not an AdmissionReview: field request is missing".to_string())?;
    Ok((review.api_version, request))
}

/// The response half of an AdmissionReview, written here rather than with kube-core's `AdmissionResponse`: that
/// type encodes the patch as a JSON array of numbers (kube-rs #1781), 3-4 times the size of the base64 that
/// kube-apiserver's own `[]byte` encoding uses, and that size dominated the cost of a response.
#[derive(Debug)]
pub(crate) struct ResponseOut<'a> {
    uid: &'a str,
    allowed: bool,
    /// As controller-runtime answers: `code` 200 when allowed, the denial's code and message otherwise.
    code: u16,
    message: String,
    /// Sent base64-encoded, with `patchType: JSONPatch`.
    patch: Option<JsonPatch>,
}

impl ResponseOut<'_> {
    /// The AdmissionReview as JSON, in the field order and encoding that `serde_json` gives the equivalent
    /// structs. Written by hand so that the base64 of the patch (most of the response) goes straight into the
    /// output, not through a `String` and `serde_json`'s escaping scan.
    pub(crate) fn encode(&self, api_version: &str) -> Vec<u8> {
        let patch_len = self.patch.as_ref().map_or(0, |p| p.as_bytes().len());
        let mut out = Vec::with_capacity(192 + self.uid.len() + self.message.len() + patch_len.div_ceil(3) * 4);
        out.extend_from_slice(br#"{"apiVersion":"#);
        json_string(&mut out, api_version);
        out.extend_from_slice(br#","kind":"AdmissionReview","response":{"uid":"#);
        json_string(&mut out, self.uid);
        out.extend_from_slice(if self.allowed {
            br#","allowed":true,"status":{"code":"#
        } else {
            br#","allowed":false,"status":{"code":"#
        });
        out.extend_from_slice(self.code.to_string().as_bytes());
        if !self.message.is_empty() {
            out.extend_from_slice(br#","message":"#);
            json_string(&mut out, &self.message);
        }
        out.push(b'}');
        if let Some(patch) = &self.patch {
            // The base64 alphabet needs no JSON escaping.
            out.extend_from_slice(br#","patchType":"JSONPatch","patch":""#);
            let start = out.len();
            out.resize(start + patch.as_bytes().len().div_ceil(3) * 4, 0);
            match base64::engine::general_purpose::STANDARD.encode_slice(patch.as_bytes(), &mut out[start..]) {
                Ok(written) => out.truncate(start + written),
                // The slice is sized for the padded encoding, so this does not happen; if it did, the answer must
                // still be whole rather than a panic.
                Err(_) => {
                    out.truncate(start);
                    out.extend_from_slice(
                        base64::engine::general_purpose::STANDARD
                            .encode(patch.as_bytes())
                            .as_bytes(),
                    );
                }
            }
            out.push(b'"');
        }
        out.extend_from_slice(b"}}");
        out
    }
}

/// `value` as a JSON string, escaped as `serde_json` escapes.
fn json_string(out: &mut Vec<u8>, value: &str) {
    // Serializing a str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, value);
}

pub(crate) fn allow<'a>(request: &'a RequestIn<'_>, patch: Option<JsonPatch>) -> ResponseOut<'a> {
    ResponseOut {
        uid: &request.uid,
        allowed: true,
        code: 200,
        message: String::new(),
        patch,
    }
}

pub(crate) fn deny<'a>(request: &'a RequestIn<'_>, code: u16, message: String) -> ResponseOut<'a> {
    ResponseOut {
        uid: &request.uid,
        allowed: false,
        code,
        message,
        patch: None,
    }
}
