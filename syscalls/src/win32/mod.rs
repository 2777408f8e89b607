//! The Win32 personality: runs a PE32+ console program whose imports bind
//! to urun's own system DLLs.
//!
//! Each export of those DLLs is a 16-byte stub in guest memory,
//! `mov r10, rcx; mov eax, MARKER | n; syscall; ret`, so every engine's
//! SYSCALL exit reaches this personality, which reads the Windows x64
//! arguments, runs the function on the host (`table::TABLE` says which),
//! sets RAX, and lets the stub's own `ret` return. An import urun does not
//! implement binds to a stub that names it when called; a DLL urun does
//! not know fails the start with one line naming it.
//!
//! The process starts at a small guest-side trampoline that runs the
//! image's TLS callbacks (DLL_PROCESS_ATTACH), calls the entry point and
//! passes its result to ExitProcess. TEB and PEB live in guest memory, with
//! GS = TEB. Each guest thread runs on its own host thread (`thread.rs`).

mod abi;
mod byhandle;
mod console;
mod cxxeh;
mod extra;
mod fiber;
mod fileinfo;
mod files;
mod heap;
mod iocp;
mod kernel32;
mod known;
mod loadlib;
mod modules;
mod msvcrt;
mod ntfile;
mod peb;
mod seh;
mod setjmp;
mod stdio;
mod suspend;
mod sync;
mod sysdll;
mod sysinfo;
mod system;
mod table;
mod teb;
mod thread;
mod timers;
mod unwind;

use std::sync::{Arc, Mutex, MutexGuard};

use urun_cpu::state::reg;
use urun_cpu::{AddressSpace, CpuState, Engine, EngineError, Exit, Placement, Prot};
use urun_loader::{ImportName, LoadedPe};

pub use crate::Stop;
use crate::{EngineFactory, Personality};
use abi::{Call, Fail};
use table::{Dll, Imp, A, R, TABLE};

pub use modules::ModError;

/// The EAX value of a stub: this marker in the high half, the stub number
/// in the low half.
const MARKER: u32 = 0x5752_0000;
/// Stub size in bytes, and where its SYSCALL ends (what RIP is at the exit).
const STUB: u64 = 16;
const STUB_SYSCALL_END: u64 = 10;
/// Room for the trampolines (DLL attach calls, then the program's; new
/// threads'), the fast paths and their slow stubs.
const TRAMPOLINE_MAX: u64 = 0x6000;
/// Where urun's system area goes (a hint): high, as Windows puts its DLLs.
const SYSTEM_HINT: u64 = 0x7ff0_0000_0000;
/// Status when the program calls a function urun does not implement.
pub const UNIMPLEMENTED_STATUS: i32 = 126;

/// What the program is started with.
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub argv: Vec<Vec<u8>>,
    pub envp: Vec<Vec<u8>>,
    /// Print each API call on stderr.
    pub strace: bool,
}

/// Why a PE program could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Module(#[from] ModError),
    #[error("is a DLL, not a program")]
    IsDll,
    #[error("is a Windows GUI program (subsystem {0}); urun runs console programs")]
    NotConsole(u16),
    #[error("cannot set up the process: {0}")]
    Setup(String),
}

/// Objects in the data area that data exports point at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DataObj {
    /// `_iob`: stdin, stdout, stderr as msvcrt FILEs (48 bytes each).
    Iob,
    Fmode,
    Commode,
    Errno,
    /// `char *_acmdln`.
    Acmdln,
    /// `char **__initenv` / `_environ`.
    Initenv,
    /// A `struct lconv` for the C locale.
    Lconv,
    /// 256 bytes for `strerror`'s result.
    StrerrorBuf,
    /// `int __argc` and `char **__argv` (ucrt's `__p___argc/argv`).
    Argc,
    Argv,
    /// `wchar_t *_wcmdln` and `wchar_t **__winitenv`.
    Wcmdln,
    Winitenv,
}

const DATA_OBJS: [(DataObj, u64); 12] = [
    (DataObj::Iob, 3 * 48),
    (DataObj::Fmode, 8),
    (DataObj::Commode, 8),
    (DataObj::Errno, 8),
    (DataObj::Acmdln, 8),
    (DataObj::Initenv, 8),
    (DataObj::Lconv, 0x100),
    (DataObj::StrerrorBuf, 0x100),
    (DataObj::Argc, 8),
    (DataObj::Argv, 8),
    (DataObj::Wcmdln, 8),
    (DataObj::Winitenv, 8),
];

