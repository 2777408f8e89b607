//! Modules of a Win32 process: the program, the real PE DLLs it needs
//! (mapped by the same loader code as the program, relocated when their
//! preferred base is taken) and urun's system DLLs (images built by
//! `sysdll`). One registry answers binding, `LoadLibrary`,
//! `GetModuleHandle`, `GetProcAddress` and `GetModuleFileName`, and keeps
//! the PEB's loader lists current.
//!
//! Binding reads each module's export directory from guest memory, so a
//! name, an ordinal or a forwarder (`OTHER.Name`, `OTHER.#12`, into a real
//! DLL or one of urun's) resolves the same way for every kind of module.
//! An import that names nothing binds to a stub that names it when called.
//!
//! Where a DLL is looked for, for a name without a path (Windows' order
//! for a desktop program, with urun's DLLs standing for the system
//! directory): urun's own system DLLs first (as Windows' KnownDLLs),
//! then the directory of the program, the directories in `URUN_DLL_PATH`
//! (colon-separated, urun's environment: e.g. a mingw sysroot), the
//! current directory, the directories of the guest's `PATH`. File names
//! match case-insensitively.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use urun_cpu::AddressSpace;
use urun_loader::{ImportName, LoadedPe, Tls};

use super::table::Dll;

/// Stubs for imports urun does not implement: at most this many distinct
/// ones per process.
pub(crate) const MISSING_CAP: usize = 4096;
/// Forwarder chains longer than this are treated as unresolved.
const MAX_FORWARDS: u32 = 16;
/// Bounds on export tables (a hostile DLL could make them huge).
const MAX_EXPORTS: u32 = 1 << 16;

/// Why a module could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ModError {
    #[error(
        "needs {dll}, which urun does not provide and which is not beside the program, in URUN_DLL_PATH, the \
         current directory or PATH (imported by {by})"
    )]
    Missing { dll: String, by: String },
    #[error("cannot load {dll} (imported by {by}): {source}")]
    Load { dll: String, by: String, source: urun_loader::LoadError },
    #[error("more than {MISSING_CAP} distinct unimplemented imports")]
    TooManyStubs,
    #[error("cannot write {0:#x}")]
    Write(u64),
}

/// A module's export directory, as read from its image in guest memory.
#[derive(Debug, Default)]
pub(crate) struct Exports {
    /// RVA range of the directory (an export inside it is a forwarder).
    dir: (u32, u32),
    ord_base: u32,
    funcs: Vec<u32>,
    names: HashMap<String, u32>,
}

fn rd32(read: &dyn Fn(u64, &mut [u8]) -> bool, at: u64) -> Option<u32> {
    let mut b = [0u8; 4];
    read(at, &mut b).then(|| u32::from_le_bytes(b))
}

fn rd16(read: &dyn Fn(u64, &mut [u8]) -> bool, at: u64) -> Option<u16> {
    let mut b = [0u8; 2];
    read(at, &mut b).then(|| u16::from_le_bytes(b))
}

/// A NUL-terminated string (at most 1 KiB) at `at`, read in chunks that
/// do not cross a page (the string may end just before an unreadable one).
fn rd_cstr(read: &dyn Fn(u64, &mut [u8]) -> bool, at: u64) -> Option<String> {
    let mut out = Vec::new();
    let mut a = at;
    while out.len() < 1024 {
        let n = (64 - (a & 63)) as usize;
        let mut b = [0u8; 64];
        if !read(a, &mut b[..n]) {
            // Near the end of what `read` allows: byte by byte.
            if !read(a, &mut b[..1]) {
                return None;
            }
            if b[0] == 0 {
                return Some(String::from_utf8_lossy(&out).into_owned());
            }
            out.push(b[0]);
            a += 1;
            continue;
        }
        if let Some(z) = b[..n].iter().position(|&c| c == 0) {
            out.extend_from_slice(&b[..z]);
            return Some(String::from_utf8_lossy(&out).into_owned());
        }
        out.extend_from_slice(&b[..n]);
        a += n as u64;
    }
    None
}

