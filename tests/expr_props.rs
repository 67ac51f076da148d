//! Tag-expression algebra: print/parse round trip, De Morgan, double negation, parser robustness,
//! and agreement between the naive evaluator and a parsed printout.

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use tagcast::{ExprLimits, ExprNode, Tag, TagExpr, TagRef};

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/expr_props.txt",
        ))),
        ..ProptestConfig::default()
    }
}

/// A small alphabet so that tags repeat, with system tags whose ids hold spaces and operators.
fn alphabet() -> Vec<TagRef> {
    let mut refs: Vec<TagRef> = ["a", "b", "c", "Tag_1", "x:y.z", "@#-"]
        .iter()
        .map(|s| TagRef::Tag(Tag::new(s).unwrap()))
        .collect();
    refs.push(TagRef::InstallationId("inst-1".into()));
    refs.push(TagRef::InstallationId("id with && || ( ) ! $".into()));
    refs.push(TagRef::UserId("user@example.com".into()));
    refs.push(TagRef::UserId("é{".into()));
    refs
}

fn leaf() -> impl Strategy<Value = ExprNode> {
    proptest::sample::select(alphabet()).prop_map(ExprNode::Tag)
}

fn node() -> impl Strategy<Value = ExprNode> {
    leaf().prop_recursive(6, 40, 2, |inner| {
        prop_oneof![
            inner.clone().prop_map(|x| ExprNode::Not(Box::new(x))),
            (inner.clone(), inner.clone())
                .prop_map(|(l, r)| ExprNode::And(Box::new(l), Box::new(r))),
            (inner.clone(), inner).prop_map(|(l, r)| ExprNode::Or(Box::new(l), Box::new(r))),
        ]
    })
}

/// A set of tags an installation carries, as a bitmask over `alphabet()`.
fn tag_set() -> impl Strategy<Value = Vec<TagRef>> {
    any::<u16>().prop_map(|mask| {
        alphabet()
            .into_iter()
            .enumerate()
            .filter(|(i, _)| mask & (1 << i) != 0)
            .map(|(_, t)| t)
            .collect()
    })
}

/// An evaluator independent of the crate's, to check `matches` against.
fn model(n: &ExprNode, set: &[TagRef]) -> bool {
    match n {
        ExprNode::Tag(t) => set.contains(t),
        ExprNode::Not(x) => !model(x, set),
        ExprNode::And(l, r) => model(l, set) && model(r, set),
        ExprNode::Or(l, r) => model(l, set) || model(r, set),
    }
}

fn eval(n: &ExprNode, set: &[TagRef]) -> bool {
    TagExpr::from_node(n.clone()).matches(|t| set.contains(t))
}

fn not(x: ExprNode) -> ExprNode {
    ExprNode::Not(Box::new(x))
}

/// Text that is mostly grammar tokens, with random characters mixed in.
fn messy_text() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just("&&".to_string()),
        Just("||".to_string()),
        Just("!".to_string()),
        Just("(".to_string()),
        Just(")".to_string()),
        Just(" ".to_string()),
        Just("\n".to_string()),
        Just("&".to_string()),
        Just("|".to_string()),
        Just("$UserId:{".to_string()),
        Just("$InstallationId:{x y}".to_string()),
        Just("}".to_string()),
        Just("$".to_string()),
        "[a-c]{1,2}",
        any::<char>().prop_map(String::from),
    ];
    prop::collection::vec(token, 0..40).prop_map(|v| v.concat())
}

/// Whitespace chosen by `noise`: none, or one of the four kinds the grammar allows.
fn space(noise: &mut dyn Iterator<Item = u8>) -> &'static str {
    ["", "", " ", "\t", "\r\n", "  "][usize::from(noise.next().unwrap_or(0)) % 6]
}

/// Prints `n` with random whitespace and random redundant parentheses: different text, same tree.
fn render(n: &ExprNode, noise: &mut dyn Iterator<Item = u8>) -> String {
    let child = |c: &ExprNode, needed: bool, noise: &mut dyn Iterator<Item = u8>| {
        let inner = render(c, noise);
        if needed || noise.next().unwrap_or(1) % 5 == 0 {
            format!("({}{inner}{})", space(noise), space(noise))
        } else {
            inner
        }
    };
    let binary = |c: &ExprNode| matches!(c, ExprNode::And(..) | ExprNode::Or(..));
    match n {
        ExprNode::Tag(t) => t.to_string(),
        ExprNode::Not(x) => format!("!{}{}", space(noise), child(x, binary(x), noise)),
        ExprNode::And(l, r) => {
            let l = child(l, matches!(**l, ExprNode::Or(..)), noise);
            let (s1, s2) = (space(noise), space(noise));
            format!("{l}{s1}&&{s2}{}", child(r, binary(r), noise))
        }
        ExprNode::Or(l, r) => {
            let l = child(l, false, noise);
            let (s1, s2) = (space(noise), space(noise));
            format!(
                "{l}{s1}||{s2}{}",
                child(r, matches!(**r, ExprNode::Or(..)), noise)
            )
        }
    }
}

