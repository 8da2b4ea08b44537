#!/bin/sh
# Build the oracle programs: tests/oracle/src/NAME.c -> tests/oracle/bin/{x86,x64}/NAME.exe.
#
# Freestanding (no C runtime), linked only against kernel32, with fixed flags and no
# timestamp, so that the same compiler gives the same bytes. Needs the Debian packages
# gcc-mingw-w64-i686 and gcc-mingw-w64-x86-64.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"

CFLAGS="-O1 -std=gnu11 -ffreestanding -fno-builtin -fno-stack-protector -fno-asynchronous-unwind-tables \
 -fno-ident -mno-stack-arg-probe -Wall -Wextra -Wno-unused-function -Werror -Isrc"
LDFLAGS="-nostdlib -nostartfiles -s -Wl,--no-insert-timestamp -Wl,--subsystem,console \
 -Wl,--build-id=none -Wl,--file-alignment,0x200 -Wl,--section-alignment,0x1000"

build() {  # arch compiler entry-symbol
    arch=$1 cc=$2 entry=$3
    if ! command -v "$cc" >/dev/null 2>&1; then
        echo "build.sh: $cc not found; install gcc-mingw-w64-i686 and gcc-mingw-w64-x86-64" >&2
        exit 1
    fi
    mkdir -p "bin/$arch"
    for src in src/*.c; do
        name=$(basename "$src" .c)
        # shellcheck disable=SC2086
        "$cc" $CFLAGS $LDFLAGS -Wl,-e,"$entry" -o "bin/$arch/$name.exe" "$src" -lkernel32
    done
}

build x86 i686-w64-mingw32-gcc _oracle_entry@0
build x64 x86_64-w64-mingw32-gcc oracle_entry
echo "built $(ls bin/x86/*.exe bin/x64/*.exe | wc -l) programs into tests/oracle/bin/"
