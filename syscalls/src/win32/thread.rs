//! Threads: CreateThread and the CRT's _beginthread(ex), each guest thread
//! on its own host thread with its own engine, TEB (GS base), stack,
//! static TLS block, TlsAlloc slots and FLS slots; thread exit in Wine's
//! order (FLS callbacks, then the image's TLS callbacks with
//! DLL_THREAD_DETACH); the last thread's end ends the process.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use urun_cpu::state::reg;
use urun_cpu::{CpuState, Placement, Prot};
use urun_loader::LoadedPe;

use super::abi::{Call, Fail, Res};
use super::kernel32::{set_error, ERROR_INVALID_PARAMETER, ERROR_NOT_ENOUGH_MEMORY};
use super::sync::{Kind, CURRENT_THREAD, STILL_ACTIVE};
use super::teb::{
    TEB_PEB, TEB_PID, TEB_SELF, TEB_SIZE, TEB_STACK_BASE, TEB_STACK_LIMIT, TEB_TID, TEB_TLS_POINTER, TEB_TLS_SLOTS,
    TLS_SLOTS,
};
use super::{lock, poke, Process, Stop};
use crate::guest_thread::{self, SpawnError};

/// More TEB fields.
const TEB_DEALLOCATION_STACK: u64 = 0x1478;
const TEB_TLS_EXPANSION: u64 = 0x1780;
const TEB_FLS_DATA: u64 = 0x17c8;
/// TlsAlloc indices past the TEB's 64 live in a per-thread block of these.
const TLS_EXPANSION_SLOTS: u32 = 1024;
const FLS_SLOTS: usize = 128;
const CREATE_SUSPENDED: u32 = 0x4;
const STACK_SIZE_PARAM_IS_A_RESERVATION: u32 = 0x1_0000;
const DLL_THREAD_ATTACH: u64 = 2;
const DLL_THREAD_DETACH: u64 = 3;
const ERROR_NOT_SUPPORTED: u32 = 50;

/// One live guest thread, by its TEB.
struct Rec {
    tid: u32,
    obj: u64,
    /// Its stack mapping (len 0: the first thread's, which urun keeps).
    stack: (u64, u64),
    /// Heap blocks freed when it ends.
    blocks: Vec<u64>,
    /// _beginthread: the handle closes itself when the thread ends.
    auto_close: Option<u64>,
    /// Its msvcrt `errno` (0: the process's, for the first thread).
    errno: u64,
}

/// What every thread of the process shares about threads.
pub(crate) struct Threads {
    /// The guest-side start of every new thread (`trampoline`).
    entry: u64,
    image_base: u64,
    callbacks: Vec<u64>,
    /// The image's TLS template: [start, end) then zero fill.
    tls: Option<(u64, u64, u32)>,
    stack_reserve: u64,
    stack_commit: u64,
    live: AtomicUsize,
    recs: Mutex<HashMap<u64, Rec>>,
    /// TlsAlloc's indices in use (64 + the expansion slots).
    tls_used: Mutex<Vec<bool>>,
    /// FlsAlloc's indices: Some(callback, 0 for none) when allocated.
    fls: Mutex<Vec<Option<u64>>>,
}

impl Threads {
    pub fn new(image: &LoadedPe, entry: u64) -> Threads {
        Threads {
            entry,
            image_base: image.base,
            callbacks: image.tls.as_ref().map(|t| t.callbacks.clone()).unwrap_or_default(),
            tls: image.tls.as_ref().map(|t| (t.start, t.end, t.zero_fill)),
            stack_reserve: image.stack_reserve,
            stack_commit: image.stack_commit,
            live: AtomicUsize::new(1),
            recs: Mutex::new(HashMap::new()),
            tls_used: Mutex::new(vec![false; (TLS_SLOTS + TLS_EXPANSION_SLOTS) as usize]),
            fls: Mutex::new(vec![None; FLS_SLOTS]),
        }
    }
}

