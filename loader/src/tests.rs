//! Loader tests: small ELF images built in memory, written to temp files.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use urun_cpu::{AddressSpace, Backing, Prot, PAGE_SIZE};

use super::*;

const PT_LOAD: u32 = 1;
const PT_INTERP: u32 = 3;
const PT_PHDR: u32 = 6;
const PT_GNU_STACK: u32 = 0x6474_e551;
const R: u32 = 4;
const W: u32 = 2;
const X: u32 = 1;

#[derive(Clone, Copy)]
struct Ph {
    ty: u32,
    flags: u32,
    offset: u64,
    vaddr: u64,
    filesz: u64,
    memsz: u64,
    align: u64,
}

fn load_ph(flags: u32, offset: u64, vaddr: u64, filesz: u64, memsz: u64) -> Ph {
    Ph { ty: PT_LOAD, flags, offset, vaddr, filesz, memsz, align: PAGE_SIZE }
}

/// A tiny ELF64 writer: header, program headers at 64, then `body` bytes
/// laid over a file of `len` bytes (at least headers long).
fn elf(e_type: u16, machine: u16, entry: u64, phs: &[Ph], len: usize, body: &[(usize, &[u8])]) -> Vec<u8> {
    let len = len.max(64 + 56 * phs.len());
    let mut f = vec![0u8; len];
    f[..4].copy_from_slice(b"\x7fELF");
    f[4] = 2; // ELFCLASS64
    f[5] = 1; // little-endian
    f[6] = 1; // EV_CURRENT
    let mut put = |at: usize, v: &[u8]| f[at..at + v.len()].copy_from_slice(v);
    put(16, &e_type.to_le_bytes());
    put(18, &machine.to_le_bytes());
    put(20, &1u32.to_le_bytes());
    put(24, &entry.to_le_bytes());
    put(32, &64u64.to_le_bytes()); // e_phoff
    put(52, &64u16.to_le_bytes()); // e_ehsize
    put(54, &56u16.to_le_bytes()); // e_phentsize
    put(56, &(phs.len() as u16).to_le_bytes());
    for (i, p) in phs.iter().enumerate() {
        let at = 64 + 56 * i;
        put(at, &p.ty.to_le_bytes());
        put(at + 4, &p.flags.to_le_bytes());
        put(at + 8, &p.offset.to_le_bytes());
        put(at + 16, &p.vaddr.to_le_bytes());
        put(at + 24, &p.vaddr.to_le_bytes());
        put(at + 32, &p.filesz.to_le_bytes());
        put(at + 40, &p.memsz.to_le_bytes());
        put(at + 48, &p.align.to_le_bytes());
    }
    for (at, bytes) in body {
        put(*at, bytes);
    }
    f
}

