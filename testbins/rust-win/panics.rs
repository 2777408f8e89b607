//! Rust panics that unwind, built for Linux and for x86_64-pc-windows-msvc
//! from this one source (testbins/Makefile; tests/pe_rust.rs compares the
//! two). On Windows a panic is a C++ exception: std raises it with
//! _CxxThrowException and every frame's landing pads and catch_unwind run
//! under __CxxFrameHandler3.
//!
//! `panics [caught|thread-default|abort|extern-c]`: with no argument
//! every section runs and main ends in an uncaught panic (the default
//! hook's message on stderr, exit status 101); `caught` stops before it
//! (status 0); `thread-default` only lets two threads panic under the
//! default hook and exits with status 3; `abort` calls
//! std::process::abort, and `extern-c` lets a panic reach an `extern "C"`
//! function, which aborts (SIGABRT on Linux, __fastfail on Windows).

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::error::Error;
use std::fmt;
use std::num::ParseIntError;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

static HOOK_CALLS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// What the Drop impls saw on this thread, in order.
    static DROPS: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    static DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// Says when it is dropped, and whether the thread was unwinding then.
struct Noisy(String);

impl Noisy {
    fn new(name: impl Into<String>) -> Noisy {
        Noisy(name.into())
    }
}

impl Drop for Noisy {
    fn drop(&mut self) {
        let line = format!("{}{}", self.0, if thread::panicking() { " (unwinding)" } else { "" });
        DROPS.with(|d| d.borrow_mut().push(line));
    }
}

fn take_drops() -> String {
    DROPS.with(|d| std::mem::take(&mut *d.borrow_mut())).join(", ")
}

/// Prints when it is dropped.
struct Loud(&'static str);

impl Drop for Loud {
    fn drop(&mut self) {
        println!("drop {} (panicking: {})", self.0, thread::panicking());
    }
}

#[derive(Debug)]
#[allow(dead_code)] // shown through Debug
struct Custom {
    code: u32,
    what: &'static str,
}

fn describe(p: &(dyn Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&'static str>() {
        format!("&str {s:?}")
    } else if let Some(s) = p.downcast_ref::<String>() {
        format!("String {s:?}")
    } else if let Some(n) = p.downcast_ref::<i32>() {
        format!("i32 {n}")
    } else if let Some(c) = p.downcast_ref::<Custom>() {
        format!("Custom {c:?}")
    } else {
        "a payload of another type".to_string()
    }
}

/// catch_unwind around `f`, printing what came back.
fn catch<R: fmt::Debug>(what: &str, f: impl FnOnce() -> R) -> Option<Box<dyn Any + Send>> {
    match panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => {
            println!("{what}: returned {r:?}");
            None
        }
        Err(p) => {
            println!("{what}: caught {}", describe(&*p));
            Some(p)
        }
    }
}

fn install_hook() {
    panic::set_hook(Box::new(|info| {
        HOOK_CALLS.fetch_add(1, Ordering::SeqCst);
        let loc = info.location().map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()));
        let msg = info.payload_as_str().map(str::to_string).unwrap_or_else(|| describe(info.payload()));
        let t = thread::current();
        // The eight busy threads panic at the same time: counted, not shown.
        if t.name().is_some_and(|n| n.starts_with("busy")) {
            return;
        }
        eprintln!("hook: thread '{}' panicked at {}: {msg}", t.name().unwrap_or("<unnamed>"), loc.unwrap_or_default());
    }));
}

fn payloads() {
    println!("-- payloads");
    let n = std::env::args().count() as i32 + 41;
    catch("String payload", || -> i32 { panic!("formatted {} and {:.3}", n, 2.0f64.sqrt()) });
    catch("&str payload", || -> i32 { panic!("a literal") });
    catch("panic_any(i32)", || -> i32 { panic::panic_any(n * 2) });
    catch("panic_any(Custom)", || -> i32 { panic::panic_any(Custom { code: 7, what: "custom" }) });
    catch("panic_any(f64)", || -> i32 { panic::panic_any(1.5f64) });
    catch("no panic", || n + 1);
    let p = catch("assert_eq", || assert_eq!(n, 40, "n was {}", n)).unwrap_or_else(|| Box::new(()));
    println!("  message has left/right: {}", describe(&*p).contains("left: 42"));
}

#[inline(never)]
fn level(n: u32, fail_at: u32) -> u32 {
    let _guard = Noisy::new(format!("level{n}"));
    DEPTH.with(|d| d.set(d.get() + 1));
    if n == fail_at {
        panic!("failed at level {n}");
    }
    let r = level(n + 1, fail_at) + 1;
    std::hint::black_box(r)
}

/// A frame larger than a page: the compiler probes it page by page first
/// (__chkstk on Windows, inline probes on Linux).
#[inline(never)]
fn big_frame(n: usize) -> u8 {
    let mut buf = [0u8; 200_000];
    buf[n % buf.len()] = 1;
    let _guard = Noisy::new("big-frame");
    if n > 0 {
        panic!("through a 200 KB frame");
    }
    std::hint::black_box(&buf)[n]
}

