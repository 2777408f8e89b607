//! The differential tester: proves the interpreter against the host CPU,
//! form by form.
//!
//! For every `Code` in `interp::implemented_codes()` it generates random
//! valid instances from the form's operand kinds (`gen`), random starting
//! states full of edge values, runs each instance natively (`native`, with
//! faults caught in-process) and in the interpreter (through a `Snippet`),
//! and compares all architectural state: GPRs, RFLAGS, XMM0-15, MXCSR, the x87/MMX state
//! (the eight registers bit for bit by physical number, FCW, FSW with TOP,
//! the full tag word), the 16 KiB data window the memory operands point
//! into (an inaccessible guard page follows it, where gather and
//! masked-move elements are made to fault), where execution went on (the
//! fall-through or the taken landing pad of a control transfer, or the
//! faulting instruction) and how the
//! instruction ended (completed, or which signal: #DE and #XM are SIGFPE,
//! #GP and #PF SIGSEGV, #UD SIGILL). The interpreter computes undefined
//! flags as the host vendor's CPUs do, so the comparison is exact except
//! for the cases in `masks::TABLE` (varying between one vendor's
//! generations, or not yet measured), which `Config::exact` ignores.
//!
//! Both halves run the instruction at the same address: the native harness
//! lives in the snippet's own code area (made executable on the host), so
//! return addresses pushed by CALL and branch targets in registers and
//! memory mean the same to both. Every case starts from a random x87/MMX
//! state (random registers, MMX-style exponents 0xFFFF among them, TOP,
//! tags, condition codes and masked exception flags; FCW with every
//! exception masked and a random rounding and precision control), loaded
//! natively with FXRSTOR and saved with FXSAVE and FNSTENV. FOP, FIP and
//! FDP are not compared: urun keeps them zero, the host records the last
//! x87 instruction's address there (the memory images FNSTENV, FNSAVE and
//! FXSAVE write still match, as the host's copies are zero right after the
//! harness's FXRSTOR of a zeroed image).
//!
//! Entry points: `run` (used by `tools/difftest`, the `urun-difftest`
//! command, and by this module's fixed-seed test) and `Bench`, the two
//! halves side by side, which the handler unit tests' oracle also uses.

pub mod gen;
pub mod masks;
mod native;
mod snippet;

use std::fmt::Write as _;

use iced_x86::{Code, Formatter, GasFormatter, Instruction};

pub use gen::Rng;
pub use masks::Mask;
pub use native::{full_tag, tag_of, Native, EPI, INSN, LOW, PAD, SEEDABLE};
pub use snippet::Snippet;

use crate::cpuid::{HostCpu, Vendor};
use crate::engine::{Exit, Fault, FaultKind};
use crate::state::{fl, X87};

/// Bytes of the data area that memory operands point into and that are
/// seeded and compared.
pub const WINDOW: usize = 16384;

/// The architectural state compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct State {
    pub gpr: [u64; 16],
    pub rflags: u64,
    pub xmm: [u128; 16],
    /// The upper halves of YMM0..15 (seeded and compared where the host
    /// has AVX; zero elsewhere).
    pub ymm_hi: [u128; 16],
    pub mxcsr: u32,
    pub fpu: Fpu,
}

impl Default for State {
    fn default() -> Self {
        State {
            gpr: [0; 16],
            rflags: 0x202,
            xmm: [0; 16],
            ymm_hi: [0; 16],
            mxcsr: 0x1f80,
            fpu: Fpu::of(&X87::default()),
        }
    }
}

/// The compared x87/MMX state: the registers by physical number (80 bits
/// each), FCW, FSW (TOP included) and the full tag word. FOP, FIP and FDP
/// are left out (urun keeps them zero).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fpu {
    pub st: [[u8; 10]; 8],
    pub fcw: u16,
    pub fsw: u16,
    pub ftw: u16,
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum End {
    /// The instruction completed.
    Completed,
    /// The instruction faulted with this host signal number.
    Signal(i32),
    /// The interpreter stopped some other way (described).
    Other(String),
}

/// A run's end and the state then (at the fault, for a signal).
#[derive(Clone, Debug)]
pub struct Outcome {
    pub end: End,
    pub state: State,
    /// Where execution went on: the fall-through or taken pad when the
    /// instruction completed, the instruction itself when it faulted.
    pub rip: u64,
}

