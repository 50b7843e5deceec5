"""Go programs in the sandbox: the runtime starts threads with clone, parks
them on futexes, sleeps in epoll_pwait and signals them with tgkill.

Go's runtime reserves ~590 MiB of address space at start (PROT_NONE page
summaries); the guest backs every mapping with guest RAM, untouched and so
free on the host, hence --mem 1024 here."""

import os
import shutil
import subprocess

import pytest

from vmm.sandbox import run

pytestmark = [
    pytest.mark.kvm,
    pytest.mark.skipif(shutil.which("go") is None, reason="go not installed (apt-get install golang-go)"),
]

GO_MEM_MIB = 1024

HELLO = """package main

import "fmt"

func main() { fmt.Println("hello from go") }
"""

GOROUTINES = """package main

import (
	"fmt"
	"os"
	"runtime"
	"sync"
	"time"
)

func main() {
	jobs := make(chan int)
	results := make(chan int, 1000)
	var wg sync.WaitGroup
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				results <- j * j
			}
		}()
	}
	for i := 1; i <= 1000; i++ {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	close(results)
	sum := 0
	for r := range results {
		sum += r
	}
	var mu sync.Mutex
	count := 0
	var wg2 sync.WaitGroup
	for i := 0; i < 100; i++ {
		wg2.Add(1)
		go func(n int) {
			defer wg2.Done()
			time.Sleep(time.Duration(n%5) * time.Millisecond)
			mu.Lock()
			count++
			mu.Unlock()
			runtime.Gosched()
		}(i)
	}
	wg2.Wait()
	<-time.After(20 * time.Millisecond)
	fmt.Printf("sum %d count %d\\n", sum, count)
	fmt.Fprintln(os.Stderr, "done")
	os.Exit(3)
}
"""


@pytest.fixture(scope="module")
def go_build(tmp_path_factory):
    base = tmp_path_factory.mktemp("go")
    # every file the Go tool writes stays under the test's temporary directory
    env = dict(os.environ, CGO_ENABLED="0", HOME=str(base), GOCACHE=str(base / "cache"),
               GOPATH=str(base / "gopath"), GOTMPDIR="", GOFLAGS="-mod=mod", GO111MODULE="off")

    def build(name: str, source: str) -> str:
        src = base / f"{name}.go"
        src.write_text(source)
        exe = base / name
        subprocess.run(["go", "build", "-o", str(exe), str(src)], check=True, env=env, cwd=base, capture_output=True)
        return str(exe)

    return build


def test_go_hello(go_build):
    result = run([go_build("hello", HELLO)], mem_mib=GO_MEM_MIB, timeout=60)
    assert (result.returncode, result.stdout) == (0, b"hello from go\n"), result.stderr


def test_go_goroutines_channels_timers(go_build):
    result = run([go_build("goroutines", GOROUTINES)], mem_mib=GO_MEM_MIB, timeout=60)
    assert result.stdout == b"sum 333833500 count 100\n", result.stderr
    assert (result.returncode, result.stderr) == (3, b"done\n")
