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
