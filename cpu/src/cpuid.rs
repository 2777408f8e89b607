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

use iced_x86::CpuidFeature;

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

/// Feature bits of leaf 1 ECX that belong to the XSAVE/AVX family.
pub mod avx1 {
    pub const FMA: u32 = 1 << 12;
    pub const XSAVE: u32 = 1 << 26;
    pub const OSXSAVE: u32 = 1 << 27;
    pub const AVX: u32 = 1 << 28;
    pub const F16C: u32 = 1 << 29;
    /// Leaf 7 EBX.
    pub const AVX2: u32 = 1 << 5;
}

/// A CPUID feature word: which leaf and register holds a feature bit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Word {
    /// Leaf 1 ECX.
    L1Ecx,
    /// Leaf 1 EDX.
    L1Edx,
    /// Leaf 7 subleaf 0 EBX.
    L7Ebx,
    /// Leaf 0x8000_0001 ECX.
    ExtEcx,
    /// Leaf 0x8000_0001 EDX.
    ExtEdx,
    /// Leaf 0xD subleaf 1 EAX (XSAVEOPT, XSAVEC, XGETBV with ECX = 1).
    XsaveEax,
}

impl Word {
    /// The host's value of this word (read once per process: CPUID traps
    /// to the hypervisor under virtualization, and the model is probed
    /// word by word for each feature).
    fn host(self) -> u32 {
        static WORDS: OnceLock<[u32; 6]> = OnceLock::new();
        WORDS.get_or_init(|| {
            [Word::L1Ecx, Word::L1Edx, Word::L7Ebx, Word::ExtEcx, Word::ExtEdx, Word::XsaveEax].map(Word::read_host)
        })[self as usize]
    }

    /// The host's value of this word, read now.
    fn read_host(self) -> u32 {
        let (max, ext_max) = host_max_leaves();
        match self {
            Word::L1Ecx => host_cpuid(1, 0)[2],
            Word::L1Edx => host_cpuid(1, 0)[3],
            Word::L7Ebx if max >= 7 => host_cpuid(7, 0)[1],
            Word::ExtEcx if ext_max >= 0x8000_0001 => host_cpuid(0x8000_0001, 0)[2],
            Word::ExtEdx if ext_max >= 0x8000_0001 => host_cpuid(0x8000_0001, 0)[3],
            Word::XsaveEax if max >= 0xd => host_cpuid(0xd, 1)[0],
            _ => 0,
        }
    }
}

/// One feature a CPU model may have: its qemu-style name, where CPUID
/// reports it, the x86-64 psABI level that first requires it (1 for the
/// baseline, 0 for none), and the iced-x86 features of the instructions it
/// enables (an instruction needing one the model lacks is #UD).
pub struct FeatureDef {
    pub name: &'static str,
    /// Other names accepted by `-cpu` (`sse3` for `pni`, ...).
    pub aliases: &'static [&'static str],
    pub word: Word,
    pub bit: u32,
    pub level: u8,
    pub iced: &'static [CpuidFeature],
    /// Features this one needs: without them it is dropped from a model.
    pub needs: &'static [&'static str],
}

macro_rules! features {
    ($($name:literal $([$($alias:literal),*])? : $word:ident $bit:literal, $level:literal, [$($iced:ident),*] $(needs $($need:literal),*)?;)*) => {
        /// Every feature urun implements, in one table: the CPU models are
        /// subsets of it.
        pub static FEATURES: &[FeatureDef] = &[$(FeatureDef {
            name: $name,
            aliases: &[$($($alias),*)?],
            word: Word::$word,
            bit: 1 << $bit,
            level: $level,
            iced: &[$(CpuidFeature::$iced),*],
            needs: &[$($($need),*)?],
        }),*];
    };
}

