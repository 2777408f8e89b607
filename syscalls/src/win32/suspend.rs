//! Suspending running threads (SuspendThread, ResumeThread) and their
//! contexts (GetThreadContext, SetThreadContext), as Go's runtime uses
//! them to preempt a goroutine that never calls a function.
//!
//! Each guest thread registers a control record (by thread id) the first
//! time its run loop enters guest code. The run loop tells it where the
//! thread is: in guest code, in urun (an API call or an exception being
//! dispatched, with the register state at the exit), or stopped at an
//! interrupt. SuspendThread raises the count and, when the thread is in
//! guest code, interrupts its engine and waits until it has left guest
//! code; the thread parks before it enters guest code again while the
//! count is above zero. A thread stopped by the interrupt has its exact
//! state published: GetThreadContext reads it, SetThreadContext changes
//! it (applied when it resumes). A thread suspended inside an API call
//! shows its state at the call (RIP at urun's stub) and its context cannot
//! be set (ERROR_NOT_SUPPORTED): Windows would apply it on return to user
//! mode, which urun does not model.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, OnceLock};

use urun_cpu::{CpuState, Engine, Interrupt};

use super::abi::{Call, Res};
use super::kernel32::{set_error, ERROR_INVALID_HANDLE};
use super::sync::Kind;
use super::unwind::Context;
use super::{lock, Process};

const ERROR_NOT_SUPPORTED: u32 = 50;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Where {
    Guest,
    /// In urun: an API call or an exception's dispatch.
    Host,
    /// Stopped at an interrupt (its state is exact and may be changed).
    Stopped,
}

struct St {
    count: u32,
    at: Where,
    state: Option<Box<CpuState>>,
    /// SetThreadContext changed `state`: the thread takes it on resuming.
    changed: bool,
}

struct Ctl {
    st: Mutex<St>,
    cv: Condvar,
    interrupt: Arc<Interrupt>,
    /// The host thread, for the kick signal.
    thread: libc::pthread_t,
}

/// The signal that ends a running KVM_RUN (or any host wait) of a thread
/// being suspended; its handler does nothing (SA_RESTART: other host calls
/// go on, KVM_RUN returns EINTR all the same).
fn kick_signal() -> i32 {
    static SIG: OnceLock<i32> = OnceLock::new();
    *SIG.get_or_init(|| {
        extern "C" fn nothing(_: i32) {}
        let sig = libc::SIGRTMIN() + 3;
        // SAFETY: a handler that does nothing, installed once; the
        // sigaction struct is zeroed then filled.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = nothing as extern "C" fn(i32) as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
        sig
    })
}

fn registry() -> &'static Mutex<HashMap<u32, Arc<Ctl>>> {
    static R: OnceLock<Mutex<HashMap<u32, Arc<Ctl>>>> = OnceLock::new();
    R.get_or_init(Default::default)
}

thread_local! {
    static CUR: RefCell<Option<Arc<Ctl>>> = const { RefCell::new(None) };
}

fn current(p: &Process, engine: &dyn Engine, cpu: &CpuState) -> Arc<Ctl> {
    CUR.with(|c| {
        c.borrow_mut()
            .get_or_insert_with(|| {
                let tid = super::guest_u64(&p.mem, cpu.gs_base + super::teb::TEB_TID).unwrap_or(0) as u32;
                let ctl = Arc::new(Ctl {
                    st: Mutex::new(St { count: 0, at: Where::Host, state: None, changed: false }),
                    cv: Condvar::new(),
                    interrupt: engine.interrupt_handle(),
                    // SAFETY: pthread_self cannot fail.
                    thread: unsafe { libc::pthread_self() },
                });
                kick_signal();
                lock(registry()).insert(tid, ctl.clone());
                ctl
            })
            .clone()
    })
}

