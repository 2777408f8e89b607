//! The module functions of kernel32 over `modules::Modules`: LoadLibrary
//! (with DLL_PROCESS_ATTACH in dependency order), FreeLibrary (DETACH),
//! GetModuleHandle(Ex), GetProcAddress, GetModuleFileName; the attach
//! calls of the init trampoline, and DLL_PROCESS_DETACH at exit.

use urun_loader::ImportName;

use super::abi::{Call, Fail, Res};
use super::kernel32::{set_error, ERROR_INVALID_HANDLE, ERROR_MOD_NOT_FOUND, ERROR_PROC_NOT_FOUND};
use super::modules::Modules;
use super::{lock, peb};

const DLL_PROCESS_DETACH: u64 = 0;
const DLL_PROCESS_ATTACH: u64 = 1;
const ERROR_INSUFFICIENT_BUFFER: u32 = 122;
const ERROR_DLL_INIT_FAILED: u32 = 1114;
/// STATUS_DLL_INIT_FAILED: a DLL's DllMain refused the process.
const STATUS_DLL_INIT_FAILED: u32 = 0xc000_0142;
/// GetModuleHandleEx flags.
const FLAG_PIN: u32 = 1;
const FLAG_UNCHANGED_REFCOUNT: u32 = 2;
const FLAG_FROM_ADDRESS: u32 = 4;

/// A module's base, TLS callbacks and DllMain (0: none).
pub(crate) type InitCalls = (u64, Vec<u64>, u64);

/// The calls one module gets at attach or detach: its TLS callbacks, then
/// its DllMain (Wine's order).
pub(crate) fn init_calls(mods: &Modules, i: usize) -> InitCalls {
    let m = &mods.list[i];
    let callbacks = m.tls.as_ref().map(|t| t.callbacks.clone()).unwrap_or_default();
    (m.base, callbacks, m.entry)
}

/// Guest code for the init trampoline: for each DLL of `order`, its TLS
/// callbacks and DllMain with DLL_PROCESS_ATTACH (lpReserved non-NULL: a
/// static load); a DllMain returning FALSE ends the process with
/// STATUS_DLL_INIT_FAILED. Entered and left with RSP ≡ 8 (mod 16).
pub(crate) fn attach_code(order: &[InitCalls], exit_process: u64) -> Vec<u8> {
    let mut c = Vec::new();
    if order.is_empty() {
        return c;
    }
    c.extend_from_slice(&[0x48, 0x83, 0xec, 0x28]); // sub rsp, 0x28
    let call = |c: &mut Vec<u8>, base: u64, f: u64| {
        c.extend_from_slice(&[0x48, 0xb9]); // mov rcx, base
        c.extend_from_slice(&base.to_le_bytes());
        c.extend_from_slice(&[0xba, 1, 0, 0, 0]); // mov edx, DLL_PROCESS_ATTACH
        c.extend_from_slice(&[0x41, 0xb8, 1, 0, 0, 0]); // mov r8d, 1
        c.extend_from_slice(&[0x48, 0xb8]); // mov rax, f
        c.extend_from_slice(&f.to_le_bytes());
        c.extend_from_slice(&[0xff, 0xd0]); // call rax
    };
    for (base, callbacks, entry) in order {
        for &cb in callbacks {
            call(&mut c, *base, cb);
        }
        if *entry != 0 {
            call(&mut c, *base, *entry);
            // test eax, eax; jnz over the exit (5 + 10 + 2 bytes)
            c.extend_from_slice(&[0x85, 0xc0, 0x75, 17]);
            c.push(0xb9); // mov ecx, STATUS_DLL_INIT_FAILED
            c.extend_from_slice(&STATUS_DLL_INIT_FAILED.to_le_bytes());
            c.extend_from_slice(&[0x48, 0xb8]); // mov rax, ExitProcess
            c.extend_from_slice(&exit_process.to_le_bytes());
            c.extend_from_slice(&[0xff, 0xd0]); // call rax
        }
    }
    c.extend_from_slice(&[0x48, 0x83, 0xc4, 0x28]); // add rsp, 0x28
    c
}

