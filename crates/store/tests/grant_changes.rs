//! The entitlement checker's cache is invalidated by what a write changed: a change to one
//! customer's grants (customer, subscription, override) leaves every other customer's cached
//! view valid; a plan version changes everyone's. The background refresh loads views before
//! checks ask, and a scheduled phase takes effect at its minute without any write.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use rust_decimal::Decimal;
use tollgate_core::billing::{
    Customer, CustomerKey, Interval, Phase, Plan, PlanKey, Subscription, SubscriptionChange,
    SubscriptionId, ZoneName,
};
use tollgate_core::entitlement::{Entitlement, FeatureKey, Grant};
use tollgate_core::money::Currency;
use tollgate_core::pricing::{Price, PriceKey, PriceModel};
use tollgate_core::time::UnixMs;
use tollgate_store::BillingStore;
use tollgate_store::billing::GrantChangesAfter;
use tollgate_store::billing::entitlements::{Checker, CustomerView, Refreshed, VIEW_TTL_MS};

fn customer(store: &BillingStore, key: &str) -> CustomerKey {
    let key = CustomerKey::parse(key).unwrap();
    store
        .create_customer(&Customer {
            key: key.clone(),
            name: key.as_str().into(),
            email: None,
            currency: Currency::parse("USD").unwrap(),
            time_zone: ZoneName::utc(),
            billing_anchor: jiff::civil::date(2026, 1, 1),
            tax_rate: Decimal::ZERO,
            metadata: Default::default(),
            created_ms: UnixMs(0),
        })
        .unwrap();
    key
}

