//! The connection against a hand-written service: frames in, frames and events out.

use bytes::{BufMut, Bytes, BytesMut};
use http::Request;

use super::*;
use crate::transport::h2c::hpack::{Encoder, Mode};
use crate::transport::h2c::huffman;

fn req(path: &str) -> Request<()> {
    let mut r = Request::new(());
    *r.method_mut() = http::Method::POST;
    *r.uri_mut() = format!("https://push.example{path}").parse().unwrap();
    r.headers_mut()
        .insert("apns-topic", "com.example".parse().unwrap());
    r
}

/// What the connection wrote, as frames (the preface skipped).
fn written<T>(c: &mut Conn<T>) -> Vec<(Head, Bytes)> {
    let mut out = c.out().split();
    if out.starts_with(frame::PREFACE) {
        let _ = out.split_to(frame::PREFACE.len());
    }
    let mut v = Vec::new();
    while let Some(f) = frame::next(&mut out).unwrap() {
        v.push(f);
    }
    assert!(out.is_empty());
    v
}

/// A frame from the service.
fn from_service(buf: &mut BytesMut, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    frame::head(buf, payload.len(), kind, flags, stream);
    buf.put_slice(payload);
}

fn settings(pairs: &[(u16, u32)]) -> BytesMut {
    let mut b = BytesMut::new();
    frame::settings(&mut b, pairs);
    b
}

fn block(enc: &mut Encoder, fields: &[(&str, &str)]) -> Vec<u8> {
    let mut b = BytesMut::new();
    enc.begin(&mut b);
    for (n, v) in fields {
        enc.field(&mut b, n.as_bytes(), v.as_bytes(), Mode::Index);
    }
    b.to_vec()
}

fn open(max_streams: u32) -> Conn<&'static str> {
    let mut c = Conn::new();
    let _ = written(&mut c);
    c.recv(&mut settings(&[(3, max_streams)])).unwrap();
    let acks = written(&mut c);
    assert_eq!(acks.len(), 1);
    assert_eq!(
        (acks[0].0.kind, acks[0].0.flags),
        (frame::SETTINGS, frame::ACK)
    );
    c
}

#[test]
fn answers_come_back_to_their_streams_with_status_headers_and_body() {
    let mut c = open(10);
    assert_eq!(c.max_streams(), 10);
    let a = c.start(&req("/3/device/aa"), Bytes::new(), "a").unwrap();
    let b = c
        .start(&req("/3/device/bb"), Bytes::from_static(b"{}"), "b")
        .unwrap();
    assert_eq!((a, b), (1, 3));
    let f = written(&mut c);
    let kinds: Vec<_> = f.iter().map(|(h, _)| (h.kind, h.flags, h.stream)).collect();
    assert_eq!(
        kinds,
        vec![
            (frame::HEADERS, frame::END_HEADERS | frame::END_STREAM, 1),
            (frame::HEADERS, frame::END_HEADERS, 3),
            (frame::DATA, frame::END_STREAM, 3),
        ]
    );
    // The request headers decode as sent.
    let mut d = Decoder::default();
    let mut got = Vec::new();
    d.decode(&f[0].1, |n, v| {
        got.push(format!(
            "{}={}",
            String::from_utf8_lossy(n),
            String::from_utf8_lossy(v)
        ))
    })
    .unwrap();
    assert_eq!(
        got,
        [
            ":method=POST",
            ":scheme=https",
            ":authority=push.example",
            ":path=/3/device/aa",
            "apns-topic=com.example"
        ]
    );

    let mut enc = Encoder::default();
    let mut buf = BytesMut::new();
    let h = block(&mut enc, &[(":status", "400"), ("apns-id", "x")]);
    from_service(&mut buf, frame::HEADERS, frame::END_HEADERS, 3, &h);
    from_service(&mut buf, frame::DATA, 0, 3, b"{\"reason\":");
    from_service(
        &mut buf,
        frame::DATA,
        frame::END_STREAM,
        3,
        b"\"BadDeviceToken\"}",
    );
    let h = block(&mut enc, &[(":status", "200")]);
    // Only part of the last frame has arrived: nothing of it is read yet.
    let mut last = BytesMut::new();
    from_service(
        &mut last,
        frame::HEADERS,
        frame::END_HEADERS | frame::END_STREAM,
        1,
        &h,
    );
    buf.put_slice(&last[..4]);
    c.recv(&mut buf).unwrap();
    let ev: Vec<_> = c.events().collect();
    assert_eq!(ev.len(), 1);
    match &ev[0] {
        Event::Answer("b", a) => {
            assert_eq!(a.status, 400);
            assert_eq!(a.headers["apns-id"], "x");
            assert_eq!(&a.body[..], b"{\"reason\":\"BadDeviceToken\"}");
        }
        e => panic!("{e:?}"),
    }
    buf.put_slice(&last[4..]);
    c.recv(&mut buf).unwrap();
    assert!(buf.is_empty());
    assert!(matches!(c.events().next(), Some(Event::Answer("a", a)) if a.status == 200));
    assert_eq!(c.open_streams(), 0);
}

