//! What the automation pieces cost: cron parsing (with the never-matches
//! check) and next-run computation in a zone with daylight saving time,
//! and guarded HTTP requests to a local server, one at a time and with
//! more callers than an instance's slots; and the same from scripts: a
//! `bot.route` call through the engine (the API's part left out), alone
//! and with a `bot.http` request inside.
//!
//! Run with `cargo bench --bench automation`; `BENCH_N` sets the number of
//! operations per figure (default 2000).

use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use moonwire::automation::cron::{Schedule, Zone};
use moonwire::automation::http::{HttpClient, HttpPolicy, HttpRequest};
use moonwire::automation::net::AllowList;

fn n() -> usize {
    std::env::var("BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

fn per_op(what: &str, n: usize, elapsed: Duration) {
    println!(
        "{what:<44} {:>10.2} µs/op  ({n} ops in {:.1} ms)",
        elapsed.as_secs_f64() * 1e6 / n as f64,
        elapsed.as_secs_f64() * 1e3
    );
}

fn cron(n: usize) {
    let berlin = Zone::named("Europe/Berlin").expect("zone");
    for spec in ["0 8 * * 1-5", "*/15 9-17 * * MON-FRI", "0 0 30 2 *"] {
        let t = Instant::now();
        for _ in 0..n {
            let _ = std::hint::black_box(Schedule::parse(spec, berlin.clone()));
        }
        per_op(&format!("parse {spec:?}"), n, t.elapsed());
    }
    for spec in ["30 2 * * *", "0 * * * *", "*/5 * * * *"] {
        let s = Schedule::parse(spec, berlin.clone()).expect("spec");
        // Consecutive runs from 2025-01-01: both DST changes are crossed.
        let mut at = 1_735_689_600_000u64;
        let t = Instant::now();
        for _ in 0..n {
            at = s.next_after(at).expect("a next run");
        }
        per_op(
            &format!("next_after {spec:?} (Berlin, chained)"),
            n,
            t.elapsed(),
        );
    }
}

async fn http(n: usize) {
    let app = Router::new().route("/ok", get(|| async { "hello" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let policy = HttpPolicy {
        allow: AllowList::parse(&["127.0.0.1"]).expect("allow"),
        max_in_flight: 4,
        ..HttpPolicy::default()
    };
    let client = HttpClient::new(policy, None).expect("client");
    let url = format!("http://127.0.0.1:{port}/ok");
    for _ in 0..50 {
        client
            .request("bench", HttpRequest::get(&url))
            .await
            .expect("warm-up");
    }
    let t = Instant::now();
    for _ in 0..n {
        client
            .request("bench", HttpRequest::get(&url))
            .await
            .expect("request");
    }
    per_op("GET loopback, sequential", n, t.elapsed());

    let callers = 16;
    let t = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let c = client.clone();
            let url = url.clone();
            tokio::spawn(async move {
                for _ in 0..n / callers {
                    c.request("bench", HttpRequest::get(&url))
                        .await
                        .expect("request");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
    let done = callers * (n / callers);
    per_op(
        &format!("GET loopback, {callers} callers, 4 slots"),
        done,
        t.elapsed(),
    );
    let refused = HttpClient::new(HttpPolicy::default(), None).expect("client");
    let t = Instant::now();
    for _ in 0..n {
        let _ = refused.request("bench", HttpRequest::get(&url)).await;
    }
    per_op("GET loopback refused (not in allow)", n, t.elapsed());
}

/// Route calls into one console instance's engine, as the API makes them.
async fn scripts(n: usize) {
    use std::sync::Arc;

    use moonwire::automation::routes::{HookRequest, RouteDispatch};
    use moonwire::channel::console::ConsoleOut;
    use moonwire::config::ChannelKind;
    use moonwire::host::app::App;
    use moonwire::host::{EventBus, HostSettings};
    use moonwire::script::EngineConfig;

    let app = Router::new().route("/ok", get(|| async { "hello" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let dir = tempfile::tempdir().expect("tempdir");
    let scripts = dir.path().join("scripts");
    std::fs::create_dir_all(&scripts).expect("scripts dir");
    std::fs::write(
        scripts.join("r.lua"),
        format!(
            "bot.route('GET', '/r', function(req) return 'ok' end)\n\
             bot.route('GET', '/http', function(req)\n\
               local r = bot.http.get('http://127.0.0.1:{port}/ok')\n\
               return r.body\n\
             end)\n"
        ),
    )
    .expect("script");
    let store =
        Arc::new(moonwire::store::Store::open(&dir.path().join("moonwire.db")).expect("store"));
    let engine = EngineConfig {
        dir: scripts,
        http: HttpPolicy {
            allow: AllowList::parse(&["127.0.0.1"]).expect("allow"),
            ..HttpPolicy::default()
        },
        ..EngineConfig::default()
    };
    let app = App::new(
        store,
        EventBus::default(),
        HostSettings::default(),
        engine,
        Arc::new(ConsoleOut::logging()),
    )
    .expect("app");
    app.start_instance("b", ChannelKind::Console)
        .expect("instance");
    let table = loop {
        if let Some(t) = app.scripts.routes().table("b") {
            break t;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let req = |path: &str| HookRequest {
        method: "GET".into(),
        path: path.into(),
        ..HookRequest::default()
    };
    for path in ["/r", "/http"] {
        let id = table.find("GET", path).expect("route").id;
        for _ in 0..50 {
            app.scripts
                .dispatch("b", id, req(path))
                .await
                .expect("warm-up");
        }
        let t = Instant::now();
        for _ in 0..n {
            app.scripts
                .dispatch("b", id, req(path))
                .await
                .expect("call");
        }
        per_op(&format!("bot.route GET {path}, sequential"), n, t.elapsed());
        let callers = 16;
        let t = Instant::now();
        let (app, req) = (&app, &req);
        let callers_done = (0..callers).map(|_| async move {
            for _ in 0..n / callers {
                app.scripts
                    .dispatch("b", id, req(path))
                    .await
                    .expect("call");
            }
        });
        futures_util::future::join_all(callers_done).await;
        per_op(
            &format!("bot.route GET {path}, {callers} callers"),
            callers * (n / callers),
            t.elapsed(),
        );
    }
    app.shutdown().await;
}

fn main() {
    let n = n();
    cron(n);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(http(n));
    rt.block_on(scripts(n));
}
