//! `Snapshot`: an immutable, versioned, pre-encoded set of xDS resources for one node.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
use envoy_types::pb::google::protobuf::Any;
use envoy_types::util::pack_any;

use crate::resource::{ListHasher, Resource, ResourceType};

/// The complete xDS configuration of one node (one virtual node or gateway),
/// every resource encoded exactly once.
///
/// A snapshot is immutable and meant to be shared: the reconciler builds one per
/// node and hands an `Arc<Snapshot>` to [`SnapshotCache::set`](crate::SnapshotCache::set);
/// every Envoy of that node streams from the same allocation.
///
/// Versions:
/// - every [`Resource`] has a content-hash version (used by delta xDS to send only
///   what changed);
/// - every type has a version, [`Snapshot::version`], the hash of the sorted
///   `(name, resource version)` list of that type (used as `version_info` in
///   state-of-the-world responses carrying the full set).
///
/// Both are pure functions of content, so they are stable across restarts and
/// replicas and never reused for different content.
#[derive(Clone)]
pub struct Snapshot {
    types: [TypeResources; 5],
    created_at: Instant,
}

/// The resources of one type in a [`Snapshot`], sorted by name.
#[derive(Clone, Debug, Default)]
pub struct TypeResources {
    version: Arc<str>,
    resources: BTreeMap<Arc<str>, Arc<Resource>>,
}

/// Builds a [`Snapshot`]; see [`Snapshot::builder`].
#[derive(Debug, Default)]
pub struct SnapshotBuilder {
    items: Vec<(ResourceType, String, Any)>,
    errors: Vec<SnapshotError>,
    created_at: Option<Instant>,
    previous: Option<Arc<Snapshot>>,
}

/// Why a snapshot could not be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// The type URL is not one of the five served types.
    #[error("unsupported type url `{0}`")]
    UnsupportedType(String),
    /// `Any.type_url` does not match the type the resource was added as.
    #[error("resource `{name}` added as {expected} but packed as `{actual}`")]
    TypeMismatch {
        /// The resource name.
        name: String,
        /// Type URL the resource was added under.
        expected: &'static str,
        /// `Any.type_url` of the resource.
        actual: String,
    },
    /// Two resources of one type share a name (Envoy rejects such responses).
    #[error("duplicate {type_url} resource `{name}`")]
    Duplicate {
        /// Type URL of both resources.
        type_url: &'static str,
        /// The shared name.
        name: String,
    },
    /// A resource has an empty name.
    #[error("{0} resource with an empty name")]
    EmptyName(&'static str),
}

// === impl Snapshot ===

impl Snapshot {
    /// Starts a builder.
    ///
    /// ```
    /// # use meshplane_xds::Snapshot;
    /// # use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    /// let snap = Snapshot::builder()
    ///     .add_cluster(Cluster { name: "backend".into(), ..Default::default() })
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(snap.resources(meshplane_xds::ResourceType::Cluster).len(), 1);
    /// ```
    pub fn builder() -> SnapshotBuilder {
        SnapshotBuilder::default()
    }

    /// A snapshot with no resources (a node that exists but has no config).
    pub fn empty() -> Snapshot {
        freeze(Default::default(), Instant::now())
    }

    /// Builds from `(type_url, name, Any)` triples; see [`SnapshotBuilder::add_any`].
    pub fn from_resources(
        items: impl IntoIterator<Item = (String, String, Any)>,
    ) -> Result<Snapshot, Vec<SnapshotError>> {
        let mut b = Snapshot::builder();
        for (type_url, name, any) in items {
            b = b.add_any(&type_url, name, any);
        }
        b.build()
    }

    /// The resources of one type.
    pub fn resources(&self, ty: ResourceType) -> &TypeResources {
        &self.types[ty as usize]
    }

    /// The state-of-the-world version of one type (hash of its full content).
    pub fn version(&self, ty: ResourceType) -> &str {
        &self.types[ty as usize].version
    }

    /// Whether `self` and `other` hold the same `ty` resources: the same snapshot, or the
    /// same type version (a content hash). A route change gives every node a new snapshot
    /// whose clusters and listeners are unchanged; streams skip those types in O(1).
    pub fn same_content(&self, other: &Snapshot, ty: ResourceType) -> bool {
        std::ptr::eq(self, other) || self.version(ty) == other.version(ty)
    }

    /// One resource by type and name.
    pub fn get(&self, ty: ResourceType, name: &str) -> Option<&Arc<Resource>> {
        self.types[ty as usize].resources.get(name)
    }

    /// When the snapshot was built, or the instant passed to
    /// [`SnapshotBuilder::created_at`] (e.g. the store write that caused it).
    /// ACK events carry it so the runtime can measure write→ACK latency.
    pub fn created_at(&self) -> Instant {
        self.created_at
    }

    /// Total encoded bytes over all resources.
    pub fn encoded_len(&self) -> usize {
        self.types
            .iter()
            .flat_map(|t| t.resources.values())
            .map(|r| r.encoded_len())
            .sum()
    }
}

