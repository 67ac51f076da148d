//! Fuzz target for the template compiler and renderer: no input may panic; error offsets fall on
//! char boundaries; a compiled body renders, with any properties, to a body of its own format
//! that is well formed (JSON: serde_json parses it).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tagcast::template::{check_body, BodyFormat, CompiledTemplate, CompiledText, Properties};

/// Property bags with hostile values: quotes, backslashes, controls, markup, numbers.
fn bags() -> Vec<Properties> {
    let names = ["a", "b", "n", "p0", "title", "msg_en"];
    let values: [&[&str]; 3] = [
        &[
            "x",
            "40",
            "-1.5e3",
            "\"q\\\u{1}\n",
            "<a href='x'>&amp;</a>",
            "😀é\u{fffe}\r",
        ],
        &["", "", "01", "]]>", "$(a)", "{'x'}"],
        &[],
    ];
    values
        .iter()
        .map(|vals| names.iter().copied().zip(vals.iter().copied()).collect())
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match CompiledTemplate::compile(text) {
        Ok(t) => {
            for p in bags() {
                let out = t.render(&p).expect("bodies render");
                let out = std::str::from_utf8(&out).expect("output is UTF-8");
                if t.format() == BodyFormat::Json {
                    if let Err(e) = serde_json::from_str::<serde_json::Value>(out) {
                        panic!("{e}: {out}");
                    }
                }
                assert_eq!(check_body(out).as_ref().ok(), Some(&t.format()), "{out}");
            }
        }
        Err(e) => {
            assert!(
                e.offset() <= text.len() && text.is_char_boundary(e.offset()),
                "{e}"
            );
            assert!(!e.to_string().is_empty());
        }
    }
    if let Ok(t) = CompiledText::compile(text) {
        for p in bags() {
            let mut s = String::new();
            t.render_into(&p, &mut s);
        }
    }
});
