//! The PostgreSQL baseline, through the `psql` CLI on `127.0.0.1:5432` (user `postgres`, trust
//! auth): a fresh database `tollgate_bench_<pid>` per run, dropped afterwards.
//!
//! Ingest: `\copy` of the CSV into a normal (logged) staging table, then `INSERT ... SELECT ...
//! ON CONFLICT (source, id) DO NOTHING` into `events` whose primary key is (`source`, `id`) and
//! which has no other index. The rate is lines / (COPY + INSERT), timed by psql's `\timing`.
//! Peak RSS is the backend's `VmHWM` at the end of the load (read by the backend itself; it
//! includes the shared buffers it touched). Bytes on disk: `pg_total_relation_size('events')`.
//! Queries run in one psql session per kind with `\timing`, results sent to `/dev/null`.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};

use super::sql::{self, Sql};
use super::{
    BASELINE_CUSTOMER_BUDGET, BASELINE_CUSTOMER_QUERIES, Bench, Measure, QUERY_REPEATS, SEED,
    SplitMix64, exact, ms,
};

/// Queries used to estimate how many customer queries fit in the budget.
const ESTIMATE_QUERIES: usize = 5;

pub struct Postgres {
    /// `server_version`.
    pub version: String,
    db: String,
}

/// `psql` on the bench's server, quiet, stopping at the first error, without ~/.psqlrc.
fn psql(db: &str) -> Command {
    let mut cmd = Command::new("psql");
    cmd.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
        .args(["-h", "127.0.0.1", "-p", "5432", "-U", "postgres", "-d", db])
        .env("PGDATESTYLE", "ISO")
        .env("PGTZ", "UTC")
        .env_remove("PGPASSWORD")
        .env_remove("PGSERVICE");
    cmd
}

/// Rows of an unaligned (`-A -t`, `|`-separated) answer.
fn rows(stdout: &[u8]) -> Vec<Vec<String>> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| l.split('|').map(str::to_owned).collect())
        .collect()
}

/// The milliseconds of every `Time: 12.345 ms` line `\timing` printed, in order.
fn timings(stdout: &[u8]) -> anyhow::Result<Vec<f64>> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("Time: "))
        .map(|rest| {
            let number = rest.split_whitespace().next().unwrap_or("");
            number
                .parse::<f64>()
                .with_context(|| format!("psql timing {rest:?}"))
        })
        .collect()
}

impl Postgres {
    /// Fails loudly when the server is not there: the baseline never skips.
    pub fn connect() -> anyhow::Result<Postgres> {
        let mut cmd = psql("postgres");
        cmd.args(["-c", "SHOW server_version"]);
        let out = super::run_with_timeout(&mut cmd, Duration::from_secs(30))
            .context("running psql (the PostgreSQL baseline needs the psql CLI)")?;
        if !out.status.success() {
            bail!(
                "PostgreSQL on 127.0.0.1:5432 (user postgres) is not reachable, and the baseline \
                 needs it; start it, or leave the baseline out with --only: {}",
                super::describe(&out)
            );
        }
        let version = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap_or("?")
            .to_owned();
        Ok(Postgres {
            version,
            db: format!("tollgate_bench_{}", std::process::id()),
        })
    }

    fn admin(&self, statement: &str) -> anyhow::Result<()> {
        let mut cmd = psql("postgres");
        cmd.args(["-c", statement]);
        super::run_checked(&mut cmd, Duration::from_secs(120))?;
        Ok(())
    }

    fn query(&self, statement: &str, limit: Duration) -> anyhow::Result<Vec<Vec<String>>> {
        let mut cmd = psql(&self.db);
        cmd.args(["-c", statement]);
        Ok(rows(&super::run_checked(&mut cmd, limit)?.stdout))
    }

    /// Runs a script in one session; returns its stdout.
    fn script(
        &self,
        bench: &Bench,
        name: &str,
        text: &str,
        limit: Duration,
    ) -> anyhow::Result<Vec<u8>> {
        let path = bench.work.join(format!("{name}.sql"));
        std::fs::write(&path, text)?;
        let mut cmd = psql(&self.db);
        cmd.arg("-f").arg(&path);
        Ok(super::run_checked(&mut cmd, limit)?.stdout)
    }

