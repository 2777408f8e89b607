/* A signal storm while threads run: 8 workers compute checksums (integer,
 * SSE and x87 arithmetic) while the main thread sends 2000 SIGUSR1s, half to
 * the process with kill() and half to specific workers with pthread_kill.
 * Handlers count with atomics (and clobber registers). The checksums are
 * deterministic; deliveries may coalesce, so the counts are only checked to
 * be in range. Workers stay alive (waiting on a condvar) until the storm is
 * over, so every pthread_kill targets a live thread. */
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NWORKERS 8
#define WORK 200000
#define SENDS 2000

static long handled_total;
static long handled_by[NWORKERS + 1];
static __thread int my_index = NWORKERS; /* main is the last slot */
static long sent_kill, sent_tkill;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int storm_over, started;

static void handler(int sig)
{
    __atomic_add_fetch(&handled_total, 1, __ATOMIC_SEQ_CST);
    __atomic_add_fetch(&handled_by[my_index], 1, __ATOMIC_SEQ_CST);
    /* use some registers the interrupted code is using too */
    volatile double d = 1.0;
    for (int i = 0; i < 10; i++)
        d = d * 3.0 + 0.5;
    volatile uint64_t x = 0x9e3779b97f4a7c15ull;
    x ^= x >> 13;
    x *= 0xff51afd7ed558ccdull;
}

struct result {
    uint64_t isum;
    double fsum;
    long double lsum;
};

static void *worker(void *arg)
{
    int id = (int)(intptr_t)arg;
    my_index = id;
    pthread_mutex_lock(&mu);
    started++;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);

    struct result *r = malloc(sizeof *r);
    uint64_t x = 88172645463325252ull + (uint64_t)id;
    uint64_t isum = 0;
    double fsum = 0;
    long double lsum = 0;
    for (int i = 0; i < WORK; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        isum += x * (uint64_t)(i | 1);
        fsum += (double)(x & 0xffff) / 65536.0;
        if ((i & 63) == 0)
            lsum += (long double)(x & 0xff) * 0.5L;
    }
    r->isum = isum;
    r->fsum = fsum;
    r->lsum = lsum;

    pthread_mutex_lock(&mu);
    while (!storm_over)
        pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
    return r;
}

int main(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = handler;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR1, &sa, NULL);

    pthread_t t[NWORKERS];
    for (int i = 0; i < NWORKERS; i++)
        pthread_create(&t[i], NULL, worker, (void *)(intptr_t)i);
    pthread_mutex_lock(&mu);
    while (started < NWORKERS)
        pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);

    for (int i = 0; i < SENDS; i++) {
        if (i % 2 == 0) {
            if (kill(getpid(), SIGUSR1) == 0)
                sent_kill++;
        } else {
            if (pthread_kill(t[(i / 2) % NWORKERS], SIGUSR1) == 0)
                sent_tkill++;
        }
    }

    pthread_mutex_lock(&mu);
    storm_over = 1;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);

    for (int i = 0; i < NWORKERS; i++) {
        struct result *r;
        pthread_join(t[i], (void **)&r);
        printf("worker %d: isum=%016llx fsum=%.6f lsum=%.1Lf\n", i, (unsigned long long)r->isum,
               r->fsum, r->lsum);
        free(r);
    }
    long total = __atomic_load_n(&handled_total, __ATOMIC_SEQ_CST);
    long sent = sent_kill + sent_tkill;
    int workers_hit = 0;
    for (int i = 0; i < NWORKERS; i++)
        workers_hit += handled_by[i] > 0;
    printf("sent %ld (kill %ld, pthread_kill %ld)\n", sent, sent_kill, sent_tkill);
    printf("handled in range: %s\n", total >= 1 && total <= sent ? "ok" : "BAD");
    printf("every worker handled at least one: %s\n", workers_hit == NWORKERS ? "ok" : "BAD");
    return 0;
}
