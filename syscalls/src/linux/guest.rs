//! The personality's own reads and writes of guest memory (signal frames,
//! sigaction structs, thread-id words, syscall argument structs): checked
//! against the `AddressSpace`, then copied with `urun_cpu::hostfault`'s
//! routines, so a page that another guest thread unmaps in between makes
//! the call fail (EFAULT, or SIGSEGV for a signal frame) instead of
//! crashing urun.

use urun_cpu::{hostfault, AddressSpace, Prot};

/// Plain data that any bytes are a valid value of.
pub(crate) trait Plain: Copy {}
impl Plain for u32 {}
impl Plain for i32 {}
impl Plain for u64 {}
impl<const N: usize> Plain for [u64; N] {}
impl<const N: usize> Plain for [u8; N] {}

/// Read a `T` at guest address `addr`, if the guest may read it.
pub(crate) fn read<T: Plain>(mem: &AddressSpace, addr: u64) -> Option<T> {
    if !mem.check(addr, std::mem::size_of::<T>() as u64, Prot::READ) {
        return None;
    }
    // SAFETY: checked readable guest memory; any bytes are a `T`; a racing
    // unmap is returned as a fault.
    unsafe { hostfault::read_guest(addr) }.ok()
}

/// Write `v` at guest address `addr`, if the guest may write there.
pub(crate) fn write<T: Plain>(mem: &AddressSpace, addr: u64, v: &T) -> bool {
    if !mem.check(addr, std::mem::size_of::<T>() as u64, Prot::WRITE) {
        return false;
    }
    // SAFETY: checked writable guest memory; a racing unmap is returned as
    // a fault.
    unsafe { hostfault::write_guest(addr, v) }.is_ok()
}

/// Fill `buf` from guest address `addr`, if the guest may read it all.
pub(crate) fn read_into(mem: &AddressSpace, addr: u64, buf: &mut [u8]) -> bool {
    if buf.is_empty() {
        return true;
    }
    if !mem.check(addr, buf.len() as u64, Prot::READ) {
        return false;
    }
    // SAFETY: checked readable guest memory; `buf` is urun's.
    unsafe { hostfault::copy_from_guest(buf, addr) }.is_ok()
}

/// Copy `buf` to guest address `addr`, if the guest may write it all.
pub(crate) fn write_from(mem: &AddressSpace, addr: u64, buf: &[u8]) -> bool {
    if buf.is_empty() {
        return true;
    }
    if !mem.check(addr, buf.len() as u64, Prot::WRITE) {
        return false;
    }
    // SAFETY: checked writable guest memory; `buf` is urun's.
    unsafe { hostfault::copy_to_guest(addr, buf) }.is_ok()
}
