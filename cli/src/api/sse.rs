//! The `/watch` server-sent-event stream: [`Client::watch`] opens it,
//! [`WatchStream::next`] yields its frames, and [`SseParser`] turns bytes into
//! frames incrementally (the `text/event-stream` rules: `field: value` lines,
//! frames ended by a blank line, `:` comments ignored, `\r\n` tolerated).

use std::collections::VecDeque;

use reqwest::Url;

use super::{error_chain, server_message, ApiError, ApiResult, Client};

/// One dispatched event of the stream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SseFrame {
    /// The `event:` field (`message` when absent).
    pub event: String,
    pub id: Option<String>,
    /// The `data:` lines joined by `\n`.
    pub data: String,
}

/// Incremental `text/event-stream` parser.
#[derive(Debug, Default)]
pub struct SseParser {
    buf: Vec<u8>,
    event: Option<String>,
    id: Option<String>,
    data: Vec<String>,
}

impl SseParser {
    /// Feeds bytes; returns the frames they completed.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<SseFrame> {
        self.buf.extend_from_slice(chunk);
        let mut frames = Vec::new();
        while let Some(nl) = self.buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=nl).collect();
            let line = String::from_utf8_lossy(&line[..line.len() - 1]);
            let line = line.strip_suffix('\r').unwrap_or(&line);
            if let Some(frame) = self.line(line) {
                frames.push(frame);
            }
        }
        frames
    }

    fn line(&mut self, line: &str) -> Option<SseFrame> {
        if line.is_empty() {
            let event = self.event.take();
            if self.data.is_empty() {
                return None;
            }
            return Some(SseFrame {
                event: event.unwrap_or_else(|| "message".into()),
                id: self.id.clone(),
                data: std::mem::take(&mut self.data).join("\n"),
            });
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = Some(value.to_owned()),
            "data" => self.data.push(value.to_owned()),
            "id" => self.id = Some(value.to_owned()),
            _ => {}
        }
        None
    }
}

/// An open `/watch` stream.
#[derive(Debug)]
pub struct WatchStream {
    resp: reqwest::Response,
    url: Url,
    parser: SseParser,
    pending: VecDeque<SseFrame>,
}

impl WatchStream {
    /// The next frame; `None` when the server closed the stream.
    pub async fn next(&mut self) -> ApiResult<Option<SseFrame>> {
        loop {
            if let Some(frame) = self.pending.pop_front() {
                return Ok(Some(frame));
            }
            let chunk = self.resp.chunk().await.map_err(|e| ApiError::Transport {
                url: self.url.to_string(),
                reason: error_chain(&e),
            })?;
            match chunk {
                Some(bytes) => self.pending.extend(self.parser.push(&bytes)),
                None => return Ok(None),
            }
        }
    }
}

impl Client {
    /// `GET /v1/workflows/{type}/{id}/watch[?from=N]` as an event stream.
    pub async fn watch(
        &self,
        workflow_type: &str,
        instance_id: &str,
        from: Option<u64>,
    ) -> ApiResult<WatchStream> {
        let from = from.map(|f| f.to_string());
        let query: Vec<(&str, &str)> = from.iter().map(|f| ("from", f.as_str())).collect();
        let url = self.url(
            &["v1", "workflows", workflow_type, instance_id, "watch"],
            &query,
        );
        let resp = self
            .stream_http
            .get(url.clone())
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .send()
            .await
            .map_err(|e| self.transport_error(&url, &e))?;
        let status = resp.status();
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            return Err(ApiError::Server {
                status,
                message: server_message(status, &text),
            });
        }
        Ok(WatchStream {
            resp,
            url,
            parser: SseParser::default(),
            pending: VecDeque::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_across_chunks_and_comments() {
        let mut p = SseParser::default();
        assert!(p.push(b": keep-alive\n\nevent: ev").is_empty());
        assert!(p.push(b"ent\r\nid: 3\r\ndata: {\"a\":").is_empty());
        let frames = p.push(b"1}\r\n\r\ndata: x\ndata: y\n\n");
        assert_eq!(
            frames,
            vec![
                SseFrame {
                    event: "event".into(),
                    id: Some("3".into()),
                    data: "{\"a\":1}".into()
                },
                SseFrame {
                    event: "message".into(),
                    id: Some("3".into()),
                    data: "x\ny".into()
                },
            ]
        );
    }

    #[test]
    fn multibyte_characters_split_between_chunks() {
        let mut p = SseParser::default();
        let bytes = "data: é\n\n".as_bytes();
        assert!(p.push(&bytes[..7]).is_empty());
        assert_eq!(p.push(&bytes[7..])[0].data, "é");
    }
}
