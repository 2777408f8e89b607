// Package gorunner is a small Go package whose tests tests/runners.rs runs
// with `go test -exec urun`: Go binaries are static and make their own raw
// syscalls (clone for threads, signals for goroutine preemption, futexes),
// so they test urun without any libc in between.
package gorunner

// Fib returns the n-th Fibonacci number.
func Fib(n int) int {
	a, b := 0, 1
	for i := 0; i < n; i++ {
		a, b = b, a+b
	}
	return a
}
