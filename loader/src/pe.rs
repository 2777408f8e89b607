//! PE32+ (x86-64 Windows) images: validation, placement (the preferred
//! base, or anywhere with base relocations applied), sections with their
//! protections, and what the image asks of its loader — imports, TLS,
//! exception data, stack sizes, subsystem — reported, not acted on.
//!
//! Formats only: which DLL provides an import, and what the TLS callbacks
//! and the entry point are called with, is the Win32 personality's
//! business. The image is built in urun's memory first (headers, sections,
//! relocations: everything checked against `SizeOfImage`), then copied
//! into the guest mapping in one piece.

use std::path::{Path, PathBuf};

use goblin::pe::header::Header;
use goblin::pe::section_table::SectionTable;
use urun_cpu::mem::{page_ceil, USER_TOP};
use urun_cpu::{AddressSpace, Backing, Placement, Prot, PAGE_SIZE};

use crate::error::LoadError;

const IMAGE_FILE_MACHINE_I386: u16 = 0x14c;
const IMAGE_FILE_MACHINE_AMD64: u16 = 0x8664;
const IMAGE_FILE_MACHINE_ARM64: u16 = 0xaa64;
const IMAGE_FILE_MACHINE_ARMNT: u16 = 0x1c4;
const IMAGE_FILE_MACHINE_IA64: u16 = 0x200;
const IMAGE_FILE_RELOCS_STRIPPED: u16 = 0x0001;
const IMAGE_FILE_DLL: u16 = 0x2000;
const PE32PLUS_MAGIC: u16 = 0x20b;
const PE32_MAGIC: u16 = 0x10b;
const IMAGE_SCN_MEM_EXECUTE: u32 = 0x2000_0000;
const IMAGE_SCN_MEM_READ: u32 = 0x4000_0000;
const IMAGE_SCN_MEM_WRITE: u32 = 0x8000_0000;
const IMAGE_REL_BASED_ABSOLUTE: u16 = 0;
const IMAGE_REL_BASED_DIR64: u16 = 10;
/// Images larger than this are refused (the image is built in urun's
/// memory first).
const MAX_IMAGE: u64 = 1 << 30;
/// Bounds on the tables a hostile file could make huge.
const MAX_IMPORT_DLLS: usize = 4096;
const MAX_IMPORTS_PER_DLL: usize = 1 << 16;
const MAX_TLS_CALLBACKS: usize = 1024;

/// What an import names: a function by name, or by ordinal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImportName {
    Name(String),
    Ordinal(u16),
}

impl std::fmt::Display for ImportName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImportName::Name(n) => f.write_str(n),
            ImportName::Ordinal(o) => write!(f, "#{o}"),
        }
    }
}

/// One imported function and the IAT slot its address goes in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Import {
    /// The DLL as the image spells it (`KERNEL32.dll`).
    pub dll: String,
    pub name: ImportName,
    /// Address (absolute, after placement) of the 8-byte IAT slot.
    pub iat: u64,
}

/// The image's TLS directory, with absolute addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tls {
    /// The template: `[start, end)` is copied, then `zero_fill` zero bytes.
    pub start: u64,
    pub end: u64,
    pub zero_fill: u32,
    /// Where the loader writes the module's TLS index.
    pub index_addr: u64,
    /// The TLS callbacks, in order.
    pub callbacks: Vec<u64>,
}

/// A PE32+ image mapped into the guest.
#[derive(Clone, Debug)]
pub struct LoadedPe {
    /// Canonical path of the file.
    pub path: PathBuf,
    /// Where the image was placed.
    pub base: u64,
    /// The base it was linked for.
    pub preferred_base: u64,
    pub size: u64,
    /// Absolute address of the entry point (0: none).
    pub entry: u64,
    pub is_dll: bool,
    /// IMAGE_SUBSYSTEM_* (3: console, 2: GUI).
    pub subsystem: u16,
    pub stack_reserve: u64,
    pub stack_commit: u64,
    pub imports: Vec<Import>,
    pub tls: Option<Tls>,
    /// The `.pdata` table (RUNTIME_FUNCTION entries): absolute start, size.
    pub exceptions: Option<(u64, u64)>,
    /// Page-aligned ranges and the protections they get once the imports
    /// are bound (`protect`); until then the whole image is read-write.
    pub sections: Vec<(u64, u64, Prot)>,
}

