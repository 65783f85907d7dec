//! The fake API server's state: objects by resource, one global resourceVersion counter (as etcd's revision),
//! and the history of changes that watches replay. No I/O here; the HTTP layer (`wire.rs`) maps
//! requests to these operations and [`ApiError`]s to `Status` responses.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Map, Value, json};

use super::apply::FieldOwners;

/// A resource the fake serves: `(group, version, plural)` with its kind and scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceType {
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    /// Served with a `/status` subresource, as a CRD declaring one: writes to the object keep its status,
    /// writes to `/status` change only the status, and `metadata.generation` counts changes of the rest.
    pub status_subresource: bool,
}

const SECRETS_STORE: &str = wisp_shared::contract::secrets_store::API_GROUP;
/// kubernetes-sigs/secrets-store-sync-controller's API group.
pub const SECRET_SYNC_GROUP: &str = "secret-sync.x-k8s.io";

/// Everything wisp reads or writes, and a few neighbours a test may want to seed.
pub const RESOURCES: &[ResourceType] = &[
    res("", "serviceaccounts", "ServiceAccount", true),
    res("", "secrets", "Secret", true),
    res("", "configmaps", "ConfigMap", true),
    res("", "pods", "Pod", true),
    res("", "events", "Event", true),
    res("", "namespaces", "Namespace", false),
    res("", "nodes", "Node", false),
    res("events.k8s.io", "events", "Event", true),
    res(SECRETS_STORE, "secretproviderclasses", "SecretProviderClass", true),
    res(
        SECRETS_STORE,
        "secretproviderclasspodstatuses",
        "SecretProviderClassPodStatus",
        true,
    ),
    res(
        "admissionregistration.k8s.io",
        "mutatingwebhookconfigurations",
        "MutatingWebhookConfiguration",
        false,
    ),
    res(
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        false,
    ),
    res("storage.k8s.io", "csidrivers", "CSIDriver", false),
    res("storage.k8s.io", "csinodes", "CSINode", false),
    res("apps", "deployments", "Deployment", true),
    res("apps", "replicasets", "ReplicaSet", true),
    res("coordination.k8s.io", "leases", "Lease", true),
    ResourceType {
        group: SECRET_SYNC_GROUP,
        version: "v1alpha1",
        plural: "secretsyncs",
        kind: "SecretSync",
        namespaced: true,
        status_subresource: true,
    },
];

/// The field labels a `fieldSelector` may use beyond `metadata.name` and `metadata.namespace`, per resource, as
/// the API server registers them (`GetAttrs` of each registry); any other label is refused.
fn extra_field_labels(rt: &ResourceType) -> &'static [&'static str] {
    match (rt.group, rt.plural) {
        ("", "pods") => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        ("", "events") => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        ("", "secrets") => &["type"],
        ("", "namespaces") => &["status.phase"],
        ("", "nodes") => &["spec.unschedulable"],
        ("apps", "replicasets") => &["status.replicas"],
        _ => &[],
    }
}

/// The value a field label selects: a dotted path into the object, "" when absent (as the API server compares an
/// unset `spec.nodeName`), booleans and numbers as text; an event's `source` is its `source.component`.
fn field_value(object: &Value, field: &str) -> String {
    let path = if field == "source" { "source.component" } else { field };
    let value = path.split('.').fold(object, |value, part| &value[part]);
    match value {
        Value::String(text) => text.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The label the API server puts on every Namespace (`NamespaceDefaultLabelName`, on since 1.21), so that
/// namespace selectors can name one namespace.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// Namespaces always carry [`NAMESPACE_NAME_LABEL`] with their own name, whatever the client wrote.
fn stamp_namespace_name_label(rt: &ResourceType, object: &mut Value) {
    if rt.group.is_empty() && rt.plural == "namespaces" {
        let name = meta_str(object, "name").to_string();
        let metadata = ensure_metadata(object);
        let labels = metadata.entry("labels").or_insert_with(|| Value::Object(Map::new()));
        if !labels.is_object() {
            *labels = Value::Object(Map::new());
        }
        if let Some(labels) = labels.as_object_mut() {
            labels.insert(NAMESPACE_NAME_LABEL.into(), Value::from(name));
        }
    }
}

const fn res(group: &'static str, plural: &'static str, kind: &'static str, namespaced: bool) -> ResourceType {
    ResourceType {
        group,
        version: "v1",
        plural,
        kind,
        namespaced,
        status_subresource: false,
    }
}

impl ResourceType {
    pub fn by_path(group: &str, version: &str, plural: &str) -> Option<&'static ResourceType> {
        RESOURCES
            .iter()
            .find(|r| r.group == group && r.version == version && r.plural == plural)
    }

    pub fn by_kind(api_version: &str, kind: &str) -> Option<&'static ResourceType> {
        RESOURCES
            .iter()
            .find(|r| r.api_version() == api_version && r.kind == kind)
    }

    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `secrets` or `secretproviderclasses.secrets-store.csi.x-k8s.io`, as API server messages name resources.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// Built-in types' list items carry no `apiVersion`/`kind` in the API server's JSON; custom resources' do.
    pub fn is_custom(&self) -> bool {
        self.group == SECRETS_STORE || self.group == SECRET_SYNC_GROUP
    }
}

