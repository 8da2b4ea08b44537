"""The HTML report as a person sees it: rendered by headless Chromium, hovered with the mouse.

Two samples are run through the real command line (``emulator-mem run FILE --report``):
the unpacker (an RW buffer turned RX with VirtualProtect) and the stack-growth sample (guard
page hits). The browser — Debian's ``chromium``, driven over the DevTools pipe by
``tests/browser.py`` — loads each file from disk; the checks are what is on screen: bars for
the image's sections, the stack and the process heap, the MEMORY_BASIC_INFORMATION fields in
the tooltip that appears under the mouse, the VirtualProtect on the timeline, the exit line.
Expected values are Windows literals and the samples' own sources, not the package's tables.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from browser import Browser

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples" / "bin"


def _report(tmp: Path, sample: str) -> Path:
    out = tmp / f"{sample}.html"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-m", "emulator_mem.cli", "run", str(SAMPLES / f"{sample}.exe"),
         "--report", str(out)],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert f"report written to {out}" in done.stderr
    return out


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("reports")
    return {name: _report(tmp, name) for name in ("unpack32", "stack32")}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with Browser(1280, 900) as b:
        yield b


def _bars(browser: Browser) -> list[dict[str, str]]:
    return list(browser.evaluate(
        "[...document.querySelectorAll('#map rect.bar[data-r]')].map(r => ({name: r.dataset.name, "
        "base: r.dataset.base, cls: r.getAttribute('class'), w: r.getBBox().width}))"))


def _tip(browser: Browser) -> str | None:
    return browser.evaluate("(() => { const t = document.getElementById('tip');"
                            " return t.hidden ? null : t.innerText; })()")


@pytest.mark.parametrize("sample", ["unpack32", "stack32"])
def test_map_has_bars_for_image_sections_stack_and_heap(pages: dict[str, Path], browser: Browser,
                                                        sample: str) -> None:
    browser.open(pages[sample])
    assert browser.evaluate("document.body.dataset.rendered") == "1"
    bars = _bars(browser)
    names = {b["name"] for b in bars}
    exe = f"{sample}.exe"
    # the samples' PE files have these sections (samples/build.py) and the image base 0x400000
    for section in ("headers", ".text", ".rdata", ".idata"):
        assert f"{exe} {section}" in names
    text = next(b for b in bars if b["name"] == f"{exe} .text")
    assert int(text["base"], 16) == 0x401000
    assert "c-image" in text["cls"] and "px" in text["cls"]  # image colour, executable shade
    assert any(n == "stack (thread 0)" for n in names)
    assert any(n == "process heap" for n in names)
    # a bar is something one can see and point at
    assert all(b["w"] >= 8 for b in bars)


def test_hovering_a_bar_shows_its_memory_basic_information(pages: dict[str, Path], browser: Browser) -> None:
    browser.open(pages["unpack32"])
    assert _tip(browser) is None
    x, y = browser.hover('#map rect[data-name="unpack32.exe .text"]')
    hit = browser.element_at(x, y)
    assert hit["name"] == "unpack32.exe .text"  # nothing covers the bar
    tip = _tip(browser)
    assert tip is not None
    assert "unpack32.exe .text" in tip
    for field, value in (("BaseAddress", "0x00401000"), ("AllocationBase", "0x00400000"),
                         ("AllocationProtect", "PAGE_EXECUTE_WRITECOPY"), ("RegionSize", "0x1000"),
                         ("State", "MEM_COMMIT"), ("Protect", "PAGE_EXECUTE_READ"), ("Type", "MEM_IMAGE")):
        line = next((ln for ln in tip.splitlines() if ln.startswith(field)), "")
        assert value in line, (field, tip)
    # the stack's guard page is marked and its fields say so
    browser.hover('#map rect.bar.guard[data-name="stack (thread 0)"]')
    tip = _tip(browser)
    assert tip is not None and "PAGE_READWRITE | PAGE_GUARD" in tip
    # moving away hides it again
    browser.page("Input.dispatchMouseEvent", type="mouseMoved", x=5, y=5)
    assert _tip(browser) is None


def test_timeline_holds_the_unpackers_virtual_protect(pages: dict[str, Path], browser: Browser) -> None:
    browser.open(pages["unpack32"])
    rows = browser.evaluate("[...document.querySelectorAll('#events tr.ev')].map(r => r.innerText)")
    protects = [r for r in rows if "protect" in r and "VirtualProtect" in r]
    # samples/src/unpack32.asm: VirtualProtect(buffer, size, PAGE_EXECUTE_READ, &old) on an RW buffer
    assert protects, rows
    assert any("RW → RX" in r and "kernel32.dll!VirtualProtect(" in r and "0x20" in r for r in protects)
    # the timeline has markers in the protect lane (the loader's stub page, the unpacker's
    # buffer); hovering them shows the unpacker's call
    markers = browser.evaluate(
        "[...document.querySelectorAll('#timeline circle[data-kind=\"protect\"]')].map(c => c.dataset.bin)")
    tips = []
    for marker in markers:
        browser.hover(f'#timeline circle[data-bin="{marker}"]')
        tips.append(_tip(browser) or "")
    assert any("kernel32.dll!VirtualProtect" in t and "RW → RX" in t for t in tips), tips
    # the allocation it protected came from VirtualAlloc, and was released by VirtualFree
    assert any("allocate" in r and "VirtualAlloc" in r for r in rows)
    assert any("release" in r and "VirtualFree" in r for r in rows)
    # clicking the call link opens it in the API log
    browser.click('#events a[data-call]')
    highlighted = browser.evaluate("(document.querySelector('#calls tr.hl') || {}).innerText")
    assert highlighted and "kernel32.dll!" in highlighted


def test_stack_growth_and_exit_status_are_shown(pages: dict[str, Path], browser: Browser) -> None:
    browser.open(pages["stack32"])
    kinds = browser.evaluate("[...document.querySelectorAll('#timeline circle')].map(c => c.dataset.kind)")
    assert "guard_page" in kinds
    assert browser.evaluate("document.getElementById('exit').innerText") == \
        "--- process exited with code 0x00000000 (0)"
    totals = browser.evaluate("[...document.querySelectorAll('#totals tbody tr')].map(r => r.innerText)")
    assert any(t.startswith("image") for t in totals) and any(t.startswith("Total") for t in totals)


def test_the_page_is_self_contained(pages: dict[str, Path], browser: Browser) -> None:
    """Nothing is fetched: every resource the page loaded is the file itself."""
    browser.open(pages["unpack32"])
    urls = browser.evaluate("performance.getEntriesByType('resource').map(e => e.name)")
    assert urls == []
    data = json.loads(browser.evaluate("document.getElementById('report-data').textContent"))
    assert data["bits"] == 32
