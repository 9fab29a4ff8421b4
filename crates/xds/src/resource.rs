//! xDS resource types, their type URLs and wire order, and one pre-encoded resource.

use std::fmt;
use std::sync::Arc;

use envoy_types::pb::google::protobuf::Any;
use sha2::{Digest, Sha256};

/// Type URL of `envoy.config.cluster.v3.Cluster` (CDS).
pub const CLUSTER_TYPE_URL: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
/// Type URL of `envoy.config.endpoint.v3.ClusterLoadAssignment` (EDS).
pub const ENDPOINT_TYPE_URL: &str =
    "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
/// Type URL of `envoy.config.listener.v3.Listener` (LDS).
pub const LISTENER_TYPE_URL: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
/// Type URL of `envoy.config.route.v3.RouteConfiguration` (RDS).
pub const ROUTE_TYPE_URL: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
/// Type URL of `envoy.extensions.transport_sockets.tls.v3.Secret` (SDS).
pub const SECRET_TYPE_URL: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

/// The five xDS resource types this server serves.
///
/// The declaration order is the **wire order** ("make before break"): on a
/// snapshot change a stream sends CDS, then EDS, then LDS, then RDS, then SDS
/// (and, in state-of-the-world, a CDS that only removes clusters last).
/// `ResourceType::ALL` iterates in that order; `as usize` indexes per-type arrays.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceType {
    /// CDS, [`CLUSTER_TYPE_URL`]. Wildcard-subscribed by Envoy.
    Cluster = 0,
    /// EDS, [`ENDPOINT_TYPE_URL`]. Subscribed by name (cluster or `service_name`).
    Endpoint = 1,
    /// LDS, [`LISTENER_TYPE_URL`]. Wildcard-subscribed by Envoy.
    Listener = 2,
    /// RDS, [`ROUTE_TYPE_URL`]. Subscribed by route-configuration name.
    Route = 3,
    /// SDS, [`SECRET_TYPE_URL`]. Subscribed by secret name.
    Secret = 4,
}

/// A resource packed once: name, content-hash version and the encoded `Any`.
///
/// Shared (`Arc`) between the [`Snapshot`](crate::Snapshot) and every stream
/// sending it; a stream never re-encodes a resource.
#[derive(Clone, PartialEq)]
pub struct Resource {
    name: Arc<str>,
    version: Arc<str>,
    any: Any,
    eds_name: Option<Arc<str>>,
}

// === impl ResourceType ===

impl ResourceType {
    /// All types, in wire order.
    pub const ALL: [ResourceType; 5] = [
        ResourceType::Cluster,
        ResourceType::Endpoint,
        ResourceType::Listener,
        ResourceType::Route,
        ResourceType::Secret,
    ];

    /// The type URL Envoy uses in requests and expects in responses.
    pub fn type_url(self) -> &'static str {
        match self {
            ResourceType::Cluster => CLUSTER_TYPE_URL,
            ResourceType::Endpoint => ENDPOINT_TYPE_URL,
            ResourceType::Listener => LISTENER_TYPE_URL,
            ResourceType::Route => ROUTE_TYPE_URL,
            ResourceType::Secret => SECRET_TYPE_URL,
        }
    }

    /// The type for a type URL, or `None` for types this server does not serve.
    pub fn from_type_url(url: &str) -> Option<ResourceType> {
        ResourceType::ALL.into_iter().find(|t| t.type_url() == url)
    }

    /// Short name for logs and metrics labels: `cds`, `eds`, `lds`, `rds`, `sds`.
    pub fn short_name(self) -> &'static str {
        match self {
            ResourceType::Cluster => "cds",
            ResourceType::Endpoint => "eds",
            ResourceType::Listener => "lds",
            ResourceType::Route => "rds",
            ResourceType::Secret => "sds",
        }
    }

    /// Whether Envoy subscribes to this type as a wildcard (all resources), which
    /// also means state-of-the-world responses must carry the full set and delta
    /// removals are sent as `removed_resources`.
    pub fn is_wildcard_type(self) -> bool {
        matches!(self, ResourceType::Cluster | ResourceType::Listener)
    }
}

impl fmt::Display for ResourceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.short_name())
    }
}

// === impl Resource ===

impl Resource {
    /// Wraps an already packed resource; computes its version from the bytes.
    ///
    /// The version is a content hash of the type URL and encoded value, so the
    /// same content always gets the same version (also across restarts and
    /// replicas) and different content never shares one.
    pub fn new(name: impl Into<Arc<str>>, any: Any) -> Resource {
        let name = name.into();
        let version = content_hash(&[any.type_url.as_bytes(), &any.value]);
        let eds_name = (any.type_url == CLUSTER_TYPE_URL)
            .then(|| eds_name(&name, &any.value))
            .flatten();
        Resource {
            name,
            version: version.into(),
            any,
            eds_name,
        }
    }

