// C++ exceptions: thrown and caught across frames, rethrown, caught by base
// class and by catch(...), carried between threads in std::exception_ptr,
// thrown in several threads at once, and destructors run while unwinding.
// Built static and dynamic (testbins/Makefile); the output is deterministic.
#include <atomic>
#include <cstdio>
#include <exception>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace {

std::atomic<int> destroyed{0};

struct Guard {
    int id;
    explicit Guard(int i) : id(i) {}
    ~Guard() { destroyed.fetch_add(1); }
};

struct MyError : std::runtime_error {
    int depth;
    MyError(const std::string &what, int d) : std::runtime_error(what), depth(d) {}
};

// Throws from `depth` frames down, each frame holding a Guard.
[[gnu::noinline]] int dive(int depth, int limit) {
    Guard g(depth);
    if (depth == limit)
        throw MyError("bottom at " + std::to_string(depth), depth);
    return dive(depth + 1, limit) + 1;
}

[[gnu::noinline]] void rethrow_once(int limit) {
    try {
        dive(0, limit);
    } catch (MyError &e) {
        e.depth += 1000;
        throw;  // the same object, with the change
    }
}

[[gnu::noinline]] void throw_int(int v) { throw v; }

int thread_work(int id, std::exception_ptr &out) {
    int caught = 0;
    for (int i = 0; i < 200; i++) {
        try {
            if (i % 3 == 0)
                dive(0, (i + id) % 17);
            else if (i % 3 == 1)
                throw_int(i * id);
            else
                rethrow_once((i + id) % 11);
        } catch (const MyError &e) {
            caught += e.depth >= 1000 ? 2 : 1;
        } catch (int v) {
            caught += v == i * id ? 1 : 100;
        }
    }
    try {
        throw std::out_of_range("from thread " + std::to_string(id));
    } catch (...) {
        out = std::current_exception();
    }
    return caught;
}

}  // namespace

int main() {
    // In one thread.
    try {
        dive(0, 20);
    } catch (const std::exception &e) {
        std::printf("main: caught '%s', %d guards destroyed\n", e.what(), destroyed.load());
    }
    try {
        rethrow_once(5);
    } catch (const MyError &e) {
        std::printf("main: rethrown '%s' depth %d\n", e.what(), e.depth);
    }
    try {
        try {
            throw_int(7);
        } catch (...) {
            std::printf("main: catch(...) then rethrow\n");
            throw;
        }
    } catch (int v) {
        std::printf("main: outer caught int %d\n", v);
    }
    try {
        std::vector<int> v(3);
        (void)v.at(10);
    } catch (const std::out_of_range &) {
        std::printf("main: vector::at threw out_of_range\n");
    }

    // Several threads throwing at once; each hands one exception back.
    const int n = 4;
    std::vector<std::exception_ptr> ptrs(n);
    std::vector<int> counts(n);
    std::vector<std::thread> ts;
    for (int id = 0; id < n; id++)
        ts.emplace_back([id, &ptrs, &counts] { counts[id] = thread_work(id + 1, ptrs[id]); });
    for (auto &t : ts)
        t.join();
    for (int id = 0; id < n; id++) {
        std::printf("thread %d: %d caught; ", id + 1, counts[id]);
        try {
            std::rethrow_exception(ptrs[id]);
        } catch (const std::out_of_range &e) {
            std::printf("rethrown in main: '%s'\n", e.what());
        }
    }

    // An exception made in main, rethrown in another thread and caught there.
    std::exception_ptr p = std::make_exception_ptr(MyError("made in main", 42));
    int seen = 0;
    std::thread t([&] {
        try {
            std::rethrow_exception(p);
        } catch (const MyError &e) {
            seen = e.depth;
        }
    });
    t.join();
    std::printf("thread rethrew main's exception: depth %d\n", seen);
    std::printf("guards destroyed: %d\n", destroyed.load());
    return 0;
}
