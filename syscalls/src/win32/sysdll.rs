//! urun's system DLLs as small PE images in guest memory: DOS and NT
//! headers, a `.text` section holding one 16-byte stub per export urun
//! implements, and an `.edata` section with a real export directory (names
//! sorted, ordinals from 1) whose entries point at those stubs, or at the
//! personality's data area for data exports. So `GetModuleHandle` gives an
//! image base, and a program or runtime walking the export table finds the
//! same functions `GetProcAddress` does.

use super::table::{Dll, Imp, KNOWN_EMPTY, TABLE};
use super::DataObj;

/// Images are placed on this alignment (Windows' allocation granularity).
pub(crate) const IMAGE_ALIGN: u64 = 0x1_0000;
const PAGE: u64 = 0x1000;
const PE_OFF: usize = 0x40;
const OPT_OFF: usize = PE_OFF + 24;
const OPT_SIZE: usize = 0xf0;
const SECTIONS_OFF: usize = OPT_OFF + OPT_SIZE;

/// The stub whose number is `n`: `mov r10, rcx; mov eax, MARKER | n;
/// syscall; ret`, int3 padding. Stub 0, the upcall return trap, moves RAX
/// (the upcall's result) to R10 instead, since the `mov eax` clobbers it.
pub(crate) fn stub_code(n: usize) -> [u8; 16] {
    let eax = super::MARKER | n as u32;
    let first: [u8; 3] = if n == 0 { [0x49, 0x89, 0xc2] } else { [0x4c, 0x8b, 0xd1] };
    let mut c = [0xccu8; 16];
    c[..3].copy_from_slice(&first);
    c[3] = 0xb8;
    c[4..8].copy_from_slice(&eax.to_le_bytes());
    c[8..11].copy_from_slice(&[0x0f, 0x05, 0xc3]);
    c
}

/// Every DLL that gets an image: ntdll, kernel32, msvcrt, then the DLLs
/// urun knows by name only (empty export directories).
pub(crate) fn all() -> Vec<Dll> {
    let mut v = vec![Dll::Ntdll, Dll::Kernel32, Dll::Msvcrt];
    v.extend(KNOWN_EMPTY.iter().map(|n| Dll::Other(n)));
    v
}

/// The file name a system DLL reports (`KERNEL32.dll`, as Windows spells it).
pub(crate) fn file_name(dll: Dll) -> String {
    match dll {
        Dll::Ntdll => "ntdll.dll".into(),
        Dll::Kernel32 => "KERNEL32.DLL".into(),
        Dll::Msvcrt => "msvcrt.dll".into(),
        Dll::Other(n) => format!("{n}.dll"),
    }
}

/// The table entries `dll` exports, in table order (ordinal = position + 1).
fn exports_of(dll: Dll) -> Vec<usize> {
    TABLE.iter().enumerate().filter(|(_, e)| e.dll == dll).map(|(i, _)| i).collect()
}

fn text_len(n: usize) -> u64 {
    (n as u64 * 16).div_ceil(PAGE).max(1) * PAGE
}

fn edata_len(dll: Dll, ex: &[usize]) -> u64 {
    let names: usize = ex.iter().map(|&i| TABLE[i].name.len() + 1).sum();
    let raw = 40 + 10 * ex.len() + names + file_name(dll).len() + 1;
    (raw as u64).div_ceil(PAGE).max(1) * PAGE
}

/// SizeOfImage of `dll`'s image.
pub(crate) fn image_size(dll: Dll) -> u64 {
    let ex = exports_of(dll);
    PAGE + text_len(ex.len()) + edata_len(dll, &ex)
}

