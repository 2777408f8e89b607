/* /proc/self/mem and /proc/self/task/<tid>/maps, compared with native:
 * the program's own memory is reachable through its memory file exactly
 * as natively (read, write, a read-only page, code, an unmapped address,
 * a range that runs off the end of a mapping), and the per-thread maps
 * show the same mappings as /proc/self/maps, whichever way they are
 * opened. Also: no descriptor the program did not open answers a KVM
 * ioctl (natively there is none; under urun's KVM engine urun's own are
 * in the descriptor table and must look closed). */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

static char buf[64] = "hello, memory";
static int data_in_heap;

static const char *err(long r)
{
    static char s[64];
    const char *name = errno == EIO      ? "EIO"
                       : errno == EINVAL ? "EINVAL"
                       : errno == EFAULT ? "EFAULT"
                       : errno == EBADF  ? "EBADF"
                       : errno == EACCES ? "EACCES"
                                         : NULL;
    if (r >= 0)
        snprintf(s, sizeof s, "%ld", r);
    else if (name)
        snprintf(s, sizeof s, "-1 %s", name);
    else
        snprintf(s, sizeof s, "-1 errno %d", errno);
    return s;
}

static off_t at(const void *p) { return (off_t)(uintptr_t)p; }

static void mem_file(void)
{
    int m = open("/proc/self/mem", O_RDWR);
    printf("open /proc/self/mem: %s\n", m >= 0 ? "ok" : err(-1));
    if (m < 0)
        return;
    /* pwrite/pread at the buffer's address */
    printf("pwrite: %s", err(pwrite(m, "HELLO", 5, at(buf))));
    printf(" -> buf \"%s\"\n", buf);
    char out[32] = {0};
    printf("pread: %s -> \"%s\"\n", err(pread(m, out, 13, at(buf))), out);
    /* read/write at the file position */
    lseek(m, at(buf + 7), SEEK_SET);
    printf("write at position: %s", err(write(m, "MEMORY", 6)));
    printf(" -> buf \"%s\", position moved %ld\n", buf, (long)(lseek(m, 0, SEEK_CUR) - at(buf)));
    memset(out, 0, sizeof out);
    lseek(m, at(buf), SEEK_SET);
    printf("read at position: %s -> \"%s\"\n", err(read(m, out, 13)), out);
    /* vectored */
    char a[4] = {0}, b[4] = {0};
    struct iovec iov[2] = {{a, 3}, {b, 3}};
    printf("preadv: %s -> \"%s\" \"%s\"\n", err(preadv(m, iov, 2, at(buf))), a, b);
    /* a read-only page: the memory file writes it anyway (as ptrace does) */
    char *ro = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    strcpy(ro, "read-only");
    mprotect(ro, 4096, PROT_READ);
    printf("pwrite into a read-only page: %s", err(pwrite(m, "READ", 4, at(ro))));
    printf(" -> \"%s\"\n", ro);
    /* code: mov eax, imm32; ret in an executable page, rewritten through
     * the memory file, then called */
    unsigned char *code = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    unsigned char insn[] = {0xb8, 1, 0, 0, 0, 0xc3};
    memcpy(code, insn, sizeof insn);
    mprotect(code, 4096, PROT_READ | PROT_EXEC);
    int (*f)(void) = (int (*)(void))(void *)code;
    int before = f();
    uint32_t v = 42;
    printf("pwrite into code: %s", err(pwrite(m, &v, 4, at(code + 1))));
    printf(", the function returned %d, now %d\n", before, f());
    /* an unmapped page, and a range that runs off the end of a mapping */
    char *two = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    munmap(two + 4096, 4096);
    memset(two, 'x', 4096);
    char *big = malloc(8192);
    errno = 0;
    printf("pread of an unmapped page: %s\n", err(pread(m, big, 16, at(two + 4096))));
    printf("pread running off the end of a mapping: %s\n", err(pread(m, big, 8192, at(two))));
    printf("pwrite running off the end of a mapping: %s\n", err(pwrite(m, big, 8192, at(two))));
    printf("pread at address 0: %s\n", err(pread(m, big, 16, 0)));
    printf("pread at a negative offset: %s\n", err(pread(m, big, 16, -4096)));
    /* through a duplicate, and /proc/<pid>/task/<tid>/mem */
    int d = fcntl(m, F_DUPFD_CLOEXEC, 100);
    memset(out, 0, sizeof out);
    printf("pread through F_DUPFD copy: %s -> \"%s\"\n", err(pread(d, out, 5, at(buf))), out);
    char path[96];
    snprintf(path, sizeof path, "/proc/%d/task/%ld/mem", getpid(), (long)syscall(SYS_gettid));
    int t = open(path, O_RDONLY);
    memset(out, 0, sizeof out);
    printf("pread through task/<tid>/mem: %s -> \"%s\"\n", err(pread(t, out, 5, at(buf))), out);
    errno = 0;
    printf("pread through task/<tid>/mem, unmapped: %s\n", err(pread(t, out, 5, at(two + 4096))));
    close(t);
    /* a memory file passed over a socket (SCM_RIGHTS) */
    int sv[2];
    socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
    char cbuf[CMSG_SPACE(sizeof(int))];
    memset(cbuf, 0, sizeof cbuf);
    char byte = 'm';
    struct iovec one = {&byte, 1};
    struct msghdr msg = {.msg_iov = &one, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof cbuf};
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &m, sizeof(int));
    sendmsg(sv[0], &msg, 0);
    memset(cbuf, 0, sizeof cbuf);
    msg.msg_controllen = sizeof cbuf;
    int got = -1;
    if (recvmsg(sv[1], &msg, 0) == 1 && (c = CMSG_FIRSTHDR(&msg)) && c->cmsg_type == SCM_RIGHTS)
        memcpy(&got, CMSG_DATA(c), sizeof(int));
    memset(out, 0, sizeof out);
    printf("pread through a received copy: %s -> \"%s\"\n", err(pread(got, out, 5, at(buf))), out);
    errno = 0;
    printf("pread through a received copy, unmapped: %s\n", err(pread(got, out, 5, at(two + 4096))));
    close(got);
    close(sv[0]);
    close(sv[1]);
    close(d);
    close(m);
    /* process_vm_readv/writev on this process */
    pid_t me = getpid();
    memset(out, 0, sizeof out);
    struct iovec lo = {out, 5}, re = {buf, 5};
    printf("process_vm_readv: %s -> \"%s\"\n", err(process_vm_readv(me, &lo, 1, &re, 1, 0)), out);
    struct iovec lw = {"howdy", 5};
    printf("process_vm_writev: %s", err(process_vm_writev(me, &lw, 1, &re, 1, 0)));
    printf(" -> buf \"%s\"\n", buf);
    struct iovec rb = {two + 4096, 16}, lb = {big, 16};
    errno = 0;
    printf("process_vm_readv of an unmapped page: %s\n", err(process_vm_readv(me, &lb, 1, &rb, 1, 0)));
    struct iovec rr[2] = {{two, 4096}, {two + 4096, 4096}}, lr = {big, 8192};
    printf("process_vm_readv running off the end of a mapping: %s\n", err(process_vm_readv(me, &lr, 1, rr, 2, 0)));
    struct iovec rro = {ro, 4};
    errno = 0;
    printf("process_vm_writev into a read-only page: %s\n", err(process_vm_writev(me, &lw, 1, &rro, 1, 0)));
    free(big);
}

