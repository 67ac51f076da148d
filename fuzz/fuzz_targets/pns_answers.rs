//! Fuzz target for the readers of push-service answers (`src/pns/*/answer.rs`): APNs
//! reason JSON, FCM error JSON, WNS and Web Push status headers, Retry-After (seconds or
//! HTTP-date). The answers come from the network: no input may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let status = u16::from_le_bytes([data[0], data[1]]) % 1000;
    let split = (data[2] as usize).min(data.len() - 3);
    let (header, body) = data[3..].split_at(split);
    let header = String::from_utf8_lossy(header);
    let verdicts = tagcast::bench_support::classify_any(status, body, &header);
    for v in verdicts {
        assert!(!v.is_empty());
    }
});