/// Computes the type versions and freezes the maps into a snapshot.
fn freeze(mut maps: [BTreeMap<Arc<str>, Arc<Resource>>; 5], created_at: Instant) -> Snapshot {
    let types = std::array::from_fn(|i| {
        let resources = std::mem::take(&mut maps[i]);
        let version = list_version(ResourceType::ALL[i], resources.values().map(|r| &**r)).into();
        TypeResources { version, resources }
    });
    Snapshot { types, created_at }
}

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Snapshot");
        for ty in ResourceType::ALL {
            let t = self.resources(ty);
            d.field(
                ty.short_name(),
                &format_args!("{} ({} resources)", t.version, t.len()),
            );
        }
        d.finish()
    }
}

// === impl TypeResources ===

impl TypeResources {
    /// Version of this type's full content (state-of-the-world `version_info`).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Number of resources.
    pub fn len(&self) -> usize {
        self.resources.len()
    }

    /// Whether there are no resources of this type.
    pub fn is_empty(&self) -> bool {
        self.resources.is_empty()
    }

    /// One resource by name.
    pub fn get(&self, name: &str) -> Option<&Arc<Resource>> {
        self.resources.get(name)
    }

    /// Whether a resource of that name exists.
    pub fn contains(&self, name: &str) -> bool {
        self.resources.contains_key(name)
    }

    /// Resources sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Resource>> {
        self.resources.values()
    }

    /// Resource names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &Arc<str>> {
        self.resources.keys()
    }
}

// === impl SnapshotBuilder ===

impl SnapshotBuilder {
    /// Adds a CDS resource (named by `Cluster.name`).
    pub fn add_cluster(self, c: Cluster) -> Self {
        let name = c.name.clone();
        self.push(ResourceType::Cluster, name, pack_any(c))
    }

    /// Adds an EDS resource (named by `ClusterLoadAssignment.cluster_name`,
    /// which must match the cluster's name or its EDS `service_name`).
    pub fn add_cluster_load_assignment(self, cla: ClusterLoadAssignment) -> Self {
        let name = cla.cluster_name.clone();
        self.push(ResourceType::Endpoint, name, pack_any(cla))
    }

    /// Adds an LDS resource (named by `Listener.name`).
    pub fn add_listener(self, l: Listener) -> Self {
        let name = l.name.clone();
        self.push(ResourceType::Listener, name, pack_any(l))
    }

    /// Adds an RDS resource (named by `RouteConfiguration.name`).
    pub fn add_route_configuration(self, r: RouteConfiguration) -> Self {
        let name = r.name.clone();
        self.push(ResourceType::Route, name, pack_any(r))
    }

    /// Adds an SDS resource (named by `Secret.name`).
    pub fn add_secret(self, s: Secret) -> Self {
        let name = s.name.clone();
        self.push(ResourceType::Secret, name, pack_any(s))
    }

    /// Adds an already packed resource of the given type URL. `any.type_url`
    /// must equal `type_url`; errors surface from [`build`](Self::build).
    pub fn add_any(mut self, type_url: &str, name: impl Into<String>, any: Any) -> Self {
        let name = name.into();
        match ResourceType::from_type_url(type_url) {
            None => {
                self.errors
                    .push(SnapshotError::UnsupportedType(type_url.to_owned()));
                self
            }
            Some(ty) => self.push(ty, name, any),
        }
    }

    /// Sets [`Snapshot::created_at`]; defaults to the instant `build` runs.
    pub fn created_at(mut self, at: Instant) -> Self {
        self.created_at = Some(at);
        self
    }

    /// Reuses the resources of `previous` (the node's last snapshot) whose encoding is
    /// byte-identical to the new one: they are shared, not hashed or inspected again. A
    /// mesh-wide route change re-translates every node, but only its route configurations
    /// differ; the clusters and listeners are taken over as they were.
    pub fn previous(mut self, previous: Option<Arc<Snapshot>>) -> Self {
        self.previous = previous;
        self
    }

