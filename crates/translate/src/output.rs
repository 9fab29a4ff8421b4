//! What translation produces: Envoy resources per xDS type, keyed by resource name, plus
//! diagnostics that say where and why the output departs from the declared mesh.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
use envoy_types::pb::google::protobuf::Any;
use meshplane_model::ResourceId;
use prost::Name;

/// xDS type URL of `Cluster` (CDS).
pub const CLUSTER_TYPE_URL: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
/// xDS type URL of `ClusterLoadAssignment` (EDS).
pub const ENDPOINT_TYPE_URL: &str =
    "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
/// xDS type URL of `Listener` (LDS).
pub const LISTENER_TYPE_URL: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
/// xDS type URL of `RouteConfiguration` (RDS).
pub const ROUTE_TYPE_URL: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
/// xDS type URL of `Secret` (SDS).
pub const SECRET_TYPE_URL: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

/// The complete configuration of one proxy (all Envoys of one virtual node share it).
///
/// Each map is the full state of the world for its xDS type, keyed by resource name
/// (the name inside the message is the same string). `BTreeMap`s keep iteration and
/// therefore encoding order deterministic: two translations of the same input encode to
/// the same bytes, so a content hash is a valid version.
///
/// Invariants (relied upon by the xDS server):
/// - every cluster of type EDS has an entry in [`Self::endpoints`] (possibly empty);
/// - every RDS name referenced by a listener has an entry in [`Self::route_configs`];
/// - every cluster referenced by a route or a TCP proxy exists in [`Self::clusters`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProxyConfig {
    /// CDS.
    pub clusters: BTreeMap<String, Cluster>,
    /// EDS, keyed by cluster name.
    pub endpoints: BTreeMap<String, ClusterLoadAssignment>,
    /// LDS.
    pub listeners: BTreeMap<String, Listener>,
    /// RDS.
    pub route_configs: BTreeMap<String, RouteConfiguration>,
    /// SDS (empty until TLS is translated).
    pub secrets: BTreeMap<String, Secret>,
    /// Why the output differs from what the mesh declares, in the order found.
    pub diagnostics: Vec<Diagnostic>,
}

impl ProxyConfig {
    /// Every resource as `(type URL, name, Any)`, types in xDS push order (CDS, EDS, LDS,
    /// RDS, SDS) and names in byte order within a type.
    pub fn resources(&self) -> Vec<(&'static str, &str, Any)> {
        fn push<'a, T: prost::Message + Name>(
            out: &mut Vec<(&'static str, &'a str, Any)>,
            url: &'static str,
            map: &'a BTreeMap<String, T>,
        ) {
            for (name, m) in map {
                out.push((url, name.as_str(), crate::pb::any(m)));
            }
        }
        let mut out = Vec::new();
        push(&mut out, CLUSTER_TYPE_URL, &self.clusters);
        push(&mut out, ENDPOINT_TYPE_URL, &self.endpoints);
        push(&mut out, LISTENER_TYPE_URL, &self.listeners);
        push(&mut out, ROUTE_TYPE_URL, &self.route_configs);
        push(&mut out, SECRET_TYPE_URL, &self.secrets);
        out
    }

    /// A content version for one xDS type: the hex SHA-256 of every `(name, encoding)` of
    /// that type, in name order. Equal configurations give equal versions in any process
    /// (translation is deterministic), different ones differ, so it is safe to use as the
    /// xDS `version_info` across restarts and replicas.
    pub fn version_of(&self, type_url: &str) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for (t, name, any) in self.resources() {
            if t == type_url {
                h.update((name.len() as u64).to_be_bytes());
                h.update(name.as_bytes());
                h.update((any.value.len() as u64).to_be_bytes());
                h.update(&any.value);
            }
        }
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// True when some diagnostic has [`Severity::Error`].
    pub fn has_errors(&self) -> bool {
        self.diagnostics
            .iter()
            .any(|d| d.severity == Severity::Error)
    }
}

/// How bad a diagnostic is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// Worth knowing; the output is what the mesh asks for.
    Info,
    /// Part of the declared mesh could not be honoured; the rest is served.
    Warning,
    /// The proxy gets no or materially wrong configuration for part of what it declares.
    Error,
}

/// A machine-readable diagnostic kind (stable: the reconciler maps these to resource status).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DiagnosticCode {
    /// The proxy's own virtual node or gateway does not exist in the snapshot.
    ProxyResourceMissing,
    /// The proxy's mesh is not the snapshot's mesh.
    MeshMismatch,
    /// The mesh resource itself is missing (defaults are used).
    MeshMissing,
    /// A backend virtual service does not exist.
    BackendServiceMissing,
    /// A virtual service has no provider.
    ProviderMissing,
    /// A virtual service's provider (node or router) does not exist.
    ProviderNotFound,
    /// A route's weighted target names a virtual node that does not exist.
    TargetNodeMissing,
    /// A target node has no listener matching the target (or the route's) port.
    TargetListenerMissing,
    /// A target node has no (usable) service discovery.
    ServiceDiscoveryMissing,
    /// A route matched no listener of its router, or has no/unknown route kind.
    RouteNotApplicable,
    /// A route has no target left (missing nodes or all weights zero).
    RouteHasNoTargets,
    /// Two backends want the same egress port with incompatible protocols (or two TCP
    /// backends share a port): only one of them can be reached.
    EgressPortConflict,
    /// A retry event the translator does not know; it is ignored.
    UnknownRetryEvent,
    /// TLS (listener or client policy) names a source that is not translated (an ACM
    /// certificate or private CA): the listener or backend fails closed.
    TlsNotTranslated,
    /// A router listener, virtual node listener or other value is unusable.
    InvalidValue,
}

/// One finding of a translation.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Diagnostic {
    /// How bad it is.
    pub severity: Severity,
    /// What kind of problem it is.
    pub code: DiagnosticCode,
    /// The resource whose declaration could not be honoured (e.g. the route whose target is
    /// missing), when there is one.
    pub resource: Option<ResourceId>,
    /// A human-readable sentence naming the missing or offending resource.
    pub message: String,
}

impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} {:?}", self.severity, self.code)?;
        if let Some(r) = &self.resource {
            write!(f, " [{r}]")?;
        }
        write!(f, ": {}", self.message)
    }
}
