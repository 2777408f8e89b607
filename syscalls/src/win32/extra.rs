//! kernel32 and msvcrt functions the Debian mingw DLLs (libgcrypt,
//! libgpg-error) and the mingw C++ runtime DLLs call at start and exit:
//! Local* memory, code page queries, version and locale queries.

use super::abi::{Call, Res};
use super::kernel32::set_error;
use super::lock;

/// LocalAlloc / GlobalAlloc: LMEM_ZEROINIT (0x40) zeroes; the handle is
/// the pointer (LMEM_FIXED; urun does not move blocks).
pub(crate) fn local_alloc(c: &mut Call<'_>) -> Res {
    let (flags, n) = (c.arg(0)? as u32, c.arg(1)?);
    let mut heap = lock(&c.p.heap);
    let a = if flags & 0x40 != 0 { heap.alloc_zeroed(n) } else { heap.alloc(n) };
    drop(heap);
    if a.is_none() {
        set_error(c, super::kernel32::ERROR_NOT_ENOUGH_MEMORY)?;
    }
    Ok(a.unwrap_or(0))
}

/// LocalFree / GlobalFree: NULL on success, the handle when it is not one.
pub(crate) fn local_free(c: &mut Call<'_>) -> Res {
    let a = c.arg(0)?;
    if a == 0 || lock(&c.p.heap).free(a) {
        Ok(0)
    } else {
        set_error(c, super::kernel32::ERROR_INVALID_HANDLE)?;
        Ok(a)
    }
}

fn host_path(c: &Call<'_>, p: u64) -> Result<std::ffi::CString, super::abi::Fail> {
    let mut s = c.cstr(p)?;
    for b in s.iter_mut() {
        if *b == b'\\' {
            *b = b'/';
        }
    }
    Ok(std::ffi::CString::new(s).unwrap_or_default())
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO)
}

/// _access(path, mode): 0 exists, 2 write, 4 read, 6 both (POSIX's values).
pub(crate) fn access(c: &mut Call<'_>) -> Res {
    let (path, mode) = (host_path(c, c.arg(0)?)?, c.arg(1)? as i32 & 6);
    // SAFETY: `path` is a NUL-terminated string urun owns.
    if unsafe { libc::access(path.as_ptr(), mode) } == 0 {
        return Ok(0);
    }
    super::msvcrt::set_errno(c, errno())?;
    Ok(u64::from(u32::MAX))
}

fn sign(o: std::cmp::Ordering) -> u64 {
    o as i32 as i64 as u64
}

fn lower(v: Vec<u8>) -> Vec<u8> {
    v.to_ascii_lowercase()
}

pub(crate) fn stricmp(c: &mut Call<'_>) -> Res {
    let (a, b) = (lower(c.cstr(c.arg(0)?)?), lower(c.cstr(c.arg(1)?)?));
    Ok(sign(a.cmp(&b)))
}

pub(crate) fn strnicmp(c: &mut Call<'_>) -> Res {
    let (mut a, mut b, n) = (lower(c.cstr(c.arg(0)?)?), lower(c.cstr(c.arg(1)?)?), c.arg(2)? as usize);
    a.truncate(n);
    b.truncate(n);
    Ok(sign(a.cmp(&b)))
}

pub(crate) fn strncpy(c: &mut Call<'_>) -> Res {
    let (d, s, n) = (c.arg(0)?, c.arg(1)?, c.arg(2)?);
    let mut src = c.cstr(s)?;
    src.truncate(n as usize);
    c.write(d, &src)?;
    c.fill(d + src.len() as u64, 0, n - src.len() as u64)?;
    Ok(d)
}

pub(crate) fn strstr(c: &mut Call<'_>) -> Res {
    let (h, n) = (c.arg(0)?, c.arg(1)?);
    let (hay, needle) = (c.cstr(h)?, c.cstr(n)?);
    if needle.is_empty() {
        return Ok(h);
    }
    Ok(hay.windows(needle.len()).position(|w| w == needle.as_slice()).map_or(0, |i| h + i as u64))
}

/// strspn (`accept`) and strcspn (`!accept`): the length of the prefix of
/// bytes in (or not in) the set.
fn span(c: &mut Call<'_>, accept: bool) -> Res {
    let (s, set) = (c.cstr(c.arg(0)?)?, c.cstr(c.arg(1)?)?);
    Ok(s.iter().position(|b| set.contains(b) != accept).unwrap_or(s.len()) as u64)
}

