; Flags and loops without libc. Each check jumps to .fail with its number in
; r12 on a wrong result; success prints "ok", failure prints "FAIL <n>".
        bits 64
        default rel
        global _start

        section .data
okmsg:  db "flags: ok", 10
oklen   equ $ - okmsg
failmsg: db "flags: FAIL  ", 10
faillen equ $ - failmsg

        section .text
_start:
        ; 1: sum 1..1000 with the loop instruction = 500500
        mov     r12, 1
        xor     eax, eax
        mov     ecx, 1000
.sum:   add     rax, rcx
        loop    .sum
        cmp     rax, 500500
        jne     .fail

        ; 2: a dec/jnz loop counting down with a 128-bit accumulator (adc)
        mov     r12, 2
        xor     eax, eax        ; low
        xor     edx, edx        ; high
        mov     rcx, 100
        mov     rbx, 0xffffffffffffffff
.acc:   add     rax, rbx
        adc     rdx, 0
        dec     rcx
        jnz     .acc
        ; 100 * (2^64-1) = 99 * 2^64 + (2^64 - 100)
        cmp     rdx, 99
        jne     .fail
        mov     rbx, -100
        cmp     rax, rbx
        jne     .fail

        ; 3: signed vs unsigned conditions on -1 vs 1
        mov     r12, 3
        mov     rax, -1
        cmp     rax, 1
        jge     .fail           ; signed: -1 < 1
        jbe     .fail           ; unsigned: 0xff..ff > 1
        jns     .fail           ; -1 - 1 = -2 is negative
        jo      .fail

        ; 4: overflow on add of two large positives; carry clear
        mov     r12, 4
        mov     rax, 0x7fffffffffffffff
        add     rax, 1
        jno     .fail
        jc      .fail
        jnp     .fail           ; low byte 0x00 has even parity

        ; 5: inc keeps CF; setc / setz / cmovz
        mov     r12, 5
        stc
        mov     rax, -1
        inc     rax             ; rax = 0, ZF = 1, CF still 1
        setc    bl
        setz    bh
        cmp     bx, 0x0101
        jne     .fail
        mov     ecx, 7
        mov     edx, 9
        test    eax, eax
        cmovz   ecx, edx
        cmp     ecx, 9
        jne     .fail

        ; 6: rep movsb / rep stosb / repne scasb on a stack buffer
        mov     r12, 6
        sub     rsp, 64
        mov     rdi, rsp
        mov     al, 'z'
        mov     ecx, 64
        cld
        rep stosb
        lea     rsi, [okmsg]
        mov     rdi, rsp
        mov     ecx, 5          ; "flags"
        rep movsb
        mov     rdi, rsp
        mov     al, 'z'
        mov     ecx, 64
        repne scasb             ; first 'z' at index 5
        mov     rax, rdi
        sub     rax, rsp
        cmp     rax, 6          ; rdi is one past the match
        jne     .fail
        add     rsp, 64

        ; 7: nested loops, 30*20 iterations of mul/div
        mov     r12, 7
        xor     r8, r8
        mov     r9, 30
.outer: mov     r10, 20
.inner: mov     rax, r9
        mul     r10             ; rdx:rax = r9 * r10
        mov     rcx, 3
        div     rcx             ; rax = r9*r10/3
        add     r8, rax
        dec     r10
        jnz     .inner
        dec     r9
        jnz     .outer
        ; sum over a=1..30, b=1..20 of floor(a*b/3) = 32410
        cmp     r8, 32410
        jne     .fail

        mov     eax, 1
        mov     edi, 1
        lea     rsi, [okmsg]
        mov     edx, oklen
        syscall
        mov     eax, 231
        xor     edi, edi
        syscall

.fail:  ; put the check number (1..9) into the message
        lea     rsi, [failmsg]
        mov     eax, r12d
        add     al, '0'
        mov     [rsi + faillen - 2], al
        mov     eax, 1
        mov     edi, 1
        mov     edx, faillen
        syscall
        mov     eax, 231
        mov     edi, 1
        syscall
