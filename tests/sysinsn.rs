//! System instructions at CPL 3 (testbins/sysinsn.c, every build): far
//! RET/JMP/CALL, IRETQ, segment loads, LAR/LSL/VERR/VERW, the UMIP
//! instructions, I/O, INT n, privileged and CET instructions. Each prints one
//! line (signal, si_code, si_addr and saved RIP relative to the instruction,
//! or the results); natively and under urun (`URUN_TEST_ENGINE`, interp
//! unless set) the lines must be the same.
//!
//! Under `--engine kvm` on a `kvm_pvm` host, a few instructions are run by
//! kvm_pvm differently from the host (measured; listed in `PVM_DIFFERS`
//! with the reason). Where those differ, the test prints a `SKIPPED CASE:` line
//! for each on stderr instead of failing; every other line must match, and
//! each listed case runs in its own process so one cannot hide another.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{engine_under_test, ensure_testbins, report_skipped_case, run, show, urun, Outcome};

const FLAVOURS: &[&str] = &["glibc", "glibc-pie", "musl", "dynamic"];
const TIMEOUT: Duration = Duration::from_secs(60);

/// Cases kvm_pvm runs differently from the host, with what was measured
/// (AMD Zen 5 host, kvm_pvm; hardware KVM unverified).
const PVM_DIFFERS: &[(&str, &str)] = &[
    ("iretq_ss33", "kvm_pvm runs IRETQ with a code selector in SS instead of raising #GP"),
    ("iretq_cs2b", "kvm_pvm leaves RSP unusable after IRETQ to a data selector in CS; the guest dies by SIGSEGV"),
    ("ljmp_64", "kvm_pvm emulates far JMP m16:64 with Intel's semantics; an AMD host reads m16:32"),
    ("lcall_64", "kvm_pvm emulates far CALL m16:64 with Intel's semantics; an AMD host reads m16:32"),
    ("setssbsy", "kvm_pvm runs SETSSBSY as a NOP at CPL 3; the host raises #UD"),
    (
        "lar_23",
        "LAR/LSL/VERR under kvm_pvm see its own descriptors, where 0x23 is not usable (far transfers to 0x23 do work)",
    ),
    (
        "lsl_23",
        "LAR/LSL/VERR under kvm_pvm see its own descriptors, where 0x23 is not usable (far transfers to 0x23 do work)",
    ),
    (
        "verr_23",
        "LAR/LSL/VERR under kvm_pvm see its own descriptors, where 0x23 is not usable (far transfers to 0x23 do work)",
    ),
    ("mov_ds_23", "under kvm_pvm DS reads back 0 after loading 0x23"),
    ("int_20", "kvm_pvm reports INT n through a DPL-0 gate as #UD (SIGILL), the host as #GP (SIGSEGV)"),
    ("int_01", "kvm_pvm reports INT n through a DPL-0 gate as #UD (SIGILL), the host as #GP (SIGSEGV)"),
    ("int_0d", "kvm_pvm reports INT n through a DPL-0 gate as #UD (SIGILL), the host as #GP (SIGSEGV)"),
    ("int_ff", "kvm_pvm reports INT n through a DPL-0 gate as #UD (SIGILL), the host as #GP (SIGSEGV)"),
];

/// The known differences of the engine under test on this machine.
fn known_differences() -> &'static [(&'static str, &'static str)] {
    if engine_under_test() == "kvm" && Path::new("/sys/module/kvm_pvm").exists() {
        PVM_DIFFERS
    } else {
        &[]
    }
}

fn native(program: &Path, args: &[&str]) -> Outcome {
    run(Command::new(program).args(args), b"", TIMEOUT)
}

fn under_urun<S: AsRef<std::ffi::OsStr>>(program: &Path, args: &[S]) -> Outcome {
    run(Command::new(urun()).arg("--engine").arg(engine_under_test()).arg(program).args(args), b"", TIMEOUT)
}

/// Output lines by case name (the first word).
fn lines_by_case(o: &Outcome) -> BTreeMap<String, String> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(|n| (n.to_string(), l.to_string())))
        .collect()
}

