//! The JIT engine (`--engine jit`, experimental): guest code is copied
//! verbatim into a code cache and runs natively; only control flow,
//! RIP-relative displacements, FS accesses and SYSCALL are rewritten
//! (`translate.rs`), and what urun must model runs in the interpreter, one
//! block at a time, on the same `AddressSpace` and `CpuState`, so the two
//! engines agree.
//!
//! Phases 1a and most of 1b of `../shared/JIT.md`: direct exits are linked
//! to their targets' translations once both exist (and unlinked when the
//! target goes); returns and indirect branches look their target up inline
//! in a per-thread table; a miss returns to Rust, which translates. A
//! raised interrupt is seen at the next backward link, inline lookup or
//! dispatcher pass, so linked loops still stop for signals. Guest registers
//! are the machine's while translated code runs; the flags and the x87/SSE
//! state go through `CpuState` only when `run` returns to the personality
//! or the interpreter takes a block.
//!
//! Per-thread state lives in `Ctx` (urun's static TLS, `ctx.rs`); the base
//! of the guest's thread segment (`TlsSegment`: its FS, or its GS) is in
//! host GS (set with `wrgsbase`, hence FSGSBASE is required).
//! Each engine (one per guest thread) has its own translations, in chunks
//! of code-cache regions near the guest code (`arena.rs`). A host fault in
//! translated code is claimed through `hostfault` and becomes the guest's
//! fault at the exact guest instruction.

mod arena;
mod check;
mod ctx;
mod translate;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use crate::engine::{Engine, EngineError, Exit, Fault, Interrupt};
use crate::hostfault::{self, HostFault, HostFaultError, InGuest, Recovery, SavedContext};
use crate::interp::Interpreter;
use crate::mem::{AddressSpace, CodeEvent, CodeGuard, CodeSync, Prot, PAGE_SIZE};
use crate::state::{fl, reg, CpuState};

use ctx::{ctx_ptr, reason, Ctx};
use translate::{Fixup, PcEntry, Translation};

/// Why the JIT engine cannot run here.
#[derive(Debug, thiserror::Error)]
pub enum JitError {
    #[error("the host does not let user code set the GS base (no FSGSBASE in AT_HWCAP2)")]
    NoFsgsbase,
    #[error("no free address space for a code cache within reach of guest code at {0:#x}")]
    NoArena(u64),
    #[error("cannot allocate the dispatch table: {0}")]
    Table(std::io::Error),
    #[error(transparent)]
    HostFault(#[from] HostFaultError),
}

impl From<JitError> for EngineError {
    fn from(e: JitError) -> EngineError {
        match e {
            JitError::NoFsgsbase => EngineError::Unavailable(e.to_string()),
            JitError::NoArena(_) | JitError::Table(_) => EngineError::Exhausted(e.to_string()),
            JitError::HostFault(_) => EngineError::Failed(e.to_string()),
        }
    }
}

/// Can the JIT run on this host?
pub fn probe() -> Result<(), JitError> {
    const HWCAP2_FSGSBASE: u64 = 1 << 1;
    // SAFETY: getauxval has no preconditions.
    let hwcap2 = unsafe { libc::getauxval(libc::AT_HWCAP2) };
    if hwcap2 & HWCAP2_FSGSBASE == 0 {
        return Err(JitError::NoFsgsbase);
    }
    Ok(())
}

/// The segment register a guest addresses its per-thread data through.
/// While translated code runs, host FS stays urun's (its `Ctx`) and host GS
/// holds the base of this segment: for `Fs`, FS prefixes are rewritten to
/// GS and GS-prefixed instructions run in the interpreter; for `Gs`, GS
/// prefixes are kept and FS-prefixed instructions run in the interpreter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TlsSegment {
    /// The x86-64 System V TLS ABI: FS.
    #[default]
    Fs,
    /// A thread block addressed through GS (the Windows x64 TEB).
    Gs,
}

impl TlsSegment {
    /// The segment register itself.
    pub(crate) fn register(self) -> iced_x86::Register {
        match self {
            TlsSegment::Fs => iced_x86::Register::FS,
            TlsSegment::Gs => iced_x86::Register::GS,
        }
    }

    /// The other one (the interpreter runs instructions prefixed with it).
    pub(crate) fn other(self) -> iced_x86::Register {
        match self {
            TlsSegment::Fs => iced_x86::Register::GS,
            TlsSegment::Gs => iced_x86::Register::FS,
        }
    }

    /// The guest's base of this segment.
    fn base(self, cpu: &CpuState) -> u64 {
        match self {
            TlsSegment::Fs => cpu.fs_base,
            TlsSegment::Gs => cpu.gs_base,
        }
    }
}

/// `--check` for every JIT engine made from now on (see `check.rs`).
static CHECK: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether `--check` is on (engines made now compare their blocks).
pub fn check_enabled() -> bool {
    CHECK.load(Ordering::Relaxed)
}

/// Run every translated block in lockstep with the interpreter (`--check`):
/// engines made after this call compare each block's results and fail at
/// the first difference. Slow (each block runs twice, unlinked).
pub fn set_check(on: bool) {
    CHECK.store(on, Ordering::Release);
    static AT_FORK: std::sync::Once = std::sync::Once::new();
    if on {
        // SAFETY: registers a handler that only stores atomics.
        AT_FORK.call_once(|| unsafe {
            libc::pthread_atfork(None, None, Some(turns_after_fork));
        });
    }
}

