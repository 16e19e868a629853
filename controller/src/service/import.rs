//! An inventory import, shared by the console (`/import`) and `wardctl devices import`: parse
//! the file (`crate::import`), compare it with the store, and (confirmed) write it through the
//! write service in one audited write whose record names the file and its SHA-256.

use std::collections::BTreeSet;

use super::Ctx;
use crate::{
    error::{Error, Result},
    import::{self, Format, plan},
    store::ImportSource,
};

/// An import as asked.
#[derive(Clone, Debug)]
pub struct ImportRequest {
    pub format: Format,
    pub file_name: String,
    pub content: Vec<u8>,
    /// The CSV column mapping (`crate::import::cmms::Mapping`); ignored for FHIR.
    pub mapping: String,
    pub options: plan::Options,
}

/// What an import found, and (written) its audit entry.
#[derive(Clone, Debug)]
pub struct ImportOutcome {
    pub plan: plan::Plan,
    pub sha256: String,
    /// What a confirmation must carry to write this plan.
    pub digest: String,
    /// The write's last audit entry; None when nothing was written.
    pub audit_seq: Option<u64>,
}

impl Ctx {
    /// The diff of `req` against the store. With `confirm` (the digest the user saw), writes
    /// it: refused if the plan is no longer the one confirmed (the store or the file changed).
    pub fn import_devices(
        &self,
        actor: &str,
        reason: &str,
        req: &ImportRequest,
        confirm: Option<&str>,
    ) -> Result<ImportOutcome> {
        if confirm.is_some() && reason.trim().is_empty() {
            return Err(Error::Invalid(
                "a reason or ticket id is required for every change".into(),
            ));
        }
        let parsed = import::parse(req.format, &req.content, &req.mapping)
            .map_err(|e| Error::Invalid(format!("{}: {e}", req.file_name)))?;
        let store = self.store.clone();
        let (devices, plan) = tokio::task::block_in_place(|| -> Result<_> {
            let snap = store.snapshot()?;
            let mut stored = plan::StoredFields::new();
            for f in store.device_fields(None)? {
                if plan::EXTRA_FIELDS.contains(&f.field.as_str()) {
                    stored.entry(f.device).or_default().insert(f.field, f.value);
                }
            }
            let profiles: BTreeSet<String> = snap.profiles.iter().map(|p| p.name.clone()).collect();
            let plan = plan::plan(
                parsed,
                &snap.devices,
                &stored,
                &snap.gateways,
                &profiles,
                &req.options,
            );
            Ok((snap.devices, plan))
        })?;
        let sha256 = import::sha256(&req.content);
        let digest = plan.digest();
        let mut out = ImportOutcome {
            plan,
            sha256,
            digest,
            audit_seq: None,
        };
        let Some(confirmed) = confirm else {
            return Ok(out);
        };
        if confirmed != out.digest {
            return Err(Error::Precondition(
                "the import's diff changed since it was shown (the store or the file changed); \
                 look at it again"
                    .into(),
            ));
        }
        if out.plan.is_empty() {
            return Err(Error::Invalid("the import changes nothing".into()));
        }
        let source = ImportSource {
            format: req.format.as_str().into(),
            file: req.file_name.clone(),
            sha256: out.sha256.clone(),
        };
        let changes = plan::changes(&out.plan, &devices, source);
        let reason = format!(
            "{} (import of {} sha256:{})",
            reason.trim(),
            req.file_name,
            &out.sha256[..12]
        );
        let written = self.write_all(actor, &reason, changes)?;
        out.audit_seq = Some(written.audit_seq);
        Ok(out)
    }
}
