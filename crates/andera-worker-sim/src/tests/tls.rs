//! TLS (`https://` and `wss://`) tests.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::Connector;

use super::super::{test_ca_and_cert, SimConfig, SimTls, SimWorker};
use super::{LB, WK};

/// A rustls client configuration that trusts only `ca_pem`.
fn client_config(ca_pem: &str) -> Arc<rustls::ClientConfig> {
    // tokio-tungstenite and others may ask for the process default provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("add CA");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

async fn start_tls(tls: SimTls) -> SimWorker {
    let mut cfg = SimConfig::new(LB, WK);
    cfg.slots = 2;
    cfg.tls = Some(tls);
    SimWorker::start(cfg).await.expect("start")
}

/// Sends a raw HTTP/1.1 request over TLS and returns the whole answer.
async fn https_get(
    config: Arc<rustls::ClientConfig>,
    w: &SimWorker,
    path: &str,
    headers: &str,
) -> std::io::Result<String> {
    let tcp = TcpStream::connect(w.http_addr()).await?;
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls = TlsConnector::from(config).connect(name, tcp).await?;
    let req =
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{headers}Connection: close\r\n\r\n");
    tls.write_all(req.as_bytes()).await?;
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf)).await {
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
            // A peer that closes without close_notify: keep what came.
            Ok(Err(e)) if !answer.is_empty() => {
                log::debug!("read after answer: {e}");
                break;
            }
            Ok(Err(e)) => return Err(e),
            Err(_) => panic!("no end of answer within 5 s"),
        }
    }
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

fn ws_request(url: &str) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("sec-websocket-protocol", LB.parse().unwrap());
    req
}

#[tokio::test]
async fn https_health_and_wss_push() {
    let (ca_pem, tls) = test_ca_and_cert("localhost");
    let w = start_tls(tls).await;
    assert!(w.is_tls());
    let http_port = w.http_addr().port();
    let ws_port = w.ws_addr().unwrap().port();
    assert_eq!(w.url(), format!("https://localhost:{http_port}"));
    assert_eq!(w.ws_url().unwrap(), format!("wss://localhost:{ws_port}/"));
    let config = client_config(&ca_pem);

    let anon = https_get(Arc::clone(&config), &w, "/health", "")
        .await
        .expect("https GET /health");
    assert!(anon.starts_with("HTTP/1.1 200"), "{anon}");
    assert!(anon.contains(r#"{"status":"ready"}"#), "{anon}");
    let full = https_get(
        Arc::clone(&config),
        &w,
        "/health",
        &format!("x-lb-auth: {LB}\r\n"),
    )
    .await
    .unwrap();
    assert!(full.starts_with("HTTP/1.1 200"), "{full}");
    assert!(
        full.contains(&format!("\"websocketPort\":{ws_port}")),
        "{full}"
    );

    let (mut socket, resp) = tokio_tungstenite::connect_async_tls_with_config(
        ws_request(&w.ws_url().unwrap()),
        None,
        false,
        Some(Connector::Rustls(Arc::clone(&config))),
    )
    .await
    .expect("wss connect");
    assert_eq!(resp.headers()["sec-websocket-protocol"], LB);
    let first = tokio::time::timeout(Duration::from_secs(3), socket.next())
        .await
        .expect("a push within 3 s")
        .unwrap()
        .unwrap();
    let first: Value = serde_json::from_str(first.to_text().unwrap()).unwrap();
    assert_eq!(first["slots"]["limit"], 2);
    assert!(first["system"]["uptime"].is_number());
    socket.send(Message::text("ping")).await.unwrap();
    let pong = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            let msg = socket.next().await.unwrap().unwrap();
            let v: Value = serde_json::from_str(msg.to_text().unwrap()).unwrap();
            if v.get("system").is_none() {
                return v;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(pong["slots"]["available"], 2);
    assert_eq!(w.stats().ws_connections, 1);

    // A crash cuts the wss connection too.
    w.shutdown().await;
    let end = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Text(_))) => continue,
                other => return other.map(|r| r.is_ok()),
            }
        }
    })
    .await
    .expect("the wss connection must be cut by shutdown");
    assert_ne!(end, Some(true));
}

#[tokio::test]
async fn tls_rejects_untrusted_clients_and_plain_http() {
    let (_, tls) = test_ca_and_cert("localhost");
    let (other_ca, _) = test_ca_and_cert("localhost");
    let w = start_tls(tls).await;
    let wrong = client_config(&other_ca);

    assert!(https_get(Arc::clone(&wrong), &w, "/health", "")
        .await
        .is_err());
    let ws = tokio_tungstenite::connect_async_tls_with_config(
        ws_request(&w.ws_url().unwrap()),
        None,
        false,
        Some(Connector::Rustls(wrong)),
    )
    .await;
    assert!(ws.is_err(), "a wss client with the wrong CA connected");

    // Plain HTTP on the TLS port gets no HTTP answer.
    let plain = super::client()
        .get(format!("http://{}/health", w.http_addr()))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP was answered: {plain:?}");
    w.shutdown().await;

    // A client that connects and never completes its handshake does not
    // hold up the others.
    let (ca_pem, tls) = test_ca_and_cert("localhost");
    let w = start_tls(tls).await;
    let _idle = TcpStream::connect(w.http_addr()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let ok = tokio::time::timeout(
        Duration::from_secs(3),
        https_get(client_config(&ca_pem), &w, "/health", ""),
    )
    .await
    .expect("an idle client must not block the handshakes of others")
    .unwrap();
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    w.shutdown().await;
}

#[tokio::test]
async fn tls_host_ip_and_bad_pem() {
    let (ca_pem, tls) = test_ca_and_cert("127.0.0.1");
    let mut cfg = SimConfig::new(LB, WK);
    cfg.tls = Some(tls.clone());
    cfg.tls_host = "127.0.0.1".into();
    let w = SimWorker::start(cfg).await.unwrap();
    let port = w.ws_addr().unwrap().port();
    assert_eq!(w.ws_url().unwrap(), format!("wss://127.0.0.1:{port}/"));
    let (mut socket, _) = tokio_tungstenite::connect_async_tls_with_config(
        ws_request(&w.ws_url().unwrap()),
        None,
        false,
        Some(Connector::Rustls(client_config(&ca_pem))),
    )
    .await
    .expect("wss by IP");
    assert!(socket.next().await.unwrap().is_ok());
    w.shutdown().await;

    // PEM files, and broken ones.
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, &tls.cert_chain_pem).unwrap();
    std::fs::write(&key, &tls.key_pem).unwrap();
    assert_eq!(SimTls::from_pem_files(&cert, &key).unwrap(), tls);
    assert!(!format!("{tls:?}").contains("PRIVATE KEY"));
    assert!(SimTls::from_pem_files(&key, &cert).is_err());
    assert!(SimTls::from_pem_files(&dir.path().join("none.pem"), &key).is_err());

    let mut cfg = SimConfig::new(LB, WK);
    cfg.tls = Some(SimTls {
        cert_chain_pem: "not a certificate".into(),
        key_pem: tls.key_pem.clone(),
    });
    let err = SimWorker::start(cfg)
        .await
        .err()
        .expect("bad PEM must fail");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
}
