//! Which programs run on a TCX hook, by id, with no privilege beyond CAP_NET_ADMIN.
//!
//! Hand-written because aya's `SchedClassifier::query_tcx` opens every program on the hook by id
//! to read its name, and BPF_PROG_GET_FD_BY_ID needs CAP_SYS_ADMIN; its id-only query is
//! private. The agent only needs ids to know where its own program stands (it knows its own
//! ids), so it asks the kernel for ids alone and can run without CAP_SYS_ADMIN.

use std::io;

use aya::programs::TcAttachType;

/// `bpf(2)` commands and attach types (include/uapi/linux/bpf.h).
const BPF_PROG_QUERY: libc::c_long = 16;
const BPF_TCX_INGRESS: u32 = 46;
const BPF_TCX_EGRESS: u32 = 47;

/// A TCX hook holds at most 64 programs (`MAX_BPF_MPROG`).
const MAX_PROGRAMS: usize = 64;

/// The `query` member of `union bpf_attr`, up to `revision`.
#[repr(C)]
#[derive(Default)]
struct QueryAttr {
    target_ifindex: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
    _pad: u32,
    prog_attach_flags: u64,
    link_ids: u64,
    link_attach_flags: u64,
    revision: u64,
}

/// The ids of the programs on `ifindex`'s `hook`, in the order they run.
pub fn program_ids(ifindex: u32, hook: TcAttachType) -> io::Result<Vec<u32>> {
    let mut ids = [0u32; MAX_PROGRAMS];
    let mut attr = QueryAttr {
        target_ifindex: ifindex,
        attach_type: match hook {
            TcAttachType::Ingress => BPF_TCX_INGRESS,
            TcAttachType::Egress => BPF_TCX_EGRESS,
        },
        prog_ids: ids.as_mut_ptr() as u64,
        prog_cnt: MAX_PROGRAMS as u32,
        ..QueryAttr::default()
    };
    // Safety: `attr` is a valid, zero-padded prefix of `union bpf_attr` of the size passed;
    // the kernel writes at most `prog_cnt` ids into `ids`, which outlives the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_QUERY,
            &mut attr as *mut QueryAttr,
            size_of::<QueryAttr>() as u32,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = (attr.prog_cnt as usize).min(MAX_PROGRAMS);
    Ok(ids[..n].to_vec())
}