impl LoadedPe {
    /// Give the headers and sections their final protections (after the
    /// personality has written the IAT).
    /// Neighbouring sections with the same protection take one call (a
    /// mingw program has a dozen read-only debug sections in a row).
    pub fn protect(&self, mem: &AddressSpace) -> Result<(), LoadError> {
        let mut run: Option<(u64, u64, Prot)> = None;
        for &(start, len, prot) in &self.sections {
            match &mut run {
                Some((s, l, p)) if *p == prot && *s + *l == start => *l += len,
                _ => {
                    if let Some((s, l, p)) = run.replace((start, len, prot)) {
                        mem.protect(s, l, p).map_err(|source| LoadError::Map { what: "a PE section", source })?;
                    }
                }
            }
        }
        if let Some((s, l, p)) = run {
            mem.protect(s, l, p).map_err(|source| LoadError::Map { what: "a PE section", source })?;
        }
        Ok(())
    }
}

/// The image as built in urun's memory, before it is placed.
/// `B` holds the image's bytes: a `Vec` (tests), or the guest memory the
/// image is placed in (`Placed`: written there directly, not copied).
#[derive(Debug)]
pub(crate) struct Image<B = Vec<u8>> {
    pub preferred_base: u64,
    pub bytes: B,
    pub entry_rva: u32,
    pub is_dll: bool,
    pub subsystem: u16,
    pub stack_reserve: u64,
    pub stack_commit: u64,
    /// (rva, size) of the data directories urun reads.
    pub import_dir: Option<(u32, u32)>,
    pub reloc_dir: Option<(u32, u32)>,
    pub tls_dir: Option<(u32, u32)>,
    pub exception_dir: Option<(u32, u32)>,
    /// (rva, virtual size, protection) per section, headers first.
    pub sections: Vec<(u64, u64, Prot)>,
}

fn bad(msg: impl Into<String>) -> LoadError {
    LoadError::BadPe(msg.into())
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at.checked_add(2)?)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at.checked_add(4)?)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at.checked_add(8)?)?.try_into().ok()?))
}

/// A NUL-terminated string at `at` (at most 4 KiB).
fn cstr_at(b: &[u8], at: usize) -> Option<String> {
    let tail = b.get(at..)?;
    let tail = &tail[..tail.len().min(4096)];
    let n = tail.iter().position(|&c| c == 0)?;
    Some(String::from_utf8_lossy(&tail[..n]).into_owned())
}

/// The machine field, or the one-line reason this is not a PE32+ x86-64
/// image, looked at before any deeper parse so that foreign files get the
/// right message even when the rest would not parse.
fn check_kind(bytes: &[u8]) -> Result<usize, LoadError> {
    let pe = u32_at(bytes, 0x3c).ok_or_else(|| LoadError::TruncatedPe("the MZ header needs 64 bytes".into()))? as usize;
    match bytes.get(pe..pe.saturating_add(4)) {
        Some(b"PE\0\0") => {}
        Some(_) => return Err(LoadError::UnsupportedPe("MS-DOS program (no PE header); urun runs x86-64".into())),
        None => return Err(LoadError::TruncatedPe(format!("the PE header at {pe:#x} is past the end of the file"))),
    }
    let machine = u16_at(bytes, pe + 4).ok_or_else(|| LoadError::TruncatedPe("the COFF header is cut short".into()))?;
    let what = match machine {
        IMAGE_FILE_MACHINE_AMD64 => None,
        IMAGE_FILE_MACHINE_I386 => Some("32-bit Windows program (i386 PE32)".to_string()),
        IMAGE_FILE_MACHINE_ARM64 => Some("Windows program for ARM64".to_string()),
        IMAGE_FILE_MACHINE_ARMNT => Some("Windows program for ARM (Thumb-2)".to_string()),
        IMAGE_FILE_MACHINE_IA64 => Some("Windows program for Itanium".to_string()),
        m => Some(format!("Windows program for machine {m:#x}")),
    };
    if let Some(w) = what {
        return Err(LoadError::UnsupportedPe(format!("{w}; urun runs x86-64")));
    }
    let magic =
        u16_at(bytes, pe + 24).ok_or_else(|| LoadError::TruncatedPe("the optional header is cut short".into()))?;
    match magic {
        PE32PLUS_MAGIC => Ok(pe),
        PE32_MAGIC => Err(LoadError::UnsupportedPe("x86-64 machine with a 32-bit (PE32) optional header".into())),
        m => Err(bad(format!("unknown optional header magic {m:#x}"))),
    }
}

