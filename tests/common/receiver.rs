//! A webhook receiver for tests: counts deliveries by task name.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Counts webhook deliveries by the name in `Hello <name>!`.
#[derive(Clone, Default)]
pub struct Receiver {
    counts: Arc<Mutex<HashMap<String, u32>>>,
}

impl Receiver {
    pub async fn start() -> (Receiver, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let rx = Receiver::default();
        let counts = rx.counts.clone();
        tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(serve(sock, counts.clone()));
            }
        });
        (rx, url)
    }

    pub fn snapshot(&self) -> HashMap<String, u32> {
        self.counts.lock().unwrap().clone()
    }
}

/// Reads keep-alive HTTP/1.1 requests with a content-length and counts their names.
async fn serve(mut sock: tokio::net::TcpStream, counts: Arc<Mutex<HashMap<String, u32>>>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + 4 + len {
            match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body = String::from_utf8_lossy(&buf[head_end + 4..head_end + 4 + len]).to_string();
        buf.drain(..head_end + 4 + len);
        if let Some(name) = body
            .split("Hello ")
            .nth(1)
            .and_then(|rest| rest.split('!').next())
        {
            *counts.lock().unwrap().entry(name.to_string()).or_default() += 1;
        }
        if sock
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Waits until `done` holds for the receiver's counts (60 s at most), then a little
/// longer so that late duplicates would show.
pub async fn settle(
    rx: &Receiver,
    done: impl Fn(&HashMap<String, u32>) -> bool,
) -> HashMap<String, u32> {
    let start = Instant::now();
    while !done(&rx.snapshot()) && start.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    rx.snapshot()
}
