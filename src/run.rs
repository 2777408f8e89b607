//! Load the program, pick the personality its format calls for and an
//! engine, run the guest, and leave as it left. Nothing here knows which
//! OS the guest expects beyond the choice of personality.

use std::convert::Infallible;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::sync::Arc;

use urun_cpu::interp::Interpreter;
use urun_cpu::jit::TlsSegment;
use urun_cpu::state::reg;
use urun_cpu::{AddressSpace, CpuState, Engine, EngineError};
use urun_loader::{LoadOptions, Program};
use urun_syscalls::linux::{self, Brk};
use urun_syscalls::{win32, Personality, Stop, ENGINE_FAILED};

use crate::engine::{self, EngineArg, EngineKind, Host, ProgramKind};
use crate::{gdb, guest_env, path, reexec_args, resolve_script, Cli, StartError};

/// Run the program `cli` names; returns only when it could not start.
pub(crate) fn start(cli: &Cli) -> Result<Infallible, StartError> {
    let argv0 = cli.argv0.clone().unwrap_or_else(|| cli.program.clone().into_os_string());
    let mut argv = vec![argv0.into_vec()];
    argv.extend(cli.args.iter().map(|a| a.as_bytes().to_vec()));
    let envp = guest_env(cli);
    let program = path::resolve(&cli.program, path::path_of(&envp))?;
    let (program, argv) = resolve_script(&program, argv)?;
    let shown = program.display().to_string();
    if let Err(e) = urun_cpu::cpuid::configure(cli.cpu.as_deref()) {
        eprintln!("urun: -cpu: {e}");
        std::process::exit(2)
    }

    // The VM and its first vCPU are made and tried (`urun_kvm::probe`) on
    // a thread of their own while this one loads the program, and the
    // memory loaded by then goes into the VM; joined before the engine is
    // made, which then finds them ready. Where KVM cannot be used, that is
    // one line then, not before loading.
    let mem = Arc::new(AddressSpace::new());
    let kvm_ready = (cli.engine == EngineArg::Kvm).then(|| KvmReady::start(&mem));
    // What `auto` chooses from (and what execve'd programs inherit).
    let host = Host::probe();
    if cli.engine == EngineArg::Jit {
        if let Err(e) = &host.jit {
            eprintln!("urun: --engine jit: {e}");
            std::process::exit(ENGINE_FAILED)
        }
    }
    if cli.check && !matches!(cli.engine, EngineArg::Jit | EngineArg::Auto) {
        eprintln!("urun: --check: only with the JIT engine (it compares the JIT with the interpreter)");
        std::process::exit(2)
    }
    let cpuid1 = urun_cpu::cpuid::guest_cpuid(1, 0);
    let opts = LoadOptions {
        argv,
        envp,
        execfn: program.as_os_str().as_bytes().to_vec(),
        hwcap: cpuid1[3] as u64,
        hwcap2: 0,
        sysroot: cli.sysroot.clone(),
    };
    let loaded = urun_loader::load_program(&program, &mem, &opts).map_err(|source| match source {
        urun_loader::LoadError::Io { .. } | urun_loader::LoadError::Permission { .. } => StartError::Named(source),
        source => StartError::Load { path: shown.clone(), source },
    })?;
    if cli.list_imports {
        match &loaded {
            Program::Pe(image) => {
                print!("{}", win32::import_report(image));
                std::process::exit(0)
            }
            Program::Elf(_) => {
                eprintln!("urun: --list-imports: {shown} is not a Windows program");
                std::process::exit(2)
            }
        }
    }
    let program_kind = match &loaded {
        Program::Elf(_) => ProgramKind::Linux,
        Program::Pe(_) => ProgramKind::Windows,
    };
    let kind = match cli.engine.explicit() {
        Some(kind) => kind,
        None => {
            let (kind, why) = engine::auto_engine(program_kind, &host);
            if let Some(why) = why {
                eprintln!("urun: using the interpreter, not the JIT: {why}");
            }
            kind
        }
    };
    tracing::debug!(engine = %kind.name(), requested = %cli.engine.name(), program = ?program_kind, "engine");
    if cli.check {
        if kind != EngineKind::Jit {
            eprintln!("urun: --check: only with the JIT engine, and --engine auto chose {} here", kind.name());
            std::process::exit(2)
        }
        urun_cpu::jit::set_check(true);
    }
    let debug = cli.gdb.is_some();
    // Where the guest keeps its thread data: FS for ELF (TLS), GS for PE
    // (the TEB). The JIT puts that segment's base in host GS.
    let seg = match program_kind {
        ProgramKind::Linux => TlsSegment::Fs,
        ProgramKind::Windows => TlsSegment::Gs,
    };
    let factory: urun_syscalls::EngineFactory =
        Box::new(move |mem| debugged(debug, new_engine(kind, seg, mem.clone()), mem));
    let mut auxv = Vec::new();
    let (personality, mut cpu): (Arc<dyn Personality>, CpuState) = match loaded {
        Program::Elf(loaded) => {
            tracing::debug!(
                entry = format_args!("{:#x}", loaded.entry),
                sp = format_args!("{:#x}", loaded.stack_pointer),
                "loaded"
            );
            let mut cpu = CpuState { rip: loaded.entry, ..CpuState::default() };
            cpu.gpr[reg::RSP] = loaded.stack_pointer;
            let brk = Brk::at(loaded.brk_start, loaded.brk_reserve_end);
            let mut process = linux::Process::new(mem.clone(), brk, loaded.exe_path.clone(), factory);
            process.strace = cli.strace;
            process.reexec = reexec_args(cli, engine::for_children(cli.engine, &host));
            process.sysroot = cli.sysroot.clone();
            process.cmdline = opts.argv.iter().flat_map(|a| a.iter().copied().chain(std::iter::once(0))).collect();
            process.auxv =
                loaded.auxv.iter().flat_map(|(k, v)| k.to_ne_bytes().into_iter().chain(v.to_ne_bytes())).collect();
            auxv.clone_from(&process.auxv);
            (Arc::new(process), cpu)
        }
        Program::Pe(image) => {
            let wopts = win32::Options { argv: opts.argv.clone(), envp: opts.envp.clone(), strace: cli.strace };
            let (process, cpu) = win32::Process::start(mem.clone(), image, wopts, factory)
                .map_err(|source| StartError::Win32 { path: shown.clone(), source })?;
            (process, cpu)
        }
    };
    if let Some(port) = cli.gdb {
        gdb::wait_for_gdb(port, mem.clone(), auxv)?;
    }
    if let Some(ready) = kvm_ready {
        ready.wait();
    }
    let mut engine = match debugged(debug, new_engine(kind, seg, mem.clone()), mem) {
        Ok(e) => e,
        Err(EngineError::Unavailable(e)) if kind == EngineKind::Kvm => kvm_unusable(&e),
        Err(e) => {
            eprintln!("urun: --engine {}: {e}", kind.name());
            std::process::exit(ENGINE_FAILED)
        }
    };
    let stop = personality.run_main(engine.as_mut(), &mut cpu);
    match stop {
        Stop::Exited(code) => gdb::report_end(Ok(code)),
        Stop::Signaled(sig) => gdb::report_end(Err(sig)),
        Stop::ThreadExited(_) => {}
    }
    urun_syscalls::finish(stop)
}

