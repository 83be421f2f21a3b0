//! What a search answer may disclose, and to whom: the search API must not be a template oracle.
//!
//! A caller who chooses probe vectors freely and reads exact scores can read a template
//! coordinate by coordinate (one-hot probes) or climb to it (keep what raises the score). So:
//! - raw embedding probes need the token scope `vector-probes` (trusted integrations); kiosks and
//!   analysts send photos, and a refused vector probe is an audited refusal;
//! - a kiosk learns the decision and, on a mate, the mate's id: no list, no score;
//! - an analyst sees candidates and scores only at or above the gallery's candidate floor (its
//!   threshold minus `search.candidate_margin`), and may lower the threshold of a search no
//!   further than that floor; below it, nothing is disclosed, so a probe far from every template
//!   (a one-hot vector, a random start) learns nothing;
//! - identify and verify spend the same query budget.

use biomatch_domain::{ErrorClass, Gallery, Principal, Role};
use biomatch_proto::status_with;
use biomatch_proto::v1::{Candidate, Probe, probe};
use tonic::Status;

/// How far below a gallery's threshold candidates are still shown to analysts, by default.
pub const DEFAULT_CANDIDATE_MARGIN: f32 = 0.10;

/// The disclosure settings of a search role.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DisclosurePolicy {
    /// Candidates scoring at least `threshold - candidate_margin` are listed for analysts.
    pub candidate_margin: f32,
}

impl Default for DisclosurePolicy {
    fn default() -> Self {
        Self { candidate_margin: DEFAULT_CANDIDATE_MARGIN }
    }
}

impl DisclosurePolicy {
    /// The lowest score any caller may see for `gallery`.
    pub fn floor(&self, gallery: &Gallery) -> f32 {
        gallery.threshold - self.candidate_margin
    }
}

/// What a caller's answer carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sees {
    /// The decision, and the mate's id on a mate (kiosks).
    Decision,
    /// The decision and the candidates at or above the floor, with their scores (analysts).
    Candidates,
}

impl Sees {
    pub fn of(principal: &Principal) -> Self {
        match principal.role {
            Role::Analyst => Sees::Candidates,
            _ => Sees::Decision,
        }
    }
}

/// Why a probe kind is refused, if it is: a raw embedding needs the `vector-probes` scope.
pub fn probe_refusal(principal: &Principal, probe: Option<&Probe>) -> Option<String> {
    let is_vector = matches!(probe.and_then(|p| p.kind.as_ref()), Some(probe::Kind::Embedding(_)));
    (is_vector && !principal.vector_probes).then(|| {
        format!(
            "role {} may not send an embedding as a probe without the token scope {:?}: send a \
             photo",
            principal.role,
            biomatch_domain::VECTOR_PROBES_SCOPE
        )
    })
}

/// Why a search's purpose is refused, if it is: it must be named, allowed by the gallery and
/// covered by the caller's token.
pub fn purpose_refusal(principal: &Principal, gallery: &Gallery, purpose: &str) -> Option<String> {
    if purpose.is_empty() {
        Some(format!("a search of gallery {} must name its purpose", gallery.name))
    } else if !gallery.allowed_purposes.iter().any(|p| p == purpose) {
        Some(format!("gallery {} may not be searched for purpose {purpose:?}", gallery.name))
    } else if !principal.may_search(gallery.name.as_str(), purpose) {
        Some(format!("this token does not cover gallery {} for purpose {purpose:?}", gallery.name))
    } else {
        None
    }
}

/// The threshold a search decides with: the gallery's, or an analyst's override that is a valid
/// score and not below the candidate floor.
pub fn threshold(
    principal: &Principal,
    gallery: &Gallery,
    requested: Option<f32>,
    floor: f32,
) -> Result<f32, Status> {
    let Some(t) = requested else { return Ok(gallery.threshold) };
    if !(t.is_finite() && (-1.0..=1.0).contains(&t)) {
        return Err(status_with(ErrorClass::InvalidArgument, "threshold must be between -1 and 1"));
    }
    if Sees::of(principal) != Sees::Candidates {
        return Err(status_with(
            ErrorClass::PermissionDenied,
            format!("role {} may not override a gallery's threshold", principal.role),
        ));
    }
    if t < floor {
        return Err(status_with(
            ErrorClass::InvalidArgument,
            format!("threshold {t} is below gallery {}'s candidate floor {floor:.3}", gallery.name),
        ));
    }
    Ok(t)
}

