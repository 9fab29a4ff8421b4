//! Which action and resource ARN(s) an API request is authorised as, and in which error
//! protocol it is answered.
//!
//! App Mesh (REST, `/v20190125/…`) and Cloud Map (JSON 1.1, `POST /` with `X-Amz-Target`)
//! go through `meshplane_policy::operation`; meshplane's own endpoints
//! (`/meshplane/v1/…`) have their `meshplane:*` actions here. A request that matches no
//! operation is authorised as `appmesh:Unknown` on `*` (only a key allowed everything
//! reaches the handler's 404), so an unmapped path is never a way around the policy.

use meshplane_model::{Arn, NodeId, ProxyKind, ResourceId, ResourceKind};
use meshplane_policy::operation::{self, Scope};
use percent_encoding::percent_decode_str;
use serde_json::Value;

/// How errors are shaped for this request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `x-amzn-ErrorType` header + `{"message"}` (App Mesh, meshplane endpoints).
    RestJson,
    /// `{"__type", "message"}` with `application/x-amz-json-1.1` (Cloud Map).
    Json11,
}

/// What a request needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified {
    pub protocol: Protocol,
    /// The SigV4 service the request must be signed for.
    pub service: &'static str,
    pub action: String,
    /// Every resource the action must be allowed on (usually one; several readings of an
    /// ambiguous tag ARN).
    pub resources: Vec<String>,
    /// Whether the call changes state (audited even when allowed).
    pub mutating: bool,
}

const APP_MESH_PREFIX: &str = "/v20190125/";
const CLOUD_MAP_TARGET: &str = "Route53AutoNaming_v20170314.";

