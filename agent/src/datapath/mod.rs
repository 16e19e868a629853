//! The agent's datapath module: loads or adopts the eBPF programs and pinned maps, attaches them
//! (TCX) to device-facing interfaces, and is the only code that writes BPF maps.

pub mod convert;
pub mod dns;
mod flowcap;
mod migrate;
pub mod pinned;
mod tcx;
mod writer;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Instant,
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, MapData, PerCpuArray, ProgramArray, RingBuf, lpm_trie::LpmTrie},
    programs::{
        LinkOrder, SchedClassifier, TcAttach, TcAttachType,
        links::{FdLink, LinkError, PinnedLink},
        tc::SchedClassifierLink,
    },
};
use thiserror::Error;
use wardgate_common::{GatewayConfig, MgmtKey, Reason, map_names, program_names};

pub use flowcap::{LiveCounts, Recount, count_live, grace_flows, holds_place};
pub use migrate::{Kept, Migrated};
pub use writer::ApplyOutcome;

use crate::{config::MgmtRule, paths};

/// The eBPF object built by build.rs (empty when built with AYA_BUILD_SKIP=1).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/wardgate"));

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

#[derive(Debug, Error)]
pub enum DatapathError {
    #[error(
        "this build has no eBPF object (built with AYA_BUILD_SKIP=1); rebuild without it \
         (`cargo xtask setup` installs the eBPF toolchain) before running the datapath"
    )]
    EmptyObject,
    #[error(
        "{path} is not on a bpffs mount; mount one with `mount -t bpf bpf /sys/fs/bpf` \
         (pins must outlive the agent)"
    )]
    NotBpffs { path: PathBuf },
    #[error("creating pin directory {path}")]
    PinDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("loading the eBPF object (maps pinned under {path})")]
    Load {
        path: PathBuf,
        #[source]
        source: Box<aya::EbpfError>,
    },
    #[error("eBPF program `{name}`")]
    Program {
        name: &'static str,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    #[error("attaching to {iface} {hook}")]
    Attach {
        iface: String,
        hook: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("map {name}")]
    Map {
        name: &'static str,
        #[source]
        source: Box<aya::maps::MapError>,
    },
    #[error("map {name} is missing from the object")]
    MissingMap { name: &'static str },
    #[error("desired state for gateway `{gateway}` has generation 0; generations start at 1")]
    GenerationZero { gateway: String },
    #[error("generation {generation} does not fit the datapath's 31-bit generation")]
    GenerationTooLarge { generation: u32 },
}

pub(crate) fn map_err(name: &'static str) -> impl FnOnce(aya::maps::MapError) -> DatapathError {
    move |e| DatapathError::Map {
        name,
        source: Box::new(e),
    }
}

/// The two hooks of a device-facing interface, with the program each one runs.
const HOOKS: [(&str, &str, TcAttachType); 2] = [
    ("ingress", program_names::INGRESS, TcAttachType::Ingress),
    ("egress", program_names::EGRESS, TcAttachType::Egress),
];

/// A TCX program that is not ours, as the kernel reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OtherProgram {
    pub id: u32,
    pub name: String,
}

