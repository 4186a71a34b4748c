//! `HttpClient` against a local axum server. Only loopback addresses are
//! ever connected to: every refusal test refuses before connecting, and
//! the few non-loopback addresses used go only to the resolver and the
//! classifier, never to a socket.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap as AxHeaders, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use tokio::sync::Semaphore;

use super::*;

#[derive(Clone)]
struct Server {
    hits: Arc<AtomicUsize>,
    in_flight: Arc<AtomicUsize>,
    max_seen: Arc<AtomicUsize>,
    gate: Arc<Semaphore>,
}

async fn ok(State(s): State<Server>) -> impl IntoResponse {
    s.hits.fetch_add(1, Ordering::SeqCst);
    ([("x-test", "yes")], "hello")
}

async fn echo(
    State(s): State<Server>,
    method: axum::http::Method,
    headers: AxHeaders,
    body: axum::body::Bytes,
) -> String {
    s.hits.fetch_add(1, Ordering::SeqCst);
    let h = headers
        .get("x-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    format!("{method} {h} {}", String::from_utf8_lossy(&body))
}

async fn redirect(Query(q): Query<HashMap<String, String>>) -> Response {
    (StatusCode::FOUND, [(header::LOCATION, q["to"].clone())]).into_response()
}

async fn endless_loop() -> Response {
    (StatusCode::FOUND, [(header::LOCATION, "/loop")]).into_response()
}

async fn slow() -> &'static str {
    tokio::time::sleep(Duration::from_secs(3600)).await;
    "late"
}

/// A body that never ends, without a Content-Length.
async fn endless() -> Body {
    let chunk = bytes::Bytes::from(vec![b'x'; 16 * 1024]);
    let stream = futures_util::stream::repeat_with(move || Ok::<_, std::io::Error>(chunk.clone()));
    Body::from_stream(stream)
}

async fn declared_big() -> Response {
    let body = vec![b'y'; 4096];
    ([(header::CONTENT_LENGTH, "4096")], body).into_response()
}

/// Holds the request until the test adds a permit to the gate.
async fn gate(State(s): State<Server>) -> &'static str {
    let now = s.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    s.max_seen.fetch_max(now, Ordering::SeqCst);
    if let Ok(p) = s.gate.acquire().await {
        p.forget();
    }
    s.in_flight.fetch_sub(1, Ordering::SeqCst);
    "through"
}

/// Serves on 127.0.0.1; returns the state and the port.
async fn serve() -> (Server, u16) {
    let s = Server {
        hits: Arc::default(),
        in_flight: Arc::default(),
        max_seen: Arc::default(),
        gate: Arc::new(Semaphore::new(0)),
    };
    let app = Router::new()
        .route("/ok", get(ok))
        .route("/echo", any(echo))
        .route("/redirect", get(redirect))
        .route("/loop", get(endless_loop))
        .route("/slow", get(slow))
        .route("/endless", get(endless))
        .route("/declared-big", get(declared_big))
        .route("/gate", get(gate))
        .with_state(s.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (s, port)
}

/// Names the tests make up, all resolving to loopback (plus, for the
/// resolver-only test, a public address that is never connected to).
struct FakeLookup(HashMap<&'static str, Vec<IpAddr>>);

impl Lookup for FakeLookup {
    fn lookup(&self, host: &str) -> BoxFuture<io::Result<Vec<IpAddr>>> {
        let r = self
            .0
            .get(host)
            .cloned()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "unknown test host"));
        Box::pin(async move { r })
    }
}

fn fake_lookup() -> Arc<dyn Lookup> {
    let loopback: IpAddr = "127.0.0.1".parse().unwrap();
    Arc::new(FakeLookup(HashMap::from([
        ("a.test", vec![loopback]),
        ("b.test", vec![loopback]),
        (
            "mixed.test",
            vec!["93.184.216.34".parse().unwrap(), loopback],
        ),
    ])))
}

#[derive(Default)]
struct Recorder(Mutex<Vec<&'static str>>);

impl HttpObserver for Recorder {
    fn request_done(&self, class: &'static str, _: Duration) {
        self.0.lock().unwrap().push(class);
    }
}

fn policy(allow: &[&str]) -> HttpPolicy {
    HttpPolicy {
        timeout: Duration::from_secs(20),
        max_body: 1024,
        max_in_flight: 4,
        allow: AllowList::parse(allow).unwrap(),
    }
}

fn client(allow: &[&str]) -> HttpClient {
    HttpClient::with_lookup(policy(allow), None, fake_lookup()).unwrap()
}

fn refused_host(r: Result<HttpResponse, HttpError>) -> String {
    match r {
        Err(HttpError::Refused { host, .. }) => host,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Polls `f` until it holds, for at most 20 s.
async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_listed_host_is_fetched_with_status_headers_and_body() {
    let (srv, port) = serve().await;
    let c = client(&["127.0.0.1"]);
    let r = c
        .request("i", HttpRequest::get(format!("http://127.0.0.1:{port}/ok")))
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"hello");
    assert_eq!(r.header("X-Test"), Some("yes"));
    assert_eq!(srv.hits.load(Ordering::SeqCst), 1);

    let mut req = HttpRequest::post(format!("http://a.test:{port}/echo"), "payload");
    req.method = "put".into();
    req.headers.push(("X-Token".into(), "t1".into()));
    let r = client(&["a.test"]).request("i", req).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&r.body), "PUT t1 payload");
}

