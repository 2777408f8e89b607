//! Synchronisation: the kernel objects a handle names (events, mutexes,
//! semaphores, threads) kept in urun with one wait path, and the
//! user-mode locks whose state lives in guest memory (critical sections,
//! SRW locks, condition variables, INIT_ONCE, WaitOnAddress).
//!
//! The guest-memory locks follow their Windows layouts and take their
//! uncontended paths with one atomic operation on the guest's own words
//! (guest address == host address), so they could later move into guest
//! code unchanged; only a thread that must sleep asks the host kernel, by a
//! futex on a word of the lock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use super::abi::{Call, Fail, Res};
use super::kernel32::{set_error, ERROR_INVALID_HANDLE, ERROR_INVALID_PARAMETER};
use super::lock;
use super::teb::TEB_TID;

pub(crate) const WAIT_OBJECT_0: u64 = 0;
pub(crate) const WAIT_ABANDONED_0: u64 = 0x80;
pub(crate) const WAIT_TIMEOUT: u64 = 0x102;
pub(crate) const WAIT_FAILED: u64 = 0xffff_ffff;
pub(crate) const INFINITE: u32 = u32::MAX;
pub(crate) const STILL_ACTIVE: u32 = 259;
const ERROR_TIMEOUT: u32 = 1460;
const ERROR_NOT_OWNER: u32 = 288;
const ERROR_TOO_MANY_POSTS: u32 = 298;
const ERROR_ALREADY_EXISTS: u32 = 183;
/// At most this many handles in one WaitForMultipleObjects.
const MAXIMUM_WAIT_OBJECTS: u64 = 64;
/// Handles of kernel objects: this base plus 4 × n, clear of the file
/// handles (host fds + 0x10).
const OBJ_BASE: u64 = 0x0020_0000;
const OBJ_LIMIT: u64 = 0x0100_0000;
/// The pseudo handles GetCurrentProcess and GetCurrentThread return.
pub(crate) const CURRENT_PROCESS: u64 = u64::MAX;
pub(crate) const CURRENT_THREAD: u64 = u64::MAX - 1;

type ObjId = u64;

/// A kernel object.
#[derive(Debug)]
pub(crate) enum Kind {
    Event {
        manual: bool,
        set: bool,
    },
    Mutex {
        owner: u32,
        count: u32,
        abandoned: bool,
    },
    Semaphore {
        count: u32,
        max: u32,
    },
    /// A thread: its id once known, its exit code once it ended, how many
    /// ResumeThread calls it still waits for before it starts.
    Thread {
        tid: u32,
        code: Option<u32>,
        suspend: u32,
    },
    /// A waitable timer (timers.rs): signaled once `due` has passed (then
    /// `due` moves on by `period`, or is cleared).
    Timer {
        manual: bool,
        set: bool,
        due: Option<Instant>,
        period: Option<Duration>,
    },
    /// An I/O completion port (iocp.rs): its queued packets, never signaled
    /// as an object.
    Port {
        queue: std::collections::VecDeque<super::iocp::Packet>,
    },
}

struct Obj {
    kind: Kind,
    /// Handles plus internal references (a running thread holds one on
    /// its own object).
    refs: u32,
    name: Option<String>,
}

#[derive(Default)]
struct Table {
    objs: HashMap<ObjId, Obj>,
    handles: HashMap<u64, ObjId>,
    names: HashMap<String, ObjId>,
    next_obj: ObjId,
    next_handle: u64,
}

/// Every kernel object of the process, under one lock, with one condition
/// variable that every change notifies (waits re-check what they wait
/// for).
#[derive(Default)]
pub(crate) struct Objects {
    t: Mutex<Table>,
    changed: Condvar,
}

/// What a wait ended with.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Waited {
    /// Object `i` (of the list) was signaled; `abandoned`: a mutex whose
    /// owner ended without releasing it.
    Signaled {
        i: usize,
        abandoned: bool,
    },
    Timeout,
    BadHandle,
}

impl Table {
    fn add(&mut self, kind: Kind, name: Option<String>) -> ObjId {
        self.next_obj += 1;
        let id = self.next_obj;
        if let Some(n) = &name {
            self.names.insert(n.clone(), id);
        }
        self.objs.insert(id, Obj { kind, refs: 0, name });
        id
    }

    /// A new handle to `id`, or None when the handle space is used up.
    fn handle(&mut self, id: ObjId) -> Option<u64> {
        let mut h = OBJ_BASE + 4 * self.next_handle;
        let mut tries = 0;
        while self.handles.contains_key(&h) || h >= OBJ_LIMIT {
            self.next_handle = (self.next_handle + 1) % ((OBJ_LIMIT - OBJ_BASE) / 4);
            h = OBJ_BASE + 4 * self.next_handle;
            tries += 1;
            if tries > (OBJ_LIMIT - OBJ_BASE) / 4 {
                return None;
            }
        }
        self.next_handle += 1;
        self.handles.insert(h, id);
        self.obj_ref(id);
        Some(h)
    }

    fn obj_ref(&mut self, id: ObjId) {
        if let Some(o) = self.objs.get_mut(&id) {
            o.refs += 1;
        }
    }

    fn obj_unref(&mut self, id: ObjId) {
        let gone = match self.objs.get_mut(&id) {
            Some(o) => {
                o.refs = o.refs.saturating_sub(1);
                o.refs == 0
            }
            None => false,
        };
        if gone {
            if let Some(Obj { name: Some(n), .. }) = self.objs.remove(&id) {
                if self.names.get(&n) == Some(&id) {
                    self.names.remove(&n);
                }
            }
        }
    }

    fn signaled(&self, id: ObjId, me: u32) -> bool {
        match self.objs.get(&id).map(|o| &o.kind) {
            Some(Kind::Event { set, .. }) => *set,
            Some(Kind::Mutex { owner, .. }) => *owner == 0 || *owner == me,
            Some(Kind::Semaphore { count, .. }) => *count > 0,
            Some(Kind::Thread { code, .. }) => code.is_some(),
            Some(Kind::Timer { set, .. }) => *set,
            Some(Kind::Port { .. }) | None => false,
        }
    }

    /// Take a signaled object as a satisfied wait does; true when it was
    /// an abandoned mutex.
    fn consume(&mut self, id: ObjId, me: u32) -> bool {
        match self.objs.get_mut(&id).map(|o| &mut o.kind) {
            Some(Kind::Event { manual: false, set }) => *set = false,
            Some(Kind::Mutex { owner, count, abandoned }) => {
                *owner = me;
                *count += 1;
                return std::mem::take(abandoned);
            }
            Some(Kind::Semaphore { count, .. }) => *count -= 1,
            Some(Kind::Timer { manual: false, set, .. }) => *set = false,
            _ => {}
        }
        false
    }
}

