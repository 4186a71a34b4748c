//! Outbound HTTP for scripts (`bot.http`), on reqwest with rustls.
//!
//! What keeps a script from turning the host into a proxy into its own
//! network: every address is checked where the connection is made, not
//! where the URL is read. Host names go through [`GuardedResolver`], which
//! hands reqwest only the addresses that pass (so a name that resolves to a
//! public address on the first lookup and a private one on the next cannot
//! slip through); IP literals, which reqwest connects to without resolving,
//! are checked before the request and on every redirect hop. System proxies
//! are ignored: through a proxy the check would only see the proxy.
//!
//! Limits: the whole call (waiting for a slot, connecting, reading the
//! body) ends at the timeout; a body is read in chunks and given up as soon
//! as it passes the limit; at most `max_in_flight` requests per instance
//! are on the wire. A request past that waits for a free slot, and the wait
//! counts against its own timeout, so a burst queues briefly instead of
//! failing, and nothing waits forever.

use std::collections::HashMap;
use std::error::Error as _;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, Url, redirect};
use tokio::sync::Semaphore;

use super::net::{AllowList, Restricted, classify};

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Redirects followed before giving up, as browsers roughly do.
pub const MAX_REDIRECTS: usize = 10;

/// The limits, from `[script.http]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpPolicy {
    /// A request's default timeout, and the most a script may ask for.
    pub timeout: Duration,
    /// Largest response (and request) body, in bytes.
    pub max_body: usize,
    /// Requests on the wire at once per instance; more wait for a slot.
    pub max_in_flight: usize,
    /// Non-public hosts a script may reach anyway.
    pub allow: AllowList,
}

impl Default for HttpPolicy {
    fn default() -> HttpPolicy {
        HttpPolicy {
            timeout: Duration::from_millis(10_000),
            max_body: 8 * 1024 * 1024,
            max_in_flight: 4,
            allow: AllowList::default(),
        }
    }
}

impl HttpPolicy {
    pub fn from_config(c: &crate::config::ScriptHttpConfig) -> HttpPolicy {
        HttpPolicy {
            timeout: Duration::from_millis(c.timeout_ms),
            max_body: usize::try_from(c.max_body_mb.saturating_mul(1024 * 1024))
                .unwrap_or(usize::MAX),
            max_in_flight: c.max_in_flight,
            allow: c.allow.clone(),
        }
    }
}

/// What a script asks for. `headers` may repeat a name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpRequest {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// `None`: the policy's timeout. Longer than that is cut to it.
    pub timeout: Option<Duration>,
}

impl HttpRequest {
    pub fn get(url: impl Into<String>) -> HttpRequest {
        HttpRequest {
            method: "GET".into(),
            url: url.into(),
            ..HttpRequest::default()
        }
    }

    pub fn post(url: impl Into<String>, body: impl Into<Vec<u8>>) -> HttpRequest {
        HttpRequest {
            method: "POST".into(),
            url: url.into(),
            body: body.into(),
            ..HttpRequest::default()
        }
    }
}

/// What the server answered (any status: a 404 is an answer, not an error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    /// Lowercase names, in the order received; a value that is not UTF-8
    /// is decoded lossily.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Why a request failed. The texts are meant for a script to show as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    #[error("invalid URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("only http:// and https:// URLs are allowed, got {0}://")]
    Scheme(String),
    #[error("invalid method {0:?}")]
    Method(String),
    #[error("invalid header {0:?}")]
    Header(String),
    #[error(
        "refused to connect to {host} ({addr} is a {why} address); list the host in [script.http] allow to reach it"
    )]
    Refused {
        host: String,
        addr: IpAddr,
        why: Restricted,
    },
    #[error("cannot resolve {host}: {reason}")]
    Dns { host: String, reason: String },
    #[error("timed out after {} ms", .0.as_millis())]
    Timeout(Duration),
    #[error(
        "timed out after {} ms waiting for a free request slot ({in_flight} requests of this instance in flight)",
        .after.as_millis()
    )]
    QueueTimeout { after: Duration, in_flight: usize },
    #[error("response body larger than the {limit} byte limit ([script.http] max_body_mb)")]
    BodyTooLarge { limit: usize },
    #[error("request body larger than the {limit} byte limit ([script.http] max_body_mb)")]
    RequestTooLarge { limit: usize },
    #[error("more than {0} redirects")]
    TooManyRedirects(usize),
    #[error("connection failed: {0}")]
    Connect(String),
    #[error("request failed: {0}")]
    Transport(String),
}

impl HttpError {
    /// The metrics label of a failure.
    fn class(&self) -> &'static str {
        match self {
            HttpError::Refused { .. } => "refused",
            HttpError::Timeout(_) | HttpError::QueueTimeout { .. } => "timeout",
            _ => "error",
        }
    }
}

/// Where finished requests are counted (the host's metrics).
pub trait HttpObserver: Send + Sync + 'static {
    /// `class` is "1xx" ... "5xx" for an answer, else "refused", "timeout"
    /// or "error".
    fn request_done(&self, class: &'static str, elapsed: Duration);
}

