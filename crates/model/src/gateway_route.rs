//! `GatewayRouteSpec`.

use serde::{Deserialize, Serialize};

use crate::common::{
    GatewayRouteHostnameMatch, HeaderMatch, HttpMethod, HttpPathMatch, HttpQueryParameter,
};

/// `GatewayRouteSpec`: exactly one of the three route kinds (enforced by validation).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayRouteSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_route: Option<GrpcGatewayRoute>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http2_route: Option<HttpGatewayRoute>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_route: Option<HttpGatewayRoute>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i64>,
}

impl GatewayRouteSpec {
    /// The target of whichever route kind is set.
    pub fn target(&self) -> Option<&GatewayRouteTarget> {
        if let Some(r) = &self.http_route {
            Some(&r.action.target)
        } else if let Some(r) = &self.http2_route {
            Some(&r.action.target)
        } else {
            self.grpc_route.as_ref().map(|r| &r.action.target)
        }
    }
}

/// `GatewayRouteTarget`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayRouteTarget {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
    pub virtual_service: GatewayRouteVirtualService,
}

/// `GatewayRouteVirtualService`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayRouteVirtualService {
    pub virtual_service_name: String,
}

/// `HttpGatewayRoute` (used for `httpRoute` and `http2Route`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpGatewayRoute {
    pub action: HttpGatewayRouteAction,
    #[serde(rename = "match")]
    pub match_: HttpGatewayRouteMatch,
}

/// `HttpGatewayRouteAction`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpGatewayRouteAction {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<HttpGatewayRouteRewrite>,
    pub target: GatewayRouteTarget,
}

string_enum! {
    /// `DefaultGatewayRouteRewrite`.
    pub enum DefaultGatewayRouteRewrite { Enabled = "ENABLED", Disabled = "DISABLED" }
}

/// `HttpGatewayRouteRewrite`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpGatewayRouteRewrite {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<GatewayRouteHostnameRewrite>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<HttpGatewayRoutePathRewrite>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<HttpGatewayRoutePrefixRewrite>,
}

/// `GatewayRouteHostnameRewrite`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayRouteHostnameRewrite {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_target_hostname: Option<DefaultGatewayRouteRewrite>,
}

/// `HttpGatewayRoutePathRewrite`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpGatewayRoutePathRewrite {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
}

/// `HttpGatewayRoutePrefixRewrite`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpGatewayRoutePrefixRewrite {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_prefix: Option<DefaultGatewayRouteRewrite>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// `HttpGatewayRouteMatch`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpGatewayRouteMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Vec<HeaderMatch>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<GatewayRouteHostnameMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<HttpMethod>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<HttpPathMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_parameters: Option<Vec<HttpQueryParameter>>,
}

/// `GrpcGatewayRoute`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcGatewayRoute {
    pub action: GrpcGatewayRouteAction,
    #[serde(rename = "match")]
    pub match_: GrpcGatewayRouteMatch,
}

/// `GrpcGatewayRouteAction`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcGatewayRouteAction {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<GrpcGatewayRouteRewrite>,
    pub target: GatewayRouteTarget,
}

/// `GrpcGatewayRouteRewrite`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcGatewayRouteRewrite {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<GatewayRouteHostnameRewrite>,
}

/// `GrpcGatewayRouteMatch`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcGatewayRouteMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<GatewayRouteHostnameMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Vec<HeaderMatch>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
}