/// A valid one-segment ET_EXEC at `vaddr` with its code at 0x100.
fn tiny_exec(vaddr: u64) -> Vec<u8> {
    elf(2, 62, vaddr + 0x100, &[load_ph(R | X, 0, vaddr, 0x200, 0x200)], 0x200, &[(0x100, &[0xcc; 16])])
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A temporary file, removed on drop.
struct Temp(PathBuf);

impl Temp {
    fn new(bytes: &[u8], mode: u32) -> Temp {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("urun-loader-test-{}-{n}", std::process::id()));
        std::fs::write(&path, bytes).expect("write temp file");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        Temp(path)
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn opts() -> LoadOptions {
    LoadOptions {
        argv: vec![b"prog".to_vec(), b"one".to_vec()],
        envp: vec![b"HOME=/root".to_vec()],
        execfn: b"./prog".to_vec(),
        hwcap: 0x178b_fbff,
        hwcap2: 2,
        sysroot: None,
    }
}

fn unmap_all(mem: &AddressSpace) {
    for r in mem.regions() {
        mem.unmap(r.start, r.end - r.start).expect("unmap");
    }
}

/// Copy guest memory out.
fn peek(addr: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    // SAFETY: tests call this only on ranges the loader mapped readable
    // (guest address == host address).
    unsafe { std::ptr::copy_nonoverlapping(addr as *const u8, v.as_mut_ptr(), len) };
    v
}

fn peek_u64(addr: u64) -> u64 {
    let b = peek(addr, 8);
    u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

fn peek_cstr(addr: u64) -> Vec<u8> {
    let mut v = Vec::new();
    let mut a = addr;
    loop {
        let b = peek(a, 1)[0];
        if b == 0 {
            return v;
        }
        v.push(b);
        a += 1;
    }
}

/// Load a file that must fail; check the message, the exit code, and that
/// nothing was left mapped.
fn check(name: &str, path: &Path, want: &str, code: i32) {
    let mem = AddressSpace::new();
    match load(path, &mem, &opts()) {
        Ok(l) => {
            unmap_all(&mem);
            panic!("{name}: loaded ({l:?}), expected an error containing {want:?}");
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.contains(want), "{name}: message {msg:?} lacks {want:?}");
            assert_eq!(e.exit_code(), code, "{name}: exit code for {msg:?}");
        }
    }
    assert!(mem.regions().is_empty(), "{name}: mappings left behind: {:?}", mem.regions());
}

#[test]
fn bad_files_give_clear_errors() {
    let good = tiny_exec(0x2000_0000);
    let mut elf32 = good.clone();
    elf32[4] = 1;
    elf32[18] = 3;
    let mut bad_phentsize = good.clone();
    bad_phentsize[54] = 32;
    let mut pe = vec![0u8; 0x100];
    pe[..2].copy_from_slice(b"MZ");
    pe[0x3c] = 0x40;
    pe[0x40..0x44].copy_from_slice(b"PE\0\0");
    pe[0x40 + 24..0x40 + 26].copy_from_slice(&0x20bu16.to_le_bytes());
    let interp = b"/lib64/ld-linux-x86-64.so.2\0";
    let four = [load_ph(R, 0, 0x2000_0000, 0x100, 0x100); 4];
    let top = urun_cpu::mem::USER_TOP;

    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", vec![], "empty file"),
        ("text", b"hello, world\nsecond line\n".to_vec(), "not a program urun can run (text file?)"),
        ("junk", vec![0, 1, 2, 3, 0xff], "unknown format, starts with 00 01 02 03"),
        ("short header", good[..30].to_vec(), "truncated ELF: the ELF header needs 64 bytes, the file has 30"),
        ("tiny header", good[..10].to_vec(), "truncated ELF"),
        (
            "short phdrs",
            elf(2, 62, 0, &four, 0, &[])[..64 + 56 * 3].to_vec(),
            "truncated ELF: program header 3 lies past the end of the file (size 232)",
        ),
        ("aarch64", elf(2, 183, 0, &[], 64, &[]), "ELF for AArch64; urun runs x86-64"),
        ("riscv", elf(2, 243, 0, &[], 64, &[]), "ELF for RISC-V; urun runs x86-64"),
        ("i386", elf32, "32-bit ELF (i386); urun runs x86-64"),
        ("ET_REL", elf(1, 62, 0, &[], 64, &[]), "not an executable (ET_REL)"),
        ("ET_CORE", elf(4, 62, 0, &[], 64, &[]), "not an executable (ET_CORE)"),
        ("phentsize", bad_phentsize, "program header size is 32, not 56"),
        ("no phdrs", elf(2, 62, 0, &[], 64, &[]), "no program headers"),
        (
            "no PT_LOAD",
            elf(2, 62, 0, &[Ph { ty: PT_GNU_STACK, ..load_ph(R | W, 0, 0, 0, 0) }], 0, &[]),
            "no PT_LOAD segments",
        ),
        (
            "PT_INTERP without PT_LOAD",
            elf(
                2,
                62,
                0,
                &[Ph { ty: PT_INTERP, ..load_ph(R, 0x100, 0, interp.len() as u64, interp.len() as u64) }],
                0x200,
                &[(0x100, interp)],
            ),
            "no PT_LOAD segments",
        ),
        (
            "overlap",
            elf(
                2,
                62,
                0,
                &[load_ph(R, 0, 0x2000_0000, 0x200, 0x2000), load_ph(R, 0, 0x2000_1000, 0x200, 0x200)],
                0x200,
                &[],
            ),
            "overlapping PT_LOAD segments: 0x20000000..0x20002000 and 0x20001000..0x20001200",
        ),
        (
            "beyond user space",
            elf(2, 62, 0, &[load_ph(R, 0, top - 0x1000, 0x100, 0x2000)], 0x200, &[]),
            "segment at 0x7fffffffe000+0x2000 lies outside user space",
        ),
        (
            "address overflow",
            elf(2, 62, 0, &[load_ph(R, 0, u64::MAX - 0xfff, 0x100, 0x2000)], 0x200, &[]),
            "lies outside user space",
        ),
        (
            "segment past EOF",
            elf(2, 62, 0, &[load_ph(R, 0x1000, 0x2000_1000, 0x1000, 0x1000)], 0x200, &[]),
            "truncated ELF: segment 0 (file bytes 0x1000+0x1000) lies past the end of the file (size 512)",
        ),
        (
            "offset overflow",
            elf(2, 62, 0, &[load_ph(R, u64::MAX, 0x2000_0fff, 0x10, 0x10)], 0x200, &[]),
            "truncated ELF: segment 0",
        ),
        (
            "filesz > memsz",
            elf(2, 62, 0, &[load_ph(R, 0, 0x2000_0000, 0x200, 0x100)], 0x200, &[]),
            "p_filesz 0x200 is larger than p_memsz 0x100",
        ),
        (
            "misaligned",
            elf(2, 62, 0, &[load_ph(R, 0x10, 0x2000_0000, 0x100, 0x100)], 0x200, &[]),
            "differ modulo the page size",
        ),
        ("PE32+", pe.clone(), "PE32+ program where an ELF is needed"),
        ("MS-DOS", b"MZ\x90\0".to_vec(), "MS-DOS program"),
        ("script without interpreter", b"#!\n".to_vec(), "bad #! line"),
    ];
    for (name, bytes, want) in &cases {
        let f = Temp::new(bytes, 0o755);
        check(name, &f.0, want, 126);
    }

    // Cases about the file itself rather than its contents.
    let missing = std::env::temp_dir().join("urun-loader-test-does-not-exist");
    check("missing", &missing, "No such file", 127);
    let script = Temp::new(b"#!/nonexistent/urun-interp -x\necho\n", 0o755);
    check("missing interpreter", &script.0, "cannot open /nonexistent/urun-interp", 127);
    check("directory", &std::env::temp_dir(), "Is a directory", 126);
    check("device", Path::new("/dev/null"), "not a regular file", 126);
    let fifo = std::env::temp_dir().join(format!("urun-loader-test-fifo-{}", std::process::id()));
    let cfifo = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    if unsafe { libc::mkfifo(cfifo.as_ptr(), 0o755) } == 0 {
        check("fifo", &fifo, "not a regular file", 126);
        let _ = std::fs::remove_file(&fifo);
    }
    let s1 = Temp::new(b"#!/nonexistent\n", 0o755);
    let s2 = Temp::new(format!("#!{}\n", s1.0.display()).as_bytes(), 0o755);
    let s3 = Temp::new(format!("#!{}\n", s2.0.display()).as_bytes(), 0o755);
    let s4 = Temp::new(format!("#!{}\n", s3.0.display()).as_bytes(), 0o755);
    let s5 = Temp::new(format!("#!{}\n", s4.0.display()).as_bytes(), 0o755);
    check("script loop", &s5.0, "too many levels of #! interpreters", 126);
}

/// argv, envp and auxv as read back from a stack.
type Parsed = (Vec<Vec<u8>>, Vec<Vec<u8>>, Vec<(u64, u64)>);

/// Parse the initial stack from guest memory, as a C runtime does.
fn read_stack(sp: u64) -> Parsed {
    let argc = peek_u64(sp);
    let mut at = sp + 8;
    let argv = (0..argc).map(|i| peek_cstr(peek_u64(at + 8 * i))).collect();
    at += 8 * argc;
    assert_eq!(peek_u64(at), 0);
    at += 8;
    let mut envp = Vec::new();
    while peek_u64(at) != 0 {
        envp.push(peek_cstr(peek_u64(at)));
        at += 8;
    }
    at += 8;
    let mut auxv = Vec::new();
    loop {
        let e = (peek_u64(at), peek_u64(at + 8));
        auxv.push(e);
        at += 16;
        if e.0 == at::NULL {
            return (argv, envp, auxv);
        }
    }
}

fn aux(l: &Loaded, key: u64) -> u64 {
    l.auxv.iter().find(|e| e.0 == key).map_or_else(|| panic!("no auxv key {key}"), |e| e.1)
}

#[test]
fn loads_exec_with_bss_and_shared_page() {
    let base = 0x1000_0000u64;
    // The file is full of non-zero bytes so that zeroing shows.
    let filler = vec![0x5au8; 0x2000];
    let phs = [
        load_ph(R | X, 0, base, 0x200, 0x200),
        // Data: 0x100 file bytes then bss up to 0x4f00, over three pages.
        load_ph(R | W, 0x1000, base + 0x2000, 0x100, 0x2f00),
        // Read-only data starting in the last data page, ending in a new page.
        load_ph(R, 0xf80, base + 0x4f80, 0x40, 0x200),
    ];
    let mut bytes = elf(2, 62, base + 0x100, &phs, 0x2000, &[(0x1000, &filler[..0x1000])]);
    bytes[0x100..0x110].copy_from_slice(&[0xcc; 16]);
    bytes[0xf80..0x1000].copy_from_slice(&[0x77; 0x80]);
    let f = Temp::new(&bytes, 0o755);
    let mem = AddressSpace::new();
    let l = load(&f.0, &mem, &opts()).expect("load");

    assert_eq!(l.entry, base + 0x100);
    assert_eq!(l.load_bias, 0);
    assert_eq!(l.brk_start, base + 0x6000);
    assert_eq!((l.phdr, l.phnum), (base + 64, 3));
    assert_eq!(l.exe_path, std::fs::canonicalize(&f.0).unwrap());
    assert!(!l.stack_executable);

    let text = mem.region_at(base).expect("text mapped");
    assert_eq!(text.prot, Prot::RX);
    assert!(matches!(text.backing, Backing::File { offset: 0, .. }), "{:?}", text.backing);
    assert_eq!(peek(base + 0x100, 16), vec![0xcc; 16]);
    assert_eq!(mem.prot_at(base + 0x1000), None, "hole between text and data");
    assert_eq!(mem.prot_at(base + 0x2000), Some(Prot::RW));
    assert_eq!(peek(base + 0x2000, 0x100), vec![0x5a; 0x100]);
    assert_eq!(peek(base + 0x2100, 0x2e80), vec![0; 0x2e80], "bss is zero");
    // The shared page holds both: it is RW (the union).
    assert_eq!(mem.prot_at(base + 0x4000), Some(Prot::RW));
    assert_eq!(peek(base + 0x4f80, 0x40), vec![0x77; 0x40]);
    assert_eq!(peek(base + 0x4fc0, 0x1c0), vec![0; 0x1c0]);
    assert_eq!(mem.prot_at(base + 0x5000), Some(Prot::READ));
    // Nothing is reserved behind a fixed-address image.
    assert_eq!(mem.prot_at(base + 0x6000), None);
    assert_eq!(l.brk_reserve_end, l.brk_start);

    // The stack: mapped, named, and laid out right.
    let stack = mem.region_at(l.stack_pointer).expect("stack mapped");
    assert_eq!(stack.backing, Backing::Named("[stack]".into()));
    assert_eq!(stack.prot, Prot::RW);
    assert_eq!(stack.end - stack.start, STACK_SIZE);
    assert_eq!(l.stack_pointer % 16, 0);
    let (argv, envp, auxv) = read_stack(l.stack_pointer);
    assert_eq!(argv, opts().argv);
    assert_eq!(envp, opts().envp);
    assert_eq!(auxv, l.auxv);
    assert_eq!(aux(&l, at::PHDR), base + 64);
    assert_eq!(aux(&l, at::ENTRY), base + 0x100);
    assert_eq!(aux(&l, at::HWCAP), 0x178b_fbff);
    assert_eq!(peek_cstr(aux(&l, at::EXECFN)), b"./prog");
    assert_eq!(peek_cstr(aux(&l, at::PLATFORM)), b"x86_64");
    assert!(mem.check(aux(&l, at::RANDOM), 16, Prot::READ));
    // The program headers are readable where AT_PHDR says.
    assert_eq!(peek(aux(&l, at::PHDR), 4), PT_LOAD.to_le_bytes());
    unmap_all(&mem);
}

#[test]
fn loads_static_pie_at_a_free_aligned_base() {
    let phs = [
        Ph { ty: PT_PHDR, ..load_ph(R, 64, 64, 56 * 4, 56 * 4) },
        Ph { align: 0x10000, ..load_ph(R | X, 0, 0, 0x300, 0x300) },
        Ph { align: 0x10000, ..load_ph(R | W, 0x1000, 0x3000, 0x80, 0x1000) },
        Ph { ty: PT_GNU_STACK, ..load_ph(R | W | X, 0, 0, 0, 0) },
    ];
    let bytes = elf(3, 62, 0x200, &phs, 0x1080, &[(0x200, &[0x90; 4]), (0x1000, &[0x11; 0x80])]);
    let f = Temp::new(&bytes, 0o755);
    let mem = AddressSpace::new();
    let l = load(&f.0, &mem, &opts()).expect("load");
    let b = l.load_bias;
    assert!(b != 0 && b.is_multiple_of(0x10000), "bias {b:#x}");
    assert_eq!(l.entry, b + 0x200);
    assert_eq!(l.phdr, b + 64);
    assert_eq!(aux(&l, at::PHDR), b + 64);
    assert_eq!(l.brk_start, b + 0x4000);
    // Behind a position-independent image: the heap's no-access reservation.
    assert_eq!(l.brk_reserve_end, b + 0x4000 + crate::BRK_RESERVE);
    assert_eq!(mem.prot_at(b + 0x4000), Some(Prot::NONE));
    assert_eq!(peek(b + 0x200, 4), vec![0x90; 4]);
    assert_eq!(mem.prot_at(b), Some(Prot::RX));
    assert!(mem.is_free(b + 0x1000, 0x2000), "the hole is unmapped");
    assert_eq!(mem.prot_at(b + 0x3000), Some(Prot::RW));
    assert_eq!(peek(b + 0x3000, 0x80), vec![0x11; 0x80]);
    assert_eq!(peek(b + 0x3080, 0xf80), vec![0; 0xf80]);
    assert!(l.stack_executable);
    assert_eq!(mem.prot_at(l.stack_pointer), Some(Prot::RW.union(Prot::EXEC)));
    unmap_all(&mem);
}

#[test]
fn script_runs_its_interpreter() {
    let exe = Temp::new(&tiny_exec(0x1400_0000), 0o755);
    let script = Temp::new(format!("#!{} -v\nbody\n", exe.0.display()).as_bytes(), 0o755);
    let mem = AddressSpace::new();
    let l = load(&script.0, &mem, &opts()).expect("load");
    let (argv, _, _) = read_stack(l.stack_pointer);
    let want: Vec<Vec<u8>> = vec![
        exe.0.as_os_str().as_bytes().to_vec(),
        b"-v".to_vec(),
        script.0.as_os_str().as_bytes().to_vec(),
        b"one".to_vec(),
    ];
    assert_eq!(argv, want);
    assert_eq!(l.exe_path, std::fs::canonicalize(&exe.0).unwrap());
    assert_eq!(peek_cstr(aux(&l, at::EXECFN)), b"./prog");
    unmap_all(&mem);
}

#[test]
fn segment_over_urun_memory_fails_and_leaves_it_alone() {
    // Two pages of urun's own memory; the guest map knows nothing of them.
    // SAFETY: a fresh anonymous mapping owned by this test.
    let own = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            2 * PAGE_SIZE as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(own, libc::MAP_FAILED);
    let own = own as u64;
    // SAFETY: the mapping above is ours and writable.
    unsafe { std::ptr::write_bytes(own as *mut u8, 0x77, 2 * PAGE_SIZE as usize) };

    let one = Temp::new(&tiny_exec(own), 0o755);
    check("one segment", &one.0, &format!("segment at {own:#x}+0x1000 overlaps memory that is not the guest's"), 126);

    // A first segment in free space, the second over urun's page: the first
    // must be unmapped again.
    let before = own - PAGE_SIZE;
    // SAFETY: probing with MAP_FIXED_NOREPLACE replaces nothing.
    let probe = unsafe {
        libc::mmap(
            before as *mut libc::c_void,
            PAGE_SIZE as usize,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
            -1,
            0,
        )
    };
    if probe as u64 == before {
        // SAFETY: we just mapped this page.
        unsafe { libc::munmap(probe, PAGE_SIZE as usize) };
        let phs = [load_ph(R, 0, before, 0x200, 0x200), load_ph(R | W, 0x1000, own, 0x10, 0x10)];
        let two = Temp::new(&elf(2, 62, before, &phs, 0x1010, &[]), 0o755);
        check("second segment", &two.0, "overlaps memory that is not the guest's", 126);
    } else {
        eprintln!("skipped the two-segment case: the page below the test mapping is taken");
    }

    assert_eq!(peek(own, 2 * PAGE_SIZE as usize), vec![0x77; 2 * PAGE_SIZE as usize], "urun's memory untouched");
    // SAFETY: the test's own mapping, no longer used.
    unsafe { libc::munmap(own as *mut libc::c_void, 2 * PAGE_SIZE as usize) };
}

#[test]
fn hostile_headers_never_panic() {
    // Every single-byte corruption of the header and program header of a
    // valid file either loads or fails cleanly.
    let good = tiny_exec(0x1800_0000);
    let mem = AddressSpace::new();
    for at in 0..64 + 56 {
        for v in [0x00, 0x01, 0x7f, 0x80, 0xff] {
            let mut bad = good.clone();
            bad[at] = v;
            let f = Temp::new(&bad, 0o755);
            if load(&f.0, &mem, &opts()).is_ok() {
                unmap_all(&mem);
            }
            assert!(mem.regions().is_empty());
        }
    }
}

#[test]
fn loads_real_static_binaries_when_present() {
    // Debian's ldconfig is a static PIE; busybox is often a static ET_EXEC.
    for p in ["/sbin/ldconfig", "/usr/bin/busybox"] {
        let path = Path::new(p);
        let Ok(bytes) = std::fs::read(path) else {
            eprintln!("skipped {p}: not present");
            continue;
        };
        let mem = AddressSpace::new();
        match load(path, &mem, &opts()) {
            Ok(l) => {
                // The program headers in memory are the file's.
                let n = (l.phnum * 56) as usize;
                assert_eq!(peek(l.phdr, n), bytes[64..64 + n], "{p}");
                assert_eq!(l.stack_pointer % 16, 0);
                unmap_all(&mem);
            }
            Err(e) => panic!("{p}: {e}"),
        }
    }
}
