//! Structured exception handling, as ntdll's KiUserExceptionDispatcher,
//! RtlDispatchException and RtlUnwindEx do it (Wine's
//! `dlls/ntdll/signal_x86_64.c` was the reference for the order of
//! things).
//!
//! A guest fault or `RaiseException` builds an EXCEPTION_RECORD and a
//! CONTEXT on the guest's stack and dispatches it: the vectored handlers,
//! then a walk over the frames (`.pdata`/`.xdata`, see `unwind.rs`)
//! calling each frame's language handler, then the unhandled-exception
//! filter; if nothing takes it, the process ends with the exception code
//! as its exit code (the host sees `code & 0xff`, as under Wine).
//!
//! Handlers are guest code, called as upcalls (`abi::Call::upcall_with`).
//! Each upcall leaves a *boundary* on this thread's list, which says how a
//! frame walk continues when it reaches the upcall's return trap where the
//! real ntdll has its own frames: an exception handler's or a vectored
//! handler's continues at the exception's context (as the walk through
//! KiUserExceptionDispatcher's frame does on Windows), an unwind
//! handler's is a *collided unwind* (the walk resumes at the frame being
//! unwound, with its handler), any other upcall's at the API caller's
//! frame. The boundaries live in a thread-local list: each guest thread
//! runs on its own host thread, so the dispatcher's state is per thread.
//!
//! Changing the whole register state (RtlUnwindEx, RtlRestoreContext,
//! NtContinue, resuming after a handled exception) is `Fail::Jump`: every
//! host frame between the API call and the run loop whose guest frames
//! hold the new RSP is dropped, and that loop resumes the new state.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use urun_cpu::state::reg;
use urun_cpu::{CpuState, Fault, FaultKind, PageFaultKind};

use super::abi::{Call, Fail, Res};
use super::teb::{TEB_STACK_BASE, TEB_STACK_LIMIT};
use super::unwind::{self, Context, Mem, UNW_FLAG_EHANDLER, UNW_FLAG_NHANDLER, UNW_FLAG_UHANDLER};
use super::{line, lock};

/// Exception codes.
pub(crate) const STATUS_ACCESS_VIOLATION: u32 = 0xc000_0005;
const STATUS_IN_PAGE_ERROR: u32 = 0xc000_0006;
const STATUS_ILLEGAL_INSTRUCTION: u32 = 0xc000_001d;
const STATUS_NONCONTINUABLE_EXCEPTION: u32 = 0xc000_0025;
const STATUS_INVALID_DISPOSITION: u32 = 0xc000_0026;
const STATUS_UNWIND: u32 = 0xc000_0027;
const STATUS_INVALID_UNWIND_TARGET: u32 = 0xc000_0029;
const STATUS_INTEGER_DIVIDE_BY_ZERO: u32 = 0xc000_0094;
const STATUS_INTEGER_OVERFLOW: u32 = 0xc000_0095;
const STATUS_PRIVILEGED_INSTRUCTION: u32 = 0xc000_0096;
const STATUS_STACK_OVERFLOW: u32 = 0xc000_00fd;
const STATUS_FLOAT_MULTIPLE_TRAPS: u32 = 0xc000_02b5;
/// What a `__fastfail` ends the process with.
const STATUS_STACK_BUFFER_OVERRUN: u32 = 0xc000_0409;
const STATUS_BREAKPOINT: u32 = 0x8000_0003;
const STATUS_SINGLE_STEP: u32 = 0x8000_0004;
pub(crate) const STATUS_LONGJUMP: u32 = 0x8000_0026;
pub(crate) const STATUS_UNWIND_CONSOLIDATE: u32 = 0x8000_0029;

/// ExceptionFlags.
pub(crate) const EH_NONCONTINUABLE: u32 = 0x01;
pub(crate) const EH_UNWINDING: u32 = 0x02;
pub(crate) const EH_EXIT_UNWIND: u32 = 0x04;
const EH_NESTED_CALL: u32 = 0x10;
pub(crate) const EH_TARGET_UNWIND: u32 = 0x20;
const EH_COLLIDED_UNWIND: u32 = 0x40;

/// EXCEPTION_DISPOSITION.
const EXCEPTION_CONTINUE_EXECUTION_DISP: u32 = 0;
pub(crate) const EXCEPTION_CONTINUE_SEARCH_DISP: u32 = 1;
const EXCEPTION_NESTED: u32 = 2;
const EXCEPTION_COLLIDED_UNWIND: u32 = 3;
/// What filters (VEH, unhandled filter, __except) return.
const EXCEPTION_EXECUTE_HANDLER: i32 = 1;
const EXCEPTION_CONTINUE_EXECUTION: i32 = -1;

/// EXCEPTION_RECORD (0x98 bytes).
pub(crate) const REC_SIZE: u64 = 0x98;
pub(crate) const REC_FLAGS: u64 = 0x04;
const REC_ADDRESS: u64 = 0x10;
pub(crate) const REC_NPARAMS: u64 = 0x18;
pub(crate) const REC_INFO: u64 = 0x20;
/// DISPATCHER_CONTEXT (0x50 bytes).
const DC_SIZE: u64 = 0x50;
const DC_CONTROL_PC: u64 = 0x00;
const DC_IMAGE_BASE: u64 = 0x08;
const DC_FUNCTION_ENTRY: u64 = 0x10;
const DC_ESTABLISHER: u64 = 0x18;
const DC_TARGET_IP: u64 = 0x20;
const DC_CONTEXT: u64 = 0x28;
const DC_HANDLER: u64 = 0x30;
const DC_HANDLER_DATA: u64 = 0x38;
const DC_HISTORY: u64 = 0x40;
const DC_SCOPE_INDEX: u64 = 0x48;
/// UNWIND_HISTORY_TABLE.
const HISTORY_SIZE: u64 = 0xd8;
/// The no-access pages below a thread's stack (its StackLimit is above
/// them): a fault there with RSP near them is a stack overflow.
pub(crate) const STACK_GUARD: u64 = 0x1_0000;
/// How many frames a walk visits before it gives up (a loop in corrupt
/// unwind data must not hang the process).
const MAX_FRAMES: usize = 100_000;
/// How deep exceptions may nest in handlers before the thread is taken
/// as overflowing its stack.
const MAX_BOUNDARIES: usize = 256;

/// A mapped image: base, size, .pdata address and entry count.
type ImageTable = (u64, u64, u64, u64);

/// The process-wide part: vectored handlers, the unhandled-exception
/// filter, the images and the function tables added at run time.
#[derive(Default)]
pub(crate) struct Shared {
    /// Vectored exception handlers and continue handlers, first called
    /// first: (handle, function).
    veh: Mutex<Vec<(u64, u64)>>,
    vch: Mutex<Vec<(u64, u64)>>,
    next_handle: AtomicU64,
    filter: AtomicU64,
    /// Mapped images.
    images: Mutex<Vec<ImageTable>>,
    /// RtlAddFunctionTable: table, entry count, base.
    tables: Mutex<Vec<(u64, u64, u64)>>,
}

impl Shared {
    /// Make `base`'s `.pdata` (absolute address, size in bytes) known to
    /// the frame walk and `RtlLookupFunctionEntry`.
    #[cfg(test)]
    pub fn add_image(&self, base: u64, size: u64, pdata: Option<(u64, u64)>) {
        let (at, len) = pdata.unwrap_or((0, 0));
        lock(&self.images).push((base, size, at, len / 12));
    }

    /// Make the images known to the frame walk exactly the modules'
    /// real images (the program and its DLLs), after a load or unload.
    pub fn sync_images(&self, images: &[super::modules::UnwindImage]) {
        let mut list = lock(&self.images);
        list.clear();
        list.extend(images.iter().map(|&(base, size, pdata)| {
            let (at, len) = pdata.unwrap_or((0, 0));
            (base, size, at, len / 12)
        }));
    }

