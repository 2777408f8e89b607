//! urun's loader: recognises a program file, maps an x86-64 ELF
//! (`ET_EXEC`, or a static-PIE `ET_DYN`) into the guest `AddressSpace`, and
//! builds the initial stack (argv, envp, auxv) as Linux does.
//!
//! The loader knows file formats, not syscalls: it maps memory only through
//! `urun_cpu::AddressSpace`, and leaves `brk` to the personality.
//!
//! A dynamic program (`PT_INTERP`) gets its dynamic linker mapped beside it
//! (AT_BASE), as Linux does. A PE32+ program is mapped by `pe` (at its
//! preferred base or relocated); what it imports is reported, for the
//! Win32 personality to bind.

mod elf;
mod error;
mod format;
mod pe;
mod stack;

use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use urun_cpu::mem::page_ceil;
use urun_cpu::{AddressSpace, Backing};

pub use error::LoadError;
pub use format::{identify, Format};
pub use pe::{Import, ImportName, LoadedPe, Tls};
pub use stack::{at, STACK_SIZE};

/// Linux follows at most this many `#!` interpreters (`BINPRM_MAX_RECURSION`).
const MAX_SCRIPT_DEPTH: usize = 4;

/// What the new program is given.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    pub argv: Vec<Vec<u8>>,
    pub envp: Vec<Vec<u8>>,
    /// The name the program was run by (AT_EXECFN).
    pub execfn: Vec<u8>,
    pub hwcap: u64,
    pub hwcap2: u64,
    /// Where to look first for the dynamic linker a program names
    /// (qemu-user's `-L`); the host's own path is the fallback.
    pub sysroot: Option<PathBuf>,
}

/// A program mapped and ready to start.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// Where to start (RIP).
    pub entry: u64,
    /// Initial RSP: points at argc, 16-byte aligned.
    pub stack_pointer: u64,
    /// Page-aligned end of the highest segment: where the heap starts.
    pub brk_start: u64,
    /// End of the PROT_NONE reservation after `brk_start` that keeps room
    /// for the heap (equal to `brk_start` if none could be made).
    pub brk_reserve_end: u64,
    /// Runtime address minus link-time address (0 for ET_EXEC).
    pub load_bias: u64,
    /// Runtime address of the program headers (AT_PHDR; 0 if not loaded).
    pub phdr: u64,
    pub phnum: u64,
    /// The auxiliary vector as written on the stack, ending with (AT_NULL, 0).
    pub auxv: Vec<(u64, u64)>,
    /// Canonical absolute path of the file mapped (for `/proc/self/exe`;
    /// for a `#!` script, its interpreter, as on Linux).
    pub exe_path: PathBuf,
    pub stack_executable: bool,
    /// The dynamic linker mapped for a dynamic program (its path and load
    /// address), if any.
    pub interp: Option<(PathBuf, u64)>,
}

/// A program mapped into the guest, in the shape its format gives: the
/// personality that runs it follows from the variant.
#[derive(Clone, Debug)]
pub enum Program {
    /// An x86-64 ELF (with its initial stack built): the Linux personality.
    Elf(Loaded),
    /// A PE32+ image (imports not yet bound, no stack): the Win32
    /// personality.
    Pe(LoadedPe),
}

/// Load the program at `path` into `mem`, whatever its format. On error
/// nothing stays mapped. `opts` applies to ELF programs (a PE program's
/// command line and environment are the personality's to lay out).
pub fn load_program(path: &Path, mem: &AddressSpace, opts: &LoadOptions) -> Result<Program, LoadError> {
    let mut head = [0u8; 2];
    let is_pe = std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut head)).is_ok() && &head == b"MZ";
    if is_pe {
        let (_, bytes) = open(path)?;
        return pe::load(path, &bytes, mem).map(Program::Pe);
    }
    load(path, mem, opts).map(Program::Elf)
}

/// Load the PE32+ image (a DLL a Windows program imports) at `path` into
/// `mem`, at its preferred base or relocated; the same code as for the
/// program. On error nothing stays mapped.
pub fn load_pe(path: &Path, mem: &AddressSpace) -> Result<LoadedPe, LoadError> {
    let (_, bytes) = open(path)?;
    pe::load(path, &bytes, mem)
}

/// Load the ELF program at `path` into `mem`. On error nothing stays mapped.
///
/// A `#!` script loads its interpreter with the script's path inserted in
/// argv, as Linux does.
pub fn load(path: &Path, mem: &AddressSpace, opts: &LoadOptions) -> Result<Loaded, LoadError> {
    load_depth(path, mem, opts, 0)
}

