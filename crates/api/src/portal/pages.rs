//! The portal's page handlers. Each page has a CSV twin (`?format=csv`) built from the same
//! view rows, so a download holds exactly what the page shows, with exact numbers.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use jiff::civil::Date;
use jiff::tz::TimeZone;
use rust_decimal::Decimal;
use tollgate_core::billing::Period;
use tollgate_core::invoice::{InvoiceDraft, Line, LineKind};
use tollgate_core::limits::{PORTAL_CHART_SERIES_MAX, PORTAL_CHART_WINDOWS_MAX};
use tollgate_core::meter::MeterSlug;
use tollgate_core::money::Currency;
use tollgate_core::time::{MINUTE_MS, UnixMs};
use tollgate_core::usage::{UsageQuery, WindowSize};
use tollgate_store::billing::run;

use super::PageError;
use super::chart::{Bar, Chart};
use super::scope::PortalCustomer;
use super::units::{Unit, local_day, local_minute, money};
use crate::ApiError;
use crate::convert::time_text;
use crate::routes::{blocking, query_params};

/// Most events one drill-down page lists.
pub const PORTAL_EVENTS_PER_PAGE: usize = 50;

type Params = std::collections::BTreeMap<String, String>;

/// A chart series: its name and its total.
type Series = (String, Decimal);

/// HTML or CSV.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Html,
    Csv,
}

fn format_of(params: &Params) -> Result<Format, ApiError> {
    match params.get("format").map(String::as_str) {
        None | Some("html") => Ok(Format::Html),
        Some("csv") => Ok(Format::Csv),
        Some(_) => Err(ApiError::bad_request(
            "invalid_format",
            "format is html or csv",
        )),
    }
}

/// Headers every portal answer carries: the link is a credential, so it must not leak to
/// other sites through `Referer`, nor be kept by shared caches.
fn private(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    response
}

fn html(page: &impl Template) -> Result<Response, ApiError> {
    let body = page.render().map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "render_failed",
            e.to_string(),
        )
    })?;
    Ok(private(
        ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response(),
    ))
}

/// A CSV document (RFC 4180, header row first).
pub(crate) fn csv_text(header: &[&str], rows: &[Vec<String>]) -> Result<String, ApiError> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let fail =
        |e: csv::Error| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string());
    w.write_record(header).map_err(fail)?;
    for r in rows {
        w.write_record(r).map_err(fail)?;
    }
    let bytes = w
        .into_inner()
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    String::from_utf8(bytes)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))
}

fn csv(file: &str, header: &[&str], rows: &[Vec<String>]) -> Result<Response, ApiError> {
    let text = csv_text(header, rows)?;
    let disposition = format!("attachment; filename=\"{file}.csv\"");
    let mut response = ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], text).into_response();
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        response
            .headers_mut()
            .insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(private(response))
}

/// The navigation every page shares.
pub(crate) struct Nav {
    pub base: String,
    pub customer_name: String,
    pub customer_key: String,
    pub time_zone: String,
    pub expires: String,
    pub active: &'static str,
}

impl Nav {
    fn new(who: &PortalCustomer, active: &'static str) -> Nav {
        let tz = who.customer().time_zone.tz();
        Nav {
            base: who.base(),
            customer_name: who.customer().name.clone(),
            customer_key: who.key().to_string(),
            time_zone: who.customer().time_zone.name().to_owned(),
            expires: local_minute(who.expires(), tz),
            active,
        }
    }
}

fn ceil_minute(t: UnixMs) -> UnixMs {
    UnixMs((t.0 + MINUTE_MS - 1).div_euclid(MINUTE_MS) * MINUTE_MS)
}

fn unit_of(st: &crate::AppState, slug: &MeterSlug) -> Unit {
    st.engine
        .meter(slug)
        .map_or(Unit::Count, |m| Unit::of(&m.meter))
}

/// `2026-11-01 – 2026-11-30` (the end is exclusive; the last day shown is the one before).
fn span_text(p: &Period, tz: &TimeZone) -> String {
    format!(
        "{} – {}",
        local_day(p.start, tz),
        local_day(UnixMs(p.end.0 - 1), tz)
    )
}

// ---------------------------------------------------------------------------------------------
// Overview

pub(crate) struct MeterUsageRow {
    pub meter: String,
    pub shown: String,
    pub exact: String,
}

pub(crate) struct ChargeRow {
    pub description: String,
    pub meter: String,
    pub quantity_shown: String,
    pub quantity: String,
    pub amount_shown: String,
    pub amount_minor: i64,
    pub forecast_quantity_shown: String,
    pub forecast_quantity: String,
    pub forecast_shown: String,
    pub forecast_minor: i64,
}

pub(crate) struct Totals {
    pub subtotal: String,
    pub subtotal_minor: i64,
    pub tax: String,
    pub tax_minor: i64,
    pub total: String,
    pub total_minor: i64,
}

impl Totals {
    fn of(d: &InvoiceDraft) -> Totals {
        Totals {
            subtotal: money(d.currency, d.subtotal_minor),
            subtotal_minor: d.subtotal_minor,
            tax: money(d.currency, d.tax_minor),
            tax_minor: d.tax_minor,
            total: money(d.currency, d.total_minor),
            total_minor: d.total_minor,
        }
    }
}

