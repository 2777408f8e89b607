//! kernel32: process, console and file handles, errors, memory, modules,
//! TLS, strings, time.

use urun_cpu::{Placement, Prot};

use super::abi::{Call, Fail, Res};
use super::lock;
use super::teb::{PROCESS_HEAP, TEB_LAST_ERROR, TEB_TID};

pub(crate) const ERROR_INVALID_HANDLE: u32 = 6;
pub(crate) const ERROR_INVALID_PARAMETER: u32 = 87;
pub(crate) const ERROR_PROC_NOT_FOUND: u32 = 127;
pub(crate) const ERROR_MOD_NOT_FOUND: u32 = 126;
pub(crate) const ERROR_ENVVAR_NOT_FOUND: u32 = 203;
pub(crate) const ERROR_NOT_ENOUGH_MEMORY: u32 = 8;
/// Standard handles are these small values, mapped to host fds 0-2; other
/// file handles are host fds plus this offset.
const STD_BASE: u64 = 0x10;

pub(crate) fn set_error(c: &Call<'_>, e: u32) -> Result<(), Fail> {
    c.put_u32(c.cpu.gs_base + TEB_LAST_ERROR, e)
}

/// The trivial handlers every DLL's table uses: no effect, a result of 0
/// or of 1.
pub(crate) fn nothing(_: &mut Call<'_>) -> Res {
    Ok(0)
}

pub(crate) fn zero(_: &mut Call<'_>) -> Res {
    Ok(0)
}

pub(crate) fn one(_: &mut Call<'_>) -> Res {
    Ok(1)
}

pub(crate) fn exit_process(c: &mut Call<'_>) -> Res {
    let code = c.arg(0)? as u32;
    super::msvcrt::run_onexit(c)?;
    super::loadlib::detach_all(c)?;
    Err(Fail::Stop(c.p.exit(code)))
}

pub(crate) fn get_last_error(c: &mut Call<'_>) -> Res {
    Ok(u64::from(c.u32_at(c.cpu.gs_base + TEB_LAST_ERROR)?))
}

pub(crate) fn set_last_error(c: &mut Call<'_>) -> Res {
    let e = c.arg(0)? as u32;
    set_error(c, e)?;
    Ok(0)
}

/// The host fd behind a file handle.
pub(crate) fn handle_fd(h: u64) -> Option<i32> {
    if (STD_BASE..STD_BASE + 0x10_0000).contains(&h) {
        Some((h - STD_BASE) as i32)
    } else {
        None
    }
}

pub(crate) fn fd_handle(fd: i32) -> u64 {
    STD_BASE + fd as u64
}

pub(crate) fn get_std_handle(c: &mut Call<'_>) -> Res {
    // STD_INPUT_HANDLE -10, STD_OUTPUT_HANDLE -11, STD_ERROR_HANDLE -12.
    match c.arg(0)? as u32 as i32 {
        -10 => Ok(fd_handle(0)),
        -11 => Ok(fd_handle(1)),
        -12 => Ok(fd_handle(2)),
        _ => {
            set_error(c, ERROR_INVALID_HANDLE)?;
            Ok(u64::MAX)
        }
    }
}

fn last_os_error() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO)
}

/// The Win32 error for a host errno.
pub(crate) fn win32_error(errno: i32) -> u32 {
    const TABLE: [(i32, u32); 9] = [
        (libc::ENOENT, 2),
        (libc::EACCES, 5),
        (libc::EPERM, 5),
        (libc::EBADF, ERROR_INVALID_HANDLE),
        (libc::ENOMEM, ERROR_NOT_ENOUGH_MEMORY),
        (libc::EEXIST, 80),
        (libc::EINVAL, ERROR_INVALID_PARAMETER),
        (libc::EPIPE, 232),
        (libc::ENOSPC, 112),
    ];
    TABLE.iter().find(|(e, _)| *e == errno).map_or(31, |(_, w)| *w)
}

pub(crate) fn write_file(c: &mut Call<'_>) -> Res {
    let (h, buf, len, written) = (c.arg(0)?, c.arg(1)?, c.arg(2)? as u32, c.arg(3)?);
    let Some(fd) = handle_fd(h) else {
        set_error(c, ERROR_INVALID_HANDLE)?;
        return Ok(0);
    };
    let data = c.read(buf, len as usize)?;
    if fd <= 2 {
        lock(&c.p.streams).flush_fd(fd);
    }
    let n = super::stdio::write_all(fd, &data);
    if written != 0 {
        c.put_u32(written, n.unwrap_or(0) as u32)?;
    }
    match n {
        Ok(_) => Ok(1),
        Err(e) => {
            set_error(c, win32_error(e))?;
            Ok(0)
        }
    }
}

