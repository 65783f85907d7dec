//! The store's rules, driven directly.

use super::*;

fn sa(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}})
}

fn sa_type() -> &'static ResourceType {
    ResourceType::by_kind("v1", "ServiceAccount").unwrap()
}

#[test]
fn writes_bump_one_global_revision_and_unchanged_updates_do_not() {
    let mut store = Store::default();
    let (created, change) = store.create(sa_type(), "ns", sa("a"), false).unwrap();
    assert_eq!(meta_str(&created, "resourceVersion"), "1");
    assert_eq!(meta_str(&created, "namespace"), "ns");
    assert_eq!(meta_str(&created, "uid"), "00000000-0000-4000-8000-000000000001");
    assert_eq!(change.unwrap().event, EventType::Added);
    let (same, change) = store.replace(sa_type(), "ns", "a", created.clone()).unwrap();
    assert_eq!((meta_str(&same, "resourceVersion"), change.is_none()), ("1", true));
    let mut labelled = created.clone();
    labelled["metadata"]["labels"] = json!({"x": "y"});
    let (updated, change) = store.replace(sa_type(), "ns", "a", labelled.clone()).unwrap();
    assert_eq!(meta_str(&updated, "resourceVersion"), "2");
    assert_eq!(change.unwrap().event, EventType::Modified);
    assert_eq!(
        store.replace(sa_type(), "ns", "a", labelled).unwrap_err().message,
        "Operation cannot be fulfilled on serviceaccounts \"a\": the object has been modified; please apply \
         your changes to the latest version and try again"
    );
    let (deleted, change) = store.delete(sa_type(), "ns", "a").unwrap();
    assert_eq!(meta_str(&deleted, "resourceVersion"), "3");
    assert_eq!(change.unwrap().event, EventType::Deleted);
    let events: Vec<_> = store
        .changes_since(sa_type(), None, 1)
        .iter()
        .map(|c| c.event)
        .collect();
    assert_eq!(events, vec![EventType::Modified, EventType::Deleted]);
}

#[test]
fn get_only_objects_are_hidden_from_lists_until_written_again() {
    let mut store = Store::default();
    let (hidden, change) = store.create(sa_type(), "ns", sa("late"), true).unwrap();
    assert!(change.is_none());
    assert!(store.get(sa_type(), "ns", "late").is_some());
    assert!(store.list(sa_type(), None).is_empty());
    let (_, change) = store.replace(sa_type(), "ns", "late", hidden).unwrap();
    assert_eq!(change.unwrap().event, EventType::Added);
    assert_eq!(store.list(sa_type(), Some("ns")).len(), 1);
    assert!(store.list(sa_type(), Some("other")).is_empty());
    store.create(sa_type(), "ns", sa("never-listed"), true).unwrap();
    let (_, change) = store.delete(sa_type(), "ns", "never-listed").unwrap();
    assert!(change.is_none());
}

#[test]
fn filtered_watches_see_objects_enter_and_leave_their_selector() {
    let mut store = Store::default();
    let selector = LabelSelector::parse("managed=true").unwrap();
    let seen = |change: &Change| change.as_seen_through(|o| selector.matches(o));
    let (created, change) = store.create(sa_type(), "ns", sa("s"), false).unwrap();
    assert_eq!(seen(&change.unwrap()), None);
    let mut labelled = created.clone();
    labelled["metadata"]["labels"] = json!({"managed": "true"});
    let (labelled, change) = store.replace(sa_type(), "ns", "s", labelled).unwrap();
    assert_eq!(seen(&change.unwrap()), Some(EventType::Added));
    let mut annotated = labelled.clone();
    annotated["metadata"]["annotations"] = json!({"a": "b"});
    let (annotated, change) = store.replace(sa_type(), "ns", "s", annotated).unwrap();
    assert_eq!(seen(&change.unwrap()), Some(EventType::Modified));
    let mut unlabelled = annotated;
    unlabelled["metadata"]["labels"] = json!({});
    let (_, change) = store.replace(sa_type(), "ns", "s", unlabelled).unwrap();
    assert_eq!(seen(&change.unwrap()), Some(EventType::Deleted));
    let (_, change) = store.delete(sa_type(), "ns", "s").unwrap();
    assert_eq!(seen(&change.unwrap()), None);
}

