//! Client tests against a scripted in-process HTTP server on `127.0.0.1:0`: what goes on
//! the wire (method, raw path and query, body) and how answers and errors are decoded.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method as AxMethod, Uri};
use axum::response::{IntoResponse, Response};
use meshplane_api::ErrorCode;
use meshplane_model::{ResourceId, ResourceKind, Tag};
use serde_json::{Value, json};

use super::*;

/// One request as the server saw it.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    /// Path and query exactly as sent (still percent-encoded).
    uri: String,
    content_type: Option<String>,
    body: String,
}

/// A canned answer: status, optional `x-amzn-ErrorType`, body.
type Answer = (u16, Option<&'static str>, String);

#[derive(Clone, Default)]
struct Script {
    seen: Arc<Mutex<Vec<Seen>>>,
    answers: Arc<Mutex<VecDeque<Answer>>>,
}

impl Script {
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn serve(answers: Vec<Answer>) -> (Client, Script) {
    let script = Script {
        answers: Arc::new(Mutex::new(answers.into())),
        ..Default::default()
    };
    let s = script.clone();
    let app = axum::Router::new().fallback(
        move |method: AxMethod, uri: Uri, headers: HeaderMap, body: Bytes| {
            let s = s.clone();
            async move {
                s.seen.lock().unwrap().push(Seen {
                    method: method.to_string(),
                    uri: uri.to_string(),
                    content_type: headers
                        .get("content-type")
                        .map(|v| v.to_str().unwrap().to_owned()),
                    body: String::from_utf8(body.to_vec()).unwrap(),
                });
                let (status, etype, body) = s
                    .answers
                    .lock()
                    .unwrap()
                    .pop_front()
                    .expect("unexpected extra request");
                let mut resp: Response = body.into_response();
                *resp.status_mut() = axum::http::StatusCode::from_u16(status).unwrap();
                if let Some(t) = etype {
                    resp.headers_mut()
                        .insert("x-amzn-ErrorType", t.parse().unwrap());
                }
                resp
            }
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (Client::new(&format!("http://{addr}/")).unwrap(), script)
}

fn metadata(path: &str, version: i64) -> Value {
    json!({
        "arn": format!("arn:aws:appmesh:us-east-1:111122223333:{path}"),
        "version": version, "uid": "u-1",
        "createdAt": 1700000000.123, "lastUpdatedAt": 1700000001.0,
        "meshOwner": "111122223333", "resourceOwner": "111122223333",
    })
}

fn node_data(mesh: &str, name: &str, version: i64) -> String {
    json!({
        "meshName": mesh, "virtualNodeName": name,
        "spec": {"listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}]},
        "metadata": metadata(&format!("mesh/{mesh}/virtualNode/{name}"), version),
        "status": {"status": "ACTIVE"},
    })
    .to_string()
}

fn node_spec() -> Spec {
    meshplane_api::parse_spec(
        ResourceKind::VirtualNode,
        json!({"listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}]}),
    )
    .unwrap()
}

fn route_ref(router: &str, name: &str) -> Value {
    let mut m = metadata(&format!("mesh/m/virtualRouter/{router}/route/{name}"), 1);
    let o = m.as_object_mut().unwrap();
    o.remove("uid");
    o.insert("meshName".into(), json!("m"));
    o.insert("virtualRouterName".into(), json!(router));
    o.insert("routeName".into(), json!(name));
    m
}

#[tokio::test]
async fn create_puts_to_the_collection_with_name_spec_and_tags() {
    let (client, script) = serve(vec![(200, None, node_data("my mesh", "a/b", 1))]).await;
    let id = ResourceId::child(ResourceKind::VirtualNode, "my mesh", "a/b");
    let tags = [Tag {
        key: "team".into(),
        value: "".into(),
    }];
    let d = client.create(&id, &node_spec(), &tags).await.unwrap();
    assert_eq!(d.id, id);
    assert_eq!(d.metadata.version, 1);

    let seen = script.seen();
    assert_eq!(seen[0].method, "PUT");
    assert_eq!(seen[0].uri, "/v20190125/meshes/my%20mesh/virtualNodes");
    assert_eq!(seen[0].content_type.as_deref(), Some("application/json"));
    let body: Value = serde_json::from_str(&seen[0].body).unwrap();
    assert_eq!(
        body,
        json!({
            "virtualNodeName": "a/b",
            "spec": {"listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}]},
            "tags": [{"key": "team", "value": ""}],
        })
    );
}

#[tokio::test]
async fn describe_update_delete_address_the_item_and_get_maps_not_found_to_none() {
    let (client, script) = serve(vec![
        (200, None, node_data("m", "n:1", 1)),
        (200, None, node_data("m", "n:1", 2)),
        (200, None, node_data("m", "n:1", 2)),
        (
            404,
            Some("NotFoundException"),
            json!({"message": "gone"}).to_string(),
        ),
    ])
    .await;
    let id = ResourceId::child(ResourceKind::VirtualNode, "m", "n:1");
    assert_eq!(client.describe(&id).await.unwrap().metadata.version, 1);
    assert_eq!(
        client
            .update(&id, &node_spec())
            .await
            .unwrap()
            .metadata
            .version,
        2
    );
    client.delete(&id).await.unwrap();
    assert_eq!(client.get(&id).await.unwrap(), None);

    let seen = script.seen();
    let calls: Vec<(&str, &str)> = seen
        .iter()
        .map(|s| (s.method.as_str(), s.uri.as_str()))
        .collect();
    let item = "/v20190125/meshes/m/virtualNodes/n%3A1";
    assert_eq!(
        calls,
        [
            ("GET", item),
            ("PUT", item),
            ("DELETE", item),
            ("GET", item)
        ]
    );
    assert_eq!(seen[0].content_type, None, "GET carries no body");
    assert_eq!(seen[2].body, "", "DELETE carries no body");
    let update: Value = serde_json::from_str(&seen[1].body).unwrap();
    assert_eq!(
        update.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["spec"]
    );
}

#[tokio::test]
async fn list_all_follows_next_token_with_encoded_query_values() {
    let (client, script) = serve(vec![
        (
            200,
            None,
            json!({"routes": [route_ref("r 1", "a")], "nextToken": "tok/+= 2"}).to_string(),
        ),
        (
            200,
            None,
            json!({"routes": [route_ref("r 1", "b")]}).to_string(),
        ),
    ])
    .await;
    let items = client
        .list_all(&Collection::under(ResourceKind::Route, "m", "r 1"))
        .await
        .unwrap();
    let names: Vec<&str> = items.iter().map(|r| r.id.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(
        items[0].id,
        ResourceId::grandchild(ResourceKind::Route, "m", "r 1", "a")
    );
    let uris: Vec<String> = script.seen().into_iter().map(|s| s.uri).collect();
    assert_eq!(
        uris,
        [
            "/v20190125/meshes/m/virtualRouter/r%201/routes?limit=100",
            "/v20190125/meshes/m/virtualRouter/r%201/routes?limit=100&nextToken=tok%2F%2B%3D%202",
        ]
    );
}

#[tokio::test]
async fn list_all_refuses_a_repeated_token() {
    let page = json!({"meshes": [], "nextToken": "same"}).to_string();
    let (client, _) = serve(vec![(200, None, page.clone()), (200, None, page)]).await;
    let err = client.list_all(&Collection::meshes()).await.unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Decode {
                what: "nextToken",
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn tag_operations_use_the_arn_query_and_follow_pages() {
    let arn = "arn:aws:appmesh:us-east-1:111122223333:mesh/m";
    let (client, script) = serve(vec![
        (
            200,
            None,
            json!({"tags": [{"key": "a", "value": "1"}], "nextToken": "t2"}).to_string(),
        ),
        (
            200,
            None,
            json!({"tags": [{"key": "b", "value": "2"}]}).to_string(),
        ),
        (200, None, "{}".to_owned()),
        (200, None, String::new()),
    ])
    .await;
    let tags = client.list_tags(arn).await.unwrap();
    assert_eq!(
        tags.iter().map(|t| t.key.as_str()).collect::<Vec<_>>(),
        ["a", "b"]
    );
    client
        .tag_resource(
            arn,
            &[Tag {
                key: "c".into(),
                value: "3".into(),
            }],
        )
        .await
        .unwrap();
    client.untag_resource(arn, &["a".to_owned()]).await.unwrap();

    let seen = script.seen();
    let enc = "arn%3Aaws%3Aappmesh%3Aus-east-1%3A111122223333%3Amesh%2Fm";
    assert_eq!(
        seen[0].uri,
        format!("/v20190125/tags?resourceArn={enc}&limit=50")
    );
    assert_eq!(
        seen[1].uri,
        format!("/v20190125/tags?resourceArn={enc}&limit=50&nextToken=t2")
    );
    assert_eq!(
        (seen[2].method.as_str(), seen[2].uri.clone()),
        ("PUT", format!("/v20190125/tag?resourceArn={enc}"))
    );
    assert_eq!(
        serde_json::from_str::<Value>(&seen[2].body).unwrap(),
        json!({"tags": [{"key": "c", "value": "3"}]})
    );
    assert_eq!(seen[3].uri, format!("/v20190125/untag?resourceArn={enc}"));
    assert_eq!(
        serde_json::from_str::<Value>(&seen[3].body).unwrap(),
        json!({"tagKeys": ["a"]})
    );
}

#[tokio::test]
async fn errors_carry_code_from_header_body_or_status_and_the_message() {
    let (client, _) = serve(vec![
        (
            400,
            Some("BadRequestException"),
            json!({"message": "spec.a: bad; spec.b: worse"}).to_string(),
        ),
        (
            409,
            None,
            json!({"__type": "com.amazonaws.appmesh#ResourceInUseException", "Message": "in use"})
                .to_string(),
        ),
        (503, None, "upstream down".to_owned()),
        (418, Some("SomethingNew"), String::new()),
        (
            403,
            Some("AccessDeniedException"),
            json!({"message": "User: dev is not authorized to perform: appmesh:ListMeshes on resource: *"})
                .to_string(),
        ),
        (403, Some("UnrecognizedClientException"), json!({"message": "x"}).to_string()),
    ])
    .await;
    let id = ResourceId::mesh("m");
    let e = client.describe(&id).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::BadRequest));
    assert_eq!(
        e.to_string(),
        "BadRequestException: spec.a: bad; spec.b: worse"
    );
    let e = client.describe(&id).await.unwrap_err();
    assert_eq!(
        (e.code(), e.api().unwrap().message.as_str()),
        (Some(ErrorCode::ResourceInUse), "in use")
    );
    let e = client.describe(&id).await.unwrap_err();
    assert_eq!(
        (e.code(), e.api().unwrap().message.as_str()),
        (Some(ErrorCode::ServiceUnavailable), "upstream down")
    );
    let e = client.describe(&id).await.unwrap_err();
    assert!(matches!(e, ClientError::Api { status: 418, .. }), "{e:?}");
    // The SigV4 layer's refusals keep their AWS names (not a generic ForbiddenException).
    let e = client.describe(&id).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "AccessDeniedException: User: dev is not authorized to perform: appmesh:ListMeshes on resource: *"
    );
    let e = client.describe(&id).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::UnrecognizedClient));
}

#[tokio::test]
async fn transport_and_decode_failures_are_distinct() {
    // Bind and drop to get a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = Client::new(&format!("http://127.0.0.1:{port}")).unwrap();
    let e = client.describe(&ResourceId::mesh("m")).await.unwrap_err();
    assert!(matches!(e, ClientError::Transport(_)), "{e:?}");

    let (client, _) = serve(vec![(200, None, "{\"meshName\": \"m\"}".to_owned())]).await;
    let e = client.describe(&ResourceId::mesh("m")).await.unwrap_err();
    assert!(matches!(e, ClientError::Decode { .. }), "{e:?}");
}

#[tokio::test]
async fn spec_of_the_wrong_kind_is_refused_before_sending() {
    let (client, script) = serve(vec![]).await;
    let id = ResourceId::child(ResourceKind::VirtualRouter, "m", "r");
    let e = client.create(&id, &node_spec(), &[]).await.unwrap_err();
    assert!(matches!(e, ClientError::KindMismatch { .. }), "{e:?}");
    assert!(script.seen().is_empty());
}

#[test]
fn endpoints_must_be_http_urls_with_a_host() {
    assert!(Client::new("http://127.0.0.1:7080").is_ok());
    assert_eq!(Client::new("http://h:1/").unwrap().endpoint(), "http://h:1");
    for bad in ["127.0.0.1:7080", "ftp://h", "http://", "http:///x"] {
        assert!(
            matches!(Client::new(bad), Err(ClientError::InvalidEndpoint { .. })),
            "{bad}"
        );
    }
}

#[tokio::test]
async fn mesh_owner_is_sent_only_where_the_operation_takes_it() {
    let mesh_data = json!({
        "meshName": "m", "spec": {}, "metadata": metadata("mesh/m", 1), "status": {"status": "ACTIVE"},
    })
    .to_string();
    let (client, script) = serve(vec![
        (200, None, mesh_data.clone()),
        (200, None, mesh_data.clone()),
        (200, None, json!({"meshes": []}).to_string()),
        (200, None, node_data("m", "n", 1)),
        (200, None, json!({"virtualNodes": []}).to_string()),
    ])
    .await;
    let client = client.with_mesh_owner("111122223333");
    let mesh_spec = meshplane_api::parse_spec(ResourceKind::Mesh, json!({})).unwrap();
    client
        .create(&ResourceId::mesh("m"), &mesh_spec, &[])
        .await
        .unwrap();
    client.describe(&ResourceId::mesh("m")).await.unwrap();
    client
        .list_page(&Collection::meshes(), None, None)
        .await
        .unwrap();
    client
        .describe(&ResourceId::child(ResourceKind::VirtualNode, "m", "n"))
        .await
        .unwrap();
    client
        .list_page(
            &Collection::in_mesh(ResourceKind::VirtualNode, "m"),
            Some(5),
            None,
        )
        .await
        .unwrap();
    let uris: Vec<String> = script.seen().into_iter().map(|s| s.uri).collect();
    assert_eq!(
        uris,
        [
            "/v20190125/meshes",
            "/v20190125/meshes/m?meshOwner=111122223333",
            "/v20190125/meshes",
            "/v20190125/meshes/m/virtualNodes/n?meshOwner=111122223333",
            "/v20190125/meshes/m/virtualNodes?meshOwner=111122223333&limit=5",
        ]
    );
    let create: Value = serde_json::from_str(&script.seen()[0].body).unwrap();
    assert_eq!(create, json!({"meshName": "m", "spec": {}}));
}
