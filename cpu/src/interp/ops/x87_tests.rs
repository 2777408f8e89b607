//! x87 against the host: each case runs natively (in an RWX harness that
//! loads the x87 state with FXRSTOR, runs the instruction, and saves it with
//! FXSAVE and FNSTENV) and in the interpreter from the same state, memory
//! and RFLAGS, and compares the registers bit for bit, FCW, FSW, the full
//! tag word, MXCSR, XMM, RAX, the status flags and the data area.
//!
//! A case whose native run leaves an unmasked exception pending (ES set; the
//! harness executes only non-waiting instructions afterwards, so the host
//! never traps) must make the interpreter fault with the matching si_code
//! and the same exception flags.

use super::host::{self, fx, Fx};
use super::si_code;
use crate::engine::{Exit, Fault, FaultKind};
use crate::interp::testutil::Snippet;
use crate::state::{fl, reg, X87};

const PAGE: usize = 8192;
const IN: usize = 4096;
const OUT: usize = 4608;
const HOST: usize = 5120;
const ENV: usize = 5632;
const FLAGS_IN: usize = 5680;
const FLAGS_OUT: usize = 5688;
const RAX_IN: usize = 5696;
const RAX_OUT: usize = 5704;
const RDI_IN: usize = 5712;

/// Bytes of the data area seeded and compared.
const WINDOW: usize = 512;

/// Append `bytes` then a RIP-relative ModRM (`reg` field `r`) to `target`.
fn rip(c: &mut Vec<u8>, bytes: &[u8], r: u8, target: usize) {
    c.extend_from_slice(bytes);
    c.push((r << 3) | 5);
    let end = c.len() + 4;
    c.extend_from_slice(&((target as i64 - end as i64) as i32).to_le_bytes());
}

struct Native {
    page: *mut u8,
}

/// What a native run leaves: the FXSAVE image, the FNSTENV image, RFLAGS
/// and RAX.
struct NativeOut {
    img: Fx,
    env: [u8; 28],
    flags: u64,
    rax: u64,
}

impl Native {
    fn new() -> Option<Native> {
        // SAFETY: a fresh anonymous mapping touches no existing memory.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                PAGE,
                libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        (p != libc::MAP_FAILED).then(|| Native { page: p as *mut u8 })
    }

    fn run(&mut self, insn: &[u8], input: &Fx, flags: u64, rax: u64, rdi: u64) -> NativeOut {
        let mut c = Vec::with_capacity(256);
        rip(&mut c, &[0x48, 0x0f, 0xae], 0, HOST); // fxsave64 [host]
        rip(&mut c, &[0x48, 0x0f, 0xae], 1, IN); // fxrstor64 [in]
        rip(&mut c, &[0x48, 0x8b], 7, RDI_IN); // mov rdi, [rdi_in]
        rip(&mut c, &[0x48, 0x8b], 0, RAX_IN); // mov rax, [rax_in]
        rip(&mut c, &[0xff], 6, FLAGS_IN); // push qword [flags_in]
        c.push(0x9d); // popfq
        c.extend_from_slice(insn);
        c.push(0x9c); // pushfq
        rip(&mut c, &[0x8f], 0, FLAGS_OUT); // pop qword [flags_out]
        rip(&mut c, &[0x48, 0x89], 0, RAX_OUT); // mov [rax_out], rax
        rip(&mut c, &[0x48, 0x0f, 0xae], 0, OUT); // fxsave64 [out]
        rip(&mut c, &[0xd9], 6, ENV); // fnstenv [env]
        rip(&mut c, &[0x48, 0x0f, 0xae], 1, HOST); // fxrstor64 [host]
        c.extend_from_slice(&[0xfc, 0xc3]); // cld; ret
        assert!(c.len() < IN);
        // SAFETY: our own RWX page; the code fits below IN and the data
        // block inside the page. The harness keeps every callee-saved
        // register and RSP, restores the host's x87/SSE state, and runs only
        // non-waiting x87 instructions after the one under test, so a
        // pending unmasked exception never traps. The caller only passes
        // instructions whose memory operand is `[rdi]` in the data area.
        unsafe {
            std::ptr::copy_nonoverlapping(c.as_ptr(), self.page, c.len());
            std::ptr::copy_nonoverlapping(input.0.as_ptr(), self.page.add(IN), 512);
            (self.page.add(FLAGS_IN) as *mut u64).write(flags);
            (self.page.add(RAX_IN) as *mut u64).write(rax);
            (self.page.add(RDI_IN) as *mut u64).write(rdi);
            let f: extern "C" fn() = std::mem::transmute(self.page);
            f();
            let mut out = NativeOut { img: Fx::zeroed(), env: [0; 28], flags: 0, rax: 0 };
            std::ptr::copy_nonoverlapping(self.page.add(OUT), out.img.0.as_mut_ptr(), 512);
            std::ptr::copy_nonoverlapping(self.page.add(ENV), out.env.as_mut_ptr(), 28);
            out.flags = (self.page.add(FLAGS_OUT) as *const u64).read();
            out.rax = (self.page.add(RAX_OUT) as *const u64).read();
            out
        }
    }
}

