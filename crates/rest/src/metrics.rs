//! API request metrics: requests and latency by operation and status.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    operation: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: &'static str,
}

/// Counters and histograms for the App Mesh API.
pub struct ApiMetrics {
    requests: Family<RequestLabels, Counter>,
    latency: Family<OperationLabels, Histogram>,
}

impl ApiMetrics {
    /// Creates the metrics and registers them under `meshplane_api_*`.
    pub fn register(registry: &mut Registry) -> ApiMetrics {
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<OperationLabels, Histogram>::new_with_constructor(|| {
            // 0.5 ms .. ~1 s: API calls are one store transaction (an fsync) plus JSON.
            Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                0.0005, 2.0, 12,
            ))
        });
        registry.register(
            "meshplane_api_requests",
            "App Mesh API requests by operation and HTTP status",
            requests.clone(),
        );
        registry.register(
            "meshplane_api_request_duration_seconds",
            "App Mesh API request latency",
            latency.clone(),
        );
        ApiMetrics { requests, latency }
    }

    /// Unregistered metrics (for tests).
    pub fn unregistered() -> ApiMetrics {
        ApiMetrics::register(&mut Registry::default())
    }

    pub(crate) fn observe(&self, operation: &'static str, status: u16, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestLabels { operation, status })
            .inc();
        self.latency
            .get_or_create(&OperationLabels { operation })
            .observe(elapsed.as_secs_f64());
    }
}