    /// The image that holds `pc`: its base and size.
    fn image_of(&self, pc: u64) -> Option<ImageTable> {
        lock(&self.images).iter().copied().find(|(b, s, _, _)| pc >= *b && pc - *b < *s)
    }

    /// The base of the image that holds `addr` (RtlPcToFileHeader).
    pub(crate) fn image_base_of(&self, addr: u64) -> Option<u64> {
        self.image_of(addr).map(|i| i.0)
    }

    /// RtlLookupFunctionEntry: the RUNTIME_FUNCTION for `pc` and the base
    /// its RVAs count from.
    fn lookup(&self, mem: &dyn Mem, pc: u64) -> Option<(u64, u64)> {
        for &(table, count, base) in lock(&self.tables).iter().rev() {
            if let Some(f) = unwind::lookup(mem, base, table, count, pc) {
                return Some((base, f));
            }
        }
        let (base, _, pdata, count) = self.image_of(pc)?;
        unwind::lookup(mem, base, pdata, count, pc).map(|f| (base, f))
    }
}

/// How a frame walk goes on at an upcall's return trap.
#[derive(Clone)]
pub(crate) enum Cross {
    /// An API's upcall: at the API's caller, in this register state (as
    /// the API stub saw it).
    Caller(Box<CpuState>),
    /// A handler the dispatcher called: at the exception's context.
    Exception(Box<Context>),
    /// An unwind handler: a collided unwind, with the dispatcher context
    /// (in guest memory, read when crossed) of the frame being unwound.
    Unwind(u64),
    /// A C++ catch block (`cxxeh.rs`): crossed as `Caller`; an unwind that
    /// crosses it ends the catch block first (its exception object is
    /// destroyed unless the exception in flight is that object).
    CatchBlock(Box<CpuState>),
    /// A function C++ lets no exception leave (a destructor or copy
    /// constructor the C++ runtime calls): a C++ exception that a search
    /// carries across it ends in std::terminate; others cross as `Caller`.
    NoExcept(Box<CpuState>),
}

struct Boundary {
    /// Where the upcall's return address (the trap) is.
    trap_sp: u64,
    cross: Cross,
}

thread_local! {
    static BOUNDARIES: RefCell<Vec<Boundary>> = const { RefCell::new(Vec::new()) };
}

/// An upcall starts: its return address is at `trap_sp`.
pub(crate) fn push_boundary(trap_sp: u64, cross: Cross) {
    BOUNDARIES.with(|b| b.borrow_mut().push(Boundary { trap_sp, cross }));
}

pub(crate) fn pop_boundary() {
    BOUNDARIES.with(|b| {
        b.borrow_mut().pop();
    });
}

fn boundary_count() -> usize {
    BOUNDARIES.with(|b| b.borrow().len())
}

/// Does a jump to `state` land in the frames of the innermost upcall (or
/// of the thread's own loop, when there is none)?
pub(crate) fn lands_here(state: &CpuState) -> bool {
    BOUNDARIES.with(|b| b.borrow().last().is_none_or(|t| state.gpr[reg::RSP] <= t.trap_sp))
}

/// The boundary whose trap a walk reached with RSP = `sp` (just above the
/// trap's slot).
fn crossing(sp: u64) -> Option<Cross> {
    BOUNDARIES.with(|b| b.borrow().iter().rev().find(|t| t.trap_sp.wrapping_add(8) == sp).map(|t| t.cross.clone()))
}

/// The CONTEXT of the caller of the API stub `cpu` stopped in.
fn caller_context(mem: &dyn Mem, cpu: &CpuState) -> Context {
    let mut c = Context::from_cpu(cpu);
    let sp = cpu.gpr[reg::RSP];
    c.set_rip(mem.u64_at(sp).unwrap_or(0));
    c.set_gpr(reg::RSP, sp.wrapping_add(8));
    // The stub moved RCX to R10; SYSCALL clobbered RCX and R11.
    c.set_gpr(reg::RCX, cpu.gpr[reg::R10]);
    c
}

/// One frame as a walk found it (the fields of a DISPATCHER_CONTEXT).
#[derive(Clone, Copy, Debug, Default)]
struct Frame {
    control_pc: u64,
    image_base: u64,
    function_entry: u64,
    establisher: u64,
    handler: Option<u64>,
    handler_data: u64,
    scope_index: u32,
}

/// Scratch memory for one dispatch or unwind, on the guest's stack.
struct Area {
    ctx: u64,
    walk_ctx: u64,
    rec: u64,
    ptrs: u64,
    dc: u64,
    history: u64,
}

const AREA_SIZE: u64 = 2 * unwind::CONTEXT_SIZE + 0xa0 + 0x10 + DC_SIZE + HISTORY_SIZE + 0x10;

