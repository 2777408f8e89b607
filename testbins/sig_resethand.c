/* SA_RESETHAND: the first SIGUSR1 runs the handler (which sees the action
 * already reset to SIG_DFL and SIGUSR1 not blocked, as with SA_NODEFER);
 * the second one kills the process with the default action. */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t handled, reset_seen, blocked_inside;

static void handler(int sig)
{
    struct sigaction cur;
    sigaction(SIGUSR1, NULL, &cur);
    reset_seen = cur.sa_handler == SIG_DFL;
    sigset_t m;
    sigprocmask(SIG_BLOCK, NULL, &m);
    blocked_inside = sigismember(&m, SIGUSR1);
    handled++;
}

int main(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = handler;
    sa.sa_flags = SA_RESETHAND;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR1, &sa, NULL);
    raise(SIGUSR1);
    printf("first SIGUSR1: handled=%d reset to SIG_DFL=%d blocked inside=%d\n", (int)handled,
           (int)reset_seen, (int)blocked_inside);
    fflush(stdout);
    raise(SIGUSR1);
    puts("survived the second SIGUSR1?!");
    return 0;
}
