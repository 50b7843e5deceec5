#!/usr/bin/env bash
# build.sh OUTDIR: the Multiboot test kernel twice, OUTDIR/mbtest.elf (ELF
# form) and OUTDIR/mbtest.bin (flat binary, the a.out kludge's address fields).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="$1"
mkdir -p "$out"
cflags=(-m32 -march=i686 -O2 -ffreestanding -fno-pic -fno-stack-protector -fno-asynchronous-unwind-tables
        -mgeneral-regs-only -nostdlib -static -Wall -Wextra -Werror)
for form in elf bin; do
    defines=()
    [ "$form" = bin ] && defines=(-DAOUT_KLUDGE)
    gcc "${cflags[@]}" "${defines[@]}" -no-pie -Wl,--build-id=none -Wl,--no-warn-rwx-segments -Wl,-T,"$here/kernel.ld" \
        -o "$out/mbtest-$form.elf" "$here/boot.S" "$here/kernel.c"
done
mv "$out/mbtest-elf.elf" "$out/mbtest.elf"
objcopy -O binary "$out/mbtest-bin.elf" "$out/mbtest.bin"
rm "$out/mbtest-bin.elf"