pub(crate) fn read_file(c: &mut Call<'_>) -> Res {
    let (h, buf, len, read) = (c.arg(0)?, c.arg(1)?, c.arg(2)? as u32, c.arg(3)?);
    let Some(fd) = handle_fd(h) else {
        set_error(c, ERROR_INVALID_HANDLE)?;
        return Ok(0);
    };
    let mut data = vec![0u8; len as usize];
    // SAFETY: reading into urun's own buffer of `len` bytes.
    let n = unsafe { libc::read(fd, data.as_mut_ptr().cast(), data.len()) };
    if n < 0 {
        let e = last_os_error();
        set_error(c, win32_error(e))?;
        return Ok(0);
    }
    c.write(buf, &data[..n as usize])?;
    if read != 0 {
        c.put_u32(read, n as u32)?;
    }
    Ok(1)
}

pub(crate) fn close_handle(c: &mut Call<'_>) -> Res {
    let h = c.arg(0)?;
    if let Some(r) = super::sync::close(c, h) {
        return Ok(r);
    }
    match handle_fd(h) {
        Some(fd) if fd > 2 => {
            // SAFETY: closing a descriptor the guest opened through urun.
            unsafe { libc::close(fd) };
            Ok(1)
        }
        Some(_) => Ok(1),
        None => {
            set_error(c, ERROR_INVALID_HANDLE)?;
            Ok(0)
        }
    }
}

pub(crate) fn get_file_type(c: &mut Call<'_>) -> Res {
    let Some(fd) = handle_fd(c.arg(0)?) else { return Ok(0) };
    // SAFETY: fstat into a zeroed struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid out pointer.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return Ok(0);
    }
    // FILE_TYPE_DISK 1, FILE_TYPE_CHAR 2, FILE_TYPE_PIPE 3.
    Ok(match st.st_mode & libc::S_IFMT {
        libc::S_IFCHR => 2,
        libc::S_IFIFO | libc::S_IFSOCK => 3,
        _ => 1,
    })
}

pub(crate) fn get_startup_info(c: &mut Call<'_>) -> Res {
    let p = c.arg(0)?;
    let mut si = vec![0u8; 104];
    si[0..4].copy_from_slice(&104u32.to_le_bytes());
    c.write(p, &si)?;
    Ok(0)
}

/// Code pages urun treats as UTF-8: CP_ACP, CP_OEMCP, CP_THREAD_ACP, UTF-8.
fn utf8_codepage(cp: u32) -> bool {
    matches!(cp, 0 | 1 | 3 | 65001 | 20127)
}

pub(crate) fn multi_byte_to_wide_char(c: &mut Call<'_>) -> Res {
    let (cp, src, srclen, dst, dstlen) =
        (c.arg(0)? as u32, c.arg(2)?, c.arg(3)? as u32 as i32, c.arg(4)?, c.arg(5)? as u32 as i32);
    if !utf8_codepage(cp) {
        set_error(c, ERROR_INVALID_PARAMETER)?;
        return Ok(0);
    }
    let bytes = if srclen < 0 {
        let mut s = c.cstr(src)?;
        s.push(0);
        s
    } else {
        c.read(src, srclen as usize)?
    };
    let wide: Vec<u16> = String::from_utf8_lossy(&bytes).encode_utf16().collect();
    if dstlen == 0 {
        return Ok(wide.len() as u64);
    }
    if wide.len() > dstlen as usize {
        set_error(c, 122)?; // ERROR_INSUFFICIENT_BUFFER
        return Ok(0);
    }
    let out: Vec<u8> = wide.iter().flat_map(|w| w.to_le_bytes()).collect();
    c.write(dst, &out)?;
    Ok(wide.len() as u64)
}

pub(crate) fn wide_char_to_multi_byte(c: &mut Call<'_>) -> Res {
    let (cp, src, srclen, dst, dstlen) =
        (c.arg(0)? as u32, c.arg(2)?, c.arg(3)? as u32 as i32, c.arg(4)?, c.arg(5)? as u32 as i32);
    if !utf8_codepage(cp) {
        set_error(c, ERROR_INVALID_PARAMETER)?;
        return Ok(0);
    }
    let wide = if srclen < 0 {
        let mut s = c.wstr(src)?;
        s.push(0);
        s
    } else {
        let b = c.read(src, 2 * srclen as usize)?;
        b.chunks_exact(2).map(|w| u16::from_le_bytes([w[0], w[1]])).collect()
    };
    let bytes = String::from_utf16_lossy(&wide).into_bytes();
    if dstlen == 0 {
        return Ok(bytes.len() as u64);
    }
    if bytes.len() > dstlen as usize {
        set_error(c, 122)?;
        return Ok(0);
    }
    c.write(dst, &bytes)?;
    Ok(bytes.len() as u64)
}