impl Call<'_> {
    fn mem(&self) -> &dyn Mem {
        &*self.p.mem
    }

    /// Reserve `AREA_SIZE` bytes below `below` (and below RSP) and point
    /// RSP under them, so that upcalls run below. None: no stack left.
    fn area(&mut self, below: u64) -> Option<Area> {
        let top = below.min(self.cpu.gpr[reg::RSP]).wrapping_sub(0x40) & !63;
        let start = top.checked_sub(AREA_SIZE)? & !63;
        if self.fill(start, 0, AREA_SIZE).is_err() {
            return None;
        }
        self.cpu.gpr[reg::RSP] = start;
        let ctx = start;
        let walk_ctx = ctx + unwind::CONTEXT_SIZE;
        let rec = walk_ctx + unwind::CONTEXT_SIZE;
        let ptrs = rec + 0xa0;
        let dc = ptrs + 0x10;
        Some(Area { ctx, walk_ctx, rec, ptrs, dc, history: dc + DC_SIZE })
    }

    fn stack_bounds(&self) -> (u64, u64) {
        let teb = self.cpu.gs_base;
        (self.u64_at(teb + TEB_STACK_LIMIT).unwrap_or(0), self.u64_at(teb + TEB_STACK_BASE).unwrap_or(u64::MAX))
    }

    /// Is `pc` where a walk ends: urun's own code (the thread's start
    /// trampoline, the stubs) or nothing at all?
    fn end_of_stack(&self, pc: u64) -> bool {
        let (sys, len) = self.p.sys_code;
        pc == 0 || pc.wrapping_sub(sys) < len
    }

    /// Unwind one frame of `ctx` (kind: which handler to report).
    fn unwind_frame(&self, kind: u32, ctx: &mut Context) -> Option<Frame> {
        let pc = ctx.rip();
        let mem = self.mem();
        let r = match self.p.seh.lookup(mem, pc) {
            Some((base, entry)) => unwind::virtual_unwind(mem, kind, base, pc, entry, ctx).map(|u| Frame {
                control_pc: pc,
                image_base: base,
                function_entry: entry,
                establisher: u.establisher,
                handler: u.handler,
                handler_data: u.handler_data,
                scope_index: 0,
            }),
            None => {
                unwind::unwind_leaf(mem, ctx).map(|sp| Frame { control_pc: pc, establisher: sp, ..Frame::default() })
            }
        };
        r.map_err(|e| tracing::warn!(%e, pc = format_args!("{pc:#x}"), "unwinding stops")).ok()
    }

    fn put_frame(&self, dc: u64, f: &Frame, target_ip: u64, ctx: u64, history: u64) -> Result<(), Fail> {
        let mut b = [0u8; DC_SIZE as usize];
        let vals = [
            (DC_CONTROL_PC, f.control_pc),
            (DC_IMAGE_BASE, f.image_base),
            (DC_FUNCTION_ENTRY, f.function_entry),
            (DC_ESTABLISHER, f.establisher),
            (DC_TARGET_IP, target_ip),
            (DC_CONTEXT, ctx),
            (DC_HANDLER, f.handler.unwrap_or(0)),
            (DC_HANDLER_DATA, f.handler_data),
            (DC_HISTORY, history),
        ];
        for (off, v) in vals {
            b[off as usize..off as usize + 8].copy_from_slice(&v.to_le_bytes());
        }
        b[DC_SCOPE_INDEX as usize..DC_SCOPE_INDEX as usize + 4].copy_from_slice(&f.scope_index.to_le_bytes());
        self.write(dc, &b)
    }

    fn get_frame(&self, dc: u64) -> Result<Frame, Fail> {
        let h = self.u64_at(dc + DC_HANDLER)?;
        Ok(Frame {
            control_pc: self.u64_at(dc + DC_CONTROL_PC)?,
            image_base: self.u64_at(dc + DC_IMAGE_BASE)?,
            function_entry: self.u64_at(dc + DC_FUNCTION_ENTRY)?,
            establisher: self.u64_at(dc + DC_ESTABLISHER)?,
            handler: (h != 0).then_some(h),
            handler_data: self.u64_at(dc + DC_HANDLER_DATA)?,
            scope_index: self.u32_at(dc + DC_SCOPE_INDEX)?,
        })
    }

    fn get_context(&self, addr: u64) -> Result<Context, Fail> {
        Context::read(self.mem(), addr).ok_or(Fail::Fault(addr))
    }

    fn put_context(&self, addr: u64, c: &Context) -> Result<(), Fail> {
        self.write(addr, &c.0)
    }

    /// A collided frame: the dispatcher context at `dc` names the frame
    /// and its context before it was unwound; unwind it (no handler) and
    /// return the frame with `ctx` as its caller's.
    fn collided(&self, dc: u64, ctx: &mut Context) -> Result<Frame, Fail> {
        let f = self.get_frame(dc)?;
        *ctx = self.get_context(self.u64_at(dc + DC_CONTEXT)?)?;
        if f.function_entry != 0 {
            let _ = unwind::virtual_unwind(
                self.mem(),
                UNW_FLAG_NHANDLER,
                f.image_base,
                f.control_pc,
                f.function_entry,
                ctx,
            );
        } else {
            let _ = unwind::unwind_leaf(self.mem(), ctx);
        }
        Ok(f)
    }

    fn flags_or(&self, rec: u64, set: u32, clear: u32) -> Result<(), Fail> {
        let f = self.u32_at(rec + REC_FLAGS)?;
        self.put_u32(rec + REC_FLAGS, (f | set) & !clear)
    }

    /// The process ends with exception `code` unhandled.
    fn die(&self, code: u32, what: &str, at: u64) -> Fail {
        lock(&self.p.streams).flush_all();
        let what = if what.is_empty() { String::new() } else { format!(" ({what})") };
        line(&format!("urun: {}: unhandled exception {code:#010x}{what} at {}", self.p.exe_name, self.p.describe(at)));
        Fail::Stop(self.p.exit(code))
    }

    /// Resume `ctx` in place of the current register state.
    fn jump(&self, ctx: &Context) -> Fail {
        let mut state = self.cpu.clone();
        ctx.apply(&mut state);
        Fail::Jump(Box::new(state))
    }

    /// Dispatch an exception (as KiUserExceptionDispatcher): `rec` and
    /// `ctx` are copied onto the guest's stack below the context's RSP.
    /// Returns only by a jump (the exception was handled) or a stop.
    fn dispatch(&mut self, rec: &[u8; REC_SIZE as usize], ctx: Context) -> Fail {
        match self.dispatch_inner(rec, ctx) {
            Ok(f) | Err(f) => f,
        }
    }

    fn dispatch_inner(&mut self, rec_bytes: &[u8; REC_SIZE as usize], ctx: Context) -> Result<Fail, Fail> {
        let code = u32::from_le_bytes([rec_bytes[0], rec_bytes[1], rec_bytes[2], rec_bytes[3]]);
        let at = u64::from_le_bytes(rec_bytes[0x10..0x18].try_into().unwrap_or([0; 8]));
        if boundary_count() > MAX_BOUNDARIES {
            return Ok(self.die(STATUS_STACK_OVERFLOW, "exceptions nest too deep", at));
        }
        let Some(a) = self.area(ctx.rsp()) else {
            return Ok(self.die(code, "no stack left to handle it", at));
        };
        self.put_context(a.ctx, &ctx)?;
        self.write(a.rec, rec_bytes)?;
        self.put_u64(a.ptrs, a.rec)?;
        self.put_u64(a.ptrs + 8, a.ctx)?;
        let cross = || Cross::Exception(Box::new(ctx.clone()));

        let mut handled = false;
        let veh: Vec<(u64, u64)> = lock(&self.p.seh.veh).clone();
        for (_, f) in veh {
            if self.upcall_with(f, &[a.ptrs], Some(cross()))? as i32 == EXCEPTION_CONTINUE_EXECUTION {
                handled = true;
                break;
            }
        }
        if !handled {
            handled = self.walk(&a, &ctx)?;
        }
        if !handled {
            let filter = self.p.seh.filter.load(Ordering::Acquire);
            if filter != 0 && self.upcall_with(filter, &[a.ptrs], Some(cross()))? as i32 == EXCEPTION_CONTINUE_EXECUTION
            {
                handled = true;
            }
        }
        let code = self.u32_at(a.rec)?;
        let at = self.u64_at(a.rec + REC_ADDRESS)?;
        if !handled {
            return Ok(self.die(code, &describe_code(code, self, a.rec), at));
        }
        if self.u32_at(a.rec + REC_FLAGS)? & EH_NONCONTINUABLE != 0 {
            return Ok(self.die(STATUS_NONCONTINUABLE_EXCEPTION, &format!("a handler continued {code:#010x}"), at));
        }
        let vch: Vec<(u64, u64)> = lock(&self.p.seh.vch).clone();
        // The continue handlers run in order until one says to continue
        // execution (Go's first one stops the search, so its last, which
        // reports a crash, is not reached).
        for (_, f) in vch {
            if self.upcall_with(f, &[a.ptrs], Some(cross()))? as i32 == EXCEPTION_CONTINUE_EXECUTION {
                break;
            }
        }
        let ctx = self.get_context(a.ctx)?;
        Ok(self.jump(&ctx))
    }

    /// The frame walk of an exception (RtlDispatchException): true when a
    /// handler said to continue execution.
    fn walk(&mut self, a: &Area, orig: &Context) -> Result<bool, Fail> {
        let (lo, hi) = self.stack_bounds();
        let mut cur = orig.clone();
        let mut pending: Option<Frame> = None;
        for _ in 0..MAX_FRAMES {
            let f = match pending.take() {
                Some(f) => f,
                None => {
                    if cur.rip() == self.p.return_trap {
                        match crossing(cur.rsp()) {
                            Some(Cross::Caller(cpu) | Cross::CatchBlock(cpu)) => cur = caller_context(self.mem(), &cpu),
                            Some(Cross::NoExcept(cpu)) => {
                                if self.u32_at(a.rec)? == super::cxxeh::CXX_EXCEPTION {
                                    return Err(super::cxxeh::escaped(self));
                                }
                                cur = caller_context(self.mem(), &cpu);
                            }
                            Some(Cross::Exception(ctx)) => {
                                self.flags_or(a.rec, EH_NESTED_CALL, 0)?;
                                cur = *ctx;
                            }
                            Some(Cross::Unwind(dc)) => pending = Some(self.collided(dc, &mut cur)?),
                            None => return Ok(false),
                        }
                        continue;
                    }
                    if self.end_of_stack(cur.rip()) {
                        return Ok(false);
                    }
                    match self.unwind_frame(UNW_FLAG_EHANDLER, &mut cur) {
                        Some(f) => f,
                        None => return Ok(false),
                    }
                }
            };
            if f.establisher & 7 != 0 || f.establisher < lo || f.establisher > hi {
                return Ok(false);
            }
            if let Some(h) = f.handler {
                self.put_frame(a.dc, &f, 0, a.walk_ctx, a.history)?;
                self.put_context(a.walk_ctx, &cur)?;
                let cross = Cross::Exception(Box::new(orig.clone()));
                let r = self.upcall_with(h, &[a.rec, f.establisher, a.ctx, a.dc], Some(cross))? as u32;
                cur = self.get_context(a.walk_ctx)?;
                match r {
                    EXCEPTION_CONTINUE_EXECUTION_DISP => return Ok(true),
                    EXCEPTION_CONTINUE_SEARCH_DISP | EXCEPTION_NESTED => {}
                    EXCEPTION_COLLIDED_UNWIND => {
                        pending = Some(self.collided(a.dc, &mut cur)?);
                        continue;
                    }
                    _ => return Err(self.die(STATUS_INVALID_DISPOSITION, "a handler's answer", f.control_pc)),
                }
            }
            if cur.rsp() >= hi {
                return Ok(false);
            }
        }
        Ok(false)
    }

    /// RtlUnwindEx from `start` (the context of its caller): call each
    /// frame's termination handler up to `end_frame`, then resume at
    /// `target_ip` in that frame with RAX = `retval`.
    #[allow(clippy::too_many_arguments)]
    fn unwind_ex(
        &mut self,
        end_frame: u64,
        target_ip: u64,
        rec_in: u64,
        retval: u64,
        ctx_in: u64,
        history_in: u64,
        start: Context,
    ) -> Result<Fail, Fail> {
        if boundary_count() > MAX_BOUNDARIES {
            return Ok(self.die(STATUS_STACK_OVERFLOW, "exceptions nest too deep", start.rip()));
        }
        let Some(a) = self.area(start.rsp()) else {
            return Ok(self.die(STATUS_STACK_OVERFLOW, "no stack left to unwind", start.rip()));
        };
        let rec = if rec_in != 0 {
            rec_in
        } else {
            self.put_u32(a.rec, STATUS_UNWIND)?;
            self.put_u64(a.rec + REC_ADDRESS, start.rip())?;
            a.rec
        };
        let ctx_ptr = if ctx_in != 0 { ctx_in } else { a.ctx };
        let history = if history_in != 0 { history_in } else { a.history };
        self.flags_or(rec, EH_UNWINDING | if end_frame == 0 { EH_EXIT_UNWIND } else { 0 }, 0)?;
        let (lo, hi) = self.stack_bounds();
        let mut context = start.clone();
        let mut newc = start;
        let mut pending: Option<Frame> = None;
        let mut reached = false;
        for _ in 0..MAX_FRAMES {
            let f = match pending.take() {
                Some(f) => f,
                None => {
                    if newc.rip() == self.p.return_trap {
                        match crossing(newc.rsp()) {
                            Some(Cross::Caller(cpu) | Cross::NoExcept(cpu)) => newc = caller_context(self.mem(), &cpu),
                            Some(Cross::CatchBlock(cpu)) => {
                                super::cxxeh::catch_block_left(self, rec)?;
                                newc = caller_context(self.mem(), &cpu);
                            }
                            Some(Cross::Exception(ctx)) => newc = *ctx,
                            Some(Cross::Unwind(dc)) => {
                                let f = self.collided(dc, &mut newc)?;
                                context = self.get_context(self.u64_at(dc + DC_CONTEXT)?)?;
                                self.flags_or(rec, EH_COLLIDED_UNWIND, 0)?;
                                pending = Some(f);
                                continue;
                            }
                            None => break,
                        }
                        context = newc.clone();
                        continue;
                    }
                    if self.end_of_stack(newc.rip()) {
                        break;
                    }
                    match self.unwind_frame(UNW_FLAG_UHANDLER, &mut newc) {
                        Some(f) => f,
                        None => break,
                    }
                }
            };
            if f.establisher & 7 != 0 || f.establisher < lo || f.establisher > hi {
                break;
            }
            if let Some(h) = f.handler {
                if end_frame != 0 && f.establisher > end_frame {
                    return Ok(self.die(
                        STATUS_INVALID_UNWIND_TARGET,
                        "the unwind passed its target frame",
                        f.control_pc,
                    ));
                }
                if f.establisher == end_frame {
                    self.flags_or(rec, EH_TARGET_UNWIND, 0)?;
                }
                self.put_frame(a.dc, &f, target_ip, ctx_ptr, history)?;
                self.put_context(ctx_ptr, &context)?;
                let r = self.upcall_with(h, &[rec, f.establisher, ctx_ptr, a.dc], Some(Cross::Unwind(a.dc)))? as u32;
                context = self.get_context(ctx_ptr)?;
                if r == EXCEPTION_COLLIDED_UNWIND {
                    let f = self.collided(a.dc, &mut newc)?;
                    context = self.get_context(self.u64_at(a.dc + DC_CONTEXT)?)?;
                    self.flags_or(rec, EH_COLLIDED_UNWIND, 0)?;
                    pending = Some(f);
                    continue;
                }
                self.flags_or(rec, 0, EH_COLLIDED_UNWIND)?;
            }
            if f.establisher == end_frame {
                reached = true;
                break;
            }
            context = newc.clone();
        }
        if end_frame != 0 && !reached {
            return Ok(self.die(STATUS_INVALID_UNWIND_TARGET, "the unwind did not find its target frame", target_ip));
        }
        context.set_gpr(reg::RAX, retval);
        context.set_rip(target_ip);
        self.restore(&context, rec)
    }

    /// RtlRestoreContext: resume `ctx`, after a consolidation callback or
    /// a longjmp that `rec` asks for.
    fn restore(&mut self, ctx: &Context, rec: u64) -> Result<Fail, Fail> {
        let mut ctx = ctx.clone();
        if rec != 0 {
            let code = self.u32_at(rec)?;
            if code == STATUS_LONGJUMP && self.u32_at(rec + REC_NPARAMS)? >= 1 {
                let jb = self.u64_at(rec + REC_INFO)?;
                // MSVCRT's _JUMP_BUFFER: Frame, Rbx, Rsp, Rbp, Rsi, Rdi,
                // R12-R15, Rip, MxCsr, FpCsr, Spare, Xmm6-15.
                let regs = [reg::RBX, reg::RSP, reg::RBP, reg::RSI, reg::RDI, reg::R12, reg::R13, reg::R14, reg::R15];
                for (i, r) in regs.iter().enumerate() {
                    ctx.set_gpr(*r, self.u64_at(jb + 8 + 8 * i as u64)?);
                }
                ctx.set_rip(self.u64_at(jb + 0x50)?);
                for i in 0..10 {
                    let b = self.read(jb + 0x60 + 16 * i as u64, 16)?;
                    let mut v = [0u8; 16];
                    v.copy_from_slice(&b);
                    ctx.set_xmm(6 + i, u128::from_le_bytes(v));
                }
            } else if code == STATUS_UNWIND_CONSOLIDATE && self.u32_at(rec + REC_NPARAMS)? >= 1 {
                let callback = self.u64_at(rec + REC_INFO)?;
                if self.area(ctx.rsp()).is_none() {
                    return Ok(self.die(STATUS_STACK_OVERFLOW, "no stack left to unwind", ctx.rip()));
                }
                let target = self.upcall_with(callback, &[rec], Some(Cross::Exception(Box::new(ctx.clone()))))?;
                ctx.set_rip(target);
            }
        }
        Ok(self.jump(&ctx))
    }
}

