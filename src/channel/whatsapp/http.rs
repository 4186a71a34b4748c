//! whatsapp-rust's `HttpClient` on reqwest (rustls). The client uses it for the
//! version lookup and media up/downloads, and reads the status itself to tell
//! an expired token from a dead host, so any completed exchange is `Ok`.

use std::time::Duration;

use anyhow::{Context, anyhow};
use async_trait::async_trait;
use reqwest::header::{HeaderName, HeaderValue};
use wacore::net::{HttpClient, HttpRequest, HttpResponse};

/// Dialing should never need long; the overall timeout still bounds the rest.
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub struct ReqwestHttpClient {
    client: reqwest::Client,
    failure: super::transport::LastFailure,
    /// Where a streamed upload's request runs (it is handed over on a
    /// blocking thread).
    rt: Option<tokio::runtime::Handle>,
}

/// A reqwest client with `timeout` for a whole exchange that also trusts
/// `roots` (DER certificates; only tests give any, for the mock's media
/// host).
pub fn client(timeout: Duration, roots: &[Vec<u8>]) -> anyhow::Result<reqwest::Client> {
    let mut b = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(MAX_CONNECT_TIMEOUT));
    for der in roots {
        b = b.add_root_certificate(
            reqwest::Certificate::from_der(der).context("an extra root certificate")?,
        );
    }
    b.build().context("building the HTTP client")
}

impl ReqwestHttpClient {
    /// `timeout` bounds a whole exchange, body included, so it must allow for
    /// the largest media download expected.
    pub fn new(timeout: Duration) -> anyhow::Result<Self> {
        Self::with_roots(timeout, &[])
    }

    /// As `new`, also trusting `roots` (see [`client`]).
    pub fn with_roots(timeout: Duration, roots: &[Vec<u8>]) -> anyhow::Result<Self> {
        Ok(ReqwestHttpClient {
            client: client(timeout, roots)?,
            failure: Default::default(),
            rt: tokio::runtime::Handle::try_current().ok(),
        })
    }

    /// Where the cause of a failed exchange is recorded (the version lookup
    /// before a dial can be what fails an attempt).
    pub fn with_failure(mut self, failure: super::transport::LastFailure) -> Self {
        self.failure = failure;
        self
    }
}

