"""The HTML report's data: what the history recorder sees, what the collector maps, what the
renderer writes. (What a person sees in a browser is tests/test_report_browser.py.)

Oracles: VirtualQuery's walk of the final address space (the recorded history, replayed on
a page model, must arrive at it), pefile's reading of the sample files (section names and
addresses), and the samples' own console output (the old protection VirtualProtect returned,
the pages GetWriteWatch reported).
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pefile
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from unicorn import UC_ARCH_X86, UC_MODE_32, Uc

from emulator_mem import MemoryManager
from emulator_mem.cli import main
from emulator_mem.report.collect import collect, map_regions
from emulator_mem.report.history import HistoryRecorder
from emulator_mem.report.model import MemoryEvent, Region, RunReport, TypeTotals
from emulator_mem.report.render import render_html, report_data
from emulator_mem.runner import Process
from emulator_mem.win32 import Kernel32

SAMPLES = Path(__file__).resolve().parent.parent / "samples" / "bin"
PAGE = 0x1000
MEM_COMMIT, MEM_RESERVE, MEM_DECOMMIT, MEM_RELEASE = 0x1000, 0x2000, 0x4000, 0x8000
PAGE_NOACCESS, PAGE_READONLY, PAGE_READWRITE, PAGE_EXECUTE_READ = 0x01, 0x02, 0x04, 0x20


def run_sample(name: str, **kwargs: object) -> tuple[Process, HistoryRecorder]:
    recorder = HistoryRecorder()
    process = Process.load_file(SAMPLES / f"{name}.exe", observer=recorder)
    process.run(**kwargs)  # type: ignore[arg-type]
    return process, recorder


# -- the recorder against VirtualQuery ------------------------------------------------------
def replay(events: list[MemoryEvent]) -> dict[int, int]:
    """Page -> protection (0: reserved) after applying the history; freed pages vanish."""
    pages: dict[int, int] = {}
    for e in events:
        span = range(e.address, e.address + e.size, PAGE)
        if e.kind in ("allocate", "map_view"):
            pages.update(dict.fromkeys(span, e.protect))
        elif e.kind in ("commit", "protect"):
            pages.update(dict.fromkeys(span, e.protect))
        elif e.kind == "decommit":
            pages.update(dict.fromkeys(span, 0))
        elif e.kind in ("release", "unmap_view"):
            for page in span:
                pages.pop(page, None)
    return pages


def virtual_query_pages(mm: MemoryManager) -> dict[int, int]:
    pages: dict[int, int] = {}
    for mbi in mm.regions():
        if mbi.State != 0x10000:
            protect = mbi.Protect if mbi.State == MEM_COMMIT else 0
            span = range(mbi.BaseAddress, mbi.BaseAddress + mbi.RegionSize, PAGE)
            pages.update(dict.fromkeys(span, protect))
    return pages


OPS = st.lists(
    st.tuples(
        st.sampled_from(["reserve", "commit_new", "commit", "protect", "decommit", "release", "bad"]),
        st.integers(0, 7),  # which allocation
        st.integers(0, 7),  # first page
        st.integers(1, 9),  # pages (a range may pass the end of a small allocation)
        st.sampled_from([PAGE_READONLY, PAGE_READWRITE, PAGE_EXECUTE_READ, PAGE_NOACCESS, 0x7777]),
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(OPS)
def test_history_replays_to_what_virtual_query_reports(ops: list[tuple[str, int, int, int, int]]) -> None:
    """Every successful change is recorded once, failed calls record nothing: replaying the
    history on a page model gives exactly VirtualQuery's view of the final address space."""
    mm = MemoryManager(Uc(UC_ARCH_X86, UC_MODE_32))
    k32 = Kernel32(mm)
    recorder = HistoryRecorder()
    mm.observe(recorder)
    bases: list[int] = []
    for op, which, first, count, protect in ops:
        base = bases[which % len(bases)] if bases else 0x10000
        address, size = base + first * PAGE, count * PAGE
        if op == "reserve":
            got = k32.VirtualAlloc(0, 0x10000, MEM_RESERVE, PAGE_READWRITE)
            bases += [got] if got else []
        elif op == "commit_new":
            got = k32.VirtualAlloc(0, size, MEM_RESERVE | MEM_COMMIT, protect)
            bases += [got] if got else []
        elif op == "commit":
            k32.VirtualAlloc(address, size, MEM_COMMIT, protect)
        elif op == "protect":
            k32.VirtualProtect(address, size, protect)
        elif op == "decommit":
            k32.VirtualFree(address, size, MEM_DECOMMIT)
        elif op == "release" and bases:
            k32.VirtualFree(bases.pop(which % len(bases)), 0, MEM_RELEASE)
        else:  # a call Windows refuses: release of a range that is not an allocation base
            k32.VirtualFree(address + PAGE, 0, MEM_RELEASE)
    assert replay(recorder.events) == virtual_query_pages(mm)