impl Drop for Native {
    fn drop(&mut self) {
        // SAFETY: unmapping our own mapping.
        unsafe { libc::munmap(self.page as *mut libc::c_void, PAGE) };
    }
}

/// An 80-bit value from sign+exponent and significand.
const fn f80(se: u16, m: u64) -> [u8; 10] {
    let mut r = [0u8; 10];
    let mb = m.to_le_bytes();
    let mut i = 0;
    while i < 8 {
        r[i] = mb[i];
        i += 1;
    }
    r[8] = se as u8;
    r[9] = (se >> 8) as u8;
    r
}

/// An f64 widened exactly to 80 bits (normal values only).
fn from_f64(v: f64) -> [u8; 10] {
    let b = v.to_bits();
    let sign = ((b >> 63) as u16) << 15;
    let e = ((b >> 52) & 0x7ff) as i32;
    let m = b & ((1 << 52) - 1);
    if e == 0 && m == 0 {
        return f80(sign, 0);
    }
    assert!(e != 0 && e != 0x7ff);
    f80(sign | (e - 1023 + 16383) as u16, (1 << 63) | (m << 11))
}

/// Operand values: zeros, ones, infinities, NaNs of each kind, denormals,
/// pseudo-denormals, unnormals, pseudo-NaN/infinity, extremes, values that
/// round differently per mode, integer-conversion boundaries, multiples of
/// pi and arguments beyond FSIN's range.
fn values() -> Vec<[u8; 10]> {
    let mut v = vec![
        f80(0, 0),
        f80(0x8000, 0),
        f80(0x7fff, 1 << 63),               // +inf
        f80(0xffff, 1 << 63),               // -inf
        f80(0x7fff, 0xc000_0000_0000_0000), // QNaN
        f80(0xffff, 0xc000_0000_0000_0000), // indefinite
        f80(0x7fff, 0xa000_0000_0000_0001), // SNaN
        f80(0xffff, 0xe123_4567_89ab_cdef), // -QNaN payload
        f80(0x0000, 1),                     // smallest denormal
        f80(0x8000, 0x7fff_ffff_ffff_ffff), // -largest denormal
        f80(0x0000, 0x8000_0000_0000_0001), // pseudo-denormal
        f80(0x3fff, 0x4000_0000_0000_0000), // unnormal
        f80(0x7fff, 0x4000_0000_0000_0000), // pseudo-NaN
        f80(0x7fff, 0),                     // pseudo-infinity
        f80(0x7ffe, u64::MAX),              // largest finite
        f80(0xfffe, u64::MAX),              // -largest finite
        f80(0x0001, 1 << 63),               // smallest normal
        f80(0x3fff, 0x8000_0000_0000_0001), // 1 + 2^-63
        f80(0xbfff, 0xffff_ffff_ffff_ffff), // -(2 - 2^-63)
        f80(0x403e, 1 << 63),               // 2^63
        f80(0xc03e, 1 << 63),               // -2^63
        f80(0x403f, 1 << 63),               // 2^64 (beyond FSIN)
        f80(0x3ffd, 0xaaaa_aaaa_aaaa_aaab), // ~1/3
        f80(0x43ff, 0x8000_0000_0000_0123), // huge
        f80(0x3c00, 0xc000_0000_0000_0001), // tiny
    ];
    for x in [
        1.0,
        -1.0,
        2.0,
        0.5,
        1.5,
        2.5,
        -2.5,
        3.0,
        10.0,
        32767.5,
        -32768.5,
        65536.0,
        2147483648.0,
        -123456789.75,
        1e300,
        1e-300,
        0.1,
    ] {
        v.push(from_f64(x));
    }
    // Multiples of pi at full precision (pi's 64-bit significand).
    let pi = 0xc90f_daa2_2168_c235u64;
    v.push(f80(0x4000, pi)); // pi
    v.push(f80(0xc000, pi)); // -pi
    v.push(f80(0x4001, pi)); // 2pi
    v.push(f80(0x3fff, pi)); // pi/2
    v.push(f80(0x4004, pi)); // 16pi
    v.push(f80(0x4030, pi)); // 2^48 pi
    v
}

