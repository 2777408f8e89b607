//! C++ exceptions of the MSVC runtime (vcruntime140's `_CxxThrowException`
//! and `__CxxFrameHandler3`), on top of `seh.rs`.
//!
//! A `throw` is `_CxxThrowException(object, ThrowInfo)`: exception
//! 0xE06D7363 with the parameters {magic, object, ThrowInfo, image base};
//! a `throw;` passes two NULLs and raises the exception of the innermost
//! catch block again. Each function with `try` or destructors has
//! `__CxxFrameHandler3` as its language handler and a FuncInfo as its
//! handler data (the x64 layout, every address an image-relative RVA):
//!
//! - the IP-to-state map gives the frame's *state* at its ControlPc;
//! - the unwind map gives, per state, the cleanup funclet (a destructor
//!   call) and the state before it;
//! - the try-block map gives each try's range of states, the state its
//!   catch blocks end at, and its handlers (type, catch object's offset in
//!   the frame, catch funclet, where a catch funclet keeps its parent's
//!   frame);
//! - the ThrowInfo lists the types a thrown object can be caught as
//!   (CatchableType: type descriptor, this-displacement, size, copy
//!   constructor) and its destructor.
//!
//! Found a handler, the search builds the catch object in the parent frame
//! (a reference, a bitwise copy or the copy constructor) and unwinds to the
//! frame with a STATUS_UNWIND_CONSOLIDATE record whose callback,
//! `__CxxCallCatchBlock`, runs the catch funclet after the unwind, on the
//! stack below the unwound frames (the exception object, in the thrower's
//! frame, is still there), and returns the address the function goes on
//! at. The catch block ends when the funclet returns, or when an unwind
//! leaves it (`seh::Cross::CatchBlock`): the exception object is then
//! destroyed unless it is the exception in flight (a rethrow) or an outer
//! catch block still holds it.
//!
//! The frame's "unwind help" slot (two 32-bit states, -2 and -1 while no
//! catch runs) keeps the state a search or local unwind reached, so that a
//! search or unwind that passes a catch funclet and then its parent frame
//! does not meet the try block being handled again. Wine's
//! `dlls/msvcrt/except_x86_64.c` was the reference for the order of these
//! steps. `__CxxFrameHandler4` (MSVC 2019's compressed tables) is not
//! implemented: its import binds to a stub that names it when called.

use std::cell::RefCell;

use super::abi::{Call, Fail, Res};
use super::lock;
use super::seh::{
    self, Cross, EH_EXIT_UNWIND, EH_NONCONTINUABLE, EH_TARGET_UNWIND, EH_UNWINDING, EXCEPTION_CONTINUE_SEARCH_DISP,
    REC_FLAGS, REC_INFO, REC_NPARAMS, STATUS_LONGJUMP, STATUS_UNWIND_CONSOLIDATE,
};
use super::table::{self, Dll};
use super::unwind::Mem;

/// The C++ exception code ('msc' | 0xE0000000).
pub(crate) const CXX_EXCEPTION: u32 = 0xe06d_7363;
/// Parameter 0 of a C++ exception.
const THROW_MAGIC: u64 = 0x1993_0520;
/// FuncInfo magics (VC6, VC7 with the ES type list, VC8 with EHFlags).
const FUNC_MAGIC_VC6: u32 = 0x1993_0520;
const FUNC_MAGIC_VC8: u32 = 0x1993_0522;
/// EHFlags: compiled with /EHs (C++ exceptions only); noexcept.
const FUNC_EHS: u32 = 1;
const FUNC_NOEXCEPT: u32 = 4;
/// HandlerType adjectives.
const HT_CONST: u32 = 1;
const HT_VOLATILE: u32 = 2;
const HT_REFERENCE: u32 = 8;
const HT_STD_DOTDOT: u32 = 0x40;
/// CatchableType properties.
const CT_SIMPLE: u32 = 1;
const CT_BY_REFERENCE_ONLY: u32 = 2;
const CT_VIRTUAL_BASE: u32 = 4;
/// ThrowInfo attributes.
const TI_CONST: u32 = 1;
const TI_VOLATILE: u32 = 2;
/// Bounds on counts read from the tables (corrupt data must not make a
/// search run away).
const MAX_ENTRIES: u32 = 1 << 20;
const MAX_TYPES: u32 = 4096;
/// The largest object copied bitwise into a catch object.
const MAX_COPY: u32 = 1 << 20;
/// The unwind-help slot's value while no catch runs: states -2, -1.
const UNWIND_HELP_IDLE: u64 = 0xffff_ffff_ffff_fffe;

/// Why the C++ tables could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum EhError {
    #[error("C++ exception data at {0:#x} is not readable")]
    Unreadable(u64),
    #[error("FuncInfo magic {0:#x} is not one of 0x19930520-22")]
    Magic(u32),
    #[error("{what} count {count} is too large")]
    Count { what: &'static str, count: u32 },
    #[error("state {0} is outside the unwind map")]
    State(i32),
}