fn load_depth(path: &Path, mem: &AddressSpace, opts: &LoadOptions, depth: usize) -> Result<Loaded, LoadError> {
    let (file, bytes) = open(path)?;
    match identify(&bytes) {
        Format::ElfX86_64 => load_elf(path, &file, &bytes, mem, opts),
        Format::Elf { class, machine } => Err(format::other_elf_error(class, machine, bytes.len())),
        Format::Pe => Err(format::pe_error(&bytes)),
        Format::Unknown => Err(format::unknown_error(&bytes)),
        Format::Script { interpreter, arg } => {
            if interpreter.is_empty() {
                return Err(LoadError::BadScript("it names no interpreter"));
            }
            if depth >= MAX_SCRIPT_DEPTH {
                return Err(LoadError::ScriptTooDeep);
            }
            let mut argv = vec![interpreter.clone().into_bytes()];
            argv.extend(arg.map(String::into_bytes));
            argv.push(path.as_os_str().as_bytes().to_vec());
            argv.extend(opts.argv.iter().skip(1).cloned());
            let opts = LoadOptions { argv, ..opts.clone() };
            tracing::debug!(script = %path.display(), interpreter, "running a #! script");
            load_depth(Path::new(&interpreter), mem, &opts, depth + 1)
        }
    }
}

/// A program file's bytes: mapped read-only where the file can be (no
/// copy: the loader reads the headers and maps the segments from the file
/// itself; reading the dynamic linker, 215 KB, was about 55 page faults
/// and a copy at every start), read otherwise. Like ld.so, which reads a
/// library's dynamic section from its mapping, urun would take a SIGBUS
/// if the file were truncated while it loads.
struct FileBytes {
    /// A private read-only mapping of the whole file, or null.
    map: *const u8,
    len: usize,
    read: Vec<u8>,
}

impl FileBytes {
    /// Map `file` (`len` bytes), if it can be.
    fn map(file: &std::fs::File, len: u64) -> Option<FileBytes> {
        let len = usize::try_from(len).ok().filter(|&l| l > 0)?;
        // SAFETY: a fresh private read-only mapping of our own descriptor;
        // it is unmapped only when the `FileBytes` goes.
        let p =
            unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_PRIVATE, file.as_raw_fd(), 0) };
        (p != libc::MAP_FAILED).then_some(FileBytes { map: p as *const u8, len, read: Vec::new() })
    }
}

impl std::ops::Deref for FileBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        if self.map.is_null() {
            return &self.read;
        }
        // SAFETY: `map` is our mapping of `len` readable bytes, alive as
        // long as `self`.
        unsafe { std::slice::from_raw_parts(self.map, self.len) }
    }
}

impl Drop for FileBytes {
    fn drop(&mut self) {
        if !self.map.is_null() {
            // SAFETY: our own mapping; the borrows of it ended with `self`'s.
            unsafe { libc::munmap(self.map as *mut libc::c_void, self.len) };
        }
    }
}

/// Open a program file and read it: a regular file only.
fn open(path: &Path) -> Result<(std::fs::File, FileBytes), LoadError> {
    let io = |source| LoadError::Io { path: path.to_path_buf(), source };
    // O_NONBLOCK: opening a FIFO must not hang; regular files ignore it.
    let mut file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if meta.is_dir() {
        return Err(io(std::io::Error::from_raw_os_error(libc::EISDIR)));
    }
    if !meta.is_file() {
        return Err(LoadError::Permission { path: path.to_path_buf() });
    }
    // Like qemu-user, urun runs the file it is given whether or not its
    // execute bit is set: naming it on urun's command line is the request.
    // A guest's execve checks X_OK itself, as the kernel would.
    if let Some(bytes) = FileBytes::map(&file, meta.len()) {
        return Ok((file, bytes));
    }
    let mut bytes = Vec::with_capacity(meta.len().min(1 << 30) as usize);
    file.read_to_end(&mut bytes).map_err(io)?;
    Ok((file, FileBytes { map: std::ptr::null(), len: 0, read: bytes }))
}

