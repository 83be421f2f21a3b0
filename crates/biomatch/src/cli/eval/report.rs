//! The figures for one comparator (a report column), and the report as JSON or a Markdown table
//! with one column per comparator.

use super::acquire::{Comparator, Photo};
use super::identify::search;
use super::metrics::{Estimate, Pairs, Resamples, quantile, weighted_rate};
use biomatch_domain::ImpostorTail;
use serde::Serialize;
use std::collections::BTreeMap;

pub const FMRS: [f64; 2] = [1e-3, 1e-4];
pub const FPIRS: [f64; 2] = [1e-2, 1e-3];

#[derive(Debug, Serialize)]
pub struct Report {
    pub dir: String,
    pub photos: usize,
    pub identities: usize,
    /// The border added before detection, as a share of the photo's side (0: none).
    pub pad: f32,
    pub resamples: usize,
    pub seed: u64,
    pub models: Vec<ModelReport>,
}

#[derive(Debug, Serialize)]
pub struct ModelReport {
    pub model: String,
    pub failures_to_acquire: usize,
    pub fta_rate: f64,
    /// Why photos failed to acquire, and how many.
    pub failures: BTreeMap<String, usize>,
    pub genuine: Distribution,
    pub impostor: Distribution,
    /// The impostor distribution's upper tail, from which `--target-fpir` thresholds are derived
    /// (absent below 1,000 impostor pairs).
    pub impostor_tail: Option<ImpostorTail>,
    pub verification: Vec<Verification>,
    /// FNMR at the FMR 1e-3 threshold by terciles of the genuine pairs' quality.
    pub quality_bins: Vec<QualityBin>,
    pub identification: Vec<Identification>,
}

#[derive(Debug, Serialize)]
pub struct Distribution {
    pub pairs: usize,
    pub min: f32,
    pub median: f32,
    pub mean: f32,
    /// Standard deviation: a fusion weights each recogniser by its impostors' spread.
    pub sd: f32,
    pub max: f32,
}

