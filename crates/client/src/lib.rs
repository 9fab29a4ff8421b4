//! Typed client for meshplane's App Mesh REST API (`/v20190125/...`), used by the
//! `meshplane` CLI verbs and by tests.
//!
//! ```text
//!   Client::create(id, spec, tags) ──PUT /v20190125/meshes/{m}/virtualNodes──▶ server
//!          ◀── ResourceData (unwrapped `VirtualNodeData`) or ClientError::Api(ApiError) ──
//!
//!   ResourceId { kind, mesh, parent, name } ──paths::item_path──▶
//!     Mesh            /meshes/{m}
//!     VirtualNode     /meshes/{m}/virtualNodes/{n}        (also Services, Routers, Gateways)
//!     Route           /meshes/{m}/virtualRouter/{r}/routes/{n}
//!     GatewayRoute    /meshes/{m}/virtualGateway/{g}/gatewayRoutes/{n}
//! ```
//!
//! Every operation is generic over [`ResourceKind`]: one `create`, `describe`, `update`,
//! `delete` and `list_*` serve all seven kinds, addressed by a [`ResourceId`] (or a
//! [`Collection`] for lists). The wire shapes come from `meshplane-api`, the same code
//! the server uses, so client and server cannot drift apart.
//!
//! Every request is SigV4-signed (service `appmesh`) when credentials are configured
//! ([`Client::from_settings`], resolved by [`config::Settings`] from the AWS credential chain);
//! without credentials requests go unsigned, which a server with `--auth none` accepts.
//! `https://` endpoints use rustls on ring, trusting the configured CA bundle (meshplane's own
//! CA, `<data-dir>/ca.pem`) or, without one, the platform's roots.
//!
//! What this crate deliberately does not do: retries (every App Mesh write is idempotent
//! but retrying is a policy decision for the caller), credential sources beyond static keys
//! (no SSO, `credential_process` or role assumption), and any client-side spec validation
//! beyond what parsing into `meshplane-model` types implies.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod config;
mod error;
mod meshplane;
pub use meshplane::TokenNode;
mod paths;

pub use config::{Credentials, Overrides, Settings};
pub use error::ClientError;
pub use paths::{Collection, collection_path, encode_query_value, encode_segment, item_path};

use std::path::Path;
use std::time::{Duration, SystemTime};

use meshplane_auth::sign::{SigningParams, sign};

use meshplane_api::{ErrorCode, ListOutput, ResourceData, ResourceRef, spec_to_json};
use meshplane_model::{ResourceId, ResourceKind, Spec, Tag};
use reqwest::{Method, StatusCode};
use serde_json::{Map, Value, json};

/// How long one request may take end to end before it fails with a transport error.
///
/// Every App Mesh operation is a single small JSON document; 30 s only trips on a hung
/// server, never on a slow but healthy one.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How long connecting may take; loopback and LAN control planes answer in milliseconds.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Page size asked for by the `list_all` helpers (the API maximum for resource lists).
const LIST_PAGE_SIZE: u32 = 100;

/// Page size asked for by [`Client::list_tags`] (`TagsLimit` is 1..50).
const TAGS_PAGE_SIZE: u32 = 50;

/// A client for one meshplane (or App Mesh-compatible) endpoint.
///
/// Cheap to clone: clones share one connection pool.
///
/// ```no_run
/// # async fn demo() -> Result<(), meshplane_client::ClientError> {
/// use meshplane_client::{Client, Collection};
/// use meshplane_model::{ResourceId, ResourceKind};
///
/// let client = Client::new("http://127.0.0.1:7080")?;
/// let node = client.describe(&ResourceId::child(ResourceKind::VirtualNode, "colorapp", "red")).await?;
/// println!("version {}", node.metadata.version);
/// for r in client.list_all(&Collection::in_mesh(ResourceKind::VirtualNode, "colorapp")).await? {
///     println!("{}", r.id.name);
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    /// The endpoint without a trailing `/`, e.g. `http://127.0.0.1:7080`.
    base: String,
    mesh_owner: Option<String>,
    /// Credentials and region every request is signed with; `None` sends unsigned requests.
    signing: Option<(Credentials, String)>,
}

// === impl Client ===

impl Client {
    /// A client for the API at `endpoint` (`http://host:port`, optionally with a path
    /// prefix such as `http://gw/appmesh`; a trailing `/` is ignored).
    ///
    /// Requests go unsigned; `https://` trusts the platform's roots. Fails with
    /// [`ClientError::InvalidEndpoint`] when the URL is not `http://` or `https://`, and
    /// with [`ClientError::Transport`] when the HTTP client cannot be built.
    pub fn new(endpoint: &str) -> Result<Client, ClientError> {
        Self::build(endpoint, None)
    }