fn prot_of(characteristics: u32) -> Prot {
    let mut p = Prot::NONE;
    if characteristics & IMAGE_SCN_MEM_READ != 0 {
        p = p.union(Prot::READ);
    }
    if characteristics & IMAGE_SCN_MEM_WRITE != 0 {
        p = p.union(Prot::WRITE);
    }
    if characteristics & IMAGE_SCN_MEM_EXECUTE != 0 {
        p = p.union(Prot::EXEC.union(Prot::READ));
    }
    p
}

/// Parse and lay out a PE32+ image in urun's memory.
#[cfg(test)]
pub(crate) fn build(bytes: &[u8]) -> Result<Image, LoadError> {
    build_in(bytes, |size, _, _| Ok(vec![0u8; size as usize]))
}

/// Parse and lay out a PE32+ image in the zeroed buffer `alloc` gives for
/// (SizeOfImage, ImageBase, can it be relocated), once the headers are
/// checked.
fn build_in<B: std::ops::DerefMut<Target = [u8]>>(
    bytes: &[u8],
    alloc: impl FnOnce(u64, u64, bool) -> Result<B, LoadError>,
) -> Result<Image<B>, LoadError> {
    let pe = check_kind(bytes)?;
    let header = Header::parse(bytes).map_err(|e| LoadError::TruncatedPe(format!("headers: {e}")))?;
    let coff = header.coff_header;
    let opt = header.optional_header.ok_or_else(|| bad("no optional header"))?;
    let win = opt.windows_fields;
    let dirs = opt.data_directories;
    if dirs.get_clr_runtime_header().is_some_and(|d| d.size != 0) {
        return Err(LoadError::UnsupportedPe(
            ".NET assembly (it has a CLR header); urun runs native x86-64 code".into(),
        ));
    }
    let size = u64::from(win.size_of_image);
    if size == 0 || size > MAX_IMAGE {
        return Err(bad(format!("SizeOfImage {size:#x}")));
    }
    let base = win.image_base;
    if base % 0x10000 != 0 || base == 0 || base.checked_add(size).is_none_or(|end| end > USER_TOP) {
        return Err(bad(format!("ImageBase {base:#x} (+{size:#x}) is not a 64 KiB aligned user-space address")));
    }
    let headers_len = u64::from(win.size_of_headers);
    if headers_len > size {
        return Err(bad(format!("SizeOfHeaders {headers_len:#x} exceeds SizeOfImage {size:#x}")));
    }
    let relocatable = coff.characteristics & IMAGE_FILE_RELOCS_STRIPPED == 0
        && dirs.get_base_relocation_table().is_some_and(|d| d.size != 0);
    let mut img = alloc(size, base, relocatable)?;
    let h = (headers_len as usize).min(bytes.len());
    img[..h].copy_from_slice(&bytes[..h]);

    let mut off = pe + 24 + usize::from(coff.size_of_optional_header);
    let n = usize::from(coff.number_of_sections);
    if n == 0 {
        return Err(bad("no sections"));
    }
    let mut sections = vec![(0, page_ceil(headers_len.max(1)), Prot::READ)];
    for i in 0..n {
        let s = SectionTable::parse(bytes, &mut off, 0)
            .map_err(|e| LoadError::TruncatedPe(format!("section header {i}: {e}")))?;
        let name = String::from_utf8_lossy(s.name.split(|&c| c == 0).next().unwrap_or(&[])).into_owned();
        let va = u64::from(s.virtual_address);
        let vsize = u64::from(if s.virtual_size == 0 { s.size_of_raw_data } else { s.virtual_size });
        if va % PAGE_SIZE != 0 || va.checked_add(vsize).is_none_or(|e| e > size) {
            return Err(bad(format!("section {name} at {va:#x}+{vsize:#x} does not fit SizeOfImage {size:#x}")));
        }
        let raw = u64::from(s.size_of_raw_data).min(vsize) as usize;
        if raw > 0 {
            let from = s.pointer_to_raw_data as usize;
            let data = bytes.get(from..from.saturating_add(raw)).ok_or_else(|| {
                LoadError::TruncatedPe(format!(
                    "section {name}'s data at file offset {from:#x}+{raw:#x} is past the end of the file ({:#x})",
                    bytes.len()
                ))
            })?;
            img[va as usize..va as usize + raw].copy_from_slice(data);
        }
        if vsize > 0 {
            sections.push((va, page_ceil(vsize), prot_of(s.characteristics)));
        }
    }
    let dir = |d: Option<&goblin::pe::data_directories::DataDirectory>| -> Result<Option<(u32, u32)>, LoadError> {
        match d {
            Some(d) if d.size != 0 => {
                if u64::from(d.virtual_address) + u64::from(d.size) > size {
                    return Err(bad(format!(
                        "a data directory at {:#x}+{:#x} is outside the image",
                        d.virtual_address, d.size
                    )));
                }
                Ok(Some((d.virtual_address, d.size)))
            }
            _ => Ok(None),
        }
    };
    let entry_rva = opt.standard_fields.address_of_entry_point;
    if u64::from(entry_rva) >= size {
        return Err(bad(format!("entry point {entry_rva:#x} is outside the image")));
    }
    Ok(Image {
        preferred_base: base,
        bytes: img,
        entry_rva,
        is_dll: coff.characteristics & IMAGE_FILE_DLL != 0,
        subsystem: win.subsystem,
        stack_reserve: win.size_of_stack_reserve,
        stack_commit: win.size_of_stack_commit,
        import_dir: dir(dirs.get_import_table())?,
        reloc_dir: dir(dirs.get_base_relocation_table())?,
        tls_dir: dir(dirs.get_tls_table())?,
        exception_dir: dir(dirs.get_exception_table())?,
        sections,
    })
}

