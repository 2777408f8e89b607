//! kernel32's file and directory functions over host files: CreateFileA/W
//! (handles are host descriptors, as for the standard handles),
//! GetFileSize(Ex), SetFilePointer(Ex), FindFirstFileA/W / FindNextFile /
//! FindClose (a directory read once, filtered by the wildcard,
//! case-insensitively), GetFullPathNameA/W, Get/SetCurrentDirectoryA/W,
//! GetFileAttributesA/W, DeleteFileA/W, CreateDirectoryA/W,
//! RemoveDirectoryA/W. Paths go through `stdio::host_path` (`\` is `/`,
//! a drive letter is dropped); paths urun gives back are host paths.

use std::collections::HashMap;
use std::ffi::CString;
use std::sync::Mutex;

use super::abi::{Call, Fail, Res};
use super::kernel32::{fd_handle, handle_fd, set_error, win32_error, ERROR_INVALID_HANDLE, ERROR_INVALID_PARAMETER};
use super::lock;

const INVALID_HANDLE_VALUE: u64 = u64::MAX;
const ERROR_FILE_NOT_FOUND: u32 = 2;
const ERROR_NO_MORE_FILES: u32 = 18;
const ERROR_ALREADY_EXISTS: u32 = 183;
const GENERIC_READ: u32 = 0x8000_0000;
const GENERIC_WRITE: u32 = 0x4000_0000;
const GENERIC_ALL: u32 = 0x1000_0000;
/// FILE_WRITE_DATA | FILE_APPEND_DATA
const FILE_WRITE_BITS: u32 = 0x0002 | 0x0004;
const FILE_APPEND_DATA: u32 = 0x0004;
const FILE_READ_DATA: u32 = 0x0001;
const FILE_FLAG_BACKUP_SEMANTICS: u32 = 0x0200_0000;
const FILE_FLAG_DELETE_ON_CLOSE: u32 = 0x0400_0000;
const FILE_ATTRIBUTE_READONLY: u32 = 0x01;
const FILE_ATTRIBUTE_DIRECTORY: u32 = 0x10;
const FILE_ATTRIBUTE_NORMAL: u32 = 0x80;
const INVALID_FILE_ATTRIBUTES: u64 = 0xffff_ffff;
/// Find handles are numbered from here (apart from descriptor handles).
const FIND_BASE: u64 = 0x4000_0000;
/// 100 ns units between 1601 and 1970.
const FILETIME_EPOCH: u64 = 116_444_736_000_000_000;

/// One entry of a directory listing, as WIN32_FIND_DATA describes it.
#[derive(Clone)]
struct Found {
    name: String,
    attrs: u32,
    size: u64,
    mtime: u64,
    atime: u64,
}

/// Open FindFirstFile searches: handle -> entries still to give.
static FINDS: Mutex<(u64, Option<Searches>)> = Mutex::new((0, None));

type Searches = HashMap<u64, Vec<Found>>;

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO)
}

/// A path argument (narrow or wide) as a host path.
pub(crate) fn path_arg(c: &Call<'_>, i: usize, wide: bool) -> Result<Vec<u8>, Fail> {
    let p = c.arg(i)?;
    let raw = if wide { String::from_utf16_lossy(&c.wstr(p)?).into_bytes() } else { c.cstr(p)? };
    Ok(super::stdio::host_path(&raw))
}

pub(crate) fn cpath(p: &[u8]) -> CString {
    CString::new(p.to_vec()).unwrap_or_default()
}

/// Fail with the Win32 error for the host's errno; `v` is the failure value.
pub(crate) fn fail_errno(c: &Call<'_>, v: u64) -> Res {
    set_error(c, win32_error(errno()))?;
    Ok(v)
}

