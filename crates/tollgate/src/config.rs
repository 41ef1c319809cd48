//! Settings: command-line flags over the config file over defaults.
//!
//! The config file is `--config PATH`, or `tollgate.toml` in the data directory when present:
//!
//! ```toml
//! acceptance_window = "90d"   # how old an event may be (and how long dedup remembers it)
//! listen = "127.0.0.1:8080"
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
