//! `status.syncHash`, computed as kubernetes-sigs/secrets-store-sync-controller does (v1 hashes): the JSON of the
//! Secret's data (keys sorted, values base64, as Go marshals `map[string][]byte`) followed by the JSON of the
//! SecretProviderClass's uid and generation and the SecretSync's uid, generation and `forceSynchronization`;
//! PBKDF2-HMAC-SHA512 over that (salt: the SecretSync's uid, 100,000 iterations, 32 bytes); HMAC-SHA512 of the
//! derived key keyed by itself; hex of `v1` followed by the MAC. The derivation is deliberately slow (it hides
//! the secret values behind a public status field), about 40 ms of CPU: callers run it on a blocking thread,
//! and [`HashCache`] skips it when nothing changed.
//! Pure.

use std::collections::BTreeMap;
use std::num::NonZeroU32;

use aws_lc_rs::{hmac, pbkdf2};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use zeroize::Zeroizing;

const ITERATIONS: u32 = 100_000;
const KEY_LENGTH: usize = 32;
const VERSION: &str = "v1";

/// Remembers each SecretSync's last hash under a keyed fingerprint of its message (HMAC-SHA256 with a key made
/// at start, held in memory only), so that an unchanged sync, the common case, costs no key derivation.
pub struct HashCache {
    key: hmac::Key,
    last: std::sync::Mutex<std::collections::HashMap<String, (Vec<u8>, String)>>,
}

impl std::fmt::Debug for HashCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HashCache").finish_non_exhaustive()
    }
}

impl Default for HashCache {
    fn default() -> Self {
        Self::new()
    }
}

impl HashCache {
    pub fn new() -> Self {
        let mut key = Zeroizing::new([0u8; 32]);
        // The system RNG fails only without any entropy source; a zero key still gives correct fingerprints.
        let _ = aws_lc_rs::rand::SecureRandom::fill(&aws_lc_rs::rand::SystemRandom::new(), key.as_mut());
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, key.as_ref()),
            last: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// The fingerprint of `message`, and the hash remembered for it under `sync_uid`, if that is the last one.
    pub fn lookup(&self, sync_uid: &str, message: &[u8]) -> (Vec<u8>, Option<String>) {
        let fingerprint = hmac::sign(&self.key, message).as_ref().to_vec();
        let last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let hit = last
            .get(sync_uid)
            .filter(|(known, _)| *known == fingerprint)
            .map(|(_, hash)| hash.clone());
        (fingerprint, hit)
    }

    pub fn remember(&self, sync_uid: &str, fingerprint: Vec<u8>, hash: &str) {
        self.last
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(sync_uid.to_string(), (fingerprint, hash.to_string()));
    }
}

/// Everything the hash covers besides the data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashInputs<'a> {
    pub spc_uid: &'a str,
    pub spc_generation: i64,
    pub sync_uid: &'a str,
    pub sync_generation: i64,
    pub force_synchronization: &'a str,
}

/// The `syncHash` of `data` (the Secret's raw bytes by key) with `inputs`.
pub fn sync_hash(data: &BTreeMap<String, Zeroizing<Vec<u8>>>, inputs: &HashInputs<'_>) -> String {
    derive(&message(data, inputs), inputs.sync_uid)
}

/// What the hash covers, as bytes (it holds the secret values).
pub fn message(data: &BTreeMap<String, Zeroizing<Vec<u8>>>, inputs: &HashInputs<'_>) -> Zeroizing<Vec<u8>> {
    let encoded: BTreeMap<&str, Zeroizing<String>> = data
        .iter()
        .map(|(key, value)| (key.as_str(), Zeroizing::new(STANDARD.encode(value.as_slice()))))
        .collect();
    let json_string = |s: &str| serde_json::Value::from(s).to_string();
    let mut message = Zeroizing::new(Vec::new());
    message.push(b'{');
    for (i, (key, value)) in encoded.iter().enumerate() {
        if i > 0 {
            message.push(b',');
        }
        message.extend_from_slice(json_string(key).as_bytes());
        message.push(b':');
        message.push(b'"');
        // Base64 needs no JSON escaping.
        message.extend_from_slice(value.as_bytes());
        message.push(b'"');
    }
    message.push(b'}');
    message.extend_from_slice(json_string(inputs.spc_uid).as_bytes());
    message.extend_from_slice(inputs.spc_generation.to_string().as_bytes());
    message.extend_from_slice(json_string(inputs.sync_uid).as_bytes());
    message.extend_from_slice(inputs.sync_generation.to_string().as_bytes());
    message.extend_from_slice(json_string(inputs.force_synchronization).as_bytes());
    message
}

