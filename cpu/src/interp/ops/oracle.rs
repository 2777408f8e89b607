//! A differential oracle for instruction handlers' unit tests: a thin layer
//! over `crate::difftest::Bench`, which runs the same instruction bytes on
//! the host CPU and in the interpreter from the same registers, RFLAGS and
//! memory. Tests here choose their operands by hand; `crate::difftest`
//! generates them for every implemented form. Comparisons are exact except
//! for what `crate::difftest::masks::TABLE` masks on this host (nothing at
//! all with `URUN_EXACT=1` in the environment).

pub(crate) use crate::difftest::WINDOW;
use crate::difftest::{case_mask, diff, hidden, Bench, End, Mask, State};
use crate::state::reg;

/// Registers and RFLAGS before or after an instruction. `gpr[RSP]` is
/// ignored (the bench gives both halves a private stack).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Regs {
    pub gpr: [u64; 16],
    pub flags: u64,
}

/// Both halves, sharing the snippet's data area.
pub(crate) struct Oracle {
    bench: Bench,
    /// Mismatches found so far, as readable lines.
    pub failures: Vec<String>,
    pub checked: usize,
    /// Cases whose only differences the mask table hid.
    pub masked: usize,
    /// Ignore the mask table (`URUN_EXACT` is set).
    exact: bool,
}

impl Oracle {
    /// `None` (after saying why) when the host cannot run the harness.
    pub(crate) fn new() -> Option<Oracle> {
        match Bench::new() {
            Ok(bench) => Some(Oracle {
                bench,
                failures: Vec::new(),
                checked: 0,
                masked: 0,
                exact: std::env::var_os("URUN_EXACT").is_some(),
            }),
            Err(why) => {
                crate::testing::report_skip("oracle (host-comparison test)", &why.to_string());
                None
            }
        }
    }

    /// Address of the data area that memory operands should point into.
    pub(crate) fn data(&self) -> u64 {
        self.bench.window_addr()
    }

    fn state(&self, input: &Regs) -> State {
        let mut s = State { gpr: input.gpr, rflags: input.flags, ..State::default() };
        // Past the compared window, inside the snippet's data area.
        s.gpr[reg::RSP] = self.data() + 0xc000;
        s
    }

    /// The host's run alone: registers, RFLAGS and the window after it.
    pub(crate) fn native(&mut self, insn: &[u8], input: &Regs, mem: &[u8]) -> (Regs, Vec<u8>) {
        let s = self.state(input);
        let (n, nmem) = self.bench.native(insn, &s, mem);
        (Regs { gpr: n.state.gpr, flags: n.state.rflags }, nmem)
    }

    /// The interpreter's run alone; `Err` with its exit if the instruction
    /// did not complete.
    pub(crate) fn interp(
        &mut self,
        insn: &[u8],
        input: &Regs,
        mem: &[u8],
    ) -> Result<(Regs, Vec<u8>), crate::engine::Exit> {
        let s = self.state(input);
        let (st, exit, imem) = self.bench.interp_exit(insn, &s, mem);
        match exit {
            None => Ok((Regs { gpr: st.gpr, flags: st.rflags }, imem)),
            Some(e) => Err(e),
        }
    }

    /// What the mask table masks for `insn` (every instruction of it,
    /// each judged from the input state) on this host.
    fn mask(&self, insn: &[u8], s: &State) -> Mask {
        let mut m = Mask::NONE;
        let mut decoder = iced_x86::Decoder::with_ip(64, insn, self.bench.insn_addr(), iced_x86::DecoderOptions::NONE);
        while decoder.can_decode() {
            let one = case_mask(&decoder.decode(), s, self.exact);
            m.flags |= one.flags;
            m.gpr_high |= one.gpr_high;
            m.gpr_all |= one.gpr_all;
            m.memory |= one.memory;
            m.rows |= one.rows;
        }
        m
    }

    /// Compare both runs, masking only what the mask table says for this
    /// host. Mismatches are collected in `failures` (with `what` naming
    /// the case).
    pub(crate) fn check(&mut self, what: &str, insn: &[u8], input: &Regs, mem: &[u8]) {
        self.checked += 1;
        let s = self.state(input);
        let (n, nmem) = self.bench.native(insn, &s, mem);
        let (i, imem) = self.bench.interp(insn, &s, mem);
        let mask = self.mask(insn, &s);
        let diffs = diff(&n, &nmem, &i, &imem, &mask);
        if diffs.is_empty() && hidden(&n, &nmem, &i, &imem, &mask).is_some() {
            self.masked += 1;
        }
        if n.end != End::Completed && diffs.is_empty() {
            self.failures.push(format!("{what}: faulted on the host ({:?}); the test meant it not to", n.end));
        }
        if !diffs.is_empty() {
            self.failures.push(format!(
                "{what} in {:x?} gpr {:x?} flags {:#x}: {}",
                insn,
                input.gpr,
                input.flags,
                diffs.join(", ")
            ));
        }
    }

    /// Panic with the first mismatches, if any (all of them go to the file
    /// `$ORACLE_DUMP.<family>` when that variable is set).
    pub(crate) fn finish(&self, family: &str) {
        eprintln!(
            "oracle {family}: {} cases, {} mismatches, {} masked by difftest::masks::TABLE{}",
            self.checked,
            self.failures.len(),
            self.masked,
            if self.exact { " (ignored: URUN_EXACT)" } else { "" }
        );
        if let Ok(path) = std::env::var("ORACLE_DUMP") {
            let _ = std::fs::write(format!("{path}.{family}"), self.failures.join("\n"));
        }
        if !self.failures.is_empty() {
            let shown: Vec<&str> = self.failures.iter().take(30).map(String::as_str).collect();
            panic!(
                "{family}: {} of {} cases differ from the host:\n{}",
                self.failures.len(),
                self.checked,
                shown.join("\n")
            );
        }
    }
}

/// A small deterministic generator (xorshift64*) for sampled operands.
pub(crate) use crate::difftest::Rng;

/// Interesting operand values: the differential tester's.
pub(crate) use crate::difftest::gen::EDGE_VALUES;

/// Shift and rotate counts worth testing.
pub(crate) const EDGE_COUNTS: &[u64] = &[0, 1, 2, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 255];
