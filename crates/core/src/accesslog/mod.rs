//! Proxy access logs: one line of nginx's or Squid's log in, one CloudEvent out.
//!
//! Owns: the line formats ([`LogFormat`]: nginx `combined`, nginx's extended `tollgate`
//! `log_format` documented below, and Squid's native `access.log`), the parse of one line
//! ([`parse_line`]) and its CloudEvent JSON text ([`AccessRecord::to_event`]) with a
//! deterministic id ([`event_id`]).
//!
//! Does not own: reading files, following rotation, positions (the binary's `import` and
//! `tail`), or who the client was (attribution by address, [`crate::ipmeta::attribution`]):
//! events are written without `subject` and get one from the client address.
//!
//! The nginx extended format (every field of `combined`, then five more):
//!
//! ```text
//! log_format tollgate '$remote_addr - $remote_user [$time_local] "$request" $status '
//!                     '$body_bytes_sent "$http_referer" "$http_user_agent" '
//!                     '$bytes_sent $request_length $request_time "$upstream_addr" "$host"';
//! ```
//!
//! Invariants:
//! - **Deterministic ids.** A line's id is XXH3-128 of (the file's key, the line's byte offset,
//!   the line's bytes), where the file's key is XXH3-64 of the file's first line. The same line
//!   of the same file therefore gets the same id however often it is read, through a restart,
//!   and after the file is renamed (rotation) or copied (`copytruncate` copies keep the first
//!   line and the offsets). Two identical lines at different offsets, or in different files
//!   (which begin with different first lines), get different ids and both count. The content
//!   alone would not do (two identical requests in one second write identical lines), nor the
//!   offset alone (a truncated file reuses offsets). The one case this cannot tell apart: two
//!   files that begin with the very same line (same second, client, request and sizes) are
//!   taken for one file, and their lines at equal offsets with equal text count once.
//! - Numbers keep their exact text (`$request_time` `0.003` stays `0.003`).

mod error;
#[cfg(test)]
mod tests;

use serde_json::{Map, Number, Value};
use xxhash_rust::xxh3::{xxh3_64, xxh3_128};

pub use self::error::AccessLogError;
use crate::limits::ACCESS_LOG_LINE_BYTES_MAX as LINE_BYTES_MAX;
use crate::time::UnixMs;

/// The CloudEvents `type` of every access-log event.
pub const EVENT_TYPE: &str = "proxy.request";

/// A log format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// nginx `combined`, or the extended `tollgate` format (recognised by its extra fields).
    Nginx,
    /// Squid's native `access.log`.
    Squid,
}

impl LogFormat {
    /// The CloudEvents `source` of the format's events. Fixed per format so that re-reading a
    /// file from another path (after rotation) keeps every event's identity.
    pub fn source(self) -> &'static str {
        match self {
            LogFormat::Nginx => "tollgate/accesslog/nginx",
            LogFormat::Squid => "tollgate/accesslog/squid",
        }
    }

    /// The `data` field holding the client address (what attribution reads).
    pub fn address_field(self) -> &'static str {
        "client_ip"
    }

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            LogFormat::Nginx => "nginx",
            LogFormat::Squid => "squid",
        }
    }
}

/// The key of a file: XXH3-64 of its first line including the newline.
pub fn file_key(first_line: &[u8]) -> u64 {
    xxh3_64(first_line)
}

/// The id of the line at `offset` of the file with key `file_key` (see the module contract).
pub fn event_id(file_key: u64, offset: u64, line: &[u8]) -> String {
    let mut buf = Vec::with_capacity(16 + line.len());
    buf.extend_from_slice(&file_key.to_le_bytes());
    buf.extend_from_slice(&offset.to_le_bytes());
    buf.extend_from_slice(line);
    format!("al-{:032x}", xxh3_128(&buf))
}

/// One parsed line.
#[derive(Clone, Debug, PartialEq)]
pub struct AccessRecord {
    /// When the request ended (nginx: `$time_local`, seconds; Squid: epoch with ms).
    pub time: UnixMs,
    /// Fields of `data`, in a fixed order.
    pub data: Map<String, Value>,
}

