//! Fuzzing the enrolment file parser: any line is an item the ingest role could accept, a blank
//! line, or a refusal naming its line number that never quotes the input; valid lines round-trip.

use super::*;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

fn refused(line: &str) -> Problem {
    parse_line(7, line).map(|_| ()).expect_err("refused").problem
}

#[test]
fn a_valid_line_is_an_item() {
    let item = parse_line(1, r#"{"subject_id": "P-0001", "vector": [0.5, -1, 2e-3]}"#)
        .expect("valid")
        .expect("not blank");
    assert_eq!(item.subject.as_str(), "P-0001");
    assert_eq!(item.vector, [0.5, -1.0, 0.002]);
    assert_eq!(format!("{item:?}"), "Item(d=3)", "Debug leaves the vector out");
    assert_eq!(parse_line(2, " \t"), Ok(None));
}

#[test]
fn refusals_name_the_line_and_the_problem() {
    let error = parse_line(12, "{").expect_err("refused");
    assert_eq!(error, LineError { line: 12, problem: Problem::Incomplete });
    assert_eq!(error.to_string(), "line 12: the JSON value is incomplete");
    assert_eq!(refused("nope"), Problem::Syntax { column: 2 });
    assert_eq!(refused("[1, 2]"), Problem::NotAnObject);
    assert_eq!(refused(r#"{"subject_id": "a", "vector": [1], "name": "x"}"#), Problem::UnknownField);
    assert_eq!(refused(r#"{"vector": [1]}"#), Problem::MissingSubject);
    assert_eq!(refused(r#"{"subject_id": 5, "vector": [1]}"#), Problem::SubjectNotAString);
    assert_eq!(refused(r#"{"subject_id": "a b", "vector": [1]}"#), Problem::BadSubject(IdError::BadSubject));
    assert_eq!(refused(r#"{"subject_id": "", "vector": [1]}"#), Problem::BadSubject(IdError::EmptySubject));
    assert_eq!(refused(r#"{"subject_id": "a"}"#), Problem::MissingVector);
    assert_eq!(refused(r#"{"subject_id": "a", "vector": "0.25"}"#), Problem::VectorNotAnArray);
    assert_eq!(refused(r#"{"subject_id": "a", "vector": [1, "0.25"]}"#), Problem::NotANumber { at: 1 });
    assert_eq!(refused(r#"{"subject_id": "a", "vector": [1, 2, 1e39]}"#), Problem::NotFinite { at: 2 });
    assert_eq!(refused(r#"{"subject_id": "a", "vector": []}"#), Problem::EmptyVector);
    assert_eq!(refused(r#"{"subject_id": "a", "vector": [0, -0.0]}"#), Problem::ZeroVector);
    let long = format!(r#"{{"subject_id": "a", "vector": [{}1]}}"#, "1,".repeat(MAX_DIMENSION));
    assert_eq!(refused(&long), Problem::TooManyValues { count: MAX_DIMENSION + 1 });
    assert_eq!(refused(r#"{"subject_id": "a", "vector": [1], "vector": [2]}"#), Problem::Shape);
}

#[test]
fn serde_messages_that_quote_values_are_not_passed_on() {
    // serde_json says `invalid type: string "0.8123", expected f32`.
    let error = parse_line(3, r#"{"subject_id": "P-77", "vector": [0.5, "0.8123"]}"#).expect_err("refused");
    let text = error.to_string();
    assert!(!text.contains("0.8123") && !text.contains("P-77"), "{text}");
}

/// What every line must come to: an item within bounds, a blank line, or a numbered refusal.
fn check(number: usize, line: &str) -> Result<Option<String>, TestCaseError> {
    match parse_line(number, line) {
        Ok(None) => {
            prop_assert!(line.trim().is_empty());
            Ok(None)
        }
        Ok(Some(item)) => {
            prop_assert!((1..=MAX_DIMENSION).contains(&item.vector.len()));
            prop_assert!(item.vector.iter().all(|v| v.is_finite()));
            prop_assert!(item.vector.iter().any(|v| *v != 0.0));
            prop_assert!(SubjectId::parse(item.subject.as_str()).is_ok());
            Ok(None)
        }
        Err(e) => {
            prop_assert_eq!(e.line, number);
            let text = e.to_string();
            let prefix = format!("line {number}: ");
            prop_assert!(text.starts_with(&prefix), "{}", text);
            Ok(Some(text))
        }
    }
}

fn subject_ids() -> impl Strategy<Value = String> {
    "[^\\s\\p{Cc}]{1,60}".prop_filter("a valid subject id", |s| SubjectId::parse(s).is_ok())
}

fn finite_vectors() -> impl Strategy<Value = Vec<f32>> {
    let finite = any::<f32>().prop_filter("finite", |v| v.is_finite());
    prop::collection::vec(finite, 1..48).prop_filter("not all zeros", |v| v.iter().any(|x| *x != 0.0))
}

#[derive(serde::Serialize)]
struct Out<'a> {
    subject_id: &'a str,
    vector: &'a [f32],
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_text_is_an_item_or_a_numbered_refusal(number in 1usize..10_000_000, line in ".{0,300}") {
        check(number, &line)?;
    }

    #[test]
    fn arbitrary_bytes_are_items_or_numbered_refusals(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        for (n, line) in String::from_utf8_lossy(&bytes).lines().enumerate() {
            check(n + 1, line)?;
        }
    }

    #[test]
    fn valid_lines_round_trip_exactly(
        subject in subject_ids(), vector in finite_vectors(), wide in any::<bool>()
    ) {
        // As written by serde with f32s, and by a producer that widened them to f64 first.
        let line = if wide {
            let wide: Vec<f64> = vector.iter().map(|v| f64::from(*v)).collect();
            serde_json::json!({"vector": wide, "subject_id": subject}).to_string()
        } else {
            serde_json::to_string(&Out { subject_id: &subject, vector: &vector }).expect("serialise")
        };
        let item = parse_line(1, &line).expect("valid").expect("not blank");
        prop_assert_eq!(item.subject.as_str(), subject.as_str());
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        prop_assert_eq!(bits(&item.vector), bits(&vector));
    }

    #[test]
    fn damaged_lines_are_refused_without_quoting_the_input(
        subject in "S-[A-Za-z0-9]{10,20}",
        values in prop::collection::vec(0.1f32..0.9, 1..12),
        damage in 0usize..8,
        at in any::<prop::sample::Index>(),
        byte in prop::sample::select(vec!['{', '}', '[', ']', '"', ',', ':', 'x', ' ', '0', '\\']),
    ) {
        let numbers: Vec<String> = values.iter().map(|v| format!("{v:.6}")).collect();
        let mut vector = numbers.clone();
        let i = at.index(vector.len());
        match damage {
            0 => vector[i] = format!("\"{}\"", vector[i]),
            4 => vector[i] = "1e39".into(),
            5 => vector[i] = "null".into(),
            _ => {}
        }
        let subject_field = match damage {
            1 => format!("\"{subject} x\""),
            6 => "17".to_owned(),
            _ => format!("\"{subject}\""),
        };
        let mut line = format!(r#"{{"subject_id": {subject_field}, "vector": [{}]}}"#, vector.join(", "));
        match damage {
            2 => line.insert_str(1, &format!(r#""name": "{subject}", "#)),
            3 => line.truncate(1 + at.index(line.len() - 1)),
            7 => {
                let mut chars: Vec<char> = line.chars().collect();
                let j = at.index(chars.len());
                chars[j] = byte;
                line = chars.into_iter().collect();
            }
            _ => {}
        }
        if let Some(text) = check(5, &line)? {
            prop_assert!(!text.contains(&subject), "{}", text);
            for number in &numbers {
                prop_assert!(!text.contains(number.as_str()), "{}", text);
            }
        } else {
            // Only a replaced byte can leave a valid line (a space, say).
            prop_assert_eq!(damage, 7);
        }
    }
}
