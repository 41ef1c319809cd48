//! Traffic inspection: rules on a request's destination host, path, country and ASN, with an
//! action (`allow`, `flag`, `block`), and the decision for one request.
//!
//! Owns: [`Rule`], versioned [`RuleSet`]s (a published version never changes), the compiled
//! [`Inspector`] and its [`Inspector::decide`].
//!
//! Does not own: where rule sets are stored or audited, enrichment (country and ASN of the
//! client address come in with the request), recording flagged and blocked requests as events.
//! It does own [`diff`], what an audit record of a publish says changed.
//!
//! Precedence (the most specific matching rule wins, documented because it is the contract):
//! 1. the host condition: `exact` beats `suffix`, a longer suffix (more labels) beats a shorter
//!    one, any suffix beats `category`, and any host condition beats none;
//! 2. then the longer `path_prefix`;
//! 3. then more of `country` / `asn` given;
//! 4. on a tie, the stricter action (`block` > `flag` > `allow`), then the earlier rule.
//!
//! A request no rule matches is allowed with no rule.
//!
//! Invariants: decisions are a pure function of the rule set and the request; hosts compare
//! lowercase without a trailing dot; a rule set's rule ids are unique.

mod error;
#[cfg(test)]
mod tests;

use std::collections::HashMap;

use rustc_hash::FxHashMap;

use serde::{Deserialize, Serialize};

pub use self::error::InspectError;
use crate::limits::{INSPECT_RULES_MAX, INSPECT_TEXT_BYTES_MAX};

/// What to do with a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Let it through, unrecorded.
    Allow,
    /// Let it through, recorded.
    Flag,
    /// Refuse it, recorded.
    Block,
}

/// The host condition of a rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostMatch {
    /// Exactly this host.
    Exact(String),
    /// This domain and every host under it (`example.com` matches `a.example.com`).
    Suffix(String),
    /// Any host listed (exactly or as a suffix) in this category of the rule set.
    Category(String),
}

/// One rule. Every condition given must hold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Id, unique in its set.
    pub id: String,
    /// Host condition.
    #[serde(default)]
    pub host: Option<HostMatch>,
    /// The request path starts with this.
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// ISO country code of the request's client address (from enrichment).
    #[serde(default)]
    pub country: Option<String>,
    /// ASN of the request's client address (from enrichment).
    #[serde(default)]
    pub asn: Option<u32>,
    /// The action.
    pub action: Action,
    /// The category reported with the decision (defaults to the host category, if any).
    #[serde(default)]
    pub category: Option<String>,
}

/// A version of the rules: the rules and the category lists they refer to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSet {
    /// Rules.
    pub rules: Vec<Rule>,
    /// Category name → hosts (each matching itself and its subdomains).
    #[serde(default)]
    pub categories: std::collections::BTreeMap<String, Vec<String>>,
}

/// The request being decided.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// Destination host.
    pub dest_host: &'a str,
    /// Request path.
    pub path: &'a str,
    /// Country of the client address, if known.
    pub country: Option<&'a str>,
    /// ASN of the client address, if known.
    pub asn: Option<u32>,
}

/// The decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision<'a> {
    /// What to do.
    pub action: Action,
    /// The rule that decided, if any.
    pub rule: Option<&'a str>,
    /// Its category, if any.
    pub category: Option<&'a str>,
}

/// The CloudEvents `source` of recorded decisions.
pub const EVENT_SOURCE: &str = "tollgate/inspect";
/// The CloudEvents `type` of a recorded `flag` decision.
pub const EVENT_TYPE_FLAGGED: &str = "inspect.flagged";
/// The CloudEvents `type` of a recorded `block` decision.
pub const EVENT_TYPE_BLOCKED: &str = "inspect.blocked";

impl Action {
    /// The event type a decision with this action is recorded as; `allow` is not recorded.
    pub fn event_type(self) -> Option<&'static str> {
        match self {
            Action::Allow => None,
            Action::Flag => Some(EVENT_TYPE_FLAGGED),
            Action::Block => Some(EVENT_TYPE_BLOCKED),
        }
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Flag => "flag",
            Action::Block => "block",
        }
    }
}

