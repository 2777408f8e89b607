//! The initial process stack: argv, envp and the auxiliary vector, laid out
//! exactly as Linux's `create_elf_tables` lays them out on x86-64.
//!
//! From the top of the stack down: 8 zero bytes; the strings (argv, then
//! envp, then the execfn, in ascending address order); alignment to 16; the
//! "x86_64" platform string; the 16 AT_RANDOM bytes; padding so that the
//! final stack pointer is 16-byte aligned; the auxv pairs ending with
//! AT_NULL; NULL; the envp pointers; NULL; the argv pointers; argc (at rsp).

use urun_cpu::{AddressSpace, Backing, Placement, Prot};

use crate::elf::Undo;
use crate::error::LoadError;
use crate::LoadOptions;

/// Auxiliary vector keys (`AT_*` from `<elf.h>`).
pub mod at {
    pub const NULL: u64 = 0;
    pub const PHDR: u64 = 3;
    pub const PHENT: u64 = 4;
    pub const PHNUM: u64 = 5;
    pub const PAGESZ: u64 = 6;
    pub const BASE: u64 = 7;
    pub const FLAGS: u64 = 8;
    pub const ENTRY: u64 = 9;
    pub const UID: u64 = 11;
    pub const EUID: u64 = 12;
    pub const GID: u64 = 13;
    pub const EGID: u64 = 14;
    pub const PLATFORM: u64 = 15;
    pub const HWCAP: u64 = 16;
    pub const CLKTCK: u64 = 17;
    pub const SECURE: u64 = 23;
    pub const RANDOM: u64 = 25;
    pub const HWCAP2: u64 = 26;
    pub const EXECFN: u64 = 31;
    pub const MINSIGSTKSZ: u64 = 51;
}

/// Size of the guest's main stack.
pub const STACK_SIZE: u64 = 8 << 20;
/// Where to ask the kernel for the stack (a hint only).
const STACK_HINT: u64 = 0x7ff0_0000_0000 - STACK_SIZE;
/// Linux refuses more than a quarter of the stack limit of strings.
const MAX_STRINGS: u64 = STACK_SIZE / 4;
const PLATFORM: &[u8] = b"x86_64\0";

/// The auxv values that do not point into the stack.
pub(crate) struct AuxInfo {
    /// Load address of the dynamic linker (AT_BASE; 0 without one).
    pub base: u64,
    pub phdr: u64,
    pub phnum: u64,
    pub entry: u64,
    pub hwcap: u64,
    pub hwcap2: u64,
    pub uid: u64,
    pub euid: u64,
    pub gid: u64,
    pub egid: u64,
}

impl AuxInfo {
    /// The ids of the urun process, which the guest inherits.
    pub fn ids() -> (u64, u64, u64, u64) {
        // SAFETY: these calls take no arguments and cannot fail.
        unsafe {
            (
                u64::from(libc::getuid()),
                u64::from(libc::geteuid()),
                u64::from(libc::getgid()),
                u64::from(libc::getegid()),
            )
        }
    }
}

/// The bytes of `[sp, top)` and what they hold.
#[derive(Debug)]
pub(crate) struct StackImage {
    pub bytes: Vec<u8>,
    pub sp: u64,
    pub auxv: Vec<(u64, u64)>,
}

