; exit(42) through the plain exit syscall (60), not exit_group.
        bits 64
        global _start

        section .text
_start:
        mov     eax, 60         ; exit
        mov     edi, 42
        syscall
        ud2                     ; not reached
