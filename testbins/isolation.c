/* Run under urun only (tests/isolation.rs): the guest looks for memory
 * that is urun's, not its own, and tries to touch it directly and through
 * syscall buffers. Expected: a SIGSEGV for the direct read and write, and
 * EFAULT for a write(2) from it and a read(2) into it.
 *
 * urun's memory is found by comparing the guest's /proc/self/maps (the
 * guest's view) with /proc/self/task/<tid>/maps (the host's). */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static sigjmp_buf jb;
static void on_segv(int sig) { siglongjmp(jb, 1); }

static int in_guest_view(unsigned long a)
{
    FILE *f = fopen("/proc/self/maps", "r");
    unsigned long lo, hi;
    char line[512];
    int found = 0;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "%lx-%lx", &lo, &hi) == 2 && a >= lo && a < hi)
            found = 1;
    if (f)
        fclose(f);
    return found;
}

int main(void)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/self/task/%ld/maps", (long)syscall(SYS_gettid));
    FILE *f = fopen(path, "r");
    unsigned long lo, hi, target = 0;
    char perm[8], line[512];
    while (f && fgets(line, sizeof line, f)) {
        if (sscanf(line, "%lx-%lx %7s", &lo, &hi, perm) == 3 && perm[0] == 'r' && perm[1] == 'w' &&
            !in_guest_view(lo) && !strstr(line, "[vvar") && !strstr(line, "[vsyscall]")) {
            target = lo;
            break;
        }
    }
    if (!target) {
        printf("no memory outside the guest's view\n");
        return 1;
    }
    signal(SIGSEGV, on_segv);
    volatile unsigned char *p = (unsigned char *)target;
    if (!sigsetjmp(jb, 1)) {
        unsigned char c = *p;
        printf("direct read: allowed (%u)\n", c);
    } else {
        printf("direct read: SIGSEGV\n");
    }
    if (!sigsetjmp(jb, 1)) {
        *p = 0x5a;
        printf("direct write: allowed\n");
    } else {
        printf("direct write: SIGSEGV\n");
    }
    int null = open("/dev/null", O_WRONLY);
    errno = 0;
    long n = write(null, (const void *)target, 16);
    printf("write from it: %s\n", n < 0 && errno == EFAULT ? "EFAULT" : "allowed");
    int zero = open("/dev/zero", O_RDONLY);
    errno = 0;
    n = read(zero, (void *)target, 16);
    printf("read into it: %s\n", n < 0 && errno == EFAULT ? "EFAULT" : "allowed");
    return 0;
}
