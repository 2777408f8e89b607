//! `urun binfmt install|uninstall|status`: the kernel's binfmt_misc runs
//! Windows programs (`./tool.exe`) through urun, as `wine-binfmt` and
//! `qemu-binfmt-conf.sh` set up theirs.
//!
//! The entry matches the `MZ` magic at offset 0, as Wine's does. binfmt_misc
//! compares bytes at a fixed offset, and where the `PE\0\0` header and its
//! PE32+/x86-64 fields sit depends on `e_lfanew` (0x80 for mingw, other
//! values for other linkers), so no magic and mask can select PE32+ x86-64
//! alone; urun itself checks the rest and refuses an MS-DOS, PE32 or other
//! MZ file with a message saying what it is. The host's own format, ELF, is
//! never registered: the magic is this module's constant, not an input.
//!
//! Flags: `F` always (the kernel opens urun when the entry is registered,
//! so it works inside containers and chroots that do not contain urun);
//! `P` with `--preserve-argv0` (the program's argv[0] is kept, and urun
//! learns it from `AT_FLAGS_PRESERVE_ARGV0` in its auxiliary vector, as
//! qemu does). `--persist` also writes `/usr/lib/binfmt.d/NAME.conf` for
//! systemd-binfmt. The entry carries no urun option: a program the kernel
//! starts runs under the default engine (`--engine auto`, which today runs
//! PE programs under the interpreter: `engine::auto_engine`) or the one
//! `URUN_ENGINE` names in the environment.
//!
//! When the kernel starts urun for a registered file, urun's argv is
//! `[urun, FILE, ARGV0 (with P), ARGS...]`; [`invoked_args`] recognises
//! that (the file the kernel was asked to run, `AT_EXECFN`, is not urun)
//! and turns it into urun's own command line.

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Where binfmt_misc is mounted.
const MOUNT: &str = "/proc/sys/fs/binfmt_misc";
/// Where systemd-binfmt reads registrations at boot.
const PERSIST_DIR: &str = "/usr/lib/binfmt.d";
/// The default entry name.
pub const DEFAULT_NAME: &str = "urun";
/// The magic registered: `MZ` at offset 0 (never ELF's `\x7fELF`).
const MAGIC: &[u8] = b"MZ";
/// Linux's `AT_FLAGS_PRESERVE_ARGV0` (set with the `P` flag, Linux 5.12+).
const AT_FLAGS_PRESERVE_ARGV0: u64 = 1;

