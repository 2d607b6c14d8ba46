//! `RowsDecoder`: the row images of a MySQL/MariaDB rows event -> the converted row tuples,
//! compiled once per table map (one table version with the column metadata of its table map).
//!
//! The contract is `sources/mysql/_rows.py`'s: `decode(body, columns, present, present2)`
//! returns exactly what python-mysql-replication's row parsing (with the source's own TIME, DATE,
//! DATETIME and JSON decoders patched in) followed by the table version's `from_binlog`
//! converters gives for the same bytes: one tuple per row for a write or delete event, one
//! `(before, after)` pair per row for an update, equal values of the same Python types. `body`
//! is the event's bytes after the columns-present bitmaps, up to the checksum: the row images
//! only. Anything it does not take exactly as the reference would (a truncated or malformed
//! image, a length past the end, bytes that are not text in the column's character set, a
//! decimal digit group out of range, a fraction that is not a valid microsecond) raises
//! `ValueError`: the caller then lets the library parse the same event, which returns the right
//! rows or raises its own error. The compiled decoder never guesses.
//!
//! Per column the Python side passes an operation code, two parameters, whether the column is
//! NOT NULL in the table map, whether the time adjuster applies, the value a zero date takes in a
//! NOT NULL column, and the labels of an ENUM or SET (see `_rows.plan`). MySQL's binary JSON is
//! handed to the Python decoder (`_json.to_text`), the reference itself; FLOAT(M,D) is rounded by
//! Python's `round`, and decimals are made by `decimal.Decimal` from the digits read here.
//!
//! Formats: MySQL's sql/log_event.cc (row images), sql-common/my_time.cc (temporal types),
//! strings/decimal.cc (DECIMAL's binary form), as python-mysql-replication reads them.
//!
//! Safe Rust, every read bounds-checked: malformed bytes raise, never crash; every loop advances
//! through `body`, so the work is bounded by its length.
//!
//! One file past 500 lines: it is one decoder of one format, its reader, the temporal and
//! decimal formats and the per-column match that uses them; split, each part would be read only
//! beside the others.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyFloat, PyList, PyString, PyTuple};

// Operation codes, as `sources/mysql/_rows.py` numbers them.
const INT8: u8 = 0;
const UINT8: u8 = 1;
const INT16: u8 = 2;
const UINT16: u8 = 3;
const INT24: u8 = 4;
const UINT24: u8 = 5;
const INT32: u8 = 6;
const UINT32: u8 = 7;
const INT64: u8 = 8;
const UINT64_DECIMAL: u8 = 9;
const FLOAT: u8 = 10;
const FLOAT_ROUNDED: u8 = 11;
const DOUBLE: u8 = 12;
const DECIMAL: u8 = 13;
const BIT1: u8 = 14;
const BITS: u8 = 15;
const TEXT: u8 = 16;
const BYTES: u8 = 17;
const BINARY: u8 = 18;
const JSON_BINARY: u8 = 19;
const DATE: u8 = 20;
const DATETIME_MILLIS: u8 = 21;
const DATETIME_MICROS: u8 = 22;
const TIME: u8 = 23;
const TIMESTAMP: u8 = 24;
const YEAR: u8 = 25;
const ENUM: u8 = 26;
const SET: u8 = 27;
const LAST_OP: u8 = SET;

// Character sets of TEXT (param b).
const UTF8: usize = 0;
const ASCII: usize = 1;
const LATIN1: usize = 2;

/// One column as the Python side describes it: (op, a, b, required, adjust_years, fallback,
/// labels).
type ColumnSpec = (u8, usize, usize, bool, bool, Py<PyAny>, Vec<Py<PyString>>);

struct Col {
    op: u8,
    /// Lengths, sizes, precision, fsp: per op (see `_rows.plan`).
    a: usize,
    b: usize,
    /// NOT NULL in the table map: a zero date takes `fallback` instead of None.
    required: bool,
    /// source.time_adjuster: years 0-69 -> 2000-2069, 70-99 -> 1970-1999 (DATE, DATETIME).
    adjust: bool,
    fallback: Py<PyAny>,
    /// ENUM: `["", label1, ...]` (index 0 is the error value ''); SET: the labels by bit.
    labels: Vec<Py<PyString>>,
}

fn malformed(what: String) -> PyErr {
    PyValueError::new_err(what)
}

