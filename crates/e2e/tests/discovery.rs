//! The Cloud Map-compatible registry through real Envoy: registered instances become EDS
//! endpoints, health and membership changes go out as EDS only, an attribute filter selects
//! a canary, deregistration under load fails no request, a leased (TTL) instance whose
//! owner stops heartbeating disappears by itself, and `meshplane envoy run --register`
//! registers once Envoy is ready, heartbeats, and deregisters on SIGTERM before draining.
//!
//! Registry calls are plain AWS JSON 1.1 requests (`POST /`, `X-Amz-Target`), as the AWS
//! SDKs send them (the CLI and boto3 are exercised in meshplane-compat).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use meshplane_testkit::{
    ControlPlane, Envoy, HttpBackend, Target, XdsFlavor, addr, free_port, loopback_ip,
};
use serde_json::{Value, json};

/// One AWS JSON 1.1 call to the registry, signed with the administrator key; returns
/// (status, body).
async fn cloud_map(cp: &ControlPlane, op: &str, body: Value) -> (u16, Value) {
    cp.cloud_map(op, body).await
}

async fn ok(api: &ControlPlane, op: &str, body: Value) -> Value {
    let (status, v) = cloud_map(api, op, body.clone()).await;
    assert_eq!(status, 200, "{op} {body} -> {status} {v}");
    v
}

/// Namespace `apps.local` and service `b` (with custom health); returns the service id.
async fn registry(api: &ControlPlane) -> String {
    let op = ok(api, "CreateHttpNamespace", json!({"Name": "apps.local"})).await;
    let op = ok(
        api,
        "GetOperation",
        json!({"OperationId": op["OperationId"]}),
    )
    .await;
    let ns = op["Operation"]["Targets"]["NAMESPACE"].clone();
    let svc = ok(
        api,
        "CreateService",
        json!({"Name": "b", "NamespaceId": ns, "HealthCheckCustomConfig": {}}),
    )
    .await;
    svc["Service"]["Id"]
        .as_str()
        .expect("service id")
        .to_owned()
}

async fn register(api: &ControlPlane, svc: &str, id: &str, backend: &HttpBackend, extra: Value) {
    let mut attrs = json!({
        "AWS_INSTANCE_IPV4": "127.0.0.1",
        "AWS_INSTANCE_PORT": backend.port().to_string(),
    });
    if let (Some(a), Some(e)) = (attrs.as_object_mut(), extra.as_object()) {
        a.extend(e.clone());
    }
    ok(
        api,
        "RegisterInstance",
        json!({"ServiceId": svc, "InstanceId": id, "Attributes": attrs}),
    )
    .await;
}

async fn set_health(api: &ControlPlane, svc: &str, id: &str, status: &str) {
    ok(
        api,
        "UpdateInstanceCustomHealthStatus",
        json!({"ServiceId": svc, "InstanceId": id, "Status": status}),
    )
    .await;
}

/// A mesh with node `b` (Cloud Map `apps.local/b`, every instance), node `b-canary` (only
/// `version=v2`), their virtual services, and a client node calling both.
async fn mesh(cp: &ControlPlane, port: u16) -> std::net::Ipv4Addr {
    cp.create_mesh("cm", json!({"egressFilter": {"type": "DROP_ALL"}}))
        .await;
    let listeners = json!([{"portMapping": {"port": port, "protocol": "http"}}]);
    cp.create_virtual_node(
        "cm",
        "b",
        json!({"listeners": listeners, "serviceDiscovery": {"awsCloudMap": {
            "namespaceName": "apps.local", "serviceName": "b"}}}),
    )
    .await;
    cp.create_virtual_node(
        "cm",
        "b-canary",
        json!({"listeners": listeners, "serviceDiscovery": {"awsCloudMap": {
            "namespaceName": "apps.local", "serviceName": "b",
            "attributes": [{"key": "version", "value": "v2"}]}}}),
    )
    .await;
    for (vs, node) in [("b.apps.local", "b"), ("canary.apps.local", "b-canary")] {
        cp.create_virtual_service(
            "cm",
            vs,
            json!({"provider": {"virtualNode": {"virtualNodeName": node}}}),
        )
        .await;
    }
    let ip = loopback_ip();
    cp.create_virtual_node_at(
        "cm",
        "front",
        json!({"backends": [
            {"virtualService": {"virtualServiceName": "b.apps.local"}},
            {"virtualService": {"virtualServiceName": "canary.apps.local"}}]}),
        ip,
    )
    .await;
    ip
}

