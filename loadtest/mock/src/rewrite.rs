//! An I/O shim between the TLS stream and `h2` that edits SETTINGS frames in flight, because
//! `h2` cannot change SETTINGS_MAX_CONCURRENT_STREAMS after the handshake but APNs does:
//! a token connection first advertises 1 stream and raises the limit after the first success
//! (pns-protocols.md §1.4, §1.7).
//!
//! How: `h2` is built with the real limit (so it enforces that one), and
//! 1. in the first non-ACK SETTINGS frame `h2` writes, the MAX_CONCURRENT_STREAMS value is
//!    replaced by the warm-up value (1); the mock refuses extra streams itself meanwhile;
//! 2. to raise the limit, the connection task arms [`SettingsEdit::arm_raise`] and calls
//!    `h2::server::Connection::set_initial_window_size` with the *unchanged* window size; `h2`
//!    writes `SETTINGS(INITIAL_WINDOW_SIZE=w)` and waits for its ACK. The shim rewrites that
//!    one parameter in place (same length) into `MAX_CONCURRENT_STREAMS=limit`. The peer ACKs
//!    it, `h2` applies a no-op window change, and both sides stay in sync.
//!
//! Frame boundaries are tracked on the written byte stream (9-byte header, then payload
//! length) until the last edit is done; afterwards writes pass straight through. The shim also
//! turns the socket's close into a TCP RST when a reset fault asks for one.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// RFC 9113 §6.5.2 identifiers and §6.5 frame type.
const FRAME_SETTINGS: u8 = 0x4;
const FLAG_ACK: u8 = 0x1;
const SETTINGS_MAX_CONCURRENT_STREAMS: u8 = 0x3;
const SETTINGS_INITIAL_WINDOW_SIZE: u8 = 0x4;

/// Shared control of one connection's shim.
#[derive(Debug, Default)]
pub(crate) struct SettingsEdit {
    /// Non-zero: the value to put into the next non-initial SETTINGS frame.
    raise_to: AtomicU32,
    /// Close the socket with RST (SO_LINGER 0) when the shim is dropped.
    pub(crate) rst_on_drop: AtomicBool,
}

impl SettingsEdit {
    /// Arms the raise to `limit` for the next non-initial SETTINGS frame (0 disarms).
    pub(crate) fn arm_raise(&self, limit: u32) {
        self.raise_to.store(limit, Ordering::SeqCst);
    }
}

#[derive(Debug, Clone, Copy)]
enum Patch {
    /// Replace the value of MAX_CONCURRENT_STREAMS.
    Initial(u32),
    /// Turn INITIAL_WINDOW_SIZE into MAX_CONCURRENT_STREAMS with this value.
    Raise(u32),
}

#[derive(Debug, Clone, Copy, Default)]
struct Scan {
    header: [u8; 9],
    header_len: usize,
    remaining: u32,
    /// Edit applied to the current frame's payload.
    patch: Option<Patch>,
    param_off: usize,
    param_id_hi: u8,
    value: Option<[u8; 4]>,
    /// The initial SETTINGS frame has passed.
    initial_seen: bool,
    /// `Some(v)` until the initial SETTINGS frame is written.
    initial_value: Option<u32>,
    /// The raise value armed when this write began (0: none); consumed by the raise frame.
    pending_raise: u32,
    /// The raise was written; from now on the shim passes bytes through.
    raised: bool,
}

impl Scan {
    /// Scans `buf`; when a byte must change, `out` becomes an edited copy of `buf`.
    fn process(&mut self, buf: &[u8], out: &mut Option<Vec<u8>>) {
        let mut i = 0;
        while i < buf.len() {
            if self.header_len < 9 {
                self.header[self.header_len] = buf[i];
                self.header_len += 1;
                i += 1;
                if self.header_len == 9 {
                    self.start_frame();
                }
                continue;
            }
            if self.patch.is_none() {
                let skip = (self.remaining as usize).min(buf.len() - i);
                i += skip;
                self.remaining -= skip as u32;
            } else {
                let b = self.edit_byte(buf[i]);
                if b != buf[i] {
                    out.get_or_insert_with(|| buf.to_vec())[i] = b;
                }
                i += 1;
                self.remaining -= 1;
            }
            if self.remaining == 0 {
                self.end_frame();
            }
        }
    }

