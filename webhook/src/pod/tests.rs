use super::*;
use pretty_assertions::assert_eq;
use serde_json::json;

fn from_slice(json: &str) -> Option<Pod<'_>> {
    let mut de = serde_json::Deserializer::from_str(json);
    let pod = Lenient::read(&mut de).unwrap();
    de.end().unwrap();
    pod
}

#[test]
fn reads_the_same_from_bytes_and_from_a_value() {
    let text = r#"{"metadata":{"name":"p\u006fd","labels":{"azure.workload.identity/use":"true","x":1},
            "annotations":{"a":"2","b":{"c":[1,2]}}},
            "spec":{"serviceAccountName":"sa","hostNetwork":"yes","initContainers":null,
                    "containers":[{"name":"app","env":[{"name":"A"},5,{"value":"v"}],"volumeMounts":{}},7],
                    "volumes":[{"name":"v","projected":{"sources":[{"serviceAccountToken":{"path":"t"}},{}]}},"x"],
                    "other":[[[{"deep":true}]]]}}"#;
    let value: Value = serde_json::from_str(text).unwrap();
    let pod = from_slice(text).unwrap();
    assert_eq!(Pod::from_value(&value), Some(pod.clone()));

    assert_eq!(pod.metadata.name.as_deref(), Some("pod"));
    assert!(matches!(pod.metadata.name, Some(Cow::Owned(_))), "unescaped");
    assert!(pod.is_opted_in());
    assert_eq!(pod.metadata.annotations.get("a"), Some("2"));
    assert_eq!(pod.metadata.annotations.get("b"), None);
    assert_eq!(pod.metadata.labels.get("x"), None);
    let spec = pod.spec.as_ref().unwrap();
    assert_eq!(spec.host_network, None);
    assert_eq!(spec.init_containers, List::Missing);
    let containers = spec.containers.items();
    assert_eq!(containers.len(), 2);
    assert_eq!(containers[1], None);
    let app = containers[0].as_ref().unwrap();
    assert!(matches!(app.name, Some(Cow::Borrowed("app"))), "borrowed");
    assert_eq!(
        app.env,
        List::Items(vec![
            Some(Named { name: Some("A".into()) }),
            None,
            Some(Named { name: None })
        ])
    );
    assert_eq!(app.volume_mounts, List::NotArray);
    let volumes = spec.volumes.items();
    let sources = volumes[0].as_ref().unwrap().projected.as_ref().unwrap().sources.items();
    assert_eq!(
        sources[0]
            .as_ref()
            .unwrap()
            .service_account_token
            .as_ref()
            .unwrap()
            .path
            .as_deref(),
        Some("t")
    );
    assert_eq!(sources[1], Some(ProjectionSource::default()));
    assert_eq!(volumes[1], None);
}

#[test]
fn the_last_of_duplicate_keys_counts() {
    let pod = from_slice(
        r#"{"metadata":{"labels":{"azure.workload.identity/use":"true"},"annotations":{"a":"1","a":"2","b":"1","b":2}},
                "metadata":{"annotations":{"a":"1","a":"2","b":"1","b":2}},
                "spec":{"containers":[],"containers":"x","hostNetwork":true,"hostNetwork":1}}"#,
    )
    .unwrap();
    assert!(!pod.is_opted_in());
    assert_eq!(pod.metadata.annotations.get("a"), Some("2"));
    assert_eq!(pod.metadata.annotations.get("b"), None);
    let spec = pod.spec.unwrap();
    assert_eq!(spec.containers, List::NotArray);
    assert_eq!(spec.host_network, None);
}

#[test]
fn any_shape_reads_without_error() {
    for value in [
        json!(null),
        json!(1),
        json!("pod"),
        json!([{"metadata": {}}]),
        json!({"metadata": 1, "spec": []}),
        json!({"metadata": {"labels": [], "annotations": "x"}, "spec": {"containers": "x", "volumes": {}}}),
    ] {
        let text = value.to_string();
        assert_eq!(from_slice(&text), Pod::from_value(&value), "{text}");
    }
    assert_eq!(from_slice("[1]"), None);
    let pod = from_slice(r#"{"metadata":1,"spec":[]}"#).unwrap();
    assert_eq!(pod, Pod::default());
    let pod = from_slice(r#"{"spec":{"containers":"x","volumes":{}}}"#).unwrap();
    let spec = pod.spec.unwrap();
    assert_eq!(spec.containers, List::NotArray);
    assert_eq!(spec.volumes, List::NotArray);
}

#[test]
fn syntax_errors_are_errors() {
    for text in [r#"{"metadata":{"name":tru}}"#, r#"{"spec":{"x":[1,}}"#, r#"{"a":"#] {
        let mut de = serde_json::Deserializer::from_str(text);
        assert!(Option::<Pod>::read(&mut de).is_err(), "{text}");
    }
}

#[test]
fn display_name_and_service_account() {
    let pod = from_slice(r#"{"metadata":{"generateName":"api-"},"spec":{"serviceAccountName":""}}"#).unwrap();
    assert_eq!(pod.display_name().to_string(), "api- (prefix)");
    assert_eq!(pod.service_account_name(), "default");
    let pod =
        from_slice(r#"{"metadata":{"name":"p","generateName":"api-"},"spec":{"serviceAccountName":"sa"}}"#).unwrap();
    assert_eq!(pod.display_name().to_string(), "p");
    assert_eq!(pod.service_account_name(), "sa");
}
