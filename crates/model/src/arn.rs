//! ARNs (`arn:aws:appmesh:<region>:<account>:mesh/<mesh>/virtualNode/<name>`) and Envoy node ids.

use crate::{ResourceId, ResourceKind};

/// A parsed App Mesh ARN.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Arn {
    pub partition: String,
    pub region: String,
    pub account: String,
    pub id: ResourceId,
}

/// Why an ARN did not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid App Mesh ARN `{arn}`: {reason}")]
pub struct ArnError {
    pub arn: String,
    pub reason: &'static str,
}

impl Arn {
    /// Formats the ARN of `id`.
    pub fn format(partition: &str, region: &str, account: &str, id: &ResourceId) -> String {
        format!("arn:{partition}:appmesh:{region}:{account}:{}", id.path())
    }

    /// Parses an App Mesh ARN.
    pub fn parse(arn: &str) -> Result<Arn, ArnError> {
        let err = |reason| ArnError {
            arn: arn.to_owned(),
            reason,
        };
        let mut parts = arn.splitn(6, ':');
        if parts.next() != Some("arn") {
            return Err(err("must start with `arn:`"));
        }
        let partition = parts
            .next()
            .filter(|p| !p.is_empty())
            .ok_or_else(|| err("no partition"))?;
        if parts.next() != Some("appmesh") {
            return Err(err("service must be `appmesh`"));
        }
        let region = parts.next().ok_or_else(|| err("no region"))?;
        let account = parts.next().ok_or_else(|| err("no account"))?;
        let resource = parts.next().ok_or_else(|| err("no resource"))?;
        let (id, _owner) =
            parse_resource_path(resource).ok_or_else(|| err("unknown resource path"))?;
        Ok(Arn {
            partition: partition.to_owned(),
            region: region.to_owned(),
            account: account.to_owned(),
            id,
        })
    }
}

/// Parses `mesh/<mesh>[@owner][/<kind>/<name>[/<kind>/<name>]]`; returns the id and the owner.
impl Arn {
    /// Every reading of `arn` when names may themselves contain `/`: the plain reading of
    /// [`Arn::parse`] first (when there is one), then each other split of the resource
    /// path at the kind keywords (`virtualNode`, `virtualRouter` … `route`, …). Resource
    /// names are free strings in App Mesh, so `mesh/m/virtualNode/a/b` is node `a/b`; a
    /// server resolves an ARN by taking the first candidate that exists.
    pub fn parse_candidates(arn: &str) -> Result<Vec<Arn>, ArnError> {
        let plain = Arn::parse(arn);
        let mut out: Vec<Arn> = plain.iter().cloned().collect();
        let parts: Vec<&str> = arn.splitn(6, ':').collect();
        let (partition, region, account, path) = match parts.as_slice() {
            ["arn", p, "appmesh", r, a, path] if !p.is_empty() => (*p, *r, *a, *path),
            _ => return plain.map(|a| vec![a]),
        };
        let segs: Vec<&str> = path.split('/').collect();
        if segs.first() != Some(&"mesh") || segs.len() < 2 {
            return plain.map(|a| vec![a]);
        }
        let join = |r: std::ops::Range<usize>| Some(segs[r].join("/")).filter(|s| !s.is_empty());
        let kind = |s: &str| {
            ResourceKind::ALL
                .into_iter()
                .find(|k| k.as_str() == s && *k != ResourceKind::Mesh)
        };
        let n = segs.len();
        let mut ids = Vec::new();
        if let Some(m) = join(1..n) {
            ids.push(ResourceId::mesh(m));
        }
        for i in 2..n {
            let Some(k) = kind(segs[i]) else { continue };
            if k.parent_kind().is_none()
                && let (Some(m), Some(name)) = (join(1..i), join(i + 1..n))
            {
                ids.push(ResourceId::child(k, m, name));
            }
            for (j, seg) in segs.iter().enumerate().skip(i + 2) {
                let Some(gk) = kind(seg).filter(|gk| gk.parent_kind() == Some(k)) else {
                    continue;
                };
                if let (Some(m), Some(p), Some(name)) = (join(1..i), join(i + 1..j), join(j + 1..n))
                {
                    ids.push(ResourceId::grandchild(gk, m, p, name));
                }
            }
        }
        for id in ids {
            if !out.iter().any(|a| a.id == id) {
                out.push(Arn {
                    partition: partition.to_owned(),
                    region: region.to_owned(),
                    account: account.to_owned(),
                    id,
                });
            }
        }
        if out.is_empty() {
            return plain.map(|a| vec![a]);
        }
        Ok(out)
    }
}

