//! One HTTP/2 client connection as a state machine (sans-IO): requests go in with
//! [`Conn::start`], bytes read from the socket go in with [`Conn::recv`], bytes to write come
//! out of [`Conn::out`], and answers come out of [`Conn::events`]. Each stream carries the
//! caller's `T` (the device's work), handed back with its answer or failure.
//!
//! What a push client needs of RFC 9113 and nothing more: requests with small bodies, answers
//! read whole (bodies kept up to [`MAX_BODY`]), flow control both ways, SETTINGS, PING,
//! RST_STREAM, GOAWAY (streams above its last id are reported unprocessed), CONTINUATION,
//! padding. No server push (disabled in our SETTINGS), no priorities, no trailers kept.

use std::collections::VecDeque;

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Request};

use super::frame::{self, Head};
use super::hpack::{Decoder, Encoder, Mode};
use crate::transport::http1::Answer;

/// The stream window this client advertises (SETTINGS_INITIAL_WINDOW_SIZE).
pub(crate) const STREAM_WINDOW: u32 = 1 << 20;
/// The connection window this client opens to at once.
pub(crate) const CONN_WINDOW: u32 = 8 << 20;
/// The part of an answer's body that is kept (the rest is read and dropped).
pub(crate) const MAX_BODY: usize = 64 * 1024;
/// The largest header block accepted (with its CONTINUATIONs).
const MAX_HEADER_BLOCK: usize = 256 * 1024;
/// The largest header list of an answer kept (name + value + 32 per field, as HPACK counts);
/// a larger one resets its stream.
const MAX_HEADER_LIST: usize = 64 * 1024;
const MAX_WINDOW: i64 = (1 << 31) - 1;
const MAX_STREAM_ID: u32 = (1 << 31) - 1;

/// Why a stream ended without an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    /// The service did not process it (REFUSED_STREAM, or above a GOAWAY's last stream id):
    /// safe to send again.
    pub(crate) unprocessed: bool,
    pub(crate) message: String,
}

/// What happened to the streams (and pings) since the last look.
#[derive(Debug)]
pub(crate) enum Event<T> {
    Answer(T, Answer),
    Failed(T, Failure),
    PingAck([u8; 8]),
}

/// A connection error: the connection is over (a GOAWAY was queued to say why).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConnError(pub(crate) String);

#[derive(Debug)]
struct Stream<T> {
    data: T,
    send_window: i64,
    /// Body bytes not yet sent (flow control).
    pending: Bytes,
    recv_unacked: u32,
    status: Option<u16>,
    headers: HeaderMap,
    body: BytesMut,
}

/// A header block waiting for its CONTINUATION frames.
#[derive(Debug)]
struct Partial {
    stream: u32,
    end_stream: bool,
    block: BytesMut,
}

#[derive(Debug)]
pub(crate) struct Conn<T> {
    out: BytesMut,
    enc: Encoder,
    dec: Decoder,
    scratch: BytesMut,
    next_id: u32,
    streams: hashbrown::HashMap<u32, Stream<T>>,
    /// Streams with body bytes waiting for window, oldest first (entries of ended streams
    /// are skipped).
    blocked: VecDeque<u32>,
    peer_max_streams: usize,
    peer_initial_window: i64,
    peer_max_frame: usize,
    settings_seen: bool,
    send_window: i64,
    recv_unacked: u32,
    /// The last stream id of the service's GOAWAY: no new streams.
    goaway: Option<u32>,
    partial: Option<Partial>,
    events: Vec<Event<T>>,
    error: Option<ConnError>,
}

impl<T> Conn<T> {
    /// A connection whose preface, SETTINGS and window opening are queued in [`Conn::out`].
    /// Until the service's SETTINGS arrive, one stream at a time (APNs token connections start
    /// at one, pns-protocols.md §1.7).
    pub(crate) fn new() -> Conn<T> {
        let mut out = BytesMut::with_capacity(64 * 1024);
        out.put_slice(frame::PREFACE);
        // ENABLE_PUSH = 0, INITIAL_WINDOW_SIZE.
        frame::settings(&mut out, &[(2, 0), (4, STREAM_WINDOW)]);
        frame::window_update(&mut out, 0, CONN_WINDOW - 65_535);
        Conn {
            out,
            enc: Encoder::default(),
            dec: Decoder::default(),
            scratch: BytesMut::new(),
            next_id: 1,
            streams: hashbrown::HashMap::new(),
            blocked: VecDeque::new(),
            peer_max_streams: 1,
            peer_initial_window: 65_535,
            peer_max_frame: frame::DEFAULT_MAX_FRAME,
            settings_seen: false,
            send_window: 65_535,
            recv_unacked: 0,
            goaway: None,
            partial: None,
            events: Vec::new(),
            error: None,
        }
    }

