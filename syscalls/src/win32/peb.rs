//! What the PEB points at, in guest memory at Windows x64's offsets:
//! PEB_LDR_DATA with its three lists of LDR_DATA_TABLE_ENTRY (load,
//! memory and initialization order), RTL_USER_PROCESS_PARAMETERS (image
//! path, command line, environment, current directory, standard handles),
//! and KUSER_SHARED_DATA at 0x7ffe0000, read-only for the guest, whose
//! clocks a host thread keeps current (Go reads its time there).

use std::sync::atomic::{AtomicU32, Ordering};

use urun_cpu::{AddressSpace, Backing, FileMap, Placement, Prot};

use super::heap::Heap;
use super::modules::Modules;
use super::poke;

const PEB_LDR: u64 = 0x18;
const PEB_PARAMS: u64 = 0x20;
/// PEB_LDR_DATA: Length, Initialized, the three list heads.
const LDR_SIZE: u64 = 0x58;
const LDR_LOAD_HEAD: u64 = 0x10;
const LDR_MEMORY_HEAD: u64 = 0x20;
const LDR_INIT_HEAD: u64 = 0x30;
/// LDR_DATA_TABLE_ENTRY: the links of each list, then the fields.
const ENTRY_SIZE: u64 = 0x120;
const ENTRY_LOAD: u64 = 0x00;
const ENTRY_MEMORY: u64 = 0x10;
const ENTRY_INIT: u64 = 0x20;
const ENTRY_DLL_BASE: u64 = 0x30;
const ENTRY_ENTRY_POINT: u64 = 0x38;
const ENTRY_SIZE_OF_IMAGE: u64 = 0x40;
const ENTRY_FULL_NAME: u64 = 0x48;
const ENTRY_BASE_NAME: u64 = 0x58;
const ENTRY_FLAGS: u64 = 0x68;
const ENTRY_LOAD_COUNT: u64 = 0x6c;
const ENTRY_TLS_INDEX: u64 = 0x6e;
/// LDRP_IMAGE_DLL | LDRP_ENTRY_PROCESSED
const FLAGS_DLL: u32 = 0x0000_4004;
/// RTL_USER_PROCESS_PARAMETERS.
const PARAMS_SIZE: u64 = 0x440;
const P_FLAGS: u64 = 0x08;
const P_STD_INPUT: u64 = 0x20;
const P_CURDIR: u64 = 0x38;
const P_IMAGE_PATH: u64 = 0x60;
const P_COMMAND_LINE: u64 = 0x70;
const P_ENVIRONMENT: u64 = 0x80;
const P_ENVIRONMENT_SIZE: u64 = 0x3f0;
/// KUSER_SHARED_DATA.
pub(crate) const KUSER: u64 = 0x7ffe_0000;
const K_TICK_MULTIPLIER: u64 = 0x004;
const K_INTERRUPT_TIME: u64 = 0x008;
const K_SYSTEM_TIME: u64 = 0x014;
const K_IMAGE_NUMBER: u64 = 0x02c;
const K_SYSTEM_ROOT: u64 = 0x030;
const K_BUILD_NUMBER: u64 = 0x260;
const K_PRODUCT_TYPE: u64 = 0x264;
const K_PRODUCT_VALID: u64 = 0x268;
const K_NATIVE_ARCH: u64 = 0x26a;
const K_MAJOR: u64 = 0x26c;
const K_MINOR: u64 = 0x270;
const K_PROCESSOR_FEATURES: u64 = 0x274;
const K_TICK_COUNT: u64 = 0x320;
const K_ACTIVE_PROCESSORS: u64 = 0x3c0;
/// 100 ns units between 1601-01-01 and 1970-01-01.
const FILETIME_EPOCH: u64 = 116_444_736_000_000_000;

fn put(mem: &AddressSpace, addr: u64, v: u64) -> Result<(), String> {
    poke(mem, addr, &v.to_le_bytes())
}

fn utf16(s: &str) -> Vec<u8> {
    s.encode_utf16().chain([0]).flat_map(|c| c.to_le_bytes()).collect()
}