impl Exports {
    /// Parse the export directory of the image `read` gives (by RVA).
    /// None when the headers are not a PE32+ image's; an image without
    /// exports gives an empty table.
    pub fn parse(read: &dyn Fn(u64, &mut [u8]) -> bool) -> Option<Exports> {
        let pe = u64::from(rd32(read, 0x3c)?);
        if rd32(read, pe)? != 0x4550 || rd16(read, pe + 24)? != 0x20b {
            return None;
        }
        let opt = pe + 24;
        if rd32(read, opt + 108)? == 0 {
            return Some(Exports::default());
        }
        let (rva, size) = (rd32(read, opt + 112)?, rd32(read, opt + 116)?);
        if rva == 0 || size == 0 {
            return Some(Exports::default());
        }
        let d = u64::from(rva);
        let ord_base = rd32(read, d + 16)?;
        let (nfuncs, nnames) = (rd32(read, d + 20)?.min(MAX_EXPORTS), rd32(read, d + 24)?.min(MAX_EXPORTS));
        let (afuncs, anames, aords) =
            (u64::from(rd32(read, d + 28)?), u64::from(rd32(read, d + 32)?), u64::from(rd32(read, d + 36)?));
        let mut funcs = Vec::with_capacity(nfuncs as usize);
        for k in 0..u64::from(nfuncs) {
            funcs.push(rd32(read, afuncs + 4 * k)?);
        }
        let mut names = HashMap::with_capacity(nnames as usize);
        for k in 0..u64::from(nnames) {
            let name = rd_cstr(read, u64::from(rd32(read, anames + 4 * k)?))?;
            let ord = rd16(read, aords + 2 * k)?;
            names.entry(name).or_insert(u32::from(ord));
        }
        Some(Exports { dir: (rva, size), ord_base, funcs, names })
    }

    /// The RVA `name` is exported at.
    pub fn by_name(&self, name: &str) -> Option<u32> {
        let i = *self.names.get(name)?;
        self.funcs.get(i as usize).copied().filter(|&r| r != 0)
    }

    /// The RVA ordinal `ord` is exported at.
    pub fn by_ordinal(&self, ord: u32) -> Option<u32> {
        let i = ord.checked_sub(self.ord_base)?;
        self.funcs.get(i as usize).copied().filter(|&r| r != 0)
    }

    fn is_forwarder(&self, rva: u32) -> bool {
        rva >= self.dir.0 && rva - self.dir.0 < self.dir.1
    }
}

/// One module of the process.
pub(crate) struct Module {
    /// The file name (`modlib.dll`, `KERNEL32.DLL`).
    pub name: String,
    /// What GetModuleFileName gives: the host path of a real image (urun
    /// takes `/` paths as they are), `C:\windows\system32\NAME` for
    /// urun's DLLs.
    pub path: String,
    pub base: u64,
    pub size: u64,
    /// DllMain (0: none; the program's entry is not called through here).
    pub entry: u64,
    pub system: Option<Dll>,
    pub is_exe: bool,
    pub exports: Exports,
    pub tls: Option<Tls>,
    /// The index TLS of this module has (`_tls_index`).
    pub tls_index: Option<u32>,
    /// LoadLibrary references; a module loaded at start or as a dependency
    /// is pinned.
    pub refs: u32,
    pub pinned: bool,
    /// Its LDR_DATA_TABLE_ENTRY (0: not made yet).
    pub ldr: u64,
    /// DLL_PROCESS_ATTACH was delivered (and DETACH not yet).
    pub attached: bool,
    /// Unloaded by FreeLibrary: the slot stays, nothing finds it.
    pub gone: bool,
    imports: Vec<urun_loader::Import>,
    sections: Option<LoadedPe>,
}

