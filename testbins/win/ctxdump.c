/* The CONTEXT a vectored handler sees at a fault, printed whole, so that
 * tests/pe.rs can hold every engine to the interpreter's (the reference
 * engine): each case sets every general register, the flags and XMM0-5 to
 * known values, runs a linked loop, then faults; the handler prints the
 * record and the context and resumes past the faulting instruction.
 * Windows-only (a CONTEXT has no Linux twin); the values it sets are
 * checked by the test too.
 *   load    a read from an unmapped address (mov r10, [r11])
 *   store   a write to it (mov [r11], r10)
 *   divide  div r9 with r9 = 0
 *   ud2     an undefined instruction
 *   int3    a breakpoint
 */
#include <stdio.h>
#include <string.h>
#include <windows.h>

static unsigned long long base;
static int skip;

static LONG CALLBACK vectored(EXCEPTION_POINTERS *ep) {
    EXCEPTION_RECORD *r = ep->ExceptionRecord;
    CONTEXT *c = ep->ContextRecord;
    NT_TIB *tib = (NT_TIB *)NtCurrentTeb();
    printf("code %08lx flags %lx params %lu", r->ExceptionCode, r->ExceptionFlags, r->NumberParameters);
    for (DWORD i = 0; i < r->NumberParameters && i < 2; i++)
        printf(" %llx", (unsigned long long)r->ExceptionInformation[i]);
    printf("\nat image+%llx, record address image+%llx, stack base-%llx\n", c->Rip - base,
           (unsigned long long)r->ExceptionAddress - base, (unsigned long long)tib->StackBase - c->Rsp);
    printf("rax %016llx rbx %016llx rcx %016llx rdx %016llx\n", c->Rax, c->Rbx, c->Rcx, c->Rdx);
    printf("rbp %016llx rsi %016llx rdi %016llx r8  %016llx\n", c->Rbp, c->Rsi, c->Rdi, c->R8);
    printf("r9  %016llx r10 %016llx r11 %016llx r12 %016llx\n", c->R9, c->R10, c->R11, c->R12);
    printf("r13 %016llx r14 %016llx r15 %016llx\n", c->R13, c->R14, c->R15);
    printf("eflags %08lx mxcsr %08lx fcw %04x fsw %04x ftw %02x cs %04x ss %04x flags %08lx\n", c->EFlags, c->MxCsr,
           c->FltSave.ControlWord, c->FltSave.StatusWord, c->FltSave.TagWord, c->SegCs, c->SegSs, c->ContextFlags);
    for (int i = 0; i < 6; i++) {
        M128A x = (&c->Xmm0)[i];
        printf("xmm%d %016llx%016llx\n", i, (unsigned long long)x.High, x.Low);
    }
    c->Rip += skip;
    return EXCEPTION_CONTINUE_EXECUTION;
}

/* Each case: save the callee-saved registers, set every register, loop
 * five times (a linked loop under the JIT), compare (flags), fault. */
#define CASE(name, insn)                                                                                      \
    ".globl " name "\n" name ":\n"                                                                            \
    "  push rbx\n  push rbp\n  push rsi\n  push rdi\n  push r12\n  push r13\n  push r14\n  push r15\n"         \
    "  mov r11, rcx\n"                                                                                          \
    "  movabs rax, 0x1111111111111100\n  movabs rbx, 0x2222222222222222\n  movabs rcx, 0x3333333333333333\n"  \
    "  movabs rdx, 0x4444444444444444\n  movabs rbp, 0x5555555555555555\n  movabs rsi, 0x6666666666666666\n"  \
    "  movabs rdi, 0x7777777777777777\n  movabs r8, 0x8888888888888888\n  movabs r10, 0xaaaaaaaaaaaaaaaa\n"   \
    "  movabs r12, 0xcccccccccccccccc\n  movabs r13, 0xdddddddddddddddd\n  movabs r14, 0xeeeeeeeeeeeeeeee\n"  \
    "  movabs r15, 0xffffffffffffffff\n"                                                                      \
    "  movq xmm0, rax\n  movq xmm1, rbx\n  pinsrq xmm1, rcx, 1\n  movq xmm2, rdx\n  movq xmm3, rsi\n"           \
    "  movq xmm4, rdi\n  movq xmm5, r8\n  pinsrq xmm5, r12, 1\n"                                                  \
    "  mov r9d, 5\n"                                                                                          \
    "1:\n  add rax, 1\n  dec r9\n  jnz 1b\n"                                                                  \
    "  cmp rax, rbx\n"                                                                                        \
    "  " insn "\n"                                                                                            \
    "  pop r15\n  pop r14\n  pop r13\n  pop r12\n  pop rdi\n  pop rsi\n  pop rbp\n  pop rbx\n  ret\n"

__asm__(".intel_syntax noprefix\n.text\n" CASE("fault_load", "mov r10, [r11]") CASE("fault_store", "mov [r11], r10")
            CASE("fault_divide", "div r9") CASE("fault_ud2", "ud2") CASE("fault_int3", "int3") ".att_syntax\n");

void fault_load(void *), fault_store(void *), fault_divide(void *), fault_ud2(void *), fault_int3(void *);

static const struct {
    const char *name;
    void (*f)(void *);
    int skip;
} cases[] = {
    {"load", fault_load, 3}, {"store", fault_store, 3}, {"divide", fault_divide, 3},
    {"ud2", fault_ud2, 2},   {"int3", fault_int3, 1},
};

int main(int argc, char **argv) {
    base = (unsigned long long)GetModuleHandleA(NULL);
    AddVectoredExceptionHandler(1, vectored);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (argc > 1 && strcmp(argv[1], cases[i].name) != 0)
            continue;
        printf("== %s\n", cases[i].name);
        skip = cases[i].skip;
        cases[i].f((void *)0x10);
        printf("resumed\n");
    }
    return 0;
}
