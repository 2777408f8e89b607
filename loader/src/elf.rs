//! ELF64 x86-64 executables: header and program header validation, and
//! mapping the `PT_LOAD` segments into the guest `AddressSpace`.
//!
//! goblin decodes the structures; everything goblin does not check (bounds
//! of every program header and segment, sizes, alignment, overflow, overlap,
//! the user-space limit) is checked here before anything is mapped.

use goblin::container::{Container, Ctx, Endian};
use goblin::elf::header;
use goblin::elf::program_header::{self as ph, ProgramHeader};
use urun_cpu::mem::{page_ceil, page_floor, USER_TOP};
use urun_cpu::{AddressSpace, Backing, FileMap, MemError, Placement, Prot, PAGE_SIZE};

use crate::error::LoadError;

/// Size of an ELF64 header.
pub(crate) const EHDR_SIZE: usize = 64;
/// Size of an ELF64 program header.
pub(crate) const PHDR_SIZE: u64 = 56;
/// Largest `p_align` honoured when choosing an ET_DYN base.
const MAX_ALIGN: u64 = 1 << 30;
/// `e_phnum` value meaning "the count is in section header 0".
const PN_XNUM: u16 = 0xffff;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Exec,
    Dyn,
}

/// A validated, non-empty `PT_LOAD`, at its link-time address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Segment {
    pub vaddr: u64,
    pub memsz: u64,
    pub offset: u64,
    pub filesz: u64,
    pub prot: Prot,
}

/// Everything the loader needs from a validated ELF file.
#[derive(Debug)]
pub(crate) struct Image {
    pub kind: Kind,
    pub entry: u64,
    pub phoff: u64,
    pub phnum: u64,
    /// Sorted by address, non-overlapping, at least one.
    pub segments: Vec<Segment>,
    pub phdr_vaddr: Option<u64>,
    pub stack_exec: bool,
    /// Largest power-of-two `p_align` (at least a page, at most 1 GiB).
    pub align: u64,
    /// The PT_INTERP path, for a dynamically linked program.
    pub interp: Option<Vec<u8>>,
}

impl Image {
    /// Page-aligned start of the lowest segment (link-time address).
    pub fn lo(&self) -> u64 {
        self.segments.first().map_or(0, |s| page_floor(s.vaddr))
    }
    /// Page-aligned end of the highest segment (link-time address).
    pub fn hi(&self) -> u64 {
        self.segments.iter().map(|s| page_ceil(s.vaddr + s.memsz)).max().unwrap_or(0)
    }
    /// Link-time address of the program headers, if they are loaded:
    /// `PT_PHDR`, else the `PT_LOAD` whose file bytes hold `e_phoff`.
    pub fn phdr_addr(&self) -> Option<u64> {
        self.phdr_vaddr.or_else(|| {
            self.segments
                .iter()
                .find(|s| s.offset <= self.phoff && self.phoff - s.offset < s.filesz)
                .map(|s| s.vaddr + (self.phoff - s.offset))
        })
    }
}

fn prot_of(flags: u32) -> Prot {
    let mut p = Prot::NONE;
    if flags & ph::PF_R != 0 {
        p = p.union(Prot::READ);
    }
    if flags & ph::PF_W != 0 {
        p = p.union(Prot::WRITE);
    }
    if flags & ph::PF_X != 0 {
        p = p.union(Prot::EXEC);
    }
    p
}