fn decode(s: &str) -> String {
    percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// The value of query parameter `name`, decoded as the handler decodes it (`form`: `+` is a
/// space, as axum's `Query` reads it; else only percent-decoding, as the App Mesh router
/// reads it). A parameter given twice is an error: handlers differ in which one they take,
/// and authorising one while the handler acts on the other would bypass the policy.
fn query_value(query: &str, name: &str, form: bool) -> Result<Option<String>, ()> {
    let decode = |s: &str| {
        if form {
            decode(&s.replace('+', " "))
        } else {
            decode(s)
        }
    };
    let mut found = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
        .filter(|(k, _)| decode(k) == name)
        .map(|(_, v)| decode(v));
    let first = found.next();
    if found.next().is_some() {
        return Err(());
    }
    Ok(first)
}

fn unknown(protocol: Protocol, service: &'static str, prefix: &str) -> Classified {
    Classified {
        protocol,
        service,
        action: format!("{prefix}:Unknown"),
        resources: vec!["*".to_owned()],
        mutating: true,
    }
}

/// Classifies a request (raw path and query as on the wire; the buffered body).
pub fn classify(
    scope: &Scope,
    method: &http::Method,
    path: &str,
    query: &str,
    headers: &http::HeaderMap,
    body: &[u8],
) -> Classified {
    // Only `POST /` reaches the Cloud Map router; an `X-Amz-Target` elsewhere must not
    // make an App Mesh call look like a Cloud Map one.
    if method == http::Method::POST && path == "/" {
        let target = headers.get("x-amz-target").and_then(|v| v.to_str().ok());
        let Some(op) = target.and_then(|t| t.strip_prefix(CLOUD_MAP_TARGET)) else {
            return unknown(Protocol::Json11, "servicediscovery", "servicediscovery");
        };
        let input: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        return match operation::cloud_map(scope, op, &input) {
            Ok(a) => Classified {
                protocol: Protocol::Json11,
                service: "servicediscovery",
                mutating: !(op.starts_with("Get")
                    || op.starts_with("List")
                    || op.starts_with("Discover")),
                action: a.action,
                resources: vec![a.resource],
            },
            // A missing id member: authorise on `*` of the operation; the registry answers
            // the validation error only to a key allowed the operation everywhere.
            Err(operation::OperationError::MissingMember { .. }) => Classified {
                protocol: Protocol::Json11,
                service: "servicediscovery",
                action: format!("servicediscovery:{op}"),
                resources: vec!["*".to_owned()],
                mutating: true,
            },
            Err(_) => unknown(Protocol::Json11, "servicediscovery", "servicediscovery"),
        };
    }
    if let Some(rest) = path.strip_prefix("/meshplane/v1/") {
        return meshplane(scope, method, rest, query, body);
    }
    match path.strip_prefix(APP_MESH_PREFIX) {
        Some(rest) => app_mesh(scope, method, rest, query, body),
        None => unknown(Protocol::RestJson, "appmesh", "appmesh"),
    }
}

fn app_mesh(
    scope: &Scope,
    method: &http::Method,
    rest: &str,
    query: &str,
    body: &[u8],
) -> Classified {
    use ResourceKind as K;
    let segs: Vec<String> = rest.split('/').map(decode).collect();
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    let Ok(owner) = query_value(query, "meshOwner", false) else {
        return unknown(Protocol::RestJson, "appmesh", "appmesh");
    };
    let scope = scope.for_owner(owner.as_deref());
    let done = |op: &str, target: Option<&ResourceId>| -> Classified {
        match operation::app_mesh(&scope, op, target) {
            Ok(a) => Classified {
                protocol: Protocol::RestJson,
                service: "appmesh",
                mutating: !(op.starts_with("Describe") || op.starts_with("List")),
                action: a.action,
                resources: vec![a.resource],
            },
            Err(_) => unknown(Protocol::RestJson, "appmesh", "appmesh"),
        }
    };
    let m = method.as_str();
    // Tag operations name their resource by ARN.
    if let ("GET", ["tags"]) | ("PUT", ["tag"]) | ("PUT", ["untag"]) = (m, s.as_slice()) {
        let op = match s[0] {
            "tags" => "ListTagsForResource",
            "tag" => "TagResource",
            _ => "UntagResource",
        };
        let Ok(arn) = query_value(query, "resourceArn", false) else {
            return unknown(Protocol::RestJson, "appmesh", "appmesh");
        };
        let arn = arn.unwrap_or_default();
        let resources = match Arn::parse_candidates(&arn) {
            Ok(c) if !c.is_empty() => c
                .iter()
                .map(|a| Arn::format(&a.partition, &a.region, &a.account, &a.id))
                .collect(),
            _ => vec![if arn.is_empty() { "*".to_owned() } else { arn }],
        };
        return Classified {
            protocol: Protocol::RestJson,
            service: "appmesh",
            action: format!("appmesh:{op}"),
            resources,
            mutating: op != "ListTagsForResource",
        };
    }
    let plural = |p: &str| -> Option<ResourceKind> {
        Some(match p {
            "virtualNodes" => K::VirtualNode,
            "virtualServices" => K::VirtualService,
            "virtualRouters" => K::VirtualRouter,
            "virtualGateways" => K::VirtualGateway,
            _ => return None,
        })
    };
    // (kind, parent) of a collection, or the item.
    let (collection, item): (
        Option<(ResourceKind, Option<ResourceId>)>,
        Option<ResourceId>,
    ) = match s.as_slice() {
        ["meshes"] => (Some((K::Mesh, None)), None),
        ["meshes", mesh] => (None, Some(ResourceId::mesh(*mesh))),
        ["meshes", mesh, p] => match plural(p) {
            Some(k) => (Some((k, Some(ResourceId::mesh(*mesh)))), None),
            None => return unknown(Protocol::RestJson, "appmesh", "appmesh"),
        },
        ["meshes", mesh, p, n] => match plural(p) {
            Some(k) => (None, Some(ResourceId::child(k, *mesh, *n))),
            None => return unknown(Protocol::RestJson, "appmesh", "appmesh"),
        },
        ["meshes", mesh, "virtualRouter", r, "routes"] => (
            Some((
                K::Route,
                Some(ResourceId::child(K::VirtualRouter, *mesh, *r)),
            )),
            None,
        ),
        ["meshes", mesh, "virtualRouter", r, "routes", n] => {
            (None, Some(ResourceId::grandchild(K::Route, *mesh, *r, *n)))
        }
        ["meshes", mesh, "virtualGateway", g, "gatewayRoutes"] => (
            Some((
                K::GatewayRoute,
                Some(ResourceId::child(K::VirtualGateway, *mesh, *g)),
            )),
            None,
        ),
        ["meshes", mesh, "virtualGateway", g, "gatewayRoutes", n] => (
            None,
            Some(ResourceId::grandchild(K::GatewayRoute, *mesh, *g, *n)),
        ),
        _ => return unknown(Protocol::RestJson, "appmesh", "appmesh"),
    };
    match (m, collection, item) {
        ("GET", Some((kind, parent)), _) => done(list_op(kind), parent.as_ref()),
        ("PUT", Some((kind, parent)), _) => {
            // The new resource's name is in the body; without one the handler answers
            // BadRequest, authorised here as the empty name under the parent.
            let input: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
            let name = input
                .get(name_member(kind))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            let id = match parent {
                None => ResourceId::mesh(name),
                Some(p) if p.kind == K::Mesh => ResourceId::child(kind, p.mesh, name),
                Some(p) => ResourceId::grandchild(kind, p.mesh, p.name, name),
            };
            done(&format!("Create{}", kind.pascal()), Some(&id))
        }
        ("GET", None, Some(id)) => done(&format!("Describe{}", id.kind.pascal()), Some(&id)),
        ("PUT", None, Some(id)) => done(&format!("Update{}", id.kind.pascal()), Some(&id)),
        ("DELETE", None, Some(id)) => done(&format!("Delete{}", id.kind.pascal()), Some(&id)),
        _ => unknown(Protocol::RestJson, "appmesh", "appmesh"),
    }
}

fn list_op(kind: ResourceKind) -> &'static str {
    match kind {
        ResourceKind::Mesh => "ListMeshes",
        ResourceKind::VirtualNode => "ListVirtualNodes",
        ResourceKind::VirtualService => "ListVirtualServices",
        ResourceKind::VirtualRouter => "ListVirtualRouters",
        ResourceKind::Route => "ListRoutes",
        ResourceKind::VirtualGateway => "ListVirtualGateways",
        ResourceKind::GatewayRoute => "ListGatewayRoutes",
    }
}

