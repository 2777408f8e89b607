//! What ordinary test suites do, run by `cargo test` with urun as the
//! runner (tests/unwind.rs): worker threads sharing state, child processes
//! through `std::process::Command` (a shell, and this test binary itself),
//! and temporary files.

use std::io::{Read, Write};
use std::process::Command;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;

#[test]
fn threads_share_work() {
    let total = Arc::new(Mutex::new(0u64));
    let (tx, rx) = mpsc::channel();
    let workers: Vec<_> = (0..8u64)
        .map(|w| {
            let (total, tx) = (total.clone(), tx.clone());
            thread::spawn(move || {
                let sum: u64 = (w * 1000..(w + 1) * 1000).sum();
                *total.lock().unwrap() += sum;
                tx.send(w).unwrap();
            })
        })
        .collect();
    drop(tx);
    for w in workers {
        w.join().unwrap();
    }
    let mut seen: Vec<u64> = rx.iter().collect();
    seen.sort();
    assert_eq!(seen, (0..8).collect::<Vec<_>>());
    assert_eq!(*total.lock().unwrap(), (0..8000u64).sum::<u64>());
}

#[test]
fn child_process_output_and_status() {
    let out = Command::new("/bin/sh").args(["-c", "echo out; echo err >&2; exit 3"]).output().unwrap();
    assert_eq!(out.stdout, b"out\n");
    assert_eq!(out.stderr, b"err\n");
    assert_eq!(out.status.code(), Some(3));
}

/// Runs this test binary again as a child, which does the work of
/// `child_helper` only when the variable says so.
#[test]
fn child_is_this_test_binary() {
    let me = std::env::current_exe().unwrap();
    let out = Command::new(me)
        .args(["--exact", "runner::child_helper", "--nocapture", "--test-threads=1"])
        .env("RUST_UNWIND_CHILD", "21")
        .output()
        .unwrap();
    assert!(out.status.success(), "{:?}", out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("child doubled 21 to 42"), "{:?}", out);
}

#[test]
fn child_helper() {
    if let Ok(v) = std::env::var("RUST_UNWIND_CHILD") {
        let n: u32 = v.parse().unwrap();
        println!("child doubled {n} to {}", n * 2);
    }
}

#[test]
fn temporary_files() {
    let dir = std::env::temp_dir().join(format!("rust-unwind-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let a = dir.join("a.txt");
    std::fs::File::create(&a).unwrap().write_all(b"hello temp\n").unwrap();
    let b = dir.join("b.txt");
    std::fs::rename(&a, &b).unwrap();
    let mut s = String::new();
    std::fs::File::open(&b).unwrap().read_to_string(&mut s).unwrap();
    assert_eq!(s, "hello temp\n");
    assert!(!a.exists());
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(!dir.exists());
}