    /// One run: a fresh database, load, queries, exactness; the database is dropped at the end.
    pub fn run(&self, bench: &Bench, differences: &mut Vec<String>) -> anyhow::Result<Measure> {
        self.admin(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.db))?;
        self.admin(&format!("CREATE DATABASE {}", self.db))?;
        let measured = self.measure(bench, differences);
        let dropped = self.admin(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.db));
        let m = measured?;
        dropped?;
        Ok(m)
    }

    fn measure(&self, bench: &Bench, differences: &mut Vec<String>) -> anyhow::Result<Measure> {
        let data = &bench.data;
        let columns = "specversion text, id text, source text, type text, subject text, \
                       time timestamptz, bytes_in bigint, bytes_out bigint, session_id text, \
                       dest_host text, status integer, client_ip text";
        self.query(
            &format!(
                "CREATE TABLE staging ({columns}); \
                 CREATE TABLE events ({columns}, PRIMARY KEY (source, id))"
            ),
            Duration::from_secs(60),
        )?;
        let csv = data
            .csv
            .to_str()
            .context("the CSV path is not UTF-8")?
            .replace('\'', "''");
        eprintln!("bench: PostgreSQL \\copy + INSERT ... ON CONFLICT DO NOTHING");
        let load = format!(
            "\\timing on\n\
             \\copy staging FROM '{csv}' WITH (FORMAT csv, HEADER true)\n\
             INSERT INTO events SELECT * FROM staging ON CONFLICT (source, id) DO NOTHING;\n\
             \\timing off\n\
             SELECT 'vmhwm_kb=' || substring(pg_read_file('/proc/self/status') from 'VmHWM:\\s*(\\d+) kB');\n"
        );
        let out = self.script(bench, "pg-load", &load, bench.budget(300, 2_000))?;
        let load_ms: f64 = timings(&out)?.iter().sum();
        let rss_kb: u64 = String::from_utf8_lossy(&out)
            .lines()
            .find_map(|l| l.strip_prefix("vmhwm_kb="))
            .and_then(|v| v.trim().parse().ok())
            .context("no VmHWM of the PostgreSQL backend")?;
        let events_per_s = data.expected.lines_total as f64 / (load_ms / 1_000.0);
        eprintln!("  {events_per_s:.0} events/s ({load_ms:.0} ms)");
        // Not measured: statistics for the planner, and the staging table is not kept.
        self.query(
            "DROP TABLE staging; ANALYZE events",
            bench.budget(120, 20_000),
        )?;
        let disk_bytes: u64 = self
            .query(
                "SELECT pg_total_relation_size('events')",
                Duration::from_secs(60),
            )?
            .first()
            .and_then(|r| r.first())
            .and_then(|v| v.parse().ok())
            .context("pg_total_relation_size")?;

        let sql = Sql::postgres(data);
        let mut m = Measure {
            events_per_s: Some(events_per_s),
            peak_rss_bytes: Some(rss_kb * 1024),
            disk_bytes: Some(disk_bytes),
            ..Measure::default()
        };
        self.customer_queries(bench, &sql, &mut m)?;
        let mut whole = String::from("\\o /dev/null\n\\timing on\n");
        for q in [sql.all_cells(), sql.sessions(), sql.totals()] {
            for _ in 0..QUERY_REPEATS {
                whole.push_str(&q);
                whole.push_str(";\n");
            }
        }
        let out = self.script(bench, "pg-whole", &whole, bench.budget(300, 5_000))?;
        let t = timings(&out)?;
        if t.len() != 3 * QUERY_REPEATS {
            bail!(
                "psql printed {} timings, not {}",
                t.len(),
                3 * QUERY_REPEATS
            );
        }
        let mut chunks = t.chunks(QUERY_REPEATS).map(super::median);
        m.all_cells_ms = chunks.next().flatten();
        m.sessions_ms = chunks.next().flatten();
        m.totals_ms = chunks.next().flatten();

        let limit = bench.budget(120, 5_000);
        let figures = sql::figures(
            &self.query(sql.check_customers(), limit)?,
            &self.query(&sql.check_cells(), limit)?,
            &self.query(sql.check_totals(), limit)?,
        )?;
        m.exact = Some(exact::verdict("PostgreSQL", data, &figures, differences)?);
        Ok(m)
    }

    /// One customer's month by day for random customers, in one session: as many of
    /// [`BASELINE_CUSTOMER_QUERIES`] as fit in [`BASELINE_CUSTOMER_BUDGET`] (each query scans
    /// the table: there is no index on the customer).
    fn customer_queries(&self, bench: &Bench, sql: &Sql, m: &mut Measure) -> anyhow::Result<()> {
        let mut rng = SplitMix64(SEED);
        let customers = rng.pick(&bench.data.customers, BASELINE_CUSTOMER_QUERIES);
        let script = |list: &[&str]| -> anyhow::Result<String> {
            let mut s = String::from("\\o /dev/null\n\\timing on\n");
            for c in list {
                s.push_str(&sql.customer_by_day(c)?);
                s.push_str(";\n");
            }
            Ok(s)
        };
        let first = customers.get(..ESTIMATE_QUERIES).unwrap_or(&customers);
        let out = self.script(
            bench,
            "pg-estimate",
            &script(first)?,
            bench.budget(120, 5_000),
        )?;
        let estimate = timings(&out)?;
        let mean_ms = estimate.iter().sum::<f64>() / estimate.len().max(1) as f64;
        let fits = super::floor_count(ms(BASELINE_CUSTOMER_BUDGET) / mean_ms.max(0.001));
        let count = fits.clamp(ESTIMATE_QUERIES, customers.len().max(ESTIMATE_QUERIES));
        let list = customers.get(..count).unwrap_or(&customers);
        eprintln!(
            "  one customer by day: {count} customers (~{mean_ms:.1} ms each, budget {} s)",
            BASELINE_CUSTOMER_BUDGET.as_secs()
        );
        let out = self.script(
            bench,
            "pg-customers",
            &script(list)?,
            BASELINE_CUSTOMER_BUDGET * 4 + Duration::from_secs(60),
        )?;
        let mut t = timings(&out)?;
        t.sort_by(f64::total_cmp);
        m.customer_p50_ms = super::percentile(&t, 0.50);
        m.customer_p99_ms = super::percentile(&t, 0.99);
        m.customer_queries = Some(t.len());
        Ok(())
    }
}
