//! ntdll's file calls as MSVC-built Rust programs make them (Rust's std
//! writes to a console handle that is not a console with NtWriteFile):
//! NtWriteFile, NtReadFile, RtlNtStatusToDosError, over the same host
//! descriptors kernel32's file handles are.

use super::abi::{Call, Res};
use super::kernel32::{handle_fd, ERROR_INVALID_HANDLE};
use super::lock;

const STATUS_SUCCESS: u64 = 0;
const STATUS_END_OF_FILE: u32 = 0xC000_0011;
const STATUS_INVALID_HANDLE: u32 = 0xC000_0008;
const STATUS_ACCESS_VIOLATION: u32 = 0xC000_0005;

/// NTSTATUS -> Win32 error, for the statuses urun returns and a few that
/// programs test for.
const STATUS_TO_DOS: &[(u32, u32)] = &[
    (0, 0),
    (STATUS_INVALID_HANDLE, ERROR_INVALID_HANDLE),
    (STATUS_END_OF_FILE, 38),       // ERROR_HANDLE_EOF
    (STATUS_ACCESS_VIOLATION, 998), // ERROR_NOACCESS
    (0xC000_000D, 87),              // STATUS_INVALID_PARAMETER
    (0xC000_0022, 5),               // STATUS_ACCESS_DENIED
    (0xC000_0034, 2),               // STATUS_OBJECT_NAME_NOT_FOUND
    (0xC000_003A, 3),               // STATUS_OBJECT_PATH_NOT_FOUND
    (0xC000_0035, 183),             // STATUS_OBJECT_NAME_COLLISION
    (0xC000_0017, 8),               // STATUS_NO_MEMORY
    (0xC000_014B, 109),             // STATUS_PIPE_BROKEN: ERROR_BROKEN_PIPE
    (0xC000_00B0, 233),             // STATUS_PIPE_DISCONNECTED
    (0xC000_007F, 112),             // STATUS_DISK_FULL
    (0xC000_0002, 1),               // STATUS_NOT_IMPLEMENTED: ERROR_INVALID_FUNCTION
    (0x0000_0103, 997),             // STATUS_PENDING: ERROR_IO_PENDING
    (0xC000_0120, 995),             // STATUS_CANCELLED: ERROR_OPERATION_ABORTED
];

/// The NTSTATUS for a host errno.
fn status_of(errno: i32) -> u32 {
    match errno {
        libc::EBADF => STATUS_INVALID_HANDLE,
        libc::EPIPE => 0xC000_014B,
        libc::ENOSPC => 0xC000_007F,
        libc::EACCES | libc::EPERM => 0xC000_0022,
        libc::EFAULT => STATUS_ACCESS_VIOLATION,
        _ => 0xC000_000D,
    }
}

pub(crate) fn rtl_nt_status_to_dos_error(c: &mut Call<'_>) -> Res {
    let s = c.arg(0)? as u32;
    // ERROR_MR_MID_NOT_FOUND (317) for a status with no mapping.
    Ok(u64::from(STATUS_TO_DOS.iter().find(|(k, _)| *k == s).map_or(317, |(_, d)| *d)))
}

/// The byte offset a read or write names: None for the current position
/// (a NULL pointer, or FILE_USE_FILE_POINTER_POSITION -2, or
/// FILE_WRITE_TO_END_OF_FILE -1, which an O_APPEND write does anyway).
fn offset(c: &Call<'_>, p: u64) -> Result<Option<i64>, super::abi::Fail> {
    if p == 0 {
        return Ok(None);
    }
    let v = c.u64_at(p)? as i64;
    Ok((v >= 0).then_some(v))
}

fn finish(c: &Call<'_>, iosb: u64, status: u32, info: u64) -> Res {
    if iosb != 0 {
        c.put_u64(iosb, u64::from(status))?;
        c.put_u64(iosb + 8, info)?;
    }
    Ok(u64::from(status))
}

/// NtWriteFile(h, event, apc, apc_ctx, iosb, buf, len, offset, key):
/// synchronous; the event and APC are not used (urun opens no handle for
/// overlapped I/O).
pub(crate) fn nt_write_file(c: &mut Call<'_>) -> Res {
    let (h, iosb, buf, len, off) = (c.arg(0)?, c.arg(4)?, c.arg(5)?, c.arg(6)? as u32, c.arg(7)?);
    let Some(fd) = handle_fd(h) else { return finish(c, iosb, STATUS_INVALID_HANDLE, 0) };
    let data = c.read(buf, len as usize)?;
    if fd <= 2 {
        lock(&c.p.streams).flush_fd(fd);
    }
    let r = match offset(c, off)? {
        None => super::stdio::write_all(fd, &data),
        Some(at) => pwrite_all(fd, &data, at),
    };
    match r {
        Ok(n) => finish(c, iosb, STATUS_SUCCESS as u32, n as u64),
        Err(e) => finish(c, iosb, status_of(e), 0),
    }
}

fn pwrite_all(fd: i32, data: &[u8], at: i64) -> Result<usize, i32> {
    let mut done = 0usize;
    while done < data.len() {
        // SAFETY: writing from urun's own buffer.
        let n = unsafe { libc::pwrite(fd, data[done..].as_ptr().cast(), data.len() - done, at + done as i64) };
        if n < 0 {
            let e = std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO);
            if e == libc::EINTR {
                continue;
            }
            return Err(e);
        }
        done += n as usize;
    }
    Ok(done)
}

/// NtReadFile(h, event, apc, apc_ctx, iosb, buf, len, offset, key):
/// synchronous; end of file is STATUS_END_OF_FILE with nothing read.
pub(crate) fn nt_read_file(c: &mut Call<'_>) -> Res {
    let (h, iosb, buf, len, off) = (c.arg(0)?, c.arg(4)?, c.arg(5)?, c.arg(6)? as u32, c.arg(7)?);
    let Some(fd) = handle_fd(h) else { return finish(c, iosb, STATUS_INVALID_HANDLE, 0) };
    let at = offset(c, off)?;
    let mut data = vec![0u8; len as usize];
    let n = loop {
        // SAFETY: reading into urun's own buffer of `len` bytes.
        let n = unsafe {
            match at {
                None => libc::read(fd, data.as_mut_ptr().cast(), data.len()),
                Some(o) => libc::pread(fd, data.as_mut_ptr().cast(), data.len(), o),
            }
        };
        if n >= 0 {
            break n as usize;
        }
        let e = std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO);
        if e != libc::EINTR {
            return finish(c, iosb, status_of(e), 0);
        }
    };
    if n == 0 && len > 0 {
        return finish(c, iosb, STATUS_END_OF_FILE, 0);
    }
    c.write(buf, &data[..n])?;
    finish(c, iosb, STATUS_SUCCESS as u32, n as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_once() {
        for (i, (s, _)) in STATUS_TO_DOS.iter().enumerate() {
            assert_eq!(STATUS_TO_DOS.iter().position(|(t, _)| t == s), Some(i), "{s:#x} twice");
        }
    }
}