/// Requests until `done(counts)` holds for one batch of 30 (bounded by `within`).
async fn until(target: &Target, within: Duration, what: &str, done: impl Fn(&LoadCounts) -> bool) {
    let deadline = Instant::now() + within;
    let mut last = LoadCounts::default();
    while Instant::now() < deadline {
        last = batch(target, 30).await;
        if done(&last) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}: not reached within {within:?}; last batch {last:?}");
}

#[derive(Debug, Default)]
struct LoadCounts {
    by_body: BTreeMap<String, u64>,
    failures: u64,
}

async fn batch(target: &Target, n: usize) -> LoadCounts {
    let r = target.load("/").requests(n).concurrency(4).run().await;
    LoadCounts {
        by_body: r.by_body.clone(),
        failures: r.failures(),
    }
}

/// Pushes per xDS type (`cds`, `eds`, ...) to the proxies of `node`.
async fn pushes(cp: &ControlPlane, node: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for p in cp.proxies_of(node).await {
        for t in p["types"].as_array().into_iter().flatten() {
            let ty = t["type"].as_str().unwrap_or("?").to_owned();
            *out.entry(ty).or_insert(0) += t["pushes"].as_u64().unwrap_or(0);
        }
    }
    out
}

/// Asserts that between `before` and `after` only EDS was pushed (and it was).
fn only_eds(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>, what: &str) {
    for (ty, n) in after {
        let was = before.get(ty).copied().unwrap_or(0);
        if ty.eq_ignore_ascii_case("eds") {
            assert!(*n > was, "{what}: no EDS push ({before:?} -> {after:?})");
        } else {
            assert_eq!(*n, was, "{what}: {ty} was pushed ({before:?} -> {after:?})");
        }
    }
}

