//! Every way a token must be refused, and the ways it must be accepted.

use super::*;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use biomatch_domain::Role;
use std::collections::HashMap;
use std::time::Duration;

struct Fixture {
    _dir: tempfile::TempDir,
    signer: TokenSigner,
    auth: Authenticator,
    public_pem: std::path::PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let (private, public) = keys::generate(dir.path(), "k1").expect("keys");
    let signer = TokenSigner::from_file(&private, "biomatch", "biomatch").expect("signer");
    let mut set = KeySet::default();
    set.add_pem_file(&public).expect("public key");
    Fixture {
        _dir: dir,
        signer,
        auth: Authenticator::new(set, "biomatch", "biomatch", 30),
        public_pem: public,
    }
}

fn check(auth: &Authenticator, token: &str) -> Result<Principal, tonic::Status> {
    let headers: HashMap<&str, String> = HashMap::from([(AUTHORIZATION, format!("Bearer {token}"))]);
    futures::executor::block_on(auth.authenticate(|n| headers.get(n).map(String::as_str)))
}

/// Signs arbitrary claims with the trusted key; `kid` None leaves the header without one.
fn sign_raw(f: &Fixture, kid: Option<&str>, claims: serde_json::Value) -> String {
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    h.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&h, &claims, f.signer.key()).expect("sign")
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("time").as_secs()
}

fn claims(exp: u64) -> serde_json::Value {
    serde_json::json!({"sub": "kiosk-7", "iss": "biomatch", "aud": "biomatch", "exp": exp, "iat": exp - 300, "role": "kiosk",
        "device": "lane-2", "galleries": ["travelers"], "purposes": ["border"]})
}

#[test]
fn a_valid_token_yields_its_principal() {
    let f = fixture();
    let mut spec = TokenSpec::new("kiosk-7", Role::Kiosk, Duration::from_secs(600));
    spec.device = "lane-2".into();
    spec.galleries = Some(vec!["travelers".into()]);
    spec.purposes = Some(vec!["border".into()]);
    let p = check(&f.auth, &f.signer.issue(&spec).expect("token")).expect("accepted");
    assert_eq!((p.subject.as_str(), p.role, p.device.as_str()), ("kiosk-7", Role::Kiosk, "lane-2"));
    assert!(p.may_search("travelers", "border"));
}

