//! Bad tag expressions and their exact error messages and positions, as a table.

use tagcast::{ExprError, ExprLimits, TagExpr};

const ALPHABET: &str = "(allowed: A-Z a-z 0-9 _ @ # . : -)";
const KNOWN: &str = "(known: $InstallationId:{...}, $UserId:{...})";

struct Row {
    input: String,
    limits: ExprLimits,
    message: String,
    position: Option<usize>,
}

fn row(input: impl Into<String>, message: impl Into<String>, position: Option<usize>) -> Row {
    Row {
        input: input.into(),
        limits: ExprLimits::default(),
        message: message.into(),
        position,
    }
}

fn nh(input: impl Into<String>, message: impl Into<String>) -> Row {
    Row {
        limits: ExprLimits::notification_hubs(),
        ..row(input, message, None)
    }
}

/// `n` tags `t0 op t1 op ...`.
fn chain(n: usize, op: &str) -> String {
    (0..n).map(|i| format!("t{i}")).collect::<Vec<_>>().join(op)
}

fn rows() -> Vec<Row> {
    let long = "x".repeat(121);
    let big = ExprLimits {
        max_len: 1 << 20,
        ..ExprLimits::default()
    };
    vec![
        // Empty input.
        row("", "expression is empty", None),
        row(" \t\r\n ", "expression is empty", None),
        // Missing operands.
        row("a &&", "expected a tag or '(' at byte 4", Some(4)),
        row("a || ", "expected a tag or '(' at byte 5", Some(5)),
        row("&& a", "expected a tag or '(' at byte 0", Some(0)),
        row("()", "expected a tag or '(' at byte 1", Some(1)),
        row(")", "expected a tag or '(' at byte 0", Some(0)),
        row("!", "expected a tag or '(' at byte 1", Some(1)),
        row("a || || b", "expected a tag or '(' at byte 5", Some(5)),
        row("a &&& b", "expected a tag or '(' at byte 4", Some(4)),
        // Single operator characters.
        row("a & b", "expected '&&' at byte 2", Some(2)),
        row("a | b", "expected '||' at byte 2", Some(2)),
        row("a||b|c", "expected '||' at byte 4", Some(4)),
        row("(a & b)", "expected '&&' at byte 3", Some(3)),
        // Junk after an operand; parentheses.
        row(
            "a b",
            "expected '&&', '||' or end of expression at byte 2",
            Some(2),
        ),
        row(
            "a !b",
            "expected '&&', '||' or end of expression at byte 2",
            Some(2),
        ),
        row("(a b)", "expected '&&', '||' or ')' at byte 3", Some(3)),
        row("a)", "unmatched ')' at byte 1", Some(1)),
        row("a && b )", "unmatched ')' at byte 7", Some(7)),
        row("(a", "expected ')' to close '(' at byte 0", Some(0)),
        row(
            "a && (b || (c)",
            "expected ')' to close '(' at byte 5",
            Some(5),
        ),
        // Bad plain tags.
        row(
            format!("a && {long}"),
            format!("at byte 5: tag '{long}' is 121 characters long; at most 120 are allowed"),
            Some(5),
        ),
        row(
            "a-b+c",
            format!("at byte 0: tag 'a-b+c' contains '+' {ALPHABET}"),
            Some(0),
        ),
        row(
            "x || é",
            format!("at byte 5: tag 'é' contains 'é' {ALPHABET}"),
            Some(5),
        ),
        row(
            "a && \0",
            format!("at byte 5: tag '\0' contains '\\0' {ALPHABET}"),
            Some(5),
        ),
        row(
            "a$b",
            format!("at byte 0: tag 'a$b' contains '$' {ALPHABET}"),
            Some(0),
        ),
        // System tags.
        row(
            "$Foo:{x}",
            format!("unknown system tag '$Foo' at byte 0 {KNOWN}"),
            Some(0),
        ),
        row(
            "a || $",
            format!("unknown system tag '$' at byte 5 {KNOWN}"),
            Some(5),
        ),
        row(
            "$userId:{x}",
            format!("unknown system tag '$userId' at byte 0 {KNOWN}"),
            Some(0),
        ),
        row(
            "$UserId",
            "expected ':{' after '$UserId' at byte 7",
            Some(7),
        ),
        row(
            "$InstallationId{x}",
            "expected ':{' after '$InstallationId' at byte 15",
            Some(15),
        ),
        row("$UserId:{}", "at byte 0: $UserId id is empty", Some(0)),
        row(
            "$UserId:{x",
            "expected '}' to close '$UserId:{' at byte 0",
            Some(0),
        ),
        row(
            "a && $InstallationId:{x\ny}",
            "at byte 5: $InstallationId id contains '\\n' (control characters are not allowed)",
            Some(5),
        ),
        row(
            format!("$UserId:{{{}}}", "u".repeat(257)),
            "at byte 0: $UserId id is 257 bytes long; at most 256 are allowed",
            Some(0),
        ),
        // Limits.
        nh(
            chain(7, " && "),
            "expression uses 7 tags; the NH preset allows 6 when && or ! is used",
        ),
        nh(
            format!("!{}", chain(7, " || ")),
            "expression uses 7 tags; the NH preset allows 6 when && or ! is used",
        ),
        nh(
            chain(21, " || "),
            "expression uses 21 tags; the NH preset allows 20 when only || is used",
        ),
        row(
            format!("{}a", "!".repeat(65)),
            "expression nests deeper than 64 levels at byte 64",
            Some(64),
        ),
        row(
            format!("a && {}a{}", "(".repeat(65), ")".repeat(65)),
            "expression nests deeper than 64 levels at byte 69",
            Some(69),
        ),
        Row {
            limits: big,
            ..row(
                "(".repeat(100_000),
                "expression nests deeper than 64 levels at byte 64",
                Some(64),
            )
        },
        Row {
            limits: big,
            ..row(
                "!".repeat(100_000),
                "expression nests deeper than 64 levels at byte 64",
                Some(64),
            )
        },
        Row {
            limits: ExprLimits {
                max_depth: 2,
                ..ExprLimits::default()
            },
            ..row(
                "(((a)))",
                "expression nests deeper than 2 levels at byte 2",
                Some(2),
            )
        },
        row(
            chain(1001, "||"),
            "expression uses 1001 tags; at most 1000 are allowed",
            None,
        ),
        row(
            chain(1500, " && "),
            "expression uses 1500 tags; at most 1000 are allowed",
            None,
        ),
        row(
            "a".repeat(70_000),
            "expression is 70000 bytes long; at most 65536 are allowed",
            None,
        ),
    ]
}

