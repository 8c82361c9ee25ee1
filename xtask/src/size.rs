//! `cargo xtask size`: flash and RAM of every MCU board's firmware, checked against budgets.
//!
//! How the pieces fit:
//! * Every board crate under `boards/` whose `.cargo/config.toml` names a bare-metal target
//!   (`*-none-*`) is built in release mode with the pinned cross toolchain
//!   ([`crate::cross::CrossEnv`]) into the one shared cross target folder
//!   ([`crate::cross::cross_target_dir`]), so `core` is built once per target and profile.
//!   Builds get placeholder build settings ([`crate::cross::placeholder_env`]; device
//!   identities come from a record at boot, not from the build).
//! * cargo's JSON messages name each linked executable; [`elf_footprint`] reads its section
//!   headers (no binutils needed) and sums them the way Berkeley `size` does: `text` =
//!   allocated, read-only sections (code, rodata, vector table, `.boot2`); `data` = allocated,
//!   writable sections with contents; `bss` = allocated sections without contents
//!   (`.bss`, `.uninit`). Flash = text + data (data's initial values are stored in flash);
//!   RAM = data + bss (statics; the stack is not counted, it takes what is left).
//! * Each board's `size-budget.toml` (`flash = N`, `ram = N`, bytes) limits every binary of
//!   the board; `<binary>.flash = N` / `<binary>.ram = N` give one binary a limit of its own
//!   (the SDK's `sdk_footprint`); a missing budget or any binary over it fails the command after the table is
//!   printed. The QEMU board's `sdk_footprint` binary is the SDK alone (client core and plug
//!   application, no network stack): its row is the SDK's footprint.
//! * After the table, each binary's bytes per crate and its largest symbols
//!   ([`crate::symbols`], from the ELF symbol table: what `cargo bloat` would show), so a
//!   budget overrun or a jump in the table names its cause. `--top N` sets how many rows.

use crate::cross::{CrossEnv, board_dirs, cross_target_dir, placeholder_env};
use crate::shell::timed;
use object::LittleEndian;
use object::read::elf::{FileHeader, SectionHeader};

use crate::symbols::{Breakdown, elf_symbols};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

const USAGE: &str = "\
usage: cargo xtask size [--top N]
       cargo xtask size --elf FILE [--top N]   (one linked image, no build, no budget)

Builds every MCU board crate (release), prints flash (text + data) and RAM (data + bss) of each
binary, then each binary's bytes per crate and its largest symbols (N rows each, default 12),
and fails when one exceeds its board's size-budget.toml.
";

/// Rows per breakdown list unless `--top` says otherwise.
const DEFAULT_TOP: usize = 12;

/// Budget file in each board's folder.
const BUDGET_FILE: &str = "size-budget.toml";
/// The binary whose row is the SDK alone.
const SDK_BIN: &str = "sdk_footprint";

