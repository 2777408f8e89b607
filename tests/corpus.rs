//! Corpus: real Debian programs nobody here wrote (coreutils, findutils,
//! grep, sed, mawk, tar, gzip, xz, bash, python3, sqlite3, lua5.4, gcc, and
//! the guest JITs luajit and node) run natively and under urun (the engine
//! `URUN_TEST_ENGINE` names, interp by default) in a fixture tree the test makes;
//! stdout, stderr, exit status and terminating signal must be the same. The
//! host is the oracle, as in tests/e2e.rs.
//!
//! Each run (native, urun) gets its own fresh copy of the fixture tree with
//! fixed modes and mtimes, so cases that write (tar, xz, sqlite3, gcc) do not
//! see each other's files, and `ls -la` prints the same thing both times. The
//! environment is fixed: PATH=/usr/bin:/bin, TZ=UTC, LC_ALL=C, HOME = the run
//! directory (also the working directory), TMPDIR = a tmp/ under it.
//!
//! A program missing on the machine is a setup failure, not a skip:
//! scripts/test installs the Debian packages.
//!
//! Knobs (environment):
//!   URUN_CORPUS_FILTER=substr  only the cases whose name contains substr
//!   URUN_CORPUS_JOBS=n         worker threads (default 2)
//!   URUN_CORPUS_TIMEOUT_SCALE=x  multiply every per-case timeout by x
//!   URUN_E2E_BINARY=path       run this instead of the urun cargo built; a
//!                              stand-in such as `#!/bin/sh\nshift 2; exec "$@"`
//!                              checks the cases natively against themselves

mod common;

use common::{compare_runs, run, show, urun, Outcome, TempDir};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// 2020-01-02 03:04:05 UTC: every file, directory and symlink of the fixture.
const FIXED_MTIME: i64 = 1_577_934_245;

const PATH: &str = "/usr/bin:/bin";

struct Case {
    name: &'static str,
    /// Looked up in PATH.
    program: &'static str,
    args: Vec<String>,
    stdin: Vec<u8>,
    /// Extra files written into the run directory next to `tree/`.
    files: Vec<(&'static str, Vec<u8>)>,
    /// Other programs the case starts (fork+exec): missing = setup failure.
    needs: &'static [&'static str],
    /// The exit status the native run must have.
    exit: i32,
    /// Per run (the native and the urun run each get this much).
    timeout: Duration,
}

fn case(name: &'static str, program: &'static str, args: &[&str]) -> Case {
    Case {
        name,
        program,
        args: args.iter().map(|s| s.to_string()).collect(),
        stdin: Vec::new(),
        files: Vec::new(),
        needs: &[],
        exit: 0,
        timeout: Duration::from_secs(60),
    }
}

impl Case {
    fn stdin(mut self, s: impl Into<Vec<u8>>) -> Case {
        self.stdin = s.into();
        self
    }
    fn file(mut self, name: &'static str, s: impl Into<Vec<u8>>) -> Case {
        self.files.push((name, s.into()));
        self
    }
    fn needs(mut self, n: &'static [&'static str]) -> Case {
        self.needs = n;
        self
    }
    fn exit(mut self, code: i32) -> Case {
        self.exit = code;
        self
    }
    fn timeout(mut self, secs: u64) -> Case {
        self.timeout = Duration::from_secs(secs);
        self
    }
}

// ---------------------------------------------------------------- fixture

fn numbers_text() -> String {
    (1..=200).map(|i| format!("{}\n", (i * 7919) % 1000)).collect()
}

const HELLO_C: &str = "#include <stdio.h>\nint main(void) { puts(\"hello, corpus\"); return 0; }\n";