/// Deliver DLL_PROCESS_DETACH (lpReserved non-NULL: the process is ending)
/// to every attached DLL, last attached first. Called by ExitProcess and
/// exit() once the atexit functions have run.
pub(crate) fn detach_all(c: &mut Call<'_>) -> Result<(), Fail> {
    loop {
        let next = {
            let mut mods = lock(&c.p.mods);
            let order = mods.init_order.clone();
            let Some(i) = order.into_iter().rev().find(|&i| mods.list[i].attached && !mods.list[i].gone) else {
                return Ok(());
            };
            mods.list[i].attached = false;
            init_calls(&mods, i)
        };
        let (base, callbacks, entry) = next;
        for cb in callbacks {
            c.upcall(cb, &[base, DLL_PROCESS_DETACH, 1])?;
        }
        if entry != 0 {
            c.upcall(entry, &[base, DLL_PROCESS_DETACH, 1])?;
        }
    }
}

/// The module handle for a name (None: the program).
fn handle_of(c: &Call<'_>, name: Option<&str>) -> u64 {
    let mods = lock(&c.p.mods);
    let i = match name {
        None => mods.list.iter().position(|m| m.is_exe),
        Some(n) => mods.find(n).or_else(|| mods.list.iter().position(|m| m.is_exe && m.name.eq_ignore_ascii_case(n))),
    };
    i.map_or(0, |i| mods.list[i].base)
}

fn name_arg(c: &Call<'_>, i: usize, wide: bool) -> Result<Option<String>, Fail> {
    let p = c.arg(i)?;
    if p == 0 {
        return Ok(None);
    }
    Ok(Some(if wide {
        String::from_utf16_lossy(&c.wstr(p)?)
    } else {
        String::from_utf8_lossy(&c.cstr(p)?).into_owned()
    }))
}

fn get_module_handle(c: &mut Call<'_>, wide: bool) -> Res {
    let name = name_arg(c, 0, wide)?;
    let h = handle_of(c, name.as_deref());
    if h == 0 {
        set_error(c, ERROR_MOD_NOT_FOUND)?;
    }
    Ok(h)
}

pub(crate) fn get_module_handle_a(c: &mut Call<'_>) -> Res {
    get_module_handle(c, false)
}

pub(crate) fn get_module_handle_w(c: &mut Call<'_>) -> Res {
    get_module_handle(c, true)
}

fn get_module_handle_ex(c: &mut Call<'_>, wide: bool) -> Res {
    let (flags, what, out) = (c.arg(0)? as u32, c.arg(1)?, c.arg(2)?);
    if out == 0 {
        set_error(c, super::kernel32::ERROR_INVALID_PARAMETER)?;
        return Ok(0);
    }
    let h = if flags & FLAG_FROM_ADDRESS != 0 {
        let mods = lock(&c.p.mods);
        mods.containing(what).map_or(0, |i| mods.list[i].base)
    } else {
        let name = name_arg(c, 1, wide)?;
        handle_of(c, name.as_deref())
    };
    c.put_u64(out, h)?;
    if h == 0 {
        set_error(c, ERROR_MOD_NOT_FOUND)?;
        return Ok(0);
    }
    if flags & (FLAG_PIN | FLAG_UNCHANGED_REFCOUNT) == 0 {
        let mut mods = lock(&c.p.mods);
        if let Some(i) = mods.by_handle(h) {
            mods.list[i].refs += 1;
        }
    } else if flags & FLAG_PIN != 0 {
        let mut mods = lock(&c.p.mods);
        if let Some(i) = mods.by_handle(h) {
            mods.list[i].pinned = true;
        }
    }
    Ok(1)
}

pub(crate) fn get_module_handle_ex_a(c: &mut Call<'_>) -> Res {
    get_module_handle_ex(c, false)
}

pub(crate) fn get_module_handle_ex_w(c: &mut Call<'_>) -> Res {
    get_module_handle_ex(c, true)
}

