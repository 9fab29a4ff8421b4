//! gRPC routing by service and method with a real gRPC client and server; a TCP route
//! carries a TCP echo.

use meshplane_testkit::grpc::{self, GrpcBackend};
use meshplane_testkit::tcp::echo_once;
use meshplane_testkit::{TcpEcho, XdsFlavor, addr, free_port};
use serde_json::json;

use crate::common::{World, weighted};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_routes_by_service_and_method_and_tcp_route_echoes() {
    let w = World::new("grpctcp").await;
    let hello = GrpcBackend::start("hello-backend").await;
    let greeter = GrpcBackend::start("greeter-backend").await;
    let echo = GrpcBackend::start("echo-backend").await;
    let tcp = TcpEcho::start().await;
    w.backend_node("hello", "grpc", hello.port()).await;
    w.backend_node("greeter", "grpc", greeter.port()).await;
    w.backend_node("echo", "grpc", echo.port()).await;
    w.backend_node("tcp-echo", "tcp", tcp.port()).await;

    let grpc_port = free_port();
    w.router("grpc-router", "grpc", grpc_port).await;
    w.service("greeter.local", "grpc-router").await;
    let grpc_route = |service: &str, method: Option<&str>, node: &str, priority: u32| {
        let mut m = json!({"serviceName": service});
        if let Some(method) = method {
            m["methodName"] = json!(method);
        }
        json!({"priority": priority, "grpcRoute": {
            "match": m,
            "action": {"weightedTargets": weighted(&[(node, 1)])}
        }})
    };
    w.route(
        "grpc-router",
        "hello-method",
        grpc_route("demo.Greeter", Some("Hello"), "hello", 1),
    )
    .await;
    w.route(
        "grpc-router",
        "greeter-service",
        grpc_route("demo.Greeter", None, "greeter", 2),
    )
    .await;
    w.route(
        "grpc-router",
        "echo-service",
        grpc_route("demo.Echo", None, "echo", 3),
    )
    .await;

    let tcp_port = free_port();
    w.router("tcp-router", "tcp", tcp_port).await;
    w.service("echo.local", "tcp-router").await;
    w.route(
        "tcp-router",
        "echo",
        json!({"tcpRoute": {"action": {"weightedTargets": weighted(&[("tcp-echo", 1)])}}}),
    )
    .await;

    let ip = w.client("front", &["greeter.local", "echo.local"]).await;
    let envoy = w.envoy("front", XdsFlavor::Delta).await;
    let via = addr(ip, grpc_port);
    let authority = format!("greeter.local:{grpc_port}");

    for (path, backend) in [
        ("/demo.Greeter/Hello", "hello-backend"),
        ("/demo.Greeter/Bye", "greeter-backend"),
        ("/demo.Echo/Echo", "echo-backend"),
    ] {
        let pong = match grpc::call(via, &authority, path, "hi").await {
            Ok(p) => p,
            Err(e) => panic!("{path}: {e:?}\n{}", envoy.describe().await),
        };
        assert_eq!(
            (
                pong.backend.as_str(),
                pong.method.as_str(),
                pong.text.as_str()
            ),
            (backend, path, "hi"),
            "{path} went to the wrong backend"
        );
    }
    // No route for another service: the call fails (Envoy's 404 → UNIMPLEMENTED).
    let err = grpc::call(via, &authority, "/demo.Other/Hello", "hi")
        .await
        .expect_err("an unrouted gRPC service must fail");
    assert_eq!(err.code(), tonic::Code::Unimplemented, "{err:?}");

    // TCP: the echo comes back through the egress listener on the TCP router's port.
    for i in 0..3 {
        let payload = format!("ping {i} through envoy");
        let got = match echo_once(addr(ip, tcp_port), payload.as_bytes()).await {
            Ok(g) => g,
            Err(e) => panic!("tcp echo: {e}\n{}", envoy.describe().await),
        };
        assert_eq!(String::from_utf8_lossy(&got), payload);
    }
    assert_eq!(tcp.connections(), 3);
    assert_eq!(envoy.stat("tcp.egress.downstream_cx_total").await, 3);
}
