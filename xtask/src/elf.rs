//! The one check both ELF readers of `cargo xtask size` start with: is this a little-endian
//! ELF file, and which class (32- or 64-bit). The tables themselves are read with the `object`
//! crate by [`crate::size::elf_footprint`] (sections) and [`crate::symbols::elf_symbols`]
//! (symbols).

/// The word size of an ELF file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// ELFCLASS32 (the boards).
    Elf32,
    /// ELFCLASS64.
    Elf64,
}

/// The class of a little-endian ELF file, or why `bytes` is not one.
pub fn class(bytes: &[u8]) -> Result<Class, String> {
    if bytes.len() < 16 || &bytes[..4] != b"\x7fELF" {
        return Err("not an ELF file".into());
    }
    if bytes[5] != object::elf::ELFDATA2LSB {
        return Err("not a little-endian ELF file".into());
    }
    match bytes[4] {
        object::elf::ELFCLASS32 => Ok(Class::Elf32),
        object::elf::ELFCLASS64 => Ok(Class::Elf64),
        other => Err(format!("unknown ELF class {other}")),
    }
}
