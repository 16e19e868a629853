//! Who is calling: the identity in the client certificate (mTLS).
//!
//! Certificates from `wardctl certs init` carry `CN=gateway:<name>` for agents and
//! `CN=user:<name>, OU=<role>` for people, role one of engineer, soc, viewer. The TLS layer
//! already refused clients without a certificate signed by the site CA.

use x509_parser::prelude::{FromDer, X509Certificate};

use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Engineer,
    Soc,
    Viewer,
}

/// The roles a person may hold to read (devices, profiles, audit, alerts).
pub const READERS: &[Role] = &[Role::Engineer, Role::Soc, Role::Viewer];
/// The roles that change the site (devices, profiles, groups, gateways, modes, baselines).
pub const WRITERS: &[Role] = &[Role::Engineer];

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Engineer => "engineer",
            Role::Soc => "soc",
            Role::Viewer => "viewer",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s {
            "engineer" => Ok(Role::Engineer),
            "soc" => Ok(Role::Soc),
            "viewer" => Ok(Role::Viewer),
            other => Err(format!(
                "`{}` is not a role (engineer, soc, viewer)",
                other.escape_debug()
            )),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    Gateway(String),
    User { name: String, role: Role },
}

impl Identity {
    pub fn actor(&self) -> String {
        match self {
            Identity::Gateway(g) => format!("gateway:{g}"),
            Identity::User { name, .. } => format!("user:{name}"),
        }
    }
}

/// Parses the identity from a DER certificate.
pub fn from_der(der: &[u8]) -> Result<Identity> {
    let (_, cert) = X509Certificate::from_der(der)
        .map_err(|e| Error::Unauthenticated(format!("unreadable client certificate: {e}")))?;
    let subject = cert.subject();
    let cn = subject
        .iter_common_name()
        .next()
        .and_then(|a| a.as_str().ok())
        .unwrap_or("");
    let ou = subject
        .iter_organizational_unit()
        .next()
        .and_then(|a| a.as_str().ok())
        .unwrap_or("");
    // Names go into logs, the audit trail and file names: only the characters
    // `wardctl certs init` issues (no control characters, separators or spaces).
    let valid = |kind: &str, name: &str| {
        crate::certs::validate_name(kind, name)
            .map_err(|e| Error::Unauthenticated(format!("client certificate: {e}")))
    };
    if let Some(g) = cn.strip_prefix("gateway:")
        && !g.is_empty()
    {
        valid("gateway", g)?;
        return Ok(Identity::Gateway(g.to_string()));
    }
    if let Some(name) = cn.strip_prefix("user:")
        && !name.is_empty()
    {
        valid("user", name)?;
        let role = ou.parse::<Role>().map_err(|_| {
            Error::Unauthenticated(format!(
                "certificate for {name} has no known role (OU `{ou}`)"
            ))
        })?;
        return Ok(Identity::User {
            name: name.to_string(),
            role,
        });
    }
    Err(Error::Unauthenticated(format!(
        "certificate subject `{}` is neither gateway:NAME nor user:NAME",
        cn.escape_debug()
    )))
}

/// The caller of a request, from its TLS peer certificate.
pub fn identity<T>(req: &tonic::Request<T>) -> Result<Identity> {
    let certs = req
        .peer_certs()
        .ok_or_else(|| Error::Unauthenticated("no client certificate".into()))?;
    let first = certs
        .first()
        .ok_or_else(|| Error::Unauthenticated("no client certificate".into()))?;
    from_der(first.as_ref())
}

/// The caller must be a person with one of `roles`.
pub fn require_role<T>(req: &tonic::Request<T>, roles: &[Role]) -> Result<Identity> {
    require(identity(req)?, roles)
}

/// `id` must be a person with one of `roles` (the check every gRPC method and every console
/// action makes).
pub fn require(id: Identity, roles: &[Role]) -> Result<Identity> {
    match &id {
        Identity::User { role, .. } if roles.contains(role) => Ok(id),
        Identity::User { name, role } => Err(Error::Denied(format!(
            "{name} has role {role:?}; this needs {roles:?}"
        ))),
        Identity::Gateway(g) => Err(Error::Denied(format!(
            "gateway {g} may not call admin or alert methods"
        ))),
    }
}

/// The caller must be the agent of `gateway`.
pub fn require_gateway<T>(req: &tonic::Request<T>, gateway: &str) -> Result<()> {
    match identity(req)? {
        Identity::Gateway(g) if g == gateway => Ok(()),
        Identity::Gateway(g) => Err(Error::Denied(format!(
            "certificate is for gateway {g}, not {gateway}"
        ))),
        Identity::User { name, .. } => Err(Error::Denied(format!("{name} is not a gateway agent"))),
    }
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, DnType, KeyPair};

    use super::*;

    fn cert(cn: &str, ou: Option<&str>) -> Vec<u8> {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        if let Some(ou) = ou {
            p.distinguished_name
                .push(DnType::OrganizationalUnitName, ou);
        }
        p.self_signed(&KeyPair::generate().unwrap())
            .unwrap()
            .der()
            .to_vec()
    }

    #[test]
    fn names_from_certificates_are_validated() {
        assert_eq!(
            from_der(&cert("gateway:gw-ward-3", None)).unwrap(),
            Identity::Gateway("gw-ward-3".into())
        );
        for (cn, ou) in [
            ("gateway:gw\u{7}bell", None),
            ("gateway:gw ward", None),
            ("user:eve\nadmin", Some("engineer")),
            ("user:../eve", Some("engineer")),
        ] {
            let e = from_der(&cert(cn, ou)).unwrap_err();
            assert!(
                matches!(e, Error::Unauthenticated(ref m) if m.contains("may hold only")),
                "{cn:?}: {e}"
            );
        }
    }
}