/// Every module of the process.
pub(crate) struct Modules {
    pub list: Vec<Module>,
    /// Real DLLs in the order they are attached (dependencies first).
    pub init_order: Vec<usize>,
    /// Stubs for unimplemented imports: where stub k is, and its number.
    missing_base: u64,
    missing_first: usize,
    pub missing: Vec<(String, String)>,
    /// The program's directory, then the other search directories.
    dirs: Vec<PathBuf>,
    /// PEB_LDR_DATA (0 until built).
    pub ldr_data: u64,
    /// The thread's TLS pointer array urun made for DLLs with TLS, and
    /// its length in entries.
    pub tls_array: u64,
    pub tls_cap: u64,
    next_tls: u32,
}

/// The directories searched for a DLL after the program's own.
pub(crate) fn search_dirs(exe_dir: &Path, envp: &[Vec<u8>]) -> Vec<PathBuf> {
    let mut dirs = vec![exe_dir.to_path_buf()];
    if let Some(v) = std::env::var_os("URUN_DLL_PATH") {
        let v = v.to_string_lossy().into_owned();
        dirs.extend(v.split([':', ';']).filter(|s| !s.is_empty()).map(PathBuf::from));
    }
    if let Ok(cwd) = std::env::current_dir() {
        dirs.push(cwd);
    }
    for kv in envp {
        if let Some(v) = kv.strip_prefix(b"PATH=") {
            let v = String::from_utf8_lossy(v).into_owned();
            dirs.extend(v.split(':').filter(|s| !s.is_empty()).map(PathBuf::from));
        }
    }
    dirs
}

/// `name` as a DLL file name: the last path component, `.dll` added when
/// it has no extension (as LoadLibrary does).
fn dll_file_name(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
    if base.contains('.') {
        base.trim_end_matches('.').to_string()
    } else {
        format!("{base}.dll")
    }
}

/// `name` in `dir`, matched case-insensitively.
fn find_in(dir: &Path, name: &str) -> Option<PathBuf> {
    let exact = dir.join(name);
    if exact.is_file() {
        return Some(exact);
    }
    let entries = std::fs::read_dir(dir).ok()?;
    entries
        .flatten()
        .find(|e| e.file_name().to_string_lossy().eq_ignore_ascii_case(name) && e.path().is_file())
        .map(|e| e.path())
}

impl Modules {
    pub fn new(missing_base: u64, missing_first: usize, dirs: Vec<PathBuf>) -> Self {
        Modules {
            list: Vec::new(),
            init_order: Vec::new(),
            missing_base,
            missing_first,
            missing: Vec::new(),
            dirs,
            ldr_data: 0,
            tls_array: 0,
            tls_cap: 0,
            next_tls: 1,
        }
    }

    /// Register one of urun's system DLLs, `image` (the bytes just copied
    /// to `base`; its exports are read from them, not from guest memory).
    pub fn add_system(&mut self, dll: Dll, base: u64, image: &[u8]) {
        let name = super::sysdll::file_name(dll);
        let size = image.len() as u64;
        let read = |rva: u64, buf: &mut [u8]| {
            let s = usize::try_from(rva).ok().and_then(|r| image.get(r..r.checked_add(buf.len())?));
            s.map(|s| buf.copy_from_slice(s)).is_some()
        };
        let exports = Exports::parse(&read).unwrap_or_default();
        self.list.push(Module {
            path: format!("C:\\windows\\system32\\{}", name.to_ascii_lowercase()),
            name,
            base,
            size,
            entry: 0,
            system: Some(dll),
            is_exe: false,
            exports,
            tls: None,
            tls_index: None,
            refs: 0,
            pinned: true,
            ldr: 0,
            attached: true,
            gone: false,
            imports: Vec::new(),
            sections: None,
        });
    }