/// What went wrong with a binfmt command.
#[derive(Debug, thiserror::Error)]
pub enum BinfmtError {
    #[error("{0} needs root (binfmt_misc registrations are system-wide); run it with sudo")]
    NotRoot(&'static str),
    #[error("cannot mount binfmt_misc on {MOUNT}: {0}")]
    Mount(std::io::Error),
    #[error("{what} {path}: {source}")]
    Io { what: &'static str, path: String, source: std::io::Error },
    #[error("urun's path {0} cannot be registered (binfmt_misc fields cannot hold ':' or a newline, and the kernel takes at most 127 bytes)")]
    BadInterpreter(String),
    #[error("bad entry name {0:?}: use letters, digits, '-', '_' or '.'")]
    BadName(String),
    #[error("no binfmt_misc entry {0:?} is registered")]
    NotRegistered(String),
    #[error("usage: urun binfmt install [--preserve-argv0] [--persist] [--name NAME] | uninstall [--name NAME] | status [--name NAME]")]
    Usage,
}

impl BinfmtError {
    fn exit_code(&self) -> i32 {
        match self {
            BinfmtError::Usage => 2,
            _ => 1,
        }
    }
}

/// The parsed `urun binfmt ...` command.
#[derive(Debug, PartialEq, Eq)]
struct Command {
    action: Action,
    name: String,
    preserve_argv0: bool,
    persist: bool,
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Action {
    Install,
    Uninstall,
    Status,
}

fn parse(args: &[OsString]) -> Result<Command, BinfmtError> {
    let mut it = args.iter().map(|a| a.to_str().ok_or(BinfmtError::Usage));
    let action = match it.next().transpose()? {
        Some("install") => Action::Install,
        Some("uninstall") => Action::Uninstall,
        Some("status") => Action::Status,
        _ => return Err(BinfmtError::Usage),
    };
    let mut c = Command { action, name: DEFAULT_NAME.into(), preserve_argv0: false, persist: false };
    while let Some(a) = it.next().transpose()? {
        match a {
            "--preserve-argv0" if action == Action::Install => c.preserve_argv0 = true,
            "--persist" if action == Action::Install => c.persist = true,
            "--name" => c.name = it.next().transpose()?.ok_or(BinfmtError::Usage)?.to_string(),
            _ => return Err(BinfmtError::Usage),
        }
    }
    let ok = |ch: char| ch.is_ascii_alphanumeric() || "-_.".contains(ch);
    if c.name.is_empty() || !c.name.chars().all(ok) || c.name == "register" || c.name == "status" {
        return Err(BinfmtError::BadName(c.name));
    }
    Ok(c)
}

/// `urun binfmt ARGS...`: do it, print what was done, return the exit status.
pub fn main(args: &[OsString]) -> i32 {
    let r = parse(args).and_then(|c| match c.action {
        Action::Install => install(&c),
        Action::Uninstall => uninstall(&c),
        Action::Status => status(&c),
    });
    match r {
        Ok(code) => code,
        Err(e) => {
            eprintln!("urun binfmt: {e}");
            e.exit_code()
        }
    }
}

/// The registration line (also the binfmt.d file's content).
fn registration(name: &str, interpreter: &Path, preserve_argv0: bool) -> Result<String, BinfmtError> {
    let interp = interpreter.to_str().unwrap_or("");
    if interp.is_empty() || interp.contains([':', '\n']) || interp.len() > 127 {
        return Err(BinfmtError::BadInterpreter(interpreter.display().to_string()));
    }
    let magic: String = MAGIC.iter().map(|b| format!("\\x{b:02x}")).collect();
    let flags = if preserve_argv0 { "FP" } else { "F" };
    Ok(format!(":{name}:M:0:{magic}::{interp}:{flags}"))
}

fn need_root(what: &'static str) -> Result<(), BinfmtError> {
    // SAFETY: geteuid has no arguments and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err(BinfmtError::NotRoot(what));
    }
    Ok(())
}

fn io(what: &'static str, path: impl AsRef<Path>) -> impl FnOnce(std::io::Error) -> BinfmtError {
    let path = path.as_ref().display().to_string();
    move |source| BinfmtError::Io { what, path, source }
}

fn mounted() -> bool {
    Path::new(MOUNT).join("register").exists()
}

/// Mount binfmt_misc where it is expected, unless it is there.
fn ensure_mounted() -> Result<(), BinfmtError> {
    if mounted() {
        return Ok(());
    }
    let (src, target, fstype) = (c"binfmt_misc", c"/proc/sys/fs/binfmt_misc", c"binfmt_misc");
    // SAFETY: all three are valid NUL-terminated strings; no data argument.
    let r = unsafe { libc::mount(src.as_ptr(), target.as_ptr(), fstype.as_ptr(), 0, std::ptr::null()) };
    if r != 0 {
        return Err(BinfmtError::Mount(std::io::Error::last_os_error()));
    }
    println!("urun binfmt: mounted binfmt_misc on {MOUNT}");
    Ok(())
}

fn write_control(path: &Path, text: &str) -> Result<(), BinfmtError> {
    let mut f = std::fs::OpenOptions::new().write(true).open(path).map_err(io("opening", path))?;
    f.write_all(text.as_bytes()).map_err(io("writing", path))
}

fn this_urun() -> Result<PathBuf, BinfmtError> {
    let exe = std::env::current_exe().map_err(io("finding", "urun's own path"))?;
    std::fs::canonicalize(&exe).map_err(io("resolving", exe))
}

fn install(c: &Command) -> Result<i32, BinfmtError> {
    need_root("urun binfmt install")?;
    let me = this_urun()?;
    let line = registration(&c.name, &me, c.preserve_argv0)?;
    ensure_mounted()?;
    let entry = Path::new(MOUNT).join(&c.name);
    if entry.exists() {
        // Registering again (new flags, another urun): the old one goes.
        write_control(&entry, "-1")?;
    }
    write_control(&Path::new(MOUNT).join("register"), &line)?;
    println!("urun binfmt: registered {:?} for MZ (Windows) programs: {} (flags {})", c.name, me.display(), flags(c));
    if c.persist {
        let dir = Path::new(PERSIST_DIR);
        std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
        let file = dir.join(format!("{}.conf", c.name));
        let text = format!("# Windows PE programs run by urun (written by `urun binfmt install --persist`)\n{line}\n");
        std::fs::write(&file, text).map_err(io("writing", &file))?;
        println!("urun binfmt: wrote {} (systemd-binfmt registers it at boot)", file.display());
    }
    Ok(0)
}

fn flags(c: &Command) -> &'static str {
    if c.preserve_argv0 {
        "F P"
    } else {
        "F"
    }
}

fn uninstall(c: &Command) -> Result<i32, BinfmtError> {
    need_root("urun binfmt uninstall")?;
    let entry = Path::new(MOUNT).join(&c.name);
    let file = Path::new(PERSIST_DIR).join(format!("{}.conf", c.name));
    let had_file = file.exists();
    if had_file {
        std::fs::remove_file(&file).map_err(io("removing", &file))?;
        println!("urun binfmt: removed {}", file.display());
    }
    if !mounted() || !entry.exists() {
        if had_file {
            return Ok(0);
        }
        return Err(BinfmtError::NotRegistered(c.name.clone()));
    }
    write_control(&entry, "-1")?;
    println!("urun binfmt: unregistered {:?}", c.name);
    Ok(0)
}

/// What the kernel says about one entry (`/proc/sys/fs/binfmt_misc/NAME`).
#[derive(Debug, Default, PartialEq, Eq)]
struct Entry {
    enabled: bool,
    interpreter: String,
    flags: String,
    offset: String,
    magic: String,
}

fn parse_entry(text: &str) -> Entry {
    let mut e = Entry::default();
    for line in text.lines() {
        let (k, v) = line.split_once(' ').unwrap_or((line, ""));
        match k {
            "enabled" => e.enabled = true,
            "interpreter" => e.interpreter = v.to_string(),
            "flags:" => e.flags = v.to_string(),
            "offset" => e.offset = v.to_string(),
            "magic" => e.magic = v.to_string(),
            _ => {}
        }
    }
    e
}

/// Same file as this urun (a hard link or the same path)?
fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

/// Exit status 0 when the entry is registered, enabled and points at this
/// urun; 1 otherwise (each case said in words).
fn status(c: &Command) -> Result<i32, BinfmtError> {
    let file = Path::new(PERSIST_DIR).join(format!("{}.conf", c.name));
    let persisted = if file.exists() { format!("; persisted in {}", file.display()) } else { String::new() };
    if !mounted() {
        println!("{:?}: not registered (binfmt_misc is not mounted on {MOUNT}){persisted}", c.name);
        return Ok(1);
    }
    let entry = Path::new(MOUNT).join(&c.name);
    let text = match std::fs::read_to_string(&entry) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            println!("{:?}: not registered{persisted}", c.name);
            return Ok(1);
        }
        Err(e) => return Err(io("reading", &entry)(e)),
    };
    let e = parse_entry(&text);
    let me = this_urun()?;
    let ours = same_file(Path::new(&e.interpreter), &me);
    let whose = if ours { "this urun".to_string() } else { format!("not this urun ({})", me.display()) };
    let argv0 = if e.flags.contains('P') { ", argv[0] preserved" } else { "" };
    println!(
        "{:?}: registered, {}, interpreter {} ({whose}), flags {}{argv0}, magic {} at offset {}{persisted}",
        c.name,
        if e.enabled { "enabled" } else { "disabled" },
        e.interpreter,
        e.flags,
        e.magic,
        e.offset
    );
    Ok(if e.enabled && ours { 0 } else { 1 })
}

