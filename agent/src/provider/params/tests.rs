use pretty_assertions::assert_eq;
use rstest::rstest;

use super::*;

const OBJECTS: &str = "array:\n  - |\n    objectName: secret1\n    objectType: secret\n";

fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut map: BTreeMap<String, String> = [("keyvaultName", "kv-1"), ("tenantID", "tenant"), ("objects", OBJECTS)]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    for (key, value) in pairs {
        map.insert(key.to_string(), value.to_string());
    }
    map
}

fn object(index: usize, name: &str, alias: &str, object_type: ObjectType) -> ObjectSpec {
    ObjectSpec {
        index,
        name: name.into(),
        alias: alias.into(),
        object_type,
        version: None,
        version_history: 0,
        format: ObjectFormat::Pem,
        encoding: ObjectEncoding::Utf8,
        file_permission: None,
    }
}

fn objects_yaml(items: &[&str]) -> String {
    let mut yaml = String::from("array:\n");
    for item in items {
        yaml.push_str("  - |\n");
        for line in item.lines() {
            yaml.push_str(&format!("    {line}\n"));
        }
    }
    yaml
}

fn parse_objects_of(items: &[&str]) -> Result<Vec<ObjectSpec>, ParamError> {
    parse_mount_params(&params(&[("objects", &objects_yaml(items))])).map(|p| p.objects)
}

#[test]
fn minimal_parameters_use_defaults() {
    assert_eq!(
        parse_mount_params(&params(&[])).unwrap(),
        MountParams {
            keyvault_name: "kv-1".into(),
            tenant_id: "tenant".into(),
            cloud: CloudSelection::Default,
            identity: IdentityMode::ServicePrincipal,
            objects: vec![object(0, "secret1", "secret1", ObjectType::Secret)],
        }
    );
}

#[test]
fn every_object_field_is_read_and_trimmed() {
    let yaml = "array:\n  - |\n    objectName: \" cert1 \"\n    objectAlias: dir/tls.pem\n    objectType: SECRET\n    objectVersion: abc123\n    objectVersionHistory: 3\n    objectFormat: PFX\n    objectEncoding: Base64\n    filePermission: 0600\n    unknownKey: ignored\n  - |\n    objectName: key1\n    objectType: Key\n    objectVersion: \"\"\n    objectVersionHistory: \"1\"\n    filePermission: \"640\"\n  - |\n    objectName: c\n    objectType: cert\n    objectFormat: pem\n";
    let parsed = parse_mount_params(&params(&[("objects", yaml), ("clientID", " client ")])).unwrap();
    assert_eq!(
        parsed.identity,
        IdentityMode::WorkloadIdentity {
            client_id: "client".into()
        }
    );
    assert_eq!(
        parsed.objects,
        vec![
            ObjectSpec {
                index: 0,
                name: "cert1".into(),
                alias: "dir/tls.pem".into(),
                object_type: ObjectType::Secret,
                version: Some("abc123".into()),
                version_history: 3,
                format: ObjectFormat::Pfx,
                encoding: ObjectEncoding::Base64,
                file_permission: Some(0o600),
            },
            ObjectSpec {
                version_history: 1,
                file_permission: Some(0o640),
                ..object(1, "key1", "key1", ObjectType::Key)
            },
            object(2, "c", "c", ObjectType::Cert),
        ]
    );
}

#[rstest]
#[case::vm_system(&[("useVMManagedIdentity", "true")], IdentityMode::VmManagedIdentity { user_assigned_identity_id: None })]
#[case::vm_user(
    &[("useVMManagedIdentity", "T"), ("userAssignedIdentityID", "uami"), ("clientID", "ignored")],
    IdentityMode::VmManagedIdentity { user_assigned_identity_id: Some("uami".into()) }
)]
#[case::workload(&[("clientID", "cid"), ("usePodIdentity", "false"), ("useVMManagedIdentity", " 0 ")], IdentityMode::WorkloadIdentity { client_id: "cid".into() })]
#[case::service_principal(&[("useVMManagedIdentity", "False")], IdentityMode::ServicePrincipal)]
fn identity_mode(#[case] pairs: &[(&str, &str)], #[case] expected: IdentityMode) {
    assert_eq!(parse_mount_params(&params(pairs)).unwrap().identity, expected);
}

