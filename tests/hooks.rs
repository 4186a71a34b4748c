//! Script routes over real HTTP on 127.0.0.1, with a fake dispatcher in
//! place of the script engine: auth, public routes, table replacement,
//! deadlines, malformed requests.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use moonwire::api::hooks::Hooks;
use moonwire::api::{self, ApiState};
use moonwire::automation::crypto;
use moonwire::automation::routes::{
    BoxFuture, HookRequest, HookResponse, RouteDispatch, RouteError, RouteId, RouteTable, Routes,
};
use moonwire::channel::console::ConsoleOut;
use moonwire::host::app::App;
use moonwire::host::{EventBus, HostSettings};
use moonwire::script::EngineConfig;
use moonwire::store::Store;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::watch;

const ADMIN: &str = "test-admin-key";
const SECRET: &[u8] = b"ci-secret";

/// Answers by the route's path, the way a script would; remembers what
/// it was handed.
#[derive(Default)]
struct Fake {
    table: Mutex<Vec<(RouteId, String)>>,
    calls: AtomicUsize,
    last: Mutex<Option<HookRequest>>,
}

impl Fake {
    fn path_of(&self, id: RouteId) -> String {
        let t = self.table.lock().unwrap();
        t.iter().find(|(i, _)| *i == id).unwrap().1.clone()
    }
}

impl RouteDispatch for Fake {
    fn dispatch(
        &self,
        instance: &str,
        route: RouteId,
        req: HookRequest,
    ) -> BoxFuture<Result<HookResponse, RouteError>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        *self.last.lock().unwrap() = Some(req.clone());
        let path = self.path_of(route);
        let instance = instance.to_string();
        Box::pin(async move {
            match path.as_str() {
                "/echo" | "/public" => {
                    let body = json!({
                        "instance": instance,
                        "generation": route.generation,
                        "method": req.method,
                        "path": req.path,
                        "query": req.query,
                        "headers": req.headers,
                        "body": String::from_utf8_lossy(&req.body),
                    });
                    Ok(HookResponse {
                        status: 201,
                        headers: vec![("content-type".into(), "application/json".into())],
                        body: body.to_string().into_bytes(),
                    })
                }
                "/text" => Ok(HookResponse::text("plain answer")),
                "/signed" => {
                    let want = format!("sha256={}", crypto::hmac_sha256_hex(SECRET, &req.body));
                    let got = req.header("x-hub-signature-256").unwrap_or("");
                    if crypto::equal(want.as_bytes(), got.as_bytes()) {
                        Ok(HookResponse::text("posted to the group"))
                    } else {
                        Ok(HookResponse {
                            status: 401,
                            headers: vec![],
                            body: b"bad signature".to_vec(),
                        })
                    }
                }
                "/fail" => Err(RouteError::Failed),
                "/late" => Err(RouteError::Deadline),
                "/gone" => Err(RouteError::Gone),
                "/busy" => Err(RouteError::Busy),
                "/bad-answer" => Ok(HookResponse {
                    status: 1000,
                    headers: vec![],
                    body: b"secret detail".to_vec(),
                }),
                "/hang" => std::future::pending().await,
                other => panic!("no fake for {other}"),
            }
        })
    }
}

struct Server {
    base: String,
    http: reqwest::Client,
    routes: Arc<Routes>,
    fake: Arc<Fake>,
    stop: watch::Sender<bool>,
    _app: Arc<App>,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start(deadline: Duration) -> Server {
        Server::start_with(Some(deadline)).await
    }

    async fn start_with(deadline: Option<Duration>) -> Server {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("scripts")).unwrap();
        let store = Arc::new(Store::open(&dir.path().join("moonwire.db")).unwrap());
        let engine = EngineConfig {
            dir: dir.path().join("scripts"),
            ..EngineConfig::default()
        };
        let app = Arc::new(
            App::new(
                store,
                EventBus::default(),
                HostSettings::default(),
                engine,
                Arc::new(ConsoleOut::logging()),
            )
            .unwrap(),
        );
        let (stop, stop_rx) = watch::channel(false);
        let routes = Arc::new(Routes::new());
        let fake = Arc::new(Fake::default());
        let mut state = ApiState::new(app.clone(), ADMIN, false, None, stop_rx);
        if let Some(d) = deadline {
            state = state.with_hooks(Hooks::new(routes.clone(), fake.clone(), d));
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(api::serve(listener, state));
        Server {
            base,
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
            routes,
            fake,
            stop,
            _app: app,
            _dir: dir,
        }
    }