/// The first thread: its TEB and id become a thread object.
pub(crate) fn register_main(p: &Process, teb: u64, tid: u32) {
    let obj = p.objects.new_thread(0);
    p.objects.set_thread_id(obj, tid);
    lock(&p.threads.recs).insert(teb, Rec { tid, obj, stack: (0, 0), blocks: Vec::new(), auto_close: None, errno: 0 });
}

/// The calling thread's msvcrt `errno`, None for the first thread (whose
/// is the process's data object).
pub(crate) fn errno_addr(c: &Call<'_>) -> Option<u64> {
    lock(&c.p.threads.recs).get(&c.cpu.gs_base).map(|r| r.errno).filter(|a| *a != 0)
}

/// The calling thread's own thread object.
pub(crate) fn current_obj(c: &Call<'_>) -> Option<u64> {
    lock(&c.p.threads.recs).get(&c.cpu.gs_base).map(|r| r.obj)
}

/// The guest code every new thread starts in, entered with RSP ≡ 8 (mod
/// 16), RBX = the thread's function, R12 = its parameter: the image's TLS
/// callbacks with DLL_THREAD_ATTACH, the function, then ExitThread with
/// its result.
pub(crate) fn trampoline(base: u64, callbacks: &[u64], exit_thread: u64) -> Vec<u8> {
    // mov rcx, r12; call rbx
    let call_function = [0x4c, 0x89, 0xe1, 0xff, 0xd3];
    super::teb::start_trampoline(base, callbacks, DLL_THREAD_ATTACH as u8, &call_function, exit_thread)
}

/// Why a thread could not be created, as a Win32 error.
type CreateError = u32;

/// A new TEB (zeroed heap pages) for a thread on `[lo, top)`, with the
/// image's TLS block. Returns it and the heap blocks to free at the end.
fn new_teb(p: &Process, lo: u64, top: u64, peb: u64) -> Result<(u64, Vec<u64>), CreateError> {
    // The registry before the heap: the order the loader takes them in.
    let mods = lock(&p.mods);
    let mut heap = lock(&p.heap);
    let teb = heap.alloc_zeroed(TEB_SIZE).ok_or(ERROR_NOT_ENOUGH_MEMORY)?;
    let mut blocks = vec![teb];
    let mut fields = vec![
        (TEB_STACK_BASE, top),
        (TEB_STACK_LIMIT, lo),
        (TEB_SELF, teb),
        (TEB_PID, u64::from(std::process::id())),
        (TEB_PEB, peb),
        (TEB_DEALLOCATION_STACK, lo),
    ];
    let mut exe_block = 0;
    if let Some((start, end, zero_fill)) = p.threads.tls {
        let mut template = vec![0u8; (end - start) as usize];
        if !crate::linux::guest::read_into(&p.mem, start, &mut template) {
            return Err(ERROR_NOT_ENOUGH_MEMORY);
        }
        let block = heap.alloc_zeroed((template.len() as u64 + u64::from(zero_fill)).max(16));
        let Some(block) = block else { return Err(ERROR_NOT_ENOUGH_MEMORY) };
        blocks.push(block);
        poke(&p.mem, block, &template).map_err(|_| ERROR_NOT_ENOUGH_MEMORY)?;
        exe_block = block;
    }
    // The TLS pointer array: the program's block at index 0, a fresh block
    // for each DLL with TLS at its index (the DLLs' blocks live as long as
    // the process).
    if exe_block != 0 || !mods.tls_templates().is_empty() {
        let array = mods.thread_tls_array(&p.mem, &mut heap, exe_block).map_err(|e| {
            tracing::warn!(%e, "a new thread's TLS");
            ERROR_NOT_ENOUGH_MEMORY
        })?;
        blocks.push(array);
        fields.push((TEB_TLS_POINTER, array));
    }
    for (off, v) in fields {
        poke(&p.mem, teb + off, &v.to_le_bytes()).map_err(|_| ERROR_NOT_ENOUGH_MEMORY)?;
    }
    Ok((teb, blocks))
}

