//! The SQLite baseline through rusqlite (SQLite in-process, no server): a fresh file per run,
//! `journal_mode=WAL`, `synchronous=FULL`, a table with `UNIQUE(source, id)` and no other
//! index, loaded from the CSV with `INSERT OR IGNORE` in transactions of 10,000 rows.
//!
//! It runs in a child process, `target/release/xtask bench-sqlite`: an optimized build (the
//! `cargo xtask` binary is a debug build, which would slow SQLite and the CSV reader down), and
//! a process of its own, so its peak RSS is SQLite's and not the bench's. The child prints one
//! JSON object with its figures and differences.
//!
//! The rate is lines / (open + create + reading the CSV + inserting + committing). Peak RSS is
//! the child's `VmHWM` right after the load. Bytes on disk: the database's files once closed.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Args;
use rusqlite::Connection;
use serde::{Deserialize, Serialize};

use super::data::Dataset;
use super::sql::{self, Sql};
use super::{
    BASELINE_CUSTOMER_BUDGET, BASELINE_CUSTOMER_QUERIES, Bench, Measure, QUERY_REPEATS, SEED,
    SplitMix64, exact,
};

/// Rows per transaction of the load.
const ROWS_PER_TRANSACTION: usize = 10_000;

pub fn version() -> String {
    rusqlite::version().to_owned()
}

/// Arguments of the child (`xtask bench-sqlite`).
#[derive(Debug, Args)]
pub struct ChildArgs {
    /// The generated data set (holding events.csv and expected.json).
    #[arg(long)]
    pub data: PathBuf,
    /// The database file to create (its directory must be empty).
    #[arg(long)]
    pub db: PathBuf,
}

/// What the child prints.
#[derive(Debug, Serialize, Deserialize)]
struct ChildReport {
    measure: Measure,
    differences: Vec<String>,
}

/// The parent's side: runs the child and reads its report.
pub fn run(bench: &Bench, run: usize, differences: &mut Vec<String>) -> anyhow::Result<Measure> {
    let dir = bench.work.join(format!("sqlite-{run}"));
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    eprintln!("bench: SQLite INSERT OR IGNORE (run {run})");
    let mut cmd = std::process::Command::new(bench.root.join("target/release/xtask"));
    cmd.arg("bench-sqlite")
        .arg("--data")
        .arg(&bench.data.dir)
        .arg("--db")
        .arg(dir.join("events.db"))
        .stdin(std::process::Stdio::null());
    let out = super::run_with_timeout(&mut cmd, bench.budget(300, 1_000))?;
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        bail!("the SQLite baseline failed: {}", super::describe(&out));
    }
    let report: ChildReport =
        serde_json::from_slice(&out.stdout).context("parsing the SQLite child's report")?;
    differences.extend(report.differences);
    std::fs::remove_dir_all(&dir)?;
    Ok(report.measure)
}