/// The fixture tree: (path under the run dir, contents, mode). Directories
/// end in '/'.
fn fixture_entries() -> Vec<(String, Vec<u8>, u32)> {
    let e = |p: &str, c: &[u8], m: u32| (p.to_string(), c.to_vec(), m);
    vec![
        e("tree/", b"", 0o755),
        e("tree/README.txt", b"corpus fixture\nTODO: nothing; this tree is generated\n", 0o644),
        e("tree/data/", b"", 0o755),
        e("tree/data/words.txt", common::words_text().as_bytes(), 0o644),
        e("tree/data/numbers.txt", numbers_text().as_bytes(), 0o600),
        e("tree/data/empty", b"", 0o644),
        e("tree/src/", b"", 0o750),
        e("tree/src/hello.c", HELLO_C.as_bytes(), 0o644),
        e("tree/src/notes.md", b"# Notes\n\n- TODO: alpha first\n- then bravo\n", 0o644),
        e("tree/src/deep/", b"", 0o755),
        e("tree/src/deep/deeper/", b"", 0o700),
        e("tree/src/deep/deeper/leaf.txt", b"leaf TODO\n", 0o444),
        e("tree/run.sh", b"#!/bin/sh\necho run.sh \"$@\"\n", 0o755),
    ]
}

fn set_mtime(path: &Path) {
    let c = CString::new(path.as_os_str().as_bytes()).expect("no NUL in a fixture path");
    let ts = libc::timespec { tv_sec: FIXED_MTIME, tv_nsec: 0 };
    let times = [ts, ts];
    // SAFETY: c is a valid NUL-terminated path and times points to two
    // timespecs, as utimensat(2) requires; both outlive the call.
    let r = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) };
    assert_eq!(r, 0, "utimensat {}: {}", path.display(), std::io::Error::last_os_error());
}

/// Makes `dir` (which must not exist) a fresh run directory: the fixture
/// tree, the case's extra files, an empty tmp/, every mtime fixed.
fn make_run_dir(dir: &Path, extra: &[(&str, Vec<u8>)]) {
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    let mut paths = Vec::new();
    for (p, contents, mode) in fixture_entries() {
        let path = dir.join(p.trim_end_matches('/'));
        if p.ends_with('/') {
            std::fs::create_dir(&path).expect("fixture mkdir");
        } else {
            std::fs::write(&path, contents).expect("fixture write");
        }
        paths.push((path, mode));
    }
    for (name, contents) in extra {
        let path = dir.join(name);
        std::fs::write(&path, contents).expect("case file write");
        paths.push((path, 0o644));
    }
    std::fs::create_dir(dir.join("tmp")).expect("mkdir tmp");
    paths.push((dir.join("tmp"), 0o755));
    std::os::unix::fs::symlink("data/words.txt", dir.join("tree/link")).expect("symlink");
    // Modes (after writing: a 0o444 file must be written first), then
    // mtimes deepest first so that setting a child does not touch a parent
    // already set (setting a time never changes the parent's mtime anyway).
    for (path, mode) in &paths {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(*mode)).expect("chmod");
    }
    let mut all: Vec<PathBuf> = paths.into_iter().map(|(p, _)| p).collect();
    all.push(dir.join("tree/link"));
    all.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for p in &all {
        set_mtime(p);
    }
    set_mtime(dir);
}

// ---------------------------------------------------------------- cases

const BASH_SCRIPT: &str = r#"set -u
trap 'echo "trap EXIT: status $?"' EXIT
tri() { local n=$1; echo $(( n * (n + 1) / 2 )); }
echo "tri(100) = $(tri 100)"
echo "arith: $(( 7 ** 3 % 10 )) $(( 1 << 20 )) $(( -17 / 5 )) $(( -17 % 5 )) $(( 0x1f | 0100 ))"
upper=$( (echo inner; echo from-stderr >&2) 2>&1 | tr a-z A-Z | sort )
echo "subshell+pipe: $(echo $upper)"
count=0
while read -r w rest; do
    [[ $w == alpha ]] && count=$((count + 1))