impl<B: std::ops::DerefMut<Target = [u8]>> Image<B> {
    /// Apply the base relocations for placement at `base`.
    pub(crate) fn relocate(&mut self, base: u64) -> Result<(), LoadError> {
        let delta = base.wrapping_sub(self.preferred_base);
        if delta == 0 {
            return Ok(());
        }
        let Some((rva, len)) = self.reloc_dir else { return Ok(()) };
        let (mut at, end) = (rva as usize, rva as usize + len as usize);
        while at + 8 <= end {
            let page = u32_at(&self.bytes, at).ok_or_else(|| bad("relocation block header"))? as usize;
            let block = u32_at(&self.bytes, at + 4).ok_or_else(|| bad("relocation block header"))? as usize;
            if block < 8 || at + block > end {
                return Err(bad(format!("relocation block at {at:#x} has size {block:#x}")));
            }
            for e in (at + 8..at + block).step_by(2) {
                let entry = u16_at(&self.bytes, e).ok_or_else(|| bad("relocation entry"))?;
                let (kind, off) = (entry >> 12, usize::from(entry & 0xfff));
                match kind {
                    IMAGE_REL_BASED_ABSOLUTE => {}
                    IMAGE_REL_BASED_DIR64 => {
                        let p = page + off;
                        let v = u64_at(&self.bytes, p)
                            .ok_or_else(|| bad(format!("a relocation at {p:#x} is outside the image")))?;
                        self.bytes[p..p + 8].copy_from_slice(&v.wrapping_add(delta).to_le_bytes());
                    }
                    k => {
                        return Err(bad(format!("relocation type {k} at {:#x} (x86-64 images use DIR64)", page + off)))
                    }
                }
            }
            at += block;
        }
        Ok(())
    }

