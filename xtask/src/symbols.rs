//! Where a firmware image's bytes go: its ELF symbols, attributed to crates (what `cargo bloat`
//! shows), for `cargo xtask size`.
//!
//! How the pieces fit:
//! * [`elf_symbols`] reads the ELF symbol table (`.symtab`; release builds keep it, the
//!   boards' release profile has `debug = 2`) and keeps every sized symbol that lives in an
//!   allocated section, with the section's kind ([`Place`]): flash (code, read-only data),
//!   initialised data (flash and RAM) or zeroed RAM.
//! * [`crate_of`] names the crate a (demangled) symbol belongs to: the first path segment of
//!   the item, or of the `Self` type of a trait method (`<sha2::Sha256 as digest::Update>::update`
//!   is `sha2`; a Self type without a path, like `[u8]`, falls back to the trait's crate);
//!   symbols that are not Rust are `[C/asm]`.
//! * [`Breakdown`] sums both per crate, so a regression in the size table names its cause.
//!   Bytes no symbol covers (padding, literal pools, the vector table's gaps) are reported as
//!   the difference to the section totals, not guessed.

use std::collections::BTreeMap;

use object::LittleEndian;
use object::read::elf::{FileHeader, SectionHeader, Sym};

/// Where a symbol's bytes live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Place {
    /// Read-only: code and constants, flash only.
    Flash,
    /// Initialised statics: their initial values in flash, the statics in RAM.
    Data,
    /// Zeroed or uninitialised statics: RAM only.
    Bss,
}

impl Place {
    /// Bytes of flash a symbol of `size` bytes here takes.
    pub fn flash(self, size: u64) -> u64 {
        match self {
            Place::Flash | Place::Data => size,
            Place::Bss => 0,
        }
    }

    /// Bytes of RAM a symbol of `size` bytes here takes.
    pub fn ram(self, size: u64) -> u64 {
        match self {
            Place::Flash => 0,
            Place::Data | Place::Bss => size,
        }
    }
}

/// One sized symbol of an allocated section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Symbol {
    /// Demangled name without the hash (`core::fmt::write`).
    pub name: String,
    /// Size in bytes (`st_size`).
    pub size: u64,
    /// The kind of section it lives in.
    pub place: Place,
}

const SHF_WRITE: u64 = object::elf::SHF_WRITE as u64;
const SHF_ALLOC: u64 = object::elf::SHF_ALLOC as u64;
#[cfg(test)]
const SHT_SYMTAB: u32 = object::elf::SHT_SYMTAB;
const SHT_NOBITS: u32 = object::elf::SHT_NOBITS;
/// Symbol types kept: objects and functions (sections, files and untyped labels are not).
const STT_OBJECT: u8 = object::elf::STT_OBJECT;
const STT_FUNC: u8 = object::elf::STT_FUNC;

/// Reads the sized function and object symbols of allocated sections of a little-endian
/// ELF32 or ELF64 file. Aliases (two names at one address and size) are kept once.
pub fn elf_symbols(elf: &[u8]) -> Result<Vec<Symbol>, String> {
    match crate::elf::class(elf)? {
        crate::elf::Class::Elf32 => symbols_of::<object::elf::FileHeader32<LittleEndian>>(elf),
        crate::elf::Class::Elf64 => symbols_of::<object::elf::FileHeader64<LittleEndian>>(elf),
    }
}

fn symbols_of<H: FileHeader<Endian = LittleEndian>>(elf: &[u8]) -> Result<Vec<Symbol>, String> {
    let e = LittleEndian;
    let header = H::parse(elf).map_err(|e| e.to_string())?;
    let sections = header.sections(e, elf).map_err(|e| e.to_string())?;
    let table = sections
        .symbols(e, elf, object::elf::SHT_SYMTAB)
        .map_err(|e| e.to_string())?;
    if table.is_empty() {
        return Err("no symbol table (stripped binary?)".into());
    }
    let mut seen = std::collections::HashSet::new();
    let mut symbols = Vec::new();
    for sym in table.iter() {
        let size: u64 = sym.st_size(e).into();
        let value: u64 = sym.st_value(e).into();
        let kind = sym.st_type();
        if size == 0 || !(kind == STT_FUNC || kind == STT_OBJECT) {
            continue;
        }
        // Undefined, absolute, common and other reserved indexes name no section.
        let Ok(Some(index)) = table.symbol_section(e, sym, object::SymbolIndex(0)) else {
            continue;
        };
        let Ok(section) = sections.section(index) else {
            continue;
        };
        let flags: u64 = section.sh_flags(e).into();
        if flags & SHF_ALLOC == 0 {
            continue;
        }
        // Thumb functions have bit 0 set; an alias shares address and size.
        if !seen.insert((value & !1, size)) {
            continue;
        }
        let place = if section.sh_type(e) == SHT_NOBITS {
            Place::Bss
        } else if flags & SHF_WRITE != 0 {
            Place::Data
        } else {
            Place::Flash
        };
        let raw = table.symbol_name(e, sym).map_err(|e| e.to_string())?;
        let raw = std::str::from_utf8(raw).map_err(|_| "a symbol name is not UTF-8".to_owned())?;
        symbols.push(Symbol {
            name: demangle(raw),
            size,
            place,
        });
    }
    Ok(symbols)
}

