//! `meshplane envoy run --register`: the local application instance in the Cloud
//! Map-compatible registry, for as long as its Envoy runs.
//!
//! ```text
//!  envoy started ─▶ GET admin /ready == LIVE ─▶ RegisterInstance (attributes + MESHPLANE_INSTANCE_TTL)
//!        │                                          │ every TTL/3: RegisterInstance again (heartbeat)
//!  SIGTERM ─▶ DeregisterInstance ─▶ drain listeners ─▶ stop Envoy
//!  killed  ─▶ no heartbeat ─▶ the server's sweeper deregisters it when the TTL runs out
//! ```
//!
//! Heartbeats re-send the whole registration (RegisterInstance is an idempotent upsert), so
//! an instance removed meanwhile (lease expired during a partition, server restored from an
//! older state) comes back by itself; re-registering unchanged attributes does not move the
//! service's `InstancesRevision` and pushes nothing to Envoys.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};

/// `X-Amz-Target` prefix of the registry API.
const TARGET_PREFIX: &str = "Route53AutoNaming_v20170314.";
/// How long to wait for Envoy to report LIVE before registering anyway failing.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// Per-request timeout towards the registry.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Flags of `--register` (all also from the environment).
#[derive(Clone, Debug, Default, clap::Args)]
pub struct RegisterArgs {
    /// Register this instance in meshplane's Cloud Map-compatible registry once Envoy is
    /// ready, heartbeat it, and deregister it on SIGTERM before draining.
    #[arg(long, env = "MESHPLANE_REGISTER")]
    pub register: bool,
    /// The meshplane API URL (e.g. http://127.0.0.1:7080).
    #[arg(long, env = "MESHPLANE_ENDPOINT")]
    pub register_endpoint: Option<String>,
    /// The registry service id (`srv-...`); or give the namespace and service names.
    #[arg(long, env = "MESHPLANE_REGISTER_SERVICE_ID")]
    pub register_service_id: Option<String>,
    /// Namespace name of the service (with --register-service).
    #[arg(long, env = "MESHPLANE_REGISTER_NAMESPACE")]
    pub register_namespace: Option<String>,
    /// Service name within the namespace.
    #[arg(long, env = "MESHPLANE_REGISTER_SERVICE")]
    pub register_service: Option<String>,
    /// Instance id (default: `<hostname>-<pid>`).
    #[arg(long, env = "MESHPLANE_REGISTER_INSTANCE_ID")]
    pub register_instance_id: Option<String>,
    /// The application's address (IPv4 or IPv6) as other proxies should reach it.
    #[arg(long, env = "MESHPLANE_REGISTER_ADDRESS")]
    pub register_address: Option<String>,
    /// The application's port (AWS_INSTANCE_PORT).
    #[arg(long, env = "MESHPLANE_REGISTER_PORT")]
    pub register_port: Option<u16>,
    /// Extra attributes, `KEY=VALUE` (repeat, or comma-separated in the variable), e.g.
    /// `version=v2` for a canary.
    #[arg(
        long = "register-attribute",
        env = "MESHPLANE_REGISTER_ATTRIBUTES",
        value_delimiter = ','
    )]
    pub register_attributes: Vec<String>,
    /// Lease length in seconds: if heartbeats stop (the process was killed) the server
    /// deregisters the instance after this long.
    #[arg(long, env = "MESHPLANE_REGISTER_TTL_S", default_value_t = 30)]
    pub register_ttl_s: u64,
}

/// A validated registration.
#[derive(Clone, Debug)]
pub struct Registration {
    endpoint: String,
    service: ServiceRef,
    instance_id: String,
    attributes: BTreeMap<String, String>,
    ttl: Duration,
    /// Credentials and region the Cloud Map calls are signed with (service
    /// `servicediscovery`); unsigned without.
    signing: Option<(meshplane_client::Credentials, String)>,
    ca_bundle: Option<std::path::PathBuf>,
}

#[derive(Clone, Debug)]
enum ServiceRef {
    Id(String),
    Names { namespace: String, service: String },
}

// === impl Registration ===

