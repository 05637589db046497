//! A Server-Sent Events client for the suites, on a plain TCP connection: it sends exactly
//! the headers a test gives (e.g. `Accept-Encoding: gzip`), sees the status and headers as
//! they came, decodes HTTP/1.1 chunks as they arrive and checks every event's shape (one
//! `data:` line, or a comment) instead of forgiving it as a browser would.

use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// One item of an event stream.
#[derive(Debug, Clone, PartialEq)]
pub enum SseItem {
    /// `data: <json>`.
    Data(Value),
    /// A comment line (`:`), the keep-alive.
    Comment,
}

/// An open `GET` on an event stream (or its refusal).
pub struct SseClient {
    reader: BufReader<TcpStream>,
    /// The HTTP status.
    pub status: u16,
    /// Response headers, names in lower case.
    pub headers: Vec<(String, String)>,
    chunked: bool,
    buffer: Vec<u8>,
    ended: bool,
}

impl SseClient {
    /// `GET path_and_query` on `base_url` (`http://host:port`) with `headers`.
    pub async fn open(base_url: &str, path_and_query: &str, headers: &[(&str, &str)]) -> Result<Self> {
        let host = base_url.strip_prefix("http://").ok_or_else(|| anyhow!("not http: {base_url}"))?;
        let stream = TcpStream::connect(host).await.with_context(|| format!("connecting {host}"))?;
        let mut reader = BufReader::new(stream);
        let mut request =
            format!("GET {path_and_query} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        reader.get_mut().write_all(request.as_bytes()).await?;
        let mut line = String::new();
        reader.read_line(&mut line).await?;
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow!("bad status line {line:?}"))?;
        let mut headers = Vec::new();
        loop {
            line.clear();
            reader.read_line(&mut line).await?;
            let trimmed = line.trim_end();
            if trimmed.is_empty() {
                break;
            }
            if let Some((name, value)) = trimmed.split_once(':') {
                headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
            }
        }
        let chunked = headers.iter().any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
        Ok(Self { reader, status, headers, chunked, buffer: Vec::new(), ended: false })
    }

    /// The value of header `name` (lower case), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// The next item, waiting at most `limit`; `None` once the stream has ended.
    pub async fn next_item(&mut self, limit: Duration) -> Result<Option<SseItem>> {
        tokio::time::timeout(limit, self.read_item())
            .await
            .map_err(|_| anyhow!("no event within {limit:?}"))?
    }

    /// The next `data:` message (keep-alive comments skipped), waiting at most `limit`.
    pub async fn next_message(&mut self, limit: Duration) -> Result<Value> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_item(left).await? {
                Some(SseItem::Data(value)) => return Ok(value),
                Some(SseItem::Comment) => {}
                None => bail!("the stream ended"),
            }
        }
    }

    /// Messages until one of type `kind` (returned), waiting at most `limit` in all.
    pub async fn until(&mut self, kind: &str, limit: Duration) -> Result<Value> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let message = self.next_message(left).await.with_context(|| format!("waiting for {kind}"))?;
            if message["type"] == kind {
                return Ok(message);
            }
        }
    }

    /// Whether the stream ends within `limit` (anything before the end is skipped).
    pub async fn ends_within(&mut self, limit: Duration) -> Result<bool> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.read_item()).await {
                Err(_) => return Ok(false),
                Ok(Ok(None)) => return Ok(true),
                Ok(Ok(Some(_))) => {}
                Ok(Err(e)) => return Err(e),
            }
        }
    }

    async fn read_item(&mut self) -> Result<Option<SseItem>> {
        loop {
            if let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
                let event: Vec<u8> = self.buffer.drain(..end + 2).collect();
                return parse_event(&event[..end]).map(Some);
            }
            if self.ended {
                if !self.buffer.is_empty() {
                    bail!("the stream ended inside an event: {:?}", String::from_utf8_lossy(&self.buffer));
                }
                return Ok(None);
            }
            self.fill().await?;
        }
    }

    async fn fill(&mut self) -> Result<()> {
        if !self.chunked {
            let mut bytes = [0u8; 4096];
            let n = self.reader.read(&mut bytes).await?;
            if n == 0 {
                self.ended = true;
            }
            self.buffer.extend_from_slice(&bytes[..n]);
            return Ok(());
        }
        let mut line = String::new();
        if self.reader.read_line(&mut line).await? == 0 {
            self.ended = true;
            return Ok(());
        }
        let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
            .with_context(|| format!("bad chunk size {line:?}"))?;
        let mut chunk = vec![0u8; size + 2];
        self.reader.read_exact(&mut chunk).await?;
        if size == 0 {
            self.ended = true;
        }
        self.buffer.extend_from_slice(&chunk[..size]);
        Ok(())
    }
}

/// One event: a comment, or exactly one `data: <json>` line (contract section 8).
fn parse_event(event: &[u8]) -> Result<SseItem> {
    let text = std::str::from_utf8(event).context("an event that is not UTF-8")?;
    if text.starts_with(':') && !text.contains('\n') {
        return Ok(SseItem::Comment);
    }
    let json = text.strip_prefix("data: ").ok_or_else(|| anyhow!("not a data event: {text:?}"))?;
    if json.contains('\n') {
        bail!("an event of more than one line: {text:?}");
    }
    Ok(SseItem::Data(serde_json::from_str(json).with_context(|| format!("not JSON: {json:?}"))?))
}