/// A failure the HTTP layer turns into a `Status` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: String, details: Option<Value>) -> Self {
        Self {
            code,
            reason,
            message,
            details,
        }
    }

    /// A failure about the object `name` of `rt`, which the `Status` names in its details.
    fn about(code: u16, reason: &'static str, message: String, rt: &ResourceType, name: &str) -> Self {
        Self::new(code, reason, message, Some(details(rt, name)))
    }

    pub fn not_found(rt: &ResourceType, name: &str) -> Self {
        let message = format!("{} \"{name}\" not found", rt.qualified());
        Self::about(404, "NotFound", message, rt, name)
    }

    pub fn already_exists(rt: &ResourceType, name: &str) -> Self {
        let message = format!("{} \"{name}\" already exists", rt.qualified());
        Self::about(409, "AlreadyExists", message, rt, name)
    }

    pub fn conflict(rt: &ResourceType, name: &str) -> Self {
        let message = format!(
            "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes \
             to the latest version and try again",
            rt.qualified()
        );
        Self::about(409, "Conflict", message, rt, name)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message.into(), None)
    }

    pub fn invalid(rt: &ResourceType, name: &str, message: impl Into<String>) -> Self {
        Self::about(422, "Invalid", message.into(), rt, name)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message.into(), None)
    }

    /// The `Status` object the API server sends for this error.
    pub fn status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }
}

