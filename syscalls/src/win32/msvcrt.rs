//! msvcrt (and the ucrtbase functions it shares): start-up, exit, heap,
//! strings, environment, qsort. stdio is in `stdio`.

use urun_cpu::AddressSpace;

use super::abi::{Call, Fail, Res};
use super::{line, lock, DataObj};

/// `struct lconv` for the C locale: "." as decimal point, "" elsewhere,
/// CHAR_MAX for the char fields.
pub(crate) fn init_lconv(mem: &AddressSpace, at: u64) -> Result<(), String> {
    let strings = at + 0xc0;
    let dot = strings;
    let empty = strings + 2;
    let mut v = vec![0u8; 0xc0];
    let ptrs = [dot, empty, empty, empty, empty, empty, empty, empty, empty, empty];
    for (i, p) in ptrs.iter().enumerate() {
        v[8 * i..8 * i + 8].copy_from_slice(&p.to_le_bytes());
    }
    for b in &mut v[80..88] {
        *b = 0x7f;
    }
    super::poke(mem, at, &v)?;
    super::poke(mem, strings, b".\0\0\0")
}

pub(crate) fn getmainargs(c: &mut Call<'_>) -> Res {
    let (argc, argv, envp) = (c.arg(0)?, c.arg(1)?, c.arg(2)?);
    c.put_u32(argc, c.p.argc as u32)?;
    c.put_u64(argv, c.p.argv)?;
    c.put_u64(envp, c.p.envp)?;
    Ok(0)
}

pub(crate) fn iob_func(c: &mut Call<'_>) -> Res {
    Ok(c.p.data(DataObj::Iob))
}

pub(crate) fn p_fmode(c: &mut Call<'_>) -> Res {
    Ok(c.p.data(DataObj::Fmode))
}

pub(crate) fn p_commode(c: &mut Call<'_>) -> Res {
    Ok(c.p.data(DataObj::Commode))
}

pub(crate) fn p_argc(c: &mut Call<'_>) -> Res {
    Ok(c.p.data(DataObj::Argc))
}

pub(crate) fn p_argv(c: &mut Call<'_>) -> Res {
    Ok(c.p.data(DataObj::Argv))
}

pub(crate) fn p_environ(c: &mut Call<'_>) -> Res {
    Ok(c.p.data(DataObj::Initenv))
}

pub(crate) fn p_acmdln(c: &mut Call<'_>) -> Res {
    Ok(c.p.data(DataObj::Acmdln))
}

pub(crate) fn errno_ptr(c: &mut Call<'_>) -> Res {
    Ok(super::thread::errno_addr(c).unwrap_or(c.p.data(DataObj::Errno)))
}

pub(crate) fn set_errno(c: &Call<'_>, e: i32) -> Result<(), Fail> {
    c.put_u32(super::thread::errno_addr(c).unwrap_or(c.p.data(DataObj::Errno)), e as u32)
}

/// Call each non-null function pointer in [start, end).
pub(crate) fn initterm(c: &mut Call<'_>) -> Res {
    let (mut at, end) = (c.arg(0)?, c.arg(1)?);
    while at < end {
        let f = c.u64_at(at)?;
        if f != 0 {
            c.upcall(f, &[])?;
        }
        at += 8;
    }
    Ok(0)
}

/// As `initterm`, stopping at the first function that returns non-zero.
pub(crate) fn initterm_e(c: &mut Call<'_>) -> Res {
    let (mut at, end) = (c.arg(0)?, c.arg(1)?);
    while at < end {
        let f = c.u64_at(at)?;
        if f != 0 {
            let r = c.upcall(f, &[])? as u32;
            if r != 0 {
                return Ok(u64::from(r));
            }
        }
        at += 8;
    }
    Ok(0)
}

pub(crate) fn onexit(c: &mut Call<'_>) -> Res {
    let f = c.arg(0)?;
    lock(&c.p.onexit).push(f);
    Ok(f)
}

pub(crate) fn atexit(c: &mut Call<'_>) -> Res {
    let f = c.arg(0)?;
    lock(&c.p.onexit).push(f);
    Ok(0)
}

