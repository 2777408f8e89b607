//! Where a Windows program keeps per-user files, as a Linux user expects
//! them: the profile directory is `$HOME`, and the known folders map to
//! the XDG directories (RoamingAppData -> `$XDG_CONFIG_HOME` or
//! `~/.config`, LocalAppData -> `$XDG_DATA_HOME` or `~/.local/share`), so
//! a program's user configuration is where its Linux build looks
//! (userenv!GetUserProfileDirectoryW, shell32!SHGetKnownFolderPath,
//! combase!CoTaskMemFree).

use super::abi::{Call, Res};
use super::kernel32::set_error;
use super::lock;

const ERROR_INSUFFICIENT_BUFFER: u32 = 122;
const E_FAIL: u64 = 0x8000_4005;
const E_INVALIDARG: u64 = 0x8007_0057;
const E_OUTOFMEMORY: u64 = 0x8007_000E;

/// A known folder: its GUID (as the 16 bytes in memory) and how to find it.
struct Known {
    guid: [u8; 16],
    /// The XDG variable that names it, if any, and the fallback under $HOME.
    xdg: Option<&'static str>,
    under_home: &'static str,
}

const fn guid(d1: u32, d2: u16, d3: u16, d4: [u8; 8]) -> [u8; 16] {
    let a = d1.to_le_bytes();
    let b = d2.to_le_bytes();
    let c = d3.to_le_bytes();
    [a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d4[0], d4[1], d4[2], d4[3], d4[4], d4[5], d4[6], d4[7]]
}

const KNOWN: &[Known] = &[
    // FOLDERID_RoamingAppData {3EB685DB-65F9-4CF6-A03A-E3EF65729F3D}
    Known {
        guid: guid(0x3EB6_85DB, 0x65F9, 0x4CF6, [0xA0, 0x3A, 0xE3, 0xEF, 0x65, 0x72, 0x9F, 0x3D]),
        xdg: Some("XDG_CONFIG_HOME"),
        under_home: ".config",
    },
    // FOLDERID_LocalAppData {F1B32785-6FBA-4FCF-9D55-7B8E7F157091}
    Known {
        guid: guid(0xF1B3_2785, 0x6FBA, 0x4FCF, [0x9D, 0x55, 0x7B, 0x8E, 0x7F, 0x15, 0x70, 0x91]),
        xdg: Some("XDG_DATA_HOME"),
        under_home: ".local/share",
    },
    // FOLDERID_Profile {5E6C858F-0E22-4760-9AFE-EA3317B67173}
    Known {
        guid: guid(0x5E6C_858F, 0x0E22, 0x4760, [0x9A, 0xFE, 0xEA, 0x33, 0x17, 0xB6, 0x71, 0x73]),
        xdg: None,
        under_home: "",
    },
];

/// `$HOME`, or the passwd entry's home when it is unset.
fn home() -> Option<String> {
    if let Some(h) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        return Some(h.to_string_lossy().into_owned());
    }
    // SAFETY: getpwuid returns a pointer into libc's static storage or NULL;
    // it is read at once, on this thread.
    unsafe {
        let pw = libc::getpwuid(libc::getuid());
        if pw.is_null() || (*pw).pw_dir.is_null() {
            return None;
        }
        Some(std::ffi::CStr::from_ptr((*pw).pw_dir).to_string_lossy().into_owned())
    }
}

fn folder(k: &Known) -> Option<String> {
    if let Some(v) = k.xdg.and_then(std::env::var_os).filter(|v| !v.is_empty()) {
        return Some(v.to_string_lossy().into_owned());
    }
    let h = home()?;
    Some(if k.under_home.is_empty() { h } else { format!("{}/{}", h.trim_end_matches('/'), k.under_home) })
}

fn wide(s: &str) -> Vec<u8> {
    s.encode_utf16().chain(std::iter::once(0)).flat_map(u16::to_le_bytes).collect()
}

/// GetUserProfileDirectoryW(token, buf, size *): `$HOME`; the size is in
/// and out, in UTF-16 units counting the NUL.
pub(crate) fn get_user_profile_directory_w(c: &mut Call<'_>) -> Res {
    let (buf, size) = (c.arg(1)?, c.arg(2)?);
    if size == 0 {
        set_error(c, super::kernel32::ERROR_INVALID_PARAMETER)?;
        return Ok(0);
    }
    let Some(h) = home() else {
        set_error(c, 2)?;
        return Ok(0);
    };
    let w = wide(&h);
    let need = (w.len() / 2) as u32;
    let have = c.u32_at(size)?;
    c.put_u32(size, need)?;
    if buf == 0 || have < need {
        set_error(c, ERROR_INSUFFICIENT_BUFFER)?;
        return Ok(0);
    }
    c.write(buf, &w)?;
    Ok(1)
}

/// SHGetKnownFolderPath(rfid, flags, token, PWSTR *out): the folder as a
/// host path in a block the caller frees with CoTaskMemFree; E_FAIL for a
/// folder urun does not map.
pub(crate) fn sh_get_known_folder_path(c: &mut Call<'_>) -> Res {
    let (rfid, out) = (c.arg(0)?, c.arg(3)?);
    if out == 0 || rfid == 0 {
        return Ok(E_INVALIDARG);
    }
    c.put_u64(out, 0)?;
    let g = c.read(rfid, 16)?;
    let Some(path) = KNOWN.iter().find(|k| k.guid[..] == g[..]).and_then(folder) else { return Ok(E_FAIL) };
    let w = wide(&path);
    let Some(a) = lock(&c.p.heap).alloc(w.len() as u64) else { return Ok(E_OUTOFMEMORY) };
    c.write(a, &w)?;
    c.put_u64(out, a)?;
    Ok(0)
}

/// CoTaskMemFree(p): blocks urun handed out come from its heap.
pub(crate) fn co_task_mem_free(c: &mut Call<'_>) -> Res {
    let p = c.arg(0)?;
    if p != 0 {
        lock(&c.p.heap).free(p);
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guids_have_the_windows_layout() {
        // {3EB685DB-65F9-4CF6-A03A-E3EF65729F3D} as stored in memory.
        let want = [0xDB, 0x85, 0xB6, 0x3E, 0xF9, 0x65, 0xF6, 0x4C, 0xA0, 0x3A, 0xE3, 0xEF, 0x65, 0x72, 0x9F, 0x3D];
        assert_eq!(KNOWN[0].guid, want);
    }
}