/// The signal Linux delivers for a fault: #DE and #XM/#MF are SIGFPE, #GP
/// and #PF SIGSEGV, #UD SIGILL, #BP SIGTRAP.
pub fn signal_of(kind: &FaultKind) -> i32 {
    match kind {
        FaultKind::Page { .. } | FaultKind::GeneralProtection => libc::SIGSEGV,
        FaultKind::Divide | FaultKind::FloatingPoint { .. } => libc::SIGFPE,
        FaultKind::InvalidOpcode { .. } => libc::SIGILL,
        FaultKind::Breakpoint | FaultKind::DebugTrap => libc::SIGTRAP,
    }
}

/// Both halves, sharing the snippet's data area (guest addresses are host
/// addresses, so one memory operand means the same bytes to both).
pub struct Bench {
    pub snippet: Snippet,
    native: Native,
    /// The vendor model the interpreter half runs (the host's by default).
    pub vendor: Vendor,
}

impl Bench {
    /// `Err` with the reason when the host cannot run the native harness.
    pub fn new() -> Result<Bench, String> {
        let snippet = Snippet::new();
        let guard = snippet.data + gen::GUARD as u64;
        snippet
            .mem
            .protect(guard, crate::mem::PAGE_SIZE, crate::mem::Prot::NONE)
            .map_err(|e| format!("cannot make the guard page past the window: {e}"))?;
        let native = Native::new(snippet.code)?;
        Ok(Bench { snippet, native, vendor: Vendor::host() })
    }

    /// Address of the instruction under test (both halves run it there).
    pub fn insn_addr(&self) -> u64 {
        self.snippet.code + INSN
    }

    /// Host address of the data window.
    pub fn window_addr(&self) -> u64 {
        self.snippet.data
    }

    /// Fill the window with `mem`, zero past its end.
    pub fn seed(&self, mem: &[u8]) {
        let n = mem.len().min(WINDOW);
        // SAFETY: the snippet's data area is 64 KiB of RW memory we own.
        unsafe {
            std::ptr::copy_nonoverlapping(mem.as_ptr(), self.snippet.data as *mut u8, n);
            std::ptr::write_bytes((self.snippet.data as *mut u8).add(n), 0, WINDOW - n);
        }
    }

    /// The window's current bytes.
    pub fn window(&self) -> Vec<u8> {
        // SAFETY: as in `seed`.
        unsafe { std::slice::from_raw_parts(self.snippet.data as *const u8, WINDOW) }.to_vec()
    }

    /// Run `insn` natively from `input` with the window seeded with `mem`.
    /// The caller guarantees the instruction does not branch and touches
    /// no memory but the snippet's data area.
    pub fn native(&mut self, insn: &[u8], input: &State, mem: &[u8]) -> (Outcome, Vec<u8>) {
        self.native_to(insn, None, input, mem)
    }

    /// `native` for an instruction that may also go to the taken pad at
    /// `target` (between `insn_addr() - INSN + LOW` and `.. + EPI - PAD`,
    /// clear of the instruction and its fall-through pad).
    pub fn native_to(&mut self, insn: &[u8], target: Option<u64>, input: &State, mem: &[u8]) -> (Outcome, Vec<u8>) {
        self.seed(mem);
        let out = self.native.run(insn, target, input);
        (out, self.window())
    }

    /// Run `insn` in the interpreter likewise. A UD2 follows it, so the
    /// run ends with #UD just past the instruction when it completes, with
    /// every register intact.
    pub fn interp(&mut self, insn: &[u8], input: &State, mem: &[u8]) -> (Outcome, Vec<u8>) {
        self.interp_to(insn, None, input, mem)
    }

    /// `interp` with a taken pad at `target`, as for `native_to`.
    pub fn interp_to(&mut self, insn: &[u8], target: Option<u64>, input: &State, mem: &[u8]) -> (Outcome, Vec<u8>) {
        let start = self.insn_addr();
        let (state, rip, exit, window) = self.interp_run(insn, target, input, mem);
        let end = match exit {
            None => End::Completed,
            Some(Exit::Fault(Fault { pc, ref kind })) if pc == start => End::Signal(signal_of(kind)),
            Some(other) => End::Other(format!("{other:?}")),
        };
        (Outcome { end, state, rip }, window)
    }

