//! Recognising a file's format from its first bytes.

use crate::error::LoadError;

/// What a file is, from its magic bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Format {
    /// A little-endian ELF64 for x86-64: the one kind urun runs.
    ElfX86_64,
    /// Any other ELF (`class` is `EI_CLASS`: 1 = 32-bit, 2 = 64-bit;
    /// `machine` is `e_machine`, 0 when the file is too short to hold it).
    Elf {
        class: u8,
        machine: u16,
    },
    /// An MZ executable (MS-DOS, PE32 or PE32+).
    Pe,
    /// A `#!` script and its interpreter line.
    Script {
        interpreter: String,
        arg: Option<String>,
    },
    Unknown,
}

pub(crate) const EM_X86_64: u16 = 62;
const ELFDATA2LSB: u8 = 1;
/// Linux reads at most this much of a `#!` line (`BINPRM_BUF_SIZE`).
const SHEBANG_MAX: usize = 256;

/// Identify a file from its first bytes (the whole file is fine too).
pub fn identify(bytes: &[u8]) -> Format {
    if bytes.starts_with(b"\x7fELF") {
        let class = bytes.get(4).copied().unwrap_or(0);
        let data = bytes.get(5).copied().unwrap_or(0);
        let machine = match bytes.get(18..20) {
            Some(&[a, b]) if data == ELFDATA2LSB => u16::from_le_bytes([a, b]),
            Some(&[a, b]) => u16::from_be_bytes([a, b]),
            _ => 0,
        };
        if class == 2 && data == ELFDATA2LSB && machine == EM_X86_64 {
            return Format::ElfX86_64;
        }
        return Format::Elf { class, machine };
    }
    if bytes.starts_with(b"MZ") {
        return Format::Pe;
    }
    if let Some(rest) = bytes.strip_prefix(b"#!") {
        let line = &rest[..rest.len().min(SHEBANG_MAX - 2)];
        let line = line.split(|&b| b == b'\n').next().unwrap_or(&[]);
        let line = String::from_utf8_lossy(line);
        let line = line.trim_matches(|c| c == ' ' || c == '\t' || c == '\r');
        let (interpreter, arg) = match line.split_once([' ', '\t']) {
            Some((i, a)) => {
                let a = a.trim_matches(|c| c == ' ' || c == '\t' || c == '\r');
                (i.to_string(), (!a.is_empty()).then(|| a.to_string()))
            }
            None => (line.to_string(), None),
        };
        return Format::Script { interpreter, arg };
    }
    Format::Unknown
}

/// A human name for an ELF `e_machine`.
pub(crate) fn machine_name(machine: u16) -> String {
    let name = match machine {
        2 => "SPARC",
        3 => "i386",
        8 => "MIPS",
        20 => "PowerPC",
        21 => "PowerPC64",
        22 => "S/390",
        40 => "ARM",
        43 => "SPARC V9",
        62 => "x86-64",
        183 => "AArch64",
        243 => "RISC-V",
        258 => "LoongArch",
        m => {
            let g = goblin::elf::header::machine_to_str(m);
            if g == "UNKNOWN" || g.is_empty() {
                return format!("machine {m}");
            }
            g
        }
    };
    name.to_string()
}

/// The error for an ELF that is not little-endian ELF64 x86-64.
pub(crate) fn other_elf_error(class: u8, machine: u16, len: usize) -> LoadError {
    if len < 20 {
        return LoadError::Truncated(format!("the ELF header needs 64 bytes, the file has {len}"));
    }
    match class {
        1 => LoadError::Elf32(machine_name(machine)),
        2 if machine != EM_X86_64 => LoadError::ForeignMachine(machine_name(machine)),
        2 => LoadError::BadElf("big-endian x86-64 ELF".into()),
        c => LoadError::BadElf(format!("unknown ELF class {c}")),
    }
}

/// The error for an MZ file: say which kind of Windows or DOS program it is.
pub(crate) fn pe_error(bytes: &[u8]) -> LoadError {
    let read_u32 = |at: usize| -> Option<u32> {
        let b = bytes.get(at..at.checked_add(4)?)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let read_u16 = |at: usize| -> Option<u16> {
        let b = bytes.get(at..at.checked_add(2)?)?;
        Some(u16::from_le_bytes([b[0], b[1]]))
    };
    let kind = (|| {
        let pe = usize::try_from(read_u32(0x3c)?).ok()?;
        if bytes.get(pe..pe.checked_add(4)?)? != b"PE\0\0" {
            return None;
        }
        // The optional header follows the 20-byte COFF header.
        read_u16(pe.checked_add(24)?)
    })();
    LoadError::UnsupportedPe(
        match kind {
            Some(0x20b) => "PE32+ program where an ELF is needed (a #! interpreter must be an ELF)",
            Some(0x10b) => "32-bit Windows program (PE32); urun runs x86-64",
            Some(_) => "PE file with an unknown optional header",
            None => "MS-DOS program; urun runs x86-64",
        }
        .into(),
    )
}

/// Describe a file of no known format.
pub(crate) fn unknown_error(bytes: &[u8]) -> LoadError {
    if bytes.is_empty() {
        return LoadError::Empty;
    }
    let head = &bytes[..bytes.len().min(512)];
    let texty = head.iter().all(|&b| b >= 0x20 || b"\t\n\r\x0c".contains(&b));
    if texty {
        return LoadError::NotAProgram("text file?".into());
    }
    let hex: Vec<String> = bytes.iter().take(4).map(|b| format!("{b:02x}")).collect();
    LoadError::NotAProgram(format!("unknown format, starts with {}", hex.join(" ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifies_magic() {
        let mut elf = vec![0u8; 64];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2;
        elf[5] = 1;
        elf[18] = 62;
        assert_eq!(identify(&elf), Format::ElfX86_64);
        elf[18] = 183;
        assert_eq!(identify(&elf), Format::Elf { class: 2, machine: 183 });
        assert_eq!(identify(b"\x7fELF"), Format::Elf { class: 0, machine: 0 });
        assert_eq!(identify(b"MZ\x90\0"), Format::Pe);
        assert_eq!(identify(b""), Format::Unknown);
        assert_eq!(identify(b"hello"), Format::Unknown);
        let cases: &[(&[u8], &str, Option<&str>)] = &[
            (b"#!/bin/sh\necho", "/bin/sh", None),
            (b"#! /usr/bin/env  python3 -u \n", "/usr/bin/env", Some("python3 -u")),
            (b"#!/bin/sh\r\n", "/bin/sh", None),
            (b"#!", "", None),
        ];
        for (input, interp, arg) in cases {
            let want = Format::Script { interpreter: interp.to_string(), arg: arg.map(str::to_string) };
            assert_eq!(identify(input), want, "{:?}", String::from_utf8_lossy(input));
        }
    }
}
