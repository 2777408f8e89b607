# Toolchain file for Windows x86-64 with mingw-w64: the same project built
# as PE32+ programs, run by ctest through urun once urun runs PE programs
# (tests/runners.rs reports the case skipped while urun refuses the program:
# it links libwinpthread-1.dll, and urun loads no PE DLLs yet).
set(CMAKE_SYSTEM_NAME Windows)
set(CMAKE_SYSTEM_PROCESSOR x86_64)
set(CMAKE_C_COMPILER x86_64-w64-mingw32-gcc)
set(CMAKE_FIND_ROOT_PATH /usr/x86_64-w64-mingw32)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
