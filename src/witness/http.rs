//! The small HTTP/1.1 client the log and the monitor use to talk to witnesses (hyper, plain
//! HTTP on the same tokio runtime). Every call has a deadline and a bounded answer size.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

/// Longest one witness call may take.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// Largest answer read from a witness.
const MAX_ANSWER: usize = 64 * 1024;

#[derive(Clone)]
pub struct HttpClient {
    inner: Client<HttpConnector, Full<Bytes>>,
}

impl Default for HttpClient {
    fn default() -> Self {
        let mut c = HttpConnector::new();
        c.set_connect_timeout(Some(TIMEOUT));
        c.set_nodelay(true);
        HttpClient {
            inner: Client::builder(TokioExecutor::new()).build(c),
        }
    }
}

/// An HTTP answer: status and body text (lossy UTF-8).
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: String,
}

impl HttpClient {
    pub async fn post(&self, url: &str, body: String) -> anyhow::Result<Reply> {
        let req = hyper::Request::post(url)
            .header("content-type", "text/plain; charset=utf-8")
            .body(Full::new(Bytes::from(body)))?;
        self.send(req).await
    }

    pub async fn get(&self, url: &str) -> anyhow::Result<Reply> {
        let req = hyper::Request::get(url).body(Full::new(Bytes::new()))?;
        self.send(req).await
    }

    async fn send(&self, req: hyper::Request<Full<Bytes>>) -> anyhow::Result<Reply> {
        let uri = req.uri().to_string();
        let call = async {
            let res = self.inner.request(req).await?;
            let status = res.status().as_u16();
            let body = Limited::new(res.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| anyhow::anyhow!("reading the answer: {e}"))?
                .to_bytes();
            anyhow::Ok(Reply {
                status,
                body: String::from_utf8_lossy(&body).into_owned(),
            })
        };
        match tokio::time::timeout(TIMEOUT, call).await {
            Ok(r) => r.map_err(|e| anyhow::anyhow!("{uri}: {e}")),
            Err(_) => anyhow::bail!("{uri}: no answer within {TIMEOUT:?}"),
        }
    }
}
