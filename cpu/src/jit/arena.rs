//! Code-cache memory: 64 MiB regions reserved within reach (±1 GiB) of the
//! guest code they serve, so that a copied RIP-relative displacement can be
//! re-aimed at the same guest data. Regions are urun's own memory (never in
//! the `AddressSpace`), mapped read-write-execute, registered once with the
//! host-fault owner, and carved into 1 MiB chunks that each engine (one per
//! guest thread) takes and gives back when it ends.

use std::sync::Mutex;

use crate::hostfault::{self, Recovery};

use super::JitError;

/// Size of a reserved region.
pub(crate) const REGION: u64 = 64 << 20;
/// Size of a chunk, the unit an engine takes.
pub(crate) const CHUNK: u64 = 1 << 20;
/// A chunk serves guest code at most this far from it.
pub(crate) const REACH: u64 = 1 << 30;

struct Region {
    start: u64,
    free: Vec<u64>,
}

static POOL: Mutex<Vec<Region>> = Mutex::new(Vec::new());

fn distance(a: u64, b: u64) -> u64 {
    a.abs_diff(b)
}

/// Is a chunk at `chunk` within reach of guest code at `pc`?
pub(crate) fn reaches(chunk: u64, pc: u64) -> bool {
    distance(chunk, pc).max(distance(chunk + CHUNK, pc)) < REACH
}

/// Take a chunk within reach of `pc`, reserving a new region if needed.
pub(crate) fn take_chunk(pc: u64, on_fault: Recovery) -> Result<u64, JitError> {
    let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
    for r in pool.iter_mut() {
        if let Some(i) = r.free.iter().position(|&c| reaches(c, pc)) {
            return Ok(r.free.swap_remove(i));
        }
    }
    let start = reserve_near(pc).ok_or(JitError::NoArena(pc))?;
    hostfault::register_code_range(start as usize, (start + REGION) as usize, on_fault)?;
    let mut free: Vec<u64> = (0..REGION / CHUNK).map(|i| start + i * CHUNK).filter(|&c| reaches(c, pc)).collect();
    free.reverse();
    let chunk = free.pop().ok_or(JitError::NoArena(pc))?;
    pool.push(Region { start, free });
    tracing::debug!(region = format_args!("{start:#x}"), near = format_args!("{pc:#x}"), "jit: code region");
    Ok(chunk)
}

/// Give a chunk back (its engine is gone; no thread runs its code).
pub(crate) fn give_back(chunk: u64) {
    let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(r) = pool.iter_mut().find(|r| (r.start..r.start + REGION).contains(&chunk)) {
        r.free.push(chunk);
    }
}

/// Map a region near `pc` where nothing is mapped, preferring addresses
/// below it (position-independent programs grow their heap above).
fn reserve_near(pc: u64) -> Option<u64> {
    const MIB: i64 = 1 << 20;
    let base = (pc & !(REGION - 1)) as i64;
    let offsets = [-256 * MIB, -512 * MIB, -768 * MIB, -128 * MIB, 256 * MIB, 512 * MIB, 768 * MIB, 128 * MIB];
    for d in offsets {
        let start = base + d;
        if start < (1 << 28) || start as u64 + REGION > crate::mem::USER_TOP {
            continue;
        }
        let start = start as u64;
        if !(reaches(start, pc) && reaches(start + REGION - CHUNK, pc)) {
            continue;
        }
        // SAFETY: MAP_FIXED_NOREPLACE maps only where nothing is mapped:
        // no guest or urun memory is replaced.
        let p = unsafe {
            libc::mmap(
                start as *mut libc::c_void,
                REGION as usize,
                libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            continue;
        }
        if p as u64 != start {
            // An old kernel without MAP_FIXED_NOREPLACE put it elsewhere.
            // SAFETY: the mapping just made.
            unsafe { libc::munmap(p, REGION as usize) };
            continue;
        }
        return Some(start);
    }
    None
}