impl AccessRecord {
    /// The CloudEvent JSON text (no `subject`: attribution gives it).
    pub fn to_event(&self, format: LogFormat, id: &str) -> String {
        let mut event = Map::new();
        event.insert("specversion".into(), Value::String("1.0".into()));
        event.insert("id".into(), Value::String(id.to_owned()));
        event.insert("source".into(), Value::String(format.source().into()));
        event.insert("type".into(), Value::String(EVENT_TYPE.into()));
        event.insert("time".into(), Value::String(self.time.to_rfc3339()));
        event.insert("data".into(), Value::Object(self.data.clone()));
        Value::Object(event).to_string()
    }
}

/// Parses one line (without its newline).
pub fn parse_line(format: LogFormat, line: &str) -> Result<AccessRecord, AccessLogError> {
    if line.len() > LINE_BYTES_MAX {
        return Err(AccessLogError::TooLong {
            max: LINE_BYTES_MAX,
        });
    }
    match format {
        LogFormat::Nginx => parse_nginx(line),
        LogFormat::Squid => parse_squid(line),
    }
}

/// Splits a line into fields: bare words, `"quoted"` (with `\"` escapes) and `[bracketed]`.
fn fields(line: &str) -> Result<Vec<String>, AccessLogError> {
    let mut out = Vec::new();
    let mut chars = line.char_indices().peekable();
    while let Some(&(_, c)) = chars.peek() {
        if c == ' ' || c == '\t' {
            chars.next();
            continue;
        }
        let mut field = String::new();
        match c {
            '"' => {
                chars.next();
                let mut closed = false;
                while let Some((_, c)) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some((_, n)) = chars.next() {
                                field.push(n);
                            }
                        }
                        '"' => {
                            closed = true;
                            break;
                        }
                        c => field.push(c),
                    }
                }
                if !closed {
                    return Err(AccessLogError::Malformed {
                        reason: "unterminated quoted field".into(),
                    });
                }
            }
            '[' => {
                chars.next();
                let mut closed = false;
                for (_, c) in chars.by_ref() {
                    if c == ']' {
                        closed = true;
                        break;
                    }
                    field.push(c);
                }
                if !closed {
                    return Err(AccessLogError::Malformed {
                        reason: "unterminated [time] field".into(),
                    });
                }
            }
            _ => {
                while let Some(&(_, c)) = chars.peek() {
                    if c == ' ' || c == '\t' {
                        break;
                    }
                    field.push(c);
                    chars.next();
                }
            }
        }
        out.push(field);
    }
    Ok(out)
}

fn malformed(reason: impl Into<String>) -> AccessLogError {
    AccessLogError::Malformed {
        reason: reason.into(),
    }
}

fn integer(name: &str, text: &str) -> Result<Value, AccessLogError> {
    if text == "-" {
        return Ok(Value::from(0u64));
    }
    text.parse::<u64>()
        .map(Value::from)
        .map_err(|_| malformed(format!("{name} `{}` is not a whole number", quote(text))))
}

fn decimal(name: &str, text: &str) -> Result<Value, AccessLogError> {
    let ok = !text.is_empty()
        && text.bytes().filter(|b| *b == b'.').count() <= 1
        && text.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && text.bytes().next().is_some_and(|b| b.is_ascii_digit());
    if !ok {
        return Err(malformed(format!(
            "{name} `{}` is not a number",
            quote(text)
        )));
    }
    text.parse::<Number>()
        .map(Value::Number)
        .map_err(|_| malformed(format!("{name} `{}` is not a number", quote(text))))
}

fn quote(text: &str) -> String {
    text.chars().take(64).collect()
}

fn text_or_absent(map: &mut Map<String, Value>, name: &str, text: &str) {
    if text != "-" && !text.is_empty() {
        map.insert(name.into(), Value::String(text.to_owned()));
    }
}

fn client_ip(text: &str) -> Result<Value, AccessLogError> {
    crate::ipmeta::parse_ip(text)
        .map(|ip| Value::String(ip.to_string()))
        .map_err(|_| malformed(format!("client address `{}` is not an IP", quote(text))))
}

