/* The main thread calls pthread_exit while another thread is still running;
 * that thread finishes later; the process then exits 0 with the last
 * thread's output. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <unistd.h>

static int main_leaving;

static void *last(void *arg)
{
    while (!__atomic_load_n(&main_leaving, __ATOMIC_SEQ_CST))
        usleep(1000);
    usleep(20000);
    printf("last thread: still running after main's pthread_exit\n");
    fflush(stdout);
    return NULL;
}

int main(void)
{
    pthread_t t;
    pthread_create(&t, NULL, last, NULL);
    printf("main: calling pthread_exit\n");
    fflush(stdout);
    __atomic_store_n(&main_leaving, 1, __ATOMIC_SEQ_CST);
    pthread_exit((void *)(intptr_t)42);
}
