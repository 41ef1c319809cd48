//! Tests of the alert state machine and the unusual-usage method.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use rust_decimal::Decimal;

use super::*;

const P1: UnixMs = UnixMs(1_000);
const P2: UnixMs = UnixMs(2_000);

fn kinds(steps: &[Step]) -> Vec<(Transition, UnixMs)> {
    steps
        .iter()
        .map(|s| (s.transition, s.period_start))
        .collect()
}

#[test]
fn fires_once_per_period_and_recovers() {
    let (s, st) = step(None, P1, false);
    assert!(s.is_empty() && st.is_none());
    let (s, st) = step(None, P1, true);
    assert_eq!(kinds(&s), vec![(Transition::Triggered, P1)]);
    let (s, st2) = step(st, P1, true);
    assert!(s.is_empty(), "still above: nothing new");
    assert_eq!(st2, st);
    // A correction lowers usage: recovered.
    let (s, st3) = step(st2, P1, false);
    assert_eq!(kinds(&s), vec![(Transition::Recovered, P1)]);
    // A new crossing in the same period fires again.
    let (s, _) = step(st3, P1, true);
    assert_eq!(kinds(&s), vec![(Transition::Triggered, P1)]);
}

#[test]
fn a_new_period_recovers_the_old_one_and_may_fire_again() {
    let (_, st) = step(None, P1, true);
    let (s, st) = step(st, P2, true);
    assert_eq!(
        kinds(&s),
        vec![(Transition::Recovered, P1), (Transition::Triggered, P2)]
    );
    let (s, st) = step(st, P2, true);
    assert!(s.is_empty());
    let (_, st) = step(st, P2, false);
    let (s, _) = step(st, UnixMs(3_000), false);
    assert!(
        s.is_empty(),
        "a recovered state stays quiet in a new period"
    );
}

proptest! {
    /// Over any sequence of observations, triggered and recovered alternate, starting with
    /// triggered, and never fire twice in a row for one period.
    #[test]
    fn transitions_alternate(obs in proptest::collection::vec((0i64..3, any::<bool>()), 0..60)) {
        let mut state = None;
        let mut last: Option<Transition> = None;
        let mut period = 0i64;
        for (advance, above) in obs {
            period += advance;
            let (steps, next) = step(state, UnixMs(period), above);
            for s in steps {
                match (last, s.transition) {
                    (None | Some(Transition::Recovered), Transition::Triggered)
                    | (Some(Transition::Triggered), Transition::Recovered) => {}
                    (l, t) => prop_assert!(false, "{:?} after {:?}", t, l),
                }
                last = Some(s.transition);
            }
            prop_assert_eq!(next.is_some_and(|s| s.triggered), above);
            state = next;
        }
    }
}

fn d(n: i64) -> Decimal {
    Decimal::from(n)
}

#[test]
fn a_spike_is_unusual_and_steady_traffic_is_not() {
    let p = AnomalyParams::default();
    // Noisy but steady: 100 ± 10.
    let baseline: Vec<Decimal> = (0..24).map(|i| d(95 + (i * 7) % 11)).collect();
    assert!(!judge(&baseline, d(105), &p).unusual);
    assert!(!judge(&baseline, d(130), &p).unusual);
    let j = judge(&baseline, d(1_000), &p);
    assert!(j.unusual, "{j:?}");
    // Perfectly steady: the floor (half the median, × k) decides.
    let flat = vec![d(100); 24];
    let j = judge(&flat, d(399), &p);
    assert!(!j.unusual, "{j:?}");
    assert_eq!(j.threshold, d(400));
    assert!(judge(&flat, d(401), &p).unusual);
}

#[test]
fn no_history_is_never_unusual() {
    let p = AnomalyParams::default();
    let mut sparse = vec![Decimal::ZERO; 24];
    sparse[3] = d(10);
    assert!(!judge(&sparse, d(1_000_000), &p).unusual);
    assert!(!judge(&[], d(1_000_000), &p).unusual);
}

#[test]
fn earlier_spikes_do_not_hide_a_new_one() {
    let p = AnomalyParams::default();
    let mut baseline = vec![d(100); 24];
    baseline[5] = d(10_000);
    baseline[9] = d(12_000);
    let j = judge(&baseline, d(5_000), &p);
    assert!(j.unusual, "{j:?}");
}

#[test]
fn rules_are_validated() {
    let rule = |condition| AlertRule {
        id: AlertId("alr_1".into()),
        name: "n".into(),
        customer: None,
        condition,
        enabled: true,
        created_ms: UnixMs(0),
    };
    let meter = MeterSlug::parse("bytes-out").unwrap();
    assert!(
        rule(Condition::Spend { amount_minor: 0 })
            .validate()
            .is_err()
    );
    assert!(
        rule(Condition::Usage {
            meter: meter.clone(),
            threshold: Threshold::Absolute { value: d(0) }
        })
        .validate()
        .is_err()
    );
    assert!(
        rule(Condition::UnusualUsage {
            meter,
            params: AnomalyParams {
                baseline_hours: 1,
                ..AnomalyParams::default()
            }
        })
        .validate()
        .is_err()
    );
    let json = r#"{"type":"usage","meter":"bytes-out","threshold":{"kind":"percent_of_limit","feature":"egress","percent":"80"}}"#;
    let c: Condition = serde_json::from_str(json).unwrap();
    assert_eq!(serde_json::to_string(&c).unwrap(), json);
}