    fn start_frame(&mut self) {
        let h = &self.header;
        self.remaining = u32::from_be_bytes([0, h[0], h[1], h[2]]);
        self.patch = None;
        self.param_off = 0;
        self.value = None;
        if h[3] == FRAME_SETTINGS && h[4] & FLAG_ACK == 0 {
            if !self.initial_seen {
                self.initial_seen = true;
                self.patch = self.initial_value.take().map(Patch::Initial);
            } else {
                if self.pending_raise != 0 {
                    self.patch = Some(Patch::Raise(self.pending_raise));
                    self.pending_raise = 0;
                    self.raised = true;
                }
            }
        }
        if self.remaining == 0 {
            self.end_frame();
        }
    }

    fn end_frame(&mut self) {
        self.header_len = 0;
        self.patch = None;
    }

    fn edit_byte(&mut self, b: u8) -> u8 {
        let off = self.param_off;
        self.param_off = (self.param_off + 1) % 6;
        match off {
            0 => {
                self.param_id_hi = b;
                self.value = None;
                b
            }
            1 => {
                let id_is = |want: u8| self.param_id_hi == 0 && b == want;
                match self.patch {
                    Some(Patch::Initial(v)) if id_is(SETTINGS_MAX_CONCURRENT_STREAMS) => {
                        self.value = Some(v.to_be_bytes());
                        b
                    }
                    Some(Patch::Raise(v)) if id_is(SETTINGS_INITIAL_WINDOW_SIZE) => {
                        self.value = Some(v.to_be_bytes());
                        SETTINGS_MAX_CONCURRENT_STREAMS
                    }
                    _ => b,
                }
            }
            n => self.value.map_or(b, |v| v[n - 2]),
        }
    }
}

/// The shim around the TLS stream (see the module docs).
pub(crate) struct EditingIo<T: ZeroLinger> {
    inner: T,
    scan: Scan,
    edit: Arc<SettingsEdit>,
    passthrough: bool,
}

/// Sockets that can be made to close with a TCP RST.
pub(crate) trait ZeroLinger {
    fn set_zero_linger(&self);
}

impl ZeroLinger for tokio_rustls::server::TlsStream<TcpStream> {
    fn set_zero_linger(&self) {
        // Best effort: if it fails the close is a FIN instead of a RST, still a reset for h2.
        let _ = self.get_ref().0.set_zero_linger();
    }
}

impl<T: ZeroLinger> EditingIo<T> {
    /// `initial_limit`: the MAX_CONCURRENT_STREAMS value to advertise in the first SETTINGS
    /// instead of h2's; `None` leaves SETTINGS alone until a raise is armed.
    pub(crate) fn new(inner: T, initial_limit: Option<u32>, edit: Arc<SettingsEdit>) -> Self {
        EditingIo {
            inner,
            scan: Scan {
                initial_value: initial_limit,
                ..Scan::default()
            },
            edit,
            // Without an initial edit there is no warm-up, hence never a raise.
            passthrough: initial_limit.is_none(),
        }
    }
}

impl<T: ZeroLinger> Drop for EditingIo<T> {
    fn drop(&mut self) {
        if self.edit.rst_on_drop.load(Ordering::SeqCst) {
            self.inner.set_zero_linger();
        }
    }
}

impl<T: AsyncRead + ZeroLinger + Unpin> AsyncRead for EditingIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + ZeroLinger + Unpin> AsyncWrite for EditingIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.passthrough {
            return Pin::new(&mut this.inner).poll_write(cx, buf);
        }
        // Scan ahead on a copy of the state; commit only what the inner stream accepted.
        let armed = this.edit.raise_to.load(Ordering::SeqCst);
        let mut scan = this.scan;
        scan.pending_raise = armed;
        let mut out = None;
        scan.process(buf, &mut out);
        let res = Pin::new(&mut this.inner).poll_write(cx, out.as_deref().unwrap_or(buf));
        if let Poll::Ready(Ok(n)) = res {
            if n == buf.len() {
                this.scan = scan;
            } else {
                this.scan.pending_raise = armed;
                let mut ignored = None;
                this.scan.process(&buf[..n], &mut ignored);
            }
            if armed != 0 && this.scan.pending_raise == 0 {
                this.edit.raise_to.store(0, Ordering::SeqCst);
            }
            this.passthrough = this.scan.raised && this.scan.header_len == 0;
        }
        res
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