/// Runs `cargo xtask size`.
pub fn run(args: &[String]) -> Result<(), String> {
    if let [flag, file, rest @ ..] = args
        && flag == "--elf"
    {
        return report_one(Path::new(file), rest);
    }
    let top = match args {
        [] => DEFAULT_TOP,
        [help] if matches!(help.as_str(), "help" | "--help" | "-h") => {
            print!("{USAGE}");
            return Ok(());
        }
        [flag, n] if flag == "--top" => n
            .parse()
            .map_err(|_| format!("--top takes a number, not `{n}`\n{USAGE}"))?,
        _ => return Err(format!("unexpected arguments\n{USAGE}")),
    };
    let env = timed("size: toolchain", CrossEnv::setup)?;
    let target_dir = cross_target_dir();
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    for board in board_dirs()? {
        let name = board_name(&board);
        let Some(target) = board_target(&board)? else {
            eprintln!("size: {name}: not a bare-metal board, skipped");
            continue;
        };
        let budget = match read_budget(&board) {
            Ok(budget) => Some(budget),
            Err(e) => {
                failures.push(format!("{name}: {e}"));
                None
            }
        };
        let started = Instant::now();
        let executables = build_board(&env, &board, &target_dir)?;
        let build_secs = started.elapsed().as_secs_f32();
        for elf in executables {
            let bytes =
                std::fs::read(&elf).map_err(|e| format!("cannot read {}: {e}", elf.display()))?;
            let footprint = elf_footprint(&bytes).map_err(|e| format!("{}: {e}", elf.display()))?;
            let bin = elf
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let budget = budget.as_ref().map(|b| b.for_bin(&bin));
            let verdict = match &budget {
                Some(budget) => budget.check(&footprint),
                None => Verdict::NoBudget,
            };
            if let Verdict::Over(what) = &verdict {
                failures.push(format!("{name}/{bin}: {what}"));
            }
            let breakdown = elf_symbols(&bytes).map(|symbols| Breakdown::of(&symbols));
            rows.push(Row {
                board: name.clone(),
                bin,
                target: target.clone(),
                footprint,
                budget,
                verdict,
                build_secs,
                breakdown,
            });
        }
    }
    print_table(&rows);
    for row in &rows {
        print_breakdown(row, top);
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "size budget check failed:\n  {}",
            failures.join("\n  ")
        ))
    }
}

/// `--elf FILE [--top N]`: the table row and breakdown of one image already linked.
fn report_one(elf: &Path, rest: &[String]) -> Result<(), String> {
    let top = match rest {
        [] => DEFAULT_TOP,
        [flag, n] if flag == "--top" => n
            .parse()
            .map_err(|_| format!("--top takes a number, not `{n}`\n{USAGE}"))?,
        _ => return Err(format!("unexpected arguments\n{USAGE}")),
    };
    let bytes = std::fs::read(elf).map_err(|e| format!("cannot read {}: {e}", elf.display()))?;
    let row = Row {
        board: "-".into(),
        bin: board_name(elf),
        target: "-".into(),
        footprint: elf_footprint(&bytes).map_err(|e| format!("{}: {e}", elf.display()))?,
        budget: None,
        verdict: Verdict::NoBudget,
        build_secs: 0.0,
        breakdown: elf_symbols(&bytes).map(|symbols| Breakdown::of(&symbols)),
    };
    print_table(std::slice::from_ref(&row));
    print_breakdown(&row, top);
    Ok(())
}

/// One binary's line in the report.
struct Row {
    board: String,
    bin: String,
    target: String,
    footprint: Footprint,
    budget: Option<Budget>,
    verdict: Verdict,
    /// Wall time of the board's build (cold on a fresh target folder, else incremental).
    build_secs: f32,
    /// Bytes per crate and largest symbols, or why the symbols could not be read.
    breakdown: Result<Breakdown, String>,
}

/// Prints one binary's bytes per crate and its `top` largest symbols.
fn print_breakdown(row: &Row, top: usize) {
    println!("\n{}/{} by crate:", row.board, row.bin);
    let breakdown = match &row.breakdown {
        Ok(b) => b,
        Err(e) => {
            println!("  (no breakdown: {e})");
            return;
        }
    };
    println!("  {:>9} {:>9}  crate", "flash", "ram");
    for (name, flash, ram) in breakdown.crates.iter().take(top) {
        println!("  {flash:>9} {ram:>9}  {name}");
    }
    let rest = breakdown.crates.iter().skip(top);
    let (flash, ram, count) = rest.fold((0, 0, 0), |(f, r, n), c| (f + c.1, r + c.2, n + 1));
    if count > 0 {
        println!("  {flash:>9} {ram:>9}  ({count} more crates)");
    }
    let (covered_flash, covered_ram) = breakdown.covered();
    let f = &row.footprint;
    println!(
        "  {:>9} {:>9}  (not in any symbol: padding, literal pools, section gaps)",
        f.flash().saturating_sub(covered_flash),
        f.ram().saturating_sub(covered_ram)
    );
    println!("{}/{} largest symbols:", row.board, row.bin);
    for s in breakdown.symbols.iter().take(top) {
        let place = match s.place {
            crate::symbols::Place::Flash => "flash",
            crate::symbols::Place::Data => "data",
            crate::symbols::Place::Bss => "ram",
        };
        println!("  {:>9} {place:<5}  {}", s.size, s.name);
    }
}

