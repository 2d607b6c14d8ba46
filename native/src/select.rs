//! `SelectDecoder`: the row packets of a MySQL/MariaDB text-protocol result set, read in bulk
//! from the connection's buffered reader, -> the snapshot's converted row tuples and event ids,
//! by a plan made once per table version (`sources/mysql/_snapshot_read.py`).
//!
//! The contract is the reference's, `_snapshot_read.python_chunk`: PyMySQL parses each row
//! (length-coded strings, its per-type converters) and the table version's `from_select`
//! converters convert it. Every value this side converts equals that result, of the same Python
//! type; a field it does not take exactly as the reference would (text that is not UTF-8, a
//! number or a date in a form the server does not print, a BIT value wider than its column)
//! sends the whole row, as its list of field bytes (`None` for NULL), to the `generic` callable,
//! whose result or exception is the row's: the Python reference decides it.
//!
//! Reading: `read(rfile, seq)` peeks at what the connection's reader holds, parses the complete
//! packets there and reads (consumes) exactly those bytes, until the result set's EOF packet or
//! an error packet, so the connection is left right after the result set, as PyMySQL leaves it.
//! A packet of 0xffffff bytes continues in the next (a row over 16 MB). Sequence numbers are
//! checked as PyMySQL checks them. An empty peek (the server closed the connection), a sequence
//! number out of order and a row packet that does not hold exactly the plan's columns raise
//! `ValueError`: the stream is then out of step and the caller closes the connection.
//!
//! Safe Rust, every index checked: malformed bytes raise, never crash; every loop step consumes
//! at least one byte of the reader or raises, so the work is bounded by what the server sends.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyFloat, PyList, PyString, PyTuple};

use crate::binlog::{adjusted, calendar_date, days_from_civil, zero_date, zoned_text};

// Operation codes, as `sources/mysql/_snapshot_read.py` numbers them.
const INT: u8 = 0;
const UINT64_DECIMAL: u8 = 1;
const DECIMAL: u8 = 2;
const FLOAT: u8 = 3;
const BIT1: u8 = 4;
const BITS: u8 = 5;
const TEXT: u8 = 6;
const BYTES: u8 = 7;
const DATE: u8 = 8;
const DATETIME_MILLIS: u8 = 9;
const DATETIME_MICROS: u8 = 10;
const TIMESTAMP: u8 = 11;
const TIME: u8 = 12;
const LAST_OP: u8 = TIME;

/// One column as the Python side describes it: (op, a, required, adjust_years, fallback).
type ColumnSpec = (u8, usize, bool, bool, Py<PyAny>);

struct Col {
    op: u8,
    /// DECIMAL: the scale; BITS: the bytes of the value; TIMESTAMP: the fraction's digits.
    a: usize,
    /// NOT NULL: a zero date takes `fallback` instead of None.
    required: bool,
    /// source.time_adjuster (DATE, DATETIME).
    adjust: bool,
    fallback: Py<PyAny>,
}

fn malformed(what: String) -> PyErr {
    PyValueError::new_err(what)
}

/// The EOF packet (without CLIENT_DEPRECATE_EOF, as PyMySQL connects): 0xfe, under 9 bytes.
fn is_eof(p: &[u8]) -> bool {
    p.first() == Some(&0xfe) && p.len() < 9
}

/// The row's fields: length-coded strings, 0xfb for NULL; None when the packet does not hold
/// exactly `n` of them.
fn fields(p: &[u8], n: usize) -> Option<Vec<Option<&[u8]>>> {
    let mut out = Vec::with_capacity(n);
    let mut at = 0usize;
    while at < p.len() {
        let c = p[at];
        at += 1;
        let len: u64 = match c {
            0xfb => {
                out.push(None);
                continue;
            }
            0xfc..=0xfe => {
                let size = match c {
                    0xfc => 2,
                    0xfd => 3,
                    _ => 8,
                };
                let b = p.get(at..at + size)?;
                at += size;
                b.iter().rev().fold(0u64, |v, x| (v << 8) | u64::from(*x))
            }
            0xff => return None,
            _ => u64::from(c),
        };
        let len = usize::try_from(len).ok()?;
        let end = at.checked_add(len)?;
        out.push(Some(p.get(at..end)?));
        at = end;
    }
    (out.len() == n).then_some(out)
}