#[derive(Template)]
#[template(path = "portal/overview.html")]
pub(crate) struct OverviewPage {
    pub nav: Nav,
    pub title: String,
    pub as_of: String,
    pub period: String,
    pub elapsed_percent: String,
    pub currency: String,
    pub usage: Vec<MeterUsageRow>,
    pub has_subscription: bool,
    pub charges: Vec<ChargeRow>,
    pub to_date: Option<Totals>,
    pub forecast: Option<Totals>,
    pub credit: String,
    pub credit_minor: i64,
    /// Features with a limit, and how much of each is left.
    pub limits: Vec<LimitRow>,
    /// Sessions open now (the session gauge).
    pub sessions_now: u64,
}

/// One limited feature on the overview.
pub(crate) struct LimitRow {
    pub feature: String,
    /// What counts against it: a meter, or "concurrent sessions".
    pub measured: String,
    pub used_shown: String,
    pub limit_shown: String,
    pub remaining_shown: String,
    /// Exact decimals, for the CSV and the browser test.
    pub used: String,
    pub limit: String,
    pub remaining: String,
    /// When it starts counting again (local time), empty for sessions.
    pub resets: String,
    /// `hard` or `soft`.
    pub enforcement: &'static str,
    /// Whether a check of 0 is allowed now.
    pub allowed: bool,
    /// Whether the limit is reached.
    pub reached: bool,
}

fn limit_rows(
    st: &crate::AppState,
    who: &PortalCustomer,
    now: UnixMs,
    tz: &TimeZone,
) -> Result<Vec<LimitRow>, ApiError> {
    use tollgate_core::entitlement::{Enforcement, Grant};
    let standings = st
        .checker
        .standings(&st.engine, &st.billing, who.key(), now)?;
    let mut rows = Vec::new();
    for s in standings {
        let (measured, unit, enforcement) = match &s.grant {
            Grant::Metered {
                meter, enforcement, ..
            } => (meter.to_string(), unit_of(st, meter), *enforcement),
            Grant::ConcurrentSessions { enforcement, .. } => {
                ("concurrent sessions".to_owned(), Unit::Count, *enforcement)
            }
            Grant::Boolean { .. } | Grant::Static { .. } => continue,
        };
        let d = &s.decision;
        let (used, limit, remaining) = (
            d.used.unwrap_or_default(),
            d.limit.unwrap_or_default(),
            d.remaining.unwrap_or_default(),
        );
        rows.push(LimitRow {
            feature: s.feature.to_string(),
            measured,
            used_shown: unit.format(used),
            limit_shown: unit.format(limit),
            remaining_shown: unit.format(remaining),
            used: used.to_string(),
            limit: limit.to_string(),
            remaining: remaining.to_string(),
            resets: d.period.map_or(String::new(), |p| local_minute(p.end, tz)),
            enforcement: match enforcement {
                Enforcement::Hard => "hard",
                Enforcement::Soft => "soft",
            },
            allowed: d.allowed,
            reached: used >= limit,
        });
    }
    Ok(rows)
}

fn line_match(a: &Line, b: &Line) -> bool {
    a.kind == b.kind && a.price_key == b.price_key && a.segment == b.segment && a.period == b.period
}

