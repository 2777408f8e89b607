/* pthreads: mutex, condvar, rwlock, barrier, pthread_once, many threads
 * incrementing shared counters under a mutex and with __atomic builtins
 * (lock add, xadd, cmpxchg loops), __thread values per thread, pthread_join
 * return values, detached threads waited for with a condvar. Everything
 * printed is deterministic; only the main thread prints.
 *
 * `threads contend NTHREADS ITERS`: only the contention workload (used by
 * tests/stress.rs with a bigger load). */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NTHREADS 64
#define ITERS 2000

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static long mutex_counter;
static long atomic_add_counter;
static long xadd_counter;
static long cas_counter;
static unsigned long cas_sum;
static int iters = ITERS;
static int nthreads = NTHREADS;

static __thread long tls_value = 5;
static __thread char tls_name[16] = "unset";

static pthread_once_t once = PTHREAD_ONCE_INIT;
static int once_calls;
static void once_init(void) { __atomic_add_fetch(&once_calls, 1, __ATOMIC_SEQ_CST); }

static pthread_barrier_t start_barrier, barrier;
static int arrived;
static int serial_count;
static int all_arrived_ok;

static void *worker(void *arg)
{
    long id = (long)(intptr_t)arg;
    int tls_initial_ok = (tls_value == 5 && strcmp(tls_name, "unset") == 0);
    tls_value = id * 1000;
    snprintf(tls_name, sizeof tls_name, "t%ld", id);
    pthread_once(&once, once_init);
    pthread_barrier_wait(&start_barrier); /* all start together: contention */

    for (int i = 0; i < iters; i++) {
        pthread_mutex_lock(&mu);
        mutex_counter++;
        pthread_mutex_unlock(&mu);
        __atomic_add_fetch(&atomic_add_counter, 1, __ATOMIC_SEQ_CST); /* lock add */
        (void)__atomic_fetch_add(&xadd_counter, 2, __ATOMIC_SEQ_CST);
        long old = __atomic_load_n(&cas_counter, __ATOMIC_RELAXED);
        while (!__atomic_compare_exchange_n(&cas_counter, &old, old + 3, 1,
                                            __ATOMIC_SEQ_CST, __ATOMIC_RELAXED))
            ;
        unsigned long o2 = __atomic_load_n(&cas_sum, __ATOMIC_RELAXED);
        while (!__atomic_compare_exchange_n(&cas_sum, &o2, o2 + (unsigned long)(id * iters + i), 0,
                                            __ATOMIC_SEQ_CST, __ATOMIC_RELAXED))
            ;
        tls_value++;
    }

    __atomic_add_fetch(&arrived, 1, __ATOMIC_SEQ_CST);
    int r = pthread_barrier_wait(&barrier);
    if (r == PTHREAD_BARRIER_SERIAL_THREAD)
        __atomic_add_fetch(&serial_count, 1, __ATOMIC_SEQ_CST);
    else if (r != 0)
        return (void *)(intptr_t)-1;
    if (__atomic_load_n(&arrived, __ATOMIC_SEQ_CST) == nthreads)
        __atomic_add_fetch(&all_arrived_ok, 1, __ATOMIC_SEQ_CST);

    /* Our TLS was not touched by the others. */
    char want[16];
    snprintf(want, sizeof want, "t%ld", id);
    if (tls_value != id * 1000 + iters || strcmp(tls_name, want) != 0 || !tls_initial_ok)
        return (void *)(intptr_t)-2;
    return (void *)(intptr_t)(id * 7 + 1);
}

static int contend(int n, int it)
{
    pthread_t t[256];
    if (n > 256)
        n = 256;
    iters = it;
    nthreads = n;
    pthread_barrier_init(&barrier, NULL, (unsigned)n);
    pthread_barrier_init(&start_barrier, NULL, (unsigned)n);
    for (long i = 0; i < n; i++)
        pthread_create(&t[i], NULL, worker, (void *)(intptr_t)i);
    long ret_sum = 0;
    for (int i = 0; i < n; i++) {
        void *rv;
        pthread_join(t[i], &rv);
        ret_sum += (long)(intptr_t)rv;
    }
    printf("contend %d threads x %d: mutex=%ld lockadd=%ld xadd=%ld cas=%ld cas_sum=%lu rets=%ld serial=%d\n",
           n, it, mutex_counter, atomic_add_counter, xadd_counter, cas_counter, cas_sum, ret_sum,
           serial_count);
    return 0;
}

/* rwlock: writers keep a == b; readers check it. */
static pthread_rwlock_t rw = PTHREAD_RWLOCK_INITIALIZER;
static long rw_a, rw_b;
static int rw_bad;
static void *rw_writer(void *arg)
{
    for (int i = 0; i < 500; i++) {
        pthread_rwlock_wrlock(&rw);
        rw_a++;
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
        rw_b++;
        pthread_rwlock_unlock(&rw);
    }
    return NULL;
}
static void *rw_reader(void *arg)
{
    long reads = 0;
    for (int i = 0; i < 500; i++) {
        pthread_rwlock_rdlock(&rw);
        if (rw_a != rw_b)
            __atomic_add_fetch(&rw_bad, 1, __ATOMIC_SEQ_CST);
        reads++;
        pthread_rwlock_unlock(&rw);
    }
    return (void *)(intptr_t)reads;
}

