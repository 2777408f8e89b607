/* Thread-id words that the kernel (urun: its host code) writes while other
 * threads use them: 200 threads are cloned one after the other with
 * CLONE_PARENT_SETTID, CLONE_CHILD_SETTID and CLONE_CHILD_CLEARTID all on
 * one word, as musl does with its thread-list lock (cleared at each exit),
 * while a spinner thread reads the word and stores it back with a locked
 * compare-exchange that changes nothing. Natively the stores race with the
 * spinner harmlessly; under `urun --engine jit --check` (tests/races.rs,
 * every block checked) a store landing between the interpreter's and the
 * JIT's run of the spinner's block was a false difference, and could be
 * lost to the undoing of the interpreter's writes. Prints only what is
 * deterministic. */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

#define FUTEX_WAIT 0 /* musl has no linux/futex.h */
#define CHILDREN 200
#define STACK (64 * 1024)

static int word;
static int stop;
static long seen;

static void *spinner(void *arg)
{
    (void)arg;
    while (!__atomic_load_n(&stop, __ATOMIC_ACQUIRE)) {
        int v = __atomic_load_n(&word, __ATOMIC_RELAXED);
        int e = v;
        __atomic_compare_exchange_n(&word, &e, v, 0, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED);
        seen += v != 0;
    }
    return NULL;
}

/* Touches nothing of libc's (no TLS of its own). */
static int child(void *arg)
{
    volatile long n = (long)arg;
    for (int i = 0; i < 100; i++)
        n = n * 3 + 1;
    return 0;
}

int main(void)
{
    pthread_t t;
    if (pthread_create(&t, NULL, spinner, NULL) != 0) {
        puts("pthread_create failed");
        return 1;
    }
    char *stack = malloc(STACK);
    int flags = CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD | CLONE_SYSVSEM |
                CLONE_PARENT_SETTID | CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID;
    int created = 0, cleared = 0;
    for (int i = 0; i < CHILDREN; i++) {
        int tid = clone(child, stack + STACK, flags, (void *)(long)i, &word, NULL, &word);
        if (tid <= 0) {
            perror("clone");
            break;
        }
        created++;
        /* Wait for the exit's clear, as a join does (the stack is reused). */
        int v;
        while ((v = __atomic_load_n(&word, __ATOMIC_ACQUIRE)) != 0)
            syscall(SYS_futex, &word, FUTEX_WAIT, v, NULL, NULL, 0);
        cleared++;
    }
    __atomic_store_n(&stop, 1, __ATOMIC_RELEASE);
    pthread_join(t, NULL);
    printf("created %d, cleared %d, word %d\n", created, cleared, word);
    free(stack);
    return created == CHILDREN && cleared == CHILDREN ? 0 : 1;
}