/// A guest fault: dispatch it as Windows would (or end the process when
/// nothing takes it). Returns by a jump to the handled state, or a stop.
pub(crate) fn fault(c: &mut Call<'_>, f: &Fault) -> Fail {
    if let Some(why) = fast_fail(c, f) {
        lock(&c.p.streams).flush_all();
        let (exe, at) = (&c.p.exe_name, c.p.describe(f.pc));
        line(&format!("urun: {exe}: {why} at {at}: status {STATUS_STACK_BUFFER_OVERRUN:#010x}"));
        return Fail::Stop(c.p.exit(STATUS_STACK_BUFFER_OVERRUN));
    }
    let (code, pc, info, what) = classify(c, f);
    if code == STATUS_STACK_OVERFLOW {
        // There is no stack left to run a handler on.
        return c.die(code, &what, pc);
    }
    let mut ctx = Context::from_cpu(c.cpu);
    ctx.set_rip(pc);
    c.dispatch(&record(code, 0, pc, &info), ctx)
}

/// An EXCEPTION_RECORD.
fn record(code: u32, flags: u32, address: u64, info: &[u64]) -> [u8; REC_SIZE as usize] {
    let mut r = [0u8; REC_SIZE as usize];
    r[0..4].copy_from_slice(&code.to_le_bytes());
    r[4..8].copy_from_slice(&flags.to_le_bytes());
    r[0x10..0x18].copy_from_slice(&address.to_le_bytes());
    let n = info.len().min(15);
    r[0x18..0x1c].copy_from_slice(&(n as u32).to_le_bytes());
    for (i, v) in info.iter().take(15).enumerate() {
        r[0x20 + 8 * i..0x28 + 8 * i].copy_from_slice(&v.to_le_bytes());
    }
    r
}