    /// `interp`, keeping the interpreter's own exit (`None` when the
    /// instruction completed).
    pub fn interp_exit(&mut self, insn: &[u8], input: &State, mem: &[u8]) -> (State, Option<Exit>, Vec<u8>) {
        let (state, _, exit, window) = self.interp_run(insn, None, input, mem);
        (state, exit, window)
    }

    /// Run `insn` at `insn_addr()` in the interpreter, with a UD2 as the
    /// fall-through pad right after it and another at `target`, INT3 all
    /// around: the run ends with #UD at a pad (the instruction completed;
    /// the pad's address is returned with `None`) or with another exit.
    fn interp_run(
        &mut self,
        insn: &[u8],
        target: Option<u64>,
        input: &State,
        mem: &[u8],
    ) -> (State, u64, Option<Exit>, Vec<u8>) {
        self.seed(mem);
        let start = self.insn_addr();
        let base = self.snippet.code;
        let mut code = vec![0xccu8; (EPI - LOW) as usize];
        let put = |code: &mut Vec<u8>, at: u64, b: &[u8]| {
            let o = (at - base - LOW) as usize;
            code[o..o + b.len()].copy_from_slice(b);
        };
        put(&mut code, start, insn);
        let fall = start + insn.len() as u64;
        put(&mut code, fall, &[0x0f, 0x0b]);
        if let Some(t) = target {
            put(&mut code, t, &[0x0f, 0x0b]);
        }
        let vendor = self.vendor;
        let (cpu, exit) = self.snippet.run_at(base + LOW, &code, start, |c| {
            c.vendor = vendor;
            c.gpr = input.gpr;
            c.xmm = input.xmm;
            c.ymm_hi = input.ymm_hi;
            c.mxcsr = input.mxcsr;
            c.x87 = input.fpu.x87();
            c.flags.set((input.rflags & SEEDABLE) | 0x202);
        });
        let (rip, exit) = match exit {
            Exit::Fault(Fault { pc, kind: FaultKind::InvalidOpcode { .. } }) if pc == fall || Some(pc) == target => {
                (pc, None)
            }
            Exit::Fault(Fault { pc, kind }) => (pc, Some(Exit::Fault(Fault { pc, kind }))),
            other => (cpu.rip, Some(other)),
        };
        let state = State {
            gpr: cpu.gpr,
            rflags: cpu.flags.get(),
            xmm: cpu.xmm,
            ymm_hi: cpu.ymm_hi,
            mxcsr: cpu.mxcsr,
            fpu: Fpu::of(&cpu.x87),
        };
        (state, rip, exit, self.window())
    }
}