/// A UNICODE_STRING at `at` for `s` (its buffer from `heap`).
fn unicode_string(mem: &AddressSpace, heap: &mut Heap, at: u64, s: &str) -> Result<(), String> {
    let bytes = utf16(s);
    let buf = heap.alloc(bytes.len() as u64).ok_or("out of memory")?;
    poke(mem, buf, &bytes)?;
    let len = (bytes.len() - 2).min(0xfffc) as u16;
    let mut us = [0u8; 16];
    us[0..2].copy_from_slice(&len.to_le_bytes());
    us[2..4].copy_from_slice(&(len + 2).to_le_bytes());
    us[8..16].copy_from_slice(&buf.to_le_bytes());
    poke(mem, at, &us)
}

/// Make the LDR entries modules lack, then relink the three lists (and
/// the PEB's Ldr the first time).
pub(crate) fn update_ldr(mem: &AddressSpace, heap: &mut Heap, mods: &mut Modules, peb: u64) -> Result<(), String> {
    if mods.ldr_data == 0 {
        let ldr = heap.alloc_zeroed(LDR_SIZE).ok_or("out of memory")?;
        poke(mem, ldr, &(LDR_SIZE as u32).to_le_bytes())?;
        poke(mem, ldr + 4, &[1])?;
        put(mem, peb + PEB_LDR, ldr)?;
        mods.ldr_data = ldr;
    }
    for m in mods.list.iter_mut().filter(|m| m.ldr == 0 && !m.gone) {
        let e = heap.alloc_zeroed(ENTRY_SIZE).ok_or("out of memory")?;
        put(mem, e + ENTRY_DLL_BASE, m.base)?;
        put(mem, e + ENTRY_ENTRY_POINT, m.entry)?;
        poke(mem, e + ENTRY_SIZE_OF_IMAGE, &(m.size as u32).to_le_bytes())?;
        unicode_string(mem, heap, e + ENTRY_FULL_NAME, &m.path)?;
        unicode_string(mem, heap, e + ENTRY_BASE_NAME, &m.name)?;
        let flags = if m.is_exe { 0x4000 } else { FLAGS_DLL };
        poke(mem, e + ENTRY_FLAGS, &flags.to_le_bytes())?;
        let count: u16 = if m.pinned { 0xffff } else { 1 };
        poke(mem, e + ENTRY_LOAD_COUNT, &count.to_le_bytes())?;
        let tls = m.tls_index.map_or(0, |i| i as u16);
        poke(mem, e + ENTRY_TLS_INDEX, &tls.to_le_bytes())?;
        m.ldr = e;
    }
    let live: Vec<usize> = (0..mods.list.len()).filter(|&i| !mods.list[i].gone).collect();
    // Load and memory order: the program, urun's DLLs, then real DLLs as
    // they were loaded. Initialization order: urun's DLLs, then real DLLs
    // dependencies first (the program is not in it).
    let mut load: Vec<u64> = Vec::new();
    load.extend(live.iter().filter(|&&i| mods.list[i].is_exe).map(|&i| mods.list[i].ldr));
    load.extend(live.iter().filter(|&&i| mods.list[i].system.is_some()).map(|&i| mods.list[i].ldr));
    let real: Vec<usize> =
        live.iter().copied().filter(|&i| !mods.list[i].is_exe && mods.list[i].system.is_none()).collect();
    load.extend(real.iter().map(|&i| mods.list[i].ldr));
    let mut init: Vec<u64> =
        live.iter().filter(|&&i| mods.list[i].system.is_some()).map(|&i| mods.list[i].ldr).collect();
    init.extend(mods.init_order.iter().filter(|&&i| !mods.list[i].gone).map(|&i| mods.list[i].ldr));
    let ldr = mods.ldr_data;
    link(mem, ldr + LDR_LOAD_HEAD, &load, ENTRY_LOAD)?;
    link(mem, ldr + LDR_MEMORY_HEAD, &load, ENTRY_MEMORY)?;
    link(mem, ldr + LDR_INIT_HEAD, &init, ENTRY_INIT)
}

