// gowin: the same source is built for GOOS=linux and GOOS=windows and the
// two runs (native Linux, urun on the .exe) are compared by tests/pe.rs.
package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

type node struct{ val int }

func goroutines() {
	const workers = 8
	jobs := make(chan int)
	results := make(chan [2]int, 64)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range jobs {
				s := 0
				for i := 1; i <= n*1000; i++ {
					s = (s + i*i) % 1000003
				}
				results <- [2]int{n, s}
			}
		}()
	}
	go func() {
		for n := 1; n <= 40; n++ {
			jobs <- n
		}
		close(jobs)
	}()
	go func() { wg.Wait(); close(results) }()
	var got [][2]int
	for r := range results {
		got = append(got, r)
	}
	sort.Slice(got, func(i, j int) bool { return got[i][0] < got[j][0] })
	sum := 0
	for _, r := range got {
		sum += r[1]
	}
	fmt.Printf("goroutines: %d results, first %v, last %v, sum %d\n", len(got), got[0], got[len(got)-1], sum)

	var mu sync.Mutex
	counter := 0
	var wg2 sync.WaitGroup
	for i := 0; i < 16; i++ {
		wg2.Add(1)
		go func(k int) {
			defer wg2.Done()
			for j := 0; j < 1000; j++ {
				mu.Lock()
				counter += k
				mu.Unlock()
				if j%100 == 0 {
					runtime.Gosched()
				}
			}
		}(i)
	}
	wg2.Wait()
	fmt.Println("mutex counter:", counter)
}

func recoveredPanic() (msg string) {
	defer func() {
		if r := recover(); r != nil {
			msg = fmt.Sprint("recovered: ", r)
		}
	}()
	panic(errors.New("boom"))
}

func recoveredNil(p *node) (msg string) {
	defer func() {
		if r := recover(); r != nil {
			msg = fmt.Sprint("recovered: ", r)
		}
	}()
	return strconv.Itoa(p.val)
}

func recoveredIndex(i int) (msg string) {
	defer func() {
		if r := recover(); r != nil {
			msg = fmt.Sprint("recovered: ", r)
		}
	}()
	a := []int{1, 2, 3}
	return strconv.Itoa(a[i])
}

func recoveredDivide(d int) (msg string) {
	defer func() {
		if r := recover(); r != nil {
			msg = fmt.Sprint("recovered: ", r)
		}
	}()
	return strconv.Itoa(100 / d)
}

func sleeping() {
	start := time.Now()
	done := make(chan struct{})
	go func() {
		time.Sleep(30 * time.Millisecond)
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		fmt.Println("sleep: timed out")
		return
	}
	el := time.Since(start)
	fmt.Println("sleep ok:", el >= 30*time.Millisecond && el < 5*time.Second)
	t := time.NewTicker(5 * time.Millisecond)
	ticks := 0
	for range t.C {
		ticks++
		if ticks == 3 {
			break
		}
	}
	t.Stop()
	fmt.Println("ticks:", ticks)
}

var spinSink int

// spin loops without calling a function until *stop is set: only an
// asynchronous preemption (SuspendThread, GetThreadContext,
// SetThreadContext on Windows; a signal on Linux) can stop it for the GC.
func spin(stop *int32, started chan<- struct{}) {
	close(started)
	x := 0
	for *stop == 0 {
		x++
	}
	spinSink = x
}

func preemption() {
	var stop int32
	started := make(chan struct{})
	go spin(&stop, started)
	<-started
	time.Sleep(10 * time.Millisecond)
	runtime.GC()
	stop = 1
	fmt.Println("gc while a goroutine spun: done")
}

func files() {
	dir := os.Getenv("GOWIN_DIR")
	if dir == "" {
		return
	}
	p := filepath.Join(dir, "gowin.txt")
	if err := os.WriteFile(p, []byte("line one\nline two\n"), 0o644); err != nil {
		fmt.Println("write:", err)
		return
	}
	b, err := os.ReadFile(p)
	if err != nil {
		fmt.Println("read:", err)
		return
	}
	fmt.Printf("file: %d bytes, %d lines\n", len(b), strings.Count(string(b), "\n"))
	if err := os.Remove(p); err != nil {
		fmt.Println("remove:", err)
	}
	_, err = os.Stat(p)
	fmt.Println("removed:", os.IsNotExist(err))
}

func main() {
	fmt.Println("hello from go", len(os.Args)-1, "args:", strings.Join(os.Args[1:], ","))
	goroutines()
	fmt.Println(recoveredPanic())
	fmt.Println(recoveredNil(nil))
	fmt.Println(recoveredIndex(len(os.Args) + 5))
	fmt.Println(recoveredDivide(len(os.Args) - len(os.Args)))
	sleeping()
	preemption()
	files()
	fmt.Fprintln(os.Stderr, "to stderr")
	code := 0
	if len(os.Args) > 1 {
		code, _ = strconv.Atoi(os.Args[1])
	}
	os.Exit(code)
}