/// Start a guest thread running `start(param)`. Returns its handle and id.
fn spawn(
    c: &Call<'_>,
    stack_size: u64,
    start: u64,
    param: u64,
    flags: u32,
    auto_close: bool,
) -> Result<(u64, u32), CreateError> {
    let p = c.p;
    let t = &p.threads;
    if start == 0 {
        return Err(ERROR_INVALID_PARAMETER);
    }
    let reserve = if flags & STACK_SIZE_PARAM_IS_A_RESERVATION != 0 && stack_size != 0 {
        stack_size
    } else if stack_size > t.stack_reserve {
        // A commit size larger than the reserve: rounded up to 1 MiB.
        (stack_size + 0xf_ffff) & !0xf_ffff
    } else {
        t.stack_reserve.max(t.stack_commit)
    };
    let reserve = urun_cpu::mem::page_ceil(reserve.clamp(0x1_0000, 0x4000_0000));
    let lo = p.mem.map(Placement::Hint(0), reserve, Prot::RW, false, None).map_err(|_| ERROR_NOT_ENOUGH_MEMORY)?;
    p.mem.set_backing(lo, urun_cpu::Backing::Named("[stack]".into()));
    let top = lo + reserve;
    let peb = c.u64_at(c.cpu.gs_base + TEB_PEB).unwrap_or(0);
    let (teb, blocks) = match new_teb(p, lo, top, peb) {
        Ok(v) => v,
        Err(e) => {
            let _ = p.mem.unmap(lo, reserve);
            return Err(e);
        }
    };
    let obj = p.objects.new_thread(u32::from(flags & CREATE_SUSPENDED != 0));
    let Some(handle) = p.objects.handle_for(obj) else {
        forget(p, teb, obj, (lo, reserve), &blocks);
        return Err(ERROR_NOT_ENOUGH_MEMORY);
    };
    // Its errno: the TEB's last 16 bytes (past every field Windows has).
    let errno = teb + TEB_SIZE - 16;
    let rec = Rec { tid: 0, obj, stack: (lo, reserve), blocks, auto_close: auto_close.then_some(handle), errno };
    lock(&t.recs).insert(teb, rec);

    let mut cpu = CpuState { rip: t.entry, gs_base: teb, ..CpuState::default() };
    cpu.gpr[reg::RSP] = top - 8;
    cpu.gpr[reg::RBX] = start;
    cpu.gpr[reg::R12] = param;
    cpu.x87.fcw = 0x027f;
    let p: Arc<Process> = p.clone();
    t.live.fetch_add(1, Ordering::AcqRel);
    let ep = p.clone();
    let new_engine = move || (ep.new_engine)(ep.mem.clone());
    let spawned = guest_thread::spawn(new_engine, move |mut engine, started| {
        // SAFETY: gettid has no arguments and cannot fail.
        let tid = unsafe { libc::syscall(libc::SYS_gettid) } as u32;
        let _ = poke(&p.mem, teb + TEB_TID, &u64::from(tid).to_le_bytes());
        p.objects.set_thread_id(obj, tid);
        if let Some(r) = lock(&p.threads.recs).get_mut(&teb) {
            r.tid = tid;
        }
        started.started(tid);
        p.objects.wait_resumed(obj);
        let stop = match super::run_loop(&p, engine.as_mut(), &mut cpu, 0) {
            Ok(()) => Stop::ThreadExited(0),
            Err(Fail::Stop(s)) => s,
            // A jump lands in this thread's own loop; a bad pointer is
            // turned into a stop by `service`.
            Err(_) => p.exit(super::seh::STATUS_ACCESS_VIOLATION),
        };
        // The engine goes (a vCPU back to its VM) before anyone can see
        // this thread ended.
        drop(engine);
        let stop = match stop {
            Stop::ThreadExited(code) => ended(&p, teb, code as u32),
            other => other,
        };
        match stop {
            Stop::Exited(code) => crate::linux::finish_process(code),
            Stop::Signaled(sig) => crate::linux::kill_process(sig),
            Stop::ThreadExited(_) => {}
        }
    });
    match spawned {
        Ok(tid) => return Ok((handle, tid)),
        Err(SpawnError::Host(e)) => tracing::warn!(%e, "cannot start a host thread for a guest thread"),
        Err(SpawnError::Engine(e)) => tracing::info!(%e, "no engine for a new guest thread"),
        Err(SpawnError::Vanished) => {}
    }
    // The thread never ran guest code: take everything back.
    let p = c.p;
    t.live.fetch_sub(1, Ordering::AcqRel);
    if let Some(r) = lock(&t.recs).remove(&teb) {
        forget(p, teb, r.obj, r.stack, &r.blocks);
    }
    p.objects.close(handle);
    // ERROR_NOT_ENOUGH_MEMORY, as Windows says when it cannot.
    Err(ERROR_NOT_ENOUGH_MEMORY)
}