    /// The imports, with IAT slots relative to the image (RVAs).
    pub(crate) fn imports(&self) -> Result<Vec<(String, ImportName, u32)>, LoadError> {
        let mut out = Vec::new();
        let Some((rva, _)) = self.import_dir else { return Ok(out) };
        let b = &self.bytes;
        for i in 0..MAX_IMPORT_DLLS {
            let d = rva as usize + i * 20;
            let ilt = u32_at(b, d).ok_or_else(|| bad("import directory runs past the image"))?;
            let name_rva = u32_at(b, d + 12).ok_or_else(|| bad("import descriptor"))?;
            let iat = u32_at(b, d + 16).ok_or_else(|| bad("import descriptor"))?;
            if ilt == 0 && name_rva == 0 && iat == 0 {
                return Ok(out);
            }
            let dll = cstr_at(b, name_rva as usize).ok_or_else(|| bad(format!("import DLL name at {name_rva:#x}")))?;
            let names = if ilt != 0 { ilt } else { iat };
            for j in 0..MAX_IMPORTS_PER_DLL {
                let t = u64_at(b, names as usize + j * 8)
                    .ok_or_else(|| bad(format!("the import table of {dll} runs past the image")))?;
                if t == 0 {
                    break;
                }
                let name = if t & (1 << 63) != 0 {
                    ImportName::Ordinal(t as u16)
                } else {
                    let at = (t as u32 as usize).checked_add(2).ok_or_else(|| bad("import name"))?;
                    ImportName::Name(cstr_at(b, at).ok_or_else(|| bad(format!("an import name of {dll} at {t:#x}")))?)
                };
                let slot = iat.checked_add(j as u32 * 8).ok_or_else(|| bad("IAT"))?;
                if u64::from(slot) + 8 > b.len() as u64 {
                    return Err(bad(format!("the IAT of {dll} runs past the image")));
                }
                out.push((dll.clone(), name, slot));
            }
        }
        Err(bad(format!("more than {MAX_IMPORT_DLLS} import descriptors")))
    }

    /// The TLS directory, once relocated for `base` (its fields are VAs).
    pub(crate) fn tls(&self, base: u64) -> Result<Option<Tls>, LoadError> {
        let Some((rva, _)) = self.tls_dir else { return Ok(None) };
        let b = &self.bytes;
        let at = rva as usize;
        let field = |k: usize| u64_at(b, at + 8 * k).ok_or_else(|| bad("TLS directory"));
        let (start, end, index_addr, callbacks_va) = (field(0)?, field(1)?, field(2)?, field(3)?);
        let zero_fill = u32_at(b, at + 32).ok_or_else(|| bad("TLS directory"))?;
        let size = b.len() as u64;
        let inside = |va: u64, len: u64| va >= base && va.checked_add(len).is_some_and(|e| e <= base + size);
        if end < start || (start != 0 && !inside(start, end - start)) || !inside(index_addr, 4) {
            return Err(bad(format!("TLS directory: template {start:#x}..{end:#x}, index at {index_addr:#x}")));
        }
        let mut callbacks = Vec::new();
        if callbacks_va != 0 {
            for k in 0..MAX_TLS_CALLBACKS {
                let va = callbacks_va + 8 * k as u64;
                if !inside(va, 8) {
                    return Err(bad(format!("TLS callback array at {callbacks_va:#x} runs past the image")));
                }
                let cb = u64_at(b, (va - base) as usize).unwrap_or(0);
                if cb == 0 {
                    break;
                }
                callbacks.push(cb);
            }
        }
        Ok(Some(Tls { start, end, zero_fill, index_addr, callbacks }))
    }
}

