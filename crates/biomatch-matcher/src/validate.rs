//! Validation of the search role's requests to a shard: checked again here, never trusting the wire.

use biomatch_domain::limits::MAX_K;
use biomatch_domain::{Classified, ErrorClass, MAX_LABELLED_PROBES, check_query};
use biomatch_proto::v1::{LabelledProbe, QueryVector};
use biomatch_proto::{status_from, status_with};
use tonic::Status;

/// The queries of a shard search, flattened for one FAISS call: `k` between 1 and `MAX_K`, and
/// every query of the shard's dimension with finite values.
pub(crate) fn search_queries(queries: &[QueryVector], k: u32, dimension: usize) -> Result<Vec<f32>, Status> {
    if k == 0 || k > MAX_K {
        return Err(status_with(ErrorClass::InvalidArgument, format!("k must be between 1 and {MAX_K}")));
    }
    let mut flat = Vec::with_capacity(queries.len().saturating_mul(dimension));
    for q in queries {
        check_query(&q.values, dimension).map_err(|e| status_from(&e))?;
        flat.extend_from_slice(&q.values);
    }
    Ok(flat)
}

/// Probe vectors with the subject each is of.
pub(crate) type Labelled = Vec<(Vec<f32>, String)>;

/// An operator's labelled probes as the index takes them (`None` when there are none): at most
/// [`MAX_LABELLED_PROBES`], each naming a subject and of the shard's dimension with finite
/// values. Refusals name the probe's position, never its values or subject.
pub(crate) fn labelled_probes(
    probes: Vec<LabelledProbe>,
    dimension: usize,
) -> Result<Option<Labelled>, Status> {
    if probes.is_empty() {
        return Ok(None);
    }
    if probes.len() > MAX_LABELLED_PROBES {
        let message = format!("at most {MAX_LABELLED_PROBES} labelled probes, not {}", probes.len());
        return Err(status_with(ErrorClass::InvalidArgument, message));
    }
    let mut out = Vec::with_capacity(probes.len());
    for (i, LabelledProbe { subject_id, values }) in probes.into_iter().enumerate() {
        if subject_id.is_empty() {
            let message = format!("labelled probe {i} names no subject");
            return Err(status_with(ErrorClass::InvalidArgument, message));
        }
        check_query(&values, dimension).map_err(|e| {
            status_with(ErrorClass::InvalidArgument, format!("labelled probe {i}: {}", e.public_message()))
        })?;
        out.push((values, subject_id));
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn bad_searches_are_refused() {
        let q = |values: Vec<f32>| QueryVector { values };
        assert_eq!(search_queries(&[q(vec![1.0, 2.0])], 3, 2).expect("valid"), [1.0, 2.0]);
        let code = |r: Result<Vec<f32>, Status>| r.expect_err("refused").code();
        assert_eq!(code(search_queries(&[q(vec![1.0, 2.0])], 0, 2)), tonic::Code::InvalidArgument);
        assert_eq!(code(search_queries(&[q(vec![1.0, 2.0])], MAX_K + 1, 2)), tonic::Code::InvalidArgument);
        assert_eq!(code(search_queries(&[q(vec![1.0])], 1, 2)), tonic::Code::InvalidArgument);
        assert_eq!(code(search_queries(&[q(vec![1.0, f32::NAN])], 1, 2)), tonic::Code::InvalidArgument);
    }

    #[test]
    fn bad_labelled_probes_are_refused_without_quoting_them() {
        let probe = |subject: &str, values: Vec<f32>| LabelledProbe { subject_id: subject.into(), values };
        assert_eq!(labelled_probes(vec![], 2).expect("none"), None);
        let ok = labelled_probes(vec![probe("s1", vec![0.6, 0.8])], 2).expect("valid");
        assert_eq!(ok, Some(vec![(vec![0.6, 0.8], "s1".to_owned())]));
        for (bad, d) in [
            (vec![probe("s1", vec![0.5, f32::NAN])], 2),
            (vec![probe("s1", vec![0.5])], 2),
            (vec![probe("", vec![0.5, 0.5])], 2),
            (vec![probe("s1", vec![1.0]); MAX_LABELLED_PROBES + 1], 1),
        ] {
            let status = labelled_probes(bad, d).expect_err("refused");
            assert_eq!(status.code(), tonic::Code::InvalidArgument);
            assert!(!status.message().contains("s1") && !status.message().contains("0.5"), "{status:?}");
        }
    }

    fn floats() -> impl Strategy<Value = f32> {
        prop_oneof![any::<f32>(), -1.0f32..1.0, Just(f32::NAN), Just(f32::INFINITY)]
    }

    // Fuzzing shard searches and scores as the matcher receives them: any queries and k are a
    // flat batch of whole, finite queries of the shard's dimension, or INVALID_ARGUMENT.
    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn any_search_is_a_batch_of_whole_finite_queries_or_invalid(
            queries in prop::collection::vec(prop::collection::vec(floats(), 0..6), 0..5),
            k in prop_oneof![Just(0u32), 1..=MAX_K + 1, any::<u32>()],
            dimension in 1usize..6,
        ) {
            let queries: Vec<QueryVector> =
                queries.into_iter().map(|values| QueryVector { values }).collect();
            match search_queries(&queries, k, dimension) {
                Ok(flat) => {
                    prop_assert!((1..=MAX_K).contains(&k));
                    prop_assert_eq!(flat.len(), queries.len() * dimension);
                    prop_assert!(flat.iter().all(|v| v.is_finite()));
                }
                Err(status) => prop_assert_eq!(status.code(), tonic::Code::InvalidArgument),
            }
            // A score's probe is one such query.
            for q in &queries {
                let checked = check_query(&q.values, dimension);
                let valid = q.values.len() == dimension && q.values.iter().all(|v| v.is_finite());
                prop_assert_eq!(checked.is_ok(), valid);
            }
        }
    }
}
