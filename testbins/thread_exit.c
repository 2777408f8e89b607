/* A non-main thread calls exit(7) while the main thread is blocked in
 * pthread_join on a thread that never finishes: the whole process exits 7
 * and stdio is flushed. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static int never_fd[2];

static void *sleeper(void *arg)
{
    char c;
    (void)!read(never_fd[0], &c, 1); /* never returns: nobody writes */
    puts("sleeper woke?!");
    return NULL;
}

static void *exiter(void *arg)
{
    usleep(10000);
    printf("thread calling exit(7)\n"); /* stays in the stdio buffer: exit flushes it */
    exit(7);
}

int main(void)
{
    if (pipe(never_fd) != 0)
        return 1;
    pthread_t s, e;
    pthread_create(&s, NULL, sleeper, NULL);
    printf("main: blocking in pthread_join\n");
    fflush(stdout);
    pthread_create(&e, NULL, exiter, NULL);
    pthread_join(s, NULL);
    puts("main: join returned?!");
    return 0;
}