/// The slow part: `syncHash` of a [`message`] with the SecretSync's uid as salt.
pub fn derive(message: &[u8], sync_uid: &str) -> String {
    let mut derived = Zeroizing::new([0u8; KEY_LENGTH]);
    let iterations = NonZeroU32::new(ITERATIONS).unwrap_or(NonZeroU32::MIN);
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA512,
        iterations,
        sync_uid.as_bytes(),
        message,
        derived.as_mut(),
    );
    let key = hmac::Key::new(hmac::HMAC_SHA512, derived.as_ref());
    let tag = hmac::sign(&key, derived.as_ref());
    let mut out = hex::encode(VERSION);
    out.push_str(&hex::encode(tag.as_ref()));
    out
}

#[cfg(test)]
mod tests {
    use pretty_assertions::assert_eq;

    use super::*;

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, Zeroizing<Vec<u8>>> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Zeroizing::new(v.as_bytes().to_vec())))
            .collect()
    }

    const INPUTS: HashInputs<'static> = HashInputs {
        spc_uid: "spc-uid",
        spc_generation: 1,
        sync_uid: "ss-uid",
        sync_generation: 2,
        force_synchronization: "",
    };

    #[test]
    fn known_value() {
        // Computed independently (Python hashlib.pbkdf2_hmac / hmac) over
        // `{"a":"dmFsdWU="}"spc-uid"1"ss-uid"2""`.
        let hash = sync_hash(&data(&[("a", "value")]), &INPUTS);
        assert_eq!(hash, include_str!("hash/known_value.txt").trim());
    }

    #[test]
    fn the_cache_reuses_only_the_same_message() {
        let cache = HashCache::new();
        let message = message(&data(&[("a", "value")]), &INPUTS);
        let (fingerprint, hit) = cache.lookup("ss-uid", &message);
        assert_eq!(hit, None);
        let hash = derive(&message, "ss-uid");
        assert_eq!(hash, sync_hash(&data(&[("a", "value")]), &INPUTS));
        cache.remember("ss-uid", fingerprint, &hash);
        assert_eq!(cache.lookup("ss-uid", &message).1, Some(hash));
        let other = super::message(&data(&[("a", "value2")]), &INPUTS);
        assert_eq!(cache.lookup("ss-uid", &other).1, None);
        assert_eq!(cache.lookup("other-uid", &message).1, None);
    }

    #[test]
    fn every_input_changes_it() {
        let base = sync_hash(&data(&[("a", "value")]), &INPUTS);
        assert!(base.starts_with("7631"), "hex of v1 first");
        assert_eq!(base.len(), 4 + 128);
        let variants = [
            sync_hash(&data(&[("a", "value2")]), &INPUTS),
            sync_hash(&data(&[("b", "value")]), &INPUTS),
            sync_hash(
                &data(&[("a", "value")]),
                &HashInputs {
                    spc_generation: 2,
                    ..INPUTS
                },
            ),
            sync_hash(
                &data(&[("a", "value")]),
                &HashInputs {
                    force_synchronization: "now",
                    ..INPUTS
                },
            ),
            sync_hash(
                &data(&[("a", "value")]),
                &HashInputs {
                    sync_uid: "other",
                    ..INPUTS
                },
            ),
        ];
        for variant in variants {
            assert_ne!(variant, base);
        }
    }
}
