//! Fuzz target for the tag-expression parser: no input may panic, overflow the stack or hang;
//! whatever parses must print and parse back to the same tree and evaluate without trouble.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tagcast::{ExprLimits, TagExpr};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // A pseudo-random predicate derived from the input: whether an installation "has" a tag
    // depends on a hash of the tag and of the input, so different inputs explore different sets.
    let seed = data.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    for limits in [ExprLimits::default(), ExprLimits::notification_hubs()] {
        match TagExpr::parse_with(text, &limits) {
            Ok(expr) => {
                let printed = expr.to_string();
                let reparsed = TagExpr::parse_with(&printed, &limits);
                assert_eq!(reparsed.as_ref(), Ok(&expr), "printed as {printed:?}");
                assert_eq!(expr.tags().count(), expr.tag_count());
                assert!(expr.depth() <= limits.max_depth);
                let has = |t: &tagcast::TagRef| {
                    let h = t.to_string().bytes().fold(seed, |h, b| {
                        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
                    });
                    h >> 63 == 1
                };
                let (a, b) = (expr.matches(has), expr.matches(has));
                assert_eq!(a, b, "matches is deterministic");
                if let Ok(again) = reparsed {
                    assert_eq!(again.matches(has), a);
                }
            }
            Err(err) => {
                if let Some(pos) = err.position() {
                    assert!(pos <= text.len() && text.is_char_boundary(pos), "{err}");
                }
                assert!(!err.to_string().is_empty());
            }
        }
    }
});