/// Why a frame handler stopped: a guest fault or a jump (`Fail`), or
/// tables it could not read (the process terminates, as the real runtime
/// does on corrupt data).
enum Out {
    Fail(Fail),
    Tables(EhError),
}

impl From<Fail> for Out {
    fn from(f: Fail) -> Out {
        Out::Fail(f)
    }
}

impl From<EhError> for Out {
    fn from(e: EhError) -> Out {
        Out::Tables(e)
    }
}

fn u32_at(m: &dyn Mem, at: u64) -> Result<u32, EhError> {
    m.u32_at(at).ok_or(EhError::Unreadable(at))
}

fn i32_at(m: &dyn Mem, at: u64) -> Result<i32, EhError> {
    u32_at(m, at).map(|v| v as i32)
}

/// `base + rva`, or 0 for a null RVA.
fn rva(base: u64, rva: u32) -> u64 {
    if rva == 0 {
        0
    } else {
        base.wrapping_add(u64::from(rva))
    }
}

fn count(what: &'static str, count: u32, max: u32) -> Result<u32, EhError> {
    if count > max {
        return Err(EhError::Count { what, count });
    }
    Ok(count)
}

/// A function's FuncInfo, with its RVAs made absolute.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct FuncInfo {
    pub at: u64,
    pub magic: u32,
    pub max_state: u32,
    pub unwind_map: u64,
    pub try_count: u32,
    pub try_map: u64,
    pub ip_count: u32,
    pub ip_map: u64,
    /// Offset of the unwind-help slot from the establisher frame.
    pub unwind_help: i32,
    pub flags: u32,
}

impl FuncInfo {
    pub fn read(m: &dyn Mem, base: u64, at: u64) -> Result<FuncInfo, EhError> {
        let magic = u32_at(m, at)? & 0x1fff_ffff;
        if !(FUNC_MAGIC_VC6..=FUNC_MAGIC_VC8).contains(&magic) {
            return Err(EhError::Magic(magic));
        }
        let w = |i: u64| u32_at(m, at + 4 * i);
        Ok(FuncInfo {
            at,
            magic,
            max_state: count("unwind map", w(1)?, MAX_ENTRIES)?,
            unwind_map: rva(base, w(2)?),
            try_count: count("try block", w(3)?, MAX_ENTRIES)?,
            try_map: rva(base, w(4)?),
            ip_count: count("IP-to-state", w(5)?, MAX_ENTRIES)?,
            ip_map: rva(base, w(6)?),
            unwind_help: w(7)? as i32,
            flags: if magic >= FUNC_MAGIC_VC8 { w(9)? } else { 0 },
        })
    }

    /// The state at `pc`: the last IP-to-state entry at or before it, or
    /// -1.
    pub fn state_at(&self, m: &dyn Mem, base: u64, pc: u64) -> Result<i32, EhError> {
        let mut state = -1;
        for i in 0..u64::from(self.ip_count) {
            let e = self.ip_map + 8 * i;
            if base.wrapping_add(u64::from(u32_at(m, e)?)) > pc {
                break;
            }
            state = i32_at(m, e + 4)?;
        }
        Ok(state)
    }

    /// The unwind-map entry of `state`: the state before it and its
    /// cleanup funclet (0: none).
    pub fn unwind_entry(&self, m: &dyn Mem, base: u64, state: i32) -> Result<(i32, u64), EhError> {
        if state < 0 || state as u32 >= self.max_state {
            return Err(EhError::State(state));
        }
        let e = self.unwind_map + 8 * state as u64;
        Ok((i32_at(m, e)?, rva(base, u32_at(m, e + 4)?)))
    }

    pub fn try_block(&self, m: &dyn Mem, base: u64, i: u32) -> Result<TryBlock, EhError> {
        let e = self.try_map + 20 * u64::from(i);
        Ok(TryBlock {
            low: i32_at(m, e)?,
            high: i32_at(m, e + 4)?,
            catch_high: i32_at(m, e + 8)?,
            count: count("catch", u32_at(m, e + 12)?, MAX_TYPES)?,
            handlers: rva(base, u32_at(m, e + 16)?),
        })
    }
}

/// A try block: its states, the state its catch blocks end at, its
/// handlers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TryBlock {
    pub low: i32,
    pub high: i32,
    pub catch_high: i32,
    pub count: u32,
    pub handlers: u64,
}

impl TryBlock {
    /// Is `state` in one of this try's catch blocks?
    fn in_catch(&self, state: i32) -> bool {
        state > self.high && state <= self.catch_high
    }

    pub fn handler(&self, m: &dyn Mem, base: u64, k: u32) -> Result<Handler, EhError> {
        let e = self.handlers + 20 * u64::from(k);
        Ok(Handler {
            adjectives: u32_at(m, e)?,
            type_desc: rva(base, u32_at(m, e + 4)?),
            catch_obj: i32_at(m, e + 8)?,
            funclet: rva(base, u32_at(m, e + 12)?),
            frame: i32_at(m, e + 16)?,
        })
    }
}

