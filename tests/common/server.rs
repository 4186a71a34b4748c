//! The admin API served on 127.0.0.1 over real HTTP, with simulated
//! (console) instances driven from the test through the library.

use std::sync::Arc;
use std::time::Duration;

use moonwire::api::webhook::{WebhookOptions, Webhooks};
use moonwire::api::{self, ApiState};
use moonwire::channel::console::ConsoleOut;
use moonwire::config::WebhookConfig;
use moonwire::host::app::App;
use moonwire::host::{EventBus, HostSettings};
use moonwire::lifecycle::Settings;
use moonwire::script::EngineConfig;
use moonwire::store::Store;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::watch;

pub const ADMIN: &str = "test-admin-key";

pub struct Server {
    pub base: String,
    pub app: Arc<App>,
    pub http: reqwest::Client,
    pub stop: watch::Sender<bool>,
    pub webhooks: Option<Arc<Webhooks>>,
    pub dir: tempfile::TempDir,
}

impl Server {
    pub async fn start(hooks: Vec<WebhookConfig>, metrics_public: bool) -> Server {
        Server::launch(hooks, metrics_public, None, |_| {}).await
    }

    /// `timeout` replaces the API's operation timeout; `scripts` writes
    /// files into the scripts folder before anything starts.
    pub async fn launch(
        hooks: Vec<WebhookConfig>,
        metrics_public: bool,
        timeout: Option<Duration>,
        scripts: impl FnOnce(&std::path::Path),
    ) -> Server {
        Server::launch_with_engine(hooks, metrics_public, timeout, scripts, |_| {}).await
    }

    /// As `launch`; `engine` changes the engine settings first.
    pub async fn launch_with_engine(
        hooks: Vec<WebhookConfig>,
        metrics_public: bool,
        timeout: Option<Duration>,
        scripts: impl FnOnce(&std::path::Path),
        tweak: impl FnOnce(&mut EngineConfig),
    ) -> Server {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("scripts")).unwrap();
        scripts(&dir.path().join("scripts"));
        let store = Arc::new(Store::open(&dir.path().join("moonwire.db")).unwrap());
        let bus = EventBus::default();
        let settings = HostSettings {
            reconnect: Settings {
                base_ms: 10,
                ..Settings::default()
            },
            ..HostSettings::default()
        };
        let mut engine = EngineConfig {
            dir: dir.path().join("scripts"),
            media_dir: dir.path().join("data/media"),
            ..EngineConfig::default()
        };
        tweak(&mut engine);
        let app = Arc::new(
            App::new(
                store,
                bus.clone(),
                settings,
                engine,
                Arc::new(ConsoleOut::logging()),
            )
            .unwrap(),
        );
        let webhooks = (!hooks.is_empty()).then(|| {
            let w = Arc::new(Webhooks::start(
                &hooks,
                WebhookOptions {
                    base: Duration::from_millis(5),
                    cap: Duration::from_millis(20),
                    ..WebhookOptions::default()
                },
            ));
            let sink = w.clone();
            bus.observe(move |ev| {
                let (kind, body) = api::events::event_json(ev);
                sink.dispatch(kind, &body);
            });
            w
        });
        let (stop, stop_rx) = watch::channel(false);
        let mut state = ApiState::new(
            app.clone(),
            ADMIN,
            metrics_public,
            webhooks.clone(),
            stop_rx,
        );
        if let Some(t) = timeout {
            state = state.with_operation_timeout(t);
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(api::serve(listener, state));
        Server {
            base,
            app,
            http: reqwest::Client::new(),
            stop,
            webhooks,
            dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method.parse().unwrap(), self.url(path));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        let v = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, v)
    }

    pub async fn admin(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.call(method, path, Some(ADMIN), body).await
    }

    /// Creates a console instance; returns its token.
    pub async fn create(&self, name: &str) -> String {
        let (s, v) = self
            .admin(
                "POST",
                "/v1/instances",
                Some(json!({"name": name, "channel": "console"})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v["token"].as_str().unwrap().to_string()
    }

    pub async fn open(&self, name: &str) {
        let (s, _) = self
            .admin("POST", &format!("/v1/instances/{name}/connect"), None)
            .await;
        assert_eq!(s, StatusCode::ACCEPTED);
        self.wait_state(name, "open").await;
    }

    pub async fn wait_state(&self, name: &str, state: &str) -> Value {
        for _ in 0..200 {
            let (_, v) = self
                .admin("GET", &format!("/v1/instances/{name}"), None)
                .await;
            if v["state"] == state {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{name} never reached {state}");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

pub fn err_code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

/// Reads SSE `data:` lines until `pred` matches one.
pub async fn sse_until(resp: &mut reqwest::Response, pred: impl Fn(&Value) -> bool) -> Value {
    let mut buf = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let chunk = tokio::time::timeout_at(deadline, resp.chunk())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(i) = buf.find('\n') {
            let line: String = buf.drain(..=i).collect();
            if let Some(data) = line.trim_end().strip_prefix("data:") {
                let v: Value = serde_json::from_str(data.trim()).unwrap();
                if pred(&v) {
                    return v;
                }
            }
        }
    }
}