/// Lay out the initial stack for a stack ending at `top` (16-aligned).
pub(crate) fn build(top: u64, opts: &LoadOptions, random: &[u8; 16], info: &AuxInfo) -> Result<StackImage, LoadError> {
    let strings_len: u64 =
        opts.argv.iter().chain(&opts.envp).chain(std::iter::once(&opts.execfn)).map(|s| s.len() as u64 + 1).sum();
    if strings_len > MAX_STRINGS {
        return Err(LoadError::ArgsTooLong(strings_len));
    }
    let strings_at = top - 8 - strings_len;
    let mut p = strings_at & !15;
    p -= PLATFORM.len() as u64;
    let platform_at = p;
    p -= 16;
    let random_at = p;

    let mut string_addrs = Vec::with_capacity(opts.argv.len() + opts.envp.len());
    let mut q = strings_at;
    for s in opts.argv.iter().chain(&opts.envp) {
        string_addrs.push(q);
        q += s.len() as u64 + 1;
    }
    let execfn_at = q;

    let auxv = vec![
        (at::MINSIGSTKSZ, 2048),
        (at::HWCAP, info.hwcap),
        (at::PAGESZ, 4096),
        (at::CLKTCK, 100),
        (at::PHDR, info.phdr),
        (at::PHENT, crate::elf::PHDR_SIZE),
        (at::PHNUM, info.phnum),
        (at::BASE, info.base),
        (at::FLAGS, 0),
        (at::ENTRY, info.entry),
        (at::UID, info.uid),
        (at::EUID, info.euid),
        (at::GID, info.gid),
        (at::EGID, info.egid),
        (at::SECURE, 0),
        (at::RANDOM, random_at),
        (at::HWCAP2, info.hwcap2),
        (at::EXECFN, execfn_at),
        (at::PLATFORM, platform_at),
        (at::NULL, 0),
    ];
    let argc = opts.argv.len() as u64;
    let words = 1 + (argc + 1) + (opts.envp.len() as u64 + 1) + 2 * auxv.len() as u64;
    let sp = (p - words * 8) & !15;

    let mut bytes = vec![0u8; (top - sp) as usize];
    let mut put = |addr: u64, data: &[u8]| {
        let at = (addr - sp) as usize;
        bytes[at..at + data.len()].copy_from_slice(data);
    };
    let mut q = strings_at;
    for s in opts.argv.iter().chain(&opts.envp).chain(std::iter::once(&opts.execfn)) {
        put(q, s); // the NUL is already there
        q += s.len() as u64 + 1;
    }
    put(platform_at, PLATFORM);
    put(random_at, random);
    let mut w = sp;
    let mut word = |v: u64| {
        put(w, &v.to_le_bytes());
        w += 8;
    };
    word(argc);
    let (argv_addrs, envp_addrs) = string_addrs.split_at(opts.argv.len());
    for &a in argv_addrs {
        word(a);
    }
    word(0);
    for &a in envp_addrs {
        word(a);
    }
    word(0);
    for &(k, v) in &auxv {
        word(k);
        word(v);
    }
    Ok(StackImage { bytes, sp, auxv })
}

/// Map the main stack. Returns its top (end address).
pub(crate) fn map(mem: &AddressSpace, executable: bool, undo: &mut Undo<'_>) -> Result<u64, LoadError> {
    let prot = if executable { Prot::RW.union(Prot::EXEC) } else { Prot::RW };
    let start = mem
        .map(Placement::Hint(STACK_HINT), STACK_SIZE, prot, false, None)
        .map_err(|source| LoadError::Map { what: "the stack", source })?;
    undo.push(start, STACK_SIZE);
    mem.set_backing(start, Backing::Named("[stack]".into()));
    Ok(start + STACK_SIZE)
}

/// Copy a built image into the mapped stack.
pub(crate) fn write(image: &StackImage) {
    // SAFETY: `image` was built for the top of the stack `map` just mapped
    // read-write for the guest, and is far smaller than it (`MAX_STRINGS`),
    // so [sp, sp + len) is writable guest memory.
    unsafe { std::ptr::copy_nonoverlapping(image.bytes.as_ptr(), image.sp as *mut u8, image.bytes.len()) }
}

