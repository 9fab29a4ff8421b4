//! meshplane's own API: `/meshplane/v1/access-keys` and `/meshplane/v1/node-tokens`.
//!
//! JSON bodies in camelCase; errors in App Mesh's REST-JSON shape. Authorisation happened
//! in the layer (the action and ARN of each route are in [`super::classify`]); these
//! handlers only need the caller's identity, from the request extensions.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use axum::{Extension, Json, Router};
use http::StatusCode;
use meshplane_policy::Policy;
use serde_json::{Value, json};

use super::classify::{Protocol, token_node};
use super::keys::KeyError;
use super::layer::error_response;
use super::{AuthMode, AuthState, Caller, node_token};

/// The routes, to merge into the API router (inside the auth layer).
pub fn router(state: AuthState) -> Router {
    Router::new()
        .route("/meshplane/v1/access-keys", post(create).get(list))
        .route("/meshplane/v1/access-keys/{name}", delete(remove))
        .route("/meshplane/v1/access-keys/{name}/rotate", post(rotate))
        .route("/meshplane/v1/node-tokens", post(mint))
        .route("/meshplane/v1/node-tokens/{tid}", delete(revoke))
        .with_state(state)
}

fn rest_error(status: StatusCode, name: &str, message: &str) -> Response {
    error_response(Protocol::RestJson, status, name, message)
}

fn bad_request(message: &str) -> Response {
    rest_error(StatusCode::BAD_REQUEST, "BadRequestException", message)
}

impl IntoResponse for KeyError {
    fn into_response(self) -> Response {
        match &self {
            KeyError::BadRequest(m) => bad_request(m),
            KeyError::NotFound(m) => rest_error(StatusCode::NOT_FOUND, "NotFoundException", m),
            KeyError::Conflict(m) => rest_error(StatusCode::CONFLICT, "ConflictException", m),
            KeyError::Store(meshplane_store::StoreError::Unavailable(_)) => {
                tracing::warn!(error = %self, "access key operation failed");
                rest_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ServiceUnavailableException",
                    "the store is unavailable, try again",
                )
            }
            KeyError::Store(_) | KeyError::Internal(_) => {
                tracing::error!(error = %self, "access key operation failed");
                rest_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalServerErrorException",
                    "internal error",
                )
            }
        }
    }
}

/// The JSON object of a body, or a BadRequest naming what is wrong.
fn object(body: &[u8]) -> Result<Value, Box<Response>> {
    match serde_json::from_slice::<Value>(body) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(Box::new(bad_request("request body must be a JSON object"))),
        Err(e) => Err(Box::new(bad_request(&format!(
            "malformed JSON request body: {e}"
        )))),
    }
}

async fn create(State(st): State<AuthState>, body: axum::body::Bytes) -> Response {
    let v = match object(&body) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let Some(name) = v.get("name").and_then(Value::as_str) else {
        return bad_request("name: required string member is missing");
    };
    let policy_text = match v.get("policy") {
        Some(Value::String(s)) => s.clone(),
        Some(o @ Value::Object(_)) => o.to_string(),
        _ => {
            return bad_request(
                "policy: required member is missing (a policy document, as an object or a string)",
            );
        }
    };
    if let Err(e) = Policy::parse(&policy_text) {
        return bad_request(&format!("policy: {e}"));
    }
    match st.keys().create(name, &policy_text).await {
        Ok(i) => Json(json!({
            "accessKeyId": i.id,
            "secretAccessKey": i.secret,
            "name": i.name,
            "createdAt": i.created_at,
        }))
        .into_response(),
        Err(e) => e.into_response(),
    }
}

async fn list(State(st): State<AuthState>) -> Response {
    let keys: Vec<Value> = st
        .keys()
        .list()
        .into_iter()
        .map(|k| {
            let policy = serde_json::from_str::<Value>(&k.policy_text)
                .unwrap_or(Value::String(k.policy_text.clone()));
            json!({"accessKeyId": k.id, "name": k.name, "createdAt": k.created_at, "policy": policy})
        })
        .collect();
    Json(json!({ "accessKeys": keys })).into_response()
}

async fn remove(State(st): State<AuthState>, Path(name): Path<String>) -> Response {
    match st.keys().delete(&name).await {
        Ok((id, name)) => Json(json!({"accessKeyId": id, "name": name})).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn rotate(
    State(st): State<AuthState>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let grace = if body.iter().all(u8::is_ascii_whitespace) {
        0
    } else {
        let v = match object(&body) {
            Ok(v) => v,
            Err(r) => return *r,
        };
        match v.get("graceSeconds") {
            None => 0,
            Some(g) => match g.as_u64().filter(|g| *g <= 86_400) {
                Some(g) => g,
                None => return bad_request("graceSeconds: must be a whole number from 0 to 86400"),
            },
        }
    };
    match st.keys().rotate(&name, Duration::from_secs(grace)).await {
        Ok(i) => Json(json!({"accessKeyId": i.id, "secretAccessKey": i.secret})).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn mint(
    State(st): State<AuthState>,
    caller: Option<Extension<Caller>>,
    body: axum::body::Bytes,
) -> Response {
    let Some(Extension(caller)) = caller.filter(|_| st.mode() == AuthMode::Sigv4) else {
        return bad_request("authentication is off (--auth none): Envoy needs no node token");
    };
    let v = match object(&body) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let node = match token_node(&v) {
        Ok(n) => n,
        Err(m) => return bad_request(&m),
    };
    let max = st.inner.node_token_ttl;
    let ttl = match v.get("ttlSeconds") {
        None => max,
        Some(t) => match t.as_u64().filter(|t| *t >= 1 && *t <= max.as_secs()) {
            Some(t) => Duration::from_secs(t),
            None => {
                return bad_request(&format!(
                    "ttlSeconds: must be a whole number from 1 to {} (--node-token-ttl)",
                    max.as_secs()
                ));
            }
        },
    };
    let node = node.to_string();
    match node_token::mint(&st.inner.token_key, st.keys(), &caller.key_id, &node, ttl).await {
        Ok(m) => Json(json!({
            "token": m.token,
            "tokenId": m.token_id,
            "node": m.node,
            "expiresAt": m.expires_at,
        }))
        .into_response(),
        Err(e) => e.into_response(),
    }
}

async fn revoke(State(st): State<AuthState>, Path(tid): Path<String>) -> Response {
    match st.keys().revoke_token(&tid).await {
        Ok(exp) => Json(json!({"tokenId": tid, "expiresAt": exp})).into_response(),
        Err(e) => e.into_response(),
    }
}