/// Free what a thread that never ran (or ended) had.
fn forget(p: &Process, _teb: u64, obj: u64, stack: (u64, u64), blocks: &[u64]) {
    p.objects.thread_ended(obj, 0, 0);
    let mut heap = lock(&p.heap);
    for &b in blocks {
        heap.free(b);
    }
    drop(heap);
    if stack.1 != 0 {
        let _ = p.mem.unmap(stack.0, stack.1);
    }
}

/// The thread with TEB `teb` ended with `code` (its engine is gone): its
/// object is signaled and its memory freed. The last thread's end ends the
/// process with its code.
pub(crate) fn ended(p: &Process, teb: u64, code: u32) -> Stop {
    if let Some(r) = lock(&p.threads.recs).remove(&teb) {
        p.objects.thread_ended(r.obj, r.tid, code);
        if let Some(h) = r.auto_close {
            p.objects.close(h);
        }
        if r.stack.1 != 0 {
            // Slots the thread allocated lazily go too.
            let mut extra = Vec::new();
            for off in [TEB_TLS_EXPANSION, TEB_FLS_DATA] {
                if let Some(a) = crate::linux::guest::read::<u64>(&p.mem, teb + off).filter(|a| *a != 0) {
                    extra.push(a);
                }
            }
            let mut heap = lock(&p.heap);
            for b in r.blocks.iter().chain(&extra) {
                heap.free(*b);
            }
            drop(heap);
            let _ = p.mem.unmap(r.stack.0, r.stack.1);
        }
    }
    if p.threads.live.fetch_sub(1, Ordering::AcqRel) == 1 {
        return p.exit(code);
    }
    Stop::ThreadExited(code as i32)
}

// ----- handlers -----

/// CreateThread(sa, stack size, start, param, flags, *tid).
pub(crate) fn create_thread(c: &mut Call<'_>) -> Res {
    let (size, start, param, flags, tid_out) = (c.arg(1)?, c.arg(2)?, c.arg(3)?, c.arg(4)? as u32, c.arg(5)?);
    match spawn(c, size, start, param, flags, false) {
        Ok((h, tid)) => {
            if tid_out != 0 {
                c.put_u32(tid_out, tid)?;
            }
            Ok(h)
        }
        Err(e) => {
            set_error(c, e)?;
            Ok(0)
        }
    }
}

