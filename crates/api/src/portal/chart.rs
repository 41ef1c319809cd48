//! Server-rendered SVG bar charts of usage over time.
//!
//! Owns: the layout of one chart — a time axis from `from` to `to` with labels in the
//! customer's time zone, a value axis from zero with "nice" ticks in one display unit
//! ([`super::units::Scale`]), one bar per window, stacked by series with a legend, axis
//! titles, and a `<title>` on every bar segment (the exact value, shown by browsers on hover
//! and read by screen readers). Does not own: the numbers (usage queries) or their units.
//!
//! Invariants: every text that came from data is XML-escaped; coordinates are integers
//! computed with exact decimals (no floats); a chart without data still draws its axes.

use jiff::tz::TimeZone;
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use tollgate_core::time::UnixMs;

use super::units::{Scale, Unit};

/// Drawing area of the SVG (viewBox units).
const WIDTH: i64 = 960;
const HEIGHT: i64 = 380;
const LEFT: i64 = 84;
const RIGHT: i64 = 16;
const TOP: i64 = 16;
const BOTTOM: i64 = 64;

/// Colours of the series, chosen to stay apart for common colour blindness (Okabe–Ito).
pub const PALETTE: [&str; 9] = [
    "#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000",
    "#999999",
];

/// One window's bar: its span and one value per series.
#[derive(Debug, Clone)]
pub struct Bar {
    /// Window start.
    pub start: UnixMs,
    /// Window end.
    pub end: UnixMs,
    /// Per series, in [`Chart::series`] order.
    pub values: Vec<Decimal>,
}

/// What to draw.
#[derive(Debug, Clone)]
pub struct Chart {
    /// Accessible title.
    pub title: String,
    /// Left edge of the time axis.
    pub from: UnixMs,
    /// Right edge of the time axis.
    pub to: UnixMs,
    /// Labels are in this zone.
    pub tz: TimeZone,
    /// Whether windows are hours (labels show the time) or days.
    pub hourly: bool,
    /// What the values are.
    pub unit: Unit,
    /// The value axis title without unit (`Bytes out`).
    pub quantity: String,
    /// Series names (legend), at least one.
    pub series: Vec<String>,
    /// Bars.
    pub bars: Vec<Bar>,
}

/// XML-escapes text for element content and attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The smallest "nice" step (1, 2, 2.5 or 5 × 10^k) at least `raw`.
fn nice_step(raw: Decimal) -> Decimal {
    if raw <= Decimal::ZERO {
        return Decimal::ONE;
    }
    let mut pow = Decimal::ONE;
    while pow * Decimal::TEN <= raw {
        pow *= Decimal::TEN;
    }
    while pow > raw {
        pow /= Decimal::TEN;
    }
    for m in [
        Decimal::ONE,
        Decimal::TWO,
        Decimal::new(25, 1),
        Decimal::new(5, 0),
        Decimal::TEN,
    ] {
        if pow * m >= raw {
            return pow * m;
        }
    }
    pow * Decimal::TEN
}

fn px(d: Decimal) -> i64 {
    d.round().to_i64().unwrap_or(0)
}

impl Chart {
    fn x(&self, t: UnixMs) -> i64 {
        let span = (self.to.0 - self.from.0).max(1);
        let plot = WIDTH - LEFT - RIGHT;
        LEFT + px(
            Decimal::from(t.0.clamp(self.from.0, self.to.0) - self.from.0) * Decimal::from(plot)
                / Decimal::from(span),
        )
    }

    /// The value axis: scale, step (in raw units) and the top of the axis.
    fn value_axis(&self) -> (Scale, Decimal, Decimal) {
        let max = self
            .bars
            .iter()
            .map(|b| b.values.iter().copied().sum::<Decimal>())
            .max()
            .unwrap_or(Decimal::ZERO);
        let scale = self.unit.scale_for(max);
        let max_scaled = max / scale.divisor;
        let step_scaled = nice_step(max_scaled / Decimal::from(4));
        let step_scaled = if self.unit == Unit::Count && step_scaled < Decimal::ONE {
            Decimal::ONE
        } else {
            step_scaled
        };
        let mut top_scaled = step_scaled;
        while top_scaled < max_scaled {
            top_scaled += step_scaled;
        }
        (
            scale,
            step_scaled * scale.divisor,
            top_scaled * scale.divisor,
        )
    }

    fn y(&self, v: Decimal, top: Decimal) -> i64 {
        let plot = HEIGHT - TOP - BOTTOM;
        if top.is_zero() {
            return HEIGHT - BOTTOM;
        }
        HEIGHT - BOTTOM - px(v * Decimal::from(plot) / top)
    }

    fn time_label(&self, t: UnixMs) -> (String, String) {
        let z = t.to_timestamp().to_zoned(self.tz.clone());
        if self.hourly {
            (
                z.strftime("%H:%M").to_string(),
                z.strftime("%b %-d").to_string(),
            )
        } else {
            (z.strftime("%b %-d").to_string(), String::new())
        }
    }

