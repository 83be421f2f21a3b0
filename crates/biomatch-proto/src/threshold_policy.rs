//! Threshold policies and impostor tails on the wire.

use crate::convert::{millis_from_timestamp, timestamp_from_millis};
use crate::v1;
use biomatch_domain::{FmrPoint, ImpostorTail, ThresholdPolicy};

pub fn impostor_tail_to_proto(tail: &ImpostorTail) -> v1::ImpostorTail {
    v1::ImpostorTail {
        model_id: tail.model_id.clone(),
        model_version: tail.model_version.clone(),
        impostor_pairs: tail.impostor_pairs,
        points: tail.points.iter().map(|p| v1::FmrPoint { score: p.score, fmr: p.fmr }).collect(),
        tail_score: tail.tail_score,
        tail_fmr: tail.tail_fmr,
        tail_scale: tail.tail_scale,
        source: tail.source.clone(),
    }
}

/// Unchecked: [`ImpostorTail::check`] refuses what a threshold cannot be read from.
pub fn impostor_tail_from_proto(tail: v1::ImpostorTail) -> ImpostorTail {
    ImpostorTail {
        model_id: tail.model_id,
        model_version: tail.model_version,
        impostor_pairs: tail.impostor_pairs,
        points: tail.points.into_iter().map(|p| FmrPoint { score: p.score, fmr: p.fmr }).collect(),
        tail_score: tail.tail_score,
        tail_fmr: tail.tail_fmr,
        tail_scale: tail.tail_scale,
        source: tail.source,
    }
}

pub fn threshold_policy_to_proto(policy: &ThresholdPolicy) -> v1::ThresholdPolicy {
    v1::ThresholdPolicy {
        target_fpir: policy.target_fpir,
        impostor: Some(impostor_tail_to_proto(&policy.impostor)),
        templates: policy.templates,
        required_fmr: policy.required_fmr,
        extrapolated: policy.extrapolated,
        unattainable: policy.unattainable,
        derived_at: Some(timestamp_from_millis(policy.derived_at_ms)),
    }
}

/// A stored policy read back (answers); a request's policy is only its target and tail.
pub fn threshold_policy_from_proto(policy: v1::ThresholdPolicy) -> Option<ThresholdPolicy> {
    Some(ThresholdPolicy {
        target_fpir: policy.target_fpir,
        impostor: impostor_tail_from_proto(policy.impostor?),
        templates: policy.templates,
        required_fmr: policy.required_fmr,
        extrapolated: policy.extrapolated,
        unattainable: policy.unattainable,
        derived_at_ms: policy.derived_at.as_ref().map_or(0, millis_from_timestamp),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_round_trip() {
        let impostor = ImpostorTail {
            model_id: "sface".into(),
            model_version: "v".into(),
            impostor_pairs: 78_000,
            points: vec![FmrPoint { score: 0.2, fmr: 0.1 }, FmrPoint { score: 0.3, fmr: 0.01 }],
            tail_score: 0.3,
            tail_fmr: 0.01,
            tail_scale: 0.04,
            source: "test".into(),
        };
        let (_, policy) = ThresholdPolicy::derive(1e-3, impostor, 5000, 1_700_000_000_000).expect("derives");
        assert_eq!(threshold_policy_from_proto(threshold_policy_to_proto(&policy)), Some(policy));
    }
}
