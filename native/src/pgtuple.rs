//! `TupleDecoder`: pgoutput TupleData -> the row tuple, compiled once per relation version.
//!
//! The contract is `sources/postgres/_tuples.py`'s for its specialised decoders: `decode(buf, i)`
//! returns exactly what the generic path (`parse_tuple` + `convert_row`) returns for the same
//! bytes, `(row, offset after the tuple)`, or what that path raises. Anything the compiled body
//! does not handle itself (a truncated or malformed message, a column count that differs, a kind
//! other than 'n' / 'u' / 't', bytes that are not UTF-8, a converter that raises, a converter's
//! None in a required column, a `buf` that is not `bytes`) makes it call the generic decoder it
//! was given on the same arguments, and return or raise whatever that does.
//!
//! Per column the Python side passes a kind: the conversions done here (integers, floats,
//! booleans, text, date, time, timestamp, UTC timestamptz, interval, hex bytea, numeric, money,
//! text[] and integer[] text
//! already at the column's scale) take only the canonical texts the server prints and give the converter's exact
//! result; any other text of those columns, and every column of another kind, is converted by
//! the column's own Python converter, so values are the reference's by construction.
//!
//! Safe Rust, every index checked: malformed bytes end in the generic path, never in a crash.

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

// Column kinds, as `_tuples._native_kind` numbers them.
const TEXT: u8 = 0;
const INT: u8 = 1;
const FLOAT: u8 = 2;
const BOOL: u8 = 3;
const BIT1: u8 = 4;
const DATE: u8 = 5;
const TS_MICROS: u8 = 6;
const TS_MILLIS: u8 = 7;
const TIMESTAMPTZ: u8 = 8;
const DECIMAL: u8 = 9;
#[allow(dead_code)] // the numbering's; `value` calls the converter for any kind it does not convert
const CONVERT: u8 = 10;
const TIME_MICROS: u8 = 11;
const TIME_MILLIS: u8 = 12;
const BYTEA: u8 = 13;
const INTERVAL: u8 = 14;
const VARIABLE_DECIMAL: u8 = 15;
const MONEY: u8 = 16;
const TEXT_ARRAY: u8 = 17;
const INT_ARRAY: u8 = 18;

// Debezium's infinities, as `cdc.sources.postgres._types` defines them (the differential tests
// compare them with the converters' values).
const TS_INFINITY_US: i64 = 9_223_372_036_825_200_000;
const TS_MINUS_INFINITY_US: i64 = -9_223_372_036_832_400_000;
const DATE_INFINITY: i64 = -2_147_472_692;
const DATE_MINUS_INFINITY: i64 = -2_147_472_691;
const DAY_US: i64 = 86_400_000_000;
const MONTH_US: i128 = 2_629_800_000_000;

/// One column as the Python side describes it: (kind, param, null, unchanged, convert, required).
type ColumnSpec = (u8, usize, Py<PyAny>, Py<PyAny>, Py<PyAny>, bool);

struct Col {
    kind: u8,
    /// TIMESTAMPTZ: the fraction digits the converter pads to (0: none); DECIMAL: the scale.
    param: usize,
    /// The value of a null ('n') and of an unchanged TOASTed value ('u'), decided in Python.
    null: Py<PyAny>,
    unchanged: Py<PyAny>,
    /// The column's converter (None for text).
    convert: Py<PyAny>,
    /// A converter's None is the generic path's error in a required column.
    required: bool,
}

/// Something the compiled body leaves to the generic path.
pub(crate) struct Fallback;

impl From<PyErr> for Fallback {
    fn from(_: PyErr) -> Self {
        Fallback
    }
}

#[pyclass(frozen, module = "cdc._native")]
pub struct TupleDecoder {
    cols: Vec<Col>,
    /// The reference decoder: called on whatever the compiled body does not handle.
    generic: Py<PyAny>,
    decimal: Py<PyAny>,
}

fn digits(b: &[u8]) -> bool {
    !b.is_empty() && b.iter().all(u8::is_ascii_digit)
}