/// ASCII digits (at most 18) as a number, None when `b` is not all digits.
fn digits(b: &[u8]) -> Option<i64> {
    if b.is_empty() || b.len() > 18 {
        return None;
    }
    b.iter().try_fold(0i64, |v, &c| {
        c.is_ascii_digit().then(|| v * 10 + i64::from(c - b'0'))
    })
}

/// An optional '-' then digits (what the server prints for an integer column), as i64.
fn integer(b: &[u8]) -> Option<i64> {
    let d = b.strip_prefix(b"-").unwrap_or(b);
    if d.is_empty() || !d.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// "YYYY-MM-DD" -> (y, m, d).
fn ymd(b: &[u8]) -> Option<(i64, i64, i64)> {
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    Some((digits(&b[0..4])?, digits(&b[5..7])?, digits(&b[8..10])?))
}

/// A fraction of 1 to 6 digits -> microseconds (PyMySQL pads it to 6 digits).
fn fraction(b: &[u8]) -> Option<i64> {
    if b.is_empty() || b.len() > 6 {
        return None;
    }
    Some(digits(b)? * 10i64.pow(6 - b.len() as u32))
}

/// "YYYY-MM-DD HH:MM:SS[.f]" -> (y, mo, d, h, mi, s, micros): the shape the server prints
/// (PyMySQL's pattern takes more, which the server never sends: those rows go to Python).
fn datetime(b: &[u8]) -> Option<(i64, i64, i64, i64, i64, i64, i64)> {
    if b.len() < 19 || b[10] != b' ' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (y, mo, d) = ymd(&b[..10])?;
    let (h, mi, s) = (
        digits(&b[11..13])?,
        digits(&b[14..16])?,
        digits(&b[17..19])?,
    );
    let micros = match b.get(19) {
        None => 0,
        Some(b'.') => fraction(&b[20..])?,
        Some(_) => return None,
    };
    Some((y, mo, d, h, mi, s, micros))
}

#[pyclass(frozen, module = "cdc._native")]
pub struct SelectDecoder {
    cols: Vec<Col>,
    /// The column whose integer value names the row in its event id (a single integer key).
    id_key: Option<usize>,
    /// The event id's text before the key: `s:<scope>:<table>:`.
    prefix: String,
    /// The reference conversion of a row's field bytes.
    generic: Py<PyAny>,
    decimal: Py<PyAny>,
}

impl SelectDecoder {
    /// One field's converted value, or None where the reference decides.
    fn value<'py>(
        &self,
        py: Python<'py>,
        col: &Col,
        b: &[u8],
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let int = |v: i64| -> PyResult<Option<Bound<'py, PyAny>>> {
            Ok(Some(v.into_pyobject(py)?.into_any()))
        };
        match col.op {
            INT => match integer(b) {
                Some(v) => int(v),
                None => Ok(None),
            },
            UINT64_DECIMAL => {
                if b.is_empty() || b.len() > 20 || !b.iter().all(u8::is_ascii_digit) {
                    return Ok(None);
                }
                let s = std::str::from_utf8(b).map_err(|e| malformed(e.to_string()))?;
                Ok(Some(self.decimal.bind(py).call1((s,))?))
            }
            DECIMAL => {
                // [-]digits[.digits of the scale]: Decimal(text) is then already quantized
                let body = b.strip_prefix(b"-").unwrap_or(b);
                let (whole, frac) = match body.iter().position(|&c| c == b'.') {
                    Some(i) => (&body[..i], Some(&body[i + 1..])),
                    None => (body, None),
                };
                let ok = !whole.is_empty()
                    && whole.iter().all(u8::is_ascii_digit)
                    && match frac {
                        None => col.a == 0,
                        Some(f) => f.len() == col.a && f.iter().all(u8::is_ascii_digit),
                    };
                if !ok {
                    return Ok(None);
                }
                let s = std::str::from_utf8(b).map_err(|e| malformed(e.to_string()))?;
                Ok(Some(self.decimal.bind(py).call1((s,))?))
            }
            FLOAT => {
                // the server prints digits, a sign, a point and an exponent only
                if !b
                    .iter()
                    .all(|&c| c.is_ascii_digit() || matches!(c, b'-' | b'+' | b'.' | b'e' | b'E'))
                {
                    return Ok(None);
                }
                match std::str::from_utf8(b)
                    .ok()
                    .and_then(|s| s.parse::<f64>().ok())
                {
                    Some(f) => Ok(Some(PyFloat::new(py, f).into_any())),
                    None => Ok(None),
                }
            }
            BIT1 => Ok(Some(PyBool::new(py, b != [0u8]).to_owned().into_any())),
            BITS => {
                // big-endian on the wire -> little-endian of the column's width
                let first = b.iter().position(|&c| c != 0).unwrap_or(b.len());
                let sig = &b[first..];
                if sig.len() > col.a {
                    return Ok(None);
                }
                let mut out: Vec<u8> = sig.iter().rev().copied().collect();
                out.resize(col.a, 0);
                Ok(Some(PyBytes::new(py, &out).into_any()))
            }
            TEXT => match std::str::from_utf8(b) {
                Ok(s) => Ok(Some(PyString::new(py, s).into_any())),
                Err(_) => Ok(None),
            },
            BYTES => Ok(Some(PyBytes::new(py, b).into_any())),
            DATE => {
                let Some((y, m, d)) = ymd(b) else {
                    return Ok(None);
                };
                if !calendar_date(y, m, d) {
                    return Ok(Some(zero_date(py, col.required, &col.fallback)));
                }
                int(days_from_civil(adjusted(y, col.adjust), m, d))
            }
            DATETIME_MILLIS | DATETIME_MICROS => {
                let Some((y, mo, d, h, mi, s, micros)) = datetime(b) else {
                    return Ok(None);
                };
                if !calendar_date(y, mo, d) || h > 23 || mi > 59 || s > 59 {
                    return Ok(Some(zero_date(py, col.required, &col.fallback)));
                }
                let days = days_from_civil(adjusted(y, col.adjust), mo, d);
                let us = (((days * 24 + h) * 60 + mi) * 60 + s) * 1_000_000 + micros;
                int(if col.op == DATETIME_MILLIS {
                    us.div_euclid(1000)
                } else {
                    us
                })
            }
            TIMESTAMP => {
                let Some((y, mo, d, h, mi, s, micros)) = datetime(b) else {
                    return Ok(None);
                };
                if !calendar_date(y, mo, d) || h > 23 || mi > 59 || s > 59 {
                    return Ok(Some(zero_date(py, col.required, &col.fallback)));
                }
                if y < 1000 {
                    return Ok(None); // strftime's %Y pads no year under 1000: Python's
                }
                let t = zoned_text((y, mo, d), (h, mi, s), micros, col.a);
                Ok(Some(PyString::new(py, &t).into_any()))
            }
            TIME => {
                // [-]H{1,3}:MM:SS[.f] -> signed microseconds
                let (neg, body) = match b.strip_prefix(b"-") {
                    Some(rest) => (true, rest),
                    None => (false, b),
                };
                let mut parts = body.splitn(3, |&c| c == b':');
                let (Some(hs), Some(ms), Some(rest)) = (parts.next(), parts.next(), parts.next())
                else {
                    return Ok(None);
                };
                let (ss, fs) = match rest.iter().position(|&c| c == b'.') {
                    Some(i) => (&rest[..i], Some(&rest[i + 1..])),
                    None => (rest, None),
                };
                if hs.len() > 3 || ms.is_empty() || ms.len() > 2 || ss.is_empty() || ss.len() > 2 {
                    return Ok(None);
                }
                let (Some(h), Some(m), Some(s)) = (digits(hs), digits(ms), digits(ss)) else {
                    return Ok(None);
                };
                let us = match fs {
                    None => 0,
                    Some(f) => match fraction(f) {
                        Some(v) => v,
                        None => return Ok(None),
                    },
                };
                let total = ((h * 60 + m) * 60 + s) * 1_000_000 + us;
                int(if neg { -total } else { total })
            }
            _ => Err(malformed(format!("operation {}", col.op))),
        }
    }

    /// The field bytes of a row for the generic path (bytes, None for NULL).
    fn raw<'py>(py: Python<'py>, fields: &[Option<&[u8]>]) -> PyResult<Bound<'py, PyList>> {
        let out = PyList::empty(py);
        for f in fields {
            match f {
                None => out.append(py.None())?,
                Some(b) => out.append(PyBytes::new(py, b))?,
            }
        }
        Ok(out)
    }

    /// One row packet: its tuple onto `rows`, its id (a str, or None: Python names it) onto
    /// `ids`.
    fn row(
        &self,
        py: Python<'_>,
        p: &[u8],
        rows: &Bound<'_, PyList>,
        ids: &Bound<'_, PyList>,
    ) -> PyResult<()> {
        let n = self.cols.len();
        let fields = fields(p, n).ok_or_else(|| {
            malformed(format!(
                "a row packet of {} bytes that does not hold {n} length-coded fields",
                p.len()
            ))
        })?;
        let mut values: Vec<Bound<'_, PyAny>> = Vec::with_capacity(n);
        let mut generic = false;
        for (col, f) in self.cols.iter().zip(fields.iter()) {
            match f {
                None => values.push(py.None().into_bound(py)),
                Some(b) => match self.value(py, col, b)? {
                    Some(v) => values.push(v),
                    None => {
                        generic = true;
                        break;
                    }
                },
            }
        }
        let id = match self.id_key.and_then(|k| fields[k]) {
            Some(b) if !generic => integer(b).map(|v| format!("{}{v}", self.prefix)),
            _ => None,
        };
        if generic {
            rows.append(self.generic.bind(py).call1((Self::raw(py, &fields)?,))?)?;
        } else {
            rows.append(PyTuple::new(py, values)?)?;
        }
        match id {
            Some(s) => ids.append(PyString::new(py, &s))?,
            None => ids.append(py.None())?,
        }
        Ok(())
    }
}