fn overview_view(st: &crate::AppState, who: &PortalCustomer) -> Result<OverviewPage, ApiError> {
    let now = st.engine.now();
    let c = who.customer();
    let tz = c.time_zone.tz();
    let window = st.engine.config().acceptance_window_ms;
    let upcoming = run::upcoming(&st.engine, &st.billing, who.key(), now, window)?;
    let forecast = run::forecast(&st.engine, &st.billing, who.key(), now, window)?;
    let period = match &upcoming {
        Some(d) => d.period,
        None => {
            // No running subscription: the current local calendar month.
            let z = now.to_timestamp().to_zoned(tz.clone());
            let first = z.date().first_of_month();
            let start = first.to_zoned(tz.clone()).map_err(internal)?;
            let end = first
                .checked_add(jiff::Span::new().months(1))
                .and_then(|d| d.to_zoned(tz.clone()))
                .map_err(internal)?;
            Period::new(
                UnixMs::from_timestamp(start.timestamp()),
                UnixMs::from_timestamp(end.timestamp()),
            )
        }
    };
    let subject = who.subject()?;
    let to = ceil_minute(now).min(period.end);
    let mut usage = Vec::new();
    let mut meters = st.engine.meters();
    meters.sort_by(|a, b| a.meter.slug.as_str().cmp(b.meter.slug.as_str()));
    let priced: Vec<&MeterSlug> = upcoming
        .iter()
        .flat_map(|d| d.lines.iter().filter_map(|l| l.meter.as_ref()))
        .collect();
    for m in &meters {
        let used: Decimal = if to > period.start {
            st.engine
                .usage(
                    &m.meter.slug,
                    &UsageQuery {
                        subject: Some(subject.clone()),
                        from: period.start,
                        to,
                        window: None,
                        time_zone: TimeZone::UTC,
                        group_by: Vec::new(),
                    },
                )?
                .iter()
                .map(|r| r.value)
                .sum()
        } else {
            Decimal::ZERO
        };
        if used.is_zero() && !priced.contains(&&m.meter.slug) {
            continue;
        }
        usage.push(MeterUsageRow {
            meter: m.meter.slug.to_string(),
            shown: Unit::of(&m.meter).format(used),
            exact: used.to_string(),
        });
    }
    let mut charges = Vec::new();
    if let Some(d) = &upcoming {
        for l in &d.lines {
            let f = forecast
                .as_ref()
                .and_then(|f| f.lines.iter().find(|x| line_match(x, l)));
            let unit = l.meter.as_ref().map_or(Unit::Count, |m| unit_of(st, m));
            let (fq, fa) = f.map_or((l.quantity, l.amount_minor), |f| {
                (f.quantity, f.amount_minor)
            });
            charges.push(ChargeRow {
                description: match l.kind {
                    LineKind::Charge => l.description.clone(),
                    LineKind::Adjustment => format!(
                        "Adjustment: {} for {}",
                        l.description,
                        span_text(&l.period, tz)
                    ),
                },
                meter: l.meter.as_ref().map_or(String::new(), |m| m.to_string()),
                quantity_shown: if l.meter.is_some() {
                    unit.format(l.quantity)
                } else {
                    String::new()
                },
                quantity: l.quantity.to_string(),
                amount_shown: money(d.currency, l.amount_minor),
                amount_minor: l.amount_minor,
                forecast_quantity_shown: if l.meter.is_some() {
                    unit.format(fq)
                } else {
                    String::new()
                },
                forecast_quantity: fq.to_string(),
                forecast_shown: money(d.currency, fa),
                forecast_minor: fa,
            });
        }
    }
    let balance = st.billing.balance(who.key(), now)?;
    let elapsed = Decimal::from((now.0 - period.start.0).clamp(0, period.end.0 - period.start.0))
        * Decimal::ONE_HUNDRED
        / Decimal::from((period.end.0 - period.start.0).max(1));
    Ok(OverviewPage {
        nav: Nav::new(who, "overview"),
        title: "Overview".into(),
        as_of: local_minute(now, tz),
        period: span_text(&period, tz),
        elapsed_percent: elapsed.round_dp(1).to_string(),
        currency: c.currency.code().to_owned(),
        usage,
        has_subscription: upcoming.is_some(),
        charges,
        to_date: upcoming.as_ref().map(Totals::of),
        forecast: forecast.as_ref().map(Totals::of),
        credit: money(c.currency, balance.available_minor),
        credit_minor: balance.available_minor,
        limits: limit_rows(st, who, now, tz)?,
        sessions_now: st.engine.open_sessions(who.key().as_str(), now),
    })
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
}

