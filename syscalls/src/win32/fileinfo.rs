//! File information by handle and by name as Go's `os.Stat` and
//! `File.Stat` ask for it: GetFileInformationByHandle and
//! GetFileAttributesEx, from the host's `stat`.

use super::abi::{Call, Res};
use super::files::{attrs_of, cpath, fail_errno, filetime, fstat_handle, path_arg};
use super::kernel32::{set_error, ERROR_INVALID_PARAMETER};

/// GET_FILEEX_INFO_LEVELS: the only level there is.
const GET_FILE_EX_INFO_STANDARD: u32 = 0;

/// The three FILETIMEs (creation, last access, last write) of `st`; the
/// host has no birth time in `stat`, so creation is the change time.
fn times(st: &libc::stat) -> [u64; 3] {
    [
        filetime(st.st_ctime, st.st_ctime_nsec),
        filetime(st.st_atime, st.st_atime_nsec),
        filetime(st.st_mtime, st.st_mtime_nsec),
    ]
}

/// attributes, creation, access, write, size high, size low: the head both
/// records share (WIN32_FILE_ATTRIBUTE_DATA is exactly this, 36 bytes).
fn head(st: &libc::stat) -> Vec<u8> {
    let mut b = Vec::with_capacity(52);
    b.extend(attrs_of(st).to_le_bytes());
    for t in times(st) {
        b.extend(t.to_le_bytes());
    }
    b
}

/// GetFileInformationByHandle(h, *BY_HANDLE_FILE_INFORMATION).
pub(crate) fn get_file_information_by_handle(c: &mut Call<'_>) -> Res {
    let (h, out) = (c.arg(0)?, c.arg(1)?);
    let Some(st) = fstat_handle(c, h)? else { return Ok(0) };
    let mut b = head(&st);
    let size = st.st_size as u64;
    b.extend((st.st_dev as u32).to_le_bytes());
    b.extend(((size >> 32) as u32).to_le_bytes());
    b.extend((size as u32).to_le_bytes());
    b.extend((st.st_nlink as u32).to_le_bytes());
    b.extend(((st.st_ino >> 32) as u32).to_le_bytes());
    b.extend((st.st_ino as u32).to_le_bytes());
    c.write(out, &b)?;
    Ok(1)
}

/// GetFileAttributesExA/W(name, level, *WIN32_FILE_ATTRIBUTE_DATA).
fn get_file_attributes_ex(c: &mut Call<'_>, wide: bool) -> Res {
    let (level, out) = (c.arg(1)? as u32, c.arg(2)?);
    if level != GET_FILE_EX_INFO_STANDARD {
        set_error(c, ERROR_INVALID_PARAMETER)?;
        return Ok(0);
    }
    let cp = cpath(&path_arg(c, 0, wide)?);
    // SAFETY: stat into a zeroed struct, on a NUL-terminated path.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::stat(cp.as_ptr(), &mut st) } != 0 {
        return fail_errno(c, 0);
    }
    let mut b = head(&st);
    let size = st.st_size as u64;
    b.extend(((size >> 32) as u32).to_le_bytes());
    b.extend((size as u32).to_le_bytes());
    c.write(out, &b)?;
    Ok(1)
}

pub(crate) fn get_file_attributes_ex_a(c: &mut Call<'_>) -> Res {
    get_file_attributes_ex(c, false)
}

pub(crate) fn get_file_attributes_ex_w(c: &mut Call<'_>) -> Res {
    get_file_attributes_ex(c, true)
}
