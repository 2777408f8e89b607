//! The differential tester: proves the interpreter against the host CPU,
//! form by form.
//!
//! For every `Code` in `interp::implemented_codes()` it generates random
//! valid instances from the form's operand kinds (`gen`), random starting
//! states full of edge values, runs each instance natively (`native`, with
//! faults caught in-process) and in the interpreter (through a `Snippet`),
//! and compares all architectural state: GPRs, RFLAGS (minus the bits the
//! manuals leave undefined, `flags`), XMM0-15, MXCSR, the 16 KiB data window
//! the memory operands point into, and how the instruction ended (completed,
//! or which signal: #DE and #XM are SIGFPE, #GP and #PF SIGSEGV, #UD SIGILL).
//!
//! Entry points: `run` (used by `tools/difftest`, the `urun-difftest`
//! command, and by this module's fixed-seed test) and `Bench`, the two
//! halves side by side, which the handler unit tests' oracle also uses.

mod flags;
pub mod gen;
mod native;
mod snippet;

use std::fmt::Write as _;

use iced_x86::{Code, Formatter, GasFormatter, Instruction};

pub use flags::undefined as undefined_flags;
pub use gen::Rng;
pub use native::{Native, SEEDABLE};
pub use snippet::Snippet;

use crate::engine::{Exit, Fault, FaultKind};
use crate::state::fl;

/// Bytes of the data area that memory operands point into and that are
/// seeded and compared.
pub const WINDOW: usize = 16384;

/// The architectural state compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct State {
    pub gpr: [u64; 16],
    pub rflags: u64,
    pub xmm: [u128; 16],
    pub mxcsr: u32,
}

impl Default for State {
    fn default() -> Self {
        State { gpr: [0; 16], rflags: 0x202, xmm: [0; 16], mxcsr: 0x1f80 }
    }
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
}

/// The signal Linux delivers for a fault: #DE and #XM/#MF are SIGFPE, #GP
/// and #PF SIGSEGV, #UD SIGILL, #BP SIGTRAP.
pub fn signal_of(kind: &FaultKind) -> i32 {
    match kind {
        FaultKind::Page { .. } | FaultKind::GeneralProtection => libc::SIGSEGV,
        FaultKind::Divide | FaultKind::FloatingPoint { .. } => libc::SIGFPE,
        FaultKind::InvalidOpcode { .. } => libc::SIGILL,
        FaultKind::Breakpoint => libc::SIGTRAP,
    }
}

/// Both halves, sharing the snippet's data area (guest addresses are host
/// addresses, so one memory operand means the same bytes to both).
pub struct Bench {
    pub snippet: Snippet,
    native: Native,
}

impl Bench {
    /// `Err` with the reason when the host cannot run the native harness.
    pub fn new() -> Result<Bench, String> {
        Ok(Bench { snippet: Snippet::new(), native: Native::new()? })
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
        self.seed(mem);
        let out = self.native.run(insn, input);
        (out, self.window())
    }

    /// Run `insn` in the interpreter likewise. A UD2 follows it, so the
    /// run ends with #UD just past the instruction when it completes, with
    /// every register intact.
    pub fn interp(&mut self, insn: &[u8], input: &State, mem: &[u8]) -> (Outcome, Vec<u8>) {
        let start = self.snippet.code;
        let (state, exit, window) = self.interp_exit(insn, input, mem);
        let end = match exit {
            None => End::Completed,
            Some(Exit::Fault(Fault { pc, ref kind })) if pc == start => End::Signal(signal_of(kind)),
            Some(other) => End::Other(format!("{other:?}")),
        };
        (Outcome { end, state }, window)
    }

    /// `interp`, keeping the interpreter's own exit (`None` when the
    /// instruction completed).
    pub fn interp_exit(&mut self, insn: &[u8], input: &State, mem: &[u8]) -> (State, Option<Exit>, Vec<u8>) {
        self.seed(mem);
        let code = [insn, &[0x0f, 0x0b]].concat();
        let start = self.snippet.code;
        let (cpu, exit) = self.snippet.run_raw(&code, |c| {
            c.gpr = input.gpr;
            c.xmm = input.xmm;
            c.mxcsr = input.mxcsr;
            c.flags.set((input.rflags & SEEDABLE) | 0x202);
        });
        let exit = match exit {
            Exit::Fault(Fault { pc, kind: FaultKind::InvalidOpcode { .. } }) if pc == start + insn.len() as u64 => None,
            other => Some(other),
        };
        let state = State { gpr: cpu.gpr, rflags: cpu.flags.get(), xmm: cpu.xmm, mxcsr: cpu.mxcsr };
        (state, exit, self.window())
    }
}