/// Name resolution, injectable so tests can make a name resolve anywhere.
pub trait Lookup: Send + Sync + 'static {
    fn lookup(&self, host: &str) -> BoxFuture<io::Result<Vec<IpAddr>>>;
}

/// The system resolver (getaddrinfo on tokio's blocking pool).
pub struct SystemLookup;

impl Lookup for SystemLookup {
    fn lookup(&self, host: &str) -> BoxFuture<io::Result<Vec<IpAddr>>> {
        let host = host.to_string();
        Box::pin(async move {
            let addrs = tokio::net::lookup_host((host.as_str(), 0)).await?;
            Ok(addrs.map(|a| a.ip()).collect())
        })
    }
}

/// Resolves a name and keeps only the addresses the policy allows. Runs
/// at connect time, for the first request and every redirect hop.
pub struct GuardedResolver {
    lookup: Arc<dyn Lookup>,
    allow: AllowList,
}

impl GuardedResolver {
    pub fn new(lookup: Arc<dyn Lookup>, allow: AllowList) -> GuardedResolver {
        GuardedResolver { lookup, allow }
    }

    /// The addresses of `host` that may be connected to.
    pub async fn resolve_host(&self, host: &str) -> Result<Vec<IpAddr>, HttpError> {
        let ips = self.lookup.lookup(host).await.map_err(|e| HttpError::Dns {
            host: host.to_string(),
            reason: e.to_string(),
        })?;
        if ips.is_empty() {
            return Err(HttpError::Dns {
                host: host.to_string(),
                reason: "no addresses".into(),
            });
        }
        let listed = self.allow.allows_host(host);
        let mut refused = None;
        let mut ok = Vec::with_capacity(ips.len());
        for ip in ips {
            match check_ip(&self.allow, listed, ip) {
                Ok(()) => ok.push(ip),
                Err(why) => {
                    refused.get_or_insert((ip, why));
                }
            }
        }
        match (ok.is_empty(), refused) {
            (true, Some((addr, why))) => Err(HttpError::Refused {
                host: host.to_string(),
                addr,
                why,
            }),
            _ => Ok(ok),
        }
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let this = GuardedResolver {
            lookup: self.lookup.clone(),
            allow: self.allow.clone(),
        };
        Box::pin(async move {
            match this.resolve_host(name.as_str()).await {
                // Port 0: reqwest puts in the URL's port.
                Ok(ips) => Ok(Box::new(ips.into_iter().map(|ip| SocketAddr::new(ip, 0))) as Addrs),
                Err(e) => Err(Box::new(e) as Box<dyn std::error::Error + Send + Sync>),
            }
        })
    }
}

fn check_ip(allow: &AllowList, host_listed: bool, ip: IpAddr) -> Result<(), Restricted> {
    match classify(ip) {
        None => Ok(()),
        Some(_) if host_listed || allow.allows_ip(ip) => Ok(()),
        Some(why) => Err(why),
    }
}

/// The checks a URL gets before it is fetched and on each redirect: the
/// scheme, and an IP-literal host (which no resolver sees).
fn check_url(url: &Url, allow: &AllowList) -> Result<(), HttpError> {
    match url.scheme() {
        "http" | "https" => {}
        other => return Err(HttpError::Scheme(other.to_string())),
    }
    let ip = match url.host() {
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip),
        Some(url::Host::Domain(_)) => return Ok(()),
        None => {
            return Err(HttpError::InvalidUrl {
                url: url.to_string(),
                reason: "no host".into(),
            });
        }
    };
    check_ip(allow, false, ip).map_err(|why| HttpError::Refused {
        host: ip.to_string(),
        addr: ip,
        why,
    })
}

/// The client scripts share. Cheap to clone.
#[derive(Clone)]
pub struct HttpClient {
    inner: Arc<Inner>,
}

struct Inner {
    client: reqwest::Client,
    policy: HttpPolicy,
    slots: Mutex<HashMap<String, Arc<Slots>>>,
    observer: Option<Arc<dyn HttpObserver>>,
}

impl HttpClient {
    pub fn new(
        policy: HttpPolicy,
        observer: Option<Arc<dyn HttpObserver>>,
    ) -> Result<HttpClient, HttpError> {
        HttpClient::with_lookup(policy, observer, Arc::new(SystemLookup))
    }