fn print_table(rows: &[Row]) {
    println!(
        "{:<16} {:<14} {:<22} {:>9} {:>8} {:>8} {:>10} {:>9} {:>7}  status",
        "board", "binary", "target", "text", "data", "bss", "flash", "ram", "build"
    );
    for row in rows {
        let f = &row.footprint;
        let status = match (&row.verdict, &row.budget) {
            (Verdict::Within, Some(b)) => format!(
                "ok (flash {:.0} %, ram {:.0} % of budget)",
                percent(f.flash(), b.flash),
                percent(f.ram(), b.ram)
            ),
            (Verdict::Over(what), _) => format!("OVER: {what}"),
            _ => "no budget".to_owned(),
        };
        println!(
            "{:<16} {:<14} {:<22} {:>9} {:>8} {:>8} {:>10} {:>9} {:>6.0}s  {status}",
            row.board,
            row.bin,
            row.target,
            f.text,
            f.data,
            f.bss,
            f.flash(),
            f.ram(),
            row.build_secs
        );
    }
    if let Some(sdk) = rows.iter().find(|r| r.bin == SDK_BIN) {
        println!(
            "SDK alone (client core + plug app, no network stack; {} {}): flash {} B ({:.1} KiB), static RAM {} B ({:.1} KiB)",
            sdk.board,
            sdk.target,
            sdk.footprint.flash(),
            sdk.footprint.flash() as f64 / 1024.0,
            sdk.footprint.ram(),
            sdk.footprint.ram() as f64 / 1024.0
        );
    }
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        return f64::INFINITY;
    }
    part as f64 * 100.0 / whole as f64
}

fn board_name(board: &Path) -> String {
    board
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| board.display().to_string())
}

/// The board's build target from its `.cargo/config.toml`, when it is bare metal.
pub fn board_target(board: &Path) -> Result<Option<String>, String> {
    let config = board.join(".cargo/config.toml");
    if !config.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&config)
        .map_err(|e| format!("cannot read {}: {e}", config.display()))?;
    Ok(config_target(&text).filter(|t| t.contains("-none")))
}

/// `target = "..."` of the `[build]` table.
fn config_target(config: &str) -> Option<String> {
    let mut in_build = false;
    for line in config.lines().map(str::trim) {
        if line.starts_with('[') {
            in_build = line == "[build]";
            continue;
        }
        if !in_build {
            continue;
        }
        if let Some((key, value)) = line.split_once('=')
            && key.trim() == "target"
        {
            return Some(value.trim().trim_matches('"').to_owned());
        }
    }
    None
}

/// Builds the board (release) and returns the executables cargo linked.
fn build_board(env: &CrossEnv, board: &Path, target_dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut command = env.cargo(board, target_dir);
    command
        .args([
            "build",
            "--release",
            "--locked",
            "--message-format=json-render-diagnostics",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    placeholder_env(&mut command);
    eprintln!("$ (in {}) cargo build --release --locked", board.display());
    let output = run_capturing(&mut command)?;
    let executables: Vec<PathBuf> = output
        .lines()
        .filter(|line| line.contains("\"reason\":\"compiler-artifact\""))
        .filter_map(json_executable)
        .map(PathBuf::from)
        .collect();
    if executables.is_empty() {
        return Err(format!("{}: the build linked no binary", board.display()));
    }
    Ok(executables)
}

fn run_capturing(command: &mut Command) -> Result<String, String> {
    let output = command
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !output.status.success() {
        return Err(format!("cargo build failed ({})", output.status));
    }
    String::from_utf8(output.stdout).map_err(|_| "cargo printed non-UTF-8 JSON".to_owned())
}

/// The `"executable"` string of one cargo JSON message (`null` or absent: `None`).
fn json_executable(line: &str) -> Option<String> {
    const KEY: &str = "\"executable\":\"";
    let start = line.find(KEY)? + KEY.len();
    let mut value = String::new();
    let mut chars = line[start..].chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(value),
            '\\' => match chars.next()? {
                'n' => value.push('\n'),
                't' => value.push('\t'),
                other => value.push(other),
            },
            c => value.push(c),
        }
    }
    None
}

