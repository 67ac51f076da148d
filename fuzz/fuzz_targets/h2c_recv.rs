//! Fuzz target for the HTTP/2 client's reading side (`src/transport/h2c/`): frames, header
//! blocks (HPACK, Huffman) and flow control from an untrusted service. Nothing may panic; every
//! request comes back at most once; a connection error ends the connection; what HPACK and
//! Huffman decode re-encodes to the same (see `tagcast::bench_support::h2c_recv` and
//! `hpack_decode`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tagcast::bench_support::h2c_recv(data);
    tagcast::bench_support::hpack_decode(data);
});