#[test]
fn bad_inputs_give_exact_messages_and_positions() {
    let rows = rows();
    assert!(rows.len() >= 25);
    let mut failures = Vec::new();
    for r in &rows {
        let shown: String = r.input.chars().take(60).collect();
        match TagExpr::parse_with(&r.input, &r.limits) {
            Ok(e) => failures.push(format!("{shown:?}: parsed as {e}")),
            Err(e) => {
                if e.to_string() != r.message || e.position() != r.position {
                    failures.push(format!(
                        "{shown:?}:\n   got {:?} at {:?}\n  want {:?} at {:?}",
                        e.to_string(),
                        e.position(),
                        r.message,
                        r.position
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn nh_preset_accepts_its_limits() {
    let nh = ExprLimits::notification_hubs();
    assert!(TagExpr::parse_with(&chain(20, " || "), &nh).is_ok());
    assert!(TagExpr::parse_with(&chain(6, " && "), &nh).is_ok());
    assert!(TagExpr::parse_with(&format!("!({})", chain(6, " || ")), &nh).is_ok());
    assert!(TagExpr::parse_with("a", &nh).is_ok());
    // The default has no NH rule.
    assert!(TagExpr::parse(&chain(7, " && ")).is_ok());
}

#[test]
fn limits_accept_exactly_the_limit() {
    assert!(TagExpr::parse(&format!("{}a", "!".repeat(64))).is_ok());
    assert!(TagExpr::parse(&format!("{}a{}", "(".repeat(64), ")".repeat(64))).is_ok());
    assert!(TagExpr::parse(&chain(1000, "||")).is_ok());
    let tags = vec!["x".repeat(120); 500].join("||");
    let exact = format!("{tags}{}", " ".repeat(65536 - tags.len()));
    assert_eq!(exact.len(), 65536);
    assert!(TagExpr::parse(&exact).is_ok());
    let at_limit = "a".repeat(65536);
    // One token of 65536 bytes: within the length limit, then rejected as a tag.
    assert!(matches!(
        TagExpr::parse(&at_limit),
        Err(ExprError::Tag { pos: 0, .. })
    ));
}

#[test]
fn errors_are_typed() {
    assert_eq!(
        TagExpr::parse("a &&"),
        Err(ExprError::ExpectedOperand { pos: 4 })
    );
    assert_eq!(
        "(a".parse::<TagExpr>(),
        Err(ExprError::UnclosedParen { pos: 0 })
    );
}
