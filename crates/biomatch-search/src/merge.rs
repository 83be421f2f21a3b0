//! Merging per-shard top-k lists into one ranked list.

use biomatch_proto::v1::Candidate;

/// The best `k` candidates over all shards, best first, ranked from 1. Ties break by subject id so
/// the order is deterministic. Subjects live in exactly one shard, so no subject appears twice.
pub fn merge_top_k(lists: Vec<Vec<Candidate>>, k: usize) -> Vec<Candidate> {
    let mut all: Vec<Candidate> = lists.into_iter().flatten().collect();
    all.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.subject_id.cmp(&b.subject_id)));
    all.truncate(k);
    for (i, c) in all.iter_mut().enumerate() {
        c.rank = i as u32 + 1;
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(id: &str, score: f32, shard: u32) -> Candidate {
        Candidate { subject_id: id.into(), score, rank: 0, shard }
    }

    #[test]
    fn merges_exactly_and_ranks() {
        let merged = merge_top_k(
            vec![vec![c("a", 0.9, 0), c("b", 0.5, 0)], vec![c("c", 0.7, 1), c("d", 0.6, 1)], vec![]],
            3,
        );
        let ids: Vec<(&str, u32)> = merged.iter().map(|c| (c.subject_id.as_str(), c.rank)).collect();
        assert_eq!(ids, vec![("a", 1), ("c", 2), ("d", 3)]);
    }

    #[test]
    fn ties_break_by_subject_id() {
        let merged = merge_top_k(vec![vec![c("z", 0.5, 0)], vec![c("y", 0.5, 1)]], 2);
        assert_eq!(merged[0].subject_id, "y");
    }
}