/// Flash and RAM limits of one board, bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Budget {
    flash: u64,
    ram: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    Within,
    Over(String),
    NoBudget,
}

impl Budget {
    fn check(&self, f: &Footprint) -> Verdict {
        let mut over = Vec::new();
        if f.flash() > self.flash {
            over.push(format!("flash {} > budget {}", f.flash(), self.flash));
        }
        if f.ram() > self.ram {
            over.push(format!("ram {} > budget {}", f.ram(), self.ram));
        }
        if over.is_empty() {
            Verdict::Within
        } else {
            Verdict::Over(over.join(", "))
        }
    }
}

/// A board's limits: for every binary, and for some binaries of their own.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Budgets {
    board: Budget,
    /// `<binary>.flash` / `<binary>.ram` overrides (either may be absent).
    per_bin: Vec<(String, Option<u64>, Option<u64>)>,
}

impl Budgets {
    /// The limits of binary `bin`: its own where given, else the board's.
    fn for_bin(&self, bin: &str) -> Budget {
        match self.per_bin.iter().find(|(name, _, _)| name == bin) {
            Some((_, flash, ram)) => Budget {
                flash: flash.unwrap_or(self.board.flash),
                ram: ram.unwrap_or(self.board.ram),
            },
            None => self.board,
        }
    }
}

fn read_budget(board: &Path) -> Result<Budgets, String> {
    let path = board.join(BUDGET_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "cannot read {} ({e}): every MCU board needs one",
            path.display()
        )
    })?;
    parse_budget(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Parses `flash = N` and `ram = N`, and `<binary>.flash = N` / `<binary>.ram = N` (bytes;
/// `_` separators and `#` comments allowed).
fn parse_budget(text: &str) -> Result<Budgets, String> {
    let (mut flash, mut ram) = (None, None);
    let mut per_bin: Vec<(String, Option<u64>, Option<u64>)> = Vec::new();
    for (number, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| format!("line {}: expected `key = bytes`", number + 1))?;
        let value: u64 = value.trim().replace('_', "").parse().map_err(|_| {
            format!(
                "line {}: `{}` is not a byte count",
                number + 1,
                value.trim()
            )
        })?;
        let key = key.trim();
        match key.rsplit_once('.') {
            None if key == "flash" => flash = Some(value),
            None if key == "ram" => ram = Some(value),
            Some((bin, what @ ("flash" | "ram"))) if !bin.is_empty() => {
                let index = match per_bin.iter().position(|(name, _, _)| name == bin) {
                    Some(i) => i,
                    None => {
                        per_bin.push((bin.to_owned(), None, None));
                        per_bin.len() - 1
                    }
                };
                let entry = &mut per_bin[index];
                if what == "flash" {
                    entry.1 = Some(value);
                } else {
                    entry.2 = Some(value);
                }
            }
            _ => return Err(format!("line {}: unknown key `{key}`", number + 1)),
        }
    }
    Ok(Budgets {
        board: Budget {
            flash: flash.ok_or("missing `flash = <bytes>`")?,
            ram: ram.ok_or("missing `ram = <bytes>`")?,
        },
        per_bin,
    })
}

/// Berkeley-style sizes of one ELF file, bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Footprint {
    /// Allocated read-only sections: code, read-only data, vector table.
    pub text: u64,
    /// Allocated writable sections with contents (initialised statics).
    pub data: u64,
    /// Allocated sections without contents (zeroed or uninitialised statics).
    pub bss: u64,
}

