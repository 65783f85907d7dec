use super::*;
use rstest::rstest;

#[rstest]
#[case("1", "32", true)]
#[case("1", "33+", true)]
#[case("1", "31", false)]
#[case("1", "31+", false)]
#[case("2", "0", true)]
#[case("0", "40", false)]
#[case("", "", false)]
fn native_sidecar_from_version(#[case] major: &str, #[case] minor: &str, #[case] expected: bool) {
    assert_eq!(supports_native_sidecar(major, minor), expected);
}