fn create_file(c: &mut Call<'_>, wide: bool) -> Res {
    let path = path_arg(c, 0, wide)?;
    let (access, disposition, flags) = (c.arg(1)? as u32, c.arg(4)? as u32, c.arg(5)? as u32);
    let special: &[(&[u8], &[u8])] =
        &[(b"CONOUT$", b"/dev/stdout"), (b"CONIN$", b"/dev/stdin"), (b"NUL", b"/dev/null")];
    let name = path.rsplit(|&b| b == b'/').next().unwrap_or(&path);
    let path = special.iter().find(|(n, _)| name.eq_ignore_ascii_case(n)).map_or(path.clone(), |(_, p)| p.to_vec());
    let write = access & (GENERIC_WRITE | GENERIC_ALL | FILE_WRITE_BITS) != 0;
    let read = access & (GENERIC_READ | GENERIC_ALL | FILE_READ_DATA) != 0 || !write;
    let mut o = match (read, write) {
        (true, true) => libc::O_RDWR,
        (false, true) => libc::O_WRONLY,
        _ => libc::O_RDONLY,
    } | libc::O_CLOEXEC;
    if access & FILE_APPEND_DATA != 0 && access & (GENERIC_WRITE | GENERIC_ALL | 0x0002) == 0 {
        o |= libc::O_APPEND;
    }
    let cp = cpath(&path);
    // SAFETY: stat into a zeroed struct, on a NUL-terminated path.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let existed = unsafe { libc::stat(cp.as_ptr(), &mut st) } == 0;
    let is_dir = existed && st.st_mode & libc::S_IFMT == libc::S_IFDIR;
    o |= match disposition {
        1 => libc::O_CREAT | libc::O_EXCL,
        2 => libc::O_CREAT | libc::O_TRUNC,
        3 => 0,
        4 => libc::O_CREAT,
        5 => libc::O_TRUNC,
        _ => {
            set_error(c, ERROR_INVALID_PARAMETER)?;
            return Ok(INVALID_HANDLE_VALUE);
        }
    };
    if is_dir {
        if flags & FILE_FLAG_BACKUP_SEMANTICS == 0 {
            set_error(c, 5)?; // ERROR_ACCESS_DENIED, as Windows for a directory
            return Ok(INVALID_HANDLE_VALUE);
        }
        o = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC;
    }
    // SAFETY: open on a NUL-terminated path.
    let fd = unsafe { libc::open(cp.as_ptr(), o, 0o666) };
    if fd < 0 {
        return fail_errno(c, INVALID_HANDLE_VALUE);
    }
    if flags & FILE_FLAG_DELETE_ON_CLOSE != 0 {
        // SAFETY: unlink on a NUL-terminated path; the descriptor stays valid.
        unsafe { libc::unlink(cp.as_ptr()) };
    }
    let overwrote = existed && matches!(disposition, 2 | 4);
    set_error(c, if overwrote { ERROR_ALREADY_EXISTS } else { 0 })?;
    Ok(fd_handle(fd))
}

pub(crate) fn create_file_a(c: &mut Call<'_>) -> Res {
    create_file(c, false)
}

pub(crate) fn create_file_w(c: &mut Call<'_>) -> Res {
    create_file(c, true)
}

pub(crate) fn fstat_handle(c: &Call<'_>, h: u64) -> Result<Option<libc::stat>, Fail> {
    let Some(fd) = handle_fd(h) else {
        set_error(c, ERROR_INVALID_HANDLE)?;
        return Ok(None);
    };
    // SAFETY: fstat into a zeroed struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid out pointer.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        set_error(c, win32_error(errno()))?;
        return Ok(None);
    }
    Ok(Some(st))
}

pub(crate) fn get_file_size_ex(c: &mut Call<'_>) -> Res {
    let (h, out) = (c.arg(0)?, c.arg(1)?);
    let Some(st) = fstat_handle(c, h)? else { return Ok(0) };
    c.put_u64(out, st.st_size as u64)?;
    Ok(1)
}

/// GetFileSize: the low 32 bits, the high ones at `high` when given.
pub(crate) fn get_file_size(c: &mut Call<'_>) -> Res {
    let (h, high) = (c.arg(0)?, c.arg(1)?);
    let Some(st) = fstat_handle(c, h)? else { return Ok(INVALID_FILE_ATTRIBUTES) };
    if high != 0 {
        c.put_u32(high, (st.st_size as u64 >> 32) as u32)?;
    }
    set_error(c, 0)?;
    Ok(st.st_size as u64 & 0xffff_ffff)
}

