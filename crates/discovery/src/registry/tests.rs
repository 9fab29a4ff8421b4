//! Registry rules against the in-memory store: revisions, health, leases, discovery filters.

use std::sync::Arc;

use meshplane_store::MemoryStore;
use serde_json::{Value, json};

use super::*;

fn registry() -> Registry {
    Registry::new(Arc::new(MemoryStore::new()), RegistryConfig::default())
}

async fn ok(r: &Registry, op: &str, body: Value) -> Value {
    match r.call(op, body.clone()).await {
        Ok(v) => v,
        Err(e) => panic!("{op} {body}: {e}"),
    }
}

async fn err(r: &Registry, op: &str, body: Value) -> ErrorCode {
    match r.call(op, body.clone()).await {
        Ok(v) => panic!("{op} {body} should fail, got {v}"),
        Err(e) => e.code,
    }
}

/// Namespace `apps`, service `b` (custom health when `custom`); returns the service id.
async fn setup(r: &Registry, custom: bool) -> String {
    let op = ok(r, "CreateHttpNamespace", json!({"Name": "apps"})).await;
    let got = ok(r, "GetOperation", json!({"OperationId": op["OperationId"]})).await;
    assert_eq!(got["Operation"]["Status"], "SUCCESS");
    let ns = got["Operation"]["Targets"]["NAMESPACE"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut req = json!({"Name": "b", "NamespaceId": ns});
    if custom {
        req["HealthCheckCustomConfig"] = json!({});
    }
    let svc = ok(r, "CreateService", req).await;
    svc["Service"]["Id"].as_str().unwrap().to_owned()
}

async fn register(r: &Registry, svc: &str, id: &str, attrs: Value) {
    ok(
        r,
        "RegisterInstance",
        json!({"ServiceId": svc, "InstanceId": id, "Attributes": attrs}),
    )
    .await;
}

async fn revision(r: &Registry) -> u64 {
    let v = ok(
        r,
        "DiscoverInstancesRevision",
        json!({"NamespaceName": "apps", "ServiceName": "b"}),
    )
    .await;
    v["InstancesRevision"].as_u64().unwrap()
}

#[tokio::test]
async fn instances_revision_moves_on_membership_not_on_health() {
    let r = registry();
    let svc = setup(&r, true).await;
    let r0 = revision(&r).await;
    register(&r, &svc, "i-1", json!({"AWS_INSTANCE_IPV4": "10.0.0.1"})).await;
    let r1 = revision(&r).await;
    assert!(r1 > r0);
    // Same attributes again: a renewal, not a change.
    register(&r, &svc, "i-1", json!({"AWS_INSTANCE_IPV4": "10.0.0.1"})).await;
    assert_eq!(revision(&r).await, r1);
    ok(
        &r,
        "UpdateInstanceCustomHealthStatus",
        json!({"ServiceId": svc, "InstanceId": "i-1", "Status": "UNHEALTHY"}),
    )
    .await;
    assert_eq!(revision(&r).await, r1);
    let d = ok(
        &r,
        "DiscoverInstances",
        json!({"NamespaceName": "apps", "ServiceName": "b"}),
    )
    .await;
    assert_eq!(
        d["Instances"].as_array().unwrap().len(),
        0,
        "HEALTHY is the default filter"
    );
    let d = ok(
        &r,
        "DiscoverInstances",
        json!({"NamespaceName": "apps", "ServiceName": "b", "HealthStatus": "HEALTHY_OR_ELSE_ALL"}),
    )
    .await;
    assert_eq!(d["Instances"][0]["HealthStatus"], "UNHEALTHY");
    ok(
        &r,
        "DeregisterInstance",
        json!({"ServiceId": svc, "InstanceId": "i-1"}),
    )
    .await;
    assert!(revision(&r).await > r1);
}

#[tokio::test]
async fn custom_health_needs_the_service_config() {
    let r = registry();
    let svc = setup(&r, false).await;
    register(&r, &svc, "i-1", json!({"AWS_INSTANCE_IPV4": "10.0.0.1"})).await;
    assert_eq!(
        err(
            &r,
            "UpdateInstanceCustomHealthStatus",
            json!({"ServiceId": svc, "InstanceId": "i-1", "Status": "UNHEALTHY"})
        )
        .await,
        ErrorCode::CustomHealthNotFound
    );
    let s = ok(&r, "GetInstancesHealthStatus", json!({"ServiceId": svc})).await;
    assert_eq!(s["Status"]["i-1"], "UNKNOWN");
}

#[tokio::test]
async fn leases_expire_and_heartbeats_renew_them() {
    let r = registry();
    let svc = setup(&r, true).await;
    register(
        &r,
        &svc,
        "leased",
        json!({"AWS_INSTANCE_IPV4": "10.0.0.1", TTL_ATTRIBUTE: "5"}),
    )
    .await;
    register(
        &r,
        &svc,
        "forever",
        json!({"AWS_INSTANCE_IPV4": "10.0.0.2"}),
    )
    .await;
    let now = now_ms();
    let (removed, next) = r.sweep_expired_at(now).await.unwrap();
    assert_eq!(removed, 0);
    assert!(next.is_some_and(|n| n > now + 4000 && n <= now + 6000));
    let before = revision(&r).await;
    let (removed, next) = r.sweep_expired_at(now + 6000).await.unwrap();
    assert_eq!((removed, next), (1, None));
    assert!(revision(&r).await > before);
    assert_eq!(
        err(
            &r,
            "GetInstance",
            json!({"ServiceId": svc, "InstanceId": "leased"})
        )
        .await,
        ErrorCode::InstanceNotFound
    );
    assert_eq!(
        err(
            &r,
            "RegisterInstance",
            json!({"ServiceId": svc, "InstanceId": "x", "Attributes": {TTL_ATTRIBUTE: "0"}})
        )
        .await,
        ErrorCode::InvalidInput
    );
}

#[tokio::test]
async fn query_and_optional_parameters() {
    let r = registry();
    let svc = setup(&r, false).await;
    register(
        &r,
        &svc,
        "v1",
        json!({"AWS_INSTANCE_IPV4": "10.0.0.1", "version": "v1", "zone": "a"}),
    )
    .await;
    register(
        &r,
        &svc,
        "v2",
        json!({"AWS_INSTANCE_IPV4": "10.0.0.2", "version": "v2", "zone": "b"}),
    )
    .await;
    let ids = |v: Value| -> Vec<String> {
        v["Instances"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["InstanceId"].as_str().unwrap().to_owned())
            .collect()
    };
    let base = json!({"NamespaceName": "apps", "ServiceName": "b"});
    let mut q = base.clone();
    q["QueryParameters"] = json!({"version": "v2"});
    assert_eq!(ids(ok(&r, "DiscoverInstances", q).await), ["v2"]);
    let mut q = base.clone();
    q["OptionalParameters"] = json!({"zone": "c"});
    assert_eq!(
        ids(ok(&r, "DiscoverInstances", q).await),
        ["v1", "v2"],
        "no match: ignored"
    );
    let mut q = base.clone();
    q["OptionalParameters"] = json!({"zone": "a"});
    assert_eq!(ids(ok(&r, "DiscoverInstances", q).await), ["v1"]);
    let mut q = base.clone();
    q["MaxResults"] = json!(1);
    assert_eq!(ids(ok(&r, "DiscoverInstances", q).await).len(), 1);
}

#[tokio::test]
async fn in_use_and_not_found() {
    let r = registry();
    let svc = setup(&r, false).await;
    register(&r, &svc, "i-1", json!({})).await;
    let ns = ok(&r, "GetService", json!({"Id": svc})).await["Service"]["NamespaceId"].clone();
    assert_eq!(
        err(&r, "DeleteService", json!({"Id": svc})).await,
        ErrorCode::ResourceInUse
    );
    assert_eq!(
        err(&r, "DeleteNamespace", json!({"Id": ns})).await,
        ErrorCode::ResourceInUse
    );
    ok(
        &r,
        "DeregisterInstance",
        json!({"ServiceId": svc, "InstanceId": "i-1"}),
    )
    .await;
    ok(&r, "DeleteService", json!({"Id": svc})).await;
    ok(&r, "DeleteNamespace", json!({"Id": ns})).await;
    assert_eq!(
        err(&r, "GetNamespace", json!({"Id": ns})).await,
        ErrorCode::NamespaceNotFound
    );
    assert_eq!(
        err(&r, "GetService", json!({"Id": svc})).await,
        ErrorCode::ServiceNotFound
    );
    assert_eq!(
        err(&r, "GetOperation", json!({"OperationId": "nope"})).await,
        ErrorCode::OperationNotFound
    );
    assert_eq!(
        err(&r, "Frobnicate", json!({})).await,
        ErrorCode::UnknownOperationException
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_registrations_are_all_kept() {
    let r = registry();
    let svc = setup(&r, false).await;
    let before = revision(&r).await;
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let (r, svc) = (r.clone(), svc.clone());
            tokio::spawn(async move {
                let attrs = json!({"AWS_INSTANCE_IPV4": format!("10.0.1.{i}")});
                register(&r, &svc, &format!("i-{i}"), attrs).await;
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let listed = ok(&r, "ListInstances", json!({"ServiceId": svc})).await;
    assert_eq!(listed["Instances"].as_array().unwrap().len(), 20);
    let s = ok(&r, "GetService", json!({"Id": svc})).await;
    assert_eq!(s["Service"]["InstanceCount"], 20);
    assert!(revision(&r).await > before);
}

/// Issue 16, item 1 for Cloud Map: 32 concurrent CreateHttpNamespace calls with one
/// CreatorRequestId create one namespace and all get its operation; with one
/// CreatorRequestId and different names, one wins and the rest get DuplicateRequest.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn creator_request_id_is_atomic_under_concurrency() {
    let r = registry();
    let run = |bodies: Vec<Value>| {
        let tasks: Vec<_> = bodies
            .into_iter()
            .map(|b| {
                let r = r.clone();
                tokio::spawn(async move { r.call("CreateHttpNamespace", b).await })
            })
            .collect();
        async move {
            let mut out = Vec::new();
            for t in tasks {
                out.push(t.await.unwrap());
            }
            out
        }
    };
    let same = run((0..32)
        .map(|_| json!({"Name": "same", "CreatorRequestId": "req-1"}))
        .collect())
    .await;
    let ops: std::collections::BTreeSet<String> = same
        .iter()
        .map(|o| match o {
            Ok(v) => v["OperationId"].as_str().unwrap().to_owned(),
            Err(e) => panic!("replay failed: {e}"),
        })
        .collect();
    assert_eq!(ops.len(), 1, "one operation for one request id: {ops:?}");
    let different = run((0..32)
        .map(|i| json!({"Name": format!("other-{i}"), "CreatorRequestId": "req-2"}))
        .collect())
    .await;
    let winners = different.iter().filter(|o| o.is_ok()).count();
    assert_eq!(winners, 1);
    for o in different.iter().filter_map(|o| o.as_ref().err()) {
        assert_eq!(o.code, ErrorCode::DuplicateRequest, "{o}");
    }
    let listed = ok(&r, "ListNamespaces", json!({})).await;
    let names: Vec<&str> = listed["Namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["Name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.contains(&"same"));
}

#[tokio::test]
async fn endpoint_index_reports_changed_services_only() {
    use crate::endpoints::EndpointIndex;
    let rec = |ip: &str, health: Option<Health>| InstanceRecord {
        id: "i-1".into(),
        service_id: "srv-1".into(),
        namespace_name: "apps".into(),
        service_name: "b".into(),
        attributes: [
            ("AWS_INSTANCE_IPV6".to_owned(), ip.to_owned()),
            ("AWS_INSTANCE_PORT".to_owned(), "8080".to_owned()),
        ]
        .into_iter()
        .collect(),
        creator_request_id: None,
        health,
        ttl_ms: Some(1000),
        expires_ms: Some(1),
    };
    let mut idx = EndpointIndex::default();
    let key = keys::instance("srv-1", "i-1");
    let put = |r: &InstanceRecord| serde_json::to_vec(r).unwrap();
    assert!(idx.put(&key, &put(&rec("::1", None))).is_some());
    // A renewal (only the lease moved) changes nothing the translator sees.
    let mut renewed = rec("::1", None);
    renewed.expires_ms = Some(2);
    assert!(idx.put(&key, &put(&renewed)).is_none());
    assert!(
        idx.put(&key, &put(&rec("::1", Some(Health::Unhealthy))))
            .is_some()
    );
    let e = idx.endpoints();
    let inst = &e.services.values().next().unwrap()[0];
    assert_eq!(
        (inst.ipv6.as_deref(), inst.port, inst.healthy),
        (Some("::1"), Some(8080), false)
    );
    assert!(idx.delete(&key).is_some());
    assert!(idx.is_empty());
}

/// serde builds a struct from a JSON list of its members; requests take objects only.
#[tokio::test]
async fn a_list_where_a_structure_belongs_is_invalid_input() {
    let r = registry();
    let op = ok(&r, "CreateHttpNamespace", json!({"Name": "apps"})).await;
    let got = ok(
        &r,
        "GetOperation",
        json!({"OperationId": op["OperationId"]}),
    )
    .await;
    let ns = got["Operation"]["Targets"]["NAMESPACE"].clone();
    // The object form is served; the same members as a list are not.
    ok(&r, "GetNamespace", json!({"Id": ns})).await;
    assert_eq!(
        err(&r, "GetNamespace", json!([ns])).await,
        ErrorCode::SerializationException
    );
    let cases = [
        (
            "ListNamespaces",
            json!({"Filters": [["TYPE", ["HTTP"], "EQ"]]}),
            "Filters[0]",
        ),
        (
            "CreateHttpNamespace",
            json!({"Name": "other", "Tags": [{"Key": "k", "Value": "v"}, ["k", "v"]]}),
            "Tags[1]",
        ),
    ];
    for (op, body, at) in cases {
        let e = r.call(op, body.clone()).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidInput, "{op} {body}");
        assert_eq!(
            e.message,
            format!("invalid request: {at} must be a JSON object, got a list")
        );
    }
    let v = ok(&r, "ListNamespaces", json!({})).await;
    assert_eq!(
        v["Namespaces"].as_array().unwrap().len(),
        1,
        "nothing created: {v}"
    );
}

/// The policy crate maps each served operation to an IAM action and resource: it must know
/// exactly the operations this registry serves, no more and no fewer.
#[test]
fn policy_crate_knows_every_served_operation() {
    let mut served: Vec<&str> = OPERATIONS.to_vec();
    let mut mapped: Vec<&str> = meshplane_policy::operation::CLOUD_MAP_OPERATIONS.to_vec();
    served.sort_unstable();
    mapped.sort_unstable();
    assert_eq!(served, mapped);
}
