//! The console and the wide (UTF-16) side of the process environment:
//! WriteConsoleA/W (UTF-8 on a terminal; on anything else they fail with
//! ERROR_INVALID_HANDLE, as on Windows, so programs fall back to
//! WriteFile), GetConsoleMode/SetConsoleMode (succeed exactly on a
//! terminal), Set/GetConsole(Output)CP; GetCommandLineW and
//! GetEnvironmentStringsW (the process parameters' own strings),
//! GetEnvironmentStringsA, GetEnvironmentVariableW, msvcrt's
//! `__wgetmainargs` and `_wfopen`.

use std::sync::Mutex;

use urun_cpu::state::reg;

use super::abi::{Call, Fail, Res};
use super::kernel32::{handle_fd, set_error, ERROR_ENVVAR_NOT_FOUND, ERROR_INVALID_HANDLE};
use super::lock;

/// The wide argv and environment arrays `__wgetmainargs` built, and the
/// narrow environment block of GetEnvironmentStringsA (made once).
static WIDE: Mutex<Made> = Mutex::new((None, None));

/// (wide argv, wide envp) and the narrow environment block, once made.
type Made = (Option<(u64, u64)>, Option<u64>);

fn is_tty(fd: i32) -> bool {
    // SAFETY: isatty only inspects the descriptor.
    unsafe { libc::isatty(fd) == 1 }
}

/// The terminal behind a console handle, or None (error set).
fn console_fd(c: &Call<'_>, h: u64) -> Result<Option<i32>, Fail> {
    match handle_fd(h) {
        Some(fd) if is_tty(fd) => Ok(Some(fd)),
        _ => {
            set_error(c, ERROR_INVALID_HANDLE)?;
            Ok(None)
        }
    }
}

fn write_console(c: &mut Call<'_>, wide: bool) -> Res {
    let (h, buf, n, written) = (c.arg(0)?, c.arg(1)?, c.arg(2)? as u32 as u64, c.arg(3)?);
    let Some(fd) = console_fd(c, h)? else { return Ok(0) };
    let bytes = if wide {
        let raw = c.read(buf, 2 * n as usize)?;
        let units: Vec<u16> = raw.chunks_exact(2).map(|w| u16::from_le_bytes([w[0], w[1]])).collect();
        String::from_utf16_lossy(&units).into_bytes()
    } else {
        c.read(buf, n as usize)?
    };
    lock(&c.p.streams).flush_fd(fd);
    match super::stdio::write_all(fd, &bytes) {
        Ok(_) => {
            if written != 0 {
                c.put_u32(written, n as u32)?;
            }
            Ok(1)
        }
        Err(e) => {
            set_error(c, super::kernel32::win32_error(e))?;
            Ok(0)
        }
    }
}

pub(crate) fn write_console_a(c: &mut Call<'_>) -> Res {
    write_console(c, false)
}

pub(crate) fn write_console_w(c: &mut Call<'_>) -> Res {
    write_console(c, true)
}

/// GetConsoleMode: ENABLE_PROCESSED_OUTPUT | ENABLE_WRAP_AT_EOL_OUTPUT for
/// output, the usual cooked-input flags for input.
pub(crate) fn get_console_mode(c: &mut Call<'_>) -> Res {
    let (h, out) = (c.arg(0)?, c.arg(1)?);
    let Some(fd) = console_fd(c, h)? else { return Ok(0) };
    c.put_u32(out, if fd == 0 { 0x1f7 } else { 0x3 })?;
    Ok(1)
}

pub(crate) fn set_console_mode(c: &mut Call<'_>) -> Res {
    let h = c.arg(0)?;
    Ok(u64::from(console_fd(c, h)?.is_some()))
}

/// SetConsoleOutputCP / SetConsoleCP: UTF-8 is what urun writes; other
/// pages are accepted and change nothing.
pub(crate) fn set_console_cp(c: &mut Call<'_>) -> Res {
    let cp = c.arg(0)? as u32;
    Ok(u64::from(cp != 0))
}

/// The process parameters (PEB+0x20).
fn params(c: &Call<'_>) -> Result<u64, Fail> {
    let peb = c.u64_at(c.cpu.gs_base + super::teb::TEB_PEB)?;
    c.u64_at(peb + 0x20)
}

pub(crate) fn get_command_line_w(c: &mut Call<'_>) -> Res {
    let p = params(c)?;
    c.u64_at(p + 0x78)
}