features! {
    "fpu": L1Edx 0, 1, [];
    "tsc": L1Edx 4, 1, [TSC];
    "cx8": L1Edx 8, 1, [CX8];
    "cmov": L1Edx 15, 1, [CMOV];
    "clflush": L1Edx 19, 1, [CLFSH];
    "mmx": L1Edx 23, 1, [MMX];
    "fxsr": L1Edx 24, 1, [FXSR];
    "sse": L1Edx 25, 1, [SSE];
    "sse2": L1Edx 26, 1, [SSE2];
    "syscall": ExtEdx 11, 1, [SYSCALL];
    "nx": ExtEdx 20, 1, [];
    "lm": ExtEdx 29, 1, [X64];
    "pni" ["sse3"]: L1Ecx 0, 2, [SSE3];
    "ssse3": L1Ecx 9, 2, [SSSE3];
    "cx16": L1Ecx 13, 2, [CMPXCHG16B];
    "sse4.1" ["sse4_1"]: L1Ecx 19, 2, [SSE4_1];
    "sse4.2" ["sse4_2"]: L1Ecx 20, 2, [SSE4_2];
    "popcnt": L1Ecx 23, 2, [POPCNT];
    "lahf_lm" ["lahf"]: ExtEcx 0, 2, [];
    "fma": L1Ecx 12, 3, [FMA] needs "avx";
    "movbe": L1Ecx 22, 3, [MOVBE];
    "xsave": L1Ecx 26, 3, [XSAVE];
    "avx": L1Ecx 28, 3, [AVX] needs "xsave";
    "xsaveopt": XsaveEax 0, 0, [XSAVEOPT] needs "xsave";
    "xsavec": XsaveEax 1, 0, [XSAVEC] needs "xsave";
    "xgetbv1": XsaveEax 2, 0, [] needs "xsave";
    "f16c": L1Ecx 29, 3, [F16C] needs "avx";
    "avx2": L7Ebx 5, 3, [AVX2] needs "avx";
    "bmi1": L7Ebx 3, 3, [BMI1];
    "bmi2": L7Ebx 8, 3, [BMI2];
    "abm" ["lzcnt"]: ExtEcx 5, 3, [LZCNT];
    "pclmulqdq" ["pclmul"]: L1Ecx 1, 0, [PCLMULQDQ];
    "aes": L1Ecx 25, 0, [AES];
    "rdrand": L1Ecx 30, 0, [RDRAND];
    "rdseed": L7Ebx 18, 0, [RDSEED];
    "adx": L7Ebx 19, 0, [ADX];
    "rdtscp": ExtEdx 27, 0, [RDTSCP];
}

/// What `-cpu` was given that urun cannot make a model of.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ModelError {
    #[error("unknown CPU model `{0}` (models: x86-64, x86-64-v2, x86-64-v3, host)")]
    UnknownModel(String),
    #[error("unknown CPU feature `{0}` (features: {names})", names = feature_names())]
    UnknownFeature(String),
    #[error("`{0}`: a feature is written +NAME, -NAME, NAME=on or NAME=off")]
    BadModifier(String),
    #[error("`+{0}`: the host lacks it, and urun runs it on the host's own unit")]
    HostLacks(String),
    #[error("the CPU model is already set")]
    AlreadySet,
}

/// A CPU model: a set of `FEATURES` (bit i = `FEATURES[i]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Model {
    bits: u64,
}

impl Model {
    fn index(name: &str) -> Option<usize> {
        FEATURES.iter().position(|f| f.name == name || f.aliases.contains(&name))
    }

    /// The psABI level `n` (1..=3) models.
    pub fn level(n: u8) -> Model {
        let mut m = Model { bits: 0 };
        for (i, f) in FEATURES.iter().enumerate() {
            if f.level != 0 && f.level <= n {
                m.bits |= 1 << i;
            }
        }
        m
    }

    /// Everything the host has that urun implements. Features of the XSAVE
    /// family count only when the host's kernel enabled their state (XCR0).
    /// Computed once per process (CPUID is slow under virtualization).
    pub fn host() -> Model {
        static HOST: OnceLock<Model> = OnceLock::new();
        *HOST.get_or_init(Model::probe_host)
    }

    fn probe_host() -> Model {
        let mut m = Model { bits: 0 };
        for (i, f) in FEATURES.iter().enumerate() {
            if f.word.host() & f.bit != 0 {
                m.bits |= 1 << i;
            }
        }
        if !host_ymm_enabled() {
            for name in ["xsave", "avx"] {
                m.remove(name);
            }
        }
        m.settle()
    }

    /// The features the host cannot run (the interpreter runs float, string,
    /// crypto and vector forms on the host's own unit).
    fn beyond_host(self) -> Model {
        Model { bits: self.bits & !Model::host().bits }
    }

    /// Does the model have the feature named `name`?
    pub fn has(&self, name: &str) -> bool {
        Model::index(name).is_some_and(|i| self.bits & (1 << i) != 0)
    }

    fn remove(&mut self, name: &str) {
        if let Some(i) = Model::index(name) {
            self.bits &= !(1 << i);
        }
    }

    /// Drop the features whose prerequisites are missing (AVX without
    /// XSAVE, AVX2 without AVX, ...).
    fn settle(mut self) -> Model {
        loop {
            let before = self.bits;
            for (i, f) in FEATURES.iter().enumerate() {
                if self.bits & (1 << i) != 0 && !f.needs.iter().all(|n| self.has(n)) {
                    self.bits &= !(1 << i);
                }
            }
            if self.bits == before {
                return self;
            }
        }
    }