/// GetProcAddress: by name or ordinal (a "name" below 0x10000), through
/// the module's export directory, forwarders followed. What urun's DLLs
/// do not implement is not in their export directories: NULL with
/// ERROR_PROC_NOT_FOUND, so programs probing optional functions fall back.
pub(crate) fn get_proc_address(c: &mut Call<'_>) -> Res {
    let (h, name) = (c.arg(0)?, c.arg(1)?);
    let what = if name >> 16 == 0 {
        ImportName::Ordinal(name as u16)
    } else {
        ImportName::Name(String::from_utf8_lossy(&c.cstr(name)?).into_owned())
    };
    let mut new = Vec::new();
    let found = {
        let mut mods = lock(&c.p.mods);
        let i = if h == 0 { mods.list.iter().position(|m| m.is_exe) } else { mods.by_handle(h) };
        match i {
            None => {
                drop(mods);
                set_error(c, ERROR_INVALID_HANDLE)?;
                return Ok(0);
            }
            Some(i) => mods.resolve(&c.p.mem, i, &what, "GetProcAddress", &mut new, 0).ok().flatten(),
        }
    };
    // A forwarder may have loaded a DLL.
    finish_loads(c, &new)?;
    match found {
        Some(a) => Ok(a),
        None => {
            set_error(c, ERROR_PROC_NOT_FOUND)?;
            Ok(0)
        }
    }
}

/// TLS, loader lists and DLL_PROCESS_ATTACH for modules just loaded.
/// False when a DllMain refused.
fn finish_loads(c: &mut Call<'_>, new: &[usize]) -> Result<bool, Fail> {
    if new.is_empty() {
        return Ok(true);
    }
    c.p.seh.sync_images(&lock(&c.p.mods).unwind_images());
    let teb = c.cpu.gs_base;
    let calls: Vec<InitCalls> = {
        let mut mods = lock(&c.p.mods);
        let mut heap = lock(&c.p.heap);
        let peb = super::guest_u64(&c.p.mem, teb + super::teb::TEB_PEB).unwrap_or(0);
        let done = mods
            .setup_tls(&c.p.mem, &mut heap, teb, new)
            .and_then(|()| peb::update_ldr(&c.p.mem, &mut heap, &mut mods, peb));
        if let Err(e) = done {
            tracing::warn!(%e, "a loaded DLL's TLS or loader entry");
        }
        for &i in new {
            mods.list[i].attached = true;
        }
        new.iter().map(|&i| init_calls(&mods, i)).collect()
    };
    let mut ok = true;
    for (base, callbacks, entry) in calls {
        for cb in callbacks {
            c.upcall(cb, &[base, DLL_PROCESS_ATTACH, 0])?;
        }
        if entry != 0 && c.upcall(entry, &[base, DLL_PROCESS_ATTACH, 0])? as u32 == 0 {
            ok = false;
        }
    }
    Ok(ok)
}

fn load_library(c: &mut Call<'_>, wide: bool) -> Res {
    let Some(name) = name_arg(c, 0, wide)? else {
        set_error(c, super::kernel32::ERROR_INVALID_PARAMETER)?;
        return Ok(0);
    };
    let mut new = Vec::new();
    let loaded = {
        let mut mods = lock(&c.p.mods);
        let r = mods.load(&c.p.mem, &name, "LoadLibrary", &mut new);
        if let Ok(i) = r {
            mods.list[i].refs += 1;
            if new.contains(&i) {
                mods.list[i].pinned = false;
            }
        }
        r
    };
    let i = match loaded {
        Ok(i) => i,
        Err(e) => {
            tracing::debug!(%e, "LoadLibrary({name})");
            set_error(c, ERROR_MOD_NOT_FOUND)?;
            return Ok(0);
        }
    };
    if !finish_loads(c, &new)? {
        set_error(c, ERROR_DLL_INIT_FAILED)?;
        return Ok(0);
    }
    Ok(lock(&c.p.mods).list[i].base)
}

pub(crate) fn load_library_a(c: &mut Call<'_>) -> Res {
    load_library(c, false)
}

pub(crate) fn load_library_w(c: &mut Call<'_>) -> Res {
    load_library(c, true)
}

