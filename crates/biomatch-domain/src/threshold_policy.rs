//! Decision thresholds derived from a target false-positive identification rate (FPIR).
//!
//! An identify compares the probe with every template of the gallery, so the chance that some
//! impostor template reaches the threshold grows with the gallery: with `N` templates and a
//! per-comparison false match rate `FMR(t)`, `FPIR(t) = 1 - (1 - FMR(t))^N` (comparisons taken as
//! independent). A gallery that keeps a target FPIR therefore needs a threshold that rises as it
//! grows. [`ImpostorTail`] is a recogniser's measured impostor score distribution (from
//! `biomatch eval`): the measured FMR at a few scores, and beyond the last of them an exponential
//! tail fitted to the highest impostor scores (the peaks-over-threshold estimate with shape 0).
//! [`ThresholdPolicy::derive`] turns a target FPIR and a gallery size into a threshold with its
//! evidence: the size it was derived for, the FMR that needs, and whether that FMR lies beyond
//! what was measured (extrapolated from the fitted tail).

use crate::IndexSpecError;
use crate::limits::MAX_MODEL_BYTES;
use serde::{Deserialize, Serialize};

/// Galleries smaller than this are treated as this large: a new gallery does not change its
/// threshold with every early doubling, and errs on the strict side while small.
pub const MIN_POLICY_TEMPLATES: u64 = 1024;

/// The most measured points an [`ImpostorTail`] may carry.
pub const MAX_TAIL_POINTS: usize = 64;
/// The longest [`ImpostorTail::source`]: it is quoted in audit leaves.
pub const MAX_TAIL_SOURCE_BYTES: usize = 512;

/// A measured point of the impostor distribution: the share of impostor comparisons that score
/// at or above `score`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FmrPoint {
    pub score: f32,
    pub fmr: f64,
}

/// A recogniser's impostor score distribution, as far as thresholds need it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImpostorTail {
    pub model_id: String,
    pub model_version: String,
    /// Impostor comparisons it was measured on.
    pub impostor_pairs: u64,
    /// Measured points by rising score (falling FMR), each with enough pairs above it to count.
    pub points: Vec<FmrPoint>,
    /// Beyond the last point: `FMR(t) = tail_fmr * exp(-(t - tail_score) / tail_scale)`.
    pub tail_score: f32,
    pub tail_fmr: f64,
    pub tail_scale: f64,
    /// Where it was measured (data set, date, command).
    pub source: String,
}

/// A threshold that follows the gallery's size to keep a target FPIR, with the evidence of its
/// last derivation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThresholdPolicy {
    pub target_fpir: f64,
    pub impostor: ImpostorTail,
    /// Templates the threshold was derived for (the gallery's size then, at least
    /// [`MIN_POLICY_TEMPLATES`]).
    pub templates: u64,
    /// The per-comparison FMR that keeps the target FPIR at that size.
    pub required_fmr: f64,
    /// Whether `required_fmr` lies below the measured points (read from the fitted tail).
    pub extrapolated: bool,
    /// The threshold was capped at 1.0: the model cannot keep the target at this size.
    pub unattainable: bool,
    pub derived_at_ms: i64,
}

impl ImpostorTail {
    /// Fits the distribution of `scores` (impostor comparisons): measured points at every decade
    /// of FMR from 1e-1 down to the tail's start, and an exponential tail fitted to the highest
    /// `max(50, n / 1000)` scores (at most 10,000). Needs at least 1,000 finite scores.
    pub fn fit(
        scores: &[f32],
        model_id: &str,
        model_version: &str,
        source: &str,
    ) -> Result<Self, IndexSpecError> {
        let mut sorted: Vec<f32> = scores.iter().copied().filter(|s| s.is_finite()).collect();
        if sorted.len() < 1000 {
            return Err(IndexSpecError(format!(
                "an impostor tail needs at least 1000 impostor scores, not {}",
                sorted.len()
            )));
        }
        sorted.sort_by(|a, b| b.total_cmp(a));
        let n = sorted.len();
        let exceedances = (n / 1000).clamp(50, 10_000);
        let tail_score = sorted[exceedances - 1];
        let tail_fmr = exceedances as f64 / n as f64;
        let excess: f64 = sorted[..exceedances].iter().map(|s| f64::from(s - tail_score)).sum::<f64>();
        let tail_scale = (excess / (exceedances - 1).max(1) as f64).max(1e-4);
        let mut points = Vec::new();
        for decade in 1..=9 {
            let above = (n as f64 * 10f64.powi(-decade)).round() as usize;
            if above <= exceedances {
                break;
            }
            points.push(FmrPoint { score: sorted[above - 1], fmr: above as f64 / n as f64 });
        }
        points.push(FmrPoint { score: tail_score, fmr: tail_fmr });
        Ok(Self {
            model_id: model_id.into(),
            model_version: model_version.into(),
            impostor_pairs: n as u64,
            points,
            tail_score,
            tail_fmr,
            tail_scale,
            source: source.into(),
        })
    }