    /// Parse a qemu-style `-cpu` argument: `NAME[,+FEAT|-FEAT|FEAT=on|FEAT=off]...`.
    /// A feature the host lacks cannot be added (urun runs those
    /// instructions on the host's unit).
    pub fn parse(spec: &str) -> Result<Model, ModelError> {
        let mut parts = spec.split(',');
        let name = parts.next().unwrap_or("").trim();
        let mut m = match name {
            "x86-64" | "x86-64-v1" => Model::level(1),
            "x86-64-v2" => Model::level(2),
            "x86-64-v3" => Model::level(3),
            "host" | "max" | "" => Model::host(),
            other => return Err(ModelError::UnknownModel(other.to_string())),
        };
        for p in parts {
            let (feat, on) = if let Some(f) = p.strip_prefix('+') {
                (f, true)
            } else if let Some(f) = p.strip_prefix('-') {
                (f, false)
            } else if let Some(f) = p.strip_suffix("=on") {
                (f, true)
            } else if let Some(f) = p.strip_suffix("=off") {
                (f, false)
            } else {
                return Err(ModelError::BadModifier(p.to_string()));
            };
            let i = Model::index(feat).ok_or_else(|| ModelError::UnknownFeature(feat.to_string()))?;
            if on {
                m.bits |= 1 << i;
            } else {
                m.bits &= !(1 << i);
            }
        }
        let m = m.settle();
        let lacking = m.beyond_host();
        if let Some(f) = FEATURES.iter().enumerate().find(|(i, _)| lacking.bits & (1 << i) != 0) {
            return Err(ModelError::HostLacks(f.1.name.to_string()));
        }
        Ok(m)
    }

    /// The model's bits of one CPUID feature word.
    pub fn word(&self, w: Word) -> u32 {
        let mut v = 0;
        for (i, f) in FEATURES.iter().enumerate() {
            if f.word == w && self.bits & (1 << i) != 0 {
                v |= f.bit;
            }
        }
        if w == Word::L1Ecx && v & avx1::XSAVE != 0 {
            // urun is the guest's OS here, and it enables XSAVE.
            v |= avx1::OSXSAVE;
        }
        v
    }

    /// The guest's XCR0: x87 and SSE state, plus AVX state with AVX.
    pub fn xcr0(&self) -> u64 {
        if self.has("avx") {
            0b111
        } else {
            0b11
        }
    }

    /// Bytes of the XSAVE area for `xcr0` (standard format).
    pub fn xsave_size(&self) -> u32 {
        if self.has("avx") {
            XSAVE_YMM_OFFSET + 256
        } else {
            XSAVE_YMM_OFFSET
        }
    }

    /// May an instruction needing the iced features `needs` run? A feature
    /// the table does not list is the interpreter's table's business.
    pub fn allows(&self, needs: &[CpuidFeature]) -> bool {
        needs.iter().all(|n| FEATURES.iter().enumerate().all(|(i, f)| !f.iced.contains(n) || self.bits & (1 << i) != 0))
    }

    /// The feature names of the model, space-separated (for `-cpu help`
    /// and logs).
    pub fn names(&self) -> String {
        let v: Vec<&str> =
            FEATURES.iter().enumerate().filter(|(i, _)| self.bits & (1 << i) != 0).map(|(_, f)| f.name).collect();
        v.join(" ")
    }
}

/// Offset of the AVX (YMM upper halves) component in the standard XSAVE
/// format, after the 512-byte legacy region and the 64-byte header.
pub const XSAVE_YMM_OFFSET: u32 = 576;

/// Does the host's kernel enable the SSE and AVX state (XCR0 bits 1, 2)?
fn host_ymm_enabled() -> bool {
    if host_cpuid(1, 0)[2] & avx1::OSXSAVE == 0 {
        return false;
    }
    let (lo, _hi): (u32, u32);
    // SAFETY: XGETBV with ECX = 0 reads XCR0; it is valid whenever
    // CPUID.1:ECX.OSXSAVE is set, checked above. It touches nothing else.
    unsafe { std::arch::asm!("xgetbv", in("ecx") 0, out("eax") lo, out("edx") _hi, options(nomem, nostack)) };
    lo & 0b110 == 0b110
}

static MODEL: OnceLock<Model> = OnceLock::new();

/// The process's CPU model: the one `set_model` chose, else the host's.
pub fn model() -> &'static Model {
    MODEL.get_or_init(Model::host)
}

