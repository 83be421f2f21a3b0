//! Turning a probe (photo or vector) into a template of a gallery's model and dimension.

use crate::Transport;
use biomatch_auth::ServiceCredentials;
use biomatch_domain::limits::{MAX_MODEL_BYTES, bounded};
use biomatch_domain::{Classified, ErrorClass, Template};
use biomatch_proto::v1::embed_service_client::EmbedServiceClient;
use biomatch_proto::v1::{EmbedOptions, EmbedRequest, Embedding, Probe, Quality, probe};
use biomatch_proto::{status_from, status_with};
use tonic::Status;

/// The model a gallery's templates come from.
#[derive(Debug, Clone)]
pub struct GalleryModel {
    pub dimension: usize,
    pub model_id: String,
    pub model_version: String,
}

impl From<&biomatch_domain::Gallery> for GalleryModel {
    fn from(gallery: &biomatch_domain::Gallery) -> Self {
        Self {
            dimension: gallery.dimension as usize,
            model_id: gallery.model_id.clone(),
            model_version: gallery.model_version.clone(),
        }
    }
}

/// A probe resolved into a normalised template, with the model that produced it and, for a
/// photo, the face's quality.
#[derive(Debug, Clone)]
pub struct ResolvedProbe {
    pub template: Template,
    pub model_id: String,
    pub model_version: String,
    pub quality: Option<Quality>,
}

/// Which face of a photo a probe stands for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FaceRule {
    /// The largest face (a kiosk's camera may catch travellers behind): identify and verify.
    Largest,
    /// Exactly one face, of at least this overall quality: enrolment.
    Single { min_quality: f32 },
}

/// Validates a vector probe, or asks the embed role to detect and embed the face of a photo
/// that `rule` asks for. Images are kept in memory for this call only.
pub async fn resolve_probe(
    embed: &EmbedServiceClient<Transport>,
    service: &ServiceCredentials,
    probe: Option<Probe>,
    gallery: &GalleryModel,
    rule: FaceRule,
) -> Result<ResolvedProbe, Status> {
    let kind = probe.and_then(|p| p.kind).ok_or_else(|| {
        status_with(ErrorClass::InvalidArgument, "probe is required: an image or an embedding")
    })?;
    let image = match kind {
        probe::Kind::Embedding(e) => return resolve_embedding(e, gallery),
        probe::Kind::Image(image) if image.is_empty() => {
            return Err(status_with(ErrorClass::InvalidArgument, "probe image is empty"));
        }
        probe::Kind::Image(image) => image,
    };
    let largest_face_only = rule == FaceRule::Largest;
    let options = EmbedOptions { max_faces: 0, min_face_size: 0, largest_face_only };
    let mut client = embed.clone();
    let response = client
        .embed(crate::request(
            EmbedRequest { image, options: Some(options), model_id: gallery.model_id.clone() },
            &service.token(),
        ))
        .await?;
    let faces = response.into_inner().faces;
    if faces.len() > 1 && !largest_face_only {
        return Err(status_with(
            ErrorClass::InvalidArgument,
            format!("{} faces found where exactly one is required", faces.len()),
        ));
    }
    let face = faces
        .into_iter()
        .next()
        .ok_or_else(|| status_with(ErrorClass::InvalidArgument, "no face found in the image"))?;
    let quality = face.quality.unwrap_or_default();
    if let FaceRule::Single { min_quality } = rule
        && quality.overall < min_quality
    {
        let issues = if quality.issues.is_empty() {
            String::new()
        } else {
            format!(": {}", quality.issues.join("; "))
        };
        return Err(status_with(
            ErrorClass::InvalidArgument,
            format!(
                "face quality {:.2} is below the enrolment minimum {min_quality:.2}{issues}",
                quality.overall
            ),
        ));
    }
    let embedding = face
        .embedding
        .ok_or_else(|| status_with(ErrorClass::Internal, "embed role returned no embedding"))?;
    let mut resolved = resolve_embedding(embedding, gallery)?;
    resolved.quality = Some(quality);
    Ok(resolved)
}

