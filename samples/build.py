"""Build the sample payloads: keystone assembles ``samples/src/*.asm``, our PEWriter links.

Run ``python samples/build.py`` to (re)write ``samples/bin/*.exe``; ``--check`` only verifies
that the committed files are what the sources build to (the build is deterministic: fixed
section order, TimeDateStamp 0, no randomness). Everything here is importable, so tests can
build throw-away payloads with :func:`build_text`.

Source convention (see ``samples/README.md`` for a worked example)
------------------------------------------------------------------
A leading block of ``; key: value`` comment lines configures the build:

``; bits: 32`` or ``64``
    PE32 (x86, image base 0x400000) or PE32+ (x64, image base 0x140000000).
``; import kernel32.dll: GetStdHandle WriteFile``
    Imports, one DLL per line (repeatable). ``devices.dll`` names MMIO devices the runner
    maps for the sample (a *data* import: the IAT slot receives the device's base).
``; include: lib32``
    Append ``samples/src/lib32.inc`` (same format: its imports, code and data merge in).
``; exit: 0xC0000005``
    The exit code the sample is expected to end with (tests and ``make demo`` read it).
``; export: input input_len``
    Export these data items by name (``parse32.exe!input``), e.g. for a batch harness to
    find the input buffer: ``emulator-mem batch --input-at parse32.exe!input``.

Then sections, each opened by a ``section`` line:

``section .text``
    keystone Intel syntax; the first instruction is the entry point. Comments start with
    ``;`` (stripped before assembly); local labels must use the ``.L`` prefix.
``section .data`` / ``section .rdata``
    a tiny data language parsed here: ``label: db "text", 10, 0`` / ``dw`` / ``dd`` /
    ``dq`` (numbers or ``{DATA:x}`` pointers, relocated) / ``resb N`` (zeroes).
``section .packed NAME KEY``
    position-independent code assembled on its own and XOR-ed with the byte ``KEY``; the
    result becomes data item ``NAME`` of ``.data`` (an unpacker's payload). ``db`` lines work
    here too.

Placeholders, usable in code: ``{IAT:Func}`` is the IAT slot of an import, ``{DATA:label}``
a data item's address, ``{SIZE:label}`` its size in bytes. Windows constants from
:mod:`emulator_mem.windows.constants` (``PAGE_READWRITE``, ``MEM_COMMIT``…) may be used by name.
In 64-bit code addresses are *only* reachable RIP-relatively (``lea rcx, [rip + {DATA:msg}]``,
``call qword ptr [rip + {IAT:WriteFile}]``) or through ``movabs``: keystone would encode a
bare ``[0x1234]`` as RIP-relative too, so the placeholders are symbols defined relative to
the code's first byte, which keystone resolves exactly. In 32-bit code they are absolute
addresses; their positions in the encoded bytes are found by assembling at two image bases
and comparing, and each becomes an IMAGE_REL_BASED_HIGHLOW relocation (DIR64 for
``movabs`` in 64-bit code).
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from keystone import KS_ARCH_X86, KS_MODE_32, KS_MODE_64, Ks, KsError

from emulator_mem import constants as C
from emulator_mem.pe.writer import SCN_CODE, SCN_DATA, SCN_RDATA, ExportSpec, PEWriter

ROOT = Path(__file__).resolve().parent
SRC = ROOT / "src"
BIN = ROOT / "bin"
EXPECTED = ROOT / "expected"
RELOC_PROBE = 0x10000  # image-base shift used to find absolute addresses in code
_TRIAL_BASE = 0x7F000000  # large dummy addresses for the sizing pass (32-bit)
_PLACEHOLDER = re.compile(r"\{(IAT|DATA|SIZE):([A-Za-z_][A-Za-z0-9_]*)\}")
_WORD = re.compile(r"\b[A-Z][A-Z0-9_]+\b")
_DATA_LINE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*):\s*(db|dw|dd|dq|resb)\b(.*)$")
_WIDTH = {"db": 1, "dw": 2, "dd": 4, "dq": 8}


class BuildError(Exception):
    """A sample source that does not follow the convention (message names file and line)."""


@dataclass
class DataItem:
    """One labelled item of ``.data``/``.rdata``: bytes plus pointer fields to relocate."""

    label: str
    data: bytes
    pointers: list[tuple[int, str]] = field(default_factory=list)  # (offset, data label)
    width: int = 4


@dataclass
class SampleSource:
    """A parsed ``.asm`` file (with its includes merged)."""

    name: str
    bits: int = 32
    imports: dict[str, list[str]] = field(default_factory=dict)
    text: list[str] = field(default_factory=list)
    data: list[DataItem] = field(default_factory=list)
    rdata: list[DataItem] = field(default_factory=list)
    packed: list[tuple[str, int, list[str]]] = field(default_factory=list)
    includes: list[str] = field(default_factory=list)
    exit_code: int = 0
    stack_reserve: int = 0x100000
    exports: list[str] = field(default_factory=list)  # data labels exported by name

    def add_import(self, dll: str, func: str) -> None:
        funcs = self.imports.setdefault(dll.lower(), [])
        if func not in funcs:
            funcs.append(func)


# -- parsing ------------------------------------------------------------------------------
def _strip_comment(line: str) -> str:
    """Drop a ``;`` comment outside double quotes (keystone reads ``;`` as a separator)."""
    quoted = False
    for i, ch in enumerate(line):
        if ch == '"' and (i == 0 or line[i - 1] != "\\"):
            quoted = not quoted
        elif ch == ";" and not quoted:
            return line[:i].rstrip()
    return line.rstrip()


def parse_source(text: str, name: str = "<text>", *, src_dir: Path = SRC) -> SampleSource:
    """Parse a sample (header directives, sections) and merge its includes."""
    source = SampleSource(name)
    _parse_into(source, text, name, src_dir, top=True)
    done: set[str] = set()
    while len(done) < len(source.includes):  # after the sample: its first byte is the entry
        include = next(i for i in source.includes if i not in done)
        done.add(include)
        path = src_dir / f"{include}.inc"
        _parse_into(source, path.read_text(), path.name, src_dir, top=False)
    return source


def _parse_into(source: SampleSource, text: str, name: str, src_dir: Path, *, top: bool) -> None:
    section: str | None = None
    packed: list[str] | None = None
    header = True
    for number, raw in enumerate(text.splitlines(), 1):
        where = f"{name}:{number}"
        stripped = raw.strip()
        if header and stripped.startswith(";"):
            _directive(source, stripped[1:].strip(), where, src_dir, top=top)
            continue
        header = header and not stripped
        line = _strip_comment(raw)
        if not line.strip():
            continue
        header = False
        words = line.split()
        if words[0] == "section":
            if len(words) < 2:
                raise BuildError(f"{where}: 'section' needs a name")
            section = words[1]
            if section == ".packed":
                if len(words) != 4:
                    raise BuildError(f"{where}: use 'section .packed NAME KEY'")
                packed = []
                source.packed.append((words[2], int(words[3], 0) & 0xFF, packed))
            elif section not in (".text", ".data", ".rdata"):
                raise BuildError(f"{where}: unknown section {section!r}")
            continue
        if section == ".text":
            source.text.append(line)
        elif section in (".data", ".rdata"):
            item = _data_item(line.strip(), where, source.bits)
            (source.data if section == ".data" else source.rdata).append(item)
        elif section == ".packed" and packed is not None:
            packed.append(_db_to_bytes_directive(line, where))
        else:
            raise BuildError(f"{where}: statement outside any section")


def _directive(source: SampleSource, body: str, where: str, src_dir: Path, *, top: bool) -> None:
    key, sep, value = body.partition(":")
    key = key.strip().lower()
    if not sep or (" " in key and not key.startswith("import ")):
        return  # an ordinary header comment
    value = value.strip()
    if key == "bits" and top:
        if value not in ("32", "64"):
            raise BuildError(f"{where}: bits must be 32 or 64")
        source.bits = int(value)
    elif key.startswith("import "):
        for func in value.split():
            source.add_import(key.split()[1], func)
    elif key == "include":
        path = src_dir / f"{value}.inc"
        if not path.is_file():
            raise BuildError(f"{where}: no include file {path.name}")
        if value not in source.includes:
            source.includes.append(value)
    elif key == "exit" and top:
        source.exit_code = int(value, 0)
    elif key == "stack" and top:
        source.stack_reserve = int(value, 0)
    elif key == "export" and top:
        source.exports.extend(value.split())


def _parse_values(text: str, where: str) -> list[int | str | bytes]:
    """Comma-separated numbers, ``"strings"`` and ``{DATA:x}`` pointers."""
    out: list[int | str | bytes] = []
    for token in re.findall(r'"(?:[^"\\]|\\.)*"|[^,\s"][^,]*', text):
        token = token.strip()
        if not token:
            continue
        if token.startswith('"'):
            out.append(token[1:-1].encode("latin-1").decode("unicode_escape").encode("latin-1"))
            continue
        match = _PLACEHOLDER.fullmatch(token)
        if match and match.group(1) == "DATA":
            out.append(match.group(2))
            continue
        try:
            out.append(int(token, 0))
        except ValueError:
            if hasattr(C, token):
                out.append(int(getattr(C, token)))
            else:
                raise BuildError(f"{where}: cannot read {token!r}") from None
    return out


def _data_item(line: str, where: str, bits: int) -> DataItem:
    match = _DATA_LINE.match(line)
    if match is None:
        raise BuildError(f"{where}: expected 'label: db|dw|dd|dq|resb ...'")
    label, kind, rest = match.groups()
    if kind == "resb":
        return DataItem(label, bytes(int(rest.strip(), 0)), width=16)
    width = _WIDTH[kind]
    body = bytearray()
    pointers: list[tuple[int, str]] = []
    for value in _parse_values(rest, where):
        if isinstance(value, bytes):
            if width != 1:
                raise BuildError(f"{where}: strings only in db")
            body += value
        elif isinstance(value, str):
            if width != bits // 8:
                raise BuildError(f"{where}: pointers need d{'d' if bits == 32 else 'q'}")
            pointers.append((len(body), value))
            body += bytes(width)
        else:
            body += (value & ((1 << (8 * width)) - 1)).to_bytes(width, "little")
    return DataItem(label, bytes(body), pointers, width)


def _db_to_bytes_directive(line: str, where: str) -> str:
    """Inside ``.packed`` a ``label: db ...`` line becomes keystone's ``label: .byte ...``."""
    match = _DATA_LINE.match(line.strip())
    if match is None:
        return line
    label, kind, rest = match.groups()
    if kind != "db":
        raise BuildError(f"{where}: only db is supported in .packed")
    raw = bytearray()
    for value in _parse_values(rest, where):
        if isinstance(value, str):
            raise BuildError(f"{where}: no pointers in packed code")
        raw += value if isinstance(value, bytes) else bytes([value & 0xFF])
    return f"{label}: .byte {', '.join(str(b) for b in raw)}"


