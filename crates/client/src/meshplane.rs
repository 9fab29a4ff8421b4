//! meshplane's own endpoints (`/meshplane/v1/*`): access keys, node tokens and the raw
//! JSON reads of proxy status, signed like the App Mesh API.
//!
//! The answers stay JSON [`Value`]s: these shapes belong to meshplane alone, and the
//! CLI prints them nearly as they come.

use reqwest::Method;
use serde_json::{Value, json};

use crate::{Client, ClientError, encode_segment};

/// Which proxy a node token is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenNode {
    /// A virtual node's Envoy.
    VirtualNode(String),
    /// A virtual gateway's Envoy.
    VirtualGateway(String),
}

// === impl Client ===

impl Client {
    /// `POST /meshplane/v1/access-keys`: creates a key named `name` with `policy` (a JSON
    /// object or the policy text). The answer holds `accessKeyId`, `secretAccessKey` (shown
    /// only here), `name` and `createdAt`.
    pub async fn create_access_key(&self, name: &str, policy: Value) -> Result<Value, ClientError> {
        let body = json!({ "name": name, "policy": policy });
        self.send(
            Method::POST,
            "/meshplane/v1/access-keys",
            vec![],
            Some(body),
        )
        .await
    }

    /// `GET /meshplane/v1/access-keys`: `{"accessKeys": [{accessKeyId, name, createdAt,
    /// policy}]}`, never secrets.
    pub async fn list_access_keys(&self) -> Result<Value, ClientError> {
        self.send(Method::GET, "/meshplane/v1/access-keys", vec![], None)
            .await
    }

    /// `DELETE /meshplane/v1/access-keys/<name>` (also revokes the key's node tokens).
    pub async fn delete_access_key(&self, name: &str) -> Result<Value, ClientError> {
        let path = format!("/meshplane/v1/access-keys/{}", encode_segment(name));
        self.send(Method::DELETE, &path, vec![], None).await
    }

    /// `POST /meshplane/v1/access-keys/<name>/rotate`: a new secret for the same id; the
    /// old one keeps verifying for `grace_seconds`.
    pub async fn rotate_access_key(
        &self,
        name: &str,
        grace_seconds: u64,
    ) -> Result<Value, ClientError> {
        let path = format!("/meshplane/v1/access-keys/{}/rotate", encode_segment(name));
        let body = json!({ "graceSeconds": grace_seconds });
        self.send(Method::POST, &path, vec![], Some(body)).await
    }

    /// `POST /meshplane/v1/node-tokens`: mints a token for `node` of `mesh` (the caller
    /// needs `appmesh:StreamAggregatedResources` on its ARN). The answer holds `token`,
    /// `tokenId`, `node` and `expiresAt` (epoch seconds).
    pub async fn mint_node_token(
        &self,
        mesh: &str,
        node: &TokenNode,
        mesh_owner: Option<&str>,
        ttl_seconds: Option<u64>,
    ) -> Result<Value, ClientError> {
        let mut body = json!({ "mesh": mesh });
        match node {
            TokenNode::VirtualNode(n) => body["virtualNodeName"] = json!(n),
            TokenNode::VirtualGateway(g) => body["virtualGatewayName"] = json!(g),
        }
        if let Some(owner) = mesh_owner {
            body["meshOwner"] = json!(owner);
        }
        if let Some(ttl) = ttl_seconds {
            body["ttlSeconds"] = json!(ttl);
        }
        self.send(
            Method::POST,
            "/meshplane/v1/node-tokens",
            vec![],
            Some(body),
        )
        .await
    }

    /// `DELETE /meshplane/v1/node-tokens/<tokenId>`: revokes a token; the server ends its
    /// live xDS streams and refuses it from then on. The answer holds `tokenId` and
    /// `expiresAt` (when the revocation record may be forgotten).
    pub async fn revoke_node_token(&self, token_id: &str) -> Result<Value, ClientError> {
        let path = format!("/meshplane/v1/node-tokens/{}", encode_segment(token_id));
        self.send(Method::DELETE, &path, vec![], None).await
    }

    /// A signed `GET` of `path` (already percent-encoded) with `query` (values encoded
    /// here), answering the JSON body (proxy status and config).
    pub async fn get_json(
        &self,
        path: &str,
        query: Vec<(&'static str, String)>,
    ) -> Result<Value, ClientError> {
        self.send(Method::GET, path, query, None).await
    }
}
