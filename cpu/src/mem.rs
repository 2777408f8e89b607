//! The guest address space.
//!
//! Guest virtual address == host virtual address: a guest mapping is a host
//! mapping at the same address in the urun process. `AddressSpace` is the
//! record of which ranges belong to the guest and with what protection, and
//! the one place that maps, unmaps and protects guest memory on the host, so
//! that every engine sees every change. urun's own memory is never in it, and
//! no operation here touches memory outside it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};

/// Size of a guest page.
pub const PAGE_SIZE: u64 = 4096;

/// Round `v` down to a page boundary.
pub const fn page_floor(v: u64) -> u64 {
    v & !(PAGE_SIZE - 1)
}

/// Round `v` up to a page boundary (saturating at the top of the space).
pub const fn page_ceil(v: u64) -> u64 {
    match v.checked_add(PAGE_SIZE - 1) {
        Some(x) => x & !(PAGE_SIZE - 1),
        None => !(PAGE_SIZE - 1),
    }
}

/// Highest user address + 1 on x86-64 with 4-level paging.
pub const USER_TOP: u64 = 0x7fff_ffff_f000;

/// Guest page protection, with the Linux `PROT_*` bit values.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Prot(pub u32);

impl Prot {
    pub const NONE: Prot = Prot(0);
    pub const READ: Prot = Prot(1);
    pub const WRITE: Prot = Prot(2);
    pub const EXEC: Prot = Prot(4);
    pub const RW: Prot = Prot(3);
    pub const RX: Prot = Prot(5);

    pub fn contains(self, other: Prot) -> bool {
        self.0 & other.0 == other.0
    }
    pub fn union(self, other: Prot) -> Prot {
        Prot(self.0 | other.0)
    }
    /// The protection urun gives the host pages: the interpreter decodes
    /// code with ordinary reads, so executable pages stay readable.
    fn host(self) -> i32 {
        let mut p = 0;
        if self.contains(Prot::READ) || self.contains(Prot::EXEC) {
            p |= libc::PROT_READ;
        }
        if self.contains(Prot::WRITE) {
            p |= libc::PROT_WRITE;
        }
        p
    }
}

/// What a guest range is, for `/proc/self/maps` and diagnostics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backing {
    Anonymous,
    /// A file mapping: path as the guest named it, offset of `start`,
    /// device and inode numbers.
    File {
        path: String,
        offset: u64,
        dev: u64,
        inode: u64,
    },
    /// A named anonymous range: "[heap]", "[stack]".
    Named(String),
}

/// One guest range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Region {
    pub start: u64,
    pub end: u64,
    pub prot: Prot,
    /// MAP_SHARED rather than MAP_PRIVATE.
    pub shared: bool,
    pub backing: Backing,
}

/// Why a memory operation failed. Each carries the guest errno it becomes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MemError {
    #[error("range {start:#x}+{len:#x} is not page aligned or is empty")]
    BadRange { start: u64, len: u64 },
    #[error("range {start:#x}+{len:#x} overlaps memory that is not the guest's")]
    NotGuestMemory { start: u64, len: u64 },
    #[error("range {start:#x}+{len:#x} is not entirely mapped")]
    NotMapped { start: u64, len: u64 },
    #[error("host {op} failed at {start:#x}+{len:#x}: errno {errno}")]
    Host { op: &'static str, start: u64, len: u64, errno: i32 },
}

/// How to place a new mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Anywhere the host finds room (the address is a hint).
    Hint(u64),
    /// Exactly here, replacing guest mappings in the way; fails if the
    /// range holds memory that is not the guest's.
    Fixed(u64),
    /// Exactly here, failing if anything at all is mapped there.
    FixedNoReplace(u64),
}

/// Host-side description of a file to map.
#[derive(Clone, Debug)]
pub struct FileMap {
    pub fd: i32,
    pub offset: u64,
    pub backing: Backing,
}

/// One entry of the code log (see `AddressSpace::code_seq`). Pages are
/// page numbers (address / `PAGE_SIZE`), `last` included.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodeEvent {
    /// Guest code in pages `first..=last` was written, unmapped, moved or
    /// lost its execute permission: every engine drops what it translated
    /// from those pages. The pages are no longer code pages.
    Invalidate { first: u64, last: u64 },
    /// An engine translated code from this page: every other engine drops
    /// any direct write permission it caches for the page, and if it held
    /// one, reports the page as written (`code_written`), since a write
    /// through that permission may have raced with the translation.
    Marked(u64),
}

/// How many events the code log keeps; an engine further behind than this
/// drops everything it translated.
pub const CODE_LOG_LEN: usize = 256;

/// The shared record of translated code: which pages hold code some
/// engine translated (with a mask of the 64-byte granules it came from, so
/// that writing data beside code in one page invalidates nothing), and the
/// last `CODE_LOG_LEN` events.
#[derive(Default)]
struct CodeLog {
    pages: HashMap<u64, u64>,
    ring: VecDeque<CodeEvent>,
}

/// Bytes per bit of a code page's granule mask.
const GRANULE: u64 = PAGE_SIZE / 64;

/// The pages of `[start, end)` with the mask of granules it covers in each.
fn granules(start: u64, end: u64) -> impl Iterator<Item = (u64, u64)> {
    let last = if end > start { (end - 1) / PAGE_SIZE } else { 0 };
    let pages = if end > start { start / PAGE_SIZE..last + 1 } else { 1..1 };
    pages.map(move |p| {
        let lo = start.max(p * PAGE_SIZE) % PAGE_SIZE / GRANULE;
        let hi = (end.min((p + 1) * PAGE_SIZE) - 1) % PAGE_SIZE / GRANULE;
        let mask = if hi - lo == 63 { u64::MAX } else { ((1u64 << (hi - lo + 1)) - 1) << lo };
        (p, mask)
    })
}

/// What `AddressSpace::code_events_since` found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodeSync {
    /// Every event after the caller's cursor was passed to it; the new
    /// cursor.
    UpTo(u64),
    /// The caller fell behind the log: it must drop every translation (and
    /// every cached write permission for a code page). The new cursor.
    Behind(u64),
}

/// What `AddressSpace::protect_code` did for a page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodeGuard {
    /// Every write to the page (by guest code, urun or, through `check`,
    /// the kernel) is seen: its code is logged as invalidated first.
    Guarded,
    /// Writes to the page are not seen: it faulted too often (code and
    /// data mixed, a guest JIT's heap), or it is shared memory (another
    /// alias can write it). The caller must check the bytes itself.
    Unguarded,
}

/// A page write-protected for translated code (`AddressSpace::protect_code`).
#[derive(Clone, Copy, Debug)]
struct WpPage {
    /// The guest's protection of the page (the host's lacks WRITE while
    /// `armed`).
    guest: Prot,
    /// Translated code relies on seeing every write to the page.
    armed: bool,
    /// Write faults taken on it so far.
    faults: u32,
}

/// After this many write faults on one page, `protect_code` stops arming
/// it (the page mixes code and data, or a guest JIT rewrites it often):
/// its translations check their bytes instead (DynamoRIO and box64 switch
/// such pages to checks in the same way; qemu never does).
pub const HOT_PAGE_FAULTS: u32 = 16;

/// The code log and the write protection of code pages: shared with the
/// host-fault owner's write hook, which runs in a signal handler.
struct Code {
    /// Number of code events ever logged (the sequence number of the last).
    seq: AtomicU64,
    log: RwLock<CodeLog>,
    /// Pages `protect_code` knows, by page number.
    wp: Mutex<HashMap<u64, WpPage>>,
    /// How many of them are armed (a lock-free "none" for `check`).
    armed: AtomicU64,
}

/// The code state of every address space with write-protected pages, for
/// the write hook (`on_code_write`).
static GUARDED: Mutex<Vec<std::sync::Arc<Code>>> = Mutex::new(Vec::new());

/// The host-fault owner's hook: a write fault at `addr`. If the page is
/// one `protect_code` armed and the guest may write it, give the host page
/// the guest's protection back, log its code as invalidated, and claim the
/// fault (the write runs again). Runs in a signal handler: it takes only
/// locks that no thread holds while writing guest memory, and does not
/// allocate.
fn on_code_write(addr: u64) -> bool {
    let spaces = GUARDED.lock().unwrap_or_else(|e| e.into_inner());
    spaces.iter().any(|c| c.disarm(addr / PAGE_SIZE, true))
}