/// Differences between the host's and the interpreter's outcome, as
/// readable lines, ignoring what `mask` masks (`masks::mask`).
pub fn diff(n: &Outcome, nmem: &[u8], i: &Outcome, imem: &[u8], mask: &Mask) -> Vec<String> {
    let mut d = Vec::new();
    if n.end != i.end {
        d.push(format!("end: host {:?}, interp {:?}", n.end, i.end));
        if matches!(i.end, End::Other(_)) {
            return d;
        }
    }
    for (r, name) in GPR_NAMES.iter().enumerate() {
        let ignored = if mask.gpr_all & (1 << r) != 0 {
            u64::MAX
        } else if mask.gpr_high & (1 << r) != 0 {
            0xffff_ffff_0000_0000
        } else {
            0
        };
        if (n.state.gpr[r] ^ i.state.gpr[r]) & !ignored != 0 {
            d.push(format!("{name}: host {:#x}, interp {:#x}", n.state.gpr[r], i.state.gpr[r]));
        }
    }
    let fm = (fl::STATUS | fl::DF) & !mask.flags;
    if n.state.rflags & fm != i.state.rflags & fm {
        d.push(format!(
            "rflags: host {:#x}, interp {:#x} (compared bits {fm:#x}: differ in {})",
            n.state.rflags & fm,
            i.state.rflags & fm,
            flag_names((n.state.rflags ^ i.state.rflags) & fm)
        ));
    }
    for x in 0..16 {
        if n.state.xmm[x] != i.state.xmm[x] {
            d.push(format!("xmm{x}: host {:#034x}, interp {:#034x}", n.state.xmm[x], i.state.xmm[x]));
        }
        if n.state.ymm_hi[x] != i.state.ymm_hi[x] {
            d.push(format!("ymm{x} upper: host {:#034x}, interp {:#034x}", n.state.ymm_hi[x], i.state.ymm_hi[x]));
        }
    }
    if n.state.mxcsr != i.state.mxcsr {
        d.push(format!("mxcsr: host {:#x}, interp {:#x}", n.state.mxcsr, i.state.mxcsr));
    }
    if n.rip != i.rip {
        d.push(format!("rip: host {:#x}, interp {:#x}", n.rip, i.rip));
    }
    let (nf, xf) = (&n.state.fpu, &i.state.fpu);
    if nf.fcw != xf.fcw {
        d.push(format!("fcw: host {:#06x}, interp {:#06x}", nf.fcw, xf.fcw));
    }
    if nf.fsw != xf.fsw {
        d.push(format!("fsw: host {:#06x}, interp {:#06x}", nf.fsw, xf.fsw));
    }
    if nf.ftw != xf.ftw {
        d.push(format!("ftw: host {:#06x}, interp {:#06x}", nf.ftw, xf.ftw));
    }
    for p in 0..8 {
        if nf.st[p] != xf.st[p] {
            d.push(format!("r{p} (physical): host {}, interp {}", f80_hex(&nf.st[p]), f80_hex(&xf.st[p])));
        }
    }
    let compared = if mask.memory { 0 } else { nmem.len().min(imem.len()) };
    let bad: Vec<usize> = (0..compared).filter(|&k| nmem[k] != imem[k]).collect();
    if let (Some(&first), Some(&last)) = (bad.first(), bad.last()) {
        let (a, b) = (first & !15, (last | 15) + 1);
        d.push(format!(
            "memory: {} bytes differ in window[{first:#x}..={last:#x}]; window[{a:#x}..{b:#x}] host {:02x?} interp {:02x?}",
            bad.len(),
            &nmem[a..b.min(a + 64)],
            &imem[a..b.min(a + 64)]
        ));
    }
    d
}

/// An 80-bit register as sign+exponent:significand.
fn f80_hex(r: &[u8; 10]) -> String {
    let se = u16::from_le_bytes([r[8], r[9]]);
    let m = u64::from_le_bytes([r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7]]);
    format!("{se:04x}:{m:016x}")
}

const GPR_NAMES: [&str; 16] =
    ["rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15"];

fn flag_names(bits: u64) -> String {
    let names = [
        (fl::CF, "CF"),
        (fl::PF, "PF"),
        (fl::AF, "AF"),
        (fl::ZF, "ZF"),
        (fl::SF, "SF"),
        (fl::DF, "DF"),
        (fl::OF, "OF"),
    ];
    names.iter().filter(|(b, _)| bits & b != 0).map(|(_, n)| *n).collect::<Vec<_>>().join(" ")
}

/// What to run.
#[derive(Clone, Debug)]
pub struct Config {
    /// Random cases per form.
    pub cases: u64,
    pub seed: u64,
    /// Only forms whose mnemonic or `Code` name equals this (any case), or
    /// every VEX-encoded form for `vex`.
    pub only: Option<String>,
    /// Mismatch records kept per form (all are counted).
    pub records_per_form: usize,
    /// Compare everything: ignore `masks::TABLE`.
    pub exact: bool,
}

/// One form's tally.
#[derive(Clone, Debug)]
pub struct FormTally {
    pub code: Code,
    pub cases: u64,
    /// Cases where the host faulted (compared like the others).
    pub faults: u64,
    pub mismatches: u64,
    /// Cases that differ only in what `masks::TABLE` masks.
    pub masked: u64,
}

/// A reproducible record of one mismatch: regenerate it with the same
/// seed, `--only` the code and the case index.
#[derive(Clone, Debug)]
pub struct Mismatch {
    pub code: Code,
    pub seed: u64,
    pub case: u64,
    pub bytes: Vec<u8>,
    pub text: String,
    pub input: State,
    /// The memory operand's offset in the window and its first 32 input bytes.
    pub operand: Option<(usize, Vec<u8>)>,
    pub native: Outcome,
    pub interp: Outcome,
    pub diffs: Vec<String>,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "== {:?}: {}  [{}]", self.code, self.text, hex(&self.bytes))?;
        writeln!(
            f,
            "   seed {:#x} case {} (rerun: --seed {:#x} --only {:?})",
            self.seed, self.case, self.seed, self.code
        )?;
        for d in &self.diffs {
            writeln!(f, "   DIFF {d}")?;
        }
        writeln!(f, "   input  {}", show(&self.input))?;
        if let Some((off, bytes)) = &self.operand {
            writeln!(f, "   input  window[{off:#x}..] = {}", hex(bytes))?;
        }
        writeln!(f, "   host   {:?} {}", self.native.end, show(&self.native.state))?;
        writeln!(f, "   interp {:?} {}", self.interp.end, show(&self.interp.state))
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(" ")
}