#[test]
fn forged_expired_and_incomplete_tokens_are_refused() {
    let f = fixture();
    let kid = Some("k1");
    let refused = |token: &str, why: &str| {
        let err = check(&f.auth, token).expect_err(why);
        assert_eq!(err.code(), tonic::Code::Unauthenticated, "{why}");
    };
    // alg: none, with the claims of a valid token.
    let none_header = B64.encode(br#"{"alg":"none","typ":"JWT","kid":"k1"}"#);
    let body = B64.encode(claims(now() + 600).to_string());
    refused(&format!("{none_header}.{body}."), "alg none");
    // HS256 keyed with the public key's bytes (the classic confusion attack).
    let public = std::fs::read(&f.public_pem).expect("pem");
    let mut hs = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    hs.kid = Some("k1".into());
    let hs_token =
        jsonwebtoken::encode(&hs, &claims(now() + 600), &jsonwebtoken::EncodingKey::from_secret(&public))
            .expect("hs");
    refused(&hs_token, "HS256 with the public key");
    // Wrong issuer, wrong audience.
    let mut c = claims(now() + 600);
    c["iss"] = "someone-else".into();
    refused(&sign_raw(&f, kid, c), "wrong issuer");
    let mut c = claims(now() + 600);
    c["aud"] = "another-system".into();
    refused(&sign_raw(&f, kid, c), "wrong audience");
    // Expired beyond the 30 s leeway; within it is accepted.
    refused(&sign_raw(&f, kid, claims(now() - 120)), "expired");
    assert!(check(&f.auth, &sign_raw(&f, kid, claims(now() - 10))).is_ok(), "within leeway");
    // Unknown kid, and no kid.
    refused(&sign_raw(&f, Some("k2"), claims(now() + 600)), "unknown kid");
    refused(&sign_raw(&f, None, claims(now() + 600)), "no kid");
    // Missing claims.
    for missing in ["sub", "exp", "iss", "aud", "role"] {
        let mut c = claims(now() + 600);
        c.as_object_mut().expect("object").remove(missing);
        refused(&sign_raw(&f, kid, c), missing);
    }
    // Unknown role, tampered payload, garbage, missing header.
    let mut c = claims(now() + 600);
    c["role"] = "root".into();
    refused(&sign_raw(&f, kid, c), "unknown role");
    // The untampered token first, so that a remembered verification cannot stand in for the
    // tampered ones below.
    let good = sign_raw(&f, kid, claims(now() + 600));
    assert!(check(&f.auth, &good).is_ok() && check(&f.auth, &good).is_ok(), "accepted, twice");
    let at = good.len() - 10;
    let flipped = if &good[at..=at] == "A" { "B" } else { "A" };
    refused(&format!("{}{flipped}{}", &good[..at], &good[at + 1..]), "signature altered");
    let mut parts: Vec<&str> = good.split('.').collect();
    let admin = B64.encode(claims(now() + 600).to_string().replace("kiosk", "admin"));
    parts[1] = &admin;
    refused(&parts.join("."), "payload swapped");
    refused("not-a-token", "garbage");
    let empty: HashMap<&str, String> = HashMap::new();
    assert!(f.auth.authenticate_forwarded(|n| empty.get(n).map(String::as_str)).is_err(), "no header");
}

#[test]
fn a_single_use_token_is_refused_the_second_time() {
    let f = fixture();
    let mut spec = TokenSpec::new("enroll-station", Role::Enroller, Duration::from_secs(60));
    spec.single_use = true;
    let token = f.signer.issue(&spec).expect("token");
    let headers: HashMap<&str, String> = HashMap::from([(AUTHORIZATION, format!("Bearer {token}"))]);
    assert!(
        f.auth.authenticate_forwarded(|n| headers.get(n).map(String::as_str)).is_ok(),
        "forwarding spends nothing"
    );
    assert!(check(&f.auth, &token).is_ok());
    assert_eq!(check(&f.auth, &token).expect_err("replay").code(), tonic::Code::Unauthenticated);
    // Reusable tokens stay reusable.
    let reusable =
        f.signer.issue(&TokenSpec::new("a", Role::Analyst, Duration::from_secs(60))).expect("token");
    assert!(check(&f.auth, &reusable).is_ok() && check(&f.auth, &reusable).is_ok());
}

#[test]
fn jwks_keys_rotate_by_kid_and_demo_keys_are_flagged() {
    let f = fixture();
    let dir = tempfile::tempdir().expect("tempdir");
    let (private2, _) = keys::generate(dir.path(), "k2").expect("keys");
    let key2 = ed25519_dalek::pkcs8::DecodePrivateKey::from_pkcs8_pem(
        &std::fs::read_to_string(&private2).expect("pem"),
    )
    .map(|k: ed25519_dalek::SigningKey| k.verifying_key())
    .expect("key");
    let jwks = serde_json::json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "k2", "alg": "EdDSA",
        "x": B64.encode(key2.as_bytes())}]});
    let jwks_path = dir.path().join("jwks.json");
    std::fs::write(&jwks_path, jwks.to_string()).expect("write");
    let mut set = KeySet::default();
    set.add_pem_file(&f.public_pem).expect("k1");
    set.add_jwks_file(&jwks_path).expect("k2");
    let auth = Authenticator::new(set.clone(), "biomatch", "biomatch", 30);
    let signer2 = TokenSigner::from_file(&private2, "biomatch", "biomatch").expect("signer");
    let spec = TokenSpec::new("a", Role::Analyst, Duration::from_secs(60));
    assert!(check(&auth, &f.signer.issue(&spec).expect("t1")).is_ok(), "old key still trusted");
    assert!(check(&auth, &signer2.issue(&spec).expect("t2")).is_ok(), "new key trusted");
    assert!(set.refuse_demo_keys().is_ok());
    let (_, demo_public) = keys::generate(dir.path(), "demo").expect("demo");
    set.add_pem_file(&demo_public).expect("demo");
    assert!(matches!(set.refuse_demo_keys(), Err(KeyError::DemoKey(_))));
}