/// Control words: each rounding mode × each valid precision, all masked;
/// and the default settings with every exception unmasked.
fn control_words() -> Vec<u16> {
    let mut v = Vec::new();
    for rc in 0..4u16 {
        for pc in [0u16, 2, 3] {
            v.push(0x0040 | (rc << 10) | (pc << 8) | 0x3f);
        }
    }
    v.push(0x0340);
    v.push(0x0340 | 0x20); // precision masked, the rest unmasked
    v
}

/// The starting state of a case: ST(0)..ST(`valid`-1) valid, the rest
/// empty (but holding values), TOP chosen so ST(0) is physical 8-`valid`.
#[derive(Clone)]
struct State {
    st: [[u8; 10]; 8],
    valid: usize,
    fcw: u16,
    fsw_flags: u16,
}

impl State {
    fn top(&self) -> usize {
        (8 - self.valid) & 7
    }
    fn x87(&self) -> X87 {
        let top = self.top();
        let mut x = X87 { fcw: self.fcw, fsw: ((top as u16) << 11) | self.fsw_flags, ..X87::default() };
        let mut abridged = 0u8;
        for j in 0..8 {
            let p = (top + j) & 7;
            x.st[p] = self.st[j];
            if j < self.valid {
                abridged |= 1 << p;
            }
        }
        x.ftw = host::full_tag(abridged, &x.st);
        x
    }
}

/// Seeded XMM contents, so FXSAVE/FXRSTOR cases see them.
fn xmm_seed() -> [u128; 16] {
    std::array::from_fn(|i| 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210u128.rotate_left(8 * i as u32) ^ i as u128)
}

struct Harness {
    snippet: Snippet,
    native: Native,
    checked: usize,
    faults: usize,
    failures: Vec<String>,
}

impl Harness {
    fn new() -> Option<Harness> {
        match Native::new() {
            Some(native) => {
                Some(Harness { snippet: Snippet::new(), native, checked: 0, faults: 0, failures: Vec::new() })
            }
            None => {
                eprintln!("x87 oracle: SKIPPED, the host refuses an RWX mapping");
                None
            }
        }
    }

    fn seed(&self, mem: &[u8]) {
        let mut w = [0x5au8; WINDOW];
        w[..mem.len()].copy_from_slice(mem);
        // SAFETY: the snippet's data area is 64 KiB of RW memory we own.
        unsafe { std::ptr::copy_nonoverlapping(w.as_ptr(), self.snippet.data as *mut u8, WINDOW) };
    }

    fn window(&self) -> Vec<u8> {
        // SAFETY: as in `seed`.
        unsafe { std::slice::from_raw_parts(self.snippet.data as *const u8, WINDOW) }.to_vec()
    }

