/* The DLL tests/pe.rs's module test loads at run time (LoadLibrary, or
 * dlopen on Linux), then frees (detach printed then). */
#include <stdio.h>

#ifdef _WIN32
#include <windows.h>
__declspec(dllexport) int plug_twice(int x) { return 2 * x; }
BOOL WINAPI DllMain(HINSTANCE h, DWORD reason, LPVOID reserved)
{
    if (reason == DLL_PROCESS_ATTACH)
        printf("modplug: attach\n");
    else if (reason == DLL_PROCESS_DETACH)
        printf("modplug: detach\n");
    return TRUE;
}
#else
int plug_twice(int x) { return 2 * x; }
__attribute__((constructor)) static void attach(void) { printf("modplug: attach\n"); }
__attribute__((destructor)) static void detach(void) { printf("modplug: detach\n"); }
#endif