fn parse_resource_path(path: &str) -> Option<(ResourceId, Option<String>)> {
    let segs: Vec<&str> = path.split('/').collect();
    if segs.first() != Some(&"mesh") || segs.len() < 2 || segs[1].is_empty() {
        return None;
    }
    let (mesh, owner) = match segs[1].split_once('@') {
        Some((m, o)) => (m, Some(o.to_owned())),
        None => (segs[1], None),
    };
    let kind = |s: &str| -> Option<ResourceKind> {
        ResourceKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s && *k != ResourceKind::Mesh)
    };
    let nonempty = |s: &&str| !s.is_empty();
    let id = match segs.len() {
        2 => ResourceId::mesh(mesh),
        4 => {
            let k = kind(segs[2]).filter(|k| k.parent_kind().is_none())?;
            ResourceId::child(k, mesh, Some(segs[3]).filter(nonempty)?)
        }
        6 => {
            let pk = kind(segs[2])?;
            let k = kind(segs[4]).filter(|k| k.parent_kind() == Some(pk))?;
            ResourceId::grandchild(
                k,
                mesh,
                Some(segs[3]).filter(nonempty)?,
                Some(segs[5]).filter(nonempty)?,
            )
        }
        _ => return None,
    };
    Some((id, owner))
}

/// Whether a proxy is a virtual node's sidecar or a virtual gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProxyKind {
    VirtualNode,
    VirtualGateway,
}

/// The identity an Envoy presents in `node.id`.
///
/// Accepted forms (as App Mesh's `APPMESH_RESOURCE_ARN`): `mesh/<mesh>/virtualNode/<name>`,
/// `mesh/<mesh>@<owner>/virtualNode/<name>`, the `virtualGateway` equivalents, and full ARNs.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId {
    pub mesh: String,
    pub owner: Option<String>,
    pub kind: ProxyKind,
    pub name: String,
}

/// Why a node id did not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "invalid node id `{0}`: expected mesh/<mesh>[@<owner>]/virtualNode/<name>, \
     mesh/<mesh>[@<owner>]/virtualGateway/<name>, or an App Mesh ARN of either"
)]
pub struct NodeIdError(pub String);

impl NodeId {
    /// Parses any accepted form.
    pub fn parse(s: &str) -> Result<NodeId, NodeIdError> {
        let bad = || NodeIdError(s.to_owned());
        let (path, arn_account) = if s.starts_with("arn:") {
            let parts: Vec<&str> = s.splitn(6, ':').collect();
            if parts.len() != 6 || parts[2] != "appmesh" {
                return Err(bad());
            }
            (parts[5], Some(parts[4]))
        } else {
            (s, None)
        };
        let (id, owner) = parse_resource_path(path).ok_or_else(bad)?;
        let kind = match id.kind {
            ResourceKind::VirtualNode => ProxyKind::VirtualNode,
            ResourceKind::VirtualGateway => ProxyKind::VirtualGateway,
            _ => return Err(bad()),
        };
        let owner = owner.or(arn_account.filter(|a| !a.is_empty()).map(str::to_owned));
        Ok(NodeId {
            mesh: id.mesh,
            owner,
            kind,
            name: id.name,
        })
    }

