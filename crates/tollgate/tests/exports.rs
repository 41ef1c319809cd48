//! Black-box tests of the finance exports: every kind as CSV and Parquet over HTTP, read back
//! with an independent reader (pyarrow, from `TOLLGATE_PYTHON` or `target/venv`), equal value
//! by value; amounts equal to the invoice API; and `tollgate export` writing the same bytes as
//! the API from the stopped server's data directory.
//!
//! A missing Python or pyarrow fails the test; it never skips.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod common;
#[path = "support/portal_world.rs"]
mod portal_world;

use std::path::PathBuf;
use std::process::Command;

use common::*;
use portal_world::*;
use serde_json::Value;

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .and_then(|p| p.parent())
        .unwrap()
        .to_path_buf()
}

/// The Python with pyarrow; fails loudly when it is missing.
fn python() -> PathBuf {
    let python = std::env::var_os("TOLLGATE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/venv/bin/python"));
    match Command::new(&python)
        .args(["-c", "import pyarrow"])
        .output()
    {
        Ok(out) if out.status.success() => python,
        Ok(out) => panic!(
            "pyarrow is missing in {} ({}); run `cargo xtask venv` (target/venv gets numpy and \
             pyarrow), or point TOLLGATE_PYTHON at a Python 3 with pyarrow",
            python.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => panic!(
            "cannot run {}: {e}; run `cargo xtask venv`, or point TOLLGATE_PYTHON at a Python 3 \
             with pyarrow",
            python.display()
        ),
    }
}

/// Reads a Parquet file with pyarrow; answers its schema (name → arrow type) and its rows as
/// the canonical CSV text of each value.
const READER: &str = r#"
import sys, json, datetime
import pyarrow.parquet as pq
t = pq.read_table(sys.argv[1])
def text(v, ty):
    if v is None:
        return ""
    if isinstance(v, datetime.datetime):
        ms = v.microsecond // 1000
        base = v.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
        # RFC 3339 as the server writes it: fractional digits only as many as needed.
        return base + ("." + ("%03d" % ms).rstrip("0") + "Z" if ms else "Z")
    if isinstance(v, datetime.date):
        return v.isoformat()
    return str(v)
cols = t.column_names
types = {f.name: str(f.type) for f in t.schema}
rows = [[text(r[c], types[c]) for c in cols] for r in t.to_pylist()]
print(json.dumps({"columns": cols, "types": types, "rows": rows}))
"#;

