package gorunner

import (
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

func TestFib(t *testing.T) {
	if got := Fib(50); got != 12586269025 {
		t.Fatalf("Fib(50) = %d", got)
	}
}

// Goroutines on several OS threads, with a mutex, a channel and a busy
// loop long enough for the runtime's preemption signals.
func TestGoroutines(t *testing.T) {
	var mu sync.Mutex
	total := 0
	done := make(chan int)
	for w := 0; w < 16; w++ {
		go func(w int) {
			s := 0
			for i := 0; i < 200000; i++ {
				s += (i ^ w) & 7
			}
			mu.Lock()
			total += s
			mu.Unlock()
			done <- w
		}(w)
	}
	for i := 0; i < 16; i++ {
		<-done
	}
	want := 0
	for w := 0; w < 16; w++ {
		for i := 0; i < 200000; i++ {
			want += (i ^ w) & 7
		}
	}
	if total != want {
		t.Fatalf("total %d, want %d", total, want)
	}
}

func TestChildProcess(t *testing.T) {
	out, err := exec.Command("/bin/sh", "-c", "echo from child; exit 3").Output()
	if string(out) != "from child\n" {
		t.Fatalf("output %q", out)
	}
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() != 3 {
		t.Fatalf("err %v", err)
	}
}

func TestTempFiles(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f.txt")
	if err := os.WriteFile(p, []byte("temp data\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil || string(b) != "temp data\n" {
		t.Fatalf("read %q %v", b, err)
	}
}

func TestPanicRecovered(t *testing.T) {
	defer func() {
		if r := recover(); r != "deliberate" {
			t.Fatalf("recovered %v", r)
		}
	}()
	panic("deliberate")
}

// Fails only when asked: tests/runners.rs compares a failing run too.
func TestFailsWhenAsked(t *testing.T) {
	if os.Getenv("GORUNNER_FAIL") != "" {
		t.Errorf("failing on purpose")
	}
}
