//! Tests of `inspect`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

fn rule(id: &str, host: Option<HostMatch>, action: Action) -> Rule {
    Rule {
        id: id.into(),
        host,
        path_prefix: None,
        country: None,
        asn: None,
        action,
        category: None,
    }
}

fn req<'a>(host: &'a str, path: &'a str) -> Request<'a> {
    Request {
        dest_host: host,
        path,
        country: None,
        asn: None,
    }
}

fn set() -> Inspector {
    let mut categories = std::collections::BTreeMap::new();
    categories.insert("gambling".to_owned(), vec!["casino.example".to_owned()]);
    let mut rules = vec![
        rule(
            "cat",
            Some(HostMatch::Category("gambling".into())),
            Action::Flag,
        ),
        rule(
            "sfx-short",
            Some(HostMatch::Suffix("example".into())),
            Action::Allow,
        ),
        rule(
            "sfx-long",
            Some(HostMatch::Suffix("bad.example".into())),
            Action::Block,
        ),
        rule(
            "exact",
            Some(HostMatch::Exact("ok.bad.example".into())),
            Action::Allow,
        ),
        rule("any-ru", None, Action::Flag),
    ];
    rules[4].country = Some("RU".into());
    let mut admin = rule(
        "admin",
        Some(HostMatch::Exact("ok.bad.example".into())),
        Action::Block,
    );
    admin.path_prefix = Some("/admin".into());
    rules.push(admin);
    Inspector::compile(RuleSet { rules, categories }).unwrap()
}

#[test]
fn most_specific_rule_wins() {
    let ins = set();
    let d = |host: &str, path: &str| ins.decide(&req(host, path)).rule.map(str::to_owned);
    assert_eq!(d("x.bad.example", "/"), Some("sfx-long".into()));
    assert_eq!(d("bad.example", "/"), Some("sfx-long".into()));
    assert_eq!(d("OK.Bad.Example.", "/"), Some("exact".into()));
    assert_eq!(d("ok.bad.example", "/admin/x"), Some("admin".into()));
    assert_eq!(d("other.example", "/"), Some("sfx-short".into()));
    assert_eq!(d("elsewhere.org", "/"), None);
    // A category is less specific than a suffix.
    assert_eq!(d("www.casino.example", "/"), Some("sfx-short".into()));
    assert_eq!(ins.decide(&req("elsewhere.org", "/")).action, Action::Allow);
}

#[test]
fn categories_country_and_asn() {
    let mut categories = std::collections::BTreeMap::new();
    categories.insert("gambling".to_owned(), vec!["casino.example".to_owned()]);
    let mut by_asn = rule("asn", None, Action::Block);
    by_asn.asn = Some(64500);
    let ins = Inspector::compile(RuleSet {
        rules: vec![
            rule(
                "cat",
                Some(HostMatch::Category("gambling".into())),
                Action::Flag,
            ),
            by_asn,
        ],
        categories,
    })
    .unwrap();
    let d = ins.decide(&req("www.casino.example", "/"));
    assert_eq!(
        (d.action, d.rule, d.category),
        (Action::Flag, Some("cat"), Some("gambling"))
    );
    let mut r = req("x.org", "/");
    assert_eq!(ins.decide(&r).rule, None);
    r.asn = Some(64500);
    assert_eq!(ins.decide(&r).action, Action::Block);
}

#[test]
fn ties_go_to_the_stricter_action_then_the_earlier_rule() {
    let ins = Inspector::compile(RuleSet {
        rules: vec![
            rule("a", Some(HostMatch::Exact("h".into())), Action::Flag),
            rule("b", Some(HostMatch::Exact("h".into())), Action::Block),
            rule("c", Some(HostMatch::Exact("h".into())), Action::Block),
        ],
        categories: Default::default(),
    })
    .unwrap();
    assert_eq!(ins.decide(&req("h", "/")).rule, Some("b"));
}

#[test]
fn invalid_sets_are_typed() {
    let dup = RuleSet {
        rules: vec![
            rule("a", None, Action::Allow),
            rule("a", None, Action::Block),
        ],
        categories: Default::default(),
    };
    assert_eq!(
        Inspector::compile(dup).unwrap_err().code(),
        "duplicate_rule"
    );
    let unknown = RuleSet {
        rules: vec![rule(
            "a",
            Some(HostMatch::Category("nope".into())),
            Action::Flag,
        )],
        categories: Default::default(),
    };
    assert_eq!(
        Inspector::compile(unknown).unwrap_err().code(),
        "unknown_category"
    );
    let empty = RuleSet {
        rules: vec![rule("", None, Action::Allow)],
        categories: Default::default(),
    };
    assert_eq!(
        Inspector::compile(empty).unwrap_err().code(),
        "invalid_rule"
    );
}

#[test]
fn diff_names_added_removed_changed_rules_and_categories() {
    let mut old = RuleSet::default();
    old.rules.push(rule("keep", None, Action::Flag));
    old.rules.push(rule("gone", None, Action::Flag));
    old.rules.push(rule("edit", None, Action::Flag));
    old.categories.insert("a".into(), vec!["a.example".into()]);
    let mut new = RuleSet::default();
    new.rules.push(rule("keep", None, Action::Flag));
    new.rules.push(rule("edit", None, Action::Block));
    new.rules.push(rule("new", None, Action::Allow));
    new.categories.insert("b".into(), vec!["b.example".into()]);
    let d = diff(&old, &new);
    assert_eq!(d.added, vec!["new".to_owned()]);
    assert_eq!(d.removed, vec!["gone".to_owned()]);
    assert_eq!(d.changed, vec!["edit".to_owned()]);
    assert_eq!(d.categories_changed, vec!["a".to_owned(), "b".to_owned()]);
    assert!(!d.truncated);
    assert_eq!(diff(&new, &new), RuleSetDiff::default());
}