    /// Register a mapped real image (the program, or a DLL).
    pub fn add_image(&mut self, mem: &AddressSpace, pe: LoadedPe, is_exe: bool) -> usize {
        let name = pe.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let exports = read_exports(mem, pe.base, pe.size).unwrap_or_default();
        self.list.push(Module {
            path: pe.path.to_string_lossy().into_owned(),
            name,
            base: pe.base,
            size: pe.size,
            entry: if is_exe { 0 } else { pe.entry },
            system: None,
            is_exe,
            exports,
            tls: if is_exe { None } else { pe.tls.clone() },
            tls_index: None,
            refs: 0,
            pinned: true,
            ldr: 0,
            attached: false,
            gone: false,
            imports: pe.imports.clone(),
            sections: Some(pe),
        });
        self.list.len() - 1
    }

    /// The module a DLL name (or path) names, if loaded.
    pub fn find(&self, name: &str) -> Option<usize> {
        let file = dll_file_name(name);
        if let Some(d) = Dll::resolve(&file) {
            return self.list.iter().position(|m| m.system == Some(d));
        }
        self.list.iter().position(|m| !m.gone && m.system.is_none() && m.name.eq_ignore_ascii_case(&file))
    }

    /// The module whose image holds `addr`.
    pub fn containing(&self, addr: u64) -> Option<usize> {
        self.list.iter().position(|m| !m.gone && addr >= m.base && addr - m.base < m.size)
    }

    /// The module whose handle (base) is `h`.
    pub fn by_handle(&self, h: u64) -> Option<usize> {
        self.list.iter().position(|m| !m.gone && m.base == h)
    }

    fn search(&self, name: &str) -> Option<PathBuf> {
        if name.contains(['/', '\\']) {
            let p = PathBuf::from(name.replace('\\', "/"));
            return p.is_file().then_some(p);
        }
        let file = dll_file_name(name);
        self.dirs.iter().find_map(|d| find_in(d, &file))
    }

    /// The module `name` names, loading it (and what it imports, binding
    /// their imports) when it is not loaded yet. Modules loaded here are
    /// appended to `new` in the order they must be attached.
    pub fn load(&mut self, mem: &AddressSpace, name: &str, by: &str, new: &mut Vec<usize>) -> Result<usize, ModError> {
        if let Some(i) = self.find(name) {
            return Ok(i);
        }
        let dll = dll_file_name(name);
        let path = self.search(name).ok_or_else(|| ModError::Missing { dll: dll.clone(), by: by.into() })?;
        // The same file under another spelling of its name.
        if let Ok(canon) = std::fs::canonicalize(&path) {
            if let Some(i) = self.list.iter().position(|m| !m.gone && m.system.is_none() && Path::new(&m.path) == canon)
            {
                return Ok(i);
            }
        }
        let pe = urun_loader::load_pe(&path, mem).map_err(|source| ModError::Load {
            dll: dll.clone(),
            by: by.into(),
            source,
        })?;
        tracing::debug!(dll, base = format_args!("{:#x}", pe.base), "loaded a PE DLL");
        let idx = self.add_image(mem, pe, false);
        self.bind(mem, idx, new)?;
        self.init_order.push(idx);
        new.push(idx);
        Ok(idx)
    }

    /// Load what module `idx` imports, fill its IAT, give its sections
    /// their protections.
    pub fn bind(&mut self, mem: &AddressSpace, idx: usize, new: &mut Vec<usize>) -> Result<(), ModError> {
        let imports = std::mem::take(&mut self.list[idx].imports);
        let by = self.list[idx].name.clone();
        let mut targets: HashMap<String, usize> = HashMap::new();
        for imp in &imports {
            if let std::collections::hash_map::Entry::Vacant(e) = targets.entry(imp.dll.to_ascii_lowercase()) {
                e.insert(self.load(mem, &imp.dll, &by, new)?);
            }
        }
        for imp in &imports {
            let t = targets[&imp.dll.to_ascii_lowercase()];
            let addr = match self.resolve(mem, t, &imp.name, &by, new, 0)? {
                Some(a) => a,
                None => self.missing_stub(&imp.dll, &imp.name.to_string())?,
            };
            if !crate::linux::guest::write_from(mem, imp.iat, &addr.to_le_bytes()) {
                return Err(ModError::Write(imp.iat));
            }
        }
        if let Some(pe) = &self.list[idx].sections {
            pe.protect(mem).map_err(|source| ModError::Load { dll: by.clone(), by: by.clone(), source })?;
        }
        Ok(())
    }

