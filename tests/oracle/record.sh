#!/bin/sh
# Record what Wine prints for every oracle program: tests/oracle/expected/{x86,x64}/NAME.txt.
#
# Each binary runs twice in a private, freshly booted WINEPREFIX; the two outputs must be
# identical (an address-dependent line would show up here). Then the lines listed in
# windows_overrides.txt, where Wine's own tests mark Wine as differing from Windows
# (todo_wine), are replaced by the Windows value. Needs wine64 and wine32:i386.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"

if ! command -v wine >/dev/null 2>&1; then
    echo "record.sh: wine not found; install wine64 and wine32:i386 (dpkg --add-architecture i386)" >&2
    exit 1
fi

WINEPREFIX=$(mktemp -d /tmp/oracle-wine.XXXXXX)
export WINEPREFIX WINEDEBUG=-all WINEDLLOVERRIDES="mscoree,mshtml=" DISPLAY=
trap 'wineserver -k >/dev/null 2>&1 || true; rm -rf "$WINEPREFIX"' EXIT
wineserver -p  # one persistent server for every run instead of one per run
wineboot -i >/dev/null 2>&1

tmp=$WINEPREFIX/out
mkdir -p "$tmp"
status=0
for arch in x86 x64; do
    mkdir -p "expected/$arch"
    for exe in bin/$arch/*.exe; do
        name=$(basename "$exe" .exe)
        for run in 1 2; do
            if ! wine "$exe" >"$tmp/$run.txt" 2>"$tmp/$run.err"; then
                echo "record.sh: $arch/$name exited with an error under Wine" >&2
                cat "$tmp/$run.err" >&2
                status=1
            fi
        done
        if ! cmp -s "$tmp/1.txt" "$tmp/2.txt"; then
            echo "record.sh: $arch/$name prints different lines on two runs:" >&2
            diff "$tmp/1.txt" "$tmp/2.txt" >&2 || true
            status=1
            continue
        fi
        python3 apply_overrides.py "$arch" "$name" <"$tmp/1.txt" >"expected/$arch/$name.txt"
    done
done
wine --version >expected/WINE_VERSION
[ "$status" -eq 0 ] || exit "$status"
echo "recorded $(ls expected/x86/*.txt expected/x64/*.txt | wc -l) outputs with $(cat expected/WINE_VERSION)"
