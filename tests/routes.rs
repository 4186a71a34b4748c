//! `bot.route` over real HTTP through `moonwire run`: the scripts' routes
//! under `/v1/instances/{name}/hooks/`, with auth, public routes checking
//! a signature, deadlines, failures that leak nothing, malformed requests,
//! and routes coming and going with reloads.

mod common;

use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::Sandbox;
use moonwire::automation::crypto;
use reqwest::StatusCode;
use serde_json::{Value, json};

const KEY: &str = "admin-key";
const GROUP: &str = "120363000000000001@g.us";

struct Run {
    sb: Sandbox,
    child: Option<Child>,
    base: String,
    http: reqwest::Client,
    log: PathBuf,
}

impl Run {
    /// `moonwire run` with one console instance "bot" and the API, once
    /// the instance is open.
    async fn start(sb: Sandbox, extra: &str) -> Run {
        let port = common::free_port();
        std::fs::write(
            sb.path().join("moonwire.toml"),
            format!(
                "[[instance]]\nname = \"bot\"\nchannel = \"console\"\n\n[api]\nlisten = \"127.0.0.1:{port}\"\nkey = \"{KEY}\"\n\n{extra}"
            ),
        )
        .unwrap();
        let log = sb.path().join("stderr.log");
        let child = sb
            .cmd()
            .arg("run")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let run = Run {
            sb,
            child: Some(child),
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
            log,
        };
        let url = format!("{}/v1/instances/bot", run.base);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = run.http.get(&url).bearer_auth(KEY).send().await
                && let Ok(v) = r.json::<Value>().await
                && v["state"] == "open"
            {
                break;
            }
            assert!(Instant::now() < deadline, "never open:\n{}", run.stderr());
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        // Open says nothing of the scripts: their first load (which
        // publishes the routes) may still be going on.
        let scripts = format!("{}/v1/scripts", run.base);
        loop {
            if let Ok(r) = run.http.get(&scripts).bearer_auth(KEY).send().await
                && let Ok(v) = r.json::<Value>().await
                && v.as_array().is_some_and(|a| {
                    !a.is_empty() && a.iter().all(|i| i["generation"].as_u64() >= Some(1))
                })
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "scripts never loaded:\n{}",
                run.stderr()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        run
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn hook(&self, method: &str, path: &str) -> reqwest::RequestBuilder {
        self.hook_of("bot", method, path)
    }

    fn hook_of(&self, instance: &str, method: &str, path: &str) -> reqwest::RequestBuilder {
        self.http.request(
            method.parse().unwrap(),
            format!("{}/v1/instances/{instance}/hooks{path}", self.base),
        )
    }

    async fn send(
        &self,
        req: reqwest::RequestBuilder,
    ) -> (StatusCode, reqwest::header::HeaderMap, String) {
        let r = req.send().await.unwrap();
        let status = r.status();
        let headers = r.headers().clone();
        (status, headers, r.text().await.unwrap())
    }

    async fn status(&self, req: reqwest::RequestBuilder) -> StatusCode {
        self.send(req).await.0
    }

    async fn reload(&self) -> Value {
        let r = self
            .http
            .post(format!("{}/v1/scripts/reload", self.base))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        r.json().await.unwrap()
    }

    /// SIGTERM, a clean exit; what it logged.
    async fn stop(mut self) -> String {
        let out = common::terminate(self.child.take().unwrap()).await;
        assert!(out.status.success(), "{}", self.stderr());
        self.stderr()
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

const ECHO: &str = r#"
bot.route("GET", "/echo", function(req)
  local names = {}
  for k in pairs(req.headers) do names[#names + 1] = k end
  table.sort(names)
  return {
    status = 200,
    headers = {["content-type"] = "application/json", ["x-route"] = {"echo", "get"}},
    body = bot.json.encode({method = req.method, path = req.path, q = req.query.q or "",
      body = req.body, headers = table.concat(names, ",")}),
  }
end)
bot.route("POST", "/echo", function(req) return "posted " .. #req.body end)
bot.route("GET", "/nothing", function(req) end)
"#;

const CI: &str = r#"
local SECRET = "s3cret"
bot.route("POST", "/ci", function(req)
  local want = "sha256=" .. bot.crypto.hmac_sha256(SECRET, req.body)
  if not bot.crypto.equal(want, req.headers["x-hub-signature-256"] or "") then
    return {status = 401, body = "bad signature"}
  end
  local id, err = bot.send("120363000000000001@g.us", "CI: " .. req.body)
  return {status = 202, body = id or err}
end, {public = true})
"#;

const TROUBLE: &str = r#"
bot.route("GET", "/slow", function() bot.sleep(60000) return "late" end)
bot.route("GET", "/fail", function() error("secret detail 42") end)
bot.route("GET", "/weird", function() return {status = 1000, body = "secret detail 43"} end)
bot.route("GET", "/bool", function() return true end)
"#;

fn sign(body: &str) -> String {
    format!(
        "sha256={}",
        crypto::hmac_sha256_hex(b"s3cret", body.as_bytes())
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_need_a_key_unless_public_and_answer_as_the_handler_says() {
    let sb = Sandbox::new();
    sb.script("ci.lua", CI).script("echo.lua", ECHO);
    let run = Run::start(sb, "").await;

    // Not public: no key, a wrong key → 401, and nothing says the route exists.
    assert_eq!(
        run.status(run.hook("GET", "/echo")).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        run.status(run.hook("GET", "/echo").bearer_auth("nope"))
            .await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        run.status(run.hook("GET", "/none")).await,
        StatusCode::UNAUTHORIZED
    );

    let (s, h, body) = run
        .send(
            run.hook("GET", "/echo?q=a%20b&q=second")
                .bearer_auth(KEY)
                .header("X-Extra", "1"),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["method"], "GET");
    assert_eq!(v["path"], "/echo");
    assert_eq!(v["q"], "a b", "the first of a repeated name");
    // The key that let the request in is not the script's to see.
    let names = v["headers"].as_str().unwrap();
    assert!(
        names.contains("x-extra") && !names.contains("authorization"),
        "{names}"
    );
    let route: Vec<_> = h.get_all("x-route").iter().collect();
    assert_eq!(route, ["echo", "get"]);

    let (s, h, body) = run
        .send(run.hook("POST", "/echo").bearer_auth(KEY).body("abc"))
        .await;
    assert_eq!((s, body.as_str()), (StatusCode::OK, "posted 3"));
    assert_eq!(
        h[reqwest::header::CONTENT_TYPE],
        "text/plain; charset=utf-8"
    );
    let (s, _, body) = run.send(run.hook("GET", "/nothing").bearer_auth(KEY)).await;
    assert_eq!((s, body.as_str()), (StatusCode::NO_CONTENT, ""));

    // An instance's token reaches its own routes, not another's.
    let r = run
        .http
        .post(format!("{}/v1/instances", run.base))
        .bearer_auth(KEY)
        .json(&json!({"name": "other", "channel": "console"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let token = r.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        run.status(run.hook("GET", "/echo").bearer_auth(&token))
            .await,
        StatusCode::FORBIDDEN
    );
    // Its scripts load in the background: its routes are there once loaded.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = run
            .status(run.hook_of("other", "GET", "/echo").bearer_auth(&token))
            .await;
        if s != StatusCode::NOT_FOUND {
            assert_eq!(s, StatusCode::OK);
            break;
        }
        assert!(Instant::now() < deadline, "other's routes never came");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Public: no key needed, the script checks the signature.
    let payload = r#"{"workflow":"build","conclusion":"failure"}"#;
    let (s, _, id) = run
        .send(
            run.hook("POST", "/ci")
                .header("X-Hub-Signature-256", sign(payload))
                .body(payload),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{id}");
    assert!(!id.is_empty() && id != "not open", "{id}");
    let (s, _, body) = run
        .send(
            run.hook("POST", "/ci")
                .header("X-Hub-Signature-256", sign("other"))
                .body(payload),
        )
        .await;
    assert_eq!(
        (s, body.as_str()),
        (StatusCode::UNAUTHORIZED, "bad signature")
    );
    let (s, _, body) = run.send(run.hook("POST", "/ci").body(payload)).await;
    assert_eq!(
        (s, body.as_str()),
        (StatusCode::UNAUTHORIZED, "bad signature")
    );
    // Another method on the public path is not public.
    assert_eq!(
        run.status(run.hook("GET", "/ci")).await,
        StatusCode::UNAUTHORIZED
    );

    let log = run.stop().await;
    assert_eq!(
        log.matches(&format!("bot> [{GROUP}] CI: {payload}"))
            .count(),
        1,
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_deadlines_and_malformed_requests() {
    let sb = Sandbox::new();
    sb.script("echo.lua", ECHO).script("trouble.lua", TROUBLE);
    let run = Run::start(sb, "[script]\nhandler_deadline_ms = 400\n").await;

    let started = Instant::now();
    let (s, _, body) = run.send(run.hook("GET", "/slow").bearer_auth(KEY)).await;
    assert_eq!(s, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert!(started.elapsed() < Duration::from_secs(30));

    for path in ["/fail", "/weird", "/bool"] {
        let (s, _, body) = run.send(run.hook("GET", path).bearer_auth(KEY)).await;
        assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR, "{path}: {body}");
        assert!(
            !body.contains("secret detail") && !body.contains("trouble.lua"),
            "{path} leaked: {body}"
        );
    }

    // Malformed: too big, wrong method, a header that is not text, no route.
    let big = "x".repeat(70 * 1024);
    assert_eq!(
        run.status(run.hook("POST", "/echo").bearer_auth(KEY).body(big))
            .await,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    let (s, h, _) = run.send(run.hook("PUT", "/echo").bearer_auth(KEY)).await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(h[reqwest::header::ALLOW], "GET, POST");
    let odd = reqwest::header::HeaderValue::from_bytes(b"caf\xe9").unwrap();
    assert_eq!(
        run.status(
            run.hook("GET", "/echo")
                .bearer_auth(KEY)
                .header("x-odd", odd)
        )
        .await,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        run.status(run.hook("GET", "/none").bearer_auth(KEY)).await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        run.status(run.hook_of("nobody", "GET", "/echo").bearer_auth(KEY))
            .await,
        StatusCode::NOT_FOUND
    );
    // The server is fine after all that.
    assert_eq!(
        run.status(run.hook("GET", "/echo").bearer_auth(KEY)).await,
        StatusCode::OK
    );

    let log = run.stop().await;
    // The details went to the log, with file and line.
    for want in [
        "trouble.lua:2: handler exceeded its deadline of 400 ms (waiting in bot.sleep)",
        "trouble.lua:3: secret detail 42",
        "route handler answered status 1000",
        "the handler of route GET /bool returned true",
    ] {
        assert!(log.contains(want), "{want}\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_replaces_the_routes_and_a_clash_is_refused() {
    let sb = Sandbox::new();
    sb.script(
        "a.lua",
        "bot.route('GET', '/a', function() return 'a1' end)\n",
    )
    .script(
        "b.lua",
        "bot.route('GET', '/b', function() return 'b1' end)\n",
    );
    let run = Run::start(sb, "").await;
    let get = |p: &'static str| run.send(run.hook("GET", p).bearer_auth(KEY));
    assert_eq!(get("/a").await.2, "a1");
    assert_eq!(get("/b").await.2, "b1");

    // Two scripts registering the same route: a load error naming both,
    // and the running routes stay.
    run.sb.script(
        "c.lua",
        "-- another\nbot.route('get', '/a', function() return 'c' end)\n",
    );
    let reports = run.reload().await;
    let r = &reports[0];
    assert_eq!(r["swapped"], false, "{reports}");
    let errors = r["errors"].to_string();
    assert!(
        errors.contains("route GET /a is registered twice: at ")
            && errors.contains("a.lua:1 and at ")
            && errors.contains("c.lua:2"),
        "{errors}"
    );
    assert_eq!(get("/a").await.2, "a1");
    assert_eq!(get("/b").await.2, "b1");

    // The clash goes, b.lua goes, a.lua changes: /b is 404, /a new.
    std::fs::remove_file(run.sb.scripts().join("c.lua")).unwrap();
    std::fs::remove_file(run.sb.scripts().join("b.lua")).unwrap();
    run.sb.script(
        "a.lua",
        "bot.route('GET', '/a', function() return 'a2' end)\n",
    );
    let reports = run.reload().await;
    assert_eq!(reports[0]["swapped"], true, "{reports}");
    let (s, _, body) = get("/b").await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(get("/a").await.2, "a2");
    run.stop().await;
}

/// The ci-notifier example with its settings filled in, as a user would.
fn ci_notifier(secret: &str) -> String {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/ci-notifier/ci-notifier.lua");
    let src = std::fs::read_to_string(path).unwrap();
    let from = "local SECRET = \"\"";
    assert!(src.contains(from), "the example no longer has {from:?}");
    src.replace(from, &format!("local SECRET = {secret:?}"))
}

fn workflow_run(conclusion: &str) -> String {
    json!({
        "action": "completed",
        "workflow_run": {
            "name": "build", "head_branch": "main", "head_sha": "0123456789abcdef",
            "conclusion": conclusion, "html_url": "https://github.com/o/r/actions/runs/7",
        },
        "repository": {"full_name": "o/r"},
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ci_notifier_example_posts_signed_failures_to_the_group() {
    let sb = Sandbox::new();
    sb.script("ci-notifier.lua", &ci_notifier("s3cret"));
    let run = Run::start(sb, "").await;
    let call = |event: &str, body: String, signature: Option<String>| {
        let mut r = run
            .hook("POST", "/ci")
            .header("X-GitHub-Event", event)
            .header("Content-Type", "application/json");
        if let Some(s) = signature {
            r = r.header("X-Hub-Signature-256", s);
        }
        run.send(r.body(body))
    };
    let signed = |event: &str, body: String| call(event, body.clone(), Some(sign(&body)));

    assert_eq!(signed("ping", "{}".into()).await.2, "pong");
    let (s, _, body) = signed("workflow_run", workflow_run("failure")).await;
    assert_eq!((s, body.as_str()), (StatusCode::ACCEPTED, "posted"));
    let (s, _, body) = signed("workflow_run", workflow_run("success")).await;
    assert_eq!((s, body.as_str()), (StatusCode::ACCEPTED, "posted"));
    // Green after green: nothing to say.
    let (s, _, body) = signed("workflow_run", workflow_run("success")).await;
    assert_eq!((s, body.as_str()), (StatusCode::ACCEPTED, "nothing to say"));
    let (s, _, _) = signed("workflow_run", "not json".into()).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // Forged or unsigned: refused, nothing posted.
    let forged = format!(
        "sha256={}",
        crypto::hmac_sha256_hex(b"guess", workflow_run("failure").as_bytes())
    );
    for sig in [Some(forged), None, Some(String::new())] {
        let (s, _, body) = call("workflow_run", workflow_run("failure"), sig).await;
        assert_eq!(
            (s, body.as_str()),
            (StatusCode::UNAUTHORIZED, "bad signature")
        );
    }

    let log = run.stop().await;
    let posted: Vec<&str> = log
        .lines()
        .filter_map(|l| {
            l.split_once("bot> [120363000000000000@g.us] ")
                .map(|(_, t)| t)
        })
        .collect();
    assert_eq!(
        posted,
        [
            "❌ o/r: build failed on main (0123456) https://github.com/o/r/actions/runs/7",
            "✅ o/r: build is green again on main (0123456)",
        ],
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ci_notifier_without_a_secret_refuses_every_call() {
    let sb = Sandbox::new();
    sb.script("ci-notifier.lua", &ci_notifier(""));
    let run = Run::start(sb, "").await;
    // Even one "signed" with the empty key.
    let body = workflow_run("failure");
    let sig = format!("sha256={}", crypto::hmac_sha256_hex(b"", body.as_bytes()));
    let (s, _, text) = run
        .send(
            run.hook("POST", "/ci")
                .header("X-GitHub-Event", "workflow_run")
                .header("X-Hub-Signature-256", sig)
                .body(body),
        )
        .await;
    assert_eq!(
        (s, text.as_str()),
        (StatusCode::UNAUTHORIZED, "bad signature")
    );
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_calls_is_turned_away_not_queued_without_bound() {
    let sb = Sandbox::new();
    sb.script(
        "hold.lua",
        "bot.route('GET', '/hold', function() bot.sleep(1500) return 'held' end, {public = true})\n",
    );
    let run = Run::start(sb, "[script]\nmax_waiting = 2\n").await;
    let calls: Vec<_> = (0..6).map(|_| run.send(run.hook("GET", "/hold"))).collect();
    let answers = futures_util::future::join_all(calls).await;
    let mut statuses: Vec<u16> = answers.iter().map(|(s, _, _)| s.as_u16()).collect();
    statuses.sort();
    // As many as may wait are served; the rest hear 503 at once.
    assert_eq!(statuses, [200, 200, 503, 503, 503, 503], "{answers:?}");
    assert_eq!(
        run.status(run.hook("GET", "/hold")).await,
        StatusCode::OK,
        "served again once the others are done"
    );
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_requests_are_counted_in_the_metrics() {
    let sb = Sandbox::new();
    sb.script(
        "fetch.lua",
        "bot.route('GET', '/fetch', function()\n\
           local r, err = bot.http.get('http://127.0.0.1:9/')\n\
           return err\n\
         end)\n",
    );
    let run = Run::start(sb, "").await;
    let (s, _, body) = run.send(run.hook("GET", "/fetch").bearer_auth(KEY)).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        body.starts_with("refused to connect to 127.0.0.1"),
        "{body}"
    );
    let metrics = run
        .http
        .get(format!("{}/metrics", run.base))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("moonwire_http_requests_total{class=\"refused\"} 1"),
        "{metrics}"
    );
    run.stop().await;
}