/// One catch clause (HandlerType).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Handler {
    pub adjectives: u32,
    /// Its type's TypeDescriptor; 0 for `catch(...)`.
    pub type_desc: u64,
    /// Offset of the catch object from the parent's frame (0: none).
    pub catch_obj: i32,
    pub funclet: u64,
    /// Where, from the catch funclet's own frame, it keeps its parent's.
    pub frame: i32,
}

/// One type a thrown object can be caught as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Catchable {
    pub properties: u32,
    pub type_desc: u64,
    /// The this-displacement: member offset, vbtable offset (-1: none),
    /// offset in the vbtable.
    pub mdisp: i32,
    pub pdisp: i32,
    pub vdisp: i32,
    pub size: u32,
    pub copy: u64,
}

/// A ThrowInfo: attributes, destructor, the catchable types.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ThrowInfo {
    pub attributes: u32,
    pub destructor: u64,
    pub types: Vec<Catchable>,
}

impl ThrowInfo {
    pub fn read(m: &dyn Mem, base: u64, at: u64) -> Result<ThrowInfo, EhError> {
        let attributes = u32_at(m, at)?;
        let destructor = rva(base, u32_at(m, at + 4)?);
        let array = rva(base, u32_at(m, at + 12)?);
        let n = if array == 0 { 0 } else { count("catchable type", u32_at(m, array)?, MAX_TYPES)? };
        let mut types = Vec::with_capacity(n as usize);
        for k in 0..u64::from(n) {
            let ct = rva(base, u32_at(m, array + 4 + 4 * k)?);
            types.push(Catchable {
                properties: u32_at(m, ct)?,
                type_desc: rva(base, u32_at(m, ct + 4)?),
                mdisp: i32_at(m, ct + 8)?,
                pdisp: i32_at(m, ct + 12)?,
                vdisp: i32_at(m, ct + 16)?,
                size: u32_at(m, ct + 20)?,
                copy: rva(base, u32_at(m, ct + 24)?),
            });
        }
        Ok(ThrowInfo { attributes, destructor, types })
    }
}

/// A TypeDescriptor's decorated name (after the vftable pointer and the
/// spare word), at most 4 KiB.
fn type_name(m: &dyn Mem, td: u64) -> Result<Vec<u8>, EhError> {
    let mut name = Vec::new();
    let mut b = [0u8; 1];
    for i in 0..4096 {
        if !m.read(td + 16 + i, &mut b) {
            return Err(EhError::Unreadable(td + 16 + i));
        }
        if b[0] == 0 {
            break;
        }
        name.push(b[0]);
    }
    Ok(name)
}

/// Does `h` catch an object thrown with `ti`? Some(None): a catch-all;
/// Some(Some(t)): as type `t`.
pub(crate) fn catches(m: &dyn Mem, h: &Handler, ti: &ThrowInfo) -> Result<Option<Option<Catchable>>, EhError> {
    if h.type_desc == 0 || h.adjectives & HT_STD_DOTDOT != 0 {
        return Ok(Some(None));
    }
    let want = type_name(m, h.type_desc)?;
    if want.is_empty() {
        return Ok(Some(None));
    }
    for t in &ti.types {
        if t.type_desc != h.type_desc && type_name(m, t.type_desc)? != want {
            continue;
        }
        if t.properties & CT_BY_REFERENCE_ONLY != 0 && h.adjectives & HT_REFERENCE == 0 {
            continue;
        }
        if ti.attributes & TI_CONST != 0 && h.adjectives & HT_CONST == 0 {
            continue;
        }
        if ti.attributes & TI_VOLATILE != 0 && h.adjectives & HT_VOLATILE == 0 {
            continue;
        }
        return Ok(Some(Some(*t)));
    }
    Ok(None)
}

/// `object` seen as the base class `t` describes (through a virtual base
/// table when `pdisp` is not -1).
pub(crate) fn this_adjust(m: &dyn Mem, object: u64, t: &Catchable) -> Result<u64, EhError> {
    if object == 0 {
        return Ok(0);
    }
    let mut p = object;
    if t.pdisp >= 0 {
        let at = object.wrapping_add(t.pdisp as i64 as u64);
        let vbtable = m.u64_at(at).ok_or(EhError::Unreadable(at))?;
        p = at.wrapping_add(i32_at(m, vbtable.wrapping_add(t.vdisp as i64 as u64))? as i64 as u64);
    }
    Ok(p.wrapping_add(t.mdisp as i64 as u64))
}

/// An exception a catch block holds: its record's code, flags and
/// parameters (a `throw;` raises it again).
#[derive(Clone, Debug)]
struct Caught {
    code: u32,
    flags: u32,
    info: Vec<u64>,
}

impl Caught {
    /// The C++ object, ThrowInfo and throw image base, if it is one.
    fn cxx(&self) -> Option<(u64, u64, u64)> {
        (self.code == CXX_EXCEPTION && self.info.len() >= 3 && self.info[2] != 0)
            .then(|| (self.info[1], self.info[2], self.info.get(3).copied().unwrap_or(0)))
    }
}