#[async_trait]
impl HttpClient for ReqwestHttpClient {
    async fn execute(&self, request: HttpRequest) -> anyhow::Result<HttpResponse> {
        let method = reqwest::Method::from_bytes(request.method.as_bytes())
            .map_err(|_| anyhow!("invalid HTTP method {:?}", request.method))?;
        let url = reqwest::Url::parse(&request.url).context("invalid HTTP URL")?;
        // Media URLs carry auth tokens in the query: name only the host.
        let host = url.host_str().unwrap_or("?").to_string();
        let mut builder = self.client.request(method.clone(), url);
        for (name, value) in &request.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| anyhow!("invalid HTTP header name {name:?}"))?;
            let value = HeaderValue::from_str(value)
                .map_err(|_| anyhow!("invalid value for HTTP header {name}"))?;
            builder = builder.header(name, value);
        }
        if let Some(body) = request.body {
            builder = builder.body(body);
        }
        let response = builder.send().await.map_err(|e| {
            let e = e.without_url();
            let why = format!(
                "HTTP {method} to {host} failed: {}",
                super::transport::error_chain(&e)
            );
            self.failure.record(why.clone());
            anyhow!(why)
        })?;
        let status_code = response.status().as_u16();
        let body = response.bytes().await.map_err(|e| {
            anyhow!(
                "HTTP {method} to {host}: reading the body failed: {}",
                e.without_url()
            )
        })?;
        Ok(HttpResponse {
            status_code,
            body: body.to_vec(),
        })
    }

    fn supports_upload_streaming(&self) -> bool {
        self.rt.is_some()
    }

    /// A media upload: the library hands the encrypted file as a reader on
    /// a blocking thread. It is read once into the request body (the
    /// plaintext was never in memory) and sent with its exact length.
    fn execute_upload(
        &self,
        request: HttpRequest,
        body: wacore::net::UploadBody,
        content_length: u64,
    ) -> anyhow::Result<HttpResponse> {
        let rt = self
            .rt
            .as_ref()
            .ok_or_else(|| anyhow!("streamed uploads need a tokio runtime"))?;
        let cap = usize::try_from(content_length).context("the upload is too large")?;
        let mut buf = Vec::with_capacity(cap);
        std::io::Read::read_to_end(&mut std::io::Read::take(body, content_length), &mut buf)
            .context("reading the upload")?;
        if buf.len() as u64 != content_length {
            return Err(anyhow!(
                "the upload ended after {} of {content_length} bytes",
                buf.len()
            ));
        }
        rt.block_on(self.execute(request.with_body(buf)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::{get, post};
    use std::time::Instant;
    use tokio::net::TcpListener;

    async fn serve() -> String {
        let app = Router::new()
            .route("/ok", get(|| async { "hello" }))
            .route(
                "/missing",
                get(|| async { (StatusCode::NOT_FOUND, "nope") }),
            )
            .route(
                "/broken",
                get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "oops") }),
            )
            .route(
                "/echo",
                post(|headers: HeaderMap, body: axum::body::Bytes| async move {
                    let tag = headers
                        .get("x-test")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    let kind = headers
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    let mut out = format!("{tag}|{kind}|").into_bytes();
                    out.extend_from_slice(&body);
                    (StatusCode::CREATED, out)
                }),
            );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        format!("http://{addr}")
    }

    fn client() -> ReqwestHttpClient {
        ReqwestHttpClient::new(Duration::from_secs(5)).unwrap()
    }

    #[tokio::test]
    async fn get_returns_status_and_body() {
        let base = serve().await;
        let resp = client()
            .execute(HttpRequest::get(format!("{base}/ok")))
            .await
            .unwrap();
        assert_eq!(resp.status_code, 200);
        assert_eq!(resp.body, b"hello");
    }

    #[tokio::test]
    async fn error_statuses_are_ok_responses() {
        let base = serve().await;
        let client = client();
        let resp = client
            .execute(HttpRequest::get(format!("{base}/missing")))
            .await
            .unwrap();
        assert_eq!(resp.status_code, 404);
        assert_eq!(resp.body, b"nope");
        let resp = client
            .execute(HttpRequest::get(format!("{base}/broken")))
            .await
            .unwrap();
        assert_eq!(resp.status_code, 500);
    }

    #[tokio::test]
    async fn post_carries_headers_and_body() {
        let base = serve().await;
        let request = HttpRequest::post(format!("{base}/echo"))
            .with_header("X-Test", "tag-1")
            .with_header("Content-Type", "application/octet-stream")
            .with_body(vec![0u8, 1, 2, 255]);
        let resp = client().execute(request).await.unwrap();
        assert_eq!(resp.status_code, 201);
        let mut expected = b"tag-1|application/octet-stream|".to_vec();
        expected.extend_from_slice(&[0, 1, 2, 255]);
        assert_eq!(resp.body, expected);
    }

    #[tokio::test]
    async fn silent_server_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            // Accept and hold the connection; never answer.
            let (_sock, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(10)).await;
        });
        let client = ReqwestHttpClient::new(Duration::from_millis(300)).unwrap();
        let started = Instant::now();
        let result = client
            .execute(HttpRequest::get(format!("http://{addr}/never?auth=secret")))
            .await;
        let Err(err) = result else {
            panic!("a silent server must time out");
        };
        assert!(started.elapsed() < Duration::from_secs(3));
        let text = format!("{err:#}");
        assert!(!text.contains("secret"), "token leaked into error: {text}");
    }

    #[tokio::test]
    async fn malformed_requests_are_errors() {
        let client = client();
        let mut request = HttpRequest::get("http://127.0.0.1:1/");
        request.method = "GE T".to_string();
        assert!(client.execute(request).await.is_err());
        let request = HttpRequest::get("http://127.0.0.1:1/").with_header("bad name", "x");
        assert!(client.execute(request).await.is_err());
        assert!(client.execute(HttpRequest::get("not a url")).await.is_err());
    }
}
