//! Server mode's TLS certificate reload (audit L8): after the files change and
//! `Server::reload_tls` runs (the binary's SIGHUP), new connections get the new certificate
//! without a restart; a reload from broken files fails and keeps the certificate in use.

use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tagcast::server::{Server, ServerConfig};
use tagcast_mock::tls::MockTls;

const KEY: &str = "dGxzLXJlbG9hZC10ZXN0LWtleS1vZi1lbm91Z2gtbGVuZ3Ro";

/// The certificate the server presents to a new connection (the client trusts both CAs).
async fn presented(addr: std::net::SocketAddr, cas: &[&MockTls]) -> Vec<u8> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in cas {
        for c in CertificateDer::pem_slice_iter(ca.ca_cert_pem().as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        connector.connect(ServerName::try_from("localhost").unwrap(), tcp),
    )
    .await
    .expect("handshake within 10 s")
    .unwrap();
    let (_, conn) = tls.get_ref();
    conn.peer_certificates().unwrap()[0].as_ref().to_vec()
}

fn leaf_der(t: &MockTls) -> Vec<u8> {
    CertificateDer::pem_slice_iter(t.server_cert_pem().as_bytes())
        .next()
        .unwrap()
        .unwrap()
        .as_ref()
        .to_vec()
}

/// A TLS server on loopback with `cert`/`key` and `extra` lines in `[server]`.
async fn tls_server(
    dir: &std::path::Path,
    cert: &std::path::Path,
    key: &std::path::Path,
    extra: &str,
) -> Server {
    let config = ServerConfig::from_toml(&format!(
        r#"
[server]
listen = "127.0.0.1:0"
tls_cert = "{cert}"
tls_key = "{key}"
data_dir = "{data}"
drain_delay_secs = 0
{extra}
[[hub]]
name = "tls"
[[hub.key]]
name = "full"
key = "{KEY}"
rights = ["Listen", "Send", "Manage"]
"#,
        cert = cert.display(),
        key = key.display(),
        data = dir.join("data").display(),
    ))
    .unwrap();
    Server::start(config).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_certificate_reloads_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (MockTls::generate().unwrap(), MockTls::generate().unwrap());
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, a.server_cert_pem()).unwrap();
    std::fs::write(&key, a.server_key_pem()).unwrap();
    let server = tls_server(dir.path(), &cert, &key, "").await;
    let addr = server.local_addr();
    assert_eq!(presented(addr, &[&a, &b]).await, leaf_der(&a));

    // New files, no reload yet: still the old certificate.
    std::fs::write(&cert, b.server_cert_pem()).unwrap();
    std::fs::write(&key, b.server_key_pem()).unwrap();
    assert_eq!(presented(addr, &[&a, &b]).await, leaf_der(&a));
    server.reload_tls().unwrap();
    assert_eq!(presented(addr, &[&a, &b]).await, leaf_der(&b));

    // A broken file: the reload fails and says which file; the certificate in use stays.
    std::fs::write(&cert, "not a certificate").unwrap();
    let e = server.reload_tls().unwrap_err().to_string();
    assert!(e.contains("cert.pem"), "{e}");
    assert_eq!(presented(addr, &[&a, &b]).await, leaf_der(&b));
    // A key that does not match the certificate is refused too.
    std::fs::write(&cert, a.server_cert_pem()).unwrap();
    assert!(server.reload_tls().is_err());
    assert_eq!(presented(addr, &[&a, &b]).await, leaf_der(&b));
    server.shutdown().await;
}

// audit (TLS): with max_tls_handshakes = 1, a client that connects and says nothing holds the
// only turn; a second client's handshake waits for it (until the first one's deadline), then
// completes inside its own deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshakes_beyond_the_limit_wait_for_a_turn() {
    let dir = tempfile::tempdir().unwrap();
    let a = MockTls::generate().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, a.server_cert_pem()).unwrap();
    std::fs::write(&key, a.server_key_pem()).unwrap();
    let server = tls_server(
        dir.path(),
        &cert,
        &key,
        "max_tls_handshakes = 1\ntls_handshake_timeout_secs = 4",
    )
    .await;
    let addr = server.local_addr();
    // Unhindered, a handshake is quick.
    let t = std::time::Instant::now();
    assert_eq!(presented(addr, &[&a]).await, leaf_der(&a));
    assert!(t.elapsed() < std::time::Duration::from_millis(1500));

    let silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let t = std::time::Instant::now();
    assert_eq!(presented(addr, &[&a]).await, leaf_der(&a));
    let waited = t.elapsed();
    // The silent client's turn ends at its 4 s deadline, about 2.5 s from here.
    assert!(
        waited >= std::time::Duration::from_millis(1500),
        "the second handshake did not wait for a turn ({waited:?})"
    );
    drop(silent);
    server.shutdown().await;
}