/// The candidates an identify answer lists, from the merged list (best first), and the mate.
pub fn identify_answer(
    sees: Sees,
    merged: Vec<Candidate>,
    floor: f32,
    threshold: f32,
) -> (Vec<Candidate>, Option<Candidate>) {
    let mate = merged.first().filter(|c| c.score >= threshold).cloned();
    let listed = match sees {
        Sees::Candidates => merged.into_iter().take_while(|c| c.score >= floor).collect(),
        Sees::Decision => Vec::new(),
    };
    (listed, mate)
}

/// The score a verify answer carries, if any.
pub fn verify_score(sees: Sees, score: f32, floor: f32) -> Option<f32> {
    (sees == Sees::Candidates && score >= floor).then_some(score)
}

#[cfg(test)]
mod tests {
    use super::*;
    use biomatch_proto::v1::Embedding;

    fn candidate(id: &str, score: f32) -> Candidate {
        Candidate { subject_id: id.into(), score, rank: 0, shard: 0 }
    }

    fn gallery(threshold: f32) -> Gallery {
        Gallery {
            name: biomatch_domain::GalleryName::parse("g").expect("name"),
            dimension: 8,
            shard_count: 1,
            index: biomatch_domain::IndexSpec::flat(),
            model_id: "external".into(),
            model_version: String::new(),
            threshold,
            threshold_version: 1,
            allowed_purposes: vec!["border".into()],
            retention_seconds: 0,
            default_k: 10,
            created_at_ms: 0,
        }
    }

    #[test]
    fn kiosks_learn_the_decision_and_the_mate_only() {
        let merged = vec![candidate("a", 0.7), candidate("b", 0.4)];
        let (listed, mate) = identify_answer(Sees::Decision, merged.clone(), 0.35, 0.45);
        assert!(listed.is_empty());
        assert_eq!(mate.map(|m| m.subject_id).as_deref(), Some("a"));
        let (listed, mate) = identify_answer(Sees::Candidates, merged, 0.35, 0.45);
        assert_eq!(listed.len(), 2);
        assert_eq!(mate.map(|m| m.subject_id).as_deref(), Some("a"));
        let (listed, mate) = identify_answer(Sees::Candidates, vec![candidate("c", 0.2)], 0.35, 0.45);
        assert!(listed.is_empty() && mate.is_none(), "nothing below the floor, no mate");
    }

    #[test]
    fn scores_below_the_floor_and_kiosk_scores_are_withheld() {
        assert_eq!(verify_score(Sees::Candidates, 0.5, 0.35), Some(0.5));
        assert_eq!(verify_score(Sees::Candidates, 0.04, 0.35), None);
        assert_eq!(verify_score(Sees::Decision, 0.9, 0.35), None);
    }

    #[test]
    fn thresholds_are_overridden_by_analysts_and_never_below_the_floor() {
        let analyst = Principal::new("a", Role::Analyst);
        let kiosk = Principal::new("k", Role::Kiosk);
        let g = gallery(0.45);
        assert_eq!(threshold(&kiosk, &g, None, 0.35).expect("default"), 0.45);
        assert_eq!(threshold(&analyst, &g, Some(0.4), 0.35).expect("allowed"), 0.4);
        let low = threshold(&analyst, &g, Some(0.1), 0.35).expect_err("below floor");
        assert_eq!(low.code(), tonic::Code::InvalidArgument);
        let kiosk = threshold(&kiosk, &g, Some(0.5), 0.35).expect_err("kiosk");
        assert_eq!(kiosk.code(), tonic::Code::PermissionDenied);
        let nan = threshold(&analyst, &g, Some(f32::NAN), 0.35).expect_err("nan");
        assert_eq!(nan.code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn vector_probes_need_the_scope() {
        let vector = Probe { kind: Some(probe::Kind::Embedding(Embedding::default())) };
        let photo = Probe { kind: Some(probe::Kind::Image(vec![1])) };
        let mut analyst = Principal::new("a", Role::Analyst);
        assert!(probe_refusal(&analyst, Some(&vector)).is_some());
        assert!(probe_refusal(&analyst, Some(&photo)).is_none());
        assert!(probe_refusal(&analyst, None).is_none(), "a missing probe is refused later, as invalid");
        analyst.vector_probes = true;
        assert!(probe_refusal(&analyst, Some(&vector)).is_none());
    }
}
