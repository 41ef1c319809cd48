use std::str::FromStr;

use rust_decimal::Decimal;

use super::*;

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap_or_default()
}

fn cur(code: &str) -> Currency {
    Currency::parse(code).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn rounding_is_half_to_even_at_the_minor_digits() {
    let cases = [
        ("USD", "0.125", 12),
        ("USD", "0.135", 14),
        ("USD", "0.1251", 13),
        ("USD", "-0.125", -12),
        ("USD", "-0.135", -14),
        ("USD", "12.34", 1234),
        ("USD", "0.000002", 0),
        ("JPY", "2.5", 2),
        ("JPY", "3.5", 4),
        ("JPY", "1234.4999", 1234),
        ("KWD", "1.0005", 1000),
        ("KWD", "1.0015", 1002),
        ("KWD", "0.0004", 0),
        ("BHD", "7.123456", 7123),
    ];
    for (code, amount, want) in cases {
        assert_eq!(
            round_to_minor(d(amount), cur(code)),
            Ok(want),
            "{code} {amount}"
        );
    }
}

#[test]
fn rounding_refuses_what_does_not_fit() {
    assert_eq!(
        round_to_minor(Decimal::MAX, cur("USD")),
        Err(MoneyError::Overflow)
    );
}

#[test]
fn currencies_parse_and_format() {
    assert_eq!(cur("usd").code(), "USD");
    assert_eq!(cur("JPY").format(1234), "1234");
    assert_eq!(cur("KWD").format(1234), "1.234");
    assert_eq!(cur("USD").format(-5), "-0.05");
    assert_eq!(cur("USD").format(100), "1.00");
    assert_eq!(
        Currency::parse("XYZ").map_err(|e| e.code()),
        Err("unknown_currency")
    );
}

#[test]
fn money_arithmetic_is_checked() {
    let usd = Money::zero(cur("USD"));
    let eur = Money::zero(cur("EUR"));
    assert!(matches!(
        usd.checked_add(eur),
        Err(MoneyError::CurrencyMismatch { .. })
    ));
    let max = Money {
        amount_minor: i64::MAX,
        currency: cur("USD"),
    };
    assert_eq!(
        max.checked_add(Money {
            amount_minor: 1,
            currency: cur("USD")
        }),
        Err(MoneyError::Overflow)
    );
}