struct Pair {
    first: Noisy,
    second: Noisy,
}

#[inline(never)]
fn build_partly(fail_after: usize) -> Vec<Noisy> {
    let mut v = Vec::new();
    for i in 0..5 {
        if i == fail_after {
            panic!("building element {i}");
        }
        v.push(Noisy::new(format!("elem{i}")));
    }
    v
}

/// Drops whose own code panics and catches it while the thread unwinds.
struct CatchesInDrop;

impl Drop for CatchesInDrop {
    fn drop(&mut self) {
        let r = panic::catch_unwind(|| {
            let _inner = Noisy::new("inner-guard");
            panic!("panic inside a drop during unwinding");
        });
        let text = r.err().map(|p| describe(&*p)).unwrap_or_default();
        DROPS.with(|d| d.borrow_mut().push(format!("drop caught {text}")));
    }
}

fn drops() {
    println!("-- drop order");
    catch("nested frames", || {
        let _outer = Noisy::new("outer");
        level(0, 4)
    });
    println!("  depth reached {}; drops: {}", DEPTH.with(Cell::get), take_drops());
    catch("struct fields and a partly built Vec", || {
        let _pair = Pair { first: Noisy::new("pair.first"), second: Noisy::new("pair.second") };
        let _ = (&_pair.first, &_pair.second);
        build_partly(3).len()
    });
    println!("  drops: {}", take_drops());
    catch("catch_unwind inside a drop while unwinding", || -> u8 {
        let _a = Noisy::new("a");
        let _c = CatchesInDrop;
        let _b = Noisy::new("b");
        panic!("outer panic");
    });
    println!("  drops: {}", take_drops());
    let n = std::env::args().count();
    catch("200 KB frame", || big_frame(n));
    println!("  drops: {}", take_drops());
    // A panic through 2000 frames, each with a guard.
    DEPTH.with(|d| d.set(0));
    catch("2000 frames", || level(0, 1999));
    let d = take_drops();
    println!("  depth {}; {} drops, last {:?}", DEPTH.with(Cell::get), d.split(", ").count(), d.rsplit(", ").next());
    // Many panics in a row: the stack must not move between them.
    let mut caught = 0;
    let before = &caught as *const i32 as usize;
    for i in 0..3000 {
        if panic::catch_unwind(|| if std::hint::black_box(true) { panic::resume_unwind(Box::new(i)) }).is_err() {
            caught += 1;
        }
    }
    let after = &caught as *const i32 as usize;
    println!("  3000 resume_unwind panics caught: {caught}, stack unmoved: {}", before == after);
}

fn threads() {
    println!("-- threads");
    let h = thread::Builder::new()
        .name("worker".into())
        .spawn(|| -> u32 {
            let _g = Noisy::new("worker-guard");
            panic!("worker failed with {}", 5);
        })
        .expect("spawn");
    match h.join() {
        Ok(v) => println!("worker returned {v}"),
        Err(p) => println!("worker joined with Err: {}", describe(&*p)),
    }
    let ok = thread::spawn(|| (1..=10).product::<u64>()).join();
    println!("second thread: {ok:?}");
    // Thread-local destructors run as a thread ends, before join returns
    // (on Windows from the TLS callback std puts in .CRT$XLB), after a
    // panic too.
    thread_local! {
        static BYE: RefCell<Option<Loud>> = const { RefCell::new(None) };
    }
    for fail in [false, true] {
        let r = thread::spawn(move || {
            BYE.with(|b| *b.borrow_mut() = Some(Loud(if fail { "tls-guard of a panicking thread" } else { "tls-guard" })));
            if fail {
                panic!("with a thread-local set");
            }
        })
        .join();
        println!("joined: {}", if r.is_ok() { "Ok" } else { "Err" });
    }
    // A mutex held by a thread that panics is poisoned.
    let m = Arc::new(Mutex::new(vec![1, 2, 3]));
    let m2 = Arc::clone(&m);
    let r = thread::spawn(move || {
        let mut g = m2.lock().unwrap_or_else(|e| e.into_inner());
        g.push(4);
        panic!("holding the lock");
    })
    .join();
    println!("poisoner joined: {}", r.map(|_: ()| "Ok".to_string()).unwrap_or_else(|p| describe(&*p)));
    match m.lock() {
        Ok(g) => println!("lock: not poisoned {:?}", *g),
        Err(e) => println!("lock: poisoned, data {:?}", *e.into_inner()),
    }
    // Scoped threads: one panics, the scope panics after joining them all.
    let total = AtomicUsize::new(0);
    catch("thread::scope", || {
        thread::scope(|s| {
            for i in 0..4usize {
                let total = &total;
                s.spawn(move || {
                    if i == 2 {
                        panic!("scoped thread {i}");
                    }
                    total.fetch_add(i, Ordering::SeqCst);
                });
            }
        })
    });
    println!("  scoped total {}", total.load(Ordering::SeqCst));
    // Eight threads panicking and catching at once.
    let hs: Vec<_> = (0..8)
        .map(|t| {
            let b = thread::Builder::new().name(format!("busy{t}"));
            b.spawn(move || {
                (0..200).filter(|i| panic::catch_unwind(|| if (i + t) % 3 == 0 { panic!("t{t} i{i}") }).is_err()).count()
            })
        })
        .collect();
    let counts: Vec<usize> = hs.into_iter().map(|h| h.expect("spawn").join().unwrap_or(usize::MAX)).collect();
    println!("eight threads caught {counts:?}");
}

