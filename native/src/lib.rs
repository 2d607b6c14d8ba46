//! cdc's compiled hot path, imported as `cdc._native`.
//!
//! `Writer(schema, positional=None, memo=())` compiles a parsed Avro schema (as
//! `fastavro.parse_schema` returns it) once into a tree of nodes; `Writer.write(datum)` walks the
//! datum along it. The contract is `cdc._avrofast.compile_writer`'s, which stays the reference:
//! the bytes are `fastavro.schemaless_writer`'s for the same datum, or the call raises (the
//! caller then lets fastavro write that datum, or raise); it never returns other bytes. Values
//! are checked against the exact Python types a source produces (`int` in range, `float`, `str`,
//! `bytes`, `Decimal`, `list`, `dict`, `tuple`, `True`/`False`, `None`), as `_avrofast` checks
//! them, and schema features outside `_avrofast`'s subset raise `Unsupported` at compile time.
//!
//! `RowEncoder(key_writer, envelope_writer, key_head, value_head).encode(ev, ts_ms, ts_us, ts_ns)`
//! writes a row change's Confluent-framed key and value in one call, reading the event's
//! attributes itself: the encoder's per-row work on the native path.
//!
//! `TupleDecoder(columns, generic).decode(buf, i)` (module `pgtuple`) reads a pgoutput TupleData
//! into the row tuple `sources/postgres/_tuples.py`'s decoders return, under their contract.
//!
//! `CopyDecoder(decoder, keys, extra, generic).decode(data)` (module `copy`) reads COPY's text
//! rows into the same row tuples, by a `TupleDecoder`'s plan (the snapshot's rows).
//!
//! `SelectDecoder(columns, id_key, prefix, generic).read(rfile, seq)` (module `select`) reads a
//! MySQL/MariaDB text-protocol result set off the connection into the snapshot's row tuples.
//!
//! Safe Rust only: Python objects are reached through PyO3's checked API, so a datum of any
//! shape can make a call raise, never crash. A named record is compiled once and shared by its
//! references (no blow-up for schemas that reuse records); the schema's nesting depth and the
//! compiled writer's height are bounded at compile time, which bounds the writer's recursion.

mod binlog;
mod copy;
mod pgtuple;
mod select;

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyKeyError, PyOverflowError, PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple, PyType};

create_exception!(
    cdc._native,
    Unsupported,
    PyException,
    "The schema uses a feature the compiled writer does not handle: use another writer."
);

/// Nesting (records, unions, arrays, maps) past this is refused at compile time: it bounds the
/// compiler's recursion, far below what a thread's stack holds.
const MAX_DEPTH: usize = 64;
/// The longest path through the compiled writer (shared records counted at each use): bounds
/// the writer's recursion.
const MAX_HEIGHT: usize = 256;

const INT_MIN: i64 = -(1 << 31);
const INT_MAX: i64 = (1 << 31) - 1;

enum Layout {
    /// Read from a `dict` by field name (without a `-type` key, as fastavro's union check).
    Dict,
    /// Read from a `tuple` by index; `exact` also requires the tuple's length.
    Tuple {
        indexes: Vec<usize>,
        exact: Option<usize>,
    },
}

struct Field {
    name: Py<PyString>,
    node: Node,
}

struct Record {
    name: String,
    layout: Layout,
    fields: Vec<Field>,
    /// 1 + the largest height of a field's node.
    height: usize,
}

struct DecimalType {
    precision: u32,
    scale: u32,
    /// The schema, for fastavro's own conversion of the values the fast path does not take.
    schema: Py<PyAny>,
    /// `fastavro.logical_writers.LOGICAL_WRITERS["bytes-decimal"]`.
    slow: Py<PyAny>,
    decimal: Py<PyType>,
}