/// A built image: its bytes (to copy to `base`), and where each table
/// export's stub is (table index, absolute address).
pub(crate) struct Built {
    pub bytes: Vec<u8>,
    pub stubs: Vec<(usize, u64)>,
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}
fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// Build `dll`'s image for `base`. `data` gives the address of a data
/// object, which must lie above `base` and within 4 GiB of it.
pub(crate) fn build(dll: Dll, base: u64, data: &dyn Fn(DataObj) -> u64) -> Built {
    let ex = exports_of(dll);
    let size = image_size(dll);
    let text_rva = PAGE;
    let tlen = text_len(ex.len());
    let edata_rva = text_rva + tlen;
    let elen = edata_len(dll, &ex);
    let mut b = vec![0u8; size as usize];
    // DOS header.
    b[0..2].copy_from_slice(b"MZ");
    put32(&mut b, 0x3c, PE_OFF as u32);
    // NT headers.
    b[PE_OFF..PE_OFF + 4].copy_from_slice(b"PE\0\0");
    let coff = PE_OFF + 4;
    put16(&mut b, coff, 0x8664);
    put16(&mut b, coff + 2, 2);
    put16(&mut b, coff + 16, OPT_SIZE as u16);
    // EXECUTABLE_IMAGE | LARGE_ADDRESS_AWARE | DLL
    put16(&mut b, coff + 18, 0x2022);
    let o = OPT_OFF;
    put16(&mut b, o, 0x20b);
    put32(&mut b, o + 4, tlen as u32);
    put32(&mut b, o + 8, elen as u32);
    put32(&mut b, o + 20, text_rva as u32);
    put64(&mut b, o + 24, base);
    put32(&mut b, o + 32, PAGE as u32);
    put32(&mut b, o + 36, PAGE as u32);
    put16(&mut b, o + 40, 10);
    put16(&mut b, o + 48, 10);
    put32(&mut b, o + 56, size as u32);
    put32(&mut b, o + 60, PAGE as u32);
    put16(&mut b, o + 68, 3);
    // DYNAMIC_BASE | NX_COMPAT | HIGH_ENTROPY_VA
    put16(&mut b, o + 70, 0x0160);
    put32(&mut b, o + 108, 16);
    // Data directory 0: exports.
    put32(&mut b, o + 112, edata_rva as u32);
    put32(&mut b, o + 116, elen as u32);
    // Section headers.
    let sections: [(&[u8], u64, u64, u32); 2] =
        [(b".text", text_rva, tlen, 0x6000_0020), (b".edata", edata_rva, elen, 0x4000_0040)];
    for (k, (name, rva, len, ch)) in sections.iter().enumerate() {
        let s = SECTIONS_OFF + 40 * k;
        b[s..s + name.len()].copy_from_slice(name);
        put32(&mut b, s + 8, *len as u32);
        put32(&mut b, s + 12, *rva as u32);
        put32(&mut b, s + 16, *len as u32);
        put32(&mut b, s + 20, *rva as u32);
        put32(&mut b, s + 36, *ch);
    }
    // Stubs and function addresses.
    let mut stubs = Vec::new();
    let mut funcs = Vec::with_capacity(ex.len());
    let mut slot = 0u64;
    for &i in &ex {
        match TABLE[i].imp {
            Imp::Host(_) => {
                let at = text_rva + 16 * slot;
                b[at as usize..at as usize + 16].copy_from_slice(&stub_code(i + 1));
                stubs.push((i, base + at));
                funcs.push(at as u32);
                slot += 1;
            }
            Imp::Data(obj) => funcs.push(data(obj).wrapping_sub(base) as u32),
        }
    }
    // The export directory: header, functions, names, ordinals, strings.
    let e = edata_rva as usize;
    let n = ex.len();
    let (afuncs, anames, aords) = (e + 40, e + 40 + 4 * n, e + 40 + 8 * n);
    let mut strings = e + 40 + 10 * n;
    let dll_name = file_name(dll);
    put32(&mut b, e + 12, strings as u32);
    b[strings..strings + dll_name.len()].copy_from_slice(dll_name.as_bytes());
    strings += dll_name.len() + 1;
    put32(&mut b, e + 16, 1);
    put32(&mut b, e + 20, n as u32);
    put32(&mut b, e + 24, n as u32);
    put32(&mut b, e + 28, afuncs as u32);
    put32(&mut b, e + 32, anames as u32);
    put32(&mut b, e + 36, aords as u32);
    for (k, f) in funcs.iter().enumerate() {
        put32(&mut b, afuncs + 4 * k, *f);
    }
    let mut sorted: Vec<(usize, &str)> = ex.iter().enumerate().map(|(k, &i)| (k, TABLE[i].name)).collect();
    sorted.sort_by(|a, b| a.1.as_bytes().cmp(b.1.as_bytes()));
    for (j, (k, name)) in sorted.iter().enumerate() {
        put32(&mut b, anames + 4 * j, strings as u32);
        put16(&mut b, aords + 2 * j, *k as u16);
        b[strings..strings + name.len()].copy_from_slice(name.as_bytes());
        strings += name.len() + 1;
    }
    Built { bytes: b, stubs }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::win32::modules::Exports;

    /// The images' export directories read back (through the same parser
    /// that reads real DLLs) with every table export findable by name and
    /// pointing at its stub.
    #[test]
    fn images_export_the_table() {
        for dll in all() {
            let base = 0x7ff0_0000_0000;
            let built = build(dll, base, &|_| base + 0x10_0000);
            let read = |rva: u64, buf: &mut [u8]| {
                let s = built.bytes.get(rva as usize..rva as usize + buf.len());
                s.map(|s| buf.copy_from_slice(s)).is_some()
            };
            let ex = Exports::parse(&read).expect("an export directory");
            for &i in &exports_of(dll) {
                let rva = ex.by_name(TABLE[i].name).unwrap_or_else(|| panic!("{dll:?} lacks {}", TABLE[i].name));
                if let Some((_, addr)) = built.stubs.iter().find(|(k, _)| *k == i) {
                    assert_eq!(base + u64::from(rva), *addr);
                    let off = rva as usize;
                    assert_eq!(built.bytes[off..off + 16], stub_code(i + 1));
                }
            }
            assert_eq!(ex.by_name("NoSuchFunction"), None);
        }
    }
}