    /// Run one case both ways and record any difference. `ignore` is
    /// a byte range of the data area not compared (FIP/FDP fields).
    fn check(
        &mut self,
        what: &str,
        insn: &[u8],
        s: &State,
        mem: &[u8],
        flags: u64,
        ignore: Option<std::ops::Range<usize>>,
    ) {
        self.checked += 1;
        let x = s.x87();
        let xmm = xmm_seed();
        let rax = 0x1111_2222_3333_4444u64;
        let flags = (flags & fl::STATUS) | 2;
        let mut img = Fx::zeroed();
        host::put_x87(&mut img, &x, x.fcw, x.fsw);
        img.put_u32(fx::MXCSR, 0x1f80);
        for (i, v) in xmm.iter().enumerate() {
            img.0[fx::XMM + 16 * i..fx::XMM + 16 * i + 16].copy_from_slice(&v.to_le_bytes());
        }
        self.seed(mem);
        let n = self.native.run(insn, &img, flags, rax, self.snippet.data);
        let nmem = self.window();
        self.seed(mem);
        let data = self.snippet.data;
        let (cpu, exit) = self.snippet.run(insn, |c| {
            c.x87 = x;
            c.xmm = xmm;
            c.gpr[reg::RAX] = rax;
            c.gpr[reg::RDI] = data;
            c.flags.set(flags);
        });
        let imem = self.window();
        let nfsw = n.img.u16_at(fx::FSW);
        let name = format!(
            "{what} [{insn:02x?}] fcw {:#06x} valid {} st0 {:02x?} st1 {:02x?}",
            s.fcw, s.valid, s.st[0], s.st[1]
        );
        let want = si_code(nfsw & !s.fcw & 0x3f);
        if nfsw & 0x80 != 0 && want != 0 {
            // Compared: the si_code and the pre-computation flags (IE, DE,
            // ZE); see `raise_unmasked` for why PE may differ.
            self.faults += 1;
            match exit {
                Exit::Fault(Fault { kind: FaultKind::FloatingPoint { code }, .. })
                    if code == want && cpu.x87.fsw & 0x47 == nfsw & 0x47 => {}
                e => self.failures.push(format!(
                    "{name}: host fsw {nfsw:#06x} (si_code {want}), interp {e:?} fsw {:#06x}",
                    cpu.x87.fsw
                )),
            }
            return;
        }
        if exit != Exit::Syscall {
            self.failures.push(format!("{name}: interpreter exited with {exit:?}, host did not"));
            return;
        }
        let mut d = Vec::new();
        let nfcw = n.img.u16_at(fx::FCW);
        if nfcw != cpu.x87.fcw {
            d.push(format!("fcw host {nfcw:#06x} interp {:#06x}", cpu.x87.fcw));
        }
        if nfsw != cpu.x87.fsw {
            d.push(format!("fsw host {nfsw:#06x} interp {:#06x}", cpu.x87.fsw));
        }
        let nftw = u16::from_le_bytes([n.env[8], n.env[9]]);
        if nftw != cpu.x87.ftw {
            d.push(format!("ftw host {nftw:#06x} interp {:#06x}", cpu.x87.ftw));
        }
        let top = host::top(nfsw);
        for j in 0..8 {
            let at = fx::ST + 16 * j;
            let p = (top + j) & 7;
            if n.img.0[at..at + 10] != cpu.x87.st[p] {
                d.push(format!("st({j}) host {:02x?} interp {:02x?}", &n.img.0[at..at + 10], cpu.x87.st[p]));
            }
        }
        let nmx = n.img.u32_at(fx::MXCSR);
        if nmx != cpu.mxcsr {
            d.push(format!("mxcsr host {nmx:#x} interp {:#x}", cpu.mxcsr));
        }
        for i in 0..16 {
            let at = fx::XMM + 16 * i;
            if n.img.0[at..at + 16] != cpu.xmm[i].to_le_bytes() {
                d.push(format!("xmm{i} differs"));
            }
        }
        if n.rax != cpu.gpr[reg::RAX] {
            d.push(format!("rax host {:#x} interp {:#x}", n.rax, cpu.gpr[reg::RAX]));
        }
        let fm = fl::STATUS;
        if n.flags & fm != cpu.flags.get() & fm {
            d.push(format!("flags host {:#x} interp {:#x}", n.flags & fm, cpu.flags.get() & fm));
        }
        if let Some(at) = (0..WINDOW).find(|&k| nmem[k] != imem[k] && !ignore.as_ref().is_some_and(|r| r.contains(&k)))
        {
            d.push(format!("mem[{at}] host {:#04x} interp {:#04x}", nmem[at], imem[at]));
        }
        if !d.is_empty() {
            self.failures.push(format!("{name}: {}", d.join(", ")));
        }
    }

    fn finish(&self, family: &str) {
        eprintln!(
            "x87 oracle {family}: {} cases ({} with unmasked exceptions), {} mismatches",
            self.checked,
            self.faults,
            self.failures.len()
        );
        if let Ok(path) = std::env::var("ORACLE_DUMP") {
            let _ = std::fs::write(format!("{path}.x87_{family}"), self.failures.join("\n"));
        }
        if !self.failures.is_empty() {
            let shown: Vec<&str> = self.failures.iter().take(25).map(String::as_str).collect();
            panic!(
                "x87 {family}: {} of {} cases differ from the host:\n{}",
                self.failures.len(),
                self.checked,
                shown.join("\n")
            );
        }
    }
}

/// A state with `a` in ST(0), `b` in ST(1), filler values elsewhere.
fn state(a: [u8; 10], b: [u8; 10], valid: usize, fcw: u16) -> State {
    let vals = values();
    let mut st = [[0u8; 10]; 8];
    for (j, r) in st.iter_mut().enumerate() {
        *r = vals[(j * 7 + 17) % vals.len()];
    }
    st[0] = a;
    st[1] = b;
    State { st, valid, fcw, fsw_flags: 0 }
}