    /// Where `name` of module `t` is, following forwarders (which may
    /// load the DLL they name). None: not exported.
    pub fn resolve(
        &mut self,
        mem: &AddressSpace,
        t: usize,
        name: &ImportName,
        by: &str,
        new: &mut Vec<usize>,
        depth: u32,
    ) -> Result<Option<u64>, ModError> {
        let m = &self.list[t];
        let rva = match name {
            ImportName::Name(n) => m.exports.by_name(n),
            ImportName::Ordinal(o) => m.exports.by_ordinal(u32::from(*o)),
        };
        let Some(rva) = rva else { return Ok(None) };
        if !m.exports.is_forwarder(rva) {
            return Ok(Some(m.base + u64::from(rva)));
        }
        let base = m.base;
        let read = |at: u64, buf: &mut [u8]| crate::linux::guest::read_into(mem, base + at, buf);
        let Some(text) = rd_cstr(&read, u64::from(rva)) else { return Ok(None) };
        let Some((dll, func)) = text.rsplit_once('.') else { return Ok(None) };
        if depth >= MAX_FORWARDS {
            return Ok(None);
        }
        let target = self.load(mem, dll, by, new)?;
        let next = match func.strip_prefix('#') {
            Some(o) => match o.parse::<u16>() {
                Ok(o) => ImportName::Ordinal(o),
                Err(_) => return Ok(None),
            },
            None => ImportName::Name(func.to_string()),
        };
        self.resolve(mem, target, &next, by, new, depth + 1)
    }

    /// The stub that names `dll!name` when called.
    pub fn missing_stub(&mut self, dll: &str, name: &str) -> Result<u64, ModError> {
        let k = match self.missing.iter().position(|(d, n)| d.eq_ignore_ascii_case(dll) && n == name) {
            Some(k) => k,
            None => {
                if self.missing.len() >= MISSING_CAP {
                    return Err(ModError::TooManyStubs);
                }
                self.missing.push((dll.to_string(), name.to_string()));
                self.missing.len() - 1
            }
        };
        Ok(self.missing_base + super::STUB * k as u64)
    }

    /// The missing stub number `n` is, and where it must be.
    pub fn missing_at(&self, n: usize) -> Option<(&(String, String), u64)> {
        let k = n.checked_sub(self.missing_first)?;
        self.missing.get(k).map(|s| (s, self.missing_base + super::STUB * k as u64))
    }

    /// TLS for the new modules `new` that have it: an index each, a block
    /// (template then zeros) in the array of the thread whose TEB is
    /// `teb`, the index written to the module's `_tls_index`.
    pub fn setup_tls(
        &mut self,
        mem: &AddressSpace,
        heap: &mut super::heap::Heap,
        teb: u64,
        new: &[usize],
    ) -> Result<(), String> {
        for &i in new {
            let Some(tls) = self.list[i].tls.clone() else { continue };
            let index = self.next_tls;
            self.next_tls += 1;
            if u64::from(index) >= self.tls_cap {
                // A larger array, keeping what the thread has (the program's
                // block at index 0).
                let cap = (u64::from(index) + 1).max(64).next_power_of_two();
                let array = heap.alloc_zeroed(8 * cap).ok_or("out of memory")?;
                let old = super::guest_u64(mem, teb + super::teb::TEB_TLS_POINTER).unwrap_or(0);
                let keep = if self.tls_cap > 0 { self.tls_cap } else { 1 };
                for k in 0..keep {
                    let v = if old == 0 { 0 } else { super::guest_u64(mem, old + 8 * k).unwrap_or(0) };
                    super::poke(mem, array + 8 * k, &v.to_le_bytes())?;
                }
                super::poke(mem, teb + super::teb::TEB_TLS_POINTER, &array.to_le_bytes())?;
                self.tls_array = array;
                self.tls_cap = cap;
            }
            let block = tls_block(mem, heap, &tls)?;
            super::poke(mem, self.tls_array + 8 * u64::from(index), &block.to_le_bytes())?;
            super::poke(mem, tls.index_addr, &index.to_le_bytes())?;
            self.list[i].tls_index = Some(index);
        }
        Ok(())
    }

