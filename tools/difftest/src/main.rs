//! `urun-difftest`: the differential tester's command line. It runs N
//! random cases of every instruction form the interpreter implements on the
//! host CPU and in the interpreter and compares all architectural state
//! (see `urun_cpu::difftest`).
//!
//! ```text
//! cargo run --release -p urun-difftest -- --cases 10000 [--seed N] [--only MNEMONIC|CODE|vex] [--out mismatches.txt] [--exact]
//! ```
//!
//! It prints the forms covered, the forms skipped with the reason, the
//! cases run, the mismatches and the cases that differ only in what the
//! mask table (`urun_cpu::difftest::masks::TABLE`) masks on this host, row
//! by row. `--exact` ignores the table and reports those as mismatches:
//! the one command that confirms (or refutes) a row's model on a host of
//! its vendor. It writes a reproducible record of each
//! mismatch to `--out` (code, bytes, instruction, seed and case, input
//! state, host and interpreter outcomes), and exits with status 1 when any
//! case differs (2 when the harness cannot run).

use std::collections::BTreeMap;
use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
#[command(about = "Check every implemented instruction form of urun's interpreter against the host CPU")]
struct Args {
    /// Random cases per form.
    #[arg(long, default_value_t = 1000)]
    cases: u64,
    /// Seed (each form and case derives its own generator from it).
    #[arg(long, default_value_t = 0x5eed, value_parser = parse_u64)]
    seed: u64,
    /// Only forms with this mnemonic (e.g. `imul`) or iced `Code` name, or
    /// `vex`: every VEX-encoded form (the long run of issue 11).
    #[arg(long)]
    only: Option<String>,
    /// Write every kept mismatch record here.
    #[arg(long)]
    out: Option<std::path::PathBuf>,
    /// Mismatch records kept per form.
    #[arg(long, default_value_t = 20)]
    records_per_form: usize,
    /// List every covered form with its tally.
    #[arg(long)]
    verbose: bool,
    /// Ignore the mask table: compare every flag and register.
    #[arg(long)]
    exact: bool,
}

fn parse_u64(s: &str) -> Result<u64, String> {
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => s.parse(),
    }
    .map_err(|e| format!("{s}: {e}"))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let cfg = urun_cpu::difftest::Config {
        cases: args.cases,
        seed: args.seed,
        only: args.only.clone(),
        records_per_form: args.records_per_form,
        exact: args.exact,
    };
    let started = std::time::Instant::now();
    let report = match urun_cpu::difftest::run(&cfg) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("urun-difftest: cannot run the native harness: {e}");
            return ExitCode::from(2);
        }
    };
    let mut by_reason: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (code, why) in &report.skipped {
        by_reason.entry(why.as_str()).or_default().push(format!("{code:?}"));
    }
    println!("forms skipped: {}", report.skipped.len());
    for (why, codes) in &by_reason {
        println!("  {} form(s): {why}\n    {}", codes.len(), codes.join(" "));
    }
    if args.verbose {
        for t in &report.covered {
            println!(
                "  {:?}: {} cases, {} host faults, {} mismatches, {} masked",
                t.code, t.cases, t.faults, t.mismatches, t.masked
            );
        }
    }
    let bad: Vec<_> = report.covered.iter().filter(|t| t.mismatches > 0).collect();
    for t in &bad {
        println!("MISMATCH {:?}: {} of {} cases", t.code, t.mismatches, t.cases);
    }
    let faults: u64 = report.covered.iter().map(|t| t.faults).sum();
    println!("forms covered: {}", report.covered.len());
    println!(
        "cases run: {} ({} faulting on the host) in {:.1}s, seed {:#x}",
        report.cases(),
        faults,
        started.elapsed().as_secs_f64(),
        args.seed
    );
    println!("mismatches: {} in {} form(s)", report.mismatches(), bad.len());
    let host = urun_cpu::cpuid::HostCpu::get();
    if args.exact {
        println!("masked: none (--exact: the mask table is ignored; host {:?} family {:#x})", host.vendor, host.family);
    } else {
        println!(
            "masked: {} case(s) differ only in what the mask table masks on this host ({:?} family {:#x}); --exact shows them",
            report.masked(),
            host.vendor,
            host.family
        );
        let table = urun_cpu::difftest::masks::TABLE;
        for (row, &n) in table.iter().zip(&report.masked_by_row) {
            if n > 0 {
                println!("  {n} case(s): {:?} {:?} {:?}: {}", row.family, row.hosts, row.when, row.reason);
            }
        }
    }
    if let Some(path) = &args.out {
        let text: String = report.records.iter().map(|m| m.to_string()).collect();
        if let Err(e) = std::fs::write(path, text) {
            eprintln!("urun-difftest: cannot write {}: {e}", path.display());
            return ExitCode::from(2);
        }
        println!("records: {} written to {}", report.records.len(), path.display());
    }
    if report.mismatches() > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