/// A cursor over the row images: every read checked.
struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> PyResult<&'a [u8]> {
        let end = self
            .at
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or_else(|| {
                malformed(format!(
                    "rows event truncated: {n} bytes wanted at offset {} of {}",
                    self.at,
                    self.buf.len()
                ))
            })?;
        let s = &self.buf[self.at..end];
        self.at = end;
        Ok(s)
    }

    /// An unsigned little-endian integer of `n` (1..=8) bytes.
    fn uint_le(&mut self, n: usize) -> PyResult<u64> {
        let b = self.take(n)?;
        Ok(b.iter().rev().fold(0u64, |v, x| (v << 8) | u64::from(*x)))
    }

    /// An unsigned big-endian integer of `n` (0..=8) bytes.
    fn uint_be(&mut self, n: usize) -> PyResult<u64> {
        let b = self.take(n)?;
        Ok(b.iter().fold(0u64, |v, x| (v << 8) | u64::from(*x)))
    }

    /// A signed big-endian integer of `n` (1..=4) bytes (`read_int_be_by_size`).
    fn int_be(&mut self, n: usize) -> PyResult<i64> {
        if n == 0 || n > 4 {
            return Err(malformed(format!("a signed integer of {n} bytes")));
        }
        let v = self.uint_be(n)? as i64;
        let bits = 8 * n as u32;
        Ok(if v >= 1 << (bits - 1) {
            v - (1 << bits)
        } else {
            v
        })
    }

    /// A length of `size` bytes, then that many bytes (`read_length_coded_pascal_string`).
    fn pascal(&mut self, size: usize) -> PyResult<&'a [u8]> {
        let n = self.uint_le(size)?;
        let n = usize::try_from(n).map_err(|_| malformed(format!("length {n}")))?;
        self.take(n)
    }
}

fn bit(map: &[u8], i: usize) -> bool {
    map.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0)
}

// --- temporal values ---------------------------------------------------------------------------

/// Days from 1970-01-01 to the civil date (proleptic Gregorian), as `date.toordinal()` counts.
pub(crate) fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day count from 1970-01-01.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

/// Whether `datetime.date(y, m, d)` accepts it.
pub(crate) fn calendar_date(y: i64, m: i64, d: i64) -> bool {
    if !(1..=9999).contains(&y) || !(1..=12).contains(&m) || d < 1 {
        return false;
    }
    let last = match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    d <= last
}

/// Debezium's time adjuster (`_types._adjusted`).
pub(crate) fn adjusted(y: i64, adjust: bool) -> i64 {
    if adjust && y < 100 {
        y + if y < 70 { 2000 } else { 1900 }
    } else {
        y
    }
}

/// A zero date's value (not a calendar date): the column's `fallback` when it is NOT NULL
/// (`required`), else None (`_types._or_fallback`).
pub(crate) fn zero_date<'py>(
    py: Python<'py>,
    required: bool,
    fallback: &Py<PyAny>,
) -> Bound<'py, PyAny> {
    if required {
        fallback.bind(py).clone()
    } else {
        py.None().into_bound(py)
    }
}

/// A TIMESTAMP as `_types._zoned` writes it: `YYYY-MM-DDTHH:MM:SS`, the first `fsp` digits of
/// the microseconds after a point when `fsp` > 0, then `Z`.
pub(crate) fn zoned_text(
    ymd: (i64, i64, i64),
    hms: (i64, i64, i64),
    micro: i64,
    fsp: usize,
) -> String {
    let ((y, mo, d), (h, mi, s)) = (ymd, hms);
    let mut t = String::with_capacity(28);
    padded(&mut t, y, 4);
    t.push('-');
    padded(&mut t, mo, 2);
    t.push('-');
    padded(&mut t, d, 2);
    t.push('T');
    padded(&mut t, h, 2);
    t.push(':');
    padded(&mut t, mi, 2);
    t.push(':');
    padded(&mut t, s, 2);
    if fsp > 0 {
        t.push('.');
        let digits = fsp.min(6);
        // the first `digits` of the 6-digit fraction
        padded(&mut t, micro / 10i64.pow(6 - digits as u32), digits);
    }
    t.push('Z');
    t
}