    /// As `new`, resolving names through `lookup`.
    pub fn with_lookup(
        policy: HttpPolicy,
        observer: Option<Arc<dyn HttpObserver>>,
        lookup: Arc<dyn Lookup>,
    ) -> Result<HttpClient, HttpError> {
        let allow = policy.allow.clone();
        let redirects = redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() > MAX_REDIRECTS {
                return attempt.error(HttpError::TooManyRedirects(MAX_REDIRECTS));
            }
            match check_url(attempt.url(), &allow) {
                Ok(()) => attempt.follow(),
                Err(e) => attempt.error(e),
            }
        });
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(redirects)
            // A path or query may carry a token; the next host need not see it.
            .referer(false)
            .user_agent(concat!("moonwire/", env!("CARGO_PKG_VERSION")))
            .dns_resolver(Arc::new(GuardedResolver::new(lookup, policy.allow.clone())))
            .build()
            .map_err(|e| HttpError::Transport(chain(e)))?;
        Ok(HttpClient {
            inner: Arc::new(Inner {
                client,
                policy,
                slots: Mutex::default(),
                observer,
            }),
        })
    }

    pub fn policy(&self) -> &HttpPolicy {
        &self.inner.policy
    }

    /// Makes one request for a script of `instance`.
    pub async fn request(
        &self,
        instance: &str,
        req: HttpRequest,
    ) -> Result<HttpResponse, HttpError> {
        let started = Instant::now();
        let result = self.run(instance, req).await;
        if let Some(o) = &self.inner.observer {
            let class = match &result {
                Ok(r) => status_class(r.status),
                Err(e) => e.class(),
            };
            o.request_done(class, started.elapsed());
        }
        result
    }

    /// Drops an instance's slots (it was removed).
    pub fn forget(&self, instance: &str) {
        self.lock_slots().remove(instance);
    }

    /// An instance's requests now: (on the wire, waiting for a slot).
    pub fn load(&self, instance: &str) -> (usize, usize) {
        match self.lock_slots().get(instance) {
            Some(s) => (
                self.max_in_flight() - s.sem.available_permits(),
                s.waiting.load(Ordering::SeqCst),
            ),
            None => (0, 0),
        }
    }

    fn max_in_flight(&self) -> usize {
        self.inner.policy.max_in_flight.max(1)
    }

    fn lock_slots(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Slots>>> {
        self.inner.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn slots(&self, instance: &str) -> Arc<Slots> {
        let n = self.max_in_flight();
        self.lock_slots()
            .entry(instance.to_string())
            .or_insert_with(|| {
                Arc::new(Slots {
                    sem: Semaphore::new(n),
                    waiting: AtomicUsize::new(0),
                })
            })
            .clone()
    }

    async fn run(&self, instance: &str, req: HttpRequest) -> Result<HttpResponse, HttpError> {
        let policy = &self.inner.policy;
        let url = Url::parse(&req.url).map_err(|e| HttpError::InvalidUrl {
            url: req.url.clone(),
            reason: e.to_string(),
        })?;
        check_url(&url, &policy.allow)?;
        let method = Method::from_bytes(req.method.to_ascii_uppercase().as_bytes())
            .map_err(|_| HttpError::Method(req.method.clone()))?;
        let mut headers = HeaderMap::new();
        for (name, value) in &req.headers {
            let n = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| HttpError::Header(name.clone()))?;
            let v = HeaderValue::from_str(value).map_err(|_| HttpError::Header(name.clone()))?;
            headers.append(n, v);
        }
        if req.body.len() > policy.max_body {
            return Err(HttpError::RequestTooLarge {
                limit: policy.max_body,
            });
        }
        let timeout = req
            .timeout
            .map_or(policy.timeout, |t| t.min(policy.timeout));
        let slots = self.slots(instance);
        let mut waiting = true;
        let call = async {
            let _permit =
                {
                    let _count = Waiting::enter(&slots.waiting);
                    slots.sem.acquire().await.map_err(|_| {
                        HttpError::Transport("the HTTP client is shutting down".into())
                    })?
                };
            waiting = false;
            let resp = self
                .inner
                .client
                .request(method, url)
                .headers(headers)
                .body(req.body)
                .send()
                .await
                .map_err(map_error)?;
            read(resp, policy.max_body).await
        };
        match tokio::time::timeout(timeout, call).await {
            Ok(result) => result,
            Err(_) if waiting => Err(HttpError::QueueTimeout {
                after: timeout,
                in_flight: policy.max_in_flight,
            }),
            Err(_) => Err(HttpError::Timeout(timeout)),
        }
    }
}

/// One instance's request slots.
struct Slots {
    sem: Semaphore,
    waiting: AtomicUsize,
}

/// Counts a request as waiting for a slot until dropped (also when the
/// wait is cut by the timeout).
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn enter(n: &'a AtomicUsize) -> Waiting<'a> {
        n.fetch_add(1, Ordering::SeqCst);
        Waiting(n)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Reads the answer, never holding more than `limit` bytes of body.
async fn read(mut resp: reqwest::Response, limit: usize) -> Result<HttpResponse, HttpError> {
    if resp
        .content_length()
        .is_some_and(|n| n > u64::try_from(limit).unwrap_or(u64::MAX))
    {
        return Err(HttpError::BodyTooLarge { limit });
    }
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(map_error)? {
        if body.len() + chunk.len() > limit {
            return Err(HttpError::BodyTooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// Our own refusal if one is in the chain (from the resolver or the
/// redirect policy), else reqwest's error in words.
fn map_error(e: reqwest::Error) -> HttpError {
    let mut source = e.source();
    while let Some(s) = source {
        if let Some(ours) = s.downcast_ref::<HttpError>() {
            return ours.clone();
        }
        source = s.source();
    }
    if e.is_connect() {
        HttpError::Connect(chain(e))
    } else {
        HttpError::Transport(chain(e))
    }
}

/// An error and its causes on one line, without the URL (a script knows
/// it, and a query may carry a key that has no place in a log).
fn chain(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests;