impl Registration {
    /// `None` without `--register`; every problem at once otherwise.
    pub fn resolve(args: &RegisterArgs) -> anyhow::Result<Option<Registration>> {
        if !args.register {
            return Ok(None);
        }
        let mut problems = Vec::new();
        let endpoint = args.register_endpoint.clone().unwrap_or_else(|| {
            problems.push("--register needs --register-endpoint (or MESHPLANE_ENDPOINT)".into());
            String::new()
        });
        let service = match (
            &args.register_service_id,
            &args.register_namespace,
            &args.register_service,
        ) {
            (Some(id), None, None) => Some(ServiceRef::Id(id.clone())),
            (None, Some(ns), Some(svc)) => Some(ServiceRef::Names {
                namespace: ns.clone(),
                service: svc.clone(),
            }),
            _ => {
                problems.push(
                    "--register needs either --register-service-id or both --register-namespace and --register-service"
                        .into(),
                );
                None
            }
        };
        let mut attributes = BTreeMap::new();
        match args
            .register_address
            .as_deref()
            .map(str::parse::<std::net::IpAddr>)
        {
            Some(Ok(std::net::IpAddr::V4(a))) => {
                attributes.insert("AWS_INSTANCE_IPV4".to_owned(), a.to_string());
            }
            Some(Ok(std::net::IpAddr::V6(a))) => {
                attributes.insert("AWS_INSTANCE_IPV6".to_owned(), a.to_string());
            }
            Some(Err(_)) => problems.push(format!(
                "--register-address {:?} is not an IP address",
                args.register_address.as_deref().unwrap_or_default()
            )),
            None => problems.push("--register needs --register-address".into()),
        }
        match args.register_port {
            Some(p) if p > 0 => {
                attributes.insert("AWS_INSTANCE_PORT".to_owned(), p.to_string());
            }
            _ => problems.push("--register needs --register-port (1..65535)".into()),
        }
        for kv in args.register_attributes.iter().filter(|s| !s.is_empty()) {
            match kv.split_once('=') {
                Some((k, v)) if !k.is_empty() && !v.is_empty() => {
                    attributes.insert(k.to_owned(), v.to_owned());
                }
                _ => problems.push(format!("--register-attribute {kv:?} is not KEY=VALUE")),
            }
        }
        if !(1..=3600).contains(&args.register_ttl_s) {
            problems.push(format!(
                "--register-ttl-s {} is out of range 1..3600",
                args.register_ttl_s
            ));
        }
        attributes.insert(
            "MESHPLANE_INSTANCE_TTL".to_owned(),
            args.register_ttl_s.to_string(),
        );
        if !problems.is_empty() {
            bail!("{}", problems.join("; "));
        }
        let instance_id = args.register_instance_id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_else(|_| "instance".into());
            format!("{host}-{}", std::process::id())
        });
        Ok(Some(Registration {
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            service: service.context("service")?,
            instance_id,
            attributes,
            ttl: Duration::from_secs(args.register_ttl_s),
            signing: None,
            ca_bundle: None,
        }))
    }

    /// Signs the Cloud Map calls with the resolved credentials (when there are any) and
    /// trusts the settings' CA bundle.
    pub fn with_settings(mut self, settings: &meshplane_client::Settings) -> Registration {
        self.signing = settings
            .credentials
            .clone()
            .map(|c| (c, settings.region.clone()));
        self.ca_bundle = settings.ca_bundle.clone();
        self
    }

    fn http(&self) -> anyhow::Result<reqwest::Client> {
        Ok(meshplane_client::http_builder(self.ca_bundle.as_deref())?
            .no_proxy()
            .build()?)
    }

    async fn call(&self, http: &reqwest::Client, op: &str, body: Value) -> anyhow::Result<Value> {
        let mut request = http
            .post(format!("{}/", self.endpoint))
            .header("content-type", "application/x-amz-json-1.1")
            .header("x-amz-target", format!("{TARGET_PREFIX}{op}"))
            .body(body.to_string())
            .timeout(REQUEST_TIMEOUT)
            .build()?;
        if let Some((credentials, region)) = &self.signing {
            let uri: http::Uri = request.url().as_str().parse()?;
            let params = meshplane_auth::sign::SigningParams {
                region,
                service: "servicediscovery",
                now: std::time::SystemTime::now(),
            };
            let body = request.body().and_then(|b| b.as_bytes()).unwrap_or(b"");
            let added = meshplane_auth::sign::sign(
                request.method().as_str(),
                &uri,
                request.headers(),
                body,
                credentials,
                &params,
            )?;
            for (name, value) in added {
                request.headers_mut().insert(name, value);
            }
        }
        let resp = http
            .execute(request)
            .await
            .with_context(|| format!("{op}: {}", self.endpoint))?;
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!(
                "{op}: {status} {} {}",
                v["__type"].as_str().unwrap_or(""),
                v["Message"].as_str().unwrap_or("")
            );
        }
        Ok(v)
    }

    async fn service_id(&self, http: &reqwest::Client) -> anyhow::Result<String> {
        let (namespace, service) = match &self.service {
            ServiceRef::Id(id) => return Ok(id.clone()),
            ServiceRef::Names { namespace, service } => (namespace, service),
        };
        let ns = self
            .call(
                http,
                "ListNamespaces",
                json!({"Filters": [{"Name": "NAME", "Values": [namespace], "Condition": "EQ"}]}),
            )
            .await?;
        let ns_id = ns["Namespaces"][0]["Id"]
            .as_str()
            .with_context(|| format!("namespace {namespace:?} not found"))?
            .to_owned();
        let mut token: Option<String> = None;
        for _ in 0..1000 {
            let mut req = json!({"Filters": [{"Name": "NAMESPACE_ID", "Values": [ns_id], "Condition": "EQ"}]});
            if let Some(t) = &token {
                req["NextToken"] = json!(t);
            }
            let page = self.call(http, "ListServices", req).await?;
            for s in page["Services"].as_array().into_iter().flatten() {
                if s["Name"] == json!(service) {
                    return s["Id"].as_str().map(str::to_owned).context("service id");
                }
            }
            match page["NextToken"].as_str() {
                Some(t) => token = Some(t.to_owned()),
                None => break,
            }
        }
        bail!("service {service:?} not found in namespace {namespace:?}")
    }

    /// Waits for Envoy (admin `GET /ready` = 200), registers, then heartbeats forever.
    /// Returns only on a registration error before the first success.
    pub async fn keep_alive(self, admin: std::net::SocketAddr) -> anyhow::Result<()> {
        let http = self.http()?;
        wait_ready(&http, admin).await?;
        let service_id = self.service_id(&http).await?;
        let body = json!({
            "ServiceId": service_id,
            "InstanceId": self.instance_id,
            "Attributes": self.attributes,
        });
        self.call(&http, "RegisterInstance", body.clone()).await?;
        eprintln!(
            "meshplane: registered instance {} in service {service_id}",
            self.instance_id
        );
        let every = (self.ttl / 3).max(Duration::from_millis(200));
        loop {
            tokio::time::sleep(every).await;
            if let Err(e) = self.call(&http, "RegisterInstance", body.clone()).await {
                eprintln!("meshplane: registration heartbeat failed: {e:#}");
            }
        }
    }

    /// Deregisters the instance (best effort, bounded); called before draining.
    pub async fn deregister(&self) {
        let http = match self.http() {
            Ok(h) => h,
            Err(e) => {
                eprintln!("meshplane: deregistration skipped: {e}");
                return;
            }
        };
        let result = async {
            let service_id = self.service_id(&http).await?;
            self.call(
                &http,
                "DeregisterInstance",
                json!({"ServiceId": service_id, "InstanceId": self.instance_id}),
            )
            .await
        }
        .await;
        match result {
            Ok(_) => eprintln!("meshplane: deregistered instance {}", self.instance_id),
            Err(e) => eprintln!(
                "meshplane: deregistration failed ({e:#}); the lease expires in {}s",
                self.ttl.as_secs()
            ),
        }
    }
}

