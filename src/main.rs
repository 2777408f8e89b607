//! `urun`: run an x86-64 Linux program in a user-mode emulator.
//!
//! The CLI is thin: parse options, load the program, pick an engine, hand
//! both to the personality's run loop, and leave as the guest left.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Parser, ValueEnum};
use urun_cpu::interp::Interpreter;
use urun_cpu::state::reg;
use urun_cpu::{AddressSpace, CpuState, Engine, EngineError};
use urun_loader::{Format, LoadOptions};
use urun_syscalls::linux::{self, Brk, Process, Stop};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum EngineKind {
    /// The interpreter: portable, precise, the reference.
    Interp,
    /// Native execution in a bare KVM virtual machine (needs /dev/kvm).
    Kvm,
    /// Experimental: guest code copied into a code cache and run natively
    /// (x86-64 hosts with FSGSBASE).
    Jit,
}

impl EngineKind {
    fn name(self) -> &'static str {
        match self {
            EngineKind::Interp => "interp",
            EngineKind::Kvm => "kvm",
            EngineKind::Jit => "jit",
        }
    }
}

/// Run an x86-64 Linux program in a user-mode emulator.
#[derive(Parser, Debug)]
#[command(name = "urun", version, about, long_about = None)]
struct Cli {
    /// CPU engine.
    #[arg(long, value_enum, default_value = "interp", env = "URUN_ENGINE")]
    engine: EngineKind,

    /// CPU model: x86-64, x86-64-v2, x86-64-v3 or host (default), then
    /// +FEATURE/-FEATURE modifiers, qemu-style (`-cpu` works too).
    #[arg(long = "cpu", value_name = "MODEL", env = "URUN_CPU")]
    cpu: Option<String>,

    /// Print each syscall on stderr, one per line.
    #[arg(long, env = "URUN_STRACE")]
    strace: bool,

    /// Set VAR=VALUE in the guest's environment (repeatable).
    #[arg(short = 'E', value_name = "VAR=VALUE", env = "URUN_SET_ENV", value_delimiter = ',')]
    set_env: Vec<String>,

    /// Remove VAR from the guest's environment (repeatable).
    #[arg(short = 'U', value_name = "VAR", env = "URUN_UNSET_ENV", value_delimiter = ',')]
    unset_env: Vec<String>,

    /// Look for the dynamic linker under this directory first (qemu's -L).
    #[arg(short = 'L', value_name = "SYSROOT", env = "URUN_SYSROOT")]
    sysroot: Option<PathBuf>,

    /// The guest's argv[0] (default: PROGRAM as given).
    #[arg(short = '0', value_name = "ARGV0", env = "URUN_ARGV0")]
    argv0: Option<OsString>,

    /// The program to run.
    #[arg(value_name = "PROGRAM")]
    program: PathBuf,

    /// Its arguments.
    #[arg(value_name = "ARGS", trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<OsString>,
}

/// What went wrong before the guest could run.
#[derive(Debug, thiserror::Error)]
enum StartError {
    #[error("{path}: {source}")]
    Load { path: String, source: urun_loader::LoadError },
    /// Errors whose message already names the file.
    #[error("{0}")]
    Named(urun_loader::LoadError),
    #[error("{0}: bad interpreter line")]
    BadScript(String),
}

