//! `defmt-log [--locations] ELF < RAW > TEXT`: decodes a board's raw defmt output (what the QEMU
//! board writes through semihosting) into one text line per log frame, with the defmt table of
//! the board's ELF, as the output arrives: each frame is printed once its last byte has been
//! read, so it can sit at the end of a pipe from a running board. `--locations` adds a
//! `└─ module @ file:line` line after each frame, from the ELF's debug information.
//!
//! `hil-tests` runs it for each board log it keeps (docs/hil.md); the QEMU board's cargo runner
//! (`boards/qemu-mps2-an386/run-qemu.sh`) pipes QEMU's output through it with `--locations`.
//! The decoding itself is the library's ([`defmt_log::Decoder`]).
//!
//! Frames that do not decode are skipped and counted (rzCOBS framing lets the decoder find the
//! next frame); the count, and any undecoded bytes left at the end, are reported on a last
//! `[defmt-log]` line. Exit status: 0 decoded, 1 the ELF cannot be read or has no defmt table,
//! or stdin cannot be read, 2 bad arguments.

use std::io::{ErrorKind, Read, Write};
use std::path::Path;
use std::process::ExitCode;

use defmt_log::Elf;

const USAGE: &str = "usage: defmt-log [--locations] ELF < RAW > TEXT";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (locations, elf) = match args.as_slice() {
        [flag, elf] if flag == "--locations" => (true, elf),
        [elf] if !elf.starts_with("--") => (false, elf),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let elf = match Elf::load(Path::new(elf), locations) {
        Ok(elf) => elf,
        Err(e) => {
            eprintln!("defmt-log: {e}");
            return ExitCode::from(1);
        }
    };
    let mut decoder = elf.decoder();
    let mut stdin = std::io::stdin().lock();
    let mut stdout = std::io::stdout().lock();
    let mut buf = [0u8; 4096];
    loop {
        let n = match stdin.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => {
                eprintln!("defmt-log: reading stdin: {e}");
                return ExitCode::from(1);
            }
        };
        for line in decoder.feed(&buf[..n]) {
            let _ = writeln!(stdout, "{line}");
        }
        // Lines out as soon as their frame is complete, not when a buffer fills.
        let _ = stdout.flush();
    }
    if let Some(note) = decoder.finish().note() {
        let _ = writeln!(stdout, "{note}");
    }
    ExitCode::SUCCESS
}
