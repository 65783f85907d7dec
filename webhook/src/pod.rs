//! A borrowed view of the Pod fields the mutation reads, deserialized straight from the request body.
//!
//! Parsing the whole pod into a `serde_json::Value` (a map node and a `String` for every key and value) and
//! dropping it again cost more than the mutation itself. The view keeps only what the mutation reads, borrows
//! strings from the body when they contain no escapes, and skips everything else without allocating.
//!
//! The view reads any JSON value without failing on a type mismatch, the way indexing a `Value` does: a field that
//! is not of the expected type reads as absent, except where the mutation must tell the difference (a list that
//! is not an array, `spec` that is not an object), which [`List`] and `Option` record so that `mutate` denies a
//! malformed pod with the same message. As in a `Value`, the last of duplicate keys counts.
//!
//! Only the syntax of the fields the view skips is checked, as `serde_json` does when it skips (iteratively, so
//! without its nesting limit of 128): numbers out of `f64` range, invalid UTF-8 and deeper nesting there are no
//! longer refused. kube-apiserver's Go encoder writes none of them; the body stays limited to 8 MiB.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::Deserializer;
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use wisp_shared::contract::workload_identity as wi;

/// A string from the body: borrowed unless it had to be unescaped.
pub type Str<'a> = Cow<'a, str>;

/// The object of an AdmissionReview when it is a JSON object.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pod<'a> {
    pub metadata: Metadata<'a>,
    /// `None` when absent or not an object.
    pub spec: Option<Spec<'a>>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Metadata<'a> {
    pub name: Option<Str<'a>>,
    pub generate_name: Option<Str<'a>>,
    pub namespace: Option<Str<'a>>,
    pub labels: StrMap<'a>,
    pub annotations: StrMap<'a>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Spec<'a> {
    pub service_account_name: Option<Str<'a>>,
    pub host_network: Option<bool>,
    pub init_containers: List<Option<Container<'a>>>,
    pub containers: List<Option<Container<'a>>>,
    pub volumes: List<Option<Volume<'a>>>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Container<'a> {
    pub name: Option<Str<'a>>,
    pub env: List<Option<Named<'a>>>,
    pub volume_mounts: List<Option<Named<'a>>>,
}

/// An entry of a list of named objects (env, volumeMounts).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Named<'a> {
    pub name: Option<Str<'a>>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Volume<'a> {
    pub name: Option<Str<'a>>,
    pub projected: Option<Projected<'a>>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Projected<'a> {
    pub sources: List<Option<ProjectionSource<'a>>>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ProjectionSource<'a> {
    pub service_account_token: Option<TokenProjection<'a>>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TokenProjection<'a> {
    pub path: Option<Str<'a>>,
}

/// A JSON value read as a list.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub enum List<T> {
    /// Absent or null.
    #[default]
    Missing,
    Items(Vec<T>),
    /// Any other type.
    NotArray,
}

impl<T> List<T> {
    /// The items; none when missing or not an array.
    pub fn items(&self) -> &[T] {
        match self {
            List::Items(items) => items,
            List::Missing | List::NotArray => &[],
        }
    }
}

/// The string-valued entries of a JSON object (labels, annotations); empty when not an object.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StrMap<'a>(Vec<(Str<'a>, Option<Str<'a>>)>);

impl StrMap<'_> {
    /// The value of `key` when it is a string (of duplicate keys, the last).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.as_deref())
    }
}

impl<'a> Pod<'a> {
    /// Reads the view from a JSON value; `None` when it is not an object.
    pub fn from_value(value: &'a Value) -> Option<Self> {
        // `&Value` deserializes without errors of its own, and the view accepts every shape.
        Lenient::read(value).unwrap_or_default()
    }

    /// True when the pod carries `azure.workload.identity/use: "true"` (exactly, as the webhook's objectSelector).
    pub fn is_opted_in(&self) -> bool {
        self.metadata.labels.get(wi::USE_LABEL) == Some("true")
    }

    /// `spec.serviceAccountName`, or `default` when unset or empty (the deprecated `spec.serviceAccount` is not
    /// read, as upstream).
    pub fn service_account_name(&self) -> &str {
        match self.spec.as_ref().and_then(|s| s.service_account_name.as_deref()) {
            Some(name) if !name.is_empty() => name,
            _ => "default",
        }
    }

    /// The name used for a pod in logs: its name, or its generateName marked as a prefix. Formatted only when
    /// a log line is written.
    pub fn display_name(&self) -> DisplayName<'_> {
        DisplayName(&self.metadata)
    }
}

pub struct DisplayName<'a>(&'a Metadata<'a>);

impl fmt::Display for DisplayName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.name.as_deref() {
            Some(name) if !name.is_empty() => f.write_str(name),
            _ => write!(f, "{} (prefix)", self.0.generate_name.as_deref().unwrap_or_default()),
        }
    }
}

/// Reads a view type from any JSON value; a type mismatch is recorded in the value, never an error. Errors come
/// only from the deserializer (syntax).
pub trait Lenient<'de>: Sized {
    fn read<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error>;
}

