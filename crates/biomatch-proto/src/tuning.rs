//! A gallery's search tuning on the wire.

use crate::convert::{millis_from_timestamp, timestamp_from_millis};
use crate::v1;
use biomatch_domain::SearchTuning;

pub fn search_tuning_to_proto(tuning: &SearchTuning) -> v1::SearchTuning {
    let SearchTuning {
        nprobe,
        rerank_depth,
        pinned,
        target_recall,
        recall,
        met_target,
        queries_per_second,
        exact_queries_per_second,
        probes,
        templates,
        tuned_at_ms,
        version,
    } = tuning;
    v1::SearchTuning {
        nprobe: *nprobe,
        rerank_depth: *rerank_depth,
        pinned: *pinned,
        target_recall: *target_recall,
        recall: *recall,
        met_target: *met_target,
        queries_per_second: *queries_per_second,
        exact_queries_per_second: *exact_queries_per_second,
        probes: *probes,
        templates: *templates,
        tuned_at: Some(timestamp_from_millis(*tuned_at_ms)),
        version: *version,
    }
}

pub fn search_tuning_from_proto(tuning: v1::SearchTuning) -> SearchTuning {
    let v1::SearchTuning {
        nprobe,
        rerank_depth,
        pinned,
        target_recall,
        recall,
        met_target,
        queries_per_second,
        exact_queries_per_second,
        probes,
        templates,
        tuned_at,
        version,
    } = tuning;
    SearchTuning {
        nprobe,
        rerank_depth,
        pinned,
        target_recall,
        recall,
        met_target,
        queries_per_second,
        exact_queries_per_second,
        probes,
        templates,
        tuned_at_ms: tuned_at.as_ref().map_or(0, millis_from_timestamp),
        version,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tuning_round_trips() {
        let tuning = SearchTuning {
            nprobe: 64,
            rerank_depth: 128,
            pinned: true,
            target_recall: 0.995,
            recall: 0.997,
            met_target: true,
            queries_per_second: 2500.0,
            exact_queries_per_second: 300.0,
            probes: 200,
            templates: 1_000_000,
            tuned_at_ms: 1_700_000_000_000,
            version: 3,
        };
        assert_eq!(search_tuning_from_proto(search_tuning_to_proto(&tuning)), tuning);
    }
}