impl Footprint {
    /// Bytes stored in flash: text + data's initial values.
    pub fn flash(&self) -> u64 {
        self.text + self.data
    }
    /// Bytes of RAM taken by statics.
    pub fn ram(&self) -> u64 {
        self.data + self.bss
    }
}

const SHF_WRITE: u64 = object::elf::SHF_WRITE as u64;
const SHF_ALLOC: u64 = object::elf::SHF_ALLOC as u64;
const SHT_NOBITS: u32 = object::elf::SHT_NOBITS;

/// Reads the section headers of a little-endian ELF32 or ELF64 file and sums them.
pub fn elf_footprint(elf: &[u8]) -> Result<Footprint, String> {
    use object::elf::{FileHeader32, FileHeader64};
    match crate::elf::class(elf)? {
        crate::elf::Class::Elf32 => footprint_of::<FileHeader32<LittleEndian>>(elf),
        crate::elf::Class::Elf64 => footprint_of::<FileHeader64<LittleEndian>>(elf),
    }
}

fn footprint_of<H: FileHeader<Endian = LittleEndian>>(elf: &[u8]) -> Result<Footprint, String> {
    let e = LittleEndian;
    let header = H::parse(elf).map_err(|e| e.to_string())?;
    let sections = header.sections(e, elf).map_err(|e| e.to_string())?;
    let mut footprint = Footprint::default();
    for section in sections.iter() {
        let flags: u64 = section.sh_flags(e).into();
        let size: u64 = section.sh_size(e).into();
        if flags & SHF_ALLOC == 0 || size == 0 {
            continue;
        }
        if section.sh_type(e) == SHT_NOBITS {
            footprint.bss += size;
        } else if flags & SHF_WRITE != 0 {
            footprint.data += size;
        } else {
            footprint.text += size;
        }
    }
    Ok(footprint)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF32 file: a header and the given sections (type, flags, size).
    fn elf32(sections: &[(u32, u32, u32)]) -> Vec<u8> {
        let shoff = 52u32;
        let mut elf = vec![0u8; 52];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 1; // 32-bit
        elf[5] = 1; // little-endian
        elf[6] = 1; // EV_CURRENT
        elf[0x20..0x24].copy_from_slice(&shoff.to_le_bytes());
        elf[0x2E..0x30].copy_from_slice(&40u16.to_le_bytes());
        // The given sections, then an empty string table for the section names.
        let count = sections.len() + 1;
        elf[0x30..0x32].copy_from_slice(&(count as u16).to_le_bytes());
        elf[0x32..0x34].copy_from_slice(&(sections.len() as u16).to_le_bytes());
        for (kind, flags, size) in sections.iter().chain([&(3, 0, 0)]) {
            let mut header = [0u8; 40];
            header[4..8].copy_from_slice(&kind.to_le_bytes());
            header[8..12].copy_from_slice(&flags.to_le_bytes());
            header[20..24].copy_from_slice(&size.to_le_bytes());
            elf.extend_from_slice(&header);
        }
        elf
    }

    #[test]
    fn sums_sections_like_berkeley_size() {
        const PROGBITS: u32 = 1;
        let alloc = SHF_ALLOC as u32;
        let write = SHF_WRITE as u32;
        let exec = 0x4;
        let elf = elf32(&[
            (0, 0, 0),                          // null section
            (PROGBITS, alloc, 0x400),           // .vector_table
            (PROGBITS, alloc | exec, 10_000),   // .text
            (PROGBITS, alloc, 2_000),           // .rodata
            (PROGBITS, alloc | write, 300),     // .data
            (SHT_NOBITS, alloc | write, 5_000), // .bss
            (SHT_NOBITS, alloc | write, 24),    // .uninit
            (PROGBITS, 0, 9_999),               // .defmt / debug info: not loaded
        ]);
        let f = elf_footprint(&elf).unwrap();
        assert_eq!(
            f,
            Footprint {
                text: 13_024,
                data: 300,
                bss: 5_024
            }
        );
        assert_eq!(f.flash(), 13_324);
        assert_eq!(f.ram(), 5_324);
    }

    #[test]
    fn refuses_what_is_not_a_little_endian_elf() {
        assert!(elf_footprint(b"not an elf at all").is_err());
        let mut big_endian = elf32(&[]);
        big_endian[5] = 2;
        assert!(elf_footprint(&big_endian).is_err());
        let mut truncated = elf32(&[(1, SHF_ALLOC as u32, 4)]);
        truncated.truncate(60);
        assert!(elf_footprint(&truncated).is_err());
    }

    #[test]
    fn parses_budgets_and_checks_them() {
        let budgets =
            parse_budget("# limits\nflash = 393_216   # 384 KiB\nram = 131072\n").unwrap();
        let budget = budgets.for_bin("plug");
        assert_eq!(
            budget,
            Budget {
                flash: 393_216,
                ram: 131_072
            }
        );
        let fits = Footprint {
            text: 393_000,
            data: 216,
            bss: 130_000,
        };
        assert_eq!(budget.check(&fits), Verdict::Within);
        let over = Footprint {
            text: 393_000,
            data: 217,
            bss: 131_000,
        };
        assert_eq!(
            budget.check(&over),
            Verdict::Over("flash 393217 > budget 393216, ram 131217 > budget 131072".into())
        );
        assert!(parse_budget("flash = 1").is_err());
        assert!(parse_budget("flash = 1\nram = lots").is_err());
        assert!(parse_budget("flash = 1\nram = 2\nrom = 3").is_err());
        assert!(parse_budget("flash = 1\nram = 2\nsdk.rom = 3").is_err());
        assert!(parse_budget("flash = 1\nram = 2\n.ram = 3").is_err());
    }

    #[test]
    fn a_binary_may_have_limits_of_its_own() {
        let budgets =
            parse_budget("flash = 100_000\nram = 50_000\nsdk.flash = 24_576\nsdk.ram = 8_192\nprobe.ram = 9_000\n")
                .unwrap();
        assert_eq!(
            budgets.for_bin("sdk"),
            Budget {
                flash: 24_576,
                ram: 8_192
            }
        );
        assert_eq!(
            budgets.for_bin("probe"),
            Budget {
                flash: 100_000,
                ram: 9_000
            }
        );
        assert_eq!(
            budgets.for_bin("plug"),
            Budget {
                flash: 100_000,
                ram: 50_000
            }
        );
        let over = Footprint {
            text: 24_577,
            data: 0,
            bss: 100,
        };
        assert_eq!(
            budgets.for_bin("sdk").check(&over),
            Verdict::Over("flash 24577 > budget 24576".into())
        );
        assert_eq!(budgets.for_bin("plug").check(&over), Verdict::Within);
    }

    #[test]
    fn reads_the_build_target_of_a_board_config() {
        let config = "[build]\ntarget = \"thumbv6m-none-eabi\"\n\n[target.thumbv6m-none-eabi]\nrunner = \"x\"\n";
        assert_eq!(config_target(config).as_deref(), Some("thumbv6m-none-eabi"));
        assert_eq!(config_target("[env]\ntarget = \"x\"\n"), None);
    }

    #[test]
    fn extracts_executables_from_cargo_json() {
        let line = r#"{"reason":"compiler-artifact","target":{"name":"plug"},"executable":"/t/thumbv7em-none-eabihf/release/plug","fresh":true}"#;
        assert_eq!(
            json_executable(line).as_deref(),
            Some("/t/thumbv7em-none-eabihf/release/plug")
        );
        let library = r#"{"reason":"compiler-artifact","executable":null}"#;
        assert_eq!(json_executable(library), None);
        let escaped = r#"{"executable":"/a \"b\"/c"}"#;
        assert_eq!(json_executable(escaped).as_deref(), Some("/a \"b\"/c"));
    }
}
