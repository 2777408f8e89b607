/* Windows only (tests/pe.rs: no Linux twin has a PEB): walks what a
 * runtime reads without calling an API — PEB->Ldr's three module lists,
 * a DLL's export directory, the process parameters, KUSER_SHARED_DATA —
 * and checks each against the API's answer. Prints one fixed line per
 * check ("yes" when it holds). */
#include <stdio.h>
#include <string.h>
#include <windows.h>

typedef struct { USHORT Length, MaximumLength; PWSTR Buffer; } USTR;
typedef struct Entry {
    LIST_ENTRY load, memory, init;
    BYTE *base;
    void *entry;
    ULONG size;
    USTR full, name;
} Entry;

static const char *yes(int b) { return b ? "yes" : "no"; }

/* Case-insensitive (ASCII) comparison of n UTF-16 units. */
static int wsame(const wchar_t *a, const wchar_t *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        wchar_t x = a[i] >= 'A' && a[i] <= 'Z' ? a[i] + 32 : a[i], y = b[i] >= 'A' && b[i] <= 'Z' ? b[i] + 32 : b[i];
        if (x != y)
            return 0;
    }
    return 1;
}

static size_t wlen(const wchar_t *s)
{
    size_t n = 0;
    while (s[n])
        n++;
    return n;
}

static int name_is(const USTR *s, const wchar_t *want)
{
    return s->Length == wlen(want) * 2 && wsame(s->Buffer, want, wlen(want));
}

