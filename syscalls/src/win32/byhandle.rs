//! File facts by handle as Rust's std asks for them (metadata, same-file
//! checks, canonical paths, directory walks): GetFileInformationByHandle,
//! GetFileInformationByHandleEx (basic, standard, attribute-tag and id
//! classes), GetFinalPathNameByHandleW (the host path, as the other path
//! functions give back), FindFirstFileExW, FlushFileBuffers. Handles are
//! the host descriptors of `kernel32::handle_fd`.

use urun_cpu::state::reg;

use super::abi::{Call, Fail, Res};
use super::kernel32::{handle_fd, set_error, win32_error, ERROR_INVALID_HANDLE, ERROR_INVALID_PARAMETER};

const ERROR_INSUFFICIENT_BUFFER: u32 = 122;

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO)
}

/// fstat of a handle's descriptor; None (the error set) when it fails.
fn stat_of(c: &Call<'_>, h: u64) -> Result<Option<libc::stat>, Fail> {
    super::files::fstat_handle(c, h)
}

fn filetime(sec: i64, nsec: i64) -> u64 {
    super::files::filetime(sec, nsec)
}

fn attrs(st: &libc::stat) -> u32 {
    super::files::attrs_of(st)
}

fn is_dir(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

fn size(st: &libc::stat) -> u64 {
    if is_dir(st) {
        0
    } else {
        st.st_size as u64
    }
}

/// (creation, access, write, change) as FILETIMEs; Linux keeps no creation
/// time, so it is the write time (as FindFirstFile reports it).
fn times(st: &libc::stat) -> [u64; 4] {
    let w = filetime(st.st_mtime, st.st_mtime_nsec);
    [w, filetime(st.st_atime, st.st_atime_nsec), w, filetime(st.st_ctime, st.st_ctime_nsec)]
}

/// GetFileInformationByHandleEx(h, class, buf, size) for FileBasicInfo (0),
/// FileStandardInfo (1), FileAttributeTagInfo (9) and FileIdInfo (18);
/// other classes fail with ERROR_INVALID_PARAMETER.
pub(crate) fn get_file_information_by_handle_ex(c: &mut Call<'_>) -> Res {
    let (h, class, out, len) = (c.arg(0)?, c.arg(1)? as u32, c.arg(2)?, c.arg(3)? as u32);
    let Some(st) = stat_of(c, h)? else { return Ok(0) };
    let mut b: Vec<u8> = Vec::new();
    match class {
        0 => {
            for t in times(&st) {
                b.extend_from_slice(&t.to_le_bytes());
            }
            b.extend_from_slice(&attrs(&st).to_le_bytes());
            b.extend_from_slice(&[0; 4]);
        }
        1 => {
            b.extend_from_slice(&(st.st_blocks as u64 * 512).to_le_bytes());
            b.extend_from_slice(&size(&st).to_le_bytes());
            b.extend_from_slice(&(st.st_nlink as u32).to_le_bytes());
            b.push(0);
            b.push(u8::from(is_dir(&st)));
            b.extend_from_slice(&[0; 2]);
        }
        9 => {
            b.extend_from_slice(&attrs(&st).to_le_bytes());
            b.extend_from_slice(&0u32.to_le_bytes());
        }
        18 => {
            b.extend_from_slice(&st.st_dev.to_le_bytes());
            b.extend_from_slice(&st.st_ino.to_le_bytes());
            b.extend_from_slice(&[0; 8]);
        }
        _ => {
            set_error(c, ERROR_INVALID_PARAMETER)?;
            return Ok(0);
        }
    }
    if (len as usize) < b.len() {
        set_error(c, ERROR_INSUFFICIENT_BUFFER)?;
        return Ok(0);
    }
    c.write(out, &b)?;
    Ok(1)
}

/// GetFinalPathNameByHandleW(h, buf, len, flags): the host path of the
/// open file (what /proc/self/fd says), whatever form `flags` asks for;
/// the length without the NUL, or the size needed with it when `len` is
/// too small.
pub(crate) fn get_final_path_name_by_handle_w(c: &mut Call<'_>) -> Res {
    let (h, buf, len) = (c.arg(0)?, c.arg(1)?, c.arg(2)? as u32);
    let Some(fd) = handle_fd(h) else {
        set_error(c, ERROR_INVALID_HANDLE)?;
        return Ok(0);
    };
    let path = match std::fs::read_link(format!("/proc/self/fd/{fd}")) {
        Ok(p) if p.is_absolute() => p,
        Ok(_) => {
            set_error(c, ERROR_INVALID_HANDLE)?;
            return Ok(0);
        }
        Err(e) => {
            set_error(c, win32_error(e.raw_os_error().unwrap_or(libc::EIO)))?;
            return Ok(0);
        }
    };
    let w: Vec<u16> = path.to_string_lossy().encode_utf16().collect();
    if (w.len() as u64) >= u64::from(len) {
        return Ok(w.len() as u64 + 1);
    }
    let bytes: Vec<u8> = w.iter().chain(std::iter::once(&0)).flat_map(|u| u.to_le_bytes()).collect();
    c.write(buf, &bytes)?;
    Ok(w.len() as u64)
}

/// FindFirstFileExW(name, level, data, op, filter, flags): FindFirstFileW
/// (name, data) for both info levels (FindExInfoBasic only leaves the
/// short name empty, which urun does anyway) and every search op (the
/// directories-only op is a hint Windows may ignore too).
pub(crate) fn find_first_file_ex_w(c: &mut Call<'_>) -> Res {
    let level = c.arg(1)? as u32;
    if level > 1 {
        set_error(c, ERROR_INVALID_PARAMETER)?;
        return Ok(u64::MAX);
    }
    // RDX is volatile in the Windows ABI: the data pointer takes the place
    // FindFirstFileW has it in.
    c.cpu.gpr[reg::RDX] = c.arg(2)?;
    super::files::find_first_file_w(c)
}

/// FlushFileBuffers(h): fsync for files; consoles and pipes have nothing
/// to flush.
pub(crate) fn flush_file_buffers(c: &mut Call<'_>) -> Res {
    let h = c.arg(0)?;
    let Some(fd) = handle_fd(h) else {
        set_error(c, ERROR_INVALID_HANDLE)?;
        return Ok(0);
    };
    if fd <= 2 {
        super::lock(&c.p.streams).flush_fd(fd);
    }
    // SAFETY: fsync on the handle's descriptor.
    if unsafe { libc::fsync(fd) } != 0 && !matches!(errno(), libc::EINVAL | libc::EROFS) {
        set_error(c, win32_error(errno()))?;
        return Ok(0);
    }
    Ok(1)
}