#[test]
fn a_change_to_one_customer_leaves_the_others_views_valid() {
    let dir = std::env::temp_dir().join(format!("tollgate-grant-changes-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = BillingStore::open(&dir).unwrap();
    let a = customer(&store, "cus_a");
    let b = customer(&store, "cus_b");
    let loaded = store.generation();
    assert!(store.grants_unchanged_since(&a, loaded));
    assert!(store.grants_unchanged_since(&b, loaded));

    let feature = FeatureKey::parse("export").unwrap();
    store
        .set_override(
            &a,
            &Entitlement {
                feature: feature.clone(),
                grant: Grant::Boolean { enabled: true },
            },
            UnixMs(0),
        )
        .unwrap();
    assert!(!store.grants_unchanged_since(&a, loaded), "a's own change");
    assert!(store.grants_unchanged_since(&b, loaded), "b is untouched");
    let after = store.generation();
    assert!(store.grants_unchanged_since(&a, after));

    store.delete_override(&a, &feature).unwrap();
    assert!(!store.grants_unchanged_since(&a, after));
    assert!(store.grants_unchanged_since(&b, after));

    // A plan version can change every subscriber's grants.
    let before_publish = store.generation();
    monthly(&store, &PlanKey::parse("monthly").unwrap(), Vec::new());
    assert!(!store.grants_unchanged_since(&a, before_publish));
    assert!(!store.grants_unchanged_since(&b, before_publish));
    let _ = std::fs::remove_dir_all(&dir);
}

fn dir(label: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "tollgate-grant-changes-{label}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn flag(feature: &str, enabled: bool) -> Entitlement {
    Entitlement {
        feature: FeatureKey::parse(feature).unwrap(),
        grant: Grant::Boolean { enabled },
    }
}

fn granted(view: &CustomerView, feature: &str) -> Option<bool> {
    view.grants().find_map(|(k, g, _)| match g {
        Grant::Boolean { enabled } if k.as_str() == feature => Some(*enabled),
        _ => None,
    })
}

#[test]
fn the_log_names_each_changed_customer_once_and_a_plan_version_names_everyone() {
    let dir = dir("log");
    let store = BillingStore::open(&dir).unwrap();
    let start = store.generation();
    let a = customer(&store, "cus_a");
    let b = customer(&store, "cus_b");
    store
        .set_override(&a, &flag("export", true), UnixMs(0))
        .unwrap();
    assert_eq!(
        store.grant_changes_after(start),
        GrantChangesAfter::Customers(vec![b.clone(), a.clone()]),
        "each once, in the order of the last change"
    );
    let mid = store.generation();
    assert_eq!(
        store.grant_changes_after(mid),
        GrantChangesAfter::Customers(Vec::new())
    );
    store
        .delete_override(&a, &FeatureKey::parse("export").unwrap())
        .unwrap();
    assert_eq!(
        store.grant_changes_after(mid),
        GrantChangesAfter::Customers(vec![a])
    );
    let plan = PlanKey::parse("monthly").unwrap();
    monthly(&store, &plan, vec![flag("export", true)]);
    assert_eq!(store.grant_changes_after(mid), GrantChangesAfter::Everyone);
    assert_eq!(
        store.grant_changes_after(store.generation()),
        GrantChangesAfter::Customers(Vec::new())
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn monthly(store: &BillingStore, plan: &PlanKey, entitlements: Vec<Entitlement>) -> u32 {
    if store.plan(plan).is_err() {
        store
            .create_plan(&Plan {
                key: plan.clone(),
                name: "Monthly".into(),
                currency: Currency::parse("USD").unwrap(),
                interval: Interval::Month,
                created_ms: UnixMs(0),
            })
            .unwrap();
    }
    store
        .publish_version(
            plan,
            vec![Price {
                key: PriceKey::parse("platform").unwrap(),
                name: "Platform".into(),
                meter: None,
                model: PriceModel::Flat {
                    amount: Decimal::new(1000, 2),
                },
                free_units: Decimal::ZERO,
                minimum_amount: None,
                maximum_amount: None,
            }],
            entitlements,
            UnixMs(0),
        )
        .unwrap()
        .version
}

#[test]
fn the_background_refresh_loads_views_before_checks_need_them() {
    let dir = dir("refresh");
    let store = BillingStore::open(&dir).unwrap();
    let now = UnixMs(1_780_000_000_000);
    let a = customer(&store, "cus_a");
    let b = customer(&store, "cus_b");
    let checker = Checker::new();

    // First pass: every customer.
    let first = checker.refresh(&store, now).unwrap();
    assert_eq!(
        first,
        Refreshed {
            changed: 2,
            expired: 0
        }
    );
    let va = checker.view(&store, &a, now).unwrap();
    assert!(
        Arc::ptr_eq(&va, &checker.view(&store, &a, now).unwrap()),
        "the loaded view is used"
    );
    assert_eq!(checker.refresh(&store, now).unwrap(), Refreshed::default());

    // A write to a's grants: the next pass loads a's view only, with the change in it.
    store.set_override(&a, &flag("export", true), now).unwrap();
    assert_eq!(
        checker.refresh(&store, now).unwrap(),
        Refreshed {
            changed: 1,
            expired: 0
        }
    );
    let va2 = checker.view(&store, &a, now).unwrap();
    assert_eq!(granted(&va2, "export"), Some(true));
    assert!(Arc::ptr_eq(&va2, &checker.view(&store, &a, now).unwrap()));

    // A check between the write and the pass does not wait for the pass.
    store.set_override(&a, &flag("export", false), now).unwrap();
    assert_eq!(
        granted(&checker.view(&store, &a, now).unwrap(), "export"),
        Some(false)
    );

    // Past its refresh time a view is still used, and queued for the next pass.
    let late = UnixMs(now.0 + VIEW_TTL_MS);
    let vb = checker.view(&store, &b, now).unwrap();
    assert!(Arc::ptr_eq(&vb, &checker.view(&store, &b, late).unwrap()));
    assert!(
        Arc::ptr_eq(&vb, &checker.view(&store, &b, late).unwrap()),
        "queued once"
    );
    let pass = checker.refresh(&store, late).unwrap();
    assert_eq!(pass.expired, 1);
    assert!(!Arc::ptr_eq(&vb, &checker.view(&store, &b, late).unwrap()));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_scheduled_plan_change_takes_effect_at_its_minute_without_a_write() {
    let dir = dir("scheduled");
    let store = BillingStore::open(&dir).unwrap();
    let start = UnixMs(1_780_000_020_000 / 60_000 * 60_000);
    let a = customer(&store, "cus_a");
    let basic = PlanKey::parse("basic").unwrap();
    let pro = PlanKey::parse("pro").unwrap();
    monthly(&store, &basic, vec![flag("export", false)]);
    monthly(&store, &pro, vec![flag("export", true)]);
    store
        .create_subscription(
            &Subscription::new(
                SubscriptionId("sub_a".into()),
                a.clone(),
                Phase {
                    plan: basic,
                    version: 1,
                    start,
                },
                None,
                start,
            )
            .unwrap(),
        )
        .unwrap();
    let switch = UnixMs(start.0 + 10 * 60_000);
    store
        .change_subscription(
            "sub_a",
            SubscriptionChange::ChangePlan {
                at: switch,
                plan: pro,
                version: 1,
            },
        )
        .unwrap();
    let checker = Checker::new();
    checker.refresh(&store, start).unwrap();
    let before = checker.view(&store, &a, UnixMs(switch.0 - 1)).unwrap();
    assert_eq!(granted(&before, "export"), Some(false));
    // No write and no refresh in between: the view expires at the phase's start.
    let after = checker.view(&store, &a, switch).unwrap();
    assert_eq!(granted(&after, "export"), Some(true));
    let _ = std::fs::remove_dir_all(&dir);
}
