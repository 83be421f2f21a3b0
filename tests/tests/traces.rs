//! One identify is one trace: a kiosk's span context goes in as W3C `traceparent` metadata and
//! every role the request touches (search, the gallery lookup at ingest, each matcher shard, the
//! audit log) records its server span as a child of the caller's span, in the same trace, across
//! real gRPC hops on loopback. The audit leaf records the trace id. Spans are collected by
//! OpenTelemetry's in-memory exporter through the same `tracing` layer production uses.

use biomatch_proto::v1::audit_service_client::AuditServiceClient;
use biomatch_proto::v1::{Operation, QueryAuditRequest};
use biomatch_tests::{TestCluster, backends, enrolled_gallery, identify};
use opentelemetry::trace::{SpanId, SpanKind, TraceId};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use std::time::Duration;
use tracing::Instrument;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;

const SHARDS: u32 = 3;

/// Spans end when their response is sent, which may be after the caller has read it: waits until
/// `done` holds for the finished spans (or gives up after 10 s and returns what there is).
async fn finished_spans(
    exporter: &InMemorySpanExporter,
    done: impl Fn(&[SpanData]) -> bool,
) -> Vec<SpanData> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let spans = exporter.get_finished_spans().expect("exporter");
        if done(&spans) || tokio::time::Instant::now() > deadline {
            return spans;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn named<'a>(spans: &'a [SpanData], name: &str) -> Vec<&'a SpanData> {
    spans.iter().filter(|s| s.name == name).collect()
}

fn children<'a>(spans: &'a [SpanData], parent: SpanId, name: &str) -> Vec<&'a SpanData> {
    spans.iter().filter(|s| s.parent_span_id == parent && s.name == name).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_identify_is_one_trace_across_roles() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();
    let subscriber = tracing_subscriber::registry()
        .with(biomatch_telemetry::traces::layer(&provider).with_filter(LevelFilter::INFO));
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber in this test binary");

    let dir = tempfile::tempdir().expect("tempdir");
    let backend = backends(dir.path()).await.remove(0);
    let cluster = TestCluster::all(&backend, dir.path()).await;
    let (mut synthetic, centres, seq) = enrolled_gallery(&cluster, "g", 64, SHARDS, 60, 9).await;
    exporter.reset();

    let kiosk = tracing::info_span!("kiosk.identify");
    let probe = synthetic.sample(&centres[7]);
    let answer = identify(&cluster, "g", probe, seq).instrument(kiosk.clone()).await.expect("identify");
    assert_eq!(answer.candidates[0].subject_id, "s00007");
    drop(kiosk);

    let identify_name = "biomatch.v1.SearchService/Identify";
    let spans = finished_spans(&exporter, |spans| {
        named(spans, "kiosk.identify").len() == 1
            && named(spans, identify_name).len() == 1
            && named(spans, "biomatch.v1.MatcherService/Search").len() == SHARDS as usize
            && !named(spans, "biomatch.v1.AuditService/Append").is_empty()
    })
    .await;
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_ref()).collect();

    let root = named(&spans, "kiosk.identify");
    assert_eq!(root.len(), 1, "one kiosk span: {names:?}");
    let trace = root[0].span_context.trace_id();
    assert_ne!(trace, TraceId::INVALID);

    // The search role continues the kiosk's trace (propagated in the gRPC metadata).
    let search = children(&spans, root[0].span_context.span_id(), identify_name);
    assert_eq!(search.len(), 1, "search's server span is the kiosk span's child: {names:?}");
    assert_eq!(search[0].span_kind, SpanKind::Server);
    let search_id = search[0].span_context.span_id();

    // The gallery lookup at ingest.
    let lookup = children(&spans, search_id, "search.gallery");
    assert_eq!(lookup.len(), 1, "{names:?}");
    let get_gallery =
        children(&spans, lookup[0].span_context.span_id(), "biomatch.v1.IngestService/GetGallery");
    assert_eq!(get_gallery.len(), 1, "ingest's span is the lookup's child: {names:?}");

    // Every shard: search's span for it, and the matcher's server span under it.
    let shard_spans = children(&spans, search_id, "search.shard");
    assert_eq!(shard_spans.len(), SHARDS as usize, "{names:?}");
    for shard in &shard_spans {
        let matcher = children(&spans, shard.span_context.span_id(), "biomatch.v1.MatcherService/Search");
        assert_eq!(matcher.len(), 1, "each shard call reaches one matcher: {names:?}");
        assert_eq!(matcher[0].span_kind, SpanKind::Server);
        let batched = children(&spans, matcher[0].span_context.span_id(), "matcher.batched_search");
        assert_eq!(batched.len(), 1, "{names:?}");
    }

    // The audit append, and its commit inside the audit role.
    let audit = children(&spans, search_id, "search.audit");
    assert_eq!(audit.len(), 1, "{names:?}");
    let append = children(&spans, audit[0].span_context.span_id(), "biomatch.v1.AuditService/Append");
    assert_eq!(append.len(), 1, "{names:?}");
    assert_eq!(children(&spans, append[0].span_context.span_id(), "audit.commit").len(), 1, "{names:?}");

    // All of it is one trace. The search role's look at which matchers hold which shards
    // (`Describe`), which the first search sets off in the background, is a trace of its own.
    let in_request: Vec<&SpanData> = spans
        .iter()
        .filter(|s| s.name != "kiosk.identify" && s.name.contains('/') && !s.name.ends_with("/Describe"))
        .collect();
    // Identify, GetGallery, Append and one Search per shard at least.
    assert!(in_request.len() >= 3 + SHARDS as usize, "{names:?}");
    for span in in_request {
        assert_eq!(span.span_context.trace_id(), trace, "{} is in the kiosk's trace", span.name);
    }

    // The audit leaf names the trace, so an auditor can find the trace of a search and back.
    let query = QueryAuditRequest {
        operation: Operation::Identify.into(),
        descending: true,
        page_size: 1,
        ..Default::default()
    };
    let leaves = AuditServiceClient::new(cluster.channel.clone())
        .query(biomatch_client::request(query, &cluster.token(biomatch_domain::Role::Auditor, "auditor-1")))
        .await
        .expect("audit query")
        .into_inner()
        .leaves;
    assert_eq!(leaves[0].index, answer.audit_leaf_index);
    let event = leaves[0].event.as_ref().expect("event");
    assert_eq!(event.trace_id, trace.to_string(), "the audit leaf carries the trace id");
}