/// A PE image's bytes in place in guest memory: `len` bytes at `base`,
/// mapped read-write by `load` for this load.
#[derive(Debug)]
struct Placed {
    base: u64,
    len: usize,
}

impl std::ops::Deref for Placed {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `load` mapped [base, base + len) read-write (zeroed) for
        // this image before making a `Placed`, and unmaps it only after the
        // `Placed` is gone; no guest code runs during the load and nothing
        // else refers to the range, so urun may use it as its own memory.
        unsafe { std::slice::from_raw_parts(self.base as *const u8, self.len) }
    }
}

impl std::ops::DerefMut for Placed {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`; `&mut self` makes this the only view.
        unsafe { std::slice::from_raw_parts_mut(self.base as *mut u8, self.len) }
    }
}

/// Map the PE32+ image in `bytes` (read from `path`) into `mem`: at its
/// preferred base, or relocated when that is taken. On error nothing stays
/// mapped.
pub(crate) fn load(path: &Path, bytes: &[u8], mem: &AddressSpace) -> Result<LoadedPe, LoadError> {
    let mut placed = None;
    let built = build_in(bytes, |size, pref, relocatable| {
        let base = match mem.map(Placement::FixedNoReplace(pref), size, Prot::RW, false, None) {
            Ok(b) => b,
            Err(e) if !relocatable => {
                return Err(LoadError::PeBaseTaken { base: pref, size, why: e.to_string() });
            }
            Err(_) => mem
                .map(Placement::Hint(pref), size, Prot::RW, false, None)
                .map_err(|source| LoadError::Map { what: "a PE image", source })?,
        };
        placed = Some((base, size));
        Ok(Placed { base, len: size as usize })
    });
    let unmap = |e: LoadError, (base, size): (u64, u64)| {
        if let Err(u) = mem.unmap(base, size) {
            tracing::warn!("undoing a failed PE load: {u}");
        }
        e
    };
    let mut img = match (built, placed) {
        (Ok(img), _) => img,
        (Err(e), Some(at)) => return Err(unmap(e, at)),
        (Err(e), None) => return Err(e),
    };
    let (base, size, pref) = (img.bytes.base, img.bytes.len as u64, img.preferred_base);
    let unmap = |e: LoadError| unmap(e, (base, size));
    img.relocate(base).map_err(unmap)?;
    let imports = img.imports().map_err(unmap)?;
    let tls = img.tls(base).map_err(unmap)?;
    let exe_path = std::fs::canonicalize(path).map_err(|source| unmap(LoadError::Io { path: path.into(), source }))?;
    mem.set_backing(base, Backing::Named(format!("[pe {}]", exe_path.display())));
    let loaded = LoadedPe {
        path: exe_path,
        base,
        preferred_base: pref,
        size,
        entry: if img.entry_rva == 0 { 0 } else { base + u64::from(img.entry_rva) },
        is_dll: img.is_dll,
        subsystem: img.subsystem,
        stack_reserve: img.stack_reserve,
        stack_commit: img.stack_commit,
        imports: imports
            .into_iter()
            .map(|(dll, name, slot)| Import { dll, name, iat: base + u64::from(slot) })
            .collect(),
        tls,
        exceptions: img.exception_dir.map(|(rva, len)| (base + u64::from(rva), u64::from(len))),
        sections: img.sections.iter().map(|&(rva, len, prot)| (base + rva, len, prot)).collect(),
    };
    tracing::debug!(
        base = format_args!("{base:#x}"),
        entry = format_args!("{:#x}", loaded.entry),
        imports = loaded.imports.len(),
        "mapped a PE32+ image"
    );
    Ok(loaded)
}

#[cfg(test)]
mod tests;