/// _beginthreadex(security, stack size, start, arg, flags, *tid): as
/// CreateThread, errno EAGAIN/EINVAL and 0 on failure.
pub(crate) fn begin_thread_ex(c: &mut Call<'_>) -> Res {
    // The stack size is an `unsigned` here (SIZE_T for CreateThread).
    let (size, start, param, flags, tid_out) =
        (u64::from(c.arg(1)? as u32), c.arg(2)?, c.arg(3)?, c.arg(4)? as u32, c.arg(5)?);
    match spawn(c, size, start, param, flags, false) {
        Ok((h, tid)) => {
            if tid_out != 0 {
                c.put_u32(tid_out, tid)?;
            }
            Ok(h)
        }
        Err(e) => {
            super::msvcrt::set_errno(c, if e == ERROR_INVALID_PARAMETER { libc::EINVAL } else { libc::EAGAIN })?;
            set_error(c, e)?;
            Ok(0)
        }
    }
}

/// _beginthread(start, stack size, arg): the handle closes itself when the
/// thread ends; -1 on failure.
pub(crate) fn begin_thread(c: &mut Call<'_>) -> Res {
    let (start, size, param) = (c.arg(0)?, u64::from(c.arg(1)? as u32), c.arg(2)?);
    match spawn(c, size, start, param, 0, true) {
        Ok((h, _)) => Ok(h),
        Err(e) => {
            super::msvcrt::set_errno(c, if e == ERROR_INVALID_PARAMETER { libc::EINVAL } else { libc::EAGAIN })?;
            Ok(u64::MAX)
        }
    }
}

/// The calling thread's detach: FLS callbacks, then the image's TLS
/// callbacks with DLL_THREAD_DETACH (Wine's LdrShutdownThread order).
fn detach(c: &mut Call<'_>) -> Result<(), Fail> {
    let fls = c.u64_at(c.cpu.gs_base + TEB_FLS_DATA)?;
    if fls != 0 {
        let cbs: Vec<(usize, u64)> = lock(&c.p.threads.fls)
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.filter(|cb| *cb != 0).map(|cb| (i, cb)))
            .collect();
        for (i, cb) in cbs {
            let v = c.u64_at(fls + 8 * i as u64)?;
            if v != 0 {
                c.put_u64(fls + 8 * i as u64, 0)?;
                c.upcall(cb, &[v])?;
            }
        }
    }
    let (base, cbs) = (c.p.threads.image_base, c.p.threads.callbacks.clone());
    for cb in cbs {
        c.upcall(cb, &[base, DLL_THREAD_DETACH, 0])?;
    }
    Ok(())
}

pub(crate) fn exit_thread(c: &mut Call<'_>) -> Res {
    let code = c.arg(0)? as u32;
    detach(c)?;
    Err(Fail::Stop(Stop::ThreadExited(code as i32)))
}

/// _endthread: exit code 0.
pub(crate) fn end_thread(c: &mut Call<'_>) -> Res {
    detach(c)?;
    Err(Fail::Stop(Stop::ThreadExited(0)))
}

pub(crate) fn get_exit_code_thread(c: &mut Call<'_>) -> Res {
    let (h, out) = (c.arg(0)?, c.arg(1)?);
    let cur = current_obj(c);
    let code = c.p.objects.with(h, cur, |k| match k {
        Kind::Thread { code, .. } => Some(code.unwrap_or(STILL_ACTIVE)),
        _ => None,
    });
    let Some(Some(code)) = code else {
        set_error(c, super::kernel32::ERROR_INVALID_HANDLE)?;
        return Ok(0);
    };
    c.put_u32(out, code)?;
    Ok(1)
}

pub(crate) fn get_thread_id(c: &mut Call<'_>) -> Res {
    let h = c.arg(0)?;
    let cur = current_obj(c);
    match c.p.objects.with(h, cur, |k| if let Kind::Thread { tid, .. } = k { Some(*tid) } else { None }) {
        Some(Some(tid)) => Ok(u64::from(tid)),
        _ => {
            set_error(c, super::kernel32::ERROR_INVALID_HANDLE)?;
            Ok(0)
        }
    }
}

