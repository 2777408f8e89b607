// C++ exceptions with the MSVC runtime's data (clang --target
// x86_64-pc-windows-msvc: __CxxFrameHandler3 tables, _CxxThrowException,
// catch funclets), and the same source built for Linux with clang++
// (Itanium ABI) as the oracle. There are no MSVC headers or libraries
// here: the Windows build has a tiny prelude of its own declarations
// (msvc_prelude.h); testbins/Makefile makes the import libraries from
// .def files.
//
// Cases: int, struct, class caught by its base (a second base, a virtual
// base, pointers), const char*, catch(...), rethrow, nested try in a
// catch, RAII through several frames, a partially built object, catch by
// value (copy constructor), a new exception thrown from a catch block, a
// catch block and a destructor (run by an unwind) with their own
// try/catch, an exception owning its message (__std_exception_copy), and
// many throws in a loop (the stack must not grow). With an argument,
// cases that end in std::terminate: "noexcept" (an exception leaving a
// noexcept function), "dtor" (a destructor throwing during an unwind) and
// "rethrow" (throw; with no exception being handled).
#include "msvc_prelude.h"

namespace {

int live = 0;

struct Noisy {
    const char *name;
    explicit Noisy(const char *n) : name(n) {
        live++;
        say("  ctor %s\n", name);
    }
    ~Noisy() {
        live--;
        say("  dtor %s\n", name);
    }
};

struct Point {
    int x, y;
};

struct Base {
    int code;
    explicit Base(int c) : code(c) {}
    virtual ~Base() { say("  ~Base %d\n", code); }
    virtual const char *kind() const { return "Base"; }
};

struct Derived : Base {
    explicit Derived(int c) : Base(c) {}
    ~Derived() override { say("  ~Derived %d\n", code); }
    const char *kind() const override { return "Derived"; }
};

// Counts its copies: catch by value copies the exception object.
struct Copied {
    int id;
    int gen;
    explicit Copied(int i) : id(i), gen(0) { say("  Copied(%d)\n", id); }
    Copied(const Copied &o) : id(o.id), gen(o.gen + 1) { say("  Copied(copy of %d, generation %d)\n", id, gen); }
    ~Copied() { say("  ~Copied(%d, generation %d)\n", id, gen); }
};

struct Other {
    int v;
    explicit Other(int x) : v(x) { say("  Other(%d)\n", v); }
    Other(const Other &o) : v(o.v) { say("  Other(copy %d)\n", v); }
    ~Other() { say("  ~Other(%d)\n", v); }
};

NOINLINE void thrower(int what) {
    Noisy n("thrower");
    switch (what) {
    case 0:
        throw 42;
    case 1:
        throw Point{3, 4};
    case 2:
        throw Derived(7);
    case 3:
        throw "a C string";
    default:
        throw 2.5;
    }
}

NOINLINE int level3(int what) {
    Noisy n("level3");
    thrower(what);
    return 3;
}

NOINLINE int level2(int (*f)(int), int what) {
    Noisy n("level2");
    return f(what) + 1;
}

NOINLINE int level1(int what) {
    Noisy n("level1");
    return level2(level3, what) + 1;
}

void catch_each(int what) {
    say("case %d:\n", what);
    try {
        level1(what);
        say("  not thrown?\n");
    } catch (int v) {
        say("  caught int %d\n", v);
    } catch (const Point &p) {
        say("  caught Point (%d, %d)\n", p.x, p.y);
    } catch (const Base &b) {
        say("  caught %s by Base&, code %d\n", b.kind(), b.code);
    } catch (const char *s) {
        say("  caught const char* '%s'\n", s);
    } catch (...) {
        say("  caught by catch(...)\n");
    }
}

NOINLINE void rethrow_from_catch_all() {
    try {
        Noisy n("inner");
        throw 5;
    } catch (...) {
        say("  inner catch(...), rethrowing\n");
        throw;
    }
}

void rethrow() {
    say("rethrow:\n");
    try {
        rethrow_from_catch_all();
    } catch (int &v) {
        say("  outer caught the rethrown int %d\n", v);
    }
}

void nested_in_catch() {
    say("nested try in a catch:\n");
    try {
        throw 1;
    } catch (int a) {
        say("  caught %d\n", a);
        try {
            Noisy n("in the catch");
            throw Point{5, 6};
        } catch (Point &p) {
            say("  nested caught Point (%d, %d), outer had %d\n", p.x, p.y, a);
        }
        say("  back in the first catch\n");
    }
    say("  after both\n");
}

void rethrow_inside_catch() {
    say("rethrow caught inside the same catch:\n");
    try {
        throw Derived(9);
    } catch (Base &b) {
        say("  caught %s %d\n", b.kind(), b.code);
        try {
            throw;
        } catch (Derived &d) {
            say("  caught it again as Derived %d\n", d.code);
        }
        say("  end of the outer catch\n");
    }
    say("  after\n");
}

struct Part {
    const char *n;
    explicit Part(const char *s, bool fail) : n(s) {
        say("  Part %s built\n", n);
        if (fail)
            throw Other(99);
    }
    ~Part() { say("  ~Part %s\n", n); }
};

struct Whole {
    Part a;
    Part b;
    Part c;
    Whole() : a("a", false), b("b", false), c("c", true) { say("  Whole built?\n"); }
    ~Whole() { say("  ~Whole\n"); }
};

void partial() {
    say("partially built object:\n");
    try {
        Whole w;
        say("  not reached\n");
    } catch (const Other &o) {
        say("  caught Other %d\n", o.v);
    }
}

void by_value() {
    say("catch by value:\n");
    try {
        throw Copied(1);
    } catch (Copied c) {
        say("  in catch: id %d generation %d\n", c.id, c.gen);
    }
    say("  after\n");
}

NOINLINE void throw_from_catch() {
    try {
        throw Other(1);
    } catch (Other &o) {
        say("  caught Other %d, throwing Copied\n", o.v);
        Noisy n("catch scope");
        throw Copied(2);
    }
}

void from_catch() {
    say("new exception from a catch block:\n");
    try {
        throw_from_catch();
    } catch (Copied &c) {
        say("  outer caught Copied %d\n", c.id);
    }
    say("  after\n");
}

// Catchable types that need the this-displacement: a second base
// (member displacement), a virtual base (through the vbtable), and a
// pointer to a derived class caught as a pointer to its second base.
struct Left {
    int l = 1;
    virtual ~Left() {}
};
struct Right {
    int r = 2;
    virtual ~Right() {}
    virtual int which() const { return r; }
};
struct Both : Left, Right {
    int b = 3;
    Both() { r = 20; }
    int which() const override { return 100 + r + b; }
};
struct VBase {
    int v;
    VBase() : v(5) {}
    virtual ~VBase() {}
};
struct VMid1 : virtual VBase {
    int m1 = 11;
};
struct VMid2 : virtual VBase {
    int m2 = 12;
};
struct Diamond : VMid1, VMid2 {
    int d = 13;
    Diamond() { v = 55; }
};

void displaced() {
    say("base-class displacements:\n");
    try {
        throw Both();
    } catch (const Right &r) {
        say("  caught Both as Right&: r %d, which %d\n", r.r, r.which());
    }
    try {
        throw Diamond();
    } catch (const VBase &v) {
        say("  caught Diamond as virtual base VBase&: v %d\n", v.v);
    }
    try {
        throw Diamond();
    } catch (VMid2 &m) {
        say("  caught Diamond as VMid2&: m2 %d, v %d\n", m.m2, m.v);
    }
    Both both;
    try {
        throw &both;
    } catch (Right *p) {
        say("  caught Both* as Right*: %s, which %d\n", p == static_cast<Right *>(&both) ? "adjusted" : "wrong", p->which());
    }
    try {
        throw Copied(3);
    } catch (...) {
        say("  caught Copied by catch(...)\n");
    }
}

NOINLINE void loop_thrower(int i) {
    if (i >= 0)
        throw i;
}

NOINLINE int inner_try(int v) {
    try {
        loop_thrower(v);
    } catch (int i) {
        return i * 2;
    }
    return 0;
}

// A destructor that throws and catches inside itself, run while another
// exception unwinds its frame.
struct Careful {
    ~Careful() {
        try {
            Noisy n("in ~Careful");
            loop_thrower(3);
        } catch (int i) {
            say("  ~Careful caught its own %d\n", i);
        }
    }
};

NOINLINE void unwinds_careful() {
    Careful c;
    throw Point{8, 9};
}

void exceptions_inside_handlers() {
    say("a catch block calling a function that throws and catches:\n");
    try {
        throw 10;
    } catch (int a) {
        say("  caught %d, inner_try gives %d\n", a, inner_try(21));
    }
    say("a destructor catching its own exception during an unwind:\n");
    try {
        unwinds_careful();
    } catch (const Point &p) {
        say("  caught Point (%d, %d)\n", p.x, p.y);
    }
}

struct Counted {
    static int made, gone;
    Counted() { made++; }
    ~Counted() { gone++; }
};
int Counted::made, Counted::gone;

NOINLINE int deep(int n) {
    Counted c;
    if (n == 0)
        throw Point{n, -1};
    return deep(n - 1) + 1;
}

void deep_unwind() {
    say("an exception through 500 frames:\n");
    try {
        deep(500);
    } catch (const Point &p) {
        say("  caught Point (%d, %d): %d objects built, %d destroyed\n", p.x, p.y, Counted::made, Counted::gone);
    }
}

// std::exception's way of keeping its message: each copy owns its text.
void messages() {
    say("an exception owning its message:\n");
    char buf[32] = "from a buffer";
    try {
        throw Message(buf);
    } catch (Message m) {
        bool own = m.what() != buf;
        buf[0] = 'X';
        say("  caught '%s', its own copy: %s\n", m.what(), own ? "yes" : "no");
    }
}

void many() {
    say("many throws:\n");
    long sum = 0;
    char *lo = nullptr, *hi = nullptr;
    for (int i = 0; i < 5000; i++) {
        char mark;
        char *here = &mark;
        if (!lo || here < lo)
            lo = here;
        if (!hi || here > hi)
            hi = here;
        try {
            loop_thrower(i);
        } catch (int v) {
            sum += v;
        }
    }
    say("  sum %ld, stack %s\n", sum, lo == hi ? "stable" : "moved");
}

} // namespace

