//! The CPU model urun reports through CPUID: exactly the features the
//! interpreter implements. Vendor, brand, family/model and cache topology
//! come from the host, so libc's tuning sees a real machine.
//!
//! Since the vendor is the host's, the interpreter also computes what the
//! manuals leave undefined (some flags, a counter write) as that vendor's
//! CPUs do: `Vendor::host()` is read once per guest thread into
//! `CpuState::vendor`, and the handlers' vendor-dependent helpers live in
//! `interp::ops::vendor`.

use std::sync::OnceLock;

/// Whose CPUs the interpreter imitates where the manuals leave a result
/// undefined.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Vendor {
    /// "AuthenticAMD" (and "HygonGenuine", a Zen derivative).
    Amd,
    /// "GenuineIntel", and any other vendor string (Intel's behaviour is the
    /// one other x86 designs most often copy).
    Intel,
}

/// The host CPU as far as undefined results depend on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostCpu {
    pub vendor: Vendor,
    /// Display family (base family plus extended family): 0x19 for Zen 3
    /// and Zen 4, 0x1A for Zen 5, 6 for Intel's Core line.
    pub family: u32,
}

impl Vendor {
    /// The vendor named by CPUID leaf 0's EBX, EDX, ECX ("AuthenticAMD").
    pub fn from_leaf0(ebx: u32, edx: u32, ecx: u32) -> Vendor {
        let mut id = [0u8; 12];
        id[..4].copy_from_slice(&ebx.to_le_bytes());
        id[4..8].copy_from_slice(&edx.to_le_bytes());
        id[8..].copy_from_slice(&ecx.to_le_bytes());
        match &id {
            b"AuthenticAMD" | b"HygonGenuine" => Vendor::Amd,
            _ => Vendor::Intel,
        }
    }

    /// The host's vendor (CPUID runs once per process).
    pub fn host() -> Vendor {
        HostCpu::get().vendor
    }
}

impl HostCpu {
    /// The host CPU, identified once per process.
    pub fn get() -> HostCpu {
        static HOST: OnceLock<HostCpu> = OnceLock::new();
        *HOST.get_or_init(|| {
            let l0 = host_cpuid(0, 0);
            let eax1 = host_cpuid(1, 0)[0];
            HostCpu { vendor: Vendor::from_leaf0(l0[1], l0[3], l0[2]), family: display_family(eax1) }
        })
    }
}

/// The display family of CPUID leaf 1 EAX: the base family, plus the
/// extended family when the base family is 0xF.
pub fn display_family(eax1: u32) -> u32 {
    let base = (eax1 >> 8) & 0xf;
    if base == 0xf {
        base + ((eax1 >> 20) & 0xff)
    } else {
        base
    }
}

/// Feature bits of leaf 1 EDX.
pub mod edx1 {
    pub const FPU: u32 = 1 << 0;
    pub const TSC: u32 = 1 << 4;
    pub const CX8: u32 = 1 << 8;
    pub const CMOV: u32 = 1 << 15;
    pub const MMX: u32 = 1 << 23;
    pub const FXSR: u32 = 1 << 24;
    pub const SSE: u32 = 1 << 25;
    pub const SSE2: u32 = 1 << 26;
}

/// Feature bits of leaf 1 ECX.
pub mod ecx1 {
    pub const SSE3: u32 = 1 << 0;
    pub const PCLMULQDQ: u32 = 1 << 1;
    pub const SSSE3: u32 = 1 << 9;
    pub const CX16: u32 = 1 << 13;
    pub const SSE41: u32 = 1 << 19;
    pub const SSE42: u32 = 1 << 20;
    pub const AES: u32 = 1 << 25;
    pub const MOVBE: u32 = 1 << 22;
    pub const POPCNT: u32 = 1 << 23;
    pub const RDRAND: u32 = 1 << 30;
}

/// Feature bits of leaf 7 (subleaf 0) EBX.
pub mod ebx7 {
    pub const BMI1: u32 = 1 << 3;
    pub const BMI2: u32 = 1 << 8;
    pub const RDSEED: u32 = 1 << 18;
    pub const ADX: u32 = 1 << 19;
}

/// Feature bits of leaf 0x8000_0001.
pub mod ext {
    pub const ECX_LAHF: u32 = 1 << 0;
    pub const ECX_ABM: u32 = 1 << 5;
    pub const EDX_SYSCALL: u32 = 1 << 11;
    pub const EDX_NX: u32 = 1 << 20;
    pub const EDX_LM: u32 = 1 << 29;
    pub const EDX_RDTSCP: u32 = 1 << 27;
}

/// What urun's interpreter implements (see `interp::ops`).
///
pub const LEAF1_EDX: u32 =
    edx1::FPU | edx1::TSC | edx1::CX8 | edx1::CMOV | edx1::MMX | edx1::FXSR | edx1::SSE | edx1::SSE2;
