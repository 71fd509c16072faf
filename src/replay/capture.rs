//! Reading capture files: pcap (µs or ns) and pcapng (any interface time
//! resolution), one frame at a time, with its link type and capture time.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use pcap_file::DataLink;
use pcap_file::pcap::PcapReader;
use pcap_file::pcapng::{Block, PcapNgReader};

use super::ReplayError;

/// One captured frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Capture time, nanoseconds since the epoch.
    pub ts_ns: u128,
    /// How the bytes start.
    pub link: DataLink,
    /// The bytes as captured (possibly cut at the snap length).
    pub data: Vec<u8>,
}

/// A pcap or pcapng file, read frame by frame.
pub enum Capture {
    /// Classic pcap: one link type for the file.
    Pcap(PcapReader<Source>),
    /// pcapng: a link type and a time resolution per interface.
    PcapNg {
        /// The reader.
        reader: PcapNgReader<Source>,
        /// Per interface: link type and nanoseconds per timestamp unit (as a
        /// ratio, numerator and denominator, so 2^-n resolutions stay exact).
        interfaces: Vec<(DataLink, u128, u128)>,
    },
}

const PCAPNG_MAGIC: [u8; 4] = [0x0a, 0x0d, 0x0d, 0x0a];

/// A capture's bytes: the first ones, read to tell its format, then the rest of
/// the file. One open and one pass, so a pipe works as well as a file.
pub type Source = BufReader<std::io::Chain<std::io::Cursor<Vec<u8>>, File>>;

/// Capture formats met in the field that replay does not read, by their first
/// bytes: named in the error, with the conversion that makes them readable.
const OTHER_FORMATS: [(&[u8], &str); 5] = [
    (b"GMBU", "Microsoft Network Monitor 2.x"),
    (b"RTSS", "Microsoft Network Monitor 1.x"),
    (b"snoop\0\0\0", "Solaris snoop"),
    (b"XCP\0", "NetXray / Sniffer (Windows)"),
    (b"\xa1\xb2\xcd\x34", "modified (Kuznetzov) pcap"),
];

/// The tool that decompresses a compressed file, from its first bytes.
fn compressed(head: &[u8]) -> Option<&'static str> {
    if head.starts_with(b"\x1f\x8b") {
        Some("zcat")
    } else if head.starts_with(b"\x28\xb5\x2f\xfd") {
        Some("zstdcat")
    } else {
        None
    }
}

/// The name of a capture format replay does not read, from the file's start.
fn other_format(head: &[u8]) -> Option<&'static str> {
    OTHER_FORMATS
        .iter()
        .find(|(magic, _)| head.starts_with(magic))
        .map(|(_, name)| *name)
        .or_else(|| {
            head.starts_with(&[0x34, 0xcd, 0xb2, 0xa1])
                .then_some("modified (Kuznetzov) pcap")
        })
}

impl Capture {
    /// Opens a capture, telling pcap from pcapng by its first bytes.
    pub fn open(path: &Path) -> Result<Capture, ReplayError> {
        let io = |e: std::io::Error| ReplayError::Io(path.display().to_string(), e);
        let mut file = File::open(path).map_err(io)?;
        let mut head = [0u8; 8];
        let mut got = 0;
        while got < head.len() {
            match file.read(&mut head[got..]).map_err(io)? {
                0 => break,
                n => got += n,
            }
        }
        match got {
            0 => return Err(ReplayError::Format("the file is empty".into())),
            1..4 => {
                return Err(ReplayError::Format(format!(
                    "{got} bytes: too short for a capture header"
                )));
            }
            _ => {}
        }
        if let Some(format) = other_format(&head[..got]) {
            return Err(ReplayError::Unsupported(format));
        }
        if let Some(tool) = compressed(&head[..got]) {
            return Err(ReplayError::Compressed(tool));
        }
        let is_pcapng = head[..4] == PCAPNG_MAGIC;
        let file = BufReader::new(std::io::Cursor::new(head[..got].to_vec()).chain(file));
        let bad = |e: pcap_file::PcapError| ReplayError::Format(e.to_string());
        if is_pcapng {
            Ok(Capture::PcapNg {
                reader: PcapNgReader::new(file).map_err(bad)?,
                interfaces: Vec::new(),
            })
        } else {
            Ok(Capture::Pcap(PcapReader::new(file).map_err(bad)?))
        }
    }

