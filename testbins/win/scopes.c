/* Windows only: __try/__except/__finally scope tables as clang and MSVC
 * emit them, handled by __C_specific_handler (mingw's gcc has no __try,
 * so the functions are in assembly with their own .xdata). Expected
 * output is Windows' documented behaviour (tests/pe.rs).
 *   guarded_read(p)   __try { return *p; } __except (1) { return code; }
 *   outer(p)          __try { inner(p); } __except (filter()) { ... }
 *   inner(p)          __try { *p; } __finally { finally_runs++; }
 */
#include <stdio.h>
#include <windows.h>

int finally_runs;
int filter_calls;
void note_finally(void) { finally_runs++; }

LONG filter(EXCEPTION_POINTERS *ep, void *frame) {
    filter_calls++;
    printf("filter: code 0x%lx, frame is set: %d\n", ep->ExceptionRecord->ExceptionCode, frame != NULL);
    return ep->ExceptionRecord->ExceptionCode == EXCEPTION_ACCESS_VIOLATION ? EXCEPTION_EXECUTE_HANDLER
                                                                            : EXCEPTION_CONTINUE_SEARCH;
}

__asm__(
    ".text\n"
    ".globl guarded_read\n"
    ".def guarded_read; .scl 2; .type 32; .endef\n"
    ".seh_proc guarded_read\n"
    "guarded_read:\n"
    "  pushq %rbp\n"
    "  .seh_pushreg %rbp\n"
    "  subq $32, %rsp\n"
    "  .seh_stackalloc 32\n"
    "  .seh_endprologue\n"
    "gr_begin:\n"
    "  movl (%rcx), %eax\n"
    "gr_end:\n"
    "  nop\n"
    "  addq $32, %rsp\n"
    "  popq %rbp\n"
    "  ret\n"
    "gr_except:\n" /* RAX holds the exception code */
    "  addq $32, %rsp\n"
    "  popq %rbp\n"
    "  ret\n"
    "  .seh_handler __C_specific_handler, @except\n"
    "  .seh_handlerdata\n"
    "  .long 1\n"
    "  .rva gr_begin\n  .rva gr_end\n  .long 1\n  .rva gr_except\n"
    "  .text\n"
    "  .seh_endproc\n"

    ".globl inner\n"
    ".def inner; .scl 2; .type 32; .endef\n"
    ".seh_proc inner\n"
    "inner:\n"
    "  pushq %rbx\n"
    "  .seh_pushreg %rbx\n"
    "  subq $32, %rsp\n"
    "  .seh_stackalloc 32\n"
    "  .seh_endprologue\n"
    "  movq $0x1111, %rbx\n"
    "in_begin:\n"
    "  movl (%rcx), %eax\n"
    "in_end:\n"
    "  nop\n"
    "  call note_finally\n" /* the normal path runs the __finally too */
    "  addq $32, %rsp\n"
    "  popq %rbx\n"
    "  ret\n"
    "  .seh_handler __C_specific_handler, @except, @unwind\n"
    "  .seh_handlerdata\n"
    "  .long 1\n"
    "  .rva in_begin\n  .rva in_end\n  .rva in_finally\n  .long 0\n"
    "  .text\n"
    "  .seh_endproc\n"

    /* The __finally block as its own function: (abnormal, frame). */
    ".globl in_finally\n"
    ".def in_finally; .scl 2; .type 32; .endef\n"
    ".seh_proc in_finally\n"
    "in_finally:\n"
    "  subq $40, %rsp\n"
    "  .seh_stackalloc 40\n"
    "  .seh_endprologue\n"
    "  call note_finally\n"
    "  addq $40, %rsp\n"
    "  ret\n"
    "  .seh_endproc\n"

    ".globl outer\n"
    ".def outer; .scl 2; .type 32; .endef\n"
    ".seh_proc outer\n"
    "outer:\n"
    "  pushq %rbx\n"
    "  .seh_pushreg %rbx\n"
    "  subq $32, %rsp\n"
    "  .seh_stackalloc 32\n"
    "  .seh_endprologue\n"
    "  movq $0x2222, %rbx\n"
    "out_begin:\n"
    "  call inner\n"
    "  nop\n" /* the return address must lie inside the scope */
    "out_end:\n"
    "  xorl %eax, %eax\n"
    "out_done:\n"
    "  cmpq $0x2222, %rbx\n" /* RBX is restored by the unwind */
    "  jne out_bad\n"
    "  addq $32, %rsp\n"
    "  popq %rbx\n"
    "  ret\n"
    "out_bad:\n"
    "  movl $-2, %eax\n"
    "  addq $32, %rsp\n"
    "  popq %rbx\n"
    "  ret\n"
    "out_except:\n"
    "  jmp out_done\n"
    "  .seh_handler __C_specific_handler, @except\n"
    "  .seh_handlerdata\n"
    "  .long 1\n"
    "  .rva out_begin\n  .rva out_end\n  .rva filter\n  .rva out_except\n"
    "  .text\n"
    "  .seh_endproc\n");

