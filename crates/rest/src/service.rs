//! The App Mesh operations on top of the store: existence and in-use rules, quotas,
//! versions, idempotency, and optimistic concurrency.
//!
//! Every write follows the same shape: read the mesh's contents at revision R, decide
//! (validate, check references and quotas), then commit one transaction guarded by
//! `PrefixUnchangedSince(mesh, R)` and the resource's own `ModRevision`. If anything in
//! the mesh changed meanwhile the transaction fails and the operation re-runs from the
//! read, so concurrent writers never act on stale references and never lose an update.

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
use meshplane_store::{KeyValue, Op, Precondition, Revision, Store, StoreError, Txn, TxnOutcome};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::ApiConfig;
use crate::keys;

/// How many times an operation re-runs after losing a compare-and-set race before
/// answering 409; each retry re-reads the mesh, so this only trips under sustained
/// contention on one mesh.
const MAX_ATTEMPTS: usize = 16;

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
/// Every write reads its whole mesh to check references; decoding each record's JSON
/// again dominated write CPU (profiled: ~3/4 of it at 200 nodes). The store listing stays
/// the source of truth: a cached value is used only when the listed record has exactly
/// the cached `mod_revision`, so consistency is unchanged.
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

    fn get(&self, id: &ResourceId) -> Option<&Resource> {
        self.all().find(|r| &r.id == id)
    }
}

/// What an idempotency record remembers about the first request with a token.
#[derive(Serialize, Deserialize)]
struct IdempotencyRecord {
    fingerprint: String,
    response: Value,
    at_ms: i64,
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

    async fn load_mesh(&self, mesh: &str) -> Result<MeshView, ApiError> {
        let page = self
            .store
            .list(&keys::mesh_contents_prefix(mesh), None, 0)
            .await
            .map_err(store_err)?;
        let prefix = keys::mesh_contents_prefix(mesh);
        let mut cache = self
            .decoded
            .entries
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let mut resources = Vec::with_capacity(page.items.len());
        for kv in &page.items {
            match cache.get(&kv.key) {
                Some((rev, r)) if *rev == kv.mod_revision => resources.push(r.clone()),
                _ => {
                    let r = Arc::new(keys::decode(&kv.value).map_err(|e| internal("decode", e))?);
                    cache.insert(kv.key.clone(), (kv.mod_revision, r.clone()));
                    resources.push(r);
                }
            }
        }
        // Forget deleted records of this mesh so the cache never outgrows the store.
        if cache.len() > page.items.len() {
            let live: std::collections::HashSet<&str> =
                page.items.iter().map(|kv| kv.key.as_str()).collect();
            cache.retain(|k, _| !k.starts_with(&prefix) || live.contains(k.as_str()));
        }
        drop(cache);
        Ok(MeshView {
            revision: page.revision,
            resources,
        })
    }

    /// Returns the stored response when `token` was already used with the same request,
    /// ConflictException when it was used with a different one.
    async fn replay(
        &self,
        token: Option<&str>,
        fingerprint: &str,
    ) -> Result<Option<Value>, ApiError> {
        let Some(token) = token else { return Ok(None) };
        let Some(kv) = self
            .store
            .get(&keys::idempotency_key(token))
            .await
            .map_err(store_err)?
        else {
            return Ok(None);
        };
        let rec: IdempotencyRecord =
            serde_json::from_slice(&kv.value).map_err(|e| internal("decode idempotency", e))?;
        if now_ms() - rec.at_ms > self.cfg.idempotency_ttl_ms {
            return Ok(None);
        }
        if rec.fingerprint == fingerprint {
            Ok(Some(rec.response))
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
        match self.store.txn(txn).await.map_err(store_err)? {
            TxnOutcome::Committed { .. } => Ok(true),
            TxnOutcome::Failed { .. } => Ok(false),
        }
    }

    fn too_contended() -> ApiError {
        ApiError::new(
            ErrorCode::Conflict,
            "the mesh is being modified concurrently, retry",
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
        for _ in 0..MAX_ATTEMPTS {
            if let Some(resp) = self.replay(token, fingerprint).await? {
                return Ok(resp);
            }
            let key = keys::resource_key(&id);
            let mut txn = Txn::default();
            if id.kind == ResourceKind::Mesh {
                let meshes = self
                    .store
                    .list(keys::MESHES_PREFIX, None, 0)
                    .await
                    .map_err(store_err)?;
                if meshes.items.iter().any(|kv| kv.key == key) {
                    return Err(ApiError::new(
                        ErrorCode::Conflict,
                        format!("Mesh {} already exists", id.mesh),
                    ));
                }
                if meshes.items.len() >= self.cfg.quotas.meshes {
                    return Err(limit("meshes per account", self.cfg.quotas.meshes));
                }
                txn.preconditions.push(Precondition::PrefixUnchangedSince(
                    keys::MESHES_PREFIX.into(),
                    meshes.revision,
                ));
            } else {
                txn.preconditions = self.check_child_write(&id, &input.spec, false).await?;
            }
            txn.preconditions.push(Precondition::Absent(key.clone()));
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
                key,
                value: keys::encode(&resource),
            });
            self.idempotency_ops(token, fingerprint, &response, &mut txn);
            if self.commit(txn).await? {
                tracing::info!(resource = %id, "created");
                return Ok(response);
            }
        }
        Err(Self::too_contended())
    }

