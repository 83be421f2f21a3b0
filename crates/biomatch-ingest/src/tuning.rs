//! `SetSearchTuning`: records how a gallery's trained shards search, audited before it takes
//! effect like a threshold change. The settings are checked against what an index accepts; the
//! measurement they carry is the evidence recorded with them (from `SearchService/TuneGallery`,
//! or an operator's own when pinned).

use crate::custody::Custody;
use crate::{IngestServer, events, validate};
use biomatch_domain::Principal;
use biomatch_domain::limits::{MAX_REASON_BYTES, bounded};
use biomatch_proto::v1::{Gallery, Operation, SetSearchTuningRequest};
use biomatch_proto::{status_from, status_with};
use tonic::Status;

/// One line for the audit record: the settings and their evidence.
fn describe(t: &biomatch_domain::SearchTuning) -> String {
    format!(
        "nprobe {} rerank_depth {}{}: recall {:.4} (target {:.4}{}) at {:.0} queries/s (exact {:.0}) on {} probes, {} templates",
        t.nprobe,
        t.rerank_depth,
        if t.pinned { " pinned" } else { "" },
        t.recall,
        t.target_recall,
        if t.met_target { ", met" } else { ", NOT met" },
        t.queries_per_second,
        t.exact_queries_per_second,
        t.probes,
        t.templates,
    )
}

impl IngestServer {
    pub(crate) async fn set_search_tuning_request(
        &self,
        principal: &Principal,
        request: SetSearchTuningRequest,
    ) -> Result<Gallery, Status> {
        let SetSearchTuningRequest { gallery, tuning, reason } = request;
        bounded("reason", &reason, MAX_REASON_BYTES).map_err(|e| status_from(&e))?;
        let tuning = tuning
            .ok_or_else(|| status_with(biomatch_domain::ErrorClass::InvalidArgument, "tuning is required"))?;
        let mut tuning = biomatch_proto::search_tuning_from_proto(tuning);
        tuning.check().map_err(|e| status_from(&e))?;
        tuning.tuned_at_ms = (self.clock)();
        let before = self.gallery(principal, &gallery).await?;
        let name = validate::gallery_name(&gallery)?;
        let mut intent = events::gallery_event(principal, Operation::SearchTuning, &before);
        intent.detail = format!("search settings -> {}: {reason}", describe(&tuning));
        let custody = Custody::fresh("search-tuning");
        self.intent(&custody, intent.clone()).await?;
        let after = match custody.attempt(self.store.set_search_tuning(&name, &tuning, (self.clock)())).await
        {
            Ok(after) => after,
            Err(e) => return Err(self.refused(&custody, intent, status_from(&e)).await),
        };
        let version = after.tuning.as_ref().map_or(0, |t| t.version);
        let mut event = events::gallery_event(principal, Operation::SearchTuning, &after);
        event.detail = format!("search settings version {version}: {}: {reason}", describe(&tuning));
        let custody = custody.with_outcome_key(format!("search-tuning:{}:{version}", after.id));
        self.outcome(&custody, event).await?;
        let mut gallery = self.counted(&after).await?;
        // A search that passes this as `min_change_seq` runs with the new settings.
        gallery.settings_seq = self.store.head_seq().await.map_err(|e| status_from(&e))?;
        Ok(gallery)
    }
}