/// Register forms on ST(0) alone and stack-manipulation forms.
#[test]
fn x87_unary_and_stack_forms_match_host() {
    let Some(mut h) = Harness::new() else { return };
    let one = from_f64(1.0);
    let mut insns: Vec<(&str, Vec<u8>)> = vec![
        ("fchs", vec![0xd9, 0xe0]),
        ("fabs", vec![0xd9, 0xe1]),
        ("ftst", vec![0xd9, 0xe4]),
        ("fxam", vec![0xd9, 0xe5]),
        ("fsqrt", vec![0xd9, 0xfa]),
        ("frndint", vec![0xd9, 0xfc]),
        ("fsin", vec![0xd9, 0xfe]),
        ("fcos", vec![0xd9, 0xff]),
        ("fsincos", vec![0xd9, 0xfb]),
        ("fptan", vec![0xd9, 0xf2]),
        ("f2xm1", vec![0xd9, 0xf0]),
        ("fxtract", vec![0xd9, 0xf4]),
        ("fnop", vec![0xd9, 0xd0]),
        ("fincstp", vec![0xd9, 0xf7]),
        ("fdecstp", vec![0xd9, 0xf6]),
        ("fwait", vec![0x9b]),
        ("emms", vec![0x0f, 0x77]),
        ("fnclex", vec![0xdb, 0xe2]),
        ("fninit", vec![0xdb, 0xe3]),
        ("fnstsw ax", vec![0xdf, 0xe0]),
        ("fstsw ax", vec![0x9b, 0xdf, 0xe0]),
    ];
    for i in [0u8, 1, 3, 7] {
        insns.push(("fld st(i)", vec![0xd9, 0xc0 + i]));
        insns.push(("fst st(i)", vec![0xdd, 0xd0 + i]));
        insns.push(("fstp st(i)", vec![0xdd, 0xd8 + i]));
        insns.push(("fxch st(i)", vec![0xd9, 0xc8 + i]));
        insns.push(("ffree st(i)", vec![0xdd, 0xc0 + i]));
        insns.push(("ffreep st(i)", vec![0xdf, 0xc0 + i]));
    }
    for k in 0..7u8 {
        insns.push(("fld const", vec![0xd9, 0xe8 + k]));
    }
    let vals = values();
    for (what, insn) in &insns {
        for (vi, v) in vals.iter().enumerate() {
            for (ci, &fcw) in control_words().iter().enumerate() {
                // Vary how full the stack is: empty, one, two, full.
                let valid = [1, 2, 8, 0][(vi + ci) % 4];
                h.check(what, insn, &state(*v, one, valid, fcw), &[], 0, None);
            }
        }
    }
    h.finish("unary");
}

/// Two-operand register forms on ST(0) and ST(1) (or ST(i)).
#[test]
fn x87_binary_register_forms_match_host() {
    let Some(mut h) = Harness::new() else { return };
    let mut insns: Vec<(&str, Vec<u8>, u64)> = vec![
        ("fyl2x", vec![0xd9, 0xf1], 0),
        ("fyl2xp1", vec![0xd9, 0xf9], 0),
        ("fpatan", vec![0xd9, 0xf3], 0),
        ("fscale", vec![0xd9, 0xfd], 0),
        ("fprem", vec![0xd9, 0xf8], 0),
        ("fprem1", vec![0xd9, 0xf5], 0),
        ("fcompp", vec![0xde, 0xd9], 0),
        ("fucompp", vec![0xda, 0xe9], 0),
    ];
    for k in 0..8u8 {
        insns.push(("arith st0,st1", vec![0xd8, 0xc1 + 8 * k], 0));
    }
    for k in [0u8, 1, 4, 5, 6, 7] {
        insns.push(("arith st1,st0", vec![0xdc, 0xc1 + 8 * k], 0));
        insns.push(("arithp st1,st0", vec![0xde, 0xc1 + 8 * k], 0));
    }
    insns.push(("fucom st1", vec![0xdd, 0xe1], 0));
    insns.push(("fucomp st1", vec![0xdd, 0xe9], 0));
    insns.push(("fcomi", vec![0xdb, 0xf1], fl::OF | fl::SF | fl::AF));
    insns.push(("fucomi", vec![0xdb, 0xe9], fl::OF | fl::SF | fl::AF));
    insns.push(("fcomip", vec![0xdf, 0xf1], fl::OF));
    insns.push(("fucomip", vec![0xdf, 0xe9], fl::AF));
    for k in 0..4u8 {
        for flags in [0, fl::CF, fl::ZF, fl::PF, fl::CF | fl::ZF | fl::PF] {
            insns.push(("fcmovcc", vec![0xda, 0xc1 + 8 * k], flags));
            insns.push(("fcmovncc", vec![0xdb, 0xc1 + 8 * k], flags));
        }
    }
    let vals = values();
    let cws = control_words();
    for (n, (what, insn, flags)) in insns.iter().enumerate() {
        for (ai, a) in vals.iter().enumerate() {
            for (bi, b) in vals.iter().enumerate() {
                let fcw = cws[(ai * 5 + bi + n) % cws.len()];
                let valid = if (ai + bi + n) % 11 == 0 { 1 } else { 2 };
                h.check(what, insn, &state(*a, *b, valid, fcw), &[], *flags, None);
            }
        }
    }
    // The documented and alias forms with other ST(i).
    for i in 2..8u8 {
        for insn in [
            vec![0xd8, 0xc0 + i],
            vec![0xdc, 0xf8 + i],
            vec![0xde, 0xe8 + i],
            vec![0xd8, 0xd8 + i],
            vec![0xdc, 0xd0 + i],
            vec![0xde, 0xd0 + i],
            vec![0xdd, 0xc8 + i],
            vec![0xdf, 0xc8 + i],
            vec![0xdf, 0xd0 + i],
            vec![0xdf, 0xd8 + i],
            vec![0xd9, 0xd8 + i],
        ] {
            for (ai, a) in vals.iter().enumerate() {
                let mut s = state(*a, vals[(ai + 3) % vals.len()], 8, cws[ai % cws.len()]);
                s.st[i as usize] = vals[(ai * 3 + 1) % vals.len()];
                h.check("st(i) form", &insn, &s, &[], 0, None);
            }
        }
    }
    h.finish("binary");
}