done < tree/data/words.txt
echo "alpha lines: $count (grep says $(grep -c '^alpha ' tree/data/words.txt))"
(cd tree/src && echo "in subshell: ${PWD##*/}")
[ "$PWD" = "$HOME" ] && echo "after subshell: back in HOME"
declare -A seen=()
for w in $(cut -d' ' -f1 tree/data/words.txt | head -50); do seen[$w]=$(( ${seen[$w]:-0} + 1 )); done
for k in $(printf '%s\n' "${!seen[@]}" | sort); do printf '%-8s %3d\n' "$k" "${seen[$k]}"; done
arr=(one two "three four"); echo "array: ${#arr[@]} ${arr[2]} ${arr[*]:0:2}"
for ((i = 0; i < 3; i++)); do printf 'loop %d;' "$i"; done; echo
printf -v padded '%05d' 42; echo "printf -v: $padded"
case "tree/run.sh" in *.sh) echo "case: shell script";; *) echo "case: other";; esac
yes | head -n 2; echo "yes | head: PIPESTATUS ${PIPESTATUS[*]} (yes dies by SIGPIPE)"
diff <(sort tree/data/numbers.txt | head -3) <(sort tree/data/numbers.txt | head -3) && echo "process substitution: same"
sleep 0 & wait $!; echo "background job status: $?"
./tree/run.sh a "b c"
cat <<EOF
here-doc: $(( 6 * 7 )) ${arr[0]}
  indented \$literal
EOF
cat <<'EOF'
quoted here-doc: $(not expanded)
EOF
false || echo "false || ok"
exit 3
"#;

const PYTHON_SCRIPT: &str = r#"
import json, re, hashlib, threading, subprocess, multiprocessing, decimal, sys
from concurrent.futures import ThreadPoolExecutor

def work(n):
    h = hashlib.sha256()
    for i in range(n * 50):
        h.update(str(i).encode())
    return n, h.hexdigest()[:16]

with ThreadPoolExecutor(max_workers=4) as ex:
    results = sorted(ex.map(work, range(1, 9)))
print(json.dumps(results))

lock = threading.Lock()
counter = [0]
def inc():
    for _ in range(500):
        with lock:
            counter[0] += 1
ts = [threading.Thread(target=inc) for _ in range(4)]
for t in ts: t.start()
for t in ts: t.join()
print("counter", counter[0])

sys.stdout.flush()
r = subprocess.run(["echo", "x"])
print("echo returned", r.returncode)
r = subprocess.run(["echo", "x"], capture_output=True, text=True)
print("captured", repr(r.stdout), r.returncode)

decimal.getcontext().prec = 40
print("1/7 =", decimal.Decimal(1) / decimal.Decimal(7))
print(re.findall(r"(\w+)=(\d+)", "a=1 bb=22 ccc=333"))
print(json.dumps({"k": [1, 2.5, None, True], "a": "\u00e9"}, sort_keys=True))
print(multiprocessing.current_process().name)
with open("tree/data/words.txt") as f:
    print("words sha256", hashlib.sha256(f.read().encode()).hexdigest())
"#;

fn sqlite_script() -> String {
    let mut s =
        String::from("CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT NOT NULL, grp INTEGER, val REAL);\nBEGIN;\n");
    for i in 1..=100 {
        s.push_str(&format!(
            "INSERT INTO t(name, grp, val) VALUES ('item{:03}', {}, {});\n",
            (i * 37) % 100,
            i % 7,
            i as f64 * 1.5
        ));
    }
    s.push_str(
        "COMMIT;
CREATE INDEX t_grp ON t(grp);
SELECT count(*), sum(val), avg(val), min(name), max(name) FROM t;
SELECT grp, count(*), total(val), group_concat(id, ',') FROM t WHERE id % 10 = 0 GROUP BY grp ORDER BY grp;
SELECT name, val FROM t WHERE grp = 3 ORDER BY val DESC LIMIT 5;
UPDATE t SET val = val * 2 WHERE grp = 0;
DELETE FROM t WHERE id > 95;
SELECT count(*), printf('%.2f', sum(val)) FROM t;
PRAGMA integrity_check;
",
    );
    s
}

