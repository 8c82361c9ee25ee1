//! Decodes a board's raw defmt output (rzCOBS frames, as the QEMU board writes them through
//! semihosting) into text lines, with the defmt table of the board's ELF.
//!
//! How the pieces fit:
//! - [`Elf::load`] reads the ELF once: its defmt table and, when asked, the source location
//!   of every log statement (from the ELF's debug information).
//! - [`Decoder`] takes the output in whatever pieces it arrives ([`Decoder::feed`]) and
//!   returns the lines of every frame completed so far, so a pipe from a running board is
//!   printed frame by frame; a frame split across two pieces comes out once the second
//!   arrives. Feeding a log whole or in any split gives the same lines.
//! - [`Decoder::finish`] ends the stream and gives a [`Summary`]: frames skipped because they
//!   did not decode (rzCOBS lets the decoder find the next frame) and whether the stream ended
//!   inside a frame (the board was stopped while logging). [`Summary::note`] is the line the
//!   command prints for them.
//!
//! The `defmt-log` command (`src/main.rs`) wires these to stdin and stdout; `hil-tests` runs it
//! on each board log it keeps, and the QEMU board's cargo runner pipes QEMU's output through it.

use std::fmt;
use std::path::{Path, PathBuf};

use defmt_decoder::{DecodeError, Locations, StreamDecoder, Table};

/// Why an ELF cannot be used for decoding.
#[derive(Debug)]
pub enum ElfError {
    /// The file cannot be read.
    Read(PathBuf, std::io::Error),
    /// The file has no defmt table (not a defmt firmware, or stripped).
    NoTable(PathBuf),
    /// The defmt table or the debug information does not parse.
    Parse(PathBuf, String),
}

impl fmt::Display for ElfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Read(path, e) => write!(f, "{}: {e}", path.display()),
            Self::NoTable(path) => write!(f, "{} has no defmt table", path.display()),
            Self::Parse(path, e) => write!(f, "{}: {e}", path.display()),
        }
    }
}

impl std::error::Error for ElfError {}

/// What decoding needs from a board's ELF.
pub struct Elf {
    /// The defmt table (format strings by index).
    table: Table,
    /// Source locations of the log statements, when loaded.
    locations: Option<Locations>,
}

impl Elf {
    /// Reads the ELF at `path`; with `locations`, also where each log statement is in the
    /// source (an ELF without debug information then simply has none).
    pub fn load(path: &Path, locations: bool) -> Result<Self, ElfError> {
        let bytes = std::fs::read(path).map_err(|e| ElfError::Read(path.to_owned(), e))?;
        let table = Table::parse(&bytes)
            .map_err(|e| ElfError::Parse(path.to_owned(), e.to_string()))?
            .ok_or_else(|| ElfError::NoTable(path.to_owned()))?;
        let locations = if locations {
            let found = table
                .get_locations(&bytes)
                .map_err(|e| ElfError::Parse(path.to_owned(), e.to_string()))?;
            Some(found)
        } else {
            None
        };
        Ok(Self { table, locations })
    }

    /// A decoder for one stream of this ELF's output.
    pub fn decoder(&self) -> Decoder<'_> {
        Decoder {
            stream: self.table.new_stream_decoder(),
            locations: self.locations.as_ref(),
            recover: self.table.encoding().can_recover(),
            summary: Summary::default(),
            last_byte: None,
            stopped: false,
        }
    }
}

/// How a stream went, once finished.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Frames decoded.
    pub frames: usize,
    /// Frames skipped because they did not decode.
    pub malformed: usize,
    /// The stream ended inside a frame (the board was stopped while logging).
    pub truncated: bool,
}

impl Summary {
    /// The `[defmt-log] ...` line to print after the frames, when something went wrong.
    pub fn note(&self) -> Option<String> {
        (self.malformed > 0 || self.truncated).then(|| {
            format!(
                "[defmt-log] {} frames decoded, {} malformed frames skipped{}",
                self.frames,
                self.malformed,
                if self.truncated {
                    ", the last frame cut off"
                } else {
                    ""
                }
            )
        })
    }
}

/// Decodes one stream incrementally (see the module docs).
pub struct Decoder<'e> {
    /// defmt's own stream decoder: buffers a partial frame between pieces.
    stream: Box<dyn StreamDecoder + Send + Sync + 'e>,
    /// Where each log statement is, if loaded.
    locations: Option<&'e Locations>,
    /// Whether the encoding lets decoding go on after a malformed frame (rzCOBS does).
    recover: bool,
    /// Counts so far.
    summary: Summary,
    /// The last byte received: rzCOBS frames end with a zero byte.
    last_byte: Option<u8>,
    /// A malformed frame in an encoding that cannot recover: the rest is ignored.
    stopped: bool,
}