#[test]
fn service_credentials_mint_service_tokens() {
    let f = fixture();
    let dir = tempfile::tempdir().expect("tempdir");
    let (private, public) = keys::generate(dir.path(), "service-search").expect("keys");
    let mut set = KeySet::default();
    set.add_pem_file(&public).expect("key");
    let auth = Authenticator::new(set, "biomatch", "biomatch", 30);
    let signer = TokenSigner::from_file(&private, "biomatch", "biomatch").expect("signer");
    assert!(
        check(&auth, &ServiceCredentials::new(f.signer.clone(), "search").token()).is_err(),
        "an issuer key"
    );
    let creds = ServiceCredentials::new(signer, "search");
    let p = check(&auth, &creds.token()).expect("accepted");
    assert_eq!((p.subject.as_str(), p.role), ("biomatch-search", Role::Service));
    assert_eq!(creds.token(), creds.token(), "cached until close to expiry");
}

#[tokio::test]
async fn layer_puts_the_principal_in_extensions_and_leaves_health_open() {
    use tower::{Layer, Service, ServiceExt};
    let f = fixture();
    let token = f.signer.issue(&TokenSpec::new("a", Role::Auditor, Duration::from_secs(60))).expect("token");
    let inner = tower::service_fn(|request: http::Request<()>| async move {
        let role = request.extensions().get::<Principal>().map(|p| p.role.to_string());
        Ok::<_, std::convert::Infallible>(http::Response::new(role.unwrap_or_default()))
    });
    let mut service = AuthLayer::new(f.auth.clone()).layer(inner);
    let call = |path: &str, token: Option<&str>| {
        let mut request = http::Request::builder().uri(path);
        if let Some(token) = token {
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        request.body(()).expect("request")
    };
    let query = "/biomatch.v1.AuditService/Query";
    let ok = service.ready().await.expect("ready").call(call(query, Some(&token))).await.expect("ok");
    assert_eq!(ok.body(), "auditor");
    let append = "/biomatch.v1.AuditService/Append";
    let denied = service.ready().await.expect("ready").call(call(append, Some(&token))).await.expect("resp");
    assert_eq!(denied.headers().get("grpc-status").map(|v| v.as_bytes()), Some(&b"7"[..]), "the RPC table");
    assert!(denied.body().is_empty(), "the inner service was not called");
    let refused = service.ready().await.expect("ready").call(call(query, None)).await.expect("resp");
    assert_eq!(refused.headers().get("grpc-status").map(|v| v.as_bytes()), Some(&b"16"[..]));
    assert!(refused.body().is_empty(), "the inner service was not called");
    let health = call("/grpc.health.v1.Health/Check", None);
    let health = service.ready().await.expect("ready").call(health).await.expect("resp");
    assert!(health.headers().get("grpc-status").is_none(), "health needs no token");
}

// Fuzzing the token parser: whatever arrives in the authorization header is refused with
// UNAUTHENTICATED or accepted, never a panic; and no change to a signed token is accepted.
proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 512, ..Default::default() })]

    #[test]
    fn arbitrary_headers_are_refused_not_panicked_on(header in ".{0,600}") {
        let f = fixture();
        let result = check(&f.auth, &header);
        proptest::prop_assert!(result.is_err_and(|s| s.code() == tonic::Code::Unauthenticated));
    }

    #[test]
    fn no_byte_change_to_a_signed_token_is_accepted(at in 0usize..4096, byte in proptest::prelude::any::<u8>()) {
        let f = fixture();
        let token = f.signer.issue(&TokenSpec::new("kiosk-7", Role::Kiosk, Duration::from_secs(60))).expect("token");
        let mut bytes = token.clone().into_bytes();
        let at = at % bytes.len();
        proptest::prop_assume!(bytes[at] != byte);
        bytes[at] = byte;
        let Ok(changed) = String::from_utf8(bytes) else { return Ok(()) };
        // Base64url padding bits can change without changing the decoded bytes: such a token is
        // the same token, and may pass; any other change must not.
        let same_decoded = changed.split('.').zip(token.split('.')).all(|(a, b)| B64.decode(a).ok() == B64.decode(b).ok() && B64.decode(a).is_ok());
        let result = check(&f.auth, &changed);
        proptest::prop_assert!(same_decoded || result.is_err(), "a changed token was accepted");
    }
}