/// Leaf 1 ECX features; each is reported only where the host has it too,
/// since several run on the host's own unit.
pub const LEAF1_ECX: u32 = ecx1::SSE3
    | ecx1::PCLMULQDQ
    | ecx1::SSSE3
    | ecx1::CX16
    | ecx1::SSE41
    | ecx1::SSE42
    | ecx1::MOVBE
    | ecx1::POPCNT
    | ecx1::AES
    | ecx1::RDRAND;
pub const LEAF7_EBX: u32 = ebx7::BMI1 | ebx7::BMI2 | ebx7::RDSEED | ebx7::ADX;
pub const EXT_ECX: u32 = ext::ECX_LAHF | ext::ECX_ABM;
pub const EXT_EDX: u32 = ext::EDX_SYSCALL | ext::EDX_NX | ext::EDX_LM | ext::EDX_RDTSCP;

/// The host's CPUID.
pub fn host_cpuid(leaf: u32, sub: u32) -> [u32; 4] {
    let r = core::arch::x86_64::__cpuid_count(leaf, sub);
    [r.eax, r.ebx, r.ecx, r.edx]
}

/// CPUID as the guest sees it: `[eax, ebx, ecx, edx]`.
pub fn guest_cpuid(leaf: u32, sub: u32) -> [u32; 4] {
    let host_max = host_cpuid(0, 0)[0];
    let host_ext_max = host_cpuid(0x8000_0000, 0)[0];
    match leaf {
        0 => {
            let h = host_cpuid(0, 0);
            [h[0].min(0xd), h[1], h[2], h[3]]
        }
        1 => {
            let h = host_cpuid(1, 0);
            // Family/model/stepping and the APIC/CLFLUSH info in EBX are the
            // host's; features are the model's.
            [h[0], h[1], LEAF1_ECX & h[2], LEAF1_EDX | (h[3] & (1 << 19))]
        }
        // Cache and topology descriptors: the host's, so libc sizes its
        // copy thresholds from a real cache.
        2 | 4 if leaf <= host_max => host_cpuid(leaf, sub),
        // Subleaf 0 only; EAX = 0: no further subleaves.
        7 if sub == 0 && leaf <= host_max => [0, LEAF7_EBX & host_cpuid(7, 0)[1], 0, 0],
        7 => [0, 0, 0, 0],
        0x8000_0000 => [host_ext_max.min(0x8000_0008), 0, 0, 0],
        0x8000_0001 => {
            let h = host_cpuid(leaf, 0);
            [h[0], 0, EXT_ECX & h[2], EXT_EDX & h[3]]
        }
        0x8000_0002..=0x8000_0006 if leaf <= host_ext_max => host_cpuid(leaf, sub),
        0x8000_0008 if leaf <= host_ext_max => {
            let h = host_cpuid(leaf, 0);
            [h[0] & 0xffff, 0, h[2] & 0xff, 0]
        }
        _ => [0, 0, 0, 0],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_hides_unimplemented_features() {
        let l1 = guest_cpuid(1, 0);
        assert_eq!(l1[2] & (1 << 28), 0, "AVX must not be advertised");
        assert_eq!(l1[2] & (1 << 27), 0, "OSXSAVE must not be advertised");
        assert_ne!(l1[3] & edx1::SSE2, 0);
        let l7 = guest_cpuid(7, 0);
        assert_eq!(l7[1] & (1 << 5), 0, "AVX2 must not be advertised");
        assert_eq!(l7[1] & !LEAF7_EBX, 0);
        assert_eq!([l7[0], l7[2], l7[3]], [0; 3]);
        // The vendor string is the host's.
        assert_eq!(guest_cpuid(0, 0)[1..], host_cpuid(0, 0)[1..]);
    }

    #[test]
    fn vendor_and_family_from_cpuid() {
        let regs = |s: &[u8; 12]| {
            let w = |k: usize| u32::from_le_bytes([s[k], s[k + 1], s[k + 2], s[k + 3]]);
            (w(0), w(4), w(8))
        };
        for (id, vendor) in [
            (b"AuthenticAMD", Vendor::Amd),
            (b"HygonGenuine", Vendor::Amd),
            (b"GenuineIntel", Vendor::Intel),
            (b"CentaurHauls", Vendor::Intel),
        ] {
            let (b, d, c) = regs(id);
            assert_eq!(Vendor::from_leaf0(b, d, c), vendor, "{}", String::from_utf8_lossy(id));
        }
        // EPYC 9005 (Zen 5): family 0xF + 0xB; EPYC 7003 (Zen 3): 0xF + 0xA; Xeon: 6.
        assert_eq!(display_family(0x00b0_0f21), 0x1a);
        assert_eq!(display_family(0x00a0_0f11), 0x19);
        assert_eq!(display_family(0x0008_06f8), 6);
        let h = host_cpuid(0, 0);
        assert_eq!(Vendor::host(), Vendor::from_leaf0(h[1], h[3], h[2]));
    }
}