impl Decoder<'_> {
    /// Takes the next piece of the stream and returns the lines of the frames it completes:
    /// one per frame, followed by a `└─ module @ file:line` line when locations were loaded.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut lines = Vec::new();
        if self.stopped || bytes.is_empty() {
            return lines;
        }
        self.last_byte = bytes.last().copied();
        self.stream.received(bytes);
        loop {
            match self.stream.decode() {
                Ok(frame) => {
                    self.summary.frames += 1;
                    lines.push(frame.display(false).to_string());
                    let location = self.locations.and_then(|l| l.get(&frame.index()));
                    if let Some(location) = location {
                        lines.push(format!(
                            "└─ {} @ {}:{}",
                            location.module,
                            location.file.display(),
                            location.line
                        ));
                    }
                }
                Err(DecodeError::UnexpectedEof) => return lines,
                Err(DecodeError::Malformed) => {
                    self.summary.malformed += 1;
                    if !self.recover {
                        self.stopped = true;
                        return lines;
                    }
                }
            }
        }
    }

    /// Ends the stream.
    pub fn finish(self) -> Summary {
        Summary {
            truncated: self.recover && self.last_byte.is_some_and(|b| b != 0),
            ..self.summary
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The QEMU board's `watchdog-probe` (both boots: power-on, then the watchdog's reset),
    /// built with debug information for the board crate only and reduced to the sections
    /// decoding reads (`.defmt`, the symbol table, `.debug_{info,abbrev,str,line}`), and
    /// what it wrote on QEMU's stdout in that run.
    const FIXTURE_ELF: &str = "tests/fixtures/watchdog-probe.elf";
    const FIXTURE_LOG: &str = "tests/fixtures/watchdog-probe.defmt";

    fn fixture() -> (Elf, Vec<u8>) {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let elf = Elf::load(&root.join(FIXTURE_ELF), true).unwrap();
        let log = std::fs::read(root.join(FIXTURE_LOG)).unwrap();
        (elf, log)
    }

    /// Decodes `log` fed in the pieces `cuts` (ascending offsets) splits it into.
    fn decode_in_pieces(elf: &Elf, log: &[u8], cuts: &[usize]) -> (Vec<String>, Summary) {
        let mut decoder = elf.decoder();
        let mut lines = Vec::new();
        let mut start = 0;
        for &cut in cuts.iter().chain([&log.len()]) {
            lines.extend(decoder.feed(&log[start..cut]));
            start = cut;
        }
        (lines, decoder.finish())
    }

    #[test]
    fn the_whole_log_decodes_with_locations() {
        let (elf, log) = fixture();
        let (lines, summary) = decode_in_pieces(&elf, &log, &[]);
        assert_eq!(
            summary,
            Summary {
                frames: 5,
                malformed: 0,
                truncated: false
            }
        );
        assert_eq!(lines.len(), 10, "{lines:#?}");
        assert!(
            lines[0].ends_with("INFO watchdog-probe: reset reason power-on, boot 1, 0 resets since power-on, upload epoch 0xf1aae3b6dd030b34"),
            "{lines:#?}"
        );
        assert!(
            lines[1].starts_with("└─ watchdog_probe::") && lines[1].contains("watchdog_probe.rs:"),
            "{lines:#?}"
        );
        assert!(
            lines[9].ends_with("INFO watchdog-probe: a new upload epoch after the reset: pass")
                || lines[8].ends_with("a new upload epoch after the reset: pass"),
            "{lines:#?}"
        );
    }

    #[test]
    fn every_split_gives_the_same_lines_as_the_whole_log() {
        let (elf, log) = fixture();
        let whole = decode_in_pieces(&elf, &log, &[]);
        // Every single cut, every pair of cuts, and byte by byte.
        for a in 0..=log.len() {
            assert_eq!(decode_in_pieces(&elf, &log, &[a]), whole, "cut at {a}");
            for b in a..=log.len() {
                assert_eq!(
                    decode_in_pieces(&elf, &log, &[a, b]),
                    whole,
                    "cuts {a}, {b}"
                );
            }
        }
        let bytes: Vec<usize> = (1..log.len()).collect();
        assert_eq!(decode_in_pieces(&elf, &log, &bytes), whole);
    }

    #[test]
    fn a_frame_comes_out_as_soon_as_its_last_byte_arrives() {
        let (elf, log) = fixture();
        let mut decoder = elf.decoder();
        // The stream starts with a frame delimiter (a zero byte); the first frame ends at the
        // next one.
        let first_end = 1 + log[1..].iter().position(|&b| b == 0).unwrap();
        assert!(decoder.feed(&log[..first_end]).is_empty());
        assert_eq!(decoder.feed(&log[first_end..=first_end]).len(), 2);
    }

    #[test]
    fn a_cut_off_stream_keeps_its_frames_and_says_so() {
        let (elf, log) = fixture();
        // Cut inside the last frame.
        let cut = &log[..log.len() - 3];
        let whole = decode_in_pieces(&elf, cut, &[]);
        assert_eq!(whole.1.frames, 4);
        assert!(whole.1.truncated);
        assert_eq!(
            whole.1.note().unwrap(),
            "[defmt-log] 4 frames decoded, 0 malformed frames skipped, the last frame cut off"
        );
        for a in 0..=cut.len() {
            assert_eq!(decode_in_pieces(&elf, cut, &[a]), whole, "cut at {a}");
        }
    }

    #[test]
    fn without_locations_a_frame_is_one_line() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let elf = Elf::load(&root.join(FIXTURE_ELF), false).unwrap();
        let log = std::fs::read(root.join(FIXTURE_LOG)).unwrap();
        let (lines, summary) = decode_in_pieces(&elf, &log, &[]);
        assert_eq!(lines.len(), summary.frames);
        assert!(summary.note().is_none());
    }
}
