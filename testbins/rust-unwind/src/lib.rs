//! Panics that unwind: `#[should_panic]`, `catch_unwind`, a panic in a
//! spawned thread seen by `join`, destructors run during unwinding, and one
//! ignored test that fails on purpose (tests/unwind.rs runs it with
//! `--ignored` to compare a failing run and its backtrace). `runner.rs`:
//! what a crate's tests do besides (threads, child processes, temporary
//! files), for urun as cargo's runner.

#[cfg(test)]
mod runner;

use std::panic;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;

/// Counts its drops, to show that unwinding ran the destructors.
pub struct Counted(pub Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Panics `depth` frames down, each frame holding a `Counted`.
#[inline(never)]
pub fn dive(depth: u32, drops: &Arc<AtomicUsize>) -> u32 {
    let _c = Counted(drops.clone());
    if depth == 0 {
        panic!("bottom reached");
    }
    dive(depth - 1, drops) + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(expected = "bottom reached")]
    fn should_panic_deep() {
        let drops = Arc::new(AtomicUsize::new(0));
        dive(30, &drops);
    }

    #[test]
    #[should_panic]
    fn should_panic_index() {
        let v = vec![1, 2, 3];
        let i = v.len() + std::hint::black_box(2);
        let _ = v[i];
    }

    #[test]
    fn catch_unwind_runs_destructors() {
        let drops = Arc::new(AtomicUsize::new(0));
        let d = drops.clone();
        let r = panic::catch_unwind(move || dive(10, &d));
        let err = r.expect_err("dive must panic");
        assert_eq!(err.downcast_ref::<&str>(), Some(&"bottom reached"));
        assert_eq!(drops.load(Ordering::SeqCst), 11);
    }

    #[test]
    fn catch_unwind_payloads() {
        for i in 0..100u32 {
            let r = panic::catch_unwind(|| {
                if i % 2 == 0 {
                    panic::panic_any(i);
                }
                panic!("odd {i}");
            });
            let err = r.expect_err("must panic");
            if i % 2 == 0 {
                assert_eq!(err.downcast_ref::<u32>(), Some(&i));
            } else {
                assert_eq!(err.downcast_ref::<String>().map(String::as_str), Some(format!("odd {i}").as_str()));
            }
        }
    }

    #[test]
    fn resume_unwind_crosses_catch() {
        let inner = panic::catch_unwind(|| panic::resume_unwind(Box::new(7u8)));
        let outer = panic::catch_unwind(panic::AssertUnwindSafe(move || {
            if let Err(e) = inner {
                panic::resume_unwind(e);
            }
        }));
        assert_eq!(outer.expect_err("must panic").downcast_ref::<u8>(), Some(&7));
    }

    #[test]
    fn panic_in_spawned_thread_is_joined() {
        let drops = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..4)
            .map(|n| {
                let d = drops.clone();
                thread::spawn(move || {
                    if n % 2 == 1 {
                        dive(5 + n, &d);
                    }
                    n
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().map_err(|_| ())).collect();
        assert_eq!(results, vec![Ok(0), Err(()), Ok(2), Err(())]);
        assert_eq!(drops.load(Ordering::SeqCst), (5 + 1 + 1) + (5 + 3 + 1));
    }

    #[test]
    fn scoped_threads_panic_propagates() {
        let r = panic::catch_unwind(|| {
            thread::scope(|s| {
                s.spawn(|| panic!("in a scoped thread"));
            })
        });
        assert!(r.is_err());
    }

    #[test]
    #[ignore = "fails on purpose: tests/unwind.rs runs it with --ignored"]
    fn fails_on_purpose() {
        let drops = Arc::new(AtomicUsize::new(0));
        dive(3, &drops);
    }
}
