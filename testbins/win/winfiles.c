/* tests/pe.rs: kernel32's file, directory, console and wide-environment
 * functions (CreateFileW, WriteFile/ReadFile, GetFileSizeEx,
 * SetFilePointerEx, FindFirstFileW/FindNextFileW, GetFullPathNameW,
 * Get/SetCurrentDirectoryW, GetFileAttributesW, DeleteFileW,
 * Create/RemoveDirectoryW, GetEnvironmentVariableW, GetConsoleMode,
 * WriteConsoleW, _wfopen, fwprintf, wmain's arguments through __wgetmainargs) in
 * the Windows build; the same steps with POSIX calls in the Linux twin.
 * argv[1] is a fresh directory (canonical path) to work in. */
#ifndef _WIN32
#define _GNU_SOURCE
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _WIN32
#include <windows.h>
#else
#include <dirent.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <sys/stat.h>
#include <unistd.h>
#include <wchar.h>
#endif

static int cmp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

#ifdef _WIN32
static char *utf8(const wchar_t *w)
{
    static char buf[8][1024];
    static int k;
    char *b = buf[k++ % 8];
    WideCharToMultiByte(CP_UTF8, 0, w, -1, b, 1024, NULL, NULL);
    return b;
}

static void make(const wchar_t *name, const char *text)
{
    HANDLE h = CreateFileW(name, GENERIC_WRITE, 0, NULL, CREATE_ALWAYS, FILE_ATTRIBUTE_NORMAL, NULL);
    DWORD n;
    WriteFile(h, text, strlen(text), &n, NULL);
    CloseHandle(h);
}

