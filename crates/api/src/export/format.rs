//! The two encodings of an export: CSV (RFC 4180, header row) and Parquet (one row group,
//! uncompressed, typed columns as [`super::ColumnType`] documents).
//!
//! Invariants: both encode the same [`super::Table`]: CSV text is the canonical text of each
//! value (RFC 3339 UTC instants with `Z`, `YYYY-MM-DD` dates, decimal integers, empty for
//! null), so a reader can compare them value by value.

use std::sync::Arc;

use jiff::civil::Date;
use parquet::basic::Compression;
use parquet::data_type::{ByteArray, ByteArrayType, Int32Type, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;

use super::{ColumnType, Table, Value};
use crate::ApiError;
use crate::convert::time_text;

/// CSV or Parquet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `text/csv`.
    Csv,
    /// `application/vnd.apache.parquet`.
    Parquet,
}

impl Format {
    /// `csv` | `parquet`.
    pub fn parse(text: &str) -> Option<Format> {
        match text {
            "csv" => Some(Format::Csv),
            "parquet" => Some(Format::Parquet),
            _ => None,
        }
    }

    /// The file extension.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Parquet => "parquet",
        }
    }

    /// The media type.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Csv => "text/csv; charset=utf-8",
            Format::Parquet => "application/vnd.apache.parquet",
        }
    }
}

fn epoch() -> Date {
    Date::constant(1970, 1, 1)
}

fn days_since_epoch(d: Date) -> i32 {
    d.since(epoch()).map_or(0, |s| s.get_days())
}

/// The canonical text of a value (CSV).
pub fn text_of(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::Text(t) => t.clone(),
        Value::Int(i) => i.to_string(),
        Value::Ts(t) => time_text(*t),
        Value::Date(d) => d.to_string(),
    }
}

fn failed(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
        "export_failed",
        e.to_string(),
    )
}

/// Encodes a table.
pub fn encode(table: &Table, format: Format) -> Result<Vec<u8>, ApiError> {
    match format {
        Format::Csv => csv(table),
        Format::Parquet => parquet(table),
    }
}

fn csv(table: &Table) -> Result<Vec<u8>, ApiError> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(table.kind.columns().iter().map(|c| c.name))
        .map_err(failed)?;
    for row in &table.rows {
        w.write_record(row.iter().map(text_of)).map_err(failed)?;
    }
    w.into_inner().map_err(failed)
}

/// The Parquet schema of a kind, in Parquet's message syntax.
pub fn parquet_schema(kind: super::Kind) -> String {
    let mut s = format!("message {} {{\n", kind.name());
    for c in kind.columns() {
        let rep = if c.nullable { "optional" } else { "required" };
        let ty = match c.ty {
            ColumnType::Text => "binary",
            ColumnType::Int64 | ColumnType::Timestamp => "int64",
            ColumnType::Date => "int32",
        };
        let ann = match c.ty {
            ColumnType::Text => " (STRING)",
            ColumnType::Int64 => "",
            ColumnType::Timestamp => " (TIMESTAMP(MILLIS,true))",
            ColumnType::Date => " (DATE)",
        };
        s.push_str(&format!("  {rep} {ty} {}{ann};\n", c.name));
    }
    s.push('}');
    s
}

fn parquet(table: &Table) -> Result<Vec<u8>, ApiError> {
    let schema = Arc::new(parse_message_type(&parquet_schema(table.kind)).map_err(failed)?);
    let props = Arc::new(
        WriterProperties::builder()
            .set_compression(Compression::UNCOMPRESSED)
            .build(),
    );
    let mut out = Vec::new();
    let mut writer = SerializedFileWriter::new(&mut out, schema, props).map_err(failed)?;
    let mut rg = writer.next_row_group().map_err(failed)?;
    for (i, c) in table.kind.columns().iter().enumerate() {
        let mut col = rg
            .next_column()
            .map_err(failed)?
            .ok_or_else(|| failed("the schema has fewer columns than the table"))?;
        let cells = table.rows.iter().map(|r| &r[i]);
        let defs: Vec<i16> = cells
            .clone()
            .map(|v| i16::from(*v != Value::Null))
            .collect();
        let defs = c.nullable.then_some(defs.as_slice());
        match c.ty {
            ColumnType::Text => {
                let values: Vec<ByteArray> = cells
                    .filter_map(|v| match v {
                        Value::Text(t) => Some(ByteArray::from(t.as_str())),
                        _ => None,
                    })
                    .collect();
                col.typed::<ByteArrayType>()
                    .write_batch(&values, defs, None)
                    .map_err(failed)?;
            }
            ColumnType::Int64 | ColumnType::Timestamp => {
                let values: Vec<i64> = cells
                    .filter_map(|v| match v {
                        Value::Int(n) => Some(*n),
                        Value::Ts(t) => Some(t.0),
                        _ => None,
                    })
                    .collect();
                col.typed::<Int64Type>()
                    .write_batch(&values, defs, None)
                    .map_err(failed)?;
            }
            ColumnType::Date => {
                let values: Vec<i32> = cells
                    .filter_map(|v| match v {
                        Value::Date(d) => Some(days_since_epoch(*d)),
                        _ => None,
                    })
                    .collect();
                col.typed::<Int32Type>()
                    .write_batch(&values, defs, None)
                    .map_err(failed)?;
            }
        }
        col.close().map_err(failed)?;
    }
    rg.close().map_err(failed)?;
    writer.close().map_err(failed)?;
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::export::Kind;
    use tollgate_core::time::UnixMs;

    fn sample() -> Table {
        Table {
            kind: Kind::Credits,
            rows: vec![vec![
                Value::Text("cus_1".into()),
                Value::Text("txn_1".into()),
                Value::Text("grant".into()),
                Value::Text("grant_1".into()),
                Value::Text("customer_credit".into()),
                Value::Int(-2000),
                Value::Text("USD".into()),
                Value::Ts(UnixMs(1_793_710_800_000)),
                Value::Date(Date::constant(2026, 11, 3)),
                Value::Null,
            ]],
        }
    }

    #[test]
    fn csv_has_the_header_and_canonical_text() {
        let text = String::from_utf8(encode(&sample(), Format::Csv).unwrap()).unwrap();
        let mut lines = text.lines();
        assert_eq!(
            lines.next().unwrap(),
            "customer,transaction,kind,grant_id,account,amount_minor,currency,at,date_local,invoice_id"
        );
        assert_eq!(
            lines.next().unwrap(),
            "cus_1,txn_1,grant,grant_1,customer_credit,-2000,USD,2026-11-03T13:00:00Z,2026-11-03,"
        );
    }

    #[test]
    fn parquet_files_have_the_magic_and_every_schema_parses() {
        let bytes = encode(&sample(), Format::Parquet).unwrap();
        assert_eq!(&bytes[..4], b"PAR1");
        assert_eq!(&bytes[bytes.len() - 4..], b"PAR1");
        for k in Kind::ALL {
            parse_message_type(&parquet_schema(k)).unwrap();
            let empty = encode(
                &Table {
                    kind: k,
                    rows: vec![],
                },
                Format::Parquet,
            )
            .unwrap();
            assert_eq!(&empty[..4], b"PAR1");
        }
    }

    #[test]
    fn dates_count_days_from_1970() {
        assert_eq!(days_since_epoch(Date::constant(1970, 1, 2)), 1);
        assert_eq!(days_since_epoch(Date::constant(2026, 3, 29)), 20_541);
    }
}
