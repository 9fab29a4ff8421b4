//! Seeing what the control plane did: xDS metrics, the proxy-status view, and the live
//! members added to a virtual node's API status (connected proxies, rejected config,
//! translation diagnostics).

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use meshplane_model::{NodeId, ProxyKind, ResourceId, ResourceKind};
use meshplane_rest::StatusExtension;
use meshplane_xds::{NodeKey, ProxyStatus, XdsEvent, XdsEventObserver, XdsServer};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde_json::{Map, Value, json};

use crate::reconcile::SharedState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProxyLabels {
    node: String,
    flavor: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TypeLabels {
    r#type: &'static str,
}

/// Prometheus metrics fed from the xDS server's event stream.
pub struct XdsMetrics {
    /// One series per node id and flavour with a connected stream; the series is removed
    /// with the last such stream, so node ids that came and went leave nothing behind.
    connected: Family<ProxyLabels, Gauge>,
    /// Serialises changes of `connected`, so a connect cannot land between a disconnect's
    /// decrement to zero and its removal of the series.
    connected_lock: Mutex<()>,
    pushes: Family<TypeLabels, Counter>,
    bytes: Family<TypeLabels, Counter>,
    acks: Family<TypeLabels, Counter>,
    nacks: Family<TypeLabels, Counter>,
    convergence: Family<TypeLabels, Histogram>,
}

impl XdsMetrics {
    /// Registers `meshplane_xds_*` metrics.
    pub fn register(reg: &mut Registry) -> Arc<XdsMetrics> {
        let m = XdsMetrics {
            connected: Family::default(),
            connected_lock: Mutex::new(()),
            pushes: Family::default(),
            bytes: Family::default(),
            acks: Family::default(),
            nacks: Family::default(),
            // 1 ms .. ~65 s: from a store write to the proxy's ACK.
            convergence: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.001, 2.0, 17))
            }),
        };
        reg.register(
            "meshplane_xds_connected_proxies",
            "Connected ADS streams by node and xDS flavour",
            m.connected.clone(),
        );
        reg.register(
            "meshplane_xds_pushes",
            "xDS responses sent by type",
            m.pushes.clone(),
        );
        reg.register(
            "meshplane_xds_push_bytes",
            "Encoded resource bytes sent by type",
            m.bytes.clone(),
        );
        reg.register(
            "meshplane_xds_acks",
            "ACKs received by type",
            m.acks.clone(),
        );
        reg.register(
            "meshplane_xds_nacks",
            "NACKs (rejected configuration) received by type",
            m.nacks.clone(),
        );
        reg.register(
            "meshplane_xds_convergence_seconds",
            "Time from the store write to the proxy's ACK of the resulting configuration, by type",
            m.convergence.clone(),
        );
        Arc::new(m)
    }
}

/// Fed inline by every stream (not through the lossy broadcast channel): a count that
/// misses events under load would be worse than none, and a connected-proxies gauge that
/// missed a disconnect would never recover.
impl XdsEventObserver for XdsMetrics {
    fn observe(&self, ev: &XdsEvent) {
        let flavor = |f| match f {
            meshplane_xds::XdsFlavor::Sotw => "sotw",
            meshplane_xds::XdsFlavor::Delta => "delta",
        };
        match ev {
            XdsEvent::Connected(s) => {
                let labels = ProxyLabels {
                    node: s.node_id.to_string(),
                    flavor: flavor(s.flavor),
                };
                let _guard = self
                    .connected_lock
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                self.connected.get_or_create(&labels).inc();
            }
            XdsEvent::Disconnected(s) => {
                let labels = ProxyLabels {
                    node: s.node_id.to_string(),
                    flavor: flavor(s.flavor),
                };
                let _guard = self
                    .connected_lock
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                // `dec` returns the value before the decrement.
                if self.connected.get_or_create(&labels).dec() <= 1 {
                    self.connected.remove(&labels);
                }
            }
            XdsEvent::Sent { ty, bytes, .. } => {
                let l = TypeLabels {
                    r#type: ty.short_name(),
                };
                self.pushes.get_or_create(&l).inc();
                self.bytes.get_or_create(&l).inc_by(*bytes as u64);
            }
            XdsEvent::Acked {
                ty, since_snapshot, ..
            } => {
                let l = TypeLabels {
                    r#type: ty.short_name(),
                };
                self.acks.get_or_create(&l).inc();
                self.convergence
                    .get_or_create(&l)
                    .observe(since_snapshot.as_secs_f64());
            }
            XdsEvent::Nacked { ty, .. } => {
                self.nacks
                    .get_or_create(&TypeLabels {
                        r#type: ty.short_name(),
                    })
                    .inc();
            }
        }
    }
}

fn epoch(t: SystemTime) -> Value {
    json!(
        t.duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| (d.as_millis() as f64) / 1000.0)
    )
}

