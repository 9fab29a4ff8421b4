//! The registry as the translator sees it: instance records folded into
//! [`meshplane_translate::Endpoints`], kept up to date from store events.

use std::collections::{BTreeMap, BTreeSet};

use meshplane_translate::{CloudMapService, Endpoints, Instance};

use crate::keys::{self, Health, InstanceRecord};

/// Instances by store key; turns store events into the set of services they changed.
#[derive(Clone, Debug, Default)]
pub struct EndpointIndex {
    by_key: BTreeMap<String, (CloudMapService, Instance)>,
}

/// The translator's view of one instance record: address attributes, port, every
/// attribute (for `awsCloudMap.attributes` filters) and health (`UNHEALTHY` only when the
/// custom health status says so).
pub fn to_instance(rec: &InstanceRecord) -> (CloudMapService, Instance) {
    let a = &rec.attributes;
    (
        CloudMapService::new(&rec.namespace_name, &rec.service_name),
        Instance {
            id: rec.id.clone(),
            ipv4: a.get("AWS_INSTANCE_IPV4").cloned(),
            ipv6: a.get("AWS_INSTANCE_IPV6").cloned(),
            port: a.get("AWS_INSTANCE_PORT").and_then(|p| p.parse().ok()),
            attributes: a.clone(),
            healthy: rec.health != Some(Health::Unhealthy),
        },
    )
}

impl EndpointIndex {
    /// Whether `key` is an instance record key.
    pub fn is_instance_key(key: &str) -> bool {
        key.starts_with(keys::INSTANCES)
    }

    /// Applies a put of an instance record; returns the service whose endpoints changed
    /// (`None` when the translator-visible instance is unchanged, e.g. a lease renewal).
    pub fn put(&mut self, key: &str, value: &[u8]) -> Option<CloudMapService> {
        let rec: InstanceRecord = match serde_json::from_slice(value) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(key, error = %e, "undecodable instance record");
                return None;
            }
        };
        let (svc, inst) = to_instance(&rec);
        if self
            .by_key
            .get(key)
            .is_some_and(|(s, i)| *s == svc && *i == inst)
        {
            return None;
        }
        self.by_key.insert(key.to_owned(), (svc.clone(), inst));
        Some(svc)
    }

    /// Applies a delete; returns the service that lost an instance.
    pub fn delete(&mut self, key: &str) -> Option<CloudMapService> {
        self.by_key.remove(key).map(|(s, _)| s)
    }

    /// Replaces everything (after a full listing); returns every service that changed.
    pub fn reset<'a>(
        &mut self,
        items: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    ) -> BTreeSet<CloudMapService> {
        let old = std::mem::take(&mut self.by_key);
        for (k, v) in items {
            self.put(k, v);
        }
        let mut changed = BTreeSet::new();
        for (k, (s, i)) in &old {
            if self.by_key.get(k) != Some(&(s.clone(), i.clone())) {
                changed.insert(s.clone());
            }
        }
        for (k, (s, _)) in &self.by_key {
            if !old.contains_key(k) {
                changed.insert(s.clone());
            }
        }
        changed
    }

    /// The endpoint snapshot for translation.
    pub fn endpoints(&self) -> Endpoints {
        let mut e = Endpoints::none();
        for (s, i) in self.by_key.values() {
            e.insert(s.clone(), i.clone());
        }
        e
    }

    /// Number of instances known.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// True when no instance is known.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}