fn read_parquet(python: &PathBuf, path: &std::path::Path) -> Value {
    let out = Command::new(python)
        .args(["-c", READER])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pyarrow could not read {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn csv_rows(text: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let mut r = csv::Reader::from_reader(text.as_bytes());
    let header = r.headers().unwrap().iter().map(String::from).collect();
    let rows = r
        .records()
        .map(|rec| rec.unwrap().iter().map(String::from).collect())
        .collect();
    (header, rows)
}

fn get_bytes(server: &Server, path: &str) -> (u16, String, Vec<u8>) {
    let resp = reqwest::blocking::Client::new()
        .get(format!("{}{path}", server.base()))
        .bearer_auth(ADMIN_KEY)
        .send()
        .unwrap();
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    (status, ct, resp.bytes().unwrap().to_vec())
}

const KINDS: [&str; 4] = ["invoices", "invoice_lines", "credits", "usage_daily"];

#[test]
fn parquet_reads_back_with_pyarrow_equal_to_the_csv_and_the_cli_writes_the_same() {
    let python = python();
    let dir = TestDir::new("exports");
    let data = dir.data("data");
    let mut server = Server::start(&data, SERVE_FLAGS);
    let world = build(&server, 4);
    let from = date_text(now_ms() - 70 * DAY_MS);
    let to = date_text(now_ms() + 2 * DAY_MS);
    let mut csv_texts = Vec::new();
    for kind in KINDS {
        let path = format!("/v1/exports/{kind}?from={from}&to={to}");
        let (status, ct, csv_bytes) = get_bytes(&server, &format!("{path}&format=csv"));
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&csv_bytes));
        assert!(ct.starts_with("text/csv"), "{ct}");
        let csv_text = String::from_utf8(csv_bytes).unwrap();
        let (header, rows) = csv_rows(&csv_text);
        assert!(!rows.is_empty(), "{kind} has rows");
        let (status, ct, pq_bytes) = get_bytes(&server, &format!("{path}&format=parquet"));
        assert_eq!(status, 200);
        assert_eq!(ct, "application/vnd.apache.parquet");
        let file = dir.join(&format!("{kind}.parquet"));
        std::fs::write(&file, &pq_bytes).unwrap();
        let table = read_parquet(&python, &file);
        let columns: Vec<String> = table["columns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().to_owned())
            .collect();
        assert_eq!(columns, header, "{kind}: same columns");
        let parquet_rows: Vec<Vec<String>> = serde_json::from_value(table["rows"].clone()).unwrap();
        assert_eq!(
            parquet_rows, rows,
            "{kind}: Parquet and CSV hold the same values"
        );
        // Typed columns: amounts are int64, instants UTC timestamps, dates dates.
        let types = &table["types"];
        for (name, ty) in types.as_object().unwrap() {
            let ty = ty.as_str().unwrap();
            if name.ends_with("_minor") {
                assert_eq!(ty, "int64", "{kind}.{name}");
            }
            if ["period_start", "at", "window_start", "finalized_at"].contains(&name.as_str()) {
                assert_eq!(ty, "timestamp[ms, tz=UTC]", "{kind}.{name}");
            }
            if ["date", "date_local", "period_start_local"].contains(&name.as_str()) {
                assert_eq!(ty, "date32[day]", "{kind}.{name}");
            }
        }
        csv_texts.push(csv_text);
    }

    // Amounts equal the invoice API; lines sum to the subtotal; usage equals the usage API.
    let (_, invoices) = csv_rows(&csv_texts[0]);
    let (h, lines) = csv_rows(&csv_texts[1]);
    let col = |name: &str| h.iter().position(|c| c == name).unwrap();
    let all_invoices: Vec<&String> = world.iter().flat_map(|c| c.invoices.iter()).collect();
    assert_eq!(invoices.len(), all_invoices.len());
    for row in &invoices {
        let api = ok(
            server.get(&format!("/v1/invoices/{}", row[0]), ADMIN_KEY),
            200,
            "inv",
        );
        assert_eq!(row[2], api["customer"].as_str().unwrap());
        assert_eq!(row[5], api["currency"].as_str().unwrap());
        assert_eq!(row[13], api["subtotal_minor"].to_string());
        assert_eq!(row[15], api["total_minor"].to_string());
        assert_eq!(row[17], api["amount_due_minor"].to_string());
        let line_sum: i64 = lines
            .iter()
            .filter(|l| l[col("invoice_id")] == row[0])
            .map(|l| l[col("amount_minor")].parse::<i64>().unwrap())
            .sum();
        assert_eq!(line_sum.to_string(), row[13], "lines sum to the subtotal");
    }
    let (uh, usage) = csv_rows(&csv_texts[3]);
    let ucol = |name: &str| uh.iter().position(|c| c == name).unwrap();
    for c in &world {
        let first = usage
            .iter()
            .find(|r| r[ucol("customer")] == c.key && r[ucol("meter")] == "bytes-out")
            .unwrap();
        let api = server.usage_rows(
            "bytes-out",
            &format!(
                "subject={}&from={}&to={}",
                c.key,
                q(&first[ucol("window_start")]),
                q(&first[ucol("window_end")])
            ),
        );
        assert_eq!(api[0]["value"].as_str().unwrap(), first[ucol("quantity")]);
    }
    // Credits: each customer's grant, and every transaction sums to zero.
    let (ch, credits) = csv_rows(&csv_texts[2]);
    let ccol = |name: &str| ch.iter().position(|c| c == name).unwrap();
    let mut by_txn = std::collections::BTreeMap::<String, i64>::new();
    for r in &credits {
        *by_txn.entry(r[ccol("transaction")].clone()).or_default() +=
            r[ccol("amount_minor")].parse::<i64>().unwrap();
    }
    assert!(by_txn.values().all(|v| *v == 0), "{by_txn:?}");
    for (i, c) in world.iter().enumerate() {
        assert!(credits.iter().any(|r| r[ccol("customer")] == c.key
            && r[ccol("kind")] == "grant"
            && r[ccol("account")] == "customer_credit"
            && r[ccol("amount_minor")] == (500 + i).to_string()));
    }

    // Errors.
    for (path, status, code) in [
        (
            format!("/v1/exports/nope?from={from}&to={to}"),
            404,
            "unknown_export",
        ),
        (
            "/v1/exports/invoices?to=2026-01-01".to_owned(),
            400,
            "missing_parameter",
        ),
        (
            "/v1/exports/invoices?from=2026-01-01&to=2026-01-01".to_owned(),
            400,
            "empty_time_range",
        ),
        (
            "/v1/exports/invoices?from=2020-01-01&to=2026-01-01".to_owned(),
            422,
            "export_range_days_max",
        ),
        (
            format!("/v1/exports/invoices?from={from}&to={to}&format=xls"),
            400,
            "invalid_format",
        ),
    ] {
        assert_error(&server.get(&path, ADMIN_KEY), status, code);
    }
    let (_, read_key) = server.create_key(&["read"]);
    assert_error(
        &server.get(
            &format!("/v1/exports/invoices?from={from}&to={to}"),
            &read_key,
        ),
        403,
        "insufficient_scope",
    );

    // The CLI writes the same files from the data directory.
    server.stop();
    for (kind, api_csv) in KINDS.iter().zip(&csv_texts) {
        let out = dir.join(&format!("cli-{kind}.csv"));
        let r = run(&[
            "export",
            kind,
            "--data-dir",
            data.to_str().unwrap(),
            "--acceptance-window",
            "120d",
            "--from",
            &from,
            "--to",
            &to,
            "--format",
            "csv",
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(r.status.success(), "{}", describe(&r));
        assert_eq!(&std::fs::read_to_string(&out).unwrap(), api_csv, "{kind}");
        let pq = dir.join(&format!("cli-{kind}.parquet"));
        let r = run(&[
            "export",
            kind,
            "--data-dir",
            data.to_str().unwrap(),
            "--acceptance-window",
            "120d",
            "--from",
            &from,
            "--to",
            &to,
            "--format",
            "parquet",
            "--out",
            pq.to_str().unwrap(),
        ]);
        assert!(r.status.success(), "{}", describe(&r));
        let table = read_parquet(&python, &pq);
        let (_, rows) = csv_rows(api_csv);
        let parquet_rows: Vec<Vec<String>> = serde_json::from_value(table["rows"].clone()).unwrap();
        assert_eq!(parquet_rows, rows, "{kind} from the CLI");
    }
    let r = run(&[
        "export",
        "nope",
        "--data-dir",
        data.to_str().unwrap(),
        "--from",
        &from,
        "--to",
        &to,
        "--out",
        "-",
    ]);
    assert!(!r.status.success());
    assert!(
        String::from_utf8_lossy(&r.stderr).contains("unknown export"),
        "{}",
        describe(&r)
    );
}
