//! System information and process-wide settings a runtime asks for at
//! start (Go's first of all): GetSystemInfo, the system directory, the NT
//! version, RtlGetCurrentPeb, random bytes (SystemFunction036), DLL
//! directories, error modes and console control handlers (accepted:
//! urun delivers no console events), Winsock's start.

use super::abi::{Call, Res};
use super::kernel32::set_error;
use super::teb::TEB_PEB;

const SYSTEM_DIR: &str = "C:\\Windows\\system32";
const WINDOWS_DIR: &str = "C:\\Windows";
const PAGE: u32 = 4096;
const PROCESSOR_ARCHITECTURE_AMD64: u16 = 9;
const PROCESSOR_AMD_X8664: u32 = 8664;

/// The host CPUs this process may run on (its affinity mask, as Windows
/// counts processors; a cgroup CPU quota does not lower it), found once:
/// one system call, where `std::thread::available_parallelism` also reads
/// the cgroup files (about 50 µs at each start-up).
pub(crate) fn host_cpus() -> u32 {
    static CPUS: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *CPUS.get_or_init(|| {
        // SAFETY: cpu_set_t is plain data; all-zero is an empty set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: sched_getaffinity writes at most size_of(cpu_set_t)
        // bytes into `set`, which lives for the call.
        let r = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
        if r != 0 {
            return std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
        }
        // SAFETY: CPU_COUNT reads the set filled above.
        (unsafe { libc::CPU_COUNT(&set) }).max(1) as u32
    })
}

/// The CPUs as the affinity masks count them (at most 64).
fn cpus() -> u32 {
    host_cpus().min(64)
}

/// GetSystemInfo / GetNativeSystemInfo(*SYSTEM_INFO).
pub(crate) fn get_system_info(c: &mut Call<'_>) -> Res {
    let p = c.arg(0)?;
    let n = cpus();
    let mask = if n == 64 { u64::MAX } else { (1u64 << n) - 1 };
    let mut b = [0u8; 48];
    b[0..2].copy_from_slice(&PROCESSOR_ARCHITECTURE_AMD64.to_le_bytes());
    b[4..8].copy_from_slice(&PAGE.to_le_bytes());
    b[8..16].copy_from_slice(&0x1_0000u64.to_le_bytes());
    b[16..24].copy_from_slice(&0x7fff_fffe_ffffu64.to_le_bytes());
    b[24..32].copy_from_slice(&mask.to_le_bytes());
    b[32..36].copy_from_slice(&n.to_le_bytes());
    b[36..40].copy_from_slice(&PROCESSOR_AMD_X8664.to_le_bytes());
    b[40..44].copy_from_slice(&0x1_0000u32.to_le_bytes());
    b[44..46].copy_from_slice(&6u16.to_le_bytes());
    c.write(p, &b)?;
    Ok(0)
}

/// A GetXxxDirectoryA/W answer: the length without the NUL when it fits
/// in `size` characters, else the size needed (with the NUL).
fn put_dir(c: &mut Call<'_>, s: &str, wide: bool) -> Res {
    let (buf, size) = (c.arg(0)?, c.arg(1)? as u32 as usize);
    let units: Vec<u16> = s.encode_utf16().collect();
    let len = units.len();
    if size <= len {
        return Ok(len as u64 + 1);
    }
    if wide {
        let mut b: Vec<u8> = units.iter().flat_map(|u| u.to_le_bytes()).collect();
        b.extend([0, 0]);
        c.write(buf, &b)?;
    } else {
        let mut b = s.as_bytes().to_vec();
        b.push(0);
        c.write(buf, &b)?;
    }
    Ok(len as u64)
}

pub(crate) fn get_system_directory_a(c: &mut Call<'_>) -> Res {
    put_dir(c, SYSTEM_DIR, false)
}

pub(crate) fn get_system_directory_w(c: &mut Call<'_>) -> Res {
    put_dir(c, SYSTEM_DIR, true)
}

