//! No API hands out a template, an embedding or an image: every response type of every service
//! is walked, and any vector-shaped field (repeated float or double) or image-like bytes field
//! fails the test. The one exception is the embed role, whose whole job is to return embeddings
//! to the search and ingest roles; only service tokens may call it (see the authorization matrix).

use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FileDescriptorSet};
use std::collections::{HashMap, HashSet};

/// Bytes fields that carry hashes, signatures or the audit log's canonical JSON, never biometrics.
const ALLOWED_BYTES: &[&str] =
    &["leaf", "leaf_hash", "chain_hash", "root_hash", "signature", "key", "hashes"];

fn messages(set: &FileDescriptorSet) -> HashMap<String, DescriptorProto> {
    let mut all = HashMap::new();
    fn add(prefix: &str, m: &DescriptorProto, all: &mut HashMap<String, DescriptorProto>) {
        let name = format!("{prefix}.{}", m.name());
        for nested in &m.nested_type {
            add(&name, nested, all);
        }
        all.insert(name, m.clone());
    }
    for file in &set.file {
        for m in &file.message_type {
            add(&format!(".{}", file.package()), m, &mut all);
        }
    }
    all
}

fn offending_fields(
    type_name: &str,
    all: &HashMap<String, DescriptorProto>,
    seen: &mut HashSet<String>,
) -> Vec<String> {
    if !seen.insert(type_name.to_owned()) {
        return Vec::new();
    }
    let Some(message) = all.get(type_name) else { return Vec::new() };
    let mut bad = Vec::new();
    for field in &message.field {
        let repeated = field.label() == Label::Repeated;
        match field.r#type() {
            Type::Float | Type::Double if repeated => {
                bad.push(format!("{type_name}.{} (repeated float)", field.name()))
            }
            Type::Bytes if !ALLOWED_BYTES.contains(&field.name()) => {
                bad.push(format!("{type_name}.{} (bytes)", field.name()));
            }
            Type::Message => bad.extend(offending_fields(field.type_name(), all, seen)),
            _ => {}
        }
    }
    bad
}

#[test]
fn no_response_carries_a_vector_or_an_image() {
    let set = FileDescriptorSet::decode(biomatch_proto::FILE_DESCRIPTOR_SET).expect("descriptor set");
    let all = messages(&set);
    let mut checked = 0;
    let mut embed_outputs = Vec::new();
    for file in &set.file {
        for service in &file.service {
            for method in &service.method {
                let mut seen = HashSet::new();
                let bad = offending_fields(method.output_type(), &all, &mut seen);
                if service.name() == "EmbedService" {
                    embed_outputs.extend(bad);
                    continue;
                }
                assert!(bad.is_empty(), "{}.{} returns {bad:?}", service.name(), method.name());
                checked += 1;
            }
        }
    }
    assert!(checked >= 20, "every public RPC was walked ({checked})");
    // The walk does find vectors where they are: the embed role's response.
    assert!(embed_outputs.iter().any(|f| f.contains("Embedding.values")), "{embed_outputs:?}");
}