# -- assembly -----------------------------------------------------------------------------
def _keystone(bits: int) -> Ks:
    return Ks(KS_ARCH_X86, KS_MODE_64 if bits == 64 else KS_MODE_32)


def assemble(lines: list[str], bits: int, address: int, symbols: dict[str, str], where: str) -> bytes:
    """Assemble with ``symbols`` (name -> expression) defined first; constants by name."""
    # Windows constants become literals: keystone encodes ``push SYMBOL`` with a small
    # symbol value as a 16-bit push (66 6A xx), which would unbalance the stack.
    body = _WORD.sub(lambda m: str(int(getattr(C, m.group(0))))
                     if isinstance(getattr(C, m.group(0), None), int) else m.group(0), "\n".join(lines))
    defs = ["__text:"] + [f"{k} = {v}" for k, v in symbols.items()]
    try:
        encoding, _ = _keystone(bits).asm("\n".join(defs) + "\n" + body, address)
    except KsError as exc:
        raise BuildError(f"{where}: keystone: {exc}") from None
    return bytes(encoding or b"")


def _substitute(lines: list[str], sizes: dict[str, int], known: set[str], where: str) -> list[str]:
    def repl(match: re.Match[str]) -> str:
        kind, name = match.groups()
        if kind == "SIZE":
            if name not in sizes:
                raise BuildError(f"{where}: no data item {name!r} for {{SIZE:{name}}}")
            return str(sizes[name])
        symbol = f"__{kind.lower()}_{name}"
        if symbol not in known:
            what = "import" if kind == "IAT" else "data item"
            raise BuildError(f"{where}: no {what} {name!r} for {{{kind}:{name}}}")
        return symbol

    return [_PLACEHOLDER.sub(repl, line) for line in lines]


