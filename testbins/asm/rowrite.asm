; Writes to a read-only page (.rodata): dies by SIGSEGV.
        bits 64
        default rel
        global _start

        section .rodata
        align 4096
constant: dq 0x1234

        section .text
_start:
        mov     eax, 1
        mov     edi, 2
        lea     rsi, [msg]
        mov     edx, msglen
        syscall
        mov     qword [constant], 42    ; faults
        mov     eax, 231                ; not reached
        xor     edi, edi
        syscall

msg:    db "about to write to a read-only page", 10
msglen  equ $ - msg
