/* File I/O on a temporary file named by argv[1]: write, read back line
 * by line, append, seek, size, remove. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: fileio PATH\n");
        return 2;
    }
    const char *path = argv[1];
    FILE *f = fopen(path, "w");
    if (!f) {
        perror("fopen w");
        return 1;
    }
    for (int i = 0; i < 5; i++) fprintf(f, "line %d: %s\n", i, i % 2 ? "odd" : "even");
    fputs("last line\n", f);
    fclose(f);

    f = fopen(path, "r");
    if (!f) return 1;
    char buf[128];
    int lines = 0;
    while (fgets(buf, sizeof buf, f)) {
        lines++;
        printf("read: %s", buf);
    }
    printf("lines=%d eof=%d\n", lines, feof(f) != 0);
    fclose(f);

    f = fopen(path, "ab");
    fwrite("appended\n", 1, 9, f);
    fclose(f);

    f = fopen(path, "rb");
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, -9, SEEK_END);
    size_t got = fread(buf, 1, 8, f);
    buf[got] = 0;
#ifdef _WIN32
    /* The six lines written in text mode ended in CR LF on Windows. */
    size -= 6;
#endif
    printf("binary size=%ld tail=%s\n", size, buf);
    fclose(f);

    if (remove(path) != 0) {
        perror("remove");
        return 1;
    }
    printf("removed: %s\n", fopen(path, "r") ? "no" : "yes");
    return 0;
}
