//! The TEB and PEB in guest memory (the offsets are Windows x64's; code
//! reads them directly through GS), the image's implicit TLS block, and
//! the guest-side init trampoline.

use urun_cpu::AddressSpace;
use urun_loader::LoadedPe;

use super::heap::Heap;
use super::poke;

/// TEB fields.
pub(crate) const TEB_STACK_BASE: u64 = 0x08;
pub(crate) const TEB_STACK_LIMIT: u64 = 0x10;
pub(crate) const TEB_SELF: u64 = 0x30;
pub(crate) const TEB_PID: u64 = 0x40;
pub(crate) const TEB_TID: u64 = 0x48;
pub(crate) const TEB_TLS_POINTER: u64 = 0x58;
pub(crate) const TEB_PEB: u64 = 0x60;
pub(crate) const TEB_LAST_ERROR: u64 = 0x68;
/// 64 TlsAlloc slots.
pub(crate) const TEB_TLS_SLOTS: u64 = 0x1480;
pub(crate) const TLS_SLOTS: u32 = 64;
pub(crate) const TEB_SIZE: u64 = 0x2000;
/// PEB fields.
const PEB_IMAGE_BASE: u64 = 0x10;
const PEB_PROCESS_HEAP: u64 = 0x30;
const PEB_NUMBER_OF_PROCESSORS: u64 = 0xb8;
const PEB_OS_MAJOR: u64 = 0x118;
const PEB_OS_MINOR: u64 = 0x11c;
const PEB_OS_BUILD: u64 = 0x120;
const PEB_SIZE: u64 = 0x1000;
/// What GetProcessHeap returns (HeapAlloc ignores which heap).
pub(crate) const PROCESS_HEAP: u64 = 0x0001_0000;

fn put(mem: &AddressSpace, addr: u64, v: u64) -> Result<(), String> {
    poke(mem, addr, &v.to_le_bytes())
}

/// Build the first thread's TEB and the PEB (zeroed pages from the heap),
/// and the image's TLS block. Returns the TEB's address.
pub(crate) fn build(
    mem: &AddressSpace,
    heap: &mut Heap,
    image: &LoadedPe,
    stack_lo: u64,
    top: u64,
) -> Result<u64, String> {
    let teb = heap.alloc_zeroed(TEB_SIZE + PEB_SIZE).ok_or("out of memory")?;
    let peb = teb + TEB_SIZE;
    put(mem, teb + TEB_STACK_BASE, top)?;
    put(mem, teb + TEB_STACK_LIMIT, stack_lo)?;
    put(mem, teb + TEB_SELF, teb)?;
    put(mem, teb + TEB_PID, u64::from(std::process::id()))?;
    // SAFETY: gettid has no arguments and cannot fail.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) } as u64;
    put(mem, teb + TEB_TID, tid)?;
    put(mem, teb + TEB_PEB, peb)?;
    put(mem, peb + PEB_IMAGE_BASE, image.base)?;
    put(mem, peb + PEB_PROCESS_HEAP, PROCESS_HEAP)?;
    let cpus = super::system::host_cpus();
    poke(mem, peb + PEB_NUMBER_OF_PROCESSORS, &cpus.to_le_bytes())?;
    // Windows 10 22H2, as RtlGetVersion will say.
    poke(mem, peb + PEB_OS_MAJOR, &10u32.to_le_bytes())?;
    poke(mem, peb + PEB_OS_MINOR, &0u32.to_le_bytes())?;
    poke(mem, peb + PEB_OS_BUILD, &19045u32.to_le_bytes())?;
    if let Some(tls) = &image.tls {
        // The module's TLS index is 0; its block is the template followed
        // by zero fill, reached through ThreadLocalStoragePointer[0].
        let len = (tls.end - tls.start) + u64::from(tls.zero_fill);
        let block = heap.alloc_zeroed(len.max(16)).ok_or("out of memory")?;
        let mut template = vec![0u8; (tls.end - tls.start) as usize];
        if !crate::linux::guest::read_into(mem, tls.start, &mut template) {
            return Err(format!("the TLS template at {:#x} is not readable", tls.start));
        }
        poke(mem, block, &template)?;
        let array = heap.alloc_zeroed(8 * 16).ok_or("out of memory")?;
        put(mem, array, block)?;
        put(mem, teb + TEB_TLS_POINTER, array)?;
        poke(mem, tls.index_addr, &0u32.to_le_bytes())?;
    }
    Ok(teb)
}

