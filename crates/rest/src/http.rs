//! HTTP edge of the App Mesh API: raw-path routing, query and body parsing, and the one
//! place that turns results and errors into responses.
//!
//! Routing is done by hand on the raw (still percent-encoded) path: split on `/` first,
//! then decode each segment, so an encoded `/` (`%2F`) stays inside a name. Query
//! values are percent-decoded without treating `+` as a space, as botocore expects.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, Method, StatusCode, header};
use meshplane_api::{ApiError, ErrorCode, parse_create, parse_tags, parse_update};
use meshplane_model::{ResourceId, ResourceKind};
use percent_encoding::percent_decode_str;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::metrics::ApiMetrics;
use crate::service::MeshService;

const PREFIX: &str = "/v20190125/";

#[derive(Clone)]
struct AppState {
    service: MeshService,
    metrics: Arc<ApiMetrics>,
}

/// The App Mesh API router (every path under `/v20190125/`); other routes (`/healthz`,
/// `/metrics`) are merged in by the runtime.
pub fn router(service: MeshService, metrics: Arc<ApiMetrics>) -> Router {
    Router::new()
        .fallback(handle)
        .with_state(AppState { service, metrics })
}

async fn handle(State(st): State<AppState>, req: Request) -> Response {
    let started = Instant::now();
    let (parts, body) = req.into_parts();
    let max = st.service.config().max_body_bytes;
    let (operation, result) = match axum::body::to_bytes(body, max).await {
        Ok(bytes) => dispatch(&st.service, &parts.method, &parts.uri, &bytes).await,
        Err(_) => (
            "Unknown",
            Err(ApiError::bad_request(format!(
                "request body is larger than {max} bytes"
            ))),
        ),
    };
    let response = match result {
        Ok(body) => json_response(StatusCode::OK, body.to_string()),
        Err(e) => error_response(&e),
    };
    st.metrics
        .observe(operation, response.status().as_u16(), started.elapsed());
    tracing::debug!(
        operation,
        status = response.status().as_u16(),
        "api request"
    );
    response
}

fn json_response(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()) {
        h.insert("x-amzn-requestid", v);
    }
    r
}

/// Status per the error table, `x-amzn-ErrorType`, and `{"message": ...}`.
pub fn error_response(e: &ApiError) -> Response {
    let status =
        StatusCode::from_u16(e.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut r = json_response(status, e.body());
    r.headers_mut().insert(
        "x-amzn-errortype",
        HeaderValue::from_static(e.code.exception_name()),
    );
    r
}

fn unknown_operation(method: &Method, path: &str) -> ApiError {
    ApiError::new(
        ErrorCode::NotFound,
        format!("no App Mesh operation for {method} {path}"),
    )
}

fn decode_segment(s: &str) -> Result<String, ApiError> {
    percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| {
            ApiError::bad_request("path segment is not valid UTF-8 after percent-decoding")
        })
}

fn parse_query(q: Option<&str>) -> Result<HashMap<String, String>, ApiError> {
    let mut out = HashMap::new();
    for pair in q.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.insert(decode_segment(k)?, decode_segment(v)?);
    }
    Ok(out)
}

fn plural_kind(s: &str) -> Option<ResourceKind> {
    Some(match s {
        "virtualNodes" => ResourceKind::VirtualNode,
        "virtualServices" => ResourceKind::VirtualService,
        "virtualRouters" => ResourceKind::VirtualRouter,
        "virtualGateways" => ResourceKind::VirtualGateway,
        _ => return None,
    })
}

/// The idempotency fingerprint: operation, target, meshOwner, and the body without its
/// clientToken, canonicalised (sorted keys).
fn fingerprint(operation: &str, path: &str, mesh_owner: Option<&str>, body: &[u8]) -> String {
    let mut v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    if let Some(o) = v.as_object_mut() {
        o.remove("clientToken");
    }
    let mut h = Sha256::new();
    for part in [operation, path, mesh_owner.unwrap_or(""), &v.to_string()] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn op_name(verb: &str, kind: ResourceKind) -> &'static str {
    const NAMES: [[&str; 7]; 5] = [
        [
            "CreateMesh",
            "CreateVirtualNode",
            "CreateVirtualService",
            "CreateVirtualRouter",
            "CreateRoute",
            "CreateVirtualGateway",
            "CreateGatewayRoute",
        ],
        [
            "DescribeMesh",
            "DescribeVirtualNode",
            "DescribeVirtualService",
            "DescribeVirtualRouter",
            "DescribeRoute",
            "DescribeVirtualGateway",
            "DescribeGatewayRoute",
        ],
        [
            "UpdateMesh",
            "UpdateVirtualNode",
            "UpdateVirtualService",
            "UpdateVirtualRouter",
            "UpdateRoute",
            "UpdateVirtualGateway",
            "UpdateGatewayRoute",
        ],
        [
            "DeleteMesh",
            "DeleteVirtualNode",
            "DeleteVirtualService",
            "DeleteVirtualRouter",
            "DeleteRoute",
            "DeleteVirtualGateway",
            "DeleteGatewayRoute",
        ],
        [
            "ListMeshes",
            "ListVirtualNodes",
            "ListVirtualServices",
            "ListVirtualRouters",
            "ListRoutes",
            "ListVirtualGateways",
            "ListGatewayRoutes",
        ],
    ];
    let row = match verb {
        "Create" => 0,
        "Describe" => 1,
        "Update" => 2,
        "Delete" => 3,
        _ => 4,
    };
    let col = match kind {
        ResourceKind::Mesh => 0,
        ResourceKind::VirtualNode => 1,
        ResourceKind::VirtualService => 2,
        ResourceKind::VirtualRouter => 3,
        ResourceKind::Route => 4,
        ResourceKind::VirtualGateway => 5,
        ResourceKind::GatewayRoute => 6,
    };
    NAMES[row][col]
}