fn show(s: &State) -> String {
    let mut o = String::new();
    for (r, name) in GPR_NAMES.iter().enumerate() {
        let _ = write!(o, "{name}={:#x} ", s.gpr[r]);
    }
    let _ = write!(o, "rflags={:#x} mxcsr={:#x}", s.rflags, s.mxcsr);
    for x in 0..16 {
        let _ = write!(o, " xmm{x}={:#x}", s.xmm[x]);
    }
    let f = &s.fpu;
    let _ = write!(o, " fcw={:#06x} fsw={:#06x} ftw={:#06x}", f.fcw, f.fsw, f.ftw);
    for p in 0..8 {
        let _ = write!(o, " r{p}={}", f80_hex(&f.st[p]));
    }
    o
}

/// The whole run's result.
#[derive(Debug, Default)]
pub struct Report {
    pub covered: Vec<FormTally>,
    pub skipped: Vec<(Code, String)>,
    pub records: Vec<Mismatch>,
    /// For each row of `masks::TABLE`, the cases it helped hide (every
    /// difference of the case was masked, by this row and maybe others).
    pub masked_by_row: Vec<u64>,
}

impl Report {
    pub fn cases(&self) -> u64 {
        self.covered.iter().map(|t| t.cases).sum()
    }
    pub fn mismatches(&self) -> u64 {
        self.covered.iter().map(|t| t.mismatches).sum()
    }
    pub fn masked(&self) -> u64 {
        self.covered.iter().map(|t| t.masked).sum()
    }
}

/// The mask for one case: the table's for this host, or none when `exact`.
pub fn case_mask(insn: &Instruction, input: &State, exact: bool) -> Mask {
    if exact {
        Mask::NONE
    } else {
        masks::mask(insn, input, HostCpu::get())
    }
}

/// The rows that hid every difference of a case: `Some` when the masked
/// comparison is clean but the exact one is not.
pub fn hidden(n: &Outcome, nmem: &[u8], i: &Outcome, imem: &[u8], mask: &Mask) -> Option<u64> {
    (mask.rows != 0 && !diff(n, nmem, i, imem, &Mask::NONE).is_empty()).then_some(mask.rows)
}

/// Does `code` match the `--only` filter (a mnemonic, a `Code` name, or
/// `vex` for every VEX-encoded form)?
fn selected(code: Code, only: &Option<String>) -> bool {
    match only {
        None => true,
        Some(o) if o.eq_ignore_ascii_case("vex") => code.encoding() == iced_x86::EncodingKind::VEX,
        Some(o) => {
            format!("{:?}", code.mnemonic()).eq_ignore_ascii_case(o) || format!("{code:?}").eq_ignore_ascii_case(o)
        }
    }
}

