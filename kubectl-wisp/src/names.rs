//! The naming rules of what `connect` writes and `doctor` prints: Kubernetes object names, client IDs, Key Vault
//! object names. Pure.

/// An RFC 1123 label (namespaces): at most 63 lower-case letters, digits and `-`, starting and ending with a
/// letter or digit.
pub fn is_dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// An RFC 1123 subdomain (ServiceAccounts, SecretProviderClasses): dot-separated labels, at most 253 characters.
pub fn is_dns_subdomain(name: &str) -> bool {
    name.len() <= 253 && name.split('.').all(is_dns_label)
}

/// A GUID as Entra writes client and tenant IDs: `8-4-4-4-12` hexadecimal digits.
pub fn is_guid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(group, len)| group.len() == len && group.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A tenant: its GUID or one of its domain names (`contoso.onmicrosoft.com`).
pub fn is_tenant(text: &str) -> bool {
    is_guid(text) || (text.contains('.') && is_dns_subdomain(&text.to_ascii_lowercase()))
}

/// Key Vault's rule for secret, key and certificate names: 1 to 127 letters, digits and `-`.
pub fn is_key_vault_object_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 127 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_names() {
        assert!(is_dns_label("team-a1"));
        assert!(!is_dns_label("Team"));
        assert!(!is_dns_label("a.b"));
        assert!(!is_dns_label(&"a".repeat(64)));
        assert!(is_dns_subdomain("api.v1"));
        assert!(!is_dns_subdomain("api..v1"));
        assert!(!is_dns_subdomain("-api"));
    }

    #[test]
    fn ids_and_vault_object_names() {
        assert!(is_guid("a1b2c3d4-0000-4000-8000-00000000000A"));
        assert!(!is_guid("a1b2c3d4-0000-4000-8000-00000000000"));
        assert!(!is_guid("a1b2c3d4-0000-4000-8000-00000000000g"));
        assert!(is_tenant("contoso.onmicrosoft.com"));
        assert!(!is_tenant("contoso"));
        assert!(is_key_vault_object_name("db-password2"));
        assert!(!is_key_vault_object_name("db_password"));
        assert!(!is_key_vault_object_name(""));
    }
}
