// C++ exceptions, the same source for Linux (g++) and Windows (mingw g++,
// where they unwind through SEH: RaiseException, RtlUnwindEx,
// RtlVirtualUnwind, RtlLookupFunctionEntry, RtlCaptureContext).
// Several types thrown and caught, rethrow, nested try, destructors that
// print while the stack unwinds, catch(...), an exception crossing frames
// and a function pointer. With "uncaught": an exception nobody catches
// (std::terminate; tests/pe.rs says what is compared).
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>

namespace {

struct Noisy {
    const char *name;
    explicit Noisy(const char *n) : name(n) { std::printf("  ctor %s\n", name); }
    ~Noisy() { std::printf("  dtor %s\n", name); }
};

struct Base {
    int code;
    explicit Base(int c) : code(c) {}
    virtual ~Base() {}
    virtual const char *kind() const { return "Base"; }
};

struct Derived : Base {
    explicit Derived(int c) : Base(c) {}
    const char *kind() const override { return "Derived"; }
};

[[gnu::noinline]] void thrower(int what) {
    Noisy n("thrower");
    switch (what) {
    case 0: throw 42;
    case 1: throw std::string("a string");
    case 2: throw std::runtime_error("runtime boom");
    case 3: throw Derived(7);
    case 4: throw 2.5;
    default: throw "a C string";
    }
}

[[gnu::noinline]] int level3(int what) {
    Noisy n("level3");
    thrower(what);
    return 3;
}

[[gnu::noinline]] int level2(int (*f)(int), int what) {
    Noisy n("level2");
    return f(what) + 1;
}

[[gnu::noinline]] int level1(int what) {
    Noisy n("level1");
    return level2(level3, what) + 1;
}

void catch_each(int what) {
    std::printf("case %d:\n", what);
    try {
        level1(what);
        std::printf("  not thrown?\n");
    } catch (int v) {
        std::printf("  caught int %d\n", v);
    } catch (const std::string &s) {
        std::printf("  caught std::string '%s'\n", s.c_str());
    } catch (const std::exception &e) {
        std::printf("  caught std::exception '%s'\n", e.what());
    } catch (const Base &b) {
        std::printf("  caught %s by Base&, code %d\n", b.kind(), b.code);
    } catch (double d) {
        std::printf("  caught double %.2f\n", d);
    } catch (...) {
        std::printf("  caught by catch(...)\n");
    }
}

[[gnu::noinline]] void rethrower() {
    Noisy n("rethrower");
    try {
        thrower(3);
    } catch (Base &b) {
        std::printf("  rethrower saw code %d, adds 100\n", b.code);
        b.code += 100;
        throw;
    }
}

[[gnu::noinline]] void nested() {
    try {
        Noisy n("outer try");
        try {
            Noisy m("inner try");
            thrower(0);
        } catch (int v) {
            std::printf("  inner caught %d, throws a new one\n", v);
            throw std::logic_error("from the inner handler");
        }
    } catch (const std::logic_error &e) {
        std::printf("  outer caught '%s'\n", e.what());
    }
}

int deep(int n) {
    Noisy g(n % 2 ? "odd" : "even");
    if (n == 0)
        throw std::out_of_range("bottom");
    return deep(n - 1) + 1;
}

}  // namespace

int main(int argc, char **argv) {
    for (int what = 0; what < 6; what++)
        catch_each(what);
    std::printf("rethrow:\n");
    try {
        rethrower();
    } catch (const Derived &d) {
        std::printf("  main caught %s code %d\n", d.kind(), d.code);
    }
    std::printf("nested:\n");
    nested();
    std::printf("deep:\n");
    try {
        deep(5);
    } catch (const std::exception &e) {
        std::printf("  caught '%s'\n", e.what());
    }
    std::printf("no exception:\n");
    try {
        Noisy n("quiet");
    } catch (...) {
        std::printf("  impossible\n");
    }
    if (argc > 1 && std::strcmp(argv[1], "uncaught") == 0) {
        // Unbuffered: abort() does not flush, and what was printed before
        // it must reach the pipe on both systems.
        std::setvbuf(stdout, nullptr, _IONBF, 0);
        std::printf("uncaught:\n");
        level1(1);
    }
    std::printf("done\n");
    return 0;
}