/// `v` in decimal, zero-padded to `width` digits, as `format!("{v:0width$}")` writes it (without
/// its formatting machinery, for the common case of a value that fits).
fn padded(t: &mut String, v: i64, width: usize) {
    let mut buf = [b'0'; 20];
    if v < 0 || width > buf.len() || v >= 10i64.pow(width as u32) {
        t.push_str(&format!("{v:0width$}"));
        return;
    }
    let mut x = v;
    for i in (0..width).rev() {
        buf[i] = b'0' + (x % 10) as u8;
        x /= 10;
    }
    t.extend(buf[..width].iter().map(|&c| char::from(c)));
}

/// Bytes of a fraction of `fsp` digits and the factor to microseconds (`_decoders`).
fn frac_layout(fsp: usize) -> (usize, i64) {
    match fsp {
        1 | 2 => (1, 10_000),
        3 | 4 => (2, 100),
        5 | 6 => (3, 1),
        _ => (0, 0),
    }
}

/// `_decoders.time2_micros`.
fn time2_micros(r: &mut Reader<'_>, fsp: usize) -> PyResult<i64> {
    let packed: i64 = if fsp >= 5 {
        r.uint_be(6)? as i64 - 0x8000_0000_0000
    } else {
        let mut intpart = r.uint_be(3)? as i64 - 0x80_0000;
        let (nfrac, scale) = frac_layout(fsp);
        let mut frac = r.uint_be(nfrac)? as i64;
        if intpart < 0 && frac != 0 {
            intpart += 1;
            frac -= 1 << (8 * nfrac);
        }
        (intpart << 24) + frac * scale
    };
    let negative = packed < 0;
    let packed = packed.abs();
    let (hms, micros) = (packed >> 24, packed % (1 << 24));
    let (hours, minutes, seconds) = (
        (hms >> 12) % (1 << 10),
        (hms >> 6) % (1 << 6),
        hms % (1 << 6),
    );
    let total = ((hours * 60 + minutes) * 60 + seconds) * 1_000_000 + micros;
    Ok(if negative { -total } else { total })
}

// --- the decoder ---------------------------------------------------------------------------------

#[pyclass(frozen, module = "cdc._native")]
pub struct RowsDecoder {
    cols: Vec<Col>,
    decimal: Py<PyAny>,
    round: Py<PyAny>,
    json_text: Py<PyAny>,
}

/// cp1252 at 0x80..0x9F, each byte it leaves unassigned as the C1 control of the same number
/// (`_decoders`' latin1: MySQL's).
const CP1252_HIGH: [u16; 32] = [
    0x20AC, 0x0081, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160, 0x2039,
    0x0152, 0x008D, 0x017D, 0x008F, 0x0090, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013, 0x2014,
    0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0x009D, 0x017E, 0x0178,
];

fn latin1(b: &[u8]) -> String {
    b.iter()
        .map(|&c| match c {
            0x80..=0x9F => {
                char::from_u32(u32::from(CP1252_HIGH[usize::from(c - 0x80)])).unwrap_or('\u{FFFD}')
            }
            _ => char::from(c),
        })
        .collect()
}

