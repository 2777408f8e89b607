; hello via raw syscalls, no libc: write(1, msg, len); exit_group(0).
        bits 64
        default rel
        global _start

        section .rodata
msg:    db "Hello from nasm!", 10
len     equ $ - msg

        section .text
_start:
        mov     eax, 1          ; write
        mov     edi, 1          ; stdout
        lea     rsi, [msg]
        mov     edx, len
        syscall
        cmp     rax, len
        jne     .fail
        mov     eax, 231        ; exit_group
        xor     edi, edi
        syscall
.fail:
        mov     eax, 231
        mov     edi, 1
        syscall
