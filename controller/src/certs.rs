//! `wardctl certs init`: a CA and certificates for a demo or lab (not for production PKI).

use std::path::Path;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

fn write(dir: &Path, name: &str, cert: &str, key: &str) -> anyhow::Result<()> {
    std::fs::write(dir.join(format!("{name}.pem")), cert)?;
    std::fs::write(dir.join(format!("{name}.key")), key)?;
    Ok(())
}

/// Writes `ca.pem/ca.key`, `server.pem/key` (localhost, 127.0.0.1, ::1), one pair per gateway
/// (`gateway-NAME`) and per user (`user-NAME`, role in OU) into `dir`.
pub fn init(dir: &Path, gateways: &[String], users: &[(String, String)]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name
        .push(DnType::CommonName, "wardgate lab CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca.self_signed(&ca_key)?;
    write(dir, "ca", &ca_cert.pem(), &ca_key.serialize_pem())?;
    let issuer = Issuer::new(ca, ca_key);

    let leaf = |name: &str, sans: Vec<String>, cn: &str, ou: Option<&str>| -> anyhow::Result<()> {
        let mut p = CertificateParams::new(sans)?;
        p.distinguished_name.push(DnType::CommonName, cn);
        if let Some(ou) = ou {
            p.distinguished_name
                .push(DnType::OrganizationalUnitName, ou);
        }
        let key = KeyPair::generate()?;
        let cert = p.signed_by(&key, &issuer)?;
        write(dir, name, &cert.pem(), &key.serialize_pem())
    };
    leaf(
        "server",
        vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
        "wardgate-controller",
        None,
    )?;
    for g in gateways {
        leaf(
            &format!("gateway-{g}"),
            vec![],
            &format!("gateway:{g}"),
            None,
        )?;
    }
    for (name, role) in users {
        leaf(
            &format!("user-{name}"),
            vec![],
            &format!("user:{name}"),
            Some(role),
        )?;
    }
    Ok(())
}
