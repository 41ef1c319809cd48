//! Readable numbers for people: quantities in the unit of their meter, money in its currency,
//! instants in the customer's time zone.
//!
//! Owns: the display rules. A meter whose slug or value path mentions `bytes` counts bytes and
//! is shown in decimal (SI) units — kB, MB, GB, TB, PB (1 GB = 10⁹ bytes), as every page says;
//! other meters are plain numbers with thousands separators. Display values are exact decimals
//! rounded half to even for the eye only; exports and CSV keep the exact text. Does not own:
//! any arithmetic on money ([`tollgate_core::money`]).

use jiff::tz::TimeZone;
use rust_decimal::{Decimal, RoundingStrategy};
use tollgate_core::meter::Meter;
use tollgate_core::money::Currency;
use tollgate_core::time::UnixMs;

/// What a meter counts, for display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Bytes, shown in SI multiples.
    Bytes,
    /// Anything else (requests, sessions), shown as a number.
    Count,
}

impl Unit {
    /// The unit of a meter.
    pub fn of(meter: &Meter) -> Unit {
        let slug = meter.slug.as_str().to_ascii_lowercase();
        let path = meter
            .spec
            .value_path
            .as_deref()
            .unwrap_or("")
            .to_ascii_lowercase();
        if slug.contains("byte") || path.contains("byte") {
            Unit::Bytes
        } else {
            Unit::Count
        }
    }

    /// A scale for values up to `max`: the divisor and its name (`GB`), so one chart or table
    /// uses one unit throughout.
    pub fn scale_for(self, max: Decimal) -> Scale {
        match self {
            Unit::Count => Scale {
                divisor: Decimal::ONE,
                name: "",
            },
            Unit::Bytes => {
                const NAMES: [&str; 6] = ["bytes", "kB", "MB", "GB", "TB", "PB"];
                let mut divisor = Decimal::ONE;
                let mut i = 0;
                let thousand = Decimal::from(1000);
                while i + 1 < NAMES.len() && max.abs() >= divisor * thousand {
                    divisor *= thousand;
                    i += 1;
                }
                Scale {
                    divisor,
                    name: NAMES[i],
                }
            }
        }
    }

    /// A quantity in its own best scale (`1.24 GB`, `1,234`).
    pub fn format(self, value: Decimal) -> String {
        self.scale_for(value).format(value)
    }
}

/// A display unit: divide by `divisor`, append `name`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scale {
    /// 1, 1000, 10⁶, …
    pub divisor: Decimal,
    /// `GB`, or empty for plain numbers.
    pub name: &'static str,
}

impl Scale {
    /// The value in this scale, as a number only (two decimals in a scaled unit; plain
    /// numbers keep up to two decimals when they have any).
    pub fn number(&self, value: Decimal) -> String {
        let scaled = value / self.divisor;
        let dp = if self.divisor > Decimal::ONE || !scaled.fract().is_zero() {
            2
        } else {
            0
        };
        group_thousands(
            &scaled
                .round_dp_with_strategy(dp, RoundingStrategy::MidpointNearestEven)
                .to_string(),
            dp,
        )
    }

    /// The value with its unit name.
    pub fn format(&self, value: Decimal) -> String {
        if self.name.is_empty() {
            self.number(value)
        } else {
            format!("{} {}", self.number(value), self.name)
        }
    }
}

/// `1234567.5` → `1,234,567.50` with `dp` decimals.
fn group_thousands(text: &str, dp: u32) -> String {
    let (sign, digits) = text
        .strip_prefix('-')
        .map_or(("", text), |rest| ("-", rest));
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let mut out = String::with_capacity(text.len() + int.len() / 3 + 4);
    out.push_str(sign);
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if dp > 0 {
        out.push('.');
        let mut f = frac.to_owned();
        while f.len() < dp as usize {
            f.push('0');
        }
        out.push_str(&f);
    }
    out
}

/// `12.34 USD` from minor units.
pub fn money(currency: Currency, amount_minor: i64) -> String {
    let major = currency.format(amount_minor);
    let dp = currency.minor_digits();
    format!("{} {}", group_thousands(&major, dp), currency.code())
}

/// `2026-11-03 14:00` in `tz`.
pub fn local_minute(t: UnixMs, tz: &TimeZone) -> String {
    t.to_timestamp()
        .to_zoned(tz.clone())
        .strftime("%Y-%m-%d %H:%M")
        .to_string()
}

/// `2026-11-03` in `tz`.
pub fn local_day(t: UnixMs, tz: &TimeZone) -> String {
    t.to_timestamp()
        .to_zoned(tz.clone())
        .strftime("%Y-%m-%d")
        .to_string()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    #[test]
    fn bytes_use_decimal_units() {
        assert_eq!(Unit::Bytes.format(d("0")), "0 bytes");
        assert_eq!(Unit::Bytes.format(d("999")), "999 bytes");
        assert_eq!(Unit::Bytes.format(d("1000")), "1.00 kB");
        assert_eq!(Unit::Bytes.format(d("1240000000")), "1.24 GB");
        assert_eq!(Unit::Bytes.format(d("1234567890123456")), "1.23 PB");
        assert_eq!(Unit::Bytes.format(d("5000000000000000000")), "5,000.00 PB");
    }

    #[test]
    fn counts_group_thousands() {
        assert_eq!(Unit::Count.format(d("0")), "0");
        assert_eq!(Unit::Count.format(d("1234567")), "1,234,567");
        assert_eq!(Unit::Count.format(d("1234.5")), "1,234.50");
        assert_eq!(Unit::Count.format(d("-1234")), "-1,234");
    }

    #[test]
    fn one_scale_for_a_whole_chart() {
        let s = Unit::Bytes.scale_for(d("3000000000"));
        assert_eq!(s.name, "GB");
        assert_eq!(s.number(d("500000000")), "0.50");
    }

    #[test]
    fn money_has_its_currency_digits() {
        let usd = Currency::parse("USD").unwrap();
        let jpy = Currency::parse("JPY").unwrap();
        assert_eq!(money(usd, 123456789), "1,234,567.89 USD");
        assert_eq!(money(usd, -5), "-0.05 USD");
        assert_eq!(money(jpy, 1200), "1,200 JPY");
    }

    #[test]
    fn instants_are_local() {
        let tz = TimeZone::get("Europe/Berlin").unwrap();
        // 2026-11-03T13:00Z is 14:00 in Berlin (CET).
        let t = UnixMs(1_793_710_800_000);
        assert_eq!(local_minute(t, &tz), "2026-11-03 14:00");
        assert_eq!(local_day(t, &tz), "2026-11-03");
    }
}
