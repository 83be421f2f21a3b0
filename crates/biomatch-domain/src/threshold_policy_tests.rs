use super::*;

/// The exact quantiles of `offset + Exp(scale)` at `n` evenly spread probabilities.
fn exponential_scores(n: usize, offset: f64, scale: f64) -> Vec<f32> {
    (0..n).map(|i| (offset - scale * ((i as f64 + 0.5) / n as f64).ln()) as f32).collect()
}

fn tail() -> ImpostorTail {
    ImpostorTail::fit(&exponential_scores(200_000, -0.2, 0.05), "m", "1", "test").expect("fits")
}

#[test]
fn the_fitted_tail_recovers_an_exponential_distribution() {
    let tail = tail();
    assert_eq!(tail.impostor_pairs, 200_000);
    assert!((tail.tail_scale - 0.05).abs() < 0.005, "scale {}", tail.tail_scale);
    // FMR(t) = exp(-(t + 0.2) / 0.05), so the score at FMR 1e-6 is -0.2 + 0.05 ln 1e6.
    let (t, extrapolated) = tail.threshold_for_fmr(1e-6);
    assert!(extrapolated);
    let exact = -0.2 + 0.05 * 1e6f64.ln();
    assert!((f64::from(t) - exact).abs() < 0.02, "{t} against {exact}");
    // Within the measured points the answer is read from them, close to exact too.
    let (t, extrapolated) = tail.threshold_for_fmr(3e-3);
    assert!(!extrapolated);
    assert!((f64::from(t) - (-0.2 + 0.05 * (1.0 / 3e-3f64).ln())).abs() < 0.01, "{t}");
    tail.check().expect("a fitted tail is valid");
}

#[test]
fn thresholds_rise_as_the_fmr_falls() {
    let tail = tail();
    let mut last = f32::NEG_INFINITY;
    for exponent in 1..12 {
        let (t, _) = tail.threshold_for_fmr(10f64.powi(-exponent));
        assert!(t > last, "FMR 1e-{exponent}: {t} after {last}");
        last = t;
    }
}

#[test]
fn a_larger_gallery_needs_a_higher_threshold_for_the_same_fpir() {
    let (small, p_small) = ThresholdPolicy::derive(1e-3, tail(), 100_000, 7).expect("derives");
    let (large, p_large) = ThresholdPolicy::derive(1e-3, tail(), 1_000_000, 7).expect("derives");
    assert!(large > small, "{large} vs {small}");
    assert!((p_small.required_fmr / 1e-8 - 1.0).abs() < 1e-3, "{}", p_small.required_fmr);
    assert!(p_large.extrapolated && !p_large.unattainable);
    assert_eq!((p_large.templates, p_large.derived_at_ms), (1_000_000, 7));
    assert!(p_small.needs_rederiving(200_000) && !p_small.needs_rederiving(199_999));
}

#[test]
fn small_galleries_are_treated_as_the_minimum_size() {
    let (t0, p0) = ThresholdPolicy::derive(1e-2, tail(), 0, 0).expect("derives");
    let (t1, _) = ThresholdPolicy::derive(1e-2, tail(), MIN_POLICY_TEMPLATES, 0).expect("derives");
    assert_eq!((t0, p0.templates), (t1, MIN_POLICY_TEMPLATES));
    assert!(!p0.needs_rederiving(MIN_POLICY_TEMPLATES * 2 - 1));
}

#[test]
fn a_target_the_model_cannot_keep_is_capped_and_flagged() {
    let wide = ImpostorTail::fit(&exponential_scores(10_000, 0.0, 0.1), "m", "1", "test").expect("fits");
    let (t, policy) = ThresholdPolicy::derive(1e-6, wide, 10_000_000, 0).expect("derives");
    assert_eq!(t, 1.0);
    assert!(policy.unattainable);
    assert!(policy.describe(t).contains("UNATTAINABLE"));
}

#[test]
fn bad_targets_and_tails_are_refused() {
    for fpir in [0.0, -1e-3, 0.6, f64::NAN] {
        assert!(ThresholdPolicy::derive(fpir, tail(), 10, 0).is_err(), "{fpir}");
    }
    let mut nan = tail();
    nan.points[0].score = f32::NAN;
    let mut unordered = tail();
    unordered.points.reverse();
    let mut flat = tail();
    flat.tail_scale = 0.0;
    let mut nameless = tail();
    nameless.model_id.clear();
    // A tail far below the points would turn a stricter FMR into a laxer threshold.
    let mut sunk = tail();
    sunk.tail_score = -1e30;
    let mut behind = tail();
    behind.tail_score = behind.points[0].score - 0.1;
    let mut vast = tail();
    vast.tail_scale = 50.0;
    let mut verbose = tail();
    verbose.source = "x".repeat(MAX_TAIL_SOURCE_BYTES + 1);
    for bad in [nan, unordered, flat, nameless, sunk, behind, vast, verbose] {
        assert!(bad.check().is_err() && ThresholdPolicy::derive(1e-3, bad, 10, 0).is_err());
    }
    assert!(ImpostorTail::fit(&[0.1; 999], "m", "1", "too few").is_err());
}

#[test]
fn every_shipped_tail_is_valid_and_of_its_model() {
    for (id, version, _) in BUILTIN_TAILS {
        let tail = builtin_impostor_tail(id, version).expect("parses");
        tail.check().expect("valid");
        assert_eq!((tail.model_id.as_str(), tail.model_version.as_str()), (*id, *version));
    }
    assert_eq!(builtin_impostor_tail("unknown", "1"), None);
}
