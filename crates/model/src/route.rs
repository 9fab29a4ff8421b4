//! `RouteSpec`.

use serde::{Deserialize, Serialize};

use crate::common::{
    Duration, GrpcRetryPolicyEvent, GrpcTimeout, HeaderMatch, HttpMethod, HttpPathMatch,
    HttpQueryParameter, HttpScheme, HttpTimeout, TcpRetryPolicyEvent, TcpTimeout, WeightedTarget,
};

/// `RouteSpec`: exactly one of the four route kinds must be set (enforced by validation).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_route: Option<GrpcRoute>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http2_route: Option<HttpRoute>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_route: Option<HttpRoute>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_route: Option<TcpRoute>,
}

impl RouteSpec {
    /// The weighted targets of whichever route kind is set.
    pub fn weighted_targets(&self) -> &[WeightedTarget] {
        if let Some(r) = &self.http_route {
            &r.action.weighted_targets
        } else if let Some(r) = &self.http2_route {
            &r.action.weighted_targets
        } else if let Some(r) = &self.grpc_route {
            &r.action.weighted_targets
        } else if let Some(r) = &self.tcp_route {
            &r.action.weighted_targets
        } else {
            &[]
        }
    }
}

/// `HttpRoute` (used for both `httpRoute` and `http2Route`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRoute {
    pub action: RouteAction,
    #[serde(rename = "match")]
    pub match_: HttpRouteMatch,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_policy: Option<HttpRetryPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HttpTimeout>,
}

/// `HttpRouteAction`, `GrpcRouteAction` and `TcpRouteAction`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteAction {
    pub weighted_targets: Vec<WeightedTarget>,
}

/// `HttpRouteMatch`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Vec<HeaderMatch>>,
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<HttpScheme>,
}

/// `HttpRetryPolicy`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRetryPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_retry_events: Option<Vec<String>>,
    pub max_retries: i64,
    pub per_retry_timeout: Duration,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_retry_events: Option<Vec<TcpRetryPolicyEvent>>,
}

/// `GrpcRoute`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcRoute {
    pub action: RouteAction,
    #[serde(rename = "match")]
    pub match_: GrpcRouteMatch,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_policy: Option<GrpcRetryPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<GrpcTimeout>,
}

/// `GrpcRouteMatch`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcRouteMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Vec<HeaderMatch>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
}

/// `GrpcRetryPolicy`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcRetryPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_retry_events: Option<Vec<GrpcRetryPolicyEvent>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_retry_events: Option<Vec<String>>,
    pub max_retries: i64,
    pub per_retry_timeout: Duration,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_retry_events: Option<Vec<TcpRetryPolicyEvent>>,
}

/// `TcpRoute`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpRoute {
    pub action: RouteAction,
    #[serde(rename = "match", default, skip_serializing_if = "Option::is_none")]
    pub match_: Option<TcpRouteMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<TcpTimeout>,
}

/// `TcpRouteMatch`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpRouteMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
}