    /// A client configured from [`Settings`]: its endpoint, CA bundle (the only roots
    /// trusted for `https://` when set; [`ClientError::CaBundle`] when unreadable or not PEM
    /// certificates) and credentials (every request signed for `settings.region`).
    pub fn from_settings(settings: &Settings) -> Result<Client, ClientError> {
        let mut client = Self::build(&settings.endpoint, settings.ca_bundle.as_deref())?;
        if let Some(c) = &settings.credentials {
            client = client.with_credentials(c.clone(), &settings.region);
        }
        Ok(client)
    }

    /// Signs every request with `credentials` for `region` (service `appmesh`).
    pub fn with_credentials(mut self, credentials: Credentials, region: &str) -> Client {
        self.signing = Some((credentials, region.to_owned()));
        self
    }

    /// Whether requests are signed.
    pub fn is_signed(&self) -> bool {
        self.signing.is_some()
    }

    fn build(endpoint: &str, ca_bundle: Option<&Path>) -> Result<Client, ClientError> {
        let base = endpoint.trim().trim_end_matches('/').to_owned();
        let rest = base
            .strip_prefix("http://")
            .or_else(|| base.strip_prefix("https://"))
            .ok_or_else(|| ClientError::InvalidEndpoint {
                endpoint: endpoint.to_owned(),
                reason: "must start with http:// or https://",
            })?;
        if rest.is_empty() || rest.starts_with('/') {
            return Err(ClientError::InvalidEndpoint {
                endpoint: endpoint.to_owned(),
                reason: "has no host",
            });
        }
        let http = http_builder(ca_bundle)?
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("meshplane-client/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(ClientError::Transport)?;
        Ok(Client {
            http,
            base,
            mesh_owner: None,
            signing: None,
        })
    }

    /// Sends `meshOwner=<account>` on every operation that takes it (all mesh-child
    /// operations and DescribeMesh), for meshes shared from another account.
    pub fn with_mesh_owner(mut self, account: impl Into<String>) -> Client {
        self.mesh_owner = Some(account.into());
        self
    }

    /// The endpoint this client talks to, without a trailing `/`.
    pub fn endpoint(&self) -> &str {
        &self.base
    }

    /// `Create<Kind>`: `PUT` to the collection with `{<name field>, spec, tags}`.
    ///
    /// `spec` must be of `id.kind` (else [`ClientError::KindMismatch`], nothing sent).
    /// `tags` are sent only when non-empty. No `clientToken` is sent, so a repeated call
    /// fails with `ConflictException` instead of being deduplicated.
    pub async fn create(
        &self,
        id: &ResourceId,
        spec: &Spec,
        tags: &[Tag],
    ) -> Result<ResourceData, ClientError> {
        check_kind(id.kind, spec)?;
        let mut body = Map::new();
        let own_field = meshplane_api::name_fields(id.kind)
            .last()
            .copied()
            .unwrap_or("meshName");
        body.insert(own_field.to_owned(), json!(id.name));
        body.insert("spec".to_owned(), spec_to_json(spec));
        if !tags.is_empty() {
            body.insert("tags".to_owned(), tags_json(tags));
        }
        let path = collection_path(&Collection::of(id));
        let query = self.owner_query(id.kind != ResourceKind::Mesh);
        let v = self
            .send(Method::PUT, &path, query, Some(Value::Object(body)))
            .await?;
        decode_data(id.kind, &v)
    }

    /// `Describe<Kind>`: `GET` the item. A missing resource (or parent) is
    /// `ClientError::Api` with [`ErrorCode::NotFound`]; see [`ClientError::is_not_found`].
    pub async fn describe(&self, id: &ResourceId) -> Result<ResourceData, ClientError> {
        let v = self
            .send(Method::GET, &item_path(id), self.owner_query(true), None)
            .await?;
        decode_data(id.kind, &v)
    }

    /// Like [`Client::describe`] but maps `NotFoundException` to `Ok(None)`.
    pub async fn get(&self, id: &ResourceId) -> Result<Option<ResourceData>, ClientError> {
        match self.describe(id).await {
            Ok(d) => Ok(Some(d)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `Update<Kind>`: `PUT` the item with `{spec}` (the whole spec is replaced; the
    /// server bumps `metadata.version`). Tags cannot be changed here; use
    /// [`Client::tag_resource`].
    pub async fn update(&self, id: &ResourceId, spec: &Spec) -> Result<ResourceData, ClientError> {
        check_kind(id.kind, spec)?;
        let body = json!({ "spec": spec_to_json(spec) });
        let query = self.owner_query(id.kind != ResourceKind::Mesh);
        let v = self
            .send(Method::PUT, &item_path(id), query, Some(body))
            .await?;
        decode_data(id.kind, &v)
    }

    /// `Delete<Kind>`: `DELETE` the item; returns the final resource (status `DELETED`).
    /// A resource still in use answers `ResourceInUseException`.
    pub async fn delete(&self, id: &ResourceId) -> Result<ResourceData, ClientError> {
        let query = self.owner_query(id.kind != ResourceKind::Mesh);
        let v = self
            .send(Method::DELETE, &item_path(id), query, None)
            .await?;
        decode_data(id.kind, &v)
    }

    /// `List<Kind>`: one page. `limit` is the page size (1..100, server default when
    /// `None`); `next_token` is the `next_token` of the previous page.
    pub async fn list_page(
        &self,
        collection: &Collection,
        limit: Option<u32>,
        next_token: Option<&str>,
    ) -> Result<ListOutput, ClientError> {
        let mut query = self.owner_query(collection.kind != ResourceKind::Mesh);
        if let Some(l) = limit {
            query.push(("limit", l.to_string()));
        }
        if let Some(t) = next_token {
            query.push(("nextToken", t.to_owned()));
        }
        let v = self
            .send(Method::GET, &collection_path(collection), query, None)
            .await?;
        ListOutput::from_json(collection.kind, &v).map_err(|message| ClientError::Decode {
            what: meshplane_api::list_key(collection.kind),
            message,
        })
    }

    /// `List<Kind>`, following `nextToken` until the last page; items in server order.
    ///
    /// Fails with [`ClientError::Decode`] if the server repeats a token (which would
    /// otherwise loop forever).
    pub async fn list_all(&self, collection: &Collection) -> Result<Vec<ResourceRef>, ClientError> {
        let mut items = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .list_page(collection, Some(LIST_PAGE_SIZE), token.as_deref())
                .await?;
            items.extend(page.items);
            match page.next_token {
                Some(t) if Some(&t) == token.as_ref() => {
                    return Err(ClientError::Decode {
                        what: "nextToken",
                        message: format!("server returned the same nextToken `{t}` twice"),
                    });
                }
                Some(t) => token = Some(t),
                None => return Ok(items),
            }
        }
    }

    /// `ListTagsForResource`, following `nextToken`: every tag of the resource `arn`.
    pub async fn list_tags(&self, arn: &str) -> Result<Vec<Tag>, ClientError> {
        let mut tags = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut query = vec![
                ("resourceArn", arn.to_owned()),
                ("limit", TAGS_PAGE_SIZE.to_string()),
            ];
            if let Some(t) = &token {
                query.push(("nextToken", t.clone()));
            }
            let v = self
                .send(Method::GET, "/v20190125/tags", query, None)
                .await?;
            let page = v.get("tags").cloned().unwrap_or(Value::Array(Vec::new()));
            let page =
                meshplane_api::parse_tags(&page, "tags").map_err(|e| ClientError::Decode {
                    what: "tags",
                    message: e.message,
                })?;
            tags.extend(page);
            match v.get("nextToken").and_then(Value::as_str) {
                Some(t) if Some(t) == token.as_deref() => {
                    return Err(ClientError::Decode {
                        what: "nextToken",
                        message: format!("server returned the same nextToken `{t}` twice"),
                    });
                }
                Some(t) => token = Some(t.to_owned()),
                None => return Ok(tags),
            }
        }
    }

    /// `TagResource`: adds `tags` to the resource `arn`, overwriting values of existing
    /// keys.
    pub async fn tag_resource(&self, arn: &str, tags: &[Tag]) -> Result<(), ClientError> {
        let body = json!({ "tags": tags_json(tags) });
        self.send(
            Method::PUT,
            "/v20190125/tag",
            vec![("resourceArn", arn.to_owned())],
            Some(body),
        )
        .await?;
        Ok(())
    }

    /// `UntagResource`: removes the tags with `keys` from the resource `arn` (absent keys
    /// are ignored by the server).
    pub async fn untag_resource(&self, arn: &str, keys: &[String]) -> Result<(), ClientError> {
        let body = json!({ "tagKeys": keys });
        self.send(
            Method::PUT,
            "/v20190125/untag",
            vec![("resourceArn", arn.to_owned())],
            Some(body),
        )
        .await?;
        Ok(())
    }

    /// `meshOwner=<account>` when configured and the operation takes it (`applies`).
    fn owner_query(&self, applies: bool) -> Vec<(&'static str, String)> {
        self.mesh_owner
            .iter()
            .filter(|_| applies)
            .map(|o| ("meshOwner", o.clone()))
            .collect()
    }

    /// Sends one request; `path` is already percent-encoded, `query` values are not.
    async fn send(
        &self,
        method: Method,
        path: &str,
        query: Vec<(&'static str, String)>,
        body: Option<Value>,
    ) -> Result<Value, ClientError> {
        let mut url = format!("{}{}", self.base, path);
        for (i, (k, v)) in query.iter().enumerate() {
            url.push(if i == 0 { '?' } else { '&' });
            url.push_str(k);
            url.push('=');
            url.push_str(&encode_query_value(v));
        }
        let mut req = self.http.request(method, &url);
        if let Some(b) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(b.to_string());
        }
        let mut request = req.build().map_err(ClientError::Transport)?;
        self.sign(&mut request)?;
        let resp = self
            .http
            .execute(request)
            .await
            .map_err(ClientError::Transport)?;
        let status = resp.status();
        let error_type = resp
            .headers()
            .get("x-amzn-ErrorType")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = resp.bytes().await.map_err(ClientError::Transport)?;
        if status.is_success() {
            if bytes.iter().all(u8::is_ascii_whitespace) {
                return Ok(Value::Object(Map::new()));
            }
            return serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode {
                what: "response body",
                message: e.to_string(),
            });
        }
        Err(error::api_error(status, error_type.as_deref(), &bytes))
    }

    /// Adds the SigV4 headers when credentials are configured. Signs the URL exactly as
    /// reqwest will send it (its path already percent-encoded by `url`).
    fn sign(&self, request: &mut reqwest::Request) -> Result<(), ClientError> {
        let Some((credentials, region)) = &self.signing else {
            return Ok(());
        };
        let uri: http::Uri = request
            .url()
            .as_str()
            .parse()
            .map_err(|_| ClientError::Sign("the request url is not a valid uri".to_owned()))?;
        let body = request.body().and_then(|b| b.as_bytes()).unwrap_or(b"");
        let params = SigningParams {
            region,
            service: "appmesh",
            now: SystemTime::now(),
        };
        let added = sign(
            request.method().as_str(),
            &uri,
            request.headers(),
            body,
            credentials,
            &params,
        )
        .map_err(|e| ClientError::Sign(e.to_string()))?;
        for (name, value) in added {
            request.headers_mut().insert(name, value);
        }
        Ok(())
    }
}

/// reqwest is built without a crypto provider (the workspace never builds aws-lc-rs), so
/// ring's is installed for the process; a second install fails harmlessly. rustls 0.23.48
/// deprecates ring's provider only because it lacks post-quantum key exchange, which exists
/// in rustls solely on aws-lc-rs; classical X25519/P-256 is what meshplane's server offers.
#[allow(deprecated)]
pub fn install_ring_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A reqwest builder on rustls (ring) that trusts only `ca_bundle` when given, else the
/// platform's roots; for callers that speak other protocols on the same port (the agent's
/// Cloud Map registration).
pub fn http_builder(ca_bundle: Option<&Path>) -> Result<reqwest::ClientBuilder, ClientError> {
    install_ring_provider();
    let builder = reqwest::Client::builder();
    Ok(match ca_bundle {
        Some(path) => builder.tls_certs_only(read_ca_bundle(path)?),
        None => builder,
    })
}

/// Reads a PEM CA bundle into reqwest certificates.
fn read_ca_bundle(path: &Path) -> Result<Vec<reqwest::Certificate>, ClientError> {
    let err = |message: String| ClientError::CaBundle {
        path: path.to_path_buf(),
        message,
    };
    let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no PEM certificate in the file".to_owned()));
    }
    Ok(certs)
}

fn check_kind(kind: ResourceKind, spec: &Spec) -> Result<(), ClientError> {
    if spec.kind() == kind {
        Ok(())
    } else {
        Err(ClientError::KindMismatch {
            expected: kind,
            got: spec.kind(),
        })
    }
}

fn tags_json(tags: &[Tag]) -> Value {
    Value::Array(
        tags.iter()
            .map(|t| json!({ "key": t.key, "value": t.value }))
            .collect(),
    )
}

fn decode_data(kind: ResourceKind, v: &Value) -> Result<ResourceData, ClientError> {
    ResourceData::from_json(kind, v).map_err(|message| ClientError::Decode {
        what: kind.as_str(),
        message,
    })
}

/// The [`ErrorCode`] App Mesh uses for an HTTP status, for error responses that carry
/// no recognisable `x-amzn-ErrorType` (e.g. from a proxy in front of the server).
pub fn code_for_status(status: StatusCode) -> ErrorCode {
    match status.as_u16() {
        400 => ErrorCode::BadRequest,
        403 => ErrorCode::Forbidden,
        404 => ErrorCode::NotFound,
        409 => ErrorCode::Conflict,
        429 => ErrorCode::TooManyRequests,
        503 => ErrorCode::ServiceUnavailable,
        _ => ErrorCode::InternalServerError,
    }
}

#[cfg(test)]
mod tests;