impl StartError {
    fn exit_code(&self) -> i32 {
        match self {
            StartError::Load { source, .. } | StartError::Named(source) => source.exit_code(),
            StartError::BadScript(_) => 126,
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("URUN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .with_ansi(false)
        .init();
}

/// The guest's environment: urun's own, with -U and -E applied.
fn guest_env(cli: &Cli) -> Vec<Vec<u8>> {
    let mut env: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    env.retain(|(k, _)| !cli.unset_env.iter().any(|u| k.as_bytes() == u.as_bytes()));
    for kv in &cli.set_env {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        env.retain(|(ek, _)| ek.as_bytes() != k.as_bytes());
        env.push((k.into(), v.into()));
    }
    env.into_iter()
        .map(|(k, v)| {
            let mut e = k.into_vec();
            e.push(b'=');
            e.extend_from_slice(v.as_bytes());
            e
        })
        .collect()
}

/// The options a re-executed urun gets (for the guest's execve).
fn reexec_args(cli: &Cli) -> Vec<OsString> {
    let mut v: Vec<OsString> = vec!["urun".into(), "--engine".into(), cli.engine.name().into()];
    if cli.strace {
        v.push("--strace".into());
    }
    if let Some(cpu) = &cli.cpu {
        v.push("--cpu".into());
        v.push(cpu.into());
    }
    if let Some(root) = &cli.sysroot {
        v.push("-L".into());
        v.push(root.clone().into_os_string());
    }
    v
}

/// Follow `#!` lines: the program to load and the argv to give it.
fn resolve_script(path: &Path, argv: Vec<Vec<u8>>) -> Result<(PathBuf, Vec<Vec<u8>>), StartError> {
    let mut path = path.to_path_buf();
    let mut argv = argv;
    for _ in 0..4 {
        let head = read_head(&path);
        let Format::Script { interpreter, arg } = urun_loader::identify(&head) else { break };
        if interpreter.is_empty() {
            return Err(StartError::BadScript(path.display().to_string()));
        }
        let mut new = vec![interpreter.clone().into_bytes()];
        if let Some(a) = arg {
            new.push(a.into_bytes());
        }
        new.push(path.as_os_str().as_bytes().to_vec());
        new.extend(argv.into_iter().skip(1));
        argv = new;
        path = PathBuf::from(interpreter);
    }
    Ok((path, argv))
}

fn read_head(path: &Path) -> Vec<u8> {
    use std::io::Read;
    let mut buf = vec![0u8; 256];
    match std::fs::File::open(path).and_then(|mut f| f.read(&mut buf)) {
        Ok(n) => {
            buf.truncate(n);
            buf
        }
        Err(_) => Vec::new(),
    }
}

fn start(cli: &Cli) -> Result<Stop, StartError> {
    let argv0 = cli.argv0.clone().unwrap_or_else(|| cli.program.clone().into_os_string());
    let mut argv = vec![argv0.into_vec()];
    argv.extend(cli.args.iter().map(|a| a.as_bytes().to_vec()));
    let (program, argv) = resolve_script(&cli.program, argv)?;
    let shown = program.display().to_string();
    if let Err(e) = urun_cpu::cpuid::configure(cli.cpu.as_deref()) {
        eprintln!("urun: -cpu: {e}");
        std::process::exit(2)
    }

    if cli.engine == EngineKind::Kvm {
        // Before loading anything: fail with one clear line, not later.
        if let Err(e) = urun_kvm::probe() {
            kvm_unusable(&e);
        }
    }
    if cli.engine == EngineKind::Jit {
        if let Err(e) = urun_cpu::jit::probe() {
            eprintln!("urun: --engine jit: {e}");
            std::process::exit(linux::ENGINE_FAILED)
        }
    }
    let mem = Arc::new(AddressSpace::new());
    let cpuid1 = urun_cpu::cpuid::guest_cpuid(1, 0);
    let opts = LoadOptions {
        argv,
        envp: guest_env(cli),
        execfn: program.as_os_str().as_bytes().to_vec(),
        hwcap: cpuid1[3] as u64,
        hwcap2: 0,
        sysroot: cli.sysroot.clone(),
    };
    let loaded = urun_loader::load(&program, &mem, &opts).map_err(|source| match source {
        urun_loader::LoadError::Io { .. } | urun_loader::LoadError::Permission { .. } => StartError::Named(source),
        source => StartError::Load { path: shown, source },
    })?;
    tracing::debug!(
        entry = format_args!("{:#x}", loaded.entry),
        sp = format_args!("{:#x}", loaded.stack_pointer),
        "loaded"
    );

    let mut cpu = CpuState { rip: loaded.entry, ..CpuState::default() };
    cpu.gpr[reg::RSP] = loaded.stack_pointer;
    let kind = cli.engine;
    let factory: linux::EngineFactory = Box::new(move |mem| new_engine(kind, mem));
    let mut process =
        Process::new(mem.clone(), Brk::at(loaded.brk_start, loaded.brk_reserve_end), loaded.exe_path.clone(), factory);
    process.strace = cli.strace;
    process.reexec = reexec_args(cli);
    process.sysroot = cli.sysroot.clone();
    process.cmdline = opts.argv.iter().flat_map(|a| a.iter().copied().chain(std::iter::once(0))).collect();
    process.auxv = loaded.auxv.iter().flat_map(|(k, v)| k.to_ne_bytes().into_iter().chain(v.to_ne_bytes())).collect();
    let process = Arc::new(process);
    let mut engine = match new_engine(kind, mem) {
        Ok(e) => e,
        Err(EngineError::Unavailable(e)) if kind == EngineKind::Kvm => kvm_unusable(&e),
        Err(e) => {
            eprintln!("urun: --engine {}: {e}", kind.name());
            std::process::exit(linux::ENGINE_FAILED)
        }
    };
    Ok(linux::run(&process, engine.as_mut(), &mut cpu))
}

/// An engine of the chosen kind for one guest thread (the factory every
/// guest thread's engine comes from: it reports, the personality decides).
fn new_engine(kind: EngineKind, mem: Arc<AddressSpace>) -> Result<Box<dyn Engine>, EngineError> {
    Ok(match kind {
        EngineKind::Interp => Box::new(Interpreter::new(mem)),
        EngineKind::Kvm => Box::new(urun_kvm::KvmEngine::new(mem).map_err(EngineError::from)?),
        EngineKind::Jit => Box::new(urun_cpu::jit::JitEngine::new(mem).map_err(EngineError::from)?),
    })
}

/// Say in one line why KVM cannot be used, and leave (before the guest
/// runs: only the main thread gets here).
fn kvm_unusable(e: &dyn std::fmt::Display) -> ! {
    eprintln!("urun: --engine kvm: no usable /dev/kvm ({e})");
    std::process::exit(linux::ENGINE_FAILED)
}

/// Leave as the guest left: its exit status, or killed by its signal.
fn finish(stop: Stop) -> ! {
    match stop {
        Stop::Exited(code) => linux::finish_process(code),
        Stop::Signaled(sig) => linux::kill_process(sig),
        Stop::ThreadExited(_) => {
            // The first guest thread ended with `exit` while others go on:
            // this host thread must stay (returning from main would end the
            // process) but take no signals; the last thread ends the process.
            // SAFETY: blocking every signal on this thread, then sleeping.
            unsafe {
                let mut all: libc::sigset_t = std::mem::zeroed();
                libc::sigfillset(&mut all);
                libc::pthread_sigmask(libc::SIG_BLOCK, &all, std::ptr::null_mut());
                loop {
                    libc::pause();
                }
            }
        }
    }
}

/// Put `--` before the guest program, so that everything after it is the
/// guest's even when it looks like one of urun's options.
fn split_guest_args(args: Vec<OsString>) -> Vec<OsString> {
    const TAKES_VALUE: &[&str] = &["-E", "-U", "-0", "-L", "--engine", "--cpu"];
    let mut out = Vec::with_capacity(args.len() + 1);
    let mut it = args.into_iter();
    if let Some(me) = it.next() {
        out.push(me);
    }
    while let Some(a) = it.next() {
        // qemu's single-dash `-cpu`.
        let a = if a.as_bytes() == b"-cpu" { OsString::from("--cpu") } else { a };
        let b = a.as_bytes();
        if b == b"--" {
            out.push(a);
            break;
        }
        if !b.starts_with(b"-") || b == b"-" {
            out.push("--".into());
            out.push(a);
            break;
        }
        let needs_value = TAKES_VALUE.iter().any(|o| b == o.as_bytes());
        out.push(a);
        if needs_value {
            if let Some(v) = it.next() {
                out.push(v);
            }
        }
    }
    out.extend(it);
    out
}

/// Whether SIGPIPE was ignored when urun was started. Rust's runtime sets
/// SIGPIPE to ignored before `main`; a guest must start with the
/// disposition urun inherited (default for most, ignored when an ignoring
/// parent exec'd us), so this constructor looks before the runtime does.
static SIGPIPE_WAS_IGNORED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn record_sigpipe() {
    // SAFETY: reading the current disposition into a zeroed sigaction.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(libc::SIGPIPE, std::ptr::null(), &mut old) == 0 {
            SIGPIPE_WAS_IGNORED.store(old.sa_sigaction == libc::SIG_IGN, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

#[used]
#[link_section = ".init_array"]
static RECORD_SIGPIPE: extern "C" fn() = record_sigpipe;

/// Give SIGPIPE back the disposition urun was started with.
fn restore_sigpipe() {
    let h = if SIGPIPE_WAS_IGNORED.load(std::sync::atomic::Ordering::Relaxed) { libc::SIG_IGN } else { libc::SIG_DFL };
    // SAFETY: setting a standard disposition for SIGPIPE.
    unsafe { libc::signal(libc::SIGPIPE, h) };
}

fn main() {
    restore_sigpipe();
    let cli = Cli::parse_from(split_guest_args(std::env::args_os().collect()));
    init_logging();
    match start(&cli) {
        Ok(stop) => finish(stop),
        Err(e) => {
            eprintln!("urun: {e}");
            std::process::exit(e.exit_code());
        }
    }
}