impl Objects {
    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        lock(&self.t)
    }

    /// A new object and a handle to it. A named object that exists
    /// already gets a new handle instead (`existed` true), as on Windows.
    pub fn create(&self, kind: Kind, name: Option<String>) -> Option<(u64, bool)> {
        let mut t = self.table();
        if let Some(id) = name.as_ref().and_then(|n| t.names.get(n)).copied() {
            return t.handle(id).map(|h| (h, true));
        }
        let id = t.add(kind, name);
        let h = t.handle(id);
        if h.is_none() {
            t.objs.remove(&id);
        }
        h.map(|h| (h, false))
    }

    /// The object a handle names.
    fn id(&self, t: &Table, h: u64, cur: Option<ObjId>) -> Option<ObjId> {
        if h == CURRENT_THREAD {
            return cur;
        }
        t.handles.get(&h).copied()
    }

    pub fn is_handle(&self, h: u64) -> bool {
        self.table().handles.contains_key(&h)
    }

    /// CloseHandle of an object handle: None when `h` is not one.
    pub fn close(&self, h: u64) -> Option<()> {
        let mut t = self.table();
        let id = t.handles.remove(&h)?;
        t.obj_unref(id);
        Some(())
    }

    /// A second handle to what `h` names.
    pub fn duplicate(&self, h: u64, cur: Option<ObjId>) -> Option<u64> {
        let mut t = self.table();
        let id = self.id(&t, h, cur)?;
        if !t.objs.contains_key(&id) {
            return None;
        }
        t.handle(id)
    }

    /// Run `f` on the object `h` names, then wake every waiter.
    pub fn with<R>(&self, h: u64, cur: Option<ObjId>, f: impl FnOnce(&mut Kind) -> R) -> Option<R> {
        let mut t = self.table();
        let id = self.id(&t, h, cur)?;
        let r = f(&mut t.objs.get_mut(&id)?.kind);
        drop(t);
        self.changed.notify_all();
        Some(r)
    }

    /// A thread object (internal: no handle yet), with one reference held
    /// by the running thread.
    pub fn new_thread(&self, suspend: u32) -> ObjId {
        let mut t = self.table();
        let id = t.add(Kind::Thread { tid: 0, code: None, suspend }, None);
        t.obj_ref(id);
        id
    }

    pub fn handle_for(&self, id: ObjId) -> Option<u64> {
        self.table().handle(id)
    }

    pub fn set_thread_id(&self, id: ObjId, new: u32) {
        if let Some(Kind::Thread { tid, .. }) = self.table().objs.get_mut(&id).map(|o| &mut o.kind) {
            *tid = new;
        }
    }

    /// Block until thread object `id` is not suspended.
    pub fn wait_resumed(&self, id: ObjId) {
        let mut t = self.table();
        while matches!(t.objs.get(&id).map(|o| &o.kind), Some(Kind::Thread { suspend, .. }) if *suspend > 0) {
            t = self.changed.wait(t).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Thread `id` (host thread `tid`) ended with `code`: its object is
    /// signaled, the mutexes it owned are abandoned, its own reference
    /// dropped.
    pub fn thread_ended(&self, id: ObjId, tid: u32, code: u32) {
        let mut t = self.table();
        for o in t.objs.values_mut() {
            if let Kind::Mutex { owner, count, abandoned } = &mut o.kind {
                // (tid 0: a thread that never ran owns nothing.)
                if *owner == tid && tid != 0 {
                    *owner = 0;
                    *count = 0;
                    *abandoned = true;
                }
            }
        }
        if let Some(Kind::Thread { code: c, .. }) = t.objs.get_mut(&id).map(|o| &mut o.kind) {
            *c = Some(code);
        }
        t.obj_unref(id);
        drop(t);
        self.changed.notify_all();
    }

    /// Wait for one (`all` false) or all of `handles`, for `timeout` (None:
    /// forever). `me` is the waiting thread's id, `cur` its own object.
    pub fn wait(&self, handles: &[u64], all: bool, timeout: Option<Duration>, me: u32, cur: Option<ObjId>) -> Waited {
        let deadline = timeout.map(|d| Instant::now() + d);
        let mut t = self.table();
        let mut ids = Vec::with_capacity(handles.len());
        for &h in handles {
            match self.id(&t, h, cur) {
                Some(id) if t.objs.contains_key(&id) => ids.push(Some(id)),
                // The process itself: signaled only when it has ended.
                None if h == CURRENT_PROCESS => ids.push(None),
                _ => return Waited::BadHandle,
            }
        }
        loop {
            let next_due = t.fire_timers(ids.iter().flatten().copied());
            let ready = |t: &Table, id: &Option<ObjId>| id.is_some_and(|id| t.signaled(id, me));
            if all {
                if !ids.is_empty() && ids.iter().all(|id| ready(&t, id)) {
                    let mut abandoned = false;
                    for id in ids.iter().flatten() {
                        abandoned |= t.consume(*id, me);
                    }
                    return Waited::Signaled { i: 0, abandoned };
                }
            } else if let Some(i) = ids.iter().position(|id| ready(&t, id)) {
                let abandoned = ids[i].is_some_and(|id| t.consume(id, me));
                return Waited::Signaled { i, abandoned };
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Waited::Timeout;
            }
            t = match deadline.into_iter().chain(next_due).min() {
                None => self.changed.wait(t).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    self.changed.wait_timeout(t, d.saturating_duration_since(now)).unwrap_or_else(|e| e.into_inner()).0
                }
            };
        }
    }

    /// Run `f` on the object `h` names until it gives a result, waiting
    /// for changes up to `timeout` (None: forever): Ok(None) on timeout,
    /// Err(()) when `h` names no object.
    pub fn wait_with<R>(
        &self,
        h: u64,
        timeout: Option<Duration>,
        mut f: impl FnMut(&mut Kind) -> Option<R>,
    ) -> Result<Option<R>, ()> {
        let deadline = timeout.map(|d| Instant::now() + d);
        let mut t = self.table();
        loop {
            let id = self.id(&t, h, None).ok_or(())?;
            let k = &mut t.objs.get_mut(&id).ok_or(())?.kind;
            if let Some(r) = f(k) {
                drop(t);
                self.changed.notify_all();
                return Ok(Some(r));
            }
            t = match deadline {
                None => self.changed.wait(t).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return Ok(None);
                    }
                    self.changed.wait_timeout(t, d - now).unwrap_or_else(|e| e.into_inner()).0
                }
            };
        }
    }
}

impl Table {
    /// Signal the timers among `ids` whose time has come; the earliest
    /// time one of them is still due, if any.
    fn fire_timers(&mut self, ids: impl Iterator<Item = ObjId>) -> Option<Instant> {
        let now = Instant::now();
        let mut next = None::<Instant>;
        for id in ids {
            if let Some(Kind::Timer { set, due, period, .. }) = self.objs.get_mut(&id).map(|o| &mut o.kind) {
                if let Some(d) = *due {
                    if d <= now {
                        *set = true;
                        *due = period.map(|p| (d + p).max(now));
                    }
                }
                if let Some(d) = *due {
                    next = Some(next.map_or(d, |n| n.min(d)));
                }
            }
        }
        next
    }
}

// ----- handlers: kernel objects -----

/// The calling thread's id (from its TEB).
pub(crate) fn me(c: &Call<'_>) -> Result<u32, Fail> {
    c.u32_at(c.cpu.gs_base + TEB_TID)
}

pub(crate) fn timeout_of(ms: u32) -> Option<Duration> {
    (ms != INFINITE).then(|| Duration::from_millis(u64::from(ms)))
}

/// An object name argument (`wide`: UTF-16), None for NULL.
pub(crate) fn name_arg(c: &Call<'_>, p: u64, wide: bool) -> Result<Option<String>, Fail> {
    if p == 0 {
        return Ok(None);
    }
    Ok(Some(if wide {
        String::from_utf16_lossy(&c.wstr(p)?)
    } else {
        String::from_utf8_lossy(&c.cstr(p)?).into_owned()
    }))
}

pub(crate) fn create(c: &mut Call<'_>, kind: Kind, name: Option<String>) -> Res {
    match c.p.objects.create(kind, name) {
        Some((h, existed)) => {
            set_error(c, if existed { ERROR_ALREADY_EXISTS } else { 0 })?;
            Ok(h)
        }
        None => {
            set_error(c, super::kernel32::ERROR_NOT_ENOUGH_MEMORY)?;
            Ok(0)
        }
    }
}

