//! The App Mesh operations on top of the store: existence and in-use rules, quotas,
//! versions, idempotency, and optimistic concurrency.
//!
//! Every write follows the same shape: read exactly what the decision depends on, decide
//! (validate, check references and quotas), then commit one transaction whose
//! preconditions pin each thing read:
//!
//! ```text
//!   create/update X   ModRevision(mesh)  ModRevision(parent router/gateway)
//!                     Absent(X) | ModRevision(X)
//!                     ModRevision(each resource X's spec references)
//!                     Absent(token) | ModRevision(expired token record)
//!                     PrefixCountBelow(X's kind in its mesh/parent, quota)   (create only)
//!   delete X          ModRevision(X)
//!                     PrefixUnchangedSince(each kind that can reference or contain X, R)
//! ```
//!
//! So a write conflicts only with writes to the same resource or to what it depends on;
//! writers on disjoint resources of one mesh never conflict, and a quota is exact without
//! serialising creates. A lost race re-runs the operation from its reads after a jittered
//! backoff, within a time budget, so clients see a 409 only where App Mesh answers one
//! (the resource exists, a clientToken was reused with other parameters). Concurrent
//! writers never act on stale references, never leave one dangling, and never lose an
//! update; versions stay unique and monotonic.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use meshplane_api::{
    ApiError, CreateInput, ErrorCode, ListOutput, ResourceData, ResourceMetadata, ResourceRef,
    UpdateInput,
};
use meshplane_model::{
    Arn, Metadata, Resource, ResourceId, ResourceKind, Spec, Status, Tag, Violation, Violations,
    validate,
};
use meshplane_store::{
    Backoff, KeyValue, Op, Precondition, Revision, Store, StoreError, Txn, TxnOutcome,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::ApiConfig;
use crate::keys;

/// Tags allowed per resource.
const MAX_TAGS: usize = 50;

/// The App Mesh operations, shared by all request handlers.
#[derive(Clone)]
pub struct MeshService {
    store: Arc<dyn Store>,
    cfg: Arc<ApiConfig>,
    status: Option<Arc<dyn StatusExtension>>,
    decoded: Arc<DecodedCache>,
}

/// Decoded resources by store key, valid for one `mod_revision`.
///
/// Writes read the records they reference and deletes list the kinds that can reference
/// them; decoding each record's JSON again dominated write CPU (profiled: ~3/4 of it at 200
/// nodes when every write read its whole mesh). The store stays the source of truth: a
/// cached value is used only when the record read has exactly the cached `mod_revision`, so
/// consistency is unchanged. Deleted records are forgotten when their delete commits.
#[derive(Default)]
struct DecodedCache {
    entries: std::sync::Mutex<std::collections::HashMap<String, (Revision, Arc<Resource>)>>,
}

/// Extra, meshplane-specific members of a resource's `status` object (for example the
/// proxies connected for a virtual node and the last configuration they rejected).
///
/// AWS SDKs ignore members they do not know, so these ride along without breaking
/// compatibility while making rejected configuration visible where users already look.
pub trait StatusExtension: Send + Sync + 'static {
    /// Members to merge into `status` (next to `"status": "ACTIVE"`), if any.
    fn status_members(&self, id: &ResourceId) -> Option<serde_json::Map<String, Value>>;
}

/// A mesh's resources read at one revision.
struct MeshView {
    revision: Revision,
    resources: Vec<Arc<Resource>>,
}

impl MeshView {
    fn all(&self) -> impl Iterator<Item = &Resource> {
        self.resources.iter().map(|r| &**r)
    }

    fn of(&self, kind: ResourceKind) -> impl Iterator<Item = &Resource> {
        self.all().filter(move |r| r.id.kind == kind)
    }

    fn find(&self, kind: ResourceKind, name: &str) -> Option<&Resource> {
        self.of(kind).find(|r| r.id.name == name)
    }
}

/// What a clientToken lookup decided.
enum Replay {
    /// The token answered this request before: send the same response.
    Answer(Value),
    /// Go ahead; the precondition (if a token was given) makes the token's use atomic
    /// with the write, so two racing requests with one token cannot both write.
    Proceed(Option<Precondition>),
}

/// The reads a child write decided on, as preconditions, plus what it read.
struct ChildWrite {
    /// Pin the mesh, the parent, the resource itself and every referenced resource.
    preconditions: Vec<Precondition>,
    /// The resource's current record, for updates.
    current: Option<(KeyValue, Resource)>,
}

/// What an idempotency record remembers about the first request with a token.
#[derive(Serialize, Deserialize)]
struct IdempotencyRecord {
    fingerprint: String,
    response: Value,
    at_ms: i64,
}