/// Choose the CPU model, once, before any guest code runs.
pub fn set_model(m: Model) -> Result<(), ModelError> {
    MODEL.set(m).map_err(|_| ModelError::AlreadySet)
}

/// Choose the CPU model from a `-cpu` argument (`None`: the default).
pub fn configure(spec: Option<&str>) -> Result<&'static Model, ModelError> {
    if let Some(spec) = spec {
        set_model(Model::parse(spec)?)?;
    }
    Ok(model())
}

/// The names of every feature, space-separated.
fn feature_names() -> String {
    FEATURES.iter().map(|f| f.name).collect::<Vec<_>>().join(" ")
}

/// The host's CPUID.
pub fn host_cpuid(leaf: u32, sub: u32) -> [u32; 4] {
    let r = core::arch::x86_64::__cpuid_count(leaf, sub);
    [r.eax, r.ebx, r.ecx, r.edx]
}

/// The host's highest basic and extended CPUID leaves, read once.
fn host_max_leaves() -> (u32, u32) {
    static MAX: OnceLock<(u32, u32)> = OnceLock::new();
    *MAX.get_or_init(|| (host_cpuid(0, 0)[0], host_cpuid(0x8000_0000, 0)[0]))
}

/// CPUID as the guest sees it under the process's model: `[eax, ebx, ecx, edx]`.
pub fn guest_cpuid(leaf: u32, sub: u32) -> [u32; 4] {
    model_cpuid(model(), leaf, sub)
}