/// Run `cfg.cases` random cases of every implemented form.
pub fn run(cfg: &Config) -> Result<Report, String> {
    let mut bench = Bench::new()?;
    let mut report = Report { masked_by_row: vec![0; masks::TABLE.len()], ..Report::default() };
    let window = bench.window_addr();
    let ip = bench.insn_addr();
    let mut fmt = GasFormatter::new();
    // Name each case on stderr before running it, to find one that takes
    // the tester down.
    let trace = std::env::var_os("URUN_DIFFTEST_TRACE").is_some();
    for code in crate::interp::implemented_codes() {
        if !selected(code, &cfg.only) {
            continue;
        }
        if let Some(why) = gen::skip_reason(code) {
            report.skipped.push((code, why.to_string()));
            continue;
        }
        let mut tally = FormTally { code, cases: 0, faults: 0, mismatches: 0, masked: 0 };
        let mut kept = 0;
        for index in 0..cfg.cases {
            let mut rng = Rng::for_case(cfg.seed, code, index);
            let case = match gen::generate(code, &mut rng, window, ip) {
                Ok(c) => c,
                Err(e) => {
                    if tally.cases == 0 {
                        report.skipped.push((code, format!("cannot generate an instance: {e}")));
                    }
                    break;
                }
            };
            if trace {
                eprintln!("{code:?} case {index}: {} [{}]", format(&case.insn), hex(&case.bytes));
            }
            let (n, nmem) = bench.native_to(&case.bytes, case.target, &case.input, &case.mem);
            let (i, imem) = bench.interp_to(&case.bytes, case.target, &case.input, &case.mem);
            tally.cases += 1;
            if matches!(n.end, End::Signal(_)) {
                tally.faults += 1;
            }
            let mask = case_mask(&case.insn, &case.input, cfg.exact);
            let d = diff(&n, &nmem, &i, &imem, &mask);
            if d.is_empty() {
                if let Some(rows) = hidden(&n, &nmem, &i, &imem, &mask) {
                    tally.masked += 1;
                    for (k, count) in report.masked_by_row.iter_mut().enumerate() {
                        *count += (rows >> k) & 1;
                    }
                }
                continue;
            }
            tally.mismatches += 1;
            if kept < cfg.records_per_form {
                kept += 1;
                let mut text = String::new();
                fmt.format(&case.insn, &mut text);
                let operand = case.ea.map(|off| (off, case.mem[off..(off + 32).min(WINDOW)].to_vec()));
                report.records.push(Mismatch {
                    code,
                    seed: cfg.seed,
                    case: index,
                    bytes: case.bytes.clone(),
                    text,
                    input: case.input,
                    operand,
                    native: n,
                    interp: i,
                    diffs: d,
                });
            }
        }
        if tally.cases > 0 {
            report.covered.push(tally);
        }
    }
    Ok(report)
}

