//! Fibers: several register states and stacks taking turns on one thread
//! (ConvertThreadToFiber(Ex), CreateFiber(Ex), SwitchToFiber, DeleteFiber,
//! ConvertFiberToThread, IsThreadAFiber). Rust's `stacker` crate (which
//! ruff's parser uses for deep recursion) grows the stack this way on
//! Windows. A fiber is an object in guest memory whose first field is its
//! parameter (`GetFiberData` reads it there through TEB+0x20, as on
//! Windows); the saved register state of a fiber that is not running is
//! kept here. SwitchToFiber saves the caller's state as at the stub's
//! `ret` and goes on in the target's (`Fail::Jump`), so the switch costs
//! one API call and no host frame. A switch taken inside an upcall (a
//! callback urun runs from the host) is not supported.

use std::collections::HashMap;
use std::sync::Mutex;

use urun_cpu::state::reg;
use urun_cpu::{CpuState, Placement, Prot};

use super::abi::{Call, Fail, Res};
use super::kernel32::{set_error, ERROR_INVALID_PARAMETER, ERROR_NOT_ENOUGH_MEMORY};
use super::lock;
use super::teb::{TEB_STACK_BASE, TEB_STACK_LIMIT};

/// NT_TIB.FiberData: the running fiber.
const TEB_FIBER: u64 = 0x20;
/// TEB.DeallocationStack: the low end of the stack's reservation.
const TEB_DEALLOCATION_STACK: u64 = 0x1478;
const ERROR_ALREADY_FIBER: u32 = 1280;
const ERROR_ALREADY_THREAD: u32 = 1281;
/// The fiber object: parameter, stack top, stack low end, then urun's own
/// bookkeeping is host-side.
const FIBER_SIZE: u64 = 0x40;
const DEFAULT_STACK: u64 = 1 << 20;

struct Fiber {
    /// Its register state while it does not run.
    saved: Option<Box<CpuState>>,
    /// Its stack mapping (start, length); (0, 0) for a converted thread's.
    stack: (u64, u64),
}

static FIBERS: Mutex<Option<HashMap<u64, Fiber>>> = Mutex::new(None);

fn with<R>(f: impl FnOnce(&mut HashMap<u64, Fiber>) -> R) -> R {
    f(lock(&FIBERS).get_or_insert_with(HashMap::new))
}

fn current(c: &Call<'_>) -> Result<u64, Fail> {
    c.u64_at(c.cpu.gs_base + TEB_FIBER)
}

fn is_fiber(c: &Call<'_>) -> Result<bool, Fail> {
    let f = current(c)?;
    Ok(f != 0 && with(|m| m.contains_key(&f)))
}

pub(crate) fn is_thread_a_fiber(c: &mut Call<'_>) -> Res {
    Ok(u64::from(is_fiber(c)?))
}

/// ConvertThreadToFiber(param) / ConvertThreadToFiberEx(param, flags).
pub(crate) fn convert_thread_to_fiber(c: &mut Call<'_>) -> Res {
    let param = c.arg(0)?;
    if is_fiber(c)? {
        set_error(c, ERROR_ALREADY_FIBER)?;
        return Ok(0);
    }
    let Some(obj) = lock(&c.p.heap).alloc_zeroed(FIBER_SIZE) else {
        set_error(c, ERROR_NOT_ENOUGH_MEMORY)?;
        return Ok(0);
    };
    let teb = c.cpu.gs_base;
    c.put_u64(obj, param)?;
    c.put_u64(obj + 8, c.u64_at(teb + TEB_STACK_BASE)?)?;
    c.put_u64(obj + 16, c.u64_at(teb + TEB_STACK_LIMIT)?)?;
    c.put_u64(obj + 24, c.u64_at(teb + TEB_DEALLOCATION_STACK)?)?;
    c.put_u64(teb + TEB_FIBER, obj)?;
    with(|m| m.insert(obj, Fiber { saved: None, stack: (0, 0) }));
    Ok(obj)
}