#[test]
fn one_stream_until_the_services_settings_then_its_limit() {
    let mut c: Conn<u32> = Conn::new();
    assert_eq!(c.max_streams(), 1);
    c.start(&req("/"), Bytes::new(), 1).unwrap();
    assert_eq!(c.start(&req("/"), Bytes::new(), 2), Err(2));
    c.recv(&mut settings(&[])).unwrap();
    // No limit given: none (the pool applies its own).
    assert!(c.can_start());
    c.recv(&mut settings(&[(3, 2)])).unwrap();
    c.start(&req("/"), Bytes::new(), 2).unwrap();
    assert!(!c.can_start());
}

#[test]
fn goaway_reports_the_streams_above_its_last_id_unprocessed_and_takes_no_more() {
    let mut c = open(10);
    for d in ["1", "3", "5"] {
        c.start(&req("/"), Bytes::new(), d).unwrap();
    }
    let mut buf = BytesMut::new();
    let mut p = Vec::new();
    p.extend_from_slice(&3u32.to_be_bytes());
    p.extend_from_slice(&0u32.to_be_bytes());
    from_service(&mut buf, frame::GOAWAY, 0, 0, &p);
    c.recv(&mut buf).unwrap();
    let ev: Vec<_> = c.events().collect();
    assert!(
        matches!(&ev[..], [Event::Failed("5", f)] if f.unprocessed),
        "{ev:?}"
    );
    assert!(c.is_closing());
    assert_eq!(c.start(&req("/"), Bytes::new(), "7"), Err("7"));
    assert_eq!(c.open_streams(), 2);
}

#[test]
fn a_refused_stream_is_unprocessed_and_other_resets_are_not() {
    let mut c = open(10);
    c.start(&req("/"), Bytes::new(), "a").unwrap();
    c.start(&req("/"), Bytes::new(), "b").unwrap();
    let mut buf = BytesMut::new();
    from_service(
        &mut buf,
        frame::RST_STREAM,
        0,
        1,
        &frame::REFUSED_STREAM.to_be_bytes(),
    );
    from_service(&mut buf, frame::RST_STREAM, 0, 3, &2u32.to_be_bytes());
    c.recv(&mut buf).unwrap();
    let ev: Vec<_> = c.events().collect();
    match &ev[..] {
        [Event::Failed("a", fa), Event::Failed("b", fb)] => {
            assert!(fa.unprocessed);
            assert!(!fb.unprocessed);
            assert!(fb.message.contains("INTERNAL_ERROR"), "{}", fb.message);
        }
        e => panic!("{e:?}"),
    }
}

#[test]
fn bodies_wait_for_window_and_go_out_in_order() {
    let mut c = open(10);
    // A 10-byte stream window.
    c.recv(&mut settings(&[(4, 10)])).unwrap();
    let _ = written(&mut c);
    c.start(
        &req("/"),
        Bytes::from_static(b"0123456789abcdefghijklmno"),
        "a",
    )
    .unwrap();
    c.start(&req("/"), Bytes::from_static(b"xyz"), "b").unwrap();
    let data = |f: &[(Head, Bytes)]| -> Vec<(u32, Vec<u8>, bool)> {
        f.iter()
            .filter(|(h, _)| h.kind == frame::DATA)
            .map(|(h, p)| (h.stream, p.to_vec(), h.flags & frame::END_STREAM != 0))
            .collect()
    };
    // Stream 1 waits for its window; stream 3's body fits its own and goes at once.
    assert_eq!(
        data(&written(&mut c)),
        vec![
            (1, b"0123456789".to_vec(), false),
            (3, b"xyz".to_vec(), true)
        ]
    );
    let mut buf = BytesMut::new();
    from_service(&mut buf, frame::WINDOW_UPDATE, 0, 1, &20u32.to_be_bytes());
    c.recv(&mut buf).unwrap();
    assert_eq!(
        data(&written(&mut c)),
        vec![(1, b"abcdefghijklmno".to_vec(), true)]
    );
    // The connection window: 65,535 less the 28 bytes sent. A body larger than what is left
    // waits for the connection's WINDOW_UPDATE, and so does every body after it.
    c.recv(&mut settings(&[(4, 1 << 20)])).unwrap();
    let _ = written(&mut c);
    c.start(&req("/"), Bytes::from(vec![b'L'; 70_000]), "big")
        .unwrap();
    c.start(&req("/"), Bytes::from_static(b"after"), "after")
        .unwrap();
    let sent: usize = data(&written(&mut c)).iter().map(|d| d.1.len()).sum();
    assert_eq!(sent, 65_535 - 28);
    let mut buf = BytesMut::new();
    from_service(
        &mut buf,
        frame::WINDOW_UPDATE,
        0,
        0,
        &10_000u32.to_be_bytes(),
    );
    c.recv(&mut buf).unwrap();
    let d = data(&written(&mut c));
    assert_eq!(
        d.iter().map(|d| d.1.len()).sum::<usize>(),
        70_000 - (65_535 - 28) + 5
    );
    assert_eq!(d.last().unwrap(), &(7, b"after".to_vec(), true));
}