/// A string from the auxiliary vector entry `key` (a pointer to a C string).
fn auxv_str(key: libc::c_ulong) -> Option<Vec<u8>> {
    // SAFETY: getauxval only reads the process's auxiliary vector.
    let p = unsafe { libc::getauxval(key) } as *const libc::c_char;
    if p.is_null() {
        return None;
    }
    // SAFETY: AT_EXECFN points at a NUL-terminated string the kernel put on
    // our initial stack, which stays for the life of the process.
    Some(unsafe { std::ffi::CStr::from_ptr(p) }.to_bytes().to_vec())
}

/// urun's command line when the kernel started it through binfmt_misc
/// (`[urun, FILE, (ARGV0,) ARGS...]`): `[urun, (-0 ARGV0,) --, FILE, ARGS...]`.
/// Started any other way (the file the kernel ran is urun itself): `None`.
pub fn invoked_args(args: &[OsString]) -> Option<Vec<OsString>> {
    let execfn = auxv_str(libc::AT_EXECFN)?;
    // SAFETY: getauxval only reads the process's auxiliary vector.
    let at_flags = unsafe { libc::getauxval(libc::AT_FLAGS) };
    let me = std::fs::canonicalize("/proc/self/exe").ok()?;
    let ran = Path::new(OsStr::from_bytes(&execfn));
    if !ran.exists() || same_file(ran, &me) {
        return None;
    }
    from_kernel(args, at_flags & AT_FLAGS_PRESERVE_ARGV0 != 0)
}