#[rstest]
#[case::tenant_id_first(&[("tenantID", "new"), ("tenantId", "old")], "new")]
#[case::legacy_tenant_id(&[("tenantID", " "), ("tenantId", "old")], "old")]
fn tenant(#[case] pairs: &[(&str, &str)], #[case] expected: &str) {
    assert_eq!(parse_mount_params(&params(pairs)).unwrap().tenant_id, expected);
}

#[rstest]
#[case::named(&[("cloudName", "azurechinacloud")], CloudSelection::Named("AzureChinaCloud".into()))]
#[case::public(&[("cloudName", "AzurePublicCloud")], CloudSelection::Named("AzurePublicCloud".into()))]
#[case::stack(&[("cloudName", "AzureStackCloud"), ("cloudEnvFileName", "/etc/kubernetes/akscustom.json")], CloudSelection::EnvFile("/etc/kubernetes/akscustom.json".into()))]
#[case::file_only(&[("cloudEnvFileName", "/etc/env.json")], CloudSelection::EnvFile("/etc/env.json".into()))]
#[case::file_ignored_for_builtin(&[("cloudName", "AzureUSGovernmentCloud"), ("cloudEnvFileName", "/x")], CloudSelection::Named("AzureUSGovernmentCloud".into()))]
fn cloud(#[case] pairs: &[(&str, &str)], #[case] expected: CloudSelection) {
    assert_eq!(parse_mount_params(&params(pairs)).unwrap().cloud, expected);
}

#[rstest]
#[case::bool_syntax(
    &[("useVMManagedIdentity", "yes")],
    "failed to parse useVMManagedIdentity flag, error: parsing \"yes\": invalid syntax; use true or false (Go \
     ParseBool: 1, t, T, TRUE, true, True, 0, f, F, FALSE, false, False)"
)]
#[case::pod_identity_bool(
    &[("usePodIdentity", "tRUE")],
    "failed to parse usePodIdentity flag, error: parsing \"tRUE\": invalid syntax; use true or false (Go \
     ParseBool: 1, t, T, TRUE, true, True, 0, f, F, FALSE, false, False)"
)]
#[case::token_proxy_bool(
    &[("useAzureTokenProxy", "2")],
    "failed to parse useAzureTokenProxy flag, error: parsing \"2\": invalid syntax; use true or false (Go \
     ParseBool: 1, t, T, TRUE, true, True, 0, f, F, FALSE, false, False)"
)]
#[case::two_modes(
    &[("useVMManagedIdentity", "true"), ("useAzureTokenProxy", "1")],
    "only one identity mode can be enabled at a time: usePodIdentity, useVMManagedIdentity, or useAzureTokenProxy"
)]
#[case::pod_identity(
    &[("usePodIdentity", "true")],
    "usePodIdentity is not supported: aad-pod-identity is deprecated upstream; remove usePodIdentity and set \
     clientID to use the pod's workload identity"
)]
#[case::token_proxy(
    &[("useAzureTokenProxy", "true"), ("clientID", "c")],
    "useAzureTokenProxy is not supported: AKS identity binding needs the AKS token proxy; remove \
     useAzureTokenProxy and set clientID to use the pod's workload identity"
)]
#[case::no_vault(&[("keyvaultName", " ")], "keyvaultName is not provided; set parameters.keyvaultName to the name of the Key Vault")]
#[case::vault_short(
    &[("keyvaultName", "kv")],
    "Invalid vault name: \"kv\", must be between 3 and 24 chars; set parameters.keyvaultName to the name of the \
     Key Vault, not its URL"
)]
#[case::vault_long(
    &[("keyvaultName", "longkeyvaultnamewhichisnotvalid")],
    "Invalid vault name: \"longkeyvaultnamewhichisnotvalid\", must be between 3 and 24 chars; set \
     parameters.keyvaultName to the name of the Key Vault, not its URL"
)]
#[case::vault_chars(
    &[("keyvaultName", "kv_test")],
    "Invalid vault name: \"kv_test\", must match [-a-zA-Z0-9]{3,24}; set parameters.keyvaultName to the name of \
     the Key Vault, not its URL"
)]
#[case::no_tenant(
    &[("tenantID", ""), ("tenantId", " ")],
    "tenantId is not provided; set parameters.tenantID to the Microsoft Entra tenant ID of the Key Vault"
)]
#[case::bad_cloud(
    &[("cloudName", "MoonCloud")],
    "cloudName MoonCloud is not valid, error: There is no cloud environment matching the name \"MoonCloud\"; use \
     one of AzurePublicCloud, AzureUSGovernmentCloud, AzureChinaCloud, AzureGermanCloud, AzureStackCloud"
)]
#[case::stack_without_file(
    &[("cloudName", "azurestackcloud")],
    "cloudName AzureStackCloud needs a cloud environment file; set parameters.cloudEnvFileName to the path of its \
     JSON file on the node"
)]
#[case::no_objects(
    &[("objects", "  ")],
    "objects is not set; list the Key Vault objects to mount in parameters.objects (an `array:` of YAML strings)"
)]
#[case::empty_array(
    &[("objects", "array: []")],
    "objects array is empty; list at least one Key Vault object under parameters.objects `array:`"
)]
#[case::no_array_key(
    &[("objects", "other: 1")],
    "objects array is empty; list at least one Key Vault object under parameters.objects `array:`"
)]
fn parameter_errors(#[case] pairs: &[(&str, &str)], #[case] expected: &str) {
    assert_eq!(parse_mount_params(&params(pairs)).unwrap_err().to_string(), expected);
}