/// What ended a `read`.
enum End {
    Eof,
    Error(Vec<u8>),
    /// `limit` rows read, more to come.
    Limit,
}

#[pymethods]
impl SelectDecoder {
    /// `columns`: one `(op, a, required, adjust_years, fallback)` per column of the result;
    /// `id_key`: the column of a single integer key (its value names the row in its event id,
    /// `prefix` + the value) or None; `generic(fields)`: the reference conversion of a row's
    /// field bytes.
    #[new]
    #[pyo3(signature = (columns, id_key, prefix, generic))]
    fn new(
        py: Python<'_>,
        columns: Vec<ColumnSpec>,
        id_key: Option<usize>,
        prefix: String,
        generic: Py<PyAny>,
    ) -> PyResult<Self> {
        let mut cols = Vec::with_capacity(columns.len());
        for (op, a, required, adjust, fallback) in columns {
            let ok = match op {
                DECIMAL => a <= 30,
                BITS => (1..=8).contains(&a),
                TIMESTAMP => a <= 6,
                _ => op <= LAST_OP,
            };
            if !ok {
                return Err(crate::unsupported(format!("column operation {op} ({a})")));
            }
            cols.push(Col {
                op,
                a,
                required,
                adjust,
                fallback,
            });
        }
        if id_key.is_some_and(|k| k >= cols.len() || cols[k].op != INT) {
            return Err(crate::unsupported(format!("id key {id_key:?}")));
        }
        let decimal = py.import("decimal")?.getattr("Decimal")?.unbind();
        Ok(SelectDecoder {
            cols,
            id_key,
            prefix,
            generic,
            decimal,
        })
    }