unsigned guarded_read(volatile int *p);
unsigned outer(volatile int *p);

/* RtlCaptureContext + RtlLookupFunctionEntry + RtlVirtualUnwind: the
 * caller's return address, found by unwinding one frame. */
__attribute__((noinline)) static void *unwind_once(void) {
    CONTEXT ctx;
    RtlCaptureContext(&ctx);
    DWORD64 base = 0, frame = 0;
    void *data = NULL;
    PRUNTIME_FUNCTION f = RtlLookupFunctionEntry(ctx.Rip, &base, NULL);
    if (!f)
        return NULL;
    RtlVirtualUnwind(UNW_FLAG_NHANDLER, base, ctx.Rip, f, &ctx, &data, &frame, NULL);
    return (void *)ctx.Rip;
}

static void tables(void) {
    HMODULE exe = GetModuleHandleA(NULL);
    void *base = NULL;
    printf("RtlPcToFileHeader(main) is the exe: %d\n", RtlPcToFileHeader((void *)tables, &base) == exe && base == exe);
    DWORD64 ib = 0;
    PRUNTIME_FUNCTION f = RtlLookupFunctionEntry((DWORD64)guarded_read + 3, &ib, NULL);
    printf("guarded_read's entry: %d\n", f && ib == (DWORD64)exe && ib + f->BeginAddress == (DWORD64)guarded_read);
    void *ret = unwind_once();
    printf("one frame up is tables(): %d\n", (char *)ret > (char *)tables && (char *)ret < (char *)tables + 0x200);
    /* A table added at run time, as a JIT does. */
    char *code = VirtualAlloc(NULL, 0x10000, MEM_COMMIT | MEM_RESERVE, PAGE_EXECUTE_READWRITE);
    static RUNTIME_FUNCTION added[1];
    added[0].BeginAddress = 0x100;
    added[0].EndAddress = 0x200;
    added[0].UnwindData = 0x800;
    printf("RtlAddFunctionTable: %d\n", RtlAddFunctionTable(added, 1, (DWORD64)code));
    f = RtlLookupFunctionEntry((DWORD64)code + 0x180, &ib, NULL);
    printf("found in it: %d\n", f == &added[0] && ib == (DWORD64)code);
    printf("outside it: %d\n", RtlLookupFunctionEntry((DWORD64)code + 0x200, &ib, NULL) == NULL);
    int deleted = RtlDeleteFunctionTable(added);
    printf("RtlDeleteFunctionTable: %d, then found: %d\n", deleted,
           RtlLookupFunctionEntry((DWORD64)code + 0x180, &ib, NULL) != NULL);
}

int main(void) {
    int ok = 42;
    printf("guarded_read(&ok) = %u\n", guarded_read(&ok));
    printf("guarded_read(NULL) = 0x%x\n", guarded_read(NULL));
    const char *names[] = {"&ok", "NULL", "(int *)8"};
    volatile int *ptrs[] = {&ok, NULL, (int *)8};
    for (int i = 0; i < 3; i++) {
        unsigned r = outer(ptrs[i]);
        printf("outer(%s) = 0x%x, finally ran %d time(s), filter %d\n", names[i], r, finally_runs, filter_calls);
    }
    tables();
    return 0;
}