/// Validate a little-endian ELF64 x86-64 file held in `bytes`.
pub(crate) fn parse(bytes: &[u8]) -> Result<Image, LoadError> {
    let len = bytes.len();
    if len < EHDR_SIZE {
        return Err(LoadError::Truncated(format!("the ELF header needs 64 bytes, the file has {len}")));
    }
    let hdr = goblin::elf::Elf::parse_header(bytes).map_err(|e| LoadError::BadElf(e.to_string()))?;
    let kind = match hdr.e_type {
        header::ET_EXEC => Kind::Exec,
        header::ET_DYN => Kind::Dyn,
        t => {
            let name = match t {
                header::ET_NONE => "ET_NONE".to_string(),
                header::ET_REL => "ET_REL".to_string(),
                header::ET_CORE => "ET_CORE".to_string(),
                t => format!("ELF type {t:#x}"),
            };
            return Err(LoadError::NotExecutableType(name));
        }
    };
    if u64::from(hdr.e_phentsize) != PHDR_SIZE {
        return Err(LoadError::BadElf(format!("program header size is {}, not 56", hdr.e_phentsize)));
    }
    let phnum = u64::from(hdr.e_phnum);
    if phnum == 0 {
        return Err(LoadError::BadElf("no program headers".into()));
    }
    if hdr.e_phnum == PN_XNUM {
        return Err(LoadError::BadElf("more than 65534 program headers (PN_XNUM)".into()));
    }
    for i in 0..phnum {
        let end = (i + 1).checked_mul(PHDR_SIZE).and_then(|n| hdr.e_phoff.checked_add(n));
        if end.is_none_or(|e| e > len as u64) {
            return Err(LoadError::Truncated(format!("program header {i} lies past the end of the file (size {len})")));
        }
    }
    // In bounds (checked above), so both conversions are exact.
    let phoff = usize::try_from(hdr.e_phoff).map_err(|_| LoadError::BadElf("e_phoff".into()))?;
    let ctx = Ctx::new(Container::Big, Endian::Little);
    let phdrs = ProgramHeader::parse(bytes, phoff, phnum as usize, ctx)
        .map_err(|e| LoadError::BadElf(format!("program headers: {e}")))?;

    // The dynamic linker a dynamic program names (PT_INTERP).
    let mut interp = None;
    if let Some(p) = phdrs.iter().find(|p| p.p_type == ph::PT_INTERP) {
        let name = p
            .p_offset
            .checked_add(p.p_filesz)
            .and_then(|end| bytes.get(usize::try_from(p.p_offset).ok()?..usize::try_from(end).ok()?))
            .map(|s| s.split(|&b| b == 0).next().unwrap_or(&[]).to_vec())
            .ok_or_else(|| LoadError::Truncated("PT_INTERP lies past the end of the file".into()))?;
        if name.is_empty() || name.len() > 4096 {
            return Err(LoadError::BadElf("PT_INTERP names no interpreter".into()));
        }
        interp = Some(name);
    }

    let mut segments = Vec::new();
    let mut phdr_vaddr = None;
    let mut stack_exec = false;
    let mut align = PAGE_SIZE;
    for (i, p) in phdrs.iter().enumerate() {
        match p.p_type {
            ph::PT_PHDR => phdr_vaddr = Some(p.p_vaddr),
            ph::PT_GNU_STACK => stack_exec = p.p_flags & ph::PF_X != 0,
            ph::PT_LOAD => {
                if p.p_memsz == 0 {
                    continue;
                }
                if p.p_offset.checked_add(p.p_filesz).is_none_or(|e| e > len as u64) {
                    return Err(LoadError::Truncated(format!(
                        "segment {i} (file bytes {:#x}+{:#x}) lies past the end of the file (size {len})",
                        p.p_offset, p.p_filesz
                    )));
                }
                if p.p_filesz > p.p_memsz {
                    return Err(LoadError::BadElf(format!(
                        "segment {i}: p_filesz {:#x} is larger than p_memsz {:#x}",
                        p.p_filesz, p.p_memsz
                    )));
                }
                if p.p_vaddr % PAGE_SIZE != p.p_offset % PAGE_SIZE {
                    return Err(LoadError::BadElf(format!(
                        "segment {i}: address {:#x} and file offset {:#x} differ modulo the page size",
                        p.p_vaddr, p.p_offset
                    )));
                }
                if p.p_vaddr.checked_add(p.p_memsz).is_none_or(|e| e > USER_TOP) {
                    return Err(LoadError::OutsideUserSpace { vaddr: p.p_vaddr, memsz: p.p_memsz });
                }
                if p.p_align.is_power_of_two() {
                    align = align.max(p.p_align.min(MAX_ALIGN));
                }
                segments.push(Segment {
                    vaddr: p.p_vaddr,
                    memsz: p.p_memsz,
                    offset: p.p_offset,
                    filesz: p.p_filesz,
                    prot: prot_of(p.p_flags),
                });
            }
            _ => {}
        }
    }
    if segments.is_empty() {
        return Err(LoadError::BadElf("no PT_LOAD segments".into()));
    }
    segments.sort_by_key(|s| s.vaddr);
    for w in segments.windows(2) {
        let (a, b) = (w[0], w[1]);
        if a.vaddr + a.memsz > b.vaddr {
            return Err(LoadError::Overlap {
                a_start: a.vaddr,
                a_end: a.vaddr + a.memsz,
                b_start: b.vaddr,
                b_end: b.vaddr + b.memsz,
            });
        }
    }
    Ok(Image { kind, entry: hdr.e_entry, phoff: hdr.e_phoff, phnum, segments, phdr_vaddr, stack_exec, align, interp })
}