enum Node {
    Null,
    Boolean,
    Int,
    Long,
    Float,
    Double,
    Bytes,
    Str,
    Decimal(Box<DecimalType>),
    /// Symbol -> its index's varint.
    Enum(HashMap<String, Vec<u8>>),
    Fixed(usize),
    Record(Arc<Record>),
    Array(Box<Node>),
    Map(Box<Node>),
    /// `[null, T]` (`null_at` 0) or `[T, null]` (1).
    Optional {
        null_at: u8,
        other: Box<Node>,
    },
    /// `[T]`: branch 0, then T.
    Single(Box<Node>),
}

// --- compiling -----------------------------------------------------------------------------------

fn unsupported(what: String) -> PyErr {
    Unsupported::new_err(what)
}

struct Compiler<'py> {
    py: Python<'py>,
    /// Record full name -> tuple index of each field (`None`: field i at index i).
    positional: HashMap<String, Option<Vec<usize>>>,
    /// Named types seen so far, by full name (fastavro's parsed schemas spell full names).
    named: HashMap<String, Bound<'py, PyAny>>,
    /// Records being compiled: a reference to one of them is recursion, refused.
    active: Vec<String>,
    /// Records compiled, by full name: a reference shares the compiled record.
    records: HashMap<String, Arc<Record>>,
    decimal: Py<PyType>,
    slow_decimal: Py<PyAny>,
}

fn repr(x: &Bound<'_, PyAny>) -> String {
    match x.repr() {
        Ok(r) => r.to_string(),
        Err(_) => "<unprintable>".to_string(),
    }
}

impl<'py> Compiler<'py> {
    fn node(&mut self, schema: &Bound<'py, PyAny>, depth: usize) -> PyResult<Node> {
        if depth > MAX_DEPTH {
            return Err(unsupported(format!(
                "schema nested deeper than {MAX_DEPTH}"
            )));
        }
        if let Ok(branches) = schema.cast::<PyList>() {
            return self.union(branches, depth);
        }
        if let Ok(name) = schema.cast::<PyString>() {
            let name = name.to_str()?.to_owned();
            if let Some(p) = primitive(&name) {
                return Ok(p);
            }
            let Some(def) = self.named.get(&name).cloned() else {
                return Err(unsupported(format!("unknown named type {name:?}")));
            };
            if self.active.contains(&name) {
                return Err(unsupported(format!("recursive type {name:?}")));
            }
            if let Some(r) = self.records.get(&name) {
                return Ok(Node::Record(Arc::clone(r)));
            }
            return self.node(&def, depth + 1);
        }
        let Ok(dict) = schema.cast::<PyDict>() else {
            return Err(unsupported(format!("schema {}", repr(schema))));
        };
        let t = dict.get_item("type")?;
        let Some(t) = t else {
            return Err(unsupported("schema without a type".to_string()));
        };
        if t.is_instance_of::<PyDict>() || t.is_instance_of::<PyList>() {
            return self.node(&t, depth + 1); // {"type": {...}}: a wrapped schema
        }
        let Ok(t) = t.cast::<PyString>() else {
            return Err(unsupported(format!("type {}", repr(&t))));
        };
        let t = t.to_str()?.to_owned();
        if let Some(logical) = dict.get_item("logicalType")?.filter(|l| !l.is_none()) {
            let is_decimal = logical
                .cast::<PyString>()
                .is_ok_and(|s| s.to_str().ok() == Some("decimal"));
            if t == "bytes" && is_decimal {
                return self.decimal(dict);
            }
            // Which logical types fastavro converts depends on its version: leave them to it.
            return Err(unsupported(format!(
                "logical type {} on {t:?}",
                repr(&logical)
            )));
        }
        if let Some(p) = primitive(&t) {
            return Ok(p);
        }
        match t.as_str() {
            "enum" => {
                self.define(dict)?;
                let mut symbols = HashMap::new();
                let listed = dict
                    .get_item("symbols")?
                    .ok_or_else(|| unsupported("enum without symbols".into()))?;
                for (i, s) in listed.try_iter()?.enumerate() {
                    let s = s?;
                    let s = s
                        .cast::<PyString>()
                        .map_err(|_| unsupported(format!("enum symbol {}", repr(&s))))?;
                    let mut bytes = Vec::new();
                    write_long(&mut bytes, i as i64);
                    symbols.entry(s.to_str()?.to_owned()).or_insert(bytes);
                }
                Ok(Node::Enum(symbols))
            }
            "fixed" => {
                self.define(dict)?;
                let size = dict
                    .get_item("size")?
                    .ok_or_else(|| unsupported("fixed without size".into()))?;
                Ok(Node::Fixed(size.extract::<usize>().map_err(|_| {
                    unsupported(format!("fixed size {}", repr(&size)))
                })?))
            }
            "record" => self.record(dict, depth),
            "array" => {
                let items = dict
                    .get_item("items")?
                    .ok_or_else(|| unsupported("array without items".into()))?;
                Ok(Node::Array(Box::new(self.node(&items, depth + 1)?)))
            }
            "map" => {
                let values = dict
                    .get_item("values")?
                    .ok_or_else(|| unsupported("map without values".into()))?;
                Ok(Node::Map(Box::new(self.node(&values, depth + 1)?)))
            }
            _ => Err(unsupported(format!("type {t:?}"))),
        }
    }