/// Make the circular list at `head` run through `entries` (their links at
/// `off`).
fn link(mem: &AddressSpace, head: u64, entries: &[u64], off: u64) -> Result<(), String> {
    let nodes: Vec<u64> = std::iter::once(head).chain(entries.iter().map(|e| e + off)).collect();
    for (k, &n) in nodes.iter().enumerate() {
        let next = nodes[(k + 1) % nodes.len()];
        let prev = nodes[(k + nodes.len() - 1) % nodes.len()];
        put(mem, n, next)?;
        put(mem, n + 8, prev)?;
    }
    Ok(())
}

/// What the process parameters describe.
pub(crate) struct Params<'a> {
    pub image_path: &'a str,
    pub command_line: &'a str,
    pub envp: &'a [Vec<u8>],
    pub cwd: &'a str,
    /// Handles of stdin, stdout, stderr.
    pub std: [u64; 3],
}

/// RTL_USER_PROCESS_PARAMETERS, hung on the PEB. Returns (its address,
/// the UTF-16 command line's address, the UTF-16 environment's address).
pub(crate) fn build_params(mem: &AddressSpace, heap: &mut Heap, peb: u64, p: &Params<'_>) -> Result<u64, String> {
    let at = heap.alloc_zeroed(PARAMS_SIZE).ok_or("out of memory")?;
    poke(mem, at, &(PARAMS_SIZE as u32).to_le_bytes())?;
    poke(mem, at + 4, &(PARAMS_SIZE as u32).to_le_bytes())?;
    // RTL_USER_PROC_PARAMS_NORMALIZED: the strings are pointers.
    poke(mem, at + P_FLAGS, &1u32.to_le_bytes())?;
    for (k, h) in p.std.iter().enumerate() {
        put(mem, at + P_STD_INPUT + 8 * k as u64, *h)?;
    }
    unicode_string(mem, heap, at + P_CURDIR, p.cwd)?;
    unicode_string(mem, heap, at + P_IMAGE_PATH, p.image_path)?;
    unicode_string(mem, heap, at + P_COMMAND_LINE, p.command_line)?;
    // The environment: NAME=VALUE strings, each NUL-terminated, then a NUL.
    let mut env: Vec<u8> = Vec::new();
    for kv in p.envp {
        env.extend(utf16(&String::from_utf8_lossy(kv)));
    }
    env.extend([0, 0]);
    let block = heap.alloc(env.len() as u64).ok_or("out of memory")?;
    poke(mem, block, &env)?;
    put(mem, at + P_ENVIRONMENT, block)?;
    put(mem, at + P_ENVIRONMENT_SIZE, env.len() as u64)?;
    put(mem, peb + PEB_PARAMS, at)?;
    Ok(at)
}

fn now_100ns(clock: libc::clockid_t) -> u64 {
    // SAFETY: clock_gettime into a zeroed timespec.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: `ts` is a valid out pointer.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 10_000_000 + ts.tv_nsec as u64 / 100
}

/// Write a KSYSTEM_TIME as the kernel does: High2Time, LowPart, High1Time,
/// so a reader that sees High1Time == High2Time has a consistent value.
fn put_ksystem_time(page: u64, off: u64, v: u64) {
    // SAFETY: `page` is urun's own read-write view of the KUSER_SHARED_DATA
    // page (4 KiB, mapped for the life of the process); the fields are
    // 4-byte aligned.
    let field = |o: u64| unsafe { &*((page + off + o) as *const AtomicU32) };
    field(8).store((v >> 32) as u32, Ordering::Release);
    field(0).store(v as u32, Ordering::Release);
    field(4).store((v >> 32) as u32, Ordering::Release);
}

fn update_clocks(page: u64) {
    let interrupt = now_100ns(libc::CLOCK_MONOTONIC);
    put_ksystem_time(page, K_INTERRUPT_TIME, interrupt);
    put_ksystem_time(page, K_SYSTEM_TIME, now_100ns(libc::CLOCK_REALTIME) + FILETIME_EPOCH);
    // TickCountMultiplier is 1 << 24: the tick count is in milliseconds.
    put_ksystem_time(page, K_TICK_COUNT, interrupt / 10_000);
}