    /// Refuses a distribution thresholds cannot be read from.
    pub fn check(&self) -> Result<(), IndexSpecError> {
        let bad = |what: &str| Err(IndexSpecError(format!("impostor tail: {what}")));
        if self.points.is_empty() || self.points.len() > MAX_TAIL_POINTS {
            return bad(&format!("needs 1..={MAX_TAIL_POINTS} measured points"));
        }
        for p in &self.points {
            if !(p.score.is_finite() && (-1.0..=1.0).contains(&p.score) && p.fmr > 0.0 && p.fmr < 1.0) {
                return bad("points need scores in [-1, 1] and FMRs in (0, 1)");
            }
        }
        if self.points.windows(2).any(|w| !(w[1].score >= w[0].score && w[1].fmr < w[0].fmr)) {
            return bad("points must rise in score and fall in FMR");
        }
        // A cosine spans 2: a wider scale is no measurement.
        let tail_ok = self.tail_scale.is_finite()
            && self.tail_scale > 0.0
            && self.tail_scale <= 1.0
            && self.tail_fmr > 0.0
            && self.tail_fmr < 1.0
            && self.tail_score.is_finite()
            && (-1.0..=1.0).contains(&self.tail_score);
        if !tail_ok {
            return bad("the tail needs a scale in (0, 1], an FMR in (0, 1) and a score in [-1, 1]");
        }
        // Read beyond the last point, the tail must go on rising in score and falling in FMR.
        let last = self.points[self.points.len() - 1];
        if self.tail_score < last.score || self.tail_fmr > last.fmr {
            return bad("the tail must start at or beyond the last measured point");
        }
        if self.impostor_pairs == 0 || self.model_id.is_empty() {
            return bad("needs its model and the number of pairs it was measured on");
        }
        let too_long = [&self.model_id, &self.model_version].iter().any(|s| s.len() > MAX_MODEL_BYTES)
            || self.source.len() > MAX_TAIL_SOURCE_BYTES;
        if too_long {
            return bad(&format!(
                "model id and version are at most {MAX_MODEL_BYTES} bytes, its source at most {MAX_TAIL_SOURCE_BYTES}"
            ));
        }
        Ok(())
    }

    /// The smallest FMR measured directly.
    fn measured_floor(&self) -> f64 {
        self.points.last().map_or(1.0, |p| p.fmr).min(self.tail_fmr)
    }

    /// The score whose FMR is `fmr`, and whether it was read from the fitted tail. Between
    /// measured points, log FMR is interpolated linearly in the score.
    pub fn threshold_for_fmr(&self, fmr: f64) -> (f32, bool) {
        if fmr < self.measured_floor() {
            let t = f64::from(self.tail_score) + self.tail_scale * (self.tail_fmr / fmr).ln();
            return (t as f32, true);
        }
        let first = self.points[0];
        if fmr >= first.fmr {
            return (first.score, false);
        }
        for w in self.points.windows(2) {
            let (a, b) = (w[0], w[1]);
            if fmr <= a.fmr && fmr >= b.fmr {
                let share = (a.fmr.ln() - fmr.ln()) / (a.fmr.ln() - b.fmr.ln());
                return ((f64::from(a.score) + share * f64::from(b.score - a.score)) as f32, false);
            }
        }
        (self.tail_score, false)
    }
}

impl ThresholdPolicy {
    /// The threshold that keeps `target_fpir` in a gallery of `templates` templates, with the
    /// policy recording how it was derived.
    pub fn derive(
        target_fpir: f64,
        impostor: ImpostorTail,
        templates: u64,
        now_ms: i64,
    ) -> Result<(f32, Self), IndexSpecError> {
        if !(target_fpir > 0.0 && target_fpir <= 0.5) {
            return Err(IndexSpecError("target_fpir must be in (0, 0.5]".into()));
        }
        impostor.check()?;
        let templates = templates.max(MIN_POLICY_TEMPLATES);
        // 1 - (1 - fpir)^(1/N), without cancellation for small rates.
        let required_fmr = -((-target_fpir).ln_1p() / templates as f64).exp_m1();
        let (threshold, extrapolated) = impostor.threshold_for_fmr(required_fmr);
        let unattainable = threshold > 1.0;
        let threshold = threshold.min(1.0);
        let policy = Self {
            target_fpir,
            impostor,
            templates,
            required_fmr,
            extrapolated,
            unattainable,
            derived_at_ms: now_ms,
        };
        Ok((threshold, policy))
    }

    /// Whether a gallery now holding `templates` has doubled since the last derivation.
    pub fn needs_rederiving(&self, templates: u64) -> bool {
        templates >= self.templates.saturating_mul(2)
    }

    /// One line for audit records and listings.
    pub fn describe(&self, threshold: f32) -> String {
        format!(
            "threshold {threshold:.4} for FPIR {:e} at {} templates: FMR {:.2e} per comparison ({}{}; {} impostor pairs, {})",
            self.target_fpir,
            self.templates,
            self.required_fmr,
            if self.extrapolated { "extrapolated from the fitted tail" } else { "measured" },
            if self.unattainable { "; UNATTAINABLE, capped at 1.0" } else { "" },
            self.impostor.impostor_pairs,
            self.impostor.source,
        )
    }
}

/// Impostor distributions the project measured for the recognisers it ships: model id, model
/// version and the tail as JSON (`biomatch eval --impostor-tail-out`; docs/accuracy.md says on
/// what).
const BUILTIN_TAILS: &[(&str, &str, &str)] = &[
    ("sface", "2021dec-int8bq", include_str!("impostor_tails/sface-2021dec-int8bq.json")),
    // The version is the shipped fusion's layout digest: other weights are another model.
    ("sface+dlib", "1+160f0b32", include_str!("impostor_tails/sface-dlib-1.json")),
];

/// The impostor distribution shipped for a model, if the project measured one. A gallery that
/// names no model version takes the one shipped for its model id.
pub fn builtin_impostor_tail(model_id: &str, model_version: &str) -> Option<ImpostorTail> {
    let (_, _, json) = BUILTIN_TAILS.iter().find(|(id, version, _)| {
        *id == model_id && (model_version.is_empty() || *version == model_version)
    })?;
    serde_json::from_str(json).ok()
}

#[cfg(test)]
#[path = "threshold_policy_tests.rs"]
mod tests;
