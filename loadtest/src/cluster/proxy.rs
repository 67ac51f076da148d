//! A TCP proxy on loopback in front of one NATS server, for one node (the `partition`
//! scenario): the node's `nats_urls` name its proxies, so cutting them cuts the node off NATS
//! while it still reaches the push mock directly.
//!
//! ```text
//!  node k ──▶ proxy k.1 ──▶ nats 1        cut(): close every proxied connection and accept
//!         ──▶ proxy k.2 ──▶ nats 2               then drop every new one
//!         ──▶ proxy k.3 ──▶ nats 3        restore(): proxy again
//! ```
//!
//! The NATS servers run with `no_advertise`, so the node never learns their real ports and
//! cannot reconnect around its proxies.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

/// One listening proxy; stops (its connections too) when dropped.
pub(crate) struct Proxy {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<AbortHandle>>>,
    accept: AbortHandle,
}

impl Proxy {
    /// Listens on a free loopback port and forwards every connection to `upstream`.
    pub(crate) async fn start(upstream: SocketAddr) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let cut = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let accept = {
            let (cut, conns) = (cut.clone(), conns.clone());
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    if cut.load(Ordering::SeqCst) {
                        // Refused: the connection is closed at once.
                        drop(client);
                        continue;
                    }
                    let task = tokio::spawn(async move {
                        let Ok(mut server) = TcpStream::connect(upstream).await else {
                            return;
                        };
                        let mut client = client;
                        let _ = client.set_nodelay(true);
                        let _ = server.set_nodelay(true);
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    });
                    let mut c = conns.lock();
                    c.retain(|h| !h.is_finished());
                    c.push(task.abort_handle());
                }
            })
            .abort_handle()
        };
        Ok(Proxy {
            addr,
            cut,
            conns,
            accept,
        })
    }

    /// `nats://127.0.0.1:<port>` of the proxy.
    pub(crate) fn url(&self) -> String {
        format!("nats://{}", self.addr)
    }

    /// Closes every proxied connection and refuses new ones until [`Proxy::restore`].
    pub(crate) fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for h in self.conns.lock().drain(..) {
            // Aborting the copy task drops both sockets: the node sees its connection close.
            h.abort();
        }
    }

    pub(crate) fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// An echo server, the proxy in front of it, a cut and a restore.
    #[tokio::test]
    async fn a_cut_closes_and_refuses_until_restored() {
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = echo.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = echo.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        let proxy = Proxy::start(upstream).await.unwrap();
        let addr = proxy.url().trim_start_matches("nats://").to_owned();
        let roundtrip = |mut s: TcpStream| async move {
            s.write_all(b"ping").await.ok()?;
            let mut buf = [0u8; 4];
            s.read_exact(&mut buf).await.ok()?;
            Some((buf, s))
        };
        let s = TcpStream::connect(&addr).await.unwrap();
        let (buf, mut s) = roundtrip(s).await.unwrap();
        assert_eq!(&buf, b"ping");
        proxy.cut();
        let mut buf = [0u8; 4];
        assert_eq!(s.read(&mut buf).await.unwrap_or(0), 0, "closed by the cut");
        let again = TcpStream::connect(&addr).await.unwrap();
        assert!(roundtrip(again).await.is_none(), "refused while cut");
        proxy.restore();
        let s = TcpStream::connect(&addr).await.unwrap();
        assert_eq!(&roundtrip(s).await.unwrap().0, b"ping");
    }
}