#[test]
fn yaml_errors_keep_upstream_prefixes() {
    let error = parse_mount_params(&params(&[("objects", "array: [unclosed")])).unwrap_err();
    assert!(matches!(error, ParamError::ObjectsYaml(_)), "{error:?}");
    assert!(
        error
            .to_string()
            .starts_with("failed to yaml unmarshal objects, error: "),
        "{error}"
    );

    let error = parse_objects_of(&["objectName: a\nobjectType: secret", "- a list"]).unwrap_err();
    assert!(matches!(error, ParamError::ObjectYaml { index: 1, .. }), "{error:?}");
    assert!(
        error
            .to_string()
            .starts_with("unmarshal failed for keyVaultObjects at index 1, error: "),
        "{error}"
    );
}

#[rstest]
#[case::no_name(
    "objectType: secret",
    "objects array index 0 (objectName \"\"): objectName is empty; set objectName to the name of the Key Vault secret, key or certificate"
)]
#[case::empty_item(
    "",
    "objects array index 0 (objectName \"\"): objectName is empty; set objectName to the name of the Key Vault secret, key or certificate"
)]
#[case::bad_type(
    "objectName: a\nobjectType: secrets",
    "objects array index 0 (objectName \"a\"): Invalid vaultObjectTypes. Should be secret, key, or cert (objectType is \"secrets\")"
)]
#[case::no_type(
    "objectName: a",
    "objects array index 0 (objectName \"a\"): Invalid vaultObjectTypes. Should be secret, key, or cert (objectType is \"\")"
)]
#[case::bad_format(
    "objectName: a\nobjectType: secret\nobjectFormat: der",
    "objects array index 0 (objectName \"a\"): invalid objectFormat: der, should be PEM or PFX"
)]
#[case::pfx_on_cert(
    "objectName: a\nobjectType: cert\nobjectFormat: PFX",
    "objects array index 0 (objectName \"a\"): PFX format only supported for objectType: secret; remove objectFormat or mount the certificate's secret"
)]
#[case::encoding_on_key(
    "objectName: a\nobjectType: key\nobjectEncoding: utf-8",
    "objects array index 0 (objectName \"a\"): objectEncoding only supported for objectType: secret; remove objectEncoding"
)]
#[case::bad_encoding(
    "objectName: a\nobjectType: secret\nobjectEncoding: base32",
    "objects array index 0 (objectName \"a\"): invalid objectEncoding: base32, should be hex, base64 or utf-8"
)]
#[case::bad_history(
    "objectName: a\nobjectType: secret\nobjectVersionHistory: two",
    "objects array index 0 (objectName \"a\"): invalid objectVersionHistory \"two\"; use a whole number: 0 or 1 for one file, N > 1 for the N newest versions"
)]
#[case::negative_history(
    "objectName: a\nobjectType: secret\nobjectVersionHistory: -1",
    "objects array index 0 (objectName \"a\"): invalid objectVersionHistory \"-1\"; use a whole number: 0 or 1 for one file, N > 1 for the N newest versions"
)]
#[case::permission_not_octal(
    "objectName: a\nobjectType: secret\nfilePermission: \"0900\"",
    "objects array index 0 (objectName \"a\"): invalid filePermission \"0900\"; use an octal mode from 0000 to 0777, quoted, e.g. \"0644\""
)]
#[case::permission_decimal_looking(
    "objectName: a\nobjectType: secret\nfilePermission: 900",
    "objects array index 0 (objectName \"a\"): invalid filePermission \"900\"; use an octal mode from 0000 to 0777, quoted, e.g. \"0644\""
)]
#[case::permission_setuid(
    "objectName: a\nobjectType: secret\nfilePermission: \"4755\"",
    "objects array index 0 (objectName \"a\"): invalid filePermission \"4755\"; use an octal mode from 0000 to 0777, quoted, e.g. \"0644\""
)]
#[case::permission_sign(
    "objectName: a\nobjectType: secret\nfilePermission: \"+644\"",
    "objects array index 0 (objectName \"a\"): invalid filePermission \"+644\"; use an octal mode from 0000 to 0777, quoted, e.g. \"0644\""
)]
#[case::absolute_alias(
    "objectName: a\nobjectType: secret\nobjectAlias: /etc/passwd",
    "objects array index 0 (objectName \"a\"): file name must be a relative path: \"/etc/passwd\""
)]
#[case::dotdot_alias(
    "objectName: a\nobjectType: secret\nobjectAlias: ../x",
    "objects array index 0 (objectName \"a\"): file name must not contain '..': \"../x\""
)]
#[case::dotdot_substring(
    "objectName: a..b\nobjectType: secret",
    "objects array index 0 (objectName \"a..b\"): file name must not contain '..': \"a..b\""
)]
#[case::unclean_alias(
    "objectName: a\nobjectType: secret\nobjectAlias: dir//x",
    "objects array index 0 (objectName \"a\"): file name \"dir//x\" is not usable: invalid filepath: \"dir//x\""
)]
#[case::trailing_slash(
    "objectName: a\nobjectType: secret\nobjectAlias: dir/",
    "objects array index 0 (objectName \"a\"): file name \"dir/\" is not usable: invalid filepath: \"dir/\""
)]
#[case::dot_alias(
    "objectName: a\nobjectType: secret\nobjectAlias: ./x",
    "objects array index 0 (objectName \"a\"): file name \"./x\" is not usable: invalid filepath: \"./x\""
)]
fn object_errors(#[case] item: &str, #[case] expected: &str) {
    assert_eq!(parse_objects_of(&[item]).unwrap_err().to_string(), expected);
}

