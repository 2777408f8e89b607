/* Run under urun only (tests/isolation.rs): the guest looks for memory
 * that is urun's, not its own, and tries to touch it directly, through
 * syscall buffers and through /proc/self/mem. Expected: a SIGSEGV for the
 * direct read and write, EFAULT for a write(2) from it and a read(2) into
 * it, EIO for a pread/pwrite of /proc/self/mem (and of
 * /proc/self/task/<tid>/mem, and of a copy received over a socket) at its
 * address, as for an unmapped address, and EFAULT for
 * process_vm_readv/writev of it.
 *
 * urun's memory is found by comparing the guest's /proc/self/maps (the
 * guest's view, as are /proc/self/task/<tid>/maps) with
 * /proc/self/smaps, which urun does not rewrite (the host's layout: a
 * documented leak of addresses, not of contents). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
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

/* The same descriptor, received back over a socket (SCM_RIGHTS). */
static int passed_over_socket(int fd)
{
    int sv[2], got = -1;
    char cbuf[CMSG_SPACE(sizeof(int))], byte = 0;
    struct iovec one = {&byte, 1};
    struct msghdr msg = {.msg_iov = &one, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof cbuf};
    socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
    memset(cbuf, 0, sizeof cbuf);
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof(int));
    sendmsg(sv[0], &msg, 0);
    close(fd);
    msg.msg_controllen = sizeof cbuf;
    if (recvmsg(sv[1], &msg, 0) == 1 && (c = CMSG_FIRSTHDR(&msg)) && c->cmsg_type == SCM_RIGHTS)
        memcpy(&got, CMSG_DATA(c), sizeof(int));
    close(sv[0]);
    close(sv[1]);
    return got;
}

int main(void)
{
    char path[64];
    FILE *f = fopen("/proc/self/smaps", "r");
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
    char buf[16];
    const char *mems[2] = {"/proc/self/mem", path};
    const char *names[3] = {"mem", "task mem", "received mem"};
    snprintf(path, sizeof path, "/proc/self/task/%ld/mem", (long)syscall(SYS_gettid));
    for (int i = 0; i < 3; i++) {
        int m = open(mems[i % 2], O_RDWR);
        if (i == 2)
            m = passed_over_socket(m);
        errno = 0;
        n = pread(m, buf, sizeof buf, (off_t)target);
        printf("%s read of it: %s\n", names[i], n < 0 && errno == EIO ? "EIO" : "allowed");
        errno = 0;
        n = pwrite(m, "xxxxxxxxxxxxxxxx", 16, (off_t)target);
        printf("%s write to it: %s\n", names[i], n < 0 && errno == EIO ? "EIO" : "allowed");
        close(m);
    }
    struct iovec local = {buf, sizeof buf}, remote = {(void *)target, sizeof buf};
    errno = 0;
    n = process_vm_readv(getpid(), &local, 1, &remote, 1, 0);
    printf("process_vm_readv of it: %s\n", n < 0 && errno == EFAULT ? "EFAULT" : "allowed");
    errno = 0;
    n = process_vm_writev(getpid(), &local, 1, &remote, 1, 0);
    printf("process_vm_writev to it: %s\n", n < 0 && errno == EFAULT ? "EFAULT" : "allowed");
    return 0;
}