/// Waits before re-running an operation that lost a race; ConflictException once the
/// retry budget ([`Backoff::BUDGET`]) is spent.
async fn retry_after(backoff: &mut Backoff) -> Result<(), ApiError> {
    if backoff.wait().await {
        Ok(())
    } else {
        Err(MeshService::too_contended())
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn store_err(e: StoreError) -> ApiError {
    match e {
        StoreError::Unavailable(msg) => {
            tracing::error!(error = %msg, "store unavailable");
            ApiError::new(
                ErrorCode::ServiceUnavailable,
                "the store is unavailable, retry later",
            )
        }
        other => {
            tracing::error!(error = %other, "store failure");
            ApiError::new(ErrorCode::InternalServerError, "internal error")
        }
    }
}

fn internal(what: &str, detail: impl std::fmt::Display) -> ApiError {
    tracing::error!(error = %detail, what, "internal error");
    ApiError::new(ErrorCode::InternalServerError, "internal error")
}

/// `VirtualNode`, `route` ... as App Mesh writes them in messages.
fn describe_id(id: &ResourceId) -> String {
    match (id.kind, &id.parent) {
        (ResourceKind::Mesh, _) => format!("Mesh {}", id.mesh),
        (k, Some(p)) => format!(
            "{} {} in {} {} of mesh {}",
            k.pascal(),
            id.name,
            k.parent_kind().map_or("", ResourceKind::pascal),
            p,
            id.mesh
        ),
        (k, None) => format!("{} {} in mesh {}", k.pascal(), id.name, id.mesh),
    }
}

fn not_found(id: &ResourceId) -> ApiError {
    ApiError::not_found(format!("{} not found", describe_id(id)))
}

impl MeshService {
    /// A service over `store`.
    pub fn new(store: Arc<dyn Store>, cfg: ApiConfig) -> Self {
        MeshService {
            store,
            cfg: Arc::new(cfg),
            status: None,
            decoded: Arc::default(),
        }
    }

    /// Adds live status members (proxies, rejections) to Describe responses.
    pub fn with_status_extension(mut self, ext: Arc<dyn StatusExtension>) -> Self {
        self.status = Some(ext);
        self
    }

    /// The configuration in force.
    pub fn config(&self) -> &ApiConfig {
        &self.cfg
    }

    fn arn(&self, id: &ResourceId) -> String {
        Arn::format(
            &self.cfg.partition,
            &self.cfg.region,
            &self.cfg.account_id,
            id,
        )
    }

    fn data(&self, r: &Resource, status: Status) -> Value {
        ResourceData {
            id: r.id.clone(),
            spec: r.spec.clone(),
            metadata: self.wire_metadata(r),
            status,
        }
        .to_json()
    }

    fn wire_metadata(&self, r: &Resource) -> ResourceMetadata {
        let m = &r.metadata;
        ResourceMetadata {
            arn: self.arn(&r.id),
            version: m.version,
            uid: m.uid.clone(),
            created_at_ms: m.created_at_ms,
            last_updated_at_ms: m.last_updated_at_ms,
            mesh_owner: m.mesh_owner.clone(),
            resource_owner: m.resource_owner.clone(),
        }
    }

    /// `meshOwner` names the account owning the mesh; this server has one account.
    fn check_owner(&self, mesh: &str, mesh_owner: Option<&str>) -> Result<(), ApiError> {
        match mesh_owner {
            Some(o) if o != self.cfg.account_id => Err(ApiError::not_found(format!(
                "Mesh {mesh} owned by account {o} not found"
            ))),
            _ => Ok(()),
        }
    }

    async fn get_resource(
        &self,
        id: &ResourceId,
    ) -> Result<Option<(KeyValue, Resource)>, ApiError> {
        let Some(kv) = self
            .store
            .get(&keys::resource_key(id))
            .await
            .map_err(store_err)?
        else {
            return Ok(None);
        };
        let r = keys::decode(&kv.value).map_err(|e| internal("decode", e))?;
        Ok(Some((kv, r)))
    }

    /// Decodes a record, reusing the decoded value while its `mod_revision` is unchanged.
    fn decode_cached(&self, kv: &KeyValue) -> Result<Arc<Resource>, ApiError> {
        let mut cache = self
            .decoded
            .entries
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some((rev, r)) = cache.get(&kv.key)
            && *rev == kv.mod_revision
        {
            return Ok(r.clone());
        }
        let r = Arc::new(keys::decode(&kv.value).map_err(|e| internal("decode", e))?);
        cache.insert(kv.key.clone(), (kv.mod_revision, r.clone()));
        Ok(r)
    }

    fn forget_decoded(&self, key: &str) {
        self.decoded
            .entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }

    /// Every resource under `prefix`, read at one revision.
    async fn list_decoded(&self, prefix: &str) -> Result<MeshView, ApiError> {
        let page = self.store.list(prefix, None, 0).await.map_err(store_err)?;
        let resources = page
            .items
            .iter()
            .map(|kv| self.decode_cached(kv))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(MeshView {
            revision: page.revision,
            resources,
        })
    }

    /// Returns the stored response when `token` was already used with the same request,
    /// ConflictException when it was used with a different one, and otherwise the
    /// precondition that makes this use of the token atomic with the write.
    async fn replay(&self, token: Option<&str>, fingerprint: &str) -> Result<Replay, ApiError> {
        let Some(token) = token else {
            return Ok(Replay::Proceed(None));
        };
        let key = keys::idempotency_key(token);
        let Some(kv) = self.store.get(&key).await.map_err(store_err)? else {
            return Ok(Replay::Proceed(Some(Precondition::Absent(key))));
        };
        let rec: IdempotencyRecord =
            serde_json::from_slice(&kv.value).map_err(|e| internal("decode idempotency", e))?;
        if now_ms() - rec.at_ms > self.cfg.idempotency_ttl_ms {
            // Expired: this request may take the token over, unless another does first.
            return Ok(Replay::Proceed(Some(Precondition::ModRevision(
                key,
                kv.mod_revision,
            ))));
        }
        if rec.fingerprint == fingerprint {
            Ok(Replay::Answer(rec.response))
        } else {
            Err(ApiError::new(
                ErrorCode::Conflict,
                format!("clientToken {token} was already used with different request parameters"),
            ))
        }
    }

    fn idempotency_ops(
        &self,
        token: Option<&str>,
        fingerprint: &str,
        response: &Value,
        txn: &mut Txn,
    ) {
        if let Some(token) = token {
            let rec = IdempotencyRecord {
                fingerprint: fingerprint.to_owned(),
                response: response.clone(),
                at_ms: now_ms(),
            };
            let key = keys::idempotency_key(token);
            // Expired records are overwritten; live ones were answered by `replay`.
            txn.ops.push(Op::Put {
                key,
                value: serde_json::to_vec(&rec).unwrap_or_default(),
            });
        }
    }

    async fn commit(&self, txn: Txn) -> Result<bool, ApiError> {
        Ok(self.try_commit(txn).await?.is_none())
    }

    /// Commits `txn`; `Some(i)` when precondition `i` failed and nothing was written.
    async fn try_commit(&self, txn: Txn) -> Result<Option<usize>, ApiError> {
        match self.store.txn(txn).await.map_err(store_err)? {
            TxnOutcome::Committed { .. } => Ok(None),
            TxnOutcome::Failed { precondition } => Ok(Some(precondition)),
        }
    }

    fn too_contended() -> ApiError {
        ApiError::new(
            ErrorCode::Conflict,
            "the resource is being modified concurrently, retry",
        )
    }

    /// CreateMesh, CreateVirtualNode, ... `id` names the new resource.
    pub async fn create(
        &self,
        id: ResourceId,
        mesh_owner: Option<&str>,
        input: CreateInput,
        fingerprint: &str,
    ) -> Result<Value, ApiError> {
        let token = input.client_token.as_deref();
        let mut violations = Vec::new();
        let name_field = meshplane_api::name_fields(id.kind)
            .last()
            .copied()
            .unwrap_or("name");
        collect(
            &mut violations,
            validate::validate_name(name_field, &id.name),
        );
        collect(&mut violations, validate::validate_spec(&input.spec));
        if input.tags.len() > MAX_TAGS {
            violations.push(Violation {
                path: "tags".into(),
                message: format!(
                    "at most {MAX_TAGS} tags are allowed, got {}",
                    input.tags.len()
                ),
            });
        }
        collect(&mut violations, validate::validate_tags(&input.tags));
        if !violations.is_empty() {
            return Err(Violations(violations).into());
        }
        if id.kind != ResourceKind::Mesh {
            self.check_owner(&id.mesh, mesh_owner)?;
        }
        let key = keys::resource_key(&id);
        let (quota, what) = self.quota(id.kind);
        let mut backoff = Backoff::default();
        loop {
            let token_guard = match self.replay(token, fingerprint).await? {
                Replay::Answer(resp) => return Ok(resp),
                Replay::Proceed(p) => p,
            };
            let mut txn = Txn::default();
            if id.kind == ResourceKind::Mesh {
                if self.store.get(&key).await.map_err(store_err)?.is_some() {
                    return Err(ApiError::new(
                        ErrorCode::Conflict,
                        format!("Mesh {} already exists", id.mesh),
                    ));
                }
                txn.preconditions.push(Precondition::Absent(key.clone()));
            } else {
                txn.preconditions = self
                    .check_child_write(&id, &input.spec, false)
                    .await?
                    .preconditions;
            }
            txn.preconditions.extend(token_guard);
            // Last, so that a failure here means every other read still held.
            let quota_at = txn.preconditions.len();
            txn.preconditions.push(Precondition::PrefixCountBelow(
                keys::kind_prefix(id.kind, &id.mesh, id.parent.as_deref()),
                quota as u64,
            ));
            let now = now_ms();
            let resource = Resource {
                id: id.clone(),
                spec: input.spec.clone(),
                metadata: Metadata {
                    uid: uuid::Uuid::new_v4().to_string(),
                    version: 1,
                    created_at_ms: now,
                    last_updated_at_ms: now,
                    mesh_owner: self.cfg.account_id.clone(),
                    resource_owner: self.cfg.account_id.clone(),
                },
                tags: input.tags.clone(),
                status: Status::Active,
            };
            let response = self.data(&resource, Status::Active);
            txn.ops.push(Op::Put {
                key: key.clone(),
                value: keys::encode(&resource),
            });
            self.idempotency_ops(token, fingerprint, &response, &mut txn);
            match self.try_commit(txn).await? {
                None => {
                    tracing::info!(resource = %id, "created");
                    return Ok(response);
                }
                Some(i) if i == quota_at => return Err(limit(what, quota)),
                Some(_) => retry_after(&mut backoff).await?,
            }
        }
    }

    /// The checks shared by creating (`exists == false`) and updating (`exists == true`) a
    /// resource inside a mesh: the mesh and the parent exist, the resource does (not) exist
    /// yet, the resources its spec references exist and fit. Reads only those records, and
    /// returns one precondition per record read (see the module docs); quotas are checked
    /// by the caller's `PrefixCountBelow`.
    async fn check_child_write(
        &self,
        id: &ResourceId,
        spec: &Spec,
        exists: bool,
    ) -> Result<ChildWrite, ApiError> {
        let mesh_id = ResourceId::mesh(id.mesh.clone());
        let Some(mesh_kv) = self
            .store
            .get(&keys::resource_key(&mesh_id))
            .await
            .map_err(store_err)?
        else {
            return Err(not_found(&mesh_id));
        };
        let mut preconditions = vec![Precondition::ModRevision(mesh_kv.key, mesh_kv.mod_revision)];
        let mut read = Vec::new();
        if let Some(parent) = id.parent_id().filter(|p| p.kind != ResourceKind::Mesh) {
            match self.get_decoded(&parent).await? {
                Some((kv, r)) => {
                    preconditions.push(Precondition::ModRevision(kv.key, kv.mod_revision));
                    read.push(r);
                }
                None => return Err(not_found(&parent)),
            }
        }
        let current = self.get_resource(id).await?;
        match (exists, &current) {
            (false, Some(_)) => {
                return Err(ApiError::new(
                    ErrorCode::Conflict,
                    format!("{} already exists", describe_id(id)),
                ));
            }
            (false, None) => preconditions.push(Precondition::Absent(keys::resource_key(id))),
            (true, None) => return Err(not_found(id)),
            (true, Some((kv, _))) => {
                preconditions.push(Precondition::ModRevision(kv.key.clone(), kv.mod_revision));
            }
        }
        check_backends_quota(&self.cfg.quotas, spec)?;
        for target in referenced(id, spec) {
            if read.iter().any(|r| r.id == target) {
                continue;
            }
            // A missing reference is reported by `check_references` below.
            if let Some((kv, r)) = self.get_decoded(&target).await? {
                preconditions.push(Precondition::ModRevision(kv.key, kv.mod_revision));
                read.push(r);
            }
        }
        // A gateway route's target port is checked against its service's provider.
        if let Spec::GatewayRoute(gr) = spec
            && gr.target().is_some_and(|t| t.port.is_some())
        {
            let providers: Vec<ResourceId> = read.iter().filter_map(provider_id).collect();
            for target in providers {
                if let Some((kv, r)) = self.get_decoded(&target).await? {
                    preconditions.push(Precondition::ModRevision(kv.key, kv.mod_revision));
                    read.push(r);
                }
            }
        }
        let view = MeshView {
            revision: 0,
            resources: read,
        };
        check_references(&view, id, spec)?;
        Ok(ChildWrite {
            preconditions,
            current,
        })
    }

    async fn get_decoded(
        &self,
        id: &ResourceId,
    ) -> Result<Option<(KeyValue, Arc<Resource>)>, ApiError> {
        let Some(kv) = self
            .store
            .get(&keys::resource_key(id))
            .await
            .map_err(store_err)?
        else {
            return Ok(None);
        };
        let r = self.decode_cached(&kv)?;
        Ok(Some((kv, r)))
    }

    /// DescribeMesh, DescribeVirtualNode, ...
    pub async fn describe(
        &self,
        id: &ResourceId,
        mesh_owner: Option<&str>,
    ) -> Result<Value, ApiError> {
        self.check_owner(&id.mesh, mesh_owner)?;
        if let Some((_, r)) = self.get_resource(id).await? {
            let mut body = self.data(&r, Status::Active);
            if let Some(extra) = self.status.as_ref().and_then(|s| s.status_members(id))
                && let Some(st) = body.get_mut("status").and_then(Value::as_object_mut)
            {
                st.extend(extra);
            }
            return Ok(body);
        }
        Err(self.missing(id).await)
    }

    /// The NotFoundException for `id`, naming the outermost missing ancestor.
    async fn missing(&self, id: &ResourceId) -> ApiError {
        let mut chain = Vec::new();
        let mut cur = id.parent_id();
        while let Some(p) = cur {
            cur = p.parent_id();
            chain.push(p);
        }
        for ancestor in chain.iter().rev() {
            if let Ok(None) = self.get_resource(ancestor).await {
                return not_found(ancestor);
            }
        }
        not_found(id)
    }

    /// UpdateMesh, UpdateVirtualNode, ...: replaces the spec, version + 1.
    pub async fn update(
        &self,
        id: ResourceId,
        mesh_owner: Option<&str>,
        input: UpdateInput,
        fingerprint: &str,
    ) -> Result<Value, ApiError> {
        let token = input.client_token.as_deref();
        validate::validate_spec(&input.spec).map_err(ApiError::from)?;
        self.check_owner(&id.mesh, mesh_owner)?;
        let mut backoff = Backoff::default();
        loop {
            let token_guard = match self.replay(token, fingerprint).await? {
                Replay::Answer(resp) => return Ok(resp),
                Replay::Proceed(p) => p,
            };
            let mut txn = Txn::default();
            let (kv, current) = if id.kind == ResourceKind::Mesh {
                let (kv, current) = self
                    .get_resource(&id)
                    .await?
                    .ok_or_else(|| not_found(&id))?;
                txn.preconditions
                    .push(Precondition::ModRevision(kv.key.clone(), kv.mod_revision));
                (kv, current)
            } else {
                let write = self.check_child_write(&id, &input.spec, true).await?;
                txn.preconditions = write.preconditions;
                write.current.ok_or_else(|| not_found(&id))?
            };
            txn.preconditions.extend(token_guard);
            let mut next = current.clone();
            next.spec = input.spec.clone();
            next.metadata.version += 1;
            next.metadata.last_updated_at_ms = now_ms().max(current.metadata.last_updated_at_ms);
            let response = self.data(&next, Status::Active);
            txn.ops.push(Op::Put {
                key: kv.key,
                value: keys::encode(&next),
            });
            self.idempotency_ops(token, fingerprint, &response, &mut txn);
            if self.commit(txn).await? {
                tracing::info!(resource = %id, version = next.metadata.version, "updated");
                return Ok(response);
            }
            retry_after(&mut backoff).await?;
        }
    }

    /// DeleteMesh, DeleteVirtualNode, ...: refuses while others still reference or
    /// contain the resource; returns it with status `DELETED`.
    pub async fn delete(
        &self,
        id: ResourceId,
        mesh_owner: Option<&str>,
    ) -> Result<Value, ApiError> {
        self.check_owner(&id.mesh, mesh_owner)?;
        let mut backoff = Backoff::default();
        loop {
            let (kv, current) = match self.get_resource(&id).await? {
                Some(x) => x,
                None => return Err(self.missing(&id).await),
            };
            let mut txn = Txn::default();
            txn.preconditions
                .push(Precondition::ModRevision(kv.key.clone(), kv.mod_revision));
            // Only the kinds that can reference or contain `id` are read; a write that adds
            // a reference meanwhile changes one of these prefixes (or fails on its own
            // ModRevision of `id` if this delete commits first).
            let mut users = MeshView {
                revision: 0,
                resources: Vec::new(),
            };
            for prefix in referrer_prefixes(&id) {
                let view = self.list_decoded(&prefix).await?;
                txn.preconditions
                    .push(Precondition::PrefixUnchangedSince(prefix, view.revision));
                users.resources.extend(view.resources);
            }
            if let Some(reason) = in_use(&users, &id) {
                return Err(ApiError::new(ErrorCode::ResourceInUse, reason));
            }
            txn.ops.push(Op::Delete {
                key: kv.key.clone(),
            });
            if self.commit(txn).await? {
                self.forget_decoded(&kv.key);
                tracing::info!(resource = %id, "deleted");
                let mut gone = current;
                gone.status = Status::Deleted;
                return Ok(self.data(&gone, Status::Deleted));
            }
            retry_after(&mut backoff).await?;
        }
    }

    /// ListMeshes, ListVirtualNodes, ...: `parent` is `Some(id)` of the mesh, router or
    /// gateway whose children are listed (None for meshes).
    pub async fn list(
        &self,
        kind: ResourceKind,
        parent: Option<&ResourceId>,
        mesh_owner: Option<&str>,
        limit: Option<&str>,
        next_token: Option<&str>,
    ) -> Result<Value, ApiError> {
        let limit = parse_limit(limit, 100)?;
        if let Some(p) = parent {
            self.check_owner(&p.mesh, mesh_owner)?;
            if self.get_resource(p).await?.is_none() {
                return Err(self.missing(p).await);
            }
        }
        let prefix = match parent {
            None => keys::MESHES_PREFIX.to_owned(),
            Some(p) if p.kind == ResourceKind::Mesh => keys::kind_prefix(kind, &p.mesh, None),
            Some(p) => keys::kind_prefix(kind, &p.mesh, Some(&p.name)),
        };
        let start_after = match next_token {
            Some(t) => Some(decode_token(t, &prefix)?),
            None => None,
        };
        let page = self
            .store
            .list(&prefix, start_after.as_deref(), limit)
            .await
            .map_err(store_err)?;
        let mut items = Vec::with_capacity(page.items.len());
        for kv in &page.items {
            let r = keys::decode(&kv.value).map_err(|e| internal("decode", e))?;
            items.push(ResourceRef {
                id: r.id.clone(),
                metadata: self.wire_metadata(&r),
            });
        }
        let next_token = match (page.more, page.items.last()) {
            (true, Some(last)) => Some(encode_token(&last.key)),
            _ => None,
        };
        Ok(ListOutput { items, next_token }.to_json(kind))
    }

    async fn resource_by_arn(&self, arn: &str) -> Result<(KeyValue, Resource), ApiError> {
        // Names may contain `/`, so an ARN can have several readings: take the first that
        // names an existing resource.
        let candidates = Arn::parse_candidates(arn)
            .map_err(|e| ApiError::bad_request(format!("resourceArn: {e}")))?;
        for parsed in candidates {
            if parsed.partition != self.cfg.partition
                || parsed.region != self.cfg.region
                || parsed.account != self.cfg.account_id
            {
                break;
            }
            if let Some(found) = self.get_resource(&parsed.id).await? {
                return Ok(found);
            }
        }
        Err(ApiError::not_found(format!("resource {arn} not found")))
    }

    /// Deletes clientToken records older than the idempotency TTL; returns how many went.
    /// A record replaced meanwhile (its precondition fails) is left alone.
    pub async fn prune_idempotency(&self) -> Result<usize, ApiError> {
        let now = now_ms();
        let mut removed = 0;
        let mut start: Option<String> = None;
        loop {
            let page = self
                .store
                .list(keys::IDEMPOTENCY_PREFIX, start.as_deref(), 500)
                .await
                .map_err(store_err)?;
            for kv in &page.items {
                let expired = serde_json::from_slice::<IdempotencyRecord>(&kv.value)
                    .map_or(true, |r| now - r.at_ms > self.cfg.idempotency_ttl_ms);
                if expired {
                    let txn = Txn {
                        preconditions: vec![Precondition::ModRevision(
                            kv.key.clone(),
                            kv.mod_revision,
                        )],
                        ops: vec![Op::Delete {
                            key: kv.key.clone(),
                        }],
                    };
                    if self.commit(txn).await? {
                        removed += 1;
                    }
                }
            }
            if !page.more {
                return Ok(removed);
            }
            start = page.items.last().map(|kv| kv.key.clone());
        }
    }

    /// ListTagsForResource.
    pub async fn list_tags(
        &self,
        arn: Option<&str>,
        limit: Option<&str>,
        next_token: Option<&str>,
    ) -> Result<Value, ApiError> {
        let arn = arn.ok_or_else(|| {
            ApiError::bad_request("resourceArn: required query parameter is missing")
        })?;
        let limit = parse_limit(limit, 50)?.min(50);
        if limit > 50 {
            return Err(ApiError::bad_request("limit: must be between 1 and 50"));
        }
        let (_, r) = self.resource_by_arn(arn).await?;
        let start: usize = match next_token {
            Some(t) => decode_token(t, "tags/")?
                .strip_prefix("tags/")
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| ApiError::bad_request("nextToken: invalid pagination token"))?,
            None => 0,
        };
        let tags: Vec<Value> = r
            .tags
            .iter()
            .skip(start)
            .take(limit)
            .map(|t| serde_json::json!({"key": t.key, "value": t.value}))
            .collect();
        let mut out = serde_json::json!({ "tags": tags });
        if start + limit < r.tags.len() {
            out["nextToken"] = Value::String(encode_token(&format!("tags/{}", start + limit)));
        }
        Ok(out)
    }

    /// TagResource: merges tags (existing keys get the new value); more than 50 tags in
    /// total is a TooManyTagsException and nothing is applied. Does not change `version`.
    pub async fn tag(&self, arn: Option<&str>, tags: Vec<Tag>) -> Result<Value, ApiError> {
        let arn = arn.ok_or_else(|| {
            ApiError::bad_request("resourceArn: required query parameter is missing")
        })?;
        validate::validate_tags(&tags).map_err(ApiError::from)?;
        self.modify_tags(arn, |current| {
            for t in &tags {
                match current.iter_mut().find(|c| c.key == t.key) {
                    Some(c) => c.value = t.value.clone(),
                    None => current.push(t.clone()),
                }
            }
            if current.len() > MAX_TAGS {
                return Err(ApiError::new(
                    ErrorCode::TooManyTags,
                    format!(
                        "a resource can have at most {MAX_TAGS} tags; this request would make {}",
                        current.len()
                    ),
                ));
            }
            Ok(())
        })
        .await
    }

    /// UntagResource: removes the named keys (missing keys are ignored).
    pub async fn untag(
        &self,
        arn: Option<&str>,
        keys_to_remove: Vec<String>,
    ) -> Result<Value, ApiError> {
        let arn = arn.ok_or_else(|| {
            ApiError::bad_request("resourceArn: required query parameter is missing")
        })?;
        self.modify_tags(arn, |current| {
            current.retain(|t| !keys_to_remove.contains(&t.key));
            Ok(())
        })
        .await
    }

    async fn modify_tags(
        &self,
        arn: &str,
        f: impl Fn(&mut Vec<Tag>) -> Result<(), ApiError>,
    ) -> Result<Value, ApiError> {
        let mut backoff = Backoff::default();
        loop {
            let (kv, mut r) = self.resource_by_arn(arn).await?;
            f(&mut r.tags)?;
            let txn = Txn {
                preconditions: vec![Precondition::ModRevision(kv.key.clone(), kv.mod_revision)],
                ops: vec![Op::Put {
                    key: kv.key,
                    value: keys::encode(&r),
                }],
            };
            if self.commit(txn).await? {
                return Ok(serde_json::json!({}));
            }
            retry_after(&mut backoff).await?;
        }
    }

    /// The quota on how many resources of `kind` its container (account, mesh, router or
    /// gateway) may hold, and its name for messages.
    fn quota(&self, kind: ResourceKind) -> (usize, &'static str) {
        let q = &self.cfg.quotas;
        match kind {
            ResourceKind::Mesh => (q.meshes, "meshes per account"),
            ResourceKind::VirtualNode => (q.virtual_nodes_per_mesh, "virtual nodes per mesh"),
            ResourceKind::VirtualRouter => (q.virtual_routers_per_mesh, "virtual routers per mesh"),
            ResourceKind::VirtualService => {
                (q.virtual_services_per_mesh, "virtual services per mesh")
            }
            ResourceKind::VirtualGateway => {
                (q.virtual_gateways_per_mesh, "virtual gateways per mesh")
            }
            ResourceKind::Route => (q.routes_per_virtual_router, "routes per virtual router"),
            ResourceKind::GatewayRoute => (
                q.gateway_routes_per_virtual_gateway,
                "gateway routes per virtual gateway",
            ),
        }
    }
}

fn check_backends_quota(q: &crate::config::Quotas, spec: &Spec) -> Result<(), ApiError> {
    if let Spec::VirtualNode(vn) = spec
        && vn.backends().len() > q.backends_per_virtual_node
    {
        return Err(limit(
            "backends per virtual node",
            q.backends_per_virtual_node,
        ));
    }
    Ok(())
}

/// The resources `spec` names, which must exist for the write to be accepted (the parent is
/// checked separately).
fn referenced(id: &ResourceId, spec: &Spec) -> Vec<ResourceId> {
    use meshplane_model::virtual_service::VirtualServiceProvider as P;
    let mesh = &id.mesh;
    let node = |name: &str| ResourceId::child(ResourceKind::VirtualNode, mesh.clone(), name);
    match spec {
        Spec::VirtualService(vs) => match &vs.provider {
            Some(P::VirtualNode(p)) => vec![node(&p.virtual_node_name)],
            Some(P::VirtualRouter(p)) => vec![ResourceId::child(
                ResourceKind::VirtualRouter,
                mesh.clone(),
                &p.virtual_router_name,
            )],
            None => Vec::new(),
        },
        Spec::Route(route) => {
            let mut ids: Vec<ResourceId> = route
                .weighted_targets()
                .iter()
                .map(|t| node(&t.virtual_node))
                .collect();
            ids.sort_by(|a, b| a.name.cmp(&b.name));
            ids.dedup();
            ids
        }
        Spec::GatewayRoute(gr) => gr
            .target()
            .map(|t| {
                ResourceId::child(
                    ResourceKind::VirtualService,
                    mesh.clone(),
                    &t.virtual_service.virtual_service_name,
                )
            })
            .into_iter()
            .collect(),
        _ => Vec::new(),
    }
}

/// The key prefixes holding every resource that can reference or contain `id` (what
/// [`in_use`] looks at).
fn referrer_prefixes(id: &ResourceId) -> Vec<String> {
    let mesh = &id.mesh;
    let kind = |k: ResourceKind, parent: Option<&str>| keys::kind_prefix(k, mesh, parent);
    match id.kind {
        ResourceKind::Mesh => vec![keys::mesh_contents_prefix(mesh)],
        ResourceKind::VirtualRouter => vec![
            kind(ResourceKind::Route, Some(&id.name)),
            kind(ResourceKind::VirtualService, None),
        ],
        ResourceKind::VirtualNode => vec![
            kind(ResourceKind::Route, None),
            kind(ResourceKind::VirtualService, None),
        ],
        ResourceKind::VirtualService => vec![kind(ResourceKind::GatewayRoute, None)],
        ResourceKind::VirtualGateway => vec![kind(ResourceKind::GatewayRoute, Some(&id.name))],
        ResourceKind::Route | ResourceKind::GatewayRoute => Vec::new(),
    }
}

fn limit(what: &str, n: usize) -> ApiError {
    ApiError::new(
        ErrorCode::LimitExceeded,
        format!("quota exceeded: at most {n} {what}"),
    )
}

fn collect(into: &mut Vec<Violation>, r: Result<(), Violations>) {
    if let Err(v) = r {
        into.extend(v.0);
    }
}

fn parse_limit(limit: Option<&str>, max: usize) -> Result<usize, ApiError> {
    match limit {
        None => Ok(max),
        Some(s) => match s.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(ApiError::bad_request(format!(
                "limit: must be an integer between 1 and {max}, got {s:?}"
            ))),
        },
    }
}

