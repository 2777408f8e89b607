# Toolchain file: a (trivial) cross build for x86-64 Linux, so that CMake
# uses CMAKE_CROSSCOMPILING_EMULATOR (urun) to run the tests.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR x86_64)
set(CMAKE_C_COMPILER gcc)