/// `GET /portal/{token}`: the current period at a glance.
pub(crate) async fn overview(
    State(state): State<crate::State>,
    who: PortalCustomer,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, PageError> {
    let params = query_params(pairs, &["format"])?;
    let format = format_of(&params)?;
    let st = state.clone();
    let page = blocking(move || overview_view(&st, &who)).await?;
    Ok(match format {
        Format::Html => html(&page)?,
        Format::Csv => {
            let cur = page.currency.clone();
            let mut rows: Vec<Vec<String>> = page
                .usage
                .iter()
                .map(|u| {
                    vec![
                        "usage".into(),
                        u.meter.clone(),
                        u.meter.clone(),
                        u.exact.clone(),
                        String::new(),
                        String::new(),
                        String::new(),
                        cur.clone(),
                    ]
                })
                .collect();
            for c in &page.charges {
                rows.push(vec![
                    "charge".into(),
                    c.description.clone(),
                    c.meter.clone(),
                    c.quantity.clone(),
                    c.amount_minor.to_string(),
                    c.forecast_quantity.clone(),
                    c.forecast_minor.to_string(),
                    cur.clone(),
                ]);
            }
            if let (Some(t), Some(f)) = (&page.to_date, &page.forecast) {
                for (name, a, b) in [
                    ("subtotal", t.subtotal_minor, f.subtotal_minor),
                    ("tax", t.tax_minor, f.tax_minor),
                    ("total", t.total_minor, f.total_minor),
                ] {
                    rows.push(vec![
                        "total".into(),
                        name.into(),
                        String::new(),
                        String::new(),
                        a.to_string(),
                        String::new(),
                        b.to_string(),
                        cur.clone(),
                    ]);
                }
            }
            for l in &page.limits {
                rows.push(vec![
                    "limit".into(),
                    l.feature.clone(),
                    l.measured.clone(),
                    l.used.clone(),
                    String::new(),
                    l.limit.clone(),
                    String::new(),
                    String::new(),
                ]);
            }
            rows.push(vec![
                "sessions".into(),
                "open now".into(),
                String::new(),
                page.sessions_now.to_string(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
            ]);
            rows.push(vec![
                "credit".into(),
                "available prepaid credit".into(),
                String::new(),
                String::new(),
                page.credit_minor.to_string(),
                String::new(),
                String::new(),
                cur.clone(),
            ]);
            csv(
                "overview",
                &[
                    "section",
                    "name",
                    "meter",
                    "quantity",
                    "amount_minor",
                    "forecast_quantity",
                    "forecast_amount_minor",
                    "currency",
                ],
                &rows,
            )?
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Usage

pub(crate) struct Choice {
    pub value: String,
    pub label: String,
    pub selected: bool,
}

pub(crate) struct UsageRowView {
    pub start: String,
    pub end: String,
    pub group: String,
    pub shown: String,
    pub exact: String,
}

pub(crate) struct LegendItem {
    pub colour: &'static str,
    pub name: String,
    pub total: String,
}

#[derive(Template)]
#[template(path = "portal/usage.html")]
pub(crate) struct UsagePage {
    pub nav: Nav,
    pub title: String,
    pub meters: Vec<Choice>,
    pub windows: Vec<Choice>,
    pub groups: Vec<Choice>,
    pub from: String,
    pub to: String,
    pub meter: String,
    pub unit_note: String,
    pub chart: String,
    pub legend: Vec<LegendItem>,
    pub rows: Vec<UsageRowView>,
    pub total: String,
    pub total_exact: String,
    pub csv_link: String,
    pub dimension: String,
}

fn parse_day(name: &str, text: &str) -> Result<Date, ApiError> {
    text.parse::<Date>()
        .map_err(|_| ApiError::bad_request("invalid_date", format!("{name} is a date, YYYY-MM-DD")))
}

fn query_string(pairs: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (k, v) in pairs {
        if v.is_empty() {
            continue;
        }
        out.push(if out.is_empty() { '?' } else { '&' });
        out.push_str(k);
        out.push('=');
        for b in v.bytes() {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                out.push(char::from(b));
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    out
}

fn usage_view(
    st: &crate::AppState,
    who: &PortalCustomer,
    params: &Params,
) -> Result<UsagePage, ApiError> {
    let c = who.customer();
    let tz = c.time_zone.tz();
    let now = st.engine.now();
    let mut meters = st.engine.meters();
    meters.sort_by(|a, b| a.meter.slug.as_str().cmp(b.meter.slug.as_str()));
    let chosen = match params.get("meter") {
        Some(text) => {
            let slug = MeterSlug::parse(text)
                .map_err(|e| ApiError::bad_request(e.code(), e.to_string()))?;
            Some(
                meters
                    .iter()
                    .find(|m| m.meter.slug == slug)
                    .ok_or_else(|| {
                        ApiError::not_found("meter_not_found", format!("no meter `{slug}`"))
                    })?
                    .meter
                    .clone(),
            )
        }
        None => meters.first().map(|m| m.meter.clone()),
    };
    let today = now.to_timestamp().to_zoned(tz.clone()).date();
    let to_day = match params.get("to") {
        Some(t) => parse_day("to", t)?,
        None => today,
    };
    let from_day = match params.get("from") {
        Some(t) => parse_day("from", t)?,
        None => to_day
            .checked_sub(jiff::Span::new().days(6))
            .map_err(internal)?,
    };
    if from_day > to_day {
        return Err(ApiError::bad_request(
            "empty_time_range",
            "from is after to",
        ));
    }
    let hourly = match params.get("window").map(String::as_str) {
        None | Some("day") => false,
        Some("hour") => true,
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_window_size",
                "window is hour or day",
            ));
        }
    };
    let start = from_day.to_zoned(tz.clone()).map_err(internal)?;
    let end = to_day
        .checked_add(jiff::Span::new().days(1))
        .and_then(|d| d.to_zoned(tz.clone()))
        .map_err(internal)?;
    let from = UnixMs::from_timestamp(start.timestamp());
    let to = UnixMs::from_timestamp(end.timestamp());
    let windows = if hourly {
        (to.0 - from.0).div_euclid(3_600_000)
    } else {
        i64::from(to_day.since(from_day).map_err(internal)?.get_days()) + 1
    };
    if windows > PORTAL_CHART_WINDOWS_MAX as i64 {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "portal_chart_windows_max",
            format!(
                "at most {PORTAL_CHART_WINDOWS_MAX} windows in one chart; choose a shorter range or days"
            ),
        ));
    }
    let dimension = params
        .get("group_by")
        .filter(|g| !g.is_empty() && g.as_str() != "none")
        .cloned();
    let meter_choices = meters
        .iter()
        .map(|m| Choice {
            value: m.meter.slug.to_string(),
            label: m
                .meter
                .spec
                .description
                .clone()
                .filter(|d| !d.is_empty())
                .map_or_else(
                    || m.meter.slug.to_string(),
                    |d| format!("{} ({d})", m.meter.slug),
                ),
            selected: chosen.as_ref().is_some_and(|c| c.slug == m.meter.slug),
        })
        .collect();
    let window_choices = [("day", "Day"), ("hour", "Hour")]
        .iter()
        .map(|(v, l)| Choice {
            value: (*v).into(),
            label: (*l).into(),
            selected: (*v == "hour") == hourly,
        })
        .collect();
    let mut page = UsagePage {
        nav: Nav::new(who, "usage"),
        title: "Usage".into(),
        meters: meter_choices,
        windows: window_choices,
        groups: Vec::new(),
        from: from_day.to_string(),
        to: to_day.to_string(),
        meter: String::new(),
        unit_note: String::new(),
        chart: String::new(),
        legend: Vec::new(),
        rows: Vec::new(),
        total: String::new(),
        total_exact: "0".into(),
        csv_link: String::new(),
        dimension: dimension.clone().unwrap_or_default(),
    };
    let Some(meter) = chosen else {
        return Ok(page);
    };
    let dims: Vec<String> = meter.spec.group_by.keys().cloned().collect();
    if let Some(d) = &dimension
        && !dims.contains(d)
    {
        return Err(ApiError::bad_request(
            "unknown_group_by",
            format!("meter {} has no dimension `{d}`", meter.slug),
        ));
    }
    page.groups = std::iter::once(Choice {
        value: "none".into(),
        label: "Nothing (one series)".into(),
        selected: dimension.is_none(),
    })
    .chain(dims.iter().map(|d| Choice {
        value: d.clone(),
        label: d.clone(),
        selected: dimension.as_deref() == Some(d.as_str()),
    }))
    .collect();
    let rows = st.engine.usage(
        &meter.slug,
        &UsageQuery {
            subject: Some(who.subject()?),
            from,
            to,
            window: Some(if hourly {
                WindowSize::Hour
            } else {
                WindowSize::Day
            }),
            time_zone: tz.clone(),
            group_by: dimension.iter().cloned().collect(),
        },
    )?;
    let unit = Unit::of(&meter);
    let label_of = |r: &tollgate_core::usage::UsageRow| -> String {
        match &dimension {
            None => meter.slug.to_string(),
            Some(d) => match r.group.get(d) {
                Some(Some(v)) => v.clone(),
                _ => "(none)".into(),
            },
        }
    };
    // Series: the largest groups by total, the rest summed as "other".
    let mut totals: std::collections::BTreeMap<String, Decimal> = Default::default();
    for r in &rows {
        *totals.entry(label_of(r)).or_default() += r.value;
    }
    let mut ranked: Vec<(String, Decimal)> = totals.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let (mut series, other): (Vec<Series>, Vec<Series>) = if ranked.len() > PORTAL_CHART_SERIES_MAX
    {
        let rest = ranked.split_off(PORTAL_CHART_SERIES_MAX - 1);
        (ranked, rest)
    } else {
        (ranked, Vec::new())
    };
    if !other.is_empty() {
        series.push((
            format!("other ({} groups)", other.len()),
            other.iter().map(|o| o.1).sum(),
        ));
    }
    if series.is_empty() {
        series.push((meter.slug.to_string(), Decimal::ZERO));
    }
    let index_of = |label: &str| -> usize {
        series
            .iter()
            .position(|s| s.0 == label)
            .unwrap_or(series.len() - 1)
    };
    let mut bars: Vec<Bar> = Vec::new();
    for r in &rows {
        let i = index_of(&label_of(r));
        match bars.iter_mut().find(|b| b.start == r.window_start) {
            Some(b) => b.values[i] += r.value,
            None => {
                let mut values = vec![Decimal::ZERO; series.len()];
                values[i] = r.value;
                bars.push(Bar {
                    start: r.window_start,
                    end: r.window_end,
                    values,
                });
            }
        }
    }
    let total: Decimal = rows.iter().map(|r| r.value).sum();
    let quantity = meter
        .spec
        .description
        .clone()
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| meter.slug.to_string());
    let chart = Chart {
        title: format!(
            "{} per {} from {} to {}",
            quantity,
            if hourly { "hour" } else { "day" },
            from_day,
            to_day
        ),
        from,
        to,
        tz: tz.clone(),
        hourly,
        unit,
        quantity,
        series: series.iter().map(|s| s.0.clone()).collect(),
        bars,
    };
    page.legend = chart
        .legend()
        .into_iter()
        .zip(series.iter())
        .map(|((colour, name), s)| LegendItem {
            colour,
            name,
            total: unit.format(s.1),
        })
        .collect();
    page.chart = chart.svg();
    page.unit_note = match unit {
        Unit::Bytes => "Bytes are shown in decimal units: 1 kB = 1,000 bytes, 1 MB = 10⁶, 1 GB = 10⁹ bytes. The CSV download has exact byte counts.".into(),
        Unit::Count => "Values are exact counts; the CSV download has the same numbers.".into(),
    };
    page.rows = rows
        .iter()
        .map(|r| UsageRowView {
            start: if hourly {
                local_minute(r.window_start, tz)
            } else {
                local_day(r.window_start, tz)
            },
            end: local_minute(r.window_end, tz),
            group: label_of(r),
            shown: unit.format(r.value),
            exact: r.value.to_string(),
        })
        .collect();
    page.total = unit.format(total);
    page.total_exact = total.to_string();
    page.meter = meter.slug.to_string();
    page.csv_link = format!(
        "{}/usage{}",
        who.base(),
        query_string(&[
            ("meter", meter.slug.as_str()),
            ("from", &page.from),
            ("to", &page.to),
            ("window", if hourly { "hour" } else { "day" }),
            ("group_by", dimension.as_deref().unwrap_or("")),
            ("format", "csv"),
        ])
    );
    Ok(page)
}

/// `GET /portal/{token}/usage`: usage over time per meter, as a chart and a table.
pub(crate) async fn usage(
    State(state): State<crate::State>,
    who: PortalCustomer,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, PageError> {
    let params = query_params(
        pairs,
        &["meter", "from", "to", "window", "group_by", "format"],
    )?;
    let format = format_of(&params)?;
    let st = state.clone();
    let page = blocking(move || usage_view(&st, &who, &params)).await?;
    Ok(match format {
        Format::Html => html(&page)?,
        Format::Csv => {
            let rows: Vec<Vec<String>> = page
                .rows
                .iter()
                .map(|r| {
                    vec![
                        page.meter.clone(),
                        r.start.clone(),
                        r.end.clone(),
                        page.dimension.clone(),
                        r.group.clone(),
                        r.exact.clone(),
                    ]
                })
                .collect();
            csv(
                "usage",
                &[
                    "meter",
                    "window_start_local",
                    "window_end_local",
                    "dimension",
                    "group",
                    "quantity",
                ],
                &rows,
            )?
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Invoices

pub(crate) struct InvoiceRowView {
    pub id: String,
    pub number: String,
    pub status: String,
    pub period: String,
    pub period_start: String,
    pub period_end: String,
    pub currency: String,
    pub subtotal_minor: i64,
    pub tax_minor: i64,
    pub total: String,
    pub total_minor: i64,
    pub credits_minor: i64,
    pub due: String,
    pub due_minor: i64,
}

#[derive(Template)]
#[template(path = "portal/invoices.html")]
pub(crate) struct InvoicesPage {
    pub nav: Nav,
    pub title: String,
    pub rows: Vec<InvoiceRowView>,
}

/// `GET /portal/{token}/invoices`.
pub(crate) async fn invoices(
    State(state): State<crate::State>,
    who: PortalCustomer,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, PageError> {
    let params = query_params(pairs, &["format"])?;
    let format = format_of(&params)?;
    let st = state.clone();
    let page = blocking(move || {
        let tz = who.customer().time_zone.tz().clone();
        let rows = who
            .invoices(&st)?
            .into_iter()
            .map(|inv| {
                let d = &inv.content.draft;
                InvoiceRowView {
                    number: inv.number.clone().unwrap_or_else(|| "Draft".into()),
                    status: inv.status.as_str().to_owned(),
                    period: span_text(&d.period, &tz),
                    period_start: time_text(d.period.start),
                    period_end: time_text(d.period.end),
                    currency: d.currency.code().to_owned(),
                    subtotal_minor: d.subtotal_minor,
                    tax_minor: d.tax_minor,
                    total: money(d.currency, d.total_minor),
                    total_minor: d.total_minor,
                    credits_minor: inv.content.credits_applied_minor,
                    due: money(d.currency, inv.content.amount_due_minor),
                    due_minor: inv.content.amount_due_minor,
                    id: inv.id,
                }
            })
            .collect();
        Ok(InvoicesPage {
            nav: Nav::new(&who, "invoices"),
            title: "Invoices".into(),
            rows,
        })
    })
    .await?;
    Ok(match format {
        Format::Html => html(&page)?,
        Format::Csv => {
            let rows: Vec<Vec<String>> = page
                .rows
                .iter()
                .map(|r| {
                    vec![
                        r.id.clone(),
                        if r.number == "Draft" {
                            String::new()
                        } else {
                            r.number.clone()
                        },
                        r.status.clone(),
                        r.period_start.clone(),
                        r.period_end.clone(),
                        r.currency.clone(),
                        r.subtotal_minor.to_string(),
                        r.tax_minor.to_string(),
                        r.total_minor.to_string(),
                        r.credits_minor.to_string(),
                        r.due_minor.to_string(),
                    ]
                })
                .collect();
            csv(
                "invoices",
                &[
                    "invoice_id",
                    "number",
                    "status",
                    "period_start",
                    "period_end",
                    "currency",
                    "subtotal_minor",
                    "tax_minor",
                    "total_minor",
                    "credits_applied_minor",
                    "amount_due_minor",
                ],
                &rows,
            )?
        }
    })
}

/// An issued credit note as the customer sees it.
pub(crate) struct CreditNoteView {
    pub number: String,
    pub issued: String,
    pub reason: String,
    pub memo: String,
    pub total: String,
    /// Where its money went: "lowered the amount due", "credit balance", "refunded".
    pub settled: String,
}

/// A refund as the customer sees it.
pub(crate) struct RefundView {
    pub created: String,
    pub amount: String,
    pub status: &'static str,
    pub done: String,
}

#[derive(Template)]
#[template(path = "portal/invoice.html")]
pub(crate) struct InvoiceDetailPage {
    pub nav: Nav,
    pub title: String,
    pub inv: crate::render::InvoicePage,
    pub draft_note: bool,
    pub credit_notes: Vec<CreditNoteView>,
    pub refunds: Vec<RefundView>,
}

/// The issued credit notes and the refunds (not canceled ones) of an invoice, for its page.
fn notes_and_refunds(
    st: &crate::AppState,
    inv: &tollgate_store::billing::Invoice,
    tz: &jiff::tz::TimeZone,
) -> Result<(Vec<CreditNoteView>, Vec<RefundView>), ApiError> {
    use tollgate_core::credit_note::CreditStatus;
    use tollgate_core::refund::RefundStatus;
    let currency = inv.content.draft.currency;
    let money = |minor: i64| format!("{} {}", currency.format(minor), currency.code());
    let day = |t: UnixMs| {
        t.to_timestamp()
            .to_zoned(tz.clone())
            .strftime("%Y-%m-%d")
            .to_string()
    };
    let notes =
        st.billing
            .credit_notes(&tollgate_store::billing::credit_notes::CreditNoteFilter {
                invoice: Some(inv.id.clone()),
                status: Some(CreditStatus::Issued),
                limit: tollgate_store::billing::LIST_LIMIT_MAX,
                ..Default::default()
            })?;
    let refunds = st
        .billing
        .refunds(&tollgate_store::billing::refunds::RefundFilter {
            invoice: Some(inv.id.clone()),
            limit: tollgate_store::billing::LIST_LIMIT_MAX,
            ..Default::default()
        })?;
    let notes = notes
        .iter()
        .map(|n| {
            let s = n.settlement.unwrap_or_default();
            let settled: Vec<String> = [
                (s.amount_due_minor, "lowered the amount due"),
                (s.balance_minor, "added to your credit balance"),
                (s.refund_minor, "refunded"),
            ]
            .into_iter()
            .filter(|(m, _)| *m > 0)
            .map(|(m, what)| format!("{} {what}", money(m)))
            .collect();
            CreditNoteView {
                number: n.number.clone().unwrap_or_default(),
                issued: n.issued_ms.map(day).unwrap_or_default(),
                reason: match serde_json::to_value(n.reason) {
                    Ok(serde_json::Value::String(r)) => r.replace('_', " "),
                    _ => String::new(),
                },
                memo: n.memo.clone(),
                total: money(n.content.total_minor),
                settled: settled.join(", "),
            }
        })
        .collect();
    let refunds = refunds
        .iter()
        .filter(|r| r.status != RefundStatus::Canceled)
        .map(|r| RefundView {
            created: day(r.created_ms),
            amount: money(r.amount_minor),
            status: r.status.as_str(),
            done: r.done_ms.map(day).unwrap_or_default(),
        })
        .collect();
    Ok((notes, refunds))
}

/// `GET /portal/{token}/invoices/{id}`.
pub(crate) async fn invoice(
    State(state): State<crate::State>,
    who: PortalCustomer,
    Path((_token, id)): Path<(String, String)>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, PageError> {
    let params = query_params(pairs, &["format"])?;
    let format = format_of(&params)?;
    let st = state.clone();
    let (page, inv) = blocking(move || {
        let inv = who.invoice(&st, &id)?;
        let c = who.customer();
        let mut view =
            crate::render::invoice_page(&inv, &c.name, c.email.as_deref(), c.time_zone.name());
        // Quantities in readable units (the printable invoice keeps the exact numbers).
        for (v, l) in view.lines.iter_mut().zip(&inv.content.draft.lines) {
            if let Some(m) = &l.meter {
                v.quantity = format!("{} ({m})", unit_of(&st, m).format(l.quantity));
            }
        }
        let (credit_notes, refunds) = notes_and_refunds(&st, &inv, c.time_zone.tz())?;
        Ok((
            InvoiceDetailPage {
                nav: Nav::new(&who, "invoices"),
                title: view.title.clone(),
                inv: view,
                draft_note: !inv.status.is_final(),
                credit_notes,
                refunds,
            },
            inv,
        ))
    })
    .await?;
    Ok(match format {
        Format::Html => html(&page)?,
        Format::Csv => {
            let d = &inv.content.draft;
            let cur = d.currency.code().to_owned();
            let mut rows: Vec<Vec<String>> = d
                .lines
                .iter()
                .map(|l| {
                    vec![
                        "line".into(),
                        l.number.to_string(),
                        match l.kind {
                            LineKind::Charge => "charge".into(),
                            LineKind::Adjustment => "adjustment".into(),
                        },
                        l.description.clone(),
                        l.meter.as_ref().map_or(String::new(), |m| m.to_string()),
                        if l.meter.is_some() {
                            l.quantity.to_string()
                        } else {
                            String::new()
                        },
                        time_text(l.segment.start),
                        time_text(l.segment.end),
                        l.amount_minor.to_string(),
                        cur.clone(),
                    ]
                })
                .collect();
            for (name, v) in [
                ("subtotal", d.subtotal_minor),
                ("tax", d.tax_minor),
                ("total", d.total_minor),
                ("credits_applied", inv.content.credits_applied_minor),
                ("amount_due", inv.content.amount_due_minor),
            ] {
                rows.push(vec![
                    "total".into(),
                    String::new(),
                    name.into(),
                    String::new(),
                    String::new(),
                    String::new(),
                    String::new(),
                    String::new(),
                    v.to_string(),
                    cur.clone(),
                ]);
            }
            csv(
                &format!("invoice-{}", inv.number.as_deref().unwrap_or(&inv.id)),
                &[
                    "row",
                    "line",
                    "kind",
                    "description",
                    "meter",
                    "quantity",
                    "start",
                    "end",
                    "amount_minor",
                    "currency",
                ],
                &rows,
            )?
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Why am I charged: one line's windows and events

pub(crate) struct WindowView {
    pub day: String,
    pub start: String,
    pub end: String,
    pub shown: String,
    pub exact: String,
}

pub(crate) struct EventView {
    pub id: String,
    pub time: String,
    pub time_utc: String,
    pub committed: String,
    pub late: bool,
    pub data: String,
}

#[derive(Template)]
#[template(path = "portal/line.html")]
pub(crate) struct LinePage {
    pub nav: Nav,
    pub title: String,
    pub invoice_title: String,
    pub invoice_link: String,
    pub number: u32,
    pub description: String,
    pub meter: String,
    pub period: String,
    pub quantity_shown: String,
    pub quantity: String,
    pub quantity_now_shown: String,
    pub quantity_now: String,
    pub differs: bool,
    pub amount: String,
    pub amount_minor: i64,
    pub notes: Vec<String>,
    pub windows: Vec<WindowView>,
    pub events: Vec<EventView>,
    pub next_link: String,
    pub csv_link: String,
}

fn currency_of(inv: &tollgate_store::billing::Invoice) -> Currency {
    inv.content.draft.currency
}

/// `GET /portal/{token}/invoices/{id}/lines/{line}`.
pub(crate) async fn line(
    State(state): State<crate::State>,
    who: PortalCustomer,
    Path((_token, id, line)): Path<(String, String, u32)>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, PageError> {
    let params = query_params(pairs, &["after", "format"])?;
    let format = format_of(&params)?;
    let after = match params.get("after") {
        None => 0,
        Some(t) => t.parse::<u64>().map_err(|_| {
            ApiError::bad_request("invalid_cursor", "after is a cursor from the previous page")
        })?,
    };
    let st = state.clone();
    let page = blocking(move || {
        let inv = who.invoice(&st, &id)?;
        let explained =
            crate::routes::invoices::explain_line(&st, &inv, line, after, PORTAL_EVENTS_PER_PAGE)?;
        let tz = who.customer().time_zone.tz().clone();
        let l = inv
            .content
            .draft
            .lines
            .iter()
            .find(|l| l.number == line)
            .cloned()
            .ok_or_else(|| ApiError::not_found("invoice_line_not_found", "no such line"))?;
        let unit = l.meter.as_ref().map_or(Unit::Count, |m| unit_of(&st, m));
        let view = crate::render::invoice_page(
            &inv,
            &who.customer().name,
            None,
            who.customer().time_zone.name(),
        );
        let line_view = view.lines.iter().find(|v| v.number == line);
        let quantity_now: Decimal = explained.quantity_now.parse().unwrap_or_default();
        let base = who.base();
        let link = format!("{base}/invoices/{}/lines/{line}", inv.id);
        let parse_time = |t: &str| {
            t.parse::<jiff::Timestamp>()
                .map(UnixMs::from_timestamp)
                .unwrap_or(UnixMs(0))
        };
        let windows = explained
            .windows
            .iter()
            .map(|w| {
                let s = parse_time(&w.start);
                let q: Decimal = w.quantity.parse().unwrap_or_default();
                WindowView {
                    day: local_day(s, &tz),
                    start: w.start.clone(),
                    end: w.end.clone(),
                    shown: unit.format(q),
                    exact: w.quantity.clone(),
                }
            })
            .collect();
        let events = explained
            .events
            .iter()
            .map(|e| {
                let time_utc = e.event["time"].as_str().unwrap_or("").to_owned();
                EventView {
                    id: e.event["id"].as_str().unwrap_or("").to_owned(),
                    time: time_utc
                        .parse::<jiff::Timestamp>()
                        .map(|t| {
                            t.to_zoned(tz.clone())
                                .strftime("%Y-%m-%d %H:%M:%S")
                                .to_string()
                        })
                        .unwrap_or_default(),
                    time_utc,
                    committed: local_minute(parse_time(&e.committed_at), &tz),
                    late: e.late,
                    data: e.event.get("data").map_or(String::new(), |d| d.to_string()),
                }
            })
            .collect();
        Ok(LinePage {
            nav: Nav::new(&who, "invoices"),
            title: format!("Line {line}"),
            invoice_title: view.title.clone(),
            invoice_link: format!("{base}/invoices/{}", inv.id),
            number: line,
            description: line_view.map_or_else(|| l.description.clone(), |v| v.description.clone()),
            meter: l.meter.as_ref().map_or(String::new(), |m| m.to_string()),
            period: span_text(&l.segment, &tz),
            quantity_shown: unit.format(l.quantity),
            quantity: l.quantity.to_string(),
            quantity_now_shown: unit.format(quantity_now),
            quantity_now: quantity_now.to_string(),
            differs: l.meter.is_some() && l.kind == LineKind::Charge && quantity_now != l.quantity,
            amount: money(currency_of(&inv), l.amount_minor),
            amount_minor: l.amount_minor,
            notes: line_view.map_or_else(Vec::new, |v| {
                v.tiers.iter().chain(v.notes.iter()).cloned().collect()
            }),
            windows,
            events,
            next_link: explained
                .next_after
                .map_or(String::new(), |n| format!("{link}?after={n}")),
            csv_link: if after == 0 {
                format!("{link}?format=csv")
            } else {
                format!("{link}?after={after}&format=csv")
            },
        })
    })
    .await?;
    Ok(match format {
        Format::Html => html(&page)?,
        Format::Csv => {
            let mut rows: Vec<Vec<String>> = page
                .windows
                .iter()
                .map(|w| {
                    vec![
                        "window".into(),
                        w.start.clone(),
                        w.end.clone(),
                        w.exact.clone(),
                        String::new(),
                        String::new(),
                        String::new(),
                        String::new(),
                    ]
                })
                .collect();
            for e in &page.events {
                rows.push(vec![
                    "event".into(),
                    String::new(),
                    String::new(),
                    String::new(),
                    e.id.clone(),
                    e.time_utc.clone(),
                    e.late.to_string(),
                    e.data.clone(),
                ]);
            }
            csv(
                &format!("line-{line}"),
                &[
                    "row",
                    "window_start",
                    "window_end",
                    "quantity",
                    "event_id",
                    "event_time",
                    "late",
                    "data",
                ],
                &rows,
            )?
        }
    })
}