/// The exception code, the address it is reported at, its parameters and
/// a description for a fault.
fn classify(c: &Call<'_>, f: &Fault) -> (u32, u64, Vec<u64>, String) {
    match &f.kind {
        FaultKind::Page { addr, write, kind } => {
            let (lo, _) = c.stack_bounds();
            if !*write && *addr == f.pc {
                return (
                    STATUS_ACCESS_VIOLATION,
                    f.pc,
                    vec![8, *addr],
                    format!("access violation executing {addr:#x}"),
                );
            }
            let rw = if *write { "writing" } else { "reading" };
            if lo > STACK_GUARD && *addr < lo && *addr >= lo - STACK_GUARD && c.cpu.gpr[reg::RSP] < lo + 0x1000 {
                return (STATUS_STACK_OVERFLOW, f.pc, vec![u64::from(*write), *addr], "stack overflow".into());
            }
            if *kind == PageFaultKind::Bus {
                return (
                    STATUS_IN_PAGE_ERROR,
                    f.pc,
                    vec![u64::from(*write), *addr, 0xc000_0185],
                    format!("in-page error {rw} {addr:#x}"),
                );
            }
            (STATUS_ACCESS_VIOLATION, f.pc, vec![u64::from(*write), *addr], format!("access violation {rw} {addr:#x}"))
        }
        FaultKind::GeneralProtection => {
            if privileged(c, f.pc) {
                (STATUS_PRIVILEGED_INSTRUCTION, f.pc, vec![], "privileged instruction".into())
            } else {
                (STATUS_ACCESS_VIOLATION, f.pc, vec![0, u64::MAX], "access violation (general protection)".into())
            }
        }
        FaultKind::Divide => {
            if divisor_is_zero(c, f.pc) {
                (STATUS_INTEGER_DIVIDE_BY_ZERO, f.pc, vec![], "integer divide by zero".into())
            } else {
                (STATUS_INTEGER_OVERFLOW, f.pc, vec![], "integer overflow".into())
            }
        }
        FaultKind::InvalidOpcode { what } => {
            (STATUS_ILLEGAL_INSTRUCTION, f.pc, vec![], format!("illegal instruction ({what})"))
        }
        // INT3 is a trap: the exception is reported at the INT3 itself, as
        // Windows does.
        FaultKind::Breakpoint => (STATUS_BREAKPOINT, f.pc.wrapping_sub(1), vec![0], "breakpoint".into()),
        FaultKind::DebugTrap => (STATUS_SINGLE_STEP, f.pc, vec![], "single step".into()),
        FaultKind::FloatingPoint { code } => {
            if x87_instruction(c, f.pc) {
                (float_status(*code), f.pc, vec![], "floating-point exception".into())
            } else {
                // An SSE exception (#XM): Windows reports them all as
                // multiple traps, with one parameter 0.
                (STATUS_FLOAT_MULTIPLE_TRAPS, f.pc, vec![0], "floating-point exception (SSE)".into())
            }
        }
    }
}

/// `__fastfail(code)` is `int 0x29` with the code in ECX: Windows ends the
/// process at once with STATUS_STACK_BUFFER_OVERRUN, running no handler
/// (ucrt's abort and Rust's `process::abort` end this way). At CPL 3 the
/// instruction faults here (#GP; #UD under kvm_pvm); the description
/// names the code when it is one of winnt.h's common FAST_FAIL_* values.
fn fast_fail(c: &Call<'_>, f: &Fault) -> Option<String> {
    if !matches!(f.kind, FaultKind::GeneralProtection | FaultKind::InvalidOpcode { .. }) {
        return None;
    }
    if !code_at(c, f.pc).starts_with(&[0xcd, 0x29]) {
        return None;
    }
    const NAMES: &[(u32, &str)] = &[
        (2, "FAST_FAIL_STACK_COOKIE_CHECK_FAILURE"),
        (3, "FAST_FAIL_CORRUPT_LIST_ENTRY"),
        (5, "FAST_FAIL_INVALID_ARG"),
        (7, "FAST_FAIL_FATAL_APP_EXIT"),
    ];
    let code = c.cpu.gpr[reg::RCX] as u32;
    Some(match NAMES.iter().find(|(n, _)| *n == code) {
        Some((_, name)) => format!("__fastfail({name})"),
        None => format!("__fastfail({code})"),
    })
}

/// The instruction bytes at `pc` (up to 15).
fn code_at(c: &Call<'_>, pc: u64) -> Vec<u8> {
    let mut b = vec![0u8; 15];
    let n = (0..15).take_while(|&i| c.mem().read(pc + i, &mut b[i as usize..i as usize + 1])).count();
    b.truncate(n);
    b
}

/// Is the instruction at `pc` one only the kernel may run (HLT, CLI,
/// STI, IN/OUT, control and debug register moves, MSRs, descriptor
/// tables)?
fn privileged(c: &Call<'_>, pc: u64) -> bool {
    let b = code_at(c, pc);
    let mut i = 0;
    while i < b.len() && (matches!(b[i], 0x66 | 0x67 | 0xf2 | 0xf3 | 0x2e | 0x3e | 0x26 | 0x36) || b[i] & 0xf0 == 0x40)
    {
        i += 1;
    }
    matches!(
        (b.get(i), b.get(i + 1)),
        (Some(0xf4 | 0xfa | 0xfb | 0xe4..=0xe7 | 0xec..=0xef | 0x6c..=0x6f), _)
            | (Some(0x0f), Some(0x01 | 0x06 | 0x08 | 0x09 | 0x20..=0x23 | 0x30 | 0x32 | 0x00))
    )
}

