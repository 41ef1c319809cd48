//! Settings: command-line flags over the config file over defaults.
//!
//! The config file is `--config PATH`, or `tollgate.toml` in the data directory when present:
//!
//! ```toml
//! acceptance_window = "90d"   # how old an event may be (and how long dedup remembers it)
//! listen = "127.0.0.1:8080"
//! invoice_grace = "24h"       # late events update a draft invoice this long after its period
//! invoice_every = "60s"       # how often `serve` runs the invoice cycle ("0s": never)
//! enrichment_dbs = ["/var/lib/GeoIP/GeoLite2-Country.mmdb", "/var/lib/GeoIP/GeoLite2-ASN.mmdb"]
//! ```

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Deserialize;
use tollgate_core::limits::{ACCEPTANCE_WINDOW_MS_DEFAULT, ACCEPTANCE_WINDOW_MS_MAX};

/// Name of the config file looked for in the data directory.
pub const CONFIG_FILE: &str = "tollgate.toml";

/// The config file's contents.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// e.g. "35d", "90d", "2160h".
    pub acceptance_window: Option<String>,
    /// Address to listen on.
    pub listen: Option<String>,
    /// Grace period of draft invoices, e.g. "24h".
    pub invoice_grace: Option<String>,
    /// Interval of the invoice scheduler in `serve`, e.g. "60s"; "0s" turns it off.
    pub invoice_every: Option<String>,
    /// MaxMind-format enrichment databases (country, ASN), read by `serve`.
    pub enrichment_dbs: Option<Vec<PathBuf>>,
}

impl FileConfig {
    /// Reads `explicit`, or the data dir's `tollgate.toml` if it exists, or nothing.
    pub fn load(explicit: Option<&Path>, data_dir: &Path) -> anyhow::Result<FileConfig> {
        let path: PathBuf = match explicit {
            Some(p) => p.to_owned(),
            None => {
                let p = data_dir.join(CONFIG_FILE);
                if !p.exists() {
                    return Ok(FileConfig::default());
                }
                p
            }
        };
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("config file {}", path.display()))
    }
}

/// Parses a window such as `35d`, `90d` or `2160h` into milliseconds, within the limits.
pub fn parse_window(text: &str) -> anyhow::Result<i64> {
    let d = humantime::parse_duration(text)
        .with_context(|| format!("acceptance window `{text}` is not a duration like 35d or 90d"))?;
    let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    if ms <= 0 || ms > ACCEPTANCE_WINDOW_MS_MAX {
        bail!("acceptance window must be between 1ms and 3660d");
    }
    Ok(ms)
}

/// The acceptance window in force: flag, then file, then the default.
pub fn acceptance_window_ms(flag: Option<&str>, file: &FileConfig) -> anyhow::Result<i64> {
    match flag.or(file.acceptance_window.as_deref()) {
        Some(text) => parse_window(text),
        None => Ok(ACCEPTANCE_WINDOW_MS_DEFAULT),
    }
}

/// Longest grace period of a draft invoice: 31 days.
pub const INVOICE_GRACE_MS_MAX: i64 = 31 * 24 * 3600 * 1000;

/// A duration setting in milliseconds, within `0..=max`.
fn duration_ms(what: &str, text: &str, max: i64) -> anyhow::Result<i64> {
    let d = humantime::parse_duration(text)
        .with_context(|| format!("{what} `{text}` is not a duration like 24h or 60s"))?;
    let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    if ms > max {
        bail!(
            "{what} must be at most {}",
            humantime::format_duration(std::time::Duration::from_millis(max.unsigned_abs()))
        );
    }
    Ok(ms)
}

/// The invoice grace period in force: flag, then file, then 24 h.
pub fn invoice_grace_ms(flag: Option<&str>, file: &FileConfig) -> anyhow::Result<i64> {
    match flag.or(file.invoice_grace.as_deref()) {
        Some(text) => duration_ms("invoice grace", text, INVOICE_GRACE_MS_MAX),
        None => Ok(tollgate_store::billing::run::GRACE_MS_DEFAULT),
    }
}

/// How often `serve` runs the invoice cycle (ms; 0 = never): flag, then file, then 60 s.
pub fn invoice_every_ms(flag: Option<&str>, file: &FileConfig) -> anyhow::Result<i64> {
    match flag.or(file.invoice_every.as_deref()) {
        Some(text) => duration_ms("invoice interval", text, 24 * 3600 * 1000),
        None => Ok(60_000),
    }
}