#[test]
fn selectors_follow_api_server_syntax() {
    let object = json!({"metadata": {"name": "n", "namespace": "ns", "labels": {"a": "1", "b": "2"}}});
    for (selector, expected) in [
        ("a=1", true),
        ("a==1,b=2", true),
        ("a!=1", false),
        ("a in (1,3)", true),
        ("a notin (1,3)", false),
        ("c", false),
        ("!c", true),
        ("a,b in (2)", true),
        ("", true),
    ] {
        assert_eq!(
            LabelSelector::parse(selector).unwrap().matches(&object),
            expected,
            "{selector}"
        );
    }
    assert!(
        FieldSelector::parse(sa_type(), "metadata.name=n,metadata.namespace!=x")
            .unwrap()
            .matches(&object)
    );
    assert_eq!(
        FieldSelector::parse(sa_type(), "spec.nodeName=x").unwrap_err().message,
        "field label not supported: spec.nodeName"
    );
}

#[test]
fn field_selectors_know_each_resources_own_fields() {
    let pods = ResourceType::by_kind("v1", "Pod").unwrap();
    let events = ResourceType::by_kind("v1", "Event").unwrap();
    let scheduled = json!({"metadata": {"name": "p"}, "spec": {"nodeName": "node-1", "hostNetwork": true}});
    let pending = json!({"metadata": {"name": "q"}, "spec": {}});
    let on_node = FieldSelector::parse(pods, "spec.nodeName=node-1,spec.hostNetwork=true").unwrap();
    assert!(on_node.matches(&scheduled));
    assert!(!on_node.matches(&pending));
    // An unscheduled pod's spec.nodeName compares as "".
    assert!(FieldSelector::parse(pods, "spec.nodeName=").unwrap().matches(&pending));
    let event = json!({"involvedObject": {"kind": "Pod", "name": "p"}, "reason": "FailedMount",
                       "source": {"component": "kubelet", "host": "node-1"}});
    let selector = "involvedObject.kind=Pod,involvedObject.name=p,reason=FailedMount,source=kubelet";
    assert!(FieldSelector::parse(events, selector).unwrap().matches(&event));
    assert_eq!(
        FieldSelector::parse(events, "spec.nodeName=node-1")
            .unwrap_err()
            .message,
        "field label not supported: spec.nodeName"
    );
}

#[test]
fn namespaces_always_carry_their_name_label() {
    let namespaces = ResourceType::by_kind("v1", "Namespace").unwrap();
    let mut store = Store::default();
    let written = json!({"metadata": {"name": "team-a", "labels": {"kubernetes.io/metadata.name": "other", "x": "y"}}});
    let (created, _) = store.create(namespaces, "", written, false).unwrap();
    assert_eq!(
        created["metadata"]["labels"],
        json!({"kubernetes.io/metadata.name": "team-a", "x": "y"})
    );
    let (replaced, _) = store
        .replace(namespaces, "", "team-a", json!({"metadata": {"name": "team-a"}}))
        .unwrap();
    assert_eq!(
        replaced["metadata"]["labels"],
        json!({"kubernetes.io/metadata.name": "team-a"})
    );
}

#[test]
fn errors_render_as_api_server_status_objects() {
    let spc = ResourceType::by_path(SECRETS_STORE, "v1", "secretproviderclasses").unwrap();
    assert_eq!(
        ApiError::not_found(spc, "kv").status(),
        json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "secretproviderclasses.secrets-store.csi.x-k8s.io \"kv\" not found",
            "reason": "NotFound",
            "details": {"name": "kv", "group": "secrets-store.csi.x-k8s.io", "kind": "secretproviderclasses"},
            "code": 404
        })
    );
}