/// FreeLibrary: when the last LoadLibrary reference of a DLL loaded at run
/// time goes, it gets DLL_PROCESS_DETACH (lpReserved NULL) and is unmapped.
/// What it loaded as its own dependencies stays loaded.
pub(crate) fn free_library(c: &mut Call<'_>) -> Res {
    let h = c.arg(0)?;
    let unload = {
        let mut mods = lock(&c.p.mods);
        let Some(i) = mods.by_handle(h) else {
            drop(mods);
            set_error(c, ERROR_INVALID_HANDLE)?;
            return Ok(0);
        };
        let m = &mut mods.list[i];
        m.refs = m.refs.saturating_sub(1);
        if m.refs > 0 || m.pinned || m.system.is_some() || m.is_exe {
            None
        } else {
            let was = m.attached;
            m.attached = false;
            Some((i, was, init_calls(&mods, i)))
        }
    };
    let Some((i, attached, (base, callbacks, entry))) = unload else { return Ok(1) };
    if attached {
        for cb in callbacks {
            c.upcall(cb, &[base, DLL_PROCESS_DETACH, 0])?;
        }
        if entry != 0 {
            c.upcall(entry, &[base, DLL_PROCESS_DETACH, 0])?;
        }
    }
    let mut mods = lock(&c.p.mods);
    let size = mods.list[i].size;
    mods.list[i].gone = true;
    c.p.seh.sync_images(&mods.unwind_images());
    let peb = super::guest_u64(&c.p.mem, c.cpu.gs_base + super::teb::TEB_PEB).unwrap_or(0);
    if let Err(e) = peb::update_ldr(&c.p.mem, &mut lock(&c.p.heap), &mut mods, peb) {
        tracing::warn!(%e, "relinking the loader lists");
    }
    if let Err(e) = c.p.mem.unmap(base, size) {
        tracing::warn!(%e, "unmapping a freed DLL");
    }
    Ok(1)
}

/// GetModuleFileNameA/W: the module's path, cut to the buffer (then NUL
/// terminated, ERROR_INSUFFICIENT_BUFFER), its length without the NUL.
fn get_module_file_name(c: &mut Call<'_>, wide: bool) -> Res {
    let (h, buf, size) = (c.arg(0)?, c.arg(1)?, c.arg(2)? as u32 as u64);
    let path = {
        let mods = lock(&c.p.mods);
        let i = if h == 0 { mods.list.iter().position(|m| m.is_exe) } else { mods.by_handle(h) };
        i.map(|i| mods.list[i].path.clone())
    };
    let Some(path) = path else {
        set_error(c, ERROR_MOD_NOT_FOUND)?;
        return Ok(0);
    };
    if size == 0 {
        set_error(c, ERROR_INSUFFICIENT_BUFFER)?;
        return Ok(0);
    }
    let units: Vec<u16> = if wide { path.encode_utf16().collect() } else { path.bytes().map(u16::from).collect() };
    let fits = (units.len() as u64) < size;
    let n = if fits { units.len() } else { size as usize - 1 };
    let mut out: Vec<u8> = Vec::new();
    for &u in units[..n].iter().chain([&0u16]) {
        if wide {
            out.extend_from_slice(&u.to_le_bytes());
        } else {
            out.push(u as u8);
        }
    }
    c.write(buf, &out)?;
    if fits {
        set_error(c, 0)?;
        Ok(n as u64)
    } else {
        set_error(c, ERROR_INSUFFICIENT_BUFFER)?;
        Ok(size)
    }
}

pub(crate) fn get_module_file_name_a(c: &mut Call<'_>) -> Res {
    get_module_file_name(c, false)
}

pub(crate) fn get_module_file_name_w(c: &mut Call<'_>) -> Res {
    get_module_file_name(c, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The attach code decodes to the intended calls: a TLS callback and
    /// DllMain of one DLL (DllMain checked), nothing for a DLL without.
    #[test]
    fn attach_code_decodes() {
        assert!(attach_code(&[], 0x10).is_empty());
        let code =
            attach_code(&[(0x1_0000_0000, vec![0x1_0000_1000], 0x1_0000_2000), (0x2_0000_0000, vec![], 0)], 0x10);
        let text = super::super::teb::tests::disassemble(&code);
        assert_eq!(
            text,
            [
                "sub $0x28,%rsp",
                "movabs $0x100000000,%rcx",
                "mov $1,%edx",
                "mov $1,%r8d",
                "movabs $0x100001000,%rax",
                "call *%rax",
                "movabs $0x100000000,%rcx",
                "mov $1,%edx",
                "mov $1,%r8d",
                "movabs $0x100002000,%rax",
                "call *%rax",
                "test %eax,%eax",
                "jne 0x000000000000005B",
                "mov $0xC0000142,%ecx",
                "movabs $0x10,%rax",
                "call *%rax",
                "add $0x28,%rsp",
            ]
        );
    }
}