def _absolute_fields(low: bytes, high: bytes, width: int, where: str) -> list[int]:
    """Offsets of the ``width``-byte fields that moved by RELOC_PROBE between two assemblies."""
    if len(low) != len(high):
        raise BuildError(f"{where}: code size depends on addresses")
    out: list[int] = []
    i = 0
    while i < len(low):
        if low[i] == high[i]:
            i += 1
            continue
        start = i - 2  # adding 0x10000 first changes byte 2 of a little-endian field
        a = int.from_bytes(low[start : start + width], "little") if start >= 0 else 0
        b = int.from_bytes(high[start : start + width], "little") if start >= 0 else 0
        if start < 0 or b - a != RELOC_PROBE:
            kind = "32-bit absolute address in 64-bit code (use [rip + ...])" if width == 8 else (
                "an address field keystone encoded oddly")
            raise BuildError(f"{where}: {kind} at code offset {max(start, 0):#x}")
        out.append(start)
        i = start + width
    return out


@dataclass
class _Layout:
    writer: PEWriter
    text_rva: int
    symbols_rva: dict[str, int]  # symbol -> RVA


def _data_blob(items: list[DataItem]) -> tuple[bytes, dict[str, int]]:
    blob = bytearray()
    offsets: dict[str, int] = {}
    for item in items:
        align = min(item.width, 16)
        blob += bytes(-len(blob) % align)
        offsets[item.label] = len(blob)
        blob += item.data
    return bytes(blob), offsets