/// Run the `_onexit`/`atexit` functions, last registered first (each once).
pub(crate) fn run_onexit(c: &mut Call<'_>) -> Result<(), Fail> {
    loop {
        let Some(f) = lock(&c.p.onexit).pop() else { return Ok(()) };
        c.upcall(f, &[])?;
    }
}

pub(crate) fn cexit(c: &mut Call<'_>) -> Res {
    run_onexit(c)?;
    lock(&c.p.streams).flush_all();
    Ok(0)
}

pub(crate) fn exit(c: &mut Call<'_>) -> Res {
    let code = c.arg(0)? as u32;
    run_onexit(c)?;
    super::loadlib::detach_all(c)?;
    Err(Fail::Stop(c.p.exit(code)))
}

pub(crate) fn quick_exit(c: &mut Call<'_>) -> Res {
    let code = c.arg(0)? as u32;
    Err(Fail::Stop(c.p.exit(code)))
}

pub(crate) fn amsg_exit(c: &mut Call<'_>) -> Res {
    let n = c.arg(0)? as u32;
    lock(&c.p.streams).flush_all();
    line(&format!("runtime error R60{n:02}"));
    Err(Fail::Stop(c.p.exit(255)))
}

pub(crate) fn abort(c: &mut Call<'_>) -> Res {
    lock(&c.p.streams).flush_all();
    line("\nabnormal program termination");
    Err(Fail::Stop(c.p.exit(3)))
}

pub(crate) fn localeconv(c: &mut Call<'_>) -> Res {
    Ok(c.p.data(DataObj::Lconv))
}

pub(crate) fn strerror(c: &mut Call<'_>) -> Res {
    let n = c.arg(0)? as i32;
    let text = host_strerror(n);
    let buf = c.p.data(DataObj::StrerrorBuf);
    let mut t = text.into_bytes();
    t.truncate(255);
    t.push(0);
    c.write(buf, &t)?;
    Ok(buf)
}

/// The message for errno `n` (msvcrt's errno values are the POSIX ones for
/// the common errors).
pub(crate) fn host_strerror(n: i32) -> String {
    std::io::Error::from_raw_os_error(n).to_string().split(" (os error").next().unwrap_or("Unknown error").to_string()
}

pub(crate) fn malloc(c: &mut Call<'_>) -> Res {
    let n = c.arg(0)?;
    let a = lock(&c.p.heap).alloc(n);
    if a.is_none() {
        set_errno(c, libc::ENOMEM)?;
    }
    Ok(a.unwrap_or(0))
}

pub(crate) fn calloc(c: &mut Call<'_>) -> Res {
    let (n, size) = (c.arg(0)?, c.arg(1)?);
    let a = n.checked_mul(size).and_then(|t| lock(&c.p.heap).alloc_zeroed(t));
    if a.is_none() {
        set_errno(c, libc::ENOMEM)?;
    }
    Ok(a.unwrap_or(0))
}

pub(crate) fn free(c: &mut Call<'_>) -> Res {
    let a = c.arg(0)?;
    if a != 0 && !lock(&c.p.heap).free(a) {
        tracing::debug!(addr = format_args!("{a:#x}"), "free of a pointer the heap did not give");
    }
    Ok(0)
}

/// realloc semantics for block `a` (0: malloc) to `n` bytes.
pub(crate) fn realloc_block(c: &mut Call<'_>, a: u64, n: u64) -> Res {
    if a == 0 {
        return Ok(lock(&c.p.heap).alloc(n).unwrap_or(0));
    }
    let old = lock(&c.p.heap).size_of(a);
    let Some(old) = old else { return Ok(0) };
    if n <= old && n > 0 {
        return Ok(a);
    }
    let Some(b) = lock(&c.p.heap).alloc(n.max(1)) else {
        set_errno(c, libc::ENOMEM)?;
        return Ok(0);
    };
    let data = c.read(a, old.min(n) as usize)?;
    c.write(b, &data)?;
    lock(&c.p.heap).free(a);
    Ok(b)
}

