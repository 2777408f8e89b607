//! The PE32+ loader against small images made here, byte by byte.

use super::*;

const BASE: u64 = 0x2000_0000_0000;

fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}
fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// File offset of the optional header and of the data directories.
const OPT: usize = 0x80 + 24;
const DIRS: usize = OPT + 112;

/// A PE32+ console program: `.text` at 0x1000 (RX), `.data` at 0x2000
/// (RW) holding an import of KERNEL32.dll (ExitProcess by name, #7 by
/// ordinal), a pointer to relocate, a TLS directory with one callback, and
/// the base relocations.
fn tiny_pe() -> Vec<u8> {
    let mut f = vec![0u8; 0x800];
    f[0..2].copy_from_slice(b"MZ");
    put32(&mut f, 0x3c, 0x80);
    f[0x80..0x84].copy_from_slice(b"PE\0\0");
    put16(&mut f, 0x84, IMAGE_FILE_MACHINE_AMD64);
    put16(&mut f, 0x86, 2);
    put16(&mut f, 0x94, 240);
    put16(&mut f, 0x96, 0x22);
    put16(&mut f, OPT, PE32PLUS_MAGIC);
    put32(&mut f, OPT + 16, 0x1000);
    put64(&mut f, OPT + 24, BASE);
    put32(&mut f, OPT + 32, 0x1000);
    put32(&mut f, OPT + 36, 0x200);
    put32(&mut f, OPT + 56, 0x3000);
    put32(&mut f, OPT + 60, 0x400);
    put16(&mut f, OPT + 68, 3);
    put64(&mut f, OPT + 72, 0x20_0000);
    put64(&mut f, OPT + 80, 0x1000);
    put32(&mut f, OPT + 108, 16);
    let dir = |f: &mut Vec<u8>, i: usize, rva: u32, size: u32| {
        put32(f, DIRS + 8 * i, rva);
        put32(f, DIRS + 8 * i + 4, size);
    };
    dir(&mut f, 1, 0x2000, 40);
    dir(&mut f, 3, 0x2140, 12);
    dir(&mut f, 9, 0x20d0, 40);
    let sec = |f: &mut Vec<u8>, i: usize, name: &[u8], va: u32, raw: u32, ch: u32| {
        let s = OPT + 240 + 40 * i;
        f[s..s + name.len()].copy_from_slice(name);
        put32(f, s + 8, 0x200);
        put32(f, s + 12, va);
        put32(f, s + 16, 0x200);
        put32(f, s + 20, raw);
        put32(f, s + 36, ch);
    };
    sec(&mut f, 0, b".text", 0x1000, 0x400, 0x6000_0020);
    sec(&mut f, 1, b".data", 0x2000, 0x600, 0xc000_0040);
    f[0x400] = 0xc3;
    // .data: file 0x600 is RVA 0x2000.
    let d = |rva: usize| rva - 0x2000 + 0x600;
    put32(&mut f, d(0x2000), 0x2040);
    put32(&mut f, d(0x2000) + 12, 0x2080);
    put32(&mut f, d(0x2000) + 16, 0x2060);
    for t in [0x2040, 0x2060] {
        put64(&mut f, d(t), 0x2090);
        put64(&mut f, d(t) + 8, (1 << 63) | 7);
    }
    f[d(0x2080)..d(0x2080) + 12].copy_from_slice(b"KERNEL32.dll");
    f[d(0x2092)..d(0x2092) + 11].copy_from_slice(b"ExitProcess");
    put64(&mut f, d(0x20c0), BASE + 0x1000);
    put64(&mut f, d(0x20d0), BASE + 0x2100);
    put64(&mut f, d(0x20d0) + 8, BASE + 0x2108);
    put64(&mut f, d(0x20d0) + 16, BASE + 0x2110);
    put64(&mut f, d(0x20d0) + 24, BASE + 0x2118);
    put32(&mut f, d(0x20d0) + 32, 8);
    put64(&mut f, d(0x2118), BASE + 0x1000);
    // Base relocations: one block for page 0x2000.
    let entries: [u16; 8] = [0xa0c0, 0xa0d0, 0xa0d8, 0xa0e0, 0xa0e8, 0xa118, 0, 0];
    put32(&mut f, d(0x2180), 0x2000);
    put32(&mut f, d(0x2180) + 4, 8 + 2 * entries.len() as u32);
    for (i, e) in entries.iter().enumerate() {
        put16(&mut f, d(0x2180) + 8 + 2 * i, *e);
    }
    dir(&mut f, 5, 0x2180, 8 + 2 * entries.len() as u32);
    f
}

#[test]
fn parses_a_console_program() {
    let img = build(&tiny_pe()).expect("a valid image");
    assert_eq!(img.preferred_base, BASE);
    assert_eq!((img.entry_rva, img.subsystem, img.stack_reserve, img.stack_commit), (0x1000, 3, 0x20_0000, 0x1000));
    assert!(!img.is_dll);
    assert_eq!(img.bytes.len(), 0x3000);
    assert_eq!(img.bytes[0x1000], 0xc3);
    assert_eq!(img.sections, vec![(0, 0x1000, Prot::READ), (0x1000, 0x1000, Prot::RX), (0x2000, 0x1000, Prot::RW)]);
    let imports = img.imports().expect("imports");
    assert_eq!(
        imports,
        vec![
            ("KERNEL32.dll".to_string(), ImportName::Name("ExitProcess".into()), 0x2060),
            ("KERNEL32.dll".to_string(), ImportName::Ordinal(7), 0x2068),
        ]
    );
    let tls = img.tls(BASE).expect("tls").expect("a TLS directory");
    assert_eq!(
        tls,
        Tls {
            start: BASE + 0x2100,
            end: BASE + 0x2108,
            zero_fill: 8,
            index_addr: BASE + 0x2110,
            callbacks: vec![BASE + 0x1000]
        }
    );
    assert_eq!(img.exception_dir, Some((0x2140, 12)));
}

