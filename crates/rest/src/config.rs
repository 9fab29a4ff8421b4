//! API configuration: identity (partition, region, account) and App Mesh's quotas.

/// How the API names things and what it allows.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    /// ARN partition (`aws`).
    pub partition: String,
    /// Region in ARNs (`us-east-1`).
    pub region: String,
    /// The 12-digit account id that owns every mesh (`meshOwner`, `resourceOwner`).
    pub account_id: String,
    /// Resource quotas.
    pub quotas: Quotas,
    /// Largest accepted request body; larger bodies get a BadRequestException.
    pub max_body_bytes: usize,
    /// How long a clientToken is remembered (App Mesh documents no figure; 24 h).
    pub idempotency_ttl_ms: i64,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            partition: "aws".into(),
            region: "us-east-1".into(),
            account_id: "000000000000".into(),
            quotas: Quotas::default(),
            // App Mesh specs are a few KB; 1 MiB leaves ample room and bounds memory per request.
            max_body_bytes: 1 << 20,
            idempotency_ttl_ms: 24 * 3600 * 1000,
        }
    }
}

/// Per-account and per-mesh limits (App Mesh's published defaults).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quotas {
    pub meshes: usize,
    pub virtual_nodes_per_mesh: usize,
    pub virtual_routers_per_mesh: usize,
    pub virtual_services_per_mesh: usize,
    pub virtual_gateways_per_mesh: usize,
    pub routes_per_virtual_router: usize,
    pub gateway_routes_per_virtual_gateway: usize,
    pub backends_per_virtual_node: usize,
}

impl Default for Quotas {
    fn default() -> Self {
        Quotas {
            meshes: 15,
            virtual_nodes_per_mesh: 200,
            virtual_routers_per_mesh: 200,
            virtual_services_per_mesh: 200,
            virtual_gateways_per_mesh: 3,
            routes_per_virtual_router: 50,
            gateway_routes_per_virtual_gateway: 10,
            backends_per_virtual_node: 50,
        }
    }
}