/// Is the instruction at `pc` an x87 one (its exceptions are #MF, an
/// SSE one's #XM)?
fn x87_instruction(c: &Call<'_>, pc: u64) -> bool {
    let b = code_at(c, pc);
    let mut i = 0;
    while i < b.len() && (matches!(b[i], 0x66 | 0x67 | 0xf2 | 0xf3 | 0x2e | 0x3e | 0x26 | 0x36) || b[i] & 0xf0 == 0x40)
    {
        i += 1;
    }
    matches!(b.get(i), Some(0xd8..=0xdf | 0x9b))
}

/// For #DE: is the divisor of the DIV/IDIV at `pc` zero (or is the
/// quotient too large: STATUS_INTEGER_OVERFLOW)?
fn divisor_is_zero(c: &Call<'_>, pc: u64) -> bool {
    use iced_x86::{Decoder, DecoderOptions, OpKind, Register};
    let b = code_at(c, pc);
    let insn = Decoder::with_ip(64, &b, pc, DecoderOptions::NONE).decode();
    let g = &c.cpu.gpr;
    let reg_value = |r: Register| -> Option<u64> {
        let full = r.full_register();
        let n = full.number().checked_sub(Register::RAX.number())?;
        let v = *g.get(n)?;
        Some(match r {
            Register::AH | Register::CH | Register::DH | Register::BH => v >> 8,
            _ => v,
        })
    };
    let size = match insn.op0_kind() {
        OpKind::Register => insn.op0_register().size(),
        _ => insn.memory_size().size(),
    };
    let mask = if size >= 8 { u64::MAX } else { (1u64 << (8 * size)) - 1 };
    let v = match insn.op0_kind() {
        OpKind::Register => reg_value(insn.op0_register()),
        OpKind::Memory => insn
            .virtual_address(0, 0, |r, _, _| if r == Register::RIP { Some(insn.next_ip()) } else { reg_value(r) })
            .and_then(|a| {
                let a = if insn.segment_prefix() == Register::GS || insn.memory_segment() == Register::GS {
                    a.wrapping_add(c.cpu.gs_base)
                } else {
                    a
                };
                c.mem().u64_at(a).or_else(|| c.mem().u32_at(a).map(u64::from))
            }),
        _ => None,
    };
    v.is_none_or(|v| v & mask == 0)
}

/// The STATUS_FLOAT_* code for urun's `fp_exception` code.
fn float_status(code: i32) -> u32 {
    use urun_cpu::engine::fp_exception::*;
    const TABLE: [(i32, u32); 5] = [
        (DIVIDE_BY_ZERO, 0xc000_008e),
        (OVERFLOW, 0xc000_0091),
        (UNDERFLOW, 0xc000_0093),
        (INEXACT, 0xc000_008f),
        (INVALID, 0xc000_0090),
    ];
    TABLE.iter().find(|(c, _)| *c == code).map_or(0xc000_0090, |(_, s)| *s)
}

/// What urun says about an unhandled exception besides its code.
fn describe_code(code: u32, c: &Call<'_>, rec: u64) -> String {
    const NAMES: [(u32, &str); 13] = [
        (STATUS_ACCESS_VIOLATION, "access violation"),
        (STATUS_IN_PAGE_ERROR, "in-page error"),
        (STATUS_ILLEGAL_INSTRUCTION, "illegal instruction"),
        (STATUS_INTEGER_DIVIDE_BY_ZERO, "integer divide by zero"),
        (STATUS_INTEGER_OVERFLOW, "integer overflow"),
        (STATUS_PRIVILEGED_INSTRUCTION, "privileged instruction"),
        (STATUS_STACK_OVERFLOW, "stack overflow"),
        (STATUS_FLOAT_MULTIPLE_TRAPS, "floating-point exception (SSE)"),
        (STATUS_BREAKPOINT, "breakpoint"),
        (STATUS_SINGLE_STEP, "single step"),
        (0xe06d_7363, "C++ exception"),
        (0x2047_4343, "GCC C++ exception"),
        (STATUS_NONCONTINUABLE_EXCEPTION, "noncontinuable exception"),
    ];
    let name = NAMES.iter().find(|(k, _)| *k == code).map(|(_, n)| *n);
    if code == STATUS_ACCESS_VIOLATION && c.u32_at(rec + REC_NPARAMS).unwrap_or(0) >= 2 {
        let kind = c.u64_at(rec + REC_INFO).unwrap_or(0);
        let addr = c.u64_at(rec + REC_INFO + 8).unwrap_or(0);
        let how = match kind {
            0 => "reading",
            1 => "writing",
            _ => "executing",
        };
        if addr != u64::MAX {
            return format!("access violation {how} {addr:#x}");
        }
    }
    name.unwrap_or("").into()
}

// ----- for the C++ runtime (cxxeh.rs) -----

/// What a language handler reads of its DISPATCHER_CONTEXT.
pub(crate) struct Dispatch {
    pub control_pc: u64,
    pub image_base: u64,
    /// The frame's RUNTIME_FUNCTION.
    pub function_entry: u64,
    pub handler_data: u64,
}

pub(crate) fn dispatch_of(c: &Call<'_>, dc: u64) -> Result<Dispatch, Fail> {
    let f = c.get_frame(dc)?;
    Ok(Dispatch {
        control_pc: f.control_pc,
        image_base: f.image_base,
        function_entry: f.function_entry,
        handler_data: f.handler_data,
    })
}

/// Raise exception `code` at the caller of the API `c` is in (as
/// RaiseException does). Returns only by a jump or a stop.
pub(crate) fn raise_at_caller(c: &mut Call<'_>, code: u32, flags: u32, info: &[u64]) -> Fail {
    if let Err(e) = c.engine.fetch_fp(c.cpu) {
        return Fail::Stop(super::engine_failed(c.engine.name(), &e));
    }
    let ctx = caller_context(c.mem(), c.cpu);
    let rec = record(code, flags, ctx.rip(), &info[..info.len().min(15)]);
    c.dispatch(&rec, ctx)
}

/// RtlUnwindEx(frame, target_ip, rec) from a language handler, with an
/// exception record of `code`, `flags` and `info` (built on the guest's
/// stack below the handler's frame). Returns only by a jump or a stop.
pub(crate) fn unwind_from_handler(
    c: &mut Call<'_>,
    frame: u64,
    target_ip: u64,
    code: u32,
    flags: u32,
    info: &[u64],
) -> Fail {
    let go = |c: &mut Call<'_>| -> Result<Fail, Fail> {
        c.engine.fetch_fp(c.cpu).map_err(|e| Fail::Stop(super::engine_failed(c.engine.name(), &e)))?;
        let start = caller_context(c.mem(), c.cpu);
        let bytes = record(code, flags, 0, &info[..info.len().min(15)]);
        let at = (c.cpu.gpr[reg::RSP] - 0x40 - REC_SIZE) & !15;
        c.write(at, &bytes)?;
        c.cpu.gpr[reg::RSP] = at;
        c.unwind_ex(frame, target_ip, at, 0, 0, 0, start)
    };
    match go(c) {
        Ok(f) | Err(f) => f,
    }
}

// ----- the API -----

/// RaiseException(code, flags, nargs, args).
pub(crate) fn raise_exception(c: &mut Call<'_>) -> Res {
    let (code, flags, n, args) = (c.arg(0)? as u32, c.arg(1)? as u32, c.arg(2)? as u32, c.arg(3)?);
    let mut info = Vec::new();
    if args != 0 {
        for i in 0..u64::from(n.min(15)) {
            info.push(c.u64_at(args + 8 * i)?);
        }
    }
    c.engine.fetch_fp(c.cpu).map_err(|e| Fail::Stop(super::engine_failed(c.engine.name(), &e)))?;
    let ctx = caller_context(c.mem(), c.cpu);
    let rec = record(code, flags & EH_NONCONTINUABLE, ctx.rip(), &info);
    Err(c.dispatch(&rec, ctx))
}