fn demangle(raw: &str) -> String {
    match rustc_demangle::try_demangle(raw) {
        Ok(name) => format!("{name:#}"),
        Err(_) => raw.to_owned(),
    }
}

/// Crate name given to symbols that are not Rust paths (C, assembly, linker-made).
pub const NOT_RUST: &str = "[C/asm]";

/// The crate a demangled symbol belongs to (see the module docs).
pub fn crate_of(name: &str) -> &str {
    let mut rest = name;
    // `<T as Trait>::f`, `<&mut T as ..>`, `<[T] as ..>`, `<dyn T as ..>`: the Self type.
    loop {
        let trimmed = rest.trim_start_matches(['<', '&', '*', '[', '(', ' ']);
        let trimmed = ["mut ", "const ", "dyn "]
            .iter()
            .fold(trimmed, |s, p| s.strip_prefix(p).unwrap_or(s));
        if trimmed == rest {
            break;
        }
        rest = trimmed;
    }
    let Some(end) = rest.find("::") else {
        return NOT_RUST;
    };
    let head = &rest[..end];
    if !head.is_empty() && head.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        head
    } else if let Some(at) = rest.find(" as ") {
        // A Self type without a path (`[u8]`, a generic `T`): the trait's crate.
        crate_of(&rest[at + 4..])
    } else {
        NOT_RUST
    }
}

/// Bytes per crate, and the largest symbols, of one image.
#[derive(Debug, Default)]
pub struct Breakdown {
    /// (flash, RAM) bytes per crate, largest flash first.
    pub crates: Vec<(String, u64, u64)>,
    /// The largest symbols by flash + RAM, largest first.
    pub symbols: Vec<Symbol>,
}

impl Breakdown {
    /// Sums `symbols` per crate and sorts both lists.
    pub fn of(symbols: &[Symbol]) -> Self {
        let mut per_crate: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
        for s in symbols {
            let entry = per_crate.entry(crate_of(&s.name)).or_default();
            entry.0 += s.place.flash(s.size);
            entry.1 += s.place.ram(s.size);
        }
        let mut crates: Vec<(String, u64, u64)> = per_crate
            .into_iter()
            .map(|(name, (flash, ram))| (name.to_owned(), flash, ram))
            .collect();
        crates.sort_by(|a, b| (b.1, b.2).cmp(&(a.1, a.2)).then(a.0.cmp(&b.0)));
        let mut largest = symbols.to_vec();
        largest.sort_by(|a, b| b.size.cmp(&a.size).then(a.name.cmp(&b.name)));
        Breakdown {
            crates,
            symbols: largest,
        }
    }

