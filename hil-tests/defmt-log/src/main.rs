//! `defmt-log ELF < RAW > TEXT`: decodes a board's raw defmt output (what the QEMU board
//! writes through semihosting) into one text line per log frame, with the defmt table of the
//! board's ELF. `hil-tests` runs it for each board log it keeps (docs/hil.md).
//!
//! Frames that do not decode are skipped and counted (rzCOBS framing lets the decoder find the
//! next frame); the count, and any undecoded bytes left at the end, are reported on a last
//! `[defmt-log]` line. Exit status: 0 decoded, 1 the ELF cannot be read or has no defmt table,
//! 2 bad arguments.

use std::io::{Read, Write};
use std::process::ExitCode;

use defmt_decoder::{DecodeError, Table};

/// What decoding one stream gave.
#[derive(Debug, Default, PartialEq, Eq)]
struct Decoded {
    /// One line per frame.
    lines: Vec<String>,
    /// Frames skipped because they did not decode.
    malformed: usize,
    /// The stream ended inside a frame (the board was stopped while logging).
    truncated: bool,
}

/// Decodes `raw` with `table`.
fn decode(table: &Table, raw: &[u8]) -> Decoded {
    let mut out = Decoded::default();
    let mut stream = table.new_stream_decoder();
    stream.received(raw);
    let recover = table.encoding().can_recover();
    loop {
        match stream.decode() {
            Ok(frame) => out.lines.push(frame.display(false).to_string()),
            Err(DecodeError::UnexpectedEof) => {
                // rzCOBS frames end with a zero byte: anything after the last one is cut off.
                out.truncated = recover && raw.last().is_some_and(|b| *b != 0);
                return out;
            }
            Err(DecodeError::Malformed) => {
                out.malformed += 1;
                if !recover {
                    return out;
                }
            }
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [elf] = args.as_slice() else {
        eprintln!("usage: defmt-log ELF < RAW > TEXT");
        return ExitCode::from(2);
    };
    let bytes = match std::fs::read(elf) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("defmt-log: {elf}: {e}");
            return ExitCode::from(1);
        }
    };
    let table = match Table::parse(&bytes) {
        Ok(Some(t)) => t,
        Ok(None) => {
            eprintln!("defmt-log: {elf} has no defmt table");
            return ExitCode::from(1);
        }
        Err(e) => {
            eprintln!("defmt-log: {elf}: {e}");
            return ExitCode::from(1);
        }
    };
    let mut raw = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut raw) {
        eprintln!("defmt-log: reading stdin: {e}");
        return ExitCode::from(1);
    }
    let decoded = decode(&table, &raw);
    let mut stdout = std::io::stdout().lock();
    for line in &decoded.lines {
        let _ = writeln!(stdout, "{line}");
    }
    if decoded.malformed > 0 || decoded.truncated {
        let _ = writeln!(
            stdout,
            "[defmt-log] {} frames decoded, {} malformed frames skipped{}",
            decoded.lines.len(),
            decoded.malformed,
            if decoded.truncated {
                ", the last frame cut off"
            } else {
                ""
            }
        );
    }
    ExitCode::SUCCESS
}
