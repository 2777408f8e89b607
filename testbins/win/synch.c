/* Windows-only: threads and synchronisation objects where the result is
 * what Windows documents (no Linux twin to compare with): bad handles,
 * timeouts, WaitForMultipleObjects, mutex ownership and abandonment,
 * semaphore limits, suspended threads, InitOnce, WaitOnAddress, TLS
 * callbacks, FLS callbacks, the image's static TLS, TlsAlloc expansion
 * slots, SLists. tests/pe.rs checks the output line by line. */
#include <windows.h>
#include <process.h>
#include <stdio.h>

#define CHECK(name, expr) printf("%s: %lld\n", name, (long long)(expr))

/* TLS callbacks: counted per reason. */
static volatile LONG attach_process, attach_thread, detach_thread;
static void NTAPI tls_cb(PVOID base, DWORD reason, PVOID reserved) {
    (void)base;
    (void)reserved;
    if (reason == DLL_PROCESS_ATTACH) InterlockedIncrement(&attach_process);
    if (reason == DLL_THREAD_ATTACH) InterlockedIncrement(&attach_thread);
    if (reason == DLL_THREAD_DETACH) InterlockedIncrement(&detach_thread);
}
__attribute__((section(".CRT$XLB"), used)) PIMAGE_TLS_CALLBACK tls_cb_ptr = tls_cb;

/* A variable in the image's own TLS template (.tls), reached as compilers
 * for MSVC do: ThreadLocalStoragePointer[_tls_index] + offset. */
extern char _tls_start;
extern ULONG _tls_index;
__attribute__((section(".tls$AAB"))) int tls_static = 1234;
static int *my_tls_static(void) {
    char **array = (char **)__readgsqword(0x58);
    return (int *)(array[_tls_index] + ((char *)&tls_static - &_tls_start));
}

static HANDLE mutex;
static DWORD WINAPI take_mutex_and_leave(void *arg) {
    (void)arg;
    return WaitForSingleObject(mutex, INFINITE);
}

static volatile LONG started;
static DWORD WINAPI set_started(void *arg) {
    started = 1;
    return (DWORD)(size_t)arg;
}

static volatile DWORD reported_id;
static HANDLE dup_of_self;
static DWORD WINAPI report_id(void *arg) {
    (void)arg;
    reported_id = GetCurrentThreadId();
    DuplicateHandle(GetCurrentProcess(), GetCurrentThread(), GetCurrentProcess(), &dup_of_self, 0, FALSE,
                    DUPLICATE_SAME_ACCESS);
    Sleep(20);
    return 77;
}

static INIT_ONCE once = INIT_ONCE_STATIC_INIT;
static volatile LONG once_runs;
static BOOL CALLBACK once_fn(PINIT_ONCE o, PVOID param, PVOID *ctx) {
    (void)o;
    InterlockedIncrement(&once_runs);
    Sleep(10);
    *ctx = param;
    return TRUE;
}
static volatile LONG once_ok;
static DWORD WINAPI run_once(void *arg) {
    (void)arg;
    void *ctx = NULL;
    if (InitOnceExecuteOnce(&once, once_fn, (PVOID)0x5550, &ctx) && ctx == (void *)0x5550) InterlockedIncrement(&once_ok);
    return 0;
}

static volatile LONG address_value;
static DWORD WINAPI wait_address(void *arg) {
    (void)arg;
    LONG zero = 0;
    while (address_value == 0) WaitOnAddress(&address_value, &zero, sizeof zero, INFINITE);
    return (DWORD)address_value;
}

static DWORD fls_index;
static volatile LONG fls_seen;
static void WINAPI fls_cb(void *v) { InterlockedExchange(&fls_seen, (LONG)(size_t)v); }
static DWORD tls_index_big;
static volatile LONG tls_checks;
static DWORD WINAPI per_thread_slots(void *arg) {
    int n = (int)(size_t)arg;
    int *s = my_tls_static();
    int ok = *s == 1234;
    *s = 5000 + n;
    ok = ok && TlsGetValue(tls_index_big) == NULL;
    TlsSetValue(tls_index_big, (void *)(size_t)(900 + n));
    FlsSetValue(fls_index, (void *)(size_t)(700 + n));
    Sleep(5);
    ok = ok && *my_tls_static() == 5000 + n && TlsGetValue(tls_index_big) == (void *)(size_t)(900 + n);
    if (ok) InterlockedIncrement(&tls_checks);
    return 0;
}

static unsigned __stdcall end_with_42(void *arg) {
    (void)arg;
    _endthreadex(42);
    return 1;
}

static SRWLOCK srw = SRWLOCK_INIT;
static CRITICAL_SECTION cs;
static DWORD WINAPI try_locks(void *arg) {
    (void)arg;
    DWORD r = 0;
    if (TryAcquireSRWLockShared(&srw)) {
        r |= 1;
        ReleaseSRWLockShared(&srw);
    }
    if (TryAcquireSRWLockExclusive(&srw)) {
        r |= 2;
        ReleaseSRWLockExclusive(&srw);
    }
    if (TryEnterCriticalSection(&cs)) {
        r |= 4;
        LeaveCriticalSection(&cs);
    }
    return r;
}

