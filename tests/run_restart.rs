//! Instances created through the API across two (and three) lifetimes of
//! `moonwire run`, over real HTTP: they are rows like the configured ones.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::Sandbox;
use reqwest::StatusCode;
use serde_json::{Value, json};

const KEY: &str = "k";

fn write_config(sb: &Sandbox, port: u16, extra: &str) {
    std::fs::write(
        sb.path().join("moonwire.toml"),
        format!(
            "[[instance]]\nname = \"cfg\"\nchannel = \"console\"\n{extra}\n[api]\nlisten = \"127.0.0.1:{port}\"\nkey = \"{KEY}\"\n"
        ),
    )
    .unwrap();
}

struct Running {
    child: common::Reaper,
    base: String,
    http: reqwest::Client,
}

impl Running {
    /// Starts `moonwire run` on a fresh port and waits for its API.
    async fn start(sb: &Sandbox, extra: &str) -> Running {
        let port = common::free_port();
        write_config(sb, port, extra);
        let child = common::spawn_run(sb.cmd());
        let r = Running {
            child: common::Reaper::new(child),
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
        };
        for _ in 0..400 {
            if r.http.get(r.url("/healthz")).send().await.is_ok() {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the API never came up");
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        key: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method.parse().unwrap(), self.url(path))
            .bearer_auth(key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.call(method, path, KEY, body).await
    }

    async fn create(&self, name: &str) -> String {
        let (st, v) = self
            .admin(
                "POST",
                "/v1/instances",
                Some(json!({"name": name, "channel": "console"})),
            )
            .await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
        v["token"].as_str().unwrap().to_string()
    }

    async fn wait_state(&self, name: &str, state: &str) -> Value {
        let mut last = Value::Null;
        for _ in 0..400 {
            let (_, v) = self
                .admin("GET", &format!("/v1/instances/{name}"), None)
                .await;
            if v["state"] == state {
                return v;
            }
            last = v;
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("{name} never reached {state}: {last}");
    }

    async fn names(&self) -> Vec<String> {
        let (st, v) = self.admin("GET", "/v1/instances", None).await;
        assert_eq!(st, StatusCode::OK);
        v.as_array()
            .unwrap()
            .iter()
            .map(|i| i["name"].as_str().unwrap().to_string())
            .collect()
    }

    async fn stop(mut self) -> String {
        let out = common::terminate(self.child.take()).await;
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{err}");
        err
    }
}

fn status_names(sb: &Sandbox) -> Vec<String> {
    let out = sb.cmd().args(["status", "--json"]).output().unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn api_instances_survive_a_restart_and_a_delete_is_for_good() {
    let sb = Sandbox::new();
    let run = Running::start(&sb, "").await;
    let token = run.create("tok3").await;
    run.create("idle1").await;
    run.create("gone").await;
    let (st, _) = run.admin("POST", "/v1/instances/tok3/connect", None).await;
    assert_eq!(st, StatusCode::ACCEPTED);
    run.wait_state("tok3", "open").await;
    let (st, _) = run.admin("DELETE", "/v1/instances/gone", None).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    run.stop().await;

    // Second lifetime: listed, managed, same token, reconnected.
    let run = Running::start(&sb, "").await;
    assert_eq!(run.names().await, ["cfg", "idle1", "tok3"]);
    let v = run.wait_state("tok3", "open").await;
    assert_eq!(v["created_by"], "api");
    assert_eq!(v["channel"], "console");
    let (st, v) = run.call("GET", "/v1/instances/tok3", &token, None).await;
    assert_eq!((st, v["name"].clone()), (StatusCode::OK, json!("tok3")));
    // Never connected before the stop: not connected now either.
    let (_, v) = run.admin("GET", "/v1/instances/idle1", None).await;
    assert_eq!(v["state"], "idle", "{v}");
    let (st, v) = run
        .admin(
            "POST",
            "/v1/instances",
            Some(json!({"name": "tok3", "channel": "console"})),
        )
        .await;
    assert_eq!(
        (st, v["error"]["code"].clone()),
        (StatusCode::CONFLICT, json!("exists"))
    );
    let (st, _) = run
        .call("POST", "/v1/instances/tok3/logout", &token, None)
        .await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = run
        .call("POST", "/v1/instances/tok3/connect", &token, None)
        .await;
    assert_eq!(st, StatusCode::ACCEPTED);
    run.wait_state("tok3", "open").await;
    let (st, _) = run.call("DELETE", "/v1/instances/tok3", &token, None).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, _) = run.admin("GET", "/v1/instances/tok3", None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    run.stop().await;
    assert_eq!(status_names(&sb), ["cfg", "idle1"]);

    // Third lifetime: the deleted one stays deleted, its token is dead.
    let run = Running::start(&sb, "").await;
    assert_eq!(run.names().await, ["cfg", "idle1"]);
    let (st, _) = run.call("GET", "/v1/instances/tok3", &token, None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    run.stop().await;
}

#[tokio::test]
async fn the_config_file_decides_for_the_names_it_lists() {
    let sb = Sandbox::new();
    let run = Running::start(&sb, "").await;
    // A configured name cannot be taken, nor deleted, through the API.
    let (st, _) = run
        .admin(
            "POST",
            "/v1/instances",
            Some(json!({"name": "cfg", "channel": "console"})),
        )
        .await;
    assert_eq!(st, StatusCode::CONFLICT);
    let (st, v) = run.admin("DELETE", "/v1/instances/cfg", None).await;
    assert_eq!(
        (st, v["error"]["code"].clone()),
        (StatusCode::CONFLICT, json!("configured"))
    );
    let token = run.create("later").await;
    run.create("clash").await;
    run.stop().await;

    // The config file now names "later" too: it becomes a configured
    // instance, one row, its token still good.
    let later = "[[instance]]\nname = \"later\"\nchannel = \"console\"\n";
    let run = Running::start(&sb, later).await;
    assert_eq!(run.names().await, ["cfg", "clash", "later"]);
    let (st, v) = run.call("GET", "/v1/instances/later", &token, None).await;
    assert_eq!(
        (st, v["created_by"].clone()),
        (StatusCode::OK, json!("config"))
    );
    let (st, _) = run.admin("DELETE", "/v1/instances/later", None).await;
    assert_eq!(st, StatusCode::CONFLICT);
    let err = run.stop().await;
    assert!(err.contains("now named by the config file"), "{err}");

    // The same name on another channel cannot be both: refused, named.
    let port = common::free_port();
    write_config(
        &sb,
        port,
        "[[instance]]\nname = \"clash\"\nchannel = \"whatsapp\"\n",
    );
    let out = sb.cmd().arg("run").stdin(Stdio::null()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("\"clash\"") && err.contains("console") && err.contains("whatsapp"),
        "{err}"
    );
}