    /// Validates (unique non-empty names per type, matching type URLs), hashes
    /// every resource and type, and freezes the snapshot. Reports every problem.
    pub fn build(self) -> Result<Snapshot, Vec<SnapshotError>> {
        let mut errors = self.errors;
        let mut maps: [BTreeMap<Arc<str>, Arc<Resource>>; 5] = Default::default();
        for (ty, name, any) in self.items {
            if any.type_url != ty.type_url() {
                errors.push(SnapshotError::TypeMismatch {
                    name,
                    expected: ty.type_url(),
                    actual: any.type_url,
                });
                continue;
            }
            if name.is_empty() {
                errors.push(SnapshotError::EmptyName(ty.type_url()));
                continue;
            }
            let map = &mut maps[ty as usize];
            if map.contains_key(name.as_str()) {
                errors.push(SnapshotError::Duplicate {
                    type_url: ty.type_url(),
                    name,
                });
                continue;
            }
            let same = self
                .previous
                .as_ref()
                .and_then(|p| p.get(ty, &name))
                .filter(|r| r.any().value == any.value);
            let res = match same {
                Some(r) => r.clone(),
                None => Arc::new(Resource::new(name, any)),
            };
            map.insert(res.name_arc().clone(), res);
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(freeze(maps, self.created_at.unwrap_or_else(Instant::now)))
    }

    fn push(mut self, ty: ResourceType, name: String, any: Any) -> Self {
        self.items.push((ty, name, any));
        self
    }
}

/// The version of a list of resources of one type, sorted by name: the same
/// function gives [`Snapshot::version`] for the full set, so a
/// state-of-the-world response carrying every resource has the type's version.
pub(crate) fn list_version<'a>(
    ty: ResourceType,
    resources: impl IntoIterator<Item = &'a Resource>,
) -> String {
    let mut h = ListHasher::new(ty.type_url());
    for r in resources {
        h.add(r.name(), r.version());
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::CLUSTER_TYPE_URL;

    fn cluster(name: &str, ms: i64) -> Cluster {
        Cluster {
            name: name.into(),
            connect_timeout: Some(envoy_types::pb::google::protobuf::Duration {
                seconds: 0,
                nanos: (ms * 1_000_000) as i32,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn type_version_depends_on_content_only() {
        let a = Snapshot::builder()
            .add_cluster(cluster("a", 1))
            .add_cluster(cluster("b", 1));
        let b = Snapshot::builder()
            .add_cluster(cluster("b", 1))
            .add_cluster(cluster("a", 1));
        let (a, b) = (a.build().unwrap(), b.build().unwrap());
        assert_eq!(
            a.version(ResourceType::Cluster),
            b.version(ResourceType::Cluster)
        );
        let c = Snapshot::builder()
            .add_cluster(cluster("a", 2))
            .add_cluster(cluster("b", 1));
        let c = c.build().unwrap();
        assert_ne!(
            a.version(ResourceType::Cluster),
            c.version(ResourceType::Cluster)
        );
        assert_eq!(
            a.get(ResourceType::Cluster, "b").unwrap().version(),
            c.get(ResourceType::Cluster, "b").unwrap().version()
        );
        // Empty types of different kinds still get distinct versions.
        assert_ne!(
            a.version(ResourceType::Listener),
            a.version(ResourceType::Route)
        );
    }

    #[test]
    fn reports_every_error() {
        let err = Snapshot::builder()
            .add_cluster(cluster("a", 1))
            .add_cluster(cluster("a", 2))
            .add_cluster(cluster("", 2))
            .add_any("type.googleapis.com/nope", "x", Any::default())
            .add_any(
                CLUSTER_TYPE_URL,
                "y",
                Any {
                    type_url: "other".into(),
                    value: vec![],
                },
            )
            .build()
            .unwrap_err();
        assert_eq!(err.len(), 4, "{err:?}");
    }

    #[test]
    fn from_resources_matches_builder() {
        let c = cluster("a", 1);
        let a = Snapshot::from_resources([(
            CLUSTER_TYPE_URL.to_owned(),
            "a".to_owned(),
            pack_any(c.clone()),
        )])
        .unwrap();
        let b = Snapshot::builder().add_cluster(c).build().unwrap();
        assert_eq!(
            a.version(ResourceType::Cluster),
            b.version(ResourceType::Cluster)
        );
    }

    #[test]
    fn previous_snapshot_shares_identical_resources_only() {
        let prev = Arc::new(
            Snapshot::builder()
                .add_cluster(cluster("a", 1))
                .add_cluster(cluster("b", 1))
                .build()
                .unwrap(),
        );
        let next = Snapshot::builder()
            .previous(Some(prev.clone()))
            .add_cluster(cluster("a", 1))
            .add_cluster(cluster("b", 2))
            .add_cluster(cluster("c", 1))
            .build()
            .unwrap();
        let fresh = Snapshot::builder()
            .add_cluster(cluster("a", 1))
            .add_cluster(cluster("b", 2))
            .add_cluster(cluster("c", 1))
            .build()
            .unwrap();
        let get = |s: &Snapshot, n: &str| s.get(ResourceType::Cluster, n).unwrap().clone();
        assert!(Arc::ptr_eq(&get(&prev, "a"), &get(&next, "a")));
        assert!(!Arc::ptr_eq(&get(&prev, "b"), &get(&next, "b")));
        assert_ne!(get(&prev, "b").version(), get(&next, "b").version());
        // Reuse changes nothing visible: same versions as a snapshot built from scratch.
        for n in ["a", "b", "c"] {
            assert_eq!(get(&next, n).version(), get(&fresh, n).version());
        }
        assert_eq!(
            next.version(ResourceType::Cluster),
            fresh.version(ResourceType::Cluster)
        );
    }
}