fn create_event(c: &mut Call<'_>, wide: bool) -> Res {
    let (manual, initial, name) = (c.arg(1)? as u32 != 0, c.arg(2)? as u32 != 0, c.arg(3)?);
    let name = name_arg(c, name, wide)?;
    create(c, Kind::Event { manual, set: initial }, name)
}

pub(crate) fn create_event_a(c: &mut Call<'_>) -> Res {
    create_event(c, false)
}

pub(crate) fn create_event_w(c: &mut Call<'_>) -> Res {
    create_event(c, true)
}

/// CreateEventEx(sa, name, flags, access): CREATE_EVENT_MANUAL_RESET 1,
/// CREATE_EVENT_INITIAL_SET 2.
fn create_event_ex(c: &mut Call<'_>, wide: bool) -> Res {
    let (name, flags) = (c.arg(1)?, c.arg(2)? as u32);
    let name = name_arg(c, name, wide)?;
    create(c, Kind::Event { manual: flags & 1 != 0, set: flags & 2 != 0 }, name)
}

pub(crate) fn create_event_ex_a(c: &mut Call<'_>) -> Res {
    create_event_ex(c, false)
}

pub(crate) fn create_event_ex_w(c: &mut Call<'_>) -> Res {
    create_event_ex(c, true)
}

fn create_mutex(c: &mut Call<'_>, wide: bool) -> Res {
    let (owned, name) = (c.arg(1)? as u32 != 0, c.arg(2)?);
    let name = name_arg(c, name, wide)?;
    let owner = if owned { me(c)? } else { 0 };
    create(c, Kind::Mutex { owner, count: u32::from(owned), abandoned: false }, name)
}

pub(crate) fn create_mutex_a(c: &mut Call<'_>) -> Res {
    create_mutex(c, false)
}

pub(crate) fn create_mutex_w(c: &mut Call<'_>) -> Res {
    create_mutex(c, true)
}

fn create_semaphore(c: &mut Call<'_>, wide: bool) -> Res {
    let (initial, max, name) = (c.arg(1)? as u32 as i32, c.arg(2)? as u32 as i32, c.arg(3)?);
    if max <= 0 || initial < 0 || initial > max {
        set_error(c, ERROR_INVALID_PARAMETER)?;
        return Ok(0);
    }
    let name = name_arg(c, name, wide)?;
    create(c, Kind::Semaphore { count: initial as u32, max: max as u32 }, name)
}

pub(crate) fn create_semaphore_a(c: &mut Call<'_>) -> Res {
    create_semaphore(c, false)
}

pub(crate) fn create_semaphore_w(c: &mut Call<'_>) -> Res {
    create_semaphore(c, true)
}

/// Run `f` on the object `h` names; ERROR_INVALID_HANDLE and FALSE when it
/// names none or `f` says the kind is wrong (Err(error)).
fn on_object(c: &mut Call<'_>, h: u64, f: impl FnOnce(&mut Kind) -> Result<u64, u32>) -> Res {
    let cur = super::thread::current_obj(c);
    match c.p.objects.with(h, cur, f) {
        Some(Ok(v)) => Ok(v),
        Some(Err(e)) => {
            set_error(c, e)?;
            Ok(0)
        }
        None => {
            set_error(c, ERROR_INVALID_HANDLE)?;
            Ok(0)
        }
    }
}

pub(crate) fn set_event(c: &mut Call<'_>) -> Res {
    let h = c.arg(0)?;
    on_object(c, h, |k| match k {
        Kind::Event { set, .. } => {
            *set = true;
            Ok(1)
        }
        _ => Err(ERROR_INVALID_HANDLE),
    })
}

pub(crate) fn reset_event(c: &mut Call<'_>) -> Res {
    let h = c.arg(0)?;
    on_object(c, h, |k| match k {
        Kind::Event { set, .. } => {
            *set = false;
            Ok(1)
        }
        _ => Err(ERROR_INVALID_HANDLE),
    })
}

pub(crate) fn release_mutex(c: &mut Call<'_>) -> Res {
    let h = c.arg(0)?;
    let tid = me(c)?;
    on_object(c, h, |k| match k {
        Kind::Mutex { owner, count, .. } if *owner == tid && *count > 0 => {
            *count -= 1;
            if *count == 0 {
                *owner = 0;
            }
            Ok(1)
        }
        Kind::Mutex { .. } => Err(ERROR_NOT_OWNER),
        _ => Err(ERROR_INVALID_HANDLE),
    })
}

pub(crate) fn release_semaphore(c: &mut Call<'_>) -> Res {
    let (h, n, prev) = (c.arg(0)?, c.arg(1)? as u32 as i32, c.arg(2)?);
    if n <= 0 {
        set_error(c, ERROR_INVALID_PARAMETER)?;
        return Ok(0);
    }
    let mut was = 0;
    let r = on_object(c, h, |k| match k {
        Kind::Semaphore { count, max } => {
            if u64::from(*count) + n as u64 > u64::from(*max) {
                return Err(ERROR_TOO_MANY_POSTS);
            }
            was = *count;
            *count += n as u32;
            Ok(1)
        }
        _ => Err(ERROR_INVALID_HANDLE),
    })?;
    if r == 1 && prev != 0 {
        c.put_u32(prev, was)?;
    }
    Ok(r)
}

pub(crate) fn wait_result(c: &Call<'_>, w: Waited) -> Res {
    Ok(match w {
        Waited::Signaled { i, abandoned: false } => WAIT_OBJECT_0 + i as u64,
        Waited::Signaled { i, abandoned: true } => WAIT_ABANDONED_0 + i as u64,
        Waited::Timeout => WAIT_TIMEOUT,
        Waited::BadHandle => {
            set_error(c, ERROR_INVALID_HANDLE)?;
            WAIT_FAILED
        }
    })
}

pub(crate) fn wait_for_single_object(c: &mut Call<'_>) -> Res {
    let (h, ms) = (c.arg(0)?, c.arg(1)? as u32);
    let (tid, cur) = (me(c)?, super::thread::current_obj(c));
    let w = c.p.objects.wait(&[h], false, timeout_of(ms), tid, cur);
    wait_result(c, w)
}

pub(crate) fn wait_for_multiple_objects(c: &mut Call<'_>) -> Res {
    let (n, list, all, ms) = (c.arg(0)? as u32 as u64, c.arg(1)?, c.arg(2)? as u32 != 0, c.arg(3)? as u32);
    if n == 0 || n > MAXIMUM_WAIT_OBJECTS {
        set_error(c, ERROR_INVALID_PARAMETER)?;
        return Ok(WAIT_FAILED);
    }
    let mut handles = Vec::with_capacity(n as usize);
    for i in 0..n {
        handles.push(c.u64_at(list + 8 * i)?);
    }
    let (tid, cur) = (me(c)?, super::thread::current_obj(c));
    let w = c.p.objects.wait(&handles, all, timeout_of(ms), tid, cur);
    wait_result(c, w)
}