#[test]
fn relocates_dir64_entries() {
    let mut img = build(&tiny_pe()).expect("a valid image");
    let to = BASE + 0x1_0000;
    img.relocate(to).expect("relocation");
    assert_eq!(u64_at(&img.bytes, 0x20c0), Some(to + 0x1000));
    let tls = img.tls(to).expect("tls").expect("a TLS directory");
    assert_eq!((tls.start, tls.index_addr, tls.callbacks), (to + 0x2100, to + 0x2110, vec![to + 0x1000]));
    // A relocation type x86-64 images never use is refused.
    let mut f = tiny_pe();
    put16(&mut f, 0x600 + 0x188, 0x30c0);
    let mut img = build(&f).expect("a valid image");
    assert!(matches!(img.relocate(to), Err(LoadError::BadPe(m)) if m.contains("relocation type 3")));
}

/// Foreign and .NET images get their own one-line reason.
#[test]
fn refuses_foreign_images() {
    let check = |f: Vec<u8>, want: &str| match build(&f) {
        Err(e) => assert!(e.to_string().contains(want), "{e} should mention {want}"),
        Ok(_) => panic!("accepted an image that should mention {want}"),
    };
    let mut f = tiny_pe();
    put16(&mut f, 0x84, IMAGE_FILE_MACHINE_I386);
    check(f, "i386");
    let mut f = tiny_pe();
    put16(&mut f, 0x84, IMAGE_FILE_MACHINE_ARM64);
    check(f, "ARM64");
    let mut f = tiny_pe();
    put32(&mut f, DIRS + 8 * 14, 0x2000);
    put32(&mut f, DIRS + 8 * 14 + 4, 72);
    check(f, ".NET");
    let mut f = tiny_pe();
    put16(&mut f, OPT, PE32_MAGIC);
    check(f, "PE32");
    let mut f = tiny_pe();
    f[0x80] = b'X';
    check(f, "MS-DOS");
}

/// Every prefix of a valid image, and the image with any one byte of its
/// headers and tables smashed, is refused or accepted without a panic.
#[test]
fn truncated_and_corrupt_images_never_panic() {
    let f = tiny_pe();
    for len in 0..f.len() {
        if let Ok(img) = build(&f[..len]) {
            let _ = img.imports();
            let _ = img.tls(BASE);
        }
    }
    assert!(matches!(build(&f[..0x100]), Err(LoadError::TruncatedPe(_))));
    assert!(matches!(build(&f[..0x700]), Err(LoadError::TruncatedPe(m)) if m.contains(".data")));
    for at in (0..0x300).chain(0x600..0x800) {
        for v in [0x00, 0x7f, 0xff] {
            let mut g = f.clone();
            g[at] = v;
            if let Ok(mut img) = build(&g) {
                let _ = img.imports();
                let _ = img.tls(BASE);
                let _ = img.relocate(BASE + 0x10000);
            }
        }
    }
}

/// The first image goes at its preferred base; a second copy, whose base
/// is then taken, is relocated; the sections get their protections.
#[test]
fn maps_at_the_preferred_base_or_relocated() {
    let dir = std::env::temp_dir().join(format!("urun-pe-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("tiny.exe");
    std::fs::write(&path, tiny_pe()).expect("write");
    let mem = AddressSpace::new();
    let bytes = tiny_pe();
    let a = load(&path, &bytes, &mem).expect("first load");
    assert_eq!(a.base, BASE);
    assert_eq!(a.entry, BASE + 0x1000);
    assert_eq!(a.imports[0].iat, BASE + 0x2060);
    let b = load(&path, &bytes, &mem).expect("second load, relocated");
    assert_ne!(b.base, BASE);
    // SAFETY: the image was just mapped readable by `load`.
    let ptr = unsafe { std::ptr::read((b.base + 0x20c0) as *const u64) };
    assert_eq!(ptr, b.base + 0x1000);
    assert_eq!(b.tls.as_ref().map(|t| t.callbacks.clone()), Some(vec![b.base + 0x1000]));
    b.protect(&mem).expect("protect");
    assert_eq!(mem.prot_at(b.base + 0x1000), Some(Prot::RX));
    assert_eq!(mem.prot_at(b.base), Some(Prot::READ));
    assert_eq!(mem.prot_at(b.base + 0x2000), Some(Prot::RW));
    // An image without relocations cannot move.
    let mut f = tiny_pe();
    put32(&mut f, DIRS + 8 * 5, 0);
    put32(&mut f, DIRS + 8 * 5 + 4, 0);
    assert!(matches!(load(&path, &f, &mem), Err(LoadError::PeBaseTaken { .. })));
    for l in [&a, &b] {
        mem.unmap(l.base, l.size).expect("unmap");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