    /// Installs a generation's routes for `instance`: (method, path, public).
    fn load(&self, instance: &str, generation: u64, routes: &[(&str, &str, bool)]) {
        let mut t = RouteTable::new(generation);
        let mut known = self.fake.table.lock().unwrap();
        for (i, (m, p, public)) in routes.iter().enumerate() {
            let id = t.add(m, p, *public, &format!("test.lua:{i}")).unwrap();
            known.push((id, p.to_string()));
        }
        assert!(self.routes.replace(instance, t));
    }

    /// Creates a console instance through the API; returns its token.
    async fn create(&self, name: &str) -> String {
        let (s, v) = self
            .send(
                self.http
                    .post(format!("{}/v1/instances", self.base))
                    .bearer_auth(ADMIN)
                    .json(&json!({"name": name, "channel": "console"})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v["token"].as_str().unwrap().to_string()
    }

    fn hook(&self, method: &str, instance: &str, path: &str) -> reqwest::RequestBuilder {
        self.http.request(
            method.parse().unwrap(),
            format!("{}/v1/instances/{instance}/hooks{path}", self.base),
        )
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, v)
    }

    fn calls(&self) -> usize {
        self.fake.calls.load(Ordering::SeqCst)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

#[tokio::test]
async fn a_route_needs_the_admin_key_or_its_instances_token() {
    let s = Server::start(Duration::from_secs(10)).await;
    let token_a = s.create("a").await;
    let token_b = s.create("b").await;
    s.load("a", 1, &[("POST", "/echo", false)]);

    let (st, v) = s.send(s.hook("POST", "a", "/echo")).await;
    assert_eq!((st, code(&v)), (StatusCode::UNAUTHORIZED, "unauthorized"));
    let (st, _) = s
        .send(s.hook("POST", "a", "/echo").bearer_auth("wrong"))
        .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (st, v) = s
        .send(s.hook("POST", "a", "/echo").bearer_auth(&token_b))
        .await;
    assert_eq!((st, code(&v)), (StatusCode::FORBIDDEN, "forbidden"));
    assert_eq!(s.calls(), 0, "no refused request reached the handler");

    for key in [ADMIN, token_a.as_str()] {
        let (st, v) = s
            .send(
                s.hook("POST", "a", "/echo?x=1&x=2&msg=hi%20there")
                    .bearer_auth(key)
                    .header("X-Event", "push")
                    .body("payload"),
            )
            .await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
        assert_eq!(v["instance"], "a");
        assert_eq!(v["method"], "POST");
        assert_eq!(v["path"], "/echo");
        assert_eq!(
            v["query"],
            json!([["x", "1"], ["x", "2"], ["msg", "hi there"]])
        );
        assert_eq!(v["body"], "payload");
        let headers = v["headers"].as_array().unwrap();
        assert!(headers.contains(&json!(["x-event", "push"])), "{headers:?}");
        // The key that let the request in is not handed to the script.
        assert!(
            !headers.iter().any(|h| h[0] == "authorization"),
            "{headers:?}"
        );
    }
    assert_eq!(s.calls(), 2);
}

#[tokio::test]
async fn a_public_route_is_served_without_auth_and_can_check_a_signature() {
    let s = Server::start(Duration::from_secs(10)).await;
    s.create("a").await;
    s.load(
        "a",
        1,
        &[
            ("GET", "/public", true),
            ("POST", "/signed", true),
            ("POST", "/echo", false),
        ],
    );
    let (st, v) = s
        .send(
            s.hook("GET", "a", "/public")
                .bearer_auth("the-service's-own"),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    // A public route's Authorization is the caller's, passed on.
    assert!(
        v["headers"]
            .as_array()
            .unwrap()
            .contains(&json!(["authorization", "Bearer the-service's-own"]))
    );

    let body = r#"{"build":"failed"}"#;
    let good = format!(
        "sha256={}",
        crypto::hmac_sha256_hex(SECRET, body.as_bytes())
    );
    let (st, v) = s
        .send(
            s.hook("POST", "a", "/signed")
                .header("X-Hub-Signature-256", &good)
                .body(body),
        )
        .await;
    assert_eq!((st, v), (StatusCode::OK, json!("posted to the group")));
    let bad = format!(
        "sha256={}",
        crypto::hmac_sha256_hex(b"guess", body.as_bytes())
    );
    let (st, v) = s
        .send(
            s.hook("POST", "a", "/signed")
                .header("X-Hub-Signature-256", &bad)
                .body(body),
        )
        .await;
    assert_eq!((st, v), (StatusCode::UNAUTHORIZED, json!("bad signature")));

    // Public is per route: the other one still needs a key.
    let (st, _) = s.send(s.hook("POST", "a", "/echo")).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_route_dropped_by_a_reload_is_404() {
    let s = Server::start(Duration::from_secs(10)).await;
    s.create("a").await;
    s.load(
        "a",
        1,
        &[("POST", "/echo", false), ("GET", "/public", true)],
    );
    let (st, v) = s
        .send(s.hook("POST", "a", "/echo").bearer_auth(ADMIN))
        .await;
    assert_eq!(
        (st, v["generation"].as_u64()),
        (StatusCode::CREATED, Some(1))
    );
    let (st, _) = s.send(s.hook("GET", "a", "/public")).await;
    assert_eq!(st, StatusCode::CREATED);

    s.load("a", 2, &[("GET", "/text", false)]);
    let (st, v) = s
        .send(s.hook("POST", "a", "/echo").bearer_auth(ADMIN))
        .await;
    assert_eq!((st, code(&v)), (StatusCode::NOT_FOUND, "no_route"), "{v}");
    // The public route went too: without it, a stranger learns nothing.
    let (st, _) = s.send(s.hook("GET", "a", "/public")).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (st, _) = s
        .send(s.hook("GET", "a", "/public").bearer_auth(ADMIN))
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, v) = s.send(s.hook("GET", "a", "/text").bearer_auth(ADMIN)).await;
    assert_eq!((st, v), (StatusCode::OK, json!("plain answer")));

    // Scripts gone altogether.
    s.routes.remove("a");
    let (st, _) = s.send(s.hook("GET", "a", "/text").bearer_auth(ADMIN)).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    // And a route whose generation the engine already disposed.
    s.load("a", 3, &[("GET", "/gone", false)]);
    let (st, v) = s.send(s.hook("GET", "a", "/gone").bearer_auth(ADMIN)).await;
    assert_eq!((st, code(&v)), (StatusCode::NOT_FOUND, "no_route"));
}

#[tokio::test]
async fn a_handler_past_its_deadline_is_504() {
    let s = Server::start(Duration::from_millis(300)).await;
    s.create("a").await;
    s.load("a", 1, &[("GET", "/hang", false), ("GET", "/late", false)]);
    let (st, v) = s.send(s.hook("GET", "a", "/hang").bearer_auth(ADMIN)).await;
    assert_eq!(
        (st, code(&v)),
        (StatusCode::GATEWAY_TIMEOUT, "timeout"),
        "{v}"
    );
    assert!(v["error"]["message"].as_str().unwrap().contains("300 ms"));
    // The engine's own deadline says the same.
    let (st, v) = s.send(s.hook("GET", "a", "/late").bearer_auth(ADMIN)).await;
    assert_eq!((st, code(&v)), (StatusCode::GATEWAY_TIMEOUT, "timeout"));
}

#[tokio::test]
async fn a_failing_handler_is_500_with_nothing_of_the_script_in_it() {
    let s = Server::start(Duration::from_secs(10)).await;
    s.create("a").await;
    s.load(
        "a",
        1,
        &[
            ("GET", "/fail", false),
            ("GET", "/bad-answer", false),
            ("GET", "/busy", false),
        ],
    );
    for path in ["/fail", "/bad-answer"] {
        let (st, v) = s.send(s.hook("GET", "a", path).bearer_auth(ADMIN)).await;
        assert_eq!(st, StatusCode::INTERNAL_SERVER_ERROR, "{path}");
        assert_eq!(code(&v), "script_error");
        assert!(!v.to_string().contains("secret detail"), "{v}");
        assert!(!v.to_string().contains("test.lua"), "{v}");
    }
    let (st, v) = s.send(s.hook("GET", "a", "/busy").bearer_auth(ADMIN)).await;
    assert_eq!((st, code(&v)), (StatusCode::SERVICE_UNAVAILABLE, "busy"));
}

#[tokio::test]
async fn malformed_and_unknown_requests_are_4xx() {
    let s = Server::start(Duration::from_secs(10)).await;
    s.create("a").await;
    s.load("a", 1, &[("POST", "/echo", false), ("PUT", "/echo", false)]);

    // Too big a body.
    let (st, v) = s
        .send(
            s.hook("POST", "a", "/echo")
                .bearer_auth(ADMIN)
                .body(vec![b'x'; 64 * 1024 + 1]),
        )
        .await;
    assert_eq!(
        (st, code(&v)),
        (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
        "{v}"
    );
    // A header that is not text.
    let raw = reqwest::header::HeaderValue::from_bytes(b"caf\xe9").unwrap();
    let (st, v) = s
        .send(
            s.hook("POST", "a", "/echo")
                .bearer_auth(ADMIN)
                .header("x-name", raw),
        )
        .await;
    assert_eq!(
        (st, code(&v)),
        (StatusCode::BAD_REQUEST, "bad_request"),
        "{v}"
    );
    // Wrong method: 405 naming the right ones.
    let resp = s
        .hook("GET", "a", "/echo")
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(resp.headers()["allow"], "POST, PUT");
    // Unknown path, instance, bad instance name, encoded path, empty path.
    for (instance, path) in [
        ("a", "/nope"),
        ("ghost", "/echo"),
        ("Bad%20Name", "/echo"),
        ("a", "/ech%6F"),
        ("a", "/echo/"),
        ("a", "/"),
        ("a", ""),
    ] {
        let (st, _) = s
            .send(s.hook("POST", instance, path).bearer_auth(ADMIN))
            .await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{instance} {path}");
    }
    assert_eq!(s.calls(), 0);
}

#[tokio::test]
async fn without_hooks_every_hook_path_is_404_after_auth() {
    let s = Server::start_with(None).await;
    s.create("a").await;
    let (st, _) = s.send(s.hook("POST", "a", "/echo")).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (st, v) = s
        .send(s.hook("POST", "a", "/echo").bearer_auth(ADMIN))
        .await;
    assert_eq!((st, code(&v)), (StatusCode::NOT_FOUND, "no_route"));
}

#[tokio::test]
async fn the_route_is_in_the_openapi_document() {
    let s = Server::start(Duration::from_secs(10)).await;
    let (st, v) = s
        .send(
            s.http
                .get(format!("{}/v1/openapi.json", s.base))
                .bearer_auth(ADMIN),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let op = &v["paths"]["/v1/instances/{name}/hooks/{path}"];
    for m in ["get", "post", "put", "patch", "delete"] {
        assert!(op[m].is_object(), "{m} missing: {op}");
    }
    assert!(op["post"]["responses"]["504"].is_object());
    assert_eq!(op["get"]["operationId"], "hook_get");
    assert_eq!(op["post"]["operationId"], "hook_post");
    assert_eq!(
        op["post"]["requestBody"]["content"]["application/octet-stream"]["schema"]["format"],
        "binary"
    );
    assert!(op["get"]["requestBody"].is_null());
}