// An exception leaving a noexcept function: std::terminate. (Whether
// the stack is unwound first is the implementation's choice: Itanium
// unwinds, MSVC does not. So no destructors here.)
NOINLINE void throws_through_noexcept(int v) noexcept {
    say("  in noexcept\n");
    loop_thrower(v);
}

// A destructor that throws while an exception unwinds its frame:
// std::terminate.
struct Throwing {
    ~Throwing() noexcept(false) {
        say("  ~Throwing throws\n");
        throw 2;
    }
};

NOINLINE void unwinds_throwing() {
    Throwing t;
    loop_thrower(1);
}

NOINLINE void rethrow_nothing() {
    try {
        throw;
    } catch (...) {
        say("  caught something?\n");
    }
}

int main(int argc, char **argv) {
    if (argc > 1 && argv[1][0] == 'r') {
        always_flush = true;
        say("throw; with no exception being handled:\n");
        rethrow_nothing();
        return 0;
    }
    if (argc > 1 && argv[1][0] == 'd') {
        always_flush = true;
        say("a destructor throwing during an unwind:\n");
        try {
            unwinds_throwing();
        } catch (int i) {
            say("  caught %d\n", i);
        }
        return 0;
    }
    if (argc > 1 && argv[1][0] == 'n') {
        always_flush = true;
        say("noexcept:\n");
        throws_through_noexcept(1);
        say("  not reached\n");
        return 0;
    }
    for (int i = 0; i < 5; i++)
        catch_each(i);
    rethrow();
    nested_in_catch();
    rethrow_inside_catch();
    partial();
    by_value();
    from_catch();
    displaced();
    messages();
    exceptions_inside_handlers();
    deep_unwind();
    many();
    say("live Noisy objects: %d\n", live);
    return 7;
}