/// Guest ranges mapped so far by one load; unmapped on drop unless kept.
pub(crate) struct Undo<'a> {
    mem: &'a AddressSpace,
    ranges: Vec<(u64, u64)>,
}

impl<'a> Undo<'a> {
    pub fn new(mem: &'a AddressSpace) -> Self {
        Undo { mem, ranges: Vec::new() }
    }
    pub fn push(&mut self, start: u64, len: u64) {
        self.ranges.push((start, len));
    }
    /// The load succeeded: keep everything.
    pub fn keep(mut self) {
        self.ranges.clear();
    }
}

impl Drop for Undo<'_> {
    fn drop(&mut self) {
        for &(start, len) in self.ranges.iter().rev() {
            if let Err(e) = self.mem.unmap(start, len) {
                tracing::warn!("undoing a failed load: {e}");
            }
        }
    }
}

/// The open program file, for file-backed mappings.
pub(crate) struct File<'a> {
    pub fd: i32,
    pub bytes: &'a [u8],
    pub path: String,
    pub dev: u64,
    pub inode: u64,
}

impl File<'_> {
    fn map_at(&self, offset: u64) -> FileMap {
        FileMap {
            fd: self.fd,
            offset,
            backing: Backing::File { path: self.path.clone(), offset, dev: self.dev, inode: self.inode },
        }
    }
}

fn segment_error(start: u64, len: u64, e: MemError) -> LoadError {
    match e {
        MemError::NotGuestMemory { .. } => LoadError::NotGuestMemory { start, len },
        MemError::Host { errno, .. } if errno == libc::EEXIST => LoadError::NotGuestMemory { start, len },
        source => LoadError::Map { what: "a segment", source },
    }
}

/// Map every segment. Returns the load bias (0 for ET_EXEC).
/// `tail` more bytes of no-access address space are kept after the image
/// of a position-independent program (room for its heap).
pub(crate) fn map_image(
    mem: &AddressSpace,
    img: &Image,
    file: &File<'_>,
    tail: u64,
    undo: &mut Undo<'_>,
) -> Result<u64, LoadError> {
    let (lo, hi) = (img.lo(), img.hi());
    let bias = match img.kind {
        Kind::Exec => 0,
        Kind::Dyn => reserve(mem, hi - lo + tail, img.align, undo)? - lo,
    };
    let fixed = img.kind == Kind::Dyn;
    let mut prev_page_end = 0;
    for seg in &img.segments {
        map_segment(mem, seg, bias, file, fixed, prev_page_end, undo)?;
        prev_page_end = page_ceil(seg.vaddr + bias + seg.memsz);
    }
    if img.kind == Kind::Dyn {
        // Like Linux, leave the holes between segments unmapped.
        let mut at = lo + bias;
        for seg in &img.segments {
            let start = page_floor(seg.vaddr + bias);
            if start > at {
                mem.unmap(at, start - at).map_err(|source| LoadError::Map { what: "a hole", source })?;
            }
            at = at.max(page_ceil(seg.vaddr + bias + seg.memsz));
        }
    }
    Ok(bias)
}

/// Reserve `span` bytes aligned to `align` where the kernel finds room.
fn reserve(mem: &AddressSpace, span: u64, align: u64, undo: &mut Undo<'_>) -> Result<u64, LoadError> {
    let total = span.checked_add(align - PAGE_SIZE).ok_or(LoadError::BadElf("segments span too much".into()))?;
    let raw = mem
        .map(Placement::Hint(0), total, Prot::NONE, false, None)
        .map_err(|source| LoadError::Map { what: "the program's address range", source })?;
    undo.push(raw, total);
    let base = raw.div_ceil(align) * align;
    let err = |source| LoadError::Map { what: "the program's address range", source };
    if base > raw {
        mem.unmap(raw, base - raw).map_err(err)?;
    }
    if base + span < raw + total {
        mem.unmap(base + span, raw + total - (base + span)).map_err(err)?;
    }
    Ok(base)
}