fn parse_nginx(line: &str) -> Result<AccessRecord, AccessLogError> {
    let f = fields(line)?;
    // combined: addr - user [time] "request" status bytes "referer" "agent" = 9 fields
    if f.len() != 9 && f.len() != 14 {
        return Err(malformed(format!(
            "expected 9 fields (combined) or 14 (tollgate), found {}",
            f.len()
        )));
    }
    let time = jiff::Timestamp::strptime("%d/%b/%Y:%H:%M:%S %z", &f[3]).map_err(|_| {
        malformed(format!(
            "time `{}` is not [dd/Mon/yyyy:HH:MM:SS +zzzz]",
            quote(&f[3])
        ))
    })?;
    let mut data = Map::new();
    data.insert("client_ip".into(), client_ip(&f[0])?);
    let mut request = f[4].splitn(3, ' ');
    let (method, target, protocol) = (request.next(), request.next(), request.next());
    if let (Some(m), Some(t)) = (method, target) {
        data.insert("method".into(), Value::String(m.to_owned()));
        data.insert("path".into(), Value::String(t.to_owned()));
        if let Some(p) = protocol {
            data.insert("protocol".into(), Value::String(p.to_owned()));
        }
    } else {
        // nginx logs a bad request line as it came (often empty): keep it as it is.
        data.insert("request".into(), Value::String(f[4].clone()));
    }
    data.insert("status".into(), integer("status", &f[5])?);
    data.insert("body_bytes".into(), integer("body_bytes_sent", &f[6])?);
    text_or_absent(&mut data, "referer", &f[7]);
    text_or_absent(&mut data, "user_agent", &f[8]);
    if f.len() == 14 {
        data.insert("bytes_out".into(), integer("bytes_sent", &f[9])?);
        data.insert("bytes_in".into(), integer("request_length", &f[10])?);
        data.insert("request_time".into(), decimal("request_time", &f[11])?);
        text_or_absent(&mut data, "upstream", &f[12]);
        text_or_absent(&mut data, "dest_host", &f[13]);
    } else {
        // combined knows only the body: it is what the client received beyond the headers.
        data.insert("bytes_out".into(), data["body_bytes"].clone());
    }
    Ok(AccessRecord {
        time: UnixMs::from_timestamp(time),
        data,
    })
}

fn parse_squid(line: &str) -> Result<AccessRecord, AccessLogError> {
    // time elapsed client code/status bytes method url user hierarchy/peer type
    let f: Vec<&str> = line.split_ascii_whitespace().collect();
    if f.len() < 10 {
        return Err(malformed(format!(
            "expected 10 fields of Squid's native format, found {}",
            f.len()
        )));
    }
    let time = squid_time(f[0])?;
    let mut data = Map::new();
    data.insert("client_ip".into(), client_ip(f[2])?);
    let (result, status) = f[3]
        .split_once('/')
        .ok_or_else(|| malformed(format!("`{}` is not CODE/status", quote(f[3]))))?;
    data.insert("result_code".into(), Value::String(result.to_owned()));
    data.insert("status".into(), integer("status", status)?);
    data.insert("elapsed_ms".into(), integer("elapsed", f[1])?);
    data.insert("bytes_out".into(), integer("bytes", f[4])?);
    data.insert("method".into(), Value::String(f[5].to_owned()));
    let url = f[6];
    data.insert("url".into(), Value::String(url.to_owned()));
    if let Some(host) = url_host(f[5], url) {
        data.insert("dest_host".into(), Value::String(host));
    }
    text_or_absent(&mut data, "user", f[7]);
    let (hierarchy, peer) = f[8].split_once('/').unwrap_or((f[8], "-"));
    text_or_absent(&mut data, "hierarchy", hierarchy);
    text_or_absent(&mut data, "upstream", peer);
    text_or_absent(&mut data, "content_type", f[9]);
    Ok(AccessRecord {
        time: UnixMs::from_timestamp(time),
        data,
    })
}

/// `1700000000.123` → the instant (millisecond precision, as Squid writes it).
fn squid_time(text: &str) -> Result<jiff::Timestamp, AccessLogError> {
    let bad = || malformed(format!("time `{}` is not epoch seconds", quote(text)));
    let (secs, frac) = text.split_once('.').unwrap_or((text, "0"));
    let secs: i64 = secs.parse().map_err(|_| bad())?;
    if frac.is_empty() || frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let ms: i64 = format!("{frac:0<3}").parse().map_err(|_| bad())?;
    jiff::Timestamp::from_millisecond(secs.saturating_mul(1000).saturating_add(ms))
        .map_err(|_| bad())
}

/// The host of a proxied URL (`http://host:port/...`) or of a CONNECT target (`host:port`).
fn url_host(method: &str, url: &str) -> Option<String> {
    let authority = if method.eq_ignore_ascii_case("CONNECT") {
        url
    } else {
        let rest = url.split_once("://")?.1;
        rest.split(['/', '?', '#']).next()?
    };
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next()?
    } else {
        authority.split(':').next()?
    };
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}
