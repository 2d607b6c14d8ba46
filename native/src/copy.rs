//! `CopyDecoder`: COPY's text rows -> the snapshot's row tuples and event ids, by a
//! `TupleDecoder`'s plan.
//!
//! COPY ... TO STDOUT in text format prints each value with the type's output function, as
//! pgoutput's text tuples carry it, so one per-column plan converts both: the row tuples are the
//! ones `TupleDecoder` gives for a tuple of the same texts, which are `_tuples.convert_row`'s. A
//! row is one line: fields split by tabs, `\N` for null, and backslash escapes (`\b \f \n \r \t
//! \v \\`, octal `\ooo`, hex `\xhh`, any other `\c` is `c`) undone before conversion.
//!
//! A row the compiled body does not convert itself (a field count that differs, text that is not
//! UTF-8, a value the plan leaves to the generic path) is handed, as its list of field texts
//! (`str`, `bytes` where not UTF-8, `None` for null), to the `generic` callable, whose result or
//! exception is the row's: the Python reference decides it. Safe Rust, every index checked.

use std::borrow::Cow;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};

use crate::pgtuple::{nibble, TupleDecoder};

#[pyclass(frozen, module = "cdc._native")]
pub struct CopyDecoder {
    decoder: Py<TupleDecoder>,
    /// Columns the plan converts; the row's fields after them (`extra`) are not converted.
    width: usize,
    extra: usize,
    /// The fields (indexes into the row, extra fields too) that name the row in its event id.
    keys: Vec<usize>,
    /// The event id's text before the key: `s:<scope>:<table>:`.
    prefix: String,
    /// True: the id is `prefix` + the single key field whatever it holds (a tuple id); false:
    /// only a single key matching `model._PLAIN_KEY` is written so, others are left to Python.
    always: bool,
    /// The reference conversion of a row's field texts.
    generic: Py<PyAny>,
}

/// `^[0-9A-Za-z_.+-]{1,40}$` without Python's "before a final newline" (such keys go to Python,
/// which gives them their id).
fn plain(s: &[u8]) -> bool {
    !s.is_empty()
        && s.len() <= 40
        && s.iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'+' | b'-'))
}

/// One field of a COPY text row, escapes undone; None for `\N`.
fn field(raw: &[u8]) -> Option<Cow<'_, [u8]>> {
    if raw == b"\\N" {
        return None;
    }
    if !raw.contains(&b'\\') {
        return Some(Cow::Borrowed(raw));
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let c = raw[i];
        i += 1;
        if c != b'\\' || i == raw.len() {
            out.push(c);
            continue;
        }
        let e = raw[i];
        i += 1;
        match e {
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(11),
            b'0'..=b'7' => {
                let mut v = u32::from(e - b'0');
                for _ in 0..2 {
                    match raw.get(i) {
                        Some(&d @ b'0'..=b'7') => {
                            v = v * 8 + u32::from(d - b'0');
                            i += 1;
                        }
                        _ => break,
                    }
                }
                out.push((v & 0xff) as u8);
            }
            b'x' => match raw.get(i).and_then(|&d| nibble(d)) {
                Some(h) => {
                    i += 1;
                    let mut v = h;
                    if let Some(l) = raw.get(i).and_then(|&d| nibble(d)) {
                        v = v * 16 + l;
                        i += 1;
                    }
                    out.push(v);
                }
                None => out.push(b'x'),
            },
            other => out.push(other),
        }
    }
    Some(Cow::Owned(out))
}