/// DuplicateHandle(src process, src, dst process, *dst, access, inherit,
/// options): object handles (and the current-thread pseudo handle) get a
/// second handle; file handles a duplicated descriptor.
pub(crate) fn duplicate_handle(c: &mut Call<'_>) -> Res {
    let (src_proc, h, dst_proc, out, options) = (c.arg(0)?, c.arg(1)?, c.arg(2)?, c.arg(3)?, c.arg(6)? as u32);
    if src_proc != CURRENT_PROCESS || dst_proc != CURRENT_PROCESS {
        set_error(c, ERROR_INVALID_HANDLE)?;
        return Ok(0);
    }
    let cur = super::thread::current_obj(c);
    let new = if let Some(fd) = super::kernel32::handle_fd(h) {
        // SAFETY: dup of a descriptor the guest's handle names; a bad one fails.
        let d = unsafe { libc::dup(fd) };
        (d >= 0).then(|| super::kernel32::fd_handle(d))
    } else if h == CURRENT_PROCESS {
        Some(CURRENT_PROCESS)
    } else {
        c.p.objects.duplicate(h, cur)
    };
    let Some(new) = new else {
        set_error(c, ERROR_INVALID_HANDLE)?;
        return Ok(0);
    };
    if out != 0 {
        c.put_u64(out, new)?;
    }
    // DUPLICATE_CLOSE_SOURCE
    if options & 1 != 0 {
        close(c, h);
    }
    Ok(1)
}

/// CloseHandle's part for object handles: Some(result) when `h` is one.
pub(crate) fn close(c: &Call<'_>, h: u64) -> Option<u64> {
    c.p.objects.close(h).map(|()| 1)
}

pub(crate) fn get_handle_information(c: &mut Call<'_>) -> Res {
    let (h, flags) = (c.arg(0)?, c.arg(1)?);
    let valid = c.p.objects.is_handle(h) || super::kernel32::handle_fd(h).is_some() || h == CURRENT_PROCESS;
    if !valid {
        set_error(c, ERROR_INVALID_HANDLE)?;
        return Ok(0);
    }
    if flags != 0 {
        c.put_u32(flags, 0)?;
    }
    Ok(1)
}

// ----- guest-code fast paths -----

/// Guest code for the uncontended paths of the hottest functions: an
/// import of one of these binds here instead of to its stub, and only the
/// contended (or unusual) case falls through to the stub, i.e. to the
/// host handler, which is the whole implementation on its own. Under KVM,
/// where each host call is a VM exit, this keeps a lock taken and released
/// without contention inside the guest. The code uses the same words as
/// the handlers (CRITICAL_SECTION LockCount/RecursionCount/OwningThread,
/// the SRW word, the TEB's TLS slots) and reads the thread id and writes
/// LastError through GS (the TEB). Each entry: the export, its code, and
/// whether the code ends by jumping to the export's stub.
const FAST_PATHS: &[(&str, &[u8], bool)] = &[
    (
        "EnterCriticalSection",
        &[
            0x65, 0x8b, 0x04, 0x25, 0x48, 0x00, 0x00, 0x00, // mov eax, gs:[0x48] (thread id)
            0x48, 0x39, 0x41, 0x10, // cmp [rcx+0x10], rax (owner)
            0x74, 0x1f, // je recurse
            0x48, 0x89, 0xc2, // mov rdx, rax
            0xb8, 0xff, 0xff, 0xff, 0xff, // mov eax, -1 (free)
            0x45, 0x31, 0xc0, // xor r8d, r8d (held)
            0xf0, 0x44, 0x0f, 0xb1, 0x41, 0x08, // lock cmpxchg [rcx+8], r8d
            0x75, 0x11, // jne slow
            0x48, 0x89, 0x51, 0x10, // mov [rcx+0x10], rdx
            0xc7, 0x41, 0x0c, 0x01, 0x00, 0x00, 0x00, // mov dword [rcx+0xc], 1
            0xc3, // ret
            0x83, 0x41, 0x0c, 0x01, // recurse: add dword [rcx+0xc], 1
            0xc3, // ret
        ],
        true,
    ),
    (
        "TryEnterCriticalSection",
        &[
            0x65, 0x8b, 0x04, 0x25, 0x48, 0x00, 0x00, 0x00, // mov eax, gs:[0x48]
            0x48, 0x39, 0x41, 0x10, // cmp [rcx+0x10], rax
            0x74, 0x24, // je recurse
            0x48, 0x89, 0xc2, // mov rdx, rax
            0xb8, 0xff, 0xff, 0xff, 0xff, // mov eax, -1
            0x45, 0x31, 0xc0, // xor r8d, r8d
            0xf0, 0x44, 0x0f, 0xb1, 0x41, 0x08, // lock cmpxchg [rcx+8], r8d
            0x75, 0x1b, // jne busy
            0x48, 0x89, 0x51, 0x10, // mov [rcx+0x10], rdx
            0xc7, 0x41, 0x0c, 0x01, 0x00, 0x00, 0x00, // mov dword [rcx+0xc], 1
            0xb8, 0x01, 0x00, 0x00, 0x00, // mov eax, 1
            0xc3, // ret
            0x83, 0x41, 0x0c, 0x01, // recurse: add dword [rcx+0xc], 1
            0xb8, 0x01, 0x00, 0x00, 0x00, // mov eax, 1
            0xc3, // ret
            0x31, 0xc0, // busy: xor eax, eax
            0xc3, // ret
        ],
        false,
    ),
    (
        "LeaveCriticalSection",
        &[
            0x65, 0x8b, 0x04, 0x25, 0x48, 0x00, 0x00, 0x00, // mov eax, gs:[0x48]
            0x48, 0x39, 0x41, 0x10, // cmp [rcx+0x10], rax
            0x75, 0x39, // jne slow (not the owner: the handler decides)
            0x83, 0x79, 0x0c, 0x01, // cmp dword [rcx+0xc], 1
            0x75, 0x23, // jne nested
            0x48, 0x89, 0xc2, // mov rdx, rax
            0x48, 0xc7, 0x41, 0x10, 0x00, 0x00, 0x00, 0x00, // mov qword [rcx+0x10], 0
            0xc7, 0x41, 0x0c, 0x00, 0x00, 0x00, 0x00, // mov dword [rcx+0xc], 0
            0x31, 0xc0, // xor eax, eax (held, no sleepers)
            0x41, 0xb8, 0xff, 0xff, 0xff, 0xff, // mov r8d, -1
            0xf0, 0x44, 0x0f, 0xb1, 0x41, 0x08, // lock cmpxchg [rcx+8], r8d
            0x75, 0x06, // jne sleepers
            0xc3, // ret
            0x83, 0x69, 0x0c, 0x01, // nested: sub dword [rcx+0xc], 1
            0xc3, // ret
            0x48, 0x89, 0x51, 0x10, // sleepers: mov [rcx+0x10], rdx (still ours)
            0xc7, 0x41, 0x0c, 0x01, 0x00, 0x00, 0x00, // mov dword [rcx+0xc], 1
        ],
        true,
    ),
    (
        "AcquireSRWLockExclusive",
        &[
            0x31, 0xc0, // xor eax, eax
            0xba, 0x00, 0x00, 0x00, 0x80, // mov edx, WRITER
            0xf0, 0x0f, 0xb1, 0x11, // lock cmpxchg [rcx], edx
            0x75, 0x01, // jne slow
            0xc3, // ret
        ],
        true,
    ),
    (
        "ReleaseSRWLockExclusive",
        &[
            0xb8, 0x00, 0x00, 0x00, 0x80, // mov eax, WRITER
            0x31, 0xd2, // xor edx, edx
            0xf0, 0x0f, 0xb1, 0x11, // lock cmpxchg [rcx], edx
            0x75, 0x01, // jne slow (sleepers to wake)
            0xc3, // ret
        ],
        true,
    ),
    (
        "AcquireSRWLockShared",
        &[
            0x8b, 0x01, // mov eax, [rcx]
            0xa9, 0x00, 0x00, 0x00, 0x80, // test eax, WRITER
            0x75, 0x0a, // jnz slow
            0x8d, 0x50, 0x01, // lea edx, [rax+1]
            0xf0, 0x0f, 0xb1, 0x11, // lock cmpxchg [rcx], edx
            0x75, 0x01, // jne slow
            0xc3, // ret
        ],
        true,
    ),
    (
        "ReleaseSRWLockShared",
        &[
            0x8b, 0x01, // mov eax, [rcx]
            0xa9, 0x00, 0x00, 0x00, 0xc0, // test eax, WRITER | WAITERS
            0x75, 0x0a, // jnz slow
            0x8d, 0x50, 0xff, // lea edx, [rax-1]
            0xf0, 0x0f, 0xb1, 0x11, // lock cmpxchg [rcx], edx
            0x75, 0x01, // jne slow
            0xc3, // ret
        ],
        true,
    ),
    (
        "TlsGetValue",
        &[
            0x83, 0xf9, 0x40, // cmp ecx, 64
            0x73, 0x18, // jae slow (expansion slots, bad indices)
            0x65, 0xc7, 0x04, 0x25, 0x68, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // mov dword gs:[0x68], 0
            0x89, 0xc9, // mov ecx, ecx
            0x65, 0x48, 0x8b, 0x04, 0xcd, 0x80, 0x14, 0x00, 0x00, // mov rax, gs:[0x1480+rcx*8]
            0xc3, // ret
        ],
        true,
    ),
    (
        "TlsSetValue",
        &[
            0x83, 0xf9, 0x40, // cmp ecx, 64
            0x73, 0x11, // jae slow
            0x89, 0xc9, // mov ecx, ecx
            0x65, 0x48, 0x89, 0x14, 0xcd, 0x80, 0x14, 0x00, 0x00, // mov gs:[0x1480+rcx*8], rdx
            0xb8, 0x01, 0x00, 0x00, 0x00, // mov eax, 1
            0xc3, // ret
        ],
        true,
    ),
    (
        "GetCurrentThreadId",
        &[
            0x65, 0x8b, 0x04, 0x25, 0x48, 0x00, 0x00, 0x00, // mov eax, gs:[0x48]
            0xc3, // ret
        ],
        false,
    ),
];

