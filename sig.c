#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <setjmp.h>
#include <unistd.h>
#include <stdlib.h>
static sigjmp_buf jb; static volatile int hits;
static void segv(int s, siginfo_t *si, void *uc) { hits++; printf("segv at %p code %d\n", si->si_addr, si->si_code); siglongjmp(jb, 1); }
static void usr(int s) { hits++; printf("usr1 %d\n", s); }
static void alrm(int s) { printf("alarm\n"); }
int main(void) {
    struct sigaction sa; memset(&sa, 0, sizeof sa); sa.sa_sigaction = segv; sa.sa_flags = SA_SIGINFO; sigaction(SIGSEGV, &sa, 0);
    if (!sigsetjmp(jb, 1)) { *(volatile int *)16 = 1; }
    printf("after longjmp\n");
    signal(SIGUSR1, usr); raise(SIGUSR1); kill(getpid(), SIGUSR1);
    sigset_t s; sigemptyset(&s); sigaddset(&s, SIGUSR1); sigprocmask(SIG_BLOCK, &s, 0); raise(SIGUSR1); printf("blocked\n"); sigprocmask(SIG_UNBLOCK, &s, 0);
    stack_t ss = { .ss_sp = malloc(65536), .ss_size = 65536 }; sigaltstack(&ss, 0);
    signal(SIGALRM, alrm); alarm(1); pause();
    double d = 1.5; printf("fp ok %.2f hits=%d\n", d * 2, hits);
    return 0;
}