/// PAGE_* protection constants and urun's `Prot`.
const PAGE_PROTS: [(u32, Prot); 6] =
    [(0x01, Prot::NONE), (0x02, Prot::READ), (0x04, Prot::RW), (0x10, Prot(4)), (0x20, Prot::RX), (0x40, Prot(7))];

fn prot_from_page(p: u32) -> Option<Prot> {
    // PAGE_WRITECOPY (0x08) and PAGE_EXECUTE_WRITECOPY (0x80) are
    // read-write (and execute) for a private mapping.
    match p & 0xff {
        0x08 => Some(Prot::RW),
        0x80 => Some(Prot(7)),
        v => PAGE_PROTS.iter().find(|(k, _)| *k == v).map(|(_, p)| *p),
    }
}

fn page_from_prot(p: Prot) -> u32 {
    PAGE_PROTS.iter().find(|(_, k)| *k == p).map_or(0x04, |(v, _)| *v)
}

pub(crate) fn virtual_protect(c: &mut Call<'_>) -> Res {
    let (addr, len, new, old) = (c.arg(0)?, c.arg(1)?, c.arg(2)? as u32, c.arg(3)?);
    let start = urun_cpu::mem::page_floor(addr);
    let len = urun_cpu::mem::page_ceil(addr + len) - start;
    let Some(prot) = prot_from_page(new) else {
        set_error(c, ERROR_INVALID_PARAMETER)?;
        return Ok(0);
    };
    let was = c.p.mem.prot_at(start).map_or(0x01, page_from_prot);
    if c.p.mem.protect(start, len, prot).is_err() {
        set_error(c, 487)?; // ERROR_INVALID_ADDRESS
        return Ok(0);
    }
    if old != 0 {
        c.put_u32(old, was)?;
    }
    Ok(1)
}

pub(crate) fn virtual_query(c: &mut Call<'_>) -> Res {
    let (addr, info, len) = (c.arg(0)?, c.arg(1)?, c.arg(2)?);
    if len < 48 {
        set_error(c, 24)?; // ERROR_BAD_LENGTH
        return Ok(0);
    }
    let mut m = [0u8; 48];
    let page = urun_cpu::mem::page_floor(addr);
    match c.p.mem.region_at(addr) {
        Some(r) => {
            m[0..8].copy_from_slice(&page.to_le_bytes());
            m[8..16].copy_from_slice(&r.start.to_le_bytes());
            m[16..20].copy_from_slice(&page_from_prot(r.prot).to_le_bytes());
            m[24..32].copy_from_slice(&(r.end - page).to_le_bytes());
            m[32..36].copy_from_slice(&0x1000u32.to_le_bytes()); // MEM_COMMIT
            m[36..40].copy_from_slice(&page_from_prot(r.prot).to_le_bytes());
            let ty: u32 = if addr >= c.p.exe_base && addr < c.p.exe_base + 0x1000_0000 { 0x100_0000 } else { 0x2_0000 };
            m[40..44].copy_from_slice(&ty.to_le_bytes());
        }
        None => {
            m[0..8].copy_from_slice(&page.to_le_bytes());
            m[24..32].copy_from_slice(&0x1000u64.to_le_bytes());
            m[32..36].copy_from_slice(&0x1_0000u32.to_le_bytes()); // MEM_FREE
            m[36..40].copy_from_slice(&0x01u32.to_le_bytes());
        }
    }
    c.write(info, &m)?;
    Ok(48)
}

pub(crate) fn virtual_alloc(c: &mut Call<'_>) -> Res {
    let (addr, len, _ty, protect) = (c.arg(0)?, c.arg(1)?, c.arg(2)? as u32, c.arg(3)? as u32);
    let prot = prot_from_page(protect).unwrap_or(Prot::RW);
    if addr != 0 && c.p.mem.is_guest(urun_cpu::mem::page_floor(addr), 1) {
        // Committing reserved memory: give it the protection asked for.
        let start = urun_cpu::mem::page_floor(addr);
        let l = urun_cpu::mem::page_ceil(addr + len) - start;
        return Ok(if c.p.mem.protect(start, l, prot).is_ok() { start } else { 0 });
    }
    let place = if addr != 0 { Placement::FixedNoReplace(addr & !0xffff) } else { Placement::Hint(0) };
    match c.p.mem.map(place, len, prot, false, None) {
        Ok(a) => Ok(a),
        Err(_) => {
            set_error(c, ERROR_NOT_ENOUGH_MEMORY)?;
            Ok(0)
        }
    }
}