/// The run loop is about to run guest code: park while suspended, take a
/// context SetThreadContext gave.
pub(crate) fn before_guest(p: &Process, engine: &dyn Engine, cpu: &mut CpuState) {
    let ctl = current(p, engine, cpu);
    let mut st = lock(&ctl.st);
    if st.count > 0 {
        if st.at != Where::Stopped {
            st.state = Some(Box::new(cpu.clone()));
            st.at = Where::Stopped;
        }
        ctl.cv.notify_all();
        while st.count > 0 {
            st = ctl.cv.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        if std::mem::take(&mut st.changed) {
            if let Some(s) = st.state.take() {
                *cpu = *s;
            }
        }
    }
    st.state = None;
    st.at = Where::Guest;
}

/// The engine stopped (`interrupted`: at an interrupt, else an API call
/// or a fault): the thread is in urun with state `cpu`.
pub(crate) fn after_guest(cpu: &CpuState, interrupted: bool) {
    CUR.with(|c| {
        if let Some(ctl) = c.borrow().as_ref() {
            let mut st = lock(&ctl.st);
            st.at = if interrupted { Where::Stopped } else { Where::Host };
            if st.count > 0 || interrupted {
                st.state = Some(Box::new(cpu.clone()));
            } else {
                st.state = None;
            }
            st.changed = false;
            ctl.cv.notify_all();
        }
    });
}

/// The running thread `h` names: its control record, or None (with the
/// error set) when it has none (not started, ended, not a thread).
fn target(c: &mut Call<'_>, h: u64) -> Result<Option<Arc<Ctl>>, super::abi::Fail> {
    let cur = super::thread::current_obj(c);
    let tid = c.p.objects.with(h, cur, |k| match k {
        Kind::Thread { tid, code: None, .. } => Some(*tid),
        _ => None,
    });
    let Some(tid) = tid.flatten() else {
        set_error(c, ERROR_INVALID_HANDLE)?;
        return Ok(None);
    };
    let ctl = lock(registry()).get(&tid).cloned();
    if ctl.is_none() {
        set_error(c, ERROR_NOT_SUPPORTED)?;
    }
    Ok(ctl)
}

fn is_self(ctl: &Arc<Ctl>) -> bool {
    CUR.with(|c| c.borrow().as_ref().is_some_and(|m| Arc::ptr_eq(m, ctl)))
}

/// SuspendThread of a running thread → its previous count, or -1.
pub(crate) fn suspend_running(c: &mut Call<'_>, h: u64) -> Res {
    let Some(ctl) = target(c, h)? else { return Ok(u64::from(u32::MAX)) };
    let mut st = lock(&ctl.st);
    let prev = st.count;
    st.count += 1;
    if !is_self(&ctl) {
        if st.at == Where::Guest {
            ctl.interrupt.raise();
            // SAFETY: the thread is alive: it is in guest code and cannot
            // leave its run loop while we hold its lock.
            unsafe { libc::pthread_kill(ctl.thread, kick_signal()) };
        }
        while st.at == Where::Guest {
            st = ctl.cv.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }
    Ok(u64::from(prev))
}

/// ResumeThread of a running thread → its previous count, or -1.
pub(crate) fn resume_running(c: &mut Call<'_>, h: u64) -> Res {
    let Some(ctl) = target(c, h)? else { return Ok(u64::from(u32::MAX)) };
    let mut st = lock(&ctl.st);
    let prev = st.count;
    st.count = st.count.saturating_sub(1);
    if st.count == 0 {
        ctl.cv.notify_all();
    }
    Ok(u64::from(prev))
}

/// GetThreadContext(thread, *CONTEXT): the calling thread's own state, or
/// a suspended thread's.
pub(crate) fn get_thread_context(c: &mut Call<'_>) -> Res {
    let (h, out) = (c.arg(0)?, c.arg(1)?);
    let Some(ctl) = target(c, h)? else { return Ok(0) };
    let ctx = if is_self(&ctl) {
        Context::from_cpu(c.cpu)
    } else {
        let st = lock(&ctl.st);
        match (&st.state, st.count > 0) {
            (Some(s), true) => Context::from_cpu(s),
            _ => {
                drop(st);
                set_error(c, ERROR_NOT_SUPPORTED)?;
                return Ok(0);
            }
        }
    };
    // The caller's ContextFlags stay as it set them.
    let flags = c.u32_at(out + 0x30)?;
    c.write(out, &ctx.0)?;
    c.put_u32(out + 0x30, flags)?;
    Ok(1)
}

/// SetThreadContext(thread, *CONTEXT): for a thread suspended while in
/// guest code; it runs on from the new state when resumed.
pub(crate) fn set_thread_context(c: &mut Call<'_>) -> Res {
    let (h, at) = (c.arg(0)?, c.arg(1)?);
    let Some(ctl) = target(c, h)? else { return Ok(0) };
    let ctx = Context::read(&*c.p.mem, at).ok_or(super::abi::Fail::Fault(at))?;
    let mut st = lock(&ctl.st);
    if is_self(&ctl) || st.count == 0 || st.at != Where::Stopped {
        drop(st);
        set_error(c, ERROR_NOT_SUPPORTED)?;
        return Ok(0);
    }
    if let Some(s) = st.state.as_mut() {
        ctx.apply(s);
        st.changed = true;
    }
    Ok(1)
}
