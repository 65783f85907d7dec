//! What the benchmark asks wisp-sync to serve: `--objects` secrets, `--namespaces` namespaces of one ServiceAccount
//! each, `--classes-per-namespace` SecretProviderClasses per namespace and `--syncs` SecretSyncs.
//!
//! Each namespace owns a share of the secrets (object `o` belongs to namespace `o % namespaces`), as teams own
//! theirs; its classes read windows of `--objects-per-sync` consecutive objects of that share, so that together
//! they read all of it, and its SecretSyncs use its classes in turn. Every object is thus read by exactly one
//! identity (wisp-sync's round cache keys reads by identity: namespace, ServiceAccount, client), and one round
//! should read each object once: `--objects` Key Vault requests.

use anyhow::{Result, ensure};

use crate::flags::Cli;

pub(crate) const SECRET_BYTES: usize = 512;
pub(crate) const SERVICE_ACCOUNT: &str = "sa-sync";

pub(crate) struct Class {
    pub namespace: String,
    pub name: String,
    /// Object indices, in the class's order.
    pub objects: Vec<usize>,
}

pub(crate) struct Sync {
    pub namespace: String,
    pub name: String,
    /// Index into [`Layout::classes`].
    pub class: usize,
}

pub(crate) struct Layout {
    pub objects: usize,
    pub namespaces: Vec<String>,
    pub classes: Vec<Class>,
    pub syncs: Vec<Sync>,
}

impl Layout {
    pub(crate) fn new(cli: &Cli) -> Result<Self> {
        let (objects, namespaces) = (cli.objects as usize, cli.namespaces as usize);
        let (per_class, classes_each) = (cli.objects_per_sync as usize, cli.classes_per_namespace as usize);
        ensure!(
            objects >= namespaces,
            "--objects {objects} < --namespaces {namespaces}: every namespace needs a secret of its own"
        );
        let smallest_share = objects / namespaces;
        let largest_share = objects.div_ceil(namespaces);
        ensure!(
            per_class <= smallest_share,
            "--objects-per-sync {per_class} > the {smallest_share} objects a namespace owns"
        );
        ensure!(
            classes_each + per_class > largest_share,
            "{classes_each} classes of {per_class} consecutive objects do not cover a namespace's {largest_share} \
             objects; raise --classes-per-namespace or --objects-per-sync"
        );
        let namespaces: Vec<String> = (0..namespaces).map(|n| format!("team-{n:02}")).collect();
        let mut classes = Vec::new();
        for (n, namespace) in namespaces.iter().enumerate() {
            let share: Vec<usize> = (0..objects).filter(|o| o % namespaces.len() == n).collect();
            for c in 0..classes_each {
                classes.push(Class {
                    namespace: namespace.clone(),
                    name: format!("kv-{c}"),
                    objects: (0..per_class).map(|j| share[(c + j) % share.len()]).collect(),
                });
            }
        }
        let syncs = (0..cli.syncs as usize)
            .map(|i| {
                let n = i % namespaces.len();
                let c = (i / namespaces.len()) % classes_each;
                Sync {
                    namespace: namespaces[n].clone(),
                    name: format!("sync-{i:04}"),
                    class: n * classes_each + c,
                }
            })
            .collect();
        Ok(Self {
            objects,
            namespaces,
            classes,
            syncs,
        })
    }

    /// Distinct (identity, object) reads a round needs: each namespace's ServiceAccount reads the objects its
    /// SecretSyncs' classes list, once.
    pub(crate) fn reads_per_round(&self) -> usize {
        let mut read: Vec<(&str, usize)> = self
            .syncs
            .iter()
            .flat_map(|s| {
                let class = &self.classes[s.class];
                class.objects.iter().map(|&o| (class.namespace.as_str(), o))
            })
            .collect();
        read.sort_unstable();
        read.dedup();
        read.len()
    }

    /// Objects read by the SecretSyncs, whatever the identity.
    pub(crate) fn objects_read(&self) -> usize {
        let mut read: Vec<usize> = self
            .syncs
            .iter()
            .flat_map(|s| self.classes[s.class].objects.iter().copied())
            .collect();
        read.sort_unstable();
        read.dedup();
        read.len()
    }

    /// Key Vault reads of the first syncs: each reads its objects afresh (a new SecretSync sees what Key Vault
    /// holds now, as a new pod does).
    pub(crate) fn first_sync_reads(&self) -> usize {
        self.syncs.iter().map(|s| self.classes[s.class].objects.len()).sum()
    }
}

pub(crate) fn object_name(i: usize) -> String {
    format!("bench-secret-{i:03}")
}

/// The bytes of secret `i` in version `generation` (0: as seeded), [`SECRET_BYTES`] of them.
pub(crate) fn secret_value(i: usize, generation: u32) -> String {
    format!("secret-{i:03}-v{generation}-")
        .chars()
        .cycle()
        .take(SECRET_BYTES)
        .collect()
}