pub(crate) fn virtual_free(c: &mut Call<'_>) -> Res {
    let (addr, len, ty) = (c.arg(0)?, c.arg(1)?, c.arg(2)? as u32);
    let len = if ty & 0x8000 != 0 { c.p.mem.region_at(addr).map_or(0, |r| r.end - addr) } else { len };
    Ok(u64::from(len != 0 && c.p.mem.unmap(addr, urun_cpu::mem::page_ceil(len)).is_ok()))
}

pub(crate) fn current_process(_: &mut Call<'_>) -> Res {
    Ok(u64::MAX)
}

pub(crate) fn current_thread(_: &mut Call<'_>) -> Res {
    Ok(u64::MAX - 1)
}

pub(crate) fn current_process_id(_: &mut Call<'_>) -> Res {
    Ok(u64::from(std::process::id()))
}

pub(crate) fn current_thread_id(c: &mut Call<'_>) -> Res {
    Ok(c.u64_at(c.cpu.gs_base + TEB_TID)? & 0xffff_ffff)
}

pub(crate) fn process_heap(_: &mut Call<'_>) -> Res {
    Ok(PROCESS_HEAP)
}

pub(crate) fn heap_alloc(c: &mut Call<'_>) -> Res {
    let (flags, n) = (c.arg(1)? as u32, c.arg(2)?);
    let mut heap = lock(&c.p.heap);
    // HEAP_ZERO_MEMORY
    let a = if flags & 8 != 0 { heap.alloc_zeroed(n) } else { heap.alloc(n) };
    Ok(a.unwrap_or(0))
}

pub(crate) fn heap_free(c: &mut Call<'_>) -> Res {
    let a = c.arg(2)?;
    Ok(u64::from(a == 0 || lock(&c.p.heap).free(a)))
}

pub(crate) fn heap_realloc(c: &mut Call<'_>) -> Res {
    let (a, n) = (c.arg(2)?, c.arg(3)?);
    super::msvcrt::realloc_block(c, a, n)
}

pub(crate) fn command_line_a(c: &mut Call<'_>) -> Res {
    Ok(c.p.cmdline_a)
}

pub(crate) fn get_environment_variable_a(c: &mut Call<'_>) -> Res {
    let (name, buf, size) = (c.arg(0)?, c.arg(1)?, c.arg(2)? as u32);
    let name = c.cstr(name)?;
    let Some(v) = super::msvcrt::env_value(c, &name) else {
        set_error(c, ERROR_ENVVAR_NOT_FOUND)?;
        return Ok(0);
    };
    let value = c.cstr(v)?;
    if value.len() + 1 > size as usize {
        return Ok(value.len() as u64 + 1);
    }
    c.write(buf, &[value.as_slice(), b"\0"].concat())?;
    Ok(value.len() as u64)
}

pub(crate) fn now_ns(clock: libc::clockid_t) -> u64 {
    // SAFETY: clock_gettime into a zeroed timespec.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: `ts` is a valid out pointer.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

pub(crate) fn query_performance_counter(c: &mut Call<'_>) -> Res {
    let p = c.arg(0)?;
    c.put_u64(p, now_ns(libc::CLOCK_MONOTONIC) / 100)?;
    Ok(1)
}

pub(crate) fn query_performance_frequency(c: &mut Call<'_>) -> Res {
    let p = c.arg(0)?;
    c.put_u64(p, 10_000_000)?;
    Ok(1)
}

pub(crate) fn system_time_as_file_time(c: &mut Call<'_>) -> Res {
    // 100 ns units since 1601-01-01.
    const EPOCH_DIFF: u64 = 116_444_736_000_000_000;
    let p = c.arg(0)?;
    c.put_u64(p, now_ns(libc::CLOCK_REALTIME) / 100 + EPOCH_DIFF)?;
    Ok(0)
}

pub(crate) fn tick_count(_: &mut Call<'_>) -> Res {
    Ok((now_ns(libc::CLOCK_MONOTONIC) / 1_000_000) & 0xffff_ffff)
}

pub(crate) fn tick_count64(_: &mut Call<'_>) -> Res {
    Ok(now_ns(libc::CLOCK_MONOTONIC) / 1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_protections_round_trip() {
        for (page, prot) in PAGE_PROTS {
            assert_eq!(prot_from_page(page), Some(prot));
            assert_eq!(page_from_prot(prot), page);
        }
        assert_eq!(prot_from_page(0x08), Some(Prot::RW));
        assert_eq!(prot_from_page(0x03), None);
    }
}