fn encode_token(key: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key)
}

fn decode_token(token: &str, prefix: &str) -> Result<String, ApiError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .filter(|k| k.starts_with(prefix))
        .ok_or_else(|| ApiError::bad_request("nextToken: invalid pagination token"))
}

/// Checks that the resources `spec` names exist (App Mesh answers NotFoundException), and
/// that ports line up with the listeners they select.
fn check_references(view: &MeshView, id: &ResourceId, spec: &Spec) -> Result<(), ApiError> {
    let mesh = &id.mesh;
    let need = |kind: ResourceKind, name: &str| -> Result<&Resource, ApiError> {
        view.find(kind, name)
            .ok_or_else(|| not_found(&ResourceId::child(kind, mesh.clone(), name)))
    };
    match spec {
        Spec::VirtualService(vs) => {
            use meshplane_model::virtual_service::VirtualServiceProvider as P;
            match &vs.provider {
                Some(P::VirtualNode(p)) => {
                    need(ResourceKind::VirtualNode, &p.virtual_node_name)?;
                }
                Some(P::VirtualRouter(p)) => {
                    need(ResourceKind::VirtualRouter, &p.virtual_router_name)?;
                }
                None => {}
            }
        }
        Spec::Route(route) => {
            let router_name = id.parent.as_deref().unwrap_or_default();
            let router = need(ResourceKind::VirtualRouter, router_name)?;
            let router_ports: Vec<i64> = match &router.spec {
                Spec::VirtualRouter(r) => {
                    r.listeners().iter().map(|l| l.port_mapping.port).collect()
                }
                _ => Vec::new(),
            };
            let match_port = route_match_port(route);
            if let Some(p) = match_port {
                if !router_ports.contains(&p) {
                    return Err(ApiError::bad_request(format!(
                        "spec: match.port {p} is not a listener port of virtual router {router_name} (listeners: {router_ports:?})"
                    )));
                }
            } else if router_ports.len() > 1 {
                return Err(ApiError::bad_request(format!(
                    "spec: virtual router {router_name} has several listeners; the route match must set port"
                )));
            }
            for (i, t) in route.weighted_targets().iter().enumerate() {
                let node = need(ResourceKind::VirtualNode, &t.virtual_node)?;
                let ports: Vec<i64> = match &node.spec {
                    Spec::VirtualNode(n) => {
                        n.listeners().iter().map(|l| l.port_mapping.port).collect()
                    }
                    _ => Vec::new(),
                };
                match t.port {
                    Some(p) if !ports.is_empty() && !ports.contains(&p) => {
                        return Err(ApiError::bad_request(format!(
                            "spec: weightedTargets[{i}].port {p} is not a listener port of virtual node {} (listeners: {ports:?})",
                            t.virtual_node
                        )));
                    }
                    None if ports.len() > 1 => {
                        return Err(ApiError::bad_request(format!(
                            "spec: weightedTargets[{i}]: virtual node {} has several listeners; set port",
                            t.virtual_node
                        )));
                    }
                    _ => {}
                }
            }
        }
        Spec::GatewayRoute(gr) => {
            let gw_name = id.parent.as_deref().unwrap_or_default();
            let gw = need(ResourceKind::VirtualGateway, gw_name)?;
            let gw_ports: Vec<i64> = match &gw.spec {
                Spec::VirtualGateway(g) => {
                    g.listeners.iter().map(|l| l.port_mapping.port).collect()
                }
                _ => Vec::new(),
            };
            match gateway_route_match_port(gr) {
                Some(p) if !gw_ports.contains(&p) => {
                    return Err(ApiError::bad_request(format!(
                        "spec: match.port {p} is not a listener port of virtual gateway {gw_name} (listeners: {gw_ports:?})"
                    )));
                }
                None if gw_ports.len() > 1 => {
                    return Err(ApiError::bad_request(format!(
                        "spec: virtual gateway {gw_name} has several listeners; the gateway route match must set port"
                    )));
                }
                _ => {}
            }
            if let Some(t) = gr.target() {
                let vs_name = &t.virtual_service.virtual_service_name;
                let vs = need(ResourceKind::VirtualService, vs_name)?;
                if let Some(p) = t.port {
                    let ports = provider_ports(view, vs);
                    if !ports.is_empty() && !ports.contains(&p) {
                        return Err(ApiError::bad_request(format!(
                            "spec: target.port {p} is not a listener port of the provider of virtual service {vs_name} (listeners: {ports:?})"
                        )));
                    }
                }
            }
        }
        _ => {}
    }
    Ok(())
}