/// One proxy's status as JSON (used by `/meshplane/v1/proxy-status` and the CLI).
pub fn proxy_status_json(p: &ProxyStatus) -> Value {
    let types: Vec<Value> = p
        .types
        .iter()
        .map(|t| {
            let mut o = json!({
                "type": t.ty.short_name(),
                "sentVersion": t.sent_version,
                "ackedVersion": t.acked_version,
                "inSync": t.sent_version.is_some() && t.sent_version == t.acked_version,
                "pushes": t.pushes,
                "bytesSent": t.bytes_sent,
                "acks": t.acks,
                "nacks": t.nacks,
            });
            // Epoch seconds (ms precision): lets tools compute write -> ACK per proxy.
            if let Some(at) = t.sent_at {
                o["sentAt"] = epoch(at);
            }
            if let Some(at) = t.acked_at {
                o["ackedAt"] = epoch(at);
            }
            if let Some(n) = &t.last_nack {
                o["lastNack"] =
                    json!({"version": n.version, "message": n.message, "at": epoch(n.at)});
            }
            o
        })
        .collect();
    json!({
        "node": &*p.stream.node_id,
        "stream": p.stream.id,
        "flavor": match p.stream.flavor { meshplane_xds::XdsFlavor::Sotw => "sotw", meshplane_xds::XdsFlavor::Delta => "delta" },
        "peer": p.stream.peer.map(|a| a.to_string()),
        "connectedAt": epoch(p.stream.connected_at),
        "tokenId": p.stream.token_id.as_deref(),
        "types": types,
    })
}

/// Adds `proxies`, `rejectedConfig` and `diagnostics` to a virtual node's or gateway's API
/// status.
pub struct ProxyStatusExtension {
    pub server: XdsServer,
    pub state: SharedState,
}

impl StatusExtension for ProxyStatusExtension {
    fn status_members(&self, id: &ResourceId) -> Option<Map<String, Value>> {
        let kind = match id.kind {
            ResourceKind::VirtualNode => ProxyKind::VirtualNode,
            ResourceKind::VirtualGateway => ProxyKind::VirtualGateway,
            _ => return None,
        };
        let key = NodeKey::from(NodeId {
            mesh: id.mesh.clone(),
            owner: None,
            kind,
            name: id.name.clone(),
        });
        let proxies = self.server.node_status(&key);
        let mut out = Map::new();
        let synced = proxies
            .iter()
            .filter(|p| {
                p.types
                    .iter()
                    .all(|t| t.sent_version.is_some() && t.sent_version == t.acked_version)
            })
            .count();
        out.insert(
            "proxies".into(),
            json!({"connected": proxies.len(), "inSync": synced}),
        );
        // The newest rejection that is still current (the proxy has not accepted that type since).
        let rejected = proxies
            .iter()
            .flat_map(|p| p.types.iter().map(move |t| (p, t)))
            .filter_map(|(p, t)| {
                t.last_nack
                    .as_ref()
                    .filter(|n| t.sent_version.as_deref() == Some(n.version.as_str()))
                    .map(|n| (p, t, n))
            })
            .max_by_key(|(_, _, n)| n.at);
        if let Some((p, t, n)) = rejected {
            out.insert(
                "rejectedConfig".into(),
                json!({"proxy": &*p.stream.node_id, "type": t.ty.short_name(), "version": n.version, "message": n.message, "at": epoch(n.at)}),
            );
        }
        let diags = self
            .state
            .read()
            .map(|s| s.diagnostics(&id.mesh, kind, &id.name))
            .unwrap_or_default();
        if !diags.is_empty() {
            let d: Vec<Value> = diags.iter().map(|d| json!({"severity": format!("{:?}", d.severity).to_lowercase(), "message": d.message})).collect();
            out.insert("diagnostics".into(), Value::Array(d));
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use meshplane_xds::{StreamInfo, XdsFlavor};

    use super::*;

    fn info(id: u64, node: &str) -> Arc<StreamInfo> {
        Arc::new(StreamInfo {
            id,
            node_id: node.into(),
            node_key: None,
            flavor: XdsFlavor::Sotw,
            peer: None,
            connected_at: SystemTime::now(),
            token_id: None,
        })
    }

    fn encode(reg: &Registry) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, reg).unwrap();
        out
    }

    /// A node's `connected_proxies` series goes with its last stream, not before.
    #[test]
    fn connected_series_is_removed_with_the_last_stream() {
        let mut reg = Registry::default();
        let m = XdsMetrics::register(&mut reg);
        let baseline = encode(&reg);
        let (a, b) = (
            info(1, "mesh/m/virtualNode/a"),
            info(2, "mesh/m/virtualNode/a"),
        );
        m.observe(&XdsEvent::Connected(a.clone()));
        m.observe(&XdsEvent::Connected(b.clone()));
        m.observe(&XdsEvent::Disconnected(a));
        let one_left = encode(&reg);
        assert!(
            one_left.contains(
                r#"meshplane_xds_connected_proxies{node="mesh/m/virtualNode/a",flavor="sotw"} 1"#
            ),
            "{one_left}"
        );
        m.observe(&XdsEvent::Disconnected(b));
        for i in 0..1000 {
            let s = info(10 + i, &format!("mesh/m/virtualNode/made-up-{i}"));
            m.observe(&XdsEvent::Connected(s.clone()));
            m.observe(&XdsEvent::Disconnected(s));
        }
        assert_eq!(encode(&reg), baseline);
    }

    /// Proxy status JSON names the node token a stream authenticated with (null without auth).
    #[test]
    fn proxy_status_json_shows_the_token_id() {
        let mut with = (*info(1, "mesh/m/virtualNode/a")).clone();
        with.token_id = Some("tid-123".into());
        let p = meshplane_xds::ProxyStatus {
            stream: Arc::new(with),
            types: Vec::new(),
        };
        assert_eq!(proxy_status_json(&p)["tokenId"], "tid-123");
        let p = meshplane_xds::ProxyStatus {
            stream: info(2, "mesh/m/virtualNode/a"),
            types: Vec::new(),
        };
        assert!(proxy_status_json(&p)["tokenId"].is_null());
    }
}