impl Code {
    fn wp(&self) -> std::sync::MutexGuard<'_, HashMap<u64, WpPage>> {
        self.wp.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn log_mut(&self) -> std::sync::RwLockWriteGuard<'_, CodeLog> {
        self.log.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Make armed page `page` writable again (as the guest asked) and
    /// invalidate its code. `fault`: a write fault on it (counted, and the
    /// page must be guest-writable). True if it was armed and now is not.
    fn disarm(&self, page: u64, fault: bool) -> bool {
        let mut wp = self.wp();
        let Some(e) = wp.get_mut(&page) else { return false };
        if !e.armed || (fault && !e.guest.contains(Prot::WRITE)) {
            return false;
        }
        let at = page * PAGE_SIZE;
        // SAFETY: the page is guest memory (its entry is dropped when it
        // stops being so, under the layout lock); this gives it the
        // protection the guest asked for.
        let rc = unsafe { libc::mprotect(at as *mut libc::c_void, PAGE_SIZE as usize, e.guest.host()) };
        if rc != 0 {
            return false;
        }
        e.armed = false;
        if fault {
            e.faults = e.faults.saturating_add(1);
        }
        self.armed.fetch_sub(1, Ordering::AcqRel);
        drop(wp);
        let mut log = self.log_mut();
        self.invalidate(&mut log, &[page]);
        true
    }

    fn push_event(&self, log: &mut CodeLog, ev: CodeEvent) {
        if log.ring.len() == CODE_LOG_LEN {
            log.ring.pop_front();
        }
        log.ring.push_back(ev);
        // SeqCst: a full barrier between the log update and the caller's
        // next reads of guest memory (the marking engine re-reads the code).
        self.seq.fetch_add(1, Ordering::SeqCst);
    }

    /// Forget `pages` as code pages and log one `Invalidate` covering them.
    fn invalidate(&self, log: &mut CodeLog, pages: &[u64]) -> bool {
        let (Some(lo), Some(hi)) = (pages.iter().min().copied(), pages.iter().max().copied()) else { return false };
        for p in pages {
            log.pages.remove(p);
        }
        self.push_event(log, CodeEvent::Invalidate { first: lo, last: hi });
        true
    }
}

/// The guest's memory map. Shared by every guest thread and engine.
pub struct AddressSpace {
    regions: RwLock<BTreeMap<u64, Region>>,
    /// Bumped whenever access to some guest range is removed or reduced
    /// (unmap, protect, replace), so engines drop cached permissions.
    generation: AtomicU64,
    /// Bumped whenever the map is written at all (mappings added too), so
    /// that an engine that mirrors it (KVM's slots and page tables) can
    /// bring its copy up to date before the guest runs again.
    changes: AtomicU64,
    code: std::sync::Arc<Code>,
    /// `code` is in `GUARDED`.
    guarded: std::sync::atomic::AtomicBool,
    /// Ranges the guest released that urun still holds as no-access host
    /// reservations (start -> end, merged), so that urun's own mappings
    /// never land where guest memory was. Also the lock that serializes
    /// every change to the layout (map, unmap, protect, remap).
    held: Mutex<BTreeMap<u64, u64>>,
}

impl Drop for AddressSpace {
    fn drop(&mut self) {
        if self.guarded.load(Ordering::Acquire) {
            GUARDED.lock().unwrap_or_else(|e| e.into_inner()).retain(|c| !std::sync::Arc::ptr_eq(c, &self.code));
        }
    }
}

impl Default for AddressSpace {
    fn default() -> Self {
        Self::new()
    }
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO)
}

impl AddressSpace {
    pub fn new() -> Self {
        AddressSpace {
            regions: RwLock::new(BTreeMap::new()),
            generation: AtomicU64::new(0),
            changes: AtomicU64::new(0),
            code: std::sync::Arc::new(Code {
                seq: AtomicU64::new(0),
                // The ring never grows past its capacity (the write hook
                // pushes in a signal handler: no allocation there).
                log: RwLock::new(CodeLog { pages: HashMap::new(), ring: VecDeque::with_capacity(CODE_LOG_LEN) }),
                wp: Mutex::new(HashMap::new()),
                armed: AtomicU64::new(0),
            }),
            guarded: std::sync::atomic::AtomicBool::new(false),
            held: Mutex::new(BTreeMap::new()),
        }
    }

