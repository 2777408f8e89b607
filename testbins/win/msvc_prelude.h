// The prelude of the MSVC-target C++ test programs (cxx_msvc_*.cpp): no
// MSVC headers or libraries here, so the Windows build declares what it
// uses of ucrt (printf's entry points, malloc, exit, argv), defines
// operator new/delete and type_info's vftable (RTTI type descriptors point
// at it; nothing calls through it), and has its own entry point, which
// installs an unhandled-exception filter as the CRT's start-up code does
// (a C++ exception nobody catches ends in std::terminate). The Linux build
// (clang++, Itanium ABI) gets the same say() over stdio.
// MSVC_PRELUDE_DLL: for a DLL (no entry point).
#ifndef MSVC_PRELUDE_H
#define MSVC_PRELUDE_H
#include <stdarg.h>
#include <stddef.h>

// Set when the program ends in std::terminate (abort does not flush).
static bool always_flush;

#ifdef _MSC_VER
extern "C" {
struct FILE;
FILE *__acrt_iob_func(unsigned);
int __stdio_common_vfprintf(unsigned long long, FILE *, const char *, void *, va_list);
int fflush(FILE *);
int *__p___argc(void);
char ***__p___argv(void);
void *malloc(size_t);
void free(void *);
[[noreturn]] void exit(int);
int _fltused = 0;
// RTTI type descriptors point at type_info's vftable; nothing here calls
// through it.
const void *urun_type_info_vftable[2] = {nullptr, nullptr};
}
#pragma comment(linker, "/alternatename:??_7type_info@@6B@=urun_type_info_vftable")
void *operator new(size_t n) { return malloc(n); }
void operator delete(void *p) noexcept { free(p); }
void operator delete(void *p, size_t) noexcept { free(p); }
static int say(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int r = __stdio_common_vfprintf(0, __acrt_iob_func(1), fmt, nullptr, ap);
    va_end(ap);
    if (always_flush)
        fflush(__acrt_iob_func(1));
    return r;
}
extern "C" {
struct EXCEPTION_RECORD {
    unsigned code, flags;
    EXCEPTION_RECORD *next;
    void *address;
    unsigned nparams;
    unsigned long long info[15];
};
struct EXCEPTION_POINTERS {
    EXCEPTION_RECORD *rec;
    void *ctx;
};
typedef long (*TopFilter)(EXCEPTION_POINTERS *);
__declspec(dllimport) TopFilter SetUnhandledExceptionFilter(TopFilter);
[[noreturn]] void __std_terminate();
}
#ifndef MSVC_PRELUDE_DLL
// As the CRT's start-up code does: a C++ exception nobody catches ends in
// std::terminate.
static long unhandled(EXCEPTION_POINTERS *ep) {
    if (ep->rec->code == 0xe06d7363)
        __std_terminate();
    return 0;
}
int main(int argc, char **argv);
extern "C" void mainCRTStartup() {
    SetUnhandledExceptionFilter(unhandled);
    exit(main(*__p___argc(), *__p___argv()));
}
#endif
// std::exception's message as vcruntime's <vcruntime_exception.h> keeps
// it: copied with __std_exception_copy, freed with __std_exception_destroy.
extern "C" {
struct __std_exception_data {
    const char *what;
    bool do_free;
};
void __std_exception_copy(const __std_exception_data *from, __std_exception_data *to);
void __std_exception_destroy(__std_exception_data *data);
}
class Message {
    __std_exception_data data;

  public:
    explicit Message(const char *m) : data() {
        __std_exception_data init = {m, true};
        __std_exception_copy(&init, &data);
    }
    Message(const Message &o) : data() { __std_exception_copy(&o.data, &data); }
    virtual ~Message() { __std_exception_destroy(&data); }
    const char *what() const { return data.what ? data.what : "Unknown exception"; }
};
#define NOINLINE __declspec(noinline)
#else
#include <stdio.h>
static int say(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int r = vprintf(fmt, ap);
    va_end(ap);
    if (always_flush)
        fflush(stdout);
    return r;
}
#include <stdlib.h>
#include <string.h>
class Message {
    char *text;

  public:
    explicit Message(const char *m) : text(strdup(m)) {}
    Message(const Message &o) : text(strdup(o.text)) {}
    virtual ~Message() { free(text); }
    const char *what() const { return text; }
};
#define NOINLINE __attribute__((noinline))
#endif
#endif