impl std::fmt::Display for OtherProgram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}` (id {})", self.name, self.id)
    }
}

/// Where wardgate's program stands on one TCX hook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HookPosition {
    /// It runs first: every packet is filtered by it before anything else sees it.
    First,
    /// It is not on the hook (a new or re-created interface, or a link left defunct when its
    /// interface was deleted).
    Absent,
    /// These programs run before it, in order.
    After(Vec<OtherProgram>),
}

/// The hooks of one interface as they are now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterfaceHooks {
    pub ifindex: u32,
    /// `(hook, position)` for ingress and egress.
    pub hooks: Vec<(&'static str, HookPosition)>,
}

/// The interface's index in the current network namespace, or `None` if there is no such
/// interface.
pub fn ifindex(iface: &str) -> Option<u32> {
    let name = std::ffi::CString::new(iface).ok()?;
    // Safety: a valid NUL-terminated string; if_nametoindex has no other preconditions.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    (index != 0).then_some(index)
}

/// How an interface hook was taken over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachOutcome {
    /// A pinned link was found and its program replaced atomically: no packet went unfiltered.
    Adopted,
    /// No (usable) pinned link: attached and pinned a new one.
    Attached,
}

pub struct Datapath {
    ebpf: Ebpf,
    pin_root: PathBuf,
    last_switch: Option<Instant>,
    /// What the flow budget recount visits besides the devices with entries (`flowcap.rs`).
    recount: flowcap::RecountState,
}

/// Returns the embedded eBPF object, refusing an empty (skipped) build.
pub fn object() -> Result<&'static [u8], DatapathError> {
    if OBJECT.is_empty() {
        Err(DatapathError::EmptyObject)
    } else {
        Ok(OBJECT)
    }
}

fn is_bpffs(path: &Path) -> bool {
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // Safety: statfs writes into the zeroed struct we own.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // Safety: valid C string and out pointer.
    let rc = unsafe { libc::statfs(c_path.as_ptr(), &mut st) };
    rc == 0 && st.f_type as i64 == BPF_FS_MAGIC
}

/// Pins must live on bpffs. The standard mount point is mounted if nothing is there yet (as
/// systemd would at boot); any other path must already be bpffs.
fn ensure_bpffs(path: &Path) -> Result<(), DatapathError> {
    const STANDARD: &str = "/sys/fs/bpf";
    if is_bpffs(path) {
        return Ok(());
    }
    if path == Path::new(STANDARD) {
        // Safety: constant NUL-terminated strings; mount has no other preconditions.
        let rc = unsafe {
            libc::mount(
                c"bpf".as_ptr(),
                c"/sys/fs/bpf".as_ptr(),
                c"bpf".as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if rc == 0 && is_bpffs(path) {
            tracing::info!("mounted bpffs on /sys/fs/bpf");
            return Ok(());
        }
    }
    Err(DatapathError::NotBpffs {
        path: path.to_path_buf(),
    })
}

impl Datapath {
    /// Loads the programs and creates or adopts the maps pinned under `pin_root`. Existing
    /// pinned maps are reused as they are: nothing is flushed.
    pub fn load(pin_root: &Path) -> Result<Self, DatapathError> {
        Self::load_object(pin_root, object()?)
    }

    /// [`Datapath::load`] of another build's eBPF object (the datapath bench measures an older
    /// commit's object next to this one's). The object must use this agent's map names and
    /// layouts, since this agent writes its maps.
    pub fn load_object(pin_root: &Path, object: &[u8]) -> Result<Self, DatapathError> {
        if object.is_empty() {
            return Err(DatapathError::EmptyObject);
        }
        let bpffs_root = pin_root.parent().unwrap_or(pin_root);
        ensure_bpffs(bpffs_root)?;
        let maps_dir = paths::maps_dir(pin_root);
        for dir in [maps_dir.clone(), pin_root.join("links")] {
            std::fs::create_dir_all(&dir).map_err(|source| DatapathError::PinDir {
                path: dir.clone(),
                source,
            })?;
        }
        let ebpf = EbpfLoader::new()
            .default_map_pin_directory(&maps_dir)
            .load(object)
            .map_err(|e| DatapathError::Load {
                path: maps_dir.clone(),
                source: Box::new(e),
            })?;
        let mut dp = Datapath {
            ebpf,
            pin_root: pin_root.to_path_buf(),
            last_switch: None,
            recount: flowcap::RecountState::default(),
        };
        for name in [
            program_names::INGRESS,
            program_names::EGRESS,
            program_names::PASS,
            program_names::PAYLOAD,
            program_names::SLOW,
        ] {
            dp.classifier(name)?
                .load()
                .map_err(|e| DatapathError::Program {
                    name,
                    source: Box::new(e),
                })?;
        }
        // The slow path first: without it the classifiers allow nothing new.
        dp.set_tail_program(program_names::SLOW, map_names::SLOW_PROG)?;
        dp.set_tail_program(program_names::PAYLOAD, map_names::PAYLOAD_PROG)?;
        // An upgrade across a conntrack layout change: the previous release's flows, copied
        // before these programs run on any hook (`migrate.rs`).
        if let Some(m) = dp.migrate_conntrack()? {
            tracing::info!(
                copied = m.copied,
                "previous release's conntrack entries copied into {}",
                map_names::CONNTRACK
            );
        }
        Ok(dp)
    }

    /// Puts this object's program `name` into the classifiers' tail-call slot `slot_map` (the
    /// pinned prog array outlives the agent; a new agent replaces the program in it).
    fn set_tail_program(
        &mut self,
        name: &'static str,
        slot_map: &'static str,
    ) -> Result<(), DatapathError> {
        let fd = self
            .classifier(name)?
            .fd()
            .map_err(|e| DatapathError::Program {
                name,
                source: Box::new(e),
            })?
            .try_clone()
            .map_err(|e| DatapathError::Program {
                name,
                source: Box::new(aya::programs::ProgramError::IOError(e)),
            })?;
        let mut slot: ProgramArray<&mut MapData> = self.typed(slot_map)?;
        slot.set(0, &fd, 0).map_err(map_err(slot_map))
    }

    pub fn pin_root(&self) -> &Path {
        &self.pin_root
    }

    /// A loaded classifier by name (for attaching, and for BPF_PROG_TEST_RUN in tests/benches).
    pub fn classifier(
        &mut self,
        name: &'static str,
    ) -> Result<&mut SchedClassifier, DatapathError> {
        let prog = self.ebpf.program_mut(name).ok_or(DatapathError::Program {
            name,
            source: Box::new(aya::programs::ProgramError::NotLoaded),
        })?;
        prog.try_into().map_err(|e| DatapathError::Program {
            name,
            source: Box::new(e),
        })
    }

    /// Attaches ingress and egress of `iface` through TCX links pinned under the pin root,
    /// first in each hook's chain (`LinkOrder::first()`). If pinned links exist (agent restart
    /// or upgrade), their program is replaced in place and keeps its position.
    pub fn attach(&mut self, iface: &str) -> Result<AttachOutcome, DatapathError> {
        let mut outcome = AttachOutcome::Adopted;
        for (hook, name, kind) in HOOKS {
            let pin = paths::link_pin(&self.pin_root, iface, hook);
            let attach_err = |e: Box<dyn std::error::Error + Send + Sync>| DatapathError::Attach {
                iface: iface.to_string(),
                hook,
                source: e,
            };
            let prog = self.classifier(name)?;
            if pin.exists() {
                match adopt(prog, &pin) {
                    Ok(()) => continue,
                    Err(e) => {
                        tracing::warn!(pin = %pin.display(), error = %e,
                            "pinned link unusable (interface gone?); attaching a new one");
                        let _ = std::fs::remove_file(&pin);
                    }
                }
            }
            outcome = AttachOutcome::Attached;
            let ifname = std::ffi::CString::new(iface).map_err(|e| attach_err(Box::new(e)))?;
            let id = prog
                .attach(
                    ifname.as_c_str(),
                    TcAttach::Tcx {
                        attach_type: kind,
                        order: LinkOrder::first(),
                    },
                )
                .map_err(|e| attach_err(Box::new(e)))?;
            let link = prog.take_link(id).map_err(|e| attach_err(Box::new(e)))?;
            let fd: FdLink = link
                .try_into()
                .map_err(|e: LinkError| attach_err(Box::new(e)))?;
            fd.pin(&pin).map_err(|e| attach_err(Box::new(e)))?;
        }
        Ok(outcome)
    }

    /// Attaches again the hooks of `iface` where our program is not running (`absent`): their
    /// pins hold links left defunct by a deleted interface, so they are removed first and new
    /// links are attached (first) and pinned. Hooks still running our program are adopted.
    pub fn reattach(
        &mut self,
        iface: &str,
        absent: &[&str],
    ) -> Result<AttachOutcome, DatapathError> {
        for hook in absent {
            let _ = std::fs::remove_file(paths::link_pin(&self.pin_root, iface, hook));
        }
        self.attach(iface)
    }

    /// Where our programs stand on the TCX hooks of `iface`; `None` if there is no such
    /// interface.
    pub fn hooks(&mut self, iface: &str) -> Result<Option<InterfaceHooks>, DatapathError> {
        let Some(ifindex) = ifindex(iface) else {
            return Ok(None);
        };
        let mut hooks = Vec::with_capacity(HOOKS.len());
        for (hook, name, kind) in HOOKS {
            let program_err = |e| DatapathError::Program {
                name,
                source: Box::new(e),
            };
            let ours = self.classifier(name)?.info().map_err(program_err)?.id();
            // Ids only: naming every program on the hook would need CAP_SYS_ADMIN.
            let programs = match tcx::program_ids(ifindex, kind) {
                Ok(ids) => ids,
                // Deleted since the index was looked up.
                Err(_) if self::ifindex(iface) != Some(ifindex) => return Ok(None),
                Err(e) => {
                    return Err(program_err(aya::programs::ProgramError::SyscallError(
                        aya::sys::SyscallError {
                            call: "bpf_prog_query",
                            io_error: e,
                        },
                    )));
                }
            };
            let position = match programs.iter().position(|id| *id == ours) {
                None => HookPosition::Absent,
                Some(0) => HookPosition::First,
                Some(n) => {
                    // Names for the error message where the agent may read them (with
                    // CAP_SYS_ADMIN); ids always.
                    let named = SchedClassifier::query_tcx(ifindex, kind)
                        .map(|(_, infos)| infos)
                        .unwrap_or_default();
                    HookPosition::After(
                        programs[..n]
                            .iter()
                            .map(|&id| OtherProgram {
                                id,
                                name: named
                                    .iter()
                                    .find(|p| p.id() == id)
                                    .and_then(|p| p.name_as_str())
                                    .unwrap_or("?")
                                    .to_string(),
                            })
                            .collect(),
                    )
                }
            };
            hooks.push((hook, position));
        }
        Ok(Some(InterfaceHooks { ifindex, hooks }))
    }

    /// Writes the agent's heartbeat (the datapath's coarse clock, now). Called from the
    /// map-writer loop: a stuck writer stops beating and the fail-open watchdog fires.
    pub fn heartbeat(&mut self) -> Result<(), DatapathError> {
        let mut map: Array<&mut MapData, u64> = self.typed(map_names::HEARTBEAT)?;
        map.set(0, &coarse_now_ns(), 0)
            .map_err(map_err(map_names::HEARTBEAT))
    }

    pub fn set_gateway_config(&mut self, cfg: &GatewayConfig) -> Result<(), DatapathError> {
        let mut map: Array<&mut MapData, GatewayConfig> = self.typed(map_names::CONFIG)?;
        map.set(0, cfg, 0).map_err(map_err(map_names::CONFIG))
    }

    /// Makes the management allowlist exactly `rules` (adds first, then removes the rest, so an
    /// entry present before and after is never missing).
    pub fn set_management(&mut self, rules: &[MgmtRule]) -> Result<(), DatapathError> {
        let mut map: LpmTrie<&mut MapData, MgmtKey, u32> = self.typed(map_names::MGMT)?;
        let wanted: Vec<_> = rules.iter().map(convert::mgmt_key).collect();
        for k in &wanted {
            map.insert(k, &1, 0).map_err(map_err(map_names::MGMT))?;
        }
        let existing: Vec<_> = map.keys().filter_map(Result::ok).collect();
        for k in existing {
            let keep = wanted
                .iter()
                .any(|w| w.prefix_len() == k.prefix_len() && w.data() == k.data());
            if !keep {
                map.remove(&k).map_err(map_err(map_names::MGMT))?;
            }
        }
        Ok(())
    }

    /// The active slot and its generation (0 = nothing applied yet).
    pub fn active(&mut self) -> Result<(u32, u32), DatapathError> {
        let active: Array<&mut MapData, u32> = self.typed(map_names::ACTIVE)?;
        let word = active.get(&0, 0).map_err(map_err(map_names::ACTIVE))?;
        Ok((word & 1, word >> 1))
    }

    /// Per-reason packet counters, summed over CPUs.
    pub fn stats(&mut self) -> Result<BTreeMap<Reason, u64>, DatapathError> {
        let map: PerCpuArray<&mut MapData, u64> = self.typed(map_names::STATS)?;
        pinned::reason_counts(&map)
    }

    /// Flows the application checks refused, by why (summed over CPUs).
    pub fn app_refused(&mut self) -> Result<BTreeMap<&'static str, u64>, DatapathError> {
        let map: PerCpuArray<&mut MapData, u64> = self.typed(map_names::APP_DENIED)?;
        pinned::app_refused_counts(&map)
    }

    /// Events the datapath could not deliver, by why and kind (summed over CPUs); only the
    /// non-zero ones.
    pub fn events_lost(
        &mut self,
    ) -> Result<BTreeMap<(convert::LossReason, convert::EventKind), u64>, DatapathError> {
        let map: PerCpuArray<&mut MapData, u64> = self.typed(map_names::EVENTS_LOST)?;
        pinned::lost_counts(&map)
    }

    /// Takes the event ring buffer out (once), for a reader task.
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>, DatapathError> {
        let map = self
            .ebpf
            .take_map(map_names::EVENTS)
            .ok_or(DatapathError::MissingMap {
                name: map_names::EVENTS,
            })?;
        RingBuf::try_from(map).map_err(map_err(map_names::EVENTS))
    }

    /// Takes the flow-record ring buffer out (once), for the flow reader task.
    pub fn take_flows(&mut self) -> Result<RingBuf<MapData>, DatapathError> {
        let map = self
            .ebpf
            .take_map(map_names::FLOWS)
            .ok_or(DatapathError::MissingMap {
                name: map_names::FLOWS,
            })?;
        RingBuf::try_from(map).map_err(map_err(map_names::FLOWS))
    }

    /// Takes the flow cache out (once), for the flow reader task: it reads a finishing flow's
    /// slots. Not pinned, so only the program this agent loaded has it.
    pub fn take_flow_cache(
        &mut self,
    ) -> Result<PerCpuArray<MapData, wardgate_common::FlowSlot>, DatapathError> {
        let map = self
            .ebpf
            .take_map(map_names::FLOW_CACHE)
            .ok_or(DatapathError::MissingMap {
                name: map_names::FLOW_CACHE,
            })?;
        PerCpuArray::try_from(map).map_err(map_err(map_names::FLOW_CACHE))
    }

    /// Takes the payload-record ring buffer out (once), for the flow reader task.
    pub fn take_payload(&mut self) -> Result<RingBuf<MapData>, DatapathError> {
        let map = self
            .ebpf
            .take_map(map_names::PAYLOAD)
            .ok_or(DatapathError::MissingMap {
                name: map_names::PAYLOAD,
            })?;
        RingBuf::try_from(map).map_err(map_err(map_names::PAYLOAD))
    }

    pub(crate) fn typed<'a, T>(&'a mut self, name: &'static str) -> Result<T, DatapathError>
    where
        T: TryFrom<&'a mut aya::maps::Map, Error = aya::maps::MapError>,
    {
        let map = self
            .ebpf
            .map_mut(name)
            .ok_or(DatapathError::MissingMap { name })?;
        T::try_from(map).map_err(map_err(name))
    }
}

/// CLOCK_MONOTONIC_COARSE in ns: the clock `bpf_ktime_get_coarse_ns` reads.
pub fn coarse_now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // Safety: clock_gettime writes the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn adopt(
    prog: &mut SchedClassifier,
    pin: &Path,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let pinned = PinnedLink::from_pin(pin)?;
    let link = SchedClassifierLink::try_from(FdLink::from(pinned))?;
    let id = prog.attach_to_link(link)?;
    // The pin keeps the link (and so the program) attached after this process exits.
    let link = prog.take_link(id)?;
    let _fd: FdLink = link.try_into()?;
    Ok(())
}