/// The rewriting itself (unit-tested).
fn from_kernel(args: &[OsString], preserve_argv0: bool) -> Option<Vec<OsString>> {
    let (me, rest) = args.split_first()?;
    let (file, rest) = rest.split_first()?;
    let mut out = vec![me.clone()];
    let rest = if preserve_argv0 {
        let (argv0, rest) = rest.split_first()?;
        out.push("-0".into());
        out.push(argv0.clone());
        rest
    } else {
        rest
    };
    // The kernel resolved FILE against the working directory: keep it
    // there (no PATH lookup).
    let file = if file.as_bytes().contains(&b'/') {
        file.clone()
    } else {
        OsString::from_vec([b"./".as_slice(), file.as_bytes()].concat())
    };
    out.push("--".into());
    out.push(file);
    out.extend(rest.iter().cloned());
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn registration_is_mz_only() {
        let line = registration("urun", Path::new("/usr/bin/urun"), false).unwrap();
        assert_eq!(line, ":urun:M:0:\\x4d\\x5a::/usr/bin/urun:F");
        assert!(!line.contains("\\x7f\\x45\\x4c\\x46"), "never ELF");
        assert!(registration("urun", Path::new("/usr/bin/urun"), true).unwrap().ends_with(":FP"));
        for bad in ["/a:b/urun", "/a\nb", ""] {
            assert!(registration("urun", Path::new(bad), false).is_err(), "{bad:?}");
        }
        assert!(registration("urun", &PathBuf::from(format!("/{}", "x".repeat(200))), false).is_err());
    }

    #[test]
    fn command_lines() {
        let c = parse(&os(&["install", "--preserve-argv0", "--persist"])).unwrap();
        assert!(c.action == Action::Install && c.preserve_argv0 && c.persist && c.name == "urun");
        assert_eq!(parse(&os(&["status", "--name", "t-1"])).unwrap().name, "t-1");
        for bad in [&["frobnicate"][..], &[], &["status", "--persist"], &["install", "--name"]] {
            assert!(matches!(parse(&os(bad)), Err(BinfmtError::Usage)), "{bad:?}");
        }
        for bad in ["register", "status", "a/b", "a:b", ""] {
            assert!(matches!(parse(&os(&["status", "--name", bad])), Err(BinfmtError::BadName(_))), "{bad:?}");
        }
    }

    #[test]
    fn kernel_argv_becomes_urun_argv() {
        let got = from_kernel(&os(&["/usr/bin/urun", "./p.exe", "-x", "--engine"]), false).unwrap();
        assert_eq!(got, os(&["/usr/bin/urun", "--", "./p.exe", "-x", "--engine"]));
        let got = from_kernel(&os(&["/usr/bin/urun", "/d/p.exe", "name", "a"]), true).unwrap();
        assert_eq!(got, os(&["/usr/bin/urun", "-0", "name", "--", "/d/p.exe", "a"]));
        let got = from_kernel(&os(&["/usr/bin/urun", "p.exe"]), false).unwrap();
        assert_eq!(got, os(&["/usr/bin/urun", "--", "./p.exe"]));
        assert_eq!(from_kernel(&os(&["/usr/bin/urun", "p.exe"]), true), None);
    }

    #[test]
    fn kernel_entry_text() {
        let e = parse_entry("enabled\ninterpreter /usr/bin/urun\nflags: PF\noffset 0\nmagic 4d5a\n");
        assert_eq!(
            e,
            Entry {
                enabled: true,
                interpreter: "/usr/bin/urun".into(),
                flags: "PF".into(),
                offset: "0".into(),
                magic: "4d5a".into()
            }
        );
    }
}
