//! AdminService: devices, profiles, groups, gateways, audit. Engineers write; viewers, SOC and
//! engineers read. Every write needs a reason and is audited.

use tonic::{Request, Response, Status};
use wardgate_proto::v1::{self as pb, admin_service_server::AdminService};

use super::{Ctx, changes, learning};
use crate::{
    audit,
    auth::{self, Role},
    error::Error,
    store::{AgentHealth, Change, DeviceRow, GatewayRow},
};

pub struct Admin(pub Ctx);

/// A user's name (a gateway's certificate never writes here: `WRITE` has no gateway role).
fn user(who: &auth::Identity) -> Result<&str, Error> {
    match who {
        auth::Identity::User { name, .. } => Ok(name),
        auth::Identity::Gateway(g) => Err(Error::Denied(format!("gateway {g} is no engineer"))),
    }
}

const READ: &[Role] = auth::READERS;
const WRITE: &[Role] = auth::WRITERS;

fn device_pb(d: DeviceRow) -> pb::Device {
    let mut p = pb::Device {
        name: d.name,
        id: d.id,
        mac: d.mac.to_string(),
        addresses: d.addresses.iter().map(ToString::to_string).collect(),
        profile: d.profile,
        gateway: d.gateway,
        location: d.location,
        asset_id: d.asset_id,
        ..Default::default()
    };
    p.set_mode(Some(d.mode));
    p
}

