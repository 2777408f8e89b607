//! Guest-physical address space: urun hands out guest-physical ranges
//! compactly below the physical-address width that both the host and the
//! vCPU support, and memory slots map them to host memory.
//!
//! Guest-virtual == host-virtual still holds (the page tables translate a
//! guest address to the guest-physical address of its slot), but
//! guest-physical == host-virtual cannot: host addresses reach 2^47, while
//! KVM refuses a CR3 or a slot at or above 2^MAXPHYADDR, which is 46 on
//! many Intel Xeons (and 36 or 39 on some older or smaller parts).
//!
//! `GpaSpace` is a first-fit allocator over free ranges kept coalesced, so
//! ranges given back (a slot removed when the guest unmapped or resized
//! memory) are reused: the space in use is bounded by what is mapped now,
//! never by the history of the process.

use std::collections::BTreeMap;

/// Huge-page size: a range is placed at the same offset within a 2 MiB
/// page as its host memory, so that KVM can back it with huge pages where
/// the host does.
const HUGE: u64 = 2 << 20;

/// Guest-physical ranges urun never hands out, for hardware KVM's sake:
/// the first MiB (real-mode leftovers) and the 32-bit hole below 4 GiB
/// where KVM may place the APIC access page, the EPT identity map and the
/// real-mode TSS.
const RESERVED: [(u64, u64); 2] = [(0, 1 << 20), (0xfe00_0000, 1 << 32)];

/// Why guest-physical space could not be handed out.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GpaError {
    #[error(
        "guest-physical space exhausted: {len:#x} more bytes do not fit below 2^{bits} \
         ({used:#x} bytes in use); the host's physical-address width limits what a VM can map"
    )]
    Exhausted { len: u64, bits: u32, used: u64 },
}

/// The free guest-physical ranges below `2^bits`.
#[derive(Debug)]
pub struct GpaSpace {
    bits: u32,
    /// Free ranges, start -> end, disjoint and never adjacent (coalesced).
    free: BTreeMap<u64, u64>,
    used: u64,
}

impl GpaSpace {
    /// Everything below `2^bits` is free, except the reserved ranges.
    pub fn new(bits: u32) -> Self {
        let limit = 1u64 << bits.min(63);
        let mut free = BTreeMap::new();
        let mut at = 0;
        for (s, e) in RESERVED {
            if s.min(limit) > at {
                free.insert(at, s.min(limit));
            }
            at = at.max(e);
        }
        if limit > at {
            free.insert(at, limit);
        }
        GpaSpace { bits, free, used: 0 }
    }

    /// The width this space was made for.
    pub fn bits(&self) -> u32 {
        self.bits
    }

    /// Bytes handed out and not given back.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn used(&self) -> u64 {
        self.used
    }

    /// A free range of `len` bytes (a multiple of 4 KiB) whose start has
    /// the same offset within a 2 MiB page as `host` where there is room
    /// for that, else 4 KiB aligned.
    pub fn alloc(&mut self, len: u64, host: u64) -> Result<u64, GpaError> {
        debug_assert!(len > 0 && len.is_multiple_of(4096));
        let want = host & (HUGE - 1) & !4095;
        let fit = |s: u64, e: u64, off: Option<u64>| -> Option<u64> {
            let g = match off {
                Some(off) => {
                    let base = s & !(HUGE - 1);
                    let g = base + off;
                    if g >= s {
                        g
                    } else {
                        g.checked_add(HUGE)?
                    }
                }
                None => s,
            };
            (g.checked_add(len)? <= e).then_some(g)
        };
        let pick = self
            .free
            .iter()
            .find_map(|(&s, &e)| fit(s, e, Some(want)).map(|g| (s, e, g)))
            .or_else(|| self.free.iter().find_map(|(&s, &e)| fit(s, e, None).map(|g| (s, e, g))));
        let Some((s, e, g)) = pick else {
            return Err(GpaError::Exhausted { len, bits: self.bits, used: self.used });
        };
        self.free.remove(&s);
        if g > s {
            self.free.insert(s, g);
        }
        if g + len < e {
            self.free.insert(g + len, e);
        }
        self.used += len;
        Ok(g)
    }

    /// Give `[start, start + len)` back (it must have come from `alloc`).
    pub fn free(&mut self, start: u64, len: u64) {
        let (mut s, mut e) = (start, start + len);
        // Merge with the free range just before and the one just after.
        if let Some((&ps, &pe)) = self.free.range(..s).next_back() {
            debug_assert!(pe <= s, "double free of guest-physical {start:#x}");
            if pe == s {
                self.free.remove(&ps);
                s = ps;
            }
        }
        if let Some(ne) = self.free.get(&e).copied() {
            self.free.remove(&e);
            e = ne;
        }
        self.free.insert(s, e);
        self.used -= len;
    }
}

