//! The one raw HTTP/1 client of the tests: a connection that keeps what it read past
//! an answer for the next one, so pipelined answers that arrive in one read are never
//! lost (a reader with a buffer per call drops them and then waits forever).

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// How long a test waits for bytes it expects before failing (a hang, not a speed check).
pub const ANSWER_WAIT: Duration = Duration::from_secs(10);

/// One parsed answer: status, lower-cased header block, body (de-chunked).
#[derive(Debug)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// The status line and headers, lower-cased.
    pub head: String,
    /// The body, with chunked framing removed.
    pub body: Vec<u8>,
}

impl Answer {
    /// The body as JSON; panics with the body when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| {
            panic!(
                "not JSON: {} {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The value of header `name` (lower-case), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            (n.trim() == name).then(|| v.trim())
        })
    }

    /// The status line's protocol version (`http/1.1`).
    pub fn version(&self) -> &str {
        self.head.split(' ').next().unwrap_or("")
    }
}

/// How an answer's body is framed.
enum Framing {
    Length(usize),
    Chunked,
    ToClose,
}

/// Splits the first whole answer off `buf`. `closed` says the peer closed, so a
/// close-delimited body ends at the buffer's end; `head_only` is for answers to HEAD.
pub fn parse_one(buf: &mut Vec<u8>, closed: bool, head_only: bool) -> Option<Answer> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let status: u16 = head.get(9..12)?.parse().ok()?;
    let field = |name: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
    };
    let framing = if head_only || status == 204 || status == 304 || status / 100 == 1 {
        Framing::Length(0)
    } else if field("transfer-encoding:").is_some_and(|v| v.ends_with("chunked")) {
        Framing::Chunked
    } else if let Some(n) = field("content-length:") {
        Framing::Length(n.parse().expect("a numeric content-length"))
    } else {
        Framing::ToClose
    };
    let (body, total) = match framing {
        Framing::Length(n) if buf.len() >= end + n => (buf[end..end + n].to_vec(), end + n),
        Framing::Length(_) => return None,
        Framing::Chunked => dechunk(&buf[end..]).map(|(b, used)| (b, end + used))?,
        Framing::ToClose if closed => (buf[end..].to_vec(), buf.len()),
        Framing::ToClose => return None,
    };
    buf.drain(..total);
    Some(Answer { status, head, body })
}

/// Decodes a whole chunked body (trailers skipped); `None` while incomplete.
fn dechunk(mut rest: &[u8]) -> Option<(Vec<u8>, usize)> {
    let start = rest.len();
    let mut body = Vec::new();
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n")?;
        let size_text = String::from_utf8_lossy(&rest[..line_end]);
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).expect("a hex chunk size");
        rest = &rest[line_end + 2..];
        if size == 0 {
            // Trailers, then the empty line.
            let trailer_end = if rest.starts_with(b"\r\n") {
                2
            } else {
                rest.windows(4).position(|w| w == b"\r\n\r\n")? + 4
            };
            rest = &rest[trailer_end..];
            return Some((body, start - rest.len()));
        }
        if rest.len() < size + 2 {
            return None;
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

/// Reads until the peer closes (or resets) the connection.
pub async fn read_to_close(r: &mut (impl AsyncRead + Unpin)) -> Vec<u8> {
    let mut all = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match r.read(&mut chunk).await {
            Ok(0) | Err(_) => return all,
            Ok(n) => all.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A client connection with its read-ahead buffer.
pub struct RawConn {
    /// The socket.
    pub stream: TcpStream,
    buf: Vec<u8>,
    closed: bool,
}

impl RawConn {
    /// Connects to `127.0.0.1:port`.
    pub async fn connect(port: u16) -> RawConn {
        RawConn::from(TcpStream::connect(("127.0.0.1", port)).await.unwrap())
    }

    /// Writes `bytes`.
    pub async fn send(&mut self, bytes: impl AsRef<[u8]>) {
        self.stream.write_all(bytes.as_ref()).await.unwrap();
    }

    /// The next answer; panics if none arrives within [`ANSWER_WAIT`] or the
    /// connection closes first.
    pub async fn answer(&mut self) -> Answer {
        self.next(false).await
    }

    /// The next answer to a HEAD request (a head without a body).
    pub async fn head_answer(&mut self) -> Answer {
        self.next(true).await
    }

    async fn next(&mut self, head_only: bool) -> Answer {
        loop {
            if let Some(a) = parse_one(&mut self.buf, self.closed, head_only) {
                return a;
            }
            assert!(
                !self.closed,
                "closed before a whole answer: {:?}",
                String::from_utf8_lossy(&self.buf)
            );
            self.fill().await;
        }
    }

    /// Reads once more into the buffer (waiting at most [`ANSWER_WAIT`]).
    async fn fill(&mut self) {
        let mut chunk = [0u8; 8192];
        let read = timeout(ANSWER_WAIT, self.stream.read(&mut chunk))
            .await
            .expect("an answer within the wait");
        match read {
            Ok(0) | Err(_) => self.closed = true,
            Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
        }
    }

    /// Everything left until the peer closes, after what was buffered (panics if the
    /// connection stays open past `limit`).
    pub async fn rest_until_close(&mut self, limit: Duration) -> Vec<u8> {
        let mut rest = std::mem::take(&mut self.buf);
        let more = timeout(limit, read_to_close(&mut self.stream))
            .await
            .expect("the connection is closed");
        rest.extend_from_slice(&more);
        self.closed = true;
        rest
    }

    /// Every answer sent until the peer closes (within `limit`).
    pub async fn answers_until_close(&mut self, limit: Duration) -> Vec<Answer> {
        let mut all = self.rest_until_close(limit).await;
        std::iter::from_fn(|| parse_one(&mut all, true, false)).collect()
    }
}

impl From<TcpStream> for RawConn {
    fn from(stream: TcpStream) -> RawConn {
        RawConn {
            stream,
            buf: Vec::new(),
            closed: false,
        }
    }
}

/// Sends `request` on a new connection and returns the single answer the server
/// sends before closing.
pub async fn refused(port: u16, request: &[u8]) -> Answer {
    let mut c = RawConn::connect(port).await;
    c.send(request).await;
    let mut all = c.rest_until_close(ANSWER_WAIT).await;
    parse_one(&mut all, true, false)
        .unwrap_or_else(|| panic!("no answer: {:?}", String::from_utf8_lossy(&all)))
}