def build(source: SampleSource) -> bytes:
    """Assemble and link ``source`` into PE bytes (deterministic)."""
    where = source.name
    bits = source.bits
    for label, key, lines in source.packed:
        code = assemble(lines, bits, 0, {}, f"{where} (.packed {label})")
        source.data.append(DataItem(label, bytes(b ^ key for b in code), width=16))
    labels = [i.label for i in source.data + source.rdata]
    if len(set(labels)) != len(labels):
        raise BuildError(f"{where}: duplicate data label")
    sizes = {i.label: len(i.data) for i in source.data + source.rdata}
    known = {f"__iat_{f}" for funcs in source.imports.values() for f in funcs}
    known |= {f"__data_{label}" for label in labels}
    text = _substitute(source.text, sizes, known, where)

    def symbol_defs(rvas: dict[str, int], text_rva: int, base: int) -> dict[str, str]:
        if bits == 64:
            return {k: f"__text + {v - text_rva}" for k, v in rvas.items()}
        return {k: str(base + v) for k, v in rvas.items()}

    trial = assemble(text, bits, _TRIAL_BASE, symbol_defs(dict.fromkeys(known, 0x10000), 0, _TRIAL_BASE),
                     where)
    writer = PEWriter(is_64bit=bits == 64, stack_reserve=source.stack_reserve)
    text_sec = writer.add_section(".text", SCN_CODE, size=max(len(trial), 1))
    rdata_blob, rdata_off = _data_blob(source.rdata)
    data_blob, data_off = _data_blob(source.data)
    rvas: dict[str, int] = {}
    sections = []
    if source.rdata:
        sec = writer.add_section(".rdata", SCN_RDATA, size=len(rdata_blob))
        rvas.update({f"__data_{k}": sec.rva + v for k, v in rdata_off.items()})
        sections.append((sec, rdata_blob, source.rdata, rdata_off))
    if source.data:
        sec = writer.add_section(".data", SCN_DATA, size=len(data_blob))
        rvas.update({f"__data_{k}": sec.rva + v for k, v in data_off.items()})
        sections.append((sec, data_blob, source.data, data_off))
    if source.exports:
        missing = [label for label in source.exports if f"__data_{label}" not in rvas]
        if missing:
            raise BuildError(f"{where}: export of unknown data item {', '.join(missing)}")
        writer.add_exports(Path(where).stem + ".exe",
                           [ExportSpec(label, rvas[f"__data_{label}"]) for label in source.exports])
    if source.imports:
        writer.add_imports({dll: list(funcs) for dll, funcs in source.imports.items()})
        for funcs in source.imports.values():
            rvas.update({f"__iat_{f}": _iat_rva(writer, source, f) for f in funcs})
    base = writer.base
    code = assemble(text, bits, base + text_sec.rva, symbol_defs(rvas, text_sec.rva, base), where)
    moved = assemble(text, bits, base + RELOC_PROBE + text_sec.rva,
                     symbol_defs(rvas, text_sec.rva, base + RELOC_PROBE), where)
    if len(code) != len(trial):
        raise BuildError(f"{where}: code size changed between passes ({len(trial)} -> {len(code)})")
    for offset in _absolute_fields(code, moved, bits // 8, where):
        writer.add_reloc(text_sec.rva + offset)
    text_sec.data = code
    for sec, blob, items, offsets in sections:
        patched = bytearray(blob)
        for item in items:
            for off, label in item.pointers:
                symbol = f"__data_{label}"
                if symbol not in rvas:
                    raise BuildError(f"{where}: pointer to unknown data item {label!r}")
                at = offsets[item.label] + off
                patched[at : at + bits // 8] = writer.pointer_bytes(rvas[symbol])
                writer.add_reloc(sec.rva + at)
        sec.data = bytes(patched)
    return writer.build()


def _iat_rva(writer: PEWriter, source: SampleSource, func: str) -> int:
    for dll, funcs in source.imports.items():
        if func in funcs:
            return writer.iat_rva(dll, func)
    raise BuildError(f"{source.name}: unknown import {func}")


# -- files --------------------------------------------------------------------------------
def build_text(text: str, name: str = "<text>") -> bytes:
    """Build PE bytes straight from source text (tests use it for throw-away payloads)."""
    return build(parse_source(text, name))


def sample_names() -> list[str]:
    return sorted(p.stem for p in SRC.glob("*.asm"))


def load_sample(name: str) -> SampleSource:
    path = SRC / f"{name}.asm"
    return parse_source(path.read_text(), path.name)


def build_sample(name: str) -> bytes:
    return build(load_sample(name))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="samples to build (default: all)")
    parser.add_argument("--check", action="store_true",
                        help="verify samples/bin matches the sources; write nothing")
    args = parser.parse_args(argv)
    names = args.names or sample_names()
    stale = []
    BIN.mkdir(exist_ok=True)
    for name in names:
        try:
            image = build_sample(name)
        except BuildError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        out = BIN / f"{name}.exe"
        if args.check:
            if not out.is_file() or out.read_bytes() != image:
                stale.append(name)
            continue
        if not out.is_file() or out.read_bytes() != image:
            out.write_bytes(image)
            print(f"wrote {out.relative_to(ROOT.parent)} ({len(image)} bytes)")
    if stale:
        print(f"out of date: {', '.join(stale)} (run python samples/build.py)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
