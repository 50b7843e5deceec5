"""Go programs in the sandbox: the runtime starts threads with clone, parks
them on futexes, sleeps in epoll_pwait and signals them with tgkill; and it
reserves ~650 MiB of address space at start (PROT_NONE page summaries, its
heap at the hint 0xc000000000), which the guest keeps above its identity
map and backs with RAM page by page as it is touched: Go runs in the
default 128 MiB.  The address-space tests are C programs (no Go needed)."""

import os
import shutil
import subprocess

import pytest

from vmm.sandbox import run

pytestmark = pytest.mark.kvm

needs_go = pytest.mark.skipif(shutil.which("go") is None, reason="go not installed (apt-get install golang-go)")

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


@needs_go
def test_go_hello(go_build):
    result = run([go_build("hello", HELLO)], timeout=60)
    assert (result.returncode, result.stdout) == (0, b"hello from go\n"), result.stderr


@needs_go
def test_go_goroutines_channels_timers(go_build):
    result = run([go_build("goroutines", GOROUTINES)], timeout=60)
    assert result.stdout == b"sum 333833500 count 100\n", result.stderr
    assert (result.returncode, result.stderr) == (3, b"done\n")


@needs_go
def test_go_under_qemu_tcg_as_under_kvm(guest_elf, go_build, tmp_path):
    # ring 0 syscalls, iretq thread switches, page tables for the window
    from tests.sandbox.conftest import boot_bundle
    from tests.sandbox.test_qemu_tcg import run_tcg
    from vmm.sandbox import build_bundle

    if shutil.which("qemu-system-x86_64") is None:
        pytest.skip("qemu-system-x86_64 not installed")
    bundle = build_bundle(go_build("goroutines", GOROUTINES), ["goroutines"], {}, {}, {"clock": 10**18, "seed": 7})
    kvm = boot_bundle(bundle, tmp_path)
    path = tmp_path / "tcg.tar"
    path.write_bytes(bundle)
    tcg = run_tcg(guest_elf, path)
    assert (tcg.outcome, tcg.output, tcg.status) == (kvm.outcome, kvm.output, kvm.status), tcg.serial
    assert kvm.outcome == "status 3"
    assert b"sum 333833500 count 100" in kvm.output


BIGMAP_OUTPUT = b"""hint honoured: 1
fresh pieces sum 0
from the window
pipe into an untouched page: 5 ddddd
after dontneed: 0
mprotect made a reserved page usable: 9
done
"""


@pytest.mark.parametrize("compiler", ["gcc", "musl"])
def test_reservations_bigger_than_ram_behave_as_on_linux(compile_prog, compiler):
    exe = compile_prog("bigmap", compiler)
    assert subprocess.run([exe], capture_output=True).stdout == BIGMAP_OUTPUT
    result = run([exe], timeout=60)
    assert (result.returncode, result.stdout) == (0, BIGMAP_OUTPUT), result.stderr


@pytest.mark.parametrize("compiler", ["gcc", "musl"])
def test_touching_a_reserved_page_is_sigsegv(compile_prog, compiler):
    result = run([compile_prog("bigmap", compiler), "touchreserved"], timeout=60)
    assert (result.returncode, result.stdout) == (-11, b"touching\n")