/// RtlRaiseException(rec).
pub(crate) fn rtl_raise_exception(c: &mut Call<'_>) -> Res {
    let p = c.arg(0)?;
    let bytes = c.read(p, REC_SIZE as usize)?;
    let mut rec = [0u8; REC_SIZE as usize];
    rec.copy_from_slice(&bytes);
    c.engine.fetch_fp(c.cpu).map_err(|e| Fail::Stop(super::engine_failed(c.engine.name(), &e)))?;
    let ctx = caller_context(c.mem(), c.cpu);
    rec[0x10..0x18].copy_from_slice(&ctx.rip().to_le_bytes());
    Err(c.dispatch(&rec, ctx))
}

/// RtlCaptureContext(ctx): the caller's registers.
pub(crate) fn capture_context(c: &mut Call<'_>) -> Res {
    let p = c.arg(0)?;
    c.engine.fetch_fp(c.cpu).map_err(|e| Fail::Stop(super::engine_failed(c.engine.name(), &e)))?;
    let ctx = caller_context(c.mem(), c.cpu);
    c.put_context(p, &ctx)?;
    Ok(0)
}

/// RtlLookupFunctionEntry(pc, *image_base, history).
pub(crate) fn lookup_function_entry(c: &mut Call<'_>) -> Res {
    let (pc, base_out) = (c.arg(0)?, c.arg(1)?);
    match c.p.seh.lookup(c.mem(), pc) {
        Some((base, f)) => {
            if base_out != 0 {
                c.put_u64(base_out, base)?;
            }
            Ok(f)
        }
        None => Ok(0),
    }
}

/// RtlVirtualUnwind(type, base, pc, entry, ctx, *handler_data,
/// *establisher, context_pointers): the handler, or NULL.
pub(crate) fn virtual_unwind(c: &mut Call<'_>) -> Res {
    let (kind, base, pc, entry, ctxp) = (c.arg(0)? as u32, c.arg(1)?, c.arg(2)?, c.arg(3)?, c.arg(4)?);
    let (data_out, frame_out) = (c.arg(5)?, c.arg(6)?);
    let mut ctx = c.get_context(ctxp)?;
    let u = match unwind::virtual_unwind(c.mem(), kind, base, pc, entry, &mut ctx) {
        Ok(u) => u,
        Err(e) => {
            tracing::warn!(%e, "RtlVirtualUnwind");
            let sp = ctx.rsp();
            if frame_out != 0 {
                c.put_u64(frame_out, sp)?;
            }
            return Ok(0);
        }
    };
    c.put_context(ctxp, &ctx)?;
    if frame_out != 0 {
        c.put_u64(frame_out, u.establisher)?;
    }
    if data_out != 0 && u.handler.is_some() {
        c.put_u64(data_out, u.handler_data)?;
    }
    Ok(u.handler.unwrap_or(0))
}

/// RtlUnwindEx(frame, target_ip, rec, retval, ctx, history).
pub(crate) fn rtl_unwind_ex(c: &mut Call<'_>) -> Res {
    let (frame, ip, rec, retval, ctx, history) = (c.arg(0)?, c.arg(1)?, c.arg(2)?, c.arg(3)?, c.arg(4)?, c.arg(5)?);
    c.engine.fetch_fp(c.cpu).map_err(|e| Fail::Stop(super::engine_failed(c.engine.name(), &e)))?;
    let start = caller_context(c.mem(), c.cpu);
    if ctx != 0 {
        c.put_context(ctx, &start)?;
    }
    let r = c.unwind_ex(frame, ip, rec, retval, ctx, history, start);
    Err(r.unwrap_or_else(|e| e))
}

/// RtlUnwind(frame, target_ip, rec, retval).
pub(crate) fn rtl_unwind(c: &mut Call<'_>) -> Res {
    let (frame, ip, rec, retval) = (c.arg(0)?, c.arg(1)?, c.arg(2)?, c.arg(3)?);
    c.engine.fetch_fp(c.cpu).map_err(|e| Fail::Stop(super::engine_failed(c.engine.name(), &e)))?;
    let start = caller_context(c.mem(), c.cpu);
    let r = c.unwind_ex(frame, ip, rec, retval, 0, 0, start);
    Err(r.unwrap_or_else(|e| e))
}

/// RtlRestoreContext(ctx, rec) and NtContinue(ctx, alert).
pub(crate) fn restore_context(c: &mut Call<'_>) -> Res {
    let (p, rec) = (c.arg(0)?, c.arg(1)?);
    c.engine.fetch_fp(c.cpu).map_err(|e| Fail::Stop(super::engine_failed(c.engine.name(), &e)))?;
    let ctx = c.get_context(p)?;
    let r = c.restore(&ctx, rec);
    Err(r.unwrap_or_else(|e| e))
}

pub(crate) fn nt_continue(c: &mut Call<'_>) -> Res {
    let p = c.arg(0)?;
    c.engine.fetch_fp(c.cpu).map_err(|e| Fail::Stop(super::engine_failed(c.engine.name(), &e)))?;
    let ctx = c.get_context(p)?;
    Err(c.jump(&ctx))
}

/// RtlAddFunctionTable(table, count, base).
pub(crate) fn add_function_table(c: &mut Call<'_>) -> Res {
    let (table, count, base) = (c.arg(0)?, c.arg(1)? as u32, c.arg(2)?);
    if table == 0 {
        return Ok(0);
    }
    lock(&c.p.seh.tables).push((table, u64::from(count), base));
    Ok(1)
}

/// RtlDeleteFunctionTable(table).
pub(crate) fn delete_function_table(c: &mut Call<'_>) -> Res {
    let table = c.arg(0)?;
    let mut t = lock(&c.p.seh.tables);
    let before = t.len();
    t.retain(|e| e.0 != table);
    Ok(u64::from(t.len() != before))
}

/// RtlPcToFileHeader(pc, *base).
pub(crate) fn pc_to_file_header(c: &mut Call<'_>) -> Res {
    let (pc, out) = (c.arg(0)?, c.arg(1)?);
    let base = c.p.seh.image_of(pc).map_or(0, |i| i.0);
    if out != 0 {
        c.put_u64(out, base)?;
    }
    Ok(base)
}

fn add_handler(c: &mut Call<'_>, continue_list: bool) -> Res {
    let (first, f) = (c.arg(0)? as u32, c.arg(1)?);
    let seh = &c.p.seh;
    let handle = 0x5eb0_0000 + 16 * seh.next_handle.fetch_add(1, Ordering::Relaxed);
    let mut list = lock(if continue_list { &seh.vch } else { &seh.veh });
    if first != 0 {
        list.insert(0, (handle, f));
    } else {
        list.push((handle, f));
    }
    Ok(handle)
}

fn remove_handler(c: &mut Call<'_>, continue_list: bool) -> Res {
    let h = c.arg(0)?;
    let seh = &c.p.seh;
    let mut list = lock(if continue_list { &seh.vch } else { &seh.veh });
    let before = list.len();
    list.retain(|e| e.0 != h);
    Ok(u64::from(list.len() != before))
}

pub(crate) fn add_veh(c: &mut Call<'_>) -> Res {
    add_handler(c, false)
}

pub(crate) fn remove_veh(c: &mut Call<'_>) -> Res {
    remove_handler(c, false)
}

pub(crate) fn add_vch(c: &mut Call<'_>) -> Res {
    add_handler(c, true)
}

pub(crate) fn remove_vch(c: &mut Call<'_>) -> Res {
    remove_handler(c, true)
}

