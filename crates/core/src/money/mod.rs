//! Money: currencies, amounts in integer minor units, and the one rounding function.
//!
//! Owns: which currencies exist and how many minor digits each has (ISO 4217), [`Money`] with
//! checked arithmetic, and [`round_to_minor`], the only place a decimal amount becomes minor
//! units. Does not own: prices (see [`crate::pricing`]) or what is charged (see
//! [`crate::invoice`]).
//!
//! Invariants: an amount that left this module is an exact integer of minor units; nothing here
//! uses floating point; rounding is half to even (banker's rounding), so a long run of lines
//! rounded one by one carries no bias up or down.

mod error;
#[cfg(test)]
mod tests;

use std::fmt;

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

pub use self::error::MoneyError;

/// ISO 4217 codes Tollgate knows, with their minor-unit digits. Zero-digit (JPY, KRW, ...) and
/// three-digit (KWD, BHD, ...) currencies are here on purpose: they are where rounding bugs live.
const CURRENCIES: &[(&str, u8)] = &[
    ("AED", 2),
    ("AUD", 2),
    ("BHD", 3),
    ("BRL", 2),
    ("CAD", 2),
    ("CHF", 2),
    ("CLP", 0),
    ("CNY", 2),
    ("CZK", 2),
    ("DKK", 2),
    ("EUR", 2),
    ("GBP", 2),
    ("HKD", 2),
    ("HUF", 2),
    ("IDR", 2),
    ("ILS", 2),
    ("INR", 2),
    ("IQD", 3),
    ("ISK", 0),
    ("JOD", 3),
    ("JPY", 0),
    ("KRW", 0),
    ("KWD", 3),
    ("LYD", 3),
    ("MXN", 2),
    ("MYR", 2),
    ("NOK", 2),
    ("NZD", 2),
    ("OMR", 3),
    ("PHP", 2),
    ("PLN", 2),
    ("PYG", 0),
    ("RON", 2),
    ("SAR", 2),
    ("SEK", 2),
    ("SGD", 2),
    ("THB", 2),
    ("TND", 3),
    ("TRY", 2),
    ("TWD", 2),
    ("UGX", 0),
    ("USD", 2),
    ("VND", 0),
    ("XAF", 0),
    ("XOF", 0),
    ("ZAR", 2),
];

/// A currency Tollgate can bill in: an upper-case ISO 4217 code with a known number of minor
/// digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency {
    code: [u8; 3],
    minor_digits: u8,
}

impl Currency {
    /// Parses a code such as `USD`; lower case is accepted and normalised.
    pub fn parse(text: &str) -> Result<Currency, MoneyError> {
        let upper = text.to_ascii_uppercase();
        CURRENCIES
            .iter()
            .find(|(code, _)| *code == upper)
            .map(|(code, digits)| {
                let b = code.as_bytes();
                Currency {
                    code: [b[0], b[1], b[2]],
                    minor_digits: *digits,
                }
            })
            .ok_or_else(|| MoneyError::UnknownCurrency {
                code: text.chars().take(16).collect(),
            })
    }

    /// The ISO code, upper case.
    pub fn code(&self) -> &str {
        std::str::from_utf8(&self.code).unwrap_or("???")
    }

    /// Digits after the decimal point of one major unit (USD 2, JPY 0, KWD 3).
    pub fn minor_digits(&self) -> u32 {
        u32::from(self.minor_digits)
    }

    /// An integer number of minor units as a decimal of major units (`1234` USD → `12.34`).
    pub fn to_major(&self, amount_minor: i64) -> Decimal {
        Decimal::new(amount_minor, self.minor_digits())
    }

    /// Minor units as text in major units with every minor digit shown (`-5` USD → `-0.05`).
    pub fn format(&self, amount_minor: i64) -> String {
        let d = self.to_major(amount_minor);
        format!("{d:.prec$}", prec = self.minor_digits as usize)
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl Serialize for Currency {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.code())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Currency::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// An exact amount: integer minor units of one currency.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Money {
    /// Minor units (cents for USD, yen for JPY, fils for KWD).
    pub amount_minor: i64,
    /// The currency.
    pub currency: Currency,
}

impl Money {
    /// Zero in a currency.
    pub fn zero(currency: Currency) -> Money {
        Money {
            amount_minor: 0,
            currency,
        }
    }

    /// `self + other`, refusing mixed currencies and overflow.
    pub fn checked_add(self, other: Money) -> Result<Money, MoneyError> {
        self.same_currency(other)?;
        let amount_minor = self
            .amount_minor
            .checked_add(other.amount_minor)
            .ok_or(MoneyError::Overflow)?;
        Ok(Money {
            amount_minor,
            currency: self.currency,
        })
    }

    /// `self - other`, refusing mixed currencies and overflow.
    pub fn checked_sub(self, other: Money) -> Result<Money, MoneyError> {
        self.same_currency(other)?;
        let amount_minor = self
            .amount_minor
            .checked_sub(other.amount_minor)
            .ok_or(MoneyError::Overflow)?;
        Ok(Money {
            amount_minor,
            currency: self.currency,
        })
    }

    fn same_currency(self, other: Money) -> Result<(), MoneyError> {
        if self.currency == other.currency {
            Ok(())
        } else {
            Err(MoneyError::CurrencyMismatch {
                left: self.currency,
                right: other.currency,
            })
        }
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}",
            self.currency.format(self.amount_minor),
            self.currency
        )
    }
}

/// The one function that turns a decimal amount of major units into minor units.
///
/// Rule: round half to even at the currency's minor digits (`0.125` USD → 12 cents,
/// `0.135` → 14 cents; `2.5` JPY → 2 yen). Every invoice line is rounded exactly once, here;
/// totals are sums of rounded lines.
pub fn round_to_minor(amount: Decimal, currency: Currency) -> Result<i64, MoneyError> {
    let digits = currency.minor_digits();
    let rounded = amount.round_dp_with_strategy(digits, RoundingStrategy::MidpointNearestEven);
    let scale = Decimal::from(10_i64.pow(digits));
    let minor = rounded.checked_mul(scale).ok_or(MoneyError::Overflow)?;
    i64::try_from(minor).map_err(|_| MoneyError::Overflow)
}