thread_local! {
    /// The catch blocks running on this thread, innermost last.
    static CAUGHT: RefCell<Vec<Caught>> = const { RefCell::new(Vec::new()) };
}

fn mem<'a>(c: &'a Call<'_>) -> &'a dyn Mem {
    &*c.p.mem
}

/// An exception record's code, flags and parameters.
fn read_record(c: &Call<'_>, rec: u64) -> Result<Caught, Fail> {
    let n = u64::from(c.u32_at(rec + REC_NPARAMS)?.min(15));
    let mut info = Vec::with_capacity(n as usize);
    for i in 0..n {
        info.push(c.u64_at(rec + REC_INFO + 8 * i)?);
    }
    Ok(Caught { code: c.u32_at(rec)?, flags: c.u32_at(rec + REC_FLAGS)?, info })
}

/// The consolidation callback's address (the stub of
/// `__CxxCallCatchBlock`).
fn catch_callback(c: &Call<'_>) -> u64 {
    table::find(Dll::Msvcrt, "__CxxCallCatchBlock").and_then(|i| c.p.stubs.get(i + 1)).map_or(0, |s| s.addr)
}

/// Is `r` the consolidation record of a catch (`find_catch`)?
fn is_catch_unwind(c: &Call<'_>, r: &Caught) -> bool {
    r.code == STATUS_UNWIND_CONSOLIDATE && r.info.len() == 8 && r.info[0] == catch_callback(c)
}

/// Call guest `f`, which C++ lets no exception leave (`Cross::NoExcept`).
fn call_noexcept(c: &mut Call<'_>, f: u64, args: &[u64]) -> Res {
    let saved = Box::new(c.cpu.clone());
    c.upcall_with(f, args, Some(Cross::NoExcept(saved)))
}

/// A search carried a C++ exception out of a destructor or copy
/// constructor the runtime called (`seh::Cross::NoExcept`).
pub(crate) fn escaped(c: &mut Call<'_>) -> Fail {
    terminate(c, "an exception left a destructor or copy constructor the C++ runtime called")
}

/// std::terminate: as abort (exit status 3).
fn terminate(c: &mut Call<'_>, why: &str) -> Fail {
    tracing::debug!(why, "std::terminate");
    match super::msvcrt::abort(c) {
        Err(f) => f,
        Ok(_) => Fail::Stop(c.p.exit(3)),
    }
}

// ----- the API -----

/// `_CxxThrowException(object, ThrowInfo)`; both NULL: `throw;`.
pub(crate) fn cxx_throw_exception(c: &mut Call<'_>) -> Res {
    let (object, ti) = (c.arg(0)?, c.arg(1)?);
    if object == 0 && ti == 0 {
        let Some(cur) = CAUGHT.with(|k| k.borrow().last().cloned()) else {
            return Err(terminate(c, "throw; with no exception being handled"));
        };
        return Err(seh::raise_at_caller(c, cur.code, cur.flags & EH_NONCONTINUABLE, &cur.info));
    }
    let base = c.p.seh.image_base_of(ti).unwrap_or(0);
    Err(seh::raise_at_caller(c, CXX_EXCEPTION, EH_NONCONTINUABLE, &[THROW_MAGIC, object, ti, base]))
}

/// `__std_terminate()` and `terminate()`.
pub(crate) fn std_terminate(c: &mut Call<'_>) -> Res {
    Err(terminate(c, "called by the program"))
}

/// `__std_exception_copy(from, to)`: std::exception's message, copied
/// (`__std_exception_data`: the text, then whether it is owned).
pub(crate) fn std_exception_copy(c: &mut Call<'_>) -> Res {
    let (from, to) = (c.arg(0)?, c.arg(1)?);
    let what = c.u64_at(from)?;
    let owned = c.read(from + 8, 1)?[0] != 0;
    if !owned || what == 0 {
        c.put_u64(to, what)?;
        c.write(to + 8, &[0])?;
        return Ok(0);
    }
    let text = c.cstr(what)?;
    let copy = lock(&c.p.heap).alloc(text.len() as u64 + 1);
    if let Some(at) = copy {
        c.write(at, &[text.as_slice(), b"\0"].concat())?;
    }
    c.put_u64(to, copy.unwrap_or(0))?;
    c.write(to + 8, &[u8::from(copy.is_some())])?;
    Ok(0)
}

/// `__std_exception_destroy(data)`: free an owned message.
pub(crate) fn std_exception_destroy(c: &mut Call<'_>) -> Res {
    let data = c.arg(0)?;
    let what = c.u64_at(data)?;
    if c.read(data + 8, 1)?[0] != 0 && what != 0 {
        lock(&c.p.heap).free(what);
    }
    c.put_u64(data, 0)?;
    c.write(data + 8, &[0])?;
    Ok(0)
}

