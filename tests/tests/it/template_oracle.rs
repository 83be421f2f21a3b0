//! The search API is not a template oracle. A caller who chooses probe vectors and reads exact
//! scores rebuilds a 512-d template from 1,024 one-hot verifies (`e_i`, `-e_i`), or climbs to it
//! by keeping the random steps that raise its score. Run by every searching caller (kiosk and
//! analyst, with and without the `vector-probes` scope) under the default policy, neither attack
//! gets the reconstruction's cosine to the template to 0.3, and the attempt is on the record as
//! refused probes and budget refusals. With the policy opened (candidate margin 1, budgets off)
//! the same attacks do rebuild the template: the controls are what stops them.

use biomatch::synthetic::{Synthetic, cosine};
use biomatch_auth::TokenSpec;
use biomatch_config::ProcessRole;
use biomatch_domain::Role;
use biomatch_proto::v1::search_service_client::SearchServiceClient;
use biomatch_proto::v1::{
    EnrollMode, EnrollRequest, IdentifyRequest, Operation, QueryAuditRequest, VerifyRequest,
};
use biomatch_tests::{PURPOSE, TestCluster, backends, config, embedding, enrolled_gallery};
use std::sync::Arc;
use std::time::Duration;
use tonic::Code;
use tonic::transport::Channel;

const DIM: usize = 512;
const GALLERY: &str = "g";
const TARGET: &str = "target";
const CLIMB_QUERIES: usize = 2_000;

/// One attacker: a token, and what its searches were answered.
struct Attacker {
    client: SearchServiceClient<Channel>,
    token: String,
    refused: usize,
}

impl Attacker {
    fn new(cluster: &TestCluster, subject: &str, role: Role, vector_probes: bool) -> Self {
        let mut spec = TokenSpec::new(subject, role, Duration::from_secs(3600));
        spec.device = "lane-9".into();
        spec.galleries = Some(vec![GALLERY.into()]);
        spec.purposes = Some(vec![PURPOSE.into()]);
        spec.vector_probes = vector_probes;
        let token = cluster.signer.issue(&spec).expect("token");
        Self { client: SearchServiceClient::new(cluster.channel.clone()), token, refused: 0 }
    }

    fn answered<T>(&mut self, result: Result<tonic::Response<T>, tonic::Status>) -> Option<T> {
        match result {
            Ok(response) => Some(response.into_inner()),
            Err(status) => {
                assert!(
                    matches!(status.code(), Code::PermissionDenied | Code::ResourceExhausted),
                    "an attack probe is refused, not failed: {status:?}"
                );
                self.refused += 1;
                None
            }
        }
    }

    /// The target's score for `probe` as a verify answer discloses it.
    async fn verify(&mut self, probe: Vec<f32>) -> Option<f32> {
        let request = VerifyRequest {
            gallery: GALLERY.into(),
            subject_id: TARGET.into(),
            probe: embedding(probe),
            purpose: PURPOSE.into(),
            ..Default::default()
        };
        let result = self.client.verify(biomatch_client::request(request, &self.token)).await;
        self.answered(result).and_then(|r| r.score)
    }

    /// The target's score for `probe` as an identify answer discloses it.
    async fn identify(&mut self, probe: Vec<f32>) -> Option<f32> {
        let request = IdentifyRequest {
            gallery: GALLERY.into(),
            probe: embedding(probe),
            k: 1000,
            purpose: PURPOSE.into(),
            ..Default::default()
        };
        let result = self.client.identify(biomatch_client::request(request, &self.token)).await;
        let answer = self.answered(result)?;
        answer.candidates.iter().find(|c| c.subject_id == TARGET).map(|c| c.score)
    }

    /// Reads the template coordinate by coordinate: score(e_i) - score(-e_i) = 2 t_i.
    async fn one_hot(&mut self) -> Vec<f32> {
        let mut rebuilt = vec![0.0; DIM];
        for (i, value) in rebuilt.iter_mut().enumerate() {
            let mut e = vec![0.0; DIM];
            e[i] = 1.0;
            let plus = self.verify(e.clone()).await;
            e[i] = -1.0;
            let minus = self.verify(e).await;
            *value = match (plus, minus) {
                (Some(p), Some(m)) => (p - m) / 2.0,
                (Some(p), None) => p,
                (None, Some(m)) => -m,
                (None, None) => 0.0,
            };
        }
        rebuilt
    }

    /// A (1+1) evolution strategy on the identify score: a random start, a random step, kept
    /// when it raises the score; the step grows on success and shrinks on failure.
    async fn hill_climb(&mut self, seed: u64) -> Vec<f32> {
        let mut random = Synthetic::new(DIM, seed);
        let mut best_probe = random.identity();
        let mut best = self.identify(best_probe.clone()).await.unwrap_or(f32::NEG_INFINITY);
        let mut step = 0.5f32;
        for _ in 1..CLIMB_QUERIES {
            let direction = random.identity();
            let mut next: Vec<f32> = best_probe.iter().zip(&direction).map(|(x, d)| x + step * d).collect();
            let norm = next.iter().map(|x| x * x).sum::<f32>().sqrt();
            next.iter_mut().for_each(|x| *x /= norm);
            match self.identify(next.clone()).await {
                Some(score) if score > best => {
                    (best_probe, best) = (next, score);
                    step *= 1.5;
                }
                _ => step *= 1.5f32.powf(-0.25),
            }
        }
        best_probe
    }
}