/// One stub: what it is named, the table entry behind it, and where it is
/// (in its DLL's image; the return trap in urun's own code).
struct Stub {
    export: Option<usize>,
    addr: u64,
}

/// One guest process as the Win32 personality sees it.
pub struct Process {
    pub mem: Arc<AddressSpace>,
    strace: bool,
    /// Stub n (EAX = MARKER | n): the return trap, then one per table
    /// export; the stubs of unimplemented imports follow (`mods`).
    stubs: Vec<Stub>,
    /// The upcall return address (stub 0, which keeps RAX in R10).
    return_trap: u64,
    data_base: u64,
    /// urun's code in guest memory (stubs, trampolines, the system DLL
    /// images): start and length. A frame walk ends there.
    sys_code: (u64, u64),
    /// The program, its DLLs and urun's.
    mods: Mutex<modules::Modules>,
    exe_base: u64,
    exe_name: String,
    heap: Mutex<heap::Heap>,
    streams: Mutex<stdio::Streams>,
    /// argc, argv (guest array), envp (guest array), the environment as
    /// (name, guest address of the value).
    argc: u64,
    argv: u64,
    envp: u64,
    env: Vec<(Vec<u8>, u64)>,
    cmdline_a: u64,
    onexit: Mutex<Vec<u64>>,
    /// Exception handling's process-wide state (handlers, function tables).
    seh: seh::Shared,
    /// Events, mutexes, semaphores, threads: what object handles name.
    objects: sync::Objects,
    threads: thread::Threads,
    new_engine: EngineFactory,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Process {
    /// Bind `image`'s imports, build the system area, TEB/PEB, stack,
    /// command line and environment; the returned `CpuState` starts the
    /// init trampoline.
    pub fn start(
        mem: Arc<AddressSpace>,
        image: LoadedPe,
        opts: Options,
        new_engine: EngineFactory,
    ) -> Result<(Arc<Process>, CpuState), StartError> {
        if image.is_dll {
            return Err(StartError::IsDll);
        }
        if image.subsystem != 3 {
            return Err(StartError::NotConsole(image.subsystem));
        }
        let setup = |what: &str, e: &dyn std::fmt::Display| StartError::Setup(format!("{what}: {e}"));

        // Stubs: the return trap, then every export urun implements (in
        // its DLL's image), then room for the imports it does not.
        let mut stubs = vec![Stub { export: None, addr: 0 }];
        stubs.extend((0..TABLE.len()).map(|i| Stub { export: Some(i), addr: 0 }));

        // The system area: urun's code (return trap, stubs of unimplemented
        // imports, init trampoline), the system DLL images, then data (RW).
        let own_len = urun_cpu::mem::page_ceil(STUB * (1 + modules::MISSING_CAP as u64) + TRAMPOLINE_MAX);
        let align = |v: u64| v.div_ceil(sysdll::IMAGE_ALIGN) * sysdll::IMAGE_ALIGN;
        let dlls = sysdll::all();
        let mut offsets = Vec::with_capacity(dlls.len());
        let mut code_len = align(own_len);
        for d in &dlls {
            offsets.push(code_len);
            code_len = align(code_len + sysdll::image_size(*d));
        }
        let data_len = 0x10000;
        let sys = mem
            .map(Placement::Hint(SYSTEM_HINT), code_len + data_len, Prot::RW, false, None)
            .map_err(|e| setup("the system area", &e))?;
        mem.set_backing(sys, urun_cpu::Backing::Named("[urun win32 system]".into()));
        let data_base = sys + code_len;
        stubs[0].addr = sys;
        let mut code = Vec::with_capacity(own_len as usize);
        code.extend_from_slice(&sysdll::stub_code(0));
        for k in 0..modules::MISSING_CAP {
            code.extend_from_slice(&sysdll::stub_code(stubs.len() + k));
        }
        let dirs = modules::search_dirs(image.path.parent().unwrap_or(std::path::Path::new("/")), &opts.envp);
        let mut mods = modules::Modules::new(sys + STUB, stubs.len(), dirs);
        for (d, off) in dlls.iter().zip(&offsets) {
            let base = sys + off;
            let built = sysdll::build(*d, base, &|obj| data_addr(data_base, obj));
            // The area is fresh zeroed memory: its all-zero pages (the empty
            // `.text` of a DLL urun knows by name only) need not be touched.
            for (k, page) in built.bytes.chunks(urun_cpu::PAGE_SIZE as usize).enumerate() {
                if page.iter().any(|&b| b != 0) {
                    poke(&mem, base + k as u64 * urun_cpu::PAGE_SIZE, page).map_err(|e| setup("a system DLL", &e))?;
                }
            }
            for &(i, addr) in &built.stubs {
                stubs[i + 1].addr = addr;
            }
            mods.add_system(*d, base, &built.bytes);
        }

        // The program, the DLLs it needs (loaded, bound, in attach order
        // in `new`), then the init trampoline that attaches them.
        let exe = mods.add_image(&mem, image.clone(), true);
        let mut new = Vec::new();
        mods.bind(&mem, exe, &mut new)?;
        let trampoline = sys + code.len() as u64;
        let exit_stub = table::find(Dll::Kernel32, "ExitProcess").map_or(sys, |i| stubs[i + 1].addr);
        let attach: Vec<loadlib::InitCalls> = new.iter().map(|&i| loadlib::init_calls(&mods, i)).collect();
        code.extend(loadlib::attach_code(&attach, exit_stub));
        let callbacks = image.tls.as_ref().map(|t| t.callbacks.clone()).unwrap_or_default();
        code.extend(teb::trampoline(image.base, &callbacks, image.entry, exit_stub));
        // New threads start in their own trampoline (thread.rs).
        let thread_entry = sys + code.len() as u64;
        let exit_thread = table::find(Dll::Kernel32, "ExitThread").map_or(sys, |i| stubs[i + 1].addr);
        code.extend(thread::trampoline(image.base, &callbacks, exit_thread));
        // The guest-code fast paths of the lock and TLS functions (sync.rs):
        // each export's slot in kernel32's image jumps to its fast path,
        // whose slow case falls into a stub of its own here.
        let fast_path_of = |name: &str| table::find(Dll::Kernel32, name).map(|i| (i + 1, 0));
        let (_, fast_stubs) = sync::fast_paths(0, fast_path_of);
        let mut slow = std::collections::HashMap::new();
        for (n, _) in &fast_stubs {
            slow.insert(*n, sys + code.len() as u64);
            code.extend_from_slice(&sysdll::stub_code(*n));
        }
        let slow_of = |name: &str| table::find(Dll::Kernel32, name).and_then(|i| Some((i + 1, *slow.get(&(i + 1))?)));
        let (fast_code, fast) = sync::fast_paths(sys + code.len() as u64, slow_of);
        code.extend(fast_code);
        if code.len() as u64 > own_len {
            return Err(StartError::Setup("too many DLLs to attach".into()));
        }
        poke(&mem, sys, &code).map_err(|e| setup("the stubs", &e))?;
        for (n, start) in fast {
            let (Some(&slow_stub), Some(slot)) = (slow.get(&n), stubs.get_mut(n)) else { continue };
            let mut jmp = [0xcc_u8; STUB as usize];
            jmp[0] = 0xe9; // jmp rel32
            jmp[1..5].copy_from_slice(&(start.wrapping_sub(slot.addr + 5) as u32).to_le_bytes());
            poke(&mem, slot.addr, &jmp).map_err(|e| setup("the fast paths", &e))?;
            slot.addr = slow_stub;
        }
        mem.protect(sys, code_len, Prot::RX).map_err(|e| setup("the stubs", &e))?;

        let exe_name = image.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let mut heap = heap::Heap::new(mem.clone());
        let mut cpu = CpuState::default();
        let mut alloc = |bytes: &[u8]| -> Result<u64, StartError> {
            let a = heap.alloc(bytes.len().max(1) as u64).ok_or_else(|| StartError::Setup("out of memory".into()))?;
            poke(&mem, a, bytes).map_err(|e| setup("the heap", &e))?;
            Ok(a)
        };
        // argv and the environment, as msvcrt's __getmainargs gives them.
        let mut argv_ptrs = Vec::new();
        for a in &opts.argv {
            argv_ptrs.push(alloc(&[a.as_slice(), b"\0"].concat())?);
        }
        argv_ptrs.push(0);
        let argv = alloc(&argv_ptrs.iter().flat_map(|p| p.to_le_bytes()).collect::<Vec<u8>>())?;
        let mut env = Vec::new();
        let mut env_ptrs = Vec::new();
        for kv in &opts.envp {
            let a = alloc(&[kv.as_slice(), b"\0"].concat())?;
            env_ptrs.push(a);
            let eq = kv.iter().position(|&c| c == b'=').unwrap_or(kv.len());
            env.push((kv[..eq].to_vec(), a + (eq as u64 + 1).min(kv.len() as u64)));
        }
        env_ptrs.push(0);
        let envp = alloc(&env_ptrs.iter().flat_map(|p| p.to_le_bytes()).collect::<Vec<u8>>())?;
        let cmdline = command_line(&opts.argv);
        let cmdline_a = alloc(&[cmdline.as_slice(), b"\0"].concat())?;

        let write_u64 = |obj: DataObj, v: u64| poke(&mem, data_addr(data_base, obj), &v.to_le_bytes());
        write_u64(DataObj::Acmdln, cmdline_a).map_err(|e| setup("_acmdln", &e))?;
        write_u64(DataObj::Initenv, envp).map_err(|e| setup("__initenv", &e))?;
        write_u64(DataObj::Argc, opts.argv.len() as u64).map_err(|e| setup("__argc", &e))?;
        write_u64(DataObj::Argv, argv).map_err(|e| setup("__argv", &e))?;
        stdio::init_iob(&mem, data_addr(data_base, DataObj::Iob)).map_err(|e| setup("_iob", &e))?;
        msvcrt::init_lconv(&mem, data_addr(data_base, DataObj::Lconv)).map_err(|e| setup("lconv", &e))?;

        // Stack, TEB, PEB, TLS.
        let reserve = image.stack_reserve.clamp(0x10_0000, 0x4000_0000);
        let stack = mem.map(Placement::Hint(0), reserve, Prot::RW, false, None).map_err(|e| setup("the stack", &e))?;
        mem.set_backing(stack, urun_cpu::Backing::Named("[stack]".into()));
        let top = stack + reserve;
        // A guard below the stack (no access), so that running off its end
        // is a stack overflow (seh.rs), not a write into the next mapping.
        mem.protect(stack, seh::STACK_GUARD, Prot::NONE).map_err(|e| setup("the stack guard", &e))?;
        let teb =
            teb::build(&mem, &mut heap, &image, stack + seh::STACK_GUARD, top).map_err(|e| setup("the TEB", &e))?;
        mods.setup_tls(&mem, &mut heap, teb, &new).map_err(|e| setup("DLL TLS", &e))?;
        let peb = guest_u64(&mem, teb + teb::TEB_PEB).unwrap_or(0);
        peb::update_ldr(&mem, &mut heap, &mut mods, peb).map_err(|e| setup("the loader lists", &e))?;
        let cwd = std::env::current_dir().map(|d| format!("{}/", d.display())).unwrap_or_else(|_| "/".into());
        let params = peb::Params {
            image_path: &image.path.to_string_lossy(),
            command_line: &String::from_utf8_lossy(&cmdline),
            envp: &opts.envp,
            cwd: &cwd,
            std: [kernel32::fd_handle(0), kernel32::fd_handle(1), kernel32::fd_handle(2)],
        };
        let params =
            peb::build_params(&mem, &mut heap, peb, &params).map_err(|e| setup("the process parameters", &e))?;
        let wcmdln = guest_u64(&mem, params + 0x78).unwrap_or(0);
        poke(&mem, data_addr(data_base, DataObj::Wcmdln), &wcmdln.to_le_bytes()).map_err(|e| setup("_wcmdln", &e))?;
        if let Err(e) = peb::map_kuser(&mem) {
            tracing::warn!(%e, "no KUSER_SHARED_DATA");
        }
        for &i in &new {
            mods.list[i].attached = true;
        }

        cpu.gs_base = teb;
        tracing::debug!(teb = format_args!("{teb:#x}"), base = format_args!("{:#x}", image.base), "win32 process");
        cpu.rip = trampoline;
        cpu.gpr[reg::RSP] = top - 8;
        // Windows starts threads with the x87 at double precision.
        cpu.x87.fcw = 0x027f;

        let p = Process {
            mem,
            strace: opts.strace,
            stubs,
            return_trap: sys,
            data_base,
            sys_code: (sys, code_len),
            mods: Mutex::new(mods),
            exe_base: image.base,
            exe_name,
            heap: Mutex::new(heap),
            streams: Mutex::new(stdio::Streams::new(data_addr(data_base, DataObj::Iob))),
            argc: opts.argv.len() as u64,
            argv,
            envp,
            env,
            cmdline_a,
            onexit: Mutex::new(Vec::new()),
            seh: seh::Shared::default(),
            objects: sync::Objects::default(),
            threads: thread::Threads::new(&image, thread_entry),
            new_engine,
        };
        p.seh.sync_images(&lock(&p.mods).unwind_images());
        let tid = guest_u64(&p.mem, teb + teb::TEB_TID).unwrap_or(0) as u32;
        thread::register_main(&p, teb, tid);
        Ok((Arc::new(p), cpu))
    }

    pub(crate) fn data(&self, obj: DataObj) -> u64 {
        data_addr(self.data_base, obj)
    }

    /// A guest address as `module+offset` for messages.
    fn describe(&self, addr: u64) -> String {
        let Ok(mods) = self.mods.try_lock() else { return format!("{addr:#x}") };
        match mods.containing(addr).map(|i| &mods.list[i]) {
            Some(m) => format!("{}+{:#x}", m.name, addr - m.base),
            None => format!("{addr:#x}"),
        }
    }
}

/// One line per import of `image` (`DLL!name implemented|missing|no such
/// DLL`), then `N of M imports implemented`.
pub fn import_report(image: &LoadedPe) -> String {
    let mut out = String::new();
    let mut have = 0;
    for imp in &image.imports {
        let state = match Dll::resolve(&imp.dll) {
            None => "no such DLL",
            Some(d) => match &imp.name {
                ImportName::Name(n) if table::find(d, n).is_some() => {
                    have += 1;
                    "implemented"
                }
                _ => "missing",
            },
        };
        out.push_str(&format!("{}!{} {state}\n", imp.dll, imp.name));
    }
    out.push_str(&format!("{have} of {} imports implemented\n", image.imports.len()));
    out
}

fn data_addr(base: u64, obj: DataObj) -> u64 {
    let mut at = base;
    for (o, size) in DATA_OBJS {
        if o == obj {
            return at;
        }
        at += (size + 15) & !15;
    }
    at
}

/// Write urun's own bytes into guest memory that urun mapped writable.
fn poke(mem: &AddressSpace, addr: u64, bytes: &[u8]) -> Result<(), String> {
    if crate::linux::guest::write_from(mem, addr, bytes) {
        Ok(())
    } else {
        Err(format!("cannot write {:#x}+{:#x}", addr, bytes.len()))
    }
}

/// The command line msvcrt's parser turns back into `argv`: each argument
/// quoted when it needs to be, with backslashes before quotes doubled.
pub(crate) fn command_line(argv: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, a) in argv.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        let plain = !a.is_empty() && !a.iter().any(|&c| c == b' ' || c == b'\t' || c == b'"');
        if plain {
            out.extend_from_slice(a);
            continue;
        }
        out.push(b'"');
        let mut slashes = 0;
        for &c in a {
            if c == b'\\' {
                slashes += 1;
            } else {
                if c == b'"' {
                    out.extend(std::iter::repeat_n(b'\\', slashes + 1));
                }
                slashes = 0;
            }
            out.push(c);
        }
        out.extend(std::iter::repeat_n(b'\\', slashes));
        out.push(b'"');
    }
    out
}

