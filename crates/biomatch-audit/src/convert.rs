//! Audit events on the wire <-> canonical audit records.

use biomatch_auditlog::{AuditRecord, ScoredSubject};
use biomatch_domain::{ErrorClass, Principal};
use biomatch_proto::status_with;
use biomatch_proto::v1::{Actor, AuditEvent, Operation, ScoredSubject as WireScored};
use tonic::Status;

pub(crate) fn operation_name(op: Operation) -> &'static str {
    match op {
        Operation::Unspecified => "unspecified",
        Operation::Identify => "identify",
        Operation::Verify => "verify",
        Operation::Enroll => "enroll",
        Operation::DeleteSubject => "delete_subject",
        Operation::CreateGallery => "create_gallery",
        Operation::DeleteGallery => "delete_gallery",
        Operation::Review => "review",
        Operation::AuditRead => "audit_read",
        Operation::Purge => "purge",
        Operation::KeyChange => "key_change",
        Operation::AccessDenied => "access_denied",
        Operation::BudgetExceeded => "budget_exceeded",
        Operation::SetThreshold => "set_threshold",
        Operation::AuthFailed => "auth_failed",
        Operation::SubjectRead => "subject_read",
        Operation::SearchRead => "search_read",
        Operation::SearchTuning => "search_tuning",
    }
}

fn operation_from_name(name: &str) -> Operation {
    // Every defined operation: the match above is exhaustive, so this range only has to cover it.
    (0..64)
        .filter_map(|n| Operation::try_from(n).ok())
        .find(|op| operation_name(*op) == name)
        .unwrap_or(Operation::Unspecified)
}

pub(crate) fn empty_record(principal: &Principal, op: Operation, time_ms: i64) -> AuditRecord {
    AuditRecord {
        time_ms,
        actor_subject: principal.subject.clone(),
        actor_role: principal.role.to_string(),
        actor_device: principal.device.clone(),
        operation: operation_name(op).to_owned(),
        outcome: "OK".to_owned(),
        ..AuditRecord::default()
    }
}

/// Validates an event and stamps it with the audit service's time.
pub fn event_to_record(event: AuditEvent, time_ms: i64) -> Result<AuditRecord, Status> {
    let AuditEvent {
        actor,
        operation,
        gallery,
        purpose,
        case_ref,
        model_id,
        model_version,
        threshold,
        threshold_version,
        candidates,
        subject_ids,
        decision,
        partial,
        missing_shards,
        trace_id,
        request_id,
        outcome,
        detail,
    } = event;
    let bad = |m: &str| status_with(ErrorClass::InvalidArgument, m.to_owned());
    let actor = actor.ok_or_else(|| bad("event.actor is required"))?;
    if actor.subject.is_empty() {
        return Err(bad("event.actor.subject is required"));
    }
    let op = Operation::try_from(operation).unwrap_or_default();
    if op == Operation::Unspecified {
        return Err(bad("event.operation is required"));
    }
    if threshold.is_some_and(|t| !t.is_finite()) || candidates.iter().any(|c| !c.score.is_finite()) {
        return Err(bad("scores and thresholds must be finite"));
    }
    if candidates.len() > 10_000 || subject_ids.len() > 100_000 || detail.len() > 4096 {
        return Err(bad("event is too large"));
    }
    Ok(AuditRecord {
        time_ms,
        actor_subject: actor.subject,
        actor_role: actor.role,
        actor_device: actor.device_id,
        operation: operation_name(op).to_owned(),
        gallery,
        purpose,
        case_ref,
        model_id,
        model_version,
        threshold,
        threshold_version,
        candidates: candidates
            .into_iter()
            .map(|c| ScoredSubject { subject_id: c.subject_id, score: c.score })
            .collect(),
        subject_ids,
        decision,
        partial,
        missing_shards,
        trace_id,
        request_id,
        outcome: if outcome.is_empty() { "OK".to_owned() } else { outcome },
        detail,
    })
}