#[test]
fn continuation_huffman_and_a_cancelled_streams_late_answer_keep_the_table_in_step() {
    let mut c = open(10);
    c.start(&req("/"), Bytes::new(), "gone").unwrap();
    c.start(&req("/"), Bytes::new(), "kept").unwrap();
    assert_eq!(c.cancel(1), Some("gone"));
    let f = written(&mut c);
    assert!(f.iter().any(|(h, p)| h.kind == frame::RST_STREAM
        && h.stream == 1
        && p[..] == frame::CANCEL.to_be_bytes()));

    // The late answer to stream 1 adds `x-trace: t1` to the table (Huffman-coded); the
    // answer to stream 3 refers to it by index, its block split over a CONTINUATION.
    let mut b1 = vec![0x88]; // :status 200
    b1.push(0x40);
    b1.push(7);
    b1.extend_from_slice(b"x-trace");
    let coded = huffman::encode(b"t1");
    b1.push(0x80 | coded.len() as u8);
    b1.extend_from_slice(&coded);
    let b3 = [0x8d, 0xbe]; // :status 404, dynamic entry 62
    let mut buf = BytesMut::new();
    from_service(
        &mut buf,
        frame::HEADERS,
        frame::END_HEADERS | frame::END_STREAM,
        1,
        &b1,
    );
    from_service(&mut buf, frame::HEADERS, frame::END_STREAM, 3, &b3[..1]);
    from_service(
        &mut buf,
        frame::CONTINUATION,
        frame::END_HEADERS,
        3,
        &b3[1..],
    );
    c.recv(&mut buf).unwrap();
    let ev: Vec<_> = c.events().collect();
    match &ev[..] {
        [Event::Answer("kept", a)] => {
            assert_eq!(a.status, 404);
            assert_eq!(a.headers["x-trace"], "t1");
        }
        e => panic!("{e:?}"),
    }
}

#[test]
fn pings_are_answered_and_protocol_errors_end_the_connection() {
    let mut c = open(10);
    c.start(&req("/"), Bytes::new(), "a").unwrap();
    let _ = written(&mut c);
    let mut buf = BytesMut::new();
    from_service(&mut buf, frame::PING, 0, 0, b"abcdefgh");
    c.recv(&mut buf).unwrap();
    let f = written(&mut c);
    assert_eq!((f[0].0.kind, f[0].0.flags), (frame::PING, frame::ACK));
    assert_eq!(&f[0].1[..], b"abcdefgh");

    // A frame on an interrupted header block, then anything after, is a connection error.
    let mut buf = BytesMut::new();
    from_service(&mut buf, frame::HEADERS, 0, 1, &[0x88]);
    from_service(&mut buf, frame::PING, 0, 0, b"abcdefgh");
    let e = c.recv(&mut buf).unwrap_err();
    assert!(e.0.contains("PROTOCOL_ERROR"), "{e:?}");
    let f = written(&mut c);
    assert_eq!(f.last().unwrap().0.kind, frame::GOAWAY);
    assert!(!c.can_start());
    assert_eq!(c.fail_all(), vec!["a"]);
    assert!(c.recv(&mut BytesMut::new()).is_err());
}

#[test]
fn arbitrary_bytes_from_the_service_never_panic() {
    // A few shapes the fuzz target (fuzz/fuzz_targets/h2c_recv.rs) explores at length.
    let inputs: [&[u8]; 5] = [
        &[0, 0, 1, 1, 5, 0, 0, 0, 1, 0xff],
        &[0, 0, 3, 1, 5, 0, 0, 0, 1, 0x7f, 0xff, 0xff],
        &[0, 0, 2, 0, 8, 0, 0, 0, 1, 9, 0],
        &[0, 0, 4, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        &[
            0, 0, 8, 7, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0,
        ],
    ];
    for input in inputs {
        let mut c = open(10);
        c.start(&req("/"), Bytes::new(), "a").unwrap();
        let _ = c.recv(&mut BytesMut::from(input));
        let _ = c.events().count();
    }
}
