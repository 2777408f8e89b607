//! A tiny guest for running instruction bytes in the interpreter: a code
//! area, a 64 KiB data area and a stack, in a fresh `AddressSpace`.

use std::sync::Arc;

use crate::engine::Exit;
use crate::interp::Interpreter;
use crate::mem::{AddressSpace, Placement, Prot, PAGE_SIZE};
use crate::state::{reg, CpuState};

/// A guest with a 16 KiB code area, a 64 KiB scratch data area (address in
/// `data`) and a 64 KiB stack. Guest addresses are host addresses, so the
/// host CPU can run against the same data area.
pub struct Snippet {
    pub mem: Arc<AddressSpace>,
    pub code: u64,
    pub data: u64,
    pub stack_top: u64,
}

impl Default for Snippet {
    fn default() -> Self {
        Self::new()
    }
}

impl Snippet {
    /// Map the three areas. Panics if the host refuses 144 KiB of memory
    /// (this is test equipment, not guest-facing code).
    pub fn new() -> Self {
        let mem = Arc::new(AddressSpace::new());
        let code = mem.map(Placement::Hint(0), 4 * PAGE_SIZE, Prot::RW.union(Prot::EXEC), false, None).expect("code");
        let data = mem.map(Placement::Hint(0), 16 * PAGE_SIZE, Prot::RW, false, None).expect("data");
        let stack = mem.map(Placement::Hint(0), 16 * PAGE_SIZE, Prot::RW, false, None).expect("stack");
        Snippet { mem, code, data, stack_top: stack + 16 * PAGE_SIZE }
    }

    /// Run `code` followed by a SYSCALL from a fresh state prepared by
    /// `init`; returns the final state and the exit (`Exit::Syscall`
    /// when the snippet ran to its end).
    pub fn run(&self, code: &[u8], init: impl FnOnce(&mut CpuState)) -> (CpuState, Exit) {
        self.run_raw(&[code, &[0x0f, 0x05]].concat(), init)
    }

    /// Run exactly `code` (which must end in something that exits) from a
    /// fresh state prepared by `init`.
    pub fn run_raw(&self, code: &[u8], init: impl FnOnce(&mut CpuState)) -> (CpuState, Exit) {
        assert!(code.len() <= 4 * PAGE_SIZE as usize, "snippet longer than its code area");
        // SAFETY: `self.code` is a 16 KiB guest range we mapped RW (and
        // guest-executable); the length was checked above.
        unsafe { std::ptr::copy_nonoverlapping(code.as_ptr(), self.code as *mut u8, code.len()) };
        let mut cpu = CpuState { rip: self.code, ..CpuState::default() };
        cpu.gpr[reg::RSP] = self.stack_top;
        init(&mut cpu);
        let mut engine = Interpreter::new(self.mem.clone());
        let exit = engine.run(&mut cpu);
        (cpu, exit)
    }

    /// Put `code` at guest address `at` (inside the code area) and run
    /// from `rip` with a fresh state prepared by `init`.
    pub fn run_at(&self, at: u64, code: &[u8], rip: u64, init: impl FnOnce(&mut CpuState)) -> (CpuState, Exit) {
        assert!(at >= self.code && at + code.len() as u64 <= self.code + 4 * PAGE_SIZE, "code outside the code area");
        // SAFETY: the range was checked to lie in the code area, which we
        // mapped RW.
        unsafe { std::ptr::copy_nonoverlapping(code.as_ptr(), at as *mut u8, code.len()) };
        let mut cpu = CpuState { rip, ..CpuState::default() };
        cpu.gpr[reg::RSP] = self.stack_top;
        init(&mut cpu);
        let mut engine = Interpreter::new(self.mem.clone());
        let exit = engine.run(&mut cpu);
        (cpu, exit)
    }
}

impl Drop for Snippet {
    fn drop(&mut self) {
        for r in self.mem.regions() {
            let _ = self.mem.unmap(r.start, r.end - r.start);
        }
    }
}