pub(crate) fn strspn(c: &mut Call<'_>) -> Res {
    span(c, true)
}

pub(crate) fn strcspn(c: &mut Call<'_>) -> Res {
    span(c, false)
}

pub(crate) fn strpbrk(c: &mut Call<'_>) -> Res {
    let p = c.arg(0)?;
    let (s, set) = (c.cstr(p)?, c.cstr(c.arg(1)?)?);
    Ok(s.iter().position(|b| set.contains(b)).map_or(0, |i| p + i as u64))
}

pub(crate) fn memchr(c: &mut Call<'_>) -> Res {
    let (p, ch, n) = (c.arg(0)?, c.arg(1)? as u8, c.arg(2)?);
    let mut at = 0;
    while at < n {
        let len = (n - at).min(1 << 16);
        let chunk = c.read(p + at, len as usize)?;
        if let Some(i) = chunk.iter().position(|&b| b == ch) {
            return Ok(p + at + i as u64);
        }
        at += len;
    }
    Ok(0)
}

type Class = fn(u8) -> bool;

/// The <ctype.h> classes in the C locale, as msvcrt's masks answer them
/// (any non-zero value is true).
const CTYPES: [(&str, Class); 5] = [
    ("isalnum", |b| b.is_ascii_alphanumeric()),
    ("isalpha", |b| b.is_ascii_alphabetic()),
    ("iscntrl", |b| b.is_ascii_control()),
    ("isspace", |b| matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')),
    ("isxdigit", |b| b.is_ascii_hexdigit()),
];

fn ctype(c: &mut Call<'_>, name: &str) -> Res {
    let v = c.arg(0)? as i32;
    let f = CTYPES.iter().find(|(n, _)| *n == name).map(|(_, f)| *f);
    Ok(u64::from((0..=255).contains(&v) && f.is_some_and(|f| f(v as u8))))
}

pub(crate) fn isalnum(c: &mut Call<'_>) -> Res {
    ctype(c, "isalnum")
}
pub(crate) fn isalpha(c: &mut Call<'_>) -> Res {
    ctype(c, "isalpha")
}
pub(crate) fn iscntrl(c: &mut Call<'_>) -> Res {
    ctype(c, "iscntrl")
}
pub(crate) fn isspace(c: &mut Call<'_>) -> Res {
    ctype(c, "isspace")
}
pub(crate) fn isxdigit(c: &mut Call<'_>) -> Res {
    ctype(c, "isxdigit")
}

pub(crate) fn getpid(_: &mut Call<'_>) -> Res {
    Ok(u64::from(std::process::id()))
}

pub(crate) fn isatty(c: &mut Call<'_>) -> Res {
    let fd = c.arg(0)? as i32;
    // SAFETY: isatty only inspects the descriptor.
    Ok(u64::from(unsafe { libc::isatty(fd) } == 1))
}

/// _time64(t): seconds since 1970, also stored at `t` when not NULL.
pub(crate) fn time64(c: &mut Call<'_>) -> Res {
    let t = c.arg(0)?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    if t != 0 {
        c.put_u64(t, now)?;
    }
    Ok(now)
}

/// clock(): CPU time in CLOCKS_PER_SEC (1000) units, as msvcrt counts it
/// (time since the process started).
pub(crate) fn clock(_: &mut Call<'_>) -> Res {
    // SAFETY: clock_gettime into a zeroed timespec.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: `ts` is a valid out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    Ok((ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000) & 0xffff_ffff)
}

/// GetACP / GetConsoleOutputCP / GetOEMCP: UTF-8, so narrow strings pass
/// through unchanged.
pub(crate) fn utf8_code_page(_: &mut Call<'_>) -> Res {
    Ok(65001)
}

pub(crate) fn is_valid_code_page(c: &mut Call<'_>) -> Res {
    Ok(u64::from(matches!(c.arg(0)? as u32, 65001 | 20127 | 1252 | 437)))
}

/// GetCPInfo: MaxCharSize 4 for UTF-8, 1 for the single-byte pages.
pub(crate) fn get_cp_info(c: &mut Call<'_>) -> Res {
    let (cp, info) = (c.arg(0)? as u32, c.arg(1)?);
    let max: u32 = match cp {
        0 | 1 | 3 | 65001 => 4,
        20127 | 1252 | 437 => 1,
        _ => {
            set_error(c, super::kernel32::ERROR_INVALID_PARAMETER)?;
            return Ok(0);
        }
    };
    let mut v = [0u8; 20];
    v[0..4].copy_from_slice(&max.to_le_bytes());
    v[4] = b'?';
    c.write(info, &v)?;
    Ok(1)
}

/// GetThreadLocale / GetUserDefaultLCID: en-US.
pub(crate) fn thread_locale(_: &mut Call<'_>) -> Res {
    Ok(0x0409)
}

/// GetVersionExA/W: Windows 10.0.19045 (the size field says which struct).
pub(crate) fn get_version_ex(c: &mut Call<'_>) -> Res {
    let p = c.arg(0)?;
    let size = c.u32_at(p)?;
    let mut v = vec![0u8; 20];
    v[0..4].copy_from_slice(&size.to_le_bytes());
    v[4..8].copy_from_slice(&10u32.to_le_bytes());
    v[12..16].copy_from_slice(&19045u32.to_le_bytes());
    v[16..20].copy_from_slice(&2u32.to_le_bytes()); // VER_PLATFORM_WIN32_NT
    c.write(p, &v)?;
    Ok(1)
}

/// wchar_t (UTF-16 unit) comparisons: `n` units at most, ASCII case folded
/// when `fold` (the C locale's towlower).
fn wcmp(c: &Call<'_>, n: Option<u64>, fold: bool) -> Res {
    let (mut a, mut b) = (c.wstr(c.arg(0)?)?, c.wstr(c.arg(1)?)?);
    if let Some(n) = n {
        a.truncate(n as usize);
        b.truncate(n as usize);
    }
    if fold {
        let low = |u: &mut u16| {
            if (u16::from(b'A')..=u16::from(b'Z')).contains(u) {
                *u += 32;
            }
        };
        a.iter_mut().for_each(low);
        b.iter_mut().for_each(low);
    }
    Ok(sign(a.cmp(&b)))
}

pub(crate) fn wcscmp(c: &mut Call<'_>) -> Res {
    wcmp(c, None, false)
}
pub(crate) fn wcsncmp(c: &mut Call<'_>) -> Res {
    let n = c.arg(2)?;
    wcmp(c, Some(n), false)
}
pub(crate) fn wcsicmp(c: &mut Call<'_>) -> Res {
    wcmp(c, None, true)
}
pub(crate) fn wcsnicmp(c: &mut Call<'_>) -> Res {
    let n = c.arg(2)?;
    wcmp(c, Some(n), true)
}

fn wbytes(units: &[u16]) -> Vec<u8> {
    units.iter().chain([&0u16]).flat_map(|u| u.to_le_bytes()).collect()
}

pub(crate) fn wcscpy(c: &mut Call<'_>) -> Res {
    let (d, s) = (c.arg(0)?, c.arg(1)?);
    let src = c.wstr(s)?;
    c.write(d, &wbytes(&src))?;
    Ok(d)
}

pub(crate) fn wcscat(c: &mut Call<'_>) -> Res {
    let (d, s) = (c.arg(0)?, c.arg(1)?);
    let (head, src) = (c.wstr(d)?, c.wstr(s)?);
    c.write(d + 2 * head.len() as u64, &wbytes(&src))?;
    Ok(d)
}

/// The "C" string setlocale answers with (made once in guest memory).
static C_LOCALE: std::sync::Mutex<u64> = std::sync::Mutex::new(0);

/// setlocale(category, locale): only the C locale exists; querying (NULL)
/// or choosing "C", "" or "POSIX" gives "C", anything else NULL.
pub(crate) fn setlocale(c: &mut Call<'_>) -> Res {
    let name = c.arg(1)?;
    if name != 0 && !matches!(c.cstr(name)?.as_slice(), b"C" | b"" | b"POSIX") {
        return Ok(0);
    }
    let mut at = lock(&C_LOCALE);
    if *at == 0 {
        let a = lock(&c.p.heap).alloc(2).ok_or(super::abi::Fail::Fault(0))?;
        c.write(a, b"C\0")?;
        *at = a;
    }
    Ok(*at)
}