    /// For an EDS cluster: the `ClusterLoadAssignment` name it subscribes to
    /// (`eds_cluster_config.service_name`, else the cluster name). The server
    /// re-sends that assignment whenever it sends a new version of the cluster,
    /// because Envoy finishes warming a cluster only on a fresh EDS response.
    pub fn eds_service_name(&self) -> Option<&Arc<str>> {
        self.eds_name.as_ref()
    }

    /// The resource name (Cluster/Listener/RouteConfiguration/Secret `name`,
    /// ClusterLoadAssignment `cluster_name`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Shared handle on the name (cheap clone).
    pub fn name_arc(&self) -> &Arc<str> {
        &self.name
    }

    /// The per-resource version: 32 hex chars of SHA-256 over type URL and bytes.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Shared handle on the version (cheap clone).
    pub fn version_arc(&self) -> &Arc<str> {
        &self.version
    }

    /// The packed resource as sent on the wire.
    pub fn any(&self) -> &Any {
        &self.any
    }

    /// Size of the encoded resource in bytes.
    pub fn encoded_len(&self) -> usize {
        self.any.value.len()
    }
}

impl fmt::Debug for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resource")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("type_url", &self.any.type_url)
            .field("bytes", &self.any.value.len())
            .finish()
    }
}

fn eds_name(name: &Arc<str>, bytes: &[u8]) -> Option<Arc<str>> {
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    use envoy_types::pb::envoy::config::cluster::v3::cluster::{
        ClusterDiscoveryType, DiscoveryType,
    };
    use prost::Message;

    let cluster = Cluster::decode(bytes).ok()?;
    match cluster.cluster_discovery_type {
        Some(ClusterDiscoveryType::Type(t)) if t == DiscoveryType::Eds as i32 => {}
        _ => return None,
    }
    let service = cluster
        .eds_cluster_config
        .map(|e| e.service_name)
        .unwrap_or_default();
    Some(if service.is_empty() {
        name.clone()
    } else {
        service.into()
    })
}

/// Hex of the first 16 bytes of SHA-256 over the given parts, each
/// length-prefixed so that part boundaries are unambiguous.
pub(crate) fn content_hash(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    hex(&h.finalize()[..16])
}

/// Incremental variant of [`content_hash`] for lists of (name, version).
pub(crate) struct ListHasher(Sha256);

impl ListHasher {
    pub(crate) fn new(tag: &str) -> ListHasher {
        let mut h = Sha256::new();
        h.update((tag.len() as u64).to_le_bytes());
        h.update(tag.as_bytes());
        ListHasher(h)
    }

    pub(crate) fn add(&mut self, name: &str, version: &str) {
        for p in [name.as_bytes(), version.as_bytes()] {
            self.0.update((p.len() as u64).to_le_bytes());
            self.0.update(p);
        }
    }

    pub(crate) fn finish(self) -> String {
        hex(&self.0.finalize()[..16])
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 0xf) as usize] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_urls_round_trip_in_wire_order() {
        for (i, t) in ResourceType::ALL.into_iter().enumerate() {
            assert_eq!(t as usize, i);
            assert_eq!(ResourceType::from_type_url(t.type_url()), Some(t));
        }
        assert_eq!(ResourceType::from_type_url("type.googleapis.com/x"), None);
    }

    #[test]
    fn versions_are_content_hashes() {
        let a = Resource::new(
            "a",
            Any {
                type_url: CLUSTER_TYPE_URL.into(),
                value: vec![1, 2],
            },
        );
        let b = Resource::new(
            "b",
            Any {
                type_url: CLUSTER_TYPE_URL.into(),
                value: vec![1, 2],
            },
        );
        let c = Resource::new(
            "a",
            Any {
                type_url: CLUSTER_TYPE_URL.into(),
                value: vec![1, 3],
            },
        );
        assert_eq!(a.version(), b.version());
        assert_ne!(a.version(), c.version());
        assert_eq!(a.version().len(), 32);
        // Length prefixes keep part boundaries: ("ab","c") != ("a","bc").
        assert_ne!(content_hash(&[b"ab", b"c"]), content_hash(&[b"a", b"bc"]));
    }

    #[test]
    fn eds_clusters_know_their_assignment_name() {
        use envoy_types::pb::envoy::config::cluster::v3::Cluster;
        use envoy_types::pb::envoy::config::cluster::v3::cluster::{
            ClusterDiscoveryType, DiscoveryType, EdsClusterConfig,
        };
        use envoy_types::util::pack_any;
        let eds = |service: &str| Cluster {
            name: "c".into(),
            cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
            eds_cluster_config: Some(EdsClusterConfig {
                eds_config: None,
                service_name: service.into(),
            }),
            ..Default::default()
        };
        let name = |c: Cluster| Resource::new("c", pack_any(c)).eds_service_name().cloned();
        assert_eq!(name(eds("")).as_deref(), Some("c"));
        assert_eq!(name(eds("svc")).as_deref(), Some("svc"));
        let strict_dns = Cluster {
            name: "c".into(),
            cluster_discovery_type: Some(ClusterDiscoveryType::Type(
                DiscoveryType::StrictDns as i32,
            )),
            ..Default::default()
        };
        assert_eq!(name(strict_dns), None);
    }
}
