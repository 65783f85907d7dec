//! What the unit tests of several modules start from.

use std::time::Duration;

use crate::CertificateAuthority;

pub(crate) const DAY: Duration = Duration::from_secs(24 * 3600);

/// A CA valid for 30 days from now.
pub(crate) fn ca() -> CertificateAuthority {
    CertificateAuthority::generate("wisp test CA", 30 * DAY).unwrap()
}