impl RowsDecoder {
    /// One row image: the null bitmap of the present columns, then their values.
    fn image<'py>(
        &self,
        py: Python<'py>,
        r: &mut Reader<'_>,
        present: &[u8],
        npresent: usize,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let nulls = r.take(npresent.div_ceil(8))?;
        let mut values: Vec<Bound<'py, PyAny>> = Vec::with_capacity(self.cols.len());
        let mut ni = 0;
        for (i, col) in self.cols.iter().enumerate() {
            if !bit(present, i) {
                values.push(py.None().into_bound(py)); // left out of a minimal image
                continue;
            }
            let null = bit(nulls, ni);
            ni += 1;
            if null {
                values.push(py.None().into_bound(py));
                continue;
            }
            values.push(self.value(py, r, col)?);
        }
        PyTuple::new(py, values)
    }

    fn value<'py>(
        &self,
        py: Python<'py>,
        r: &mut Reader<'_>,
        col: &Col,
    ) -> PyResult<Bound<'py, PyAny>> {
        let int = |v: i64| -> PyResult<Bound<'py, PyAny>> { Ok(v.into_pyobject(py)?.into_any()) };
        match col.op {
            INT8 => int(i64::from(r.take(1)?[0] as i8)),
            UINT8 => int(r.uint_le(1)? as i64),
            INT16 => int(r.uint_le(2)? as u16 as i16 as i64),
            UINT16 => int(r.uint_le(2)? as i64),
            INT24 => {
                let v = r.uint_le(3)? as i64;
                int(if v >= 0x80_0000 { v - 0x100_0000 } else { v })
            }
            UINT24 => int(r.uint_le(3)? as i64),
            INT32 => int(i64::from(r.uint_le(4)? as u32 as i32)),
            UINT32 => int(r.uint_le(4)? as i64),
            INT64 => int(r.uint_le(8)? as i64),
            UINT64_DECIMAL => {
                let v = r.uint_le(8)?;
                self.decimal.bind(py).call1((v.to_string(),))
            }
            FLOAT => {
                let b = r.take(4)?;
                let f = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                Ok(PyFloat::new(py, f64::from(f)).into_any())
            }
            FLOAT_ROUNDED => {
                let b = r.take(4)?;
                let f = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                self.round
                    .bind(py)
                    .call1((PyFloat::new(py, f64::from(f)), col.a))
            }
            DOUBLE => {
                let b = r.take(8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                Ok(PyFloat::new(py, f64::from_le_bytes(a)).into_any())
            }
            DECIMAL => {
                let text = decimal_text(r, col.a, col.b)?;
                self.decimal.bind(py).call1((text,))
            }
            BIT1 => {
                let b = r.take(col.a)?;
                Ok(PyBool::new(py, b[0] & 1 == 1).to_owned().into_any())
            }
            BITS => {
                // col.a bytes, big-endian; the first byte holds only the bits past whole bytes
                let b = r.take(col.a)?;
                let end = if col.a == 1 {
                    col.b
                } else if col.b % 8 == 0 {
                    8
                } else {
                    col.b % 8
                };
                let mask = if end >= 8 { 0xFF } else { (1u8 << end) - 1 };
                let mut out: Vec<u8> = b.iter().rev().copied().collect();
                if let Some(first) = out.last_mut() {
                    *first &= mask;
                }
                Ok(PyBytes::new(py, &out).into_any())
            }
            TEXT => {
                let b = r.pascal(col.a)?;
                let s = match col.b {
                    UTF8 => std::str::from_utf8(b)
                        .map_err(|e| malformed(format!("text that is not utf-8: {e}")))?
                        .to_owned(),
                    ASCII => {
                        if !b.is_ascii() {
                            return Err(malformed("text that is not ascii".to_string()));
                        }
                        std::str::from_utf8(b)
                            .map_err(|e| malformed(e.to_string()))?
                            .to_owned()
                    }
                    _ => latin1(b),
                };
                Ok(PyString::new(py, &s).into_any())
            }
            BYTES => Ok(PyBytes::new(py, r.pascal(col.a)?).into_any()),
            BINARY => {
                let b = r.pascal(col.a)?;
                let mut v = b.to_vec();
                if v.len() < col.b {
                    v.resize(col.b, 0); // the binlog drops a BINARY(n) value's trailing zeros
                }
                Ok(PyBytes::new(py, &v).into_any())
            }
            JSON_BINARY => {
                let b = r.pascal(col.a)?;
                self.json_text
                    .bind(py)
                    .call1((PyBytes::new(py, b),))
                    .map_err(|e| malformed(format!("binary JSON the decoder refused: {e}")))
            }
            DATE => {
                let v = r.uint_le(3)? as i64;
                let (d, m, y) = (v & 31, (v >> 5) & 15, v >> 9);
                if !calendar_date(y, m, d) {
                    return Ok(zero_date(py, col.required, &col.fallback));
                }
                int(days_from_civil(adjusted(y, col.adjust), m, d))
            }
            DATETIME_MILLIS | DATETIME_MICROS => {
                let v = r.uint_be(5)? as i64;
                let (nfrac, scale) = frac_layout(col.a);
                let micros = r.uint_be(nfrac)? as i64 * scale;
                let ym = (v >> 22) & ((1 << 17) - 1);
                let (y, mo, d) = (ym / 13, ym % 13, (v >> 17) & 31);
                let (h, mi, s) = ((v >> 12) & 31, (v >> 6) & 63, v & 63);
                if !calendar_date(y, mo, d) || h > 23 || mi > 59 || s > 59 || micros > 999_999 {
                    return Ok(zero_date(py, col.required, &col.fallback));
                }
                let days = days_from_civil(adjusted(y, col.adjust), mo, d);
                let total = ((days * 24 + h) * 60 + mi) * 60 + s;
                let us = total * 1_000_000 + micros;
                int(if col.op == DATETIME_MILLIS {
                    us.div_euclid(1000)
                } else {
                    us
                })
            }
            TIME => int(time2_micros(r, col.a)?),
            TIMESTAMP => {
                let secs = r.int_be(4)?;
                // the library's __read_fsp: signed, odd fsp truncated to its digits
                let (nfrac, _) = frac_layout(col.a);
                let mut micro = if nfrac > 0 { r.int_be(nfrac)? } else { 0 };
                if nfrac > 0 {
                    if col.a % 2 == 1 {
                        micro /= 10; // int(x / 10): toward zero
                    }
                    micro *= 10i64.pow(6 - col.a as u32);
                }
                if micro > 999_999 {
                    return Err(malformed(format!("timestamp fraction {micro}")));
                }
                let micro = micro.max(0); // the library keeps no fraction <= 0
                if secs == 0 && micro == 0 {
                    return Ok(zero_date(py, col.required, &col.fallback)); // the zero TIMESTAMP
                }
                let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
                let (y, mo, d) = civil_from_days(days);
                let hms = (rem / 3600, rem / 60 % 60, rem % 60);
                let s = zoned_text((y, mo, d), hms, micro, col.a);
                Ok(PyString::new(py, &s).into_any())
            }
            YEAR => {
                let v = r.uint_le(1)? as i64;
                int(if v == 0 { 0 } else { v + 1900 })
            }
            ENUM => {
                let i = r.uint_le(col.a)? as usize;
                match col.labels.get(i) {
                    Some(l) => Ok(l.bind(py).clone().into_any()),
                    None => Err(malformed(format!("enum index {i} of {}", col.labels.len()))),
                }
            }
            SET => {
                let mask = r.uint_le(col.a)?;
                let mut s = String::new();
                for (i, l) in col.labels.iter().enumerate().take(64) {
                    if mask & (1u64 << i) != 0 {
                        if !s.is_empty() {
                            s.push(',');
                        }
                        s.push_str(l.bind(py).to_str()?);
                    }
                }
                Ok(PyString::new(py, &s).into_any())
            }
            _ => Err(malformed(format!("operation {}", col.op))),
        }
    }
}

