#!/usr/bin/env bash
# build_guest.sh - build the bundled guest OS: guest/build/guest.elf.
# Incremental (make), works from any directory, fails loudly.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
guest="$here/guest"

die() {
    echo "build_guest.sh: error: $*" >&2
    exit 1
}

for tool in make gcc readelf; do
    command -v "$tool" >/dev/null 2>&1 ||
        die "'$tool' not found (need the system gcc, binutils and make)"
done
[ -f "$guest/Makefile.guest" ] || die "missing $guest/Makefile.guest"

if ! make --no-print-directory -f "$guest/Makefile.guest" "$@"; then
    die "guest build FAILED (see the messages above)"
fi
[ -s "$guest/build/guest.elf" ] || die "guest/build/guest.elf was not produced"

# The init for Linux guests (vmm linux): a static binary, musl if installed.
init_src="$guest/linux_init/init.c"
init_bin="$guest/build/linux-init"
if [ ! -e "$init_bin" ] || [ "$init_src" -nt "$init_bin" ]; then
    cc=gcc
    command -v musl-gcc >/dev/null 2>&1 && cc=musl-gcc
    "$cc" -static -Os -Wall -Wextra -Werror -o "$init_bin" "$init_src" ||
        die "Linux guest init build FAILED (see the messages above)"
fi

# The ring-0 hostile kernel (tests/guests/hostile): MSR probing and a triple
# fault from ring 0, for tests/integration/test_hostile_*.py.
hostile_src="$here/tests/guests/hostile"
hostile_bin="$guest/build/hostile.elf"
if [ ! -e "$hostile_bin" ] || [ -n "$(find "$hostile_src" -newer "$hostile_bin" -print -quit)" ]; then
    "$hostile_src/build.sh" "$guest/build" || die "hostile test kernel build FAILED (see the messages above)"
fi
