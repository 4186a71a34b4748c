//! `bot.http` from a script, through `moonwire console`, against a local
//! axum server in the test: answers, timeouts, body limits, redirects and
//! address checks, and the per-instance bound on requests in flight.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{AppendHeaders, IntoResponse, Response};
use axum::routing::{get, post, put};
use common::{Output, Sandbox};

#[derive(Default)]
struct Stats {
    total: AtomicUsize,
    in_flight: AtomicUsize,
    max: AtomicUsize,
}

/// Counts a `/hold` request in flight while it lives.
struct Held(Arc<Stats>);

impl Held {
    fn new(s: &Arc<Stats>) -> Held {
        let now = s.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        s.max.fetch_max(now, Ordering::SeqCst);
        Held(s.clone())
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

const MIB: usize = 1024 * 1024;

/// The server; every request is counted.
async fn serve() -> (u16, Arc<Stats>) {
    let stats = Arc::new(Stats::default());
    let app = Router::new()
        .route(
            "/hello",
            get(|| async { (AppendHeaders([("x-test", "1"), ("x-test", "2")]), "hello") }),
        )
        .route(
            "/echo",
            post(|headers: HeaderMap, body: Bytes| async move {
                let token = headers
                    .get("x-token")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-")
                    .to_string();
                (
                    StatusCode::CREATED,
                    format!("{token}:{}", String::from_utf8_lossy(&body)),
                )
            }),
        )
        .route("/put", put(|| async { (StatusCode::ACCEPTED, "put ok") }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "late"
            }),
        )
        .route("/big", get(|| async { vec![b'x'; 2 * MIB] }))
        .route(
            "/stream",
            get(|| async {
                // No Content-Length: the limit has to be found while reading.
                let chunks =
                    (0..40).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![b'y'; 64 * 1024])));
                Response::new(Body::from_stream(tokio_stream::iter(chunks)))
            }),
        )
        .route(
            "/redirect",
            get(|headers: HeaderMap| async move {
                let host = headers
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                let port = host.rsplit(':').next().unwrap_or("").to_string();
                (
                    StatusCode::FOUND,
                    [(header::LOCATION, format!("http://127.0.0.1:{port}/hello"))],
                )
                    .into_response()
            }),
        )
        .route(
            "/hold",
            get(|State(s): State<Arc<Stats>>| async move {
                let _held = Held::new(&s);
                tokio::time::sleep(Duration::from_millis(500)).await;
                "held"
            }),
        )
        .with_state(stats.clone())
        .layer(axum::middleware::from_fn_with_state(
            stats.clone(),
            |State(s): State<Arc<Stats>>, req, next: axum::middleware::Next| async move {
                s.total.fetch_add(1, Ordering::SeqCst);
                next.run(req).await
            },
        ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (port, stats)
}

/// The script: `!get URL`, `!post URL BODY`, and each answer or error on
/// one line.
const SCRIPT: &str = r#"
local function show(r, err)
  if not r then return "err " .. err end
  local h = r.headers["x-test"]
  return r.status .. " " .. #r.body .. " " .. r.body:sub(1, 20) .. (h and (" x-test=" .. h) or "")
end
bot.command("get", function(m, args)
  m:reply(show(bot.http.get(args[1], {timeout_ms = tonumber(args[2] or "")})))
end)
bot.command("post", function(m, args)
  m:reply(show(bot.http.post(args[1], args[2], {headers = {["X-Token"] = "t0k"}})))
end)
bot.command("put", function(m, args)
  m:reply(show(bot.http.request{method = "PUT", url = args[1], body = "", timeout_ms = 2000}))
end)
bot.command("bigpost", function(m, args)
  m:reply(show(bot.http.post(args[1], string.rep("z", 2 * 1024 * 1024))))
end)
bot.command("bad", function(m, args)
  local which = args[1]
  if which == "arg" then bot.http.request("http://x") end
  if which == "opt" then bot.http.get("http://x", {timeout = 5}) end
  if which == "header" then bot.http.get("http://x", {headers = {a = {}}}) end
end)
bot.command("hold", function(m)
  local r, err = bot.http.get(HOLD)
  m:reply(r and r.body or ("err " .. err))
end)
"#;

fn sandbox(config: &str, port: u16) -> Sandbox {
    let sb = Sandbox::new();
    std::fs::write(sb.path().join("moonwire.toml"), config).unwrap();
    sb.script(
        "h.lua",
        &format!("HOLD = \"http://127.0.0.1:{port}/hold\"\n{SCRIPT}"),
    );
    sb
}

async fn console(sb: Sandbox, input: String) -> Output {
    let out = tokio::task::spawn_blocking(move || sb.console(&input))
        .await
        .unwrap();
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_come_back_with_status_headers_and_body() {
    let (port, _) = serve().await;
    let sb = sandbox("[script.http]\nallow = [\"127.0.0.1\"]\n", port);
    let u = format!("http://127.0.0.1:{port}");
    let out = console(
        sb,
        format!("!get {u}/hello\n/sleep 200\n!post {u}/echo some-body\n/sleep 200\n!put {u}/put\n/sleep 200\n!get {u}/nothing\n"),
    )
    .await;
    out.assert_bot_lines(&[
        // Repeated headers are joined.
        "bot> 200 5 hello x-test=1, 2",
        "bot> 201 13 t0k:some-body",
        "bot> 202 6 put ok",
        // A 404 is an answer, not an error.
        "bot> 404 0 ",
    ]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_server_times_out_at_the_scripts_or_the_configured_limit() {
    let (port, _) = serve().await;
    let sb = sandbox(
        "[script.http]\nallow = [\"127.0.0.1\"]\ntimeout_ms = 400\n",
        port,
    );
    let u = format!("http://127.0.0.1:{port}");
    let out = console(
        sb,
        format!("!get {u}/slow 150\n/sleep 600\n!get {u}/slow 60000\n"),
    )
    .await;
    out.assert_bot_lines(&[
        "bot> err timed out after 150 ms",
        // Asking for more than [script.http] timeout_ms gets that.
        "bot> err timed out after 400 ms",
    ]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_limit_fail_both_ways() {
    let (port, _) = serve().await;
    let sb = sandbox(
        "[script.http]\nallow = [\"127.0.0.1\"]\nmax_body_mb = 1\n",
        port,
    );
    let u = format!("http://127.0.0.1:{port}");
    let out = console(
        sb,
        format!("!get {u}/big\n/sleep 300\n!get {u}/stream\n/sleep 300\n!bigpost {u}/echo\n"),
    )
    .await;
    let over =
        "bot> err response body larger than the 1048576 byte limit ([script.http] max_body_mb)";
    out.assert_bot_lines(&[
        over,
        // Without a Content-Length the body is cut while it streams in.
        over,
        "bot> err request body larger than the 1048576 byte limit ([script.http] max_body_mb)",
    ]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_to_loopback_needs_the_address_allowed_too() {
    let (port, stats) = serve().await;
    let input = format!(
        "!get http://localhost:{port}/hello\n/sleep 200\n!get http://localhost:{port}/redirect\n"
    );
    // The name is allowed, the address it redirects to is not.
    let sb = sandbox("[script.http]\nallow = [\"localhost\"]\n", port);
    let out = console(sb, input.clone()).await;
    out.assert_bot_lines(&[
        "bot> 200 5 hello x-test=1, 2",
        "bot> err refused to connect to 127.0.0.1 (127.0.0.1 is a loopback address); list the host in [script.http] allow to reach it",
    ]);
    // The redirect itself was answered; its target never asked.
    assert_eq!(stats.total.load(Ordering::SeqCst), 2);

    let sb = sandbox(
        "[script.http]\nallow = [\"localhost\", \"127.0.0.1\"]\n",
        port,
    );
    let out = console(sb, input).await;
    out.assert_bot_lines(&[
        "bot> 200 5 hello x-test=1, 2",
        "bot> 200 5 hello x-test=1, 2",
    ]);
    assert_eq!(stats.total.load(Ordering::SeqCst), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_and_link_local_addresses_are_refused() {
    let (port, stats) = serve().await;
    let sb = sandbox("", port);
    let out = console(
        sb,
        format!(
            "!get http://localhost:{port}/hello\n/sleep 100\n!get http://127.0.0.1:{port}/hello\n/sleep 100\n\
             !get http://169.254.169.254/latest/meta-data/\n/sleep 100\n!get http://10.1.2.3/\n/sleep 100\n\
             !get http://[::ffff:127.0.0.1]:{port}/hello\n/sleep 100\n!get ftp://example.org/x\n/sleep 100\n!get nonsense\n"
        ),
    )
    .await;
    let refused = |host: &str, addr: &str, why: &str| {
        format!(
            "bot> err refused to connect to {host} ({addr} is a {why} address); list the host in [script.http] allow to reach it"
        )
    };
    let lines = [
        // A name that resolves to loopback: refused after DNS.
        refused("localhost", "127.0.0.1", "loopback"),
        refused("127.0.0.1", "127.0.0.1", "loopback"),
        refused("169.254.169.254", "169.254.169.254", "link-local"),
        refused("10.1.2.3", "10.1.2.3", "private"),
        refused("::ffff:127.0.0.1", "::ffff:127.0.0.1", "loopback"),
        "bot> err only http:// and https:// URLs are allowed, got ftp://".to_string(),
        "bot> err invalid URL \"nonsense\": relative URL without a base".to_string(),
    ];
    let want: Vec<&str> = lines.iter().map(String::as_str).collect();
    out.assert_bot_lines(&want);
    assert_eq!(
        stats.total.load(Ordering::SeqCst),
        0,
        "nothing reached the server"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_flight_are_bounded_per_instance() {
    let (port, stats) = serve().await;
    let sb = sandbox(
        "[script.http]\nallow = [\"127.0.0.1\"]\nmax_in_flight = 2\n",
        port,
    );
    let out = console(sb, "!hold\n".repeat(6)).await;
    out.assert_bot_lines(&["bot> held"; 6]);
    assert_eq!(stats.total.load(Ordering::SeqCst), 6);
    // Six handlers waited at once; the server never saw more than two.
    assert_eq!(stats.max.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_arguments_are_errors_at_the_scripts_line() {
    let (port, _) = serve().await;
    let sb = sandbox("", port);
    let out = console(sb, "!bad arg\n!bad opt\n!bad header\n!bad none\n".into()).await;
    out.assert_bot_lines(&[]);
    for want in [
        "h.lua:22: bot.http.request needs a table {method=, url=, headers=, body=, timeout_ms=}, got string",
        "h.lua:23: bot.http.get: unknown option \"timeout\" (known: headers, timeout_ms)",
        "h.lua:24: bot.http.get: header \"a\" must be a string, got table",
    ] {
        assert!(out.stderr.contains(want), "{want}\n{}", out.stderr);
    }
}
