/* tests/pe.rs's module test: a program using modlib.dll (imports by name,
 * by ordinal, a forwarded one) and loading modplug.dll at run time. The
 * same source for Linux uses dlopen/dlsym/dladdr on shared libraries of
 * the same names; the output must be the same. */
#ifndef _WIN32
#define _GNU_SOURCE
#endif
#include <stdio.h>
#include <string.h>
#ifdef _WIN32
#include <windows.h>
#define LOAD(name) LoadLibraryA(name)
#define SYM(h, name) ((void *)GetProcAddress(h, name))
#define FREE(h) FreeLibrary(h)
typedef HMODULE handle;
#else
#include <dlfcn.h>
#define LOAD(name) dlopen(name, RTLD_NOW)
#define SYM(h, name) dlsym(h, name)
#define FREE(h) dlclose(h)
typedef void *handle;
#endif

int mod_add(int a, int b);
int mod_next(void);
int mod_ord(int x);
const char *mod_name(void);
size_t mod_strlen(const char *s);

static const char *base_name(const char *p)
{
    const char *s = strrchr(p, '/'), *b = strrchr(p, '\\');
    if (b > s)
        s = b;
    return s ? s + 1 : p;
}

int main(void)
{
    printf("main: start\n");
    int a = mod_add(2, 3), n1 = mod_next(), n2 = mod_next(), o = mod_ord(5);
    printf("mod_add %d, mod_next %d %d, mod_ord %d, mod_strlen %d, %s\n", a, n1, n2, o,
           (int)mod_strlen("hello"), mod_name());

    handle plug = LOAD("modplug.dll");
    printf("modplug loaded: %s\n", plug ? "yes" : "no");
    if (!plug)
        return 1;
    int (*twice)(int) = (int (*)(int))SYM(plug, "plug_twice");
    void *none = SYM(plug, "no_such_function");
    handle again = LOAD("modplug.dll");
    printf("plug_twice %d, no_such_function %s, loaded twice is the same: %d\n", twice ? twice(21) : -1,
           none ? "found" : "NULL", again == plug);

    char path[1024];
#ifdef _WIN32
    HMODULE lib = GetModuleHandleA("MODLIB.DLL");
    int (*ord)(int) = (int (*)(int))(void *)GetProcAddress(lib, (LPCSTR)7);
    GetModuleFileNameA(lib, path, sizeof path);
#else
    void *lib = dlopen("modlib.dll", RTLD_NOW | RTLD_NOLOAD);
    int (*ord)(int) = (int (*)(int))dlsym(lib, "mod_ord");
    Dl_info info;
    dladdr((void *)mod_add, &info);
    snprintf(path, sizeof path, "%s", info.dli_fname);
    dlclose(lib);
#endif
    printf("ordinal 7 of modlib: %d\n", ord ? ord(7) : -1);
    printf("modlib's file: %s\n", base_name(path));

    FREE(again);
    printf("freed once\n");
    FREE(plug);
    printf("freed twice\n");
    printf("nosuch.dll: %s\n", LOAD("nosuch.dll") ? "loaded" : "NULL");
    printf("main: end\n");
    return 0;
}