#[derive(Debug, Serialize)]
pub struct Verification {
    pub fmr: f64,
    pub threshold: Option<f32>,
    pub fnmr: Option<Estimate>,
    /// Set when there are too few impostor pairs to show `fmr`.
    pub needs_impostor_pairs: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct QualityBin {
    /// Quality of the pair's weaker photo: from (inclusive) .. to (exclusive, but for the top bin).
    pub from: f32,
    pub to: f32,
    pub genuine_pairs: usize,
    pub fnmr: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct Identification {
    pub per_subject: usize,
    pub subjects: usize,
    pub templates: usize,
    pub mated_probes: usize,
    pub non_mated_probes: usize,
    pub rank1: Option<Estimate>,
    pub fnir: Vec<Fnir>,
}

#[derive(Debug, Serialize)]
pub struct Fnir {
    pub fpir: f64,
    pub threshold: Option<f32>,
    pub fnir: Option<Estimate>,
    /// Set when there are too few non-mated probes to show `fpir`.
    pub needs_non_mated_probes: Option<u64>,
}

/// Every figure for one comparator. `fmrs`: the FMRs to report FNMR at (the first is the one the
/// quality bins use).
pub fn assess(
    comparator: &dyn Comparator,
    photos: &[Photo],
    identities: usize,
    resamples: &Resamples,
    fmrs: &[f64],
    per_subject: &[usize],
) -> ModelReport {
    let acquired: Vec<(usize, usize, f32)> = photos
        .iter()
        .enumerate()
        .filter_map(|(i, p)| comparator.quality(i).map(|q| (i, p.identity, q)))
        .collect();
    let score = |a: usize, b: usize| comparator.score(acquired[a].0, acquired[b].0);
    let labelled: Vec<(usize, f32)> = acquired.iter().map(|&(_, id, q)| (id, q)).collect();
    let pairs = Pairs::new(&labelled, score);
    let ones = vec![1; identities];

    let verification = fmrs
        .iter()
        .map(|&fmr| Verification {
            fmr,
            threshold: pairs.threshold(&ones, fmr),
            fnmr: resamples.estimate(identities, |w| pairs.fnmr_at(w, fmr)),
            needs_impostor_pairs: pairs.threshold(&ones, fmr).is_none().then(|| (1.0 / fmr).ceil() as u64),
        })
        .collect();

    let mut quality_bins = Vec::new();
    if let (Some(t), false) = (pairs.threshold(&ones, fmrs[0]), pairs.genuine.is_empty()) {
        let mut qualities: Vec<f32> = pairs.genuine.iter().map(|g| g.2).collect();
        qualities.sort_by(f32::total_cmp);
        let edges = [qualities[0], quantile(&qualities, 1.0 / 3.0), quantile(&qualities, 2.0 / 3.0)];
        for (i, &from) in edges.iter().enumerate() {
            let to = edges.get(i + 1).copied().unwrap_or(f32::INFINITY);
            let inside: Vec<_> = pairs.genuine.iter().filter(|g| g.2 >= from && g.2 < to).collect();
            quality_bins.push(QualityBin {
                from,
                to: if i == 2 { qualities[qualities.len() - 1] } else { to },
                genuine_pairs: inside.len(),
                fnmr: weighted_rate(&inside, |_| 1, |g| g.0 < t),
            });
        }
    }

    let identities_of: Vec<usize> = acquired.iter().map(|a| a.1).collect();
    let identification = per_subject
        .iter()
        .map(|&n| {
            let searches = search(&identities_of, n, score);
            let fnir = FPIRS
                .iter()
                .map(|&fpir| Fnir {
                    fpir,
                    threshold: searches.threshold(&ones, fpir),
                    fnir: resamples.estimate(identities, |w| searches.fnir_at(w, fpir)),
                    needs_non_mated_probes: searches
                        .threshold(&ones, fpir)
                        .is_none()
                        .then(|| (1.0 / fpir).ceil() as u64),
                })
                .collect();
            Identification {
                per_subject: n,
                subjects: searches.subjects,
                templates: searches.templates,
                mated_probes: searches.mated.len(),
                non_mated_probes: searches.non_mated.len(),
                rank1: resamples.estimate(identities, |w| searches.rank1(w)),
                fnir,
            }
        })
        .collect();

    let failures_to_acquire = photos.len() - acquired.len();
    let mut genuine: Vec<f32> = pairs.genuine.iter().map(|g| g.0).collect();
    genuine.sort_by(f32::total_cmp);
    let mut impostor = pairs.impostor;
    impostor.reverse();
    let (model_id, model_version) = comparator.model();
    let impostor_tail = ImpostorTail::fit(&impostor, model_id, model_version, "biomatch eval").ok();
    ModelReport {
        model: comparator.name().to_owned(),
        failures_to_acquire,
        fta_rate: failures_to_acquire as f64 / photos.len().max(1) as f64,
        failures: comparator.failures(),
        genuine: distribution(&genuine),
        impostor: distribution(&impostor),
        impostor_tail,
        verification,
        quality_bins,
        identification,
    }
}

fn distribution(sorted: &[f32]) -> Distribution {
    let n = sorted.len().max(1) as f64;
    let mean = sorted.iter().map(|&s| f64::from(s)).sum::<f64>() / n;
    let variance = sorted.iter().map(|&s| (f64::from(s) - mean).powi(2)).sum::<f64>() / n;
    Distribution {
        pairs: sorted.len(),
        min: sorted.first().copied().unwrap_or(f32::NAN),
        median: quantile(sorted, 0.5),
        mean: mean as f32,
        sd: variance.sqrt() as f32,
        max: sorted.last().copied().unwrap_or(f32::NAN),
    }
}

fn rate(e: &Option<Estimate>) -> String {
    match e {
        Some(e) if e.low.is_nan() => format!("{:.4} (no interval)", e.value),
        Some(e) => format!("{:.4} [{:.4}, {:.4}]", e.value, e.low, e.high),
        None => "-".into(),
    }
}

fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The report as a Markdown table, a column per comparator.
pub fn markdown(report: &Report) -> String {
    let mut rows: Vec<(String, Vec<String>)> = Vec::new();
    let mut row = |label: String, cell: &dyn Fn(&ModelReport) -> String| {
        rows.push((label, report.models.iter().map(cell).collect()));
    };
    row("failures to acquire".into(), &|m| {
        format!("{} of {} ({:.2} %)", m.failures_to_acquire, report.photos, m.fta_rate * 100.0)
    });
    fn of(m: &ModelReport, genuine: bool) -> &Distribution {
        if genuine { &m.genuine } else { &m.impostor }
    }
    for (name, genuine) in [("genuine", true), ("impostor", false)] {
        row(format!("{name} pairs"), &|m| thousands(of(m, genuine).pairs));
        row(format!("{name} score min / median / mean / max"), &|m| {
            let d = of(m, genuine);
            format!("{:.3} / {:.3} / {:.3} / {:.3}", d.min, d.median, d.mean, d.max)
        });
        row(format!("{name} score sd"), &|m| format!("{:.3}", of(m, genuine).sd));
    }
    row("impostor tail (FMR at its start, exponential scale)".into(), &|m| match &m.impostor_tail {
        Some(t) => format!("{:.3} at {:.1e}, scale {:.4}", t.tail_score, t.tail_fmr, t.tail_scale),
        None => "needs 1,000 impostor pairs".into(),
    });
    let verifications = report.models.first().map_or(0, |m| m.verification.len());
    for i in 0..verifications {
        let fmr = report.models[0].verification[i].fmr;
        row(format!("FNMR at FMR {fmr:e} [95 % CI] (threshold)"), &|m| {
            let v = &m.verification[i];
            match (v.threshold, v.needs_impostor_pairs) {
                (Some(t), _) => format!("{} ({t:.4})", rate(&v.fnmr)),
                (None, Some(n)) => format!("needs {} impostor pairs", thousands(n as usize)),
                (None, None) => "-".into(),
            }
        });
    }
    for (i, third) in ["lowest", "middle", "highest"].into_iter().enumerate() {
        row(format!("FNMR at FMR {:e}, {third} quality third", FMRS[0]), &|m| match m.quality_bins.get(i) {
            Some(b) => format!(
                "{} (quality {:.2}-{:.2}, {} pairs)",
                b.fnmr.map_or("-".into(), |f| format!("{f:.4}")),
                b.from,
                b.to,
                b.genuine_pairs
            ),
            None => "-".into(),
        });
    }
    let searches = report.models.first().map_or(0, |m| m.identification.len());
    for i in 0..searches {
        let n = report.models[0].identification[i].per_subject;
        row(format!("identification, {n} per subject: gallery / mated / non-mated probes"), &|m| {
            let s = &m.identification[i];
            format!(
                "{} subjects ({} templates) / {} / {}",
                s.subjects, s.templates, s.mated_probes, s.non_mated_probes
            )
        });
        row(format!("rank-1 identification rate, {n} per subject [95 % CI]"), &|m| {
            rate(&m.identification[i].rank1)
        });
        for (j, fpir) in FPIRS.into_iter().enumerate() {
            row(format!("FNIR at FPIR {fpir:e}, {n} per subject [95 % CI] (threshold)"), &|m| {
                let f = &m.identification[i].fnir[j];
                match (f.threshold, f.needs_non_mated_probes) {
                    (Some(t), _) => format!("{} ({t:.4})", rate(&f.fnir)),
                    (None, Some(n)) => format!("needs {} non-mated probes", thousands(n as usize)),
                    (None, None) => "-".into(),
                }
            });
        }
    }
    let mut out = format!(
        "| | {} |\n|---|",
        report.models.iter().map(|m| m.model.as_str()).collect::<Vec<_>>().join(" | ")
    );
    out.push_str(&"---|".repeat(report.models.len()));
    out.push('\n');
    for (label, cells) in rows {
        out.push_str(&format!("| {label} | {} |\n", cells.join(" | ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// 20 identities of 3 photos; the last photo gives no face, photos 0 and 1 (identity 0, photo
    /// 0 of the lowest quality) score low together, impostors score spread below 0.3.
    struct Fake;

    impl Comparator for Fake {
        fn name(&self) -> &str {
            "fake"
        }
        fn model(&self) -> (&str, &str) {
            ("fake", "1")
        }
        fn quality(&self, photo: usize) -> Option<f32> {
            match photo {
                59 => None,
                0 => Some(0.1),
                p => Some(0.5 + (p % 7) as f32 / 20.0),
            }
        }
        fn score(&self, a: usize, b: usize) -> f32 {
            match (a.min(b), a.max(b)) {
                (0, 1) => 0.1,
                (a, b) if a / 3 == b / 3 => 0.8,
                (a, b) => ((a * 31 + b * 17) % 50) as f32 / 100.0 - 0.2,
            }
        }
        fn failures(&self) -> BTreeMap<String, usize> {
            BTreeMap::from([("no face".to_owned(), 1)])
        }
    }

    #[test]
    fn a_column_holds_every_figure_and_says_what_it_cannot_show() {
        let photos: Vec<Photo> =
            (0..60).map(|i| Photo { identity: i / 3, path: PathBuf::from(format!("{i}.png")) }).collect();
        let m = assess(&Fake, &photos, 20, &Resamples::draw(20, 50, 1), &FMRS, &[1]);
        assert_eq!((m.failures_to_acquire, m.genuine.pairs, m.impostor.pairs), (1, 58, 1653));
        let fnmr = m.verification[0].fnmr.expect("1653 impostor pairs show 1e-3");
        assert_eq!(fnmr.value, 1.0 / 58.0, "the one low genuine pair");
        assert_eq!(m.verification[1].needs_impostor_pairs, Some(10_000));
        assert_eq!(m.quality_bins.iter().map(|b| b.genuine_pairs).sum::<usize>(), 58);
        assert!(m.quality_bins[0].fnmr > Some(0.0), "the miss is in the lowest third");
        assert_eq!(m.quality_bins[2].fnmr, Some(0.0));
        let search = &m.identification[0];
        assert_eq!((search.subjects, search.mated_probes, search.non_mated_probes), (20, 39, 59));
        assert_eq!(search.fnir[0].needs_non_mated_probes, Some(100));
        let report = Report {
            dir: "d".into(),
            photos: 60,
            identities: 20,
            pad: 0.0,
            resamples: 50,
            seed: 1,
            models: vec![m],
        };
        let table = markdown(&report);
        assert!(table.contains("| failures to acquire | 1 of 60 (1.67 %) |"), "{table}");
        assert!(table.contains("| impostor pairs | 1,653 |"), "{table}");
        assert!(table.contains("needs 10,000 impostor pairs"), "{table}");
        assert!(table.contains("needs 100 non-mated probes"), "{table}");
    }
}