fn num(b: &[u8]) -> i64 {
    b.iter().fold(0, |n, &d| n * 10 + i64::from(d - b'0'))
}

/// `-?[0-9]{1,18}`: fits an i64; `int()` gives the same number.
fn parse_int(s: &[u8]) -> Option<i64> {
    let (neg, d) = match s.first() {
        Some(b'-') => (true, &s[1..]),
        _ => (false, s),
    };
    if d.len() > 18 || !digits(d) {
        return None;
    }
    let n = num(d);
    Some(if neg { -n } else { n })
}

/// The server's float texts: `-?D+(.D+)?(e[+-]?D+)?`, NaN and the infinities; Rust's parse is
/// correctly rounded, as `float()` is. Anything else: None (the converter decides).
fn parse_float(s: &str) -> Option<f64> {
    match s {
        "NaN" => return Some(f64::NAN),
        "Infinity" => return Some(f64::INFINITY),
        "-Infinity" => return Some(f64::NEG_INFINITY),
        _ => {}
    }
    let b = s.as_bytes();
    if b.len() > 64 {
        return None;
    }
    let mut i = usize::from(b.first() == Some(&b'-'));
    let start = i;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    if i == start {
        return None;
    }
    if i < b.len() && b[i] == b'.' {
        i += 1;
        let f = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == f {
            return None;
        }
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            i += 1;
        }
        let e = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == e {
            return None;
        }
    }
    if i != b.len() {
        return None;
    }
    s.parse::<f64>().ok()
}

/// Days since 1970-01-01 of a proleptic Gregorian date (`_types._days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468
}