    /// The checks shared by creating (`exists == false`) and updating (`exists == true`) a
    /// resource inside a mesh: the mesh and the parent exist, the resource does (not) exist
    /// yet, quotas and references hold. Returns the preconditions that make the decision
    /// atomic with the write: the mesh unchanged and nothing in it changed since the read.
    async fn check_child_write(
        &self,
        id: &ResourceId,
        spec: &Spec,
        exists: bool,
    ) -> Result<Vec<Precondition>, ApiError> {
        let mesh_id = ResourceId::mesh(id.mesh.clone());
        let Some((mesh_kv, _)) = self.get_resource(&mesh_id).await? else {
            return Err(not_found(&mesh_id));
        };
        let view = self.load_mesh(&id.mesh).await?;
        if let Some(parent) = id.parent_id().filter(|p| p.kind != ResourceKind::Mesh)
            && view.get(&parent).is_none()
        {
            return Err(not_found(&parent));
        }
        match (exists, view.get(id).is_some()) {
            (false, true) => {
                return Err(ApiError::new(
                    ErrorCode::Conflict,
                    format!("{} already exists", describe_id(id)),
                ));
            }
            (true, false) => return Err(not_found(id)),
            _ => {}
        }
        self.check_quota(&view, id, spec)?;
        check_references(&view, id, spec)?;
        Ok(vec![
            Precondition::ModRevision(mesh_kv.key, mesh_kv.mod_revision),
            Precondition::PrefixUnchangedSince(keys::mesh_contents_prefix(&id.mesh), view.revision),
        ])
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
        for _ in 0..MAX_ATTEMPTS {
            if let Some(resp) = self.replay(token, fingerprint).await? {
                return Ok(resp);
            }
            let mut txn = Txn::default();
            let (kv, current) = if id.kind == ResourceKind::Mesh {
                self.get_resource(&id)
                    .await?
                    .ok_or_else(|| not_found(&id))?
            } else {
                txn.preconditions = self.check_child_write(&id, &input.spec, true).await?;
                self.get_resource(&id)
                    .await?
                    .ok_or_else(|| not_found(&id))?
            };
            txn.preconditions
                .push(Precondition::ModRevision(kv.key.clone(), kv.mod_revision));
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
        }
        Err(Self::too_contended())
    }

    /// DeleteMesh, DeleteVirtualNode, ...: refuses while others still reference or
    /// contain the resource; returns it with status `DELETED`.
    pub async fn delete(
        &self,
        id: ResourceId,
        mesh_owner: Option<&str>,
    ) -> Result<Value, ApiError> {
        self.check_owner(&id.mesh, mesh_owner)?;
        for _ in 0..MAX_ATTEMPTS {
            let mut txn = Txn::default();
            let view = self.load_mesh(&id.mesh).await?;
            let (kv, current) = match self.get_resource(&id).await? {
                Some(x) => x,
                None => return Err(self.missing(&id).await),
            };
            if let Some(reason) = in_use(&view, &id) {
                return Err(ApiError::new(ErrorCode::ResourceInUse, reason));
            }
            txn.preconditions
                .push(Precondition::ModRevision(kv.key.clone(), kv.mod_revision));
            txn.preconditions.push(Precondition::PrefixUnchangedSince(
                keys::mesh_contents_prefix(&id.mesh),
                view.revision,
            ));
            txn.ops.push(Op::Delete { key: kv.key });
            if self.commit(txn).await? {
                tracing::info!(resource = %id, "deleted");
                let mut gone = current;
                gone.status = Status::Deleted;
                return Ok(self.data(&gone, Status::Deleted));
            }
        }
        Err(Self::too_contended())
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
        for _ in 0..MAX_ATTEMPTS {
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
        }
        Err(Self::too_contended())
    }

    fn check_quota(&self, view: &MeshView, id: &ResourceId, spec: &Spec) -> Result<(), ApiError> {
        let q = &self.cfg.quotas;
        let exists = view.get(id).is_some();
        let count = |kind| view.of(kind).filter(|r| r.id.parent == id.parent).count();
        let (limit_n, what) = match id.kind {
            ResourceKind::Mesh => return Ok(()),
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
        };
        if !exists && count(id.kind) >= limit_n {
            return Err(limit(what, limit_n));
        }
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
            if let Some(t) = gr.target() {
                need(
                    ResourceKind::VirtualService,
                    &t.virtual_service.virtual_service_name,
                )?;
            }
        }
        _ => {}
    }
    Ok(())
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