/* Read a whole file into one of five static buffers (one read loop, no
 * stdio, no allocation: the memory map stays the same between reads). */
static char bufs[5][1 << 16];
static int next_buf;

static char *slurp_fd(int fd)
{
    size_t cap = sizeof bufs[0] - 1, n = 0;
    char *s = bufs[next_buf++ % 5];
    long r;
    while (fd >= 0 && (r = read(fd, s + n, cap - n)) > 0)
        n += r;
    s[n] = 0;
    if (fd >= 0)
        close(fd);
    return s;
}

static char *slurp(const char *path) { return slurp_fd(open(path, O_RDONLY)); }

static int has_line_with(const char *maps, uintptr_t a)
{
    for (const char *l = maps; *l;) {
        unsigned long lo, hi;
        if (sscanf(l, "%lx-%lx", &lo, &hi) == 2 && a >= lo && a < hi)
            return 1;
        const char *nl = strchr(l, '\n');
        if (!nl)
            break;
        l = nl + 1;
    }
    return 0;
}

static void task_maps(void)
{
    long tid = syscall(SYS_gettid);
    char path[96];
    int local;
    data_in_heap = 1;
    void *heap = malloc(100);
    /* read every view back to back, before printing anything */
    char *self = slurp("/proc/self/maps");
    snprintf(path, sizeof path, "/proc/self/task/%ld/maps", tid);
    char *task = slurp(path);
    snprintf(path, sizeof path, "/proc/%d/task/%ld/maps", getpid(), tid);
    char *pid_task = slurp(path);
    char *thread_self = slurp("/proc/thread-self/maps");
    int dir = open("/proc/self/task", O_RDONLY | O_DIRECTORY);
    snprintf(path, sizeof path, "%ld/maps", tid);
    char *via_dirfd = slurp_fd(openat(dir, path, O_RDONLY));
    close(dir);
    printf("task maps: code %d, stack %d, heap %d, data %d\n", has_line_with(task, (uintptr_t)(void *)task_maps),
           has_line_with(task, (uintptr_t)&local), has_line_with(task, (uintptr_t)heap),
           has_line_with(task, (uintptr_t)&data_in_heap));
    printf("/proc/self/task/<tid>/maps is /proc/self/maps: %s\n", strcmp(self, task) ? "no" : "yes");
    printf("/proc/<pid>/task/<tid>/maps is /proc/self/maps: %s\n", strcmp(self, pid_task) ? "no" : "yes");
    printf("/proc/thread-self/maps is /proc/self/maps: %s\n", strcmp(self, thread_self) ? "no" : "yes");
    printf("<tid>/maps opened at a /proc/self/task descriptor is /proc/self/maps: %s\n",
           strcmp(self, via_dirfd) ? "no" : "yes");
    free(heap);
}