/// Integer bytes for the integer memory forms.
fn int_values() -> Vec<i64> {
    vec![
        0,
        1,
        -1,
        2,
        7,
        -32768,
        32767,
        i32::MIN as i64,
        i32::MAX as i64,
        i64::MIN,
        i64::MAX,
        123456789,
        -987654321012345,
    ]
}

/// Memory operands of each width: float32, float64, float80, int16/32/64
/// and packed BCD.
fn mem_values(size: usize, kind: char) -> Vec<Vec<u8>> {
    match (kind, size) {
        ('f', 4) => [
            0u32,
            0x8000_0000,
            0x3f80_0000,
            0xbf80_0000,
            0x7f80_0000,
            0xff80_0000,
            0x7fc0_0000,
            0x7fa0_0001,
            1,
            0x807f_ffff,
            0x7f7f_ffff,
            0x0080_0000,
            0x4049_0fdb,
            0x3eaa_aaab,
        ]
        .iter()
        .map(|v| v.to_le_bytes().to_vec())
        .collect(),
        ('f', 8) => [
            0u64,
            1 << 63,
            0x3ff0_0000_0000_0000,
            0x7ff0_0000_0000_0000,
            0xfff8_0000_0000_0000,
            0x7ff4_0000_0000_0001,
            1,
            0x800f_ffff_ffff_ffff,
            0x7fef_ffff_ffff_ffff,
            0x0010_0000_0000_0000,
            0x4009_21fb_5444_2d18,
            0x3fd5_5555_5555_5555,
        ]
        .iter()
        .map(|v| v.to_le_bytes().to_vec())
        .collect(),
        ('f', 10) => values().iter().map(|v| v.to_vec()).collect(),
        ('i', n) => int_values().iter().map(|v| v.to_le_bytes()[..n].to_vec()).collect(),
        ('b', _) => {
            let mut v: Vec<Vec<u8>> = vec![
                vec![0; 10],
                vec![0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0x80],
                vec![0x99; 9].into_iter().chain([0]).collect(),
                vec![0x21, 0x43, 0x65, 0x87, 0x09, 0, 0, 0, 0, 0x80],
                vec![0xfa, 0xff, 0, 0, 0, 0, 0, 0, 0, 0], // invalid digits
                vec![0xff; 10],                           // BCD indefinite
            ];
            v.push(vec![0x45, 0x23, 0x01, 0, 0, 0, 0, 0, 0, 0x7f]);
            v
        }
        _ => unreachable!(),
    }
}