/// A printout with a few tokens inserted at random places: often still valid, often not.
fn mutated_printout() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just("&&"),
        Just("||"),
        Just("!"),
        Just("("),
        Just(")"),
        Just(" "),
        Just("&"),
        Just("|"),
        Just("}"),
        Just("$"),
        Just("a"),
        Just("\u{e9}"),
        Just("\0"),
    ];
    (
        node(),
        prop::collection::vec((any::<prop::sample::Index>(), token), 0..3),
    )
        .prop_map(|(n, edits)| {
            let mut s = TagExpr::from_node(n).to_string();
            for (at, tok) in edits {
                let boundaries: Vec<usize> =
                    (0..=s.len()).filter(|&i| s.is_char_boundary(i)).collect();
                s.insert_str(boundaries[at.index(boundaries.len())], tok);
            }
            s
        })
}

fn check_robust(s: &str) -> Result<(), TestCaseError> {
    for limits in [ExprLimits::default(), ExprLimits::notification_hubs()] {
        match TagExpr::parse_with(s, &limits) {
            Ok(e) => {
                let printed = e.to_string();
                prop_assert_eq!(TagExpr::parse_with(&printed, &limits), Ok(e));
            }
            Err(err) => {
                if let Some(pos) = err.position() {
                    prop_assert!(pos <= s.len(), "{err} for {s:?}");
                    prop_assert!(s.is_char_boundary(pos), "{err} for {s:?}");
                }
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn print_parse_round_trip(n in node()) {
        let e = TagExpr::from_node(n);
        let printed = e.to_string();
        prop_assert_eq!(TagExpr::parse(&printed), Ok(e.clone()), "printed: {}", printed);
        // Printing is canonical: a second round prints the same text.
        prop_assert_eq!(TagExpr::parse(&printed).unwrap().to_string(), printed);
        prop_assert!(e.depth() <= 64);
    }

    #[test]
    fn de_morgan(a in node(), b in node(), set in tag_set()) {
        let and = |l: &ExprNode, r: &ExprNode| ExprNode::And(Box::new(l.clone()), Box::new(r.clone()));
        let or = |l: &ExprNode, r: &ExprNode| ExprNode::Or(Box::new(l.clone()), Box::new(r.clone()));
        let (na, nb) = (not(a.clone()), not(b.clone()));
        prop_assert_eq!(eval(&not(and(&a, &b)), &set), eval(&or(&na, &nb), &set));
        prop_assert_eq!(eval(&not(or(&a, &b)), &set), eval(&and(&na, &nb), &set));
    }

    #[test]
    fn double_negation(n in node(), set in tag_set()) {
        prop_assert_eq!(eval(&not(not(n.clone())), &set), eval(&n, &set));
    }

    #[test]
    fn parser_never_panics_and_round_trips(s in messy_text()) {
        check_robust(&s)?;
    }

    #[test]
    fn parser_never_panics_on_mutated_printouts(s in mutated_printout()) {
        check_robust(&s)?;
    }

    #[test]
    fn whitespace_and_redundant_parentheses_do_not_change_the_tree(
        n in node(),
        noise in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        let mut noise = noise.into_iter().cycle();
        let text = format!("{}{}{}", space(&mut noise), render(&n, &mut noise), space(&mut noise));
        prop_assert_eq!(TagExpr::parse(&text), Ok(TagExpr::from_node(n)), "text: {:?}", text);
    }

    #[test]
    fn parser_never_panics_on_any_string(s in any::<String>()) {
        check_robust(&s)?;
    }

    #[test]
    fn parsed_printout_evaluates_like_the_tree(n in node(), set in tag_set()) {
        let parsed = TagExpr::parse(&TagExpr::from_node(n.clone()).to_string()).unwrap();
        let want = model(&n, &set);
        prop_assert_eq!(eval(&n, &set), want);
        prop_assert_eq!(parsed.matches(|t| set.contains(t)), want);
        prop_assert_eq!(parsed.tags().count(), parsed.tag_count());
    }
}
