//! Traffic inspection: rules on a request's destination host, path, country and ASN, with an
//! action (`allow`, `flag`, `block`), and the decision for one request.
//!
//! Owns: [`Rule`], versioned [`RuleSet`]s (a published version never changes), the compiled
//! [`Inspector`] and its [`Inspector::decide`].
//!
//! Does not own: where rule sets are stored or audited, enrichment (country and ASN come in
//! with the request), recording flagged and blocked requests as events.
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
    /// ISO country code of the destination (from enrichment).
    #[serde(default)]
    pub country: Option<String>,
    /// ASN of the destination (from enrichment).
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
    /// Destination country, if known.
    pub country: Option<&'a str>,
    /// Destination ASN, if known.
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

/// Lowercase, without a trailing dot.
pub fn normalize_host(host: &str) -> String {
    host.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// Ranks a match; larger is more specific. Order of the tuple = order of precedence.
type Rank = (u32, usize, u8, Action, std::cmp::Reverse<usize>);

/// A rule set compiled for decisions: rules indexed by exact host, by suffix, by category host,
/// and the few without host condition.
#[derive(Debug, Default)]
pub struct Inspector {
    set: RuleSet,
    exact: HashMap<String, Vec<usize>>,
    suffix: HashMap<String, Vec<usize>>,
    /// Category host (exact-or-suffix) → categories listing it.
    category_hosts: HashMap<String, Vec<String>>,
    by_category: HashMap<String, Vec<usize>>,
    hostless: Vec<usize>,
}

impl Inspector {
    /// Validates and compiles a rule set.
    pub fn compile(set: RuleSet) -> Result<Inspector, InspectError> {
        if set.rules.len() > INSPECT_RULES_MAX {
            return Err(InspectError::TooManyRules {
                max: INSPECT_RULES_MAX,
            });
        }
        let mut ins = Inspector::default();
        let mut ids = std::collections::HashSet::new();
        for (i, rule) in set.rules.iter().enumerate() {
            check_text("id", &rule.id)?;
            if !ids.insert(rule.id.as_str()) {
                return Err(InspectError::DuplicateRule {
                    id: rule.id.clone(),
                });
            }
            match &rule.host {
                Some(HostMatch::Exact(h)) => {
                    check_text("host", h)?;
                    ins.exact.entry(normalize_host(h)).or_default().push(i);
                }
                Some(HostMatch::Suffix(h)) => {
                    check_text("host", h)?;
                    let h = normalize_host(h);
                    ins.suffix
                        .entry(h.trim_start_matches('.').to_owned())
                        .or_default()
                        .push(i);
                }
                Some(HostMatch::Category(c)) => {
                    if !set.categories.contains_key(c) {
                        return Err(InspectError::UnknownCategory { name: c.clone() });
                    }
                    ins.by_category.entry(c.clone()).or_default().push(i);
                }
                None => ins.hostless.push(i),
            }
        }
        for (name, hosts) in &set.categories {
            check_text("category", name)?;
            for h in hosts {
                check_text("host", h)?;
                ins.category_hosts
                    .entry(normalize_host(h).trim_start_matches('.').to_owned())
                    .or_default()
                    .push(name.clone());
            }
        }
        // Within one list every rule has the same host rank, so the first rule that matches in
        // order of the rest of the precedence is the list's best: sort once, stop at the first.
        let key = |i: &usize| {
            let r = &set.rules[*i];
            let extra = u8::from(r.country.is_some()) + u8::from(r.asn.is_some());
            std::cmp::Reverse((
                r.path_prefix.as_ref().map_or(0, String::len),
                extra,
                r.action,
                std::cmp::Reverse(*i),
            ))
        };
        for list in ins
            .exact
            .values_mut()
            .chain(ins.suffix.values_mut())
            .chain(ins.by_category.values_mut())
            .chain(std::iter::once(&mut ins.hostless))
        {
            list.sort_by_key(key);
        }
        ins.set = set;
        Ok(ins)
    }

    /// The rule set.
    pub fn rule_set(&self) -> &RuleSet {
        &self.set
    }

    /// Decides one request (see the precedence in the module contract).
    pub fn decide(&self, req: &Request<'_>) -> Decision<'_> {
        let host_lower;
        let host = if req.dest_host.bytes().any(|b| b.is_ascii_uppercase())
            || req.dest_host.ends_with('.')
        {
            host_lower = normalize_host(req.dest_host);
            host_lower.as_str()
        } else {
            req.dest_host
        };
        let mut best: Option<(Rank, usize)> = None;
        // Lists are sorted best first (see `compile`): the first match of a list is its best.
        let consider = |list: &[usize], host_rank: u32, best: &mut Option<(Rank, usize)>| {
            for &i in list {
                if let Some(rank) = self.rank(&self.set.rules[i], i, host_rank, req) {
                    if best.as_ref().is_none_or(|(b, _)| rank > *b) {
                        *best = Some((rank, i));
                    }
                    return;
                }
            }
        };
        if let Some(rules) = self.exact.get(host) {
            consider(rules, u32::MAX, &mut best);
        }
        // Suffixes: the host itself and each parent domain; more labels = more specific.
        let mut labels = host.split('.').count();
        let mut rest = host;
        loop {
            if let Some(rules) = self.suffix.get(rest) {
                let rank = 1000 + u32::try_from(labels).unwrap_or(u32::MAX - 1001);
                consider(rules, rank, &mut best);
            }
            if let Some(categories) = self.category_hosts.get(rest) {
                for c in categories {
                    if let Some(rules) = self.by_category.get(c) {
                        consider(rules, 1, &mut best);
                    }
                }
            }
            match rest.split_once('.') {
                Some((_, parent)) if !parent.is_empty() => {
                    rest = parent;
                    labels -= 1;
                }
                _ => break,
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

fn check_text(what: &'static str, text: &str) -> Result<(), InspectError> {
    if text.is_empty() || text.len() > INSPECT_TEXT_BYTES_MAX {
        return Err(InspectError::InvalidText {
            what,
            max: INSPECT_TEXT_BYTES_MAX,
        });
    }
    Ok(())
}