/// The fast paths laid out from `at`: their code, and for each the stub
/// number of its export (whose imports bind to the fast path instead) and
/// its address. `stub_of(name)` is (stub number, address) of a kernel32
/// export.
pub(crate) fn fast_paths(at: u64, stub_of: impl Fn(&str) -> Option<(usize, u64)>) -> (Vec<u8>, Vec<(usize, u64)>) {
    let mut code = Vec::new();
    let mut bound = Vec::new();
    for (name, body, falls_through) in FAST_PATHS {
        let Some((n, stub)) = stub_of(name) else { continue };
        // 16-byte aligned entries.
        while !code.len().is_multiple_of(16) {
            code.push(0xcc);
        }
        let start = at + code.len() as u64;
        code.extend_from_slice(body);
        if *falls_through {
            let next = at + code.len() as u64 + 5;
            code.push(0xe9); // jmp rel32 to the stub
            code.extend_from_slice(&(stub.wrapping_sub(next) as u32).to_le_bytes());
        }
        bound.push((n, start));
    }
    (code, bound)
}

// ----- guest-memory locks -----

/// The guest's 4-byte word at `addr` as an atomic. It must be aligned and
/// writable guest memory (a fault otherwise, as the real DLL would take).
fn word<'a>(c: &Call<'_>, addr: u64) -> Result<&'a AtomicU32, Fail> {
    if !addr.is_multiple_of(4) || !c.p.mem.check(addr, 4, urun_cpu::Prot::RW) {
        return Err(Fail::Fault(addr));
    }
    // SAFETY: guest address == host address; the range is mapped writable
    // guest memory (checked above) and aligned. Guest memory is shared
    // with the guest's threads, which is what atomics are for. (A guest
    // thread unmapping it concurrently is a guest bug that would fault
    // here as in the real DLL.)
    Ok(unsafe { &*(addr as *const AtomicU32) })
}

fn word_i32<'a>(c: &Call<'_>, addr: u64) -> Result<&'a AtomicI32, Fail> {
    let w = word(c, addr)?;
    // SAFETY: AtomicI32 and AtomicU32 have the same layout.
    Ok(unsafe { &*(w as *const AtomicU32 as *const AtomicI32) })
}

fn word64<'a>(c: &Call<'_>, addr: u64) -> Result<&'a AtomicU64, Fail> {
    if !addr.is_multiple_of(8) || !c.p.mem.check(addr, 8, urun_cpu::Prot::RW) {
        return Err(Fail::Fault(addr));
    }
    // SAFETY: as in `word`, for an 8-byte aligned word.
    Ok(unsafe { &*(addr as *const AtomicU64) })
}

/// Sleep while `*w == val` (futex); false when `timeout` passed.
fn futex_wait(w: &AtomicU32, val: u32, deadline: Option<Instant>) -> bool {
    let ts = match deadline {
        None => None,
        Some(d) => {
            let left = d.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            Some(libc::timespec { tv_sec: left.as_secs() as libc::time_t, tv_nsec: left.subsec_nanos() as _ })
        }
    };
    let tsp = ts.as_ref().map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: a futex wait on an aligned word of mapped memory, with a
    // valid or null timeout.
    let r = unsafe { libc::syscall(libc::SYS_futex, w.as_ptr(), libc::FUTEX_WAIT, val, tsp, 0, 0) };
    !(r < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ETIMEDOUT))
}

fn futex_wake(w: &AtomicU32, n: i32) {
    // SAFETY: a futex wake names an address and touches no memory.
    unsafe { libc::syscall(libc::SYS_futex, w.as_ptr(), libc::FUTEX_WAKE, n, 0, 0, 0) };
}

fn deadline_of(ms: u32) -> Option<Instant> {
    timeout_of(ms).map(|d| Instant::now() + d)
}

/// CRITICAL_SECTION (x64): DebugInfo 0, LockCount 8, RecursionCount 0xc,
/// OwningThread 0x10 (thread id), LockSemaphore 0x18 (unused), SpinCount
/// 0x20. LockCount is the lock word and futex: -1 free, 0 held, 1 held
/// with (possibly) sleepers. A thread leaving does not hand the lock to a
/// sleeper: whoever comes first takes it (as Windows since Vista), so a
/// busy lock does not cost a context switch per Enter.
struct Cs<'a> {
    lock: &'a AtomicI32,
    recursion: &'a AtomicI32,
    owner: &'a AtomicU64,
}

const CS_FREE: i32 = -1;
const CS_HELD: i32 = 0;
const CS_SLEEPERS: i32 = 1;
/// How often a contended Enter looks again before sleeping.
const CS_SPIN: u32 = 100;

fn cs<'a>(c: &Call<'_>, addr: u64) -> Result<Cs<'a>, Fail> {
    Ok(Cs { lock: word_i32(c, addr + 8)?, recursion: word_i32(c, addr + 0xc)?, owner: word64(c, addr + 0x10)? })
}

fn init_cs(c: &Call<'_>, addr: u64, spin: u64) -> Res {
    let mut v = [0u8; 40];
    v[8..12].copy_from_slice(&CS_FREE.to_le_bytes());
    v[0x20..0x28].copy_from_slice(&(spin & 0xff_ffff).to_le_bytes());
    c.write(addr, &v)?;
    Ok(1)
}

pub(crate) fn init_critical_section(c: &mut Call<'_>) -> Res {
    init_cs(c, c.arg(0)?, 0)
}

/// InitializeCriticalSectionAndSpinCount(cs, spin) and
/// InitializeCriticalSectionEx(cs, spin, flags).
pub(crate) fn init_critical_section_spin(c: &mut Call<'_>) -> Res {
    init_cs(c, c.arg(0)?, c.arg(1)?)
}

