//! The JSON-lines input of `biomatch enroll --vectors`: one `{"subject_id": "...", "vector":
//! [numbers]}` per line, blank lines skipped.
//!
//! Parsing is kept apart from reading the file so that it can be fuzzed. A line is either an
//! item the ingest role could accept (a valid subject id, a finite, non-zero vector of at most
//! [`MAX_DIMENSION`] values) or a refusal that names the line and what is wrong with it. A refusal
//! never quotes the input: vectors are biometric data and subject ids are personal, and both would
//! otherwise reach a terminal or a CI log (serde's own messages quote the offending value).

use biomatch_domain::{IdError, SubjectId};
use serde::Deserialize;
use serde_json::Value;
use serde_json::error::Category;
use std::fmt;

/// The largest dimension a gallery may have (the ingest role refuses larger ones).
pub(crate) const MAX_DIMENSION: usize = 4096;

/// One enrolment of the file. Its `Debug` leaves the vector out.
#[derive(Clone, PartialEq)]
pub(crate) struct Item {
    pub(crate) subject: SubjectId,
    pub(crate) vector: Vec<f32>,
}

impl fmt::Debug for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Item(d={})", self.vector.len())
    }
}

/// What is wrong with a line. Every message is fixed text plus positions and counts.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Problem {
    /// Not JSON; the column (1-based) where the parser gave up.
    Syntax {
        column: usize,
    },
    /// The JSON stops before its value is complete.
    Incomplete,
    NotAnObject,
    UnknownField,
    MissingSubject,
    SubjectNotAString,
    BadSubject(IdError),
    MissingVector,
    VectorNotAnArray,
    /// The value at this (0-based) position of `vector` is not a number.
    NotANumber {
        at: usize,
    },
    /// The value at this (0-based) position is outside the 32-bit float range.
    NotFinite {
        at: usize,
    },
    EmptyVector,
    TooManyValues {
        count: usize,
    },
    ZeroVector,
    /// Valid JSON of the right types that still does not fit (e.g. a field given twice).
    Shape,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Syntax { column } => write!(f, "not valid JSON (at column {column})"),
            Self::Incomplete => f.write_str("the JSON value is incomplete"),
            Self::NotAnObject => f.write_str("not a JSON object"),
            Self::UnknownField => f.write_str("unexpected field: only subject_id and vector are allowed"),
            Self::MissingSubject => f.write_str("subject_id is missing"),
            Self::SubjectNotAString => f.write_str("subject_id must be a string"),
            Self::BadSubject(e) => write!(f, "{e}"),
            Self::MissingVector => f.write_str("vector is missing"),
            Self::VectorNotAnArray => f.write_str("vector must be an array of numbers"),
            Self::NotANumber { at } => write!(f, "vector[{at}] is not a number"),
            Self::NotFinite { at } => write!(f, "vector[{at}] is outside the 32-bit float range"),
            Self::EmptyVector => f.write_str("vector is empty"),
            Self::TooManyValues { count } => {
                write!(f, "vector has {count} values; a gallery has at most {MAX_DIMENSION}")
            }
            Self::ZeroVector => f.write_str("vector is all zeros"),
            Self::Shape => {
                f.write_str(r#"expected {"subject_id": "...", "vector": [numbers]}, each field once"#)
            }
        }
    }
}

/// A refused line: its 1-based number and what is wrong.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct LineError {
    pub(crate) line: usize,
    pub(crate) problem: Problem,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.problem)
    }
}

impl std::error::Error for LineError {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    subject_id: String,
    vector: Vec<f32>,
}

/// Parses line `number` (1-based) of the file: `None` for a blank line.
pub(crate) fn parse_line(number: usize, line: &str) -> Result<Option<Item>, LineError> {
    if line.trim().is_empty() {
        return Ok(None);
    }
    parse(line).map(Some).map_err(|problem| LineError { line: number, problem })
}

fn parse(line: &str) -> Result<Item, Problem> {
    let Line { subject_id, vector } = serde_json::from_str(line).map_err(|e| match e.classify() {
        Category::Data => diagnose(line),
        Category::Eof => Problem::Incomplete,
        // A number out of f32's range is a syntax error to the typed parse: diagnosed as data.
        Category::Syntax if serde_json::from_str::<Value>(line).is_ok() => diagnose(line),
        Category::Syntax | Category::Io => Problem::Syntax { column: e.column() },
    })?;
    let subject = SubjectId::parse(&subject_id).map_err(Problem::BadSubject)?;
    if vector.is_empty() {
        return Err(Problem::EmptyVector);
    }
    if vector.len() > MAX_DIMENSION {
        return Err(Problem::TooManyValues { count: vector.len() });
    }
    // serde reads a number beyond f32's range as infinity.
    if let Some(at) = vector.iter().position(|v| !v.is_finite()) {
        return Err(Problem::NotFinite { at });
    }
    if vector.iter().all(|v| *v == 0.0) {
        return Err(Problem::ZeroVector);
    }
    Ok(Item { subject, vector })
}

/// Why well-formed JSON is not a line of this file, found without quoting serde's message.
fn diagnose(line: &str) -> Problem {
    let value: Value = match serde_json::from_str(line) {
        Ok(value) => value,
        Err(e) if e.classify() == Category::Eof => return Problem::Incomplete,
        Err(e) => return Problem::Syntax { column: e.column() },
    };
    let Value::Object(fields) = value else { return Problem::NotAnObject };
    if fields.keys().any(|k| k != "subject_id" && k != "vector") {
        return Problem::UnknownField;
    }
    match fields.get("subject_id") {
        None => return Problem::MissingSubject,
        Some(Value::String(_)) => {}
        Some(_) => return Problem::SubjectNotAString,
    }
    let Some(vector) = fields.get("vector") else { return Problem::MissingVector };
    let Value::Array(values) = vector else { return Problem::VectorNotAnArray };
    if let Some(at) = values.iter().position(|v| !v.is_number()) {
        return Problem::NotANumber { at };
    }
    // Exact float parsing (serde_json's `float_roundtrip`) refuses a number beyond f32's range.
    if let Some(at) = values.iter().position(|v| v.as_f64().is_some_and(|x| !(x as f32).is_finite())) {
        return Problem::NotFinite { at };
    }
    Problem::Shape
}

#[cfg(test)]
#[path = "lines_tests.rs"]
mod tests;