/// A collection (`List*`/`Create*`) or an item (`Describe*`/`Update*`/`Delete*`).
enum Target {
    Collection {
        kind: ResourceKind,
        parent: Option<ResourceId>,
    },
    Item(ResourceId),
}

fn resolve(segs: &[String]) -> Option<Target> {
    use ResourceKind as K;
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    Some(match s.as_slice() {
        ["meshes"] => Target::Collection {
            kind: K::Mesh,
            parent: None,
        },
        ["meshes", m] => Target::Item(ResourceId::mesh(*m)),
        ["meshes", m, plural] => Target::Collection {
            kind: plural_kind(plural)?,
            parent: Some(ResourceId::mesh(*m)),
        },
        ["meshes", m, plural, n] => Target::Item(ResourceId::child(plural_kind(plural)?, *m, *n)),
        ["meshes", m, "virtualRouter", r, "routes"] => Target::Collection {
            kind: K::Route,
            parent: Some(ResourceId::child(K::VirtualRouter, *m, *r)),
        },
        ["meshes", m, "virtualRouter", r, "routes", n] => {
            Target::Item(ResourceId::grandchild(K::Route, *m, *r, *n))
        }
        ["meshes", m, "virtualGateway", g, "gatewayRoutes"] => Target::Collection {
            kind: K::GatewayRoute,
            parent: Some(ResourceId::child(K::VirtualGateway, *m, *g)),
        },
        ["meshes", m, "virtualGateway", g, "gatewayRoutes", n] => {
            Target::Item(ResourceId::grandchild(K::GatewayRoute, *m, *g, *n))
        }
        _ => return None,
    })
}

async fn dispatch(
    svc: &MeshService,
    method: &Method,
    uri: &http::Uri,
    body: &[u8],
) -> (&'static str, Result<Value, ApiError>) {
    let path = uri.path();
    let Some(rest) = path.strip_prefix(PREFIX) else {
        return ("Unknown", Err(unknown_operation(method, path)));
    };
    let segs = match rest
        .split('/')
        .map(decode_segment)
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(s) => s,
        Err(e) => return ("Unknown", Err(e)),
    };
    let query = match parse_query(uri.query()) {
        Ok(q) => q,
        Err(e) => return ("Unknown", Err(e)),
    };
    let q = |k: &str| query.get(k).map(String::as_str);
    let owner = q("meshOwner");

    // Tag operations are addressed by ARN.
    match (
        method.as_str(),
        segs.iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .as_slice(),
    ) {
        ("GET", ["tags"]) => {
            return (
                "ListTagsForResource",
                svc.list_tags(q("resourceArn"), q("limit"), q("nextToken"))
                    .await,
            );
        }
        ("PUT", ["tag"]) => {
            let r = async {
                let v = body_json(body)?;
                let tags = v
                    .get("tags")
                    .ok_or_else(|| ApiError::bad_request("tags: required member is missing"))?;
                svc.tag(q("resourceArn"), parse_tags(tags, "tags")?).await
            };
            return ("TagResource", r.await);
        }
        ("PUT", ["untag"]) => {
            let r = async {
                let v = body_json(body)?;
                let keys = v
                    .get("tagKeys")
                    .and_then(Value::as_array)
                    .ok_or_else(|| {
                        ApiError::bad_request("tagKeys: required list member is missing")
                    })?
                    .iter()
                    .enumerate()
                    .map(|(i, k)| {
                        k.as_str().map(str::to_owned).ok_or_else(|| {
                            ApiError::bad_request(format!("tagKeys[{i}]: must be a string"))
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                svc.untag(q("resourceArn"), keys).await
            };
            return ("UntagResource", r.await);
        }
        _ => {}
    }

    let Some(target) = resolve(&segs) else {
        return ("Unknown", Err(unknown_operation(method, path)));
    };
    match (method.as_str(), target) {
        ("GET", Target::Collection { kind, parent }) => (
            op_name("List", kind),
            svc.list(kind, parent.as_ref(), owner, q("limit"), q("nextToken"))
                .await,
        ),
        ("PUT", Target::Collection { kind, parent }) => {
            let op = op_name("Create", kind);
            let r = async {
                let input = parse_create(kind, body)?;
                let id = match parent {
                    None => ResourceId::mesh(input.name.clone()),
                    Some(p) if p.kind == ResourceKind::Mesh => {
                        ResourceId::child(kind, p.mesh, input.name.clone())
                    }
                    Some(p) => ResourceId::grandchild(kind, p.mesh, p.name, input.name.clone()),
                };
                let fp = fingerprint(op, &id.path(), owner, body);
                svc.create(id, owner, input, &fp).await
            };
            (op, r.await)
        }
        ("GET", Target::Item(id)) => (op_name("Describe", id.kind), svc.describe(&id, owner).await),
        ("PUT", Target::Item(id)) => {
            let op = op_name("Update", id.kind);
            let r = async {
                let input = parse_update(id.kind, body)?;
                let fp = fingerprint(op, &id.path(), owner, body);
                svc.update(id, owner, input, &fp).await
            };
            (op, r.await)
        }
        ("DELETE", Target::Item(id)) => (op_name("Delete", id.kind), svc.delete(id, owner).await),
        _ => ("Unknown", Err(unknown_operation(method, path))),
    }
}

fn body_json(body: &[u8]) -> Result<Value, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(ApiError::bad_request("request body must be a JSON object")),
        Err(e) => Err(ApiError::bad_request(format!(
            "malformed JSON request body: {e}"
        ))),
    }
}
