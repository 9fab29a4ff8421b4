//! The official Rust SDK (`aws-sdk-appmesh`) against the real `meshplane serve` process.
//!
//! The SDK parses strictly: timestamps must be epoch-second numbers, unions must carry
//! exactly one known member, errors are mapped by `x-amzn-ErrorType` to typed variants.
//! A failure here is a real server bug, not a test quirk.

use aws_sdk_appmesh::Client;
use aws_sdk_appmesh::config::retry::RetryConfig;
use aws_sdk_appmesh::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_appmesh::types::{
    Backend, DnsResponseType, DnsServiceDiscovery, Duration, DurationUnit, EgressFilter,
    EgressFilterType, GatewayRouteSpec, GatewayRouteTarget, GatewayRouteVirtualService,
    HealthCheckPolicy, HttpGatewayRoute, HttpGatewayRouteAction, HttpGatewayRouteMatch,
    HttpRetryPolicy, HttpRoute, HttpRouteAction, HttpRouteMatch, HttpTimeout, Listener,
    ListenerTimeout, MeshSpec, PortMapping, PortProtocol, ResourceMetadata, RouteSpec,
    ServiceDiscovery, TagRef, VirtualGatewayListener, VirtualGatewayPortMapping,
    VirtualGatewayPortProtocol, VirtualGatewaySpec, VirtualNodeServiceProvider, VirtualNodeSpec,
    VirtualRouterListener, VirtualRouterServiceProvider, VirtualRouterSpec, VirtualServiceBackend,
    VirtualServiceProvider, VirtualServiceSpec, WeightedTarget,
};
use meshplane_compat::Server;

const ACCOUNT: &str = "000000000000";
const ARN: &str = "arn:aws:appmesh:us-east-1:000000000000:";

fn client(url: &str, credentials: &str) -> Client {
    let (id, secret) = credentials.split_once(':').expect("ID:SECRET");
    let conf = aws_sdk_appmesh::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(
            id.to_owned(),
            secret.to_owned(),
            None,
            None,
            "test",
        ))
        .endpoint_url(url)
        // Plain HTTP hyper-1 client: no TLS stack in the dependency tree.
        .http_client(aws_smithy_http_client::Builder::new().build_http())
        .retry_config(RetryConfig::disabled())
        .build();
    Client::from_conf(conf)
}

fn check_metadata(m: Option<&ResourceMetadata>, arn: &str, version: i64) -> String {
    let m = m.expect("metadata");
    assert_eq!(m.arn(), arn);
    assert_eq!(m.version(), version, "{arn}");
    assert_eq!(m.mesh_owner(), ACCOUNT);
    assert_eq!(m.resource_owner(), ACCOUNT);
    assert_eq!(m.uid().len(), 36, "uid {}", m.uid());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let created = m.created_at().secs();
    assert!(
        (now - 3600..=now + 60).contains(&created),
        "createdAt {created}"
    );
    assert!(m.last_updated_at() >= m.created_at());
    // Millisecond precision (as the real service sends) survives the SDK's epoch-seconds
    // parser, up to float rounding.
    let rem = m.created_at().subsec_nanos() % 1_000_000;
    assert!(
        !(10_000..=990_000).contains(&rem),
        "createdAt {:?} is not whole milliseconds",
        m.created_at()
    );
    m.uid().to_owned()
}

fn secs(v: i64) -> Duration {
    Duration::builder().value(v).unit(DurationUnit::S).build()
}

fn node_spec(host: &str, backends: &[&str]) -> VirtualNodeSpec {
    let listener = Listener::builder()
        .port_mapping(
            PortMapping::builder()
                .port(8080)
                .protocol(PortProtocol::Http)
                .build()
                .unwrap(),
        )
        .health_check(
            HealthCheckPolicy::builder()
                .protocol(PortProtocol::Http)
                .path("/health")
                .healthy_threshold(2)
                .unhealthy_threshold(3)
                .timeout_millis(2000)
                .interval_millis(5000)
                .build()
                .unwrap(),
        )
        .timeout(ListenerTimeout::Http(
            HttpTimeout::builder().per_request(secs(15)).build(),
        ))
        .build();
    let mut spec = VirtualNodeSpec::builder()
        .listeners(listener)
        .service_discovery(ServiceDiscovery::Dns(
            DnsServiceDiscovery::builder()
                .hostname(host)
                .response_type(DnsResponseType::Endpoints)
                .build()
                .unwrap(),
        ));
    for b in backends {
        spec = spec.backends(Backend::VirtualService(
            VirtualServiceBackend::builder()
                .virtual_service_name(*b)
                .build()
                .unwrap(),
        ));
    }
    spec.build()
}

