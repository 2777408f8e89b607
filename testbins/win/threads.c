/* Threads with deterministic output: the same source built for Linux
 * (pthreads) and for Windows (CreateThread, critical sections, events,
 * SRW locks and condition variables, TlsAlloc), compared by tests/pe.rs.
 *
 *   threads            counter, exit codes, producer/consumer, TLS, gate
 *   threads exit N     main returns N while workers still run
 *   threads exitthread main ends only itself; a worker ends the process */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>

#ifdef _WIN32
#include <windows.h>
typedef HANDLE thread_t;
typedef DWORD(WINAPI *thread_fn)(void *);
#define THREAD_FN(name) DWORD WINAPI name(void *arg)
static thread_t thread_start(thread_fn f, void *arg) { return CreateThread(NULL, 0, f, arg, 0, NULL); }
static unsigned thread_join(thread_t t) {
    DWORD code = 0;
    if (WaitForSingleObject(t, INFINITE) != WAIT_OBJECT_0) return 9999;
    GetExitCodeThread(t, &code);
    CloseHandle(t);
    return code;
}
typedef CRITICAL_SECTION lock_t;
static void lock_init(lock_t *l) { InitializeCriticalSection(l); }
static void lock_take(lock_t *l) { EnterCriticalSection(l); }
static void lock_drop(lock_t *l) { LeaveCriticalSection(l); }
/* The queue uses an SRW lock and condition variables. */
typedef SRWLOCK qlock_t;
typedef CONDITION_VARIABLE cond_t;
static void qlock_init(qlock_t *l) { InitializeSRWLock(l); }
static void qlock_take(qlock_t *l) { AcquireSRWLockExclusive(l); }
static void qlock_drop(qlock_t *l) { ReleaseSRWLockExclusive(l); }
static void cond_init(cond_t *c) { InitializeConditionVariable(c); }
static void cond_wait(cond_t *c, qlock_t *l) { SleepConditionVariableSRW(c, l, INFINITE, 0); }
static void cond_signal(cond_t *c) { WakeConditionVariable(c); }
static void cond_broadcast(cond_t *c) { WakeAllConditionVariable(c); }
/* A manual-reset event is the start gate. */
typedef HANDLE gate_t;
static void gate_init(gate_t *g) { *g = CreateEventA(NULL, TRUE, FALSE, NULL); }
static void gate_open(gate_t *g) { SetEvent(*g); }
static void gate_wait(gate_t *g) { WaitForSingleObject(*g, INFINITE); }
typedef DWORD key_t_;
static key_t_ key_new(void) { return TlsAlloc(); }
static void key_set(key_t_ k, void *v) { TlsSetValue(k, v); }
static void *key_get(key_t_ k) { return TlsGetValue(k); }
static void nap(int ms) { Sleep(ms); }
static void yield(void) { SwitchToThread(); }
static void end_this_thread(void) { ExitThread(0); }
#else
#include <pthread.h>
#include <sched.h>
#include <unistd.h>
#include <stdint.h>
typedef pthread_t thread_t;
typedef void *(*thread_fn)(void *);
#define THREAD_FN(name) void *name(void *arg)
static thread_t thread_start(thread_fn f, void *arg) {
    pthread_t t;
    pthread_create(&t, NULL, f, arg);
    return t;
}
static unsigned thread_join(thread_t t) {
    void *code = NULL;
    pthread_join(t, &code);
    return (unsigned)(uintptr_t)code;
}
typedef pthread_mutex_t lock_t;
static void lock_init(lock_t *l) {
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_settype(&a, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(l, &a);
}
static void lock_take(lock_t *l) { pthread_mutex_lock(l); }
static void lock_drop(lock_t *l) { pthread_mutex_unlock(l); }
typedef pthread_mutex_t qlock_t;
typedef pthread_cond_t cond_t;
static void qlock_init(qlock_t *l) { pthread_mutex_init(l, NULL); }
static void qlock_take(qlock_t *l) { pthread_mutex_lock(l); }
static void qlock_drop(qlock_t *l) { pthread_mutex_unlock(l); }
static void cond_init(cond_t *c) { pthread_cond_init(c, NULL); }
static void cond_wait(cond_t *c, qlock_t *l) { pthread_cond_wait(c, l); }
static void cond_signal(cond_t *c) { pthread_cond_signal(c); }
static void cond_broadcast(cond_t *c) { pthread_cond_broadcast(c); }
typedef struct {
    pthread_mutex_t m;
    pthread_cond_t c;
    int open;
} gate_t;
static void gate_init(gate_t *g) {
    pthread_mutex_init(&g->m, NULL);
    pthread_cond_init(&g->c, NULL);
    g->open = 0;
}
static void gate_open(gate_t *g) {
    pthread_mutex_lock(&g->m);
    g->open = 1;
    pthread_cond_broadcast(&g->c);
    pthread_mutex_unlock(&g->m);
}
static void gate_wait(gate_t *g) {
    pthread_mutex_lock(&g->m);
    while (!g->open) pthread_cond_wait(&g->c, &g->m);
    pthread_mutex_unlock(&g->m);
}
typedef pthread_key_t key_t_;
static key_t_ key_new(void) {
    pthread_key_t k;
    pthread_key_create(&k, NULL);
    return k;
}
static void key_set(key_t_ k, void *v) { pthread_setspecific(k, v); }
static void *key_get(key_t_ k) { return pthread_getspecific(k); }
static void nap(int ms) { usleep(ms * 1000); }
static void yield(void) { sched_yield(); }
static void end_this_thread(void) { pthread_exit(NULL); }
#endif

#define THREADS 6
#define ROUNDS 20000

/* 1. A counter under a (recursive) lock. */
static lock_t counter_lock;
static long counter;
static THREAD_FN(count_up) {
    for (int i = 0; i < ROUNDS; i++) {
        lock_take(&counter_lock);
        lock_take(&counter_lock); /* recursion */
        counter++;
        lock_drop(&counter_lock);
        lock_drop(&counter_lock);
    }
    return 0;
}

/* 2. Exit codes. */
static THREAD_FN(give_code) {
    int n = (int)(size_t)arg;
    if (n % 2) yield();
#ifdef _WIN32
    return (DWORD)(n * 3 + 1);
#else
    return (void *)(uintptr_t)(n * 3 + 1);
#endif
}

/* 3. Producer/consumer over a bounded queue. */
#define QSIZE 4
#define ITEMS 3000
static qlock_t qlock;
static cond_t not_full, not_empty;
static int queue[QSIZE], qhead, qlen, producers_left;
static long consumed_sum, consumed_count;
static THREAD_FN(produce) {
    int base = (int)(size_t)arg;
    for (int i = 1; i <= ITEMS; i++) {
        qlock_take(&qlock);
        while (qlen == QSIZE) cond_wait(&not_full, &qlock);
        queue[(qhead + qlen) % QSIZE] = base + i;
        qlen++;
        cond_signal(&not_empty);
        qlock_drop(&qlock);
    }
    qlock_take(&qlock);
    producers_left--;
    cond_broadcast(&not_empty);
    qlock_drop(&qlock);
    return 0;
}
static THREAD_FN(consume) {
    long sum = 0, count = 0;
    for (;;) {
        qlock_take(&qlock);
        while (qlen == 0 && producers_left > 0) cond_wait(&not_empty, &qlock);
        if (qlen == 0) {
            qlock_drop(&qlock);
            break;
        }
        sum += queue[qhead];
        qhead = (qhead + 1) % QSIZE;
        qlen--;
        count++;
        cond_signal(&not_full);
        qlock_drop(&qlock);
    }
    qlock_take(&qlock);
    consumed_sum += sum;
    consumed_count += count;
    qlock_drop(&qlock);
    return 0;
}

/* 4. Thread-local storage: the compiler's, the OS's, errno. */
static _Thread_local int tls_var = 7;
static key_t_ key;
static gate_t gate;
static int tls_ok[THREADS];
static THREAD_FN(tls_check) {
    int n = (int)(size_t)arg;
    int ok = tls_var == 7 && key_get(key) == NULL;
    tls_var = 100 + n;
    key_set(key, (void *)(size_t)(200 + n));
    errno = 300 + n;
    gate_wait(&gate); /* every thread has set its own before any checks */
    for (int i = 0; i < 50; i++) {
        if (i % 10 == 0) yield();
        ok = ok && tls_var == 100 + n && key_get(key) == (void *)(size_t)(200 + n) && errno == 300 + n;
    }
    tls_ok[n] = ok;
    return 0;
}

/* Exit while threads run. */
static THREAD_FN(spin_forever) {
    volatile unsigned long x = 0;
    for (;;) {
        x++;
        if (x % 4096 == 0) yield();
    }
    return 0;
}
static THREAD_FN(sleep_forever) {
    for (;;) nap(1000);
    return 0;
}
static THREAD_FN(end_process_later) {
    nap(50);
    printf("worker: ending the process\n");
    fflush(stdout);
    exit(5);
    return 0;
}

int main(int argc, char **argv) {
    if (argc > 2 && strcmp(argv[1], "exit") == 0) {
        thread_start(spin_forever, NULL);
        thread_start(sleep_forever, NULL);
        nap(20);
        printf("main: returning %d with threads running\n", atoi(argv[2]));
        return atoi(argv[2]);
    }
    if (argc > 1 && strcmp(argv[1], "exitthread") == 0) {
        thread_start(end_process_later, NULL);
        printf("main: ending only this thread\n");
        fflush(stdout);
        end_this_thread();
        return 1;
    }

    thread_t t[THREADS];
    lock_init(&counter_lock);
    for (int i = 0; i < THREADS; i++) t[i] = thread_start(count_up, NULL);
    for (int i = 0; i < THREADS; i++) thread_join(t[i]);
    printf("counter: %ld (want %d)\n", counter, THREADS * ROUNDS);

    for (int i = 0; i < THREADS; i++) t[i] = thread_start(give_code, (void *)(size_t)i);
    printf("exit codes:");
    for (int i = 0; i < THREADS; i++) printf(" %u", thread_join(t[i]));
    printf("\n");

    qlock_init(&qlock);
    cond_init(&not_full);
    cond_init(&not_empty);
    producers_left = 2;
    t[0] = thread_start(produce, (void *)0);
    t[1] = thread_start(produce, (void *)100000);
    t[2] = thread_start(consume, NULL);
    t[3] = thread_start(consume, NULL);
    t[4] = thread_start(consume, NULL);
    for (int i = 0; i < 5; i++) thread_join(t[i]);
    printf("consumed %ld items, sum %ld\n", consumed_count, consumed_sum);

    key = key_new();
    gate_init(&gate);
    key_set(key, (void *)1);
    tls_var = 1;
    for (int i = 0; i < THREADS; i++) t[i] = thread_start(tls_check, (void *)(size_t)i);
    nap(10);
    gate_open(&gate);
    for (int i = 0; i < THREADS; i++) thread_join(t[i]);
    printf("tls:");
    for (int i = 0; i < THREADS; i++) printf(" %d", tls_ok[i]);
    printf("; main still has %d and %d\n", tls_var, (int)(size_t)key_get(key));
    return 0;
}
