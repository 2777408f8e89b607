# Toolchain file for Windows x86-64 with mingw-w64: the same project built
# as PE32+ programs, run by ctest through urun (tests/runners.rs points
# URUN_DLL_PATH at the sysroot for libwinpthread-1.dll, and reports the case
# skipped while the program cannot run under urun).
set(CMAKE_SYSTEM_NAME Windows)
set(CMAKE_SYSTEM_PROCESSOR x86_64)
set(CMAKE_C_COMPILER x86_64-w64-mingw32-gcc)
set(CMAKE_FIND_ROOT_PATH /usr/x86_64-w64-mingw32)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