    /// The resource this proxy runs for.
    pub fn resource_id(&self) -> ResourceId {
        let kind = match self.kind {
            ProxyKind::VirtualNode => ResourceKind::VirtualNode,
            ProxyKind::VirtualGateway => ResourceKind::VirtualGateway,
        };
        ResourceId::child(kind, self.mesh.clone(), self.name.clone())
    }
}

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            ProxyKind::VirtualNode => "virtualNode",
            ProxyKind::VirtualGateway => "virtualGateway",
        };
        match &self.owner {
            Some(o) => write!(f, "mesh/{}@{}/{}/{}", self.mesh, o, kind, self.name),
            None => write!(f, "mesh/{}/{}/{}", self.mesh, kind, self.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_cover_names_with_slashes() {
        let ids = |arn: &str| -> Vec<ResourceId> {
            Arn::parse_candidates(arn)
                .unwrap()
                .into_iter()
                .map(|a| a.id)
                .collect()
        };
        let p = "arn:aws:appmesh:us-east-1:000000000000:";
        // The plain reading comes first.
        assert_eq!(
            ids(&format!("{p}mesh/m/virtualNode/n"))[0],
            ResourceId::child(ResourceKind::VirtualNode, "m", "n")
        );
        assert!(
            ids(&format!("{p}mesh/m/virtualNode/a/b")).contains(&ResourceId::child(
                ResourceKind::VirtualNode,
                "m",
                "a/b"
            ))
        );
        assert!(
            ids(&format!("{p}mesh/x/y/virtualRouter/r/1/route/q/z")).contains(
                &ResourceId::grandchild(ResourceKind::Route, "x/y", "r/1", "q/z")
            )
        );
        assert!(ids(&format!("{p}mesh/a/b")).contains(&ResourceId::mesh("a/b")));
        assert!(Arn::parse_candidates("arn:aws:s3:::bucket").is_err());
    }

    #[test]
    fn arn_round_trips_for_every_kind() {
        let ids = [
            ResourceId::mesh("m"),
            ResourceId::child(ResourceKind::VirtualNode, "m", "n"),
            ResourceId::child(ResourceKind::VirtualService, "m", "svc.local"),
            ResourceId::grandchild(ResourceKind::Route, "m", "r", "rt"),
            ResourceId::grandchild(ResourceKind::GatewayRoute, "m", "g", "gr"),
        ];
        for id in ids {
            let s = Arn::format("aws", "us-east-1", "111122223333", &id);
            let arn = Arn::parse(&s).unwrap();
            assert_eq!(arn.id, id, "{s}");
            assert_eq!(arn.account, "111122223333");
        }
        assert_eq!(
            Arn::format(
                "aws",
                "r",
                "a",
                &ResourceId::grandchild(ResourceKind::Route, "m", "r", "x")
            ),
            "arn:aws:appmesh:r:a:mesh/m/virtualRouter/r/route/x"
        );
    }

    #[test]
    fn rejects_malformed_arns() {
        for bad in [
            "",
            "arn:aws:s3:::bucket",
            "arn:aws:appmesh:r:a:mesh/",
            "arn:aws:appmesh:r:a:mesh/m/route/x",
            "arn:aws:appmesh:r:a:mesh/m/virtualNode/n/route/x",
            "arn:aws:appmesh:r:a:mesh/m/virtualNode/",
        ] {
            assert!(Arn::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn node_id_accepts_every_app_mesh_form() {
        let a = NodeId::parse("mesh/demo/virtualNode/front").unwrap();
        assert_eq!(
            (a.mesh.as_str(), a.owner, a.kind, a.name.as_str()),
            ("demo", None, ProxyKind::VirtualNode, "front")
        );
        let b = NodeId::parse("mesh/demo@111122223333/virtualGateway/gw").unwrap();
        assert_eq!(b.owner.as_deref(), Some("111122223333"));
        assert_eq!(b.kind, ProxyKind::VirtualGateway);
        let c = NodeId::parse("arn:aws:appmesh:us-east-1:111122223333:mesh/demo/virtualNode/front")
            .unwrap();
        assert_eq!(c.name, "front");
        assert_eq!(c.owner.as_deref(), Some("111122223333"));
        assert!(NodeId::parse("mesh/demo/virtualRouter/r").is_err());
        assert!(NodeId::parse("front").is_err());
    }
}