/// The physical-address width urun may use for guest-physical addresses:
/// the smallest of the host's (CPUID 0x80000008 and the kernel's view in
/// /proc/cpuinfo, which memory encryption may reduce), the vCPU's
/// (`vcpu_bits`, from KVM's supported CPUID) and `URUN_KVM_PHYS_BITS`,
/// which can only lower it (a test stands in for a host with fewer bits).
pub fn usable_bits(vcpu_bits: Option<u32>) -> u32 {
    let mut bits = host_cpuid_bits();
    if let Some(k) = cpuinfo_bits() {
        bits = bits.min(k);
    }
    if let Some(v) = vcpu_bits {
        bits = bits.min(v);
    }
    if let Some(o) = std::env::var_os("URUN_KVM_PHYS_BITS").filter(|o| !o.is_empty()) {
        match o.to_str().and_then(|s| s.parse::<u32>().ok()) {
            Some(n) if (32..=bits).contains(&n) => bits = n,
            _ => tracing::warn!(
                value = ?o,
                bits,
                "URUN_KVM_PHYS_BITS ignored: it may only lower the width, to 32 bits at least"
            ),
        }
    }
    bits
}

/// The host CPU's physical-address width (CPUID 0x80000008 EAX[7:0]; 36
/// when the leaf is missing, as the manuals say).
fn host_cpuid_bits() -> u32 {
    let max = std::arch::x86_64::__cpuid(0x8000_0000).eax;
    if max < 0x8000_0008 {
        return 36;
    }
    let bits = std::arch::x86_64::__cpuid(0x8000_0008).eax & 0xff;
    if bits == 0 {
        36
    } else {
        bits
    }
}

/// "address sizes : N bits physical" from /proc/cpuinfo, when readable.
/// Only as far as the first CPU's line: the kernel makes the file a CPU
/// at a time as it is read, so the rest would cost time in proportion to
/// the host's CPUs (at start-up: this runs before the VM is made).
fn cpuinfo_bits() -> Option<u32> {
    use std::io::BufRead;
    let file = std::fs::File::open("/proc/cpuinfo").ok()?;
    let mut reader = std::io::BufReader::with_capacity(4096, file);
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if line.starts_with("address sizes") {
            return parse_cpuinfo_bits(&line);
        }
    }
}

fn parse_cpuinfo_bits(text: &str) -> Option<u32> {
    let line = text.lines().find(|l| l.starts_with("address sizes"))?;
    let rest = line.split_once(':')?.1.trim();
    rest.split_once(" bits physical")?.0.trim().parse().ok()
}