fn similarity(rebuilt: &[f32], template: &[f32]) -> f32 {
    let norm = rebuilt.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm == 0.0 { 0.0 } else { cosine(rebuilt, template) / norm }
}

/// A cluster with the target enrolled among 20 others; `open` removes the disclosure floor and
/// the budgets. A fixed clock keeps every search in one budget minute.
async fn cluster_with_target(dir: &std::path::Path, open: bool) -> (TestCluster, Vec<f32>) {
    let backend = backends(dir).await.remove(0);
    let mut c = config(&backend, dir, &[ProcessRole::All]);
    if open {
        c.search.candidate_margin = 1.0;
        c.search.analyst_per_day = u32::MAX;
    } else {
        let defaults = biomatch_config::SearchConfig::default();
        (c.search.kiosk_per_minute, c.search.analyst_per_minute) =
            (defaults.kiosk_per_minute, defaults.analyst_per_minute);
    }
    let cluster = TestCluster::start_with_clock(c, Arc::new(|| 1_800_000_000_000)).await;
    let (mut synthetic, _, _) = enrolled_gallery(&cluster, GALLERY, DIM as u32, 1, 20, 11).await;
    let template = synthetic.identity();
    let enrol = EnrollRequest {
        gallery: GALLERY.into(),
        subject_id: TARGET.into(),
        samples: vec![embedding(template.clone()).expect("probe")],
        mode: EnrollMode::Add.into(),
        idempotency_key: "target".into(),
    };
    cluster.ingest().enroll(enrol).await.expect("target enrolled");
    (cluster, template)
}

/// Every refusal leaf (refused probe or budget) of `subject`, counted through the log's pages.
async fn refusals_on_record(cluster: &TestCluster, subject: &str) -> usize {
    let mut audit = cluster.audit();
    let mut total = 0;
    for operation in [Operation::AccessDenied, Operation::BudgetExceeded] {
        let mut page_token = 0;
        loop {
            let query = QueryAuditRequest {
                actor_subject: subject.into(),
                operation: operation.into(),
                page_size: 1000,
                page_token,
                ..Default::default()
            };
            let page = audit.query(query).await.expect("query").into_inner();
            total += page.leaves.len();
            if !page.has_more {
                break;
            }
            page_token = page.next_page_token;
        }
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_searching_caller_can_rebuild_a_template() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cluster, template) = cluster_with_target(dir.path(), false).await;
    let callers = [
        ("kiosk", Role::Kiosk, false),
        ("kiosk-with-vectors", Role::Kiosk, true),
        ("analyst", Role::Analyst, false),
        ("integration", Role::Analyst, true),
    ];
    // The callers attack at once, as a ring of stolen accounts would.
    let attacks = callers.iter().enumerate().map(|(i, &(name, role, vectors))| {
        let (mut one_hot, mut climber) = (
            Attacker::new(&cluster, &format!("{name}-one-hot"), role, vectors),
            Attacker::new(&cluster, &format!("{name}-climb"), role, vectors),
        );
        let template = &template;
        async move {
            let rebuilt = one_hot.one_hot().await;
            let climbed = climber.hill_climb(i as u64).await;
            let (a, b) = (similarity(&rebuilt, template), similarity(&climbed, template));
            assert!(a < 0.3, "{name}: one-hot attack reached cosine {a}");
            assert!(b < 0.3, "{name}: hill climbing reached cosine {b}");
            assert!(one_hot.refused > 0 && climber.refused > 0, "{name}: the attacks met refusals");
            (name, one_hot.refused, climber.refused)
        }
    });
    for (name, one_hot_refused, climb_refused) in futures::future::join_all(attacks).await {
        for (attack, refused) in [("one-hot", one_hot_refused), ("climb", climb_refused)] {
            let subject = format!("{name}-{attack}");
            assert_eq!(
                refusals_on_record(&cluster, &subject).await,
                refused,
                "{subject}: every refusal is an audit leaf"
            );
        }
    }
    cluster.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_policy_opened_the_same_attacks_rebuild_the_template() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cluster, template) = cluster_with_target(dir.path(), true).await;
    let mut attacker = Attacker::new(&cluster, "integration", Role::Analyst, true);
    let rebuilt = attacker.one_hot().await;
    let a = similarity(&rebuilt, &template);
    assert!(a > 0.95, "one-hot attack against an open policy reached only {a}");
    let climbed = attacker.hill_climb(7).await;
    let b = similarity(&climbed, &template);
    assert!(b > 0.6, "hill climbing against an open policy reached only {b}");
    assert_eq!(attacker.refused, 0);
    cluster.running.shutdown().await;
}