/// A decision to record as an event (see [`DecisionRecord::to_event`]).
#[derive(Clone, Debug)]
pub struct DecisionRecord<'a> {
    /// Event id: the caller's request id, or a generated one.
    pub id: &'a str,
    /// The customer (`subject`).
    pub subject: &'a str,
    /// When it was decided.
    pub time: crate::time::UnixMs,
    /// The decision (a `flag` or `block`).
    pub decision: &'a Decision<'a>,
    /// The rule-set version that decided.
    pub rule_set_version: u64,
    /// The request.
    pub request: &'a Request<'a>,
    /// The client address, canonical text.
    pub client_ip: &'a str,
    /// Bytes of the request, if the caller gave them.
    pub bytes: Option<u64>,
}

impl DecisionRecord<'_> {
    /// The CloudEvent JSON text, or `None` for an `allow` (never recorded). `data` holds
    /// `rule`, `action`, `dest_host`, `path`, `client_ip`, `rule_set_version`, and when known
    /// `category`, `country`, `asn`, `bytes`.
    pub fn to_event(&self) -> Option<String> {
        use serde_json::{Map, Value, json};
        let event_type = self.decision.action.event_type()?;
        let mut data = Map::new();
        data.insert("rule".into(), json!(self.decision.rule));
        data.insert("action".into(), json!(self.decision.action.as_str()));
        if let Some(c) = self.decision.category {
            data.insert("category".into(), json!(c));
        }
        data.insert(
            "dest_host".into(),
            json!(normalize_host(self.request.dest_host)),
        );
        data.insert("path".into(), json!(self.request.path));
        data.insert("client_ip".into(), json!(self.client_ip));
        if let Some(c) = self.request.country {
            data.insert("country".into(), json!(c));
        }
        if let Some(a) = self.request.asn {
            data.insert("asn".into(), json!(a));
        }
        if let Some(b) = self.bytes {
            data.insert("bytes".into(), json!(b));
        }
        data.insert("rule_set_version".into(), json!(self.rule_set_version));
        let mut event = Map::new();
        event.insert("specversion".into(), Value::String("1.0".into()));
        event.insert("id".into(), json!(self.id));
        event.insert("source".into(), json!(EVENT_SOURCE));
        event.insert("type".into(), json!(event_type));
        event.insert("subject".into(), json!(self.subject));
        event.insert("time".into(), json!(self.time.to_rfc3339()));
        event.insert("data".into(), Value::Object(data));
        Some(Value::Object(event).to_string())
    }
}