def test_a_run_records_the_unpackers_calls_and_links_each_change_to_its_call() -> None:
    trace = io.StringIO()
    recorder = HistoryRecorder()
    process = Process.load_file(SAMPLES / "unpack32.exe", observer=recorder)
    process.api_trace = trace
    process.run()
    # the recorder's API log is the runner's: one record per --trace line, same calls
    traced = [line.split("(")[0].removeprefix("[api] ") for line in trace.getvalue().splitlines()]
    assert [c.name for c in recorder.calls] == traced
    assert [c.index for c in recorder.calls] == list(range(len(recorder.calls)))
    (protect,) = [e for e in recorder.events if e.kind == "protect" and e.api is not None]
    call = recorder.calls[protect.api]  # type: ignore[index]
    assert call.name == "kernel32.dll!VirtualProtect"
    assert call.args[0] == protect.address and call.args[2] == PAGE_EXECUTE_READ == protect.protect
    # the sample prints what VirtualProtect returned as the old protection
    assert b"old protection: 0x4" in process.console.stdout
    assert protect.old_protect == PAGE_READWRITE
    (alloc,) = [e for e in recorder.events if e.kind == "allocate" and e.address == protect.address]
    assert recorder.calls[alloc.api].name == "kernel32.dll!VirtualAlloc"  # type: ignore[index]
    assert recorder.calls[alloc.api].result == alloc.address  # type: ignore[index]
    # the loader's allocations come first, before any call
    names = [e.name for e in recorder.events if e.detail == "loader"]
    assert {"unpack32.exe", "process heap", "stack (thread 0)", "PEB", "TEB", "api stubs"} <= set(names)
    # time only moves forward, and stamps lie within the run
    stamps = [e.instructions for e in recorder.events]
    assert stamps == sorted(stamps) and stamps[-1] <= process.instructions
    assert 0 < recorder.resolution <= 1024


def test_guard_page_hits_follow_the_stack_down() -> None:
    process, recorder = run_sample("stack32")
    hits = [e for e in recorder.events if e.kind == "guard_page"]
    assert len(hits) > 100  # the recursion commits 0x81000 bytes, one page per hit
    assert all(e.detail == "stack grew" and e.name == "stack (thread 0)" for e in hits)
    addresses = [e.address for e in hits]
    assert addresses == list(range(addresses[0], addresses[0] - PAGE * len(hits), -PAGE))
    # as on Windows, each hit moves the guard down: the next page is committed
    # PAGE_READWRITE | PAGE_GUARD, and the history names the hit as the cause
    for hit in hits:
        after = recorder.events[recorder.events.index(hit) + 1]
        assert (after.kind, after.address, after.protect) == ("commit", hit.address - PAGE, 0x104)
        assert after.detail == "guard page: stack grew"


def test_write_watch_hits_are_the_pages_get_write_watch_reported() -> None:
    process, recorder = run_sample("watch64")
    hits = [e for e in recorder.events if e.kind == "write_watch"]
    (watched,) = {e.address & ~0xFFFF for e in hits}
    # samples/expected/watch64.txt: pages 1, 3 and 4, then (after the reset) page 7
    assert [e.address - watched for e in hits] == [0x1000, 0x3000, 0x4000, 0x7000]
    assert all(e.api is None for e in hits)  # guest stores, not API calls


def test_crash_ends_the_history_with_the_exception() -> None:
    process, recorder = run_sample("crash32")
    last = recorder.events[-1]
    assert last.kind == "exception" and last.detail == "0xc0000005 EXCEPTION_ACCESS_VIOLATION"
    assert process.exception is not None and last.address == process.exception.information[1]


@pytest.mark.parametrize("sample", ["hello64", "section32", "uart64"])
def test_observing_changes_nothing_the_guest_does(sample: str) -> None:
    plain = Process.load_file(SAMPLES / f"{sample}.exe")
    plain.run()
    observed, _ = run_sample(sample)
    assert observed.console.stdout == plain.console.stdout
    assert observed.exit_code == plain.exit_code
    assert list(observed.mm.regions()) == list(plain.mm.regions())


def test_instruction_limit_is_exact_with_an_observer() -> None:
    process, recorder = run_sample("stack32", max_instructions=3000)
    assert process.instructions == 3000 and process.exit_code is None


def test_caps_count_what_they_drop() -> None:
    recorder = HistoryRecorder(max_events=5, max_calls=3)
    process = Process.load_file(SAMPLES / "unpack32.exe", observer=recorder)
    process.run()
    assert len(recorder.events) == 5 and recorder.dropped_events > 0
    assert len(recorder.calls) == 3 and recorder.dropped_calls > 0


# -- the collector ---------------------------------------------------------------------------
def test_image_regions_are_cut_at_the_sections_pefile_reads() -> None:
    process = Process.load_file(SAMPLES / "uart64.exe")
    regions = map_regions(process.mm)
    pe = pefile.PE(str(SAMPLES / "uart64.exe"))
    base = pe.OPTIONAL_HEADER.ImageBase
    by_name = {r.name: r for r in regions}
    for section in pe.sections:
        name = section.Name.rstrip(b"\0").decode()
        region = by_name[f"uart64.exe {name}"]
        assert region.BaseAddress == base + section.VirtualAddress
        assert region.AllocationBase == base and region.Type == 0x1000000  # MEM_IMAGE
    assert by_name["uart64.exe headers"].BaseAddress == base
    image = [r for r in regions if r.category == "image"]
    assert sum(r.RegionSize for r in image) == pe.OPTIONAL_HEADER.SizeOfImage
    # the MMIO devices are told apart from ordinary views
    assert {r.name for r in regions if r.category == "mmio"} == {"uart", "ticks"}


