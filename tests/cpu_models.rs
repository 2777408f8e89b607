//! `-cpu NAME` (and `URUN_CPU`): the CPU model the guest sees and is held
//! to, under the engine `URUN_TEST_ENGINE` names. A model without AVX2
//! makes a CPUID check say "no AVX2" and an x86-64-v3 program die with
//! SIGILL; the baseline model makes glibc pick its SSE2 functions and the
//! output stays the native one; bad model strings get one line and status 2.
//!
//! Under kvm_pvm (this project's nested KVM) the guest's CPUID and XGETBV
//! run natively on the host CPU, so the model cannot hide a feature there:
//! the hiding tests detect that and report it as a skip, never as a pass.
//! kvm_pvm runs guest user code at the host's CPL3 without hardware
//! virtualization; it could trap CPUID only through the host's CPUID
//! faulting (its `pvm_vcpu_reset` offers the guest CPUID faulting only
//! where the host has X86_FEATURE_CPUID_FAULT), which this project's hosts
//! lack (see `cpuid_faulting`).

mod common;

use common::{compare_runs, engine_under_test, ensure_testbins, report_skip, run, urun, Outcome};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(120);

/// `urun --engine E [-cpu MODEL] PROGRAM`, with `URUN_CPU` set instead of
/// the option when `via_env`.
fn under_urun(model: Option<&str>, via_env: bool, program: &Path) -> Outcome {
    let mut cmd = Command::new(urun());
    cmd.env_remove("URUN_CPU").arg("--engine").arg(engine_under_test());
    match (model, via_env) {
        (Some(m), true) => {
            cmd.env("URUN_CPU", m);
        }
        (Some(m), false) => {
            cmd.arg("-cpu").arg(m);
        }
        (None, _) => {}
    }
    cmd.arg(program);
    run(&mut cmd, &[], TIMEOUT)
}

fn native(program: &Path) -> Outcome {
    run(&mut Command::new(program), &[], TIMEOUT)
}

/// Can the engine under test hide AVX2 from the guest? (Not under kvm_pvm:
/// see the module comment.) Reports the skip when it cannot.
fn model_can_hide(test: &str, out: &Path) -> bool {
    if engine_under_test() != "kvm" {
        return true;
    }
    if !common::kvm_or_skip(test) {
        return false;
    }
    let o = under_urun(Some("x86-64-v2"), false, &out.join("cpucheck.v3"));
    if o.stdout.starts_with(b"AVX2") {
        let why = format!(
            "the KVM guest's CPUID and XGETBV run natively here (kvm_pvm can trap a guest's CPUID only through \
             the host's CPUID faulting; this host: {})",
            cpuid_faulting()
        );
        report_skip(test, &why);
        return false;
    }
    true
}

/// What this host says about CPUID faulting: the `cpuid_fault` flag in
/// /proc/cpuinfo and `arch_prctl(ARCH_SET_CPUID, 1)` (which leaves CPUID
/// enabled, as it is, and fails with ENODEV where the kernel has no CPUID
/// faulting).
fn cpuid_faulting() -> String {
    let flag = std::fs::read_to_string("/proc/cpuinfo")
        .map(|c| c.lines().any(|l| l.starts_with("flags") && l.split_whitespace().any(|w| w == "cpuid_fault")))
        .unwrap_or(false);
    const ARCH_SET_CPUID: libc::c_long = 0x1012;
    // SAFETY: ARCH_SET_CPUID with 1 keeps CPUID enabled for this thread
    // (its state at start); it touches nothing else.
    let rc = unsafe { libc::syscall(libc::SYS_arch_prctl, ARCH_SET_CPUID, 1) };
    let errno = std::io::Error::last_os_error();
    format!(
        "/proc/cpuinfo {} cpuid_fault, arch_prctl(ARCH_SET_CPUID) {}",
        if flag { "lists" } else { "does not list" },
        if rc == 0 { "works".to_string() } else { format!("fails: {errno}") }
    )
}

#[test]
fn v2_model_says_no_avx2_and_refuses_v3_code() {
    let out = ensure_testbins();
    if !model_can_hide("v2_model_says_no_avx2_and_refuses_v3_code", &out) {
        return;
    }
    for via_env in [false, true] {
        let o = under_urun(Some("x86-64-v2"), via_env, &out.join("cpucheck.v3"));
        assert_eq!((o.code, String::from_utf8_lossy(&o.stdout).as_ref()), (Some(0), "no AVX2\n"), "{o:?}");
        for prog in ["vec3.v3", "vec3.v3-dynamic"] {
            let o = under_urun(Some("x86-64-v2"), via_env, &out.join(prog));
            assert_eq!(o.signal, Some(libc::SIGILL), "{prog} under -cpu x86-64-v2: {}", o.status_text());
        }
    }
    // One feature off is enough.
    let o = under_urun(Some("x86-64-v3,-avx2"), false, &out.join("cpucheck.v3"));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "no AVX2\n", "{o:?}");
}

#[test]
fn v3_and_host_models_run_v3_code_as_natively() {
    let out = ensure_testbins();
    if !common::engine_or_skip(&engine_under_test(), "v3_and_host_models_run_v3_code_as_natively") {
        return;
    }
    for prog in ["vec3.v3", "vec3.v3-dynamic", "cpucheck.v3", "avx_signal.v3"] {
        let n = native(&out.join(prog));
        assert_eq!(n.code, Some(0), "{prog} natively: {}", n.status_text());
        for model in [Some("x86-64-v3"), Some("host"), None] {
            let u = under_urun(model, false, &out.join(prog));
            let problems = compare_runs(&n, &u);
            assert!(problems.is_empty(), "{prog} with -cpu {model:?}: {problems:#?}");
        }
    }
}

#[test]
fn baseline_model_runs_generic_code_as_natively() {
    let out = ensure_testbins();
    if !model_can_hide("baseline_model_runs_generic_code_as_natively", &out) {
        return;
    }
    // glibc picks its SSE2 string functions from CPUID; the output stays.
    for prog in ["libc_strings.glibc", "libc_strings.dynamic", "strings.glibc", "floatfmt.dynamic"] {
        let n = native(&out.join(prog));
        let u = under_urun(Some("x86-64"), false, &out.join(prog));
        let problems = compare_runs(&n, &u);
        assert!(problems.is_empty(), "{prog} with -cpu x86-64: {problems:#?}");
    }
    let o = under_urun(Some("x86-64"), false, &out.join("cpucheck.v3"));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "no AVX2\n", "{o:?}");
}

#[test]
fn bad_models_get_one_line_and_status_2() {
    let out = ensure_testbins();
    for (model, says) in [
        ("pentium", "unknown CPU model `pentium`"),
        ("host,+avx512f", "unknown CPU feature `avx512f`"),
        ("x86-64-v2,avx", "`avx`: a feature is written +NAME"),
    ] {
        for via_env in [false, true] {
            let o = under_urun(Some(model), via_env, &out.join("hello.glibc"));
            let err = o.stderr_text();
            assert_eq!(o.code, Some(2), "{model}: {}", o.status_text());
            assert!(
                err.starts_with("urun: -cpu: ") && err.contains(says) && err.lines().count() == 1,
                "{model}: {err}"
            );
            assert!(o.stdout.is_empty());
        }
    }
}
