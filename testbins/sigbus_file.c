/* A page of a file mapping past the end of its file has nothing behind
 * it: touching it is SIGBUS with BUS_ADRERR, which the program's handler
 * catches (siglongjmp) and prints. Under urun the touch happens after
 * urun's check found the page mapped, so it is a host fault that urun
 * must turn into the guest's SIGBUS (tests/races.rs). */
#define _GNU_SOURCE
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static sigjmp_buf jb;
static volatile int got_sig, got_code;
static char *volatile got_addr;

static void on_bus(int sig, siginfo_t *si, void *uc) {
    (void)uc;
    got_sig = sig;
    got_code = si->si_code;
    got_addr = si->si_addr;
    siglongjmp(jb, 1);
}

int main(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_bus;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, NULL);
    FILE *f = tmpfile();
    if (!f) {
        perror("tmpfile");
        return 1;
    }
    int fd = fileno(f);
    if (write(fd, "one page", 8) != 8) {
        perror("write");
        return 1;
    }
    char *p = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    printf("first page: %.8s\n", p);
    const char *what[] = { "load", "store" };
    for (int i = 0; i < 2; i++) {
        got_sig = 0;
        if (sigsetjmp(jb, 1) == 0) {
            if (i == 0)
                (void)*(volatile char *)(p + 4096 + 16);
            else
                *(volatile char *)(p + 4096 + 32) = 1;
        }
        printf("%s past the end: signal %s, code %s, address %s\n", what[i],
               got_sig == SIGBUS ? "SIGBUS" : "none",
               got_code == BUS_ADRERR ? "BUS_ADRERR" : "other",
               got_addr == p + 4096 + 16 * (i + 1) ? "exact" : "wrong");
    }
    return 0;
}
