//! PEM blocks and base64 exactly as Go's `encoding/pem` and `encoding/base64` read and write them, shared by
//! rendering (provider-azure's files) and secret sync (the driver's `tls.crt`/`tls.key`). Pure.

use base64::Engine;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use zeroize::Zeroizing;

/// Go's `encoding/base64.StdEncoding`: padded, and lenient about non-zero trailing bits.
pub(crate) const GO_STD_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::RequireCanonical),
);
/// Go's `StdEncoding.DecodeString`, which skips `\r` and `\n`.
pub(crate) fn decode_go_base64(text: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let compact: Zeroizing<Vec<u8>> =
        Zeroizing::new(text.iter().copied().filter(|b| *b != b'\r' && *b != b'\n').collect());
    GO_STD_BASE64.decode(compact.as_slice()).ok().map(Zeroizing::new)
}

/// Go's `pem.EncodeToMemory` of a block without headers.
pub(crate) fn pem_encode(label: &str, der: &[u8]) -> Zeroizing<Vec<u8>> {
    let body = Zeroizing::new(GO_STD_BASE64.encode(der));
    let mut out = Zeroizing::new(Vec::with_capacity(body.len() + body.len() / 64 + 2 * label.len() + 32));
    out.extend_from_slice(format!("-----BEGIN {label}-----\n").as_bytes());
    for line in body.as_bytes().chunks(64) {
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out.extend_from_slice(format!("-----END {label}-----\n").as_bytes());
    out
}

/// The PEM blocks of `text` in order, as Go's `pem.Decode` finds them: a `-----BEGIN X-----` line, optional
/// `Key: value` header lines, base64 lines, `-----END X-----`. Blocks that do not decode are skipped; headers
/// are dropped.
pub(crate) fn pem_blocks(text: &[u8]) -> Vec<(String, Zeroizing<Vec<u8>>)> {
    let mut blocks = Vec::new();
    let mut lines = text.split(|b| *b == b'\n').map(|line| line.trim_ascii_end());
    while let Some(line) = lines.next() {
        let Some(label) = line
            .strip_prefix(b"-----BEGIN ")
            .and_then(|rest| rest.strip_suffix(b"-----"))
            .and_then(|label| std::str::from_utf8(label).ok())
        else {
            continue;
        };
        let end = format!("-----END {label}-----");
        let mut body = Zeroizing::new(Vec::new());
        let mut complete = false;
        for line in lines.by_ref() {
            if line == end.as_bytes() {
                complete = true;
                break;
            }
            if !line.contains(&b':') {
                body.extend(line.iter().copied().filter(|b| !b.is_ascii_whitespace()));
            }
        }
        if complete && let Ok(der) = GO_STD_BASE64.decode(body.as_slice()) {
            blocks.push((label.to_string(), Zeroizing::new(der)));
        }
    }
    blocks
}