int wmain(int argc, wchar_t **wargv)
{
    for (int i = 1; i < argc; i++)
        printf("arg %d: %s\n", i, utf8(wargv[i]));
    if (argc < 2 || !SetCurrentDirectoryW(wargv[1]))
        return 2;
    wchar_t cwd[1024];
    GetCurrentDirectoryW(1024, cwd);
    printf("cwd is the directory: %s\n", !wcscmp(cwd, wargv[1]) ? "yes" : "no");
    CreateDirectoryW(L"sub", NULL);
    make(L"sub\\b.txt", "hello b\n");
    make(L"sub/a.TXT", "hello a, longer\n");
    make(L"sub\\c.dat", "not listed\n");
    HANDLE h = CreateFileW(L"sub\\a.TXT", GENERIC_READ, FILE_SHARE_READ, NULL, OPEN_EXISTING, 0, NULL);
    LARGE_INTEGER size, to = {.QuadPart = 6}, at;
    GetFileSizeEx(h, &size);
    SetFilePointerEx(h, to, &at, FILE_BEGIN);
    char buf[32] = {0};
    DWORD n;
    ReadFile(h, buf, 9, &n, NULL);
    CloseHandle(h);
    printf("size %lld, at %lld, read %lu: %s\n", size.QuadPart, at.QuadPart, n, buf);
    h = CreateFileW(L"sub\\b.txt", GENERIC_WRITE, 0, NULL, CREATE_NEW, 0, NULL);
    printf("CREATE_NEW on an existing file fails: %s\n", h == INVALID_HANDLE_VALUE ? "yes" : "no");
    h = CreateFileW(L"sub\\none.txt", GENERIC_READ, 0, NULL, OPEN_EXISTING, 0, NULL);
    printf("OPEN_EXISTING on a missing file fails: %s\n", h == INVALID_HANDLE_VALUE ? "yes" : "no");
    WIN32_FIND_DATAW fd;
    char *names[16];
    int count = 0;
    HANDLE f = FindFirstFileW(L"sub\\*.txt", &fd);
    if (f != INVALID_HANDLE_VALUE) {
        do
            names[count++] = strdup(utf8(fd.cFileName));
        while (count < 16 && FindNextFileW(f, &fd));
        FindClose(f);
    }
    qsort(names, count, sizeof *names, cmp);
    printf("*.txt:");
    for (int i = 0; i < count; i++)
        printf(" %s", names[i]);
    printf("\n");
    wchar_t full[1024], *part;
    GetFullPathNameW(L"sub\\..\\sub\\a.TXT", 1024, full, &part);
    printf("full path: %s (file part %s)\n", utf8(full + wcslen(wargv[1])), utf8(part));
    printf("sub is a directory: %s, missing has no attributes: %s\n",
           GetFileAttributesW(L"sub") & FILE_ATTRIBUTE_DIRECTORY ? "yes" : "no",
           GetFileAttributesW(L"missing") == INVALID_FILE_ATTRIBUTES ? "yes" : "no");
    FILE *w = _wfopen(L"sub\\w.txt", L"w");
    fputs("through _wfopen\n", w);
    fclose(w);
    w = fopen("sub/w.txt", "r");
    fgets(buf, sizeof buf, w);
    fclose(w);
    printf("read back: %s", buf);
    wchar_t wb[64];
    swprintf(wb, 64, L"%ls/%d", L"wide", 42);
    w = _wfopen(L"sub\\ww.txt", L"w");
    fwprintf(w, L"%ls %d %.1f\n", L"fw", 7, 2.5);
    fclose(w);
    w = fopen("sub/ww.txt", "r");
    fgets(buf, sizeof buf, w);
    fclose(w);
    printf("swprintf: %s, fwprintf: %s", utf8(wb), buf);
    int gone = DeleteFileW(L"sub\\a.TXT") && DeleteFileW(L"sub\\b.txt") && DeleteFileW(L"sub\\c.dat") &&
               DeleteFileW(L"sub\\w.txt") && DeleteFileW(L"sub\\ww.txt") && RemoveDirectoryW(L"sub");
    printf("cleaned up: %s\n", gone ? "yes" : "no");
    wchar_t v[64];
    DWORD vl = GetEnvironmentVariableW(L"WINFILES_VAR", v, 64);
    printf("WINFILES_VAR (%lu): %s\n", vl, vl ? utf8(v) : "(unset)");
    DWORD mode;
    HANDLE out = GetStdHandle(STD_OUTPUT_HANDLE);
    int console = GetConsoleMode(out, &mode);
    printf("stdout is a console: %s\n", console ? "yes" : "no");
    fflush(stdout);
    const wchar_t *text = L"h\u00e9llo w\u00f6rld \u2713\n";
    if (console)
        WriteConsoleW(out, text, wcslen(text), &n, NULL);
    else
        WriteFile(out, utf8(text), strlen(utf8(text)), &n, NULL);
    return 0;
}
#else
static void make(const char *name, const char *text)
{
    int fd = open(name, O_WRONLY | O_CREAT | O_TRUNC, 0666);
    if (write(fd, text, strlen(text)) < 0)
        exit(3);
    close(fd);
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        printf("arg %d: %s\n", i, argv[i]);
    if (argc < 2 || chdir(argv[1]))
        return 2;
    char cwd[1024];
    printf("cwd is the directory: %s\n", getcwd(cwd, sizeof cwd) && !strcmp(cwd, argv[1]) ? "yes" : "no");
    mkdir("sub", 0777);
    make("sub/b.txt", "hello b\n");
    make("sub/a.TXT", "hello a, longer\n");
    make("sub/c.dat", "not listed\n");
    int fd = open("sub/a.TXT", O_RDONLY);
    struct stat st;
    fstat(fd, &st);
    long long at = lseek(fd, 6, SEEK_SET);
    char buf[32] = {0};
    long n = read(fd, buf, 9);
    close(fd);
    printf("size %lld, at %lld, read %ld: %s\n", (long long)st.st_size, at, n, buf);
    printf("CREATE_NEW on an existing file fails: %s\n", open("sub/b.txt", O_WRONLY | O_CREAT | O_EXCL, 0666) < 0 ? "yes" : "no");
    printf("OPEN_EXISTING on a missing file fails: %s\n", open("sub/none.txt", O_RDONLY) < 0 ? "yes" : "no");
    char *names[16];
    int count = 0;
    DIR *d = opendir("sub");
    for (struct dirent *e; d && (e = readdir(d)) && count < 16;)
        if (!fnmatch("*.txt", e->d_name, FNM_CASEFOLD))
            names[count++] = strdup(e->d_name);
    closedir(d);
    qsort(names, count, sizeof *names, cmp);
    printf("*.txt:");
    for (int i = 0; i < count; i++)
        printf(" %s", names[i]);
    printf("\n");
    char *full = realpath("sub/../sub/a.TXT", NULL);
    printf("full path: %s (file part %s)\n", full + strlen(argv[1]), strrchr(full, '/') + 1);
    printf("sub is a directory: %s, missing has no attributes: %s\n",
           !stat("sub", &st) && S_ISDIR(st.st_mode) ? "yes" : "no", stat("missing", &st) ? "yes" : "no");
    FILE *w = fopen("sub/w.txt", "w");
    fputs("through _wfopen\n", w);
    fclose(w);
    w = fopen("sub/w.txt", "r");
    if (!fgets(buf, sizeof buf, w))
        return 3;
    fclose(w);
    printf("read back: %s", buf);
    wchar_t wb[64];
    swprintf(wb, 64, L"%ls/%d", L"wide", 42);
    char nb[64];
    int k = 0;
    for (; wb[k] && k < 63; k++)
        nb[k] = (char)wb[k];
    nb[k] = 0;
    w = fopen("sub/ww.txt", "w");
    fwprintf(w, L"%ls %d %.1f\n", L"fw", 7, 2.5);
    fclose(w);
    w = fopen("sub/ww.txt", "r");
    if (!fgets(buf, sizeof buf, w))
        return 3;
    fclose(w);
    printf("swprintf: %s, fwprintf: %s", nb, buf);
    int gone = !unlink("sub/a.TXT") && !unlink("sub/b.txt") && !unlink("sub/c.dat") && !unlink("sub/w.txt") &&
               !unlink("sub/ww.txt") && !rmdir("sub");
    printf("cleaned up: %s\n", gone ? "yes" : "no");
    const char *v = getenv("WINFILES_VAR");
    printf("WINFILES_VAR (%lu): %s\n", v ? (unsigned long)strlen(v) : 0ul, v ? v : "(unset)");
    printf("stdout is a console: %s\n", isatty(1) ? "yes" : "no");
    fflush(stdout);
    const char *text = "h\u00e9llo w\u00f6rld \u2713\n";
    if (write(1, text, strlen(text)) < 0)
        return 3;
    return 0;
}
#endif