int main(void)
{
    BYTE *peb;
    __asm__("mov %%gs:0x60, %0" : "=r"(peb));
    BYTE *ldr = *(BYTE **)(peb + 0x18);
    LIST_ENTRY *head = (LIST_ENTRY *)(ldr + 0x10);
    int n = 0, exe_first = 0, ntdll = 0, k32 = 0, crt = 0, bases = 1, mz = 1;
    for (LIST_ENTRY *l = head->Flink; l != head && n < 100; l = l->Flink, n++) {
        Entry *e = (Entry *)l;
        if (n == 0)
            exe_first = name_is(&e->name, L"pebwalk.exe") && e->base == (BYTE *)GetModuleHandleW(NULL);
        ntdll |= name_is(&e->name, L"ntdll.dll");
        k32 |= name_is(&e->name, L"kernel32.dll");
        crt |= name_is(&e->name, L"msvcrt.dll");
        wchar_t nm[260] = {0};
        memcpy(nm, e->name.Buffer, e->name.Length < 518 ? e->name.Length : 518);
        bases &= GetModuleHandleW(nm) == (HMODULE)e->base;
        mz &= e->base[0] == 'M' && e->base[1] == 'Z';
    }
    printf("load order: program first %s, ntdll %s, kernel32 %s, msvcrt %s\n", yes(exe_first), yes(ntdll), yes(k32),
           yes(crt));
    printf("entries match GetModuleHandleW and start with MZ: %s %s\n", yes(bases), yes(mz));
    /* The memory-order list has the same entries (links at +0x10). */
    LIST_ENTRY *mhead = (LIST_ENTRY *)(ldr + 0x20);
    int m = 0;
    for (LIST_ENTRY *l = mhead->Flink; l != mhead && m < 100; l = l->Flink)
        m++;
    /* The initialization-order list leaves the program out. */
    LIST_ENTRY *ihead = (LIST_ENTRY *)(ldr + 0x30);
    int i = 0, exe_in_init = 0;
    for (LIST_ENTRY *l = ihead->Flink; l != ihead && i < 100; l = l->Flink, i++)
        exe_in_init |= ((Entry *)((BYTE *)l - 0x20))->base == (BYTE *)GetModuleHandleW(NULL);
    printf("memory order has them all: %s, init order without the program: %s\n", yes(m == n),
           yes(i == n - 1 && !exe_in_init));

    /* kernel32's export directory, walked by hand. */
    BYTE *k = (BYTE *)GetModuleHandleA("kernel32.dll");
    IMAGE_NT_HEADERS64 *nt = (IMAGE_NT_HEADERS64 *)(k + ((IMAGE_DOS_HEADER *)k)->e_lfanew);
    IMAGE_EXPORT_DIRECTORY *ex =
        (IMAGE_EXPORT_DIRECTORY *)(k + nt->OptionalHeader.DataDirectory[IMAGE_DIRECTORY_ENTRY_EXPORT].VirtualAddress);
    DWORD *names = (DWORD *)(k + ex->AddressOfNames), *funcs = (DWORD *)(k + ex->AddressOfFunctions);
    WORD *ords = (WORD *)(k + ex->AddressOfNameOrdinals);
    void *found = NULL;
    for (DWORD j = 0; j < ex->NumberOfNames; j++)
        if (!strcmp((char *)k + names[j], "GetCurrentProcessId"))
            found = k + funcs[ords[j]];
    printf("export walk finds GetProcAddress's GetCurrentProcessId: %s, calls it: %s\n",
           yes(found && found == (void *)GetProcAddress((HMODULE)k, "GetCurrentProcessId")),
           yes(found && ((DWORD(WINAPI *)(void))found)() == GetCurrentProcessId()));

    /* Process parameters. */
    BYTE *params = *(BYTE **)(peb + 0x20);
    USTR *image = (USTR *)(params + 0x60), *cmd = (USTR *)(params + 0x70);
    size_t il = image->Length / 2;
    char cmdline[4096] = {0};
    WideCharToMultiByte(CP_UTF8, 0, cmd->Buffer, cmd->Length / 2, cmdline, sizeof cmdline - 1, NULL, NULL);
    wchar_t *env = *(wchar_t **)(params + 0x80);
    int env_has = 0;
    for (wchar_t *v = env; *v; v += wlen(v) + 1)
        env_has |= wlen(v) == 12 && wsame(v, L"PEBWALK=here", 12);
    printf("image path ends in pebwalk.exe: %s, command line is GetCommandLineA's: %s, environment: %s\n",
           yes(il >= 11 && wsame(image->Buffer + il - 11, L"pebwalk.exe", 11)),
           yes(!strcmp(cmdline, GetCommandLineA())), yes(env_has));
    printf("std handles: %s\n", yes(*(HANDLE *)(params + 0x28) == GetStdHandle(STD_OUTPUT_HANDLE)));

    /* KUSER_SHARED_DATA. */
    volatile BYTE *ku = (volatile BYTE *)0x7ffe0000;
    printf("kuser version %lu.%lu build %lu\n", *(ULONG *)(ku + 0x26c), *(ULONG *)(ku + 0x270),
           *(ULONG *)(ku + 0x260));
    ULONGLONG t0 = *(volatile ULONGLONG *)(ku + 0x8);
    Sleep(30);
    ULONGLONG t1 = *(volatile ULONGLONG *)(ku + 0x8);
    printf("interrupt time advances by the sleep: %s\n", yes(t1 - t0 >= 200000 && t1 - t0 < 100000000));
    FILETIME ft;
    GetSystemTimeAsFileTime(&ft);
    ULONGLONG now = ((ULONGLONG)ft.dwHighDateTime << 32) | ft.dwLowDateTime;
    ULONGLONG st = *(volatile ULONGLONG *)(ku + 0x14);
    printf("system time within 1 s of GetSystemTimeAsFileTime: %s\n",
           yes((now > st ? now - st : st - now) < 10000000));
    ULONGLONG ticks = (*(volatile ULONGLONG *)(ku + 0x320) * *(ULONG *)(ku + 0x4)) >> 24;
    DWORD tc = GetTickCount();
    printf("tick count within 1 s of GetTickCount: %s\n", yes((DWORD)ticks - tc + 1000 < 2000));
    return 0;
}
