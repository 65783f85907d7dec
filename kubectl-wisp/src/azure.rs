//! The Azure side as text: the federated-credential subject Entra compares, and the Azure CLI commands that
//! create what a workload needs there (federated credential, Key Vault role assignments). Pure; both `connect`
//! (the commands that remain) and `doctor` (the fix for an Entra or Key Vault error) print them.

use wisp_shared::contract::workload_identity::DEFAULT_AUDIENCE;

/// The `sub` claim of a ServiceAccount's tokens: what a federated credential's subject must be, exactly.
pub fn federated_subject(namespace: &str, service_account: &str) -> String {
    format!("system:serviceaccount:{namespace}:{service_account}")
}

/// Where the cluster's issuer comes from in a printed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Issuer {
    /// Read from the API server's `/.well-known/openid-configuration`.
    Known(String),
    /// The cluster did not serve it: the command reads it from AKS instead.
    Unknown,
}

impl Issuer {
    fn argument(&self) -> String {
        match self {
            Issuer::Known(url) => shell_word(url),
            Issuer::Unknown => {
                "\"$(az aks show -g <resource-group> -n <cluster> --query oidcIssuerProfile.issuerUrl -o tsv)\""
                    .to_string()
            }
        }
    }
}

/// A Key Vault object kind, as `objectType` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ObjectKind {
    Secret,
    Key,
    Cert,
}

impl ObjectKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Secret => "secret",
            ObjectKind::Key => "key",
            ObjectKind::Cert => "cert",
        }
    }

    /// The `objectType` text of a SecretProviderClass, any case, as the agent reads it.
    pub fn from_object_type(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "secret" => Some(ObjectKind::Secret),
            "key" => Some(ObjectKind::Key),
            "cert" => Some(ObjectKind::Cert),
            _ => None,
        }
    }

    /// The Azure RBAC role that reads this kind (the README's troubleshooting): a certificate mounted as `secret`
    /// is read through its secret.
    pub fn reader_role(self) -> &'static str {
        match self {
            ObjectKind::Secret => "Key Vault Secrets User",
            ObjectKind::Key => "Key Vault Crypto User",
            ObjectKind::Cert => "Key Vault Certificate User",
        }
    }
}

/// `$(...)` reading one field of the user-assigned identity with `client_id`.
fn identity_field(client_id: &str, field: &str) -> String {
    // Double quotes, as the Azure documentation writes JMESPath queries; what the shell would expand is escaped.
    let client_id: String = client_id
        .chars()
        .flat_map(|c| match c {
            '\\' | '$' | '"' | '`' => vec!['\\', c],
            c => vec![c],
        })
        .collect();
    format!("\"$(az identity list --query \"[?clientId=='{client_id}'].{field} | [0]\" -o tsv)\"")
}

/// Lines that set `IDENTITY_NAME` and `IDENTITY_GROUP` to the user-assigned identity with `client_id`, for the
/// commands that name an identity rather than its client ID.
pub fn identity_lookup(client_id: &str) -> Vec<String> {
    vec![
        format!("IDENTITY_NAME={}", identity_field(client_id, "name")),
        format!("IDENTITY_GROUP={}", identity_field(client_id, "resourceGroup")),
    ]
}

/// The parts of `az identity federated-credential create`, the identity named by `identity_name` and
/// `identity_group` (shell words).
fn federated_credential_parts(
    issuer: &Issuer,
    namespace: &str,
    service_account: &str,
    identity_name: &str,
    identity_group: &str,
) -> [String; 4] {
    [
        format!(
            "az identity federated-credential create --name {}",
            federated_credential_name(namespace, service_account)
        ),
        format!("--identity-name {identity_name} --resource-group {identity_group}"),
        format!("--issuer {}", issuer.argument()),
        format!(
            "--subject {} --audience {DEFAULT_AUDIENCE}",
            shell_word(&federated_subject(namespace, service_account))
        ),
    ]
}

/// `az identity federated-credential create` for the ServiceAccount, over several lines, after
/// [`identity_lookup`]'s lines.
pub fn federated_credential_command(issuer: &Issuer, namespace: &str, service_account: &str) -> Vec<String> {
    let parts = federated_credential_parts(
        issuer,
        namespace,
        service_account,
        "\"$IDENTITY_NAME\"",
        "\"$IDENTITY_GROUP\"",
    );
    let last = parts.len() - 1;
    parts
        .into_iter()
        .enumerate()
        .map(|(i, part)| {
            let indent = if i == 0 { "" } else { "  " };
            let continuation = if i == last { "" } else { " \\" };
            format!("{indent}{part}{continuation}")
        })
        .collect()
}