    fn define(&mut self, dict: &Bound<'py, PyDict>) -> PyResult<String> {
        let name = dict
            .get_item("name")?
            .ok_or_else(|| unsupported("named type without a name".into()))?;
        let name = name
            .cast::<PyString>()
            .map_err(|_| unsupported(format!("name {}", repr(&name))))?;
        let name = name.to_str()?.to_owned();
        self.named.insert(name.clone(), dict.clone().into_any());
        Ok(name)
    }

    fn decimal(&mut self, dict: &Bound<'py, PyDict>) -> PyResult<Node> {
        let Some(precision) = dict.get_item("precision")? else {
            return Err(unsupported("decimal without a precision".to_string()));
        };
        let scale = dict.get_item("scale")?;
        // As _avrofast: int(schema["precision"]), int(schema.get("scale", 0)).
        let as_int = |v: &Bound<'py, PyAny>| -> PyResult<u32> {
            let n = self.py.get_type::<PyInt>().call1((v,))?;
            n.extract::<u32>()
                .map_err(|_| unsupported(format!("decimal precision or scale {}", repr(v))))
        };
        let precision = as_int(&precision)?;
        let scale = match scale {
            Some(s) => as_int(&s)?,
            None => 0,
        };
        Ok(Node::Decimal(Box::new(DecimalType {
            precision,
            scale,
            schema: dict.clone().into_any().unbind(),
            slow: self.slow_decimal.clone_ref(self.py),
            decimal: self.decimal.clone_ref(self.py),
        })))
    }

    fn union(&mut self, branches: &Bound<'py, PyList>, depth: usize) -> PyResult<Node> {
        let items: Vec<Bound<'py, PyAny>> = branches.iter().collect();
        let is_null = |b: &Bound<'py, PyAny>| -> bool {
            if let Ok(s) = b.cast::<PyString>() {
                return s.to_str().ok() == Some("null");
            }
            if let Ok(d) = b.cast::<PyDict>() {
                if let Ok(Some(t)) = d.get_item("type") {
                    return t
                        .cast::<PyString>()
                        .is_ok_and(|s| s.to_str().ok() == Some("null"));
                }
            }
            false
        };
        let kinds: Vec<bool> = items.iter().map(is_null).collect();
        if items.len() == 1 && !kinds[0] {
            return Ok(Node::Single(Box::new(self.node(&items[0], depth + 1)?)));
        }
        if items.len() != 2 || kinds.iter().filter(|k| **k).count() != 1 {
            return Err(unsupported(format!("union {}", repr(branches.as_any()))));
        }
        let null_at: u8 = if kinds[0] { 0 } else { 1 };
        let other = self.node(&items[1 - null_at as usize], depth + 1)?;
        Ok(Node::Optional {
            null_at,
            other: Box::new(other),
        })
    }

    fn record(&mut self, dict: &Bound<'py, PyDict>, depth: usize) -> PyResult<Node> {
        let name = self.define(dict)?;
        self.active.push(name.clone());
        let fields = dict
            .get_item("fields")?
            .ok_or_else(|| unsupported(format!("record {name} without fields")))?;
        let mut compiled = Vec::new();
        for f in fields.try_iter()? {
            let f = f?;
            let fname = f.get_item("name")?;
            let fname = fname
                .cast::<PyString>()
                .map_err(|_| unsupported(format!("field name {}", repr(&fname))))?;
            let node = self.node(&f.get_item("type")?, depth + 1)?;
            compiled.push(Field {
                name: fname.clone().unbind(),
                node,
            });
        }
        self.active.retain(|n| *n != name);
        let height = 1 + compiled.iter().map(|f| height(&f.node)).max().unwrap_or(0);
        if height > MAX_HEIGHT {
            return Err(unsupported(format!(
                "record {name} nested deeper than {MAX_HEIGHT}"
            )));
        }
        let layout = match self.positional.get(&name) {
            None => Layout::Dict,
            Some(None) => Layout::Tuple {
                indexes: (0..compiled.len()).collect(),
                exact: Some(compiled.len()),
            },
            Some(Some(indexes)) => {
                if indexes.len() != compiled.len() {
                    return Err(unsupported(format!(
                        "{} indexes for {} fields of {name}",
                        indexes.len(),
                        compiled.len()
                    )));
                }
                Layout::Tuple {
                    indexes: indexes.clone(),
                    exact: None,
                }
            }
        };
        let record = Arc::new(Record {
            name: name.clone(),
            layout,
            fields: compiled,
            height,
        });
        self.records.insert(name, Arc::clone(&record));
        Ok(Node::Record(record))
    }
}