impl Personality for Process {
    fn run_main(self: Arc<Self>, engine: &mut dyn Engine, cpu: &mut CpuState) -> Stop {
        if let Err(e) = urun_cpu::hostfault::prepare_thread() {
            tracing::warn!(%e, "guest thread without host-fault recovery");
        }
        match run_loop(&self, engine, cpu, 0) {
            Ok(()) => self.exit(cpu.gpr[reg::RAX] as u32),
            // ExitThread of the first thread: the others go on.
            Err(Fail::Stop(Stop::ThreadExited(code))) => thread::ended(&self, cpu.gs_base, code as u32),
            Err(Fail::Stop(stop)) => stop,
            // A jump always lands in the thread's own loop; a bad pointer
            // is turned into a stop by `service`.
            Err(_) => self.exit(seh::STATUS_ACCESS_VIOLATION),
        }
    }
}

impl Process {
    /// The process ends with Windows exit code `code`: streams flushed,
    /// the host sees `code & 0xff` (as under Wine).
    pub(crate) fn exit(&self, code: u32) -> Stop {
        lock(&self.streams).flush_all();
        if self.strace {
            line(&format!("+++ exited with {} +++", code & 0xff));
        }
        Stop::Exited((code & 0xff) as i32)
    }
}

/// The engine failed under a running guest.
pub(crate) fn engine_failed(engine: &str, e: &EngineError) -> Stop {
    line(&format!("urun: --engine {engine}: {e}"));
    Stop::Exited(crate::ENGINE_FAILED)
}

