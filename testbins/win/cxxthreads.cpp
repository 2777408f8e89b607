// C++ threads: std::thread, std::mutex, std::condition_variable,
// thread_local and std::async; the same source built with g++ on Linux and
// x86_64-w64-mingw32-g++-posix -static on Windows (winpthreads linked in),
// compared by tests/pe.rs.
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <future>
#include <mutex>
#include <numeric>
#include <stdexcept>
#include <thread>
#include <vector>

static thread_local int per_thread = 1;

int main() {
    std::mutex m;
    long counter = 0;
    std::vector<std::thread> ts;
    for (int i = 0; i < 4; i++)
        ts.emplace_back([&] {
            for (int j = 0; j < 10000; j++) {
                std::lock_guard<std::mutex> g(m);
                counter++;
            }
        });
    for (auto &t : ts) t.join();
    std::printf("counter %ld\n", counter);

    std::deque<int> q;
    std::condition_variable cv;
    bool done = false;
    long sum = 0;
    std::thread consumer([&] {
        std::unique_lock<std::mutex> l(m);
        for (;;) {
            cv.wait(l, [&] { return !q.empty() || done; });
            while (!q.empty()) {
                sum += q.front();
                q.pop_front();
            }
            if (done) break;
        }
    });
    for (int i = 1; i <= 2000; i++) {
        std::lock_guard<std::mutex> g(m);
        q.push_back(i);
        cv.notify_one();
    }
    {
        std::lock_guard<std::mutex> g(m);
        done = true;
    }
    cv.notify_all();
    consumer.join();
    std::printf("sum %ld\n", sum);

    std::atomic<int> ok{0};
    per_thread = 42;
    ts.clear();
    for (int i = 0; i < 4; i++)
        ts.emplace_back([&, i] {
            if (per_thread == 1) ok++;
            per_thread = i;
            std::this_thread::yield();
            if (per_thread == i) ok++;
        });
    for (auto &t : ts) t.join();
    std::printf("thread_local ok %d, main's %d\n", ok.load(), per_thread);

    auto f = std::async(std::launch::async, [] {
        std::vector<int> v(1000);
        std::iota(v.begin(), v.end(), 1);
        return std::accumulate(v.begin(), v.end(), 0);
    });
    std::printf("async %d\n", f.get());

    // Exceptions thrown and caught in several threads at once, and one
    // carried out of a thread by a future.
    std::atomic<int> caught{0};
    ts.clear();
    for (int i = 0; i < 4; i++)
        ts.emplace_back([&, i] {
            for (int k = 0; k < 50; k++) {
                try {
                    if (k % 2) throw std::runtime_error("odd");
                    throw k + i;
                } catch (const std::runtime_error &) {
                    caught++;
                } catch (int) {
                    caught++;
                }
            }
        });
    for (auto &t : ts) t.join();
    auto bad = std::async(std::launch::async, []() -> int { throw std::runtime_error("from a thread"); });
    try {
        bad.get();
    } catch (const std::exception &e) {
        std::printf("caught %d in threads, then \"%s\"\n", caught.load(), e.what());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    std::printf("done\n");
    return 0;
}
