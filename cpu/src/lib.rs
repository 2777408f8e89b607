//! urun's CPU: the guest's architectural state (`CpuState`), the guest
//! address space (`AddressSpace`), the `Engine` trait with its `Exit`, the
//! CPUID model, and the interpreter engine.
//!
//! `cpu` knows nothing of Linux, Windows or KVM.

pub mod cpuid;
pub mod difftest;
pub mod engine;
pub mod hostfault;
pub mod hostfd;
pub mod interp;
pub mod jit;
pub mod mem;
pub mod state;
#[doc(hidden)]
pub mod testing;

pub use engine::{Engine, EngineError, Exit, Fault, FaultKind, Interrupt, PageFaultKind};
pub use mem::{AddressSpace, Backing, FileMap, MemError, Placement, Prot, Region, PAGE_SIZE};
pub use state::CpuState;