/// Differences between the host's and the interpreter's outcome, as
/// readable lines; `undefined` masks RFLAGS bits.
pub fn diff(n: &Outcome, nmem: &[u8], i: &Outcome, imem: &[u8], undefined: u64) -> Vec<String> {
    let mut d = Vec::new();
    if n.end != i.end {
        d.push(format!("end: host {:?}, interp {:?}", n.end, i.end));
        if matches!(i.end, End::Other(_)) {
            return d;
        }
    }
    for (r, name) in GPR_NAMES.iter().enumerate() {
        if n.state.gpr[r] != i.state.gpr[r] {
            d.push(format!("{name}: host {:#x}, interp {:#x}", n.state.gpr[r], i.state.gpr[r]));
        }
    }
    let fm = (fl::STATUS | fl::DF) & !undefined;
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
    }
    if n.state.mxcsr != i.state.mxcsr {
        d.push(format!("mxcsr: host {:#x}, interp {:#x}", n.state.mxcsr, i.state.mxcsr));
    }
    let bad: Vec<usize> = (0..nmem.len().min(imem.len())).filter(|&k| nmem[k] != imem[k]).collect();
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

const GPR_NAMES: [&str; 16] = ["rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15"];

fn flag_names(bits: u64) -> String {
    let names = [(fl::CF, "CF"), (fl::PF, "PF"), (fl::AF, "AF"), (fl::ZF, "ZF"), (fl::SF, "SF"), (fl::DF, "DF"), (fl::OF, "OF")];
    names.iter().filter(|(b, _)| bits & b != 0).map(|(_, n)| *n).collect::<Vec<_>>().join(" ")
}

/// What to run.
#[derive(Clone, Debug)]
pub struct Config {
    /// Random cases per form.
    pub cases: u64,
    pub seed: u64,
    /// Only forms whose mnemonic or `Code` name equals this (any case).
    pub only: Option<String>,
    /// Mismatch records kept per form (all are counted).
    pub records_per_form: usize,
}

/// One form's tally.
#[derive(Clone, Debug)]
pub struct FormTally {
    pub code: Code,
    pub cases: u64,
    /// Cases where the host faulted (compared like the others).
    pub faults: u64,
    pub mismatches: u64,
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
        writeln!(f, "   seed {:#x} case {} (rerun: --seed {:#x} --only {:?})", self.seed, self.case, self.seed, self.code)?;
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
    o
}

/// The whole run's result.
#[derive(Debug, Default)]
pub struct Report {
    pub covered: Vec<FormTally>,
    pub skipped: Vec<(Code, String)>,
    pub records: Vec<Mismatch>,
}

impl Report {
    pub fn cases(&self) -> u64 {
        self.covered.iter().map(|t| t.cases).sum()
    }
    pub fn mismatches(&self) -> u64 {
        self.covered.iter().map(|t| t.mismatches).sum()
    }
}

/// Does `code` match the `--only` filter?
fn selected(code: Code, only: &Option<String>) -> bool {
    match only {
        None => true,
        Some(o) => format!("{:?}", code.mnemonic()).eq_ignore_ascii_case(o) || format!("{code:?}").eq_ignore_ascii_case(o),
    }
}

/// Run `cfg.cases` random cases of every implemented form.
pub fn run(cfg: &Config) -> Result<Report, String> {
    let mut bench = Bench::new()?;
    let mut report = Report::default();
    let window = bench.window_addr();
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
        let mut tally = FormTally { code, cases: 0, faults: 0, mismatches: 0 };
        let mut kept = 0;
        for index in 0..cfg.cases {
            let mut rng = Rng::for_case(cfg.seed, code, index);
            let case = match gen::generate(code, &mut rng, window) {
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
            let (n, nmem) = bench.native(&case.bytes, &case.input, &case.mem);
            let (i, imem) = bench.interp(&case.bytes, &case.input, &case.mem);
            tally.cases += 1;
            if matches!(n.end, End::Signal(_)) {
                tally.faults += 1;
            }
            let d = diff(&n, &nmem, &i, &imem, undefined_flags(&case.insn, &case.input));
            if d.is_empty() {
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
        let cfg = Config { cases, seed: 0xd1ff_7e57, only: None, records_per_form: 3 };
        let report = match run(&cfg) {
            Ok(r) => r,
            Err(why) => {
                eprintln!("difftest: SKIPPED, {why}");
                return;
            }
        };
        for (code, why) in &report.skipped {
            eprintln!("difftest: skipped {code:?}: {why}");
        }
        eprintln!(
            "difftest: {} forms covered, {} skipped, {} cases, {} mismatches",
            report.covered.len(),
            report.skipped.len(),
            report.cases(),
            report.mismatches()
        );
        assert!(report.covered.len() > 700, "only {} forms covered", report.covered.len());
        let text: String = report.records.iter().map(|m| m.to_string()).collect();
        assert_eq!(report.mismatches(), 0, "the interpreter differs from the host:\n{text}");
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
            assert_eq!(diff(&n, &nmem, &i, &imem, 0), Vec::<String>::new(), "{bytes:02x?}");
        }
    }
}