pub(crate) fn enter_critical_section(c: &mut Call<'_>) -> Res {
    cs_enter(c, c.arg(0)?)?;
    Ok(0)
}

fn cs_enter(c: &Call<'_>, addr: u64) -> Result<(), Fail> {
    let tid = u64::from(me(c)?);
    let l = cs(c, addr)?;
    let taken = |l: &Cs<'_>| {
        l.owner.store(tid, Ordering::Relaxed);
        l.recursion.store(1, Ordering::Relaxed);
        Ok(())
    };
    {
        let _x = exclusive();
        if l.owner.load(Ordering::Relaxed) == tid {
            l.recursion.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        if l.lock.compare_exchange(CS_FREE, CS_HELD, Ordering::Acquire, Ordering::Relaxed).is_ok() {
            return taken(&l);
        }
    }
    let mut spins = 0;
    while spins < CS_SPIN && l.lock.load(Ordering::Relaxed) != CS_FREE {
        std::hint::spin_loop();
        spins += 1;
    }
    loop {
        {
            let _x = exclusive();
            if spins != u32::MAX {
                spins = u32::MAX;
                if l.lock.compare_exchange(CS_FREE, CS_HELD, Ordering::Acquire, Ordering::Relaxed).is_ok() {
                    return taken(&l);
                }
            }
            // Mark it as having sleepers; sleep until it was free when marked.
            if l.lock.swap(CS_SLEEPERS, Ordering::Acquire) == CS_FREE {
                return taken(&l);
            }
        }
        futex_wait(as_u32(l.lock), CS_SLEEPERS as u32, None);
    }
}

/// Under the JIT's `--check`, the guest's lock words change only while no
/// guest code runs (`urun_cpu::jit::check_exclusive`): guest code in
/// another thread reads and writes them too, and must see the same value
/// in both runs of a checked block. Held only around the change itself.
fn exclusive() -> Option<urun_cpu::jit::CheckExclusive> {
    urun_cpu::jit::check_exclusive()
}

fn as_u32(a: &AtomicI32) -> &AtomicU32 {
    // SAFETY: AtomicI32 and AtomicU32 have the same size and alignment.
    unsafe { &*(a as *const AtomicI32 as *const AtomicU32) }
}

pub(crate) fn try_enter_critical_section(c: &mut Call<'_>) -> Res {
    let addr = c.arg(0)?;
    let tid = u64::from(me(c)?);
    let l = cs(c, addr)?;
    let _x = exclusive();
    if l.owner.load(Ordering::Relaxed) == tid {
        l.recursion.fetch_add(1, Ordering::Relaxed);
        return Ok(1);
    }
    if l.lock.compare_exchange(CS_FREE, CS_HELD, Ordering::Acquire, Ordering::Relaxed).is_ok() {
        l.owner.store(tid, Ordering::Relaxed);
        l.recursion.store(1, Ordering::Relaxed);
        return Ok(1);
    }
    Ok(0)
}

pub(crate) fn leave_critical_section(c: &mut Call<'_>) -> Res {
    cs_leave(c, c.arg(0)?)?;
    Ok(0)
}

fn cs_leave(c: &Call<'_>, addr: u64) -> Result<(), Fail> {
    let tid = u64::from(me(c)?);
    let l = cs(c, addr)?;
    let _x = exclusive();
    if l.owner.load(Ordering::Relaxed) != tid {
        // Leaving a section this thread does not hold corrupts it on
        // Windows; here it is ignored.
        tracing::debug!(cs = format_args!("{addr:#x}"), "LeaveCriticalSection by a thread that does not own it");
        return Ok(());
    }
    if l.recursion.fetch_sub(1, Ordering::Relaxed) > 1 {
        return Ok(());
    }
    l.owner.store(0, Ordering::Relaxed);
    if l.lock.swap(CS_FREE, Ordering::Release) == CS_SLEEPERS {
        futex_wake(as_u32(l.lock), 1);
    }
    Ok(())
}

/// SRWLOCK: pointer-sized; urun uses its low word: WRITER, or the number
/// of readers, plus WAITERS when someone sleeps on it. Zero is unlocked
/// (SRWLOCK_INIT).
const WRITER: u32 = 0x8000_0000;
const WAITERS: u32 = 0x4000_0000;

fn srw_wait(w: &AtomicU32, cur: u32) {
    let marked = cur & WAITERS != 0 || {
        let _x = exclusive();
        w.compare_exchange(cur, cur | WAITERS, Ordering::Relaxed, Ordering::Relaxed).is_ok()
    };
    if marked {
        futex_wait(w, cur | WAITERS, None);
    }
}

fn srw_try_exclusive(w: &AtomicU32) -> Result<(), u32> {
    let _x = exclusive();
    let cur = w.load(Ordering::Relaxed);
    if cur & !WAITERS != 0 {
        return Err(cur);
    }
    w.compare_exchange(cur, WRITER | (cur & WAITERS), Ordering::Acquire, Ordering::Relaxed).map(|_| ())
}

fn srw_try_shared(w: &AtomicU32) -> Result<(), u32> {
    let _x = exclusive();
    let cur = w.load(Ordering::Relaxed);
    if cur & WRITER != 0 {
        return Err(cur);
    }
    w.compare_exchange(cur, cur + 1, Ordering::Acquire, Ordering::Relaxed).map(|_| ())
}

fn srw_lock(w: &AtomicU32, shared: bool) {
    loop {
        let r = if shared { srw_try_shared(w) } else { srw_try_exclusive(w) };
        match r {
            Ok(()) => return,
            Err(cur) if (shared && cur & WRITER != 0) || (!shared && cur & !WAITERS != 0) => srw_wait(w, cur),
            Err(_) => {}
        }
    }
}

fn srw_unlock(w: &AtomicU32, shared: bool) {
    let _x = exclusive();
    if shared {
        let prev = w.fetch_sub(1, Ordering::Release);
        if prev & !WAITERS == 1
            && prev & WAITERS != 0
            && w.compare_exchange(WAITERS, 0, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            futex_wake(w, i32::MAX);
        }
    } else if w.swap(0, Ordering::Release) & WAITERS != 0 {
        futex_wake(w, i32::MAX);
    }
}

pub(crate) fn init_srw_lock(c: &mut Call<'_>) -> Res {
    let a = c.arg(0)?;
    c.put_u64(a, 0)?;
    Ok(0)
}

fn srw(c: &mut Call<'_>, shared: bool, try_only: bool) -> Res {
    let w = word(c, c.arg(0)?)?;
    if try_only {
        let r = if shared { srw_try_shared(w) } else { srw_try_exclusive(w) };
        return Ok(u64::from(r.is_ok()));
    }
    srw_lock(w, shared);
    Ok(0)
}

pub(crate) fn acquire_srw_exclusive(c: &mut Call<'_>) -> Res {
    srw(c, false, false)
}

pub(crate) fn acquire_srw_shared(c: &mut Call<'_>) -> Res {
    srw(c, true, false)
}

pub(crate) fn try_acquire_srw_exclusive(c: &mut Call<'_>) -> Res {
    srw(c, false, true)
}

pub(crate) fn try_acquire_srw_shared(c: &mut Call<'_>) -> Res {
    srw(c, true, true)
}

pub(crate) fn release_srw_exclusive(c: &mut Call<'_>) -> Res {
    srw_unlock(word(c, c.arg(0)?)?, false);
    Ok(0)
}