impl CopyDecoder {
    /// The row's fields as Python values for the generic path: str, bytes (not UTF-8), None.
    fn texts<'py>(py: Python<'py>, fields: &[Option<Cow<'_, [u8]>>]) -> Bound<'py, PyList> {
        let out = PyList::empty(py);
        for f in fields {
            let v = match f {
                None => py.None().into_bound(py),
                Some(b) => match std::str::from_utf8(b) {
                    Ok(s) => PyString::new(py, s).into_any(),
                    Err(_) => PyBytes::new(py, b).into_any(),
                },
            };
            // appending to a new list cannot fail
            let _ = out.append(v);
        }
        out
    }

    /// The event id (a str) where this side writes it, else the tuple of key texts.
    fn id<'py>(
        &self,
        py: Python<'py>,
        fields: &[Option<Cow<'_, [u8]>>],
    ) -> PyResult<Bound<'py, PyAny>> {
        if self.keys.len() == 1 {
            if let Some(Some(k)) = fields.get(self.keys[0]) {
                if self.always || plain(k) {
                    if let Ok(s) = std::str::from_utf8(k) {
                        let mut id = String::with_capacity(self.prefix.len() + s.len());
                        id.push_str(&self.prefix);
                        id.push_str(s);
                        return Ok(PyString::new(py, &id).into_any());
                    }
                }
            }
        }
        self.key(py, fields)
    }

    /// The key fields' texts (None for a null or absent one; lossy where not UTF-8).
    fn key<'py>(
        &self,
        py: Python<'py>,
        fields: &[Option<Cow<'_, [u8]>>],
    ) -> PyResult<Bound<'py, PyAny>> {
        let items: Vec<Bound<'py, PyAny>> = self
            .keys
            .iter()
            .map(|&k| match fields.get(k) {
                Some(Some(b)) => PyString::new(py, &String::from_utf8_lossy(b)).into_any(),
                _ => py.None().into_bound(py),
            })
            .collect();
        Ok(PyTuple::new(py, items)?.into_any())
    }
}

#[pymethods]
impl CopyDecoder {
    /// `decoder`: the relation version's plan (a `TupleDecoder` of complete tuples); `extra`:
    /// fields after the columns (a tuple id); `keys`, `prefix`, `always`: the event id (see the
    /// struct); `generic(fields)`: the reference conversion of a row's field texts.
    #[new]
    fn new(
        decoder: Py<TupleDecoder>,
        width: usize,
        extra: usize,
        keys: Vec<usize>,
        prefix: String,
        always: bool,
        generic: Py<PyAny>,
    ) -> PyResult<Self> {
        if keys.iter().any(|&k| k >= width + extra) {
            return Err(crate::unsupported(format!(
                "key fields {keys:?} of {width} + {extra} fields"
            )));
        }
        Ok(CopyDecoder {
            decoder,
            width,
            extra,
            keys,
            prefix,
            always,
            generic,
        })
    }

    /// `(rows, ids, last_key)` of the complete text rows in `data` (each ends with a newline):
    /// each row's tuple, its event id (a str, or the tuple of its key texts for Python's
    /// `snapshot_event_id`), and the last row's key texts (None when `data` has no row).
    #[allow(clippy::type_complexity)]
    fn decode<'py>(
        &self,
        py: Python<'py>,
        data: &[u8],
    ) -> PyResult<(Bound<'py, PyList>, Bound<'py, PyList>, Bound<'py, PyAny>)> {
        let rows = PyList::empty(py);
        let ids = PyList::empty(py);
        let dec = self.decoder.get();
        let mut fields: Vec<Option<Cow<'_, [u8]>>> = Vec::with_capacity(self.width + self.extra);
        let body = data.strip_suffix(b"\n").unwrap_or(data);
        if data.is_empty() {
            return Ok((rows, ids, py.None().into_bound(py)));
        }
        let mut last_line: &[u8] = &[];
        for line in body.split(|&c| c == b'\n') {
            last_line = line;
            fields.clear();
            fields.extend(line.split(|&c| c == b'\t').map(field));
            let mut row = None;
            if fields.len() == self.width + self.extra {
                let conv: Vec<Option<&[u8]>> =
                    fields[..self.width].iter().map(|f| f.as_deref()).collect();
                row = dec.convert(py, &conv).ok();
            }
            let row = match row {
                Some(r) => r.into_any(),
                None => self.generic.bind(py).call1((Self::texts(py, &fields),))?,
            };
            rows.append(row)?;
            ids.append(self.id(py, &fields)?)?;
        }
        fields.clear();
        fields.extend(last_line.split(|&c| c == b'\t').map(field));
        let last = self.key(py, &fields)?;
        Ok((rows, ids, last))
    }
}