/// One line on stderr, written whole.
fn line(s: &str) {
    use std::io::Write;
    let _ = std::io::stderr().write_all(format!("{s}\n").as_bytes());
}

/// Run guest code, servicing API calls, until the process ends (`Err`) or,
/// inside an upcall (`depth > 0`), until the guest returns to the trap.
/// A fault is dispatched as a Windows exception (`seh.rs`); a jump to a
/// new register state that lands in this loop's frames is taken here, any
/// other goes to the loop of an outer upcall.
fn run_loop(p: &Arc<Process>, engine: &mut dyn Engine, cpu: &mut CpuState, depth: u32) -> Result<(), Fail> {
    loop {
        suspend::before_guest(p, &*engine, cpu);
        let exit = engine.run(cpu).map_err(|e| Fail::Stop(engine_failed(engine.name(), &e)))?;
        suspend::after_guest(cpu, exit == Exit::Interrupted);
        let r = match exit {
            Exit::Syscall => match service(p, engine, cpu, depth) {
                Ok(true) if depth > 0 => return Ok(()),
                // The first thread's code returned past its start: as
                // ExitThread of the last thread.
                Ok(true) => return Err(Fail::Stop(p.exit(cpu.gpr[reg::RAX] as u32))),
                Ok(false) => Ok(()),
                Err(e) => Err(e),
            },
            Exit::Fault(f) => Err(seh::fault(&mut Call { p, cpu: &mut *cpu, engine: &mut *engine, depth }, &f)),
            Exit::Interrupted => Ok(()),
        };
        match r {
            Ok(()) => {}
            Err(Fail::Jump(state)) if depth == 0 || seh::lands_here(&state) => *cpu = *state,
            Err(e) => return Err(e),
        }
    }
}