/// The longest path from `node` down (records by their stored height: linear, not a walk).
fn height(node: &Node) -> usize {
    match node {
        Node::Record(r) => r.height,
        Node::Array(n) | Node::Map(n) | Node::Single(n) => 1 + height(n),
        Node::Optional { other, .. } => 1 + height(other),
        _ => 1,
    }
}

fn primitive(t: &str) -> Option<Node> {
    Some(match t {
        "null" => Node::Null,
        "boolean" => Node::Boolean,
        "int" => Node::Int,
        "long" => Node::Long,
        "float" => Node::Float,
        "double" => Node::Double,
        "bytes" => Node::Bytes,
        "string" => Node::Str,
        _ => return None,
    })
}

// --- writing -------------------------------------------------------------------------------------

/// Avro's long: zigzag, then a little-endian base-128 varint.
#[inline]
fn write_long(out: &mut Vec<u8>, n: i64) {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

fn mismatch(expected: &str, x: &Bound<'_, PyAny>) -> PyErr {
    let got = x
        .get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".to_string());
    PyTypeError::new_err(format!("expected {expected}, got a value of type {got}"))
}

fn write_str(out: &mut Vec<u8>, x: &Bound<'_, PyAny>) -> PyResult<()> {
    let s = x.cast_exact::<PyString>().map_err(|_| mismatch("str", x))?;
    let b = s.to_str()?.as_bytes(); // raises on lone surrogates, as str.encode()
    write_long(out, b.len() as i64);
    out.extend_from_slice(b);
    Ok(())
}

fn write_bytes(out: &mut Vec<u8>, x: &Bound<'_, PyAny>) -> PyResult<()> {
    let b = x
        .cast_exact::<PyBytes>()
        .map_err(|_| mismatch("bytes", x))?
        .as_bytes();
    write_long(out, b.len() as i64);
    out.extend_from_slice(b);
    Ok(())
}

fn exact_int(x: &Bound<'_, PyAny>, expected: &str) -> PyResult<i64> {
    if !x.is_exact_instance_of::<PyInt>() {
        return Err(mismatch(expected, x));
    }
    x.extract::<i64>().map_err(|_| {
        PyOverflowError::new_err(format!("{} is out of the avro {expected} range", repr(x)))
    })
}

/// The unscaled value of the decimal written as `text` (`str(Decimal)`), when its exponent is
/// exactly `-scale` and it has at most `precision` digits (and fits an i128): `_avrofast`'s fast
/// path (`same_quantum` and `adjusted() + scale < precision`). `None`: let fastavro convert it.
fn unscaled(text: &str, scale: u32, precision: u32) -> Option<i128> {
    let (negative, rest) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let (mantissa, exp) = match rest.find(['E', 'e']) {
        Some(i) => (&rest[..i], rest[i + 1..].parse::<i64>().ok()?),
        None => (rest, 0),
    };
    let (int_part, frac) = match mantissa.find('.') {
        Some(i) => (&mantissa[..i], &mantissa[i + 1..]),
        None => (mantissa, ""),
    };
    if int_part.is_empty() && frac.is_empty() {
        return None;
    }
    // NaN, sNaN and Infinity have letters here and fail this.
    if !int_part
        .bytes()
        .chain(frac.bytes())
        .all(|c| c.is_ascii_digit())
    {
        return None;
    }
    let exponent = exp.checked_sub(frac.len() as i64)?;
    if exponent != -(scale as i64) {
        return None;
    }
    let digits = int_part
        .bytes()
        .chain(frac.bytes())
        .skip_while(|c| *c == b'0');
    let mut n: usize = 0;
    let mut value: i128 = 0;
    for c in digits {
        n += 1;
        if n > 38 {
            return None;
        }
        value = value * 10 + i128::from(c - b'0');
    }
    if n.max(1) > precision as usize {
        return None;
    }
    Some(if negative { -value } else { value })
}

fn write_decimal(out: &mut Vec<u8>, d: &DecimalType, x: &Bound<'_, PyAny>) -> PyResult<()> {
    let py = x.py();
    if !x.get_type().is(&d.decimal) {
        return write_bytes(out, x);
    }
    let text = x.str()?;
    if let Some(u) = unscaled(text.to_str()?, d.scale, d.precision) {
        // As _avrofast: u.to_bytes((abs(u).bit_length() + 8) // 8, "big", signed=True).
        let bits = 128 - u.unsigned_abs().leading_zeros() as usize;
        let len = (bits + 8) / 8;
        let be = u.to_be_bytes();
        write_long(out, len as i64);
        out.extend_from_slice(&be[16 - len..]);
        return Ok(());
    }
    let converted = d.slow.bind(py).call1((x, d.schema.bind(py)))?;
    write_bytes(out, &converted)
}

fn write_record(out: &mut Vec<u8>, r: &Record, x: &Bound<'_, PyAny>) -> PyResult<()> {
    match &r.layout {
        Layout::Dict => {
            let d = x
                .cast_exact::<PyDict>()
                .map_err(|_| mismatch(&format!("a dict for record {}", r.name), x))?;
            if d.contains("-type")? {
                return Err(PyValueError::new_err(format!(
                    "record {}: a dict with a '-type' key",
                    r.name
                )));
            }
            for f in &r.fields {
                let name = f.name.bind(x.py());
                match d.get_item(name)? {
                    Some(v) => write(out, &f.node, &v)?,
                    None => return Err(PyKeyError::new_err(name.clone().unbind())),
                }
            }
        }
        Layout::Tuple { indexes, exact } => {
            let t = x
                .cast_exact::<PyTuple>()
                .map_err(|_| mismatch(&format!("a tuple for record {}", r.name), x))?;
            if let Some(n) = exact {
                if t.len() != *n {
                    return Err(PyValueError::new_err(format!(
                        "record {}: a tuple of {} values for {n} fields",
                        r.name,
                        t.len()
                    )));
                }
            }
            for (f, i) in r.fields.iter().zip(indexes) {
                write(out, &f.node, &t.get_item(*i)?)?;
            }
        }
    }
    Ok(())
}

fn write(out: &mut Vec<u8>, node: &Node, x: &Bound<'_, PyAny>) -> PyResult<()> {
    match node {
        Node::Null => {
            if !x.is_none() {
                return Err(mismatch("None", x));
            }
        }
        Node::Boolean => {
            let b = x.cast_exact::<PyBool>().map_err(|_| mismatch("bool", x))?;
            out.push(u8::from(b.is_true()));
        }
        Node::Int => {
            let n = exact_int(x, "int")?;
            if !(INT_MIN..=INT_MAX).contains(&n) {
                return Err(PyOverflowError::new_err(format!(
                    "{n} is out of the avro int range"
                )));
            }
            write_long(out, n);
        }
        Node::Long => write_long(out, exact_int(x, "long")?),
        Node::Float => {
            let v = x
                .cast_exact::<PyFloat>()
                .map_err(|_| mismatch("float", x))?
                .value();
            let f = v as f32;
            // As struct.pack("<f"): a finite double too large for a float is an error.
            if f.is_infinite() && !v.is_infinite() {
                return Err(PyOverflowError::new_err(format!(
                    "{v} is out of the avro float range"
                )));
            }
            out.extend_from_slice(&f.to_le_bytes());
        }
        Node::Double => {
            let v = x
                .cast_exact::<PyFloat>()
                .map_err(|_| mismatch("float", x))?
                .value();
            out.extend_from_slice(&v.to_le_bytes());
        }
        Node::Bytes => write_bytes(out, x)?,
        Node::Str => write_str(out, x)?,
        Node::Decimal(d) => write_decimal(out, d, x)?,
        Node::Enum(symbols) => {
            let s = x
                .cast::<PyString>()
                .map_err(|_| mismatch("str (an enum symbol)", x))?;
            match symbols.get(s.to_str()?) {
                Some(b) => out.extend_from_slice(b),
                None => {
                    return Err(PyValueError::new_err(format!(
                        "{} is not a symbol of the enum",
                        repr(x)
                    )))
                }
            }
        }
        Node::Fixed(size) => {
            let b = x
                .cast_exact::<PyBytes>()
                .map_err(|_| mismatch("bytes", x))?
                .as_bytes();
            if b.len() != *size {
                return Err(PyValueError::new_err(format!(
                    "{} bytes for a fixed of {size}",
                    b.len()
                )));
            }
            out.extend_from_slice(b);
        }
        Node::Record(r) => write_record(out, r, x)?,
        Node::Array(items) => {
            let l = x.cast_exact::<PyList>().map_err(|_| mismatch("list", x))?;
            if !l.is_empty() {
                write_long(out, l.len() as i64);
                for item in l.iter() {
                    write(out, items, &item)?;
                }
            }
            out.push(0);
        }
        Node::Map(values) => {
            let d = x.cast_exact::<PyDict>().map_err(|_| mismatch("dict", x))?;
            if !d.is_empty() {
                // A snapshot of the items: the dict cannot change under the loop.
                let items = d.items();
                write_long(out, items.len() as i64);
                for kv in items.iter() {
                    let (k, v) = kv
                        .cast_into::<PyTuple>()?
                        .extract::<(Bound<'_, PyAny>, Bound<'_, PyAny>)>()?;
                    write_str(out, &k)?;
                    write(out, values, &v)?;
                }
            }
            out.push(0);
        }
        Node::Optional { null_at, other } => {
            if x.is_none() {
                out.push(*null_at << 1);
            } else {
                out.push((1 - *null_at) << 1);
                write(out, other, x)?;
            }
        }
        Node::Single(only) => {
            out.push(0);
            write(out, only, x)?;
        }
    }
    Ok(())
}

/// A writer compiled once from a parsed Avro schema; see the module's documentation.
#[pyclass(frozen, module = "cdc._native")]
struct Writer {
    root: Node,
    /// The longest output so far: the next buffer is allocated at that size at once.
    hint: std::sync::atomic::AtomicUsize,
}

impl Writer {
    fn grow(&self, len: usize) {
        if len > self.hint.load(Relaxed) {
            self.hint.store(len, Relaxed);
        }
    }
}

#[pymethods]
impl Writer {
    /// `schema` as `fastavro.parse_schema` returns it; `positional` maps record full names to the
    /// tuple index of each field (`None`: field i at index i), other records are read from dicts;
    /// `memo` is accepted for `_avrofast.compile_writer`'s signature and has no use here (the
    /// compiled writer does not need to cache repeating values).
    #[new]
    #[pyo3(signature = (schema, positional=None, memo=None))]
    fn new(
        py: Python<'_>,
        schema: &Bound<'_, PyAny>,
        positional: Option<&Bound<'_, PyAny>>,
        memo: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let _ = memo;
        let mut pos = HashMap::new();
        if let Some(p) = positional.filter(|p| !p.is_none()) {
            // Any mapping of record name -> None or a sequence of non-negative indexes.
            let bad = |e: PyErr| unsupported(format!("positional {}: {e}", repr(p)));
            for kv in p
                .call_method0("items")
                .map_err(bad)?
                .try_iter()
                .map_err(bad)?
            {
                let (k, v) = kv?.extract::<(String, Bound<'_, PyAny>)>().map_err(bad)?;
                let v = if v.is_none() {
                    None
                } else {
                    Some(v.extract::<Vec<usize>>().map_err(bad)?)
                };
                pos.insert(k, v);
            }
        }
        let decimal = py
            .import("decimal")?
            .getattr("Decimal")?
            .cast_into::<PyType>()?
            .unbind();
        let slow_decimal = py
            .import("fastavro.logical_writers")?
            .getattr("LOGICAL_WRITERS")?
            .get_item("bytes-decimal")?
            .unbind();
        let mut c = Compiler {
            py,
            positional: pos,
            named: HashMap::new(),
            active: Vec::new(),
            records: HashMap::new(),
            decimal,
            slow_decimal,
        };
        let root = c.node(schema, 0)?;
        if height(&root) > MAX_HEIGHT {
            return Err(unsupported(format!(
                "schema nested deeper than {MAX_HEIGHT}"
            )));
        }
        Ok(Writer {
            root,
            hint: std::sync::atomic::AtomicUsize::new(64),
        })
    }

    /// The Avro binary encoding of `datum`: fastavro's bytes, or an exception.
    fn write<'py>(&self, datum: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
        let mut out = Vec::with_capacity(self.hint.load(Relaxed));
        write(&mut out, &self.root, datum)?;
        self.grow(out.len());
        Ok(PyBytes::new(datum.py(), &out))
    }

    /// `[write(d) for d in datums]`, except that a datum `write` raises on gives the exception
    /// object in its place (the caller falls back for that one): one call per batch.
    fn write_many<'py>(
        &self,
        py: Python<'py>,
        datums: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyList>> {
        let out = PyList::empty(py);
        for d in datums.try_iter()? {
            match self.write(&d?) {
                Ok(b) => out.append(b)?,
                Err(e) => out.append(e.into_value(py))?,
            }
        }
        Ok(out)
    }
}

/// The key and the value of one row change, each framed, in one call: what the encoder does per
/// `RowChange` with its key and envelope writers, without building the envelope tuple in Python
/// or joining the frame heads to the bodies there.
#[pyclass(frozen, module = "cdc._native")]
struct RowEncoder {
    /// None: the table has no key.
    key: Option<Py<Writer>>,
    /// The envelope, a record read from the 8 values (before, after, source, transaction, op,
    /// ts_ms, ts_us, ts_ns).
    value: Py<Writer>,
    key_head: Vec<u8>,
    value_head: Vec<u8>,
}

const ENVELOPE_FIELDS: usize = 8;

#[pymethods]
impl RowEncoder {
    #[new]
    fn new(
        key: Option<Py<Writer>>,
        value: Py<Writer>,
        key_head: &[u8],
        value_head: &[u8],
    ) -> PyResult<Self> {
        let ok = match &value.get().root {
            Node::Record(r) => {
                r.fields.len() == ENVELOPE_FIELDS
                    && matches!(r.layout, Layout::Tuple { exact: Some(n), .. } if n == ENVELOPE_FIELDS)
            }
            _ => false,
        };
        if !ok {
            return Err(unsupported(
                "the value writer is not an envelope read from a tuple of 8".to_string(),
            ));
        }
        Ok(RowEncoder {
            key,
            value,
            key_head: key_head.to_vec(),
            value_head: value_head.to_vec(),
        })
    }

    /// `(key, value)` of the row change `ev` (a `cdc.model.RowChange`), Confluent-framed, as
    /// `Encoder.encode` makes them with the two writers: the key (None without a key, or for a
    /// truncate) from `ev.key_override or ev.after or ev.before`, the value from the envelope
    /// `(ev.before, ev.after, ev.source, ev.tx, ev.op, ts_ms, ts_us, ts_ns)`. Raises where
    /// either writer would; the caller then encodes the event part by part.
    fn encode<'py>(
        &self,
        ev: &Bound<'py, PyAny>,
        ts_ms: &Bound<'py, PyAny>,
        ts_us: &Bound<'py, PyAny>,
        ts_ns: &Bound<'py, PyAny>,
    ) -> PyResult<(Option<Bound<'py, PyBytes>>, Bound<'py, PyBytes>)> {
        let py = ev.py();
        let op = ev.getattr(intern!(py, "op"))?;
        let before = ev.getattr(intern!(py, "before"))?;
        let after = ev.getattr(intern!(py, "after"))?;
        let key = match &self.key {
            Some(k) if op.ne(intern!(py, "t"))? => {
                // Python's `ev.key_override or ev.after or ev.before`.
                let mut row = ev.getattr(intern!(py, "key_override"))?;
                if !row.is_truthy()? {
                    row = if after.is_truthy()? {
                        after.clone()
                    } else {
                        before.clone()
                    };
                }
                let k = k.get();
                let mut out = Vec::with_capacity(k.hint.load(Relaxed));
                out.extend_from_slice(&self.key_head);
                write(&mut out, &k.root, &row)?;
                k.grow(out.len());
                Some(PyBytes::new(py, &out))
            }
            _ => None,
        };
        let v = self.value.get();
        let Node::Record(r) = &v.root else {
            return Err(PyTypeError::new_err("not an envelope writer")); // checked in new()
        };
        let values = [
            before,
            after,
            ev.getattr(intern!(py, "source"))?,
            ev.getattr(intern!(py, "tx"))?,
            op,
            ts_ms.clone(),
            ts_us.clone(),
            ts_ns.clone(),
        ];
        let mut out = Vec::with_capacity(v.hint.load(Relaxed));
        out.extend_from_slice(&self.value_head);
        for (f, x) in r.fields.iter().zip(values.iter()) {
            write(&mut out, &f.node, x)?;
        }
        v.grow(out.len());
        Ok((key, PyBytes::new(py, &out)))
    }
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Writer>()?;
    m.add_class::<RowEncoder>()?;
    m.add_class::<pgtuple::TupleDecoder>()?;
    m.add_class::<binlog::RowsDecoder>()?;
    m.add_class::<copy::CopyDecoder>()?;
    m.add_class::<select::SelectDecoder>()?;
    m.add("Unsupported", m.py().get_type::<Unsupported>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