    /// The SVG text.
    pub fn svg(&self) -> String {
        let (scale, step, top) = self.value_axis();
        let unit_text = if scale.name.is_empty() {
            String::new()
        } else {
            format!(" ({})", scale.name)
        };
        let mut s = String::new();
        s.push_str(&format!(
            r#"<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-labelledby="chart-title chart-desc" xmlns="http://www.w3.org/2000/svg">"#
        ));
        s.push_str(&format!(
            r#"<title id="chart-title">{}</title><desc id="chart-desc">Bars per {} window, stacked by {}; values in {}. The table below lists every value.</desc>"#,
            esc(&self.title),
            if self.hourly { "hour" } else { "day" },
            esc(&self.series.join(", ")),
            if scale.name.is_empty() { "units" } else { scale.name },
        ));
        // Value axis: gridlines and labels.
        let mut v = Decimal::ZERO;
        while v <= top {
            let y = self.y(v, top);
            s.push_str(&format!(
                r##"<line x1="{LEFT}" x2="{}" y1="{y}" y2="{y}" stroke="#d0d7de" stroke-width="1"/>"##,
                WIDTH - RIGHT
            ));
            s.push_str(&format!(
                r##"<text x="{}" y="{}" text-anchor="end" font-size="13" fill="#3d444d">{}</text>"##,
                LEFT - 8,
                y + 4,
                esc(&scale.number(v))
            ));
            v += step;
        }
        s.push_str(&format!(
            r##"<text transform="translate(18 {}) rotate(-90)" text-anchor="middle" font-size="13" fill="#1b1f24">{}{}</text>"##,
            TOP + (HEIGHT - TOP - BOTTOM) / 2,
            esc(&self.quantity),
            esc(&unit_text)
        ));
        // Bars.
        for bar in &self.bars {
            let x0 = self.x(bar.start);
            let x1 = self.x(bar.end);
            let gap = if x1 - x0 > 6 { 1 } else { 0 };
            let w = (x1 - x0 - 2 * gap).max(1);
            let mut base = Decimal::ZERO;
            for (i, value) in bar.values.iter().enumerate() {
                if value.is_zero() {
                    continue;
                }
                let y_top = self.y(base + *value, top);
                let y_bottom = self.y(base, top);
                let label = format!(
                    "{} {}: {}",
                    self.time_label(bar.start).0,
                    self.series.get(i).map_or("", String::as_str),
                    self.unit.format(*value)
                );
                s.push_str(&format!(
                    r#"<rect x="{}" y="{y_top}" width="{w}" height="{}" fill="{}"><title>{}</title></rect>"#,
                    x0 + gap,
                    (y_bottom - y_top).max(1),
                    PALETTE[i % PALETTE.len()],
                    esc(&label)
                ));
                base += *value;
            }
        }
        // Time axis: baseline, ticks and at most ~10 labels.
        s.push_str(&format!(
            r##"<line x1="{LEFT}" x2="{}" y1="{}" y2="{}" stroke="#1b1f24" stroke-width="1.5"/>"##,
            WIDTH - RIGHT,
            HEIGHT - BOTTOM,
            HEIGHT - BOTTOM
        ));
        let ticks = self.ticks();
        let every = ticks.len().div_ceil(10).max(1);
        for (n, t) in ticks.iter().enumerate() {
            let x = self.x(*t);
            s.push_str(&format!(
                r##"<line x1="{x}" x2="{x}" y1="{}" y2="{}" stroke="#1b1f24"/>"##,
                HEIGHT - BOTTOM,
                HEIGHT - BOTTOM + 4
            ));
            if n % every == 0 {
                let (a, b) = self.time_label(*t);
                s.push_str(&format!(
                    r##"<text x="{x}" y="{}" text-anchor="middle" font-size="13" fill="#3d444d">{}</text>"##,
                    HEIGHT - BOTTOM + 18,
                    esc(&a)
                ));
                if !b.is_empty() {
                    s.push_str(&format!(
                        r##"<text x="{x}" y="{}" text-anchor="middle" font-size="11" fill="#57606a">{}</text>"##,
                        HEIGHT - BOTTOM + 32,
                        esc(&b)
                    ));
                }
            }
        }
        s.push_str(&format!(
            r##"<text x="{}" y="{}" text-anchor="middle" font-size="13" fill="#1b1f24">Time ({})</text>"##,
            LEFT + (WIDTH - LEFT - RIGHT) / 2,
            HEIGHT - 6,
            esc(self.tz.iana_name().unwrap_or("UTC"))
        ));
        s.push_str("</svg>");
        s
    }