/// ResumeThread: the previous suspend count. A thread starts when its
/// count reaches 0.
pub(crate) fn resume_thread(c: &mut Call<'_>) -> Res {
    let h = c.arg(0)?;
    let cur = current_obj(c);
    let r = c.p.objects.with(h, cur, |k| match k {
        Kind::Thread { suspend, .. } => {
            let was = *suspend;
            *suspend = suspend.saturating_sub(1);
            Some(was)
        }
        _ => None,
    });
    match r {
        // Not held since its creation: a running thread (suspend.rs).
        Some(Some(0)) => super::suspend::resume_running(c, h),
        Some(Some(was)) => Ok(u64::from(was)),
        _ => {
            set_error(c, super::kernel32::ERROR_INVALID_HANDLE)?;
            Ok(u64::from(u32::MAX))
        }
    }
}

/// SuspendThread: a thread that has not started yet is held (its count
/// goes up); a running one is stopped by suspend.rs.
pub(crate) fn suspend_thread(c: &mut Call<'_>) -> Res {
    let h = c.arg(0)?;
    let cur = current_obj(c);
    let r = c.p.objects.with(h, cur, |k| match k {
        Kind::Thread { suspend, code: None, .. } if *suspend > 0 => {
            *suspend += 1;
            Ok(*suspend - 1)
        }
        Kind::Thread { .. } => Err(ERROR_NOT_SUPPORTED),
        _ => Err(super::kernel32::ERROR_INVALID_HANDLE),
    });
    match r {
        Some(Ok(was)) => Ok(u64::from(was)),
        // Running (or ended): suspend.rs.
        Some(Err(ERROR_NOT_SUPPORTED)) => super::suspend::suspend_running(c, h),
        Some(Err(e)) => {
            set_error(c, e)?;
            Ok(u64::from(u32::MAX))
        }
        None => {
            set_error(c, super::kernel32::ERROR_INVALID_HANDLE)?;
            Ok(u64::from(u32::MAX))
        }
    }
}

/// Thread priorities are advisory: every thread is THREAD_PRIORITY_NORMAL
/// (0), and setting one succeeds for a thread handle.
pub(crate) fn set_thread_priority(c: &mut Call<'_>) -> Res {
    let h = c.arg(0)?;
    let ok = h == CURRENT_THREAD || c.p.objects.is_handle(h);
    if !ok {
        set_error(c, super::kernel32::ERROR_INVALID_HANDLE)?;
    }
    Ok(u64::from(ok))
}

pub(crate) fn get_thread_priority(c: &mut Call<'_>) -> Res {
    let h = c.arg(0)?;
    if h == CURRENT_THREAD || c.p.objects.is_handle(h) {
        return Ok(0);
    }
    set_error(c, super::kernel32::ERROR_INVALID_HANDLE)?;
    Ok(0x7fff_ffff) // THREAD_PRIORITY_ERROR_RETURN
}

pub(crate) fn switch_to_thread(_: &mut Call<'_>) -> Res {
    // SAFETY: sched_yield has no arguments.
    unsafe { libc::sched_yield() };
    Ok(1)
}

/// Sleep(ms) and SleepEx(ms, alertable) (nothing is ever queued, so an
/// alertable sleep returns 0 too). Sleep(0) yields.
pub(crate) fn sleep(c: &mut Call<'_>) -> Res {
    let ms = c.arg(0)? as u32;
    match ms {
        0 => {
            // SAFETY: sched_yield has no arguments.
            unsafe { libc::sched_yield() };
        }
        u32::MAX => loop {
            std::thread::park();
        },
        _ => std::thread::sleep(std::time::Duration::from_millis(u64::from(ms))),
    }
    Ok(0)
}

/// GetProcessAffinityMask(process, *process mask, *system mask): the CPUs
/// this process may run on.
pub(crate) fn get_process_affinity_mask(c: &mut Call<'_>) -> Res {
    let (pm, sm) = (c.arg(1)?, c.arg(2)?);
    let n = std::thread::available_parallelism().map_or(1, |n| n.get()).min(64);
    let mask = if n == 64 { u64::MAX } else { (1u64 << n) - 1 };
    c.put_u64(pm, mask)?;
    c.put_u64(sm, mask)?;
    Ok(1)
}

