//! HTTP/2 frames (RFC 9113 §4, §6): the 9-byte header, splitting whole frames off a read
//! buffer, and writing the frames a client sends. Sans-IO.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// The client connection preface (RFC 9113 §3.4).
pub(crate) const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
pub(crate) const HEAD_LEN: usize = 9;
/// SETTINGS_MAX_FRAME_SIZE's initial value, and the largest frame this client accepts (it
/// never raises it).
pub(crate) const DEFAULT_MAX_FRAME: usize = 16_384;

pub(crate) const DATA: u8 = 0x0;
pub(crate) const HEADERS: u8 = 0x1;
pub(crate) const RST_STREAM: u8 = 0x3;
pub(crate) const SETTINGS: u8 = 0x4;
pub(crate) const PUSH_PROMISE: u8 = 0x5;
pub(crate) const PING: u8 = 0x6;
pub(crate) const GOAWAY: u8 = 0x7;
pub(crate) const WINDOW_UPDATE: u8 = 0x8;
pub(crate) const CONTINUATION: u8 = 0x9;

pub(crate) const END_STREAM: u8 = 0x1;
pub(crate) const ACK: u8 = 0x1;
pub(crate) const END_HEADERS: u8 = 0x4;
pub(crate) const PADDED: u8 = 0x8;
pub(crate) const PRIORITY_FLAG: u8 = 0x20;

/// Error codes (RFC 9113 §7).
pub(crate) const NO_ERROR: u32 = 0x0;
pub(crate) const PROTOCOL_ERROR: u32 = 0x1;
pub(crate) const FLOW_CONTROL_ERROR: u32 = 0x3;
pub(crate) const FRAME_SIZE_ERROR: u32 = 0x6;
pub(crate) const REFUSED_STREAM: u32 = 0x7;
pub(crate) const CANCEL: u32 = 0x8;
pub(crate) const COMPRESSION_ERROR: u32 = 0x9;

/// The name of an error code, as in RFC 9113 §7.
pub(crate) fn code_name(code: u32) -> &'static str {
    match code {
        0x0 => "NO_ERROR",
        0x1 => "PROTOCOL_ERROR",
        0x2 => "INTERNAL_ERROR",
        0x3 => "FLOW_CONTROL_ERROR",
        0x4 => "SETTINGS_TIMEOUT",
        0x5 => "STREAM_CLOSED",
        0x6 => "FRAME_SIZE_ERROR",
        0x7 => "REFUSED_STREAM",
        0x8 => "CANCEL",
        0x9 => "COMPRESSION_ERROR",
        0xa => "CONNECT_ERROR",
        0xb => "ENHANCE_YOUR_CALM",
        0xc => "INADEQUATE_SECURITY",
        0xd => "HTTP_1_1_REQUIRED",
        _ => "unknown error code",
    }
}

/// A frame's header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Head {
    pub(crate) kind: u8,
    pub(crate) flags: u8,
    /// The stream identifier, reserved bit cleared.
    pub(crate) stream: u32,
}

/// A frame too large for this client (FRAME_SIZE_ERROR, a connection error).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct TooLarge(pub(crate) usize);

/// Splits the next whole frame off `buf`: `None` until all of it has arrived.
pub(crate) fn next(buf: &mut BytesMut) -> Result<Option<(Head, Bytes)>, TooLarge> {
    if buf.len() < HEAD_LEN {
        return Ok(None);
    }
    let len = (usize::from(buf[0]) << 16) | (usize::from(buf[1]) << 8) | usize::from(buf[2]);
    if len > DEFAULT_MAX_FRAME {
        return Err(TooLarge(len));
    }
    if buf.len() < HEAD_LEN + len {
        return Ok(None);
    }
    let head = Head {
        kind: buf[3],
        flags: buf[4],
        stream: u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) & 0x7fff_ffff,
    };
    buf.advance(HEAD_LEN);
    Ok(Some((head, buf.split_to(len).freeze())))
}

/// Writes a frame header for a payload of `len` bytes.
pub(crate) fn head(out: &mut BytesMut, len: usize, kind: u8, flags: u8, stream: u32) {
    debug_assert!(len < 1 << 24);
    out.reserve(HEAD_LEN + len);
    out.put_uint(len as u64, 3);
    out.put_u8(kind);
    out.put_u8(flags);
    out.put_u32(stream & 0x7fff_ffff);
}

