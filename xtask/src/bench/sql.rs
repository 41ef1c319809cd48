//! The baselines' SQL: the bench's queries and the exactness queries, written once for both
//! engines (they differ only in how a UTC day and an instant are written), and the answers of
//! the exactness queries turned into [`Figures`].
//!
//! Both tables hold the generator's CSV columns: `specversion, id, source, type, subject, time,
//! bytes_in, bytes_out, session_id, dest_host, status, client_ip`.

use anyhow::{Context, bail};

use super::data::Dataset;
use super::exact::{Cell, Customer, Figures};

pub struct Sql {
    /// The UTC day of `time`, printed as `YYYY-MM-DD`.
    day: &'static str,
    /// The span's bounds as SQL literals comparable with `time`.
    from: String,
    to: String,
}

impl Sql {
    /// PostgreSQL: `time timestamptz`; psql prints a date as `YYYY-MM-DD` (DateStyle ISO).
    pub fn postgres(data: &Dataset) -> Sql {
        Sql {
            day: "(time AT TIME ZONE 'UTC')::date",
            from: format!("'{}'", data.from),
            to: format!("'{}'", data.to),
        }
    }

    /// SQLite: `time` is the generator's text (`2026-11-01T00:00:00.000Z`), ordered as text.
    pub fn sqlite(data: &Dataset) -> Sql {
        let text = |t: &str| format!("'{}.000Z'", t.trim_end_matches('Z'));
        Sql {
            day: "substr(time, 1, 10)",
            from: text(&data.from),
            to: text(&data.to),
        }
    }

    /// One customer's month by day (`bytes_out`).
    pub fn customer_by_day(&self, customer: &str) -> anyhow::Result<String> {
        if !customer
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            bail!("unexpected customer key {customer:?}");
        }
        Ok(format!(
            "SELECT {day} AS day, sum(bytes_out) FROM events WHERE subject = '{customer}' \
             AND time >= {from} AND time < {to} GROUP BY 1 ORDER BY 1",
            day = self.day,
            from = self.from,
            to = self.to
        ))
    }

    /// Every customer × day (`bytes_out`).
    pub fn all_cells(&self) -> String {
        format!(
            "SELECT subject, {day} AS day, sum(bytes_out) FROM events \
             WHERE time >= {from} AND time < {to} GROUP BY 1, 2",
            day = self.day,
            from = self.from,
            to = self.to
        )
    }

    /// Unique sessions per customer.
    pub fn sessions(&self) -> String {
        format!(
            "SELECT subject, count(DISTINCT session_id) FROM events \
             WHERE time >= {from} AND time < {to} GROUP BY 1",
            from = self.from,
            to = self.to
        )
    }

    /// The grand total of `bytes_in`.
    pub fn totals(&self) -> String {
        format!(
            "SELECT sum(bytes_in) FROM events WHERE time >= {from} AND time < {to}",
            from = self.from,
            to = self.to
        )
    }

    /// Exactness: per customer bytes (in + out), unique sessions, events.
    pub fn check_customers(&self) -> &'static str {
        "SELECT subject, sum(bytes_in + bytes_out), count(DISTINCT session_id), count(*) \
         FROM events GROUP BY 1"
    }

    /// Exactness: per customer and UTC day bytes (in + out) and events.
    pub fn check_cells(&self) -> String {
        format!(
            "SELECT subject, {day}, sum(bytes_in + bytes_out), count(*) FROM events GROUP BY 1, 2",
            day = self.day
        )
    }

    /// Exactness: totals.
    pub fn check_totals(&self) -> &'static str {
        "SELECT sum(bytes_in), sum(bytes_out), count(DISTINCT session_id), count(*) FROM events"
    }
}

/// The exactness queries' rows (text cells) as [`Figures`].
pub fn figures(
    customers: &[Vec<String>],
    cells: &[Vec<String>],
    totals: &[Vec<String>],
) -> anyhow::Result<Figures> {
    let num = |row: &[String], i: usize| -> anyhow::Result<u128> {
        let text = row.get(i).with_context(|| format!("short row {row:?}"))?;
        text.parse()
            .with_context(|| format!("not an integer: {text:?} in {row:?}"))
    };
    let text = |row: &[String], i: usize| -> anyhow::Result<String> {
        row.get(i)
            .cloned()
            .with_context(|| format!("short row {row:?}"))
    };
    let mut f = Figures::default();
    for row in customers {
        let c = Customer {
            bytes: num(row, 1)?,
            unique_sessions: num(row, 2)?,
            events: num(row, 3)?,
        };
        if f.customers.insert(text(row, 0)?, c).is_some() {
            bail!("two rows for one customer: {row:?}");
        }
    }
    for row in cells {
        let cell = Cell {
            bytes: num(row, 2)?,
            events: num(row, 3)?,
        };
        if f.cells
            .insert((text(row, 0)?, text(row, 1)?), cell)
            .is_some()
        {
            bail!("two rows for one cell: {row:?}");
        }
    }
    let [row] = totals else {
        bail!("the totals query answered {} rows", totals.len());
    };
    f.bytes_in = num(row, 0)?;
    f.bytes_out = num(row, 1)?;
    f.unique_sessions = num(row, 2)?;
    f.events = num(row, 3)?;
    Ok(f)
}