pub fn record_to_event(r: AuditRecord) -> AuditEvent {
    AuditEvent {
        actor: Some(Actor { subject: r.actor_subject, role: r.actor_role, device_id: r.actor_device }),
        operation: operation_from_name(&r.operation).into(),
        gallery: r.gallery,
        purpose: r.purpose,
        case_ref: r.case_ref,
        model_id: r.model_id,
        model_version: r.model_version,
        threshold: r.threshold,
        threshold_version: r.threshold_version,
        candidates: r
            .candidates
            .into_iter()
            .map(|c| WireScored { subject_id: c.subject_id, score: c.score })
            .collect(),
        subject_ids: r.subject_ids,
        decision: r.decision,
        partial: r.partial,
        missing_shards: r.missing_shards,
        trace_id: r.trace_id,
        request_id: r.request_id,
        outcome: r.outcome,
        detail: r.detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_round_trips_by_name() {
        for n in 1..=12 {
            let op = Operation::try_from(n).expect("defined");
            assert_eq!(operation_from_name(operation_name(op)), op);
        }
    }

    #[test]
    fn event_round_trips() {
        let event = AuditEvent {
            actor: Some(Actor { subject: "k1".into(), role: "kiosk".into(), device_id: "lane-1".into() }),
            operation: Operation::Identify.into(),
            gallery: "g".into(),
            threshold: Some(0.5),
            candidates: vec![WireScored { subject_id: "s".into(), score: 0.9 }],
            outcome: "OK".into(),
            ..Default::default()
        };
        let record = event_to_record(event.clone(), 5).expect("valid");
        assert_eq!(record_to_event(record), event);
    }

    #[test]
    fn refuses_incomplete_or_non_finite_events() {
        let base = AuditEvent {
            actor: Some(Actor { subject: "k1".into(), ..Default::default() }),
            operation: Operation::Identify.into(),
            ..Default::default()
        };
        assert!(event_to_record(AuditEvent { actor: None, ..base.clone() }, 0).is_err());
        assert!(event_to_record(AuditEvent { operation: 0, ..base.clone() }, 0).is_err());
        assert!(event_to_record(AuditEvent { threshold: Some(f32::NAN), ..base.clone() }, 0).is_err());
        assert!(event_to_record(base, 0).is_ok());
    }

    fn texts() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![Just("g".to_owned()), "\\PC{0,12}", ".{0,40}", "(?s).{0,8}", Just(String::new())]
    }

    fn scores() -> impl proptest::strategy::Strategy<Value = f32> {
        use proptest::prelude::*;
        prop_oneof![8 => any::<f32>(), 8 => -1.0f32..1.0, 1 => Just(f32::NAN), 1 => Just(f32::NEG_INFINITY)]
    }

    // Fuzzing the audit role's validation of appended events: any event is refused with
    // INVALID_ARGUMENT or becomes a record within the bounds, whose leaf bytes decode to it again
    // and read back as the event that was sent.
    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        #[test]
        fn any_event_is_a_faithful_leaf_or_invalid(
            actor in proptest::option::weighted(0.9, ("[a-z0-9-]{1,12}|.{0,12}", texts(), texts())),
            operation in proptest::prop_oneof![8 => 1i32..=16, 1 => proptest::prelude::any::<i32>()],
            strings in proptest::collection::vec(texts(), 9),
            threshold in proptest::prop_oneof![
                4 => proptest::option::of(-1.0f32..1.0),
                1 => proptest::option::of(scores()),
            ],
            threshold_version in proptest::prelude::any::<u32>(),
            candidates in proptest::prop_oneof![
                4 => proptest::collection::vec((texts(), -1.0f32..1.0), 0..4),
                1 => proptest::collection::vec((texts(), scores()), 0..4),
            ],
            subject_ids in proptest::collection::vec(texts(), 0..4),
            partial in proptest::prelude::any::<bool>(),
            missing_shards in proptest::collection::vec(proptest::prelude::any::<u32>(), 0..4),
            detail in proptest::prop_oneof![texts(), "x{4090,4100}"],
            time_ms in proptest::prelude::any::<i64>(),
        ) {
            let strings = <[String; 9]>::try_from(strings).expect("nine");
            let [
                gallery, purpose, case_ref, model_id, model_version, decision, trace_id, request_id, outcome,
            ] = strings;
            let event = AuditEvent {
                actor: actor.map(|(subject, role, device_id)| Actor { subject, role, device_id }),
                operation,
                gallery,
                purpose,
                case_ref,
                model_id,
                model_version,
                threshold,
                threshold_version,
                candidates: candidates
                    .into_iter()
                    .map(|(subject_id, score)| WireScored { subject_id, score })
                    .collect(),
                subject_ids,
                decision,
                partial,
                missing_shards,
                trace_id,
                request_id,
                outcome,
                detail,
            };
            match event_to_record(event.clone(), time_ms) {
                Ok(record) => {
                    proptest::prop_assert!(!record.actor_subject.is_empty());
                    proptest::prop_assert!(record.operation != "unspecified" && !record.outcome.is_empty());
                    proptest::prop_assert!(record.threshold.is_none_or(f32::is_finite));
                    proptest::prop_assert!(record.candidates.iter().all(|c| c.score.is_finite()));
                    proptest::prop_assert!(record.detail.len() <= 4096);
                    proptest::prop_assert_eq!(record.time_ms, time_ms);
                    let decoded = AuditRecord::decode(&record.encode()).expect("a leaf decodes");
                    proptest::prop_assert_eq!(&decoded, &record);
                    let mut sent = event;
                    if sent.outcome.is_empty() {
                        sent.outcome = "OK".into();
                    }
                    proptest::prop_assert_eq!(record_to_event(decoded), sent);
                }
                Err(status) => proptest::prop_assert_eq!(status.code(), tonic::Code::InvalidArgument),
            }
        }
    }
}