/// Memory forms: loads, arithmetic with memory operands, stores.
#[test]
fn x87_memory_forms_match_host() {
    let Some(mut h) = Harness::new() else { return };
    let vals = values();
    let cws = control_words();
    // (name, opcode, reg, size, kind)
    let loads: &[(&str, u8, u8, usize, char)] = &[
        ("fld m32fp", 0xd9, 0, 4, 'f'),
        ("fld m64fp", 0xdd, 0, 8, 'f'),
        ("fld m80fp", 0xdb, 5, 10, 'f'),
        ("fild m16", 0xdf, 0, 2, 'i'),
        ("fild m32", 0xdb, 0, 4, 'i'),
        ("fild m64", 0xdf, 5, 8, 'i'),
        ("fbld", 0xdf, 4, 10, 'b'),
    ];
    for &(what, op, r, size, kind) in loads {
        for (mi, m) in mem_values(size, kind).iter().enumerate() {
            for (ci, &fcw) in cws.iter().enumerate() {
                let valid = [1, 2, 8, 0][(mi + ci) % 4];
                h.check(what, &[op, (r << 3) | 7], &state(vals[mi % vals.len()], vals[3], valid, fcw), m, 0, None);
            }
        }
    }
    for (op, size, kind) in [(0xd8u8, 4usize, 'f'), (0xdc, 8, 'f'), (0xda, 4, 'i'), (0xde, 2, 'i')] {
        for r in 0..8u8 {
            for (mi, m) in mem_values(size, kind).iter().enumerate() {
                for (ai, a) in vals.iter().enumerate() {
                    let fcw = cws[(ai + mi + r as usize) % cws.len()];
                    let valid = if (ai + mi) % 13 == 0 { 0 } else { 2 };
                    h.check("arith mem", &[op, (r << 3) | 7], &state(*a, vals[1], valid, fcw), m, 0, None);
                }
            }
        }
    }
    let stores: &[(&str, u8, u8)] = &[
        ("fst m32fp", 0xd9, 2),
        ("fstp m32fp", 0xd9, 3),
        ("fst m64fp", 0xdd, 2),
        ("fstp m64fp", 0xdd, 3),
        ("fstp m80fp", 0xdb, 7),
        ("fist m16", 0xdf, 2),
        ("fistp m16", 0xdf, 3),
        ("fist m32", 0xdb, 2),
        ("fistp m32", 0xdb, 3),
        ("fistp m64", 0xdf, 7),
        ("fisttp m16", 0xdf, 1),
        ("fisttp m32", 0xdb, 1),
        ("fisttp m64", 0xdd, 1),
        ("fbstp", 0xdf, 6),
    ];
    for &(what, op, r) in stores {
        for (ai, a) in vals.iter().enumerate() {
            for (ci, &fcw) in cws.iter().enumerate() {
                let valid = if (ai + ci) % 9 == 0 { 0 } else { 2 };
                h.check(what, &[op, (r << 3) | 7], &state(*a, vals[1], valid, fcw), &[], 0, None);
            }
        }
    }
    h.finish("memory");
}

/// Control and state instructions: FLDCW/FNSTCW/FNSTSW, FNSTENV/FLDENV,
/// FNSAVE/FRSTOR, FXSAVE/FXRSTOR (both widths).
#[test]
fn x87_control_and_state_forms_match_host() {
    let Some(mut h) = Harness::new() else { return };
    let vals = values();
    let cws = control_words();

    for (vi, v) in vals.iter().enumerate() {
        for (ci, &fcw) in cws.iter().enumerate() {
            let valid = [0, 1, 2, 5, 8][(vi + ci) % 5];
            let mut s = state(*v, vals[(vi + 5) % vals.len()], valid, fcw);
            s.fsw_flags = [0, 0x21, 0x4301, 0x0420][(vi + ci) % 4] & !(!fcw & 0x3f) & !0x40;
            s.fsw_flags |= if s.fsw_flags & 1 != 0 { 0x40 } else { 0 };
            h.check("fnstcw", &[0xd9, 0x3f], &s, &[], 0, None);
            h.check("fstcw", &[0x9b, 0xd9, 0x3f], &s, &[], 0, None);
            h.check("fnstsw m16", &[0xdd, 0x3f], &s, &[], 0, None);
            h.check("fnclex", &[0xdb, 0xe2], &s, &[], 0, None);
            h.check("fnstenv", &[0xd9, 0x37], &s, &[], 0, Some(12..28));
            h.check("fnsave", &[0xdd, 0x37], &s, &[], 0, Some(12..28));
            h.check("fsave", &[0x9b, 0xdd, 0x37], &s, &[], 0, Some(12..28));
            h.check("fxsave", &[0x0f, 0xae, 0x07], &s, &[], 0, Some(6..24));
            h.check("fxsave64", &[0x48, 0x0f, 0xae, 0x07], &s, &[], 0, Some(6..24));
            for cw in [0x037fu16, 0x0000, 0xffff, 0x0c7f, 0x133f, 0x0040 | fcw] {
                h.check("fldcw", &[0xd9, 0x2f], &s, &cw.to_le_bytes(), 0, None);
            }
        }
    }
    // Loads of environment and state images: built by hand, with odd tag
    // words (tags contradicting contents) and every stack depth.
    for (vi, _) in vals.iter().enumerate() {
        for tagset in [0xffffu16, 0x0000, 0x5555, 0xaaaa, 0x0fff, 0xfff0, 0x1b1b] {
            let top = (vi % 8) as u16;
            let fcw = cws[vi % cws.len()] & 0x0f7f | 0x3f;
            let fsw = (top << 11) | [0x0000, 0x4100, 0x0021][vi % 3];
            let mut env = vec![0u8; 108];
            env[0..2].copy_from_slice(&fcw.to_le_bytes());
            env[4..6].copy_from_slice(&fsw.to_le_bytes());
            env[8..10].copy_from_slice(&tagset.to_le_bytes());
            for j in 0..8 {
                env[28 + 10 * j..38 + 10 * j].copy_from_slice(&vals[(vi + 3 * j) % vals.len()]);
            }
            let s = state(vals[vi], vals[(vi + 1) % vals.len()], vi % 9, 0x037f);
            h.check("fldenv", &[0xd9, 0x27], &s, &env[..28], 0, None);
            h.check("frstor", &[0xdd, 0x27], &s, &env, 0, None);
            // An FXSAVE image with the same registers and an abridged tag.
            let mut img = vec![0u8; 512];
            img[0..2].copy_from_slice(&fcw.to_le_bytes());
            img[2..4].copy_from_slice(&fsw.to_le_bytes());
            img[4] = tagset as u8;
            img[24..28].copy_from_slice(&[0x1f80u32, 0x0000, 0x7f80 | 0x8040, 0x1fbf][vi % 4].to_le_bytes());
            for j in 0..8 {
                img[32 + 16 * j..42 + 16 * j].copy_from_slice(&vals[(vi + 5 * j) % vals.len()]);
            }
            for (i, b) in img[160..416].iter_mut().enumerate() {
                *b = (i * 37 + vi) as u8;
            }
            h.check("fxrstor", &[0x0f, 0xae, 0x0f], &s, &img, 0, None);
            h.check("fxrstor64", &[0x48, 0x0f, 0xae, 0x0f], &s, &img, 0, None);
        }
    }
    h.finish("control");
}