    /// Changes when guest access is removed or reduced anywhere.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn bump(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Changes whenever the map may have changed in any way (read it, then
    /// `regions()`, to see at least that change).
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::Acquire)
    }

    // ----- the code log -----
    //
    // Engines that translate guest code (the interpreter's decoded blocks,
    // a JIT's code cache) share one record of it here, so that a write by
    // any thread reaches every thread's translations. The protocol:
    //
    // - Before trusting bytes it translated from a page, an engine marks the
    //   page (`mark_code`), then checks that the bytes are still the ones it
    //   decoded (a write that landed before the mark is caught there).
    // - An engine never caches direct write permission for a code page: a
    //   write to one takes the engine's slow path, and after the write the
    //   engine calls `code_written`, which logs an `Invalidate`.
    // - Each engine watches `code_seq` (one atomic load) at block dispatch
    //   and before it returns to its caller, and applies the new events:
    //   `Invalidate` drops the translations of those pages; `Marked` drops a
    //   cached write permission for that page, reporting the page as written
    //   if it held one (it may have written through it after the other
    //   engine read the bytes). An engine applies pending `Marked` events
    //   before it evicts or flushes a write permission, so none is lost.

    fn code_log(&self) -> std::sync::RwLockReadGuard<'_, CodeLog> {
        self.code.log.read().unwrap_or_else(|e| e.into_inner())
    }

    fn code_log_mut(&self) -> std::sync::RwLockWriteGuard<'_, CodeLog> {
        self.code.log_mut()
    }

    /// Number of code events logged so far: engines compare it with their
    /// cursor at every block dispatch.
    #[inline]
    pub fn code_seq(&self) -> u64 {
        self.code.seq.load(Ordering::Acquire)
    }

    fn push_event(&self, log: &mut CodeLog, ev: CodeEvent) {
        self.code.push_event(log, ev)
    }

    /// Record that an engine translated code from `[start, end)`.
    pub fn mark_code(&self, start: u64, end: u64) {
        {
            let log = self.code_log();
            if granules(start, end).all(|(p, m)| log.pages.get(&p).is_some_and(|have| have & m == m)) {
                return;
            }
        }
        let mut log = self.code_log_mut();
        for (p, m) in granules(start, end) {
            match log.pages.entry(p) {
                std::collections::hash_map::Entry::Occupied(mut e) => *e.get_mut() |= m,
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(m);
                    self.push_event(&mut log, CodeEvent::Marked(p));
                }
            }
        }
    }

    /// Does page number `page` hold code some engine translated? (Engines
    /// give such pages no direct write permission.)
    #[inline]
    pub fn is_code_page(&self, page: u64) -> bool {
        let log = self.code_log();
        !log.pages.is_empty() && log.pages.contains_key(&page)
    }

    // ----- write protection of code pages -----
    //
    // The JIT trusts its translations of a page only while every write to
    // the page is seen. `protect_code` arms a page: while the guest may
    // write it, the host page loses WRITE (the guest's own protection is
    // kept in `Code::wp`, and in the region map, which is what the guest
    // sees: /proc/self/maps, mprotect, the interpreter's checks). A write
    // then faults; the host-fault owner calls `on_code_write`, which gives
    // the page the guest's protection back, logs an `Invalidate` for it,
    // and lets the write run again. `check(.., WRITE)` (what the syscall
    // layer asks before the kernel writes a guest buffer) does the same
    // for armed pages in its range, so the kernel never meets one. Every
    // host mprotect of an armed page keeps WRITE out while the page stays
    // executable (so a page translated while read-only and made writable
    // later is seen too); losing EXEC, unmapping or replacing the page
    // forgets it.

    /// Arm page number `page` for translated code (see above).
    pub fn protect_code(&self, page: u64) -> CodeGuard {
        let at = page * PAGE_SIZE;
        let _layout = self.held();
        // The region's protection, not a copy of it (its backing's path
        // was an allocation for every block translated).
        struct RegionProt {
            prot: Prot,
            shared: bool,
        }
        let r = {
            let map = self.read_map();
            let Some((_, r)) = map.range(..=at).next_back().filter(|(_, r)| at < r.end) else {
                return CodeGuard::Unguarded;
            };
            RegionProt { prot: r.prot, shared: r.shared }
        };
        if r.shared || !r.prot.contains(Prot::EXEC) {
            return CodeGuard::Unguarded;
        }
        if !self.guarded.load(Ordering::Acquire) {
            // The write faults go to the host-fault owner's handler.
            if crate::hostfault::install().is_err() {
                return CodeGuard::Unguarded;
            }
            self.guarded.store(true, Ordering::Release);
            crate::hostfault::set_write_hook(on_code_write);
            GUARDED.lock().unwrap_or_else(|e| e.into_inner()).push(self.code.clone());
        }
        let mut wp = self.code.wp();
        let e = wp.entry(page).or_insert(WpPage { guest: r.prot, armed: false, faults: 0 });
        e.guest = r.prot;
        if e.armed {
            return CodeGuard::Guarded;
        }
        if e.faults >= HOT_PAGE_FAULTS {
            return CodeGuard::Unguarded;
        }
        if r.prot.contains(Prot::WRITE) {
            // SAFETY: a guest page (checked under the layout lock); the
            // guest's view of it stays as it asked.
            let rc = unsafe {
                libc::mprotect(at as *mut libc::c_void, PAGE_SIZE as usize, r.prot.host() & !libc::PROT_WRITE)
            };
            if rc != 0 {
                return CodeGuard::Unguarded;
            }
            self.code.armed.fetch_add(1, Ordering::AcqRel);
        }
        e.armed = true;
        CodeGuard::Guarded
    }

    /// Write faults taken so far on page number `page` (for tests and
    /// statistics).
    pub fn code_write_faults(&self, page: u64) -> u32 {
        self.code.wp().get(&page).map_or(0, |e| e.faults)
    }

    /// Is page number `page` armed by `protect_code`?
    pub fn is_code_guarded(&self, page: u64) -> bool {
        self.code.wp().get(&page).is_some_and(|e| e.armed)
    }

    /// Disarm the write-protected pages in `[addr, addr+len)` that the
    /// guest may write (their code is invalidated): something other than a
    /// faulting instruction (the kernel) is about to write there.
    fn unguard(&self, addr: u64, len: u64) {
        if len == 0 || self.code.armed.load(Ordering::Acquire) == 0 {
            return;
        }
        let first = addr / PAGE_SIZE;
        let last = (addr.saturating_add(len) - 1) / PAGE_SIZE;
        let pages: Vec<u64> = {
            let wp = self.code.wp();
            let hit = |p: &u64| wp.get(p).is_some_and(|e| e.armed && e.guest.contains(Prot::WRITE));
            if last - first < wp.len() as u64 {
                (first..=last).filter(hit).collect()
            } else {
                wp.keys().copied().filter(|p| (first..=last).contains(p) && hit(p)).collect()
            }
        };
        for p in pages {
            self.code.disarm(p, false);
        }
    }

    /// Forget the write-protected pages in `[start, end)` (unmapped,
    /// replaced or moved; `restore`: give the host pages the guest's
    /// protection first, as they move).
    fn forget_guards(&self, start: u64, end: u64, restore: bool) {
        let mut wp = self.code.wp();
        if wp.is_empty() || end <= start {
            return;
        }
        let (first, last) = (start / PAGE_SIZE, (end - 1) / PAGE_SIZE);
        let pages: Vec<u64> = wp.keys().copied().filter(|p| (first..=last).contains(p)).collect();
        for p in pages {
            let Some(e) = wp.remove(&p) else { continue };
            if e.armed && e.guest.contains(Prot::WRITE) {
                self.code.armed.fetch_sub(1, Ordering::AcqRel);
                if restore {
                    // SAFETY: a guest page about to move; the guest's own
                    // protection.
                    unsafe { libc::mprotect((p * PAGE_SIZE) as *mut libc::c_void, PAGE_SIZE as usize, e.guest.host()) };
                }
            }
        }
    }

    /// `mprotect` of `[start, end)` to `prot` (guest memory, layout lock
    /// held), keeping WRITE off the host pages that stay armed; pages
    /// that lose EXEC are forgotten (their code is invalidated).
    fn host_protect(&self, start: u64, end: u64, prot: Prot) -> Result<(), MemError> {
        let mut wp = self.code.wp();
        let mut masked = Vec::new();
        if !wp.is_empty() {
            let (first, last) = (start / PAGE_SIZE, (end - 1) / PAGE_SIZE);
            let pages: Vec<u64> = wp.keys().copied().filter(|p| (first..=last).contains(p)).collect();
            for p in pages {
                let Some(e) = wp.get_mut(&p) else { continue };
                let was = e.armed && e.guest.contains(Prot::WRITE);
                if !prot.contains(Prot::EXEC) {
                    wp.remove(&p);
                    if was {
                        self.code.armed.fetch_sub(1, Ordering::AcqRel);
                    }
                    continue;
                }
                e.guest = prot;
                let now = e.armed && prot.contains(Prot::WRITE);
                match (was, now) {
                    (false, true) => {
                        self.code.armed.fetch_add(1, Ordering::AcqRel);
                    }
                    (true, false) => {
                        self.code.armed.fetch_sub(1, Ordering::AcqRel);
                    }
                    _ => {}
                }
                if now {
                    masked.push(p);
                }
            }
            masked.sort_unstable();
        }
        // Masked pages first, then the rest: no moment where an armed page
        // is writable on the host.
        let call = |s: u64, e: u64, p: i32| {
            // SAFETY: guest memory (the caller checked, under the layout lock).
            let rc = unsafe { libc::mprotect(s as *mut libc::c_void, (e - s) as usize, p) };
            if rc != 0 {
                return Err(MemError::Host { op: "mprotect", start: s, len: e - s, errno: errno() });
            }
            Ok(())
        };
        for &p in &masked {
            call(p * PAGE_SIZE, (p + 1) * PAGE_SIZE, prot.host() & !libc::PROT_WRITE)?;
        }
        let mut at = start;
        for &p in &masked {
            if p * PAGE_SIZE > at {
                call(at, p * PAGE_SIZE, prot.host())?;
            }
            at = (p + 1) * PAGE_SIZE;
        }
        if at < end {
            call(at, end, prot.host())?;
        }
        Ok(())
    }

    /// Do any bytes of `[addr, addr+len)` hold translated code?
    pub fn overlaps_code(&self, addr: u64, len: u64) -> bool {
        let log = self.code_log();
        let hit = Self::code_hits(&log, addr, len).next().is_some();
        hit
    }

    /// The pages where `[addr, addr+len)` touches translated code.
    fn code_hits<'l>(log: &'l CodeLog, addr: u64, len: u64) -> impl Iterator<Item = u64> + 'l {
        let end = addr.saturating_add(len);
        let pages = (len > 0 && !log.pages.is_empty()).then(|| granules(addr, end)).into_iter().flatten();
        pages.filter(|(p, m)| log.pages.get(p).is_some_and(|have| have & m != 0)).map(|(p, _)| p)
    }

    /// `[addr, addr+len)` was written (by guest code, or by the host kernel
    /// on the guest's behalf): if it holds translated code, log an
    /// `Invalidate` for its pages. Call it after the write. Returns whether
    /// it logged one.
    pub fn code_written(&self, addr: u64, len: u64) -> bool {
        // The write is ordered before the look at the log (see `mark_code`'s
        // callers: they mark, then re-read the code).
        std::sync::atomic::fence(Ordering::SeqCst);
        {
            let log = self.code_log();
            if Self::code_hits(&log, addr, len).next().is_none() {
                return false;
            }
        }
        let mut log = self.code_log_mut();
        let hit: Vec<u64> = Self::code_hits(&log, addr, len).collect();
        self.invalidate(&mut log, &hit)
    }

    /// Log an `Invalidate` for the code pages in `first..=last`, if any
    /// (the range was unmapped, replaced, moved or made non-executable).
    fn invalidate_pages(&self, first: u64, last: u64) {
        let hit = |log: &CodeLog| -> Vec<u64> {
            if log.pages.is_empty() {
                Vec::new()
            } else if last - first < log.pages.len() as u64 {
                (first..=last).filter(|p| log.pages.contains_key(p)).collect()
            } else {
                log.pages.keys().copied().filter(|p| (first..=last).contains(p)).collect()
            }
        };
        if hit(&self.code_log()).is_empty() {
            return;
        }
        let mut log = self.code_log_mut();
        let pages = hit(&log);
        self.invalidate(&mut log, &pages);
    }

    /// Forget `pages` as code pages and log one `Invalidate` covering them.
    fn invalidate(&self, log: &mut CodeLog, pages: &[u64]) -> bool {
        self.code.invalidate(log, pages)
    }

    /// Pass every code event after `cursor` to `f`, oldest first.
    pub fn code_events_since(&self, cursor: u64, mut f: impl FnMut(CodeEvent)) -> CodeSync {
        let log = self.code_log();
        let seq = self.code.seq.load(Ordering::Acquire);
        let new = seq.saturating_sub(cursor);
        if new > log.ring.len() as u64 || cursor > seq {
            return CodeSync::Behind(seq);
        }
        let skip = log.ring.len() - new as usize;
        for ev in log.ring.iter().skip(skip) {
            f(*ev);
        }
        CodeSync::UpTo(seq)
    }

    fn read_map(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<u64, Region>> {
        self.regions.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_map(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<u64, Region>> {
        let map = self.regions.write().unwrap_or_else(|e| e.into_inner());
        // Under the lock: whoever sees the new count and then reads the map
        // waits for this change to be complete.
        self.changes.fetch_add(1, Ordering::AcqRel);
        map
    }

    /// A copy of every guest range, in address order.
    pub fn regions(&self) -> Vec<Region> {
        self.read_map().values().cloned().collect()
    }

    /// The region holding `addr`, if any.
    pub fn region_at(&self, addr: u64) -> Option<Region> {
        let map = self.read_map();
        let (_, r) = map.range(..=addr).next_back()?;
        (addr < r.end).then(|| r.clone())
    }

    /// The protection of the page holding `addr`, if the guest owns it.
    pub fn prot_at(&self, addr: u64) -> Option<Prot> {
        let map = self.read_map();
        let (_, r) = map.range(..=addr).next_back()?;
        (addr < r.end).then_some(r.prot)
    }

    /// True when every byte of `[addr, addr+len)` is guest memory with at
    /// least `need` protection. A zero length is always accessible.
    ///
    /// Asking for WRITE disarms write-protected code pages in the range
    /// (see `protect_code`): the caller is about to write there.
    pub fn check(&self, addr: u64, len: u64, need: Prot) -> bool {
        if len == 0 {
            return true;
        }
        let Some(end) = addr.checked_add(len) else { return false };
        if need.contains(Prot::WRITE) {
            self.unguard(addr, len);
        }
        let map = self.read_map();
        let mut at = addr;
        for (_, r) in map.range(..end) {
            if r.end <= at {
                continue;
            }
            if r.start > at || !r.prot.contains(need) {
                return false;
            }
            at = r.end;
            if at >= end {
                return true;
            }
        }
        false
    }

    /// How many bytes from `addr` (at most `max`) are contiguous guest
    /// memory with at least `need` protection.
    /// WRITE disarms write-protected code pages, as for `check`.
    pub fn accessible_len(&self, addr: u64, max: u64, need: Prot) -> u64 {
        if need.contains(Prot::WRITE) {
            self.unguard(addr, max);
        }
        let end = addr.saturating_add(max);
        let map = self.read_map();
        let mut at = addr;
        for (_, r) in map.range(..end) {
            if r.end <= at {
                continue;
            }
            if r.start > at || !r.prot.contains(need) {
                break;
            }
            at = r.end.min(end);
            if at >= end {
                break;
            }
        }
        at - addr
    }

    /// The guest's fault for a host fault at `f.addr`: a page that is not
    /// guest memory (a held reservation, no access on the host, so the
    /// kernel says SEGV_ACCERR) is unmapped to the guest (SEGV_MAPERR).
    pub fn guest_fault_kind(&self, f: &crate::hostfault::HostFault) -> crate::FaultKind {
        match f.to_fault_kind() {
            crate::FaultKind::Page { addr, write, kind: crate::PageFaultKind::Protection }
                if self.region_at(addr).is_none() =>
            {
                crate::FaultKind::Page { addr, write, kind: crate::PageFaultKind::NotMapped }
            }
            k => k,
        }
    }

    /// True when some guest page in the range has any access at all.
    fn any_accessible(&self, addr: u64, len: u64) -> bool {
        let end = addr.saturating_add(len);
        let map = self.read_map();
        map.range(..end).any(|(_, r)| r.end > addr && r.prot != Prot::NONE)
    }

    /// True when no byte of the range is guest memory.
    pub fn is_free(&self, addr: u64, len: u64) -> bool {
        let end = addr.saturating_add(len);
        let map = self.read_map();
        map.range(..end).next_back().is_none_or(|(_, r)| r.end <= addr)
    }

    /// True when every byte of the range is guest memory (any protection).
    pub fn is_guest(&self, addr: u64, len: u64) -> bool {
        self.check(addr, len, Prot::NONE)
    }

    /// Map memory for the guest. Returns the address.
    pub fn map(
        &self,
        place: Placement,
        len: u64,
        prot: Prot,
        shared: bool,
        file: Option<&FileMap>,
    ) -> Result<u64, MemError> {
        self.map_with_flags(place, len, prot, shared, file, 0)
    }

    /// `map` with extra host `MAP_*` flags that do not affect placement
    /// (MAP_NORESERVE, MAP_POPULATE, MAP_GROWSDOWN, MAP_STACK).
    ///
    /// Without a fixed address, a range the guest released earlier (a held
    /// reservation) is reused first (first fit); else the kernel chooses. A
    /// fixed address over held reservations behaves as over unmapped memory.
    pub fn map_with_flags(
        &self,
        place: Placement,
        len: u64,
        prot: Prot,
        shared: bool,
        file: Option<&FileMap>,
        extra_flags: i32,
    ) -> Result<u64, MemError> {
        let len = page_ceil(len);
        let start = match place {
            Placement::Hint(a) | Placement::Fixed(a) | Placement::FixedNoReplace(a) => a,
        };
        if len == 0 || start % PAGE_SIZE != 0 || start.checked_add(len).is_none() {
            return Err(MemError::BadRange { start, len });
        }
        let extra = extra_flags & (libc::MAP_NORESERVE | libc::MAP_POPULATE | libc::MAP_GROWSDOWN | libc::MAP_STACK);
        let mut flags = extra | if shared { libc::MAP_SHARED } else { libc::MAP_PRIVATE };
        let (fd, offset) = match file {
            Some(f) => (f.fd, f.offset),
            None => {
                flags |= libc::MAP_ANONYMOUS;
                (-1, 0)
            }
        };
        let mut held = self.held();
        let mut replaced = false;
        // The exact range to map over (all of it guest memory or held by
        // urun for the guest once the gaps are claimed), or None for the
        // kernel's choice.
        let target = match place {
            Placement::Hint(h) => {
                if h != 0 && Self::held_covers(&held, h, h + len) {
                    Some(h)
                } else if h != 0 && !Self::held_overlaps(&held, h, h + len) {
                    // A hint at space urun never held: the kernel tries it.
                    None
                } else {
                    Self::first_fit(&held, len)
                }
            }
            Placement::FixedNoReplace(a) => {
                if !self.is_free(a, len) {
                    return Err(MemError::Host { op: "mmap", start, len, errno: libc::EEXIST });
                }
                self.claim_gaps(&mut held, a, a + len).map_err(|e| match e {
                    MemError::NotGuestMemory { .. } => MemError::Host { op: "mmap", start, len, errno: libc::EEXIST },
                    e => e,
                })?;
                Some(a)
            }
            Placement::Fixed(a) => {
                replaced = self.any_accessible(a, len);
                self.claim_gaps(&mut held, a, a + len)?;
                Some(a)
            }
        };
        if target.is_some() {
            flags |= libc::MAP_FIXED;
        }
        let at = target.unwrap_or(start);
        // SAFETY: with a target, every byte of it is guest memory or a
        // reservation urun holds for the guest (checked and claimed above,
        // under the layout lock), so MAP_FIXED replaces none of urun's
        // memory; without one the kernel chooses free space.
        let p = unsafe { libc::mmap(at as *mut libc::c_void, len as usize, prot.host(), flags, fd, offset as i64) };
        if p == libc::MAP_FAILED {
            let e = errno();
            if let Some(t) = target {
                // A failed MAP_FIXED may have unmapped the old range first:
                // keep what is not guest memory reserved.
                self.rereserve_non_guest(&mut held, t, t + len);
            }
            return Err(MemError::Host { op: "mmap", start, len, errno: e });
        }
        let addr = p as u64;
        if let Some(t) = target {
            if addr != t {
                return Err(MemError::Host { op: "mmap", start, len, errno: libc::EINVAL });
            }
        }
        Self::release(&mut held, addr, addr + len);
        self.forget_guards(addr, addr + len, false);
        let backing = file.map(|f| f.backing.clone()).unwrap_or(Backing::Anonymous);
        let mut map = self.write_map();
        Self::remove_range(&mut map, addr, addr + len);
        map.insert(addr, Region { start: addr, end: addr + len, prot, shared, backing });
        drop(map);
        drop(held);
        if replaced {
            self.bump();
        }
        if matches!(place, Placement::Fixed(_)) {
            self.invalidate_pages(addr / PAGE_SIZE, (addr + len - 1) / PAGE_SIZE);
        }
        Ok(addr)
    }

    // ----- held reservations -----

    fn held(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, u64>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The ranges the guest released that urun holds (no access), merged,
    /// in address order. Not guest memory: for tests and diagnostics.
    pub fn held_ranges(&self) -> Vec<(u64, u64)> {
        self.held().iter().map(|(s, e)| (*s, *e)).collect()
    }

    /// Put a no-access reservation over `[start, start+len)` on the host.
    /// `replace` uses MAP_FIXED (the range is the guest's or urun's hold);
    /// otherwise MAP_FIXED_NOREPLACE (fails with EEXIST on anything there).
    fn reserve_host(start: u64, len: u64, replace: bool) -> Result<(), MemError> {
        let how = if replace { libc::MAP_FIXED } else { libc::MAP_FIXED_NOREPLACE };
        let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | how;
        // SAFETY: with MAP_FIXED the caller guarantees the range is guest
        // memory or held for the guest; MAP_FIXED_NOREPLACE replaces nothing.
        let p = unsafe { libc::mmap(start as *mut libc::c_void, len as usize, libc::PROT_NONE, flags, -1, 0) };
        if p == libc::MAP_FAILED {
            return Err(MemError::Host { op: "mmap", start, len, errno: errno() });
        }
        if p as u64 != start {
            // An old kernel that ignores MAP_FIXED_NOREPLACE placed it elsewhere.
            // SAFETY: the kernel just mapped this range for us.
            unsafe { libc::munmap(p, len as usize) };
            return Err(MemError::Host { op: "mmap", start, len, errno: libc::EEXIST });
        }
        Ok(())
    }

    /// Record `[start, end)` as held, merging with neighbours.
    fn hold(held: &mut BTreeMap<u64, u64>, mut start: u64, mut end: u64) {
        if start >= end {
            return;
        }
        let touching: Vec<(u64, u64)> =
            held.range(..=end).rev().take_while(|(_, e)| **e >= start).map(|(s, e)| (*s, *e)).collect();
        for (s, e) in touching {
            held.remove(&s);
            start = start.min(s);
            end = end.max(e);
        }
        held.insert(start, end);
    }

    /// Remove `[start, end)` from the held record, splitting at its edges.
    fn release(held: &mut BTreeMap<u64, u64>, start: u64, end: u64) {
        let over: Vec<(u64, u64)> =
            held.range(..end).rev().take_while(|(_, e)| **e > start).map(|(s, e)| (*s, *e)).collect();
        for (s, e) in over {
            held.remove(&s);
            if s < start {
                held.insert(s, start);
            }
            if e > end {
                held.insert(end, e);
            }
        }
    }

    fn held_covers(held: &BTreeMap<u64, u64>, start: u64, end: u64) -> bool {
        held.range(..=start).next_back().is_some_and(|(_, e)| *e >= end)
    }

    fn held_overlaps(held: &BTreeMap<u64, u64>, start: u64, end: u64) -> bool {
        held.range(..end).next_back().is_some_and(|(_, e)| *e > start)
    }

    /// The lowest held range with room for `len` bytes.
    fn first_fit(held: &BTreeMap<u64, u64>, len: u64) -> Option<u64> {
        held.iter().find(|(s, e)| **e - **s >= len).map(|(s, _)| *s)
    }

    /// The parts of `[start, end)` that are neither guest memory nor held.
    fn gaps(&self, held: &BTreeMap<u64, u64>, start: u64, end: u64) -> Vec<(u64, u64)> {
        let map = self.read_map();
        let mut covered: Vec<(u64, u64)> = Self::overlapping(&map, start, end);
        drop(map);
        covered.extend(
            held.range(..end).rev().take_while(|(_, e)| **e > start).map(|(s, e)| ((*s).max(start), (*e).min(end))),
        );
        covered.sort_unstable();
        let mut out = Vec::new();
        let mut at = start;
        for (s, e) in covered {
            if s > at {
                out.push((at, s));
            }
            at = at.max(e);
        }
        if at < end {
            out.push((at, end));
        }
        out
    }

    /// Make every byte of `[start, end)` guest memory or held, by reserving
    /// its free gaps; fails (undoing) if a gap holds anything, as it then
    /// holds urun's memory.
    fn claim_gaps(&self, held: &mut BTreeMap<u64, u64>, start: u64, end: u64) -> Result<(), MemError> {
        let gaps = self.gaps(held, start, end);
        for (i, (s, e)) in gaps.iter().enumerate() {
            if let Err(err) = Self::reserve_host(*s, e - s, false) {
                for (s, e) in &gaps[..i] {
                    // SAFETY: reserved just above by this call.
                    unsafe { libc::munmap(*s as *mut libc::c_void, (e - s) as usize) };
                }
                return Err(match err {
                    MemError::Host { errno: libc::EEXIST, .. } => MemError::NotGuestMemory { start, len: end - start },
                    e => e,
                });
            }
        }
        for (s, e) in gaps {
            Self::hold(held, s, e);
        }
        Ok(())
    }

    /// After a failed host call over `[start, end)`, which is all guest
    /// memory or held: reserve again what is held (the kernel may have
    /// unmapped it before failing).
    fn rereserve_non_guest(&self, held: &mut BTreeMap<u64, u64>, start: u64, end: u64) {
        let parts: Vec<(u64, u64)> = held
            .range(..end)
            .rev()
            .take_while(|(_, e)| **e > start)
            .map(|(s, e)| ((*s).max(start), (*e).min(end)))
            .collect();
        for (s, e) in parts {
            if let Err(err) = Self::reserve_host(s, e - s, true) {
                tracing::warn!(%err, "cannot reserve a released guest range again");
                Self::release(held, s, e);
            }
        }
    }

    /// Record a range that already exists on the host as guest memory
    /// (used by tests and by loaders that map with their own flags).
    pub fn adopt(&self, region: Region) {
        let mut map = self.write_map();
        Self::remove_range(&mut map, region.start, region.end);
        map.insert(region.start, region);
    }

    /// Rename the region starting exactly at `start` (for "[heap]" etc.).
    pub fn set_backing(&self, start: u64, backing: Backing) {
        if let Some(r) = self.write_map().get_mut(&start) {
            r.backing = backing;
        }
    }

    /// Unmap the guest parts of `[start, start+len)`. Parts that are not the
    /// guest's are left alone, as Linux leaves unmapped holes alone. The
    /// released pages stay reserved on the host (no access) and held for
    /// the guest's later mappings, so urun never maps its own memory where
    /// a guest thread may still be about to access.
    pub fn unmap(&self, start: u64, len: u64) -> Result<(), MemError> {
        let mut held = self.held();
        self.unmap_locked(&mut held, start, len)
    }

    fn unmap_locked(&self, held: &mut BTreeMap<u64, u64>, start: u64, len: u64) -> Result<(), MemError> {
        let len = page_ceil(len);
        if !start.is_multiple_of(PAGE_SIZE) || len == 0 {
            return Err(MemError::BadRange { start, len });
        }
        let end = start.checked_add(len).ok_or(MemError::BadRange { start, len })?;
        let mut map = self.write_map();
        let pieces = Self::overlapping(&map, start, end);
        self.forget_guards(start, end, false);
        for (s, e) in &pieces {
            // The range is guest memory recorded in the map: replacing it
            // with a reservation is atomic on the host.
            Self::reserve_host(*s, e - s, true)?;
            Self::hold(held, *s, *e);
        }
        Self::remove_range(&mut map, start, end);
        drop(map);
        if !pieces.is_empty() {
            self.bump();
            self.invalidate_pages(start / PAGE_SIZE, (end - 1) / PAGE_SIZE);
        }
        Ok(())
    }

    /// Change the protection of `[start, start+len)`, which must be all guest
    /// memory (ENOMEM otherwise, as Linux says for unmapped pages).
    pub fn protect(&self, start: u64, len: u64, prot: Prot) -> Result<(), MemError> {
        let len = page_ceil(len);
        if !start.is_multiple_of(PAGE_SIZE) {
            return Err(MemError::BadRange { start, len });
        }
        if len == 0 {
            return Ok(());
        }
        let end = start.checked_add(len).ok_or(MemError::BadRange { start, len })?;
        let _layout = self.held();
        if !self.is_guest(start, len) {
            return Err(MemError::NotMapped { start, len });
        }
        // The whole range is guest memory (checked above, under the layout
        // lock).
        self.host_protect(start, end, prot).map_err(|e| match e {
            MemError::Host { errno, .. } => MemError::Host { op: "mprotect", start, len, errno },
            e => e,
        })?;
        let mut map = self.write_map();
        let old: Vec<Region> = map.range(..end).filter(|(_, r)| r.end > start).map(|(_, r)| r.clone()).collect();
        Self::remove_range(&mut map, start, end);
        for r in old {
            let s = r.start.max(start);
            let e = r.end.min(end);
            let backing = match &r.backing {
                Backing::File { path, offset, dev, inode } => {
                    Backing::File { path: path.clone(), offset: offset + (s - r.start), dev: *dev, inode: *inode }
                }
                b => b.clone(),
            };
            map.insert(s, Region { start: s, end: e, prot, shared: r.shared, backing });
        }
        Self::merge_around(&mut map, start, end);
        drop(map);
        self.bump();
        if !prot.contains(Prot::EXEC) {
            self.invalidate_pages(start / PAGE_SIZE, (end - 1) / PAGE_SIZE);
        }
        Ok(())
    }

    /// Move or resize a guest mapping (Linux `mremap`). `may_move` allows a
    /// new address; `fixed` demands `new_addr`. What the mapping leaves
    /// behind stays reserved and held, as for `unmap`.
    pub fn remap(
        &self,
        old: u64,
        old_len: u64,
        new_len: u64,
        may_move: bool,
        fixed: Option<u64>,
    ) -> Result<u64, MemError> {
        let old_len = page_ceil(old_len);
        let new_len = page_ceil(new_len);
        if !old.is_multiple_of(PAGE_SIZE) || new_len == 0 {
            return Err(MemError::BadRange { start: old, len: new_len });
        }
        let mut held = self.held();
        if !self.is_guest(old, old_len.max(PAGE_SIZE)) {
            return Err(MemError::NotMapped { start: old, len: old_len });
        }
        let region = self.region_at(old).ok_or(MemError::NotMapped { start: old, len: old_len })?;
        // Armed code pages move (or shrink away) with the guest's own
        // protection; their code is invalidated below.
        self.forget_guards(old, old + old_len.max(PAGE_SIZE), true);
        if let Some(dst) = fixed {
            let end = dst.checked_add(new_len).ok_or(MemError::BadRange { start: dst, len: new_len })?;
            if dst % PAGE_SIZE != 0 || (dst < old + old_len.max(new_len) && old < end) {
                return Err(MemError::BadRange { start: dst, len: new_len });
            }
            // The destination becomes all guest memory or held, then all
            // held: MREMAP_FIXED then replaces only reservations.
            self.claim_gaps(&mut held, dst, end)?;
            self.unmap_locked(&mut held, dst, new_len)?;
        }
        let mut cur_len = old_len;
        if old_len > new_len && old_len > 0 {
            // Shrinking: the tail goes first, replaced by a reservation
            // (the kernel's own shrink would leave a hole for a moment).
            self.unmap_locked(&mut held, old + new_len, old_len - new_len)?;
            cur_len = new_len;
        }
        let mut freed_tail = None;
        if new_len > cur_len && fixed.is_none() {
            // Growing in place must not swallow urun's memory: the kernel
            // only grows into free space, so check the guest map too.
            let tail = old + cur_len;
            let tail_end = old + new_len;
            if !self.is_free(tail, new_len - cur_len) && !may_move {
                return Err(MemError::NotMapped { start: tail, len: new_len - cur_len });
            }
            if self.is_free(tail, new_len - cur_len) && Self::held_covers(&held, tail, tail_end) {
                // The tail is a range the guest released, unmapped memory to
                // the guest: give it back to the kernel so the mapping can
                // grow into it.
                // SAFETY: the range is held by urun for the guest (no access).
                unsafe { libc::munmap(tail as *mut libc::c_void, (tail_end - tail) as usize) };
                Self::release(&mut held, tail, tail_end);
                freed_tail = Some((tail, tail_end));
            }
        }
        let mut flags = 0;
        if may_move || fixed.is_some() {
            flags |= libc::MREMAP_MAYMOVE;
        }
        if fixed.is_some() {
            flags |= libc::MREMAP_FIXED;
        }
        let mut kept_old = false;
        let p = if cur_len == new_len && fixed.is_none() {
            old as *mut libc::c_void
        } else {
            let call = |flags: i32| {
                // SAFETY: `old` is guest memory; the kernel moves it only into
                // free space, or to `fixed`, which is held (claimed above).
                unsafe {
                    libc::mremap(
                        old as *mut libc::c_void,
                        cur_len as usize,
                        new_len as usize,
                        flags,
                        fixed.unwrap_or(0),
                    )
                }
            };
            let mut p = libc::MAP_FAILED;
            if cur_len == new_len {
                // A pure move: with MREMAP_DONTUNMAP the old range stays
                // mapped until the reservation below replaces it.
                p = call(flags | libc::MREMAP_DONTUNMAP);
                kept_old = p != libc::MAP_FAILED;
            }
            if p == libc::MAP_FAILED {
                p = call(flags);
            }
            p
        };
        if p == libc::MAP_FAILED {
            let e = errno();
            if let Some((s, t)) = freed_tail {
                if Self::reserve_host(s, t - s, false).is_ok() {
                    Self::hold(&mut held, s, t);
                }
            }
            return Err(MemError::Host { op: "mremap", start: old, len: new_len, errno: e });
        }
        let new = p as u64;
        if new != old {
            // The old range is released: reserve it (with MREMAP_DONTUNMAP
            // it is still mapped, and MAP_FIXED replaces it atomically;
            // otherwise the kernel unmapped it a moment ago).
            if cur_len > 0 && Self::reserve_host(old, cur_len, kept_old).is_ok() {
                Self::hold(&mut held, old, old + cur_len);
            }
            if let Some((s, t)) = freed_tail {
                if Self::reserve_host(s, t - s, false).is_ok() {
                    Self::hold(&mut held, s, t);
                }
            }
        }
        Self::release(&mut held, new, new + new_len);
        let mut map = self.write_map();
        Self::remove_range(&mut map, old, old + cur_len);
        Self::remove_range(&mut map, new, new + new_len);
        let backing = match region.backing {
            Backing::File { path, offset, dev, inode } => {
                Backing::File { path, offset: offset + (old - region.start), dev, inode }
            }
            b => b,
        };
        map.insert(new, Region { start: new, end: new + new_len, prot: region.prot, shared: region.shared, backing });
        drop(map);
        drop(held);
        self.bump();
        if old_len > 0 {
            self.invalidate_pages(old / PAGE_SIZE, (old + old_len - 1) / PAGE_SIZE);
        }
        Ok(new)
    }

    /// The guest ranges that overlap `[start, end)`, clipped to it.
    fn overlapping(map: &BTreeMap<u64, Region>, start: u64, end: u64) -> Vec<(u64, u64)> {
        map.range(..end).filter(|(_, r)| r.end > start).map(|(_, r)| (r.start.max(start), r.end.min(end))).collect()
    }

    /// Remove `[start, end)` from the record, splitting regions at its edges.
    fn remove_range(map: &mut BTreeMap<u64, Region>, start: u64, end: u64) {
        let keys: Vec<u64> = map.range(..end).filter(|(_, r)| r.end > start).map(|(k, _)| *k).collect();
        for k in keys {
            let Some(r) = map.remove(&k) else { continue };
            if r.start < start {
                let mut left = r.clone();
                left.end = start;
                map.insert(left.start, left);
            }
            if r.end > end {
                let mut right = r.clone();
                right.start = end;
                if let Backing::File { offset, .. } = &mut right.backing {
                    *offset += end - r.start;
                }
                map.insert(right.start, right);
            }
        }
    }

    /// Merge neighbours with identical attributes around a changed range,
    /// so `/proc/self/maps` shows what Linux would.
    fn merge_around(map: &mut BTreeMap<u64, Region>, start: u64, end: u64) {
        let keys: Vec<u64> = map.range(..=end).rev().take_while(|(_, r)| r.end >= start).map(|(k, _)| *k).collect();
        let mut keys = keys;
        keys.sort_unstable();
        let mut i = 0;
        while i + 1 < keys.len() {
            let (a, b) = (keys[i], keys[i + 1]);
            let (Some(ra), Some(rb)) = (map.get(&a), map.get(&b)) else {
                i += 1;
                continue;
            };
            let contiguous_file = match (&ra.backing, &rb.backing) {
                (Backing::File { path: p1, offset: o1, .. }, Backing::File { path: p2, offset: o2, .. }) => {
                    p1 == p2 && o1 + (ra.end - ra.start) == *o2
                }
                (x, y) => x == y,
            };
            if ra.end == rb.start && ra.prot == rb.prot && ra.shared == rb.shared && contiguous_file {
                let rb_end = rb.end;
                map.remove(&b);
                if let Some(ra) = map.get_mut(&a) {
                    ra.end = rb_end;
                }
                keys.remove(i + 1);
            } else {
                i += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn anon(space: &AddressSpace, len: u64) -> u64 {
        space.map(Placement::Hint(0), len, Prot::RW, false, None).expect("map")
    }

    #[test]
    fn map_check_unmap() {
        let s = AddressSpace::new();
        let a = anon(&s, 3 * PAGE_SIZE);
        assert!(s.check(a, 3 * PAGE_SIZE, Prot::RW));
        assert!(!s.check(a, 3 * PAGE_SIZE + 1, Prot::READ));
        s.unmap(a + PAGE_SIZE, PAGE_SIZE).unwrap();
        assert!(s.check(a, PAGE_SIZE, Prot::READ));
        assert!(!s.check(a + PAGE_SIZE, 1, Prot::READ));
        assert!(s.check(a + 2 * PAGE_SIZE, PAGE_SIZE, Prot::READ));
        assert_eq!(s.regions().len(), 2);
        s.unmap(a, 3 * PAGE_SIZE).unwrap();
        assert!(s.regions().is_empty());
    }

    #[test]
    fn protect_splits_and_merges() {
        let s = AddressSpace::new();
        let a = anon(&s, 4 * PAGE_SIZE);
        s.protect(a + PAGE_SIZE, PAGE_SIZE, Prot::READ).unwrap();
        assert_eq!(s.regions().len(), 3);
        assert!(!s.check(a + PAGE_SIZE, 1, Prot::WRITE));
        s.protect(a + PAGE_SIZE, PAGE_SIZE, Prot::RW).unwrap();
        assert_eq!(s.regions().len(), 1);
        s.unmap(a, 4 * PAGE_SIZE).unwrap();
    }

    #[test]
    fn fixed_map_refuses_foreign_memory() {
        let s = AddressSpace::new();
        // A host mapping that is not the guest's.
        // SAFETY: a fresh anonymous mapping owned by this test.
        let own = unsafe {
            libc::mmap(std::ptr::null_mut(), 4096, libc::PROT_READ, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
        } as u64;
        let err = s.map(Placement::Fixed(own), PAGE_SIZE, Prot::RW, false, None).unwrap_err();
        assert_eq!(err, MemError::NotGuestMemory { start: own, len: PAGE_SIZE });
        // Unmapping it as the guest leaves it alone.
        s.unmap(own, PAGE_SIZE).unwrap();
        // SAFETY: still mapped, readable.
        assert_eq!(unsafe { *(own as *const u8) }, 0);
        assert!(s.protect(own, PAGE_SIZE, Prot::RW).is_err());
    }

    #[test]
    fn code_log_marks_invalidates_and_reports_falling_behind() {
        let s = AddressSpace::new();
        let a = anon(&s, 2 * PAGE_SIZE);
        let (p0, p1) = (a / PAGE_SIZE, a / PAGE_SIZE + 1);
        assert_eq!(s.code_seq(), 0);
        assert!(!s.code_written(a, 8), "a write to data logs nothing");
        s.mark_code(a + 0x100, a + 0x120);
        s.mark_code(a + 0x100, a + 0x110);
        assert_eq!(s.code_seq(), 1);
        assert!(s.is_code_page(p0) && !s.is_code_page(p1));
        assert!(s.overlaps_code(a + 0xff, 2) && !s.overlaps_code(a + 0x140, 8));
        assert!(!s.code_written(a + 0x800, 8), "data beside code in one page invalidates nothing");
        assert!(s.code_written(a + 0x11c, 8));
        let mut seen = Vec::new();
        assert_eq!(s.code_events_since(0, |e| seen.push(e)), CodeSync::UpTo(2));
        assert_eq!(seen, [CodeEvent::Marked(p0), CodeEvent::Invalidate { first: p0, last: p0 }]);
        assert!(!s.is_code_page(p0), "a written page is no longer code until translated again");
        // Removing execute permission, or unmapping, invalidates too.
        s.mark_code(a + PAGE_SIZE - 4, a + PAGE_SIZE + 4);
        s.protect(a, PAGE_SIZE, Prot::RW).unwrap();
        s.unmap(a, 2 * PAGE_SIZE).unwrap();
        let mut seen = Vec::new();
        assert_eq!(s.code_events_since(2, |e| seen.push(e)), CodeSync::UpTo(6));
        assert_eq!(
            seen[2..],
            [CodeEvent::Invalidate { first: p0, last: p0 }, CodeEvent::Invalidate { first: p1, last: p1 }]
        );
        for i in 0..CODE_LOG_LEN as u64 + 1 {
            s.mark_code(i * PAGE_SIZE, i * PAGE_SIZE + 1);
        }
        assert!(matches!(s.code_events_since(6, |_| {}), CodeSync::Behind(_)));
    }

    #[test]
    fn code_pages_are_write_protected_behind_the_guests_view() {
        let s = AddressSpace::new();
        let rwx = Prot::RW.union(Prot::EXEC);
        let a = s.map(Placement::Hint(0), 3 * PAGE_SIZE, rwx, false, None).expect("map");
        let p = a / PAGE_SIZE;
        assert_eq!(s.protect_code(p), CodeGuard::Guarded);
        assert_eq!(host_perms(a).as_deref(), Some("r--p"), "the host page lost WRITE");
        assert_eq!(s.prot_at(a), Some(rwx), "the guest's view is unchanged");
        assert_eq!(s.regions().len(), 1);
        // The guest's mprotect keeps WRITE off while the page stays code.
        s.protect(a, 2 * PAGE_SIZE, rwx).expect("protect");
        assert_eq!(host_perms(a).as_deref(), Some("r--p"));
        assert_eq!(host_perms(a + PAGE_SIZE).as_deref(), Some("rw-p"));
        // The kernel is about to write (a syscall's buffer): disarmed, and
        // the page's code invalidated.
        let seq = s.code_seq();
        assert!(s.check(a + 8, 16, Prot::WRITE));
        assert_eq!(host_perms(a).as_deref(), Some("rw-p"));
        assert!(!s.is_code_guarded(p));
        let mut seen = Vec::new();
        s.code_events_since(seq, |e| seen.push(e));
        assert_eq!(seen, [CodeEvent::Invalidate { first: p, last: p }]);
        // A plain write by urun (or guest code) faults into the host-fault
        // owner, which does the same and lets the write run.
        assert_eq!(s.protect_code(p), CodeGuard::Guarded);
        // SAFETY: a writable guest page (write-protected on the host).
        unsafe { std::ptr::write_volatile((a + 100) as *mut u8, 5) };
        assert_eq!(s.code_write_faults(p), 1);
        assert_eq!(host_perms(a).as_deref(), Some("rw-p"));
        // Losing EXEC forgets the page; read-only code stays armed and is
        // masked again when made writable.
        assert_eq!(s.protect_code(p), CodeGuard::Guarded);
        s.protect(a, PAGE_SIZE, Prot::RW).expect("protect");
        assert!(!s.is_code_guarded(p));
        s.protect(a, PAGE_SIZE, Prot::RX).expect("protect");
        assert_eq!(s.protect_code(p), CodeGuard::Guarded);
        assert_eq!(host_perms(a).as_deref(), Some("r--p"));
        s.protect(a, PAGE_SIZE, rwx).expect("protect");
        assert_eq!(host_perms(a).as_deref(), Some("r--p"));
        // A page that faults too often is left writable.
        for _ in 0..HOT_PAGE_FAULTS {
            if s.protect_code(p) == CodeGuard::Unguarded {
                break;
            }
            // SAFETY: as above.
            unsafe { std::ptr::write_volatile((a + 200) as *mut u8, 6) };
        }
        assert_eq!(s.protect_code(p), CodeGuard::Unguarded);
        assert_eq!(host_perms(a).as_deref(), Some("rw-p"));
        // Moving armed pages gives them the guest's protection.
        assert_eq!(s.protect_code(p + 2), CodeGuard::Guarded);
        let b = s.remap(a, 3 * PAGE_SIZE, 3 * PAGE_SIZE, true, None).expect("remap");
        if b != a {
            assert_eq!(host_perms(b + 2 * PAGE_SIZE).as_deref(), Some("rw-p"));
        }
        // Shared memory is never armed (another alias could write it).
        let sh = s.map(Placement::Hint(0), PAGE_SIZE, rwx, true, None).expect("map");
        assert_eq!(s.protect_code(sh / PAGE_SIZE), CodeGuard::Unguarded);
    }

    #[test]
    fn granule_masks() {
        let g: Vec<_> = granules(0x1000, 0x1040).collect();
        assert_eq!(g, [(1, 1)]);
        let g: Vec<_> = granules(0x1fc0, 0x2001).collect();
        assert_eq!(g, [(1, 1 << 63), (2, 1)]);
        let g: Vec<_> = granules(0x1000, 0x2000).collect();
        assert_eq!(g, [(1, u64::MAX)]);
        assert_eq!(granules(5, 5).count(), 0);
    }

    #[test]
    fn remap_grows() {
        let s = AddressSpace::new();
        let a = anon(&s, PAGE_SIZE);
        let b = s.remap(a, PAGE_SIZE, 16 * PAGE_SIZE, true, None).unwrap();
        assert!(s.check(b, 16 * PAGE_SIZE, Prot::RW));
        s.unmap(b, 16 * PAGE_SIZE).unwrap();
    }

    /// The host's protection string ("---p") of the mapping holding `addr`,
    /// from /proc/self/maps.
    fn host_perms(addr: u64) -> Option<String> {
        let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
        maps.lines().find_map(|l| {
            let mut f = l.split_whitespace();
            let (s, e) = f.next()?.split_once('-')?;
            let (s, e) = (u64::from_str_radix(s, 16).ok()?, u64::from_str_radix(e, 16).ok()?);
            (s <= addr && addr < e).then(|| f.next().map(str::to_owned)).flatten()
        })
    }

    #[test]
    fn unmap_leaves_a_held_reservation() {
        let space = AddressSpace::new();
        let a = anon(&space, 4 * PAGE_SIZE);
        space.unmap(a + PAGE_SIZE, PAGE_SIZE).expect("unmap");
        assert!(!space.is_guest(a + PAGE_SIZE, PAGE_SIZE));
        assert_eq!(space.prot_at(a + PAGE_SIZE), None);
        assert_eq!(space.held_ranges(), vec![(a + PAGE_SIZE, a + 2 * PAGE_SIZE)]);
        assert_eq!(host_perms(a + PAGE_SIZE).as_deref(), Some("---p"), "reserved on the host");
        // Not guest memory: the maps view, mprotect and a second munmap.
        assert!(space.regions().iter().all(|r| r.end <= a + PAGE_SIZE || r.start >= a + 2 * PAGE_SIZE));
        assert_eq!(
            space.protect(a + PAGE_SIZE, PAGE_SIZE, Prot::RW),
            Err(MemError::NotMapped { start: a + PAGE_SIZE, len: PAGE_SIZE })
        );
        space.unmap(a + PAGE_SIZE, PAGE_SIZE).expect("munmap of a reservation is a no-op");
        // The host says SEGV_ACCERR on the reservation; the guest sees unmapped memory.
        let f = crate::hostfault::HostFault { signo: libc::SIGSEGV, addr: a + PAGE_SIZE, write: true, code: 2 };
        let kind = |k| crate::FaultKind::Page { addr: f.addr, write: true, kind: k };
        assert_eq!(space.guest_fault_kind(&f), kind(crate::PageFaultKind::NotMapped));
        let g = crate::hostfault::HostFault { addr: a, ..f };
        assert_eq!(
            space.guest_fault_kind(&g),
            crate::FaultKind::Page { addr: a, write: true, kind: crate::PageFaultKind::Protection }
        );
        // Neighbours released later merge with it.
        space.unmap(a, PAGE_SIZE).expect("unmap");
        space.unmap(a + 2 * PAGE_SIZE, 2 * PAGE_SIZE).expect("unmap");
        assert_eq!(space.held_ranges(), vec![(a, a + 4 * PAGE_SIZE)]);
        assert!(space.regions().is_empty());
    }

    #[test]
    fn mappings_reuse_held_ranges_first_fit() {
        let space = AddressSpace::new();
        let a = anon(&space, 8 * PAGE_SIZE);
        space.unmap(a, 2 * PAGE_SIZE).expect("unmap");
        space.unmap(a + 4 * PAGE_SIZE, 4 * PAGE_SIZE).expect("unmap");
        // Too big for the first hole: the second.
        let b = anon(&space, 3 * PAGE_SIZE);
        assert_eq!(b, a + 4 * PAGE_SIZE);
        // Fits the first.
        let c = anon(&space, PAGE_SIZE);
        assert_eq!(c, a);
        assert_eq!(
            space.held_ranges(),
            vec![(a + PAGE_SIZE, a + 2 * PAGE_SIZE), (a + 7 * PAGE_SIZE, a + 8 * PAGE_SIZE)]
        );
        // The reused pages are fresh memory.
        // SAFETY: `c` is a readable guest page just mapped.
        assert_eq!(unsafe { *(c as *const u64) }, 0);
        // Nothing held fits: the kernel's choice, outside.
        let d = anon(&space, 16 * PAGE_SIZE);
        assert!(d + 16 * PAGE_SIZE <= a || d >= a + 8 * PAGE_SIZE);
    }

    #[test]
    fn fixed_maps_over_a_held_range_as_over_unmapped_memory() {
        let space = AddressSpace::new();
        let a = anon(&space, 4 * PAGE_SIZE);
        space.unmap(a + PAGE_SIZE, 2 * PAGE_SIZE).expect("unmap");
        // MAP_FIXED_NOREPLACE over held pages succeeds, over guest pages fails.
        let got =
            space.map(Placement::FixedNoReplace(a + PAGE_SIZE), PAGE_SIZE, Prot::RW, false, None).expect("noreplace");
        assert_eq!(got, a + PAGE_SIZE);
        let e = space.map(Placement::FixedNoReplace(a + 2 * PAGE_SIZE), 2 * PAGE_SIZE, Prot::RW, false, None);
        assert_eq!(
            e,
            Err(MemError::Host { op: "mmap", start: a + 2 * PAGE_SIZE, len: 2 * PAGE_SIZE, errno: libc::EEXIST })
        );
        // MAP_FIXED across guest, held and guest pages.
        space.map(Placement::Fixed(a), 4 * PAGE_SIZE, Prot::READ, false, None).expect("fixed");
        assert!(space.check(a, 4 * PAGE_SIZE, Prot::READ));
        assert!(space.held_ranges().is_empty());
        // A fixed map partly over free space claims it, then frees it again.
        space.unmap(a, 4 * PAGE_SIZE).expect("unmap");
        let far = anon(&space, 64 * PAGE_SIZE);
        space.unmap(far, 64 * PAGE_SIZE).expect("unmap");
        assert_eq!(anon(&space, 64 * PAGE_SIZE), far, "first fit reuses the larger hole");
    }

    #[test]
    fn remap_leaves_reservations_behind() {
        let space = AddressSpace::new();
        let a = anon(&space, 4 * PAGE_SIZE);
        // Shrink in place: the tail is held.
        assert_eq!(space.remap(a, 4 * PAGE_SIZE, 2 * PAGE_SIZE, false, None), Ok(a));
        assert_eq!(space.held_ranges(), vec![(a + 2 * PAGE_SIZE, a + 4 * PAGE_SIZE)]);
        // Grow back in place over the held tail (unmapped to the guest).
        assert_eq!(space.remap(a, 2 * PAGE_SIZE, 4 * PAGE_SIZE, false, None), Ok(a));
        assert!(space.held_ranges().is_empty());
        // Move to a fixed address: the old range is held.
        let dst = anon(&space, 4 * PAGE_SIZE);
        // SAFETY: `a` is a writable guest page.
        unsafe { *(a as *mut u64) = 0x1234 };
        assert_eq!(space.remap(a, 4 * PAGE_SIZE, 4 * PAGE_SIZE, true, Some(dst)), Ok(dst));
        // SAFETY: `dst` now holds the moved pages.
        assert_eq!(unsafe { *(dst as *const u64) }, 0x1234);
        assert_eq!(space.held_ranges(), vec![(a, a + 4 * PAGE_SIZE)]);
        assert_eq!(host_perms(a).as_deref(), Some("---p"));
    }

    #[test]
    fn map_unmap_loop_stays_bounded() {
        let space = AddressSpace::new();
        let count = || std::fs::read_to_string("/proc/self/maps").map(|m| m.lines().count()).unwrap_or(0);
        let before = count();
        for i in 0..20_000u64 {
            let len = PAGE_SIZE * (1 + (i * 7919) % 37);
            let a = anon(&space, len);
            let b = anon(&space, PAGE_SIZE * (1 + i % 5));
            space.unmap(a, len).expect("unmap");
            if i % 3 == 0 {
                space.unmap(b, PAGE_SIZE).expect("unmap");
            }
        }
        let held = space.held_ranges();
        let span: u64 =
            held.iter().map(|(s, e)| e - s).sum::<u64>() + space.regions().iter().map(|r| r.end - r.start).sum::<u64>();
        assert!(span < 200_000 * PAGE_SIZE, "address space used {span:#x}");
        // Other tests run in parallel in this process: allow for them.
        assert!(count() < before + 20_000, "host VMAs grew from {before} to {}", count());
    }
}
