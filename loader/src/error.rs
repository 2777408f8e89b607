//! Why a program could not be loaded, and the exit status a shell expects.

use std::path::PathBuf;

use urun_cpu::MemError;

/// A load failure. Each message names what was found in the file.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot open {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: not a regular file", path.display())]
    Permission { path: PathBuf },
    #[error("empty file")]
    Empty,
    #[error("not a program urun can run ({0})")]
    NotAProgram(String),
    #[error("ELF for {0}; urun runs x86-64")]
    ForeignMachine(String),
    #[error("32-bit ELF ({0}); urun runs x86-64")]
    Elf32(String),
    #[error("truncated ELF: {0}")]
    Truncated(String),
    #[error("malformed ELF: {0}")]
    BadElf(String),
    #[error("not an executable ({0})")]
    NotExecutableType(String),
    #[error("overlapping PT_LOAD segments: {a_start:#x}..{a_end:#x} and {b_start:#x}..{b_end:#x}")]
    Overlap { a_start: u64, a_end: u64, b_start: u64, b_end: u64 },
    #[error("segment at {vaddr:#x}+{memsz:#x} lies outside user space (which ends at 0x7ffffffff000)")]
    OutsideUserSpace { vaddr: u64, memsz: u64 },
    #[error("segment at {start:#x}+{len:#x} overlaps memory that is not the guest's")]
    NotGuestMemory { start: u64, len: u64 },
    #[error("cannot map {what}: {source}")]
    Map { what: &'static str, source: MemError },
    #[error("{0}")]
    UnsupportedPe(String),
    #[error("truncated PE: {0}")]
    TruncatedPe(String),
    #[error("malformed PE: {0}")]
    BadPe(String),
    #[error("the image must be placed at {base:#x}+{size:#x} (it has no relocations), which is taken: {why}")]
    PeBaseTaken { base: u64, size: u64, why: String },
    #[error("bad #! line: {0}")]
    BadScript(&'static str),
    #[error("too many levels of #! interpreters")]
    ScriptTooDeep,
    #[error("argument list too long ({0} bytes of strings; the limit is 2 MiB)")]
    ArgsTooLong(u64),
    #[error("cannot get random bytes for AT_RANDOM: {0}")]
    Random(std::io::Error),
}

impl LoadError {
    /// The exit status a shell gives when it cannot run a program: 127 when
    /// the file (or its `#!` interpreter) does not exist, 126 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            LoadError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => 127,
            _ => 126,
        }
    }
}