/// Format `insn` in AT&T syntax.
pub fn format(insn: &Instruction) -> String {
    let mut s = String::new();
    GasFormatter::new().format(insn, &mut s);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fixed-seed sample of every implemented form against the host.
    #[test]
    fn every_form_matches_host() {
        let cases = if cfg!(debug_assertions) { 40 } else { 200 };
        let exact = std::env::var_os("URUN_EXACT").is_some();
        let cfg = Config { cases, seed: 0xd1ff_7e57, only: None, records_per_form: 3, exact };
        let report = match run(&cfg) {
            Ok(r) => r,
            Err(why) => {
                crate::testing::report_skip("difftest::every_form_matches_host", &why.to_string());
                return;
            }
        };
        for (code, why) in &report.skipped {
            eprintln!("difftest: skipped {code:?}: {why}");
        }
        eprintln!(
            "difftest: {} forms covered, {} skipped, {} cases, {} mismatches, {} masked by masks::TABLE{}",
            report.covered.len(),
            report.skipped.len(),
            report.cases(),
            report.mismatches(),
            report.masked(),
            if exact { " (ignored: URUN_EXACT)" } else { "" }
        );
        assert!(report.covered.len() > 1900, "only {} forms covered", report.covered.len());
        for t in report.covered.iter().filter(|t| t.mismatches > 0) {
            if let Some((_, why)) = KNOWN.iter().find(|(c, _)| *c == t.code) {
                eprintln!("difftest: known mismatch {:?}: {} of {} cases ({why})", t.code, t.mismatches, t.cases);
            }
        }
        let text: String =
            report.records.iter().filter(|m| !KNOWN.iter().any(|(c, _)| *c == m.code)).map(|m| m.to_string()).collect();
        assert!(text.is_empty(), "the interpreter differs from the host:\n{text}");
    }

    /// Interpreter mismatches the tester found that belong to the handler
    /// owners (listed here so that this test guards every other form).
    const KNOWN: &[(Code, &str)] = &[];

    /// The control-transfer plumbing: both paths of a Jcc, a CALL's pushed
    /// return address and a RET to a pad are seen natively and agree with
    /// the interpreter; a wrong path would show as a RIP difference.
    #[test]
    fn branches_land_on_pads() {
        let Ok(mut b) = Bench::new() else { return };
        let ip = b.insn_addr();
        let mut s = State::default();
        let rsp = b.window_addr() + 0x3000;
        s.gpr[crate::state::reg::RSP] = rsp;
        // je +0x20 (rel8), from ip: target ip + 2 + 0x20.
        let je = [0x74, 0x20];
        for zf in [0, fl::ZF] {
            s.rflags = zf;
            let (n, nmem) = b.native_to(&je, Some(ip + 0x22), &s, &[]);
            let (i, imem) = b.interp_to(&je, Some(ip + 0x22), &s, &[]);
            assert_eq!(n.end, End::Completed);
            assert_eq!(n.rip, if zf != 0 { ip + 0x22 } else { ip + 2 });
            assert_eq!(diff(&n, &nmem, &i, &imem, &Mask::NONE), Vec::<String>::new());
        }
        // call -0x100 (rel32): pushes ip + 5.
        let call = [0xe8, 0x00, 0xff, 0xff, 0xff];
        let t = ip + 5 - 0x100;
        let (n, nmem) = b.native_to(&call, Some(t), &s, &[]);
        let (i, imem) = b.interp_to(&call, Some(t), &s, &[]);
        assert_eq!((n.rip, n.state.gpr[crate::state::reg::RSP]), (t, rsp - 8));
        assert_eq!(nmem[0x2ff8..0x3000], (ip + 5).to_le_bytes());
        assert_eq!(diff(&n, &nmem, &i, &imem, &Mask::NONE), Vec::<String>::new());
        // ret to a pad.
        let mut mem = vec![0u8; WINDOW];
        mem[0x3000..0x3008].copy_from_slice(&t.to_le_bytes());
        let (n, nmem) = b.native_to(&[0xc3], Some(t), &s, &mem);
        let (i, imem) = b.interp_to(&[0xc3], Some(t), &s, &mem);
        assert_eq!((n.rip, n.state.gpr[crate::state::reg::RSP]), (t, rsp + 8));
        assert_eq!(diff(&n, &nmem, &i, &imem, &Mask::NONE), Vec::<String>::new());
        // A differing destination is reported.
        let (i, imem) = b.interp_to(&[0xc3], Some(t), &s, &mem);
        let mut wrong = i.clone();
        wrong.rip += 1;
        assert!(!diff(&n, &nmem, &wrong, &imem, &Mask::NONE).is_empty());
    }

    /// The x87 plumbing: FLD1 and an MMX write change the seeded state
    /// natively, the interpreter agrees, and a difference is reported.
    #[test]
    fn x87_state_is_seeded_and_compared() {
        let Ok(mut b) = Bench::new() else { return };
        let mut rng = Rng(0x1234_5678_9abc_def1);
        let ip = b.insn_addr();
        for code in [Code::Fld1, Code::Paddb_mm_mmm64, Code::Faddp_sti_st0] {
            for _ in 0..20 {
                let case = gen::generate(code, &mut rng, b.window_addr(), ip).expect("generate");
                let (n, nmem) = b.native_to(&case.bytes, case.target, &case.input, &case.mem);
                let (i, imem) = b.interp_to(&case.bytes, case.target, &case.input, &case.mem);
                assert_eq!(n.end, End::Completed, "{code:?}");
                assert_ne!(n.state.fpu, case.input.fpu, "{code:?} left the x87 state alone natively");
                assert_eq!(diff(&n, &nmem, &i, &imem, &Mask::NONE), Vec::<String>::new(), "{code:?}");
                let mut wrong = i.clone();
                wrong.state.fpu.st[3][9] ^= 0x40;
                assert!(!diff(&n, &nmem, &wrong, &imem, &Mask::NONE).is_empty());
            }
        }
    }

    /// A faulting case is caught and compared, not fatal: DIV by zero is
    /// SIGFPE on both sides, MOVAPS from a misaligned address SIGSEGV.
    #[test]
    fn faults_are_compared() {
        let Ok(mut b) = Bench::new() else { return };
        let mut s = State::default();
        s.gpr[crate::state::reg::RSP] = b.window_addr() + 0x3000;
        s.gpr[crate::state::reg::RDX] = b.window_addr() + 1;
        for (bytes, sig) in [(&[0xf7, 0xf1][..], libc::SIGFPE), (&[0x0f, 0x28, 0x02][..], libc::SIGSEGV)] {
            let (n, nmem) = b.native(bytes, &s, &[]);
            let (i, imem) = b.interp(bytes, &s, &[]);
            assert_eq!(n.end, End::Signal(sig), "{bytes:02x?}");
            assert_eq!(diff(&n, &nmem, &i, &imem, &Mask::NONE), Vec::<String>::new(), "{bytes:02x?}");
        }
    }
}
