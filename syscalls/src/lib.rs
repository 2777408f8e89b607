//! urun's guest operating systems. Only this crate asks the host kernel for
//! anything on the guest's behalf (apart from the guest memory mappings,
//! which `urun_cpu::AddressSpace` owns).

pub mod linux;