fn create(c: &mut Call<'_>, size: u64, start: u64, param: u64) -> Res {
    if start == 0 {
        set_error(c, ERROR_INVALID_PARAMETER)?;
        return Ok(0);
    }
    let len = (size.max(DEFAULT_STACK) + 0xffff) & !0xffff;
    let Ok(lo) = c.p.mem.map(Placement::Hint(0), len, Prot::RW, false, None) else {
        set_error(c, ERROR_NOT_ENOUGH_MEMORY)?;
        return Ok(0);
    };
    c.p.mem.set_backing(lo, urun_cpu::Backing::Named("[stack]".into()));
    let Some(obj) = lock(&c.p.heap).alloc_zeroed(FIBER_SIZE) else {
        let _ = c.p.mem.unmap(lo, len);
        set_error(c, ERROR_NOT_ENOUGH_MEMORY)?;
        return Ok(0);
    };
    let top = lo + len;
    c.put_u64(obj, param)?;
    c.put_u64(obj + 8, top)?;
    c.put_u64(obj + 16, lo)?;
    c.put_u64(obj + 24, lo)?;
    c.engine.fetch_fp(c.cpu).map_err(|e| Fail::Stop(super::engine_failed(c.engine.name(), &e)))?;
    let mut st = Box::new(c.cpu.clone());
    // Entered as a call: RSP ≡ 8 (mod 16) with room for the shadow space
    // above; a start routine that returns ends the thread, as on Windows.
    let sp = top - 0x28;
    let exit = super::table::find(super::table::Dll::Kernel32, "ExitThread")
        .and_then(|i| c.p.stubs.get(i + 1))
        .map_or(0, |s| s.addr);
    c.put_u64(sp, exit)?;
    st.gpr[reg::RSP] = sp;
    st.gpr[reg::RCX] = param;
    st.rip = start;
    with(|m| m.insert(obj, Fiber { saved: Some(st), stack: (lo, len) }));
    Ok(obj)
}

/// CreateFiber(stack size, start, param).
pub(crate) fn create_fiber(c: &mut Call<'_>) -> Res {
    let (size, start, param) = (c.arg(0)?, c.arg(1)?, c.arg(2)?);
    create(c, size, start, param)
}

/// CreateFiberEx(commit, reserve, flags, start, param).
pub(crate) fn create_fiber_ex(c: &mut Call<'_>) -> Res {
    let (commit, reserve, start, param) = (c.arg(0)?, c.arg(1)?, c.arg(3)?, c.arg(4)?);
    create(c, commit.max(reserve), start, param)
}

/// SwitchToFiber(fiber): the caller's state is saved in the running
/// fiber, the thread goes on in `fiber`'s, with the TEB's stack bounds
/// and fiber pointer changed to it.
pub(crate) fn switch_to_fiber(c: &mut Call<'_>) -> Res {
    let to = c.arg(0)?;
    let from = current(c)?;
    if to == from {
        return Ok(0);
    }
    if c.depth > 0 {
        super::line(&format!("urun: {}: SwitchToFiber inside a callback urun runs: not supported", c.p.exe_name));
        return Err(Fail::Stop(c.p.exit(0xc000_0002)));
    }
    c.engine.fetch_fp(c.cpu).map_err(|e| Fail::Stop(super::engine_failed(c.engine.name(), &e)))?;
    let me = Box::new(c.cpu.clone());
    let next = with(|m| {
        // The caller must be a fiber itself (ConvertThreadToFiber first),
        // or its state would have nowhere to go.
        if !m.contains_key(&from) {
            return None;
        }
        let next = m.get_mut(&to)?.saved.take()?;
        if let Some(f) = m.get_mut(&from) {
            f.saved = Some(me);
        }
        Some(next)
    });
    let Some(next) = next else {
        // Not a fiber, one that is running on another thread, or a
        // caller that is not a fiber.
        set_error(c, ERROR_INVALID_PARAMETER)?;
        return Ok(0);
    };
    let teb = c.cpu.gs_base;
    c.put_u64(teb + TEB_FIBER, to)?;
    c.put_u64(teb + TEB_STACK_BASE, c.u64_at(to + 8)?)?;
    c.put_u64(teb + TEB_STACK_LIMIT, c.u64_at(to + 16)?)?;
    c.put_u64(teb + TEB_DEALLOCATION_STACK, c.u64_at(to + 24)?)?;
    Err(Fail::Jump(next))
}

/// DeleteFiber(fiber): its stack and object go. Deleting the running
/// fiber ends the thread, as on Windows.
pub(crate) fn delete_fiber(c: &mut Call<'_>) -> Res {
    let f = c.arg(0)?;
    if f == current(c)? {
        return super::thread::exit_thread(c);
    }
    if let Some(fib) = with(|m| m.remove(&f)) {
        if fib.stack.1 != 0 {
            let _ = c.p.mem.unmap(fib.stack.0, fib.stack.1);
        }
        lock(&c.p.heap).free(f);
    }
    Ok(0)
}

/// ConvertFiberToThread(): the thread is no longer a fiber.
pub(crate) fn convert_fiber_to_thread(c: &mut Call<'_>) -> Res {
    if !is_fiber(c)? {
        set_error(c, ERROR_ALREADY_THREAD)?;
        return Ok(0);
    }
    let f = current(c)?;
    c.put_u64(c.cpu.gs_base + TEB_FIBER, 0)?;
    // A created fiber's stack stays mapped: the thread still runs on it.
    with(|m| m.remove(&f));
    lock(&c.p.heap).free(f);
    Ok(1)
}