/// Faults the host cannot be asked to take: FXSAVE/FXRSTOR misaligned, and
/// FXRSTOR with a reserved MXCSR bit, give #GP; an unmasked pending
/// exception faults at the next waiting instruction but not at a
/// non-waiting one.
#[test]
fn x87_faults() {
    let s = Snippet::new();
    let data = s.data;
    let run = |code: &[u8], rdi: u64, init: &dyn Fn(&mut X87)| {
        s.run(code, |c| {
            c.gpr[reg::RDI] = rdi;
            init(&mut c.x87);
        })
    };
    let gp = |pc| Exit::Fault(Fault { pc, kind: FaultKind::GeneralProtection });
    assert_eq!(run(&[0x0f, 0xae, 0x07], data + 8, &|_| {}).1, gp(s.code));
    assert_eq!(run(&[0x48, 0x0f, 0xae, 0x0f], data + 8, &|_| {}).1, gp(s.code));
    // SAFETY: the data area is RW memory of the snippet.
    unsafe { std::ptr::write_bytes(data as *mut u8, 0, 512) };
    // SAFETY: as above; MXCSR at offset 24 with reserved bit 31.
    unsafe { ((data + 24) as *mut u32).write(0x8000_1f80) };
    assert_eq!(run(&[0x0f, 0xae, 0x0f], data, &|_| {}).1, gp(s.code));
    let pending = |x: &mut X87| {
        x.fcw = 0x037e;
        x.fsw = 0x0001;
    };
    let fpe = |pc, code| Exit::Fault(Fault { pc, kind: FaultKind::FloatingPoint { code } });
    assert_eq!(run(&[0x9b], data, &pending).1, fpe(s.code, 7));
    assert_eq!(run(&[0xd9, 0xe8], data, &pending).1, fpe(s.code, 7));
    // FNSTSW AX and FNCLEX do not wait; after FNCLEX FLD1 runs.
    let (cpu, exit) = run(&[0xdf, 0xe0, 0xdb, 0xe2, 0xd9, 0xe8], data, &pending);
    assert_eq!(exit, Exit::Syscall);
    assert_eq!(cpu.gpr[reg::RAX] & 0xffff, 0x0001);
    assert_eq!(cpu.x87.fsw, 0x3800);
    // Divide by zero unmasked: FDIV faults, the stack is left as it was.
    let (cpu, exit) = run(&[0xd9, 0xee, 0xd9, 0xe8, 0xde, 0xf1], data, &|x| x.fcw = 0x037b);
    assert_eq!(exit, fpe(s.code + 4, 3));
    assert_eq!(host::top(cpu.x87.fsw), 6);
    assert_eq!(cpu.x87.fsw & 0x8084, 0x8084);
}