fn seek(c: &Call<'_>, h: u64, dist: i64, method: u32) -> Result<Option<i64>, Fail> {
    let Some(fd) = handle_fd(h) else {
        set_error(c, ERROR_INVALID_HANDLE)?;
        return Ok(None);
    };
    if fd <= 2 {
        lock(&c.p.streams).flush_fd(fd);
    }
    // FILE_BEGIN 0, FILE_CURRENT 1, FILE_END 2: lseek's values.
    if method > 2 {
        set_error(c, ERROR_INVALID_PARAMETER)?;
        return Ok(None);
    }
    // SAFETY: lseek on the handle's descriptor.
    let at = unsafe { libc::lseek(fd, dist, method as i32) };
    if at < 0 {
        set_error(c, if errno() == libc::EINVAL { 131 } else { win32_error(errno()) })?; // ERROR_NEGATIVE_SEEK
        return Ok(None);
    }
    Ok(Some(at))
}

pub(crate) fn set_file_pointer_ex(c: &mut Call<'_>) -> Res {
    let (h, dist, out, method) = (c.arg(0)?, c.arg(1)? as i64, c.arg(2)?, c.arg(3)? as u32);
    let Some(at) = seek(c, h, dist, method)? else { return Ok(0) };
    if out != 0 {
        c.put_u64(out, at as u64)?;
    }
    Ok(1)
}

/// SetFilePointer(h, low, *high, method): the new position's low 32 bits
/// (and its high ones at `high` when given).
pub(crate) fn set_file_pointer(c: &mut Call<'_>) -> Res {
    let (h, low, high, method) = (c.arg(0)?, c.arg(1)? as u32, c.arg(2)?, c.arg(3)? as u32);
    let dist =
        if high != 0 { (i64::from(c.u32_at(high)? as i32) << 32) | i64::from(low) } else { i64::from(low as i32) };
    let Some(at) = seek(c, h, dist, method)? else { return Ok(INVALID_FILE_ATTRIBUTES) };
    if high != 0 {
        c.put_u32(high, (at as u64 >> 32) as u32)?;
    }
    set_error(c, 0)?;
    Ok(at as u64 & 0xffff_ffff)
}

pub(crate) fn filetime(sec: i64, nsec: i64) -> u64 {
    (sec.max(0) as u64) * 10_000_000 + (nsec.max(0) as u64) / 100 + FILETIME_EPOCH
}

pub(crate) fn attrs_of(st: &libc::stat) -> u32 {
    let mut a = 0;
    if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
        a |= FILE_ATTRIBUTE_DIRECTORY;
    }
    if st.st_mode & 0o222 == 0 {
        a |= FILE_ATTRIBUTE_READONLY;
    }
    if a == 0 {
        FILE_ATTRIBUTE_NORMAL
    } else {
        a
    }
}

/// `name` matches the Windows wildcard `pat` (`*`, `?`), ignoring case.
fn wild_match(pat: &[u8], name: &[u8]) -> bool {
    match pat.split_first() {
        None => name.is_empty(),
        Some((b'*', rest)) => (0..=name.len()).any(|k| wild_match(rest, &name[k..])),
        Some((b'?', rest)) => !name.is_empty() && wild_match(rest, &name[1..]),
        Some((&p, rest)) => name.first().is_some_and(|&n| n.eq_ignore_ascii_case(&p)) && wild_match(rest, &name[1..]),
    }
}

/// The entries of the directory of `pattern` whose names match its last
/// component: `.` and `..` first (as NTFS lists them), then by name.
fn list(pattern: &[u8]) -> Option<Vec<Found>> {
    let cut = pattern.iter().rposition(|&b| b == b'/');
    let (dir, pat) = match cut {
        Some(i) => (&pattern[..i.max(1)], &pattern[i + 1..]),
        None => (&b"."[..], pattern),
    };
    let dir = String::from_utf8_lossy(dir).into_owned();
    let pat = if pat == b"*.*" { &b"*"[..] } else { pat };
    let mut names: Vec<String> = vec![".".into(), "..".into()];
    let mut rest: Vec<String> =
        std::fs::read_dir(&dir).ok()?.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    rest.sort();
    names.extend(rest);
    let mut out = Vec::new();
    for n in names.into_iter().filter(|n| wild_match(pat, n.as_bytes())) {
        let cp = cpath(format!("{dir}/{n}").as_bytes());
        // SAFETY: stat into a zeroed struct, on a NUL-terminated path.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        if unsafe { libc::stat(cp.as_ptr(), &mut st) } != 0 {
            continue;
        }
        out.push(Found {
            name: n,
            attrs: attrs_of(&st),
            size: if st.st_mode & libc::S_IFMT == libc::S_IFDIR { 0 } else { st.st_size as u64 },
            mtime: filetime(st.st_mtime, st.st_mtime_nsec),
            atime: filetime(st.st_atime, st.st_atime_nsec),
        });
    }
    Some(out)
}