// ----- TLS and FLS slots -----

fn tls_slot(c: &mut Call<'_>, i: u32, make: bool) -> Result<Option<u64>, Fail> {
    let teb = c.cpu.gs_base;
    if i < TLS_SLOTS {
        return Ok(Some(teb + TEB_TLS_SLOTS + 8 * u64::from(i)));
    }
    let mut exp = c.u64_at(teb + TEB_TLS_EXPANSION)?;
    if exp == 0 {
        if !make {
            return Ok(None);
        }
        exp = lock(&c.p.heap).alloc_zeroed(8 * u64::from(TLS_EXPANSION_SLOTS)).unwrap_or(0);
        if exp == 0 {
            return Ok(None);
        }
        c.put_u64(teb + TEB_TLS_EXPANSION, exp)?;
    }
    Ok(Some(exp + 8 * u64::from(i - TLS_SLOTS)))
}

fn tls_valid(c: &Call<'_>, i: u32) -> bool {
    lock(&c.p.threads.tls_used).get(i as usize).copied().unwrap_or(false)
}

pub(crate) fn tls_alloc(c: &mut Call<'_>) -> Res {
    let mut used = lock(&c.p.threads.tls_used);
    match used.iter().position(|u| !u) {
        Some(i) => {
            used[i] = true;
            Ok(i as u64)
        }
        None => {
            drop(used);
            set_error(c, 259)?; // ERROR_NO_MORE_ITEMS
            Ok(u64::from(u32::MAX))
        }
    }
}

pub(crate) fn tls_free(c: &mut Call<'_>) -> Res {
    let i = c.arg(0)? as u32;
    if !tls_valid(c, i) {
        set_error(c, ERROR_INVALID_PARAMETER)?;
        return Ok(0);
    }
    lock(&c.p.threads.tls_used)[i as usize] = false;
    // The slot reads as 0 again in every thread.
    let tebs: Vec<u64> = lock(&c.p.threads.recs).keys().copied().collect();
    for teb in tebs {
        let at = if i < TLS_SLOTS {
            teb + TEB_TLS_SLOTS + 8 * u64::from(i)
        } else {
            match c.u64_at(teb + TEB_TLS_EXPANSION)? {
                0 => continue,
                exp => exp + 8 * u64::from(i - TLS_SLOTS),
            }
        };
        c.put_u64(at, 0)?;
    }
    Ok(1)
}

pub(crate) fn tls_get_value(c: &mut Call<'_>) -> Res {
    let i = c.arg(0)? as u32;
    if i >= TLS_SLOTS + TLS_EXPANSION_SLOTS {
        set_error(c, ERROR_INVALID_PARAMETER)?;
        return Ok(0);
    }
    set_error(c, 0)?;
    match tls_slot(c, i, false)? {
        Some(a) => c.u64_at(a),
        None => Ok(0),
    }
}

pub(crate) fn tls_set_value(c: &mut Call<'_>) -> Res {
    let (i, v) = (c.arg(0)? as u32, c.arg(1)?);
    if i >= TLS_SLOTS + TLS_EXPANSION_SLOTS {
        set_error(c, ERROR_INVALID_PARAMETER)?;
        return Ok(0);
    }
    match tls_slot(c, i, true)? {
        Some(a) => {
            c.put_u64(a, v)?;
            Ok(1)
        }
        None => {
            set_error(c, ERROR_NOT_ENOUGH_MEMORY)?;
            Ok(0)
        }
    }
}