    /// The TLS templates of the DLLs with TLS, with their indices (what a
    /// new thread's array needs besides the program's index 0).
    pub fn tls_templates(&self) -> Vec<(u32, Tls)> {
        self.list.iter().filter(|m| !m.gone).filter_map(|m| Some((m.tls_index?, m.tls.clone()?))).collect()
    }
}

/// An image's base, size and `.pdata` (absolute address, length).
pub(crate) type UnwindImage = (u64, u64, Option<(u64, u64)>);

/// What the other parts of the personality need from the registry once
/// they are merged with it: exception handling registers each real
/// image's `.pdata`, a new thread gets the DLLs' TLS blocks.
impl Modules {
    /// Each real image (the program and the DLLs): base, size and its
    /// `.pdata` (absolute address, length in bytes).
    pub fn unwind_images(&self) -> Vec<UnwindImage> {
        self.list
            .iter()
            .filter(|m| !m.gone && m.system.is_none())
            .filter_map(|m| m.sections.as_ref().map(|pe| (m.base, m.size, pe.exceptions)))
            .collect()
    }

    /// A TLS pointer array for a new thread: the program's block
    /// (`exe_block`, 0 when it has no TLS) at index 0, a fresh block for
    /// each DLL with TLS at its index.
    pub fn thread_tls_array(
        &self,
        mem: &AddressSpace,
        heap: &mut super::heap::Heap,
        exe_block: u64,
    ) -> Result<u64, String> {
        let cap = self.tls_cap.max(16);
        let array = heap.alloc_zeroed(8 * cap).ok_or("out of memory")?;
        super::poke(mem, array, &exe_block.to_le_bytes())?;
        for (index, tls) in self.tls_templates() {
            let block = tls_block(mem, heap, &tls)?;
            super::poke(mem, array + 8 * u64::from(index), &block.to_le_bytes())?;
        }
        Ok(array)
    }
}

/// A TLS block for `tls`: the template, then its zero fill.
pub(crate) fn tls_block(mem: &AddressSpace, heap: &mut super::heap::Heap, tls: &Tls) -> Result<u64, String> {
    let len = (tls.end - tls.start) + u64::from(tls.zero_fill);
    let block = heap.alloc_zeroed(len.max(16)).ok_or("out of memory")?;
    let mut template = vec![0u8; (tls.end - tls.start) as usize];
    if !crate::linux::guest::read_into(mem, tls.start, &mut template) {
        return Err(format!("the TLS template at {:#x} is not readable", tls.start));
    }
    super::poke(mem, block, &template)?;
    Ok(block)
}

/// The export directory of the image at `base` in guest memory.
fn read_exports(mem: &AddressSpace, base: u64, size: u64) -> Option<Exports> {
    let read = |rva: u64, buf: &mut [u8]| {
        rva.checked_add(buf.len() as u64).is_some_and(|e| e <= size)
            && crate::linux::guest::read_into(mem, base + rva, buf)
    };
    Exports::parse(&read)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dll_names_as_loadlibrary_completes_them() {
        assert_eq!(dll_file_name("libfoo"), "libfoo.dll");
        assert_eq!(dll_file_name("libfoo.dll"), "libfoo.dll");
        assert_eq!(dll_file_name(r"C:\x\Foo.DLL"), "Foo.DLL");
        assert_eq!(dll_file_name("/usr/lib/libz.so.1"), "libz.so.1");
        // A trailing dot means "no extension, do not add one".
        assert_eq!(dll_file_name("plain."), "plain");
    }
}