/// Under `--check`, how many times each block is checked before it runs
/// as without it (linked, found by the inline lookups): `URUN_CHECK_RUNS`,
/// default 16; 0 checks every run.
fn check_runs() -> u32 {
    std::env::var("URUN_CHECK_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(16)
}

/// Under `--check`, guest code runs in turns: a block being checked runs
/// in an exclusive turn, so that no other thread's write lands between its
/// two runs (nor between the interpreter's writes and their undoing);
/// everything else (blocks checked enough, the interpreter's blocks) runs
/// in shared turns, concurrently, as without `--check`. A thread waiting
/// for an exclusive turn stops new shared turns and kicks every engine out
/// of translated code (its kick byte: the dispatcher then ends the turn).
/// Threads in the kernel hold no turn.
enum Turn {
    Shared,
    Exclusive,
}

/// Threads in a shared turn.
static SHARED: AtomicU64 = AtomicU64::new(0);
/// Threads waiting for or in an exclusive turn.
static WANTED: AtomicU64 = AtomicU64::new(0);
/// The exclusive turns' ticket lock.
static EXCL_NEXT: AtomicU64 = AtomicU64::new(0);
static EXCL_SERVING: AtomicU64 = AtomicU64::new(0);

/// The kick byte of every JIT engine in the process (an exclusive turn's
/// waiter sets them all).
static KICKS: std::sync::Mutex<Vec<std::sync::Weak<AtomicU8>>> = std::sync::Mutex::new(Vec::new());

/// Under `--check`, keep guest code in every thread waiting while the
/// caller changes guest memory that guest code in another thread may be
/// using at the same time (a lock word, from host code acting for the
/// guest), so that the change cannot land between the two runs of a
/// checked block: an exclusive turn. Without `--check`: `None`, at the
/// cost of one load. Hold it only for the change itself: never across a
/// wait for another guest thread.
pub fn check_exclusive() -> Option<CheckExclusive> {
    CHECK.load(Ordering::Relaxed).then(|| CheckExclusive { _turn: Turn::take(true) })
}

/// What `check_exclusive` holds (an exclusive turn, ended on drop).
pub struct CheckExclusive {
    _turn: Turn,
}

fn kick_all() {
    let Ok(mut kicks) = KICKS.try_lock() else { return };
    kicks.retain(|w| w.strong_count() > 0);
    for k in kicks.iter().filter_map(|w| w.upgrade()) {
        k.store(1, Ordering::Release);
    }
}

/// In a fork's child only the forking thread lives on, and it held no
/// turn (it was in the kernel): no turn is held there.
extern "C" fn turns_after_fork() {
    SHARED.store(0, Ordering::SeqCst);
    WANTED.store(0, Ordering::SeqCst);
    EXCL_SERVING.store(EXCL_NEXT.load(Ordering::SeqCst), Ordering::SeqCst);
}

impl Turn {
    fn take(exclusive: bool) -> Turn {
        if exclusive {
            WANTED.fetch_add(1, Ordering::SeqCst);
            let ticket = EXCL_NEXT.fetch_add(1, Ordering::SeqCst);
            while EXCL_SERVING.load(Ordering::Acquire) != ticket {
                std::thread::yield_now();
            }
            // Shared turns end at the engines' next dispatcher pass (an
            // engine clears its kick byte before it takes a turn, so a kick
            // from here is never lost; again now and then all the same).
            let mut spins = 0u32;
            while SHARED.load(Ordering::SeqCst) != 0 {
                if spins.is_multiple_of(64) {
                    kick_all();
                }
                spins = spins.wrapping_add(1);
                std::thread::yield_now();
            }
            return Turn::Exclusive;
        }
        loop {
            while WANTED.load(Ordering::SeqCst) != 0 {
                std::thread::yield_now();
            }
            SHARED.fetch_add(1, Ordering::SeqCst);
            if WANTED.load(Ordering::SeqCst) == 0 {
                return Turn::Shared;
            }
            SHARED.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        match self {
            Turn::Shared => {
                SHARED.fetch_sub(1, Ordering::SeqCst);
            }
            Turn::Exclusive => {
                EXCL_SERVING.fetch_add(1, Ordering::SeqCst);
                WANTED.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }
}

/// Under `--check`, the blocks checked so far by the engines of one
/// address space (one guest process): guest pc -> (the bytes checked, how
/// many checks passed). A block is translated the same way in every
/// thread, so checks count for the whole process: one checked
/// `check_runs` times runs unchecked in every thread.
struct SharedChecks {
    /// Held weakly: its allocation, the key, is not reused meanwhile.
    space: std::sync::Weak<AddressSpace>,
    blocks: HashMap<u64, (Box<[u8]>, u32)>,
}

static CHECKS: std::sync::Mutex<Vec<SharedChecks>> = std::sync::Mutex::new(Vec::new());

/// Checks passed by the block at `pc` of `mem` whose bytes start `bytes`
/// (with the length of the bytes checked); `pass`: count one more first
/// (`bytes` are then the block's). `None` when nothing is known or the
/// record stays busy (not waited for long: a fork's child may find it
/// held forever; the engine then counts its own checks only).
fn shared_checks(mem: &Arc<AddressSpace>, pc: u64, bytes: &[u8], pass: bool) -> Option<(usize, u32)> {
    if bytes.is_empty() {
        return None;
    }
    let mut g = (0..8).find_map(|_| {
        let g = CHECKS.try_lock().ok();
        if g.is_none() {
            std::thread::yield_now();
        }
        g
    })?;
    g.retain(|c| c.space.strong_count() > 0);
    let i = match g.iter().position(|c| std::ptr::eq(c.space.as_ptr(), Arc::as_ptr(mem))) {
        Some(i) => i,
        None => {
            g.push(SharedChecks { space: Arc::downgrade(mem), blocks: HashMap::new() });
            g.len() - 1
        }
    };
    let map = &mut g[i].blocks;
    let same = |src: &[u8]| bytes.len() >= src.len() && bytes[..src.len()] == *src;
    match map.get_mut(&pc) {
        Some((src, n)) if same(src) => {
            *n += u32::from(pass);
            Some((src.len(), *n))
        }
        _ if pass => {
            map.insert(pc, (Box::from(bytes), 1));
            Some((bytes.len(), 1))
        }
        _ => None,
    }
}

/// Entries of the dispatch table (indexed by the low 16 bits of the pc).
const TABLE_ENTRIES: usize = 1 << 16;
/// Where a table's cache pcs are, from its tags (`translate::HOSTS`).
const HOSTS: usize = translate::TABLE_HOSTS as usize;
/// Where its second way is (`translate::TABLE_WAY2`).
const WAY2: usize = translate::TABLE_WAY2 as usize;
const _: () = assert!(HOSTS == 8 && WAY2 == 16);
/// A pc's table index, as translated code and the dispatcher compute it
/// (flags-free: `mov eax, ecx; bswap eax; lea eax, [rax + rcx]; movzx eax,
/// ax`): its low 16 bits plus bits 16-31 byte-swapped, so that hot pcs
/// 64 KiB apart (cc1 had three at one index, which took turns leaving
/// translated code) land apart. pc and pc + 1 never share an index (see
/// `Table`).
fn index(pc: u64) -> usize {
    let lo = pc as u32;
    (lo.swap_bytes().wrapping_add(lo) & 0xffff) as usize
}

/// The table's size: two ways of tags and cache pcs.
const TABLE_BYTES: usize = TABLE_ENTRIES * 32;
/// Has an engine of this process taken a huge page for its table?
static HUGE_TABLE_TAKEN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// An x86-64 transparent huge page: the main thread's table is one.
const HUGE_PAGE: usize = 2 << 20;
const _: () = assert!(TABLE_BYTES == HUGE_PAGE);

/// The per-thread dispatch table, two-way: 65536 entries of 32 bytes, each
/// a tag (-guest pc) and its cache pc, then the same for the second way, so
/// that the miss routine's probe of the second way reads the cache line the
/// first way's did (cc1's second-way hits waited on that load). Inline
/// lookups and the dispatcher look at the first way; the miss routine
/// tries the second, which holds what a newer pc with the same index pushed
/// out of the first (two hot pcs at one index would otherwise take turns
/// leaving translated code: cc1 did, 735,000 times in a small compile).
///
/// An empty entry is zero, as the fresh mapping is (start-up writes two
/// entries, not a megabyte): tag 0, cache pc 0. A lookup hits when pc +
/// tag (+ the interrupt byte, in inline lookups) is zero, which for a zero
/// tag happens only at index 0 (pc 0) and index 0xfffe (pc -1 with the
/// byte raised): those two hold the miss routine (second way: its tail,
/// `miss2`) when empty, so any match on an empty entry is a miss.
struct Table {
    base: *mut u64,
    /// Indices written since the last flush.
    used: Vec<u32>,
}

impl Table {
    /// A table; `huge`: one transparent huge page (below).
    fn new(huge: bool) -> Result<Table, JitError> {
        let len = TABLE_BYTES;
        // Mapped with room to start it at a 2 MiB boundary, so that it can
        // be one transparent huge page (below).
        let room = len + HUGE_PAGE;
        // SAFETY: a fresh private anonymous mapping, owned by the table.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                room,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(JitError::Table(std::io::Error::last_os_error()));
        }
        let at = (p as usize).next_multiple_of(HUGE_PAGE);
        let head = at - p as usize;
        // SAFETY: the parts of our own fresh mapping before and after the
        // aligned table; nothing refers to them.
        unsafe {
            if head != 0 {
                libc::munmap(p, head);
            }
            if room - head - len != 0 {
                libc::munmap((at + len) as *mut libc::c_void, room - head - len);
            }
        }
        // One huge page instead of 512 pages faulted in one by one: a
        // start-up translates a block every few hundred bytes of code, and
        // the pc's low 16 bits spread their entries over every page of the
        // table (`/bin/true`: about 500 page faults, 0.5 ms). Only a hint:
        // without transparent huge pages the pages fault in as before.
        if huge {
            // SAFETY: our own mapping; the advice changes no contents.
            unsafe { libc::madvise(at as *mut libc::c_void, len, libc::MADV_HUGEPAGE) };
        }
        let mut t = Table { base: at as *mut u64, used: Vec::new() };
        // The first touch is a write (a read would map the shared zero
        // page, and a write to that falls back to small pages).
        t.empty_ends();
        Ok(t)
    }

    /// Entry `i` of `way` (0 or 1): its tag and cache pc.
    fn set(&mut self, way: usize, i: usize, tag: u64, cache: u64) {
        debug_assert!(i < TABLE_ENTRIES && way < 2);
        let w = i * 4 + way * WAY2 / 8;
        // SAFETY: i < TABLE_ENTRIES, way < 2: both words are inside our
        // mapping; only this thread reads the table (from its translated
        // code and dispatcher), never while Rust changes it.
        unsafe {
            *self.base.add(w) = tag;
            *self.base.add(w + HOSTS / 8) = cache;
        }
    }

    fn get(&self, way: usize, i: usize) -> (u64, u64) {
        debug_assert!(i < TABLE_ENTRIES && way < 2);
        let w = i * 4 + way * WAY2 / 8;
        // SAFETY: as in `set`.
        unsafe { (*self.base.add(w), *self.base.add(w + HOSTS / 8)) }
    }

    /// Entry `i` of `way` empty.
    fn empty(&mut self, way: usize, i: usize) {
        if i == 0 || i == index(u64::MAX) {
            self.set(way, i, 0, if way == 0 { ctx::miss_addr() } else { ctx::miss2_addr() });
        } else {
            self.set(way, i, 0, 0);
        }
    }

    /// The entries that an empty tag can match (see `Table`).
    fn empty_ends(&mut self) {
        for way in 0..2 {
            self.empty(way, 0);
            self.empty(way, index(u64::MAX));
        }
    }

    /// Every entry empty (see `Table`).
    fn fill(&mut self) {
        // SAFETY: our own private anonymous mapping; MADV_DONTNEED makes it
        // read as zero again.
        let r = unsafe { libc::madvise(self.base as *mut libc::c_void, TABLE_BYTES, libc::MADV_DONTNEED) };
        if r != 0 {
            for i in 0..TABLE_ENTRIES {
                self.empty(0, i);
                self.empty(1, i);
            }
        }
        self.empty_ends();
        self.used.clear();
    }

    /// Forget `pc` if its entry holds it.
    fn remove(&mut self, pc: u64) {
        let i = index(pc);
        for way in 0..2 {
            if self.get(way, i).0 == pc.wrapping_neg() {
                self.empty(way, i);
            }
        }
    }

    fn insert(&mut self, pc: u64, cache: u64) {
        let i = index(pc);
        let tag = pc.wrapping_neg();
        let (old, old_cache) = self.get(0, i);
        if old != 0 && old != tag {
            // The first way's pc moves to the second.
            self.set(1, i, old, old_cache);
        }
        // The second way is not read otherwise: at start-up nearly every
        // insert is of a new pc into an empty entry, and that read was a
        // cache miss each (the table is cold; 3% of `/bin/true`). Where
        // the second way holds `pc` too (it was pushed there, then the pc
        // that pushed it was removed), the copy is harmless: the first way
        // is looked at first, `remove` and `clear` empty both ways, and
        // the next push overwrites it.
        self.set(0, i, tag, cache);
        // Past a quarter of the table, `clear` zeroes all of it instead.
        if self.used.len() <= TABLE_ENTRIES / 4 {
            self.used.push(i as u32);
        }
    }

    fn clear(&mut self) {
        if self.used.len() > TABLE_ENTRIES / 4 {
            self.fill();
            return;
        }
        for k in 0..self.used.len() {
            let i = self.used[k] as usize;
            self.empty(0, i);
            self.empty(1, i);
        }
        self.used.clear();
    }
}

impl Drop for Table {
    fn drop(&mut self) {
        // SAFETY: our own mapping, no longer referenced (the engine is
        // going away, and `Ctx::table` is rewritten by the next `run`).
        unsafe { libc::munmap(self.base as *mut libc::c_void, TABLE_BYTES) };
    }
}

/// With `URUN_PERF_MAP` set, each translated block is named in
/// `/tmp/perf-<pid>.map` (`jit:<guest pc>`), which `perf report` reads for
/// code it cannot find in a file.
fn perf_map(at: u64, len: u64, pc: u64) {
    use std::io::Write;
    static MAP: std::sync::OnceLock<Option<std::sync::Mutex<std::fs::File>>> = std::sync::OnceLock::new();
    let map = MAP.get_or_init(|| {
        std::env::var_os("URUN_PERF_MAP")?;
        let path = format!("/tmp/perf-{}.map", std::process::id());
        std::fs::OpenOptions::new().append(true).create(true).open(path).ok().map(std::sync::Mutex::new)
    });
    if let Some(f) = map {
        if let Ok(mut f) = f.lock() {
            let _ = writeln!(f, "{at:x} {len:x} jit:{pc:#x}");
        }
    }
}

/// A hasher for maps keyed by guest pc (SipHash, std's default, took 2%
/// of a `/bin/true` start-up in the maps of its 2,100 blocks): a multiply
/// that spreads the pc over the high bits (hashbrown's tag) and folded
/// back into the low bits (its bucket index). The guest chooses its pcs,
/// and only slows itself down by making them collide.
#[derive(Default, Clone, Copy)]
struct PcHasher(u64);

impl std::hash::Hasher for PcHasher {
    fn finish(&self) -> u64 {
        let h = (self.0 ^ (self.0 >> 29)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        h ^ (h >> 32)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

/// A map keyed by guest pc.
type PcMap<V> = HashMap<u64, V, std::hash::BuildHasherDefault<PcHasher>>;

/// A translated block as the fault handler sees it.
struct BlockRec {
    start: u64,
    end: u64,
    map: Box<[PcEntry]>,
}

/// A chunk of a code region and the blocks in it (in address order).
struct Chunk {
    start: u64,
    fill: u64,
    blocks: Vec<BlockRec>,
}

/// Where the code of one engine is: read by the fault handler on the same
/// thread while translated code runs (never while Rust changes it).
struct Index {
    chunks: Vec<Chunk>,
}

impl Index {
    /// The guest pc and fixup for host pc `pc` in translated code.
    fn guest_pc(&self, pc: u64) -> Option<(u64, Fixup)> {
        let c = self.chunks.iter().find(|c| (c.start..c.start + arena::CHUNK).contains(&pc))?;
        let i = c.blocks.partition_point(|b| b.start <= pc);
        let b = c.blocks.get(i.checked_sub(1)?)?;
        if pc >= b.end {
            return None;
        }
        translate::guest_pc_at(&b.map, (pc - b.start) as u32)
    }
}

/// The interrupt flags of every JIT engine in the process, so that the
/// engine that first sees code invalidated in the `AddressSpace` code log
/// makes the others leave translated code and catch up at once (another
/// thread's munmap, mprotect or kernel write of code would otherwise be
/// seen only at their next exit).
static ENGINES: std::sync::Mutex<Vec<std::sync::Weak<Interrupt>>> = std::sync::Mutex::new(Vec::new());
/// The highest code-log position broadcast so far (one broadcast each).
static BROADCAST: AtomicU64 = AtomicU64::new(0);

/// Interrupt every other JIT engine, once per code-log position.
fn broadcast(seq: u64, me: &Arc<Interrupt>) {
    if BROADCAST.fetch_max(seq, Ordering::AcqRel) >= seq {
        return;
    }
    let mut engines = ENGINES.lock().unwrap_or_else(|e| e.into_inner());
    engines.retain(|w| w.strong_count() > 0);
    for flag in engines.iter().filter_map(|w| w.upgrade()) {
        if !Arc::ptr_eq(&flag, me) {
            flag.raise();
        }
    }
}

/// Where a translated block is.
#[derive(Clone, Copy, Debug)]
struct Placed {
    /// Its first cache byte (the `chk` entry).
    start: u64,
    /// Where its guest code starts (the entry from `enter`).
    body: u64,
    /// The end of the guest bytes it was translated from.
    guest_end: u64,
}

/// What the engine knows about a guest pc.
#[derive(Clone, Copy)]
enum Entry {
    Native(Placed),
    /// Translated from a page the guest may write: not in the dispatch
    /// table and never linked to; its guest bytes (in
    /// `JitEngine::sources`) are compared before each run, since a plain
    /// store may have rewritten them.
    Checked(Placed),
    Interp,
}

/// A direct exit of a live block, by target (see `JitEngine::links`).
#[derive(Clone, Copy, Debug)]
struct Site {
    /// The guest pc of the block it is in.
    from: u64,
    /// Absolute address of its rel32.
    at: u64,
    /// Absolute address of its stub.
    stub: u64,
}

/// Should a linked exit from the block at `from` to `target` enter the
/// target through its interrupt check? Backward (and self) exits only: any
/// cycle of blocks has one, so a loop of linked blocks still sees a raised
/// interrupt once per iteration, while forward chains (bounded) run
/// unchecked. `CHECK_EVERY_LINK` checks on every link instead (measured in
/// ARCHITECTURE.md).
fn checked_link(from: u64, target: u64) -> bool {
    CHECK_EVERY_LINK || target <= from
}

const CHECK_EVERY_LINK: bool = false;

/// Past this many chunks, an engine that needs room drops every
/// translation and reuses its chunks (it is in Rust then, so none of its
/// code is running: translations are per thread).
const MAX_CHUNKS: usize = 32;

/// Write a rel32 at `at` so that it jumps to `dest`. False when out of
/// reach (the exit then stays on its stub).
fn aim(at: u64, dest: u64) -> bool {
    let Ok(rel) = i32::try_from((dest as i64).wrapping_sub(at as i64 + 4)) else { return false };
    // SAFETY: `at` is a rel32 inside this engine's own chunk, which no
    // thread runs while Rust runs on the engine's thread (translations
    // are per thread); the write is 4 bytes at a 4-byte boundary or not,
    // either way no one executes it concurrently.
    unsafe { std::ptr::write_unaligned(at as *mut [u8; 4], rel.to_le_bytes()) };
    true
}

/// The JIT engine for one guest thread.
pub struct JitEngine {
    mem: Arc<AddressSpace>,
    interp: Interpreter,
    interrupt: Arc<Interrupt>,
    /// The byte `interrupt.raise()` sets, which the dispatcher, inline
    /// lookups and backward links check.
    kick: Arc<AtomicU8>,
    /// The `AddressSpace` code-log position this engine has caught up to.
    code_seen: u64,
    /// Blocks by guest pc (ordered, for invalidation by range).
    blocks: BTreeMap<u64, Entry>,
    /// Guest bytes of the `Entry::Checked` blocks.
    sources: HashMap<u64, Box<[u8]>>,
    /// Every direct exit of every live translated block, by target pc:
    /// linked to the target while it is `Entry::Native`, on its stub
    /// otherwise.
    links: PcMap<Vec<Site>>,
    /// The targets of each live block's direct exits (to forget its sites
    /// when it goes).
    exits: PcMap<Vec<u64>>,
    index: Box<Index>,
    table: Table,
    /// The guest's thread segment, whose base is in host GS.
    seg: TlsSegment,
    /// The GS base this engine last wrote (the guest's base of `seg`).
    gs_base: Option<u64>,
    /// Thread-pointer offset of `Ctx`.
    tp: i32,
    /// Statistics for the debug log.
    stats: Stats,
    /// `--check`: blocks are not linked nor in the table, and each runs in
    /// the interpreter first (`run_checked`).
    check: bool,
    /// Under `--check`, the guest bytes of every live block.
    check_src: HashMap<u64, Box<[u8]>>,
    /// Under `--check`: how many times each block was checked, and the
    /// blocks checked `check_runs` times, which then run as without it.
    check_count: HashMap<u64, u32>,
    verified: std::collections::HashSet<u64>,
    check_runs: u32,
    /// Under `--check`: a dispatch table that stays empty (see `trusted`).
    empty: Option<Table>,
    /// A test's sabotage of the JIT's results, to show `--check` fails.
    #[cfg(test)]
    corrupt: Option<fn(&mut CpuState)>,
}

#[derive(Default, Debug)]
struct Stats {
    translated: u64,
    linked: u64,
    dropped: u64,
    flushes: u64,
    /// Blocks run by the interpreter instead.
    interpreted: u64,
    /// Writes to write-protected code pages from translated code.
    code_writes: u64,
    /// Blocks translated from pages whose writes are not seen (their bytes
    /// are compared before each run).
    checked: u64,
    /// `--check`: blocks run by both engines and found equal.
    lockstep: u64,
    /// Exits to the run loop for a pc the dispatcher did not find.
    misses: u64,
}

impl JitEngine {
    /// An engine for a guest that keeps its thread data in FS.
    pub fn new(mem: Arc<AddressSpace>) -> Result<JitEngine, JitError> {
        JitEngine::with_segment(mem, TlsSegment::Fs)
    }

    /// An engine for a guest that keeps its thread data in `seg`.
    pub fn with_segment(mem: Arc<AddressSpace>, seg: TlsSegment) -> Result<JitEngine, JitError> {
        probe()?;
        hostfault::install()?;
        let interrupt = Interrupt::new();
        let kick = Arc::new(AtomicU8::new(0));
        // SAFETY: the byte is shared (a stable address) and lives as long
        // as the engine, which unregisters it when dropped.
        unsafe { interrupt.set_kick(&*kick) };
        KICKS.lock().unwrap_or_else(|e| e.into_inner()).push(Arc::downgrade(&kick));
        ENGINES.lock().unwrap_or_else(|e| e.into_inner()).push(Arc::downgrade(&interrupt));
        let mut engine = JitEngine {
            interp: Interpreter::new(mem.clone()),
            code_seen: mem.code_seq(),
            mem,
            interrupt,
            kick,
            blocks: BTreeMap::new(),
            sources: HashMap::new(),
            links: PcMap::default(),
            exits: PcMap::default(),
            index: Box::new(Index { chunks: Vec::new() }),
            // A huge page for the process's first engine (its main
            // thread's start-up), not for every thread: 2 MiB each, where
            // a thread running a little code touches a few small pages.
            table: Table::new(!HUGE_TABLE_TAKEN.swap(true, Ordering::Relaxed))?,
            seg,
            gs_base: None,
            tp: ctx::tp_offset(),
            stats: Stats::default(),
            check: false,
            check_src: HashMap::new(),
            check_count: HashMap::new(),
            verified: std::collections::HashSet::new(),
            check_runs: check_runs(),
            empty: None,
            #[cfg(test)]
            corrupt: None,
        };
        // Translated code's plain stores reach the interpreter's decoded
        // blocks only through write protection or byte compares.
        engine.interp.guard_code(true);
        engine.set_check(CHECK.load(Ordering::Acquire));
        Ok(engine)
    }

    /// Turn `--check` on or off for this engine (before it runs).
    fn set_check(&mut self, on: bool) {
        self.check = on;
        self.interp.journal_writes(on);
        if on && self.empty.is_none() {
            self.empty = Table::new(false).ok();
        }
    }

    /// May the block at `pc` run linked, found by the inline lookups?
    /// Always without --check; under it once the block was checked
    /// `check_runs` times (and never with `check_runs` 0).
    fn trusted(&self, pc: u64) -> bool {
        !self.check || self.verified.contains(&pc)
    }

    /// Drop every translation (the chunks stay this engine's, empty).
    fn flush(&mut self) {
        self.stats.flushes += 1;
        self.blocks.clear();
        self.sources.clear();
        self.check_src.clear();
        self.check_count.clear();
        self.verified.clear();
        self.links.clear();
        self.exits.clear();
        self.table.clear();
        for c in &mut self.index.chunks {
            c.fill = c.start;
            c.blocks.clear();
        }
    }

    /// Drop the block at `pc`: nothing reaches its code any more (its
    /// table entry goes, exits linked to it go back to their stubs). Its
    /// memory is reused at the next `flush`.
    fn drop_block(&mut self, pc: u64) {
        let Some(entry) = self.blocks.remove(&pc) else { return };
        self.stats.dropped += 1;
        self.check_src.remove(&pc);
        match entry {
            Entry::Native(_) => {
                self.table.remove(pc);
                for s in self.links.get(&pc).map(|v| &v[..]).unwrap_or(&[]) {
                    aim(s.at, s.stub);
                }
            }
            Entry::Checked(_) => {
                self.sources.remove(&pc);
            }
            Entry::Interp => return,
        }
        for target in self.exits.remove(&pc).unwrap_or_default() {
            if let Some(v) = self.links.get_mut(&target) {
                v.retain(|s| s.from != pc);
                if v.is_empty() {
                    self.links.remove(&target);
                }
            }
        }
    }

    /// Drop every block translated from guest pages `first..=last`.
    fn drop_pages(&mut self, first: u64, last: u64) {
        let lo = (first * PAGE_SIZE).saturating_sub(translate::MAX_GUEST_SPAN);
        let hi = (last + 1) * PAGE_SIZE;
        let doomed: Vec<u64> = self
            .blocks
            .range(lo..hi)
            .filter(|(&pc, e)| {
                let end = match e {
                    Entry::Native(p) | Entry::Checked(p) => p.guest_end.max(pc + 1),
                    Entry::Interp => pc + 16,
                };
                end > first * PAGE_SIZE
            })
            .map(|(&pc, _)| pc)
            .collect();
        for pc in doomed {
            self.drop_block(pc);
        }
        if self.check {
            // Rewritten code is checked again (not the blocks of the range
            // that stay: they were not translated from those pages).
            let blocks = &self.blocks;
            let kept = |pc: &u64| !(lo..hi).contains(pc) || blocks.contains_key(pc);
            self.verified.retain(kept);
            self.check_count.retain(|pc, _| kept(pc));
        }
    }

    /// The guest code bytes at `pc` that can be fetched (executable guest
    /// pages, at most what a block can span).
    fn fetch(&self, pc: u64, buf: &mut [u8]) -> usize {
        let mut avail = 0u64;
        let mut page = pc & !(PAGE_SIZE - 1);
        while avail < PAGE_SIZE {
            match self.mem.prot_at(page) {
                Some(p) if p.contains(Prot::EXEC) => {}
                _ => break,
            }
            avail = page + PAGE_SIZE - pc;
            page += PAGE_SIZE;
        }
        let avail = (avail as usize).min(buf.len());
        // SAFETY: [pc, pc+avail) lies in executable guest pages, which urun
        // keeps readable; a concurrent unmap ends the copy early.
        match unsafe { hostfault::copy_from_guest(&mut buf[..avail], pc) } {
            Ok(()) => avail,
            Err(p) => p.done as usize,
        }
    }

    /// A chunk with room for a block, within reach of `pc`.
    fn chunk_for(&mut self, pc: u64) -> Result<usize, JitError> {
        let need = translate::MAX_BLOCK_BYTES as u64;
        let room = |c: &Chunk| arena::reaches(c.start, pc) && c.fill + need <= c.start + arena::CHUNK;
        if let Some(i) = self.index.chunks.iter().position(room) {
            return Ok(i);
        }
        if self.index.chunks.len() >= MAX_CHUNKS {
            self.flush();
            if let Some(i) = self.index.chunks.iter().position(room) {
                return Ok(i);
            }
        }
        let start = arena::take_chunk(pc, Recovery::Handler(on_fault))?;
        self.index.chunks.push(Chunk { start, fill: start, blocks: Vec::new() });
        Ok(self.index.chunks.len() - 1)
    }

    /// Catch up with the code log: drop what was translated from
    /// invalidated pages (everything, if the log moved on too far), and
    /// tell the other engines.
    fn sync_code(&mut self) {
        let mut ranges = Vec::new();
        let sync = self.mem.code_events_since(self.code_seen, |ev| {
            if let CodeEvent::Invalidate { first, last } = ev {
                ranges.push((first, last));
            }
        });
        let (seq, all) = match sync {
            CodeSync::UpTo(s) => (s, false),
            CodeSync::Behind(s) => (s, true),
        };
        self.code_seen = seq;
        if all {
            self.flush();
        } else {
            for &(first, last) in &ranges {
                self.drop_pages(first, last);
            }
        }
        if all || !ranges.is_empty() {
            broadcast(seq, &self.interrupt);
        }
    }

    /// Are the guest bytes a checked block was translated from unchanged?
    fn unchanged(&self, pc: u64) -> bool {
        let Some(src) = self.sources.get(&pc) else { return false };
        let mut now = vec![0u8; src.len()];
        // SAFETY: a range this engine fetched before; the copy stops at a
        // page that went away meanwhile.
        let ok = unsafe { hostfault::copy_from_guest(&mut now, pc) }.is_ok();
        ok && now[..] == src[..]
    }

    /// Aim the exit `s` to `target` at its translation, if it is linkable.
    fn link_site(&mut self, s: Site, target: u64) {
        if !(self.trusted(s.from) && self.trusted(target)) {
            // Under --check, a block not yet checked enough runs alone.
            return;
        }
        if let Some(Entry::Native(p)) = self.blocks.get(&target) {
            let dest = if checked_link(s.from, target) { p.start } else { p.body };
            if aim(s.at, dest) {
                self.stats.linked += 1;
            }
        }
    }

    /// The translation of the block at `pc`, made now if needed.
    fn lookup(&mut self, pc: u64) -> Entry {
        match self.blocks.get(&pc).copied() {
            Some(Entry::Native(p)) => {
                // Evicted from the table by a block with the same index:
                // put it back, it is the one running now.
                if self.trusted(pc) {
                    self.table.insert(pc, p.start + translate::IBL as u64);
                }
                return Entry::Native(p);
            }
            Some(Entry::Checked(p)) if self.unchanged(pc) => return Entry::Checked(p),
            Some(Entry::Checked(p)) => {
                // Rewritten where writes are not seen: tell the other
                // engines (the interpreter's decoded blocks) too.
                self.drop_block(pc);
                self.mem.code_written(pc, p.guest_end.saturating_sub(pc).max(1));
            }
            Some(Entry::Interp) => return Entry::Interp,
            None => {}
        }
        let mut buf = [0u8; translate::MAX_INSNS * 15];
        let n = self.fetch(pc, &mut buf);
        if n == 0 {
            // Not executable: the interpreter raises the fetch fault.
            return Entry::Interp;
        }
        // Under --check: checked enough by other threads (the same bytes)?
        let mut shared_len = None;
        if self.check && !self.verified.contains(&pc) && self.check_runs != 0 {
            if let Some((len, _)) =
                shared_checks(&self.mem, pc, &buf[..n], false).filter(|&(_, k)| k >= self.check_runs)
            {
                self.verified.insert(pc);
                shared_len = Some(len);
            }
        }
        let ci = match self.chunk_for(pc) {
            Ok(ci) => ci,
            Err(e) => {
                tracing::debug!(pc = format_args!("{pc:#x}"), "jit: {e}; interpreting");
                self.blocks.insert(pc, Entry::Interp);
                return Entry::Interp;
            }
        };
        let at = self.index.chunks[ci].fill;
        let env = translate::Env {
            tp: self.tp,
            kick: &*self.kick as *const AtomicU8 as u64,
            // A block still under --check looks up in a table that stays
            // empty, so that it exits after itself.
            table: match &self.empty {
                Some(t) if !self.trusted(pc) => t.base as u64,
                _ => self.table.base as u64,
            },
            check: self.check,
            seg: self.seg,
        };
        let mut b = match translate::translate(&buf[..n], pc, at, env) {
            Translation::Interp => {
                self.blocks.insert(pc, Entry::Interp);
                return Entry::Interp;
            }
            Translation::Block(b) => b,
        };
        if shared_len.is_some_and(|len| len != b.guest_len as usize) {
            // Longer than the block other threads checked (more of it is
            // executable now): checked here, translated for that.
            self.verified.remove(&pc);
            let env = translate::Env { table: self.empty.as_ref().map_or(env.table, |t| t.base as u64), ..env };
            b = match translate::translate(&buf[..n], pc, at, env) {
                Translation::Interp => {
                    self.blocks.insert(pc, Entry::Interp);
                    return Entry::Interp;
                }
                Translation::Block(b) => b,
            };
        }
        // Every page it came from is write-protected (a write then reaches
        // the code log before it lands), unless the page will not be:
        // then the block checks its bytes before each run.
        let mut unguarded = false;
        for p in pc / PAGE_SIZE..=(pc + b.guest_len.max(1) - 1) / PAGE_SIZE {
            // Every page, even past an unguarded one.
            unguarded |= self.mem.protect_code(p) == CodeGuard::Unguarded;
        }
        let src = &buf[..b.guest_len as usize];
        // The code log's protocol: mark (and write-protect), then read the
        // code again; a write that raced with the translation is either
        // logged after the mark or seen here.
        self.mem.mark_code(pc, pc + b.guest_len);
        let mut again = [0u8; translate::MAX_INSNS * 15];
        let again = &mut again[..src.len()];
        // SAFETY: the range was just fetched; the copy stops at a page that
        // went away meanwhile.
        if unsafe { hostfault::copy_from_guest(again, pc) }.is_err() || again[..] != src[..] {
            return Entry::Interp;
        }
        let len = b.code.len() as u64;
        // SAFETY: [at, at+len) is free space in our own read-write-execute
        // chunk (len <= MAX_BLOCK_BYTES, checked room); no thread runs it yet.
        unsafe { std::ptr::copy_nonoverlapping(b.code.as_ptr(), at as *mut u8, b.code.len()) };
        perf_map(at, len, pc);
        let c = &mut self.index.chunks[ci];
        c.fill = (at + len + 15) & !15;
        c.blocks.push(BlockRec { start: at, end: at + len, map: b.map.into_boxed_slice() });
        self.stats.translated += 1;
        let placed = Placed { start: at, body: at + b.body as u64, guest_end: pc + b.guest_len };
        let entry = if unguarded {
            self.stats.checked += 1;
            self.sources.insert(pc, Box::from(&again[..]));
            Entry::Checked(placed)
        } else {
            if self.trusted(pc) {
                self.table.insert(pc, at + translate::IBL as u64);
            }
            Entry::Native(placed)
        };
        if !self.trusted(pc) {
            self.check_src.insert(pc, src.to_vec().into_boxed_slice());
        }
        self.blocks.insert(pc, entry);
        // Its exits: linked to targets already translated, and recorded
        // so that targets translated later link them.
        let mut targets = Vec::with_capacity(b.links.len());
        for l in &b.links {
            let s = Site { from: pc, at: at + l.at as u64, stub: at + l.stub as u64 };
            // Most targets have one site: room for one (a first push
            // makes room for four, 96 bytes).
            self.links.entry(l.target).or_insert_with(|| Vec::with_capacity(1)).push(s);
            targets.push(l.target);
            self.link_site(s, l.target);
        }
        self.exits.insert(pc, targets);
        // Exits of other blocks waiting for this one.
        if let Entry::Native(_) = entry {
            // Taken out while linking (`link_site` does not look at
            // `links`), not copied: a copy was an allocation per block.
            let waiting = self.links.get_mut(&pc).map(std::mem::take).unwrap_or_default();
            for &s in &waiting {
                if s.from != pc {
                    self.link_site(s, pc);
                }
            }
            if let Some(v) = self.links.get_mut(&pc) {
                *v = waiting;
            }
        }
        entry
    }
}

impl JitEngine {
    /// Run the block at `pc` (translated at `p`) under `--check`: the
    /// interpreter first, its writes journaled and undone, then the block
    /// alone, translated; compare. The guest state is in `Ctx` before and
    /// in `cpu` after. `Some(exit)` when the block ended with one.
    fn run_checked(
        &mut self,
        pc: u64,
        p: Placed,
        cp: *mut Ctx,
        cpu: &mut CpuState,
    ) -> Result<Option<Exit>, EngineError> {
        // SAFETY: this thread's Ctx, not referenced across `urun_jit_enter`.
        save(unsafe { &*cp }, cpu);
        let before = cpu.clone();
        let insns = check::decode(self.check_src.get(&pc).map(|b| &b[..]).unwrap_or(&[]), pc);
        let read = |addr: u64, n: usize| {
            let mut v = vec![0u8; n];
            // SAFETY: bytes the interpreter just wrote (guest memory); a
            // racing unmap is the error.
            unsafe { hostfault::copy_from_guest(&mut v, addr) }.ok().map(|()| v)
        };
        let mut icpu = before.clone();
        // The journal is on for the engine's life under --check (turning
        // it on drops the interpreter's cached permissions): forget what
        // the interpreter's own blocks wrote since the last check.
        self.interp.take_journal();
        let mut iexit = None;
        // Instruction by instruction while control stays on the block's
        // straight line (a taken `jcc` leaves a block in its middle).
        let mut ran = 0;
        for insn in &insns {
            ran += 1;
            if let Some(e) = self.interp.step(&mut icpu) {
                iexit = Some(e);
                break;
            }
            if icpu.rip != insn.next_ip() {
                break;
            }
        }
        let insns = &insns[..ran];
        let journal = self.interp.take_journal();
        let written: Vec<(crate::interp::Written, Vec<u8>)> = journal
            .into_iter()
            .map(|w| (read(w.addr, w.old.len()).unwrap_or_default(), w))
            .map(|(n, w)| (w, n))
            .collect();
        for (w, _) in written.iter().rev() {
            // SAFETY: bytes the interpreter just wrote, put back as they were.
            let _ = unsafe { hostfault::copy_to_guest(w.addr, &w.old) };
        }
        // SAFETY: this thread's Ctx, not referenced across `urun_jit_enter`.
        load(unsafe { &mut *cp }, &before);
        // The dispatcher finds nothing either: the block runs alone.
        if let Some(t) = &self.empty {
            // SAFETY: as above.
            unsafe { (*cp).table = t.base as u64 };
        }
        // SAFETY: `p.body` is a translated block in our chunk; Ctx holds
        // the guest state and the routines' addresses.
        unsafe { ctx::urun_jit_enter(p.body) };
        // SAFETY: this thread's Ctx, not referenced across `urun_jit_enter`.
        unsafe { (*cp).table = self.table.base as u64 };
        // SAFETY: as above.
        let c = unsafe { &*cp };
        save(c, cpu);
        let jexit = match c.reason {
            reason::MISS | reason::INTERRUPTED => None,
            reason::SYSCALL => {
                cpu.gpr[reg::RCX] = cpu.rip;
                cpu.gpr[reg::R11] = cpu.flags.get() & !0x1_0000;
                Some(Exit::Syscall)
            }
            reason::FAULT => {
                let f = c.fault;
                let hf = HostFault { signo: f.signo, addr: f.addr, write: f.write != 0, code: f.code };
                Some(Exit::Fault(Fault { pc: cpu.rip, kind: self.mem.guest_fault_kind(&hf) }))
            }
            reason::CODE_WRITE => {
                // The block stopped at a write to its own code (the
                // interpreter's run did not fault there): not compared;
                // the write runs alone, as without --check.
                self.stats.code_writes += 1;
                self.sync_code();
                return Ok(self.interp.step(cpu));
            }
            other => return Err(EngineError::Failed(format!("jit: unknown exit reason {other}"))),
        };
        #[cfg(test)]
        if let Some(f) = self.corrupt {
            f(cpu);
        }
        let io = check::Outcome { cpu: icpu, exit: iexit };
        let jo = check::Outcome { cpu: cpu.clone(), exit: jexit };
        if let Some(m) = check::compare(&insns, &io, &jo, &written, read) {
            return Err(EngineError::Failed(check::report(pc, &insns, &m)));
        }
        self.stats.lockstep += 1;
        let n = self.check_count.entry(pc).or_insert(0);
        *n += 1;
        let src = self.check_src.get(&pc).map(|b| &b[..]).unwrap_or(&[]);
        let n = (*n).max(shared_checks(&self.mem, pc, src, true).map_or(0, |(_, k)| k));
        if self.check_runs != 0 && n >= self.check_runs {
            // Checked enough: translated again, it runs linked from now on.
            self.verified.insert(pc);
            self.drop_block(pc);
        }
        Ok(jo.exit)
    }
}

impl Drop for JitEngine {
    fn drop(&mut self) {
        tracing::debug!(stats = ?self.stats, "jit: engine done");
        // SAFETY: unregistering (null) before the byte goes.
        unsafe { self.interrupt.set_kick(std::ptr::null()) };
        for c in &self.index.chunks {
            arena::give_back(c.start);
        }
    }
}

/// Guest state into `Ctx` (TF is not set on the machine: single-stepping
/// is not modelled; AC is, and checks alignment as natively).
fn load(c: &mut Ctx, cpu: &CpuState) {
    c.gpr = cpu.gpr;
    c.rip = cpu.rip;
    c.rflags = (cpu.flags.get() & !fl::TF) | 0x202;
    c.fx = cpu.fxsave_image();
    c.ymm_hi = cpu.ymm_hi;
}

/// Guest state back from `Ctx`.
fn save(c: &Ctx, cpu: &mut CpuState) {
    cpu.gpr = c.gpr;
    cpu.rip = c.rip;
    cpu.flags.set((c.rflags & fl::USER_WRITABLE) | 0x202);
    // FXSAVE64 wrote the machine's state, which is valid (the image says
    // where the last x87 instruction was in the cache: the interpreter's
    // model reports FIP/FDP as 0, and so does `fxrstor_image`).
    let ok = cpu.fxrstor_image(&c.fx);
    debug_assert!(ok, "FXSAVE64 image with a reserved MXCSR bit");
    cpu.ymm_hi = c.ymm_hi;
}

thread_local! {
    static PREPARED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The host-fault owner's callback for faults in code regions: runs in the
/// signal handler, on the faulting thread, with urun's FS.
fn on_fault(hf: &HostFault, sc: &mut SavedContext<'_>) -> bool {
    let c = ctx_ptr();
    // SAFETY: this thread's Ctx; `index` points to the engine running on
    // this thread (set by `run`), which is inside translated code now and
    // so not changing its index.
    unsafe {
        let index = (*c).index as *const Index;
        if index.is_null() {
            return false;
        }
        let Some((pc, fixup)) = (*index).guest_pc(sc.pc()) else { return false };
        if fixup == Fixup::RestoreRcx {
            sc.set_reg(reg::RCX, (*c).s_rcx);
        }
        (*c).rip = pc;
        if hf.signo == hostfault::CODE_WRITE {
            (*c).reason = reason::CODE_WRITE;
            sc.set_pc(ctx::exit_addr());
            return true;
        }
        (*c).reason = reason::FAULT;
        (*c).fault = ctx::FaultRecord { signo: hf.signo, code: hf.code, addr: hf.addr, write: hf.write as u64 };
    }
    sc.set_pc(ctx::exit_addr());
    true
}

impl JitEngine {
    /// Host GS base = the guest's base of its thread segment.
    fn sync_gs(&mut self, cpu: &CpuState) {
        let base = self.seg.base(cpu);
        if self.gs_base != Some(base) {
            // SAFETY: FSGSBASE is enabled (checked in `new`); urun does not
            // use GS, so only translated code sees this base.
            unsafe { std::arch::asm!("wrgsbase {b}", b = in(reg) base, options(nostack, preserves_flags)) };
            self.gs_base = Some(base);
        }
    }
}

impl Engine for JitEngine {
    fn run(&mut self, cpu: &mut CpuState) -> Result<Exit, EngineError> {
        if !PREPARED.with(|p| p.get()) {
            if let Err(e) = hostfault::prepare_thread() {
                tracing::warn!("jit: {e}");
            }
            PREPARED.with(|p| p.set(true));
        }
        let _guest = InGuest::enter();
        self.sync_gs(cpu);
        let cp = ctx_ptr();
        // Every `&*cp` below: this thread's Ctx; nothing else on this
        // thread uses it while `run` does (a vfork child sharing the TLS
        // runs while we wait, outside `run`). No reference is held across
        // `urun_jit_enter`, which writes it.
        {
            // SAFETY: as said above.
            let c = unsafe { &mut *cp };
            c.table = self.table.base as u64;
            c.interrupt = &*self.kick as *const AtomicU8 as u64;
            c.dispatch = ctx::dispatch_addr();
            c.exit = ctx::exit_addr();
            c.miss = ctx::miss_addr();
            c.avx = u64::from(crate::cpuid::model().has("avx"));
            c.index = &*self.index as *const Index as u64;
            load(c, cpu);
        }
        // Under --check: the next turn must be exclusive (a block to check).
        let mut exclusive = false;
        let exit = loop {
            // Clear the byte before taking the request: a raise after this
            // sets it again, and the dispatcher then stops at the next block.
            // Before a turn too: a kick for an exclusive turn comes after
            // this turn began, and is not lost.
            self.kick.store(0, Ordering::SeqCst);
            // Under --check, a turn (before catching up with the code log:
            // no write lands between that and a checked block's two runs).
            let _turn = self.check.then(|| Turn::take(std::mem::take(&mut exclusive)));
            let in_exclusive = matches!(_turn, Some(Turn::Exclusive));
            if self.interrupt.take() {
                // SAFETY: this thread's Ctx, not referenced across `urun_jit_enter`.
                save(unsafe { &*cp }, cpu);
                break Ok(Exit::Interrupted);
            }
            if self.mem.code_seq() != self.code_seen {
                self.sync_code();
            }
            // SAFETY: this thread's Ctx, not referenced across `urun_jit_enter`.
            let rip = unsafe { (*cp).rip };
            match self.lookup(rip) {
                Entry::Native(_) | Entry::Checked(_) if !self.trusted(rip) && !in_exclusive => {
                    // Checked alone: again, in an exclusive turn.
                    exclusive = true;
                    continue;
                }
                Entry::Native(p) | Entry::Checked(p) if !self.trusted(rip) => match self.run_checked(rip, p, cp, cpu) {
                    Ok(Some(exit)) => break Ok(exit),
                    // SAFETY: this thread's Ctx, not referenced across `urun_jit_enter`.
                    Ok(None) => load(unsafe { &mut *cp }, cpu),
                    Err(e) => break Err(e),
                },
                // Never linked code in an exclusive turn: it may wait for
                // another thread, which waits for a turn.
                Entry::Native(_) | Entry::Checked(_) if in_exclusive => continue,
                Entry::Native(p) | Entry::Checked(p) => {
                    // SAFETY: `p.body` is a translated block in our chunk;
                    // Ctx holds the guest state and the routines' addresses.
                    unsafe { ctx::urun_jit_enter(p.body) };
                    // SAFETY: this thread's Ctx, not referenced across `urun_jit_enter`.
                    let c = unsafe { &*cp };
                    match c.reason {
                        reason::MISS => {
                            self.stats.misses += 1;
                            continue;
                        }
                        reason::INTERRUPTED => continue,
                        reason::SYSCALL => {
                            save(c, cpu);
                            // As the hardware does: RCX = return address,
                            // R11 = RFLAGS.
                            cpu.gpr[reg::RCX] = cpu.rip;
                            cpu.gpr[reg::R11] = cpu.flags.get() & !0x1_0000;
                            break Ok(Exit::Syscall);
                        }
                        reason::CODE_WRITE => {
                            // The write goes to code: what was translated
                            // from its page is gone (the code log), and the
                            // writing instruction runs alone in the
                            // interpreter, so that the code it writes (the
                            // next instruction, maybe) runs as written.
                            save(c, cpu);
                            self.stats.code_writes += 1;
                            self.sync_code();
                            if let Some(exit) = self.interp.step(cpu) {
                                break Ok(exit);
                            }
                            // SAFETY: this thread's Ctx, not referenced across `urun_jit_enter`.
                            load(unsafe { &mut *cp }, cpu);
                        }
                        reason::FAULT => {
                            save(c, cpu);
                            let f = c.fault;
                            let hf = HostFault { signo: f.signo, addr: f.addr, write: f.write != 0, code: f.code };
                            break Ok(Exit::Fault(Fault { pc: cpu.rip, kind: self.mem.guest_fault_kind(&hf) }));
                        }
                        other => {
                            save(c, cpu);
                            break Err(EngineError::Failed(format!("jit: unknown exit reason {other}")));
                        }
                    }
                }
                Entry::Interp => {
                    self.stats.interpreted += 1;
                    // SAFETY: this thread's Ctx, not referenced across `urun_jit_enter`.
                    save(unsafe { &*cp }, cpu);
                    if let Some(exit) = self.interp.run_block(cpu) {
                        break Ok(exit);
                    }
                    // The block may have written the segment's base
                    // (WRFSBASE/WRGSBASE run there).
                    self.sync_gs(cpu);
                    // SAFETY: this thread's Ctx, not referenced across `urun_jit_enter`.
                    load(unsafe { &mut *cp }, cpu);
                }
            }
        };
        // SAFETY: this thread's Ctx, not referenced across `urun_jit_enter`.
        unsafe { (*cp).index = 0 };
        // As the interpreter engine does before its thread leaves guest
        // code: report fallback writes that raced with a translation.
        self.interp.sync_marks();
        exit
    }

    fn name(&self) -> &'static str {
        "jit"
    }

    fn interrupt_handle(&self) -> Arc<Interrupt> {
        self.interrupt.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::difftest::Snippet;
    use crate::engine::{FaultKind, PageFaultKind};

    #[test]
    fn a_table_starts_empty_and_a_huge_one_is_aligned() {
        for huge in [true, false] {
            let mut t = Table::new(huge).expect("a dispatch table");
            if huge {
                assert_eq!(t.base as usize % HUGE_PAGE, 0);
            }
            let (a, i) = (0x7f00_1234u64, index(0x7f00_1234));
            // Another pc at the same index.
            let b = (a + 1..).find(|&pc| index(pc) == i).expect("a colliding pc");
            assert_eq!(t.get(0, i), (0, 0));
            assert_eq!(t.get(1, i), (0, 0));
            assert_eq!(t.get(0, 0), (0, ctx::miss_addr()));
            assert_eq!(t.get(1, index(u64::MAX)), (0, ctx::miss2_addr()));
            t.insert(a, 0x42);
            assert_eq!(t.get(0, i), (a.wrapping_neg(), 0x42));
            t.insert(b, 0x43);
            assert_eq!(t.get(0, i), (b.wrapping_neg(), 0x43));
            assert_eq!(t.get(1, i), (a.wrapping_neg(), 0x42));
        }
    }

    /// Run `code` (ending in something that exits) under the interpreter
    /// and under the JIT from the same state; both results.
    fn both(s: &Snippet, code: &[u8], init: impl Fn(&mut CpuState)) -> [(CpuState, Exit); 2] {
        run_both(s, code, false, init).0
    }

    /// As `both`, with the code page made read-only (RX) first, so that
    /// its blocks are linked and found by the inline lookups.
    fn both_ro(s: &Snippet, code: &[u8], init: impl Fn(&mut CpuState)) -> ([(CpuState, Exit); 2], Stats) {
        run_both(s, code, true, init)
    }

    fn run_both(
        s: &Snippet,
        code: &[u8],
        read_only: bool,
        init: impl Fn(&mut CpuState),
    ) -> ([(CpuState, Exit); 2], Stats) {
        // SAFETY: the snippet's code area is ours, 16 KiB, mapped RW.
        unsafe { std::ptr::copy_nonoverlapping(code.as_ptr(), s.code as *mut u8, code.len()) };
        if read_only {
            s.mem.protect(s.code, 4 * PAGE_SIZE, Prot::RX).expect("protect");
        }
        let start = || {
            let mut cpu = CpuState { rip: s.code, ..CpuState::default() };
            cpu.gpr[reg::RSP] = s.stack_top;
            init(&mut cpu);
            cpu
        };
        let mut a = start();
        let ea = Interpreter::new(s.mem.clone()).run(&mut a);
        let mut b = start();
        let mut jit = JitEngine::new(s.mem.clone()).expect("jit engine");
        // Other tests' engines in this process may interrupt this one
        // (code invalidated anywhere reaches every engine): run on.
        let eb = loop {
            match jit.run(&mut b).expect("jit run") {
                Exit::Interrupted => continue,
                e => break e,
            }
        };
        let stats = std::mem::take(&mut jit.stats);
        ([(a, ea), (b, eb)], stats)
    }

    fn assert_same(r: &[(CpuState, Exit); 2]) {
        let [(a, ea), (b, eb)] = r;
        assert_eq!(ea, eb, "exits");
        assert_eq!(a.gpr, b.gpr, "gprs");
        assert_eq!(a.rip, b.rip, "rip");
        assert_eq!(a.flags.get(), b.flags.get(), "rflags");
        assert_eq!(a.xmm, b.xmm, "xmm");
        assert_eq!(a.mxcsr, b.mxcsr, "mxcsr");
    }

    #[test]
    fn loop_and_flags_agree_with_the_interpreter() {
        let s = Snippet::new();
        // mov ecx, 10; xor eax, eax; L: add eax, ecx; loop L; cmp eax, 55; syscall
        let code = [0xb9, 10, 0, 0, 0, 0x31, 0xc0, 0x01, 0xc8, 0xe2, 0xfc, 0x83, 0xf8, 0x37, 0x0f, 0x05];
        let r = both(&s, &code, |_| {});
        assert_eq!(r[1].1, Exit::Syscall);
        assert_eq!(r[1].0.gpr[reg::RAX], 55);
        assert_same(&r);
    }

    #[test]
    fn calls_returns_and_fs_accesses_agree() {
        let s = Snippet::new();
        // mov rax, fs:[8]; call f; syscall; f: add rax, 1; ret
        let code = [0x64, 0x48, 0x8b, 0x04, 0x25, 8, 0, 0, 0, 0xe8, 2, 0, 0, 0, 0x0f, 0x05, 0x48, 0x83, 0xc0, 1, 0xc3];
        // SAFETY: the snippet's data area, mapped RW.
        unsafe { *((s.data + 8) as *mut u64) = 41 };
        let data = s.data;
        let r = both(&s, &code, |c| c.fs_base = data);
        assert_eq!(r[1].0.gpr[reg::RAX], 42);
        assert_same(&r);
    }

    #[test]
    fn a_gs_guest_reads_its_gs_and_fs_bases_as_the_interpreter_does() {
        let s = Snippet::new();
        // mov rax, gs:[8]; mov rbx, fs:[16]; jmp +0; add rax, gs:[24]; syscall
        let code = [
            0x65, 0x48, 0x8b, 0x04, 0x25, 8, 0, 0, 0, 0x64, 0x48, 0x8b, 0x1c, 0x25, 16, 0, 0, 0, 0xeb, 0, 0x65, 0x48,
            0x03, 0x04, 0x25, 24, 0, 0, 0, 0x0f, 0x05,
        ];
        // SAFETY: the snippet's code and data areas, mapped RW.
        unsafe {
            std::ptr::copy_nonoverlapping(code.as_ptr(), s.code as *mut u8, code.len());
            *((s.data + 8) as *mut u64) = 40;
            *((s.data + 24) as *mut u64) = 2;
            *((s.data + 0x816) as *mut u64) = 7;
        }
        let start = || {
            let mut cpu = CpuState { rip: s.code, gs_base: s.data, fs_base: s.data + 0x806, ..CpuState::default() };
            cpu.gpr[reg::RSP] = s.stack_top;
            cpu
        };
        let mut a = start();
        let ea = Interpreter::new(s.mem.clone()).run(&mut a);
        let mut b = start();
        let mut jit = JitEngine::with_segment(s.mem.clone(), TlsSegment::Gs).expect("jit engine");
        let eb = loop {
            match jit.run(&mut b).expect("jit run") {
                Exit::Interrupted => continue,
                e => break e,
            }
        };
        assert_eq!(b.gpr[reg::RAX], 42, "GS accesses ran natively with the guest's GS base");
        assert_eq!(b.gpr[reg::RBX], 7, "the FS access ran in the interpreter with the guest's FS base");
        assert_same(&[(a, ea), (b, eb)]);
        assert_eq!(jit.stats.interpreted, 1, "{:?}", jit.stats);
        assert!(jit.stats.translated >= 2, "{:?}", jit.stats);
    }

    #[test]
    fn a_fault_in_translated_code_has_the_guest_state() {
        let s = Snippet::new();
        // mov ebx, 5; xor eax, eax; add rbx, 1; mov rax, [rax]
        let code = [0xbb, 5, 0, 0, 0, 0x31, 0xc0, 0x48, 0x83, 0xc3, 1, 0x48, 0x8b, 0x00];
        let r = both(&s, &code, |_| {});
        let fault =
            Fault { pc: s.code + 11, kind: FaultKind::Page { addr: 0, write: false, kind: PageFaultKind::NotMapped } };
        assert_eq!(r[1].1, Exit::Fault(fault));
        assert_eq!(r[1].0.gpr[reg::RBX], 6);
        assert_same(&r);
    }

    #[test]
    fn a_fault_pushing_an_indirect_call_restores_rcx() {
        let s = Snippet::new();
        // mov ecx, 0x77; call rax   (with RSP at an unmapped page)
        let code = [0xb9, 0x77, 0, 0, 0, 0xff, 0xd0];
        let target = s.code;
        let r = both(&s, &code, |c| {
            c.gpr[reg::RSP] = 0x2000;
            c.gpr[reg::RAX] = target;
        });
        let fault = Fault {
            pc: s.code + 5,
            kind: FaultKind::Page { addr: 0x1ff8, write: true, kind: PageFaultKind::NotMapped },
        };
        assert_eq!(r[1].1, Exit::Fault(fault));
        assert_eq!(r[1].0.gpr[reg::RCX], 0x77);
        assert_eq!(r[1].0.gpr[reg::RSP], 0x2000);
        assert_same(&r);
    }

    #[test]
    fn cpuid_and_sse_state_cross_the_interpreter() {
        let s = Snippet::new();
        // mov eax, 1; cvtsi2sd xmm1, rax; xor ecx, ecx; cpuid; addsd xmm1, xmm1; syscall
        let code = [
            0xb8, 1, 0, 0, 0, 0xf2, 0x48, 0x0f, 0x2a, 0xc8, 0x31, 0xc9, 0x0f, 0xa2, 0xf2, 0x0f, 0x58, 0xc9, 0x0f, 0x05,
        ];
        let r = both(&s, &code, |_| {});
        assert_eq!(r[1].0.xmm[1] as u64, 2.0f64.to_bits());
        // EDX: the model's leaf-1 features (RCX is SYSCALL's return address).
        assert_eq!(r[1].0.gpr[reg::RDX] as u32, crate::cpuid::guest_cpuid(1, 0)[3]);
        assert_same(&r);
    }

    #[test]
    fn code_rewritten_in_a_writable_page_is_seen() {
        let s = Snippet::new();
        let mut jit = JitEngine::new(s.mem.clone()).expect("jit engine");
        let mut run = |imm: u8| {
            // mov eax, imm; syscall (the snippet's code page is writable)
            let code = [0xb8, imm, 0, 0, 0, 0x0f, 0x05];
            // SAFETY: the snippet's code area, mapped RW.
            unsafe { std::ptr::copy_nonoverlapping(code.as_ptr(), s.code as *mut u8, code.len()) };
            let mut cpu = CpuState { rip: s.code, ..CpuState::default() };
            cpu.gpr[reg::RSP] = s.stack_top;
            assert_eq!(jit.run(&mut cpu), Ok(Exit::Syscall));
            cpu.gpr[reg::RAX]
        };
        assert_eq!(run(1), 1);
        assert_eq!(run(2), 2, "the block was rewritten by a plain store");
    }

    #[test]
    fn code_writing_the_next_instruction_is_seen_at_once() {
        let s = Snippet::new();
        // mov byte ptr [rip + 1], 7 (the immediate of the next instruction);
        // mov eax, 1; syscall. The page is writable and executable: it is
        // write-protected while translated, the write faults, and the
        // rewritten instruction runs as written.
        let code = [0xc6, 0x05, 1, 0, 0, 0, 7, 0xb8, 1, 0, 0, 0, 0x0f, 0x05];
        let (r, stats) = run_both(&s, &code, false, |_| {});
        assert_eq!(r[0].0.gpr[reg::RAX], 7, "the interpreter");
        assert_same(&r);
        assert_eq!(stats.code_writes, 1, "{stats:?}");
        assert_eq!(stats.checked, 0, "{stats:?}");
    }

    #[test]
    fn a_page_made_writable_after_translation_is_seen() {
        let s = Snippet::new();
        let mut jit = JitEngine::new(s.mem.clone()).expect("jit engine");
        let page = s.code / PAGE_SIZE;
        let put = |imm: u8| {
            // SAFETY: the snippet's code area: a guest page the guest may
            // write now (a write-protected one faults, and the host-fault
            // owner makes it writable again).
            unsafe { std::ptr::copy_nonoverlapping([0xb8, imm, 0, 0, 0, 0x0f, 0x05].as_ptr(), s.code as *mut u8, 7) };
        };
        let run = |jit: &mut JitEngine| {
            let mut cpu = CpuState { rip: s.code, ..CpuState::default() };
            cpu.gpr[reg::RSP] = s.stack_top;
            assert_eq!(jit.run(&mut cpu), Ok(Exit::Syscall));
            cpu.gpr[reg::RAX]
        };
        put(1);
        s.mem.protect(s.code, PAGE_SIZE, Prot::RX).expect("protect");
        assert_eq!(run(&mut jit), 1);
        // Writable again, still executable: the block stays (no exit
        // through the log), but a write must reach it.
        s.mem.protect(s.code, PAGE_SIZE, Prot::RW.union(Prot::EXEC)).expect("protect");
        assert_eq!(s.mem.prot_at(s.code), Some(Prot(7)), "the guest's view");
        assert!(s.mem.is_code_guarded(page));
        put(2);
        assert!(!s.mem.is_code_guarded(page), "the write disarmed the page");
        assert_eq!(run(&mut jit), 2);
        assert_eq!(s.mem.code_write_faults(page), 1);
        assert_eq!(jit.stats.checked, 0, "{:?}", jit.stats);
    }

    #[test]
    fn code_and_data_in_one_page_stop_faulting() {
        let s = Snippet::new();
        // mov ecx, 100; L: add dword ptr [rip + data], 1; loop L;
        // mov eax, [rip + data]; syscall; data (offset 64, same page)
        let mut code =
            vec![0xb9, 100, 0, 0, 0, 0x83, 0x05, 52, 0, 0, 0, 1, 0xe2, 0xf7, 0x8b, 0x05, 44, 0, 0, 0, 0x0f, 0x05];
        code.resize(68, 0);
        let (r, stats) = run_both(&s, &code, false, |_| {});
        assert_eq!(r[1].0.gpr[reg::RAX], 200, "the interpreter's run added 100 first");
        let page = s.code / PAGE_SIZE;
        let faults = s.mem.code_write_faults(page);
        assert!(faults <= crate::mem::HOT_PAGE_FAULTS + 1, "{faults} faults");
        assert!(stats.code_writes <= crate::mem::HOT_PAGE_FAULTS as u64 + 1, "{stats:?}");
        assert!(stats.checked >= 1, "blocks from the hot page check their bytes: {stats:?}");
    }

    #[test]
    fn interpreted_code_on_a_hot_page_rewritten_by_a_plain_store_is_seen() {
        let s = Snippet::new();
        let mut jit = JitEngine::new(s.mem.clone()).expect("jit engine");
        let page = s.code / PAGE_SIZE;
        // cpuid; mov ebx, imm; syscall: CPUID makes it the interpreter's
        // block (the JIT hands it over, the interpreter decodes it).
        let put = |imm: u8| {
            // SAFETY: the snippet's code area, mapped RWX: a plain store,
            // as translated code's (a write-protected page faults, and the
            // host-fault owner gives it back).
            unsafe {
                std::ptr::copy_nonoverlapping(
                    [0x0f, 0xa2, 0xbb, imm, 0, 0, 0, 0x0f, 0x05].as_ptr(),
                    s.code as *mut u8,
                    9,
                )
            };
        };
        let run = |jit: &mut JitEngine| {
            let mut cpu = CpuState { rip: s.code, ..CpuState::default() };
            cpu.gpr[reg::RSP] = s.stack_top;
            assert_eq!(jit.run(&mut cpu), Ok(Exit::Syscall));
            cpu.gpr[reg::RBX]
        };
        // Each round: run (the page is write-protected for the decoded
        // block), then a plain store faults; past the threshold the page
        // stays writable and its writes are no longer logged.
        for imm in 1..=crate::mem::HOT_PAGE_FAULTS as u8 + 2 {
            put(imm);
            assert_eq!(run(&mut jit), imm as u64, "round {imm}");
        }
        assert!(s.mem.code_write_faults(page) >= crate::mem::HOT_PAGE_FAULTS, "the page is hot");
        assert!(!s.mem.is_code_guarded(page));
        put(99);
        assert_eq!(run(&mut jit), 99, "the interpreter's decoding of a hot page is checked");
        assert!(jit.stats.interpreted >= 1, "{:?}", jit.stats);
    }

    /// Run `code` under the JIT with `--check` (and `corrupt` as the
    /// sabotage of the JIT's results).
    fn run_checked(s: &Snippet, code: &[u8], corrupt: Option<fn(&mut CpuState)>) -> (Result<Exit, EngineError>, Stats) {
        // SAFETY: the snippet's code area is ours, 16 KiB, mapped RW.
        unsafe { std::ptr::copy_nonoverlapping(code.as_ptr(), s.code as *mut u8, code.len()) };
        let mut jit = JitEngine::new(s.mem.clone()).expect("jit engine");
        jit.set_check(true);
        jit.corrupt = corrupt;
        let mut cpu = CpuState { rip: s.code, ..CpuState::default() };
        cpu.gpr[reg::RSP] = s.stack_top;
        cpu.gpr[reg::RDI] = s.data;
        // Other tests' engines may interrupt this one: run on.
        let r = loop {
            match jit.run(&mut cpu) {
                Ok(Exit::Interrupted) => continue,
                r => break r,
            }
        };
        (r, std::mem::take(&mut jit.stats))
    }

    // xor eax, eax; mov ecx, 10; L: add eax, ecx; mov [rdi], eax; imul ebx, eax;
    // loop L; syscall
    const CHECKED: [u8; 20] =
        [0x31, 0xc0, 0xb9, 10, 0, 0, 0, 0x01, 0xc8, 0x89, 0x07, 0x0f, 0xaf, 0xd8, 0xe2, 0xf7, 0x0f, 0x05, 0x90, 0x90];

    // xor eax, eax; mov ecx, 10; L: test cl, 1; jnz S; add eax, ecx; inc ebx;
    // S: mov [rdi], eax; dec ecx; jnz L; syscall
    const SUPERBLOCK: [u8; 24] = [
        0x31, 0xc0, 0xb9, 10, 0, 0, 0, 0xf6, 0xc1, 0x01, 0x75, 0x04, 0x01, 0xc8, 0xff, 0xc3, 0x89, 0x07, 0xff, 0xc9,
        0x75, 0xf1, 0x0f, 0x05,
    ];

    #[test]
    fn a_branch_taken_in_the_middle_of_a_block_agrees_also_under_check() {
        let s = Snippet::new();
        let data = s.data;
        let ([a, b], _) = both_ro(&s, &SUPERBLOCK, |c| c.gpr[reg::RDI] = data);
        assert_eq!(b.1, Exit::Syscall);
        assert_eq!((b.0.gpr[reg::RAX], b.0.gpr[reg::RBX]), (30, 5));
        assert_same(&[a, b]);
        let s = Snippet::new();
        let (r, stats) = run_checked(&s, &SUPERBLOCK, None);
        assert_eq!(r, Ok(Exit::Syscall));
        assert!(stats.lockstep >= 10, "{stats:?}");
        // SAFETY: the snippet's data area.
        assert_eq!(unsafe { *(s.data as *const u32) }, 30);
    }

    #[test]
    fn check_runs_every_block_in_lockstep() {
        let s = Snippet::new();
        let (r, stats) = run_checked(&s, &CHECKED, None);
        assert_eq!(r, Ok(Exit::Syscall));
        assert!(stats.lockstep >= 11, "{stats:?}");
        assert_eq!(stats.linked, 0, "blocks run alone: {stats:?}");
        // SAFETY: the snippet's data area.
        assert_eq!(unsafe { *(s.data as *const u32) }, 55, "the JIT's writes stay, once");
    }

    #[test]
    fn checks_count_for_every_thread_of_a_process() {
        let s = Snippet::new();
        let runs = |s: &Snippet| {
            let (r, stats) = run_checked(s, &CHECKED, None);
            assert_eq!(r, Ok(Exit::Syscall));
            stats.lockstep
        };
        // The loop's block is checked 10 times per run: 20 > 16 checks.
        assert!(runs(&s) >= 11);
        assert!(runs(&s) >= 8);
        // Another engine of the same process (another thread): the loop
        // runs unchecked at once; only the first and last blocks are
        // checked again (3 runs each so far).
        assert!(runs(&s) <= 3, "the loop was checked again");
        // Another process: its own checks.
        let other = Snippet::new();
        assert!(runs(&other) >= 11);
    }

    #[test]
    fn a_check_waits_for_shared_turns_and_kicks_them_out() {
        let s = Snippet::new();
        let jit = JitEngine::new(s.mem.clone()).expect("jit engine");
        let kick = jit.kick.clone();
        kick.store(0, Ordering::SeqCst);
        let released = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (held, holding) = std::sync::mpsc::channel();
        let holder = {
            let released = released.clone();
            std::thread::spawn(move || {
                let turn = Turn::take(false);
                held.send(()).expect("send");
                // As an engine in linked code: until kicked.
                let start = std::time::Instant::now();
                while kick.load(Ordering::SeqCst) == 0 {
                    assert!(start.elapsed() < std::time::Duration::from_secs(30), "never kicked");
                    std::thread::yield_now();
                }
                released.store(true, Ordering::SeqCst);
                drop(turn);
            })
        };
        holding.recv().expect("recv");
        // Shared turns run together (unless a check of another test comes
        // first: it kicks the holder too).
        drop(Turn::take(false));
        let turn = Turn::take(true);
        assert!(released.load(Ordering::SeqCst), "an exclusive turn began while a shared one ran");
        drop(turn);
        holder.join().expect("holder");
    }

    #[test]
    fn check_stops_at_the_first_difference() {
        let s = Snippet::new();
        let (r, _) = run_checked(&s, &CHECKED, Some(|c| c.gpr[reg::RBX] ^= 0x100));
        let Err(EngineError::Failed(msg)) = r else { panic!("no difference found: {r:?}") };
        let block = s.code;
        assert_eq!(
            msg,
            format!(
                "--check: block {block:#x}: after `imul %eax,%ebx` at {:#x}, rbx: interpreter 0x0, jit 0x100",
                block + 11
            )
        );
        // A memory byte the JIT wrote differently.
        static DATA: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let s = Snippet::new();
        DATA.store(s.data, Ordering::Relaxed);
        let (r, _) = run_checked(
            &s,
            &CHECKED,
            Some(|_| {
                let at = DATA.load(Ordering::Relaxed) + 1;
                // SAFETY: the snippet's data area.
                unsafe { *(at as *mut u8) ^= 1 };
            }),
        );
        let Err(EngineError::Failed(msg)) = r else { panic!("no difference found: {r:?}") };
        assert!(msg.contains(&format!("memory byte at {:#x}: interpreter 0x00, jit 0x01", s.data + 1)), "{msg}");
        assert!(msg.contains("after `mov %eax,(%rdi)`"), "{msg}");
    }

    #[test]
    fn check_undoes_the_interpreters_bulk_string_writes() {
        let s = Snippet::new();
        // mov rax, [rdi]; lea rsi, [rdi + 0x100]; mov ecx, 16; rep movsq;
        // syscall. The interpreter copies 128 bytes in one go when it can:
        // under --check that must be journaled and undone too, or the
        // JIT's run reads the copy at [rdi] instead of what was there.
        let code = [0x48, 0x8b, 0x07, 0x48, 0x8d, 0xb7, 0, 1, 0, 0, 0xb9, 16, 0, 0, 0, 0xf3, 0x48, 0xa5, 0x0f, 0x05];
        // SAFETY: the snippet's data area, mapped RW.
        unsafe { *((s.data + 0x100) as *mut u64) = 5 };
        let (r, stats) = run_checked(&s, &code, None);
        assert_eq!(r, Ok(Exit::Syscall));
        assert_eq!(stats.lockstep, 1, "{stats:?}");
    }

    #[test]
    fn linked_loops_calls_and_inline_lookups_agree() {
        let s = Snippet::new();
        // xor eax, eax; mov ecx, 100; L: call F; call rbx; loop L; syscall;
        // F: add eax, ecx; ret
        let code =
            [0x31, 0xc0, 0xb9, 100, 0, 0, 0, 0xe8, 6, 0, 0, 0, 0xff, 0xd3, 0xe2, 0xf7, 0x0f, 0x05, 0x01, 0xc8, 0xc3];
        let f = s.code + 18;
        let (r, stats) = both_ro(&s, &code, |c| c.gpr[reg::RBX] = f);
        assert_eq!(r[1].1, Exit::Syscall);
        assert_eq!(r[1].0.gpr[reg::RAX], 10100);
        assert_same(&r);
        // L -> F (call), loop back to L, and the fall-through: linked.
        assert!(stats.linked >= 3, "{stats:?}");
        // Blocks: start, L, F, the block after `call F`, after `call rbx`,
        // the syscall: each translated once (the returns and the indirect
        // call found their targets inline, without a miss).
        assert!(stats.translated <= 6, "{stats:?}");
        // Exits only to translate: the table's index is the lookups'.
        assert!(stats.misses <= 6, "{stats:?}");
    }

    #[test]
    fn table_indices_spread_pcs_64k_apart_and_never_pair_neighbours() {
        // cc1's three hot pcs at one low-16-bit index.
        let hot = [0x10f1f30u64, 0x18b1f30, 0xd81f30];
        assert!(hot.iter().all(|&a| hot.iter().filter(|&&b| index(a) == index(b)).count() == 1));
        // A lookup with the interrupt byte raised compares pc + 1 with the
        // entry at pc's index: pc + 1 is never there.
        for pc in [0u64, 0xffff, 0xfffe, 0xff_ffff, 0xffff_ffff, 0x1_ffff_ffff, 0x7fff_ffff_ffff, u64::MAX - 1] {
            assert_ne!(index(pc), index(pc + 1), "{pc:#x}");
        }
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            assert_ne!(index(x), index(x.wrapping_add(1)), "{x:#x}");
        }
        // The two indices a zero (empty) tag can match.
        assert_eq!((index(0), index(u64::MAX)), (0, 0xfffe));
    }

    #[test]
    fn an_interrupt_stops_a_linked_loop() {
        let s = Snippet::new();
        // L: add rax, 1; jmp L
        let code = [0x48, 0x83, 0xc0, 1, 0xeb, 0xfa];
        // SAFETY: the snippet's code area is ours, mapped RW.
        unsafe { std::ptr::copy_nonoverlapping(code.as_ptr(), s.code as *mut u8, code.len()) };
        s.mem.protect(s.code, 4 * PAGE_SIZE, Prot::RX).expect("protect");
        let mut jit = JitEngine::new(s.mem.clone()).expect("jit engine");
        let stop = jit.interrupt_handle();
        let raised = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let raising = raised.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(100));
            raising.store(true, Ordering::Release);
            stop.raise();
        });
        let mut cpu = CpuState { rip: s.code, ..CpuState::default() };
        cpu.gpr[reg::RSP] = s.stack_top;
        // Other tests' engines in this process may interrupt this one too
        // (code invalidated anywhere reaches every engine): run until the
        // raiser is done.
        loop {
            assert_eq!(jit.run(&mut cpu), Ok(Exit::Interrupted));
            if raised.load(Ordering::Acquire) {
                break;
            }
        }
        t.join().expect("raiser");
        assert_eq!(cpu.rip, s.code, "stopped at the loop's block boundary");
        assert!(cpu.gpr[reg::RAX] > 1000, "the loop ran linked: {}", cpu.gpr[reg::RAX]);
        assert!(jit.stats.linked >= 1);
    }

    #[test]
    fn invalidated_targets_are_unlinked() {
        let s = Snippet::new();
        let mut jit = JitEngine::new(s.mem.clone()).expect("jit engine");
        // A (first page): mov eax, 1; jmp B. B (second page): mov ebx, imm;
        // syscall. Only B's page is rewritten: A stays, linked to B.
        let a = [0xb8, 1, 0, 0, 0, 0xe9, 0xf6, 0x0f, 0, 0];
        // SAFETY: the snippet's code area, mapped RW.
        unsafe { std::ptr::copy_nonoverlapping(a.as_ptr(), s.code as *mut u8, a.len()) };
        s.mem.protect(s.code, PAGE_SIZE, Prot::RX).expect("protect");
        let b_at = s.code + PAGE_SIZE;
        let mut run = |imm: u8| {
            let b = [0xbb, imm, 0, 0, 0, 0x0f, 0x05];
            s.mem.protect(b_at, PAGE_SIZE, Prot::RW).expect("protect");
            // SAFETY: the snippet's code area, mapped RW now.
            unsafe { std::ptr::copy_nonoverlapping(b.as_ptr(), b_at as *mut u8, b.len()) };
            s.mem.protect(b_at, PAGE_SIZE, Prot::RX).expect("protect");
            let mut cpu = CpuState { rip: s.code, ..CpuState::default() };
            cpu.gpr[reg::RSP] = s.stack_top;
            assert_eq!(jit.run(&mut cpu), Ok(Exit::Syscall));
            cpu.gpr[reg::RBX]
        };
        assert_eq!(run(2), 2);
        assert_eq!(run(3), 3, "A's link to the old B was undone");
        assert_eq!(run(4), 4);
        assert_eq!((jit.stats.translated, jit.stats.linked, jit.stats.dropped), (4, 3, 2), "{:?}", jit.stats);
    }

    #[test]
    fn a_divide_error_in_translated_code_is_the_guests() {
        let s = Snippet::new();
        // mov ebx, 7; xor ecx, ecx; mov eax, 5; div ecx
        let code = [0xbb, 7, 0, 0, 0, 0x31, 0xc9, 0xb8, 5, 0, 0, 0, 0xf7, 0xf1];
        let (r, stats) = both_ro(&s, &code, |_| {});
        assert_eq!(r[1].1, Exit::Fault(Fault { pc: s.code + 12, kind: FaultKind::Divide }));
        assert_eq!(r[1].0.gpr[reg::RBX], 7);
        assert_eq!(stats.translated, 1, "the DIV ran translated");
        assert_same(&r);
    }

    #[test]
    fn vex_blocks_run_translated_and_keep_ymm_upper_halves() {
        if !crate::cpuid::model().has("avx2") {
            let msg = "SKIPPED: vex_blocks_run_translated_and_keep_ymm_upper_halves: the CPU model has no AVX2\n";
            std::io::Write::write_all(&mut std::io::stderr(), msg.as_bytes()).expect("stderr");
            return;
        }
        let s = Snippet::new();
        // vpaddq ymm6, ymm5, ymm5; syscall;
        // vpaddq ymm7, ymm6, ymm5; cpuid; jmp +0; vpaddq ymm7, ymm7, ymm7; syscall
        let code = [
            0xc5, 0xd5, 0xd4, 0xf5, 0x0f, 0x05, 0xc5, 0xcd, 0xd4, 0xfd, 0x0f, 0xa2, 0xeb, 0x00, 0xc5, 0xc5, 0xd4, 0xff,
            0x0f, 0x05,
        ];
        // SAFETY: the snippet's code area is ours, 16 KiB, mapped RW.
        unsafe { std::ptr::copy_nonoverlapping(code.as_ptr(), s.code as *mut u8, code.len()) };
        s.mem.protect(s.code, 4 * PAGE_SIZE, Prot::RX).expect("protect");
        let mut start = CpuState { rip: s.code, ..CpuState::default() };
        start.gpr[reg::RSP] = s.stack_top;
        start.xmm[5] = 0x0000_0001_0000_0002_0000_0003_0000_0004;
        start.ymm_hi[5] = 0x1111_2222_3333_4444_5555_6666_7777_8888;
        let mut a = start.clone();
        let mut interp = Interpreter::new(s.mem.clone());
        let ea = [interp.run(&mut a), interp.run(&mut a)];
        let mut b = start;
        let mut jit = JitEngine::new(s.mem.clone()).expect("jit engine");
        let first = jit.run(&mut b).expect("jit run");
        assert_eq!(first, Exit::Syscall);
        assert_eq!(b.ymm_hi[6], 0x2222_4444_6666_8888_aaaa_cccc_eeef_1110, "upper half of ymm6 after the exit");
        // Clobber the machine's YMM registers between the runs, as urun's
        // own libc may: the guest's upper halves live in `CpuState`.
        // SAFETY: the model has AVX2, so the host has AVX; VZEROALL only
        // changes vector registers, declared clobbered.
        unsafe {
            std::arch::asm!("vpcmpeqd ymm6, ymm6, ymm6", "vpcmpeqd ymm5, ymm5, ymm5", out("ymm5") _, out("ymm6") _)
        };
        let second = jit.run(&mut b).expect("jit run");
        assert_eq!(ea, [first, second], "exits");
        assert_eq!(a.gpr, b.gpr, "gprs");
        assert_eq!(a.rip, b.rip, "rip");
        assert_eq!(a.xmm, b.xmm, "xmm");
        assert_eq!(a.ymm_hi, b.ymm_hi, "ymm upper halves");
        assert_eq!(b.ymm_hi[7], 0x6666_cccd_3333_9998_0000_6666_cccd_3330, "4 * ymm5 in the upper half of ymm7");
        // Only the CPUID block ran in the interpreter; the VEX blocks ran
        // translated.
        assert_eq!(jit.stats.interpreted, 1, "{:?}", jit.stats);
        assert!(jit.stats.translated >= 3, "{:?}", jit.stats);
    }
}