/// DECIMAL(precision, scale) in MySQL's binary form -> the text python-mysql-replication makes
/// of it (`__read_new_decimal`), with each digit group checked to hold its digits: a group out
/// of range would make the reference's text, and its value, differ (`ValueError`: the caller
/// lets the library decode it).
fn decimal_text(r: &mut Reader<'_>, precision: usize, scale: usize) -> PyResult<String> {
    const DIG: usize = 9;
    const COMPRESSED: [usize; 10] = [0, 1, 1, 2, 2, 3, 3, 4, 4, 4];
    let integral = precision - scale;
    let (uncomp_int, uncomp_frac) = (integral / DIG, scale / DIG);
    let (comp_int, comp_frac) = (integral % DIG, scale % DIG);
    let first = *r
        .buf
        .get(r.at)
        .ok_or_else(|| malformed("decimal truncated".to_string()))?;
    let positive = first & 0x80 != 0;
    let mask: i64 = if positive { 0 } else { -1 };
    let mut out = String::with_capacity(precision + 2);
    if !positive {
        out.push('-');
    }
    // the sign bit flipped back, as the library's unread() does
    let mut bytes: Vec<u8> = r
        .take(COMPRESSED[comp_int] + 4 * uncomp_int + 4 * uncomp_frac + COMPRESSED[comp_frac])?
        .to_vec();
    match bytes.first_mut() {
        Some(b) => *b ^= 0x80,
        None => return Err(malformed("a decimal of no digits".to_string())),
    }
    let mut g = Reader { buf: &bytes, at: 0 };
    let group = |g: &mut Reader<'_>, size: usize, digits: usize| -> PyResult<i64> {
        let v = g.int_be(size)? ^ mask;
        if v < 0 || v >= 10i64.pow(digits as u32) {
            return Err(malformed(format!("decimal digit group {v}")));
        }
        Ok(v)
    };
    if COMPRESSED[comp_int] > 0 {
        let v = group(&mut g, COMPRESSED[comp_int], comp_int)?;
        out.push_str(&v.to_string());
    }
    for _ in 0..uncomp_int {
        out.push_str(&format!("{:09}", group(&mut g, 4, DIG)?));
    }
    out.push('.');
    for _ in 0..uncomp_frac {
        out.push_str(&format!("{:09}", group(&mut g, 4, DIG)?));
    }
    if COMPRESSED[comp_frac] > 0 {
        let v = group(&mut g, COMPRESSED[comp_frac], comp_frac)?;
        out.push_str(&format!("{v:0width$}", width = comp_frac));
    }
    Ok(out)
}

