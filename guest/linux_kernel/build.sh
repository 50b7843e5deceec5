#!/bin/sh
# Build vmm's microVM Linux kernel from Debian's linux-source-6.1 with the
# config fragment beside this script, and cache it outside the repository:
#   ~/.cache/vmm/kernels/vmlinuz-microvm-<version>-<config hash>   (bzImage)
#   ~/.cache/vmm/kernels/vmlinux-microvm-<version>-<config hash>   (ELF, PVH entry)
# A kernel is rebuilt only when the fragment (or the source version) changes.
#   guest/linux_kernel/build.sh               build if needed; print the bzImage's path
#   guest/linux_kernel/build.sh --path        print where it is (or would be); build nothing
# $VMM_KERNEL_CACHE moves the cache, $VMM_BUILD_DIR the unpacked source tree.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
fragment="$here/microvm.config"
cache=${VMM_KERNEL_CACHE:-$HOME/.cache/vmm/kernels}
build_root=${VMM_BUILD_DIR:-$HOME/.cache/vmm/build}
tarball=/usr/src/linux-source-6.1.tar.xz
package=linux-source-6.1

# The version is the Debian package's (6.1.N-R): a new upload is a new kernel.
version=$(dpkg-query -W -f '${Version}' "$package" 2>/dev/null || true)
hash=$( (cat "$fragment"; echo "$version") | sha256sum | cut -c1-12)
name="microvm-${version:-none}-$hash"
bzimage="$cache/vmlinuz-$name"
vmlinux="$cache/vmlinux-$name"

if [ "${1:-}" = "--path" ]; then
    [ -n "$version" ] || { echo "$cache/vmlinuz-microvm-not-installed"; exit 0; }
    echo "$bzimage"
    exit 0
fi
if [ -f "$bzimage" ] && [ -f "$vmlinux" ]; then
    echo "$bzimage"
    exit 0
fi

say() { echo "linux-kernel: $*" >&2; }
sudo=""
[ "$(id -u)" = 0 ] || sudo=sudo

# What building a kernel needs besides gcc and make (objtool wants libelf).
missing=""
[ -f "$tarball" ] || missing="$missing $package"
for pair in flex:flex bison:bison bc:bc; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing="$missing ${pair#*:}"
done
[ -f /usr/include/gelf.h ] || missing="$missing libelf-dev"
if [ -n "$missing" ]; then
    say "installing$missing"
    $sudo apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q $missing >&2
fi
version=$(dpkg-query -W -f '${Version}' "$package")
hash=$( (cat "$fragment"; echo "$version") | sha256sum | cut -c1-12)
name="microvm-$version-$hash"
bzimage="$cache/vmlinuz-$name"
vmlinux="$cache/vmlinux-$name"

mkdir -p "$cache" "$build_root"
# one build at a time (make linux-kernel and a test run may start together)
exec 9>"$build_root/.lock"
flock 9
if [ -f "$bzimage" ] && [ -f "$vmlinux" ]; then
    echo "$bzimage"
    exit 0
fi

src="$build_root/linux-source-6.1"
stamp="$src/.vmm-source-version"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$version" ]; then
    say "unpacking $tarball into $build_root"
    rm -rf "$src" "$src.part"
    mkdir -p "$src.part"
    tar -xJf "$tarball" -C "$src.part" --strip-components=1
    echo "$version" >"$src.part/.vmm-source-version"
    mv "$src.part" "$src"
fi

started=$(date +%s)
cd "$src"
# allnoconfig with the fragment's values forced (merge_config.sh -n), then
# olddefconfig for anything left; a requested =y that did not survive is an error
merge_log="$build_root/merge_config.log"
scripts/kconfig/merge_config.sh -n "$fragment" >"$merge_log" 2>&1
make -s olddefconfig >&2
lost=$(grep '^CONFIG_.*=' "$fragment" | while IFS= read -r line; do grep -qxF "$line" .config || echo "$line"; done)
if [ -n "$lost" ]; then
    say "the config fragment asks for options the kernel did not keep (see $merge_log):"
    echo "$lost" >&2
    exit 1
fi
jobs=$(nproc)
say "building $name with $jobs jobs (nice); about 15 minutes on 2 busy cores"
nice -n 10 make -j"$jobs" bzImage >&2
cp arch/x86/boot/bzImage "$bzimage.part"
cp vmlinux "$vmlinux.part"
mv "$vmlinux.part" "$vmlinux"
mv "$bzimage.part" "$bzimage"
# kernels of earlier fragments are not booted again: ~20 MB each
for old in "$cache"/vmlinuz-microvm-* "$cache"/vmlinux-microvm-*; do
    case "$old" in "$bzimage" | "$vmlinux") ;; *) rm -f "$old" ;; esac
done
say "built in $(( $(date +%s) - started )) s"
echo "$bzimage"