/// Fill a WIN32_FIND_DATAA/W at `at`.
fn put_found(c: &Call<'_>, at: u64, f: &Found, wide: bool) -> Result<(), Fail> {
    let len = if wide { 592 } else { 320 };
    let mut b = vec![0u8; len];
    b[0..4].copy_from_slice(&f.attrs.to_le_bytes());
    b[4..12].copy_from_slice(&f.mtime.to_le_bytes());
    b[12..20].copy_from_slice(&f.atime.to_le_bytes());
    b[20..28].copy_from_slice(&f.mtime.to_le_bytes());
    b[28..32].copy_from_slice(&((f.size >> 32) as u32).to_le_bytes());
    b[32..36].copy_from_slice(&(f.size as u32).to_le_bytes());
    if wide {
        let units: Vec<u16> = f.name.encode_utf16().take(259).collect();
        for (k, u) in units.iter().enumerate() {
            b[44 + 2 * k..46 + 2 * k].copy_from_slice(&u.to_le_bytes());
        }
    } else {
        let n = f.name.as_bytes();
        let n = &n[..n.len().min(259)];
        b[44..44 + n.len()].copy_from_slice(n);
    }
    c.write(at, &b)
}

fn find_first(c: &mut Call<'_>, wide: bool) -> Res {
    let pattern = path_arg(c, 0, wide)?;
    let data = c.arg(1)?;
    let mut found = match list(&pattern) {
        Some(v) if !v.is_empty() => v,
        Some(_) => {
            set_error(c, ERROR_FILE_NOT_FOUND)?;
            return Ok(INVALID_HANDLE_VALUE);
        }
        None => {
            set_error(c, 3)?; // ERROR_PATH_NOT_FOUND
            return Ok(INVALID_HANDLE_VALUE);
        }
    };
    let first = found.remove(0);
    put_found(c, data, &first, wide)?;
    let mut finds = lock(&FINDS);
    finds.0 += 1;
    let h = FIND_BASE + finds.0;
    found.reverse();
    finds.1.get_or_insert_with(HashMap::new).insert(h, found);
    Ok(h)
}

pub(crate) fn find_first_file_a(c: &mut Call<'_>) -> Res {
    find_first(c, false)
}

pub(crate) fn find_first_file_w(c: &mut Call<'_>) -> Res {
    find_first(c, true)
}

fn find_next(c: &mut Call<'_>, wide: bool) -> Res {
    let (h, data) = (c.arg(0)?, c.arg(1)?);
    let next = {
        let mut finds = lock(&FINDS);
        match finds.1.as_mut().and_then(|m| m.get_mut(&h)) {
            None => Err(ERROR_INVALID_HANDLE),
            Some(v) => v.pop().ok_or(ERROR_NO_MORE_FILES),
        }
    };
    match next {
        Ok(f) => {
            put_found(c, data, &f, wide)?;
            Ok(1)
        }
        Err(e) => {
            set_error(c, e)?;
            Ok(0)
        }
    }
}

pub(crate) fn find_next_file_a(c: &mut Call<'_>) -> Res {
    find_next(c, false)
}

pub(crate) fn find_next_file_w(c: &mut Call<'_>) -> Res {
    find_next(c, true)
}

pub(crate) fn find_close(c: &mut Call<'_>) -> Res {
    let h = c.arg(0)?;
    let gone = lock(&FINDS).1.as_mut().and_then(|m| m.remove(&h)).is_some();
    if !gone {
        set_error(c, ERROR_INVALID_HANDLE)?;
    }
    Ok(u64::from(gone))
}