fn gateway_route_match_port(gr: &meshplane_model::GatewayRouteSpec) -> Option<i64> {
    if let Some(r) = gr.http_route.as_ref().or(gr.http2_route.as_ref()) {
        r.match_.port
    } else {
        gr.grpc_route.as_ref().and_then(|r| r.match_.port)
    }
}

/// The id of a virtual service's provider (node or router).
fn provider_id(r: &Arc<Resource>) -> Option<ResourceId> {
    use meshplane_model::virtual_service::VirtualServiceProvider as P;
    let Spec::VirtualService(vs) = &r.spec else {
        return None;
    };
    let (kind, name) = match vs.provider.as_ref()? {
        P::VirtualNode(p) => (ResourceKind::VirtualNode, &p.virtual_node_name),
        P::VirtualRouter(p) => (ResourceKind::VirtualRouter, &p.virtual_router_name),
    };
    Some(ResourceId::child(kind, r.id.mesh.clone(), name.clone()))
}

/// The listener ports of a virtual service's provider (node or router), empty when it has
/// none or the provider is missing.
fn provider_ports(view: &MeshView, vs: &Resource) -> Vec<i64> {
    use meshplane_model::virtual_service::VirtualServiceProvider as P;
    let Spec::VirtualService(spec) = &vs.spec else {
        return Vec::new();
    };
    match &spec.provider {
        Some(P::VirtualNode(p)) => match view
            .find(ResourceKind::VirtualNode, &p.virtual_node_name)
            .map(|r| &r.spec)
        {
            Some(Spec::VirtualNode(n)) => {
                n.listeners().iter().map(|l| l.port_mapping.port).collect()
            }
            _ => Vec::new(),
        },
        Some(P::VirtualRouter(p)) => match view
            .find(ResourceKind::VirtualRouter, &p.virtual_router_name)
            .map(|r| &r.spec)
        {
            Some(Spec::VirtualRouter(r)) => {
                r.listeners().iter().map(|l| l.port_mapping.port).collect()
            }
            _ => Vec::new(),
        },
        None => Vec::new(),
    }
}