/// Service one SYSCALL exit: an API stub. Ok(true) when it was the upcall
/// return trap.
fn service(p: &Arc<Process>, engine: &mut dyn Engine, cpu: &mut CpuState, depth: u32) -> Result<bool, Fail> {
    let eax = cpu.gpr[reg::RAX] as u32;
    let at = cpu.rip.wrapping_sub(STUB_SYSCALL_END);
    let n = (eax & 0xffff) as usize;
    let known = eax & 0xffff_0000 == MARKER
        && match p.stubs.get(n) {
            Some(s) => s.addr == at,
            None => lock(&p.mods).missing_at(n).is_some_and(|(_, a)| a == at),
        };
    if !known {
        line(&format!(
            "urun: {}: a direct Windows system call (eax={:#x}) at {}: not supported",
            p.exe_name,
            cpu.gpr[reg::RAX],
            p.describe(cpu.rip.wrapping_sub(2))
        ));
        return Err(Fail::Stop(p.exit(0xc000_001d)));
    }
    if n == 0 {
        return Ok(true);
    }
    let Some(e) = p.stubs.get(n).and_then(|s| s.export).map(|i| &TABLE[i]) else {
        let caller = guest_u64(&p.mem, cpu.gpr[reg::RSP]).unwrap_or(0);
        let (dll, name) = lock(&p.mods).missing_at(n).map(|(s, _)| s.clone()).unwrap_or_default();
        lock(&p.streams).flush_all();
        line(&format!("urun: unimplemented: {dll}!{name} (called from {})", p.describe(caller)));
        return Err(Fail::Stop(Stop::Exited(UNIMPLEMENTED_STATUS)));
    };
    let Imp::Host(handler) = e.imp else { return Ok(false) };
    let needs_fp = e.ret == R::F64;
    if needs_fp {
        engine.fetch_fp(cpu).map_err(|err| Fail::Stop(engine_failed(engine.name(), &err)))?;
    }
    let shown = if p.strace { Some(show_call(p, cpu, e)) } else { None };
    if let (Some(s), R::NoReturn) = (&shown, e.ret) {
        line(&format!("{s} = ?"));
    }
    let mut call = Call { p, cpu: &mut *cpu, engine: &mut *engine, depth };
    let r = handler(&mut call);
    let v = match r {
        Ok(v) => v,
        Err(Fail::Fault(addr)) => {
            lock(&p.streams).flush_all();
            line(&format!(
                "urun: {}!{} was given a bad pointer ({addr:#x}): unhandled access violation (0xc0000005)",
                e.dll.short(),
                e.name
            ));
            return Err(Fail::Stop(p.exit(seh::STATUS_ACCESS_VIOLATION)));
        }
        Err(e) => return Err(e),
    };
    match e.ret {
        R::F64 => cpu.xmm[0] = u128::from(v),
        R::Void => {}
        _ => cpu.gpr[reg::RAX] = v,
    }
    if let Some(s) = shown {
        line(&format!("{s} = {}", show_ret(e.ret, v)));
    }
    Ok(false)
}

