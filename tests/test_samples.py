"""The sample payloads: deterministic builds, expected output and exit code of every sample
in a plain run, and after a snapshot taken halfway and resumed in a fresh process.

Expected console output lives in ``samples/expected/<name>.txt`` and the expected exit code
in the ``; exit:`` line of each source; both were checked against Windows semantics by hand
(e.g. VirtualQuery of a reserved page: State 0x2000, Protect 0). The resume half runs ONE
subprocess per bitness, which resumes every snapshot of that bitness through the CLI, each
into a brand-new CPU and memory manager.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from emulator_mem.runner import Process  # noqa: E402
from emulator_mem.runner.persist import read_runner_state  # noqa: E402
from samples import build  # noqa: E402

NAMES = build.sample_names()
REQUIRED = {"hello32", "hello64", "vmem64", "unpack32", "stack32", "section32", "watch64", "uart64",
            "heap64", "crash32", "guard64", "seh32", "reprotect32"}
_PLAIN: dict[str, tuple[bytes, int | None, int]] = {}


def expected(name: str) -> tuple[bytes, int]:
    return (build.EXPECTED / f"{name}.txt").read_bytes(), build.load_sample(name).exit_code


def plain_run(name: str) -> tuple[bytes, int | None, int]:
    """(stdout, exit code, instructions) of a plain run, cached; small chunks make the
    instruction count precise enough to pick a halfway point."""
    if name not in _PLAIN:
        result = Process.load_file(build.BIN / f"{name}.exe").run(chunk=100)
        _PLAIN[name] = (result.stdout, result.exit_code, result.instructions)
    return _PLAIN[name]


def test_the_required_samples_exist_in_both_bitnesses() -> None:
    assert REQUIRED <= set(NAMES)
    bits = {build.load_sample(n).bits for n in NAMES}
    assert bits == {32, 64}
    for name in NAMES:
        header = (build.SRC / f"{name}.asm").read_text().splitlines()[0]
        assert header.startswith(f"; {name} — PE32")


@pytest.mark.parametrize("name", NAMES)
def test_rebuild_gives_identical_bytes(name: str) -> None:
    assert build.build_sample(name) == (build.BIN / f"{name}.exe").read_bytes()


def test_32_bit_builds_carry_relocations_for_absolute_addresses() -> None:
    import pefile

    pe = pefile.PE(str(build.BIN / "hello32.exe"))
    relocs = [r.rva for block in pe.DIRECTORY_ENTRY_BASERELOC for r in block.entries if r.type == 3]
    code = pe.get_memory_mapped_image()
    base, size = pe.OPTIONAL_HEADER.ImageBase, pe.OPTIONAL_HEADER.SizeOfImage
    assert relocs
    for rva in relocs:
        assert base <= int.from_bytes(code[rva : rva + 4], "little") < base + size


@pytest.mark.parametrize("name", ["hello32", "unpack32"])
def test_a_relocated_image_runs_the_same(name: str) -> None:
    """Loaded away from ImageBase (as ASLR would), the HIGHLOW fixups the build recorded
    keep every absolute address right."""
    process = Process.load_file(build.BIN / f"{name}.exe", base=0x01230000)
    assert process.image_base == 0x01230000
    result = process.run()
    want_out, want_code = expected(name)
    assert (result.stdout, result.exit_code) == (want_out, want_code)


@pytest.mark.parametrize("name", NAMES)
def test_sample_output_and_exit_code(name: str) -> None:
    stdout, exit_code, _ = plain_run(name)
    want_out, want_code = expected(name)
    assert stdout.decode() == want_out.decode()
    assert exit_code == want_code


@pytest.mark.parametrize("bits", [32, 64])
def test_snapshot_halfway_then_resume_in_a_fresh_process(bits: int, tmp_path: Path) -> None:
    names = [n for n in NAMES if build.load_sample(n).bits == bits]
    snapshots: dict[str, tuple[Path, bytes]] = {}
    for name in names:
        _, _, total = plain_run(name)
        path = tmp_path / f"{name}.snap"
        process = Process.load_file(build.BIN / f"{name}.exe")
        result = process.run(snapshot_at=max(total // 2, 1), snapshot_to=path, chunk=100)
        want_out, want_code = expected(name)
        assert result.snapshot == str(path)
        assert (result.stdout, result.exit_code) == (want_out, want_code), "snapshotting changed the run"
        state = read_runner_state(path)
        assert state["exit_code"] is None, f"{name}: the snapshot should be taken mid-run"
        snapshots[name] = (path, base64.b64decode(state["console"]["stdout"]))
    driver = (
        "import json, sys\n"
        "from emulator_mem.cli import main\n"
        "for name, path in json.loads(sys.argv[1]).items():\n"
        "    status = main(['run', '--resume', path, '--progress-every', '0'])\n"
        "    sys.stdout.flush()\n"
        "    print(f'\\n@@@ {name} {status}', flush=True)\n"
    )
    arg = json.dumps({name: str(path) for name, (path, _) in snapshots.items()})
    proc = subprocess.run([sys.executable, "-c", driver, arg], capture_output=True, cwd=ROOT,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr.decode()
    outputs: dict[str, tuple[bytes, int]] = {}
    chunk = b""
    for line in proc.stdout.splitlines(keepends=True):
        if line.startswith(b"@@@ "):
            _, name, status = line.decode().split()
            outputs[name] = (chunk.removesuffix(b"\n"), int(status))
            chunk = b""
        else:
            chunk += line
    assert set(outputs) == set(names)
    for name in names:
        want_out, want_code = expected(name)
        resumed, status = outputs[name]
        body, _, summary = resumed.rpartition(b"--- process exited with code ")
        assert summary.startswith(f"{want_code:#010x}".encode()), (resumed.decode(), proc.stderr.decode())
        if want_code == 0xC0000005:
            body = body[: body.index(b"Unhandled exception")]
        prefix = snapshots[name][1]
        assert prefix + body == want_out, f"{name}: resumed output differs"
        assert status == (0 if want_code == 0 else 1)