fn details(rt: &ResourceType, name: &str) -> Value {
    let mut details = Map::new();
    details.insert("name".into(), Value::from(name));
    if !rt.group.is_empty() {
        details.insert("group".into(), Value::from(rt.group));
    }
    details.insert("kind".into(), Value::from(rt.plural));
    Value::Object(details)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change, as watches see it.
#[derive(Debug, Clone)]
pub struct Change {
    pub revision: u64,
    pub resource: &'static ResourceType,
    pub namespace: String,
    pub event: EventType,
    pub object: Value,
    /// The object before a MODIFIED change, so a filtered watch can tell an object entering or leaving its
    /// selector (which the API server reports as ADDED or DELETED).
    pub previous: Option<Value>,
}

impl Change {
    /// The event a watch whose selector is `matches` sees for this change, if any.
    pub fn as_seen_through(&self, matches: impl Fn(&Value) -> bool) -> Option<EventType> {
        let now = matches(&self.object);
        match (self.event, self.previous.as_ref().map(&matches)) {
            (EventType::Modified, Some(before)) => match (before, now) {
                (true, true) => Some(EventType::Modified),
                (true, false) => Some(EventType::Deleted),
                (false, true) => Some(EventType::Added),
                (false, false) => None,
            },
            (event, _) => now.then_some(event),
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    object: Value,
    /// Served to GET, but not yet to LIST or WATCH (a watch cache that lags behind).
    get_only: bool,
}

/// Where an object lives: resource, namespace (empty when cluster-scoped), name.
pub type Key = (&'static str, &'static str, String, String);

#[derive(Debug, Default)]
pub struct Store {
    revision: u64,
    compacted: u64,
    uid_counter: u64,
    objects: BTreeMap<Key, Entry>,
    history: Vec<Change>,
    /// Server-side apply's field managers, by object uid (a re-created object starts with none).
    field_owners: HashMap<String, FieldOwners>,
}

pub fn key(rt: &'static ResourceType, namespace: &str, name: &str) -> Key {
    (rt.group, rt.plural, namespace.to_string(), name.to_string())
}

/// `metadata.name` etc. of an object, or "".
pub fn meta_str<'a>(object: &'a Value, field: &str) -> &'a str {
    object["metadata"][field].as_str().unwrap_or("")
}

impl Store {
    pub fn revision(&self) -> u64 {
        self.revision
    }

    pub fn compacted(&self) -> u64 {
        self.compacted
    }

    /// Forgets history up to now: a watch resuming from an older resourceVersion gets `410 Gone`.
    pub fn compact(&mut self) {
        self.compacted = self.revision;
        self.history.clear();
    }

    pub fn get(&self, rt: &'static ResourceType, namespace: &str, name: &str) -> Option<&Value> {
        self.objects.get(&key(rt, namespace, name)).map(|e| &e.object)
    }

    /// Visible objects of a resource, in namespace (if given), ordered by namespace and name.
    pub fn list(&self, rt: &'static ResourceType, namespace: Option<&str>) -> Vec<&Value> {
        self.objects
            .iter()
            .filter(|((group, plural, ns, _), entry)| {
                *group == rt.group && *plural == rt.plural && !entry.get_only && namespace.is_none_or(|n| n == ns)
            })
            .map(|(_, e)| &e.object)
            .collect()
    }

    /// Changes after `revision` of a resource (in a namespace, if given).
    pub fn changes_since(&self, rt: &ResourceType, namespace: Option<&str>, revision: u64) -> Vec<Change> {
        self.history
            .iter()
            .filter(|c| c.revision > revision && c.resource == rt && namespace.is_none_or(|n| n == c.namespace))
            .cloned()
            .collect()
    }

    /// Creates `object`; fills uid, resourceVersion and creationTimestamp as the API server does.
    pub fn create(
        &mut self,
        rt: &'static ResourceType,
        namespace: &str,
        mut object: Value,
        get_only: bool,
    ) -> Result<(Value, Option<Change>), ApiError> {
        let name = meta_str(&object, "name").to_string();
        let k = key(rt, namespace, &name);
        if self.objects.contains_key(&k) {
            return Err(ApiError::already_exists(rt, &name));
        }
        if rt.status_subresource
            && let Some(fields) = object.as_object_mut()
        {
            // As for a CRD with a status subresource, a create sets no status.
            fields.remove("status");
        }
        self.uid_counter += 1;
        let uid = format!("00000000-0000-4000-8000-{:012x}", self.uid_counter);
        stamp_type(rt, &mut object);
        stamp_namespace_name_label(rt, &mut object);
        let metadata = ensure_metadata(&mut object);
        metadata.insert("uid".into(), Value::from(uid));
        metadata.insert("creationTimestamp".into(), Value::from(now_rfc3339()));
        if rt.status_subresource {
            metadata.insert("generation".into(), Value::from(1));
        }
        if rt.namespaced {
            metadata.insert("namespace".into(), Value::from(namespace));
        } else {
            metadata.remove("namespace");
        }
        Ok(self.commit(rt, k, object, EventType::Added, get_only))
    }

    /// Replaces an existing object. `expected_revision` (from the new object's metadata) must match the stored
    /// one when given. An update that changes nothing keeps the resourceVersion and emits no event.
    pub fn replace(
        &mut self,
        rt: &'static ResourceType,
        namespace: &str,
        name: &str,
        mut object: Value,
    ) -> Result<(Value, Option<Change>), ApiError> {
        let k = key(rt, namespace, name);
        let Some(current) = self.objects.get(&k) else {
            return Err(ApiError::not_found(rt, name));
        };
        let expected = meta_str(&object, "resourceVersion");
        if !expected.is_empty() && expected != meta_str(&current.object, "resourceVersion") {
            return Err(ApiError::conflict(rt, name));
        }
        // Server-owned fields survive whatever the client sent.
        let current_meta = current.object["metadata"].clone();
        stamp_type(rt, &mut object);
        let metadata = ensure_metadata(&mut object);
        for field in ["uid", "creationTimestamp", "resourceVersion"] {
            match current_meta.get(field) {
                Some(v) => metadata.insert(field.into(), v.clone()),
                None => metadata.remove(field),
            };
        }
        metadata.insert("name".into(), Value::from(name));
        if rt.namespaced {
            metadata.insert("namespace".into(), Value::from(namespace));
        }
        stamp_namespace_name_label(rt, &mut object);
        if rt.status_subresource {
            keep_status_and_count_generation(&current.object, &mut object);
        }
        if object == current.object {
            if current.get_only {
                // An unchanged write still publishes a GET-only object to lists and watches.
                return Ok(self.commit(rt, k, object, EventType::Added, false));
            }
            return Ok((object, None));
        }
        let event = if current.get_only {
            EventType::Added
        } else {
            EventType::Modified
        };
        Ok(self.commit(rt, k, object, event, false))
    }

    /// Removes an object; returns it (with the deletion's resourceVersion) and the change watches see, which is
    /// `None` for a GET-only object that no watch ever showed.
    pub fn delete(
        &mut self,
        rt: &'static ResourceType,
        namespace: &str,
        name: &str,
    ) -> Result<(Value, Option<Change>), ApiError> {
        let k = key(rt, namespace, name);
        let Some(entry) = self.objects.remove(&k) else {
            return Err(ApiError::not_found(rt, name));
        };
        self.field_owners.remove(meta_str(&entry.object, "uid"));
        self.revision += 1;
        let mut object = entry.object;
        ensure_metadata(&mut object).insert("resourceVersion".into(), Value::from(self.revision.to_string()));
        if entry.get_only {
            return Ok((object, None));
        }
        let change = Change {
            revision: self.revision,
            resource: rt,
            namespace: namespace.to_string(),
            event: EventType::Deleted,
            object: object.clone(),
            previous: None,
        };
        self.history.push(change.clone());
        Ok((object, Some(change)))
    }

    /// The field managers of the object with `uid`, for a server-side apply to update.
    pub fn field_owners(&mut self, uid: &str) -> &mut FieldOwners {
        self.field_owners.entry(uid.to_string()).or_default()
    }

    /// A write to the `/status` subresource: only `status` changes (generation and everything else stay).
    pub fn replace_status(
        &mut self,
        rt: &'static ResourceType,
        namespace: &str,
        name: &str,
        status: Option<Value>,
    ) -> Result<(Value, Option<Change>), ApiError> {
        let mut object = self
            .get(rt, namespace, name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(rt, name))?;
        match (object.as_object_mut(), status) {
            (Some(fields), Some(status)) => fields.insert("status".into(), status),
            (Some(fields), None) => fields.remove("status"),
            (None, _) => return Err(ApiError::internal("stored object is not a JSON object")),
        };
        if Some(&object) == self.get(rt, namespace, name) {
            return Ok((object, None));
        }
        let event = EventType::Modified;
        let k = key(rt, namespace, name);
        Ok(self.commit(rt, k, object, event, false))
    }

    /// Deletes an object, then its dependents as the garbage collector does: every object whose owner
    /// references all name the deleted object's uid, and theirs in turn. Returns the deleted object and every
    /// change, the object's first.
    pub fn delete_cascading(
        &mut self,
        rt: &'static ResourceType,
        namespace: &str,
        name: &str,
    ) -> Result<(Value, Vec<Change>), ApiError> {
        let (object, change) = self.delete(rt, namespace, name)?;
        let mut changes: Vec<Change> = change.into_iter().collect();
        let mut gone = vec![meta_str(&object, "uid").to_string()];
        while let Some(uid) = gone.pop() {
            let dependents: Vec<Key> = self
                .objects
                .iter()
                .filter(|(_, entry)| {
                    entry.object["metadata"]["ownerReferences"]
                        .as_array()
                        .is_some_and(|owners| !owners.is_empty() && owners.iter().all(|o| o["uid"] == uid.as_str()))
                })
                .map(|(k, _)| k.clone())
                .collect();
            for (group, plural, dependent_namespace, dependent_name) in dependents {
                let Some(dependent_rt) = RESOURCES.iter().find(|r| r.group == group && r.plural == plural) else {
                    continue;
                };
                if let Ok((removed, change)) = self.delete(dependent_rt, &dependent_namespace, &dependent_name) {
                    gone.push(meta_str(&removed, "uid").to_string());
                    changes.extend(change);
                }
            }
        }
        Ok((object, changes))
    }

    fn commit(
        &mut self,
        rt: &'static ResourceType,
        k: Key,
        mut object: Value,
        event: EventType,
        get_only: bool,
    ) -> (Value, Option<Change>) {
        self.revision += 1;
        ensure_metadata(&mut object).insert("resourceVersion".into(), Value::from(self.revision.to_string()));
        let namespace = k.2.clone();
        let replaced = self.objects.insert(
            k,
            Entry {
                object: object.clone(),
                get_only,
            },
        );
        if get_only {
            return (object, None);
        }
        let previous = match event {
            EventType::Modified => replaced.map(|entry| entry.object),
            _ => None,
        };
        let change = Change {
            revision: self.revision,
            resource: rt,
            namespace,
            event,
            object: object.clone(),
            previous,
        };
        self.history.push(change.clone());
        (object, Some(change))
    }
}

/// For a resource with a status subresource: the stored status wins over the written one, and the generation
/// goes up when anything but metadata and status changed.
fn keep_status_and_count_generation(current: &Value, object: &mut Value) {
    let Some(fields) = object.as_object_mut() else {
        return;
    };
    match current.get("status") {
        Some(status) => fields.insert("status".into(), status.clone()),
        None => fields.remove("status"),
    };
    let rest = |v: &Value| -> Value {
        let mut v = v.clone();
        if let Some(fields) = v.as_object_mut() {
            fields.remove("metadata");
            fields.remove("status");
        }
        v
    };
    let generation = current["metadata"]["generation"].as_i64().unwrap_or(1);
    let generation = if rest(current) == rest(object) {
        generation
    } else {
        generation + 1
    };
    ensure_metadata(object).insert("generation".into(), Value::from(generation));
}

/// Stored objects always carry their `apiVersion` and `kind`, whatever the client sent.
fn stamp_type(rt: &ResourceType, object: &mut Value) {
    ensure_metadata(object);
    if let Some(fields) = object.as_object_mut() {
        fields.insert("apiVersion".into(), Value::from(rt.api_version()));
        fields.insert("kind".into(), Value::from(rt.kind));
    }
}

pub fn ensure_metadata(object: &mut Value) -> &mut Map<String, Value> {
    if !object.is_object() {
        *object = Value::Object(Map::new());
    }
    let metadata = object
        .as_object_mut()
        .map(|o| o.entry("metadata").or_insert_with(|| Value::Object(Map::new())));
    match metadata {
        Some(m) => {
            if !m.is_object() {
                *m = Value::Object(Map::new());
            }
            m.as_object_mut().expect("metadata was just made an object")
        }
        None => unreachable!("object was just made a JSON object"),
    }
}

pub fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or_else(|_| time::OffsetDateTime::now_utc());
    now.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

/// A parsed `labelSelector` (equality and set based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelSelector(Vec<Requirement>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

impl LabelSelector {
    pub fn parse(selector: &str) -> Result<Self, ApiError> {
        let mut requirements = Vec::new();
        for term in split_outside_parens(selector) {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            let invalid =
                || ApiError::bad_request(format!("unable to parse requirement: invalid label selector: {term:?}"));
            let requirement = if let Some((k, rest)) = term.split_once(" notin ") {
                Requirement::NotIn(k.trim().into(), parse_set(rest).ok_or_else(invalid)?)
            } else if let Some((k, rest)) = term.split_once(" in ") {
                Requirement::In(k.trim().into(), parse_set(rest).ok_or_else(invalid)?)
            } else if let Some((k, v)) = term.split_once("!=") {
                Requirement::NotEquals(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                Requirement::Equals(k.trim().into(), v.trim().into())
            } else if let Some(k) = term.strip_prefix('!') {
                Requirement::NotExists(k.trim().into())
            } else {
                Requirement::Exists(term.into())
            };
            requirements.push(requirement);
        }
        Ok(Self(requirements))
    }

    pub fn matches(&self, object: &Value) -> bool {
        let labels = &object["metadata"]["labels"];
        let label = |k: &str| labels.get(k).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            Requirement::Equals(k, v) => label(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => label(k) != Some(v.as_str()),
            Requirement::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            Requirement::NotIn(k, vs) => label(k).is_none_or(|l| vs.iter().all(|v| v != l)),
            Requirement::Exists(k) => label(k).is_some(),
            Requirement::NotExists(k) => label(k).is_none(),
        })
    }
}

fn split_outside_parens(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

fn parse_set(s: &str) -> Option<Vec<String>> {
    let inner = s.trim().strip_prefix('(')?.strip_suffix(')')?;
    Some(
        inner
            .split(',')
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .collect(),
    )
}

/// A parsed `fieldSelector`: the API server supports `metadata.name` and `metadata.namespace` for every type, and
/// a few more fields per type (`extra_field_labels`, e.g. a pod's `spec.nodeName`, an event's
/// `involvedObject.name`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    pub fn parse(rt: &ResourceType, selector: &str) -> Result<Self, ApiError> {
        let mut terms = Vec::new();
        for term in selector.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (field, equal, value) = if let Some((f, v)) = term.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                (f, true, v)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: '{selector}'; can't understand '{term}'"
                )));
            };
            let field = field.trim();
            if field != "metadata.name" && field != "metadata.namespace" && !extra_field_labels(rt).contains(&field) {
                return Err(ApiError::bad_request(format!("field label not supported: {field}")));
            }
            terms.push((field.to_string(), equal, value.trim().to_string()));
        }
        Ok(Self(terms))
    }

    pub fn matches(&self, object: &Value) -> bool {
        self.0
            .iter()
            .all(|(field, equal, value)| (field_value(object, field) == *value) == *equal)
    }
}