/// For `#[serde(deserialize_with = "pod::lenient")]`.
pub fn lenient<'de, D: Deserializer<'de>, T: Lenient<'de>>(deserializer: D) -> Result<T, D::Error> {
    T::read(deserializer)
}

struct Seed<T>(PhantomData<T>);

impl<'de, T: Lenient<'de>> DeserializeSeed<'de> for Seed<T> {
    type Value = T;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<T, D::Error> {
        T::read(deserializer)
    }
}

fn next_value<'de, A: MapAccess<'de>, T: Lenient<'de>>(map: &mut A) -> Result<T, A::Error> {
    map.next_value_seed(Seed(PhantomData))
}

/// The visitor methods of a view read from any JSON type: each type not handled by `$visitor`'s own methods
/// reads as `$other` (compound values are skipped to their end).
macro_rules! otherwise {
    ($other:expr; $($method:ident)*) => {
        $(otherwise!(@ $method, $other);)*
    };
    (@ bool, $other:expr) => { fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> { Ok($other) } };
    (@ number, $other:expr) => {
        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> { Ok($other) }
        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> { Ok($other) }
        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> { Ok($other) }
    };
    (@ null, $other:expr) => {
        fn visit_unit<E>(self) -> Result<Self::Value, E> { Ok($other) }
        fn visit_none<E>(self) -> Result<Self::Value, E> { Ok($other) }
    };
    (@ str, $other:expr) => {
        fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> { Ok($other) }
    };
    (@ seq, $other:expr) => {
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok($other)
        }
    };
    (@ map, $other:expr) => {
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok($other)
        }
    };
}

/// A string, or `None` for any other type.
impl<'de> Lenient<'de> for Option<Str<'de>> {
    fn read<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Option<Str<'de>>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Some(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Some(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Some(Cow::Owned(v)))
            }
            otherwise!(None; bool number null seq map);
        }
        deserializer.deserialize_any(V)
    }
}

/// A boolean, or `None` for any other type.
impl<'de> Lenient<'de> for Option<bool> {
    fn read<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Option<bool>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
                Ok(Some(v))
            }
            otherwise!(None; number null str seq map);
        }
        deserializer.deserialize_any(V)
    }
}

impl<'de, T: Lenient<'de>> Lenient<'de> for List<T> {
    fn read<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Lenient<'de>> Visitor<'de> for V<T> {
            type Value = List<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                while let Some(item) = seq.next_element_seed(Seed(PhantomData))? {
                    items.push(item);
                }
                Ok(List::Items(items))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(List::Missing)
            }
            fn visit_none<E>(self) -> Result<Self::Value, E> {
                Ok(List::Missing)
            }
            otherwise!(List::NotArray; bool number str map);
        }
        deserializer.deserialize_any(V(PhantomData))
    }
}

impl<'de> Lenient<'de> for StrMap<'de> {
    fn read<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StrMap<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0));
                while let Some(Key(key)) = map.next_key()? {
                    entries.push((key, next_value(&mut map)?));
                }
                Ok(StrMap(entries))
            }
            otherwise!(StrMap::default(); bool number null str seq);
        }
        deserializer.deserialize_any(V)
    }
}

/// An object key, unescaped.
struct Key<'de>(Str<'de>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(V)
    }
}

/// Objects of the view: `Option<T>` reads `Some` for a JSON object, `None` for any other type. The fields are
/// matched on their JSON names; every other key is skipped.
macro_rules! object_view {
    ($($ty:ident { $($json:literal => $field:ident),* $(,)? })*) => {$(
        impl<'de> Lenient<'de> for Option<$ty<'de>> {
            fn read<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = Option<$ty<'de>>;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str("any JSON value")
                    }
                    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                        let mut view = $ty::default();
                        while let Some(Key(key)) = map.next_key()? {
                            match key.as_ref() {
                                $($json => view.$field = next_value(&mut map)?,)*
                                _ => {
                                    map.next_value::<IgnoredAny>()?;
                                }
                            }
                        }
                        Ok(Some(view))
                    }
                    otherwise!(None; bool number null str seq);
                }
                deserializer.deserialize_any(V)
            }
        }
    )*};
}

/// `metadata` that is not an object reads as empty metadata.
impl<'de> Lenient<'de> for Metadata<'de> {
    fn read<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(Option::<Metadata>::read(deserializer)?.unwrap_or_default())
    }
}

object_view! {
    Pod { "metadata" => metadata, "spec" => spec }
    Metadata {
        "name" => name,
        "generateName" => generate_name,
        "namespace" => namespace,
        "labels" => labels,
        "annotations" => annotations,
    }
    Spec {
        "serviceAccountName" => service_account_name,
        "hostNetwork" => host_network,
        "initContainers" => init_containers,
        "containers" => containers,
        "volumes" => volumes,
    }
    Container { "name" => name, "env" => env, "volumeMounts" => volume_mounts }
    Named { "name" => name }
    Volume { "name" => name, "projected" => projected }
    Projected { "sources" => sources }
    ProjectionSource { "serviceAccountToken" => service_account_token }
    TokenProjection { "path" => path }
}

#[cfg(test)]
mod tests;
