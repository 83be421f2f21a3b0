//! The one place in the request pipeline where a request's [`Principal`] is established, for gRPC
//! (a tonic interceptor) and REST (the gateway calls [`Authenticator::authenticate`] with its
//! headers). Handlers only ever read the principal from the request's extensions.
//!
//! Today the principal comes from request metadata (`x-biomatch-subject`, `x-biomatch-role`,
//! `x-biomatch-device`). In `--role all` demo mode a request without them is the clearly named
//! demo administrator; outside demo mode it is refused. JWT validation replaces the metadata
//! reading here, without touching any handler.

use biomatch_domain::{ErrorClass, Principal, Role};
use tonic::metadata::MetadataMap;

pub const SUBJECT_HEADER: &str = "x-biomatch-subject";
pub const ROLE_HEADER: &str = "x-biomatch-role";
pub const DEVICE_HEADER: &str = "x-biomatch-device";

#[derive(Debug, Clone, Copy)]
pub struct Authenticator {
    demo: bool,
}

impl Authenticator {
    /// `demo`: requests that name no principal act as [`Principal::demo`].
    pub fn new(demo: bool) -> Self {
        Self { demo }
    }

    /// Reads the principal from request headers (`get` looks one up by lower-case name).
    pub fn authenticate<'a>(
        &self,
        get: impl Fn(&str) -> Option<&'a str>,
    ) -> Result<Principal, tonic::Status> {
        let Some(subject) = get(SUBJECT_HEADER).filter(|s| !s.is_empty()) else {
            if self.demo {
                return Ok(Principal::demo());
            }
            return Err(biomatch_proto::status_with(
                ErrorClass::Unauthenticated,
                "request names no principal",
            ));
        };
        let role: Role = get(ROLE_HEADER)
            .ok_or_else(|| biomatch_proto::status_with(ErrorClass::Unauthenticated, "request names no role"))?
            .parse()
            .map_err(|e: String| biomatch_proto::status_with(ErrorClass::Unauthenticated, e))?;
        Ok(Principal {
            subject: subject.to_owned(),
            role,
            device: get(DEVICE_HEADER).unwrap_or("").to_owned(),
        })
    }

    /// A tonic interceptor that puts the principal into the request's extensions.
    pub fn interceptor(
        self,
    ) -> impl FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Clone {
        move |mut request: tonic::Request<()>| {
            let principal =
                self.authenticate(|name| request.metadata().get(name).and_then(|v| v.to_str().ok()))?;
            request.extensions_mut().insert(principal);
            Ok(request)
        }
    }
}

/// Refuses a principal whose role is not among `allowed`.
pub fn require_role(principal: &Principal, allowed: &[Role]) -> Result<(), tonic::Status> {
    if allowed.contains(&principal.role) {
        Ok(())
    } else {
        Err(biomatch_proto::status_with(
            ErrorClass::PermissionDenied,
            format!("role {} may not do this", principal.role),
        ))
    }
}

/// The principal the pipeline established for this request.
pub fn principal<T>(request: &tonic::Request<T>) -> Result<Principal, tonic::Status> {
    request.extensions().get::<Principal>().cloned().ok_or_else(|| {
        biomatch_proto::status_with(ErrorClass::Unauthenticated, "request was not authenticated")
    })
}

/// Names `principal` in outgoing request metadata (clients and service-to-service calls).
pub fn attach(metadata: &mut MetadataMap, principal: &Principal) {
    let mut put = |name: &'static str, value: &str| {
        if let Ok(v) = value.parse() {
            metadata.insert(name, v);
        }
    };
    put(SUBJECT_HEADER, &principal.subject);
    put(ROLE_HEADER, principal.role.as_str());
    if !principal.device.is_empty() {
        put(DEVICE_HEADER, &principal.device);
    }
}

/// The principal a service uses for its own calls to other roles.
pub fn service_principal(role_name: &str) -> Principal {
    Principal { subject: format!("biomatch-{role_name}"), role: Role::Service, device: String::new() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn headers(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn reads_principal_from_headers() {
        let h = headers(&[(SUBJECT_HEADER, "kiosk-7"), (ROLE_HEADER, "kiosk"), (DEVICE_HEADER, "lane-2")]);
        let p = Authenticator::new(false).authenticate(|n| h.get(n).map(String::as_str)).expect("ok");
        assert_eq!(p, Principal { subject: "kiosk-7".into(), role: Role::Kiosk, device: "lane-2".into() });
    }

    #[test]
    fn demo_default_only_in_demo_mode() {
        let h = headers(&[]);
        let demo = Authenticator::new(true).authenticate(|n| h.get(n).map(String::as_str)).expect("demo");
        assert_eq!(demo, Principal::demo());
        let err =
            Authenticator::new(false).authenticate(|n| h.get(n).map(String::as_str)).expect_err("refused");
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
    }

    #[test]
    fn unknown_role_is_refused() {
        let h = headers(&[(SUBJECT_HEADER, "x"), (ROLE_HEADER, "root")]);
        let err =
            Authenticator::new(true).authenticate(|n| h.get(n).map(String::as_str)).expect_err("refused");
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
    }

    #[test]
    fn attach_round_trips() {
        let mut request = tonic::Request::new(());
        let p = Principal { subject: "a".into(), role: Role::Analyst, device: String::new() };
        attach(request.metadata_mut(), &p);
        let mut intercept = Authenticator::new(false).interceptor();
        let request = intercept(request).expect("authenticated");
        assert_eq!(principal(&request).expect("present"), p);
    }
}