    /// Read the rest of a result set from `rfile` (the connection's buffered reader, after the
    /// column definitions and their EOF, or after an earlier `read`), whose next packet has
    /// sequence number `seq`, at most `limit` rows (0: all). `(rows, ids, last, seq, end)`: the
    /// converted rows, their event ids (str, or None for Python's `snapshot_event_id`), the last
    /// row's field bytes (None: no row), the sequence number of the next packet, and what ended
    /// the read: None the result set's EOF, True the limit (the rest is still to read), bytes
    /// the payload of the error packet the server ended the result with.
    #[allow(clippy::type_complexity)]
    #[pyo3(signature = (rfile, seq, limit=0))]
    fn read<'py>(
        &self,
        py: Python<'py>,
        rfile: &Bound<'py, PyAny>,
        seq: u8,
        limit: usize,
    ) -> PyResult<(
        Bound<'py, PyList>,
        Bound<'py, PyList>,
        Bound<'py, PyAny>,
        u8,
        Bound<'py, PyAny>,
    )> {
        let rows = PyList::empty(py);
        let ids = PyList::empty(py);
        let mut seq = seq;
        let mut acc: Vec<u8> = Vec::new(); // read from rfile, not yet a complete packet
        let mut payload: Vec<u8> = Vec::new(); // a packet of 0xffffff bytes and its sequels
        let mut last: Vec<u8> = Vec::new();
        let mut any = false;
        let end = loop {
            let chunk = rfile.call_method1("peek", (1,))?;
            let chunk = chunk.cast::<PyBytes>()?.as_bytes();
            if chunk.is_empty() {
                return Err(malformed(format!(
                    "the connection ended inside a result set ({} rows read)",
                    rows.len()
                )));
            }
            let before = acc.len();
            let data: &[u8] = if before == 0 {
                chunk
            } else {
                acc.extend_from_slice(chunk);
                &acc
            };
            let mut at = 0usize;
            let mut ended: Option<End> = None;
            while let Some(h) = data.get(at..at + 4) {
                let len = usize::from(h[0]) | usize::from(h[1]) << 8 | usize::from(h[2]) << 16;
                if data.len() - at - 4 < len {
                    break;
                }
                if h[3] != seq {
                    return Err(malformed(format!(
                        "packet sequence number wrong: got {} expected {seq}",
                        h[3]
                    )));
                }
                seq = seq.wrapping_add(1);
                let body = &data[at + 4..at + 4 + len];
                at += 4 + len;
                if len == 0xff_ffff {
                    payload.extend_from_slice(body);
                    continue;
                }
                let whole: &[u8] = if payload.is_empty() {
                    body
                } else {
                    payload.extend_from_slice(body);
                    &payload
                };
                if is_eof(whole) {
                    ended = Some(End::Eof);
                } else if whole.first() == Some(&0xff) {
                    ended = Some(End::Error(whole.to_vec()));
                } else {
                    self.row(py, whole, &rows, &ids)?;
                    last.clear();
                    last.extend_from_slice(whole);
                    any = true;
                    if rows.len() == limit {
                        ended = Some(End::Limit);
                    }
                }
                payload.clear();
                if ended.is_some() {
                    break;
                }
            }
            // consume what was parsed: up to the end of the result, else all that was peeked
            let consumed = if ended.is_some() {
                at - before
            } else {
                chunk.len()
            };
            rfile.call_method1("read", (consumed,))?;
            if let Some(e) = ended {
                break e;
            }
            if before == 0 {
                acc.extend_from_slice(&chunk[at..]);
            } else {
                acc.drain(..at);
            }
        };
        let last_fields = if any {
            let f = fields(&last, self.cols.len())
                .ok_or_else(|| malformed("the last row packet".to_string()))?;
            Self::raw(py, &f)?.into_any()
        } else {
            py.None().into_bound(py)
        };
        let error = match end {
            End::Eof => py.None().into_bound(py),
            End::Error(p) => PyBytes::new(py, &p).into_any(),
            End::Limit => PyBool::new(py, true).to_owned().into_any(),
        };
        Ok((rows, ids, last_fields, seq, error))
    }
}
