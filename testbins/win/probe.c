/* Windows only: urun's GetProcAddress and unimplemented-import behaviour.
 * With no argument: GetProcAddress of an export urun implements works, of
 * one it does not gives NULL and ERROR_PROC_NOT_FOUND (127). With "call":
 * calls Beep, which urun does not implement (the stub names it). With
 * "badptr": memset of a length no memory has (an access violation, as on
 * Windows; urun must not try to allocate it). */
#include <stdio.h>
#include <string.h>
#include <windows.h>

int main(int argc, char **argv) {
    HMODULE k32 = GetModuleHandleA("kernel32.dll");
    printf("kernel32 handle: %s\n", k32 ? "yes" : "no");
    FARPROC ok = GetProcAddress(k32, "GetCurrentProcessId");
    printf("GetCurrentProcessId: %s, same pid: %d\n", ok ? "found" : "missing",
           ok && ((DWORD(WINAPI *)(void))(void (*)(void))ok)() == GetCurrentProcessId());
    SetLastError(0);
    FARPROC no = GetProcAddress(k32, "Beep");
    printf("Beep: %s, error %lu\n", no ? "found" : "NULL", GetLastError());
    printf("exe handle is the image: %d\n", GetModuleHandleA(NULL) == (HMODULE)0x140000000);
    fflush(stdout);
    if (argc > 1 && strcmp(argv[1], "call") == 0)
        Beep(440, 10);
    if (argc > 1 && strcmp(argv[1], "badptr") == 0) {
        volatile size_t huge = (size_t)-1 / 2;
        memset(argv[0], 0, huge);
    }
    return 7;
}