/* condvar: bounded queue, 4 producers, 4 consumers. */
#define QCAP 8
#define PER_PRODUCER 300
static pthread_mutex_t qmu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t qnotfull = PTHREAD_COND_INITIALIZER, qnotempty = PTHREAD_COND_INITIALIZER;
static int queue[QCAP], qhead, qlen, producers_left = 4;
static void *producer(void *arg)
{
    int base = (int)(intptr_t)arg * 10000;
    for (int i = 1; i <= PER_PRODUCER; i++) {
        pthread_mutex_lock(&qmu);
        while (qlen == QCAP)
            pthread_cond_wait(&qnotfull, &qmu);
        queue[(qhead + qlen) % QCAP] = base + i;
        qlen++;
        pthread_cond_signal(&qnotempty);
        pthread_mutex_unlock(&qmu);
    }
    pthread_mutex_lock(&qmu);
    producers_left--;
    pthread_cond_broadcast(&qnotempty);
    pthread_mutex_unlock(&qmu);
    return NULL;
}
static void *consumer(void *arg)
{
    long sum = 0, count = 0;
    for (;;) {
        pthread_mutex_lock(&qmu);
        while (qlen == 0 && producers_left > 0)
            pthread_cond_wait(&qnotempty, &qmu);
        if (qlen == 0) {
            pthread_mutex_unlock(&qmu);
            break;
        }
        int v = queue[qhead];
        qhead = (qhead + 1) % QCAP;
        qlen--;
        pthread_cond_signal(&qnotfull);
        pthread_mutex_unlock(&qmu);
        sum += v;
        count++;
    }
    long *res = malloc(2 * sizeof(long));
    res[0] = sum;
    res[1] = count;
    return res;
}

/* detached threads, waited for with a condvar */
static pthread_mutex_t dmu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t dcond = PTHREAD_COND_INITIALIZER;
static int detached_done;
static long detached_sum;
static void *detached(void *arg)
{
    long v = (long)(intptr_t)arg;
    pthread_mutex_lock(&dmu);
    detached_sum += v * v;
    detached_done++;
    pthread_cond_signal(&dcond);
    pthread_mutex_unlock(&dmu);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc == 4 && strcmp(argv[1], "contend") == 0)
        return contend(atoi(argv[2]), atoi(argv[3]));

    tls_value = -1;
    strcpy(tls_name, "main");

    /* many threads, counters, barrier, once, TLS, join values */
    pthread_t t[NTHREADS];
    pthread_barrier_init(&barrier, NULL, NTHREADS);
    pthread_barrier_init(&start_barrier, NULL, NTHREADS);
    for (long i = 0; i < NTHREADS; i++)
        if (pthread_create(&t[i], NULL, worker, (void *)(intptr_t)i) != 0) {
            puts("pthread_create failed");
            return 1;
        }
    long ret_sum = 0;
    int bad_rets = 0;
    for (int i = 0; i < NTHREADS; i++) {
        void *rv;
        pthread_join(t[i], &rv);
        if ((long)(intptr_t)rv != i * 7 + 1)
            bad_rets++;
        ret_sum += (long)(intptr_t)rv;
    }
    pthread_barrier_destroy(&barrier);
    pthread_barrier_destroy(&start_barrier);
    printf("threads=%d iters=%d\n", NTHREADS, ITERS);
    printf("mutex counter=%ld (want %d)\n", mutex_counter, NTHREADS * ITERS);
    printf("lock add counter=%ld xadd counter=%ld cmpxchg counter=%ld\n", atomic_add_counter,
           xadd_counter, cas_counter);
    unsigned long n = (unsigned long)NTHREADS * ITERS;
    printf("cmpxchg sum=%lu (want %lu)\n", cas_sum, n * (n - 1) / 2);
    printf("join values sum=%ld bad=%d\n", ret_sum, bad_rets);
    printf("once calls=%d barrier serial=%d all-arrived=%d\n", once_calls, serial_count,
           all_arrived_ok);
    printf("main tls=%ld name=%s\n", tls_value, tls_name);

    /* rwlock */
    pthread_t w[2], r[6];
    for (int i = 0; i < 2; i++)
        pthread_create(&w[i], NULL, rw_writer, NULL);
    for (int i = 0; i < 6; i++)
        pthread_create(&r[i], NULL, rw_reader, NULL);
    long reads = 0;
    for (int i = 0; i < 2; i++)
        pthread_join(w[i], NULL);
    for (int i = 0; i < 6; i++) {
        void *rv;
        pthread_join(r[i], &rv);
        reads += (long)(intptr_t)rv;
    }
    printf("rwlock a=%ld b=%ld reads=%ld inconsistent=%d\n", rw_a, rw_b, reads, rw_bad);

    /* condvar queue */
    pthread_t p[4], c[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&c[i], NULL, consumer, NULL);
    for (int i = 0; i < 4; i++)
        pthread_create(&p[i], NULL, producer, (void *)(intptr_t)(i + 1));
    for (int i = 0; i < 4; i++)
        pthread_join(p[i], NULL);
    long sum = 0, count = 0;
    for (int i = 0; i < 4; i++) {
        void *rv;
        pthread_join(c[i], &rv);
        sum += ((long *)rv)[0];
        count += ((long *)rv)[1];
        free(rv);
    }
    printf("condvar queue: consumed %ld items, sum %ld\n", count, sum);

    /* detached threads */
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    for (long i = 1; i <= 8; i++) {
        pthread_t d;
        pthread_create(&d, &attr, detached, (void *)(intptr_t)i);
    }
    pthread_attr_destroy(&attr);
    pthread_mutex_lock(&dmu);
    while (detached_done < 8)
        pthread_cond_wait(&dcond, &dmu);
    pthread_mutex_unlock(&dmu);
    printf("detached: %d done, sum of squares %ld\n", detached_done, detached_sum);

    /* pthread_once from main after the threads: still one call */
    pthread_once(&once, once_init);
    printf("once calls after main=%d\n", once_calls);
    return 0;
}