    /// Window starts for the time axis: local midnights (day) or local hours, from `from`.
    fn ticks(&self) -> Vec<UnixMs> {
        let mut out = Vec::new();
        let Ok(mut z) = self.from.to_timestamp().to_zoned(self.tz.clone()).round(
            jiff::ZonedRound::new()
                .smallest(if self.hourly {
                    jiff::Unit::Hour
                } else {
                    jiff::Unit::Day
                })
                .mode(jiff::RoundMode::Floor),
        ) else {
            return out;
        };
        let step = if self.hourly {
            jiff::Span::new().hours(1)
        } else {
            jiff::Span::new().days(1)
        };
        while out.len() < tollgate_core::limits::PORTAL_CHART_WINDOWS_MAX {
            let t = UnixMs::from_timestamp(z.timestamp());
            if t >= self.to {
                break;
            }
            if t >= self.from {
                out.push(t);
            }
            match z.checked_add(step) {
                Ok(next) => z = next,
                Err(_) => break,
            }
        }
        out
    }

    /// The legend entries: (colour, name).
    pub fn legend(&self) -> Vec<(&'static str, String)> {
        self.series
            .iter()
            .enumerate()
            .map(|(i, n)| (PALETTE[i % PALETTE.len()], n.clone()))
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    #[test]
    fn nice_steps() {
        assert_eq!(nice_step(d("0.3")), d("0.5"));
        assert_eq!(nice_step(d("1")), d("1"));
        assert_eq!(nice_step(d("1.1")), d("2"));
        assert_eq!(nice_step(d("2.2")), d("2.5"));
        assert_eq!(nice_step(d("730")), d("1000"));
        assert_eq!(nice_step(d("0")), d("1"));
    }

    fn chart(values: Vec<Decimal>, series: Vec<&str>) -> Chart {
        let day = 86_400_000;
        Chart {
            title: "Bytes out <test>".into(),
            from: UnixMs(0),
            to: UnixMs(3 * day),
            tz: TimeZone::UTC,
            hourly: false,
            unit: Unit::Bytes,
            quantity: "Bytes out".into(),
            series: series.into_iter().map(String::from).collect(),
            bars: vec![Bar {
                start: UnixMs(day),
                end: UnixMs(2 * day),
                values,
            }],
        }
    }

    #[test]
    fn draws_axes_units_and_escaped_labels() {
        let svg = chart(
            vec![d("1500000000"), d("500000000")],
            vec!["api.example.com", "<b>&evil"],
        )
        .svg();
        assert!(svg.contains("Bytes out (GB)"), "{svg}");
        assert!(svg.contains("Time (UTC)"));
        assert!(svg.contains("Jan 1") && svg.contains("Jan 3"), "day labels");
        assert!(svg.contains("&lt;b&gt;&amp;evil"));
        assert!(!svg.contains("<b>"));
        assert!(svg.contains("1.50 GB"), "exact value in a title: {svg}");
        assert_eq!(svg.matches("<rect").count(), 2, "one segment per series");
        // The 2 GB bar reaches the top tick: 0.50 steps up to 2.00.
        assert!(svg.contains(">2.00<"), "{svg}");
    }

    #[test]
    fn a_stacked_day_chart_in_berlin_snapshot() {
        // Three days around the end of summer time (2026-10-25 has 25 hours in Berlin).
        let tz = TimeZone::get("Europe/Berlin").unwrap();
        let day = |d: i8| {
            UnixMs::from_timestamp(
                jiff::civil::date(2026, 10, d)
                    .to_zoned(tz.clone())
                    .unwrap()
                    .timestamp(),
            )
        };
        let c = Chart {
            title: "Bytes out per day".into(),
            from: day(24),
            to: day(27),
            tz: tz.clone(),
            hourly: false,
            unit: Unit::Bytes,
            quantity: "Bytes out".into(),
            series: vec!["api.example.com".into(), "cdn.example.net".into()],
            bars: vec![
                Bar {
                    start: day(24),
                    end: day(25),
                    values: vec![d("1200000000"), d("300000000")],
                },
                Bar {
                    start: day(25),
                    end: day(26),
                    values: vec![d("2500000000"), d("0")],
                },
            ],
        };
        insta::assert_snapshot!(c.svg().replace("><", ">\n<"));
    }

    #[test]
    fn an_empty_chart_still_has_axes() {
        let mut c = chart(vec![], vec!["all"]);
        c.bars.clear();
        let svg = c.svg();
        assert!(svg.contains("Time (UTC)"));
        assert_eq!(svg.matches("<rect").count(), 0);
    }

    #[test]
    fn hourly_ticks_follow_local_hours() {
        let tz = TimeZone::get("Asia/Kolkata").unwrap();
        let c = Chart {
            hourly: true,
            tz,
            from: UnixMs(0),
            to: UnixMs(3 * 3_600_000),
            ..chart(vec![], vec!["all"])
        };
        // Kolkata is UTC+05:30: local hours start at :30 UTC.
        let ticks = c.ticks();
        assert_eq!(ticks.len(), 3, "{ticks:?}");
        assert_eq!(ticks[0], UnixMs(1_800_000));
    }
}