/// The Kubernetes version `/version` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeVersion {
    pub major: u32,
    pub minor: u32,
}

impl Default for KubeVersion {
    fn default() -> Self {
        Self { major: 1, minor: 33 }
    }
}

/// Five characters from the API server's `generateName` alphabet (no vowels, no look-alikes).
pub(super) fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut bytes = [0u8; 5];
    rustls::crypto::aws_lc_rs::default_provider()
        .secure_random
        .fill(&mut bytes)
        .expect("the system random generator works");
    bytes
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect()
}

/// Checks a written object's `apiVersion`/`kind` (when given) against the URL's resource.
pub(super) fn check_type(rt: &ResourceType, object: &Value) -> Result<(), ApiError> {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let kind = object["kind"].as_str().unwrap_or_default();
    if (!api_version.is_empty() && api_version != rt.api_version()) || (!kind.is_empty() && kind != rt.kind) {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({api_version}) does not match the expected API version ({})",
            rt.api_version()
        )));
    }
    if !object.is_object() {
        return Err(ApiError::bad_request("the request body is not a JSON object"));
    }
    Ok(())
}

pub(super) fn check_namespace(rt: &ResourceType, namespace: &str, object: &Value) -> Result<(), ApiError> {
    let given = meta_str(object, "namespace");
    if rt.namespaced && !given.is_empty() && given != namespace {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    Ok(())
}

/// Strategic merge of `metadata.ownerReferences`, whose patch merge key is `uid`: entries of the patch replace the
/// object's entries with the same uid, others are appended, the object's other entries stay. The merged list
/// goes into `patch`, for the JSON merge of the rest.
pub(super) fn merge_owner_references_by_uid(object: &Value, patch: &mut Value) {
    let Some(patched) = patch
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .cloned()
    else {
        return;
    };
    let mut merged: Vec<Value> = object
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for entry in patched {
        match merged
            .iter_mut()
            .find(|existing| existing.get("uid") == entry.get("uid"))
        {
            Some(existing) => *existing = entry,
            None => merged.push(entry),
        }
    }
    patch["metadata"]["ownerReferences"] = Value::Array(merged);
}

#[cfg(test)]
mod tests;