static DWORD exit_code(HANDLE h) {
    DWORD c = 12345;
    WaitForSingleObject(h, INFINITE);
    GetExitCodeThread(h, &c);
    return c;
}

int main(void) {
    /* Bad handles. */
    HANDLE bogus = (HANDLE)(ULONG_PTR)0x7654320;
    SetLastError(0);
    CHECK("wait bogus", (LONG)WaitForSingleObject(bogus, 0));
    CHECK("wait bogus error", GetLastError());
    HANDLE two[2] = {CreateEventA(NULL, TRUE, TRUE, NULL), bogus};
    CHECK("wait multiple with a bogus one", (LONG)WaitForMultipleObjects(2, two, FALSE, 0));
    CHECK("error", GetLastError());
    CHECK("wait multiple of none", (LONG)WaitForMultipleObjects(0, two, FALSE, 0));
    CHECK("error", GetLastError());
    CHECK("close bogus", CloseHandle(bogus));
    CHECK("error", GetLastError());
    CHECK("set bogus", SetEvent(bogus));
    DWORD code = 0;
    CHECK("exit code of bogus", GetExitCodeThread(bogus, &code));

    /* Events. */
    HANDLE ev = CreateEventA(NULL, FALSE, FALSE, NULL);
    CHECK("auto event unset", WaitForSingleObject(ev, 0));
    SetEvent(ev);
    CHECK("auto event set", WaitForSingleObject(ev, 0));
    CHECK("auto event reset by the wait", WaitForSingleObject(ev, 0));
    DWORD t0 = GetTickCount();
    CHECK("timed wait", WaitForSingleObject(ev, 50));
    CHECK("waited at least 40 ms", GetTickCount() - t0 >= 40);
    HANDLE man = CreateEventA(NULL, TRUE, FALSE, NULL);
    HANDLE pair[2] = {man, ev};
    SetEvent(ev);
    CHECK("any of (unset, set)", WaitForMultipleObjects(2, pair, FALSE, 0));
    SetEvent(ev);
    CHECK("all of (unset, set)", WaitForMultipleObjects(2, pair, TRUE, 0));
    SetEvent(man);
    CHECK("all of (set, set)", WaitForMultipleObjects(2, pair, TRUE, 0));
    CHECK("manual stays set", WaitForSingleObject(man, 0));
    CHECK("auto was taken", WaitForSingleObject(ev, 0));
    ResetEvent(man);
    CHECK("manual reset", WaitForSingleObject(man, 0));
    HANDLE named1 = CreateEventA(NULL, TRUE, FALSE, "urun-test-event");
    HANDLE named2 = CreateEventA(NULL, TRUE, FALSE, "urun-test-event");
    CHECK("named again: ERROR_ALREADY_EXISTS", GetLastError());
    SetEvent(named1);
    CHECK("named events are one", WaitForSingleObject(named2, 0));
    CloseHandle(named1);
    CloseHandle(named2);

    /* Mutexes. */
    mutex = CreateMutexA(NULL, TRUE, NULL);
    CHECK("owned mutex, recursive wait", WaitForSingleObject(mutex, 0));
    CHECK("release", ReleaseMutex(mutex));
    CHECK("release", ReleaseMutex(mutex));
    CHECK("release unowned", ReleaseMutex(mutex));
    CHECK("error", GetLastError());
    HANDLE th = CreateThread(NULL, 0, take_mutex_and_leave, NULL, 0, NULL);
    CHECK("thread took the mutex", exit_code(th));
    CloseHandle(th);
    CHECK("abandoned", WaitForSingleObject(mutex, 0));
    CHECK("then owned", WaitForSingleObject(mutex, 0));
    ReleaseMutex(mutex);
    ReleaseMutex(mutex);

    /* Semaphores. */
    HANDLE sem = CreateSemaphoreA(NULL, 0, 2, NULL);
    LONG prev = -1;
    CHECK("post past the maximum", ReleaseSemaphore(sem, 3, &prev));
    CHECK("error", GetLastError());
    CHECK("post 2", ReleaseSemaphore(sem, 2, &prev));
    CHECK("previous", prev);
    CHECK("take", WaitForSingleObject(sem, 0));
    CHECK("take", WaitForSingleObject(sem, 0));
    CHECK("none left", WaitForSingleObject(sem, 0));
    CHECK("bad maximum", (LONG_PTR)CreateSemaphoreA(NULL, 3, 2, NULL));

    /* A suspended thread, exit codes, thread ids, a duplicated handle. */
    th = CreateThread(NULL, 0, set_started, (void *)9, CREATE_SUSPENDED, NULL);
    Sleep(20);
    CHECK("suspended has not run", started);
    GetExitCodeThread(th, &code);
    CHECK("still active", code);
    CHECK("wait times out", WaitForSingleObject(th, 10));
    CHECK("resume", ResumeThread(th));
    CHECK("exit code", exit_code(th));
    CHECK("ran", started);
    CloseHandle(th);
    DWORD tid = 0;
    th = CreateThread(NULL, 0, report_id, NULL, 0, &tid);
    Sleep(5);
    while (!dup_of_self) Sleep(1);
    CHECK("duplicated handle waits for the thread", WaitForSingleObject(dup_of_self, INFINITE));
    CHECK("ids agree", tid == reported_id && GetThreadId(th) == tid && tid != GetCurrentThreadId());
    CHECK("exit code", exit_code(th));
    CloseHandle(th);
    CloseHandle(dup_of_self);
    HANDLE h42 = (HANDLE)_beginthreadex(NULL, 0, end_with_42, NULL, 0, NULL);
    CHECK("_endthreadex", exit_code(h42));
    CloseHandle(h42);

    /* InitOnce from several threads. */
    HANDLE ts[4];
    for (int i = 0; i < 4; i++) ts[i] = CreateThread(NULL, 0, run_once, NULL, 0, NULL);
    CHECK("wait for all four", WaitForMultipleObjects(4, ts, TRUE, INFINITE));
    for (int i = 0; i < 4; i++) CloseHandle(ts[i]);
    CHECK("once ran", once_runs);
    CHECK("every caller saw it done", once_ok);

    /* WaitOnAddress. */
    LONG zero = 0;
    CHECK("wait on address times out", WaitOnAddress(&address_value, &zero, sizeof zero, 10));
    CHECK("error", GetLastError());
    LONG other = 1;
    CHECK("value differs: returns at once", WaitOnAddress(&address_value, &other, sizeof other, INFINITE));
    th = CreateThread(NULL, 0, wait_address, NULL, 0, NULL);
    Sleep(20);
    address_value = 31;
    WakeByAddressSingle((PVOID)&address_value);
    CHECK("woken with", exit_code(th));
    CloseHandle(th);

    /* Per-thread slots, FLS callbacks, TLS callbacks. */
    DWORD small[70];
    for (int i = 0; i < 70; i++) small[i] = TlsAlloc();
    tls_index_big = small[69];
    CHECK("70th TLS index past the TEB's 64", tls_index_big >= 64);
    fls_index = FlsAlloc(fls_cb);
    LONG before_attach = attach_thread, before_detach = detach_thread;
    for (int i = 0; i < 3; i++) ts[i] = CreateThread(NULL, 0, per_thread_slots, (void *)(size_t)i, 0, NULL);
    WaitForMultipleObjects(3, ts, TRUE, INFINITE);
    for (int i = 0; i < 3; i++) CloseHandle(ts[i]);
    CHECK("static TLS, TLS slots per thread", tls_checks);
    CHECK("main's static TLS untouched", *my_tls_static());
    CHECK("FLS callback got a thread's value", fls_seen >= 700 && fls_seen <= 702);
    CHECK("thread attach callbacks", attach_thread - before_attach);
    CHECK("thread detach callbacks", detach_thread - before_detach);
    CHECK("process attach callbacks", attach_process);
    FlsSetValue(fls_index, (void *)123);
    CHECK("FlsFree runs the callback", FlsFree(fls_index) && fls_seen == 123);
    CHECK("free a bogus TLS index", TlsFree(5000));
    CHECK("error", GetLastError());
    CHECK("free a TLS index", TlsFree(small[3]));

    /* Try-locks from another thread. */
    InitializeCriticalSection(&cs);
    AcquireSRWLockShared(&srw);
    th = CreateThread(NULL, 0, try_locks, NULL, 0, NULL);
    CHECK("shared held: shared yes, exclusive no, cs free", exit_code(th));
    CloseHandle(th);
    ReleaseSRWLockShared(&srw);
    AcquireSRWLockExclusive(&srw);
    EnterCriticalSection(&cs);
    th = CreateThread(NULL, 0, try_locks, NULL, 0, NULL);
    CHECK("exclusive and cs held: nothing", exit_code(th));
    CloseHandle(th);
    CHECK("cs owner is this thread", (DWORD)(ULONG_PTR)cs.OwningThread == GetCurrentThreadId());
    CHECK("cs recursion", cs.RecursionCount);
    CONDITION_VARIABLE cv = CONDITION_VARIABLE_INIT;
    CHECK("condition variable timeout", SleepConditionVariableCS(&cv, &cs, 10));
    CHECK("error", GetLastError());
    CHECK("cs still held after", (DWORD)(ULONG_PTR)cs.OwningThread == GetCurrentThreadId());
    LeaveCriticalSection(&cs);
    ReleaseSRWLockExclusive(&srw);
    DeleteCriticalSection(&cs);

    /* SLists. */
    static SLIST_HEADER head __attribute__((aligned(16)));
    static struct {
        SLIST_ENTRY e;
        int v;
    } items[3] __attribute__((aligned(16)));
    InitializeSListHead(&head);
    for (int i = 0; i < 3; i++) {
        items[i].v = i + 1;
        InterlockedPushEntrySList(&head, &items[i].e);
    }
    CHECK("slist depth", QueryDepthSList(&head));
    int order = 0;
    for (PSLIST_ENTRY e; (e = InterlockedPopEntrySList(&head));) order = order * 10 + ((int *)(e + 1))[0];
    CHECK("popped in LIFO order", order);
    return 0;
}
