//! `urun`: run an x86-64 Linux or Windows program in a user-mode emulator.
//!
//! The CLI is thin: parse options, then `run::start` loads the program,
//! picks an engine and the personality the program's format calls for,
//! runs it, and leaves as the guest left.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use clap::Parser;
use urun_loader::Format;

mod binfmt;
mod engine;
mod gdb;
mod path;
mod run;

/// Run an x86-64 Linux program in a user-mode emulator.
#[derive(Parser, Debug)]
#[command(name = "urun", version, about, long_about = None)]
struct Cli {
    /// CPU engine (auto: the JIT where it can run the program here,
    /// otherwise the interpreter).
    #[arg(long, value_enum, default_value = "auto", env = "URUN_ENGINE")]
    engine: engine::EngineArg,

    /// CPU model: x86-64, x86-64-v2, x86-64-v3 or host (default), then
    /// +FEATURE/-FEATURE modifiers, qemu-style (`-cpu` works too).
    #[arg(long = "cpu", value_name = "MODEL", env = "URUN_CPU")]
    cpu: Option<String>,

    /// Print each syscall on stderr, one per line.
    #[arg(long, env = "URUN_STRACE")]
    strace: bool,

    /// With the JIT engine: run every translated block in lockstep with the
    /// interpreter and stop at the first difference (slow).
    #[arg(long, env = "URUN_CHECK")]
    check: bool,

    /// For a Windows program: list its imports, each marked as urun
    /// implements it or not, and exit.
    #[arg(long, env = "URUN_LIST_IMPORTS")]
    list_imports: bool,

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

    /// Wait for gdb on 127.0.0.1:PORT before the first guest instruction.
    #[arg(short = 'g', value_name = "PORT", env = "URUN_GDB", value_parser = clap::value_parser!(u16).range(1..))]
    gdb: Option<u16>,

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
    /// A PE program whose imports cannot be bound, or an engine that
    /// cannot run it.
    #[error("{path}: {source}")]
    Win32 { path: String, source: urun_syscalls::win32::StartError },
    #[error(transparent)]
    Path(#[from] path::PathError),
    #[error(transparent)]
    Gdb(#[from] gdb::GdbError),
}

impl StartError {
    fn exit_code(&self) -> i32 {
        match self {
            StartError::Load { source, .. } | StartError::Named(source) => source.exit_code(),
            StartError::BadScript(_) | StartError::Win32 { .. } => 126,
            StartError::Path(e) => e.exit_code(),
            StartError::Gdb(_) => urun_syscalls::ENGINE_FAILED,
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

/// The options a re-executed urun gets (for the guest's execve), with
/// `engine` as its `--engine` (see `engine::for_children`).
fn reexec_args(cli: &Cli, engine: &str) -> Vec<OsString> {
    let mut v: Vec<OsString> = vec!["urun".into(), "--engine".into(), engine.into()];
    if cli.strace {
        v.push("--strace".into());
    }
    if cli.check {
        v.push("--check".into());
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

/// Put `--` before the guest program, so that everything after it is the
/// guest's even when it looks like one of urun's options.
fn split_guest_args(args: Vec<OsString>) -> Vec<OsString> {
    const TAKES_VALUE: &[&str] = &["-E", "-U", "-0", "-L", "-g", "--engine", "--cpu"];
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
    let args: Vec<OsString> = std::env::args_os().collect();
    // Started by the kernel for a binfmt_misc entry: everything is the guest's.
    let args = match binfmt::invoked_args(&args) {
        Some(args) => args,
        None if args.get(1).is_some_and(|a| a == "binfmt") => std::process::exit(binfmt::main(&args[2..])),
        None => args,
    };
    let cli = Cli::parse_from(split_guest_args(args));
    // The gdb stub is this process's: children urun runs for the guest's
    // execve do not wait for gdb again.
    std::env::remove_var("URUN_GDB");
    init_logging();
    tracing::debug!(program = ?cli.program, argv0 = ?cli.argv0, args = ?cli.args, "guest command line");
    match run::start(&cli) {
        Ok(never) => match never {},
        Err(e) => {
            eprintln!("urun: {e}");
            std::process::exit(e.exit_code());
        }
    }
}