#[test]
fn long_file_name_element_is_refused() {
    let item = format!("objectName: {}\nobjectType: secret", "n".repeat(256));
    assert_eq!(
        parse_objects_of(&[&item]).unwrap_err(),
        ParamError::Object {
            index: 0,
            name: "n".repeat(256),
            problem: ObjectProblem::FileNameInvalid {
                path: "n".repeat(256),
                reason: "invalid path: filenames must be less than or equal to 255 characters".into(),
            },
        }
    );
}

#[rstest]
#[case::same_alias(&["objectName: a\nobjectType: secret", "objectName: b\nobjectAlias: a\nobjectType: key"], "objects array index 1 (objectName \"b\"): file name \"a\" is also used by objects array index 0; give one of them a different objectAlias")]
#[case::file_then_dir(&["objectName: a\nobjectType: secret", "objectName: b\nobjectAlias: a/b\nobjectType: secret"], "objects array index 1 (objectName \"b\"): file name \"a/b\" is also used by objects array index 0; give one of them a different objectAlias")]
#[case::dir_then_file(&["objectName: x\nobjectAlias: d/x\nobjectType: secret", "objectName: d\nobjectType: cert"], "objects array index 1 (objectName \"d\"): file name \"d\" is also used by objects array index 0; give one of them a different objectAlias")]
fn conflicting_file_names(#[case] items: &[&str], #[case] expected: &str) {
    assert_eq!(parse_objects_of(items).unwrap_err().to_string(), expected);
}