fn name_member(kind: ResourceKind) -> &'static str {
    match kind {
        ResourceKind::Mesh => "meshName",
        ResourceKind::VirtualNode => "virtualNodeName",
        ResourceKind::VirtualService => "virtualServiceName",
        ResourceKind::VirtualRouter => "virtualRouterName",
        ResourceKind::Route => "routeName",
        ResourceKind::VirtualGateway => "virtualGatewayName",
        ResourceKind::GatewayRoute => "gatewayRouteName",
    }
}

/// `arn:<partition>:meshplane:<region>:<account>:<resource>`.
pub fn meshplane_arn(scope: &Scope, resource: &str) -> String {
    format!(
        "arn:{}:meshplane:{}:{}:{resource}",
        scope.partition, scope.region, scope.account
    )
}

/// The node a node-token request names (`mesh`, `virtualNodeName` | `virtualGatewayName`,
/// `meshOwner`), or why not.
pub fn token_node(input: &Value) -> Result<NodeId, String> {
    let text = |k: &str| {
        input
            .get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let mesh = text("mesh").ok_or("mesh: required string member is missing")?;
    let (kind, name) = match (text("virtualNodeName"), text("virtualGatewayName")) {
        (Some(n), None) => (ProxyKind::VirtualNode, n),
        (None, Some(g)) => (ProxyKind::VirtualGateway, g),
        _ => {
            return Err("exactly one of virtualNodeName and virtualGatewayName is required".into());
        }
    };
    Ok(NodeId {
        mesh: mesh.to_owned(),
        owner: text("meshOwner").map(str::to_owned),
        kind,
        name: name.to_owned(),
    })
}

fn meshplane(
    scope: &Scope,
    method: &http::Method,
    rest: &str,
    query: &str,
    body: &[u8],
) -> Classified {
    let segs: Vec<String> = rest.split('/').map(decode).collect();
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    let c = |action: &str, resource: String, mutating: bool| Classified {
        protocol: Protocol::RestJson,
        service: "appmesh",
        action: format!("meshplane:{action}"),
        resources: vec![resource],
        mutating,
    };
    let input = || serde_json::from_slice::<Value>(body).unwrap_or(Value::Null);
    match (method.as_str(), s.as_slice()) {
        ("POST", ["access-keys"]) => {
            let v = input();
            let name = v.get("name").and_then(Value::as_str).unwrap_or("");
            c(
                "CreateAccessKey",
                meshplane_arn(scope, &format!("access-key/{name}")),
                true,
            )
        }
        ("GET", ["access-keys"]) => c("ListAccessKeys", "*".into(), false),
        ("DELETE", ["access-keys", name]) => c(
            "DeleteAccessKey",
            meshplane_arn(scope, &format!("access-key/{name}")),
            true,
        ),
        ("POST", ["access-keys", name, "rotate"]) => c(
            "RotateAccessKey",
            meshplane_arn(scope, &format!("access-key/{name}")),
            true,
        ),
        ("POST", ["node-tokens"]) => match token_node(&input()) {
            Ok(node) => {
                let a = operation::stream_aggregated_resources(scope, &node);
                Classified {
                    protocol: Protocol::RestJson,
                    service: "appmesh",
                    action: a.action,
                    resources: vec![a.resource],
                    mutating: true,
                }
            }
            // The handler answers the BadRequest; authorised as the action on `*`.
            Err(_) => Classified {
                protocol: Protocol::RestJson,
                service: "appmesh",
                action: operation::STREAM_AGGREGATED_RESOURCES.to_owned(),
                resources: vec!["*".to_owned()],
                mutating: true,
            },
        },
        ("DELETE", ["node-tokens", tid]) => c(
            "RevokeNodeToken",
            meshplane_arn(scope, &format!("node-token/{tid}")),
            true,
        ),
        ("GET", ["proxy-status"]) => c("GetProxyStatus", "*".into(), false),
        ("GET", ["proxy-config"]) => {
            let Ok(node) = query_value(query, "node", true) else {
                return unknown(Protocol::RestJson, "appmesh", "meshplane");
            };
            let node = node.unwrap_or_default();
            let resource = match NodeId::parse(&node) {
                Ok(n) => operation::stream_aggregated_resources(scope, &n).resource,
                Err(_) => "*".to_owned(),
            };
            c("GetProxyConfig", resource, false)
        }
        _ => unknown(Protocol::RestJson, "appmesh", "meshplane"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope() -> Scope {
        Scope::new("aws", "us-east-1", "000000000000")
    }

    fn run(method: &str, path: &str, query: &str, target: Option<&str>, body: &str) -> Classified {
        let mut headers = http::HeaderMap::new();
        if let Some(t) = target {
            headers.insert("x-amz-target", t.parse().unwrap());
        }
        classify(
            &scope(),
            &method.parse().unwrap(),
            path,
            query,
            &headers,
            body.as_bytes(),
        )
    }

    #[test]
    fn maps_requests_to_actions_and_arns() {
        const A: &str = "arn:aws:appmesh:us-east-1:000000000000:";
        let tag_query = format!("resourceArn={A}mesh/dev");
        // (method, path, query, x-amz-target, body, action, resource, mutating)
        type Case<'a> = (
            &'a str,
            &'a str,
            &'a str,
            Option<&'a str>,
            &'a str,
            &'a str,
            String,
            bool,
        );
        let cases: Vec<Case> = vec![
            (
                "GET",
                "/v20190125/meshes",
                "",
                None,
                "",
                "appmesh:ListMeshes",
                "*".into(),
                false,
            ),
            (
                "PUT",
                "/v20190125/meshes",
                "",
                None,
                r#"{"meshName":"m.1"}"#,
                "appmesh:CreateMesh",
                format!("{A}mesh/m.1"),
                true,
            ),
            (
                "GET",
                "/v20190125/meshes/dev/virtualNodes",
                "",
                None,
                "",
                "appmesh:ListVirtualNodes",
                format!("{A}mesh/dev"),
                false,
            ),
            (
                "PUT",
                "/v20190125/meshes/dev/virtualRouter/r/routes/a%3Ab",
                "",
                None,
                "{}",
                "appmesh:UpdateRoute",
                format!("{A}mesh/dev/virtualRouter/r/route/a:b"),
                true,
            ),
            (
                "PUT",
                "/v20190125/meshes/dev/virtualRouter/r/routes",
                "",
                None,
                r#"{"routeName":"x"}"#,
                "appmesh:CreateRoute",
                format!("{A}mesh/dev/virtualRouter/r/route/x"),
                true,
            ),
            (
                "DELETE",
                "/v20190125/meshes/prod",
                "",
                None,
                "",
                "appmesh:DeleteMesh",
                format!("{A}mesh/prod"),
                true,
            ),
            (
                "GET",
                "/v20190125/meshes/dev",
                "meshOwner=111122223333",
                None,
                "",
                "appmesh:DescribeMesh",
                "arn:aws:appmesh:us-east-1:111122223333:mesh/dev".into(),
                false,
            ),
            (
                "PUT",
                "/v20190125/tag",
                &tag_query,
                None,
                "{}",
                "appmesh:TagResource",
                format!("{A}mesh/dev"),
                true,
            ),
            (
                "GET",
                "/nowhere",
                "",
                None,
                "",
                "appmesh:Unknown",
                "*".into(),
                true,
            ),
            (
                "POST",
                "/",
                "",
                Some("Route53AutoNaming_v20170314.RegisterInstance"),
                r#"{"ServiceId":"srv-1"}"#,
                "servicediscovery:RegisterInstance",
                "arn:aws:servicediscovery:us-east-1:000000000000:service/srv-1".into(),
                true,
            ),
            (
                "POST",
                "/",
                "",
                Some("Route53AutoNaming_v20170314.ListNamespaces"),
                "{}",
                "servicediscovery:ListNamespaces",
                "*".into(),
                false,
            ),
            (
                "POST",
                "/meshplane/v1/access-keys",
                "",
                None,
                r#"{"name":"ci"}"#,
                "meshplane:CreateAccessKey",
                "arn:aws:meshplane:us-east-1:000000000000:access-key/ci".into(),
                true,
            ),
            (
                "POST",
                "/meshplane/v1/node-tokens",
                "",
                None,
                r#"{"mesh":"dev","virtualNodeName":"web"}"#,
                "appmesh:StreamAggregatedResources",
                format!("{A}mesh/dev/virtualNode/web"),
                true,
            ),
            (
                "GET",
                "/meshplane/v1/proxy-config",
                "node=mesh/dev/virtualGateway/gw",
                None,
                "",
                "meshplane:GetProxyConfig",
                format!("{A}mesh/dev/virtualGateway/gw"),
                false,
            ),
        ];
        for (m, p, q, t, b, action, resource, mutating) in cases {
            let c = run(m, p, q, t, b);
            assert_eq!(c.action, action, "{m} {p}");
            assert_eq!(c.resources, vec![resource], "{m} {p}");
            assert_eq!(c.mutating, mutating, "{m} {p}");
        }
        assert_eq!(
            run("POST", "/", "", Some("Route53AutoNaming_v20170314.X"), "{}").protocol,
            Protocol::Json11
        );
        assert_eq!(
            run("GET", "/v20190125/meshes", "", None, "").service,
            "appmesh"
        );
    }
}