fn target(node: &str, weight: i32) -> WeightedTarget {
    WeightedTarget::builder()
        .virtual_node(node)
        .weight(weight)
        .build()
        .unwrap()
}

fn http_route(prefix: &str, targets: Vec<WeightedTarget>) -> RouteSpec {
    RouteSpec::builder()
        .priority(5)
        .http_route(
            HttpRoute::builder()
                .r#match(HttpRouteMatch::builder().prefix(prefix).build())
                .action(
                    HttpRouteAction::builder()
                        .set_weighted_targets(Some(targets))
                        .build()
                        .unwrap(),
                )
                .retry_policy(
                    HttpRetryPolicy::builder()
                        .max_retries(3)
                        .per_retry_timeout(
                            Duration::builder()
                                .value(250)
                                .unit(DurationUnit::Ms)
                                .build(),
                        )
                        .http_retry_events("server-error")
                        .http_retry_events("gateway-error")
                        .build()
                        .unwrap(),
                )
                .timeout(
                    HttpTimeout::builder()
                        .per_request(secs(5))
                        .idle(secs(60))
                        .build(),
                )
                .build(),
        )
        .build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_sdk_against_meshplane_serve() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&tmp.path().join("data"), &[]);
    let c = client(server.url(), &server.credentials());
    let m = "sdk-mesh";
    let marn = format!("{ARN}mesh/{m}");

    // Mesh: create (with tags), describe, update, list.
    let out = c
        .create_mesh()
        .mesh_name(m)
        .spec(
            MeshSpec::builder()
                .egress_filter(
                    EgressFilter::builder()
                        .r#type(EgressFilterType::AllowAll)
                        .build()
                        .unwrap(),
                )
                .build(),
        )
        .tags(TagRef::builder().key("team").value("core").build().unwrap())
        .send()
        .await
        .expect("create_mesh");
    let mesh = out.mesh().expect("mesh");
    assert_eq!(mesh.mesh_name(), m);
    let uid = check_metadata(mesh.metadata(), &marn, 1);
    assert_eq!(
        mesh.spec()
            .and_then(|s| s.egress_filter())
            .map(|e| e.r#type().clone()),
        Some(EgressFilterType::AllowAll)
    );
    assert_eq!(
        mesh.status().and_then(|s| s.status()).map(|s| s.as_str()),
        Some("ACTIVE")
    );
    let out = c
        .update_mesh()
        .mesh_name(m)
        .send()
        .await
        .expect("update_mesh");
    assert_eq!(
        check_metadata(out.mesh().unwrap().metadata(), &marn, 2),
        uid
    );
    let out = c
        .describe_mesh()
        .mesh_name(m)
        .send()
        .await
        .expect("describe_mesh");
    check_metadata(out.mesh().unwrap().metadata(), &marn, 2);
    let meshes = c.list_meshes().send().await.expect("list_meshes");
    assert!(
        meshes
            .meshes()
            .iter()
            .any(|r| r.mesh_name() == m && r.arn() == marn && r.version() == 2)
    );

    // Virtual nodes: listener + health check + DNS discovery + backends.
    for (name, backends) in [("svc-b", &["svc-a.local"][..]), ("svc-c", &[][..])] {
        let out = c
            .create_virtual_node()
            .mesh_name(m)
            .virtual_node_name(name)
            .spec(node_spec(&format!("{name}.local"), backends))
            .send()
            .await
            .expect("create_virtual_node");
        let vn = out.virtual_node().unwrap();
        check_metadata(vn.metadata(), &format!("{marn}/virtualNode/{name}"), 1);
        let spec = vn.spec().unwrap();
        assert_eq!(spec.listeners()[0].port_mapping().unwrap().port(), 8080);
        assert_eq!(
            spec.listeners()[0].health_check().unwrap().path(),
            Some("/health")
        );
        match spec.service_discovery() {
            Some(ServiceDiscovery::Dns(d)) => {
                assert_eq!(d.hostname(), format!("{name}.local"));
                assert_eq!(d.response_type(), Some(&DnsResponseType::Endpoints));
            }
            other => panic!("service discovery {other:?}"),
        }
        assert_eq!(spec.backends().len(), backends.len());
        assert!(matches!(
            spec.listeners()[0].timeout(),
            Some(ListenerTimeout::Http(_))
        ));
    }
    let out = c
        .update_virtual_node()
        .mesh_name(m)
        .virtual_node_name("svc-b")
        .spec(node_spec("svc-b2.local", &["svc-a.local", "svc-x.local"]))
        .send()
        .await
        .expect("update_virtual_node");
    let vn = out.virtual_node().unwrap();
    check_metadata(vn.metadata(), &format!("{marn}/virtualNode/svc-b"), 2);
    assert_eq!(vn.spec().unwrap().backends().len(), 2);
    let out = c
        .describe_virtual_node()
        .mesh_name(m)
        .virtual_node_name("svc-b")
        .send()
        .await
        .expect("describe_virtual_node");
    assert_eq!(out.virtual_node().unwrap().metadata().unwrap().version(), 2);

    // Pagination through the SDK paginator: 5 more nodes, pages of 2.
    for i in 0..5 {
        c.create_virtual_node()
            .mesh_name(m)
            .virtual_node_name(format!("page-{i}"))
            .spec(node_spec(&format!("page-{i}.local"), &[]))
            .send()
            .await
            .expect("create page node");
    }
    let mut stream = c
        .list_virtual_nodes()
        .mesh_name(m)
        .limit(2)
        .into_paginator()
        .send();
    let mut pages = 0;
    let mut names = Vec::new();
    while let Some(page) = stream.next().await {
        let page = page.expect("list_virtual_nodes page");
        pages += 1;
        assert!(page.virtual_nodes().len() <= 2);
        for r in page.virtual_nodes() {
            assert_eq!(r.mesh_owner(), ACCOUNT);
            assert!(r.arn().starts_with(&marn));
            names.push(r.virtual_node_name().to_owned());
        }
    }
    names.sort();
    assert_eq!(pages, 4, "7 nodes in pages of 2");
    assert_eq!(
        names,
        [
            "page-0", "page-1", "page-2", "page-3", "page-4", "svc-b", "svc-c"
        ]
    );

    // Virtual router and an HTTP route with weighted targets, retry policy and timeout.
    let router_spec = VirtualRouterSpec::builder()
        .listeners(
            VirtualRouterListener::builder()
                .port_mapping(
                    PortMapping::builder()
                        .port(8080)
                        .protocol(PortProtocol::Http)
                        .build()
                        .unwrap(),
                )
                .build(),
        )
        .build();
    let out = c
        .create_virtual_router()
        .mesh_name(m)
        .virtual_router_name("vr")
        .spec(router_spec.clone())
        .send()
        .await
        .expect("create_virtual_router");
    check_metadata(
        out.virtual_router().unwrap().metadata(),
        &format!("{marn}/virtualRouter/vr"),
        1,
    );
    let out = c
        .update_virtual_router()
        .mesh_name(m)
        .virtual_router_name("vr")
        .spec(router_spec)
        .send()
        .await
        .expect("update_virtual_router");
    assert_eq!(
        out.virtual_router().unwrap().metadata().unwrap().version(),
        2
    );
    let rarn = format!("{marn}/virtualRouter/vr/route/web");
    let out = c
        .create_route()
        .mesh_name(m)
        .virtual_router_name("vr")
        .route_name("web")
        .spec(http_route(
            "/",
            vec![target("svc-b", 80), target("svc-c", 20)],
        ))
        .send()
        .await
        .expect("create_route");
    let route = out.route().unwrap();
    assert_eq!(route.virtual_router_name(), "vr");
    check_metadata(route.metadata(), &rarn, 1);
    let hr = route.spec().unwrap().http_route().unwrap();
    let weights: Vec<(String, i32)> = hr
        .action()
        .unwrap()
        .weighted_targets()
        .iter()
        .map(|t| (t.virtual_node().to_owned(), t.weight()))
        .collect();
    assert_eq!(weights, [("svc-b".into(), 80), ("svc-c".into(), 20)]);
    let rp = hr.retry_policy().unwrap();
    assert_eq!(rp.max_retries(), 3);
    assert_eq!(rp.per_retry_timeout().unwrap().value(), Some(250));
    assert_eq!(
        rp.per_retry_timeout().unwrap().unit(),
        Some(&DurationUnit::Ms)
    );
    assert_eq!(hr.timeout().unwrap().idle().unwrap().value(), Some(60));
    let out = c
        .update_route()
        .mesh_name(m)
        .virtual_router_name("vr")
        .route_name("web")
        .spec(http_route("/api", vec![target("svc-b", 1)]))
        .send()
        .await
        .expect("update_route");
    check_metadata(out.route().unwrap().metadata(), &rarn, 2);
    let out = c
        .describe_route()
        .mesh_name(m)
        .virtual_router_name("vr")
        .route_name("web")
        .send()
        .await
        .expect("describe_route");
    assert_eq!(
        out.route()
            .unwrap()
            .spec()
            .unwrap()
            .http_route()
            .unwrap()
            .r#match()
            .unwrap()
            .prefix(),
        Some("/api")
    );
    let routes = c
        .list_routes()
        .mesh_name(m)
        .virtual_router_name("vr")
        .send()
        .await
        .expect("list_routes");
    assert_eq!(routes.routes().len(), 1);
    assert_eq!(routes.routes()[0].route_name(), "web");

    // Virtual services: router provider and node provider.
    let vs_spec = |router: bool| {
        VirtualServiceSpec::builder()
            .provider(if router {
                VirtualServiceProvider::VirtualRouter(
                    VirtualRouterServiceProvider::builder()
                        .virtual_router_name("vr")
                        .build()
                        .unwrap(),
                )
            } else {
                VirtualServiceProvider::VirtualNode(
                    VirtualNodeServiceProvider::builder()
                        .virtual_node_name("svc-c")
                        .build()
                        .unwrap(),
                )
            })
            .build()
    };
    let out = c
        .create_virtual_service()
        .mesh_name(m)
        .virtual_service_name("svc-a.local")
        .spec(vs_spec(true))
        .send()
        .await
        .expect("create_virtual_service");
    let vs = out.virtual_service().unwrap();
    check_metadata(
        vs.metadata(),
        &format!("{marn}/virtualService/svc-a.local"),
        1,
    );
    assert!(matches!(
        vs.spec().unwrap().provider(),
        Some(VirtualServiceProvider::VirtualRouter(p)) if p.virtual_router_name() == "vr"
    ));
    let out = c
        .update_virtual_service()
        .mesh_name(m)
        .virtual_service_name("svc-a.local")
        .spec(vs_spec(false))
        .send()
        .await
        .expect("update_virtual_service");
    assert!(matches!(
        out.virtual_service().unwrap().spec().unwrap().provider(),
        Some(VirtualServiceProvider::VirtualNode(p)) if p.virtual_node_name() == "svc-c"
    ));
    let out = c
        .update_virtual_service()
        .mesh_name(m)
        .virtual_service_name("svc-a.local")
        .spec(vs_spec(true))
        .send()
        .await
        .expect("update_virtual_service back");
    assert_eq!(
        out.virtual_service().unwrap().metadata().unwrap().version(),
        3
    );
    let list = c
        .list_virtual_services()
        .mesh_name(m)
        .send()
        .await
        .expect("list_virtual_services");
    assert_eq!(list.virtual_services().len(), 1);

    // Virtual gateway and gateway route.
    let gw_spec = VirtualGatewaySpec::builder()
        .listeners(
            VirtualGatewayListener::builder()
                .port_mapping(
                    VirtualGatewayPortMapping::builder()
                        .port(8088)
                        .protocol(VirtualGatewayPortProtocol::Http)
                        .build()
                        .unwrap(),
                )
                .build(),
        )
        .build()
        .unwrap();
    let out = c
        .create_virtual_gateway()
        .mesh_name(m)
        .virtual_gateway_name("gw")
        .spec(gw_spec.clone())
        .send()
        .await
        .expect("create_virtual_gateway");
    check_metadata(
        out.virtual_gateway().unwrap().metadata(),
        &format!("{marn}/virtualGateway/gw"),
        1,
    );
    let out = c
        .update_virtual_gateway()
        .mesh_name(m)
        .virtual_gateway_name("gw")
        .spec(gw_spec)
        .send()
        .await
        .expect("update_virtual_gateway");
    assert_eq!(
        out.virtual_gateway().unwrap().metadata().unwrap().version(),
        2
    );
    let gr_spec = |prefix: &str| {
        GatewayRouteSpec::builder()
            .http_route(
                HttpGatewayRoute::builder()
                    .r#match(HttpGatewayRouteMatch::builder().prefix(prefix).build())
                    .action(
                        HttpGatewayRouteAction::builder()
                            .target(
                                GatewayRouteTarget::builder()
                                    .virtual_service(
                                        GatewayRouteVirtualService::builder()
                                            .virtual_service_name("svc-a.local")
                                            .build()
                                            .unwrap(),
                                    )
                                    .build(),
                            )
                            .build(),
                    )
                    .build(),
            )
            .build()
    };
    let grarn = format!("{marn}/virtualGateway/gw/gatewayRoute/gr");
    let out = c
        .create_gateway_route()
        .mesh_name(m)
        .virtual_gateway_name("gw")
        .gateway_route_name("gr")
        .spec(gr_spec("/"))
        .tags(TagRef::builder().key("k").value("v").build().unwrap())
        .send()
        .await
        .expect("create_gateway_route");
    check_metadata(out.gateway_route().unwrap().metadata(), &grarn, 1);
    let out = c
        .update_gateway_route()
        .mesh_name(m)
        .virtual_gateway_name("gw")
        .gateway_route_name("gr")
        .spec(gr_spec("/v2"))
        .send()
        .await
        .expect("update_gateway_route");
    check_metadata(out.gateway_route().unwrap().metadata(), &grarn, 2);
    let out = c
        .describe_gateway_route()
        .mesh_name(m)
        .virtual_gateway_name("gw")
        .gateway_route_name("gr")
        .send()
        .await
        .expect("describe_gateway_route");
    let target_vs = out
        .gateway_route()
        .unwrap()
        .spec()
        .unwrap()
        .http_route()
        .unwrap()
        .action()
        .unwrap()
        .target()
        .unwrap()
        .virtual_service()
        .unwrap()
        .virtual_service_name()
        .to_owned();
    assert_eq!(target_vs, "svc-a.local");
    let list = c
        .list_gateway_routes()
        .mesh_name(m)
        .virtual_gateway_name("gw")
        .send()
        .await
        .expect("list_gateway_routes");
    assert_eq!(list.gateway_routes()[0].gateway_route_name(), "gr");

    // Tags: merge, untag, paginated listing.
    let more: Vec<TagRef> = (0..5)
        .map(|i| {
            TagRef::builder()
                .key(format!("t{i}"))
                .value(format!("{i}"))
                .build()
                .unwrap()
        })
        .collect();
    c.tag_resource()
        .resource_arn(&grarn)
        .set_tags(Some(more))
        .tags(TagRef::builder().key("k").value("v2").build().unwrap())
        .send()
        .await
        .expect("tag_resource");
    c.untag_resource()
        .resource_arn(&grarn)
        .tag_keys("t0")
        .send()
        .await
        .expect("untag_resource");
    let mut stream = c
        .list_tags_for_resource()
        .resource_arn(&grarn)
        .limit(2)
        .into_paginator()
        .items()
        .send();
    let mut tags = Vec::new();
    while let Some(t) = stream.next().await {
        let t = t.expect("tag page");
        tags.push((t.key().to_owned(), t.value().to_owned()));
    }
    tags.sort();
    assert_eq!(
        tags,
        [
            ("k".into(), "v2".into()),
            ("t1".into(), "1".into()),
            ("t2".into(), "2".into()),
            ("t3".into(), "3".into()),
            ("t4".into(), "4".into())
        ]
    );

    // Errors as typed SDK errors.
    use aws_sdk_appmesh::operation::create_mesh::CreateMeshError;
    use aws_sdk_appmesh::operation::create_virtual_node::CreateVirtualNodeError;
    use aws_sdk_appmesh::operation::delete_mesh::DeleteMeshError;
    use aws_sdk_appmesh::operation::delete_virtual_gateway::DeleteVirtualGatewayError;
    use aws_sdk_appmesh::operation::delete_virtual_node::DeleteVirtualNodeError;
    use aws_sdk_appmesh::operation::delete_virtual_router::DeleteVirtualRouterError;
    use aws_sdk_appmesh::operation::describe_mesh::DescribeMeshError;
    use aws_sdk_appmesh::operation::describe_route::DescribeRouteError;
    use aws_sdk_appmesh::operation::tag_resource::TagResourceError;

    let e = c
        .describe_mesh()
        .mesh_name("missing")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(
        matches!(e, DescribeMeshError::NotFoundException(_)),
        "{e:?}"
    );
    let e = c
        .describe_route()
        .mesh_name(m)
        .virtual_router_name("missing")
        .route_name("web")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(
        matches!(e, DescribeRouteError::NotFoundException(_)),
        "{e:?}"
    );
    assert!(e.to_string().contains("missing") || format!("{e:?}").contains("missing"));
    let e = c
        .create_mesh()
        .mesh_name(m)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(matches!(e, CreateMeshError::ConflictException(_)), "{e:?}");
    // clientToken: a replay returns the first response, a different body is a conflict.
    let token = "sdk-token-0001";
    let first = c
        .create_virtual_router()
        .mesh_name(m)
        .virtual_router_name("idem")
        .spec(VirtualRouterSpec::builder().build())
        .client_token(token)
        .send()
        .await
        .expect("create with token");
    let replay = c
        .create_virtual_router()
        .mesh_name(m)
        .virtual_router_name("idem")
        .spec(VirtualRouterSpec::builder().build())
        .client_token(token)
        .send()
        .await
        .expect("replay with token");
    let uid = |o: &aws_sdk_appmesh::operation::create_virtual_router::CreateVirtualRouterOutput| {
        let md = o.virtual_router().unwrap().metadata().unwrap();
        (md.uid().to_owned(), md.version())
    };
    assert_eq!(uid(&first), uid(&replay));
    let e = c
        .create_virtual_router()
        .mesh_name(m)
        .virtual_router_name("idem2")
        .spec(VirtualRouterSpec::builder().build())
        .client_token(token)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(
        matches!(
            e,
            aws_sdk_appmesh::operation::create_virtual_router::CreateVirtualRouterError::ConflictException(_)
        ),
        "{e:?}"
    );
    c.delete_virtual_router()
        .mesh_name(m)
        .virtual_router_name("idem")
        .send()
        .await
        .expect("delete idem router");

    // Enum and range violations the SDK does not check client-side.
    let bad = VirtualNodeSpec::builder()
        .listeners(
            Listener::builder()
                .port_mapping(
                    PortMapping::builder()
                        .port(99_999)
                        .protocol(PortProtocol::from("udp"))
                        .build()
                        .unwrap(),
                )
                .build(),
        )
        .service_discovery(ServiceDiscovery::Dns(
            DnsServiceDiscovery::builder()
                .hostname("x.local")
                .build()
                .unwrap(),
        ))
        .build();
    let e = c
        .create_virtual_node()
        .mesh_name(m)
        .virtual_node_name("bad")
        .spec(bad)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    match &e {
        CreateVirtualNodeError::BadRequestException(b) => {
            let msg = b.message().unwrap_or_default();
            assert!(msg.contains("spec.listeners[0].portMapping.port"), "{msg}");
            assert!(
                msg.contains("spec.listeners[0].portMapping.protocol"),
                "{msg}"
            );
        }
        other => panic!("expected BadRequestException, got {other:?}"),
    }
    let e = c
        .delete_mesh()
        .mesh_name(m)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(
        matches!(e, DeleteMeshError::ResourceInUseException(_)),
        "{e:?}"
    );
    let e = c
        .delete_virtual_router()
        .mesh_name(m)
        .virtual_router_name("vr")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(
        matches!(e, DeleteVirtualRouterError::ResourceInUseException(_)),
        "{e:?}"
    );
    let e = c
        .delete_virtual_node()
        .mesh_name(m)
        .virtual_node_name("svc-b")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(
        matches!(e, DeleteVirtualNodeError::ResourceInUseException(_)),
        "{e:?}"
    );
    let e = c
        .delete_virtual_gateway()
        .mesh_name(m)
        .virtual_gateway_name("gw")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(
        matches!(e, DeleteVirtualGatewayError::ResourceInUseException(_)),
        "{e:?}"
    );
    let many: Vec<TagRef> = (0..50)
        .map(|i| {
            TagRef::builder()
                .key(format!("x{i}"))
                .value("")
                .build()
                .unwrap()
        })
        .collect();
    let e = c
        .tag_resource()
        .resource_arn(&grarn)
        .set_tags(Some(many))
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(
        matches!(e, TagResourceError::TooManyTagsException(_)),
        "{e:?}"
    );

    // Deletes in dependency order; each returns the resource with status DELETED.
    let out = c
        .delete_gateway_route()
        .mesh_name(m)
        .virtual_gateway_name("gw")
        .gateway_route_name("gr")
        .send()
        .await
        .expect("delete_gateway_route");
    let gr = out.gateway_route().unwrap();
    assert_eq!(gr.status().unwrap().status().as_str(), "DELETED");
    check_metadata(gr.metadata(), &grarn, 2);
    let out = c
        .delete_virtual_gateway()
        .mesh_name(m)
        .virtual_gateway_name("gw")
        .send()
        .await
        .expect("delete_virtual_gateway");
    assert_eq!(
        out.virtual_gateway()
            .unwrap()
            .status()
            .unwrap()
            .status()
            .as_str(),
        "DELETED"
    );
    let out = c
        .delete_virtual_service()
        .mesh_name(m)
        .virtual_service_name("svc-a.local")
        .send()
        .await
        .expect("delete_virtual_service");
    assert_eq!(
        out.virtual_service()
            .unwrap()
            .status()
            .unwrap()
            .status()
            .as_str(),
        "DELETED"
    );
    let out = c
        .delete_route()
        .mesh_name(m)
        .virtual_router_name("vr")
        .route_name("web")
        .send()
        .await
        .expect("delete_route");
    assert_eq!(
        out.route().unwrap().status().unwrap().status().as_str(),
        "DELETED"
    );
    c.delete_virtual_router()
        .mesh_name(m)
        .virtual_router_name("vr")
        .send()
        .await
        .expect("delete_virtual_router");
    let mut names = Vec::new();
    let mut stream = c
        .list_virtual_nodes()
        .mesh_name(m)
        .into_paginator()
        .items()
        .send();
    while let Some(r) = stream.next().await {
        names.push(r.expect("node ref").virtual_node_name().to_owned());
    }
    for n in names {
        let out = c
            .delete_virtual_node()
            .mesh_name(m)
            .virtual_node_name(&n)
            .send()
            .await
            .expect("delete_virtual_node");
        assert_eq!(
            out.virtual_node()
                .unwrap()
                .status()
                .unwrap()
                .status()
                .as_str(),
            "DELETED"
        );
    }
    let out = c
        .delete_mesh()
        .mesh_name(m)
        .send()
        .await
        .expect("delete_mesh");
    let mesh = out.mesh().unwrap();
    assert_eq!(
        mesh.status().and_then(|s| s.status()).map(|s| s.as_str()),
        Some("DELETED")
    );
    check_metadata(mesh.metadata(), &marn, 2);
    let e = c
        .describe_mesh()
        .mesh_name(m)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(
        matches!(e, DescribeMeshError::NotFoundException(_)),
        "{e:?}"
    );
}