/// Waits until the proxy has ACKed everything it was sent (so push counts are final).
async fn settle(cp: &ControlPlane, node: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let proxies = cp.proxies_of(node).await;
        let synced = !proxies.is_empty()
            && proxies.iter().all(|p| {
                p["types"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .all(|t| t["inSync"] == true)
            });
        if synced {
            // The debounce window: a change written just before may not be pushed yet.
            tokio::time::sleep(Duration::from_millis(300)).await;
            return;
        }
        assert!(
            Instant::now() < deadline,
            "proxy {node} never in sync: {proxies:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_instances_drive_envoy_endpoints() {
    let cp = ControlPlane::start().await;
    let api = &cp;
    let svc = registry(api).await;
    let b1 = HttpBackend::start("b1").await;
    let b2 = HttpBackend::start("b2").await;
    let b3 = HttpBackend::start("b3").await;
    register(api, &svc, "i-1", &b1, json!({"version": "v1"})).await;
    register(api, &svc, "i-2", &b2, json!({"version": "v1"})).await;
    register(api, &svc, "i-3", &b3, json!({"version": "v2"})).await;
    let port = free_port();
    let ip = mesh(&cp, port).await;
    let node = "mesh/cm/virtualNode/front";
    let envoy = Envoy::start(node, cp.xds_addr(), XdsFlavor::Delta);
    envoy.wait_live().await;
    let main = Target::new("b.apps.local", addr(ip, port));
    let canary = Target::new("canary.apps.local", addr(ip, port));

    // Three registered instances share the traffic.
    until(
        &main,
        Duration::from_secs(15),
        "all three instances serve",
        |c| c.by_body.len() == 3,
    )
    .await;
    let r = main.load("/").requests(300).concurrency(6).run().await;
    assert_eq!(r.failures(), 0, "{:?}", r.failure_samples(5));
    for b in ["b1", "b2", "b3"] {
        assert!(
            r.count(b) >= 40,
            "{b} got {} of 300: {:?}",
            r.count(b),
            r.by_body
        );
    }

    // The canary node selects version=v2 only.
    let r = canary.load("/").requests(100).concurrency(4).run().await;
    assert_eq!(r.failures(), 0, "{:?}", r.failure_samples(5));
    assert_eq!(r.count("b3"), 100, "canary traffic: {:?}", r.by_body);

    // Marking i-1 UNHEALTHY stops its traffic, and only EDS is pushed.
    settle(&cp, node).await;
    let before = pushes(&cp, node).await;
    set_health(api, &svc, "i-1", "UNHEALTHY").await;
    until(&main, Duration::from_secs(10), "b1 drained", |c| {
        !c.by_body.contains_key("b1") && c.failures == 0
    })
    .await;
    let served = b1.requests();
    let r = main.load("/").requests(200).concurrency(4).run().await;
    assert_eq!(r.failures(), 0, "{:?}", r.failure_samples(5));
    assert_eq!(r.count("b1"), 0, "{:?}", r.by_body);
    assert_eq!(
        b1.requests(),
        served,
        "the unhealthy instance still got requests"
    );
    settle(&cp, node).await;
    only_eds(&before, &pushes(&cp, node).await, "health change");

    // Deregistering i-2 under constant load, then stopping it, fails no request.
    set_health(api, &svc, "i-1", "HEALTHY").await;
    until(&main, Duration::from_secs(10), "b1 back", |c| {
        c.by_body.contains_key("b1")
    })
    .await;
    settle(&cp, node).await;
    let before = pushes(&cp, node).await;
    let load = {
        let main = main.clone();
        tokio::spawn(async move {
            main.load("/")
                .duration(Duration::from_secs(4))
                .concurrency(4)
                .run()
                .await
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    ok(
        api,
        "DeregisterInstance",
        json!({"ServiceId": svc, "InstanceId": "i-2"}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let b2_total = b2.requests();
    drop(b2);
    let r = load.await.expect("load task");
    assert!(r.total > 100, "too little load: {}", r.total);
    assert_eq!(
        r.failures(),
        0,
        "failed requests during deregistration: {:?}",
        r.failure_samples(5)
    );
    let late: Vec<_> = r
        .samples
        .iter()
        .filter(|(t, _, body)| *t > Duration::from_millis(2600) && body == "b2")
        .collect();
    assert!(
        late.is_empty(),
        "b2 still served after it was deregistered: {late:?}"
    );
    assert!(b2_total > 0);
    settle(&cp, node).await;
    only_eds(&before, &pushes(&cp, node).await, "deregistration");

    // No healthy instance left: fail open (Envoy's panic mode spreads over all of them).
    set_health(api, &svc, "i-1", "UNHEALTHY").await;
    set_health(api, &svc, "i-3", "UNHEALTHY").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = main.load("/").requests(100).concurrency(4).run().await;
    assert_eq!(r.failures(), 0, "fail-open: {:?}", r.failure_samples(5));
    assert!(
        r.count("b1") > 0 && r.count("b3") > 0,
        "fail-open: {:?}",
        r.by_body
    );
    drop(envoy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leased_instance_disappears_when_its_owner_dies() {
    const TTL: Duration = Duration::from_secs(2);
    // Shared with the heartbeat task.
    let cp = std::sync::Arc::new(ControlPlane::start().await);
    let api = &*cp;
    let svc = registry(api).await;
    let stable = HttpBackend::start("stable").await;
    let leased = HttpBackend::start("leased").await;
    register(api, &svc, "stable", &stable, json!({})).await;
    let port = free_port();
    let ip = mesh(&cp, port).await;
    // The owner heartbeats by re-registering every TTL/4.
    let owner = {
        let svc = svc.clone();
        let cp = cp.clone();
        let attrs = json!({
            "AWS_INSTANCE_IPV4": "127.0.0.1",
            "AWS_INSTANCE_PORT": leased.port().to_string(),
            "MESHPLANE_INSTANCE_TTL": TTL.as_secs().to_string(),
        });
        tokio::spawn(async move {
            for _ in 0..1000 {
                ok(
                    &cp,
                    "RegisterInstance",
                    json!({"ServiceId": svc, "InstanceId": "leased", "Attributes": attrs}),
                )
                .await;
                tokio::time::sleep(TTL / 4).await;
            }
        })
    };
    let node = "mesh/cm/virtualNode/front";
    let envoy = Envoy::start(node, cp.xds_addr(), XdsFlavor::Sotw);
    envoy.wait_live().await;
    let main = Target::new("b.apps.local", addr(ip, port));
    until(
        &main,
        Duration::from_secs(15),
        "both instances serve",
        |c| c.by_body.len() == 2,
    )
    .await;
    // Heartbeats keep it: after several TTLs it still serves.
    tokio::time::sleep(TTL * 2).await;
    until(&main, Duration::from_secs(2), "leased still serves", |c| {
        c.by_body.contains_key("leased")
    })
    .await;

    // The owner dies (its heartbeats stop; the process behind the address stays up, so
    // only the registry can remove it).
    owner.abort();
    let died = Instant::now();
    let leased_addr = format!("127.0.0.1:{}", leased.port());
    loop {
        let (_, clusters) = envoy.admin_get("/clusters").await.expect("GET /clusters");
        if !clusters.contains(&leased_addr) {
            break;
        }
        assert!(
            died.elapsed() < TTL + Duration::from_secs(1),
            "the leased instance is still in Envoy's endpoints {:?} after its owner died",
            died.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let gone_after = died.elapsed();
    println!(
        "leased instance left Envoy's endpoints {gone_after:?} after its last heartbeat stopped (TTL {TTL:?})"
    );
    assert!(gone_after <= TTL + Duration::from_secs(1), "{gone_after:?}");
    let r = main.load("/").requests(50).concurrency(4).run().await;
    assert_eq!(r.count("stable"), 50, "{:?}", r.by_body);
    let (status, v) = cloud_map(
        api,
        "GetInstance",
        json!({"ServiceId": svc, "InstanceId": "leased"}),
    )
    .await;
    assert_eq!(
        (status, v["__type"].as_str()),
        (404, Some("InstanceNotFound"))
    );
}

/// Kills the supervisor (and its Envoy process group) if the test ends early.
struct Supervised(std::process::Child);

impl Drop for Supervised {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_run_register_keeps_the_instance_while_envoy_runs() {
    let cp = ControlPlane::start().await;
    let api = &cp;
    let svc = registry(api).await;
    let port = free_port();
    mesh(&cp, port).await;
    let admin_port = free_port();
    let tmp = std::env::temp_dir().join(format!("meshplane-register-{}.log", std::process::id()));
    let child = std::process::Command::new(meshplane_testkit::control_plane::meshplane_binary())
        // Mints its node token and signs its Cloud Map calls with the administrator
        // profile, like a task with credentials in its environment.
        .envs(cp.aws_env())
        .args(["envoy", "run"])
        .args(["--node-id", "mesh/cm/virtualNode/front"])
        .args(["--xds-address", &cp.xds_addr().to_string()])
        .args(["--admin-port", &admin_port.to_string()])
        .arg("--envoy-binary")
        .arg(meshplane_testkit::envoy_binary())
        .args(["--drain-time-s", "3", "--register"])
        .args(["--register-endpoint", &cp.api_url()])
        .args([
            "--register-namespace",
            "apps.local",
            "--register-service",
            "b",
        ])
        .args([
            "--register-instance-id",
            "self",
            "--register-address",
            "127.0.0.1",
        ])
        .args([
            "--register-port",
            "9999",
            "--register-attribute",
            "version=v3",
        ])
        .args(["--register-ttl-s", "2"])
        .env("ENVOY_ADMIN_ACCESS_LOG_FILE", &tmp)
        .env("ENVOY_LOG_LEVEL", "error")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("spawn meshplane envoy run");
    let mut sup = Supervised(child);
    let get = json!({"ServiceId": svc, "InstanceId": "self"});

    // Registered once Envoy is ready.
    let deadline = Instant::now() + Duration::from_secs(60);
    let inst = loop {
        let (status, v) = cloud_map(api, "GetInstance", get.clone()).await;
        if status == 200 {
            break v;
        }
        assert!(Instant::now() < deadline, "never registered: {status} {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let attrs = &inst["Instance"]["Attributes"];
    assert_eq!(attrs["AWS_INSTANCE_IPV4"], "127.0.0.1");
    assert_eq!(attrs["AWS_INSTANCE_PORT"], "9999");
    assert_eq!(attrs["version"], "v3");
    assert_eq!(attrs["MESHPLANE_INSTANCE_TTL"], "2");

    // Heartbeats outlive several TTLs.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (status, v) = cloud_map(api, "GetInstance", get.clone()).await;
    assert_eq!(status, 200, "lease lost despite heartbeats: {v}");

    // SIGTERM: deregistered at once, while the supervisor is still draining (3 s).
    let pid = sup.0.id().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-s", "TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    let signalled = Instant::now();
    loop {
        let (status, _) = cloud_map(api, "GetInstance", get.clone()).await;
        if status == 404 {
            break;
        }
        assert!(
            signalled.elapsed() < Duration::from_millis(1500),
            "still registered {:?} after SIGTERM",
            signalled.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        sup.0.try_wait().expect("try_wait").is_none(),
        "the supervisor should still be draining after deregistering"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while sup.0.try_wait().expect("try_wait").is_none() {
        assert!(
            Instant::now() < deadline,
            "supervisor did not exit after draining"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = std::fs::remove_file(&tmp);
}