#[test]
fn similar_names_do_not_conflict() {
    let objects = parse_objects_of(&[
        "objectName: a\nobjectType: secret",
        "objectName: ab\nobjectType: secret",
        "objectName: c\nobjectAlias: a-dir/c\nobjectType: secret",
    ])
    .unwrap();
    assert_eq!(objects.len(), 3);
}

#[test]
fn object_type_display() {
    assert_eq!(
        [ObjectType::Secret, ObjectType::Key, ObjectType::Cert].map(|t| t.to_string()),
        ["secret", "key", "cert"]
    );
}

fn bare(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[rstest]
// Neither clientID nor tenant in the class: both from the defaults.
#[case(&[], &[("clientID", "sa-client"), ("tenantID", "sa-tenant")])]
// The class's own values win, under either tenant spelling.
#[case(&[("clientID", "class-client"), ("tenantId", "class-tenant")], &[("clientID", "class-client"), ("tenantId", "class-tenant")])]
#[case(&[("tenantID", "class-tenant")], &[("clientID", "sa-client"), ("tenantID", "class-tenant")])]
#[case(&[("clientID", "class-client")], &[("clientID", "class-client"), ("tenantID", "sa-tenant")])]
// A blank clientID is no clientID.
#[case(&[("clientID", "  ")], &[("clientID", "sa-client"), ("tenantID", "sa-tenant")])]
// Another identity mode: nothing filled, an unreadable flag included (parse_mount_params reports it).
#[case(&[("useVMManagedIdentity", "true")], &[("useVMManagedIdentity", "true")])]
#[case(&[("usePodIdentity", "True")], &[("usePodIdentity", "True")])]
#[case(&[("useAzureTokenProxy", "1")], &[("useAzureTokenProxy", "1")])]
#[case(&[("useVMManagedIdentity", "yes")], &[("useVMManagedIdentity", "yes")])]
// A false flag is no mode.
#[case(&[("useVMManagedIdentity", "false")], &[("clientID", "sa-client"), ("tenantID", "sa-tenant"), ("useVMManagedIdentity", "false")])]
fn workload_identity_defaults_fill_only_what_the_class_leaves_out(
    #[case] class: &[(&str, &str)],
    #[case] expected: &[(&str, &str)],
) {
    let mut parameters = bare(class);
    apply_workload_identity_defaults(
        &mut parameters,
        WorkloadIdentityDefaults {
            client_id: Some("sa-client"),
            tenant_id: Some(" sa-tenant "),
        },
    );
    assert_eq!(parameters, bare(expected));
}

#[test]
fn workload_identity_defaults_without_a_client_id_leave_a_service_principal_class_alone() {
    let mut parameters = bare(&[]);
    apply_workload_identity_defaults(
        &mut parameters,
        WorkloadIdentityDefaults {
            client_id: None,
            tenant_id: Some("sa-tenant"),
        },
    );
    assert_eq!(parameters, bare(&[]));
}