    /// Flash and RAM the symbols cover.
    pub fn covered(&self) -> (u64, u64) {
        self.crates
            .iter()
            .fold((0, 0), |(f, r), c| (f + c.1, r + c.2))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF32 file with sections (type, flags, size), a symbol table and its strings.
    /// `symbols`: (name, value, size, type, section index).
    fn elf32(sections: &[(u32, u32, u32)], symbols: &[(&str, u32, u32, u8, u16)]) -> Vec<u8> {
        let mut strtab = vec![0u8];
        let mut symtab = vec![0u8; 16]; // the null symbol
        for (name, value, size, kind, shndx) in symbols {
            let name_off = strtab.len() as u32;
            strtab.extend_from_slice(name.as_bytes());
            strtab.push(0);
            symtab.extend_from_slice(&name_off.to_le_bytes());
            symtab.extend_from_slice(&value.to_le_bytes());
            symtab.extend_from_slice(&size.to_le_bytes());
            symtab.push(0x10 | kind); // global binding
            symtab.push(0);
            symtab.extend_from_slice(&shndx.to_le_bytes());
        }
        let mut elf = vec![0u8; 52];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 1;
        elf[5] = 1;
        elf[6] = 1; // EV_CURRENT
        let symtab_off = elf.len() as u32;
        elf.extend_from_slice(&symtab);
        let strtab_off = elf.len() as u32;
        elf.extend_from_slice(&strtab);
        let shoff = elf.len() as u32;
        let count = sections.len() + 2;
        elf[0x20..0x24].copy_from_slice(&shoff.to_le_bytes());
        elf[0x2E..0x30].copy_from_slice(&40u16.to_le_bytes());
        elf[0x30..0x32].copy_from_slice(&(count as u16).to_le_bytes());
        let strtab_index = (sections.len() + 1) as u32;
        // Section names come from the same string table (the names do not matter here).
        elf[0x32..0x34].copy_from_slice(&(strtab_index as u16).to_le_bytes());
        let mut header = |kind: u32, flags: u32, offset: u32, size: u32, link: u32| {
            let mut h = [0u8; 40];
            h[4..8].copy_from_slice(&kind.to_le_bytes());
            h[8..12].copy_from_slice(&flags.to_le_bytes());
            h[16..20].copy_from_slice(&offset.to_le_bytes());
            h[20..24].copy_from_slice(&size.to_le_bytes());
            h[24..28].copy_from_slice(&link.to_le_bytes());
            elf.extend_from_slice(&h);
        };
        for (kind, flags, size) in sections {
            header(*kind, *flags, 0, *size, 0);
        }
        header(SHT_SYMTAB, 0, symtab_off, symtab.len() as u32, strtab_index);
        header(3, 0, strtab_off, strtab.len() as u32, 0);
        elf
    }

    #[test]
    fn reads_symbols_with_their_place_and_demangled_names() {
        const PROGBITS: u32 = 1;
        let alloc = SHF_ALLOC as u32;
        let write = SHF_WRITE as u32;
        let elf = elf32(
            &[
                (0, 0, 0),                          // 0: null
                (PROGBITS, alloc | 0x4, 10_000),    // 1: .text
                (PROGBITS, alloc | write, 100),     // 2: .data
                (SHT_NOBITS, alloc | write, 4_000), // 3: .bss
                (PROGBITS, 0, 500),                 // 4: .defmt (not loaded)
            ],
            &[
                (
                    "_ZN4core3fmt5write17h0123456789abcdefE",
                    0x101,
                    900,
                    STT_FUNC,
                    1,
                ),
                ("alias_of_write", 0x100, 900, STT_FUNC, 1),
                ("memcpy", 0x500, 120, STT_FUNC, 1),
                (
                    "_ZN8firmware6CLIENT17h0123456789abcdefE",
                    0x2000_0000,
                    3_000,
                    STT_OBJECT,
                    3,
                ),
                (
                    "_ZN8firmware4SEED17h0123456789abcdefE",
                    0x2000_1000,
                    8,
                    STT_OBJECT,
                    2,
                ),
                ("a_label", 0x600, 0, STT_FUNC, 1),
                ("a_section", 0x600, 50, 3, 1),
                ("_ZN5defmt3LOG17h0123456789abcdefE", 0, 4, STT_OBJECT, 4),
            ],
        );
        let symbols = elf_symbols(&elf).unwrap();
        let names: Vec<(&str, u64, Place)> = symbols
            .iter()
            .map(|s| (s.name.as_str(), s.size, s.place))
            .collect();
        assert_eq!(
            names,
            [
                ("core::fmt::write", 900, Place::Flash),
                ("memcpy", 120, Place::Flash),
                ("firmware::CLIENT", 3_000, Place::Bss),
                ("firmware::SEED", 8, Place::Data),
            ]
        );
        let breakdown = Breakdown::of(&symbols);
        assert_eq!(
            breakdown.crates,
            [
                ("core".to_owned(), 900, 0),
                (NOT_RUST.to_owned(), 120, 0),
                ("firmware".to_owned(), 8, 3_008),
            ]
        );
        assert_eq!(breakdown.covered(), (1_028, 3_008));
        assert_eq!(breakdown.symbols[0].name, "firmware::CLIENT");
    }

    #[test]
    fn refuses_a_stripped_or_foreign_file() {
        assert!(elf_symbols(b"not an elf at all").is_err());
        let mut stripped = elf32(&[(0, 0, 0)], &[]);
        // Turn the symbol table into a plain section: no symbols to read.
        let symtab_header = stripped.len() - 80;
        stripped[symtab_header + 4..symtab_header + 8].copy_from_slice(&1u32.to_le_bytes());
        assert!(elf_symbols(&stripped).is_err());
    }

    #[test]
    fn names_the_crate_of_paths_and_trait_impls() {
        assert_eq!(crate_of("sha2::sha256::compress256"), "sha2");
        assert_eq!(
            crate_of(
                "<sha2::core_api::Sha256VarCore as digest::core_api::UpdateCore>::update_blocks"
            ),
            "sha2"
        );
        assert_eq!(crate_of("<&mut T as core::fmt::Write>::write_str"), "core");
        assert_eq!(
            crate_of("<&firmware::client::RxError as defmt::Format>::format"),
            "firmware"
        );
        assert_eq!(crate_of("<[u8] as core::fmt::Debug>::fmt"), "core");
        assert_eq!(crate_of("core::fmt::write"), "core");
        assert_eq!(crate_of("__aeabi_memcpy"), NOT_RUST);
        assert_eq!(crate_of("firmware::plug::Plug<R,M>::on_event"), "firmware");
    }
}