/// `path` made absolute against the current directory, `.` and `..`
/// resolved lexically (as GetFullPathName does, without touching the disk).
fn full_path(path: &[u8]) -> Vec<u8> {
    let mut whole = Vec::new();
    if path.first() != Some(&b'/') {
        let cwd = std::env::current_dir().map(|d| d.to_string_lossy().into_owned()).unwrap_or_else(|_| "/".into());
        whole.extend_from_slice(cwd.as_bytes());
        whole.push(b'/');
    }
    whole.extend_from_slice(path);
    let mut parts: Vec<&[u8]> = Vec::new();
    for seg in whole.split(|&b| b == b'/') {
        match seg {
            b"" | b"." => {}
            b".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    let mut out = Vec::new();
    for p in &parts {
        out.push(b'/');
        out.extend_from_slice(p);
    }
    if out.is_empty() || (path.ends_with(b"/") && !parts.is_empty()) {
        out.push(b'/');
    }
    out
}

/// Copy `s` (UTF-8) into a buffer of `size` units (narrow or wide) as
/// Windows' path functions do: the length without the NUL when it fits,
/// else the size needed with the NUL. Returns (result, where the last
/// component starts, in units).
fn put_path(c: &Call<'_>, buf: u64, size: u64, s: &[u8], wide: bool) -> Result<(u64, Option<u64>), Fail> {
    let text = String::from_utf8_lossy(s);
    let units: Vec<u16> = if wide { text.encode_utf16().collect() } else { s.iter().map(|&b| u16::from(b)).collect() };
    let n = units.len() as u64;
    if n + 1 > size {
        return Ok((n + 1, None));
    }
    let mut out = Vec::new();
    for &u in units.iter().chain([&0u16]) {
        if wide {
            out.extend_from_slice(&u.to_le_bytes());
        } else {
            out.push(u as u8);
        }
    }
    c.write(buf, &out)?;
    let last = units.iter().rposition(|&u| u == u16::from(b'/')).map(|i| i as u64 + 1).filter(|&i| i < n);
    Ok((n, last))
}

fn get_full_path_name(c: &mut Call<'_>, wide: bool) -> Res {
    let path = path_arg(c, 0, wide)?;
    let (size, buf, file_part) = (c.arg(1)? as u32 as u64, c.arg(2)?, c.arg(3)?);
    if path.is_empty() {
        set_error(c, ERROR_INVALID_PARAMETER)?;
        return Ok(0);
    }
    let full = full_path(&path);
    let (r, last) = put_path(c, buf, size, &full, wide)?;
    if file_part != 0 {
        let unit = if wide { 2 } else { 1 };
        c.put_u64(file_part, last.map_or(0, |i| buf + unit * i))?;
    }
    Ok(r)
}

pub(crate) fn get_full_path_name_a(c: &mut Call<'_>) -> Res {
    get_full_path_name(c, false)
}

pub(crate) fn get_full_path_name_w(c: &mut Call<'_>) -> Res {
    get_full_path_name(c, true)
}

fn get_current_directory(c: &mut Call<'_>, wide: bool) -> Res {
    let (size, buf) = (c.arg(0)? as u32 as u64, c.arg(1)?);
    let cwd = match std::env::current_dir() {
        Ok(d) => d.to_string_lossy().into_owned(),
        Err(e) => {
            set_error(c, win32_error(e.raw_os_error().unwrap_or(libc::EIO)))?;
            return Ok(0);
        }
    };
    Ok(put_path(c, buf, size, cwd.as_bytes(), wide)?.0)
}

pub(crate) fn get_current_directory_a(c: &mut Call<'_>) -> Res {
    get_current_directory(c, false)
}

pub(crate) fn get_current_directory_w(c: &mut Call<'_>) -> Res {
    get_current_directory(c, true)
}

fn set_current_directory(c: &mut Call<'_>, wide: bool) -> Res {
    let path = path_arg(c, 0, wide)?;
    match std::env::set_current_dir(String::from_utf8_lossy(&path).as_ref()) {
        Ok(()) => Ok(1),
        Err(e) => {
            set_error(c, win32_error(e.raw_os_error().unwrap_or(libc::EIO)))?;
            Ok(0)
        }
    }
}

pub(crate) fn set_current_directory_a(c: &mut Call<'_>) -> Res {
    set_current_directory(c, false)
}

pub(crate) fn set_current_directory_w(c: &mut Call<'_>) -> Res {
    set_current_directory(c, true)
}

fn get_file_attributes(c: &mut Call<'_>, wide: bool) -> Res {
    let cp = cpath(&path_arg(c, 0, wide)?);
    // SAFETY: stat into a zeroed struct, on a NUL-terminated path.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::stat(cp.as_ptr(), &mut st) } != 0 {
        return fail_errno(c, INVALID_FILE_ATTRIBUTES);
    }
    Ok(u64::from(attrs_of(&st)))
}

pub(crate) fn get_file_attributes_a(c: &mut Call<'_>) -> Res {
    get_file_attributes(c, false)
}

pub(crate) fn get_file_attributes_w(c: &mut Call<'_>) -> Res {
    get_file_attributes(c, true)
}

/// DeleteFile, CreateDirectory, RemoveDirectory: one host call each.
fn path_op(c: &mut Call<'_>, wide: bool, op: fn(&std::ffi::CStr) -> i32) -> Res {
    let cp = cpath(&path_arg(c, 0, wide)?);
    if op(&cp) == 0 {
        Ok(1)
    } else {
        fail_errno(c, 0)
    }
}

// SAFETY (the three below): host calls on a NUL-terminated path.
fn unlink(p: &std::ffi::CStr) -> i32 {
    // SAFETY: see above.
    unsafe { libc::unlink(p.as_ptr()) }
}
fn mkdir(p: &std::ffi::CStr) -> i32 {
    // SAFETY: see above.
    unsafe { libc::mkdir(p.as_ptr(), 0o777) }
}
fn rmdir(p: &std::ffi::CStr) -> i32 {
    // SAFETY: see above.
    unsafe { libc::rmdir(p.as_ptr()) }
}

pub(crate) fn delete_file_a(c: &mut Call<'_>) -> Res {
    path_op(c, false, unlink)
}
pub(crate) fn delete_file_w(c: &mut Call<'_>) -> Res {
    path_op(c, true, unlink)
}
pub(crate) fn create_directory_a(c: &mut Call<'_>) -> Res {
    path_op(c, false, mkdir)
}
pub(crate) fn create_directory_w(c: &mut Call<'_>) -> Res {
    path_op(c, true, mkdir)
}
pub(crate) fn remove_directory_a(c: &mut Call<'_>) -> Res {
    path_op(c, false, rmdir)
}
pub(crate) fn remove_directory_w(c: &mut Call<'_>) -> Res {
    path_op(c, true, rmdir)
}

/// GetTempPathA/W: $TMP, $TEMP or /tmp, with a trailing separator.
fn get_temp_path(c: &mut Call<'_>, wide: bool) -> Res {
    let (size, buf) = (c.arg(0)? as u32 as u64, c.arg(1)?);
    let dir = ["TMP", "TEMP"]
        .iter()
        .find_map(|k| super::msvcrt::env_value(c, k.as_bytes()).and_then(|v| c.cstr(v).ok()))
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| b"/tmp".to_vec());
    let mut dir = super::stdio::host_path(&dir);
    if !dir.ends_with(b"/") {
        dir.push(b'/');
    }
    Ok(put_path(c, buf, size, &dir, wide)?.0)
}

pub(crate) fn get_temp_path_a(c: &mut Call<'_>) -> Res {
    get_temp_path(c, false)
}

pub(crate) fn get_temp_path_w(c: &mut Call<'_>) -> Res {
    get_temp_path(c, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_as_windows_does() {
        let cases: &[(&str, &str, bool)] = &[
            ("*", "anything", true),
            ("*.txt", "A.TXT", true),
            ("*.txt", "a.txt.bak", false),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("*b*", "abc", true),
            ("", "", true),
        ];
        for (pat, name, want) in cases {
            assert_eq!(wild_match(pat.as_bytes(), name.as_bytes()), *want, "{pat} {name}");
        }
    }

    #[test]
    fn full_paths_resolve_dots_lexically() {
        assert_eq!(full_path(b"/a/b/../c/./d"), b"/a/c/d");
        assert_eq!(full_path(b"/../x"), b"/x");
        assert_eq!(full_path(b"/a/b/"), b"/a/b/");
        assert_eq!(full_path(b"/"), b"/");
        let cwd = std::env::current_dir().expect("cwd");
        assert_eq!(full_path(b"x/../y"), format!("{}/y", cwd.display()).into_bytes());
    }
}