const LUA_SCRIPT: &str = r##"
-- strings
local s = "The quick brown fox jumps over the lazy dog"
print(s:upper(), #s, s:reverse():sub(1, 9))
print((s:gsub("(%w+)", function(w) return w:sub(1, 1):upper() .. w:sub(2) end)))
local n = 0
for w in s:gmatch("%a+") do n = n + #w end
print("letters", n, string.format("%5.2f|%-6s|%x|%q", math.pi, "ab", 255, "a\nb"))
print(("ab"):rep(3, "-"), utf8.char(233, 8364), utf8.len("h\u{e9}llo"))
-- tables
local t = {}
for i = 1, 20 do t[#t + 1] = (i * 37) % 23 end
table.sort(t, function(a, b) return a > b end)
print(table.concat(t, ","))
local m = setmetatable({}, { __index = function(_, k) return k * 2 end })
print("meta", m[21], rawget(m, 21))
local keys = {}
local d = { zeta = 1, alpha = 2, mid = 3 }
for k in pairs(d) do keys[#keys + 1] = k end
table.sort(keys)
print(table.concat(keys, " "), select("#", table.unpack({ 1, 2, 3 })))
-- closures
local function counter(step)
  local c = 0
  return function() c = c + step; return c end
end
local c1, c2 = counter(1), counter(10)
c1(); c1(); c2()
print("closures", c1(), c2())
-- coroutines
local fib = coroutine.wrap(function()
  local a, b = 0, 1
  while true do coroutine.yield(a); a, b = b, a + b end
end)
local fibs = {}
for _ = 1, 15 do fibs[#fibs + 1] = fib() end
print("fib", table.concat(fibs, " "))
local co = coroutine.create(function(x) local y = coroutine.yield(x + 1); error("boom " .. y) end)
print(coroutine.resume(co, 1))
print(coroutine.resume(co, 5))
print(coroutine.status(co))
-- numbers and errors
print(7 // 2, 7 / 2, 7 % -3, 2 ^ 10, math.maxinteger, 1e300 * 1e10, math.tointeger(3.0))
local ok, e = pcall(function() error({ code = 42 }) end)
print(ok, type(e), e.code)
print(select(2, pcall(error, "msg", 0)))
local f = io.open("tree/data/numbers.txt")
local sum = 0
for line in f:lines() do sum = sum + tonumber(line) end
f:close()
print("sum of numbers.txt", sum)
"##;

const GCC_PROG: &str = r#"#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int cmp(const void *a, const void *b) {
    unsigned x = *(const unsigned *)a, y = *(const unsigned *)b;
    return (x > y) - (x < y);
}

static unsigned long fib(unsigned n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }

int main(int argc, char **argv) {
    enum { N = 20000 };
    static char sieve[N];
    int primes = 0;
    for (int i = 2; i < N; i++) {
        if (!sieve[i]) {
            primes++;
            for (int j = 2 * i; j < N; j += i) sieve[j] = 1;
        }
    }
    unsigned *v = malloc(5000 * sizeof *v);
    unsigned x = 12345;
    for (int i = 0; i < 5000; i++) { x = x * 1103515245u + 12345u; v[i] = x >> 8; }
    qsort(v, 5000, sizeof *v, cmp);
    unsigned long sum = 0;
    for (int i = 0; i < 5000; i++) sum = sum * 31 + v[i];
    char buf[64];
    snprintf(buf, sizeof buf, "%s-%d", argc > 1 ? argv[1] : "none", argc);
    printf("primes below %d: %d\n", N, primes);
    printf("sorted: min %u max %u hash %lu\n", v[0], v[4999], sum);
    printf("fib(25) = %lu\n", fib(25));
    printf("sqrt(2) = %.12f, exp(1) = %.12f\n", sqrt(2.0), exp(1.0));
    printf("%s %zu\n", buf, strlen(buf));
    free(v);
    return 0;
}
"#;

const TAR_SCRIPT: &str = r#"set -eu
mkdir out
tar --sort=name --mtime=@1577934245 --owner=0 --group=0 --numeric-owner -cf - tree | gzip -n -9 > tree.tar.gz
sha256sum tree.tar.gz
gzip -t tree.tar.gz && echo "gzip -t ok"
gzip -l tree.tar.gz
tar -tvzf tree.tar.gz
tar -xzf tree.tar.gz -C out
diff -r tree out/tree && echo "diff -r: same"
cmp tree/data/words.txt out/tree/data/words.txt && echo "cmp: same"
readlink out/tree/link
tar -czf again.tgz -C out tree && tar -tzf again.tgz | sort | sha256sum
"#;

const XZ_SCRIPT: &str = r#"set -eu
xz -9 -k -c tree/data/words.txt > words.xz
sha256sum words.xz
xz -t words.xz && echo "xz -t ok"
xz -l words.xz
xz -d -c words.xz | cmp - tree/data/words.txt && echo "round trip: same"
cat tree/data/numbers.txt tree/README.txt | xz -9 | xz -d | sha256sum
"#;

const AWK_SCRIPT: &str = r#"
{ count[$1]++; total += length($0); if ($2 > max) max = $2 }
NR % 500 == 0 { printf "%5d %-8s %s\n", NR, $1, toupper($3) }
END {
    for (w in count) print w, count[w] | "sort"
    close("sort")
    printf "lines %d, chars %d, max %s, avg %.3f\n", NR, total, max, total / NR
    n = split("a:b:c:d", parts, ":"); print n, parts[4], substr("corpus", 2, 3), index("hello", "ll")
    s = "foo bar foo"; gsub(/foo/, "baz", s); print s, sprintf("%c%c", 72, 105), 2 ^ 10, int(-3.7)
}
"#;

/// LuaJIT: loops hot enough to be traced and compiled to machine code (a
/// guest JIT writing and running code), FFI calls into libc, and the
/// interpreter's fallbacks.
const LUAJIT_SCRIPT: &str = r##"
local t = {}
for i = 1, 200000 do t[i] = (i * 7919) % 1000003 end
local s = 0
for i = 1, #t do if t[i] % 3 == 0 then s = s + t[i] else s = s - (t[i] % 17) end end
print("sum", s)
local parts = {}
for i = 1, 2000 do parts[#parts + 1] = string.format("%x", i * i) end
print("concat", #table.concat(parts, ","), parts[1999])
local function fib(n) if n < 2 then return n end return fib(n - 1) + fib(n - 2) end
print("fib", fib(25))
local ffi = require("ffi")
ffi.cdef[[ int abs(int); size_t strlen(const char *); ]]
print("ffi", ffi.C.abs(-42), tonumber(ffi.C.strlen("corpus")))
local x = 0.5
for i = 1, 100000 do x = x * 1.0000001 + math.sin(i) * 1e-9 end
print(string.format("float %.12f", x))
local ok, err = pcall(function() error({code = 7}) end)
print("pcall", ok, err.code)
print("jit", jit.status() and "on" or "off", jit.arch)
"##;

/// node: V8 compiles hot JavaScript to machine code in four worker threads
/// at once (each its own isolate), which message the main thread back.
const NODE_WORKERS_SCRIPT: &str = r##"
const { Worker, isMainThread, parentPort, workerData } = require('node:worker_threads');
if (isMainThread) {
  const n = 4;
  let done = 0; const results = new Array(n);
  for (let i = 0; i < n; i++) {
    const w = new Worker(__filename, { workerData: i });
    w.on('message', (m) => {
      results[i] = m;
      if (++done === n) {
        console.log('results', results.join(' '));
        const f = (x) => x < 2 ? x : f(x - 1) + f(x - 2);
        console.log('main fib', f(22));
      }
    });
    w.on('error', (e) => { console.error('worker error', e); process.exitCode = 1; });
  }
} else {
  let s = 0;
  for (let k = 0; k < 2000000; k++) s = (s * 31 + k * (workerData + 3)) % 1000003;
  const a = Array.from({ length: 5000 }, (_, j) => (j * 7919 + workerData) % 10007).sort((x, y) => x - y);
  parentPort.postMessage(`${workerData}:${s}:${a[2500]}:${JSON.stringify({ k: [workerData, 'x'] })}`);
}
"##;

fn cases() -> Vec<Case> {
    let sh = |name, script: &str| case(name, "sh", &["-c", script]);
    vec![
        // The long ones first, so that they overlap the short ones.
        case("gcc-O2", "sh", &["-c", "gcc -O2 -Wall -o prog prog.c -lm && ./prog arg && echo compiled-ok"])
            .file("prog.c", GCC_PROG)
            .needs(&["gcc", "as", "ld"])
            .timeout(600),
        case("python3", "python3", &["-c", PYTHON_SCRIPT])
            .needs(&["echo"])
            .timeout(300),
        case("sqlite3", "sh", &["-c", "sqlite3 test.db && sqlite3 -header -column test.db 'SELECT grp, count(*) AS n, sum(val) AS s FROM t GROUP BY grp ORDER BY grp'"])
            .stdin(sqlite_script())
            .needs(&["sqlite3"])
            .timeout(120),
        case("lua5.4", "lua5.4", &["-e", LUA_SCRIPT]).timeout(60),
        // Guest JITs: code written and run at run time, in threads.
        case("node-workers", "node", &["workers.js"])
            .file("workers.js", NODE_WORKERS_SCRIPT)
            .timeout(300),
        case("luajit", "luajit", &["-e", LUAJIT_SCRIPT]).timeout(60),
        case("tar-gzip", "bash", &["-c", TAR_SCRIPT])
            .needs(&["tar", "gzip", "diff", "cmp", "sha256sum", "mkdir", "readlink", "sort"])
            .timeout(180),
        case("xz-9", "bash", &["-c", XZ_SCRIPT])
            .needs(&["xz", "cmp", "sha256sum", "cat"])
            .timeout(180),
        case("bash", "bash", &["-c", BASH_SCRIPT])
            .needs(&["tr", "sort", "grep", "cut", "head", "diff", "sleep", "cat"])
            .exit(3)
            .timeout(120),
        case("ls-la", "ls", &["-laR", "--time-style=long-iso", "tree"]),
        case("cat", "cat", &["-n", "tree/README.txt", "-", "tree/link", "tree/data/empty"])
            .stdin("from stdin\n"),
        case("sort", "sort", &["-t", " ", "-k2,2", "-k1,1r", "tree/data/words.txt"]),
        case("sort-n-u", "sort", &["-n", "-r", "-u", "tree/data/numbers.txt"]),
        case("sha256sum", "sha256sum", &["tree/data/words.txt", "tree/data/numbers.txt", "tree/link", "tree/data/empty"]),
        sh("find", "find . -print | sort; echo; find tree -type f -name '*.txt' -print | sort; find tree -type l -print; find tree -type d -perm 700")
            .needs(&["find", "sort"]),
        case("grep-r", "grep", &["-rn", "TODO", "."]),
        sh("grep-misc", "grep -c -E '^(alpha|bravo) [0-9a-f]{8}' tree/data/words.txt; grep -v -i ALPHA tree/data/words.txt | grep -o 'line[0-9]*7$' | tail -3; grep -rl --include='*.md' TODO tree; grep -q nomatch tree/README.txt; echo \"status $?\"")
            .needs(&["grep", "tail"]),
        case("sed", "sed", &["-E", "-e", "s/^(alpha|bravo) ([0-9a-f]+)/\\2=\\1/", "-e", "/charlie/d", "-e", "y/abc/ABC/", "-e", "$a\\END", "tree/data/words.txt"]),
        sh("sed-i", "cp tree/data/numbers.txt n.txt && sed -i.bak -e '1~3d' -e 's/0/zero/g' n.txt && cat n.txt && cmp n.txt.bak tree/data/numbers.txt && echo backup-same")
            .needs(&["sed", "cp", "cat", "cmp"]),
        case("awk", "awk", &[AWK_SCRIPT, "tree/data/words.txt"]).needs(&["sort"]),
    ]
}

// ---------------------------------------------------------------- running

/// Where `prog` is in PATH. Both runs get this absolute path (urun takes a
/// path, not a name to look up), so argv[0] is the same in both.
fn in_path(prog: &str) -> Option<PathBuf> {
    PATH.split(':')
        .map(|d| Path::new(d).join(prog))
        .find(|p| std::fs::metadata(p).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false))
}

fn command(case: &Case, under_urun: bool, dir: &Path) -> Command {
    let program = in_path(case.program).expect("checked before running");
    let mut cmd = if under_urun {
        let mut c = Command::new(urun());
        c.arg("--engine").arg(common::engine_under_test()).args(common::check_args()).arg(program);
        c
    } else {
        Command::new(program)
    };
    cmd.args(&case.args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", PATH)
        .env("TZ", "UTC")
        .env("LC_ALL", "C")
        .env("HOME", dir)
        .env("TMPDIR", dir.join("tmp"));
    cmd
}

fn check(case: &Case, native: &Outcome, urun: &Outcome) -> Vec<String> {
    let mut problems = Vec::new();
    if native.spawn_error.is_some() || native.timed_out || native.code != Some(case.exit) {
        problems.push(format!(
            "native run: expected exit {}, got {} (the case or the machine is broken); stderr: {}",
            case.exit,
            native.status_text(),
            show(&native.stderr, 400)
        ));
    }
    problems.extend(compare_runs(native, urun));
    problems
}

struct CaseResult {
    name: &'static str,
    native_secs: f64,
    urun_secs: f64,
    problems: Vec<String>,
}

fn run_cases(cases: &[Case], jobs: usize, scale: f64, root: &Path) -> Vec<CaseResult> {
    let next = AtomicUsize::new(0);
    let results = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(case) = cases.get(i) else { break };
                let timeout = case.timeout.mul_f64(scale);
                let mut outcomes = Vec::new();
                for (under_urun, tag) in [(false, "native"), (true, "urun")] {
                    let dir = root.join(case.name).join(tag);
                    make_run_dir(&dir, &case.files);
                    outcomes.push(run(&mut command(case, under_urun, &dir), &case.stdin, timeout));
                }
                let (native, urun) = (&outcomes[0], &outcomes[1]);
                let problems = check(case, native, urun);
                let r = CaseResult {
                    name: case.name,
                    native_secs: native.elapsed.as_secs_f64(),
                    urun_secs: urun.elapsed.as_secs_f64(),
                    problems,
                };
                let times = format!(
                    "native {:.3} s, urun {:.3} s, timeout {} s",
                    r.native_secs,
                    r.urun_secs,
                    timeout.as_secs()
                );
                if r.problems.is_empty() {
                    println!("PASS {} ({times})", case.name);
                } else {
                    let mut msg = format!("FAIL {} ({times})", case.name);
                    for p in &r.problems {
                        msg.push_str(&format!("\n    - {p}"));
                    }
                    println!("{msg}");
                }
                results.lock().unwrap().push(r);
            });
        }
    });
    results.into_inner().unwrap()
}

#[test]
fn corpus_native_vs_urun() {
    let root = TempDir::new("corpus");
    let mut cases = cases();
    if let Ok(filter) = std::env::var("URUN_CORPUS_FILTER") {
        cases.retain(|c| c.name.contains(&filter));
        println!("URUN_CORPUS_FILTER={filter}: {} cases selected", cases.len());
    }

    let mut setup_problems = Vec::new();
    for c in &cases {
        for prog in std::iter::once(&c.program).chain(c.needs) {
            if in_path(prog).is_none() {
                setup_problems
                    .push(format!("{}: `{prog}` is not in {PATH}; scripts/test installs the Debian packages", c.name));
            }
        }
    }
    if !setup_problems.is_empty() {
        for p in &setup_problems {
            println!("SETUP FAIL {p}");
        }
        panic!("corpus setup: {}", setup_problems.join("; "));
    }

    let jobs = std::env::var("URUN_CORPUS_JOBS").ok().and_then(|v| v.parse().ok()).unwrap_or(2usize).max(1);
    let scale = std::env::var("URUN_CORPUS_TIMEOUT_SCALE").ok().and_then(|v| v.parse().ok()).unwrap_or(1.0f64);
    println!("corpus: {} cases, {jobs} workers, urun = {}", cases.len(), urun());
    let start = std::time::Instant::now();
    let results = run_cases(&cases, jobs, scale, root.path());
    let wall = start.elapsed().as_secs_f64();

    println!("corpus times (s):");
    println!("  {:<12} {:>9} {:>9}  result", "case", "native", "urun");
    let mut failed = Vec::new();
    for c in &cases {
        let r = results.iter().find(|r| r.name == c.name).expect("every case ran");
        println!(
            "  {:<12} {:>9.3} {:>9.3}  {}",
            r.name,
            r.native_secs,
            r.urun_secs,
            if r.problems.is_empty() { "PASS" } else { "FAIL" }
        );
        if !r.problems.is_empty() {
            failed.push(r.name);
        }
    }
    println!("corpus summary: {} passed, {} failed, {wall:.1} s wall", cases.len() - failed.len(), failed.len());
    if !failed.is_empty() {
        panic!("{} of {} corpus cases failed: {}", failed.len(), cases.len(), failed.join(", "));
    }
}
