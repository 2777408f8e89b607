//! What an MSVC-built Rust program (ruff) asks of kernel32 and
//! bcryptprimitives beyond the C runtime: system and processor facts
//! (GetSystemInfo, IsProcessorFeaturePresent, GetCurrentProcessorNumber),
//! the stack guarantee Rust's std sets on every thread, random bytes
//! (ProcessPrng), precise time, pointer encoding, and a few
//! string helpers.

use super::abi::{Call, Res};
use super::kernel32::{set_error, ERROR_INVALID_PARAMETER};

/// SetThreadStackGuarantee(ULONG *size): urun's threads run on host
/// stacks far larger than any guarantee, so the request always succeeds;
/// the previous guarantee reported is 0, as for a fresh thread.
pub(crate) fn set_thread_stack_guarantee(c: &mut Call<'_>) -> Res {
    let p = c.arg(0)?;
    if p == 0 {
        set_error(c, ERROR_INVALID_PARAMETER)?;
        return Ok(0);
    }
    c.put_u32(p, 0)?;
    Ok(1)
}

/// IsProcessorFeaturePresent(feature): the features an x86-64 host with
/// SSE2..SSE4.2 and AVX has (the CPUID model the engines give the guest
/// is at least that), by the PF_* numbers.
pub(crate) fn is_processor_feature_present(c: &mut Call<'_>) -> Res {
    // PF_COMPARE_EXCHANGE_DOUBLE 2, PF_MMX 3, PF_XMMI 6, PF_3DNOW 7 (no),
    // PF_RDTSC 8, PF_PAE 9, PF_XMMI64 10, PF_NX 12, PF_SSE3 13,
    // PF_COMPARE_EXCHANGE128 14, PF_XSAVE 17, PF_SSSE3 36, PF_SSE4_1 37,
    // PF_SSE4_2 38, PF_AVX 39.
    const PRESENT: &[u32] = &[2, 3, 6, 8, 9, 10, 12, 13, 14, 17, 23, 36, 37, 38, 39];
    let f = c.arg(0)? as u32;
    Ok(u64::from(PRESENT.contains(&f)))
}

/// GetCurrentProcessorNumber: the host CPU this thread runs on now.
pub(crate) fn current_processor_number(_: &mut Call<'_>) -> Res {
    // SAFETY: sched_getcpu takes no arguments.
    let n = unsafe { libc::sched_getcpu() };
    Ok(n.max(0) as u64)
}

/// ProcessPrng(buf, len) (bcryptprimitives): bytes from the host's
/// getrandom; always TRUE, as on Windows.
pub(crate) fn process_prng(c: &mut Call<'_>) -> Res {
    let (p, n) = (c.arg(0)?, c.arg(1)?);
    fill_random(c, p, n)
}

fn fill_random(c: &mut Call<'_>, p: u64, n: u64) -> Res {
    let mut at = 0u64;
    let mut buf = vec![0u8; n.min(1 << 16) as usize];
    while at < n {
        let want = (n - at).min(buf.len() as u64) as usize;
        // SAFETY: getrandom into urun's own buffer of at least `want` bytes.
        let got = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), want, 0) };
        if got < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Ok(0);
        }
        c.write(p + at, &buf[..got as usize])?;
        at += got as u64;
    }
    Ok(1)
}

/// GetSystemTimePreciseAsFileTime(FILETIME *): as GetSystemTimeAsFileTime.
pub(crate) fn system_time_precise(c: &mut Call<'_>) -> Res {
    super::kernel32::system_time_as_file_time(c)
}

/// EncodePointer / DecodePointer (and the System variants): the identity,
/// which is a valid encoding (only the pair's agreement matters).
pub(crate) fn identity(c: &mut Call<'_>) -> Res {
    c.arg(0)
}

/// lstrlenW(s): its length in UTF-16 units; 0 for NULL.
pub(crate) fn lstrlen_w(c: &mut Call<'_>) -> Res {
    let p = c.arg(0)?;
    if p == 0 {
        return Ok(0);
    }
    Ok(c.wstr(p)?.len() as u64)
}

/// CompareStringOrdinal(a, alen, b, blen, ignore_case): CSTR_LESS_THAN 1,
/// CSTR_EQUAL 2, CSTR_GREATER_THAN 3; a length of -1 means NUL-terminated.
/// Case folding is simple per-unit upper-casing (what Windows does for
/// the ordinal comparison).
pub(crate) fn compare_string_ordinal(c: &mut Call<'_>) -> Res {
    let get = |c: &Call<'_>, p: u64, n: u64| -> Result<Vec<u16>, super::abi::Fail> {
        let n = n as u32 as i32;
        if n < 0 {
            return c.wstr(p);
        }
        let b = c.read(p, n as usize * 2)?;
        Ok(b.chunks_exact(2).map(|w| u16::from_le_bytes([w[0], w[1]])).collect())
    };
    let a = get(c, c.arg(0)?, c.arg(1)?)?;
    let b = get(c, c.arg(2)?, c.arg(3)?)?;
    let fold = c.arg(4)? as u32 != 0;
    let up = |v: Vec<u16>| -> Vec<u16> {
        if !fold {
            return v;
        }
        v.into_iter()
            .map(|u| {
                char::from_u32(u32::from(u))
                    .and_then(|ch| {
                        let mut it = ch.to_uppercase();
                        let first = it.next()?;
                        (it.next().is_none() && (first as u32) < 0x1_0000).then_some(first as u16)
                    })
                    .unwrap_or(u)
            })
            .collect()
    };
    Ok(match up(a).cmp(&up(b)) {
        std::cmp::Ordering::Less => 1,
        std::cmp::Ordering::Equal => 2,
        std::cmp::Ordering::Greater => 3,
    })
}
