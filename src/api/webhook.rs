//! Outgoing webhooks: host events POSTed as JSON to configured URLs.
//!
//! Each webhook gets its own bounded queue and worker, so a slow or dead
//! receiver only ever costs its own events (dropped when the queue is full),
//! never the caller's time, and events of one webhook arrive in order.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hmac::{Hmac, Mac};
use rand::Rng;
use reqwest::StatusCode;
use sha2::Sha256;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::WebhookConfig;

const USER_AGENT: &str = concat!("moonwire/", env!("CARGO_PKG_VERSION"));

#[derive(Debug, Clone)]
pub struct WebhookOptions {
    /// Events a webhook may have waiting; beyond that new ones are dropped.
    pub queue: usize,
    /// Attempts per event, the first one included.
    pub max_attempts: u32,
    /// First backoff ceiling; doubles per attempt up to `cap`.
    pub base: Duration,
    pub cap: Duration,
    /// Per request, so a receiver that never answers cannot stall its queue.
    pub timeout: Duration,
}

impl Default for WebhookOptions {
    fn default() -> Self {
        WebhookOptions {
            queue: 1000,
            max_attempts: 6,
            base: Duration::from_millis(500),
            cap: Duration::from_secs(30),
            timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct WebhookStats {
    pub url: String,
    pub delivered: u64,
    /// Given up after the last attempt, or refused with a non-retryable status.
    pub failed: u64,
    pub retries: u64,
    /// Never queued because the queue was full.
    pub dropped: u64,
    pub queued: usize,
}

#[derive(Default)]
struct Counters {
    delivered: AtomicU64,
    failed: AtomicU64,
    retries: AtomicU64,
    dropped: AtomicU64,
}

/// One event, serialized once and shared by every webhook that takes it.
struct Job {
    event: Arc<str>,
    body: Arc<[u8]>,
}

struct Hook {
    url: String,
    events: Vec<String>,
    tx: mpsc::Sender<Job>,
    counters: Arc<Counters>,
}

/// What a worker needs; kept apart from [`Hook`] so the secret stays there.
struct Target {
    url: String,
    secret: Option<String>,
    counters: Arc<Counters>,
}

pub struct Webhooks {
    hooks: Vec<Hook>,
    stop: watch::Sender<bool>,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

impl Webhooks {
    /// Spawns one delivery task per webhook (must be called inside a tokio runtime).
    pub fn start(configs: &[WebhookConfig], options: WebhookOptions) -> Webhooks {
        let client = match reqwest::Client::builder()
            .timeout(options.timeout)
            .user_agent(USER_AGENT)
            .build()
        {
            Ok(client) => Some(client),
            Err(e) => {
                // Still start the workers so events are counted as failed
                // rather than silently vanishing.
                tracing::error!(error = %e, "cannot build the webhook HTTP client; webhooks will fail");
                None
            }
        };
        let (stop, _) = watch::channel(false);
        let mut hooks = Vec::with_capacity(configs.len());
        let mut workers = Vec::with_capacity(configs.len());
        for config in configs {
            let (tx, rx) = mpsc::channel(options.queue.max(1));
            let counters = Arc::new(Counters::default());
            let target = Target {
                url: config.url.clone(),
                secret: config.secret.clone(),
                counters: counters.clone(),
            };
            workers.push(tokio::spawn(worker(
                client.clone(),
                target,
                options.clone(),
                rx,
                stop.subscribe(),
            )));
            hooks.push(Hook {
                url: config.url.clone(),
                events: config.events.clone(),
                tx,
                counters,
            });
        }
        Webhooks {
            hooks,
            stop,
            workers: Mutex::new(workers),
        }
    }

    /// Never blocks and never awaits: the caller is the host's event path.
    pub fn dispatch(&self, event_type: &str, body: &serde_json::Value) {
        let mut job: Option<(Arc<str>, Arc<[u8]>)> = None;
        for hook in self
            .hooks
            .iter()
            .filter(|h| h.events.iter().any(|e| e == event_type))
        {
            let (event, bytes) = match &job {
                Some(shared) => shared.clone(),
                None => match serde_json::to_vec(body) {
                    Ok(bytes) => job
                        .insert((Arc::from(event_type), Arc::from(bytes)))
                        .clone(),
                    Err(e) => {
                        tracing::warn!(event = event_type, error = %e, "cannot serialize a webhook event; not sent");
                        return;
                    }
                },
            };
            match hook.tx.try_send(Job { event, body: bytes }) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    let dropped = hook.counters.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                    // Rate-limited: a dead receiver would otherwise flood the log.
                    if dropped == 1 || dropped % 100 == 0 {
                        tracing::warn!(url = %hook.url, event = event_type, dropped, "webhook queue full; event dropped");
                    }
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    tracing::debug!(url = %hook.url, event = event_type, "webhooks shut down; event not sent");
                }
            }
        }
    }

    pub fn stats(&self) -> Vec<WebhookStats> {
        self.hooks
            .iter()
            .map(|h| WebhookStats {
                url: h.url.clone(),
                delivered: h.counters.delivered.load(Ordering::Relaxed),
                failed: h.counters.failed.load(Ordering::Relaxed),
                retries: h.counters.retries.load(Ordering::Relaxed),
                dropped: h.counters.dropped.load(Ordering::Relaxed),
                queued: h.tx.max_capacity() - h.tx.capacity(),
            })
            .collect()
    }

    /// Stops the workers after the queue drains or `grace` elapses.
    pub async fn shutdown(&self, grace: Duration) {
        self.stop.send_replace(true);
        let workers = match self.workers.lock() {
            Ok(mut guard) => std::mem::take(&mut *guard),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        };
        let deadline = tokio::time::Instant::now() + grace;
        for mut worker in workers {
            match tokio::time::timeout_at(deadline, &mut worker).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "a webhook worker ended abnormally"),
                Err(_) => {
                    worker.abort();
                    tracing::warn!(
                        "a webhook queue did not drain within the grace period; its events are lost"
                    );
                }
            }
        }
    }
}

