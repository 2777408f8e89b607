/* The DLL of tests/pe.rs's module test (modmain.c is the program). For
 * Windows it is built as modlib.dll with modlib.def: exports by name, one
 * by ordinal only (mod_ord @7 NONAME), one forwarded to urun's msvcrt
 * (mod_strlen = msvcrt.strlen), a DllMain printing attach/detach, and the
 * program's preferred base so that it must be relocated (counter_ptr is a
 * relocated pointer). For Linux the same source is a shared library
 * (also named modlib.dll) with a constructor and a destructor. */
#include <stdio.h>
#include <string.h>

static int counter = 40;
static int *counter_ptr = &counter;

int mod_add(int a, int b) { return a + b; }
int mod_next(void) { return ++*counter_ptr; }
int mod_ord(int x) { return x * 3; }
const char *mod_name(void) { return "modlib"; }

#ifdef _WIN32
#include <windows.h>
BOOL WINAPI DllMain(HINSTANCE h, DWORD reason, LPVOID reserved)
{
    if (reason == DLL_PROCESS_ATTACH)
        printf("modlib: attach\n");
    else if (reason == DLL_PROCESS_DETACH)
        printf("modlib: detach\n");
    return TRUE;
}
#else
size_t mod_strlen(const char *s) { return strlen(s); }
__attribute__((constructor)) static void attach(void) { printf("modlib: attach\n"); }
__attribute__((destructor)) static void detach(void) { printf("modlib: detach\n"); }
#endif