/// The child's side: load, measure, query, check; prints a [`ChildReport`].
pub fn child(args: &ChildArgs) -> anyhow::Result<()> {
    let data = Dataset::open(&args.data)?;
    let data = &data;
    let path = &args.db;
    let dir = path.parent().context("the database file's directory")?;
    let mut differences = Vec::new();
    let started = Instant::now();
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch(
        "CREATE TABLE events (specversion TEXT, id TEXT, source TEXT, type TEXT, subject TEXT, \
         time TEXT, bytes_in INTEGER, bytes_out INTEGER, session_id TEXT, dest_host TEXT, \
         status INTEGER, client_ip TEXT, UNIQUE (source, id))",
    )?;
    let lines = load(&conn, &data.csv)?;
    let load_secs = started.elapsed().as_secs_f64();
    let peak_rss = super::peak_rss_of(std::process::id())?;
    if lines != data.expected.lines_total {
        bail!(
            "the CSV holds {lines} rows, expected.json says {}",
            data.expected.lines_total
        );
    }
    let events_per_s = lines as f64 / load_secs;
    eprintln!("  {events_per_s:.0} events/s ({load_secs:.1} s)");

    let sql = Sql::sqlite(data);
    let mut m = Measure {
        events_per_s: Some(events_per_s),
        peak_rss_bytes: Some(peak_rss),
        ..Measure::default()
    };
    // One customer's month by day: each query scans the table (no index on the customer), so
    // as many customers as fit in the budget.
    let mut rng = SplitMix64(SEED);
    let customers = rng.pick(&data.customers, BASELINE_CUSTOMER_QUERIES);
    let budget_started = Instant::now();
    let mut times = Vec::new();
    for c in customers {
        if budget_started.elapsed() > BASELINE_CUSTOMER_BUDGET {
            break;
        }
        times.push(time_query(&conn, &sql.customer_by_day(c)?)?);
    }
    times.sort_by(f64::total_cmp);
    eprintln!("  one customer by day: {} customers", times.len());
    m.customer_p50_ms = super::percentile(&times, 0.50);
    m.customer_p99_ms = super::percentile(&times, 0.99);
    m.customer_queries = Some(times.len());
    let repeat = |q: &str| -> anyhow::Result<Option<f64>> {
        let mut t = Vec::with_capacity(QUERY_REPEATS);
        for _ in 0..QUERY_REPEATS {
            t.push(time_query(&conn, q)?);
        }
        Ok(super::median(&t))
    };
    m.all_cells_ms = repeat(&sql.all_cells())?;
    m.sessions_ms = repeat(&sql.sessions())?;
    m.totals_ms = repeat(&sql.totals())?;

    let figures = sql::figures(
        &text_rows(&conn, sql.check_customers())?,
        &text_rows(&conn, &sql.check_cells())?,
        &text_rows(&conn, sql.check_totals())?,
    )?;
    m.exact = Some(exact::verdict("SQLite", data, &figures, &mut differences)?);
    conn.close().map_err(|(_, e)| e)?;
    m.disk_bytes = Some(super::dir_bytes(dir)?);
    let report = ChildReport {
        measure: m,
        differences,
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// Loads the CSV; returns the rows read.
fn load(conn: &Connection, csv_path: &Path) -> anyhow::Result<u64> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_path(csv_path)
        .with_context(|| format!("opening {}", csv_path.display()))?;
    let mut insert = conn.prepare(
        "INSERT OR IGNORE INTO events VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )?;
    let mut record = csv::StringRecord::new();
    let mut rows = 0u64;
    let mut in_transaction = 0usize;
    conn.execute_batch("BEGIN")?;
    while reader.read_record(&mut record)? {
        if record.len() != 12 {
            bail!("CSV row {} has {} fields", rows + 2, record.len());
        }
        let int = |i: usize| -> anyhow::Result<i64> {
            record[i]
                .parse()
                .with_context(|| format!("CSV row {}: column {i} is not an integer", rows + 2))
        };
        insert.execute(rusqlite::params![
            &record[0],
            &record[1],
            &record[2],
            &record[3],
            &record[4],
            &record[5],
            int(6)?,
            int(7)?,
            &record[8],
            &record[9],
            int(10)?,
            &record[11],
        ])?;
        rows += 1;
        in_transaction += 1;
        if in_transaction == ROWS_PER_TRANSACTION {
            conn.execute_batch("COMMIT; BEGIN")?;
            in_transaction = 0;
        }
    }
    conn.execute_batch("COMMIT")?;
    Ok(rows)
}

/// Runs a query to its last row; milliseconds.
fn time_query(conn: &Connection, q: &str) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut stmt = conn.prepare(q)?;
    let mut rows = stmt.query([])?;
    let mut n = 0u64;
    while rows.next()?.is_some() {
        n += 1;
    }
    std::hint::black_box(n);
    Ok(super::ms(started.elapsed()))
}

/// Every row of a query, each value as text.
fn text_rows(conn: &Connection, q: &str) -> anyhow::Result<Vec<Vec<String>>> {
    let mut stmt = conn.prepare(q)?;
    let columns = stmt.column_count();
    let mut rows = stmt.query([])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let mut cells = Vec::with_capacity(columns);
        for i in 0..columns {
            let v: rusqlite::types::Value = row.get(i)?;
            cells.push(match v {
                rusqlite::types::Value::Integer(n) => n.to_string(),
                rusqlite::types::Value::Text(t) => t,
                other => bail!("unexpected value {other:?} in {q}"),
            });
        }
        out.push(cells);
    }
    Ok(out)
}