async fn wait_ready(http: &reqwest::Client, admin: std::net::SocketAddr) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    loop {
        let ready = http
            .get(format!("http://{admin}/ready"))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ready {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("envoy was not ready within {READY_TIMEOUT:?}; not registering");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_names_attributes_and_ttl() {
        let args = RegisterArgs {
            register: true,
            register_endpoint: Some("http://127.0.0.1:7080/".into()),
            register_namespace: Some("apps.local".into()),
            register_service: Some("b".into()),
            register_instance_id: Some("i-1".into()),
            register_address: Some("10.0.0.5".into()),
            register_port: Some(8080),
            register_attributes: vec!["version=v2".into()],
            register_ttl_s: 10,
            ..Default::default()
        };
        let r = Registration::resolve(&args).unwrap().unwrap();
        assert_eq!(r.endpoint, "http://127.0.0.1:7080");
        assert_eq!(r.attributes["AWS_INSTANCE_IPV4"], "10.0.0.5");
        assert_eq!(r.attributes["AWS_INSTANCE_PORT"], "8080");
        assert_eq!(r.attributes["version"], "v2");
        assert_eq!(r.attributes["MESHPLANE_INSTANCE_TTL"], "10");
    }

    #[test]
    fn reports_every_problem() {
        let args = RegisterArgs {
            register: true,
            register_address: Some("nope".into()),
            register_attributes: vec!["novalue".into()],
            register_ttl_s: 0,
            ..Default::default()
        };
        let e = Registration::resolve(&args).unwrap_err().to_string();
        for needle in [
            "endpoint",
            "service-id",
            "not an IP",
            "register-port",
            "KEY=VALUE",
            "ttl",
        ] {
            assert!(e.contains(needle), "{needle}: {e}");
        }
        assert!(
            Registration::resolve(&RegisterArgs::default())
                .unwrap()
                .is_none()
        );
    }
}