fn resume() {
    println!("-- resume_unwind");
    let calls = HOOK_CALLS.load(Ordering::SeqCst);
    let first = panic::catch_unwind(|| panic!("original")).err().unwrap_or_else(|| Box::new("none"));
    let again = catch("resumed", move || -> () {
        let _g = Noisy::new("resume-guard");
        panic::resume_unwind(first)
    });
    println!("  drops: {}", take_drops());
    println!("  hook ran {} time(s) for panic + resume_unwind", HOOK_CALLS.load(Ordering::SeqCst) - calls);
    drop(again);
}

#[derive(Debug)]
enum AppError {
    Parse(ParseIntError),
    Negative(i64),
    Empty,
}

impl fmt::Display for AppError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppError::Parse(e) => write!(f, "bad number: {e}"),
            AppError::Negative(n) => write!(f, "{n} is negative"),
            AppError::Empty => write!(f, "nothing to add"),
        }
    }
}

impl Error for AppError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            AppError::Parse(e) => Some(e),
            _ => None,
        }
    }
}

impl From<ParseIntError> for AppError {
    fn from(e: ParseIntError) -> AppError {
        AppError::Parse(e)
    }
}

fn sum(text: &str) -> Result<i64, AppError> {
    if text.trim().is_empty() {
        return Err(AppError::Empty);
    }
    let mut total = 0;
    for w in text.split(',') {
        let n: i64 = w.trim().parse()?;
        if n < 0 {
            return Err(AppError::Negative(n));
        }
        total += n;
    }
    Ok(total)
}

fn boxed(text: &str) -> Result<i64, Box<dyn Error + Send + Sync>> {
    let n = sum(text)?;
    let m: u8 = u8::try_from(n)?;
    Ok(i64::from(m) * 2)
}

fn results() {
    println!("-- Result and ?");
    for text in ["1, 2, 3", "4, x, 6", "5, -2", " ", "200, 100"] {
        match sum(text) {
            Ok(n) => println!("sum({text:?}) = {n}"),
            Err(e) => println!("sum({text:?}) failed: {e} (source: {:?})", e.source().map(|s| s.to_string())),
        }
        println!("  boxed: {:?}", boxed(text).map_err(|e| e.to_string()));
    }
    catch("unwrap on Err", || sum("q").unwrap());
    catch("expect on None", || None::<u8>.expect("a value was expected"));
    let v = vec![1, 2, 3];
    let i = std::env::args().count() + 9;
    catch("index out of bounds", || v[i]);
    let zero = std::env::args().count() as i32 - 1;
    catch("divide by zero", || 10 / zero);
    let cell = RefCell::new(1);
    catch("RefCell borrowed twice", || {
        let _a = cell.borrow_mut();
        *cell.borrow_mut() += 1;
    });
    let mut map = BTreeMap::new();
    map.insert("k", 1);
    catch("unwrap on a missing key", || map.get("missing").copied().unwrap());
    catch("unreachable!", || -> u8 { unreachable!("state {}", 3) });
}

#[inline(never)]
extern "C" fn cannot_unwind(n: u32) -> u32 {
    if n > 0 {
        panic!("a panic in an extern \"C\" function ({n})");
    }
    n
}

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_default();
    if mode == "abort" {
        println!("std::process::abort");
        std::process::abort();
    }
    if mode == "extern-c" {
        // The panic cannot leave an `extern "C"` function: the runtime
        // reports it and aborts, and catch_unwind never sees it.
        let _guard = Loud("extern-c-guard");
        let r = panic::catch_unwind(|| cannot_unwind(std::env::args().count() as u32));
        println!("not reached: {r:?}");
    }
    if mode == "thread-default" {
        let named = thread::Builder::new().name("named".into()).spawn(|| panic!("named thread panics")).expect("spawn");
        println!("named: {}", named.join().is_err());
        println!("unnamed: {}", thread::spawn(|| panic!("unnamed thread panics")).join().is_err());
        std::process::exit(3);
    }
    println!("std: {} {:?} {:.2} {:>6}|", "text", ["a", "b"], 1.0f64 / 3.0, 42);
    eprintln!("stderr through std");
    install_hook();
    payloads();
    drops();
    threads();
    resume();
    results();
    println!("hook calls: {}", HOOK_CALLS.load(Ordering::SeqCst));
    // The default hook again, for the end.
    let _ = panic::take_hook();
    if mode == "caught" {
        println!("done");
        return;
    }
    let _guard = Loud("main-guard");
    let at = std::env::args().count() * 10;
    println!("about to panic in main");
    panic!("uncaught panic in main at {at}");
}