pub(crate) fn realloc(c: &mut Call<'_>) -> Res {
    let (a, n) = (c.arg(0)?, c.arg(1)?);
    realloc_block(c, a, n)
}

pub(crate) fn strdup(c: &mut Call<'_>) -> Res {
    let s = c.cstr(c.arg(0)?)?;
    let Some(a) = lock(&c.p.heap).alloc(s.len() as u64 + 1) else { return Ok(0) };
    c.write(a, &[s.as_slice(), b"\0"].concat())?;
    Ok(a)
}

pub(crate) fn memmove(c: &mut Call<'_>) -> Res {
    let (d, s, n) = (c.arg(0)?, c.arg(1)?, c.arg(2)?);
    let data = c.read(s, n as usize)?;
    c.write(d, &data)?;
    Ok(d)
}

pub(crate) fn memset(c: &mut Call<'_>) -> Res {
    let (d, v, n) = (c.arg(0)?, c.arg(1)? as u8, c.arg(2)?);
    c.fill(d, v, n)?;
    Ok(d)
}

fn sign(o: std::cmp::Ordering) -> u64 {
    match o {
        std::cmp::Ordering::Less => -1i64 as u64,
        std::cmp::Ordering::Equal => 0,
        std::cmp::Ordering::Greater => 1,
    }
}

pub(crate) fn memcmp(c: &mut Call<'_>) -> Res {
    let (a, b, n) = (c.arg(0)?, c.arg(1)?, c.arg(2)? as usize);
    Ok(sign(c.read(a, n)?.cmp(&c.read(b, n)?)))
}

pub(crate) fn strlen(c: &mut Call<'_>) -> Res {
    Ok(c.cstr(c.arg(0)?)?.len() as u64)
}

pub(crate) fn wcslen(c: &mut Call<'_>) -> Res {
    Ok(c.wstr(c.arg(0)?)?.len() as u64)
}

pub(crate) fn strcmp(c: &mut Call<'_>) -> Res {
    let (a, b) = (c.cstr(c.arg(0)?)?, c.cstr(c.arg(1)?)?);
    Ok(sign(a.cmp(&b)))
}

pub(crate) fn strncmp(c: &mut Call<'_>) -> Res {
    let (mut a, mut b, n) = (c.cstr(c.arg(0)?)?, c.cstr(c.arg(1)?)?, c.arg(2)? as usize);
    a.truncate(n);
    b.truncate(n);
    Ok(sign(a.cmp(&b)))
}

pub(crate) fn strcpy(c: &mut Call<'_>) -> Res {
    let (d, s) = (c.arg(0)?, c.cstr(c.arg(1)?)?);
    c.write(d, &[s.as_slice(), b"\0"].concat())?;
    Ok(d)
}

pub(crate) fn strcat(c: &mut Call<'_>) -> Res {
    let (d, s) = (c.arg(0)?, c.cstr(c.arg(1)?)?);
    let len = c.cstr(d)?.len() as u64;
    c.write(d + len, &[s.as_slice(), b"\0"].concat())?;
    Ok(d)
}

pub(crate) fn strchr(c: &mut Call<'_>) -> Res {
    let (p, ch) = (c.arg(0)?, c.arg(1)? as u8);
    let s = c.cstr(p)?;
    Ok(if ch == 0 { p + s.len() as u64 } else { s.iter().position(|&b| b == ch).map_or(0, |i| p + i as u64) })
}

pub(crate) fn strrchr(c: &mut Call<'_>) -> Res {
    let (p, ch) = (c.arg(0)?, c.arg(1)? as u8);
    let s = c.cstr(p)?;
    Ok(if ch == 0 { p + s.len() as u64 } else { s.iter().rposition(|&b| b == ch).map_or(0, |i| p + i as u64) })
}

