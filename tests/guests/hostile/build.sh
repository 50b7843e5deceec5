#!/usr/bin/env bash
# build.sh OUTDIR: the ring-0 hostile kernel, OUTDIR/hostile.elf (Multiboot).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="$1"
mkdir -p "$out"
gcc -m32 -march=i686 -O2 -ffreestanding -fno-pic -fno-stack-protector -fno-asynchronous-unwind-tables \
    -mgeneral-regs-only -nostdlib -static -Wall -Wextra -Werror \
    -no-pie -Wl,--build-id=none -Wl,--no-warn-rwx-segments -Wl,-T,"$here/kernel.ld" \
    -o "$out/hostile.elf.tmp" "$here/boot.S" "$here/kernel.c"
mv "$out/hostile.elf.tmp" "$out/hostile.elf"
