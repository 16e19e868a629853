//! Reading capture files (pcap and pcapng) frame by frame with pcap-file: link type per
//! interface, nanosecond timestamps, several sections; a file cut mid-packet is read up to the
//! cut and says so.

use std::{
    fs::File,
    io::{BufReader, Read, Seek, SeekFrom},
    path::Path,
};

use anyhow::Context as _;
use pcap_file::{
    PcapError, TsResolution,
    pcap::PcapReader,
    pcapng::{Block, PcapNgReader, blocks::interface_description::InterfaceDescriptionOption},
};
use wardgate_analysis::LinkType;

/// One captured frame.
pub struct Frame<'a> {
    /// 1-based position in the file (as Wireshark numbers frames).
    pub number: u64,
    pub link: LinkType,
    pub data: &'a [u8],
    pub ts_ns: u64,
}

/// How reading one file ended.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct FileEnd {
    pub frames: u64,
    pub format: &'static str,
    /// Set when the file stops inside a frame or block: what was read before it is kept.
    pub cut: Option<String>,
}

const PCAPNG_MAGIC: [u8; 4] = [0x0a, 0x0d, 0x0d, 0x0a];

/// Calls `each` for every frame of `path`, in file order. `wrap` may wrap the file reader (a
/// progress bar counts bytes through it).
pub fn read_frames(
    path: &Path,
    wrap: impl FnOnce(File) -> Box<dyn Read>,
    mut each: impl FnMut(Frame<'_>) -> anyhow::Result<()>,
) -> anyhow::Result<FileEnd> {
    let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut magic = [0u8; 4];
    let n = file.read(&mut magic)?;
    file.seek(SeekFrom::Start(0))?;
    let reader = BufReader::new(wrap(file));
    if n == 4 && magic == PCAPNG_MAGIC {
        read_pcapng(reader, &mut each)
    } else {
        read_pcap(reader, &mut each)
    }
    .with_context(|| format!("reading {}", path.display()))
}

/// An error at the end of the bytes is a cut file; anything else is a corrupt file.
fn cut_or_fail(e: PcapError, what: &str, number: u64) -> anyhow::Result<String> {
    match e {
        PcapError::IncompleteBuffer => Ok(format!("file ends inside {what} {number}")),
        PcapError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            Ok(format!("file ends inside {what} {number}"))
        }
        other => Err(anyhow::Error::new(other).context(format!("{what} {number} is corrupt"))),
    }
}

fn read_pcap(
    reader: impl Read,
    each: &mut impl FnMut(Frame<'_>) -> anyhow::Result<()>,
) -> anyhow::Result<FileEnd> {
    let mut r = PcapReader::new(reader).context("not a pcap or pcapng file")?;
    let header = r.header();
    let linktype = u32::from(header.datalink);
    let link = LinkType::from_linktype(linktype)?;
    let mut end = FileEnd {
        format: "pcap",
        ..FileEnd::default()
    };
    // Raw packets: pcap-file's checked packets refuse orig_len > snaplen, which every capture
    // taken with a small snap length has; the frame bytes are all we need.
    while let Some(p) = r.next_raw_packet() {
        let number = end.frames + 1;
        let p = match p {
            Ok(p) => p,
            Err(e) => {
                end.cut = Some(cut_or_fail(e, "packet", number)?);
                break;
            }
        };
        let frac = u64::from(p.ts_frac);
        let frac_ns = match header.ts_resolution {
            TsResolution::MicroSecond => frac * 1_000,
            TsResolution::NanoSecond => frac,
        };
        let ts_ns = u64::from(p.ts_sec) * 1_000_000_000 + frac_ns;
        end.frames = number;
        each(Frame {
            number,
            link,
            data: &p.data,
            ts_ns,
        })?;
    }
    Ok(end)
}

/// Per interface: its link type and the units of its timestamps.
struct Iface {
    link: Result<LinkType, wardgate_analysis::decode::UnsupportedLink>,
    units_per_s: u128,
    offset_s: u64,
}

fn read_pcapng(
    reader: impl Read,
    each: &mut impl FnMut(Frame<'_>) -> anyhow::Result<()>,
) -> anyhow::Result<FileEnd> {
    let mut r = PcapNgReader::new(reader).context("not a pcapng file")?;
    let mut end = FileEnd {
        format: "pcapng",
        ..FileEnd::default()
    };
    let mut ifaces: Vec<Iface> = Vec::new();
    let mut block_no = 1u64;
    while let Some(b) = r.next_block() {
        block_no += 1;
        let b = match b {
            Ok(b) => b,
            Err(e) => {
                end.cut = Some(cut_or_fail(e, "block", block_no)?);
                break;
            }
        };
        let (iface, raw_ts, data) = match &b {
            // A new section starts its own interface list.
            Block::SectionHeader(_) => {
                ifaces.clear();
                continue;
            }
            Block::InterfaceDescription(d) => {
                ifaces.push(iface(u32::from(d.linktype), &d.options));
                continue;
            }
            Block::EnhancedPacket(p) => (
                p.interface_id,
                // pcap-file hands the raw 64-bit count as nanoseconds; its unit is the
                // interface's if_tsresol (default microseconds), applied here.
                p.timestamp.as_nanos() as u64,
                &p.data,
            ),
            Block::SimplePacket(p) => (0, 0, &p.data),
            Block::Packet(p) => (u32::from(p.interface_id), p.timestamp, &p.data),
            _ => continue,
        };
        let number = end.frames + 1;
        let ifc = ifaces.get(iface as usize).with_context(|| {
            format!("packet {number}: interface {iface} was not described before it")
        })?;
        let link = ifc
            .link
            .map_err(|e| anyhow::anyhow!("packet {number} (interface {iface}): {e}"))?;
        let ns = u128::from(raw_ts) * 1_000_000_000 / ifc.units_per_s;
        let ts_ns = (ns as u64).saturating_add(ifc.offset_s.saturating_mul(1_000_000_000));
        end.frames = number;
        each(Frame {
            number,
            link,
            data: data.as_ref(),
            ts_ns,
        })?;
    }
    Ok(end)
}

fn iface(linktype: u32, options: &[InterfaceDescriptionOption<'_>]) -> Iface {
    let mut units_per_s: u128 = 1_000_000;
    let mut offset_s = 0;
    for o in options {
        match o {
            // High bit clear: 10^-n seconds; set: 2^-n seconds.
            InterfaceDescriptionOption::IfTsResol(v) => {
                let n = u32::from(v & 0x7f);
                units_per_s = if v & 0x80 == 0 {
                    10u128.checked_pow(n.min(30)).unwrap_or(1)
                } else {
                    1u128 << n.min(100)
                };
            }
            InterfaceDescriptionOption::IfTsOffset(s) => offset_s = *s,
            _ => {}
        }
    }
    Iface {
        link: LinkType::from_linktype(linktype),
        units_per_s: units_per_s.max(1),
        offset_s,
    }
}