    /// Bytes to write to the socket (the caller advances past what it wrote).
    pub(crate) fn out(&mut self) -> &mut BytesMut {
        &mut self.out
    }

    /// The bytes waiting to be written.
    pub(crate) fn pending_out(&self) -> &[u8] {
        &self.out
    }

    /// The service's SETTINGS_MAX_CONCURRENT_STREAMS (1 until its SETTINGS arrive).
    pub(crate) fn max_streams(&self) -> usize {
        self.peer_max_streams
    }

    /// Streams open (sent and not yet answered).
    pub(crate) fn open_streams(&self) -> usize {
        self.streams.len()
    }

    /// Whether a new stream may start now.
    pub(crate) fn can_start(&self) -> bool {
        self.error.is_none()
            && self.goaway.is_none()
            && self.next_id <= MAX_STREAM_ID
            && self.streams.len() < self.peer_max_streams
    }

    /// Whether the connection takes no more streams ever (GOAWAY, ids used up, an error).
    pub(crate) fn is_closing(&self) -> bool {
        self.error.is_some() || self.goaway.is_some() || self.next_id > MAX_STREAM_ID
    }

    /// The events since the last call.
    pub(crate) fn events(&mut self) -> std::vec::Drain<'_, Event<T>> {
        self.events.drain(..)
    }

    /// Starts a request: HEADERS (and CONTINUATION), then as much of the body as the windows
    /// allow. `Err` gives `data` back when the connection takes no new stream.
    pub(crate) fn start(&mut self, req: &Request<()>, body: Bytes, data: T) -> Result<u32, T> {
        if !self.can_start() {
            return Err(data);
        }
        let id = self.next_id;
        self.next_id += 2;
        let mut block = std::mem::take(&mut self.scratch);
        block.clear();
        self.enc.begin(&mut block);
        self.enc.field(
            &mut block,
            b":method",
            req.method().as_str().as_bytes(),
            Mode::Index,
        );
        let uri = req.uri();
        let scheme = uri.scheme_str().unwrap_or("https");
        self.enc
            .field(&mut block, b":scheme", scheme.as_bytes(), Mode::Index);
        if let Some(a) = uri.authority() {
            self.enc.field(
                &mut block,
                b":authority",
                a.as_str().as_bytes(),
                Mode::Index,
            );
        }
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        self.enc
            .field(&mut block, b":path", path.as_bytes(), Mode::Literal);
        for (name, value) in req.headers() {
            // Credentials and values marked sensitive (a per-request id) stay out of the
            // dynamic table, as h2 and nghttp2 keep `authorization` out.
            let mode = if value.is_sensitive() || name == http::header::AUTHORIZATION {
                Mode::Never
            } else {
                Mode::Index
            };
            self.enc
                .field(&mut block, name.as_str().as_bytes(), value.as_bytes(), mode);
        }
        let end_stream = body.is_empty();
        self.write_headers(id, &block, end_stream);
        self.scratch = block;
        self.streams.insert(
            id,
            Stream {
                data,
                send_window: self.peer_initial_window,
                pending: body,
                recv_unacked: 0,
                status: None,
                headers: HeaderMap::new(),
                body: BytesMut::new(),
            },
        );
        // Sent as far as the windows allow now: a body waiting ahead of it waits for its own
        // stream's window (when the connection's is open) or for the connection's (then this
        // one sends nothing either).
        if !end_stream && !self.send_body(id) {
            self.blocked.push_back(id);
        }
        Ok(id)
    }

    /// Ends a stream that waited too long: RST_STREAM(CANCEL); its data back.
    pub(crate) fn cancel(&mut self, id: u32) -> Option<T> {
        let s = self.streams.remove(&id)?;
        frame::rst_stream(&mut self.out, id, frame::CANCEL);
        Some(s.data)
    }

    /// Whether stream `id` is still open.
    pub(crate) fn is_open(&self, id: u32) -> bool {
        self.streams.contains_key(&id)
    }

    /// Queues a PING.
    pub(crate) fn ping(&mut self, payload: [u8; 8]) {
        frame::ping(&mut self.out, 0, payload);
    }

    /// Queues a GOAWAY (NO_ERROR): this client opens no more streams.
    pub(crate) fn go_away(&mut self) {
        frame::goaway(&mut self.out, 0, frame::NO_ERROR);
    }

    /// Ends every open stream (the connection is gone) and gives their data back.
    pub(crate) fn fail_all(&mut self) -> Vec<T> {
        self.blocked.clear();
        self.streams.drain().map(|(_, s)| s.data).collect()
    }

    /// Reads the whole frames in `buf` (what is left is an incomplete frame). `Err` is a
    /// connection error: a GOAWAY saying so is queued and the connection is over.
    pub(crate) fn recv(&mut self, buf: &mut BytesMut) -> Result<(), ConnError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        loop {
            let next = match frame::next(buf) {
                Ok(Some(f)) => f,
                Ok(None) => return Ok(()),
                Err(frame::TooLarge(n)) => {
                    return Err(self.fail(frame::FRAME_SIZE_ERROR, format!("a frame of {n} bytes")))
                }
            };
            if let Err((code, message)) = self.frame(next.0, next.1) {
                return Err(self.fail(code, message));
            }
        }
    }

    fn fail(&mut self, code: u32, message: String) -> ConnError {
        // The last stream *the service* opened: none (push is disabled).
        frame::goaway(&mut self.out, 0, code);
        let e = ConnError(format!(
            "HTTP/2 connection error ({}): {message}",
            frame::code_name(code)
        ));
        self.error = Some(e.clone());
        e
    }

    fn frame(&mut self, head: Head, payload: Bytes) -> Result<(), (u32, String)> {
        if let Some(p) = &self.partial {
            if head.kind != frame::CONTINUATION || head.stream != p.stream {
                return Err((
                    frame::PROTOCOL_ERROR,
                    "a header block was interrupted".into(),
                ));
            }
        }
        match head.kind {
            frame::DATA => self.data(head, payload),
            frame::HEADERS => {
                if head.stream == 0 || head.stream % 2 == 0 {
                    return Err((
                        frame::PROTOCOL_ERROR,
                        "HEADERS on a stream we did not open".into(),
                    ));
                }
                let fragment = frame::unpad(&head, payload)
                    .ok_or((frame::PROTOCOL_ERROR, "bad padding".to_string()))?;
                let end_stream = head.flags & frame::END_STREAM != 0;
                if head.flags & frame::END_HEADERS != 0 {
                    self.header_block(head.stream, &fragment, end_stream)
                } else {
                    self.partial = Some(Partial {
                        stream: head.stream,
                        end_stream,
                        block: BytesMut::from(&fragment[..]),
                    });
                    Ok(())
                }
            }
            frame::CONTINUATION => {
                let Some(mut p) = self.partial.take() else {
                    return Err((frame::PROTOCOL_ERROR, "CONTINUATION without HEADERS".into()));
                };
                if p.block.len() + payload.len() > MAX_HEADER_BLOCK {
                    return Err((frame::PROTOCOL_ERROR, "header block too large".into()));
                }
                p.block.put_slice(&payload);
                if head.flags & frame::END_HEADERS != 0 {
                    self.header_block(p.stream, &p.block, p.end_stream)
                } else {
                    self.partial = Some(p);
                    Ok(())
                }
            }
            frame::RST_STREAM => {
                if payload.len() != 4 {
                    return Err((frame::FRAME_SIZE_ERROR, "RST_STREAM length".into()));
                }
                if head.stream == 0 {
                    return Err((frame::PROTOCOL_ERROR, "RST_STREAM on stream 0".into()));
                }
                let code = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
                if head.stream >= self.next_id {
                    return Err((frame::PROTOCOL_ERROR, "RST_STREAM on an idle stream".into()));
                }
                if let Some(s) = self.streams.remove(&head.stream) {
                    self.events.push(Event::Failed(
                        s.data,
                        Failure {
                            // Not after an answer began: then it was processed.
                            unprocessed: code == frame::REFUSED_STREAM && s.status.is_none(),
                            message: format!(
                                "stream reset by the service: {}",
                                frame::code_name(code)
                            ),
                        },
                    ));
                }
                Ok(())
            }
            frame::SETTINGS => self.settings(head, &payload),
            frame::PUSH_PROMISE => Err((
                frame::PROTOCOL_ERROR,
                "PUSH_PROMISE (push is disabled)".into(),
            )),
            frame::PING => {
                if head.stream != 0 {
                    return Err((frame::PROTOCOL_ERROR, "PING on a stream".into()));
                }
                let p: [u8; 8] = payload[..]
                    .try_into()
                    .map_err(|_| (frame::FRAME_SIZE_ERROR, "PING length".to_string()))?;
                if head.flags & frame::ACK != 0 {
                    self.events.push(Event::PingAck(p));
                } else {
                    frame::ping(&mut self.out, frame::ACK, p);
                }
                Ok(())
            }
            frame::GOAWAY => {
                if head.stream != 0 {
                    return Err((frame::PROTOCOL_ERROR, "GOAWAY on a stream".into()));
                }
                if payload.len() < 8 {
                    return Err((frame::FRAME_SIZE_ERROR, "GOAWAY length".into()));
                }
                let last = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]])
                    & 0x7fff_ffff;
                let code = u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]);
                let last = self.goaway.map_or(last, |l| l.min(last));
                self.goaway = Some(last);
                let above: Vec<u32> = self
                    .streams
                    .keys()
                    .copied()
                    .filter(|id| *id > last)
                    .collect();
                for id in above {
                    if let Some(s) = self.streams.remove(&id) {
                        self.events.push(Event::Failed(
                            s.data,
                            Failure {
                                unprocessed: s.status.is_none(),
                                message: format!(
                                    "GOAWAY ({}) before the service read the request",
                                    frame::code_name(code)
                                ),
                            },
                        ));
                    }
                }
                Ok(())
            }
            frame::WINDOW_UPDATE => {
                if payload.len() != 4 {
                    return Err((frame::FRAME_SIZE_ERROR, "WINDOW_UPDATE length".into()));
                }
                let inc = i64::from(
                    u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]])
                        & 0x7fff_ffff,
                );
                if head.stream == 0 {
                    if inc == 0 {
                        return Err((frame::PROTOCOL_ERROR, "WINDOW_UPDATE of 0".into()));
                    }
                    self.send_window += inc;
                    if self.send_window > MAX_WINDOW {
                        return Err((
                            frame::FLOW_CONTROL_ERROR,
                            "connection window overflow".into(),
                        ));
                    }
                } else if head.stream >= self.next_id {
                    return Err((
                        frame::PROTOCOL_ERROR,
                        "WINDOW_UPDATE on an idle stream".into(),
                    ));
                } else if let Some(s) = self.streams.get_mut(&head.stream) {
                    s.send_window += inc;
                    if inc == 0 || s.send_window > MAX_WINDOW {
                        let what = if inc == 0 {
                            frame::PROTOCOL_ERROR
                        } else {
                            frame::FLOW_CONTROL_ERROR
                        };
                        self.reset(head.stream, what, "a bad WINDOW_UPDATE");
                    }
                }
                self.flush_blocked();
                Ok(())
            }
            // PRIORITY and unknown frame types are ignored (RFC 9113 §4.1, §5.3.2).
            _ => Ok(()),
        }
    }

    /// Ends stream `id` with a stream error of ours.
    fn reset(&mut self, id: u32, code: u32, why: &str) {
        if let Some(s) = self.streams.remove(&id) {
            frame::rst_stream(&mut self.out, id, code);
            self.events.push(Event::Failed(
                s.data,
                Failure {
                    unprocessed: false,
                    message: format!("stream error ({}): {why}", frame::code_name(code)),
                },
            ));
        }
    }

    fn data(&mut self, head: Head, payload: Bytes) -> Result<(), (u32, String)> {
        if head.stream == 0 || head.stream >= self.next_id {
            return Err((frame::PROTOCOL_ERROR, "DATA on an idle stream".into()));
        }
        // Flow control counts the whole frame payload, padding included.
        let len = payload.len() as u32;
        self.recv_unacked += len;
        if self.recv_unacked >= CONN_WINDOW / 2 {
            frame::window_update(&mut self.out, 0, self.recv_unacked);
            self.recv_unacked = 0;
        }
        let data = frame::unpad(&head, payload)
            .ok_or((frame::PROTOCOL_ERROR, "bad padding".to_string()))?;
        let end = head.flags & frame::END_STREAM != 0;
        let Some(s) = self.streams.get_mut(&head.stream) else {
            // A stream we cancelled: only the connection window counted.
            return Ok(());
        };
        if s.status.is_none() {
            self.reset(
                head.stream,
                frame::PROTOCOL_ERROR,
                "DATA before the answer's HEADERS",
            );
            return Ok(());
        }
        let room = MAX_BODY.saturating_sub(s.body.len());
        s.body.put_slice(&data[..data.len().min(room)]);
        if end {
            self.complete(head.stream);
        } else {
            s.recv_unacked += len;
            if s.recv_unacked >= STREAM_WINDOW / 2 {
                frame::window_update(&mut self.out, head.stream, s.recv_unacked);
                s.recv_unacked = 0;
            }
        }
        Ok(())
    }

    fn header_block(
        &mut self,
        id: u32,
        block: &[u8],
        end_stream: bool,
    ) -> Result<(), (u32, String)> {
        let mut status: Option<Result<u16, ()>> = None;
        let mut fields: Vec<(HeaderName, HeaderValue)> = Vec::new();
        // Decoded for the table's sake whether or not the stream is still open; kept only if.
        let keep = self.streams.contains_key(&id);
        let mut list_size = 0usize;
        self.dec
            .decode(block, |n, v| {
                list_size += n.len() + v.len() + 32;
                if !keep || list_size > MAX_HEADER_LIST {
                    return;
                }
                if n == b":status" {
                    status = Some(
                        std::str::from_utf8(v)
                            .ok()
                            .and_then(|s| s.parse::<u16>().ok())
                            .filter(|s| (100..1000).contains(s))
                            .ok_or(()),
                    );
                } else if n.first() != Some(&b':') {
                    if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(n), HeaderValue::from_bytes(v))
                    {
                        fields.push((n, v));
                    }
                }
            })
            // The decoder's table is now out of step with the service's (§2.3.3).
            .map_err(|e| (frame::COMPRESSION_ERROR, e))?;
        if id >= self.next_id {
            return Err((
                frame::PROTOCOL_ERROR,
                "HEADERS on a stream not yet opened".into(),
            ));
        }
        let Some(s) = self.streams.get_mut(&id) else {
            // A stream we cancelled: the block was decoded for the table's sake.
            return Ok(());
        };
        if list_size > MAX_HEADER_LIST {
            self.reset(id, frame::CANCEL, "answer headers over 64 KiB");
            return Ok(());
        }
        match (s.status, status) {
            (None, Some(Ok(code))) if (100..200).contains(&code) => {
                // Informational (100 Continue): the real answer follows.
                if end_stream {
                    self.reset(
                        id,
                        frame::PROTOCOL_ERROR,
                        "an informational answer ended the stream",
                    );
                }
                return Ok(());
            }
            (None, Some(Ok(code))) => {
                s.status = Some(code);
                for (n, v) in fields {
                    s.headers.append(n, v);
                }
            }
            (None, _) => {
                self.reset(
                    id,
                    frame::PROTOCOL_ERROR,
                    "an answer without a valid :status",
                );
                return Ok(());
            }
            // Trailers: read, not kept.
            (Some(_), _) => {}
        }
        if end_stream {
            self.complete(id);
        }
        Ok(())
    }

    /// The answer of stream `id` is whole.
    fn complete(&mut self, id: u32) {
        let Some(s) = self.streams.remove(&id) else {
            return;
        };
        if !s.pending.is_empty() {
            // Answered before the whole body went out (§8.1): stop sending it.
            frame::rst_stream(&mut self.out, id, frame::CANCEL);
        }
        let Some(status) = s.status else {
            self.events.push(Event::Failed(
                s.data,
                Failure {
                    unprocessed: false,
                    message: "the stream ended without an answer".into(),
                },
            ));
            return;
        };
        self.events.push(Event::Answer(
            s.data,
            Answer {
                status,
                headers: s.headers,
                body: s.body.freeze(),
            },
        ));
    }

    fn settings(&mut self, head: Head, payload: &[u8]) -> Result<(), (u32, String)> {
        if head.stream != 0 {
            return Err((frame::PROTOCOL_ERROR, "SETTINGS on a stream".into()));
        }
        if head.flags & frame::ACK != 0 {
            if !payload.is_empty() {
                return Err((
                    frame::FRAME_SIZE_ERROR,
                    "SETTINGS ACK with a payload".into(),
                ));
            }
            return Ok(());
        }
        if payload.len() % 6 != 0 {
            return Err((frame::FRAME_SIZE_ERROR, "SETTINGS length".into()));
        }
        if !self.settings_seen {
            // Without the setting, no limit (RFC 9113 §6.5.2); the pool applies its own.
            self.settings_seen = true;
            self.peer_max_streams = usize::MAX;
        }
        for p in payload.chunks_exact(6) {
            let id = u16::from_be_bytes([p[0], p[1]]);
            let v = u32::from_be_bytes([p[2], p[3], p[4], p[5]]);
            match id {
                1 => self.enc.set_peer_max(v as usize),
                3 => self.peer_max_streams = v as usize,
                4 => {
                    if i64::from(v) > MAX_WINDOW {
                        return Err((frame::FLOW_CONTROL_ERROR, "INITIAL_WINDOW_SIZE".into()));
                    }
                    let delta = i64::from(v) - self.peer_initial_window;
                    self.peer_initial_window = i64::from(v);
                    for s in self.streams.values_mut() {
                        s.send_window += delta;
                        if s.send_window > MAX_WINDOW {
                            return Err((
                                frame::FLOW_CONTROL_ERROR,
                                "INITIAL_WINDOW_SIZE overflows a stream window".into(),
                            ));
                        }
                    }
                }
                5 => {
                    if !(16_384..=16_777_215).contains(&v) {
                        return Err((frame::PROTOCOL_ERROR, "MAX_FRAME_SIZE".into()));
                    }
                    self.peer_max_frame = v as usize;
                }
                _ => {}
            }
        }
        frame::settings_ack(&mut self.out);
        self.flush_blocked();
        Ok(())
    }

    fn write_headers(&mut self, id: u32, block: &[u8], end_stream: bool) {
        let max = self.peer_max_frame;
        let first = &block[..block.len().min(max)];
        let mut flags = if end_stream { frame::END_STREAM } else { 0 };
        if first.len() == block.len() {
            flags |= frame::END_HEADERS;
        }
        frame::head(&mut self.out, first.len(), frame::HEADERS, flags, id);
        self.out.put_slice(first);
        let mut rest = &block[first.len()..];
        while !rest.is_empty() {
            let n = rest.len().min(max);
            let flags = if n == rest.len() {
                frame::END_HEADERS
            } else {
                0
            };
            frame::head(&mut self.out, n, frame::CONTINUATION, flags, id);
            self.out.put_slice(&rest[..n]);
            rest = &rest[n..];
        }
    }

    /// Sends what the windows allow of stream `id`'s body; whether all of it is out.
    fn send_body(&mut self, id: u32) -> bool {
        let Some(s) = self.streams.get_mut(&id) else {
            return true;
        };
        while !s.pending.is_empty() {
            let n = (s.pending.len() as i64)
                .min(self.send_window)
                .min(s.send_window)
                .min(self.peer_max_frame as i64);
            if n <= 0 {
                return false;
            }
            let chunk = s.pending.split_to(n as usize);
            let flags = if s.pending.is_empty() {
                frame::END_STREAM
            } else {
                0
            };
            frame::head(&mut self.out, chunk.len(), frame::DATA, flags, id);
            self.out.put_slice(&chunk);
            self.send_window -= n;
            s.send_window -= n;
        }
        true
    }

    /// Sends the waiting bodies the windows now allow, oldest first; forgets ended streams.
    fn flush_blocked(&mut self) {
        let mut blocked = std::mem::take(&mut self.blocked);
        blocked.retain(|&id| self.send_window <= 0 || !self.send_body(id));
        blocked.retain(|id| self.streams.contains_key(id));
        self.blocked = blocked;
    }
}

#[cfg(test)]
mod tests;
