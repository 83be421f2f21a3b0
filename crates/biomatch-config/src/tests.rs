//! Reading the configuration: files, flags, environment, and what is refused.

use super::*;

#[derive(Serialize, Default)]
struct Flags {
    #[serde(skip_serializing_if = "Option::is_none")]
    grpc_addr: Option<String>,
}

/// The configuration shipped in the Kubernetes manifests loads and validates.
#[test]
fn the_kubernetes_config_map_is_a_valid_configuration() {
    let manifest = include_str!("../../../deploy/k8s/base/config.yaml");
    let toml: String = manifest
        .split_once("biomatch.toml: |\n")
        .expect("the ConfigMap holds biomatch.toml")
        .1
        .lines()
        .map(|l| l.strip_prefix("    ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n");
    figment::Jail::expect_with(|jail| {
        jail.create_file("biomatch.toml", &toml)?;
        let flags = serde_json::json!({"roles": ["matcher"]});
        let c = ServeConfig::load(Some(Path::new("biomatch.toml")), flags).expect("loads");
        assert_eq!(c.endpoints.matchers.len(), 4);
        assert_eq!(c.matcher.snapshot_interval_ms, 60_000);
        assert!(c.metrics_addr.is_some_and(|m| m.port() != c.http_addr.port()), "an operator port");
        let e = &c.endpoints;
        let urls = [&e.audit, &e.ingest, &e.embed, &e.search].into_iter().flatten().chain(&e.matchers);
        assert!(urls.clone().count() == 8 && urls.into_iter().all(|u| u.starts_with("https://")));
        // Secrets are per role (arguments and environment of each workload), not shared.
        assert!(c.crypto.master_key_file.is_none() && c.audit.signing_key_file.is_none());
        assert!(c.auth.service_key_file.is_none() && c.database_url.is_none());
        Ok(())
    });
}

/// Each role needs only the secrets it uses: a gateway, embed or search process validates and
/// opens no store without a master key, database or audit signing key (the manifests mount
/// none of them there).
#[test]
fn each_role_needs_only_its_own_secrets() {
    let only = |role| ServeConfig { roles: vec![role], ..Default::default() };
    for role in [ProcessRole::Gateway, ProcessRole::Embed] {
        let c = only(role);
        assert!(c.database_url.is_none() && c.crypto.master_key_file.is_none());
        c.validate().expect("valid without store, master key or Redis");
        assert!(!c.seals_templates() && !c.keeps_audit_log());
    }
    for role in [ProcessRole::Ingest, ProcessRole::Matcher] {
        let c = only(role);
        assert!(c.seals_templates() && !c.keeps_audit_log(), "{role:?}");
    }
    let audit = only(ProcessRole::Audit);
    assert!(audit.keeps_audit_log() && !audit.seals_templates());
    let search = only(ProcessRole::Search);
    assert!(!search.seals_templates() && !search.keeps_audit_log());
    let all = only(ProcessRole::All);
    assert!(all.seals_templates() && all.keeps_audit_log());
}

#[test]
fn layers_apply_in_order() {
    figment::Jail::expect_with(|jail| {
        jail.create_file("biomatch.toml", "grpc_addr = \"127.0.0.1:1\"\n[matcher]\npoll_interval_ms = 50\n")?;
        jail.set_env("BIOMATCH__GRPC_ADDR", "127.0.0.1:2");
        jail.set_env("BIOMATCH__SEARCH__SHARD_TIMEOUT_MS", "99");
        let c = ServeConfig::load(Some(Path::new("biomatch.toml")), Flags::default()).expect("valid");
        assert_eq!(c.grpc_addr.port(), 2, "environment beats file");
        assert_eq!(c.matcher.poll_interval_ms, 50);
        assert_eq!(c.search.shard_timeout_ms, 99);
        let flags = Flags { grpc_addr: Some("127.0.0.1:3".into()) };
        let c = ServeConfig::load(Some(Path::new("biomatch.toml")), flags).expect("valid");
        assert_eq!(c.grpc_addr.port(), 3, "flags beat environment");
        Ok(())
    });
}

#[test]
fn invalid_configs_are_refused() {
    figment::Jail::expect_with(|jail| {
        jail.set_env("BIOMATCH__GRPC_ADDR", "not an address");
        assert!(ServeConfig::load(None, Flags::default()).is_err());
        Ok(())
    });
    figment::Jail::expect_with(|jail| {
        jail.create_file(
            "typo.toml",
            "[matcher]
snapshot_intervall_ms = 5
",
        )?;
        let e = ServeConfig::load(Some(Path::new("typo.toml")), Flags::default()).expect_err("typo");
        assert!(e.to_string().contains("snapshot_intervall_ms"), "names the unknown key: {e}");
        Ok(())
    });
    let mut c = ServeConfig { roles: vec![ProcessRole::All, ProcessRole::Matcher], ..Default::default() };
    assert!(c.validate().is_err());
    c.roles = vec![ProcessRole::Matcher];
    c.matcher.shards = vec!["g".into()];
    assert!(c.validate().is_err());
    c.matcher.shards = vec!["g:1".into()];
    assert_eq!(c.matcher_shards().expect("valid"), vec![("g".to_owned(), 1)]);
    assert!(ServeConfig::load(Some(Path::new("/nonexistent.toml")), Flags::default()).is_err());
}

#[test]
fn the_default_model_is_the_fusion_with_sface_beside_it() {
    let mut embed = EmbedConfig::default();
    assert_eq!(embed.shipped_models(), (Some("sface+dlib"), vec!["sface"]));
    embed.also_models = vec!["sface".into(), "dlib_resnet".into()];
    assert_eq!(embed.shipped_models(), (Some("sface+dlib"), vec!["sface", "dlib_resnet"]));
    embed.model = Some("sface".into());
    embed.also_models.clear();
    assert_eq!(embed.shipped_models(), (Some("sface"), vec![]));
    embed.model = None;
    let recognizer = serde_json::json!({"file": "x.onnx", "model_id": "x", "model_version": "1"});
    embed.recognizer = Some(serde_json::from_value(recognizer).expect("a recogniser"));
    assert_eq!(embed.shipped_models(), (None, vec![]));
}
