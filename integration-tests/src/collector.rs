//! A minimal OTLP/HTTP collector for tests: accepts `POST /v1/traces` with a
//! JSON body on loopback (HTTP/1.1, keep-alive), answers `200 {}` and keeps
//! every request body for the test to inspect.

use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// The collector's address and what it received.
#[derive(Clone)]
pub struct Collector {
    pub url: String,
    received: Arc<Mutex<Vec<Value>>>,
}

impl Collector {
    /// Listens on a free loopback port until the runtime stops.
    pub async fn start() -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let received = Arc::new(Mutex::new(Vec::new()));
        let sink = received.clone();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let sink = sink.clone();
                tokio::spawn(async move {
                    if let Err(e) = serve(conn, sink).await {
                        eprintln!("test collector: {e:#}");
                    }
                });
            }
        });
        Ok(Self { url, received })
    }

    /// Every export request body received so far.
    pub fn received(&self) -> Vec<Value> {
        self.received.lock().expect("collector lock").clone()
    }
}

async fn serve(conn: TcpStream, sink: Arc<Mutex<Vec<Value>>>) -> Result<()> {
    let mut conn = BufReader::new(conn);
    loop {
        let mut request_line = String::new();
        if conn.read_line(&mut request_line).await? == 0 {
            return Ok(());
        }
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            conn.read_line(&mut line).await?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().context("content-length")?;
                }
            }
        }
        let mut body = vec![0u8; length];
        conn.read_exact(&mut body).await?;
        if !request_line.starts_with("POST /v1/traces ") {
            bail!("unexpected request {request_line:?}");
        }
        let value: Value = serde_json::from_slice(&body).context("export body is JSON")?;
        sink.lock().expect("collector lock").push(value);
        conn.get_mut()
            .write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}",
            )
            .await?;
    }
}
