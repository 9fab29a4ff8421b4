//! Endpoint input for EDS: service-registry (Cloud Map-compatible) instances.
//!
//! Virtual nodes with `dns` service discovery become `LOGICAL_DNS`/`STRICT_DNS` clusters and
//! need nothing from here. Nodes with `awsCloudMap` discovery become EDS clusters whose
//! `ClusterLoadAssignment` is built from the instances registered under the node's
//! `(namespaceName, serviceName)`, filtered by the node's `attributes` (every key/value must
//! match, as in App Mesh). The discovery component owns the registry and passes a snapshot of
//! it here; translation stays pure.

use std::collections::BTreeMap;

/// A Cloud Map service: `(namespaceName, serviceName)`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CloudMapService {
    /// Cloud Map namespace name (e.g. `apps.local`).
    pub namespace: String,
    /// Cloud Map service name within the namespace.
    pub service: String,
}

impl CloudMapService {
    /// Convenience constructor.
    pub fn new(namespace: impl Into<String>, service: impl Into<String>) -> Self {
        CloudMapService {
            namespace: namespace.into(),
            service: service.into(),
        }
    }
}

/// One registered instance. Instances without a valid IP address (in the preferred family or
/// the other one) are left out of the assignment: Envoy rejects EDS hosts that are not IPs.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instance {
    /// Instance id (unique within the service); used for ordering only.
    pub id: String,
    /// `AWS_INSTANCE_IPV4`.
    pub ipv4: Option<String>,
    /// `AWS_INSTANCE_IPV6`.
    pub ipv6: Option<String>,
    /// `AWS_INSTANCE_PORT`; when `None` the target listener's port is used.
    pub port: Option<u32>,
    /// All custom attributes (matched against the node's `attributes`).
    pub attributes: BTreeMap<String, String>,
    /// Health as reported by the registry. Unhealthy instances are left out of the assignment,
    /// unless none of the matching instances is healthy: then all are sent, marked `UNHEALTHY`
    /// (Envoy's panic mode balances over them: fail-open, like `HEALTHY_OR_ELSE_ALL`).
    pub healthy: bool,
}

/// A snapshot of the endpoint registry: instances per Cloud Map service.
///
/// Build it with [`Endpoints::insert`] or fill [`Endpoints::services`] directly. An absent
/// service is treated as having no instances (the EDS cluster gets an empty assignment).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Endpoints {
    /// Instances per service; order inside a service does not matter (output is sorted).
    pub services: BTreeMap<CloudMapService, Vec<Instance>>,
}

impl Endpoints {
    /// No instances at all (DNS-only meshes).
    pub fn none() -> Self {
        Self::default()
    }

    /// Adds an instance to a service.
    pub fn insert(&mut self, service: CloudMapService, instance: Instance) {
        self.services.entry(service).or_default().push(instance);
    }

    /// Instances of `service` whose attributes contain every `(key, value)` in `filter`,
    /// sorted by id.
    pub fn matching(
        &self,
        service: &CloudMapService,
        filter: &[(String, String)],
    ) -> Vec<&Instance> {
        let mut out: Vec<&Instance> = self
            .services
            .get(service)
            .map(|v| {
                v.iter()
                    .filter(|i| {
                        filter
                            .iter()
                            .all(|(k, val)| i.attributes.get(k) == Some(val))
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }
}