# -- the renderer ------------------------------------------------------------------------------
HOSTILE = "</script><img src=x onerror=alert(1)>"


def small_report() -> RunReport:
    return RunReport(
        title=HOSTILE, source="x.exe", bits=32, origin="run", state="exited",
        lowest_address=0x10000, highest_address=0x7FFF0000,
        regions=[Region(0x400000, 0x1000, MEM_COMMIT, PAGE_READONLY, 0x1000000, 0x400000, 0x80, "image",
                        HOSTILE)],
        totals=[TypeTotals("image", 0x1000, 0x1000, 1)],
        events=[MemoryEvent(7, "protect", 0xFFFF_FFFF_FFFF_F000, 0x1000, PAGE_EXECUTE_READ, PAGE_READWRITE,
                            HOSTILE)],
        exit_code=0, exit_text="--- process exited with code 0x00000000 (0)", console=HOSTILE,
    )


def test_the_page_is_one_file_that_fetches_nothing() -> None:
    page = render_html(small_report())
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:|//|file:)""", page, re.I)
    assert "@import" not in page and "<link" not in page
    assert not re.search(r"\b(fetch|XMLHttpRequest|WebSocket|EventSource)\b", page)
    assert page.count("<script") == 2 and page.count("<style>") == 1


def test_text_is_escaped_and_the_data_island_round_trips() -> None:
    report = small_report()
    page = render_html(report)
    assert HOSTILE not in page  # neither in HTML text nor inside the JSON island
    island = page.split('<script type="application/json" id="report-data">')[1].split("</script>")[0]
    data = json.loads(island)
    assert data == json.loads(json.dumps(report_data(report)))
    assert HOSTILE in data["strings"]
    # a 64-bit value beyond a double's precision travels as text
    assert data["events"][0][2] == "0xfffffffffffff000"


def test_vmmap_html_of_an_image_and_of_a_snapshot(tmp_path: Path) -> None:
    out = tmp_path / "map.html"
    assert main(["vmmap", str(SAMPLES / "hello32.exe"), "--html", str(out)]) == 0
    page = out.read_text()
    assert "History not recorded: the image was mapped, not run" in page
    snap = tmp_path / "s.snap"
    assert main(["run", str(SAMPLES / "stack32.exe"), "--snapshot-at", "3000", "--snapshot-out", str(snap),
                 "--report", str(tmp_path / "run.html")]) == 0
    assert main(["vmmap", str(snap), "--html", str(out)]) == 0
    data = json.loads(out.read_text().split('id="report-data">')[1].split("</script>")[0])
    assert data["events"] == [] and any(s == "stack (thread 0)" for s in data["strings"])
    assert "loaded from a snapshot" in out.read_text()


def test_collect_fills_totals_and_exit() -> None:
    process, recorder = run_sample("crash32")
    report = collect(process, recorder, source="crash32.exe")
    assert report.exit_code == 0xC0000005
    assert report.exit_text == "--- process exited with code 0xc0000005 EXCEPTION_ACCESS_VIOLATION"
    assert "The memory could not be written." in report.exception  # a store to a read-only page
    committed = sum(r.RegionSize for r in report.regions if r.State == MEM_COMMIT)
    assert sum(t.committed for t in report.totals) == committed == process.mm.stats().committed_memory


@pytest.mark.parametrize("sample", ["watch64", "section32"])
def test_recorded_calls_are_the_traced_calls_with_their_callers(sample: str) -> None:
    """Arguments (x64 register and stack ones, x86 stack ones) and results as ``--trace``
    prints them; every call returns into the image's code section, as pefile reads it."""
    trace = io.StringIO()
    recorder = HistoryRecorder()
    process = Process.load_file(SAMPLES / f"{sample}.exe", observer=recorder)
    process.api_trace = trace
    process.run()
    lines = trace.getvalue().splitlines()
    assert len(lines) == len(recorder.calls) > 0
    pe = pefile.PE(str(SAMPLES / f"{sample}.exe"))
    (text,) = [s for s in pe.sections if s.Name.rstrip(b"\0") == b".text"]
    lo = process.image_base + text.VirtualAddress
    hi = lo + text.Misc_VirtualSize
    for line, call in zip(lines, recorder.calls, strict=True):
        shown = ", ".join(f"{a:#x}" for a in call.args)
        result = "" if call.result is None else f" = {call.result:#x}"
        assert line == f"[api] {call.name}({shown}){result}"
        assert lo <= call.caller < hi, hex(call.caller)
    assert any(len(c.args) > 4 for c in recorder.calls)  # stack arguments were read too