fn month_days(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// "YYYY-MM-DD" of a date `datetime.date` accepts (years 1..9999): days since 1970.
fn parse_date(b: &[u8]) -> Option<i64> {
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let (y, m, d) = (&b[0..4], &b[5..7], &b[8..10]);
    if !(digits(y) && digits(m) && digits(d)) {
        return None;
    }
    let (y, m, d) = (num(y), num(m), num(d));
    if y < 1 || !(1..=12).contains(&m) || d < 1 || d > month_days(y, m) {
        return None;
    }
    Some(days_from_civil(y, m, d))
}

/// "YYYY-MM-DD HH:MM:SS[.f{1,6}]" that `datetime.fromisoformat` accepts: microseconds since
/// 1970 (what `_ts_micros` computes from it).
fn parse_timestamp(b: &[u8]) -> Option<i64> {
    if b.len() < 19 || b[10] != b' ' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let days = parse_date(&b[..10])?;
    let (h, mi, s) = (&b[11..13], &b[14..16], &b[17..19]);
    if !(digits(h) && digits(mi) && digits(s)) {
        return None;
    }
    let (h, mi, s) = (num(h), num(mi), num(s));
    if h > 23 || mi > 59 || s > 59 {
        return None;
    }
    let mut us = 0;
    if b.len() > 19 {
        let f = &b[20..];
        if b[19] != b'.' || f.len() > 6 || !digits(f) {
            return None;
        }
        us = num(f) * 10_i64.pow(6 - f.len() as u32);
    }
    Some(days * DAY_US + ((h * 60 + mi) * 60 + s) * 1_000_000 + us)
}

/// "HH:MM:SS[.f{1,6}]": microseconds of the day, as `_time_us` computes them (24:00:00 too).
fn parse_time(b: &[u8]) -> Option<i64> {
    if b.len() < 8 || b[2] != b':' || b[5] != b':' {
        return None;
    }
    let (h, mi, s) = (&b[0..2], &b[3..5], &b[6..8]);
    if !(digits(h) && digits(mi) && digits(s)) {
        return None;
    }
    let mut us = 0;
    if b.len() > 8 {
        let f = &b[9..];
        if b[8] != b'.' || f.len() > 6 || !digits(f) {
            return None;
        }
        us = num(f) * 10_i64.pow(6 - f.len() as u32);
    }
    Some(((num(h) * 60 + num(mi)) * 60 + num(s)) * 1_000_000 + us)
}

/// `_types._interval` of an ASCII text its regular expression matches, with components of at
/// most 18 digits (others: None, the converter decides): "P1Y2M3DT4H5M6.5S", any part left
/// out, each number signed, the seconds' sign before their digits, the fraction cut at 6 digits.
fn parse_interval(b: &[u8]) -> Option<i64> {
    /// `-?\d+` then `unit` at `*i`: the number, `*i` moved past the unit; else `*i` unchanged.
    fn part(b: &[u8], i: &mut usize, unit: u8) -> Option<Option<i128>> {
        let mut j = *i + usize::from(b.get(*i) == Some(&b'-'));
        let start = j;
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        if j == start || b.get(j) != Some(&unit) {
            return Some(None);
        }
        if j - start > 18 {
            return None;
        }
        let n = i128::from(num(&b[start..j]));
        let neg = start > *i;
        *i = j + 1;
        Some(Some(if neg { -n } else { n }))
    }
    if b.first() != Some(&b'P') {
        return None;
    }
    let mut i = 1;
    let y = part(b, &mut i, b'Y')?.unwrap_or(0);
    let mo = part(b, &mut i, b'M')?.unwrap_or(0);
    let d = part(b, &mut i, b'D')?.unwrap_or(0);
    let mut us = (y * 12 + mo) * MONTH_US + d * i128::from(DAY_US);
    if b.get(i) == Some(&b'T') {
        i += 1;
        let h = part(b, &mut i, b'H')?.unwrap_or(0);
        let mi = part(b, &mut i, b'M')?.unwrap_or(0);
        us += (h * 60 + mi) * 60_000_000;
        // (-?)(\d+)(?:\.(\d+))?S
        let mut j = i + usize::from(b.get(i) == Some(&b'-'));
        let start = j;
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        let whole = &b[start..j];
        let mut frac: &[u8] = &[];
        if !whole.is_empty() && b.get(j) == Some(&b'.') {
            let f = j + 1;
            let mut k = f;
            while k < b.len() && b[k].is_ascii_digit() {
                k += 1;
            }
            if k > f {
                frac = &b[f..k];
                j = k;
            }
        }
        if !whole.is_empty() && b.get(j) == Some(&b'S') {
            if whole.len() > 18 {
                return None;
            }
            let f = &frac[..frac.len().min(6)];
            let t = i128::from(num(whole)) * 1_000_000
                + i128::from(num(f) * 10_i64.pow(6 - f.len() as u32));
            us += if start > i { -t } else { t };
            i = j + 1;
        }
    }
    if i != b.len() {
        return None;
    }
    Some(us.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64)
}

/// `_types._variable_decimal` of "-?D+(.D+)?" with at most 36 digits: (scale, unscaled), the
/// fraction's trailing zeros dropped first.
fn parse_variable_decimal(b: &[u8]) -> Option<(usize, i128)> {
    let d = b.strip_prefix(b"-").unwrap_or(b);
    let (int, frac) = match d.iter().position(|&c| c == b'.') {
        Some(k) => (&d[..k], &d[k + 1..]),
        None => (d, &b""[..]),
    };
    if !digits(int) || (d.len() > int.len() && !digits(frac)) || int.len() + frac.len() > 36 {
        return None;
    }
    let frac = &frac[..frac.iter().rposition(|&c| c != b'0').map_or(0, |k| k + 1)];
    let n = int
        .iter()
        .chain(frac)
        .fold(0_i128, |n, &c| n * 10 + i128::from(c - b'0'));
    Some((frac.len(), if d.len() < b.len() { -n } else { n }))
}

/// `cdc.avro.unscaled_bytes`: minimal big-endian two's complement.
fn unscaled_bytes(n: i128) -> Vec<u8> {
    let m = if n < 0 { -(n + 1) } else { n };
    let len = (128 - m.leading_zeros() as usize) / 8 + 1;
    n.to_be_bytes()[16 - len..].to_vec()
}

/// `_types._money` of an ASCII text with 1 to 18 digits: the digits are the cents, negative when
/// the text holds "-" or "("; as the text of a Decimal, "<cents>E-2" (what `scaleb(-2)` gives).
fn money(b: &[u8]) -> Option<String> {
    if !b.is_ascii() {
        return None;
    }
    let cents: Vec<u8> = b.iter().copied().filter(u8::is_ascii_digit).collect();
    if cents.is_empty() || cents.len() > 18 {
        return None;
    }
    let n = num(&cents);
    let neg = b.contains(&b'-') || b.contains(&b'(');
    Some(format!("{}E-2", if neg { -n } else { n }))
}

/// The elements of a one-dimensional array literal without quotes, braces inside or explicit
/// bounds ("{1,NULL,3}"), as `_types.parse_array` splits it (None: NULL); None for any other
/// text (the converter decides).
fn simple_array(s: &str) -> Option<Vec<Option<&str>>> {
    let body = s.strip_prefix('{')?.strip_suffix('}')?;
    if body.contains(['"', '{', '}']) {
        return None;
    }
    if body.is_empty() {
        return Some(Vec::new());
    }
    Some(
        body.split(',')
            .map(|x| (x != "NULL").then_some(x))
            .collect(),
    )
}

/// The value of a hex digit (either case).
pub(crate) fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// bytea's hex output ("\\x0aff"), as `bytes.fromhex` reads it.
fn parse_hex(b: &[u8]) -> Option<Vec<u8>> {
    let h = b.strip_prefix(b"\\x")?;
    if h.len() % 2 != 0 {
        return None;
    }
    h.chunks_exact(2)
        .map(|p| Some(nibble(p[0])? << 4 | nibble(p[1])?))
        .collect()
}

/// `_timestamptz_padded(digits)` (or `_timestamptz` for 0) of an ASCII text in the server's UTC
/// form ("2024-01-02 03:04:05.12+00"): the converter's shortcut, done on the same characters.
fn timestamptz(s: &str, pad: usize) -> Option<String> {
    let b = s.as_bytes();
    if !s.is_ascii() || b.len() < 14 || !s.ends_with("+00") || b[10] != b' ' || b[4] != b'-' {
        return None;
    }
    let mid = &s[11..s.len() - 3];
    let mut out = String::with_capacity(s.len() + pad + 2);
    out.push_str(&s[..10]);
    out.push('T');
    out.push_str(mid);
    if pad > 0 {
        // out.find(".", 17): the same index in s past position 10
        match s.get(17..).and_then(|t| t.find('.')).map(|k| k + 17) {
            None => {
                out.push('.');
                out.extend(std::iter::repeat_n('0', pad));
            }
            Some(dot) => {
                // out is s[:-3] + 'Z' long: len(out) - dot - 2 fraction digits
                let have = (s.len() - 2) as isize - dot as isize - 2;
                let n = pad as isize - have;
                if n > 0 {
                    out.extend(std::iter::repeat_n('0', n as usize));
                }
            }
        }
    }
    out.push('Z');
    Some(out)
}

/// numeric(p,s) text exactly at the column's scale, as the server prints it: `Decimal(text)` is
/// already what the converter's quantize returns.
fn at_scale(b: &[u8], scale: usize) -> bool {
    if b.len() >= 1000 {
        return false;
    }
    let d = match b.first() {
        Some(b'-') => &b[1..],
        _ => b,
    };
    if scale == 0 {
        return digits(d);
    }
    d.len() > scale + 1
        && d[d.len() - scale - 1] == b'.'
        && digits(&d[..d.len() - scale - 1])
        && digits(&d[d.len() - scale..])
}

impl TupleDecoder {
    fn call<'py>(&self, py: Python<'py>, c: &Col, s: &str) -> Result<Bound<'py, PyAny>, Fallback> {
        let v = c.convert.bind(py).call1((s,))?;
        if c.required && v.is_none() {
            return Err(Fallback);
        }
        Ok(v)
    }

    fn value<'py>(
        &self,
        py: Python<'py>,
        c: &Col,
        raw: &[u8],
    ) -> Result<Bound<'py, PyAny>, Fallback> {
        let s = std::str::from_utf8(raw).map_err(|_| Fallback)?;
        Ok(match c.kind {
            TEXT => PyString::new(py, s).into_any(),
            INT => match parse_int(raw) {
                Some(n) => PyInt::new(py, n).into_any(),
                None => self.call(py, c, s)?,
            },
            FLOAT => match parse_float(s) {
                Some(f) => PyFloat::new(py, f).into_any(),
                None => self.call(py, c, s)?,
            },
            BOOL | BIT1 => {
                let (t, f) = if c.kind == BOOL {
                    ("t", "f")
                } else {
                    ("1", "0")
                };
                if s == t {
                    PyBool::new(py, true).to_owned().into_any()
                } else if s == f {
                    PyBool::new(py, false).to_owned().into_any()
                } else {
                    self.call(py, c, s)?
                }
            }
            DATE => match (parse_date(raw), s) {
                (Some(d), _) => PyInt::new(py, d).into_any(),
                (None, "infinity") => PyInt::new(py, DATE_INFINITY).into_any(),
                (None, "-infinity") => PyInt::new(py, DATE_MINUS_INFINITY).into_any(),
                _ => self.call(py, c, s)?,
            },
            TS_MICROS | TS_MILLIS => {
                let us = match (parse_timestamp(raw), s) {
                    (Some(us), _) => us,
                    (None, "infinity") => TS_INFINITY_US,
                    (None, "-infinity") => TS_MINUS_INFINITY_US,
                    _ => return self.call(py, c, s),
                };
                let v = if c.kind == TS_MILLIS {
                    us.div_euclid(1000)
                } else {
                    us
                };
                PyInt::new(py, v).into_any()
            }
            TIMESTAMPTZ => match timestamptz(s, c.param) {
                Some(t) => PyString::new(py, &t).into_any(),
                None if s == "infinity" || s == "-infinity" => PyString::new(py, s).into_any(),
                None => self.call(py, c, s)?,
            },
            TIME_MICROS | TIME_MILLIS => match parse_time(raw) {
                Some(us) => {
                    PyInt::new(py, if c.kind == TIME_MILLIS { us / 1000 } else { us }).into_any()
                }
                None => self.call(py, c, s)?,
            },
            INTERVAL => match (parse_interval(raw), s) {
                (Some(us), _) => PyInt::new(py, us).into_any(),
                (None, "infinity") => PyInt::new(py, i64::MAX).into_any(),
                (None, "-infinity") => PyInt::new(py, i64::MIN).into_any(),
                _ => self.call(py, c, s)?,
            },
            VARIABLE_DECIMAL => match parse_variable_decimal(raw) {
                Some((scale, n)) => {
                    let d = PyDict::new(py);
                    d.set_item(intern!(py, "scale"), scale)?;
                    d.set_item(intern!(py, "value"), PyBytes::new(py, &unscaled_bytes(n)))?;
                    d.into_any()
                }
                None => self.call(py, c, s)?,
            },
            BYTEA => match parse_hex(raw) {
                Some(b) => PyBytes::new(py, &b).into_any(),
                None => self.call(py, c, s)?,
            },
            TEXT_ARRAY | INT_ARRAY => {
                let Some(items) = simple_array(s) else {
                    return self.call(py, c, s);
                };
                let out = PyList::empty(py);
                for x in items {
                    match x {
                        None => out.append(py.None())?,
                        Some(x) if c.kind == TEXT_ARRAY => out.append(PyString::new(py, x))?,
                        Some(x) => match parse_int(x.as_bytes()) {
                            Some(n) => out.append(PyInt::new(py, n))?,
                            None => return self.call(py, c, s),
                        },
                    }
                }
                out.into_any()
            }
            MONEY => match money(raw) {
                Some(t) => self.decimal.bind(py).call1((t,))?,
                None => self.call(py, c, s)?,
            },
            DECIMAL if at_scale(raw, c.param) => self.decimal.bind(py).call1((s,))?,
            // CONVERT, a numeric(p,s) text off the column's scale (kinds are checked in new())
            _ => self.call(py, c, s)?,
        })
    }

    /// The converted row of one text value per column (None: SQL null), as `fast` converts a
    /// tuple whose every column is 't' or 'n' (COPY's text rows, `copy.rs`).
    pub(crate) fn convert<'py>(
        &self,
        py: Python<'py>,
        fields: &[Option<&[u8]>],
    ) -> Result<Bound<'py, PyTuple>, Fallback> {
        if fields.len() != self.cols.len() {
            return Err(Fallback);
        }
        let mut out: Vec<Bound<'py, PyAny>> = Vec::with_capacity(fields.len());
        for (c, f) in self.cols.iter().zip(fields) {
            out.push(match f {
                Some(raw) => self.value(py, c, raw)?,
                None => c.null.bind(py).clone(),
            });
        }
        Ok(PyTuple::new(py, out)?)
    }

    fn fast<'py>(
        &self,
        py: Python<'py>,
        buf: &[u8],
        i: usize,
    ) -> Result<(Bound<'py, PyTuple>, usize), Fallback> {
        let n = self.cols.len();
        let head = buf.get(i..i + 2).ok_or(Fallback)?;
        if usize::from(u16::from_be_bytes([head[0], head[1]])) != n {
            return Err(Fallback);
        }
        let mut i = i + 2;
        let mut out: Vec<Bound<'py, PyAny>> = Vec::with_capacity(n);
        for c in &self.cols {
            match buf.get(i) {
                Some(b't') => {
                    let l = buf.get(i + 1..i + 5).ok_or(Fallback)?;
                    let len = u32::from_be_bytes([l[0], l[1], l[2], l[3]]) as usize;
                    let end = (i + 5).checked_add(len).ok_or(Fallback)?;
                    let raw = buf.get(i + 5..end).ok_or(Fallback)?;
                    out.push(self.value(py, c, raw)?);
                    i = end;
                }
                Some(b'n') => {
                    out.push(c.null.bind(py).clone());
                    i += 1;
                }
                Some(b'u') => {
                    out.push(c.unchanged.bind(py).clone());
                    i += 1;
                }
                _ => return Err(Fallback),
            }
        }
        Ok((PyTuple::new(py, out)?, i))
    }
}