/// `__CxxFrameHandler3(rec, frame, ctx, dispatch)` (and the older
/// `__CxxFrameHandler`, whose FuncInfo is the same).
pub(crate) fn cxx_frame_handler3(c: &mut Call<'_>) -> Res {
    let (rec, frame, ctx, dc) = (c.arg(0)?, c.arg(1)?, c.arg(2)?, c.arg(3)?);
    let d = seh::dispatch_of(c, dc)?;
    let fi_rva = c.u32_at(d.handler_data)?;
    let fi = match FuncInfo::read(mem(c), d.image_base, rva(d.image_base, fi_rva)) {
        Ok(fi) => fi,
        Err(e) => {
            tracing::warn!(%e, pc = format_args!("{:#x}", d.control_pc), "__CxxFrameHandler3");
            return Ok(u64::from(EXCEPTION_CONTINUE_SEARCH_DISP));
        }
    };
    match frame_handler(c, rec, frame, ctx, &d, &fi) {
        Ok(()) => Ok(u64::from(EXCEPTION_CONTINUE_SEARCH_DISP)),
        Err(Out::Tables(e)) => Err(terminate(c, &format!("C++ exception tables: {e}"))),
        Err(Out::Fail(f)) => Err(f),
    }
}

/// What a frame's handler does: Ok when the search goes on.
fn frame_handler(
    c: &mut Call<'_>,
    rec: u64,
    frame: u64,
    ctx: u64,
    d: &seh::Dispatch,
    fi: &FuncInfo,
) -> Result<(), Out> {
    let r = read_record(c, rec)?;
    let m = mem(c);
    let base = d.image_base;
    let catch_unwind = is_catch_unwind(c, &r);
    if fi.magic >= FUNC_MAGIC_VC8
        && fi.flags & FUNC_EHS != 0
        && r.code != CXX_EXCEPTION
        && !catch_unwind
        && r.code != STATUS_LONGJUMP
    {
        return Ok(());
    }
    let state = fi.state_at(m, base, d.control_pc)?;
    // A catch funclet's frame: its parent's frame is the one the states
    // and the catch objects belong to.
    let func_begin = rva(base, c.u32_at(d.function_entry)?);
    let mut orig = frame;
    let mut unwind_to = -1;
    for i in (0..fi.try_count).rev() {
        let tb = fi.try_block(m, base, i)?;
        if !tb.in_catch(state) {
            continue;
        }
        for k in 0..tb.count {
            let h = tb.handler(m, base, k)?;
            if h.funclet == func_begin {
                unwind_to = tb.high;
                orig = c.u64_at(frame.wrapping_add(h.frame as i64 as u64))?;
            }
        }
    }
    // A cleanup funclet's frame (not the function's, not a catch
    // funclet's: the IP-to-state map starts at the function): its states
    // and unwind-help slot are its parent's, whose own frame comes later.
    if orig == frame && fi.ip_count > 0 && rva(base, c.u32_at(fi.ip_map)?) != func_begin {
        return Ok(());
    }
    if r.flags & (EH_UNWINDING | EH_EXIT_UNWIND) != 0 {
        let last = if r.flags & EH_TARGET_UNWIND == 0 {
            unwind_to
        } else if catch_unwind {
            r.info[3] as i32
        } else {
            state
        };
        return local_unwind(c, orig, d, fi, last);
    }
    if fi.try_count > 0 {
        if let Some(f) = find_catch(c, rec, &r, ctx, frame, d, fi, orig, state)? {
            return Err(Out::Fail(f));
        }
    }
    if r.code == CXX_EXCEPTION && orig == frame && fi.magic >= FUNC_MAGIC_VC8 && fi.flags & FUNC_NOEXCEPT != 0 {
        return Err(Out::Fail(terminate(c, "an exception left a noexcept function")));
    }
    Ok(())
}

/// Run the frame's cleanup funclets from its current state down to
/// `last` (exclusive), and keep the state reached.
fn local_unwind(c: &mut Call<'_>, frame: u64, d: &seh::Dispatch, fi: &FuncInfo, last: i32) -> Result<(), Out> {
    let help = frame.wrapping_add(fi.unwind_help as i64 as u64);
    let mut state = c.u32_at(help)? as i32;
    if state == -2 {
        state = fi.state_at(mem(c), d.image_base, d.control_pc)?;
    }
    while state > last {
        let (prev, action) = fi.unwind_entry(mem(c), d.image_base, state)?;
        if action != 0 {
            call_noexcept(c, action, &[0, frame])?;
        }
        state = prev;
    }
    Ok(c.put_u32(help, state as u32)?)
}