/// Write `data` at guest address `at`, then zero `zero` bytes after it.
///
/// The caller has mapped the whole range writable for the guest.
fn fill(at: u64, data: &[u8], zero: u64) {
    // SAFETY: [at, at + data.len() + zero) is guest memory this load mapped
    // with write access (guest address == host address); the source is a
    // host buffer that cannot overlap a fresh guest mapping.
    unsafe {
        std::ptr::copy_nonoverlapping(data.as_ptr(), at as *mut u8, data.len());
        std::ptr::write_bytes((at + data.len() as u64) as *mut u8, 0, zero as usize);
    }
}

fn map_segment(
    mem: &AddressSpace,
    seg: &Segment,
    bias: u64,
    file: &File<'_>,
    fixed: bool,
    prev_page_end: u64,
    undo: &mut Undo<'_>,
) -> Result<(), LoadError> {
    let start = seg.vaddr + bias;
    let end = start + seg.memsz;
    let file_end = start + seg.filesz;
    let (ps, pe) = (page_floor(start), page_ceil(end));
    // Bytes of `seg` in the file: in bounds (checked by `parse`).
    let data = |from: u64, to: u64| -> &[u8] {
        let a = (seg.offset + (from - start)) as usize;
        let b = (seg.offset + (to - start)) as usize;
        file.bytes.get(a..b).unwrap_or(&[])
    };
    let place = |a| if fixed { Placement::Fixed(a) } else { Placement::FixedNoReplace(a) };
    let map_err = |a: u64, b: u64| move |e| segment_error(a, b - a, e);

    // A first page shared with the previous segment is already mapped:
    // copy this segment's bytes into it instead of mapping over it.
    let fresh = ps.max(prev_page_end).min(pe);
    if fresh > ps {
        let old = mem.prot_at(ps).unwrap_or(Prot::NONE);
        mem.protect(ps, PAGE_SIZE, old.union(Prot::RW)).map_err(map_err(ps, fresh))?;
        let copy_end = file_end.min(fresh);
        let zero_end = end.min(fresh);
        fill(start, data(start, copy_end), zero_end - copy_end.max(start));
        mem.protect(ps, PAGE_SIZE, old.union(seg.prot)).map_err(map_err(ps, fresh))?;
    }
    if fresh >= pe {
        return Ok(());
    }

    // File-backed pages, private, at a page-aligned file offset.
    let file_pages_end = if seg.filesz == 0 { fresh } else { page_ceil(file_end).max(fresh) };
    if file_pages_end > fresh {
        let offset = page_floor(seg.offset) + (fresh - ps);
        let zero_tail = seg.memsz > seg.filesz && !file_end.is_multiple_of(PAGE_SIZE);
        let prot = if zero_tail { seg.prot.union(Prot::WRITE) } else { seg.prot };
        let len = file_pages_end - fresh;
        let fm = file.map_at(offset);
        mem.map(place(fresh), len, prot, false, Some(&fm)).map_err(map_err(fresh, file_pages_end))?;
        undo.push(fresh, len);
        if zero_tail {
            // The rest of the last file page is bss: zero it, as Linux does.
            fill(file_end, &[], file_pages_end - file_end);
            let last = file_pages_end - PAGE_SIZE;
            mem.protect(last, PAGE_SIZE, seg.prot).map_err(map_err(last, file_pages_end))?;
        }
    }
    // Anonymous zeroed pages for the rest of the bss.
    if pe > file_pages_end {
        mem.map(place(file_pages_end), pe - file_pages_end, seg.prot, false, None)
            .map_err(map_err(file_pages_end, pe))?;
        undo.push(file_pages_end, pe - file_pages_end);
    }
    tracing::debug!(start, end, prot = seg.prot.0, "mapped segment");
    Ok(())
}