#[pymethods]
impl TupleDecoder {
    /// `columns`: one `(kind, param, null, unchanged, convert, required)` per column (see
    /// `_tuples.native_decoder`); `generic(buf, i)`: the reference decoder of the same tuples.
    #[new]
    fn new(py: Python<'_>, columns: Vec<ColumnSpec>, generic: Py<PyAny>) -> PyResult<Self> {
        let mut cols = Vec::with_capacity(columns.len());
        for (kind, param, null, unchanged, convert, required) in columns {
            if kind > INT_ARRAY
                || (kind == TIMESTAMPTZ && param > 6)
                || (kind == DECIMAL && param > 1000)
            {
                return Err(crate::unsupported(format!("column kind {kind} ({param})")));
            }
            if kind != TEXT && convert.is_none(py) {
                return Err(crate::unsupported(format!(
                    "column kind {kind} without a converter"
                )));
            }
            cols.push(Col {
                kind,
                param,
                null,
                unchanged,
                convert,
                required,
            });
        }
        if cols.len() > usize::from(u16::MAX) {
            return Err(crate::unsupported(format!("{} columns", cols.len())));
        }
        let decimal = py.import("decimal")?.getattr("Decimal")?.unbind();
        Ok(TupleDecoder {
            cols,
            generic,
            decimal,
        })
    }

    /// `(row, offset after the tuple)` of the TupleData at `i` of `buf`: the generic path's
    /// result or exception (see the module's documentation).
    fn decode<'py>(
        &self,
        buf: &Bound<'py, PyAny>,
        i: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = buf.py();
        if let (Ok(b), Ok(at)) = (buf.cast::<PyBytes>(), i.extract::<usize>()) {
            if let Ok((row, end)) = self.fast(py, b.as_bytes(), at) {
                return Ok((row, end).into_pyobject(py)?.into_any());
            }
        }
        self.generic.bind(py).call1((buf, i))
    }
}