/* Descriptors naming KVM objects answer nothing (natively there are none). */
static void kvm_descriptors(void)
{
    int answered = 0;
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    while (d && (e = readdir(d))) {
        char link[256] = {0}, path[300];
        snprintf(path, sizeof path, "/proc/self/fd/%s", e->d_name);
        if (readlink(path, link, sizeof link - 1) < 0 ||
            (strcmp(link, "/dev/kvm") && strncmp(link, "anon_inode:kvm", 14)))
            continue;
        int fd = atoi(e->d_name);
        char c;
        /* KVM_GET_API_VERSION = _IO(0xAE, 0), KVM_CHECK_EXTENSION, KVM_RUN */
        if (ioctl(fd, 0xAE00, 0) >= 0 || errno != EBADF)
            answered++;
        if (ioctl(fd, 0xAE03, 0) >= 0 || errno != EBADF)
            answered++;
        if (ioctl(fd, 0xAE80, 0) >= 0 || errno != EBADF)
            answered++;
        if (fcntl(fd, F_GETFL) >= 0 || errno != EBADF)
            answered++;
        if (read(fd, &c, 1) >= 0 || errno != EBADF)
            answered++;
        if (mmap(NULL, 4096, PROT_READ, MAP_SHARED, fd, 0) != MAP_FAILED || errno != EBADF)
            answered++;
        if (dup(fd) >= 0 || errno != EBADF)
            answered++;
    }
    if (d)
        closedir(d);
    printf("calls on KVM descriptors that were not refused with EBADF: %d\n", answered);
}

int main(void)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    mem_file();
    task_maps();
    kvm_descriptors();
    return 0;
}