/// The same command on one line, the identity looked up by its client ID (or left as placeholders).
pub fn federated_credential_line(
    issuer: &Issuer,
    namespace: &str,
    service_account: &str,
    client_id: Option<&str>,
) -> String {
    let (name, group) = match client_id {
        Some(client_id) => (
            identity_field(client_id, "name"),
            identity_field(client_id, "resourceGroup"),
        ),
        None => ("<identity>".to_string(), "<resource-group>".to_string()),
    };
    federated_credential_parts(issuer, namespace, service_account, &name, &group).join(" ")
}

/// `az identity federated-credential list` for the identity with `client_id`, to compare with what Entra needs.
pub fn federated_credential_list_command(client_id: &str) -> String {
    format!(
        "az identity federated-credential list --identity-name {} --resource-group {} -o table",
        identity_field(client_id, "name"),
        identity_field(client_id, "resourceGroup")
    )
}

/// A federated credential's name: letters, digits, `-` and `_`, 3 to 120 characters, unique per identity.
fn federated_credential_name(namespace: &str, service_account: &str) -> String {
    let name: String = format!("wisp-{namespace}-{service_account}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(120)
        .collect();
    name
}

/// The line that sets `VAULT_ID`, the scope of the role assignments.
pub fn vault_id_lookup(vault: &str) -> String {
    format!(
        "VAULT_ID=\"$(az keyvault show --name {} --query id -o tsv)\"",
        shell_word(vault)
    )
}

/// `az role assignment create` granting `role` on the vault (`$VAULT_ID`) to the identity with `client_id`.
pub fn role_assignment_command(role: &str, client_id: &str) -> String {
    role_assignment(role, client_id, "\"$VAULT_ID\"")
}

/// The same on its own line: the vault's ID read inline.
pub fn role_assignment_line(role: &str, client_id: &str, vault: &str) -> String {
    let scope = format!("\"$(az keyvault show --name {} --query id -o tsv)\"", shell_word(vault));
    role_assignment(role, client_id, &scope)
}

fn role_assignment(role: &str, client_id: &str, scope: &str) -> String {
    format!(
        "az role assignment create --role \"{role}\" --assignee {} --scope {scope}",
        shell_word(client_id)
    )
}

/// `text` as one shell word: as is when it holds only characters no shell treats specially, else single-quoted.
/// Everything read from the cluster goes through it before it is printed into a command a user may paste.
pub fn shell_word(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:@%+=,".contains(&b));
    if plain {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use pretty_assertions::assert_eq;

    use super::*;

    #[test]
    fn federated_credential_command_is_filled_in() {
        let issuer = Issuer::Known("https://oidc.example/tenant/cluster/".into());
        assert_eq!(
            federated_credential_command(&issuer, "team-a", "api.v1").join("\n"),
            "az identity federated-credential create --name wisp-team-a-api-v1 \\\n  \
             --identity-name \"$IDENTITY_NAME\" --resource-group \"$IDENTITY_GROUP\" \\\n  \
             --issuer https://oidc.example/tenant/cluster/ \\\n  \
             --subject system:serviceaccount:team-a:api.v1 --audience api://AzureADTokenExchange"
        );
    }

    #[test]
    fn unusual_issuers_are_quoted_and_unknown_ones_read_from_aks() {
        assert_eq!(Issuer::Known("https://x/a b".into()).argument(), "'https://x/a b'");
        assert_eq!(
            Issuer::Known("https://x/it's".into()).argument(),
            "'https://x/it'\\''s'"
        );
        assert!(Issuer::Unknown.argument().contains("oidcIssuerProfile.issuerUrl"));
    }

    #[test]
    fn each_kind_has_its_reader_role() {
        let roles: Vec<&str> = [ObjectKind::Secret, ObjectKind::Key, ObjectKind::Cert]
            .into_iter()
            .map(ObjectKind::reader_role)
            .collect();
        assert_eq!(
            roles,
            [
                "Key Vault Secrets User",
                "Key Vault Crypto User",
                "Key Vault Certificate User"
            ]
        );
        assert_eq!(ObjectKind::from_object_type(" CERT "), Some(ObjectKind::Cert));
        assert_eq!(ObjectKind::from_object_type("certificate"), None);
    }
}