/// The init trampoline: TLS callbacks with DLL_PROCESS_ATTACH, the entry
/// point, then ExitProcess with its result. Entered with RSP ≡ 8 (mod 16),
/// as after a call.
pub(crate) fn trampoline(base: u64, callbacks: &[u64], entry: u64, exit_process: u64) -> Vec<u8> {
    let mut call_entry = mov_rax(entry);
    call_entry.extend_from_slice(&[0xff, 0xd0]); // call rax
    start_trampoline(base, callbacks, 1, &call_entry, exit_process) // DLL_PROCESS_ATTACH
}

/// `mov rax, v`.
fn mov_rax(v: u64) -> Vec<u8> {
    let mut c = vec![0x48, 0xb8];
    c.extend_from_slice(&v.to_le_bytes());
    c
}

/// The guest code a process or thread starts in (entered with RSP ≡ 8
/// (mod 16), as after a call): each of the image's TLS `callbacks` with
/// `(base, reason, NULL)`, then `call_body` (which leaves its result in
/// EAX), then `exit` with that result.
pub(crate) fn start_trampoline(base: u64, callbacks: &[u64], reason: u8, call_body: &[u8], exit: u64) -> Vec<u8> {
    let mut c = vec![0x48, 0x83, 0xec, 0x28]; // sub rsp, 0x28
    for &cb in callbacks {
        c.extend_from_slice(&[0x48, 0xb9]); // mov rcx, base
        c.extend_from_slice(&base.to_le_bytes());
        c.extend_from_slice(&[0xba, reason, 0, 0, 0]); // mov edx, reason
        c.extend_from_slice(&[0x45, 0x31, 0xc0]); // xor r8d, r8d
        c.extend(mov_rax(cb));
        c.extend_from_slice(&[0xff, 0xd0]); // call rax
    }
    c.extend_from_slice(call_body);
    c.extend_from_slice(&[0x89, 0xc1]); // mov ecx, eax
    c.extend(mov_rax(exit));
    c.extend_from_slice(&[0xff, 0xd0, 0xcc]); // call rax; int3
    c
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `code` as GAS text, one instruction a line: what the tests of
    /// urun's guest-code generators compare.
    pub(crate) fn disassemble(code: &[u8]) -> Vec<String> {
        let mut d = iced_x86::Decoder::with_ip(64, code, 0, iced_x86::DecoderOptions::NONE);
        let mut f = iced_x86::GasFormatter::new();
        let mut text = Vec::new();
        for i in &mut d {
            let mut s = String::new();
            iced_x86::Formatter::format(&mut f, &i, &mut s);
            text.push(s);
        }
        text
    }

    /// The trampoline decodes to the intended instructions.
    #[test]
    fn trampoline_decodes() {
        let code = trampoline(0x1_4000_0000, &[0x1_4000_1000], 0x1_4000_2000, 0x7ff0_0000_0010);
        let text = disassemble(&code);
        assert_eq!(
            text,
            [
                "sub $0x28,%rsp",
                "movabs $0x140000000,%rcx",
                "mov $1,%edx",
                "xor %r8d,%r8d",
                "movabs $0x140001000,%rax",
                "call *%rax",
                "movabs $0x140002000,%rax",
                "call *%rax",
                "mov %eax,%ecx",
                "movabs $0x7FF000000010,%rax",
                "call *%rax",
                "int3",
            ]
        );
    }
}