/// A known difference seen: (case, flavour, what differed).
type Seen = (&'static str, String, String);

/// Compare one build natively and under urun: the problems, and the known
/// differences that showed.
fn check_flavour(flavour: &str) -> (Vec<String>, Vec<Seen>) {
    let prog = ensure_testbins().join(format!("sysinsn.{flavour}"));
    let n = native(&prog, &[]);
    assert_eq!(n.code, Some(0), "native {}: {}\n{}", prog.display(), n.status_text(), n.stderr_text());
    let expected = lines_by_case(&n);
    assert!(expected.len() > 100, "native run printed only {} cases:\n{}", expected.len(), show(&n.stdout, 2000));
    let known = known_differences();
    let is_known = |name: &str| known.iter().any(|(k, _)| *k == name);
    let mut problems = Vec::new();
    let mut seen = Vec::new();

    // Everything else in one run, in the program's order.
    let rest: Vec<String> = String::from_utf8_lossy(&n.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| !is_known(name))
        .map(str::to_string)
        .collect();
    let u = under_urun(&prog, &rest);
    if u.code != Some(0) {
        problems.push(format!("urun: {} (stderr: {})", u.status_text(), show(&u.stderr, 600)));
    }
    let got = lines_by_case(&u);
    for name in &rest {
        match (expected.get(name), got.get(name)) {
            (Some(e), Some(g)) if e == g => {}
            (Some(e), g) => problems.push(format!("native: {e}\n      urun:   {}", g.map_or("<missing>", |s| s))),
            (None, _) => problems.push(format!("{name}: no native line")),
        }
    }
    // The known differences, one process each.
    for (name, why) in known {
        let Some(e) = expected.get(*name) else { continue };
        let u = under_urun(&prog, &[name]);
        let g = lines_by_case(&u).remove(*name);
        if g.as_deref() != Some(e.as_str()) {
            let urun_said = g.unwrap_or_else(|| u.status_text());
            seen.push((*name, flavour.to_string(), format!("{why}; native `{e}`, urun `{urun_said}`")));
        }
    }
    (problems, seen)
}

#[test]
fn system_instructions_match_the_host() {
    let mut all = Vec::new();
    // One SKIPPED CASE line per case: the builds where it showed, and what one
    // of them printed.
    let mut skips: BTreeMap<&str, (Vec<String>, String)> = BTreeMap::new();
    for f in FLAVOURS {
        let (problems, seen) = check_flavour(f);
        all.extend(problems.into_iter().map(|p| format!("sysinsn.{f}: {p}")));
        for (name, flavour, what) in seen {
            let e = skips.entry(name).or_insert_with(|| (Vec::new(), what));
            e.0.push(flavour);
        }
    }
    for (name, (flavours, what)) in &skips {
        report_skipped_case(
            &format!("sysinsn {name} under --engine {} ({})", engine_under_test(), flavours.join(", ")),
            what,
        );
    }
    assert!(all.is_empty(), "under urun --engine {}:\n  {}", engine_under_test(), all.join("\n  "));
}

/// A far return to the 32-bit code selector 0x23 switches to compatibility
/// mode natively and under KVM; the interpreter runs only 64-bit code and
/// raises SIGILL, naming the reason in the log (so does the JIT, which
/// hands far transfers to the interpreter).
#[test]
fn far_return_to_32_bit_code() {
    let prog = ensure_testbins().join("sysinsn.glibc");
    let n = native(&prog, &["compat"]);
    assert_eq!(String::from_utf8_lossy(&n.stdout).trim_end(), "compat_23      ran", "native: {}", n.stderr_text());
    let u = under_urun(&prog, &["compat"]);
    let out = String::from_utf8_lossy(&u.stdout).trim_end().to_string();
    // The JIT hands far transfers to the interpreter: the same SIGILL.
    if matches!(engine_under_test().as_str(), "interp" | "jit") {
        assert_eq!(out, "compat_23      SIGILL code=0x2 addr=insn+0 rip=insn+0", "stderr: {}", u.stderr_text());
        assert!(
            u.stderr_text().contains("compatibility mode"),
            "the log must name compatibility mode: {}",
            u.stderr_text()
        );
    } else {
        assert_eq!(out, "compat_23      ran", "stderr: {}", u.stderr_text());
    }
}