/// A device from a request, parsed into the store's typed row; errors name the device.
fn device_change(d: pb::Device) -> Result<Change, Error> {
    nonempty("device name", &d.name)?;
    let bad = |e: String| Error::Invalid(format!("device `{}`: {e}", d.name));
    // The enum, or the name from a 0.1.0 wardctl; none is refused as an unknown mode.
    let mode = match d.mode_value() {
        Ok(Some(m)) => m,
        Ok(None) => {
            return Err(bad(format!(
                "mode: {}",
                wardgate_policy::UnknownMode(String::new())
            )));
        }
        Err(e) => return Err(bad(e.to_string())),
    };
    let mac = d.mac.trim().parse().map_err(bad)?;
    let addresses = d
        .addresses
        .iter()
        .map(|a| {
            a.trim().parse().map_err(|_| {
                bad(format!(
                    "`{a}` is not an IP address (device addresses are single addresses, not CIDRs)"
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if addresses.is_empty() {
        return Err(bad("a device needs at least one address".into()));
    }
    Ok(Change::UpsertDevice(DeviceRow {
        name: d.name,
        id: d.id,
        mac,
        addresses,
        profile: d.profile,
        mode,
        gateway: d.gateway,
        location: d.location,
        asset_id: d.asset_id,
    }))
}

/// A profile from its YAML text, parsed and validated; errors are located in `file`.
fn profile_change(file: &str, yaml: String) -> Result<Change, Error> {
    // The admin service decodes whole sites (`MAX_SITE_BYTES`); one profile stays small.
    if yaml.len() > wardgate_proto::MAX_REQUEST_BYTES {
        return Err(Error::TooLarge(format!(
            "{file}: a {}-byte profile, over the {}-byte limit",
            yaml.len(),
            wardgate_proto::MAX_REQUEST_BYTES
        )));
    }
    let p =
        wardgate_policy::parse_profile(file, &yaml).map_err(|d| Error::Invalid(d.to_string()))?;
    let name = p.name.value.clone();
    let d = wardgate_policy::validate_profile(file, &p);
    if !d.is_empty() {
        return Err(Error::Invalid(d.to_string()));
    }
    Ok(Change::UpsertProfile { name, yaml })
}

fn group_change(g: pb::Group) -> Result<Change, Error> {
    nonempty("group name", &g.name)?;
    for c in &g.cidrs {
        c.parse::<ipnet::IpNet>()
            .map_err(|_| Error::Invalid(format!("group `{}`: `{c}` is not a CIDR", g.name)))?;
    }
    Ok(Change::UpsertGroup {
        name: g.name,
        cidrs: g.cidrs,
    })
}

fn gateway_change(g: pb::Gateway) -> Result<Change, Error> {
    nonempty("gateway name", &g.name)?;
    if g.interfaces.is_empty() {
        return Err(Error::Invalid(format!(
            "gateway `{}`: a gateway needs at least one device-facing interface",
            g.name
        )));
    }
    Ok(Change::UpsertGateway(GatewayRow {
        name: g.name,
        interfaces: g.interfaces,
        location: g.location,
        applied_generation: 0,
        last_error: String::new(),
        applied_epoch: String::new(),
    }))
}

/// A stored health as the admin API lists it (`pb::Gateway.health`).
fn pb_health(h: AgentHealth) -> pb::GatewayHealth {
    pb::GatewayHealth {
        agent_version: h.agent_version,
        watchdog_fired: h.watchdog_fired,
        watchdog_fired_count: h.watchdog_fired_count,
        watchdog_recovered_count: h.watchdog_recovered_count,
        fail_open_devices: h.fail_open_devices,
        heartbeat_age_ms: h.heartbeat_age_ms,
    }
}

fn nonempty(what: &str, v: &str) -> Result<(), Error> {
    if v.trim().is_empty() {
        Err(Error::Invalid(format!("{what} is required")))
    } else {
        Ok(())
    }
}

impl Admin {
    // The store's connection is shared with the writes (a group commit holds it for a
    // while): these lookups block, so they leave the async workers free, or two waiting
    // lookups would stall every RPC and agent stream of the controller.
    fn need_device(&self, name: &str) -> Result<DeviceRow, Error> {
        nonempty("device", name)?;
        let row = tokio::task::block_in_place(|| self.0.store.device(name))?;
        row.ok_or_else(|| Error::NotFound {
            what: "device",
            name: name.to_string(),
        })
    }

    fn need_profile(&self, name: &str) -> Result<(), Error> {
        nonempty("profile", name)?;
        if tokio::task::block_in_place(|| self.0.store.profile(name))?.is_some() {
            return Ok(());
        }
        let known = tokio::task::block_in_place(|| self.0.store.snapshot())?.profiles;
        let names: Vec<&str> = known.iter().map(|p| p.name.as_str()).collect();
        Err(Error::unknown("profile", name, &names))
    }
}

#[tonic::async_trait]
impl AdminService for Admin {
    async fn list_devices(
        &self,
        req: Request<pb::ListDevicesRequest>,
    ) -> Result<Response<pb::ListDevicesResponse>, Status> {
        auth::require_role(&req, READ)?;
        let f = req.get_ref();
        let snapshot = tokio::task::block_in_place(|| self.0.store.snapshot())?;
        // A filter naming nothing is a typo, not an empty answer.
        if !f.profile.is_empty() && !snapshot.profiles.iter().any(|p| p.name == f.profile) {
            let names: Vec<&str> = snapshot.profiles.iter().map(|p| p.name.as_str()).collect();
            return Err(Error::unknown("profile", &f.profile, &names).into());
        }
        if !f.gateway.is_empty() && !snapshot.gateways.iter().any(|g| g.name == f.gateway) {
            let names: Vec<&str> = snapshot.gateways.iter().map(|g| g.name.as_str()).collect();
            return Err(Error::unknown("gateway", &f.gateway, &names).into());
        }
        let devices = snapshot
            .devices
            .into_iter()
            .filter(|d| f.gateway.is_empty() || d.gateway == f.gateway)
            .filter(|d| f.profile.is_empty() || d.profile == f.profile)
            .map(device_pb)
            .collect();
        Ok(Response::new(pb::ListDevicesResponse { devices }))
    }

    async fn get_device(
        &self,
        req: Request<pb::GetDeviceRequest>,
    ) -> Result<Response<pb::Device>, Status> {
        auth::require_role(&req, READ)?;
        Ok(Response::new(device_pb(
            self.need_device(&req.get_ref().name)?,
        )))
    }

    async fn upsert_device(
        &self,
        req: Request<pb::UpsertDeviceRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let who = self.0.require_write(&req, WRITE, "upsert_device", "")?;
        let r = req.into_inner();
        let d = r
            .device
            .ok_or_else(|| Error::Invalid("device is required".into()))?;
        let change = device_change(d)?;
        if let Change::UpsertDevice(d) = &change {
            self.need_profile(&d.profile)?;
        }
        Ok(Response::new(self.0.write_accepting(
            &who.actor(),
            &r.reason,
            vec![change],
            r.accept_impact,
        )?))
    }

    async fn assign_profile(
        &self,
        req: Request<pb::AssignProfileRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let who = self.0.require_write(&req, WRITE, "assign_profile", "")?;
        let r = req.into_inner();
        self.need_device(&r.device)?;
        self.need_profile(&r.profile)?;
        Ok(Response::new(self.0.write_or_preview(
            &who.actor(),
            &r.reason,
            vec![Change::AssignProfile {
                device: r.device,
                profile: r.profile,
            }],
            r.dry_run,
            r.accept_impact,
        )?))
    }

    async fn set_mode(
        &self,
        req: Request<pb::SetModeRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let id = auth::identity(&req)?;
        if matches!(
            id,
            auth::Identity::User {
                role: Role::Soc,
                ..
            }
        ) {
            let w = tokio::task::block_in_place(|| {
                super::quarantine::soc_set_mode(&self.0, &id, req.into_inner())
            })?;
            return Ok(Response::new(w));
        }
        let who = self
            .0
            .require_write(&req, WRITE, "set_mode", &req.get_ref().device)?;
        let r = req.into_inner();
        let mode = r.mode_value()?;
        self.need_device(&r.device)?;
        let mut changes = vec![Change::SetMode {
            device: r.device.clone(),
            mode,
        }];
        // An engineer's decision ends a running SOC quarantine's timer.
        if !r.dry_run {
            changes.extend(super::quarantine::timer_change(&self.0, &r.device)?);
        }
        Ok(Response::new(self.0.write_or_preview(
            &who.actor(),
            &r.reason,
            changes,
            r.dry_run,
            r.accept_impact,
        )?))
    }

    async fn list_quarantine_requests(
        &self,
        req: Request<pb::ListQuarantineRequestsRequest>,
    ) -> Result<Response<pb::ListQuarantineRequestsResponse>, Status> {
        auth::require_role(&req, &[Role::Engineer, Role::Soc, Role::Viewer])?;
        let rows = tokio::task::block_in_place(|| self.0.store.pending_quarantines())?;
        Ok(Response::new(pb::ListQuarantineRequestsResponse {
            requests: rows
                .into_iter()
                .map(|q| pb::QuarantineRequest {
                    id: q.id,
                    device: q.device,
                    reason: q.reason,
                    requested_by: q.requested_by,
                    requested_unix_ms: q.requested_ms,
                    for_minutes: q.minutes,
                })
                .collect(),
        }))
    }

    async fn approve_quarantine(
        &self,
        req: Request<pb::ApproveQuarantineRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let target = format!("quarantine request {}", req.get_ref().id);
        let who = self
            .0
            .require_write(&req, WRITE, "approve_quarantine", &target)?;
        let r = req.into_inner();
        let w = tokio::task::block_in_place(|| {
            super::quarantine::approve(&self.0, &who, r.id, &r.reason)
        })?;
        Ok(Response::new(w))
    }

    async fn set_location(
        &self,
        req: Request<pb::SetLocationRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let who = self.0.require_write(&req, WRITE, "set_location", "")?;
        let r = req.into_inner();
        self.need_device(&r.device)?;
        Ok(Response::new(self.0.write(
            &who.actor(),
            &r.reason,
            Change::SetLocation {
                device: r.device,
                location: r.location,
            },
        )?))
    }

    async fn list_profiles(
        &self,
        req: Request<pb::ListProfilesRequest>,
    ) -> Result<Response<pb::ListProfilesResponse>, Status> {
        auth::require_role(&req, READ)?;
        let profiles = self
            .0
            .store
            .snapshot()?
            .profiles
            .into_iter()
            .map(|p| pb::Profile {
                name: p.name,
                version: p.version,
                yaml: p.yaml,
            })
            .collect();
        Ok(Response::new(pb::ListProfilesResponse { profiles }))
    }

    async fn get_profile(
        &self,
        req: Request<pb::GetProfileRequest>,
    ) -> Result<Response<pb::Profile>, Status> {
        auth::require_role(&req, READ)?;
        let name = &req.get_ref().name;
        let p = self.0.store.profile(name)?.ok_or_else(|| Error::NotFound {
            what: "profile",
            name: name.clone(),
        })?;
        Ok(Response::new(pb::Profile {
            name: p.name,
            version: p.version,
            yaml: p.yaml,
        }))
    }

    async fn validate_profile(
        &self,
        req: Request<pb::ValidateProfileRequest>,
    ) -> Result<Response<pb::ValidateProfileResponse>, Status> {
        auth::require_role(&req, READ)?;
        let yaml = req.into_inner().yaml;
        let problems = match wardgate_policy::parse_profile("request", &yaml) {
            Ok(p) => wardgate_policy::validate_profile("request", &p),
            Err(d) => d,
        };
        let mut problems: Vec<pb::Problem> = problems
            .0
            .into_iter()
            .map(|d| pb::Problem {
                line: d.line,
                column: d.column,
                message: d.message,
                hint: d.hint.unwrap_or_default(),
            })
            .collect();
        // What the file alone allows, the site may not (an unknown group, a bundle over the
        // limit): the upsert's own steps, rolled back, so validate says what upsert would.
        if problems.is_empty()
            && let Err(e) = profile_change("request", yaml).and_then(|c| self.0.preview(&[c]))
        {
            problems.push(pb::Problem {
                line: 0,
                column: 0,
                message: e.to_string(),
                hint: "this is what `profiles upsert` would refuse".into(),
            });
        }
        Ok(Response::new(pb::ValidateProfileResponse {
            valid: problems.is_empty(),
            problems,
        }))
    }

    async fn upsert_profile(
        &self,
        req: Request<pb::UpsertProfileRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let who = self.0.require_write(&req, WRITE, "upsert_profile", "")?;
        let r = req.into_inner();
        let change = profile_change("request", r.yaml)?;
        Ok(Response::new(self.0.write_or_preview(
            &who.actor(),
            &r.reason,
            vec![change],
            r.dry_run,
            r.accept_impact,
        )?))
    }

    async fn list_groups(
        &self,
        req: Request<pb::ListGroupsRequest>,
    ) -> Result<Response<pb::ListGroupsResponse>, Status> {
        auth::require_role(&req, READ)?;
        let groups = self
            .0
            .store
            .snapshot()?
            .groups
            .into_iter()
            .map(|(name, cidrs)| pb::Group { name, cidrs })
            .collect();
        Ok(Response::new(pb::ListGroupsResponse { groups }))
    }

    async fn upsert_group(
        &self,
        req: Request<pb::UpsertGroupRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let who = self.0.require_write(&req, WRITE, "upsert_group", "")?;
        let r = req.into_inner();
        let g = r
            .group
            .ok_or_else(|| Error::Invalid("group is required".into()))?;
        let change = group_change(g)?;
        Ok(Response::new(self.0.write(
            &who.actor(),
            &r.reason,
            change,
        )?))
    }

    async fn list_gateways(
        &self,
        req: Request<pb::ListGatewaysRequest>,
    ) -> Result<Response<pb::ListGatewaysResponse>, Status> {
        auth::require_role(&req, READ)?;
        let mut gateways = Vec::new();
        let epoch = self.0.store.epoch()?;
        let mut health = self.0.store.gateway_health()?;
        for g in self.0.store.snapshot()?.gateways {
            let latest = self.0.store.latest_generation(&g.name)?;
            let connected = self.0.push.watchers(&g.name) > 0;
            let reported = health.remove(&g.name);
            gateways.push(pb::Gateway {
                health_received_unix_ms: reported.as_ref().map_or(0, |r| r.received_ms),
                watchdog_fired_since_unix_ms: reported
                    .as_ref()
                    .and_then(|r| r.watchdog_fired_since_ms)
                    .unwrap_or(0),
                health: reported.map(|r| pb_health(r.health)),
                name: g.name,
                interfaces: g.interfaces,
                location: g.location,
                latest_generation: latest,
                applied_generation: g.applied_generation,
                last_error: g.last_error,
                applied_epoch: g.applied_epoch,
                epoch: epoch.clone(),
                connected,
            });
        }
        Ok(Response::new(pb::ListGatewaysResponse { gateways }))
    }

    async fn upsert_gateway(
        &self,
        req: Request<pb::UpsertGatewayRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let who = self.0.require_write(&req, WRITE, "upsert_gateway", "")?;
        let r = req.into_inner();
        let g = r
            .gateway
            .ok_or_else(|| Error::Invalid("gateway is required".into()))?;
        let change = gateway_change(g)?;
        Ok(Response::new(self.0.write(
            &who.actor(),
            &r.reason,
            change,
        )?))
    }

    async fn create_enrollment_token(
        &self,
        req: Request<pb::CreateEnrollmentTokenRequest>,
    ) -> Result<Response<pb::CreateEnrollmentTokenResponse>, Status> {
        let who = self
            .0
            .require_write(&req, WRITE, "create_enrollment_token", "")?;
        let r = req.into_inner();
        let valid_for =
            (r.valid_for_seconds > 0).then(|| std::time::Duration::from_secs(r.valid_for_seconds));
        let (token, expires_unix_ms, ca_fingerprint, audit_seq) =
            self.0
                .fleet
                .create_token(&self.0, &who.actor(), &r.reason, &r.gateway, valid_for)?;
        Ok(Response::new(pb::CreateEnrollmentTokenResponse {
            token,
            expires_unix_ms,
            ca_fingerprint,
            audit_seq,
        }))
    }

    async fn revoke_gateway(
        &self,
        req: Request<pb::RevokeGatewayRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let who = self.0.require_write(&req, WRITE, "revoke_gateway", "")?;
        let r = req.into_inner();
        Ok(Response::new(self.0.fleet.revoke(
            &self.0,
            &who.actor(),
            &r.reason,
            &r.gateway,
        )?))
    }

    async fn apply_site(
        &self,
        req: Request<pb::ApplySiteRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let who = self.0.require_write(&req, WRITE, "apply_site", "")?;
        let r = req.into_inner();
        // Every object is checked before anything is written; what needs the others (a
        // device's profile and gateway, uniqueness) is checked in the one transaction.
        let mut changes = Vec::new();
        for g in r.gateways {
            changes.push(gateway_change(g)?);
        }
        for g in r.groups {
            changes.push(group_change(g)?);
        }
        for (i, yaml) in r.profiles.into_iter().enumerate() {
            changes.push(profile_change(&format!("site profile {}", i + 1), yaml)?);
        }
        for d in r.devices {
            changes.push(device_change(d)?);
        }
        Ok(Response::new(self.0.write_or_preview(
            &who.actor(),
            &r.reason,
            changes,
            r.dry_run,
            r.accept_impact,
        )?))
    }

    async fn list_audit(
        &self,
        req: Request<pb::ListAuditRequest>,
    ) -> Result<Response<pb::ListAuditResponse>, Status> {
        auth::require_role(&req, READ)?;
        let limit = req.get_ref().limit;
        let all = self.0.store.audit()?;
        let skip = if limit == 0 {
            0
        } else {
            all.len().saturating_sub(limit as usize)
        };
        let entries = all
            .into_iter()
            .skip(skip)
            .map(|e| pb::AuditEntry {
                seq: e.seq,
                unix_ms: e.unix_ms,
                actor: e.actor,
                action: e.action,
                target: e.target,
                diff: e.diff,
                reason: e.reason,
                hash: e.hash,
            })
            .collect();
        Ok(Response::new(pb::ListAuditResponse { entries }))
    }

    async fn get_baseline(
        &self,
        req: Request<pb::GetBaselineRequest>,
    ) -> Result<Response<pb::BaselineResponse>, Status> {
        auth::require_role(&req, READ)?;
        let device = &req.get_ref().device;
        let out = tokio::task::block_in_place(|| learning::get_baseline(&self.0, device))?;
        Ok(Response::new(out))
    }

    async fn set_baseline_state(
        &self,
        req: Request<pb::SetBaselineStateRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let who = self
            .0
            .require_write(&req, WRITE, "set_baseline_state", "")?;
        let r = req.into_inner();
        let change = learning::baseline_change(&self.0, &r)?;
        Ok(Response::new(self.0.write(
            &who.actor(),
            &r.reason,
            change,
        )?))
    }

    async fn propose_profile(
        &self,
        req: Request<pb::ProposeProfileRequest>,
    ) -> Result<Response<pb::ProposeProfileResponse>, Status> {
        auth::require_role(&req, READ)?;
        let r = req.get_ref();
        let opts = wardgate_analysis::propose::ProposeOptions {
            include_incomplete: r.include_incomplete,
        };
        let out = tokio::task::block_in_place(|| learning::propose(&self.0, &r.device, opts))?;
        Ok(Response::new(out))
    }

    async fn simulate(
        &self,
        req: Request<pb::SimulateRequest>,
    ) -> Result<Response<pb::SimulateResponse>, Status> {
        auth::require_role(&req, READ)?;
        let out = tokio::task::block_in_place(|| learning::simulate(&self.0, req.get_ref()))?;
        Ok(Response::new(out))
    }

    async fn import_devices(
        &self,
        req: Request<pb::ImportDevicesRequest>,
    ) -> Result<Response<pb::ImportDevicesResponse>, Status> {
        let who = self
            .0
            .require_write(&req, WRITE, "import_devices", &req.get_ref().file_name)?;
        let r = req.into_inner();
        let format = match r.format.as_str() {
            "" => crate::import::Format::guess(&r.file_name),
            f => crate::import::Format::parse(f).map_err(|e| Error::Invalid(e.to_string()))?,
        };
        let ask = super::import::ImportRequest {
            format,
            file_name: r.file_name,
            content: r.content,
            mapping: r.mapping,
            options: crate::import::plan::Options {
                gateway: r.gateway,
                profile: r.profile,
            },
        };
        let confirm = (!r.confirm_digest.is_empty()).then_some(r.confirm_digest.as_str());
        let out = self
            .0
            .import_devices(&who.actor(), &r.reason, &ask, confirm)?;
        Ok(Response::new(pb::ImportDevicesResponse {
            plan_json: serde_json::to_string(&out.plan)
                .map_err(|e| Error::Internal(e.to_string()))?,
            sha256: out.sha256,
            digest: out.digest,
            audit_seq: out.audit_seq.unwrap_or(0),
        }))
    }

    async fn submit_change(
        &self,
        req: Request<pb::SubmitChangeRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let target = req.get_ref().device.clone();
        let who = self
            .0
            .require_write(&req, WRITE, "submit_change", &target)?;
        let r = req.into_inner();
        self.need_device(&r.device)?;
        let w = tokio::task::block_in_place(|| {
            changes::submit(
                &self.0,
                &who.actor(),
                user(&who)?,
                &r.device,
                &r.yaml,
                &r.reason,
                r.accept_impact,
            )
        })?;
        Ok(Response::new(w))
    }

    async fn list_changes(
        &self,
        req: Request<pb::ListChangesRequest>,
    ) -> Result<Response<pb::ListChangesResponse>, Status> {
        auth::require_role(&req, READ)?;
        let r = req.into_inner();
        let limit = if r.limit == 0 { 100 } else { r.limit.min(1000) };
        let rows = tokio::task::block_in_place(|| {
            if r.device.is_empty() {
                self.0.store.latest_changes(!r.all, limit)
            } else {
                self.0.store.pending_changes(&r.device, limit)
            }
        })?;
        Ok(Response::new(pb::ListChangesResponse {
            changes: rows
                .into_iter()
                .filter(|p| r.all || p.is_pending())
                .map(changes::change_pb)
                .collect(),
        }))
    }

    async fn get_change(
        &self,
        req: Request<pb::GetChangeRequest>,
    ) -> Result<Response<pb::ChangeReview>, Status> {
        auth::require_role(&req, READ)?;
        let id = req.get_ref().id;
        let review = tokio::task::block_in_place(|| changes::review(&self.0, id))?.ok_or(
            Error::NotFound {
                what: "change",
                name: id.to_string(),
            },
        )?;
        Ok(Response::new(pb::ChangeReview {
            change: Some(changes::change_pb(review.change)),
            rule_changes: review.diff.iter().map(crate::preview::render).collect(),
            flows: review.simulation.flows,
            blocked: review.simulation.blocked,
        }))
    }

    async fn approve_change(
        &self,
        req: Request<pb::ApproveChangeRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let target = format!("change {}", req.get_ref().id);
        let who = self
            .0
            .require_write(&req, WRITE, "approve_change", &target)?;
        let r = req.into_inner();
        if r.reason.trim().is_empty() {
            return Err(Error::Invalid(
                "a reason or ticket id is required for every change".into(),
            )
            .into());
        }
        let w = tokio::task::block_in_place(|| {
            changes::approve(
                &self.0,
                &who.actor(),
                user(&who)?,
                r.id,
                &r.reason,
                r.accept_impact,
            )
        })?;
        Ok(Response::new(w))
    }

    async fn verify_audit(
        &self,
        req: Request<pb::VerifyAuditRequest>,
    ) -> Result<Response<pb::VerifyAuditResponse>, Status> {
        auth::require_role(&req, READ)?;
        let store = self.0.store.clone();
        let result = tokio::task::block_in_place(|| match store.audit_head_path() {
            Some(head) => {
                crate::audit::verify_store(store.as_ref(), &head).map(|r| r.map(|r| r.entries))
            }
            // A store without a head file (in memory): the chain alone.
            None => store.audit().map(|e| audit::verify(&e)),
        })?;
        Ok(Response::new(match result {
            Ok(n) => pb::VerifyAuditResponse {
                intact: true,
                entries: n as u64,
                problem: String::new(),
            },
            Err(problem) => pb::VerifyAuditResponse {
                intact: false,
                entries: store.audit()?.len() as u64,
                problem,
            },
        }))
    }
}