/// Validates a vector against the gallery: dimension, finite values, same model.
pub fn resolve_embedding(embedding: Embedding, gallery: &GalleryModel) -> Result<ResolvedProbe, Status> {
    let Embedding { values, model_id, model_version } = embedding;
    // A search's audit leaf and answer carry the probe's model: bounded before either is written,
    // and before a refusal quotes it.
    for (field, value) in [("model_id", &model_id), ("model_version", &model_version)] {
        bounded(field, value, MAX_MODEL_BYTES).map_err(|e| status_from(&e))?;
    }
    let model_id = if model_id.is_empty() { gallery.model_id.clone() } else { model_id };
    if model_id != gallery.model_id {
        return Err(status_with(
            ErrorClass::FailedPrecondition,
            format!(
                "embedding is from model {model_id:?} but the gallery holds model {:?}",
                gallery.model_id
            ),
        ));
    }
    let model_version = if model_version.is_empty() { gallery.model_version.clone() } else { model_version };
    let template =
        Template::new(values, gallery.dimension).map_err(|e| status_from(&e as &dyn Classified))?;
    Ok(ResolvedProbe { template, model_id, model_version, quality: None })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> GalleryModel {
        GalleryModel { dimension: 3, model_id: "m".into(), model_version: "1".into() }
    }

    #[test]
    fn vectors_are_validated_against_the_gallery() {
        let ok = resolve_embedding(Embedding { values: vec![3.0, 0.0, 4.0], ..Default::default() }, &model())
            .expect("valid");
        assert_eq!(ok.template.values(), &[0.6, 0.0, 0.8]);
        assert_eq!(ok.model_id, "m");
        let wrong_dim = resolve_embedding(Embedding { values: vec![1.0; 4], ..Default::default() }, &model());
        assert_eq!(wrong_dim.expect_err("refused").code(), tonic::Code::InvalidArgument);
        let nan =
            resolve_embedding(Embedding { values: vec![f32::NAN, 1.0, 1.0], ..Default::default() }, &model());
        assert_eq!(nan.expect_err("refused").code(), tonic::Code::InvalidArgument);
        let other =
            Embedding { values: vec![1.0; 3], model_id: "other".into(), model_version: String::new() };
        assert_eq!(
            resolve_embedding(other, &model()).expect_err("refused").code(),
            tonic::Code::FailedPrecondition
        );
    }

    #[test]
    fn an_oversized_model_is_refused_before_it_is_recorded_or_quoted() {
        // Found by the property below: a probe's model version reached a search's audit leaf and
        // answer at any length, and a mismatched model id was quoted back whole.
        let long = "m".repeat(MAX_MODEL_BYTES + 1);
        let values = vec![1.0; 3];
        let version =
            Embedding { values: values.clone(), model_id: String::new(), model_version: long.clone() };
        let id = Embedding { values, model_id: long, model_version: String::new() };
        for embedding in [version, id] {
            let status = resolve_embedding(embedding, &model()).expect_err("refused");
            assert_eq!(status.code(), tonic::Code::InvalidArgument);
            assert!(status.message().len() < 100, "{}", status.message());
        }
    }

    fn floats() -> impl proptest::strategy::Strategy<Value = f32> {
        use proptest::prelude::*;
        prop_oneof![
            any::<f32>(),
            -2.0f32..2.0,
            proptest::sample::select(vec![
                0.0,
                -0.0,
                f32::NAN,
                f32::INFINITY,
                f32::MIN_POSITIVE,
                f32::MAX,
                1e-45
            ]),
        ]
    }

    // Fuzzing vector probes, as the ingest and search roles validate them: any embedding is a
    // unit template of the gallery's dimension and model, or INVALID_ARGUMENT / FAILED_PRECONDITION.
    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        #[test]
        fn any_embedding_is_a_template_of_the_gallery_or_refused(
            values in proptest::collection::vec(floats(), 0..10),
            dimension in 1usize..8,
            model_id in proptest::prop_oneof![
                proptest::strategy::Just(String::new()),
                proptest::strategy::Just("m".to_owned()),
                ".{0,300}",
            ],
            model_version in ".{0,300}",
        ) {
            let gallery = GalleryModel { dimension, model_id: "m".into(), model_version: "1".into() };
            match resolve_embedding(Embedding { values, model_id, model_version }, &gallery) {
                Ok(probe) => {
                    proptest::prop_assert_eq!(probe.template.dimension(), dimension);
                    let values = probe.template.values();
                    proptest::prop_assert!(values.iter().all(|v| v.is_finite()));
                    let norm = values.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>().sqrt();
                    proptest::prop_assert!((norm - 1.0).abs() < 1e-3, "norm {}", norm);
                    proptest::prop_assert_eq!(probe.model_id.as_str(), "m");
                    proptest::prop_assert!(probe.model_version.len() <= MAX_MODEL_BYTES);
                }
                Err(status) => {
                    let code = status.code();
                    proptest::prop_assert!(
                        code == tonic::Code::InvalidArgument || code == tonic::Code::FailedPrecondition,
                        "{:?}", code
                    );
                    proptest::prop_assert!(status.message().len() < 2 * MAX_MODEL_BYTES + 200);
                }
            }
        }
    }
}