/// Map KUSER_SHARED_DATA at 0x7ffe0000 (read-only for the guest; urun
/// writes it through a second view of the same memory) and start the
/// thread that keeps its clocks current (every millisecond). A taken
/// address is not fatal: programs that do not read it still run.
pub(crate) fn map_kuser(mem: &AddressSpace) -> Result<(), String> {
    // SAFETY: memfd_create with a static NUL-terminated name.
    let fd = unsafe { libc::memfd_create(c"urun-kuser-shared-data".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(format!("memfd_create: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: `fd` is the memfd just created.
    if unsafe { libc::ftruncate(fd, 0x1000) } != 0 {
        // SAFETY: closing our own fd.
        unsafe { libc::close(fd) };
        return Err(format!("ftruncate: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: a new shared mapping of our own memfd, where the kernel
    // chooses; nothing else refers to that range.
    let view = unsafe {
        libc::mmap(std::ptr::null_mut(), 0x1000, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd, 0)
    };
    if view == libc::MAP_FAILED {
        // SAFETY: closing our own fd.
        unsafe { libc::close(fd) };
        return Err(format!("mmap: {}", std::io::Error::last_os_error()));
    }
    let page = view as u64;
    let file = FileMap { fd, offset: 0, backing: Backing::Named("[kuser_shared_data]".into()) };
    let mapped = mem.map(Placement::FixedNoReplace(KUSER), 0x1000, Prot::READ, true, Some(&file));
    // SAFETY: the mappings hold their own references to the memfd.
    unsafe { libc::close(fd) };
    if let Err(e) = mapped {
        // SAFETY: unmapping the view made above, which nothing uses.
        unsafe { libc::munmap(view, 0x1000) };
        return Err(format!("0x7ffe0000: {e}"));
    }
    let mut k = vec![0u8; 0x1000];
    let mut put32 = |off: u64, v: u32| k[off as usize..off as usize + 4].copy_from_slice(&v.to_le_bytes());
    put32(K_TICK_MULTIPLIER, 1 << 24);
    put32(K_BUILD_NUMBER, 19045);
    put32(K_PRODUCT_TYPE, 1); // NtProductWinNt
    put32(K_MAJOR, 10);
    put32(K_MINOR, 0);
    let cpus = super::system::host_cpus();
    put32(K_ACTIVE_PROCESSORS, cpus);
    k[K_PRODUCT_VALID as usize] = 1;
    k[K_IMAGE_NUMBER as usize..K_IMAGE_NUMBER as usize + 4].copy_from_slice(&[0x64, 0x86, 0x64, 0x86]);
    k[K_NATIVE_ARCH as usize..K_NATIVE_ARCH as usize + 2].copy_from_slice(&9u16.to_le_bytes()); // AMD64
    let root = utf16("C:\\Windows");
    k[K_SYSTEM_ROOT as usize..K_SYSTEM_ROOT as usize + root.len()].copy_from_slice(&root);
    // PF_* features every x86-64 host urun runs on has: CMPXCHG8B (8),
    // MMX (3), XMMI (6), 3DNow off, RDTSC (8), PAE (9), XMMI64 (10),
    // NX (12), SSE3 (13), CMPXCHG128 (14), XSAVE (17), SSSE3 (36), SSE4.1
    // (37), SSE4.2 (38).
    for f in [2u64, 3, 6, 8, 9, 10, 12, 13, 14, 17, 36, 37, 38] {
        k[(K_PROCESSOR_FEATURES + f) as usize] = 1;
    }
    // SAFETY: `view` is our own 4 KiB read-write mapping.
    unsafe { std::ptr::copy_nonoverlapping(k.as_ptr(), view as *mut u8, k.len()) };
    update_clocks(page);
    // Under `--check` each update takes an exclusive turn, so that it
    // cannot land between the two runs of a checked block that reads the
    // clocks; it comes at Windows' default timer tick (15.625 ms), not every
    // ms, since each turn stops every thread's translated code.
    let period = if urun_cpu::jit::check_enabled() { 15_625 } else { 1_000 };
    let spawned = std::thread::Builder::new().name("urun-kuser".into()).spawn(move || loop {
        let turn = urun_cpu::jit::check_exclusive();
        update_clocks(page);
        drop(turn);
        std::thread::sleep(std::time::Duration::from_micros(period));
    });
    if let Err(e) = spawned {
        tracing::warn!(%e, "KUSER_SHARED_DATA's clocks will not advance");
    }
    Ok(())
}