#[pymethods]
impl RowsDecoder {
    /// `columns`: one `(op, a, b, required, adjust_years, fallback, labels)` per column of the
    /// table map (see `_rows.plan`); `json_text(bytes) -> str`: MySQL's binary JSON as text.
    #[new]
    fn new(py: Python<'_>, columns: Vec<ColumnSpec>, json_text: Py<PyAny>) -> PyResult<Self> {
        let mut cols = Vec::with_capacity(columns.len());
        for (op, a, b, required, adjust, fallback, labels) in columns {
            let ok = match op {
                DECIMAL => (1..=65).contains(&a) && b <= a && b <= 30,
                BIT1 => a == 1,
                BITS => (1..=8).contains(&a) && b <= 64 && b > 8 * (a - 1) && b <= 8 * a,
                TEXT => (1..=4).contains(&a) && b <= LATIN1,
                BYTES | BINARY | JSON_BINARY => (1..=4).contains(&a),
                DATETIME_MILLIS | DATETIME_MICROS | TIME | TIMESTAMP => a <= 6,
                ENUM => (a == 1 || a == 2) && !labels.is_empty(),
                SET => (1..=8).contains(&a) && labels.len() <= 64,
                FLOAT_ROUNDED => a <= 30,
                _ => op <= LAST_OP,
            };
            if !ok {
                return Err(crate::unsupported(format!(
                    "column operation {op} ({a}, {b})"
                )));
            }
            cols.push(Col {
                op,
                a,
                b,
                required,
                adjust,
                fallback,
                labels,
            });
        }
        let decimal = py.import("decimal")?.getattr("Decimal")?.unbind();
        let round = py.import("builtins")?.getattr("round")?.unbind();
        Ok(RowsDecoder {
            cols,
            decimal,
            round,
            json_text,
        })
    }

    /// The rows of one event: `body` the row images (after the columns-present bitmaps, before
    /// the checksum), `columns` the event's column count, `present` its columns-present bitmap
    /// and `present2` the after image's (an update) or None. A list of row tuples, or of
    /// `(before, after)` pairs for an update; `ValueError` for anything not decoded exactly.
    #[pyo3(signature = (body, columns, present, present2=None))]
    fn decode<'py>(
        &self,
        py: Python<'py>,
        body: &[u8],
        columns: usize,
        present: &[u8],
        present2: Option<&[u8]>,
    ) -> PyResult<Bound<'py, PyList>> {
        let n = self.cols.len();
        if columns != n {
            return Err(malformed(format!(
                "the rows event has {columns} columns, its table map {n}"
            )));
        }
        let width = n.div_ceil(8);
        if present.len() != width || present2.is_some_and(|p| p.len() != width) {
            return Err(malformed(
                "a columns-present bitmap of another width".to_string(),
            ));
        }
        // every bit of the bitmap, as the library counts it (BitCount), padding included
        let count = |p: &[u8]| p.iter().map(|b| b.count_ones() as usize).sum::<usize>();
        let (n1, n2) = (count(present), present2.map_or(0, count));
        let out = PyList::empty(py);
        let mut r = Reader { buf: body, at: 0 };
        if n1 + n2 == 0 && !body.is_empty() {
            // images of no bytes: the loop would never reach the end
            return Err(malformed("row images of no column".to_string()));
        }
        while r.at < body.len() {
            let before = self.image(py, &mut r, present, n1)?;
            match present2 {
                None => out.append(before)?,
                Some(p2) => {
                    let after = self.image(py, &mut r, p2, n2)?;
                    out.append(PyTuple::new(py, [before, after])?)?;
                }
            }
        }
        Ok(out)
    }
}
