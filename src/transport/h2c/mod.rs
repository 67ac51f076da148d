//! The HTTP/2 client of the push pools: a sans-IO connection ([`Conn`]: frames, HPACK, flow
//! control, streams) and the little IO around it ([`Link`]: the TLS stream split into halves,
//! the read buffer, the handshake). The pool's connection task owns a `Link` and drives it in
//! one `select!` loop with its work queue: no driver task, no future or timer per stream, and
//! a request's headers are encoded straight into the write buffer (docs/architecture.md,
//! "Transport").

pub(crate) mod conn;
pub(crate) mod frame;
pub(crate) mod hpack;
pub(crate) mod huffman;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};

pub(crate) use conn::{Conn, Event, Failure};

use super::{Endpoint, TransportError, CONNECT_TIMEOUT};

/// Read buffer room kept free before each read.
const READ_ROOM: usize = 32 * 1024;

/// A connection's IO: the halves of its stream and the bytes read but not yet parsed.
pub(crate) struct Link<S, T> {
    pub(crate) conn: Conn<T>,
    pub(crate) rd: ReadHalf<S>,
    pub(crate) wr: WriteHalf<S>,
    pub(crate) inbuf: BytesMut,
}

impl<S: AsyncRead + AsyncWrite + Unpin, T> Link<S, T> {
    /// Writes the preface and a PING and reads until its ACK: the connection counts as open
    /// only once the service has read our preface (and, with TLS 1.3, accepted our
    /// certificate, which it refuses only after the handshake: the alert arrives with the
    /// first read).
    pub(crate) async fn handshake(ep: &Endpoint, io: S) -> Result<Self, TransportError> {
        let (rd, wr) = tokio::io::split(io);
        let mut link = Link {
            conn: Conn::new(),
            rd,
            wr,
            inbuf: BytesMut::with_capacity(READ_ROOM * 2),
        };
        const PING: [u8; 8] = *b"tagcast0";
        link.conn.ping(PING);
        let tls_or_http = |message: String, io: bool| {
            if io || message.contains("alert") {
                TransportError::Tls {
                    endpoint: ep.authority.to_string(),
                    message,
                }
            } else {
                TransportError::Http {
                    endpoint: ep.authority.to_string(),
                    message,
                }
            }
        };
        let done = tokio::time::timeout(CONNECT_TIMEOUT, async {
            loop {
                if !link.conn.out().is_empty() {
                    let out = link.conn.out().split();
                    link.wr
                        .write_all(&out)
                        .await
                        .map_err(|e| tls_or_http(format!("HTTP/2 handshake: {e}"), true))?;
                    link.wr
                        .flush()
                        .await
                        .map_err(|e| tls_or_http(format!("HTTP/2 handshake: {e}"), true))?;
                }
                match link.read().await {
                    Ok(0) => {
                        return Err(tls_or_http(
                            "HTTP/2 handshake: connection closed".into(),
                            true,
                        ))
                    }
                    Ok(_) => {}
                    Err(e) => return Err(tls_or_http(format!("HTTP/2 handshake: {e}"), true)),
                }
                link.conn
                    .recv(&mut link.inbuf)
                    .map_err(|e| tls_or_http(format!("HTTP/2 handshake: {}", e.0), false))?;
                let mut acked = false;
                for ev in link.conn.events() {
                    if matches!(ev, Event::PingAck(p) if p == PING) {
                        acked = true;
                    }
                }
                if acked {
                    return Ok(());
                }
            }
        })
        .await;
        match done {
            Ok(Ok(())) => Ok(link),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(TransportError::Connect {
                endpoint: ep.authority.to_string(),
                message: "no answer to the first PING".into(),
            }),
        }
    }

    /// Reads what has arrived into the buffer; `Ok(0)` at the end of the stream.
    pub(crate) async fn read(&mut self) -> std::io::Result<usize> {
        if self.inbuf.capacity() - self.inbuf.len() < READ_ROOM {
            self.inbuf.reserve(READ_ROOM * 2);
        }
        self.rd.read_buf(&mut self.inbuf).await
    }
}

/// Writes some of `out` (or, when it is empty, flushes): what the connection task's `select!`
/// waits on for the write side. Returns the bytes written.
pub(crate) async fn pump<S: AsyncWrite>(
    wr: &mut WriteHalf<S>,
    out: &[u8],
) -> std::io::Result<usize> {
    if out.is_empty() {
        wr.flush().await.map(|()| 0)
    } else {
        wr.write(out).await
    }
}

/// Best effort at the end: writes what is queued (a GOAWAY) within `limit`, then shuts the
/// stream down.
pub(crate) async fn finish<S: AsyncWrite>(
    wr: &mut WriteHalf<S>,
    out: &[u8],
    limit: std::time::Duration,
) {
    let _ = tokio::time::timeout(limit, async {
        wr.write_all(out).await?;
        wr.shutdown().await
    })
    .await;
}