fn load_elf(
    path: &Path,
    file: &std::fs::File,
    bytes: &[u8],
    mem: &AddressSpace,
    opts: &LoadOptions,
) -> Result<Loaded, LoadError> {
    let img = elf::parse(bytes)?;
    let io = |source| LoadError::Io { path: path.to_path_buf(), source };
    let exe_path = std::fs::canonicalize(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    let random = stack::random_bytes()?;
    let src = elf::File {
        fd: file.as_raw_fd(),
        bytes,
        path: exe_path.to_string_lossy().into_owned(),
        dev: meta.dev(),
        inode: meta.ino(),
    };

    let mut undo = elf::Undo::new(mem);
    let bias = elf::map_image(mem, &img, &src, BRK_RESERVE, &mut undo)?;
    let brk_start = page_ceil(img.hi() + bias);
    let brk_reserve_end = reserve_heap(mem, brk_start);
    let interp = match &img.interp {
        Some(name) => Some(load_interp(name, mem, opts, &mut undo)?),
        None => None,
    };
    let top = stack::map(mem, img.stack_exec, &mut undo)?;
    let entry = img.entry.wrapping_add(bias);
    if !img.segments.iter().any(|s| s.vaddr + bias <= entry && entry < s.vaddr + bias + s.memsz) {
        tracing::warn!(entry, "the entry point is outside every segment");
    }
    let phdr = img.phdr_addr().map_or(0, |p| p.wrapping_add(bias));
    let (uid, euid, gid, egid) = stack::AuxInfo::ids();
    let info = stack::AuxInfo {
        base: interp.as_ref().map_or(0, |i| i.base),
        phdr,
        phnum: img.phnum,
        entry,
        hwcap: opts.hwcap,
        hwcap2: opts.hwcap2,
        uid,
        euid,
        gid,
        egid,
    };
    let image = stack::build(top, opts, &random, &info)?;
    stack::write(&image);
    undo.keep();
    let loaded = Loaded {
        entry: interp.as_ref().map_or(entry, |i| i.entry),
        stack_pointer: image.sp,
        brk_start,
        brk_reserve_end,
        load_bias: bias,
        phdr,
        phnum: img.phnum,
        auxv: image.auxv,
        exe_path,
        stack_executable: img.stack_exec,
        interp: interp.map(|i| (i.path, i.base)),
    };
    tracing::debug!(?loaded, "loaded");
    Ok(loaded)
}

/// Room kept for the heap after the program image.
pub const BRK_RESERVE: u64 = 1 << 30;

/// The heap's room after a position-independent image, which is placed
/// (by the kernel, top-down) right below other mappings: `map_image`
/// reserves `BRK_RESERVE` more bytes behind it as no-access guest memory,
/// named here; `brk` turns it into heap. Without it the dynamic linker or
/// urun's own mappings would sit right behind the image and `brk` could
/// never grow. Returns the reservation's end.
fn reserve_heap(mem: &AddressSpace, start: u64) -> u64 {
    if mem.is_guest(start, BRK_RESERVE) {
        // A position-independent image was placed with the room behind it.
        mem.set_backing(start, Backing::Named(HEAP_RESERVE.into()));
        return start + BRK_RESERVE;
    }
    // A fixed-address image: the space behind it is normally free, and the
    // heap claims it page by page as it grows.
    start
}

/// The name of the heap reservation in the `AddressSpace`.
pub const HEAP_RESERVE: &str = "[heap reserve]";

/// The dynamic linker, mapped.
struct Interp {
    path: PathBuf,
    base: u64,
    entry: u64,
}

/// Where the dynamic linker `name` is: under the sysroot if it is there,
/// else on the host.
fn interp_path(name: &[u8], opts: &LoadOptions) -> PathBuf {
    let host = PathBuf::from(std::ffi::OsStr::from_bytes(name));
    if let Some(root) = &opts.sysroot {
        let inside = root.join(host.strip_prefix("/").unwrap_or(&host));
        if inside.exists() {
            return inside;
        }
    }
    host
}

/// Map the dynamic linker a program names, as Linux's `load_elf_interp`.
fn load_interp(
    name: &[u8],
    mem: &AddressSpace,
    opts: &LoadOptions,
    undo: &mut elf::Undo<'_>,
) -> Result<Interp, LoadError> {
    let path = interp_path(name, opts);
    let (file, bytes) = open(&path)?;
    if identify(&bytes) != Format::ElfX86_64 {
        return Err(LoadError::BadElf(format!("the dynamic linker {} is not an x86-64 ELF", path.display())));
    }
    let img = elf::parse(&bytes)?;
    if img.interp.is_some() {
        return Err(LoadError::BadElf(format!("the dynamic linker {} names a dynamic linker itself", path.display())));
    }
    let io = |source| LoadError::Io { path: path.clone(), source };
    let meta = file.metadata().map_err(io)?;
    let canonical = std::fs::canonicalize(&path).map_err(io)?;
    let src = elf::File {
        fd: file.as_raw_fd(),
        bytes: &bytes,
        path: canonical.to_string_lossy().into_owned(),
        dev: meta.dev(),
        inode: meta.ino(),
    };
    let bias = elf::map_image(mem, &img, &src, 0, undo)?;
    tracing::debug!(interp = %path.display(), base = format_args!("{bias:#x}"), "mapped the dynamic linker");
    Ok(Interp { path: canonical, base: bias.wrapping_add(img.lo()), entry: img.entry.wrapping_add(bias) })
}

#[cfg(test)]
mod tests;