pub(crate) fn get_environment_strings_w(c: &mut Call<'_>) -> Res {
    let p = params(c)?;
    c.u64_at(p + 0x80)
}

/// GetEnvironmentStringsA: the narrow block (NAME=VALUE\0…\0), made once.
pub(crate) fn get_environment_strings_a(c: &mut Call<'_>) -> Res {
    if let Some(b) = lock(&WIDE).1 {
        return Ok(b);
    }
    let mut block = Vec::new();
    let mut at = c.p.envp;
    loop {
        let s = c.u64_at(at)?;
        if s == 0 {
            break;
        }
        block.extend(c.cstr(s)?);
        block.push(0);
        at += 8;
    }
    block.push(0);
    let b = alloc(c, &block)?;
    lock(&WIDE).1 = Some(b);
    Ok(b)
}

pub(crate) fn free_environment_strings(_: &mut Call<'_>) -> Res {
    Ok(1)
}

fn alloc(c: &Call<'_>, bytes: &[u8]) -> Result<u64, Fail> {
    let a = lock(&c.p.heap).alloc(bytes.len().max(1) as u64).ok_or(Fail::Fault(0))?;
    c.write(a, bytes)?;
    Ok(a)
}

fn utf16z(s: &[u8]) -> Vec<u8> {
    String::from_utf8_lossy(s).encode_utf16().chain([0]).flat_map(|u| u.to_le_bytes()).collect()
}

pub(crate) fn get_environment_variable_w(c: &mut Call<'_>) -> Res {
    let (name, buf, size) = (c.arg(0)?, c.arg(1)?, c.arg(2)? as u32 as u64);
    let name = String::from_utf16_lossy(&c.wstr(name)?);
    let Some(v) = super::msvcrt::env_value(c, name.as_bytes()) else {
        set_error(c, ERROR_ENVVAR_NOT_FOUND)?;
        return Ok(0);
    };
    let value = utf16z(&c.cstr(v)?);
    let units = value.len() as u64 / 2;
    if units > size {
        return Ok(units);
    }
    c.write(buf, &value)?;
    Ok(units - 1)
}

/// A NULL-terminated array of UTF-16 copies of the narrow strings in the
/// guest array at `array`.
fn wide_array(c: &Call<'_>, array: u64) -> Result<u64, Fail> {
    let mut ptrs = Vec::new();
    let mut at = array;
    loop {
        let s = c.u64_at(at)?;
        if s == 0 {
            break;
        }
        ptrs.push(alloc(c, &utf16z(&c.cstr(s)?))?);
        at += 8;
    }
    ptrs.push(0);
    alloc(c, &ptrs.iter().flat_map(|p| p.to_le_bytes()).collect::<Vec<u8>>())
}

/// __wgetmainargs(&argc, &wargv, &wenvp, expand, &startupinfo).
pub(crate) fn wgetmainargs(c: &mut Call<'_>) -> Res {
    let (argc, argv, envp) = (c.arg(0)?, c.arg(1)?, c.arg(2)?);
    let made = lock(&WIDE).0;
    let (wargv, wenvp) = match made {
        Some(v) => v,
        None => {
            let v = (wide_array(c, c.p.argv)?, wide_array(c, c.p.envp)?);
            lock(&WIDE).0 = Some(v);
            v
        }
    };
    c.put_u32(argc, c.p.argc as u32)?;
    c.put_u64(argv, wargv)?;
    c.put_u64(envp, wenvp)?;
    Ok(0)
}

/// _wfopen(path, mode): `fopen` on the UTF-8 forms.
pub(crate) fn wfopen(c: &mut Call<'_>) -> Res {
    let (path, mode) = (c.arg(0)?, c.arg(1)?);
    let mut p = String::from_utf16_lossy(&c.wstr(path)?).into_bytes();
    let mut m = String::from_utf16_lossy(&c.wstr(mode)?).into_bytes();
    p.push(0);
    m.push(0);
    let (pa, ma) = (alloc(c, &p)?, alloc(c, &m)?);
    // fopen reads its arguments from the registers (volatile in the
    // Windows ABI, so changing them is invisible to the caller).
    c.cpu.gpr[reg::R10] = pa;
    c.cpu.gpr[reg::RDX] = ma;
    let r = super::stdio::fopen(c);
    let mut heap = lock(&c.p.heap);
    heap.free(pa);
    heap.free(ma);
    r
}
