// MSVC-target C++ exceptions across a DLL boundary and on several threads.
// For Windows this source is built twice: with PART_LIB as
// cxx_msvc_lib.dll, and with PART_EXE as cxx_msvc_dll.exe, which imports
// it; so a ThrowInfo and its type descriptors live in one image and the
// catch clauses' descriptors in the other (types match by name), and the
// frames a search walks alternate between images. For Linux (clang++,
// the oracle) both parts are one program.
//
// Cases: a class thrown in the DLL caught by its base in the program; the
// program's callback throwing through DLL frames (their destructors run)
// to the program; the DLL catching the program's exception; a rethrow in
// the DLL's catch(...) caught by the program; then four threads throwing
// through the DLL at once (each catch block's exception is per thread).
#if defined(_MSC_VER) && defined(PART_LIB)
#define MSVC_PRELUDE_DLL
#endif
#include "msvc_prelude.h"

#if !defined(_MSC_VER)
#define PART_LIB
#define PART_EXE
#define API
#elif defined(PART_LIB)
#define API __declspec(dllexport)
#else
#define API __declspec(dllimport)
#endif

// Copies are counted, not printed: MSVC builds a catch-by-value object
// before the unwind (so before the destructors of the frames between),
// Itanium after it; both copy once.
static int copies;

struct Err {
    int code;
    explicit Err(int c) : code(c) {}
    Err(const Err &o) : code(o.code) { copies++; }
    virtual ~Err() {}
    virtual const char *kind() const { return "Err"; }
};

struct LibErr : Err {
    explicit LibErr(int c) : Err(c) {}
    const char *kind() const override { return "LibErr"; }
};

struct Guard {
    const char *name;
    bool quiet;
    Guard(const char *n, bool q) : name(n), quiet(q) {
        if (!quiet)
            say("  enter %s\n", name);
    }
    ~Guard() {
        if (!quiet)
            say("  leave %s\n", name);
    }
};

API void lib_throw(int code, bool quiet);
API int lib_call(void (*cb)(int), int v);
API void lib_rethrow(int code);

#ifdef PART_LIB
NOINLINE void lib_throw(int code, bool quiet) {
    Guard g("lib_throw", quiet);
    if (code < 0)
        throw -code;
    throw LibErr(code);
}

NOINLINE int lib_call(void (*cb)(int), int v) {
    Guard g("lib_call", false);
    try {
        cb(v);
    } catch (int i) {
        say("  the DLL caught int %d\n", i);
        return i;
    }
    return 0;
}

NOINLINE void lib_rethrow(int code) {
    try {
        lib_throw(code, true);
    } catch (...) {
        say("  the DLL's catch(...) rethrows\n");
        throw;
    }
}
#endif

#ifdef PART_EXE
#ifdef _MSC_VER
extern "C" {
__declspec(dllimport) void *CreateThread(void *, size_t, unsigned long (*)(void *), void *, unsigned, unsigned *);
__declspec(dllimport) unsigned WaitForSingleObject(void *, unsigned);
}
#else
#include <pthread.h>
#endif

static void exe_callback(int v) {
    Guard g("exe_callback", false);
    if (v > 100)
        throw Err(v);
    throw v;
}

struct Work {
    int id;
    long sum;
    int libs;
};

static unsigned long worker(void *p) {
    Work *w = static_cast<Work *>(p);
    for (int i = 0; i < 1500; i++) {
        try {
            try {
                lib_throw(i % 3 == 0 ? -(i + w->id) : i + w->id, true);
            } catch (const Err &e) {
                w->libs++;
                throw;
            }
        } catch (int v) {
            w->sum += v;
        } catch (const LibErr &e) {
            w->sum += e.code;
        }
    }
    return 0;
}

int main(int, char **) {
    say("a DLL's class caught by its base:\n");
    try {
        lib_throw(7, false);
    } catch (const Err &e) {
        say("  caught %s %d as Err&\n", e.kind(), e.code);
    }
    say("the program's exception through DLL frames:\n");
    try {
        lib_call(exe_callback, 101);
    } catch (Err e) {
        say("  the program caught Err %d by value (%d copy)\n", e.code, copies);
    }
    say("the DLL catches the program's exception:\n");
    say("  lib_call returned %d\n", lib_call(exe_callback, 5));
    say("a rethrow in the DLL:\n");
    try {
        lib_rethrow(9);
    } catch (LibErr &e) {
        say("  the program caught the rethrown %s %d\n", e.kind(), e.code);
    }
    say("threads:\n");
    Work w[4] = {{1, 0, 0}, {2, 0, 0}, {3, 0, 0}, {4, 0, 0}};
#ifdef _MSC_VER
    void *h[4];
    for (int i = 0; i < 4; i++)
        h[i] = CreateThread(nullptr, 0, worker, &w[i], 0, nullptr);
    for (int i = 0; i < 4; i++)
        WaitForSingleObject(h[i], 0xffffffff);
#else
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], nullptr, [](void *p) -> void * { return (void *)worker(p); }, &w[i]);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], nullptr);
#endif
    for (int i = 0; i < 4; i++)
        say("  thread %d: sum %ld, %d caught from the DLL and rethrown\n", w[i].id, w[i].sum, w[i].libs);
    return 0;
}
#endif