/// CPUID as a guest of model `m` sees it: `[eax, ebx, ecx, edx]`.
pub fn model_cpuid(m: &Model, leaf: u32, sub: u32) -> [u32; 4] {
    let (host_max, host_ext_max) = host_max_leaves();
    match leaf {
        0 => {
            let h = host_cpuid(0, 0);
            [h[0].min(0xd), h[1], h[2], h[3]]
        }
        1 => {
            let h = host_cpuid(1, 0);
            // Family/model/stepping and the APIC/CLFLUSH info in EBX are the
            // host's; features are the model's.
            [h[0], h[1], m.word(Word::L1Ecx), m.word(Word::L1Edx)]
        }
        // Cache and topology descriptors: the host's, so libc sizes its
        // copy thresholds from a real cache.
        2 | 4 if leaf <= host_max => host_cpuid(leaf, sub),
        // Subleaf 0 only; EAX = 0: no further subleaves.
        7 if sub == 0 => [0, m.word(Word::L7Ebx), 0, 0],
        7 => [0, 0, 0, 0],
        // XSAVE: the components of XCR0 and their sizes (standard format;
        // the compacted one is the same size, the AVX component needing no
        // 64-byte alignment: subleaf 2 ECX = 0); subleaf 1: XSAVEOPT, XSAVEC
        // and XGETBV1 as the model has them, never XSAVES (no IA32_XSS).
        0xd if m.has("xsave") => match sub {
            0 => [m.xcr0() as u32, m.xsave_size(), m.xsave_size(), 0],
            1 => {
                let eax = m.word(Word::XsaveEax);
                [eax, if eax != 0 { m.xsave_size() } else { 0 }, 0, 0]
            }
            2 if m.has("avx") => [256, XSAVE_YMM_OFFSET, 0, 0],
            _ => [0, 0, 0, 0],
        },
        0x8000_0000 => [host_ext_max.min(0x8000_0008), 0, 0, 0],
        0x8000_0001 => {
            let h = host_cpuid(leaf, 0);
            [h[0], 0, m.word(Word::ExtEcx), m.word(Word::ExtEdx)]
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
    fn levels_are_the_psabi_levels() {
        let v1 = Model::parse("x86-64").unwrap();
        let v2 = Model::parse("x86-64-v2").unwrap();
        let v3 = Model::parse("x86-64-v3").unwrap();
        let l1 = |m: &Model| model_cpuid(m, 1, 0);
        assert_ne!(l1(&v1)[3] & edx1::SSE2, 0);
        assert_eq!(l1(&v1)[2], 0, "the baseline has no leaf-1 ECX feature");
        assert_eq!(model_cpuid(&v1, 0x8000_0001, 0)[2] & ext::ECX_LAHF, 0);
        assert_ne!(l1(&v2)[2] & ecx1::SSE42, 0);
        assert_eq!(l1(&v2)[2] & (avx1::AVX | avx1::OSXSAVE | avx1::FMA), 0, "v2 has no AVX");
        assert_eq!(model_cpuid(&v2, 7, 0)[1], 0, "v2 has no AVX2 nor BMI");
        assert_eq!(model_cpuid(&v2, 0xd, 0), [0; 4]);
        let want = avx1::AVX | avx1::OSXSAVE | avx1::XSAVE | avx1::FMA | avx1::F16C | ecx1::MOVBE;
        assert_eq!(l1(&v3)[2] & want, want);
        assert_eq!(model_cpuid(&v3, 7, 0)[1], avx1::AVX2 | ebx7::BMI1 | ebx7::BMI2);
        assert_ne!(model_cpuid(&v3, 0x8000_0001, 0)[2] & ext::ECX_ABM, 0);
        assert_eq!(l1(&v3)[2] & (ecx1::AES | ecx1::PCLMULQDQ), 0, "not in any level");
        assert_eq!(model_cpuid(&v3, 0xd, 0), [7, 832, 832, 0]);
        assert_eq!(model_cpuid(&v3, 0xd, 2), [256, 576, 0, 0]);
        assert_eq!(model_cpuid(&v3, 0xd, 1), [0; 4], "XSAVEOPT/XSAVEC are in no level");
        let c = Model::parse("x86-64-v2,+xsave,+xsavec,+xgetbv1");
        if let Ok(c) = c {
            assert_eq!(model_cpuid(&c, 0xd, 1), [0b110, 576, 0, 0]);
        }
        assert_eq!(v3.xcr0(), 7);
        assert_eq!(v2.xcr0(), 3);
    }

    #[test]
    fn modifiers_and_errors() {
        let m = Model::parse("x86-64-v2,+avx2,-popcnt,aes=on").unwrap();
        assert!(!m.has("popcnt") && m.has("aes") && m.has("sse4.2"));
        assert!(!m.has("avx2"), "avx2 without avx and xsave is dropped");
        let m = Model::parse("x86-64-v2,+xsave,+avx,+avx2,-sse4.2").unwrap();
        assert!(m.has("avx2") && !m.has("sse4.2") && m.has("sse4.1"));
        let m = Model::parse("x86-64-v3,-avx").unwrap();
        assert!(!m.has("avx2") && !m.has("fma") && !m.has("f16c") && m.has("bmi2"), "{}", m.names());
        assert!(Model::parse("x86-64,+sse3").unwrap().has("pni"));
        assert_eq!(Model::parse("pentium"), Err(ModelError::UnknownModel("pentium".into())));
        assert_eq!(Model::parse("host,+avx512f"), Err(ModelError::UnknownFeature("avx512f".into())));
        assert_eq!(Model::parse("host,avx"), Err(ModelError::BadModifier("avx".into())));
        assert_eq!(Model::parse("max"), Ok(Model::host()));
    }

    #[test]
    fn host_model_is_within_the_host() {
        let m = Model::host();
        for w in [Word::L1Edx, Word::L7Ebx, Word::ExtEcx, Word::ExtEdx, Word::XsaveEax] {
            assert_eq!(m.word(w) & !w.host(), 0, "{w:?}");
        }
        assert_eq!(m.word(Word::L1Ecx) & !(w_host_l1ecx() | avx1::OSXSAVE), 0);
        // The vendor string is the host's.
        assert_eq!(model_cpuid(&m, 0, 0)[1..], host_cpuid(0, 0)[1..]);
        // No AVX-512 (leaf 7 EBX bit 16) ever.
        assert_eq!(model_cpuid(&m, 7, 0)[1] & (1 << 16), 0);
    }

    fn w_host_l1ecx() -> u32 {
        Word::L1Ecx.host()
    }

    #[test]
    fn instructions_need_their_features() {
        use iced_x86::Code;
        let v2 = Model::level(2);
        let v3 = Model::parse("x86-64-v3").unwrap();
        for (code, in_v2, in_v3) in [
            (Code::VEX_Vaddps_ymm_ymm_ymmm256, false, true),
            (Code::VEX_Vpaddd_ymm_ymm_ymmm256, false, true),
            (Code::VEX_Vfmadd231ps_ymm_ymm_ymmm256, false, true),
            (Code::VEX_Vcvtph2ps_ymm_xmmm128, false, true),
            (Code::Popcnt_r64_rm64, true, true),
            (Code::Aesenc_xmm_xmmm128, false, false),
            (Code::Pcmpistri_xmm_xmmm128_imm8, true, true),
            (Code::Add_rm64_r64, true, true),
        ] {
            let needs = code.cpuid_features();
            assert_eq!(v2.allows(needs), in_v2, "{code:?} in v2");
            assert_eq!(v3.allows(needs), in_v3, "{code:?} in v3");
        }
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
