/* Check the auxiliary vector against what the program can see of itself.
 * Prints booleans only (never addresses), so native and emulated runs print
 * the same thing. */
#include <elf.h>
#include <link.h>
#include <stdio.h>
#include <string.h>
#include <sys/auxv.h>
#include <unistd.h>

/* Defined by the linker at the program's own ELF header (GNU ld, lld). */
extern const ElfW(Ehdr) __ehdr_start;

static int failures;

static void check(const char *what, int ok)
{
    printf("%s: %s\n", what, ok ? "true" : "false");
    if (!ok)
        failures++;
}

static const char *base_name(const char *p)
{
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

int main(int argc, char **argv)
{
    (void)argc;
    const ElfW(Ehdr) *eh = &__ehdr_start;
    const ElfW(Phdr) *own_ph = (const ElfW(Phdr) *)((const char *)eh + eh->e_phoff);

    /* Load bias: where the header is minus where the file says it is. */
    uintptr_t bias = 0;
    int found_first_load = 0;
    for (int i = 0; i < eh->e_phnum; i++) {
        if (own_ph[i].p_type == PT_LOAD && own_ph[i].p_offset == 0) {
            bias = (uintptr_t)eh - own_ph[i].p_vaddr;
            found_first_load = 1;
            break;
        }
    }
    check("ehdr_found", found_first_load && memcmp(eh->e_ident, ELFMAG, SELFMAG) == 0);

    check("pagesz_4096", getauxval(AT_PAGESZ) == 4096);
    check("pagesz_matches_sysconf", (long)getauxval(AT_PAGESZ) == sysconf(_SC_PAGESIZE));

    const unsigned char *rnd = (const unsigned char *)getauxval(AT_RANDOM);
    int rnd_nonzero = 0;
    if (rnd)
        for (int i = 0; i < 16; i++)
            rnd_nonzero |= rnd[i];
    check("random_nonnull", rnd != NULL);
    check("random_16_bytes_not_all_zero", rnd_nonzero != 0);

    check("phdr_matches_own_headers", getauxval(AT_PHDR) == (uintptr_t)own_ph);
    check("phnum_matches_own_headers", getauxval(AT_PHNUM) == eh->e_phnum);
    check("phent_is_sizeof_phdr", getauxval(AT_PHENT) == sizeof(ElfW(Phdr)));
    check("entry_matches_e_entry", getauxval(AT_ENTRY) == eh->e_entry + bias);

    const char *execfn = (const char *)getauxval(AT_EXECFN);
    check("execfn_nonnull", execfn != NULL);
    check("execfn_matches_argv0",
          execfn && (strcmp(execfn, argv[0]) == 0 ||
                     strcmp(base_name(execfn), base_name(argv[0])) == 0));

    check("uid_matches", getauxval(AT_UID) == getuid());
    check("euid_matches", getauxval(AT_EUID) == geteuid());
    check("gid_matches", getauxval(AT_GID) == getgid());
    check("egid_matches", getauxval(AT_EGID) == getegid());
    check("secure_is_0", getauxval(AT_SECURE) == 0);
    check("clktck_positive", getauxval(AT_CLKTCK) > 0);

    puts(failures ? "FAIL" : "ok");
    return failures ? 1 : 0;
}