/// SetUnhandledExceptionFilter(filter): the previous one.
pub(crate) fn set_unhandled_filter(c: &mut Call<'_>) -> Res {
    let f = c.arg(0)?;
    Ok(c.p.seh.filter.swap(f, Ordering::AcqRel))
}

thread_local! {
    static IN_UNHANDLED_FILTER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// UnhandledExceptionFilter(ptrs): the top-level filter's answer, or
/// EXCEPTION_EXECUTE_HANDLER (no debugger: the process is to end).
pub(crate) fn unhandled_exception_filter(c: &mut Call<'_>) -> Res {
    let ptrs = c.arg(0)?;
    let filter = c.p.seh.filter.load(Ordering::Acquire);
    if filter == 0 || IN_UNHANDLED_FILTER.with(|f| f.replace(true)) {
        return Ok(EXCEPTION_EXECUTE_HANDLER as u64);
    }
    let r = c.upcall(filter, &[ptrs]);
    IN_UNHANDLED_FILTER.with(|f| f.set(false));
    let r = r? as i32;
    Ok(if r == 0 { EXCEPTION_EXECUTE_HANDLER as u64 } else { r as i64 as u64 })
}

/// `__C_specific_handler(rec, frame, ctx, dispatch)`: the scope table
/// that clang and MSVC emit for `__try`/`__except`/`__finally` (Count,
/// then {Begin, End, Handler, JumpTarget} RVAs: JumpTarget 0 is a
/// `__finally`, Handler 1 an `__except(1)`, else a filter function).
pub(crate) fn c_specific_handler(c: &mut Call<'_>) -> Res {
    let (rec, frame, ctx, dc) = (c.arg(0)?, c.arg(1)?, c.arg(2)?, c.arg(3)?);
    let f = c.get_frame(dc)?;
    let target_ip = c.u64_at(dc + DC_TARGET_IP)?;
    let dc_ctx = c.u64_at(dc + DC_CONTEXT)?;
    let history = c.u64_at(dc + DC_HISTORY)?;
    let table = f.handler_data;
    let count = c.u32_at(table)?;
    let flags = c.u32_at(rec + REC_FLAGS)?;
    let pc = f.control_pc;
    let base = f.image_base;
    let scope = |c: &Call<'_>, i: u32| -> Result<[u64; 4], Fail> {
        let at = table + 4 + 16 * u64::from(i);
        Ok([
            u64::from(c.u32_at(at)?),
            u64::from(c.u32_at(at + 4)?),
            u64::from(c.u32_at(at + 8)?),
            u64::from(c.u32_at(at + 12)?),
        ])
    };
    if flags & (EH_UNWINDING | EH_EXIT_UNWIND) != 0 {
        for i in f.scope_index..count.min(4096) {
            let [begin, end, handler, jump] = scope(c, i)?;
            if pc < base + begin || pc >= base + end || jump != 0 {
                continue;
            }
            if flags & EH_TARGET_UNWIND != 0 && target_ip >= base + begin && target_ip < base + end {
                break;
            }
            c.put_u32(dc + DC_SCOPE_INDEX, i + 1)?;
            c.upcall(base + handler, &[1, frame])?;
        }
        return Ok(u64::from(EXCEPTION_CONTINUE_SEARCH_DISP));
    }
    for i in f.scope_index..count.min(4096) {
        let [begin, end, handler, jump] = scope(c, i)?;
        if pc < base + begin || pc >= base + end || jump == 0 {
            continue;
        }
        if handler != EXCEPTION_EXECUTE_HANDLER as u64 {
            // EXCEPTION_POINTERS below the stub's caller.
            let sp = c.cpu.gpr[reg::RSP];
            let ptrs = (sp - 0x40) & !15;
            c.put_u64(ptrs, rec)?;
            c.put_u64(ptrs + 8, ctx)?;
            c.cpu.gpr[reg::RSP] = ptrs;
            let r = c.upcall(base + handler, &[ptrs, frame]);
            c.cpu.gpr[reg::RSP] = sp;
            match r? as i32 {
                EXCEPTION_EXECUTE_HANDLER => {}
                EXCEPTION_CONTINUE_EXECUTION => return Ok(u64::from(EXCEPTION_CONTINUE_EXECUTION_DISP)),
                _ => continue,
            }
        }
        let code = c.u32_at(rec)?;
        c.engine.fetch_fp(c.cpu).map_err(|e| Fail::Stop(super::engine_failed(c.engine.name(), &e)))?;
        let start = caller_context(c.mem(), c.cpu);
        let r = c.unwind_ex(frame, base + jump, rec, u64::from(code), dc_ctx, history, start);
        return Err(r.unwrap_or_else(|e| e));
    }
    Ok(u64::from(EXCEPTION_CONTINUE_SEARCH_DISP))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_carry_code_flags_address_and_parameters() {
        let r = record(0xc000_0005, 1, 0x1234, &[1, 0x10]);
        assert_eq!(u32::from_le_bytes([r[0], r[1], r[2], r[3]]), 0xc000_0005);
        assert_eq!(r[4], 1);
        assert_eq!(u64::from_le_bytes(r[0x10..0x18].try_into().unwrap()), 0x1234);
        assert_eq!(r[0x18], 2);
        assert_eq!(u64::from_le_bytes(r[0x28..0x30].try_into().unwrap()), 0x10);
        // At most 15 parameters.
        assert_eq!(record(1, 0, 0, &[7; 20])[0x18], 15);
    }

    #[test]
    fn float_codes_map_to_status_float() {
        use urun_cpu::engine::fp_exception::*;
        assert_eq!(float_status(DIVIDE_BY_ZERO), 0xc000_008e);
        assert_eq!(float_status(INVALID), 0xc000_0090);
        assert_eq!(float_status(99), 0xc000_0090);
    }

    /// A jump lands in the innermost upcall whose trap is above the new
    /// RSP; with no upcall, in the thread's own loop.
    #[test]
    fn jumps_land_in_the_right_loop() {
        let mut s = CpuState::default();
        s.gpr[reg::RSP] = 0x9000;
        assert!(lands_here(&s));
        push_boundary(0x8000, Cross::Exception(Box::new(Context::zeroed())));
        assert!(!lands_here(&s), "above the upcall: an outer loop");
        s.gpr[reg::RSP] = 0x7000;
        assert!(lands_here(&s));
        assert!(matches!(crossing(0x8008), Some(Cross::Exception(_))));
        assert!(crossing(0x8000).is_none());
        pop_boundary();
        assert_eq!(boundary_count(), 0);
    }

    #[test]
    fn shared_tables_find_images_and_added_tables() {
        struct Pdata(Vec<u8>);
        impl Mem for Pdata {
            fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
                let off = match addr.checked_sub(0x1000) {
                    Some(o) if (o as usize) + buf.len() <= self.0.len() => o as usize,
                    _ => return false,
                };
                buf.copy_from_slice(&self.0[off..off + buf.len()]);
                true
            }
        }
        let mut b = Vec::new();
        for w in [0x100u32, 0x200, 0x900, 0x10, 0x20, 0x900] {
            b.extend_from_slice(&w.to_le_bytes());
        }
        let mem = Pdata(b);
        let s = Shared::default();
        s.add_image(0x40_0000, 0x1000, Some((0x1000, 12)));
        assert_eq!(s.lookup(&mem, 0x40_0150), Some((0x40_0000, 0x1000)));
        assert_eq!(s.lookup(&mem, 0x40_0250), None);
        lock(&s.tables).push((0x100c, 1, 0x50_0000));
        assert_eq!(s.lookup(&mem, 0x50_0018), Some((0x50_0000, 0x100c)));
        assert_eq!(s.image_of(0x40_0fff).map(|i| i.0), Some(0x40_0000));
        assert_eq!(s.image_of(0x40_1000), None);
    }
}
