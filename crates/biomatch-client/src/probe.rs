//! Turning a probe (photo or vector) into a template of a gallery's model and dimension.

use biomatch_auth::ServiceCredentials;
use biomatch_domain::{Classified, ErrorClass, Template};
use biomatch_proto::v1::embed_service_client::EmbedServiceClient;
use biomatch_proto::v1::{EmbedOptions, EmbedRequest, Embedding, Probe, probe};
use biomatch_proto::{status_from, status_with};
use tonic::Status;
use tonic::transport::Channel;

/// The model a gallery's templates come from.
#[derive(Debug, Clone)]
pub struct GalleryModel {
    pub dimension: usize,
    pub model_id: String,
    pub model_version: String,
}

/// A probe resolved into a normalised template, with the model that produced it.
#[derive(Debug, Clone)]
pub struct ResolvedProbe {
    pub template: Template,
    pub model_id: String,
    pub model_version: String,
}

/// Validates a vector probe, or asks the embed role to detect and embed the one face of a photo.
/// Images are kept in memory for this call only.
pub async fn resolve_probe(
    embed: &EmbedServiceClient<Channel>,
    service: &ServiceCredentials,
    probe: Option<Probe>,
    gallery: &GalleryModel,
) -> Result<ResolvedProbe, Status> {
    let kind = probe.and_then(|p| p.kind).ok_or_else(|| {
        status_with(ErrorClass::InvalidArgument, "probe is required: an image or an embedding")
    })?;
    let embedding = match kind {
        probe::Kind::Embedding(e) => e,
        probe::Kind::Image(image) => {
            if image.is_empty() {
                return Err(status_with(ErrorClass::InvalidArgument, "probe image is empty"));
            }
            let options = EmbedOptions { max_faces: 1, min_face_size: 0, largest_face_only: true };
            let mut client = embed.clone();
            let response = client
                .embed(crate::request(EmbedRequest { image, options: Some(options) }, &service.token()))
                .await?
                .into_inner();
            let face = response.faces.into_iter().next().ok_or_else(|| {
                status_with(ErrorClass::InvalidArgument, "no face found in the probe image")
            })?;
            face.embedding
                .ok_or_else(|| status_with(ErrorClass::Internal, "embed role returned no embedding"))?
        }
    };
    resolve_embedding(embedding, gallery)
}

/// Validates a vector against the gallery: dimension, finite values, same model.
pub fn resolve_embedding(embedding: Embedding, gallery: &GalleryModel) -> Result<ResolvedProbe, Status> {
    let Embedding { values, model_id, model_version } = embedding;
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
    Ok(ResolvedProbe { template, model_id, model_version })
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
}