pub(crate) fn guest_u64(mem: &AddressSpace, addr: u64) -> Option<u64> {
    crate::linux::guest::read::<u64>(mem, addr)
}

/// `dll!Name(args…)` for `--strace`.
fn show_call(p: &Process, cpu: &CpuState, e: &table::Export) -> String {
    let g = &cpu.gpr;
    let regs = [g[reg::R10], g[reg::RDX], g[reg::R8], g[reg::R9]];
    let mut parts = Vec::new();
    for (i, k) in e.args.iter().enumerate() {
        let v = if i < 4 { regs[i] } else { guest_u64(&p.mem, g[reg::RSP] + 8 + 8 * i as u64).unwrap_or(0) };
        parts.push(match k {
            A::I32 => format!("{}", v as i32),
            A::U32 => format!("{}", v as u32),
            A::U64 => format!("{v}"),
            A::Ptr | A::Handle => format!("{v:#x}"),
            A::StrA => show_str(abi::cstr(&p.mem, v).map(|s| String::from_utf8_lossy(&s).into_owned()), v),
            A::StrW => format!("L{}", show_str(wide(&p.mem, v), v)),
            A::Va => "...".into(),
        });
    }
    format!("{}!{}({})", e.dll.short(), e.name, parts.join(", "))
}

fn show_str(s: Option<String>, addr: u64) -> String {
    match s {
        Some(s) if addr != 0 => {
            let cut: String = s.chars().take(40).collect();
            format!("{:?}{}", cut, if cut.len() < s.len() { "..." } else { "" })
        }
        _ => format!("{addr:#x}"),
    }
}

