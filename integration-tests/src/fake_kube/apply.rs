//! Server-side apply's field ownership, as far as wisp's callers can observe it: each field manager owns the fields
//! of its last applied configuration, and a field it applied before but leaves out now is removed from the object
//! unless another manager applied it too. Without this a test could not see that dropping a key from a
//! SecretSync or a `secretObjects` entry removes it from the Secret.
//!
//! Simplified from the real server: fields are the leaves of the applied JSON (objects are descended, lists and
//! scalars are whole fields, as the real server treats atomic lists); only applies own fields (the real server
//! also records updates under their manager); no conflicts are raised (wisp always applies with `force`).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

/// A field: the keys from the object's root to a leaf.
pub type FieldPath = Vec<String>;

/// Every manager's fields of one object.
pub type FieldOwners = BTreeMap<String, BTreeSet<FieldPath>>;

/// The fields `applied` sets, leaving out what identifies the object (`apiVersion`, `kind`, `metadata.name`,
/// `metadata.namespace`), which no manager can remove.
pub fn fields_of(applied: &Value) -> BTreeSet<FieldPath> {
    let mut fields = BTreeSet::new();
    collect(applied, &mut Vec::new(), &mut fields);
    for identity in [
        vec!["apiVersion"],
        vec!["kind"],
        vec!["metadata", "name"],
        vec!["metadata", "namespace"],
    ] {
        fields.remove(&identity.into_iter().map(str::to_string).collect::<Vec<_>>());
    }
    fields
}

fn collect(value: &Value, path: &mut Vec<String>, fields: &mut BTreeSet<FieldPath>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, child) in map {
                path.push(key.clone());
                collect(child, path, fields);
                path.pop();
            }
        }
        _ if !path.is_empty() => {
            fields.insert(path.clone());
        }
        _ => {}
    }
}

/// Applies `applied` by `manager` to `object`: the fields `manager` applied last time and leaves out now are
/// removed when no other manager owns them, then `applied` is merged in. `owners` is updated.
pub fn apply(object: &mut Value, applied: &Value, manager: &str, owners: &mut FieldOwners) {
    let now = fields_of(applied);
    let before = owners.remove(manager).unwrap_or_default();
    for dropped in before.difference(&now) {
        if !owners.values().any(|fields| fields.contains(dropped)) {
            remove(object, dropped);
        }
    }
    json_patch::merge(object, applied);
    // An empty map applied sets nothing: typed objects omit empty maps (`labels: {}`, `data: {}`).
    for field in &now {
        if pointer(applied, field).is_some_and(|v| v.as_object().is_some_and(|m| m.is_empty()))
            && pointer(object, field).is_some_and(|v| v.as_object().is_some_and(|m| m.is_empty()))
        {
            remove(object, field);
        }
    }
    owners.insert(manager.to_string(), now);
}

fn pointer<'a>(value: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(value, |v, key| v.get(key.as_str()))
}

/// Removes the field at `path` and the objects it leaves empty on the way up (empty maps are omitted in the real
/// server's answers); returns whether `value` itself is left an empty object.
fn remove(value: &mut Value, path: &[String]) -> bool {
    let (Some((first, rest)), Some(map)) = (path.split_first(), value.as_object_mut()) else {
        return false;
    };
    if rest.is_empty() {
        map.remove(first.as_str());
    } else if let Some(child) = map.get_mut(first.as_str())
        && remove(child, rest)
    {
        map.remove(first.as_str());
    }
    map.is_empty()
}

#[cfg(test)]
mod tests {
    use pretty_assertions::assert_eq;
    use serde_json::json;

    use super::*;

    fn secret(labels: Value, data: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "ns", "labels": labels},
               "data": data})
    }

    #[test]
    fn a_field_the_manager_drops_is_removed_unless_another_manager_applied_it() {
        let mut owners = FieldOwners::new();
        let mut object = json!({});
        apply(
            &mut object,
            &secret(json!({"a": "1", "b": "2"}), json!({"k1": "x", "k2": "y"})),
            "wisp",
            &mut owners,
        );
        apply(
            &mut object,
            &json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "labels": {"b": "2", "c": "3"}}}),
            "other",
            &mut owners,
        );
        // wisp drops label a, label b (also the other manager's) and data k2.
        apply(
            &mut object,
            &secret(json!({}), json!({"k1": "x2"})),
            "wisp",
            &mut owners,
        );
        assert_eq!(
            object,
            json!({"apiVersion": "v1", "kind": "Secret",
                   "metadata": {"name": "s", "namespace": "ns", "labels": {"b": "2", "c": "3"}},
                   "data": {"k1": "x2"}})
        );
        // The other manager drops its labels: the emptied map goes too.
        apply(
            &mut object,
            &json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}}),
            "other",
            &mut owners,
        );
        assert_eq!(
            object,
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "ns"},
                   "data": {"k1": "x2"}})
        );
    }

    #[test]
    fn fields_written_by_other_means_are_not_owned_and_stay() {
        let mut owners = FieldOwners::new();
        let mut object = secret(json!({"set-by-patch": "v"}), json!({"k": "x"}));
        object["metadata"]["ownerReferences"] = json!([{"uid": "u1"}]);
        apply(
            &mut object,
            &secret(json!({"mine": "1"}), json!({"k": "y"})),
            "wisp",
            &mut owners,
        );
        apply(&mut object, &secret(json!({}), json!({})), "wisp", &mut owners);
        assert_eq!(
            object,
            json!({"apiVersion": "v1", "kind": "Secret",
                   "metadata": {"name": "s", "namespace": "ns", "labels": {"set-by-patch": "v"},
                                "ownerReferences": [{"uid": "u1"}]}})
        );
    }
}