/// The physical-address width in a CPUID leaf 0x80000008 EAX.
pub fn cpuid_leaf_bits(eax: u32) -> Option<u32> {
    let b = eax & 0xff;
    (b != 0).then_some(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn hands_out_below_the_width_and_skips_reserved_ranges() {
        let mut g = GpaSpace::new(36);
        let a = g.alloc(4096, 0x7f00_0000_1000).unwrap();
        assert!(a >= MIB, "{a:#x} in the first MiB");
        assert_eq!(a & (HUGE - 1), 0x1000, "same offset in its 2 MiB page as the host address");
        // A range larger than what is left below the 32-bit hole lands
        // above 4 GiB.
        let big = g.alloc(0x1_0000_0000, 0).unwrap();
        assert!(big >= 1 << 32 && big + (1 << 32) <= 1 << 36, "{big:#x}");
        for (s, e) in RESERVED {
            assert!(a + 4096 <= s || a >= e);
        }
    }

    #[test]
    fn exhaustion_is_an_error_never_past_the_width() {
        let mut g = GpaSpace::new(32);
        let total = 0xfe00_0000 - MIB;
        let a = g.alloc(total, 0).unwrap();
        assert_eq!(a, MIB);
        let e = g.alloc(4096, 0).unwrap_err();
        assert!(matches!(e, GpaError::Exhausted { len: 4096, bits: 32, used } if used == total));
        assert!(e.to_string().contains("2^32"), "{e}");
        g.free(a, total);
        assert_eq!(g.used(), 0);
        assert_eq!(g.alloc(total, 0).unwrap(), MIB, "the freed range is whole again");
    }

    #[test]
    fn freed_ranges_coalesce_and_are_reused() {
        let mut g = GpaSpace::new(36);
        let r: Vec<u64> = (0..8).map(|i| g.alloc(64 << 10, i * 4096).unwrap()).collect();
        // Free every other one, then the rest: all of it merges back.
        for &a in r.iter().step_by(2) {
            g.free(a, 64 << 10);
        }
        for &a in r.iter().skip(1).step_by(2) {
            g.free(a, 64 << 10);
        }
        assert_eq!(g.used(), 0);
        assert_eq!(g.free.len(), GpaSpace::new(36).free.len(), "{:x?}", g.free);
    }

    /// The resynchronisation pattern of a guest that maps, grows and
    /// unmaps forever: the space in use stays bounded.
    #[test]
    fn churn_does_not_leak() {
        let mut g = GpaSpace::new(33);
        let mut live: Vec<(u64, u64)> = Vec::new();
        let mut seed = 12345u64;
        for round in 0..20_000u64 {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let len = ((seed >> 33) % 512 + 1) * 4096;
            if live.len() > 64 || (seed >> 20) & 1 == 1 && !live.is_empty() {
                let i = (seed >> 40) as usize % live.len();
                let (a, l) = live.swap_remove(i);
                g.free(a, l);
            } else {
                let a = g.alloc(len, round * 4096).unwrap_or_else(|e| panic!("round {round}: {e}"));
                assert!(a + len <= 1 << 33);
                assert!(live.iter().all(|&(b, m)| a + len <= b || b + m <= a), "overlap at {a:#x}");
                live.push((a, len));
            }
        }
        let in_use: u64 = live.iter().map(|l| l.1).sum();
        assert_eq!(g.used(), in_use);
        for (a, l) in live {
            g.free(a, l);
        }
        assert_eq!(g.free.len(), GpaSpace::new(33).free.len());
    }

    #[test]
    fn widths() {
        assert_eq!(parse_cpuinfo_bits("cpu\t: 1\naddress sizes\t: 46 bits physical, 57 bits virtual\n"), Some(46));
        assert_eq!(parse_cpuinfo_bits("nothing"), None);
        // Reading up to the first CPU's line finds what the whole file says.
        if let Ok(text) = std::fs::read_to_string("/proc/cpuinfo") {
            assert_eq!(cpuinfo_bits(), parse_cpuinfo_bits(&text));
        }
        assert_eq!(cpuid_leaf_bits(0x3030), Some(48));
        assert_eq!(cpuid_leaf_bits(0), None);
        let b = usable_bits(Some(40));
        assert!((32..=40).contains(&b));
    }
}