    /// The next frame, `None` at the end. A damaged tail ends the file with an
    /// error rather than a panic.
    pub fn next_frame(&mut self) -> Option<Result<Frame, ReplayError>> {
        match self {
            Capture::Pcap(r) => {
                let header = r.header();
                // Raw: the checked reader refuses a packet cut by the snap length
                // (orig_len > snaplen), which is exactly what `tcpdump -s` makes.
                let p = match r.next_raw_packet()? {
                    Ok(p) => p,
                    Err(e) => return Some(Err(ReplayError::Format(e.to_string()))),
                };
                let frac_ns = match header.ts_resolution {
                    pcap_file::TsResolution::MicroSecond => u128::from(p.ts_frac) * 1000,
                    pcap_file::TsResolution::NanoSecond => u128::from(p.ts_frac),
                };
                Some(Ok(Frame {
                    ts_ns: u128::from(p.ts_sec) * 1_000_000_000 + frac_ns,
                    link: header.datalink,
                    data: p.data.into_owned(),
                }))
            }
            Capture::PcapNg { reader, interfaces } => loop {
                let block = match reader.next_block()? {
                    Ok(b) => b,
                    Err(e) => return Some(Err(ReplayError::Format(e.to_string()))),
                };
                match block {
                    // A new section starts its own interface numbering.
                    Block::SectionHeader(_) => interfaces.clear(),
                    Block::InterfaceDescription(idb) => {
                        let (num, den) = idb
                            .options
                            .iter()
                            .find_map(|o| match o {
                                pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption::IfTsResol(r) => Some(*r),
                                _ => None,
                            })
                            .map_or((1000, 1), resolution);
                        interfaces.push((idb.linktype, num, den));
                    }
                    Block::EnhancedPacket(epb) => {
                        let Some(&(link, num, den)) = interfaces.get(epb.interface_id as usize)
                        else {
                            return Some(Err(ReplayError::Format(
                                "packet of an undeclared interface".into(),
                            )));
                        };
                        // pcap-file hands over the raw units as "nanoseconds".
                        let units = epb.timestamp.as_nanos();
                        return Some(Ok(Frame {
                            ts_ns: units.saturating_mul(num) / den,
                            link,
                            data: epb.data.into_owned(),
                        }));
                    }
                    Block::SimplePacket(spb) => {
                        let Some(&(link, _, _)) = interfaces.first() else {
                            return Some(Err(ReplayError::Format(
                                "packet before any interface".into(),
                            )));
                        };
                        // Simple packets carry no time.
                        return Some(Ok(Frame {
                            ts_ns: 0,
                            link,
                            data: spb.data.into_owned(),
                        }));
                    }
                    _ => {}
                }
            },
        }
    }
}

/// Nanoseconds per unit for an `if_tsresol` value, as (numerator, denominator):
/// the high bit set means 2^-n seconds, clear means 10^-n.
fn resolution(r: u8) -> (u128, u128) {
    let n = u32::from(r & 0x7f);
    if r & 0x80 != 0 {
        (1_000_000_000, 1u128.checked_shl(n.min(100)).unwrap_or(1))
    } else if n <= 9 {
        (10u128.pow(9 - n), 1)
    } else {
        (1, 10u128.pow((n - 9).min(30)))
    }
}

#[cfg(test)]
mod tests {
    use super::resolution;

    #[test]
    fn time_resolutions() {
        assert_eq!(resolution(6), (1000, 1));
        assert_eq!(resolution(9), (1, 1));
        assert_eq!(resolution(12), (1, 1000));
        assert_eq!(resolution(0x80 | 10), (1_000_000_000, 1024));
    }
}