/// An engine of the chosen kind for one guest thread (the factory every
/// guest thread's engine comes from: it reports, the personality decides).
fn new_engine(kind: EngineKind, seg: TlsSegment, mem: Arc<AddressSpace>) -> Result<Box<dyn Engine>, EngineError> {
    Ok(match kind {
        EngineKind::Interp => Box::new(Interpreter::new(mem)),
        EngineKind::Kvm => Box::new(urun_kvm::KvmEngine::new(mem).map_err(EngineError::from)?),
        EngineKind::Jit => Box::new(urun_cpu::jit::JitEngine::with_segment(mem, seg).map_err(EngineError::from)?),
    })
}

/// Under `-g`, every engine is wrapped for the gdb stub.
fn debugged(
    debug: bool,
    engine: Result<Box<dyn Engine>, EngineError>,
    mem: Arc<AddressSpace>,
) -> Result<Box<dyn Engine>, EngineError> {
    match engine {
        Ok(e) if debug => Ok(Box::new(gdb::Debugged::new(e, mem))),
        other => other,
    }
}

/// `urun_kvm::probe_and_sync` under way on its own thread (or the probe
/// done, where no thread could be made): it leaves the VM and a vCPU ready
/// for the engine, with the guest memory mapped by then in the VM. The
/// thread is joined, not only heard from: the guest must not see it in
/// `/proc/self/task`.
enum KvmReady {
    Thread(std::thread::JoinHandle<Result<(), urun_kvm::KvmError>>),
    Done(Result<(), urun_kvm::KvmError>),
}

impl KvmReady {
    fn start(mem: &Arc<AddressSpace>) -> KvmReady {
        let m = mem.clone();
        match std::thread::Builder::new().name("urun-kvm-init".into()).spawn(move || urun_kvm::probe_and_sync(&m)) {
            Ok(handle) => KvmReady::Thread(handle),
            Err(_) => KvmReady::Done(urun_kvm::probe()),
        }
    }

    /// Wait for the VM; where KVM cannot be used, say why and leave.
    fn wait(self) {
        let result = match self {
            KvmReady::Thread(handle) => match handle.join() {
                Ok(r) => r,
                Err(_) => kvm_unusable(&"the thread making the VM panicked"),
            },
            KvmReady::Done(r) => r,
        };
        if let Err(e) = result {
            kvm_unusable(&e);
        }
    }
}

/// Say in one line why KVM cannot be used, and leave (before the guest
/// runs: only the main thread gets here).
fn kvm_unusable(e: &dyn std::fmt::Display) -> ! {
    eprintln!("urun: --engine kvm: no usable /dev/kvm ({e})");
    std::process::exit(ENGINE_FAILED)
}
