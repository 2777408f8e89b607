// The static part of MSVC's msvcrt.lib that a Rust program built for
// x86_64-pc-windows-msvc links, for building one here with lld-link and no
// MSVC libraries (testbins/Makefile): everything else msvcrt.lib holds is
// import stubs (vcruntime140.dll, the api-ms-win-crt-* sets), which
// llvm-dlltool makes from testbins/win/msvc/*.def and llvm-lib puts beside
// this object in out/win/msvc/msvcrt.lib. What is here, and only that:
//
// - mainCRTStartup, the entry point: runs the C initializers the linker
//   gathers in .CRT$XI*/.CRT$XC* and calls main with ucrt's argc/argv
//   (Rust's std reads its arguments from GetCommandLineW itself), then
//   exit() with main's result (101 after an uncaught panic in main).
// - The TLS directory (_tls_used, _tls_index): Rust's thread_local!s are
//   native TLS (gs:[0x58] indexed by _tls_index), and std's thread-local
//   destructors run from a TLS callback it puts in .CRT$XLB.
// - __chkstk, the stack probe the compiler calls before a frame of 4 KiB
//   or more.
// - _fltused, and type_info's vftable: Rust's panic runtime builds
//   MSVC-style type descriptors pointing at it (nothing calls through it).
//
// Not here, because this program does not need them: /GS security cookies
// (Rust does not emit them), atexit tables (ucrt keeps them), the
// unhandled-exception filter of the C++ start-up code (a Rust panic never
// leaves lang_start's catch_unwind).
//
// Built with clang --target=x86_64-pc-windows-msvc; no headers.

typedef void (*Init)(void);
typedef int (*InitE)(void);

int *__p___argc(void);
char ***__p___argv(void);
__attribute__((noreturn)) void exit(int);
int main(int argc, char **argv);

// The linker sorts the .CRT$ groups by the name after the '$': the
// initializers of every object lie between the A and Z markers (C ones,
// returning non-zero on failure, in XI; C++-style ones in XC).
__attribute__((section(".CRT$XIA"), used)) static InitE xi_a[1];
__attribute__((section(".CRT$XIZ"), used)) static InitE xi_z[1];
__attribute__((section(".CRT$XCA"), used)) static Init xc_a[1];
__attribute__((section(".CRT$XCZ"), used)) static Init xc_z[1];

// TLS: the template between .tls and .tls$ZZZ, the callbacks between
// .CRT$XLA and .CRT$XLZ (null-terminated: XLZ is the terminator), and the
// directory the loader reads (IMAGE_TLS_DIRECTORY64; lld-link points the
// TLS data directory at the symbol _tls_used).
unsigned int _tls_index = 0;
__attribute__((section(".tls"), used)) char _tls_start = 0;
__attribute__((section(".tls$ZZZ"), used)) char _tls_end = 0;
__attribute__((section(".CRT$XLA"), used)) Init __xl_a = 0;
__attribute__((section(".CRT$XLZ"), used)) Init __xl_z = 0;

struct TlsDirectory {
    unsigned long long start, end, index, callbacks;
    unsigned int zero_fill, characteristics;
};
__attribute__((section(".rdata$T"), used)) const struct TlsDirectory _tls_used = {
    (unsigned long long)&_tls_start, (unsigned long long)&_tls_end, (unsigned long long)&_tls_index,
    (unsigned long long)(&__xl_a + 1), 0, 0,
};

int _fltused = 0x9875;

// type_info's vftable (its C++ name is ??_7type_info@@6B@).
const void *const urun_type_info_vftable[2] __asm__("??_7type_info@@6B@") = {0, 0};

void mainCRTStartup(void) {
    for (InitE *p = xi_a + 1; p < xi_z; p++)
        if (*p && (*p)() != 0)
            exit(255);
    for (Init *p = xc_a + 1; p < xc_z; p++)
        if (*p)
            (*p)();
    exit(main(*__p___argc(), *__p___argv()));
}

// __chkstk: RAX is the size of the frame about to be allocated; touch
// each page from the caller's stack pointer down to RSP - RAX, in order,
// so the stack's guard page moves down a page at a time. Everything but
// R10, R11 and the flags is kept, and RSP is left as it was (the caller
// subtracts RAX itself).
__asm__(".text\n"
        ".globl __chkstk\n"
        "__chkstk:\n"
        "    movq %rsp, %r10\n"
        "    addq $8, %r10\n"           // the caller's RSP (above our return address)
        "    movq %r10, %r11\n"
        "    subq %rax, %r11\n"         // the lowest address of the new frame
        "    jb 2f\n"                   // wrapped: probe down to 0 (it faults first)
        "1:  subq $0x1000, %r10\n"
        "    cmpq %r11, %r10\n"
        "    jb 3f\n"
        "    testb %al, (%r10)\n"
        "    jmp 1b\n"
        "2:  xorl %r11d, %r11d\n"
        "    jmp 1b\n"
        "3:  testb %al, (%r11)\n"
        "    ret\n");