/// Lowercase, without a trailing dot.
pub fn normalize_host(host: &str) -> String {
    host.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// [`normalize_host`] without allocating: the host itself when already normal, else its
/// lowercase form in `buf`; `None` when longer than any rule's host can be.
fn normalized<'a>(host: &'a str, buf: &'a mut [u8; INSPECT_TEXT_BYTES_MAX]) -> Option<&'a str> {
    let trimmed = host.trim().trim_end_matches('.');
    if trimmed.len() > INSPECT_TEXT_BYTES_MAX {
        return None;
    }
    if !trimmed.bytes().any(|b| b.is_ascii_uppercase()) {
        return Some(trimmed);
    }
    let out = &mut buf[..trimmed.len()];
    out.copy_from_slice(trimmed.as_bytes());
    out.make_ascii_lowercase();
    // ASCII lowercasing keeps UTF-8 valid, so this never fails.
    std::str::from_utf8(out).ok()
}

/// Ranks a match; larger is more specific. Order of the tuple = order of precedence.
type Rank = (u32, usize, u8, Action, std::cmp::Reverse<usize>);

/// Rule indexes, sorted best first (see [`Inspector::compile`]).
type RuleList = Box<[u32]>;

/// Everything a host name (a request host or one of its parent domains) selects.
#[derive(Debug, Default)]
struct HostEntry {
    /// Rules with exactly this host.
    exact: Vec<u32>,
    /// Rules with this domain as suffix.
    suffix: Vec<u32>,
    /// Categories (indexes into `Inspector::category_rules`) listing this host.
    categories: Vec<u32>,
}

/// A rule set compiled for decisions: one hash map from host name to the exact rules, suffix
/// rules and categories it selects (so a decision costs one lookup per label of the host),
/// the rules of each category, and the few without host condition.
#[derive(Debug, Default)]
pub struct Inspector {
    set: RuleSet,
    hosts: FxHashMap<Box<str>, HostEntry>,
    category_rules: Vec<RuleList>,
    hostless: RuleList,
}

impl Inspector {
    /// Validates and compiles a rule set.
    pub fn compile(set: RuleSet) -> Result<Inspector, InspectError> {
        if set.rules.len() > INSPECT_RULES_MAX {
            return Err(InspectError::TooManyRules {
                max: INSPECT_RULES_MAX,
            });
        }
        let mut hosts: FxHashMap<Box<str>, HostEntry> = FxHashMap::default();
        let category_index: HashMap<&str, usize> = set
            .categories
            .keys()
            .enumerate()
            .map(|(i, name)| (name.as_str(), i))
            .collect();
        let mut category_rules: Vec<Vec<u32>> = vec![Vec::new(); set.categories.len()];
        let mut hostless = Vec::new();
        let mut ids = std::collections::HashSet::new();
        for (i, rule) in set.rules.iter().enumerate() {
            check_text("id", &rule.id)?;
            if !ids.insert(rule.id.as_str()) {
                return Err(InspectError::DuplicateRule {
                    id: rule.id.clone(),
                });
            }
            // INSPECT_RULES_MAX is far below u32::MAX.
            let i = u32::try_from(i).map_err(|_| InspectError::TooManyRules {
                max: INSPECT_RULES_MAX,
            })?;
            match &rule.host {
                Some(HostMatch::Exact(h)) => {
                    check_text("host", h)?;
                    hosts
                        .entry(normalize_host(h).into())
                        .or_default()
                        .exact
                        .push(i);
                }
                Some(HostMatch::Suffix(h)) => {
                    check_text("host", h)?;
                    let h = normalize_host(h);
                    hosts
                        .entry(h.trim_start_matches('.').into())
                        .or_default()
                        .suffix
                        .push(i);
                }
                Some(HostMatch::Category(c)) => {
                    let Some(&ci) = category_index.get(c.as_str()) else {
                        return Err(InspectError::UnknownCategory { name: c.clone() });
                    };
                    category_rules[ci].push(i);
                }
                None => hostless.push(i),
            }
        }
        for (ci, (name, list)) in set.categories.iter().enumerate() {
            check_text("category", name)?;
            let ci = u32::try_from(ci).map_err(|_| InspectError::TooManyRules {
                max: INSPECT_RULES_MAX,
            })?;
            for h in list {
                check_text("host", h)?;
                let entry = hosts
                    .entry(normalize_host(h).trim_start_matches('.').into())
                    .or_default();
                if !entry.categories.contains(&ci) {
                    entry.categories.push(ci);
                }
            }
        }
        // Within one list every rule has the same host rank, so the first rule that matches in
        // order of the rest of the precedence is the list's best: sort once, stop at the first.
        let key = |i: &u32| {
            let r = &set.rules[*i as usize];
            let extra = u8::from(r.country.is_some()) + u8::from(r.asn.is_some());
            std::cmp::Reverse((
                r.path_prefix.as_ref().map_or(0, String::len),
                extra,
                r.action,
                std::cmp::Reverse(*i),
            ))
        };
        for entry in hosts.values_mut() {
            entry.exact.sort_by_key(key);
            entry.suffix.sort_by_key(key);
            entry.exact.shrink_to_fit();
            entry.suffix.shrink_to_fit();
            entry.categories.shrink_to_fit();
        }
        for list in &mut category_rules {
            list.sort_by_key(key);
        }
        hostless.sort_by_key(key);
        Ok(Inspector {
            hosts,
            category_rules: category_rules
                .into_iter()
                .map(Vec::into_boxed_slice)
                .collect(),
            hostless: hostless.into_boxed_slice(),
            set,
        })
    }

    /// The rule set.
    pub fn rule_set(&self) -> &RuleSet {
        &self.set
    }

    /// Decides one request (see the precedence in the module contract). Allocates nothing:
    /// a host needing normalization is lowercased into a stack buffer.
    pub fn decide(&self, req: &Request<'_>) -> Decision<'_> {
        let mut buf = [0u8; INSPECT_TEXT_BYTES_MAX];
        let host = normalized(req.dest_host, &mut buf);
        let mut best: Option<(Rank, usize)> = None;
        // Lists are sorted best first (see `compile`): the first match of a list is its best.
        let consider = |list: &[u32], host_rank: u32, best: &mut Option<(Rank, usize)>| {
            for &i in list {
                let i = i as usize;
                if let Some(rank) = self.rank(&self.set.rules[i], i, host_rank, req) {
                    if best.as_ref().is_none_or(|(b, _)| rank > *b) {
                        *best = Some((rank, i));
                    }
                    return;
                }
            }
        };
        // The host itself, then each parent domain; more labels = more specific. A host
        // longer than any rule's host cannot match one (only host-less rules apply).
        if let Some(host) = host {
            let mut labels = host.bytes().filter(|&b| b == b'.').count() + 1;
            let mut rest = host;
            let mut first = true;
            loop {
                if let Some(entry) = self.hosts.get(rest) {
                    if first {
                        consider(&entry.exact, u32::MAX, &mut best);
                    }
                    let rank = 1000 + u32::try_from(labels).unwrap_or(u32::MAX - 1001);
                    consider(&entry.suffix, rank, &mut best);
                    for &c in &entry.categories {
                        consider(&self.category_rules[c as usize], 1, &mut best);
                    }
                }
                match rest.split_once('.') {
                    Some((_, parent)) if !parent.is_empty() => {
                        rest = parent;
                        labels -= 1;
                        first = false;
                    }
                    _ => break,
                }
            }
        }
        consider(&self.hostless, 0, &mut best);
        match best {
            None => Decision {
                action: Action::Allow,
                rule: None,
                category: None,
            },
            Some((_, i)) => {
                let rule = &self.set.rules[i];
                let category = rule.category.as_deref().or(match &rule.host {
                    Some(HostMatch::Category(c)) => Some(c.as_str()),
                    _ => None,
                });
                Decision {
                    action: rule.action,
                    rule: Some(rule.id.as_str()),
                    category,
                }
            }
        }
    }

    fn rank(&self, rule: &Rule, i: usize, host_rank: u32, req: &Request<'_>) -> Option<Rank> {
        let mut path_len = 0;
        if let Some(p) = &rule.path_prefix {
            if !req.path.starts_with(p.as_str()) {
                return None;
            }
            path_len = p.len();
        }
        let mut extra = 0u8;
        if let Some(c) = &rule.country {
            if !req.country.is_some_and(|rc| rc.eq_ignore_ascii_case(c)) {
                return None;
            }
            extra += 1;
        }
        if let Some(a) = rule.asn {
            if req.asn != Some(a) {
                return None;
            }
            extra += 1;
        }
        Some((
            host_rank,
            path_len,
            extra,
            rule.action,
            std::cmp::Reverse(i),
        ))
    }
}

/// Most rule ids listed per kind of change in a [`RuleSetDiff`] (the audit record stays small;
/// the versions themselves are kept whole).
pub const DIFF_IDS_MAX: usize = 1_000;

/// What changed from one rule set to the next, by rule id.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleSetDiff {
    /// Ids only in the new set (at most [`DIFF_IDS_MAX`], sorted).
    pub added: Vec<String>,
    /// Ids only in the old set (at most [`DIFF_IDS_MAX`], sorted).
    pub removed: Vec<String>,
    /// Ids in both whose rule differs (at most [`DIFF_IDS_MAX`], sorted).
    pub changed: Vec<String>,
    /// Categories added, removed or whose host list differs (at most [`DIFF_IDS_MAX`]).
    pub categories_changed: Vec<String>,
    /// Whether some list was cut at [`DIFF_IDS_MAX`].
    pub truncated: bool,
}

/// The changes from `old` to `new`.
pub fn diff(old: &RuleSet, new: &RuleSet) -> RuleSetDiff {
    let index = |set: &RuleSet| -> std::collections::BTreeMap<String, Rule> {
        set.rules
            .iter()
            .map(|r| (r.id.clone(), r.clone()))
            .collect()
    };
    let (before, after) = (index(old), index(new));
    let mut out = RuleSetDiff::default();
    fn push(list: &mut Vec<String>, id: &str, truncated: &mut bool) {
        if list.len() < DIFF_IDS_MAX {
            list.push(id.to_owned());
        } else {
            *truncated = true;
        }
    }
    for (id, rule) in &after {
        match before.get(id) {
            None => push(&mut out.added, id, &mut out.truncated),
            Some(old_rule) if old_rule != rule => push(&mut out.changed, id, &mut out.truncated),
            Some(_) => {}
        }
    }
    for id in before.keys() {
        if !after.contains_key(id) {
            push(&mut out.removed, id, &mut out.truncated);
        }
    }
    let names: std::collections::BTreeSet<&String> =
        old.categories.keys().chain(new.categories.keys()).collect();
    for name in names {
        if old.categories.get(name) != new.categories.get(name) {
            push(&mut out.categories_changed, name, &mut out.truncated);
        }
    }
    out
}

fn check_text(what: &'static str, text: &str) -> Result<(), InspectError> {
    if text.is_empty() || text.len() > INSPECT_TEXT_BYTES_MAX {
        return Err(InspectError::InvalidText {
            what,
            max: INSPECT_TEXT_BYTES_MAX,
        });
    }
    Ok(())
}