/// The calling thread's FLS array (made on first use when `make`).
fn fls_array(c: &mut Call<'_>, make: bool) -> Result<u64, Fail> {
    let teb = c.cpu.gs_base;
    let a = c.u64_at(teb + TEB_FLS_DATA)?;
    if a != 0 || !make {
        return Ok(a);
    }
    let a = lock(&c.p.heap).alloc_zeroed(8 * FLS_SLOTS as u64).unwrap_or(0);
    if a != 0 {
        c.put_u64(teb + TEB_FLS_DATA, a)?;
    }
    Ok(a)
}

fn fls_valid(c: &Call<'_>, i: u32) -> Option<u64> {
    lock(&c.p.threads.fls).get(i as usize).copied().flatten()
}

/// FlsAlloc(callback): indices from 1.
pub(crate) fn fls_alloc(c: &mut Call<'_>) -> Res {
    let cb = c.arg(0)?;
    let mut fls = lock(&c.p.threads.fls);
    match (1..FLS_SLOTS).find(|&i| fls[i].is_none()) {
        Some(i) => {
            fls[i] = Some(cb);
            Ok(i as u64)
        }
        None => {
            drop(fls);
            set_error(c, 259)?; // ERROR_NO_MORE_ITEMS
            Ok(u64::from(u32::MAX))
        }
    }
}

pub(crate) fn fls_get_value(c: &mut Call<'_>) -> Res {
    let i = c.arg(0)? as u32;
    if fls_valid(c, i).is_none() {
        set_error(c, ERROR_INVALID_PARAMETER)?;
        return Ok(0);
    }
    set_error(c, 0)?;
    match fls_array(c, false)? {
        0 => Ok(0),
        a => c.u64_at(a + 8 * u64::from(i)),
    }
}

pub(crate) fn fls_set_value(c: &mut Call<'_>) -> Res {
    let (i, v) = (c.arg(0)? as u32, c.arg(1)?);
    if fls_valid(c, i).is_none() {
        set_error(c, ERROR_INVALID_PARAMETER)?;
        return Ok(0);
    }
    match fls_array(c, true)? {
        0 => {
            set_error(c, ERROR_NOT_ENOUGH_MEMORY)?;
            Ok(0)
        }
        a => {
            c.put_u64(a + 8 * u64::from(i), v)?;
            Ok(1)
        }
    }
}

/// FlsFree: the callback runs (on this thread) for every thread's
/// non-NULL value, then the index is free.
pub(crate) fn fls_free(c: &mut Call<'_>) -> Res {
    let i = c.arg(0)? as u32;
    let Some(cb) = fls_valid(c, i) else {
        set_error(c, ERROR_INVALID_PARAMETER)?;
        return Ok(0);
    };
    let tebs: Vec<u64> = lock(&c.p.threads.recs).keys().copied().collect();
    for teb in tebs {
        let a = c.u64_at(teb + TEB_FLS_DATA)?;
        if a == 0 {
            continue;
        }
        let v = c.u64_at(a + 8 * u64::from(i))?;
        if v != 0 {
            c.put_u64(a + 8 * u64::from(i), 0)?;
            if cb != 0 {
                c.upcall(cb, &[v])?;
            }
        }
    }
    lock(&c.p.threads.fls)[i as usize] = None;
    Ok(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The thread trampoline decodes to the intended instructions.
    #[test]
    fn trampoline_decodes() {
        let code = trampoline(0x1_4000_0000, &[0x1_4000_1000], 0x7ff0_0000_0020);
        let text = super::super::teb::tests::disassemble(&code);
        assert_eq!(
            text,
            [
                "sub $0x28,%rsp",
                "movabs $0x140000000,%rcx",
                "mov $2,%edx",
                "xor %r8d,%r8d",
                "movabs $0x140001000,%rax",
                "call *%rax",
                "mov %r12,%rcx",
                "call *%rbx",
                "mov %eax,%ecx",
                "movabs $0x7FF000000020,%rax",
                "call *%rax",
                "int3",
            ]
        );
    }
}
