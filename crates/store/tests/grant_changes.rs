//! The entitlement checker's cache is invalidated by what a write changed: a change to one
//! customer's grants (customer, subscription, override) leaves every other customer's cached
//! view valid; a plan version changes everyone's.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use rust_decimal::Decimal;
use tollgate_core::billing::{Customer, CustomerKey, Interval, Plan, PlanKey, ZoneName};
use tollgate_core::entitlement::{Entitlement, FeatureKey, Grant};
use tollgate_core::money::Currency;
use tollgate_core::pricing::{Price, PriceKey, PriceModel};
use tollgate_core::time::UnixMs;
use tollgate_store::BillingStore;

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
    let plan = PlanKey::parse("monthly").unwrap();
    store
        .create_plan(&Plan {
            key: plan.clone(),
            name: "Monthly".into(),
            currency: Currency::parse("USD").unwrap(),
            interval: Interval::Month,
            created_ms: UnixMs(0),
        })
        .unwrap();
    let before_publish = store.generation();
    store
        .publish_version(
            &plan,
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
            Vec::new(),
            UnixMs(0),
        )
        .unwrap();
    assert!(!store.grants_unchanged_since(&a, before_publish));
    assert!(!store.grants_unchanged_since(&b, before_publish));
    let _ = std::fs::remove_dir_all(&dir);
}