/// SETTINGS with `(identifier, value)` pairs.
pub(crate) fn settings(out: &mut BytesMut, pairs: &[(u16, u32)]) {
    head(out, 6 * pairs.len(), SETTINGS, 0, 0);
    for &(id, v) in pairs {
        out.put_u16(id);
        out.put_u32(v);
    }
}

pub(crate) fn settings_ack(out: &mut BytesMut) {
    head(out, 0, SETTINGS, ACK, 0);
}

pub(crate) fn window_update(out: &mut BytesMut, stream: u32, increment: u32) {
    head(out, 4, WINDOW_UPDATE, 0, stream);
    out.put_u32(increment & 0x7fff_ffff);
}

pub(crate) fn ping(out: &mut BytesMut, flags: u8, payload: [u8; 8]) {
    head(out, 8, PING, flags, 0);
    out.put_slice(&payload);
}

pub(crate) fn rst_stream(out: &mut BytesMut, stream: u32, code: u32) {
    head(out, 4, RST_STREAM, 0, stream);
    out.put_u32(code);
}

pub(crate) fn goaway(out: &mut BytesMut, last: u32, code: u32) {
    head(out, 8, GOAWAY, 0, 0);
    out.put_u32(last & 0x7fff_ffff);
    out.put_u32(code);
}

/// The payload of a DATA or HEADERS frame without its padding (and, for HEADERS, without
/// the priority fields): `None` when the padding is longer than the frame.
pub(crate) fn unpad(head: &Head, mut payload: Bytes) -> Option<Bytes> {
    let mut pad = 0usize;
    if head.flags & PADDED != 0 {
        if payload.is_empty() {
            return None;
        }
        pad = usize::from(payload.get_u8());
    }
    if head.kind == HEADERS && head.flags & PRIORITY_FLAG != 0 {
        if payload.len() < 5 {
            return None;
        }
        payload.advance(5);
    }
    if pad > payload.len() {
        return None;
    }
    payload.truncate(payload.len() - pad);
    Some(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_off_whole_and_only_whole() {
        let mut out = BytesMut::new();
        ping(&mut out, ACK, *b"12345678");
        window_update(&mut out, 3, 100);
        let mut buf = BytesMut::new();
        for (i, b) in out.iter().enumerate() {
            buf.put_u8(*b);
            let got = next(&mut buf).unwrap();
            if i + 1 == HEAD_LEN + 8 {
                let (h, p) = got.unwrap();
                assert_eq!((h.kind, h.flags, h.stream), (PING, ACK, 0));
                assert_eq!(&p[..], b"12345678");
            } else if i + 1 == out.len() {
                let (h, p) = got.unwrap();
                assert_eq!((h.kind, h.stream), (WINDOW_UPDATE, 3));
                assert_eq!(&p[..], &100u32.to_be_bytes());
            } else {
                assert!(got.is_none(), "at byte {i}");
            }
        }
        let mut big = BytesMut::new();
        head(&mut big, DEFAULT_MAX_FRAME + 1, DATA, 0, 1);
        assert_eq!(next(&mut big), Err(TooLarge(DEFAULT_MAX_FRAME + 1)));
    }

    #[test]
    fn padding_and_priority_come_off() {
        let h = |kind, flags| Head {
            kind,
            flags,
            stream: 1,
        };
        let p = Bytes::from_static(b"\x02abc\0\0");
        assert_eq!(unpad(&h(DATA, PADDED), p.clone()).unwrap(), "abc");
        assert_eq!(unpad(&h(DATA, 0), p.clone()).unwrap(), p);
        let p = Bytes::from_static(b"\x01\0\0\0\x03\x10hi\0");
        assert_eq!(unpad(&h(HEADERS, PADDED | PRIORITY_FLAG), p).unwrap(), "hi");
        assert!(unpad(&h(DATA, PADDED), Bytes::from_static(b"\x09ab")).is_none());
        assert!(unpad(&h(DATA, PADDED), Bytes::new()).is_none());
        assert!(unpad(&h(HEADERS, PRIORITY_FLAG), Bytes::from_static(b"\0\0")).is_none());
    }
}