/// The search in one frame: a handler of a try block around `state` that
/// takes the exception unwinds to it (the returned Fail); None: none here.
#[allow(clippy::too_many_arguments)]
fn find_catch(
    c: &mut Call<'_>,
    rec: u64,
    r: &Caught,
    ctx: u64,
    frame: u64,
    d: &seh::Dispatch,
    fi: &FuncInfo,
    orig: u64,
    state: i32,
) -> Result<Option<Fail>, Out> {
    let base = d.image_base;
    let cxx =
        (r.code == CXX_EXCEPTION && r.info.len() >= 3 && r.info[0] & 0x1fff_ffff >= THROW_MAGIC && r.info[2] != 0)
            .then(|| (r.info[1], r.info[2], r.info.get(3).copied().unwrap_or(0)));
    let ti = match cxx {
        Some((_, at, tbase)) => Some(ThrowInfo::read(mem(c), tbase, at)?),
        None => None,
    };
    let mut in_catch = None;
    for i in (0..fi.try_count).rev() {
        let tb = fi.try_block(mem(c), base, i)?;
        if tb.in_catch(state) {
            in_catch = Some(tb);
            break;
        }
    }
    // The highest state a search of this frame has seen (a catch funclet's
    // state, when the search came through one of its catch blocks).
    let help = orig.wrapping_add(fi.unwind_help as i64 as u64);
    let seen = c.u32_at(help + 4)? as i32;
    let state = if state > seen {
        c.put_u32(help, state as u32)?;
        c.put_u32(help + 4, state as u32)?;
        state
    } else {
        seen
    };
    for i in 0..fi.try_count {
        let tb = fi.try_block(mem(c), base, i)?;
        if state < tb.low || state > tb.high {
            continue;
        }
        if let Some(outer) = in_catch {
            if tb.low <= outer.high || tb.high > outer.catch_high {
                continue;
            }
        }
        for k in 0..tb.count {
            let h = tb.handler(mem(c), base, k)?;
            let found = match &ti {
                Some(ti) => catches(mem(c), &h, ti)?,
                // Other exceptions reach here only without /EHs: catch(...)
                // takes them.
                None => (h.type_desc == 0 || h.adjectives & HT_STD_DOTDOT != 0).then_some(None),
            };
            let Some(as_type) = found else { continue };
            if let (Some(t), Some((object, _, _))) = (as_type, cxx) {
                build_catch_object(c, orig, &h, &t, object)?;
            }
            let callback = catch_callback(c);
            let info = [callback, orig, fi.at, tb.low as i64 as u64, rec, h.funclet, 0, ctx];
            return Ok(Some(seh::unwind_from_handler(
                c,
                frame,
                d.control_pc,
                STATUS_UNWIND_CONSOLIDATE,
                EH_NONCONTINUABLE,
                &info,
            )));
        }
    }
    Ok(None)
}

/// Initialise the catch clause's object in the parent frame: a reference
/// to the thrown object, a bitwise copy, or a copy-constructed one.
fn build_catch_object(c: &mut Call<'_>, orig: u64, h: &Handler, t: &Catchable, object: u64) -> Result<(), Out> {
    if h.catch_obj == 0 || h.type_desc == 0 || object == 0 {
        return Ok(());
    }
    let dest = orig.wrapping_add(h.catch_obj as i64 as u64);
    if h.adjectives & HT_REFERENCE != 0 {
        let p = this_adjust(mem(c), object, t)?;
        return Ok(c.put_u64(dest, p)?);
    }
    let size = t.size.min(MAX_COPY) as usize;
    if t.properties & CT_SIMPLE != 0 {
        let bytes = c.read(object, size)?;
        c.write(dest, &bytes)?;
        // A pointer to a class is adjusted to the base class caught.
        if size == 8 {
            let p = this_adjust(mem(c), c.u64_at(dest)?, t)?;
            c.put_u64(dest, p)?;
        }
        return Ok(());
    }
    let src = this_adjust(mem(c), object, t)?;
    if t.copy == 0 {
        let bytes = c.read(src, size)?;
        return Ok(c.write(dest, &bytes)?);
    }
    if t.properties & CT_VIRTUAL_BASE != 0 {
        call_noexcept(c, t.copy, &[dest, src, 1])?;
    } else {
        call_noexcept(c, t.copy, &[dest, src])?;
    }
    Ok(())
}

/// `__CxxCallCatchBlock(rec)`: the consolidation callback. Runs the catch
/// funclet (rec's parameters: [1] the parent frame, [2] its FuncInfo, [4]
/// the exception record, [5] the funclet) and returns where the function
/// goes on.
pub(crate) fn call_catch_block(c: &mut Call<'_>) -> Res {
    let rec = c.arg(0)?;
    let r = read_record(c, rec)?;
    if r.info.len() < 8 {
        return Err(terminate(c, "a catch block without its parameters"));
    }
    let (orig, fi_at, exc, funclet) = (r.info[1], r.info[2], r.info[4], r.info[5]);
    let caught = read_record(c, exc)?;
    let depth = CAUGHT.with(|k| {
        let mut k = k.borrow_mut();
        k.push(caught);
        k.len() - 1
    });
    let saved = Box::new(c.cpu.clone());
    let r = c.upcall_with(funclet, &[0, orig], Some(Cross::CatchBlock(saved)));
    // An unwind that left the block ended it already (catch_block_left).
    let popped = CAUGHT.with(|k| {
        let mut k = k.borrow_mut();
        let top = (k.len() == depth + 1).then(|| k.pop()).flatten();
        k.truncate(depth);
        top
    });
    let cont = r?;
    if let Some(done) = popped {
        end_catch(c, &done)?;
    }
    let help = orig.wrapping_add(i64::from(c.u32_at(fi_at + 28)? as i32) as u64);
    c.put_u64(help, UNWIND_HELP_IDLE)?;
    Ok(cont)
}