fn route_match_port(route: &meshplane_model::RouteSpec) -> Option<i64> {
    if let Some(r) = &route.http_route {
        r.match_.port
    } else if let Some(r) = &route.http2_route {
        r.match_.port
    } else if let Some(r) = &route.grpc_route {
        r.match_.port
    } else {
        route
            .tcp_route
            .as_ref()
            .and_then(|r| r.match_.as_ref())
            .and_then(|m| m.port)
    }
}

/// Why `id` cannot be deleted yet, if it cannot.
fn in_use(view: &MeshView, id: &ResourceId) -> Option<String> {
    use meshplane_model::virtual_service::VirtualServiceProvider as P;
    let users: Vec<String> = match id.kind {
        ResourceKind::Mesh => {
            let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
            for r in view.all() {
                *counts.entry(r.id.kind.as_str()).or_default() += 1;
            }
            if counts.is_empty() {
                return None;
            }
            let parts: Vec<String> = counts.iter().map(|(k, n)| format!("{n} {k}")).collect();
            return Some(format!(
                "Mesh {} still contains resources ({}); delete them first",
                id.mesh,
                parts.join(", ")
            ));
        }
        ResourceKind::VirtualRouter => view
            .of(ResourceKind::Route)
            .filter(|r| r.id.parent.as_deref() == Some(id.name.as_str()))
            .map(|r| format!("route {}", r.id.name))
            .chain(view.of(ResourceKind::VirtualService).filter(|vs| {
                matches!(&vs.spec, Spec::VirtualService(s) if matches!(&s.provider, Some(P::VirtualRouter(p)) if p.virtual_router_name == id.name))
            }).map(|vs| format!("virtual service {}", vs.id.name)))
            .collect(),
        ResourceKind::VirtualNode => view
            .of(ResourceKind::Route)
            .filter(|r| matches!(&r.spec, Spec::Route(s) if s.weighted_targets().iter().any(|t| t.virtual_node == id.name)))
            .map(|r| format!("route {} of virtual router {}", r.id.name, r.id.parent.as_deref().unwrap_or("")))
            .chain(view.of(ResourceKind::VirtualService).filter(|vs| {
                matches!(&vs.spec, Spec::VirtualService(s) if matches!(&s.provider, Some(P::VirtualNode(p)) if p.virtual_node_name == id.name))
            }).map(|vs| format!("virtual service {}", vs.id.name)))
            .collect(),
        ResourceKind::VirtualService => view
            .of(ResourceKind::GatewayRoute)
            .filter(|r| matches!(&r.spec, Spec::GatewayRoute(s) if s.target().is_some_and(|t| t.virtual_service.virtual_service_name == id.name)))
            .map(|r| format!("gateway route {} of virtual gateway {}", r.id.name, r.id.parent.as_deref().unwrap_or("")))
            .collect(),
        ResourceKind::VirtualGateway => view
            .of(ResourceKind::GatewayRoute)
            .filter(|r| r.id.parent.as_deref() == Some(id.name.as_str()))
            .map(|r| format!("gateway route {}", r.id.name))
            .collect(),
        ResourceKind::Route | ResourceKind::GatewayRoute => Vec::new(),
    };
    if users.is_empty() {
        None
    } else {
        Some(format!(
            "{} is still in use by {}",
            describe_id(id),
            users.join(", ")
        ))
    }
}
