/* Processes: fork + waitpid exit codes, a child killed by a signal, execve
 * of this program (argv[0]) acting as a child, execve failures (ENOENT,
 * EACCES), vfork + _exit and vfork + execve, posix_spawn of /bin/echo and of
 * this program, pipes between parent and child, a 3-level fork tree summing
 * exit codes, system(). The parent flushes stdout before every fork so each
 * line is written once, in a fixed order.
 *
 * `procs child CODE WORDS...` (used through execve/posix_spawn): prints its
 * arguments and exits CODE. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static void show_status(const char *what, pid_t pid, pid_t w, int st)
{
    if (WIFEXITED(st))
        printf("%s: waitpid ok=%d exited code=%d\n", what, w == pid, WEXITSTATUS(st));
    else if (WIFSIGNALED(st))
        printf("%s: waitpid ok=%d signaled sig=%d\n", what, w == pid, WTERMSIG(st));
    else
        printf("%s: waitpid ok=%d status=%#x\n", what, w == pid, st);
}

static pid_t xfork(void)
{
    fflush(stdout);
    fflush(stderr);
    pid_t p = fork();
    if (p < 0) {
        perror("fork");
        exit(100);
    }
    return p;
}

static int tree_expected(int depth, int id)
{
    if (depth == 0)
        return id % 7;
    return (id + tree_expected(depth - 1, id * 2) + tree_expected(depth - 1, id * 2 + 1)) % 256;
}

static int tree(int depth, int id)
{
    if (depth == 0)
        return id % 7;
    pid_t kids[2];
    for (int i = 0; i < 2; i++) {
        kids[i] = xfork();
        if (kids[i] == 0)
            _exit(tree(depth - 1, id * 2 + i));
    }
    int sum = id;
    for (int i = 0; i < 2; i++) {
        int st;
        waitpid(kids[i], &st, 0);
        sum += WIFEXITED(st) ? WEXITSTATUS(st) : 1000;
    }
    return sum % 256;
}

int main(int argc, char **argv)
{
    if (argc >= 3 && strcmp(argv[1], "child") == 0) {
        printf("child:");
        for (int i = 3; i < argc; i++)
            printf(" [%s]", argv[i]);
        printf(" env URUN_TEST_ALPHA=%s\n", getenv("URUN_TEST_ALPHA") ? getenv("URUN_TEST_ALPHA") : "(unset)");
        return atoi(argv[2]);
    }
    const char *self = argv[0];
    setvbuf(stdout, NULL, _IOLBF, 0); /* an execve that should fail but runs loses nothing */

    /* fork + exit codes */
    int codes[] = {0, 1, 42, 255};
    for (int i = 0; i < 4; i++) {
        pid_t p = xfork();
        if (p == 0) {
            printf("fork child %d, exiting %d\n", i, codes[i]);
            exit(codes[i]);
        }
        int st;
        pid_t w = waitpid(p, &st, 0);
        show_status("fork", p, w, st);
    }

    /* children killed by signals */
    int sigs[] = {SIGTERM, SIGKILL, SIGSEGV};
    for (int i = 0; i < 3; i++) {
        pid_t p = xfork();
        if (p == 0) {
            if (sigs[i] == SIGSEGV)
                *(volatile int *)0 = 1;
            raise(sigs[i]);
            _exit(99);
        }
        int st;
        pid_t w = waitpid(p, &st, 0);
        show_status("killed child", p, w, st);
    }
    /* killed by the parent while blocked */
    {
        int fds[2];
        (void)!pipe(fds);
        pid_t p = xfork();
        if (p == 0) {
            char c;
            close(fds[1]);
            (void)!write(1, "", 0);
            (void)!read(fds[0], &c, 1); /* blocks: the parent keeps the write end */
            _exit(98);
        }
        close(fds[0]);
        usleep(20000);
        kill(p, SIGUSR1);
        int st;
        pid_t w = waitpid(p, &st, 0);
        show_status("kill()ed child", p, w, st);
        close(fds[1]);
    }

    /* execve of this program */
    {
        pid_t p = xfork();
        if (p == 0) {
            char *args[] = {(char *)self, "child", "9", "exec'd", "two words", NULL};
            execve(self, args, environ);
            perror("execve");
            _exit(127);
        }
        int st;
        pid_t w = waitpid(p, &st, 0);
        show_status("execve self", p, w, st);
    }

    /* execve failures return to the caller */
    {
        char *args[] = {"nope", NULL};
        errno = 0;
        int r = execve("/nonexistent/dir/prog", args, environ);
        printf("execve missing: ret=%d errno=%s\n", r, errno == ENOENT ? "ENOENT" : strerror(errno));
        char tmpl[] = "/tmp/urun-procs-XXXXXX";
        int fd = mkstemp(tmpl);
        (void)!write(fd, "#!/bin/sh\necho hi\n", 18);
        close(fd);
        chmod(tmpl, 0644);
        errno = 0;
        r = execve(tmpl, args, environ);
        printf("execve not executable: ret=%d errno=%s\n", r,
               errno == EACCES ? "EACCES" : strerror(errno));
        unlink(tmpl);
        errno = 0;
        r = execve("/", args, environ);
        printf("execve directory: ret=%d errno=%s\n", r, errno == EACCES ? "EACCES" : strerror(errno));
    }

    /* vfork */
    {
        fflush(stdout);
        pid_t p = vfork();
        if (p == 0)
            _exit(17); /* (writing memory here would be undefined: not checked) */
        int st;
        pid_t w = waitpid(p, &st, 0);
        show_status("vfork _exit", p, w, st);

        p = vfork();
        if (p == 0) {
            char *args[] = {(char *)self, "child", "3", "vfork+exec", NULL};
            execve(self, args, environ);
            _exit(127);
        }
        w = waitpid(p, &st, 0);
        show_status("vfork execve", p, w, st);
    }

    /* posix_spawn */
    {
        fflush(stdout);
        pid_t p;
        char *eargs[] = {"echo", "from-echo", "via", "posix_spawn", NULL};
        int r = posix_spawn(&p, "/bin/echo", NULL, NULL, eargs, environ);
        int st;
        pid_t w = r == 0 ? waitpid(p, &st, 0) : -1;
        printf("posix_spawn echo: ret=%d\n", r);
        if (r == 0)
            show_status("posix_spawn echo", p, w, st);

        fflush(stdout);
        char *sargs[] = {(char *)self, "child", "4", "spawned", NULL};
        r = posix_spawn(&p, self, NULL, NULL, sargs, environ);
        w = r == 0 ? waitpid(p, &st, 0) : -1;
        printf("posix_spawn self: ret=%d\n", r);
        if (r == 0)
            show_status("posix_spawn self", p, w, st);

        char *nargs[] = {"x", NULL};
        r = posix_spawn(&p, "/nonexistent/prog", NULL, NULL, nargs, environ);
        printf("posix_spawn missing: ret=%s\n", r == ENOENT ? "ENOENT" : r == 0 ? "0" : strerror(r));
        if (r == 0)
            waitpid(p, &st, 0);
    }

    /* pipes both ways: the child sums what the parent sends */
    {
        int to_child[2], to_parent[2];
        (void)!pipe(to_child);
        (void)!pipe(to_parent);
        pid_t p = xfork();
        if (p == 0) {
            close(to_child[1]);
            close(to_parent[0]);
            long sum = 0, n;
            int buf[256];
            while ((n = read(to_child[0], buf, sizeof buf)) > 0)
                for (long i = 0; i < n / 4; i++)
                    sum += buf[i];
            char out[64];
            int len = snprintf(out, sizeof out, "sum=%ld", sum);
            (void)!write(to_parent[1], out, len);
            _exit(0);
        }
        close(to_child[0]);
        close(to_parent[1]);
        for (int i = 1; i <= 10000; i++)
            (void)!write(to_child[1], &i, 4);
        close(to_child[1]);
        char in[64] = {0};
        ssize_t n = read(to_parent[0], in, sizeof in - 1);
        close(to_parent[0]);
        int st;
        pid_t w = waitpid(p, &st, 0);
        printf("pipe child replied %zd bytes: %s\n", n, in);
        show_status("pipe child", p, w, st);
    }

    /* 3-level fork tree */
    {
        int r = tree(3, 1);
        printf("fork tree: %d (want %d)\n", r, tree_expected(3, 1));
    }

    /* system() */
    {
        fflush(stdout);
        int st = system("echo from-system; exit 6");
        printf("system: exited=%d code=%d\n", WIFEXITED(st), WEXITSTATUS(st));
    }

    /* wait with no children */
    errno = 0;
    pid_t w = wait(NULL);
    printf("wait with no children: %d %s\n", w, errno == ECHILD ? "ECHILD" : strerror(errno));
    return 0;
}