pub(crate) fn release_srw_shared(c: &mut Call<'_>) -> Res {
    srw_unlock(word(c, c.arg(0)?)?, true);
    Ok(0)
}

/// CONDITION_VARIABLE: pointer-sized; urun uses its low word as a
/// sequence number that every wake bumps.
pub(crate) fn init_condition_variable(c: &mut Call<'_>) -> Res {
    let a = c.arg(0)?;
    c.put_u64(a, 0)?;
    Ok(0)
}

/// The lock a condition variable sleep releases and takes back.
enum Held {
    Cs(u64),
    Srw(u64, bool),
}

fn cv_sleep(c: &mut Call<'_>, held: Held, ms: u32) -> Res {
    let cv = word(c, c.arg(0)?)?;
    let seq = cv.load(Ordering::Acquire);
    match held {
        Held::Cs(a) => cs_leave(c, a)?,
        Held::Srw(a, shared) => srw_unlock(word(c, a)?, shared),
    }
    let woke = futex_wait(cv, seq, deadline_of(ms));
    match held {
        Held::Cs(a) => cs_enter(c, a)?,
        Held::Srw(a, shared) => srw_lock(word(c, a)?, shared),
    }
    if !woke {
        set_error(c, ERROR_TIMEOUT)?;
        return Ok(0);
    }
    Ok(1)
}

pub(crate) fn sleep_condition_variable_cs(c: &mut Call<'_>) -> Res {
    let (cs, ms) = (c.arg(1)?, c.arg(2)? as u32);
    cv_sleep(c, Held::Cs(cs), ms)
}

pub(crate) fn sleep_condition_variable_srw(c: &mut Call<'_>) -> Res {
    // CONDITION_VARIABLE_LOCKMODE_SHARED = 1
    let (l, ms, flags) = (c.arg(1)?, c.arg(2)? as u32, c.arg(3)? as u32);
    cv_sleep(c, Held::Srw(l, flags & 1 != 0), ms)
}

pub(crate) fn wake_condition_variable(c: &mut Call<'_>) -> Res {
    let cv = word(c, c.arg(0)?)?;
    let _x = exclusive();
    cv.fetch_add(1, Ordering::Release);
    futex_wake(cv, 1);
    Ok(0)
}

pub(crate) fn wake_all_condition_variable(c: &mut Call<'_>) -> Res {
    let cv = word(c, c.arg(0)?)?;
    let _x = exclusive();
    cv.fetch_add(1, Ordering::Release);
    futex_wake(cv, i32::MAX);
    Ok(0)
}

/// INIT_ONCE: pointer-sized: 0 fresh, 1 being initialised, or done: 2
/// with the context (its low two bits clear) above.
const ONCE_BUSY: u64 = 1;
const ONCE_DONE: u64 = 2;

fn once_wait(c: &Call<'_>, addr: u64) -> Result<(), Fail> {
    futex_wait(word(c, addr)?, ONCE_BUSY as u32, None);
    Ok(())
}

fn once_finish(c: &Call<'_>, addr: u64, value: u64) -> Result<(), Fail> {
    let once = word64(c, addr)?;
    let _x = exclusive();
    once.store(value, Ordering::Release);
    futex_wake(word(c, addr)?, i32::MAX);
    Ok(())
}

/// InitOnceExecuteOnce(once, fn, param, *context).
pub(crate) fn init_once_execute_once(c: &mut Call<'_>) -> Res {
    let (addr, f, param, ctx) = (c.arg(0)?, c.arg(1)?, c.arg(2)?, c.arg(3)?);
    let once = word64(c, addr)?;
    loop {
        let r = {
            let _x = exclusive();
            once.compare_exchange(0, ONCE_BUSY, Ordering::Acquire, Ordering::Acquire)
        };
        match r {
            Ok(_) => break,
            Err(v) if v & 3 == ONCE_DONE => {
                if ctx != 0 {
                    c.put_u64(ctx, v & !3)?;
                }
                return Ok(1);
            }
            Err(_) => once_wait(c, addr)?,
        }
    }
    // This thread runs the function; `ctx` receives its context.
    let ok = c.upcall(f, &[addr, param, ctx])? as u32 != 0;
    let value = if ctx != 0 && ok { c.u64_at(ctx)? & !3 } else { 0 };
    once_finish(c, addr, if ok { ONCE_DONE | value } else { 0 })?;
    Ok(u64::from(ok))
}

/// InitOnceBeginInitialize(once, flags, *pending, *context):
/// INIT_ONCE_CHECK_ONLY 1, INIT_ONCE_ASYNC 2 (treated as synchronous).
pub(crate) fn init_once_begin_initialize(c: &mut Call<'_>) -> Res {
    let (addr, flags, pending, ctx) = (c.arg(0)?, c.arg(1)? as u32, c.arg(2)?, c.arg(3)?);
    let once = word64(c, addr)?;
    loop {
        let v = once.load(Ordering::Acquire);
        if v & 3 == ONCE_DONE {
            c.put_u32(pending, 0)?;
            if ctx != 0 {
                c.put_u64(ctx, v & !3)?;
            }
            return Ok(1);
        }
        if flags & 1 != 0 {
            // Not initialised yet: STATUS_UNSUCCESSFUL, as ERROR_GEN_FAILURE.
            set_error(c, 31)?;
            return Ok(0);
        }
        if v == 0 {
            let won = {
                let _x = exclusive();
                once.compare_exchange(0, ONCE_BUSY, Ordering::Acquire, Ordering::Acquire).is_ok()
            };
            if won {
                c.put_u32(pending, 1)?;
                return Ok(1);
            }
            continue;
        }
        once_wait(c, addr)?;
    }
}

/// InitOnceComplete(once, flags, context): INIT_ONCE_INIT_FAILED 4.
pub(crate) fn init_once_complete(c: &mut Call<'_>) -> Res {
    let (addr, flags, ctx) = (c.arg(0)?, c.arg(1)? as u32, c.arg(2)?);
    if word64(c, addr)?.load(Ordering::Acquire) != ONCE_BUSY {
        set_error(c, ERROR_INVALID_PARAMETER)?;
        return Ok(0);
    }
    once_finish(c, addr, if flags & 4 != 0 { 0 } else { ONCE_DONE | (ctx & !3) })?;
    Ok(1)
}

/// WaitOnAddress(addr, compare, size, ms): sleeps while the `size` bytes
/// at `addr` equal those at `compare` (a futex on the aligned word that
/// holds them; waking early is allowed, callers re-check).
pub(crate) fn wait_on_address(c: &mut Call<'_>) -> Res {
    let (addr, cmp, size, ms) = (c.arg(0)?, c.arg(1)?, c.arg(2)?, c.arg(3)? as u32);
    if !matches!(size, 1 | 2 | 4 | 8) || !addr.is_multiple_of(size) {
        set_error(c, ERROR_INVALID_PARAMETER)?;
        return Ok(0);
    }
    let want = c.read(cmp, size as usize)?;
    let w = word(c, addr & !3)?;
    let seen = w.load(Ordering::Acquire);
    let now = c.read(addr, size as usize)?;
    if now != want {
        return Ok(1);
    }
    if !futex_wait(w, seen, deadline_of(ms)) {
        set_error(c, ERROR_TIMEOUT)?;
        return Ok(0);
    }
    Ok(1)
}

/// WakeByAddressSingle/All: every waiter on the word is woken (a waiter
/// on another byte of the same word may share it; they re-check).
pub(crate) fn wake_by_address(c: &mut Call<'_>) -> Res {
    let addr = c.arg(0)?;
    let w = word(c, addr & !3)?;
    futex_wake(w, i32::MAX);
    Ok(0)
}