pub(crate) fn get_windows_directory_a(c: &mut Call<'_>) -> Res {
    put_dir(c, WINDOWS_DIR, false)
}

pub(crate) fn get_windows_directory_w(c: &mut Call<'_>) -> Res {
    put_dir(c, WINDOWS_DIR, true)
}

/// RtlGetCurrentPeb() → the PEB (from the caller's TEB).
pub(crate) fn rtl_get_current_peb(c: &mut Call<'_>) -> Res {
    c.u64_at(c.cpu.gs_base + TEB_PEB)
}

/// RtlGetNtVersionNumbers(*major, *minor, *build): 10.0.19045, as the PEB
/// says (the build with 0xF in its top nibble, a free build).
pub(crate) fn rtl_get_nt_version_numbers(c: &mut Call<'_>) -> Res {
    for (i, v) in [(0, 10u32), (1, 0), (2, 0xf000_0000 | 19045)] {
        let p = c.arg(i)?;
        if p != 0 {
            c.put_u32(p, v)?;
        }
    }
    Ok(0)
}

/// SystemFunction036 (RtlGenRandom)(buffer, length) → TRUE: the host's
/// getrandom.
pub(crate) fn rtl_gen_random(c: &mut Call<'_>) -> Res {
    let (buf, len) = (c.arg(0)?, c.arg(1)? as u32 as usize);
    let mut b = vec![0u8; len];
    let mut got = 0;
    while got < len {
        // SAFETY: getrandom writes at most `len - got` bytes into our own buffer.
        let r = unsafe { libc::getrandom(b[got..].as_mut_ptr().cast(), len - got, 0) };
        if r <= 0 {
            if r < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Ok(0);
        }
        got += r as usize;
    }
    c.write(buf, &b)?;
    Ok(1)
}

/// AddDllDirectory(path) → a cookie; urun's DLL search is its own
/// (modules.rs), the directory is not added to it.
pub(crate) fn add_dll_directory(c: &mut Call<'_>) -> Res {
    Ok(c.arg(0)?.max(1))
}

/// SetErrorMode(mode) → the previous mode, kept per process.
pub(crate) fn set_error_mode(c: &mut Call<'_>) -> Res {
    use std::sync::atomic::{AtomicU32, Ordering};
    static MODE: AtomicU32 = AtomicU32::new(0);
    let m = c.arg(0)? as u32;
    Ok(u64::from(MODE.swap(m, Ordering::Relaxed)))
}

/// WSAGetOverlappedResult: urun has no overlapped sockets, so no
/// operation can be asked about (WSA_INVALID_HANDLE).
pub(crate) fn wsa_get_overlapped_result(c: &mut Call<'_>) -> Res {
    const WSA_INVALID_HANDLE: u32 = 6;
    set_error(c, WSA_INVALID_HANDLE)?;
    Ok(0)
}

/// WSAStartup(version, *WSADATA) → 0: version 2.2, no vendor data.
pub(crate) fn wsa_startup(c: &mut Call<'_>) -> Res {
    let p = c.arg(1)?;
    let mut b = [0u8; 408];
    b[0..2].copy_from_slice(&0x0202u16.to_le_bytes());
    b[2..4].copy_from_slice(&0x0202u16.to_le_bytes());
    b[8..23].copy_from_slice(b"WinSock 2.0\0\0\0\0");
    b[265..272].copy_from_slice(b"Running");
    c.write(p, &b)?;
    Ok(0)
}

/// FormatMessageA/W: urun has no message tables, so every message is
/// "not found" (ERROR_MR_MID_NOT_FOUND); callers fall back to the number.
pub(crate) fn format_message(c: &mut Call<'_>) -> Res {
    const ERROR_MR_MID_NOT_FOUND: u32 = 317;
    set_error(c, ERROR_MR_MID_NOT_FOUND)?;
    Ok(0)
}
