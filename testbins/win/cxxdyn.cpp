// tests/pe.rs: a C++ program linked against the C++ runtime DLLs
// (libstdc++-6.dll, libgcc_s_seh-1.dll) for Windows, against libstdc++.so
// for Linux: iostreams, strings, containers, a static object's destructor.
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

struct Noisy {
    std::string name;
    explicit Noisy(std::string n) : name(std::move(n)) { std::cout << "ctor " << name << '\n'; }
    ~Noisy() { std::cout << "dtor " << name << '\n'; }
};

static Noisy global("global");

int main(int argc, char **argv)
{
    std::map<std::string, int> counts;
    for (const char *w : {"pear", "apple", "pear", "fig", "apple", "pear"})
        counts[w]++;
    for (const auto &kv : counts)
        std::cout << kv.first << '=' << kv.second << '\n';
    std::vector<int> v;
    for (int i = 0; i < 10; i++)
        v.push_back(i * i);
    std::ostringstream os;
    os << "sum " << [&] { int s = 0; for (int x : v) s += x; return s; }() << " hex " << std::hex << 255;
    std::cout << os.str() << std::endl;
    std::cerr << "to cerr " << 3.5 << std::endl;
    {
        Noisy local("local");
    }
    std::cout << "args " << argc - 1 << std::endl;
    return 4;
}
