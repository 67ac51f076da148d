//! Template tests: every construct with its output, compile errors with their offsets, the
//! installation-level parts, the cache, and property tests against serde_json and the XML
//! scanner.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

use super::*;
use crate::model::Template;

fn props(pairs: &[(&str, &str)]) -> Properties {
    pairs.iter().copied().collect()
}

fn render(body: &str, pairs: &[(&str, &str)]) -> String {
    let t = CompiledTemplate::compile(body).unwrap_or_else(|e| panic!("{body}: {e}"));
    String::from_utf8(t.render(&props(pairs)).unwrap()).unwrap()
}

/// The error of a template that must not compile: (offset, message).
fn error(body: &str) -> (usize, String) {
    match CompiledTemplate::compile(body) {
        Ok(_) => panic!("{body:?} compiled"),
        Err(e) => {
            assert_eq!(e.part(), &TemplatePart::Body);
            (e.offset(), e.message().to_string())
        }
    }
}

// ---- constructs ---------------------------------------------------------------------------

#[test]
fn plain_missing_and_literal_values() {
    assert_eq!(
        render(r#"{"a":"$(name)","b":"x","c":1}"#, &[("name", "Bob")]),
        r#"{"a":"Bob","b":"x","c":1}"#
    );
    assert_eq!(render(r#"{"a":"$(name)"}"#, &[]), r#"{"a":""}"#);
    // Whitespace inside the parentheses; literals and keys untouched; the rest byte-identical.
    assert_eq!(
        render(
            "{ \"$(k)\" : [ \"$(  name  )\" , \" $(name)\", \"'lit'\", true ] }",
            &[("name", "Bob"), ("k", "K")]
        ),
        "{ \"$(k)\" : [ \"Bob\" , \" $(name)\", \"'lit'\", true ] }"
    );
    // `$x` and `$` do not start expressions.
    assert_eq!(
        render(r##"["$x","$","#","."]"##, &[]),
        r##"["$x","$","#","."]"##
    );
}

#[test]
fn clip_counts_characters() {
    assert_eq!(render(r#"["$(p, 3)"]"#, &[("p", "héllo")]), r#"["hél"]"#);
    assert_eq!(render(r#"["$(p,0)"]"#, &[("p", "abc")]), r#"[""]"#);
    assert_eq!(render(r#"["$(p, 10)"]"#, &[("p", "abc")]), r#"["abc"]"#);
    assert_eq!(render(r#"["$(p, 2)"]"#, &[("p", "😀😀😀")]), r#"["😀😀"]"#);
}

#[test]
fn ellipsis_clip() {
    // The NH documentation's example.
    assert_eq!(
        render(
            r#"{"t":".(title, 20)"}"#,
            &[("title", "This is the title line")]
        ),
        r#"{"t":"This is the title..."}"#
    );
    assert_eq!(render(r#"[".(p, 5)"]"#, &[("p", "abcde")]), r#"["abcde"]"#);
    assert_eq!(render(r#"[".(p, 5)"]"#, &[("p", "abcdef")]), r#"["ab..."]"#);
    assert_eq!(render(r#"[".(p, 3)"]"#, &[("p", "abcdef")]), r#"["..."]"#);
    assert_eq!(render(r#"[".(p, 4)"]"#, &[("p", "ééééé")]), r#"["é..."]"#);
}

#[test]
fn uri_encoding() {
    assert_eq!(
        render(r#"["%(q)"]"#, &[("q", "a b/ü~-._?&=€")]),
        r#"["a%20b%2F%C3%BC~-._%3F%26%3D%E2%82%AC"]"#
    );
    assert_eq!(
        render(r#"["{'https://x/?q=' + %(q)}"]"#, &[("q", "日本")]),
        r#"["https://x/?q=%E6%97%A5%E6%9C%AC"]"#
    );
}

#[test]
fn number_holes() {
    let t = r##"{"aps":{"badge":"#(n)"}}"##;
    assert_eq!(render(t, &[("n", "40")]), r#"{"aps":{"badge":40}}"#);
    assert_eq!(render(t, &[("n", "x")]), r#"{"aps":{"badge":"x"}}"#);
    assert_eq!(
        render(t, &[("n", "-1.5e+3")]),
        r#"{"aps":{"badge":-1.5e+3}}"#
    );
    assert_eq!(render(t, &[("n", "0.25")]), r#"{"aps":{"badge":0.25}}"#);
    for s in [
        "01", "1.", ".5", "+1", "1e", " 1", "1e999", "NaN", "0x10", "",
    ] {
        let quoted = serde_json::to_string(s).unwrap();
        assert_eq!(
            render(t, &[("n", s)]),
            format!(r#"{{"aps":{{"badge":{quoted}}}}}"#)
        );
    }
    assert_eq!(render(t, &[]), r#"{"aps":{"badge":""}}"#);
    assert_eq!(render(r##"["#(n:{0})"]"##, &[]), "[0]");
    // A quote in a non-number is escaped.
    assert_eq!(render(t, &[("n", "4\"0")]), r#"{"aps":{"badge":"4\"0"}}"#);
}

#[test]
fn concatenation_and_literals() {
    assert_eq!(
        render(r#"["{'Hi, ' + $(name)}"]"#, &[("name", "Ann")]),
        r#"["Hi, Ann"]"#
    );
    assert_eq!(
        render(
            r#"["{ $(a) + ' - ' + $(b, 2) + .(c, 4) }"]"#,
            &[("a", "A"), ("b", "bbb"), ("c", "ccccc")]
        ),
        r#"["A - bbc..."]"#
    );
    assert_eq!(
        render(r#"["{'it''s ' + \"say \"\"hi\"\"\"}"]"#, &[]),
        r#"["it's say \"hi\""]"#
    );
    assert_eq!(render(r#"["{'x'}"]"#, &[]), r#"["x"]"#);
}

#[test]
fn defaults_and_fallbacks() {
    let t = r#"["$(p:{none})"]"#;
    assert_eq!(render(t, &[]), r#"["none"]"#);
    assert_eq!(
        render(t, &[("p", "")]),
        r#"[""]"#,
        "present but empty is kept"
    );
    assert_eq!(render(t, &[("p", "v")]), r#"["v"]"#);
    // In JSON source `\\` is one backslash: the default text is `a\}b\\c \$( C:\x`.
    assert_eq!(
        render(r#"["$(p:{a\\}b\\\\c \\$( C:\\x})"]"#, &[]),
        r#"["a}b\\c $( C:\\x"]"#
    );
    // The default goes through the same clipping and encoding.
    assert_eq!(render(r#"["$(p :{abcdef} , 3)"]"#, &[]), r#"["abc"]"#);
    assert_eq!(render(r#"["%(p:{a b})"]"#, &[]), r#"["a%20b"]"#);
    assert_eq!(render(r#"["{$(p:{x}) + '!'}"]"#, &[]), r#"["x!"]"#);
    // The extension: a default that is one property reference falls back to it.
    let loc = r#"{"alert":"$(msg_fr:{$(msg_en)})"}"#;
    assert_eq!(
        render(loc, &[("msg_fr", "Bonjour"), ("msg_en", "Hello")]),
        r#"{"alert":"Bonjour"}"#
    );
    assert_eq!(render(loc, &[("msg_en", "Hello")]), r#"{"alert":"Hello"}"#);
    assert_eq!(render(loc, &[]), r#"{"alert":""}"#);
    let chain = r#"[".(de:{$( fr :{$(en:{Hi})})}, 5)"]"#;
    assert_eq!(render(chain, &[("en", "Hello there")]), r#"["He..."]"#);
    assert_eq!(render(chain, &[]), r#"["Hi"]"#);
    assert_eq!(render(chain, &[("fr", "Salut")]), r#"["Salut"]"#);
    let t = CompiledTemplate::compile(chain).unwrap();
    assert_eq!(t.properties().collect::<Vec<_>>(), ["de", "fr", "en"]);
}

#[test]
fn names_are_case_insensitive() {
    assert_eq!(
        render(r#"["$(UserName)"]"#, &[("username", "a")]),
        r#"["a"]"#
    );
    assert_eq!(
        render(r#"["$(username)"]"#, &[("USERNAME", "b")]),
        r#"["b"]"#
    );
    let p = props(&[("Name", "1"), ("NAME", "2")]);
    assert_eq!(p.len(), 1);
    assert_eq!(p.get("nAmE"), Some("2"), "the last of equal names wins");
    let mut p = Properties::new();
    p.insert("Title", "x");
    p.insert("TITLE", "y");
    assert_eq!(p.get("title"), Some("y"));
    assert_eq!(p.iter().collect::<Vec<_>>(), [("title", "y")]);
    let t = CompiledTemplate::compile(r#"["$(A)", "$(a)", "$(B)"]"#).unwrap();
    assert_eq!(t.properties().collect::<Vec<_>>(), ["a", "b"]);
}

#[test]
fn json_values_are_escaped() {
    let v = "q\"\\ \n\u{1}\t\u{7f}\u{2028}é";
    let out = render(r#"{"a":"$(v)","b":"{$(v) + '\"'}"}"#, &[("v", v)]);
    assert_eq!(
        out,
        "{\"a\":\"q\\\"\\\\ \\n\\u0001\\t\u{7f}\u{2028}é\",\"b\":\"q\\\"\\\\ \\n\\u0001\\t\u{7f}\u{2028}é\\\"\"}"
    );
    let parsed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(parsed["a"], v);
    assert_eq!(parsed["b"], format!("{v}\""));
}

#[test]
fn template_escapes_are_decoded() {
    // `\u0024` is `$`: the decoded value is an expression, as a JSON parser would see it.
    assert_eq!(render(r#"["\u0024(p)"]"#, &[("p", "x")]), r#"["x"]"#);
    assert_eq!(
        render(r#"["{'a\\b' + $(p)}"]"#, &[("p", "x")]),
        r#"["a\\bx"]"#
    );
    // An error after an escape points into the body, not into the decoded text.
    let (pos, _) = error(r#"["\u0024(p"]"#);
    assert_eq!(pos, 10);
    // XML: references are decoded too.
    assert_eq!(render("<a x='&#36;(p)'/>", &[("p", "v")]), "<a x='v'/>");
    assert_eq!(
        render("<a>{&apos;&lt;&apos; + $(p)}</a>", &[("p", "v")]),
        "<a>&lt;v</a>"
    );
}

#[test]
fn xml_escaping() {
    let v = "<a href=\"x\">Tom & 'Jerry'</a>";
    let esc = "&lt;a href=&quot;x&quot;&gt;Tom &amp; &apos;Jerry&apos;&lt;/a&gt;";
    assert_eq!(
        render("<t a=\"$(v)\" b='$(v)'>$(v)</t>", &[("v", v)]),
        format!("<t a=\"{esc}\" b='{esc}'>{esc}</t>")
    );
    // Text nodes are trimmed: the whitespace around the hole stays.
    assert_eq!(render("<t>\n  $(v)\n</t>", &[("v", "x")]), "<t>\n  x\n</t>");
    // Whitespace and CR that a parser would normalise, characters XML cannot hold.
    assert_eq!(
        render("<t a='$(v)'>$(v)</t>", &[("v", "1\t2\n3\r4\u{1}5\u{fffe}")]),
        "<t a='1&#9;2&#10;3&#13;4\u{fffd}5\u{fffd}'>1\t2\n3&#13;4\u{fffd}5\u{fffd}</t>"
    );
    // Not expressions: text that does not start with a marker, CDATA, comments.
    let lit = "<t a='x $(v)'>x $(v)<![CDATA[$(v)]]><!-- $(v) --></t>";
    assert_eq!(render(lit, &[("v", "1")]), lit);
}

#[test]
fn wns_toast() {
    let t = r#"<?xml version="1.0" encoding="utf-8"?>
<toast launch="$(launch)">
  <visual>
    <binding template="ToastGeneric">
      <text id="1">$(title)</text>
      <text id="2">{'From ' + $(sender) + ': ' + .(body, 20)}</text>
      <image placement="appLogoOverride" src="{'https://cdn.example/a/' + %(avatar)}"/>
    </binding>
  </visual>
</toast>"#;
    let compiled = CompiledTemplate::compile(t).unwrap();
    assert_eq!(compiled.format(), BodyFormat::Xml);
    assert_eq!(
        compiled.properties().collect::<Vec<_>>(),
        ["launch", "title", "sender", "body", "avatar"]
    );
    let out = compiled
        .render(&props(&[
            ("launch", "chat?id=7&x=1"),
            ("title", "New <message>"),
            ("sender", "Zoë"),
            ("body", "Are we still on for lunch tomorrow?"),
            ("avatar", "zoë 1.png"),
        ]))
        .unwrap();
    let out = String::from_utf8(out).unwrap();
    assert_eq!(
        out,
        r#"<?xml version="1.0" encoding="utf-8"?>
<toast launch="chat?id=7&amp;x=1">
  <visual>
    <binding template="ToastGeneric">
      <text id="1">New &lt;message&gt;</text>
      <text id="2">From Zoë: Are we still on f...</text>
      <image placement="appLogoOverride" src="https://cdn.example/a/zo%C3%AB%201.png"/>
    </binding>
  </visual>
</toast>"#
    );
    assert_eq!(check_body(&out), Ok(BodyFormat::Xml));
}

fn apns_template() -> Template {
    Template {
        body: r##"{"aps":{"alert":{"title":"$(title)","body":".(body, 40)"},"badge":"#(badge)","sound":"default"},"conversation":"$(conv:{none})"}"##.into(),
        headers: BTreeMap::from([
            ("apns-priority".to_string(), "10".to_string()),
            ("apns-collapse-id".to_string(), "$(conv, 64)".to_string()),
        ]),
        tags: vec![],
        expiry: Some("$(expiry)".into()),
    }
}

#[test]
fn apns_installation_template() {
    let t = CompiledInstallationTemplate::compile(&apns_template()).unwrap();
    assert_eq!(t.body().format(), BodyFormat::Json);
    assert_eq!(t.properties(), ["title", "body", "badge", "conv", "expiry"]);
    let p = props(&[
        ("title", "Hello \"you\""),
        (
            "body",
            "A body that is much longer than forty characters, surely",
        ),
        ("badge", "3"),
        ("conv", "c-42"),
        ("expiry", "2030-01-01T00:00:00Z"),
    ]);
    let mut body = Vec::new();
    let h = t.render(&p, &mut body).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["aps"]["alert"]["title"], "Hello \"you\"");
    assert_eq!(
        v["aps"]["alert"]["body"],
        "A body that is much longer than forty..."
    );
    assert_eq!(v["aps"]["badge"], 3);
    assert_eq!(v["conversation"], "c-42");
    assert_eq!(
        h.iter().collect::<Vec<_>>(),
        [("apns-collapse-id", "c-42"), ("apns-priority", "10")]
    );
    assert_eq!(h.get("APNS-Priority"), Some("10"));
    assert_eq!(h.len(), 2);
    assert_eq!(h.expiry(), Some("2030-01-01T00:00:00Z"));

    let mut body = Vec::new();
    let h = t.render(&props(&[]), &mut body).unwrap();
    assert_eq!(h.expiry(), None);
    assert_eq!(h.get("apns-collapse-id"), Some(""));
    assert_eq!(
        String::from_utf8(body).unwrap(),
        r#"{"aps":{"alert":{"title":"","body":""},"badge":"","sound":"default"},"conversation":"none"}"#
    );
}

#[test]
fn fcm_v1_template() {
    let t = r#"{"message":{"notification":{"title":"$(title)","body":"{$(user) + ' wrote: ' + $(text, 100)}"},"data":{"thread":"$(thread)","count":"$(count)"},"android":{"priority":"high","ttl":"3600s"}}}"#;
    let out = render(
        t,
        &[
            ("title", "T"),
            ("user", "u\\1"),
            ("text", "hi\n"),
            ("thread", "9"),
            ("count", "12"),
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["message"]["notification"]["body"], "u\\1 wrote: hi\n");
    // FCM data values must be strings: `$(count)` stays quoted.
    assert_eq!(v["message"]["data"]["count"], "12");
    assert_eq!(v["message"]["android"]["ttl"], "3600s");
}

// ---- compile errors -----------------------------------------------------------------------

#[test]
fn expression_errors_have_offsets() {
    let cases: &[(&str, usize, &str)] = &[
        // Unclosed `$(`: the `)` was expected at the end of the value.
        (r#"{"a":"$(name"}"#, 12, "expected ')' after property name"),
        (r#"{"a":"$("}"#, 8, "expected a property name"),
        (
            r#"{"a":"$(na-me)"}"#,
            10,
            "expected ')' after property name",
        ),
        (r#"{"a":"$( )"}"#, 9, "expected a property name"),
        (
            r#"{"a":"{'x' + #(n)}"}"#,
            13,
            "'#(...)' is not allowed inside '{...}'",
        ),
        (r#"{"a":".(p)"}"#, 9, "expected ',' and a length"),
        (r#"{"a":".(p, 2)"}"#, 11, "needs a length of at least 3"),
        (r#"{"a":".(p, x)"}"#, 11, "expected a length"),
        (r#"{"a":"$(p, 99999999999)"}"#, 11, "length is too large"),
        (r#"{"a":"%(p, 3)"}"#, 9, "takes no length"),
        (r##"{"a":"#(p, 3)"}"##, 9, "takes no length"),
        (r#"{"a":"$(p) "}"#, 10, "expected the end of the value"),
        (r#"{"a":"$(a)$(b)"}"#, 10, "expected the end of the value"),
        (r#"{"a":"{}"}"#, 7, "expected a property reference"),
        (r#"{"a":"{$(a) $(b)}"}"#, 12, "expected '+' or '}'"),
        (r#"{"a":"{$(a) + }"}"#, 14, "expected a property reference"),
        (
            r#"{"a":"{$(a)"}"#,
            11,
            "expected '+' or '}' to close the '{' at byte 0",
        ),
        (r#"{"a":"{{'x'}}"}"#, 7, "'{' cannot nest"),
        (r#"{"a":"{'abc}"}"#, 7, "unterminated literal"),
        (r#"{"a":"$(p:{abc)"}"#, 10, "unterminated default value"),
        (r#"{"a":"$(p:abc)"}"#, 10, "expected '{' after ':'"),
        (
            r#"{"a":"$(p:{$(q) })"}"#,
            15,
            "expected '}' right after the fallback",
        ),
        (
            r#"{"a":"$(p:{$(q-r)})"}"#,
            14,
            "expected ')' after property name",
        ),
        (
            r#"{"a":"$(p:{$(q, 3)})"}"#,
            14,
            "a fallback reference takes no length",
        ),
        (r#"{"a":"{"}"#, 7, "expected a property reference"),
        ("<a>#(n)</a>", 3, "only allowed in JSON templates"),
        ("<a>\n  $(n</a>", 9, "expected ')' after property name"),
        ("<a b='x' c='.(p)'/>", 15, "expected ',' and a length"),
    ];
    for &(body, pos, msg) in cases {
        let (p, m) = error(body);
        assert!(m.contains(msg), "{body}: {m:?} does not contain {msg:?}");
        assert_eq!(p, pos, "{body}: {m}");
    }
    let long = format!(r#"["$({})"]"#, "n".repeat(121));
    assert_eq!(error(&long).0, 4);
    assert!(CompiledTemplate::compile(&format!(r#"["$({})"]"#, "n".repeat(120))).is_ok());
    let deep = format!(r#"["{}x{}"]"#, "$(a:{".repeat(9), ")}".repeat(9));
    assert!(error(&deep).1.contains("nest deeper than 8"));
    let ok = format!(r#"["{}x{}"]"#, "$(a:{".repeat(7), "})".repeat(7));
    assert!(CompiledTemplate::compile(&ok).is_ok(), "{ok}");
}

#[test]
fn display_names_part_and_offset() {
    let e = CompiledTemplate::compile(r#"{"alert": "$(name"}"#).unwrap_err();
    assert_eq!(
        e.to_string(),
        "template body, byte 17: expected ')' after property name (or ', length' or ':{default}')"
    );
}

#[test]
fn body_errors_have_offsets() {
    let cases: &[(&str, usize, &str)] = &[
        ("", 0, "empty"),
        ("  \n", 3, "empty"),
        ("  hello", 2, "expected '{' or '['"),
        (r#"{"a":1,}"#, 7, "expected a string key"),
        (r#"{"a" 1}"#, 5, "expected ':'"),
        (r#"{"a":1"#, 6, "expected ',' or '}'"),
        (r#"[1 2]"#, 3, "expected ',' or ']'"),
        (r#"[01]"#, 2, "expected ',' or ']'"),
        (r#"[1e999]"#, 1, "out of range"),
        (r#"["a]"#, 1, "unterminated JSON string"),
        (r#"["\x"]"#, 2, "invalid escape"),
        (r#"["\ud800"]"#, 2, "lone UTF-16 surrogate"),
        ("[\"\t\"]", 2, "control character"),
        (r#"[tru]"#, 1, "expected a JSON value"),
        (r#"[] []"#, 3, "expected the end of the body"),
        (
            "<a><b></a>",
            6,
            "expected '</b>' to close the element opened at byte 3",
        ),
        ("<a x=1/>", 5, "expected a quoted attribute value"),
        ("<a x='1' x='2'/>", 9, "duplicate attribute 'x'"),
        ("<a x='1'y='2'/>", 8, "expected whitespace"),
        ("<a>x &nbsp; y</a>", 5, "unknown entity"),
        ("<a>x & y</a>", 5, "'&' must start"),
        ("<a>]]></a>", 3, "']]>'"),
        ("<a>", 3, "expected '</a>'"),
        ("<a></a><b/>", 7, "expected the end of the body"),
        ("<a></a> x", 8, "expected the end of the body"),
        ("<!DOCTYPE a><a/>", 0, "DOCTYPE"),
        ("<a x='<'/>", 6, "'<' is not allowed"),
        ("<a>\u{1}</a>", 3, "U+0001"),
        ("<a><!-- x -- y --></a>", 10, "'--'"),
        ("<a>&#0;</a>", 3, "character reference"),
    ];
    for &(body, pos, msg) in cases {
        let (p, m) = error(body);
        assert!(m.contains(msg), "{body:?}: {m:?} does not contain {msg:?}");
        assert_eq!(p, pos, "{body:?}: {m}");
    }
    let deep = format!("{}{}", "[".repeat(65), "]".repeat(65));
    assert!(error(&deep).1.contains("deeper than 64"));
    let ok = format!("{}{}", "[".repeat(64), "]".repeat(64));
    assert!(CompiledTemplate::compile(&ok).is_ok());
    for ok in [
        "<?xml version='1.0'?><!-- c --><a:b xmlns:a='u' c = \"&#x41;&#65;&amp;\"><![CDATA[<&>]]><?pi x?></a:b><!-- end -->\n",
        r#" {"a":[-0.5e-3, 1E+2, true, false, null, "\u00e9\ud83d\ude00\/"], "b":{}} "#,
    ] {
        assert!(CompiledTemplate::compile(ok).is_ok(), "{ok}");
    }
}

// ---- headers, expiry, cache, properties ----------------------------------------------------

fn with(headers: &[(&str, &str)], expiry: Option<&str>) -> Template {
    Template {
        body: "{}".into(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        tags: vec![],
        expiry: expiry.map(str::to_string),
    }
}

#[test]
fn header_and_expiry_errors() {
    let err = |t: &Template| CompiledInstallationTemplate::compile(t).unwrap_err();
    let e = err(&with(&[("X-WNS-Type", "$(t")], None));
    assert_eq!(e.part(), &TemplatePart::Header("X-WNS-Type".into()));
    assert_eq!(e.offset(), 3);
    assert_eq!(
        e.to_string(),
        "header 'X-WNS-Type', byte 3: expected ')' after property name (or ', length' or ':{default}')"
    );
    let e = err(&with(&[("X Y", "1")], None));
    assert_eq!(
        (e.offset(), e.part()),
        (1, &TemplatePart::Header("X Y".into()))
    );
    let e = err(&with(&[("a", "x\r\ny")], None));
    assert_eq!(e.offset(), 1);
    let e = err(&with(&[("a", "#(n)")], None));
    assert!(e.message().contains("not in headers"), "{e}");
    let e = err(&with(&[], Some("{'x' + $(e)")));
    assert_eq!((e.part(), e.offset()), (&TemplatePart::Expiry, 11));
    let e = err(&Template {
        body: "<a>".into(),
        ..with(&[], None)
    });
    assert_eq!(
        e.to_string(),
        "template body, byte 3: expected '</a>' to close the element opened at byte 0"
    );
    let e = CompiledText::compile("$(").unwrap_err();
    assert_eq!(
        e.to_string(),
        "text template, byte 2: expected a property name (letters, digits, '_')"
    );
}

#[test]
fn rendered_header_values_are_checked() {
    let t = CompiledInstallationTemplate::compile(&Template {
        body: r#"{"a":"$(v)"}"#.into(),
        headers: BTreeMap::from([("X-Tag".to_string(), "{'t-' + $(v)}".to_string())]),
        tags: vec![],
        expiry: Some("$(e)".into()),
    })
    .unwrap();
    let mut body = b"keep".to_vec();
    for bad in ["a\r\nInjected: 1", "a\nb", "a\0b"] {
        let e = t.render(&props(&[("v", bad)]), &mut body).unwrap_err();
        assert!(
            matches!(&e, RenderError::HeaderValue { name, .. } if name == "X-Tag"),
            "{e}"
        );
        assert_eq!(body, b"keep", "the body is left as it was");
    }
    let e = t.render(&props(&[("e", "1\r")]), &mut body).unwrap_err();
    assert_eq!(e, RenderError::Expiry { byte: b'\r' });
    let h = t.render(&props(&[("v", "ok\tü")]), &mut body).unwrap();
    assert_eq!(h.get("x-tag"), Some("t-ok\tü"));
    assert_eq!(
        String::from_utf8(body).unwrap(),
        "keep{\"a\":\"ok\\tü\"}",
        "render appends"
    );
    let text = CompiledText::compile("{$(a) + '/' + %(b)}").unwrap();
    let mut s = String::new();
    text.render_into(&props(&[("a", "x"), ("b", "y z")]), &mut s);
    assert_eq!(s, "x/y%20z");
    assert_eq!(text.properties().collect::<Vec<_>>(), ["a", "b"]);
}

#[test]
fn cache_shares_compiled_templates_and_errors() {
    let cache = TemplateCache::new(8);
    let t = apns_template();
    let a = cache.get_or_compile(&t).unwrap();
    let mut other_tags = t.clone();
    other_tags.tags = vec![crate::Tag::new("x").unwrap()];
    let b = cache.get_or_compile(&other_tags).unwrap();
    assert!(Arc::ptr_eq(&a, &b), "tags do not change the compiled form");
    let mut changed = t.clone();
    changed.expiry = None;
    let c = cache.get_or_compile(&changed).unwrap();
    assert!(!Arc::ptr_eq(&a, &c));
    assert!(c.expiry().is_none());
    let broken = Template {
        body: "{".into(),
        ..Template::default()
    };
    let e1 = cache.get_or_compile(&broken).unwrap_err();
    assert_eq!(cache.get_or_compile(&broken).unwrap_err(), e1);
    assert_eq!(cache.len(), 3);
    // Bounded: 100 distinct templates never hold more than 8; the one in use survives.
    for i in 0..100 {
        cache.get_or_compile(&t).unwrap();
        let body = format!(r#"{{"n":{i}}}"#);
        cache
            .get_or_compile(&Template {
                body,
                ..Template::default()
            })
            .unwrap();
        assert!(cache.len() <= 8);
    }
    assert!(Arc::ptr_eq(&cache.get_or_compile(&t).unwrap(), &a));
    cache.clear();
    assert!(cache.is_empty());
}

#[test]
fn cache_from_many_threads() {
    let cache = Arc::new(TemplateCache::new(4));
    let handles: Vec<_> = (0..4)
        .map(|k| {
            let cache = cache.clone();
            std::thread::spawn(move || {
                for i in 0..200 {
                    let body = format!(r#"{{"n":"$(p{})"}}"#, (i * 7 + k) % 6);
                    let t = Template {
                        body,
                        ..Template::default()
                    };
                    let c = cache.get_or_compile(&t).unwrap();
                    assert_eq!(c.body().source(), t.body);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert!(cache.len() <= 4);
}

#[test]
fn properties_from_json() {
    let v = serde_json::json!({"Title": "t", "n": 40, "f": 1.5, "b": true, "z": null});
    let p = Properties::from_json(&v).unwrap();
    assert_eq!(
        p.iter().collect::<Vec<_>>(),
        [("b", "true"), ("f", "1.5"), ("n", "40"), ("title", "t")]
    );
    let t = CompiledTemplate::compile(r##"["#(N)", "$(z:{none})", "$(TITLE)"]"##).unwrap();
    assert_eq!(t.render(&p).unwrap(), br#"[40, "none", "t"]"#);
    let e = Properties::from_json(&serde_json::json!({"a": {"b": 1}})).unwrap_err();
    assert_eq!(
        e.to_string(),
        "template property 'a' is an object; only strings, numbers and booleans are allowed"
    );
    let e = Properties::try_from(&serde_json::json!(["a"])).unwrap_err();
    assert_eq!(e, PropertiesError::NotAnObject { found: "an array" });
}

#[test]
fn check_body_checks_syntax_only() {
    assert_eq!(check_body(r#"{"a":"$(oops"}"#), Ok(BodyFormat::Json));
    assert_eq!(check_body("<a>$(</a>"), Ok(BodyFormat::Xml));
    assert_eq!(check_body("<a>").unwrap_err().offset(), 3);
    assert_eq!(check_body("x").unwrap_err().offset(), 0);
}

// ---- property tests -----------------------------------------------------------------------

/// 256 cases, or `PROPTEST_CASES`.
fn config() -> ProptestConfig {
    ProptestConfig {
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/template/props.txt",
        ))),
        ..ProptestConfig::default()
    }
}

const NAMES: [&str; 4] = ["p0", "p1", "title", "n"];

/// Property values: anything, JSON- and XML-hostile text, and number-like text.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[\"\\\\'<>&\\x00-\\x1f a-zé😀\\r\\n\\u{fffe}]{0,12}",
        "-?[0-9]{1,3}(\\.[0-9]{1,2})?([eE][+-]?[0-9]{1,3})?",
    ]
}

fn bag() -> impl Strategy<Value = Vec<Option<String>>> {
    proptest::collection::vec(proptest::option::weighted(0.8, value()), NAMES.len())
}

fn to_props(bag: &[Option<String>]) -> Properties {
    NAMES
        .iter()
        .zip(bag)
        .filter_map(|(n, v)| v.as_ref().map(|v| (*n, v.as_str())))
        .collect()
}

/// A hole and the reference semantics it is checked against.
#[derive(Debug, Clone)]
enum Hole {
    Plain(usize),
    Clip(usize, u32),
    Ellipsis(usize, u32),
    Uri(usize),
    Number(usize),
    Default(usize, String),
    Fallback(usize, usize, String),
    Concat(String, usize, String),
}

fn hole(json: bool) -> impl Strategy<Value = (Hole, bool)> {
    let name = 0..NAMES.len();
    // Text XML can carry as is (literals and defaults are part of the template).
    let lit = "[^\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f\\u{fffe}\\u{ffff}]{0,8}";
    let h = prop_oneof![
        name.clone().prop_map(Hole::Plain),
        (name.clone(), 0..12u32).prop_map(|(n, k)| Hole::Clip(n, k)),
        (name.clone(), 3..12u32).prop_map(|(n, k)| Hole::Ellipsis(n, k)),
        name.clone().prop_map(Hole::Uri),
        (name.clone(), lit).prop_map(|(n, d)| Hole::Default(n, d)),
        (name.clone(), name.clone(), lit).prop_map(|(a, b, d)| Hole::Fallback(a, b, d)),
        (lit, name.clone(), lit).prop_map(|(a, n, b)| Hole::Concat(a, n, b)),
    ];
    let h = if json {
        prop_oneof![4 => h, 1 => name.prop_map(Hole::Number)].boxed()
    } else {
        h.boxed()
    };
    (h, any::<bool>())
}

fn name_text(i: usize, upper: bool) -> String {
    if upper {
        NAMES[i].to_ascii_uppercase()
    } else {
        NAMES[i].to_string()
    }
}

fn escape_default(d: &str) -> String {
    let mut s = d.replace('\\', "\\\\").replace('}', "\\}");
    if s.starts_with("$(") {
        s.insert(0, '\\');
    }
    s
}

fn quote_lit(l: &str) -> String {
    format!("'{}'", l.replace('\'', "''"))
}

impl Hole {
    fn text(&self, upper: bool) -> String {
        let n = |i: usize| name_text(i, upper);
        match self {
            Hole::Plain(i) => format!("$({})", n(*i)),
            Hole::Clip(i, k) => format!("$( {} , {k} )", n(*i)),
            Hole::Ellipsis(i, k) => format!(".({},{k})", n(*i)),
            Hole::Uri(i) => format!("%({})", n(*i)),
            Hole::Number(i) => format!("#({})", n(*i)),
            Hole::Default(i, d) => format!("$({}:{{{}}})", n(*i), escape_default(d)),
            Hole::Fallback(a, b, d) => {
                format!("$({}:{{$({}:{{{}}})}})", n(*a), n(*b), escape_default(d))
            }
            Hole::Concat(a, i, b) => {
                format!("{{ {} + $({}) + {} }}", quote_lit(a), n(*i), quote_lit(b))
            }
        }
    }

    /// The value the reference semantics give; `Err` holds a JSON number's text.
    fn expected(&self, bag: &[Option<String>]) -> Result<String, String> {
        let get = |i: usize| bag[i].clone();
        let v = |i: usize| get(i).unwrap_or_default();
        Ok(match self {
            Hole::Plain(i) => v(*i),
            Hole::Clip(i, k) => v(*i).chars().take(*k as usize).collect(),
            Hole::Ellipsis(i, k) => {
                let s = v(*i);
                if s.chars().count() <= *k as usize {
                    s
                } else {
                    s.chars()
                        .take(*k as usize - 3)
                        .chain("...".chars())
                        .collect()
                }
            }
            Hole::Uri(i) => v(*i)
                .bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                        (b as char).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect(),
            Hole::Number(i) => {
                let s = v(*i);
                let number = !s.is_empty()
                    && !s.contains(|c: char| c.is_whitespace())
                    && serde_json::from_str::<serde_json::Number>(&s).is_ok();
                return if number { Err(s) } else { Ok(s) };
            }
            Hole::Default(i, d) => get(*i).unwrap_or_else(|| d.clone()),
            Hole::Fallback(a, b, d) => get(*a).or_else(|| get(*b)).unwrap_or_else(|| d.clone()),
            Hole::Concat(a, i, b) => format!("{a}{}{b}", v(*i)),
        })
    }
}

/// Collects decoded attribute values and text runs of an XML document.
#[derive(Default)]
struct Collect(Vec<String>);

impl xml::XmlVisitor for Collect {
    fn attr_value(&mut self, src: &str, value: Range<usize>) -> Result<(), ExprErr> {
        self.0.push(xml::decode(&src[value]).0);
        Ok(())
    }
    fn text(&mut self, src: &str, run: Range<usize>) -> Result<(), ExprErr> {
        self.0.push(xml::decode(&src[run]).0);
        Ok(())
    }
}

/// Simple XML escaping for putting expression text into a generated template.
fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
        .replace('\r', "&#13;")
}

/// What XML can carry of a value.
fn xml_visible(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '\t' | '\n' | '\r' => c,
            '\0'..='\u{1f}' | '\u{fffe}' | '\u{ffff}' => '\u{fffd}',
            c => c,
        })
        .collect()
}

/// Template-ish text: fragments of JSON, XML and expressions glued at random.
fn templateish() -> impl Strategy<Value = String> {
    let frag = prop_oneof![
        proptest::sample::select(vec![
            "{", "}", "[", "]", "\"", "\":\"", ",", "$(", ".(", "%(", "#(", ")", ":{", ", 5",
            " + ", "'", "\\", "<a", " b='", ">", "</a>", "&amp;", "p0", "title", "1", " ",
        ])
        .prop_map(str::to_string),
        "[ -~é]{0,3}",
    ];
    proptest::collection::vec(frag, 0..24).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(config())]

    /// Whatever the text and the properties: no panic, offsets on char boundaries, and a
    /// compiled body renders to a well-formed body of its format.
    #[test]
    fn render_never_panics(text in prop_oneof![any::<String>(), templateish()], bag in bag()) {
        let p = to_props(&bag);
        match CompiledTemplate::compile(&text) {
            Ok(t) => {
                let out = String::from_utf8(t.render(&p).unwrap()).unwrap();
                if t.format() == BodyFormat::Json {
                    prop_assert!(serde_json::from_str::<serde_json::Value>(&out).is_ok(), "{}", out);
                }
                prop_assert_eq!(check_body(&out), Ok(t.format()), "{}", out);
            }
            Err(e) => {
                prop_assert!(e.offset() <= text.len() && text.is_char_boundary(e.offset()), "{}", e);
            }
        }
        if let Ok(t) = CompiledText::compile(&text) {
            let mut s = String::new();
            t.render_into(&p, &mut s);
        }
    }

    /// JSON: the output parses, and every hole holds the reference semantics' value.
    #[test]
    fn json_holes_hold_their_values(
        holes in proptest::collection::vec(hole(true), 1..8),
        bag in bag(),
        nest in any::<bool>(),
    ) {
        let mut body = String::from("{");
        let mut expected = serde_json::Map::new();
        for (i, (h, upper)) in holes.iter().enumerate() {
            let text = serde_json::to_string(&h.text(*upper)).unwrap();
            let value = match h.expected(&bag) {
                Ok(s) => serde_json::Value::String(s),
                Err(num) => serde_json::from_str(&num).unwrap(),
            };
            if i > 0 {
                body.push_str(", ");
            }
            if nest {
                body.push_str(&format!("\"k{i}\": [ {text}, {{\"x\": \"lit\"}} ]"));
                expected.insert(format!("k{i}"), serde_json::json!([value, {"x": "lit"}]));
            } else {
                body.push_str(&format!("\"k{i}\":{text}"));
                expected.insert(format!("k{i}"), value);
            }
        }
        body.push('}');
        let t = CompiledTemplate::compile(&body)
            .map_err(|e| TestCaseError::fail(format!("{body}: {e}")))?;
        let out = t.render(&to_props(&bag)).unwrap();
        let got: serde_json::Value = serde_json::from_slice(&out)
            .map_err(|e| TestCaseError::fail(format!("{e}: {}", String::from_utf8_lossy(&out))))?;
        prop_assert_eq!(got, serde_json::Value::Object(expected));
    }

    /// XML: the output is well formed, and every attribute and text hole reads back as the
    /// reference semantics' value (minus what XML cannot carry).
    #[test]
    fn xml_holes_hold_their_values(
        holes in proptest::collection::vec(hole(false), 1..8),
        bag in bag(),
    ) {
        let mut body = String::from("<?xml version=\"1.0\"?>\n<root>");
        let mut expected = Vec::new();
        for (h, upper) in &holes {
            let text = xml_escape(&h.text(*upper));
            body.push_str(&format!("<e a=\"{text}\" b='lit'>{text}</e>"));
            let v = xml_visible(&h.expected(&bag).unwrap_or_else(|n| n));
            expected.push(v.clone());
            expected.push("lit".to_string());
            if !v.is_empty() {
                expected.push(v);
            }
        }
        body.push_str("</root>");
        let t = CompiledTemplate::compile(&body)
            .map_err(|e| TestCaseError::fail(format!("{body}: {e}")))?;
        let out = String::from_utf8(t.render(&to_props(&bag)).unwrap()).unwrap();
        let mut got = Collect::default();
        xml::scan(&out, &mut got)
            .map_err(|e| TestCaseError::fail(format!("{}: {out}", e.message)))?;
        prop_assert_eq!(got.0, expected);
    }
}