/// An unwind (`rec`) leaves the innermost catch block: it ends, and its
/// exception object is destroyed unless the unwind is for a catch of that
/// same object (a rethrow).
pub(crate) fn catch_block_left(c: &mut Call<'_>, rec: u64) -> Result<(), Fail> {
    let Some(done) = CAUGHT.with(|k| k.borrow_mut().pop()) else { return Ok(()) };
    let r = read_record(c, rec)?;
    if is_catch_unwind(c, &r) {
        let in_flight = read_record(c, r.info[4])?;
        if let (Some((a, _, _)), Some((b, _, _))) = (in_flight.cxx(), done.cxx()) {
            if a == b {
                return Ok(());
            }
        }
    }
    end_catch(c, &done)
}

/// A catch block ended: destroy its exception object, unless an outer
/// catch block still holds it.
fn end_catch(c: &mut Call<'_>, done: &Caught) -> Result<(), Fail> {
    let Some((object, ti, base)) = done.cxx() else { return Ok(()) };
    let held = CAUGHT.with(|k| k.borrow().iter().any(|o| o.cxx().is_some_and(|(p, _, _)| p == object)));
    if held || object == 0 {
        return Ok(());
    }
    let destructor = rva(base, c.u32_at(ti + 4)?);
    if destructor != 0 {
        call_noexcept(c, destructor, &[object])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: u64 = 0x1000_0000;

    /// A fake image: bytes at BASE.
    struct Image(Vec<u8>);

    impl Image {
        fn new() -> Image {
            Image(vec![0; 0x4000])
        }
        fn put(&mut self, rva: u64, words: &[i64]) {
            for (i, w) in words.iter().enumerate() {
                let at = rva as usize + 4 * i;
                self.0[at..at + 4].copy_from_slice(&(*w as i32).to_le_bytes());
            }
        }
        fn put_bytes(&mut self, rva: u64, b: &[u8]) {
            self.0[rva as usize..rva as usize + b.len()].copy_from_slice(b);
        }
    }

    impl Mem for Image {
        fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
            let Some(off) = addr.checked_sub(BASE) else { return false };
            let off = off as usize;
            if off + buf.len() > self.0.len() {
                return false;
            }
            buf.copy_from_slice(&self.0[off..off + buf.len()]);
            true
        }
    }

    /// A function with states 0-2 (state 1 a try, 2 its catch), two
    /// handlers (Base& and catch(...)), and a ThrowInfo for Derived that
    /// is catchable as Derived and as Base at displacement 8 (a second
    /// type descriptor of the same name, as another image would have).
    fn image() -> Image {
        let mut m = Image::new();
        m.put(0x100, &[0x1993_0522, 3, 0x200, 1, 0x300, 3, 0x400, 48, 0, 1]);
        m.put(0x200, &[-1, 0x1000, 0, 0, -1, 0x1100]);
        m.put(0x300, &[1, 1, 2, 2, 0x500]);
        m.put(0x500, &[8, 0x600, 0x20, 0x2000, 0x38, 0x40, 0, 0, 0x2100, 0x38]);
        m.put(0x400, &[0x1000, -1, 0x1010, 0, 0x1020, 1]);
        m.put_bytes(0x610, b".?AUBase@@\0");
        m.put_bytes(0x690, b".?AUBase@@\0");
        m.put_bytes(0x710, b".?AUDerived@@\0");
        m.put_bytes(0x790, b".?AUOther@@\0");
        m.put(0x800, &[0, 0x3000, 0, 0x900]);
        m.put(0x900, &[2, 0xa00, 0xa40]);
        m.put(0xa00, &[0, 0x700, 0, -1, 0, 16, 0]);
        m.put(0xa40, &[0, 0x680, 8, -1, 0, 8, 0x3100]);
        m
    }

    #[test]
    fn func_info_and_its_maps() {
        let m = image();
        let fi = FuncInfo::read(&m, BASE, BASE + 0x100).unwrap();
        assert_eq!((fi.magic, fi.max_state, fi.try_count, fi.ip_count), (0x1993_0522, 3, 1, 3));
        assert_eq!((fi.unwind_map, fi.try_map, fi.ip_map), (BASE + 0x200, BASE + 0x300, BASE + 0x400));
        assert_eq!((fi.unwind_help, fi.flags), (48, FUNC_EHS));
        for (pc, want) in [(0xfff, -1), (0x1000, -1), (0x1010, 0), (0x101f, 0), (0x1020, 1), (0x9000, 1)] {
            assert_eq!(fi.state_at(&m, BASE, BASE + pc), Ok(want), "pc {pc:#x}");
        }
        assert_eq!(fi.unwind_entry(&m, BASE, 0), Ok((-1, BASE + 0x1000)));
        assert_eq!(fi.unwind_entry(&m, BASE, 1), Ok((0, 0)));
        assert_eq!(fi.unwind_entry(&m, BASE, 3), Err(EhError::State(3)));
        assert_eq!(fi.unwind_entry(&m, BASE, -1), Err(EhError::State(-1)));
        let tb = fi.try_block(&m, BASE, 0).unwrap();
        assert_eq!((tb.low, tb.high, tb.catch_high, tb.count), (1, 1, 2, 2));
        assert!(tb.in_catch(2) && !tb.in_catch(1) && !tb.in_catch(3));
        let h = tb.handler(&m, BASE, 0).unwrap();
        assert_eq!(
            h,
            Handler { adjectives: 8, type_desc: BASE + 0x600, catch_obj: 0x20, funclet: BASE + 0x2000, frame: 0x38 }
        );
        assert_eq!(tb.handler(&m, BASE, 1).unwrap().type_desc, 0);
    }

    #[test]
    fn bad_func_info_is_an_error() {
        let mut m = image();
        m.put(0x100, &[0x1993_0519]);
        assert_eq!(FuncInfo::read(&m, BASE, BASE + 0x100), Err(EhError::Magic(0x1993_0519)));
        let mut m = image();
        m.put(0x104, &[-1]);
        assert!(matches!(FuncInfo::read(&m, BASE, BASE + 0x100), Err(EhError::Count { .. })));
        assert_eq!(FuncInfo::read(&m, BASE, 0x10), Err(EhError::Unreadable(0x10)));
        // The ip map runs off the image.
        let mut m = image();
        m.put(0x114, &[2, 0x3ff8]);
        let fi = FuncInfo::read(&m, BASE, BASE + 0x100).unwrap();
        assert!(matches!(fi.state_at(&m, BASE, BASE + 0x9000), Err(EhError::Unreadable(_))));
    }

    #[test]
    fn handlers_match_by_type_name_and_qualifiers() {
        let m = image();
        let ti = ThrowInfo::read(&m, BASE, BASE + 0x800).unwrap();
        assert_eq!(ti.destructor, BASE + 0x3000);
        assert_eq!(ti.types.len(), 2);
        assert_eq!(ti.types[1].copy, BASE + 0x3100);
        let h = |adjectives, td| Handler { adjectives, type_desc: td, catch_obj: 0, funclet: 0, frame: 0 };
        // Base& finds the second catchable type through its name.
        assert_eq!(catches(&m, &h(HT_REFERENCE, BASE + 0x600), &ti), Ok(Some(Some(ti.types[1]))));
        assert_eq!(catches(&m, &h(0, BASE + 0x700), &ti), Ok(Some(Some(ti.types[0]))));
        assert_eq!(catches(&m, &h(0, BASE + 0x780), &ti), Ok(None));
        assert_eq!(catches(&m, &h(0, 0), &ti), Ok(Some(None)));
        assert_eq!(catches(&m, &h(HT_STD_DOTDOT, BASE + 0x780), &ti), Ok(Some(None)));
        // A const object is not caught by a non-const handler.
        let mut c = ti.clone();
        c.attributes = TI_CONST;
        assert_eq!(catches(&m, &h(0, BASE + 0x700), &c), Ok(None));
        assert_eq!(catches(&m, &h(HT_CONST, BASE + 0x700), &c), Ok(Some(Some(c.types[0]))));
        // A type catchable by reference only.
        let mut r = ti.clone();
        r.types[0].properties = CT_BY_REFERENCE_ONLY;
        assert_eq!(catches(&m, &h(0, BASE + 0x700), &r), Ok(None));
        assert_eq!(catches(&m, &h(HT_REFERENCE, BASE + 0x700), &r), Ok(Some(Some(r.types[0]))));
    }

    #[test]
    fn this_pointer_adjustments() {
        let mut m = image();
        let t = |mdisp, pdisp, vdisp| Catchable { properties: 0, type_desc: 0, mdisp, pdisp, vdisp, size: 8, copy: 0 };
        assert_eq!(this_adjust(&m, BASE + 0x1000, &t(8, -1, 0)), Ok(BASE + 0x1008));
        assert_eq!(this_adjust(&m, 0, &t(8, -1, 0)), Ok(0), "a null pointer stays null");
        // A virtual base: the vbtable pointer at object+0x10, the base's
        // offset (from the vbtable pointer) 0x30 in its slot 4.
        let obj = 0x1800;
        m.0[obj + 0x10..obj + 0x18].copy_from_slice(&(BASE + 0x1900).to_le_bytes());
        m.put(0x1904, &[0x30]);
        assert_eq!(this_adjust(&m, BASE + obj as u64, &t(4, 0x10, 4)), Ok(BASE + obj as u64 + 0x10 + 0x30 + 4));
    }
}