/// 16 random bytes for AT_RANDOM.
pub(crate) fn random_bytes() -> Result<[u8; 16], LoadError> {
    let mut buf = [0u8; 16];
    let mut got = 0;
    while got < buf.len() {
        // SAFETY: the pointer and length describe the unfilled tail of `buf`.
        let n = unsafe { libc::getrandom(buf[got..].as_mut_ptr().cast(), buf.len() - got, 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(LoadError::Random(e));
        }
        got += n as usize;
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn word(img: &StackImage, addr: u64) -> u64 {
        let at = (addr - img.sp) as usize;
        let mut b = [0u8; 8];
        b.copy_from_slice(&img.bytes[at..at + 8]);
        u64::from_le_bytes(b)
    }

    fn cstr(img: &StackImage, addr: u64) -> Vec<u8> {
        let at = (addr - img.sp) as usize;
        img.bytes[at..].split(|&b| b == 0).next().unwrap_or(&[]).to_vec()
    }

    /// argv, envp and auxv as read back from a stack.
    type Parsed = (Vec<Vec<u8>>, Vec<Vec<u8>>, Vec<(u64, u64)>);

    /// Parse a stack image back the way a C runtime does.
    fn parse(img: &StackImage) -> Parsed {
        let mut at = img.sp;
        let argc = word(img, at);
        at += 8;
        let argv = (0..argc).map(|i| cstr(img, word(img, at + 8 * i))).collect();
        at += 8 * argc;
        assert_eq!(word(img, at), 0, "argv ends with NULL");
        at += 8;
        let mut envp = Vec::new();
        while word(img, at) != 0 {
            envp.push(cstr(img, word(img, at)));
            at += 8;
        }
        at += 8;
        let mut auxv = Vec::new();
        loop {
            let (k, v) = (word(img, at), word(img, at + 8));
            auxv.push((k, v));
            at += 16;
            if k == at::NULL {
                break;
            }
        }
        (argv, envp, auxv)
    }

    #[test]
    fn layout_parses_back() {
        let info = AuxInfo {
            base: 0,
            phdr: 0x1040,
            phnum: 3,
            entry: 0x1100,
            hwcap: 7,
            hwcap2: 2,
            uid: 1,
            euid: 2,
            gid: 3,
            egid: 4,
        };
        let top = 0x7000_0000_0000;
        for n in 0..4 {
            let opts = LoadOptions {
                argv: (0..n).map(|i| format!("arg{i}").repeat(i + 1).into_bytes()).collect(),
                envp: vec![b"A=1".to_vec(), b"PATH=/bin".to_vec()][..n.min(2)].to_vec(),
                execfn: b"/bin/prog".to_vec(),
                hwcap: 7,
                hwcap2: 2,
                sysroot: None,
            };
            let random = [0xab; 16];
            let img = build(top, &opts, &random, &info).unwrap();
            assert_eq!(img.sp % 16, 0);
            assert_eq!(img.sp + img.bytes.len() as u64, top);
            let (argv, envp, auxv) = parse(&img);
            assert_eq!(argv, opts.argv);
            assert_eq!(envp, opts.envp);
            assert_eq!(auxv, img.auxv);
            let get = |k| auxv.iter().find(|e| e.0 == k).map(|e| e.1).unwrap();
            assert_eq!(cstr(&img, get(at::EXECFN)), b"/bin/prog");
            assert_eq!(cstr(&img, get(at::PLATFORM)), b"x86_64");
            let r = (get(at::RANDOM) - img.sp) as usize;
            assert_eq!(img.bytes[r..r + 16], random);
            assert_eq!((get(at::PHDR), get(at::PHNUM), get(at::ENTRY)), (0x1040, 3, 0x1100));
            assert_eq!((get(at::PAGESZ), get(at::BASE), get(at::PHENT)), (4096, 0, 56));
            assert_eq!((get(at::HWCAP), get(at::HWCAP2), get(at::UID), get(at::EGID)), (7, 2, 1, 4));
            assert!(!auxv.iter().any(|e| e.0 == 33), "no AT_SYSINFO_EHDR");
            // The last 8 bytes are zero, and the execfn ends right below them.
            assert_eq!(word(&img, top - 8), 0);
            assert_eq!(get(at::EXECFN) + 10, top - 8);
        }
    }

    #[test]
    fn too_many_strings() {
        let info =
            AuxInfo { base: 0, phdr: 0, phnum: 0, entry: 0, hwcap: 0, hwcap2: 0, uid: 0, euid: 0, gid: 0, egid: 0 };
        let opts = LoadOptions { argv: vec![vec![b'x'; 3 << 20]], ..LoadOptions::default() };
        let err = build(0x7000_0000_0000, &opts, &[0; 16], &info).unwrap_err();
        assert!(matches!(err, LoadError::ArgsTooLong(_)), "{err}");
        assert_eq!(err.exit_code(), 126);
    }
}