/// strtol/strtoul on the host's C library (same semantics for the C
/// locale), with `end` translated back to the guest string.
fn strto(c: &mut Call<'_>, unsigned: bool) -> Res {
    let (p, end, base) = (c.arg(0)?, c.arg(1)?, c.arg(2)? as i32);
    let s = c.cstr(p)?;
    let Ok(cs) = std::ffi::CString::new(s) else { return Ok(0) };
    let mut e: *mut libc::c_char = std::ptr::null_mut();
    // SAFETY: errno is this thread's; `cs` is a valid C string and `e`
    // points into it or at its start.
    let (v, err) = unsafe {
        *libc::__errno_location() = 0;
        let v = if unsigned {
            let v = libc::strtoul(cs.as_ptr(), &mut e, base);
            // msvcrt's unsigned long is 32 bits.
            if v > u64::from(u32::MAX) && !cs.to_bytes().contains(&b'-') {
                *libc::__errno_location() = libc::ERANGE;
                u64::from(u32::MAX)
            } else {
                v & 0xffff_ffff
            }
        } else {
            let v = libc::strtol(cs.as_ptr(), &mut e, base);
            let clamped = v.clamp(i64::from(i32::MIN), i64::from(i32::MAX));
            if clamped != v {
                *libc::__errno_location() = libc::ERANGE;
            }
            clamped as i32 as u32 as u64
        };
        (v, *libc::__errno_location())
    };
    if err != 0 {
        set_errno(c, err)?;
    }
    if end != 0 {
        let off = (e as usize).wrapping_sub(cs.as_ptr() as usize) as u64;
        c.put_u64(end, p + off)?;
    }
    Ok(v)
}

pub(crate) fn strtol(c: &mut Call<'_>) -> Res {
    strto(c, false)
}

pub(crate) fn strtoul(c: &mut Call<'_>) -> Res {
    strto(c, true)
}

pub(crate) fn atoi(c: &mut Call<'_>) -> Res {
    let s = c.cstr(c.arg(0)?)?;
    let Ok(cs) = std::ffi::CString::new(s) else { return Ok(0) };
    // SAFETY: a valid C string.
    Ok(unsafe { libc::atoi(cs.as_ptr()) } as u32 as u64)
}

/// The guest address of environment variable `name`'s value (names
/// compare case-insensitively, as on Windows).
pub(crate) fn env_value(c: &Call<'_>, name: &[u8]) -> Option<u64> {
    c.p.env.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| *v)
}

pub(crate) fn getenv(c: &mut Call<'_>) -> Res {
    let name = c.cstr(c.arg(0)?)?;
    Ok(env_value(c, &name).unwrap_or(0))
}

/// qsort: a merge sort of indices in urun, comparing the elements in
/// place through the guest's comparator, then the elements written back
/// in order. A comparator that is not a total order gives some order, as
/// natively.
pub(crate) fn qsort(c: &mut Call<'_>) -> Res {
    let (base, n, size, cmp) = (c.arg(0)?, c.arg(1)?, c.arg(2)?, c.arg(3)?);
    if n < 2 || size == 0 {
        return Ok(0);
    }
    let total = n.checked_mul(size).ok_or(Fail::Fault(base))?;
    let data = c.read(base, total as usize)?;
    let mut idx: Vec<u64> = (0..n).collect();
    let mut tmp = idx.clone();
    let mut width = 1;
    while width < n as usize {
        let mut lo = 0;
        while lo < n as usize {
            let mid = (lo + width).min(n as usize);
            let hi = (lo + 2 * width).min(n as usize);
            let (mut i, mut j, mut k) = (lo, mid, lo);
            while i < mid && j < hi {
                let r = c.upcall(cmp, &[base + idx[i] * size, base + idx[j] * size])? as u32 as i32;
                if r <= 0 {
                    tmp[k] = idx[i];
                    i += 1;
                } else {
                    tmp[k] = idx[j];
                    j += 1;
                }
                k += 1;
            }
            tmp[k..k + (mid - i)].copy_from_slice(&idx[i..mid]);
            k += mid - i;
            tmp[k..k + (hi - j)].copy_from_slice(&idx[j..hi]);
            lo = hi;
        }
        std::mem::swap(&mut idx, &mut tmp);
        width *= 2;
    }
    let mut out = Vec::with_capacity(total as usize);
    for i in idx {
        out.extend_from_slice(&data[(i * size) as usize..((i + 1) * size) as usize]);
    }
    c.write(base, &out)?;
    Ok(0)
}