fn wide(mem: &AddressSpace, addr: u64) -> Option<String> {
    let mut v = Vec::new();
    let mut a = addr;
    while v.len() < 256 {
        let mut b = [0u8; 2];
        if !crate::linux::guest::read_into(mem, a, &mut b) {
            return None;
        }
        let c = u16::from_le_bytes(b);
        if c == 0 {
            break;
        }
        v.push(c);
        a += 2;
    }
    Some(String::from_utf16_lossy(&v))
}

fn show_ret(r: R, v: u64) -> String {
    match r {
        R::Void | R::NoReturn => "void".into(),
        R::I32 | R::Bool => format!("{}", v as i32),
        R::U32 => format!("{}", v as u32),
        R::U64 => format!("{v}"),
        R::Ptr | R::Handle => format!("{v:#x}"),
        R::F64 => format!("{}", f64::from_bits(v)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines_round_trip_msvcrt_quoting() {
        let cases: &[(&[&str], &str)] = &[
            (&["prog", "a", "b c"], r#"prog a "b c""#),
            (&["prog", ""], r#"prog """#),
            (&["prog", r#"say "hi""#], r#"prog "say \"hi\"""#),
            (&["prog", r"dir\ x\"], r#"prog "dir\ x\\""#),
        ];
        for (argv, want) in cases {
            let v: Vec<Vec<u8>> = argv.iter().map(|a| a.as_bytes().to_vec()).collect();
            assert_eq!(String::from_utf8_lossy(&command_line(&v)), *want);
        }
    }

    #[test]
    fn data_objects_do_not_overlap() {
        let mut prev = 0;
        for (obj, size) in DATA_OBJS {
            let at = data_addr(0x1000, obj);
            assert!(at >= prev, "{obj:?}");
            prev = at + size;
        }
        assert!(prev < 0x1000 + 0x8000, "the data objects run into the module headers");
    }
}