/// SLIST_HEADER (x64, 16 bytes): Depth (16 bits) and Sequence (48) in the
/// first quadword, the first entry's address in the second. The list
/// operations are atomic with respect to each other through one lock.
static SLIST: Mutex<()> = Mutex::new(());

pub(crate) fn initialize_slist_head(c: &mut Call<'_>) -> Res {
    let h = c.arg(0)?;
    c.write(h, &[0u8; 16])?;
    Ok(0)
}

fn slist_push(c: &Call<'_>, h: u64, first: u64, last: u64, n: u64) -> Res {
    let _g = lock(&SLIST);
    let (hdr, old) = (c.u64_at(h)?, c.u64_at(h + 8)? & !0xf);
    c.put_u64(last, old)?;
    let depth = (hdr & 0xffff) + n;
    let seq = ((hdr >> 16) + 1) & 0xffff_ffff_ffff;
    c.put_u64(h, (depth & 0xffff) | (seq << 16))?;
    c.put_u64(h + 8, first)?;
    Ok(old)
}

pub(crate) fn interlocked_push_entry_slist(c: &mut Call<'_>) -> Res {
    let (h, e) = (c.arg(0)?, c.arg(1)?);
    slist_push(c, h, e, e, 1)
}

/// InterlockedPushListSListEx(head, first, last, count).
pub(crate) fn interlocked_push_list_slist(c: &mut Call<'_>) -> Res {
    let (h, first, last, n) = (c.arg(0)?, c.arg(1)?, c.arg(2)?, c.arg(3)? as u32);
    slist_push(c, h, first, last, u64::from(n))
}

pub(crate) fn interlocked_pop_entry_slist(c: &mut Call<'_>) -> Res {
    let h = c.arg(0)?;
    let _g = lock(&SLIST);
    let (hdr, first) = (c.u64_at(h)?, c.u64_at(h + 8)? & !0xf);
    if first == 0 {
        return Ok(0);
    }
    let next = c.u64_at(first)?;
    let depth = (hdr & 0xffff).saturating_sub(1);
    let seq = ((hdr >> 16) + 1) & 0xffff_ffff_ffff;
    c.put_u64(h, depth | (seq << 16))?;
    c.put_u64(h + 8, next)?;
    Ok(first)
}

pub(crate) fn interlocked_flush_slist(c: &mut Call<'_>) -> Res {
    let h = c.arg(0)?;
    let _g = lock(&SLIST);
    let (hdr, first) = (c.u64_at(h)?, c.u64_at(h + 8)? & !0xf);
    c.put_u64(h, hdr & !0xffff)?;
    c.put_u64(h + 8, 0)?;
    Ok(first)
}

pub(crate) fn query_depth_slist(c: &mut Call<'_>) -> Res {
    let h = c.arg(0)?;
    Ok(c.u64_at(h)? & 0xffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_take_what_they_wait_for() {
        let o = Objects::default();
        let (auto, _) = o.create(Kind::Event { manual: false, set: true }, None).unwrap();
        let (manual, _) = o.create(Kind::Event { manual: true, set: false }, None).unwrap();
        let (sem, _) = o.create(Kind::Semaphore { count: 1, max: 2 }, None).unwrap();
        let zero = Some(Duration::ZERO);
        assert_eq!(o.wait(&[auto], false, zero, 1, None), Waited::Signaled { i: 0, abandoned: false });
        assert_eq!(o.wait(&[auto], false, zero, 1, None), Waited::Timeout, "auto-reset");
        assert_eq!(o.wait(&[manual, sem], false, zero, 1, None), Waited::Signaled { i: 1, abandoned: false });
        assert_eq!(o.wait(&[manual, sem], true, zero, 1, None), Waited::Timeout);
        o.with(manual, None, |k| *k = Kind::Event { manual: true, set: true });
        assert_eq!(o.wait(&[manual], false, zero, 1, None), Waited::Signaled { i: 0, abandoned: false });
        assert_eq!(o.wait(&[manual], false, zero, 1, None), Waited::Signaled { i: 0, abandoned: false }, "manual");
        assert_eq!(o.wait(&[0x1234], false, zero, 1, None), Waited::BadHandle);
        assert!(o.close(auto).is_some());
        assert_eq!(o.wait(&[auto], false, zero, 1, None), Waited::BadHandle, "closed");
    }

    #[test]
    fn mutexes_are_owned_recursive_and_abandoned() {
        let o = Objects::default();
        let (m, _) = o.create(Kind::Mutex { owner: 0, count: 0, abandoned: false }, None).unwrap();
        let zero = Some(Duration::ZERO);
        assert_eq!(o.wait(&[m], false, zero, 7, None), Waited::Signaled { i: 0, abandoned: false });
        assert_eq!(o.wait(&[m], false, zero, 7, None), Waited::Signaled { i: 0, abandoned: false });
        assert_eq!(o.wait(&[m], false, zero, 8, None), Waited::Timeout);
        let t = o.new_thread(0);
        o.thread_ended(t, 7, 0);
        assert_eq!(o.wait(&[m], false, zero, 8, None), Waited::Signaled { i: 0, abandoned: true });
    }

    #[test]
    fn named_objects_are_shared() {
        let o = Objects::default();
        let (a, existed) = o.create(Kind::Event { manual: true, set: false }, Some("x".into())).unwrap();
        assert!(!existed);
        let (b, existed) = o.create(Kind::Event { manual: true, set: false }, Some("x".into())).unwrap();
        assert!(existed && a != b);
        o.with(a, None, |k| *k = Kind::Event { manual: true, set: true });
        assert_eq!(o.wait(&[b], false, Some(Duration::ZERO), 1, None), Waited::Signaled { i: 0, abandoned: false });
    }

    /// Every fast path decodes to whole instructions, and those that fall
    /// through end in a jump to their stub.
    #[test]
    fn fast_paths_decode_and_reach_their_stubs() {
        let at = 0x7ff0_0001_0000;
        let stub = |name: &str| Some((name.len(), 0x7ff0_0000_0000 + 16 * name.len() as u64));
        let (code, bound) = fast_paths(at, stub);
        assert_eq!(bound.len(), FAST_PATHS.len());
        for (i, (name, _, falls)) in FAST_PATHS.iter().enumerate() {
            let start = (bound[i].1 - at) as usize;
            let end = bound.get(i + 1).map_or(code.len(), |b| (b.1 - at) as usize);
            let mut d = iced_x86::Decoder::with_ip(64, &code[start..end], bound[i].1, iced_x86::DecoderOptions::NONE);
            let mut last = iced_x86::Instruction::default();
            for ins in &mut d {
                if ins.code() == iced_x86::Code::Int3 {
                    break;
                }
                assert!(!ins.is_invalid(), "{name}: invalid instruction at {:#x}", ins.ip());
                last = ins;
            }
            if *falls {
                assert_eq!(last.near_branch_target(), stub(name).unwrap().1, "{name}");
            } else {
                assert_eq!(last.code(), iced_x86::Code::Retnq, "{name}");
            }
        }
    }

    #[test]
    fn srw_words_count_readers_and_one_writer() {
        let w = AtomicU32::new(0);
        srw_lock(&w, true);
        srw_lock(&w, true);
        assert_eq!(w.load(Ordering::Relaxed), 2);
        assert!(srw_try_exclusive(&w).is_err());
        srw_unlock(&w, true);
        srw_unlock(&w, true);
        assert!(srw_try_exclusive(&w).is_ok());
        assert!(srw_try_shared(&w).is_err());
        srw_unlock(&w, false);
        assert_eq!(w.load(Ordering::Relaxed), 0);
    }
}