/// "sha256=<hex>", so receivers can verify the body came from us.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

async fn worker(
    client: Option<reqwest::Client>,
    target: Target,
    options: WebhookOptions,
    mut rx: mpsc::Receiver<Job>,
    mut stop: watch::Receiver<bool>,
) {
    let mut closing = false;
    loop {
        let job = if closing {
            rx.recv().await
        } else {
            tokio::select! {
                job = rx.recv() => job,
                // Refuse new events but keep delivering what is queued.
                _ = stop.wait_for(|stopped| *stopped) => {
                    rx.close();
                    closing = true;
                    continue;
                }
            }
        };
        let Some(job) = job else { break };
        match &client {
            Some(client) => deliver(client, &target, &options, &job).await,
            None => {
                target.counters.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

enum Outcome {
    Delivered,
    /// Not worth retrying: the receiver refused the event itself.
    Refused(String),
    Retry {
        reason: String,
        after: Option<Duration>,
    },
}

async fn deliver(client: &reqwest::Client, target: &Target, options: &WebhookOptions, job: &Job) {
    let signature = target.secret.as_deref().map(|s| sign(s, &job.body));
    let max_attempts = options.max_attempts.max(1);
    let mut attempt = 1;
    loop {
        match post(client, target, job, signature.as_deref(), options.cap).await {
            Outcome::Delivered => {
                target.counters.delivered.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Outcome::Refused(reason) => {
                target.counters.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(url = %target.url, event = %job.event, %reason, "webhook refused the event; not retrying");
                return;
            }
            Outcome::Retry { reason, after } => {
                if attempt >= max_attempts {
                    target.counters.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(url = %target.url, event = %job.event, attempts = attempt, %reason, "webhook delivery failed; giving up");
                    return;
                }
                let delay = after.unwrap_or_else(|| backoff(attempt, options.base, options.cap));
                target.counters.retries.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(url = %target.url, event = %job.event, attempt, ?delay, %reason, "webhook delivery failed; retrying");
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
        }
    }
}

async fn post(
    client: &reqwest::Client,
    target: &Target,
    job: &Job,
    signature: Option<&str>,
    cap: Duration,
) -> Outcome {
    let mut request = client
        .post(&target.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("X-Moonwire-Event", &*job.event)
        .body(job.body.to_vec());
    if let Some(signature) = signature {
        request = request.header("X-Moonwire-Signature", signature);
    }
    match request.send().await {
        Ok(response) => {
            let status = response.status();
            if status.is_success() {
                Outcome::Delivered
            } else if retryable(status) {
                let after = match status {
                    StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => response
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| retry_after(v, cap)),
                    _ => None,
                };
                Outcome::Retry {
                    reason: format!("status {status}"),
                    after,
                }
            } else {
                Outcome::Refused(format!("status {status}"))
            }
        }
        // A malformed URL or header will not get better by retrying.
        Err(e) if e.is_builder() => Outcome::Refused(e.without_url().to_string()),
        Err(e) => Outcome::Retry {
            reason: e.without_url().to_string(),
            after: None,
        },
    }
}

fn retryable(status: StatusCode) -> bool {
    status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
}

/// Only the delay-seconds form; an HTTP date falls back to our own backoff.
fn retry_after(value: &str, cap: Duration) -> Option<Duration> {
    value
        .trim()
        .parse::<u64>()
        .ok()
        .map(|secs| Duration::from_secs(secs).min(cap))
}

/// Full jitter: uniform in `[0, min(cap, base * 2^(attempt-1))]`, so many
/// failing webhooks do not retry in lockstep.
fn backoff(attempt: u32, base: Duration, cap: Duration) -> Duration {
    let factor = 1u32
        .checked_shl(attempt.saturating_sub(1))
        .unwrap_or(u32::MAX);
    let ceiling = base.saturating_mul(factor).min(cap);
    let ceiling = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(rand::thread_rng().gen_range(0..=ceiling))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::net::SocketAddr;

    use axum::Router;
    use axum::body::Bytes;
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode as HttpStatus, Uri};
    use axum::response::{IntoResponse, Response};
    use serde_json::json;

    #[derive(Clone, Copy)]
    enum Reply {
        Status(u16),
        RetryAfter(u16, &'static str),
        Hang,
    }

    struct Recorded {
        path: String,
        headers: HeaderMap,
        body: Vec<u8>,
    }

    struct Receiver {
        requests: Mutex<Vec<Recorded>>,
        script: Mutex<VecDeque<Reply>>,
        /// Once the script runs out.
        default: Reply,
    }

    impl Receiver {
        async fn start(script: &[Reply], default: Reply) -> (SocketAddr, Arc<Receiver>) {
            let receiver = Arc::new(Receiver {
                requests: Mutex::new(Vec::new()),
                script: Mutex::new(script.iter().copied().collect()),
                default,
            });
            let app = Router::new().fallback(handle).with_state(receiver.clone());
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
            (addr, receiver)
        }

        fn count(&self) -> usize {
            self.requests.lock().unwrap().len()
        }

        fn bodies(&self) -> Vec<serde_json::Value> {
            let requests = self.requests.lock().unwrap();
            requests
                .iter()
                .map(|r| serde_json::from_slice(&r.body).unwrap())
                .collect()
        }
    }

    async fn handle(
        State(receiver): State<Arc<Receiver>>,
        uri: Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> Response {
        receiver.requests.lock().unwrap().push(Recorded {
            path: uri.path().to_string(),
            headers,
            body: body.to_vec(),
        });
        let reply = receiver
            .script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(receiver.default);
        match reply {
            Reply::Status(code) => HttpStatus::from_u16(code).unwrap().into_response(),
            Reply::RetryAfter(code, after) => (
                HttpStatus::from_u16(code).unwrap(),
                [("retry-after", after)],
            )
                .into_response(),
            Reply::Hang => std::future::pending().await,
        }
    }

    fn fast() -> WebhookOptions {
        WebhookOptions {
            queue: 100,
            max_attempts: 6,
            base: Duration::from_millis(5),
            cap: Duration::from_millis(20),
            timeout: Duration::from_secs(1),
        }
    }

    fn hook(addr: SocketAddr, path: &str, events: &[&str], secret: Option<&str>) -> WebhookConfig {
        WebhookConfig {
            url: format!("http://{addr}{path}"),
            events: events.iter().map(|e| e.to_string()).collect(),
            secret: secret.map(str::to_string),
        }
    }

    /// Polls until every webhook has settled `n` events (delivered or failed).
    async fn settled(webhooks: &Webhooks, n: u64) -> Vec<WebhookStats> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        loop {
            let stats = webhooks.stats();
            if stats.iter().all(|s| s.delivered + s.failed >= n) {
                return stats;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "not settled in time: {stats:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[test]
    fn sign_matches_rfc4231_vector() {
        assert_eq!(
            sign("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn backoff_stays_within_the_capped_exponential_ceiling() {
        let base = Duration::from_millis(10);
        let cap = Duration::from_millis(50);
        for _ in 0..200 {
            assert!(backoff(1, base, cap) <= base);
            assert!(backoff(2, base, cap) <= base * 2);
            assert!(backoff(3, base, cap) <= cap);
            assert!(backoff(40, base, cap) <= cap);
            assert!(backoff(u32::MAX, Duration::MAX, cap) <= cap);
        }
    }

    #[test]
    fn retry_after_takes_seconds_and_is_capped() {
        let cap = Duration::from_secs(30);
        assert_eq!(retry_after(" 2 ", cap), Some(Duration::from_secs(2)));
        assert_eq!(retry_after("600", cap), Some(cap));
        assert_eq!(retry_after("Wed, 21 Oct 2015 07:28:00 GMT", cap), None);
    }

    #[tokio::test]
    async fn delivers_signed_json_with_event_header() {
        let (addr, receiver) = Receiver::start(&[], Reply::Status(200)).await;
        let webhooks = Webhooks::start(&[hook(addr, "/hook", &["state"], Some("s3cret"))], fast());
        let body = json!({"instance": "main", "state": "online", "n": 1});
        webhooks.dispatch("state", &body);
        let stats = settled(&webhooks, 1).await;
        assert_eq!(stats[0].delivered, 1);
        assert_eq!(stats[0].retries, 0);

        let requests = receiver.requests.lock().unwrap();
        assert_eq!(requests.len(), 1);
        let r = &requests[0];
        assert_eq!(r.path, "/hook");
        assert_eq!(r.headers["x-moonwire-event"], "state");
        assert_eq!(r.headers["content-type"], "application/json");
        assert!(
            r.headers["user-agent"]
                .to_str()
                .unwrap()
                .starts_with("moonwire/")
        );
        assert_eq!(
            r.headers["x-moonwire-signature"],
            sign("s3cret", &r.body).as_str()
        );
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&r.body).unwrap(),
            body
        );
    }

    #[tokio::test]
    async fn no_signature_without_secret() {
        let (addr, receiver) = Receiver::start(&[], Reply::Status(204)).await;
        let webhooks = Webhooks::start(&[hook(addr, "/", &["message"], None)], fast());
        webhooks.dispatch("message", &json!({"text": "hi"}));
        assert_eq!(settled(&webhooks, 1).await[0].delivered, 1);
        let requests = receiver.requests.lock().unwrap();
        assert!(!requests[0].headers.contains_key("x-moonwire-signature"));
    }

    #[tokio::test]
    async fn only_subscribed_events_are_sent() {
        let (addr, receiver) = Receiver::start(&[], Reply::Status(200)).await;
        let webhooks = Webhooks::start(
            &[
                hook(addr, "/qr", &["qr"], None),
                hook(addr, "/state", &["state", "script_error"], None),
            ],
            fast(),
        );
        webhooks.dispatch("state", &json!({"state": "connecting"}));
        webhooks.dispatch("qr", &json!({"code": "abc"}));
        webhooks.dispatch("script_error", &json!({"error": "boom"}));
        // Per-webhook order means once "/qr" has its one event, "state"
        // would already have arrived had it been sent.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while !(webhooks.stats()[0].delivered == 1 && webhooks.stats()[1].delivered == 2) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{:?}",
                webhooks.stats()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let requests = receiver.requests.lock().unwrap();
        let events = |path: &str| -> Vec<String> {
            requests
                .iter()
                .filter(|r| r.path == path)
                .map(|r| r.headers["x-moonwire-event"].to_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(events("/qr"), ["qr"]);
        assert_eq!(events("/state"), ["state", "script_error"]);
    }

    #[tokio::test]
    async fn server_error_is_retried_then_delivered() {
        let (addr, receiver) = Receiver::start(&[Reply::Status(500)], Reply::Status(200)).await;
        let webhooks = Webhooks::start(&[hook(addr, "/", &["state"], Some("k"))], fast());
        let body = json!({"state": "online"});
        webhooks.dispatch("state", &body);
        let stats = settled(&webhooks, 1).await;
        assert_eq!(
            (stats[0].delivered, stats[0].retries, stats[0].failed),
            (1, 1, 0)
        );
        assert_eq!(receiver.count(), 2);
        assert_eq!(receiver.bodies(), [body.clone(), body]);
    }

    #[tokio::test]
    async fn client_error_is_not_retried() {
        let (addr, receiver) = Receiver::start(&[Reply::Status(400)], Reply::Status(200)).await;
        let webhooks = Webhooks::start(&[hook(addr, "/", &["state"], None)], fast());
        webhooks.dispatch("state", &json!({}));
        let stats = settled(&webhooks, 1).await;
        assert_eq!(
            (stats[0].delivered, stats[0].retries, stats[0].failed),
            (0, 0, 1)
        );
        assert_eq!(receiver.count(), 1);
    }

    #[tokio::test]
    async fn too_many_requests_is_retried_honoring_retry_after() {
        let (addr, receiver) = Receiver::start(
            &[Reply::RetryAfter(429, "0"), Reply::Status(429)],
            Reply::Status(200),
        )
        .await;
        let webhooks = Webhooks::start(&[hook(addr, "/", &["qr"], None)], fast());
        webhooks.dispatch("qr", &json!({"code": "x"}));
        let stats = settled(&webhooks, 1).await;
        assert_eq!(
            (stats[0].delivered, stats[0].retries, stats[0].failed),
            (1, 2, 0)
        );
        assert_eq!(receiver.count(), 3);
    }

    #[tokio::test]
    async fn dead_url_gives_up_after_max_attempts() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let options = WebhookOptions {
            max_attempts: 3,
            ..fast()
        };
        let webhooks = Webhooks::start(&[hook(addr, "/", &["state"], None)], options);
        webhooks.dispatch("state", &json!({}));
        let stats = settled(&webhooks, 1).await;
        assert_eq!(
            (stats[0].delivered, stats[0].retries, stats[0].failed),
            (0, 2, 1)
        );
    }

    #[tokio::test]
    async fn full_queue_drops_instead_of_blocking() {
        let (addr, _receiver) = Receiver::start(&[], Reply::Hang).await;
        let options = WebhookOptions {
            queue: 2,
            max_attempts: 1,
            timeout: Duration::from_millis(200),
            ..fast()
        };
        let webhooks = Webhooks::start(&[hook(addr, "/", &["message"], None)], options);
        for n in 0..50 {
            webhooks.dispatch("message", &json!({ "n": n }));
        }
        let stats = webhooks.stats();
        assert!(stats[0].dropped > 0, "{stats:?}");
        assert!(stats[0].queued <= 2, "{stats:?}");
        webhooks.shutdown(Duration::from_millis(50)).await;
    }

    #[tokio::test]
    async fn events_arrive_in_order() {
        // Some failures on the way must not reorder anything.
        let (addr, receiver) = Receiver::start(
            &[Reply::Status(503), Reply::Status(200), Reply::Status(502)],
            Reply::Status(200),
        )
        .await;
        let webhooks = Webhooks::start(&[hook(addr, "/", &["message"], None)], fast());
        for n in 0..20 {
            webhooks.dispatch("message", &json!({ "n": n }));
        }
        let stats = settled(&webhooks, 20).await;
        assert_eq!(stats[0].delivered, 20);
        let received: Vec<serde_json::Value> = receiver.bodies();
        let mut order: Vec<i64> = received.iter().map(|b| b["n"].as_i64().unwrap()).collect();
        order.dedup();
        assert_eq!(order, (0..20).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn shutdown_drains_the_queue_then_refuses_events() {
        let (addr, receiver) = Receiver::start(&[], Reply::Status(200)).await;
        let webhooks = Webhooks::start(&[hook(addr, "/", &["state"], None)], fast());
        for n in 0..5 {
            webhooks.dispatch("state", &json!({ "n": n }));
        }
        webhooks.shutdown(Duration::from_secs(2)).await;
        assert_eq!(webhooks.stats()[0].delivered, 5);
        webhooks.dispatch("state", &json!({"late": true}));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(receiver.count(), 5);
        assert_eq!(webhooks.stats()[0].dropped, 0);
        // A second shutdown is harmless.
        webhooks.shutdown(Duration::from_millis(10)).await;
    }
}