#[tokio::test]
async fn non_public_addresses_are_refused_before_connecting() {
    let (srv, port) = serve().await;
    let c = client(&[]);
    for url in [
        format!("http://127.0.0.1:{port}/ok"),
        format!("http://[::ffff:127.0.0.1]:{port}/ok"),
        format!("http://[::1]:{port}/ok"),
        // The URL parser turns these into 127.0.0.1 too.
        format!("http://2130706433:{port}/ok"),
        format!("http://0x7f.1:{port}/ok"),
        // A name resolving to loopback.
        format!("http://a.test:{port}/ok"),
    ] {
        let e = c.request("i", HttpRequest::get(&url)).await.unwrap_err();
        assert!(matches!(e, HttpError::Refused { .. }), "{url}: {e:?}");
        assert!(e.to_string().contains("[script.http] allow"), "{e}");
        assert!(e.to_string().contains("loopback"), "{e}");
    }
    // The same through the system resolver (`localhost` is in /etc/hosts).
    let system = HttpClient::new(policy(&[]), None).unwrap();
    let e = system
        .request("i", HttpRequest::get(format!("http://localhost:{port}/ok")))
        .await;
    assert_eq!(refused_host(e), "localhost");
    assert_eq!(srv.hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_host_in_allow_reaches_its_private_address() {
    let (_, port) = serve().await;
    for allow in [&["a.test"][..], &["*.test"], &["127.0.0.1"]] {
        let r = client(allow)
            .request("i", HttpRequest::get(format!("http://a.test:{port}/ok")))
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{allow:?}");
    }
    // Listing one name does not open another on the same address.
    let e = client(&["a.test"])
        .request("i", HttpRequest::get(format!("http://b.test:{port}/ok")))
        .await;
    assert_eq!(refused_host(e), "b.test");
    let r = HttpClient::new(policy(&["localhost"]), None)
        .unwrap()
        .request("i", HttpRequest::get(format!("http://localhost:{port}/ok")))
        .await
        .unwrap();
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn redirects_to_private_addresses_are_checked_on_every_hop() {
    let (srv, port) = serve().await;
    let to_ip = format!("http://a.test:{port}/redirect?to=http://127.0.0.1:{port}/ok");
    let to_name = format!("http://a.test:{port}/redirect?to=http://b.test:{port}/ok");
    let to_mapped = format!("http://a.test:{port}/redirect?to=http://[::ffff:7f00:1]:{port}/ok");

    let c = client(&["a.test"]);
    assert_eq!(
        refused_host(c.request("i", HttpRequest::get(&to_ip)).await),
        "127.0.0.1"
    );
    assert_eq!(
        refused_host(c.request("i", HttpRequest::get(&to_name)).await),
        "b.test"
    );
    assert_eq!(
        refused_host(c.request("i", HttpRequest::get(&to_mapped)).await),
        "::ffff:127.0.0.1"
    );
    assert_eq!(srv.hits.load(Ordering::SeqCst), 0, "no hop reached /ok");

    let c = client(&["a.test", "127.0.0.1"]);
    let r = c.request("i", HttpRequest::get(&to_ip)).await.unwrap();
    assert_eq!((r.status, r.body.as_slice()), (200, &b"hello"[..]));
    let c = client(&["*.test"]);
    let r = c.request("i", HttpRequest::get(&to_name)).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(srv.hits.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn redirect_loops_end_in_an_error_and_other_schemes_are_not_followed() {
    let (_, port) = serve().await;
    let c = client(&["127.0.0.1"]);
    let e = c
        .request(
            "i",
            HttpRequest::get(format!("http://127.0.0.1:{port}/loop")),
        )
        .await
        .unwrap_err();
    assert_eq!(e, HttpError::TooManyRedirects(MAX_REDIRECTS));
    // reqwest hands back a redirect to a non-HTTP URL as the answer.
    let r = c
        .request(
            "i",
            HttpRequest::get(format!(
                "http://127.0.0.1:{port}/redirect?to=file:///etc/passwd"
            )),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 302);
    assert!(r.body.is_empty());
}

#[tokio::test]
async fn a_slow_server_times_out() {
    let (_, port) = serve().await;
    let c = client(&["127.0.0.1"]);
    let mut req = HttpRequest::get(format!("http://127.0.0.1:{port}/slow"));
    req.timeout = Some(Duration::from_millis(200));
    let e = c.request("i", req).await.unwrap_err();
    assert_eq!(e, HttpError::Timeout(Duration::from_millis(200)));
    assert!(e.to_string().contains("200 ms"), "{e}");

    // A script cannot ask for more than the policy's timeout.
    let mut p = policy(&["127.0.0.1"]);
    p.timeout = Duration::from_millis(150);
    let c = HttpClient::with_lookup(p, None, fake_lookup()).unwrap();
    let mut req = HttpRequest::get(format!("http://127.0.0.1:{port}/slow"));
    req.timeout = Some(Duration::from_secs(3600));
    let e = c.request("i", req).await.unwrap_err();
    assert_eq!(e, HttpError::Timeout(Duration::from_millis(150)));
}

#[tokio::test]
async fn bodies_over_the_limit_are_cut() {
    let (_, port) = serve().await;
    let c = client(&["127.0.0.1"]);
    // Endless: only stopping at the limit ends this request.
    let e = c
        .request(
            "i",
            HttpRequest::get(format!("http://127.0.0.1:{port}/endless")),
        )
        .await
        .unwrap_err();
    assert_eq!(e, HttpError::BodyTooLarge { limit: 1024 });
    assert!(e.to_string().contains("max_body_mb"), "{e}");
    let e = c
        .request(
            "i",
            HttpRequest::get(format!("http://127.0.0.1:{port}/declared-big")),
        )
        .await
        .unwrap_err();
    assert_eq!(e, HttpError::BodyTooLarge { limit: 1024 });
    let e = c
        .request(
            "i",
            HttpRequest::post(format!("http://127.0.0.1:{port}/echo"), vec![0; 1025]),
        )
        .await
        .unwrap_err();
    assert_eq!(e, HttpError::RequestTooLarge { limit: 1024 });
    // Exactly the limit is fine.
    let r = c
        .request(
            "i",
            HttpRequest::post(format!("http://127.0.0.1:{port}/echo"), vec![b'z'; 1000]),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn at_most_max_in_flight_per_instance_the_rest_queue() {
    let (srv, port) = serve().await;
    let mut p = policy(&["127.0.0.1"]);
    p.max_in_flight = 2;
    let c = HttpClient::with_lookup(p, None, fake_lookup()).unwrap();
    let url = format!("http://127.0.0.1:{port}/gate");
    let tasks: Vec<_> = (0..5)
        .map(|_| {
            let c = c.clone();
            let url = url.clone();
            tokio::spawn(async move { c.request("one", HttpRequest::get(url)).await })
        })
        .collect();
    until("2 on the wire and 3 waiting", || c.load("one") == (2, 3)).await;
    until("the server to hold 2", || {
        srv.in_flight.load(Ordering::SeqCst) == 2
    })
    .await;
    // Another instance has slots of its own.
    let other = c.clone();
    let other_task = tokio::spawn(async move { other.request("two", HttpRequest::get(url)).await });
    until("the other instance's request", || {
        srv.in_flight.load(Ordering::SeqCst) == 3
    })
    .await;
    srv.gate.add_permits(6);
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap().body, b"through");
    }
    other_task.await.unwrap().unwrap();
    assert_eq!(srv.max_seen.load(Ordering::SeqCst), 3);
    assert_eq!(c.load("one"), (0, 0));
}

#[tokio::test]
async fn a_request_that_never_gets_a_slot_times_out_saying_so() {
    let (srv, port) = serve().await;
    let mut p = policy(&["127.0.0.1"]);
    p.max_in_flight = 1;
    let c = HttpClient::with_lookup(p, None, fake_lookup()).unwrap();
    let url = format!("http://127.0.0.1:{port}/gate");
    let first = {
        let c = c.clone();
        let url = url.clone();
        tokio::spawn(async move { c.request("i", HttpRequest::get(url)).await })
    };
    until("the first request at the server", || {
        srv.in_flight.load(Ordering::SeqCst) == 1
    })
    .await;
    let mut req = HttpRequest::get(url);
    req.timeout = Some(Duration::from_millis(100));
    let e = c.request("i", req).await.unwrap_err();
    assert!(
        matches!(e, HttpError::QueueTimeout { in_flight: 1, .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("free request slot"), "{e}");
    assert_eq!(
        c.load("i"),
        (1, 0),
        "the timed-out wait is no longer counted"
    );
    srv.gate.add_permits(1);
    first.await.unwrap().unwrap();
}

#[tokio::test]
async fn bad_requests_fail_without_network() {
    let c = client(&[]);
    let cases = [
        ("GET", "not a url", "invalid URL"),
        ("GET", "ftp://example.org/x", "only http:// and https://"),
        ("GET", "file:///etc/passwd", "only http:// and https://"),
        ("GE T", "http://example.org/", "invalid method"),
        (
            "GET",
            "http://169.254.169.254/latest/meta-data/",
            "link-local",
        ),
        ("GET", "http://[fd00::1]/", "unique local"),
        ("GET", "http://10.1.2.3/", "private"),
        ("GET", "http://0.0.0.0/", "unspecified"),
    ];
    for (method, url, want) in cases {
        let req = HttpRequest {
            method: method.into(),
            url: url.into(),
            ..HttpRequest::default()
        };
        let e = c.request("i", req).await.unwrap_err();
        assert!(e.to_string().contains(want), "{url}: {e}");
    }
    let mut req = HttpRequest::get("http://example.org/");
    req.headers.push(("bad header".into(), "v".into()));
    assert_eq!(
        c.request("i", req).await.unwrap_err(),
        HttpError::Header("bad header".into())
    );
    let mut req = HttpRequest::get("http://example.org/");
    req.headers.push(("x".into(), "line\nbreak".into()));
    assert_eq!(
        c.request("i", req).await.unwrap_err(),
        HttpError::Header("x".into())
    );
}

#[tokio::test]
async fn the_resolver_keeps_only_allowed_addresses() {
    let r = GuardedResolver::new(fake_lookup(), AllowList::default());
    assert_eq!(
        r.resolve_host("mixed.test").await.unwrap(),
        vec!["93.184.216.34".parse::<IpAddr>().unwrap()]
    );
    let e = r.resolve_host("a.test").await.unwrap_err();
    assert_eq!(
        e,
        HttpError::Refused {
            host: "a.test".into(),
            addr: "127.0.0.1".parse().unwrap(),
            why: Restricted::Loopback
        }
    );
    assert!(matches!(
        r.resolve_host("nowhere.test").await,
        Err(HttpError::Dns { .. })
    ));
    let r = GuardedResolver::new(fake_lookup(), AllowList::parse(&["mixed.test"]).unwrap());
    assert_eq!(r.resolve_host("mixed.test").await.unwrap().len(), 2);
}

#[tokio::test]
async fn requests_are_counted_by_status_class() {
    let (_, port) = serve().await;
    let rec = Arc::new(Recorder::default());
    let c =
        HttpClient::with_lookup(policy(&["127.0.0.1"]), Some(rec.clone()), fake_lookup()).unwrap();
    let base = format!("http://127.0.0.1:{port}");
    c.request("i", HttpRequest::get(format!("{base}/ok")))
        .await
        .unwrap();
    c.request("i", HttpRequest::get(format!("{base}/missing")))
        .await
        .unwrap();
    let _ = c
        .request(
            "i",
            HttpRequest::get(format!("http://nowhere.test:{port}/ok")),
        )
        .await;
    let _ = c
        .request("i", HttpRequest::get(format!("{base}/endless")))
        .await;
    assert_eq!(*rec.0.lock().unwrap(), vec!["2xx", "4xx", "error", "error"]);
    let mut req = HttpRequest::get(format!("{base}/slow"));
    req.timeout = Some(Duration::from_millis(50));
    let _ = c.request("i", req).await;
    let _ = HttpClient::with_lookup(policy(&[]), Some(rec.clone()), fake_lookup())
        .unwrap()
        .request("i", HttpRequest::get(format!("{base}/ok")))
        .await;
    assert_eq!(rec.0.lock().unwrap()[4..], ["timeout", "refused"]);
}

#[test]
fn the_request_future_is_send() {
    fn is_send<T: Send>(_: &T) {}
    let c = client(&[]);
    let f = c.request("i", HttpRequest::get("http://example.org/"));
    is_send(&f);
}

#[test]
fn the_policy_comes_from_script_http() {
    let c = crate::config::ScriptHttpConfig {
        timeout_ms: 2500,
        max_body_mb: 2,
        max_in_flight: 3,
        allow: AllowList::parse(&["*.lan"]).unwrap(),
    };
    let p = HttpPolicy::from_config(&c);
    assert_eq!(p.timeout, Duration::from_millis(2500));
    assert_eq!(p.max_body, 2 * 1024 * 1024);
    assert_eq!(p.max_in_flight, 3);
    assert!(p.allow.allows_host("nas.lan"));
    let d = HttpPolicy::from_config(&crate::config::ScriptHttpConfig::default());
    assert_eq!(d, HttpPolicy::default());
}
