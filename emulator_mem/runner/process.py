"""A Windows-like process around one PE image: load it, run it, report how it ended.

:meth:`Process.load` maps the image with ``mm.map_image`` and builds what a Windows process
has before its entry point runs: KUSER_SHARED_DATA at 0x7FFE0000
(:mod:`emulator_mem.runner.shared_data`), the process heap, PEB and TEB, a stack with a guard page,
FS/GS pointing at the TEB, and an import address table whose slots point at API stubs
(:mod:`emulator_mem.runner.stubs`). An import without an implementation fails the load with
:class:`~emulator_mem.errors.UnresolvedImportError` naming every missing ``DLL!function``.

:meth:`Process.run` drives Unicorn in chunks of ``emu_start(..., count=n)``: the chunk
boundaries are where progress is reported, the instruction limit ends the run and a
snapshot is taken. A refused translation comes back as an ``UcError`` with the fault kept by
the MMU (``mm.take_fault()``): a guard-page hit inside the stack grows the stack and the
faulting instruction is restarted (the PC still points at it); anything else is an
exception delivered to the guest's own handlers (:mod:`.exceptions`: vectored handlers, SEH,
the unhandled filter), and only if none handles it does the process end with its code, as
on Windows. The guest runs at CPL 3, as on Windows (:mod:`.environment`), so ``hlt`` and
the other privileged instructions make qemu raise #GP, which arrives in the interrupt hook
and becomes STATUS_PRIVILEGED_INSTRUCTION (:mod:`.exceptions.traps`).

Instruction counts are exact for chunks that run to their count, so a run stopped by
``max_instructions`` or a snapshot taken at N happens exactly there. Unicorn does not say
how many instructions an interrupted ``emu_start`` executed: a chunk cut short by a
stack-growth fault is restarted with its whole budget again (the limit can be exceeded by
the instructions run before such faults), and the chunk in which the process exits counts
in full, so the total of a finished run is an upper bound, precise to ``chunk``.
Each exception delivered to the guest counts as one instruction (Unicorn does not say how
many ran before the fault), so a guest that faults forever still reaches ``max_instructions``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from unicorn import UC_ARCH_X86, UC_ERR_INSN_INVALID, UC_HOOK_INTR, UC_MODE_32, UC_MODE_64, Uc, UcError
from unicorn import x86_const as X

from ..api.win32 import Kernel32
from ..errors import MemoryAccessError, RunnerError, UnresolvedImportError
from ..manager import MemoryManager
from ..pe.image import ImageImport, parse_image
from ..regions.image_map import map_layout
from ..windows import constants as C
from . import devices as _devices  # noqa: F401  (registers devices.dll)
from . import kernel32 as _kernel32  # noqa: F401  (registers the built-in handlers)
from . import report, shared_data
from .abi import Abi
from .api import DATA_IMPORTS, ApiCall, ApiSpec, DataResolver, lookup
from .console import Console, Sink
from .environment import ThreadEnvironment
from .exceptions import NESTED_STUB, RETURN_STUB, ExceptionDispatcher
from .exceptions.inflight import TRACKED_VECTORS, clear_exception_in_flight
from .exceptions.traps import general_protection
from .guest import DeviceRecord
from .heap import ProcessHeap
from .observer import RunObserver
from .persist import load_process, save_process
from .plugins import HookHandle, install_plugin
from .report import GuestException
from .stubs import EXIT_SPEC, RUNNER_DLL, StubTable

DEFAULT_CHUNK = 1_000_000  # instructions per emu_start
#: with an observer: the shortest chunk, and the fraction of the run so far a chunk may be
#: while the guest is calling APIs (1/1024: about a pixel of a timeline)
OBSERVED_MIN_CHUNK = 256
OBSERVED_CHUNK_SHIFT = 10
DEFAULT_PROGRESS = 50_000_000
Progress = Callable[[int, float], None]



@dataclass(slots=True)
class RunResult:
    """How a run ended. ``exit_code`` is None when the instruction limit stopped it."""

    exit_code: int | None
    stdout: bytes
    stderr: bytes
    instructions: int
    exception: GuestException | None = None
    limit_reached: bool = False
    snapshot: str | None = None


class Process:
    """One emulated process: CPU, memory manager, kernel32, heap, console, stubs."""

    def __init__(self, uc: Uc, mm: MemoryManager, console: Console) -> None:
        self.uc = uc
        self.mm = mm
        self.abi = Abi(mm.is_64bit)
        self.k32 = Kernel32(mm)
        self.console = console
        self.image_name = ""
        self.image_base = 0
        self.entry_point = 0
        self.env: ThreadEnvironment | None = None
        self.heap: ProcessHeap | None = None
        self.stubs: StubTable | None = None
        self.devices: list[DeviceRecord] = []
        self.plugins: list[HookHandle] = []
        self.exit_code: int | None = None
        self.exception: GuestException | None = None
        self.instructions = 0
        #: a text stream that receives one line per API call (``--trace``), or None
        self.api_trace: IO[str] | None = None
        #: told about API calls, faults and the final exception (the report's history)
        self.observer: RunObserver | None = None
        self._observed_chunk = OBSERVED_MIN_CHUNK
        self._busy = False  # an API call or a fault happened in the current chunk
        self._interrupt: int | None = None
        #: vectored handlers, the unhandled filter and the exceptions being dispatched
        self.exceptions = ExceptionDispatcher(self)
        uc.hook_add(UC_HOOK_INTR, self._on_interrupt)

    # -- construction ------------------------------------------------------------------
    @classmethod
    def load(
        cls, image: bytes, name: str = "image.exe", *, stdout: Sink | None = None,
        stderr: Sink | None = None, base: int | None = None, observer: RunObserver | None = None,
    ) -> Process:
        """Map ``image`` (PE32 or PE32+) into a fresh CPU and prepare it to run its entry point.

        ``base`` maps the image elsewhere than its ImageBase (it must be relocatable), as
        ASLR would; ``stdout``/``stderr`` receive console output as it is written;
        ``observer`` sees the run from the loader's first allocation on.
        """
        layout = parse_image(bytes(image))
        uc = Uc(UC_ARCH_X86, UC_MODE_64 if layout.is_64bit else UC_MODE_32)
        mm = MemoryManager(uc)
        process = cls(uc, mm, Console(stdout, stderr))
        if observer is not None:
            process.observer = observer
            observer.attach(process)
        shared_data.create(mm)  # first: on 32-bit, MEM_TOP_DOWN then lands below it
        base = map_layout(mm, layout, base, name)
        mapped = mm.images[base]
        process.image_name, process.image_base, process.entry_point = name, base, mapped.entry_point
        process.heap = ProcessHeap.create(mm, layout.heap_reserve, layout.heap_commit)
        process.env = ThreadEnvironment.create(
            mm, image_base=base, heap=process.heap.handle,
            stack_reserve=layout.stack_reserve, stack_commit=layout.stack_commit,
        )
        process.env.attach(uc)
        process._link(mapped.imports)
        process._enter()
        process.env.enter_user_mode(uc, mm)
        return process

    @classmethod
    def load_file(cls, path: str | Path, **kwargs: Any) -> Process:
        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise RunnerError(f"cannot read {path}: {exc}") from exc
        return cls.load(data, path.name, **kwargs)

    def _link(self, imports: list[ImageImport]) -> None:
        """Resolve every import to an API stub or, for data imports such as devices, to the
        address a resolver returns; any import without either fails the whole load."""
        apis: list[ApiSpec] = []
        data: list[tuple[ImageImport, str, DataResolver]] = []
        missing: list[str] = []
        for imp in imports:
            label = imp.name if imp.name is not None else f"#{imp.ordinal}"
            resolver = DATA_IMPORTS.get(imp.dll.lower())
            spec = lookup(imp.dll, imp.name) if imp.name is not None else None
            if resolver is not None and imp.name is not None:
                data.append((imp, imp.name, resolver))
            elif spec is None:
                missing.append(f"{imp.dll}!{label}")
            elif spec not in apis:
                apis.append(spec)
        for own in (RETURN_STUB, NESTED_STUB):  # the exception dispatcher's own slots
            spec = lookup(RUNNER_DLL, own)
            if spec is not None:
                apis.append(spec)
        if missing:
            raise UnresolvedImportError(
                f"{self.image_name}: no implementation for {', '.join(missing)} "
                "(add one with @api in emulator_mem/runner/kernel32.py)")
        self.stubs = StubTable.create(self.mm, self.abi, EXIT_SPEC, apis)
        self.stubs.install(self.uc, self.dispatch)
        for imp in imports:
            spec = lookup(imp.dll, imp.name) if imp.name is not None else None
            if spec is not None and imp.dll.lower() not in DATA_IMPORTS:
                self.mm.write(self.image_base + imp.iat_rva, self.abi.pack_ptr(self.stubs.address_of(spec)))
        for imp, name, resolver in data:
            address = resolver(self, name)
            self.mm.write(self.image_base + imp.iat_rva, self.abi.pack_ptr(address))

    def _enter(self) -> None:
        """Registers at the entry point: a return address that exits, the PEB at hand."""
        env, stubs = self._require_env(), self._require_stubs()
        uc, abi = self.uc, self.abi
        if self.mm.is_64bit:
            sp = env.stack_base - 0x28  # rsp = 8 mod 16 at entry, as after a call; shadow space
            self.mm.write(sp, abi.pack_ptr(stubs.exit_address))
            uc.reg_write(abi.sp_reg, sp)
            uc.reg_write(X.UC_X86_REG_RCX, env.peb)
        else:
            sp = env.stack_base - 8  # [esp] = return address, [esp+4] = the PEB (entry's argument)
            self.mm.write(sp, abi.pack_ptr(stubs.exit_address) + abi.pack_ptr(env.peb))
            uc.reg_write(abi.sp_reg, sp)
            uc.reg_write(X.UC_X86_REG_EAX, self.entry_point)
            uc.reg_write(X.UC_X86_REG_EBX, env.peb)
        # the FPU/SSE state of a new Windows thread: FNINIT's control word 0x27F (53-bit
        # precision as Windows sets it), every x87 register empty, MXCSR with all exceptions masked
        uc.reg_write(X.UC_X86_REG_FPCW, 0x27F)
        uc.reg_write(X.UC_X86_REG_FPTAG, 0xFFFF)
        uc.reg_write(X.UC_X86_REG_MXCSR, 0x1F80)
        uc.reg_write(abi.pc_reg, self.entry_point)

    def _require_env(self) -> ThreadEnvironment:
        if self.env is None:
            raise RunnerError("the process has no thread environment yet")
        return self.env

    def _require_stubs(self) -> StubTable:
        if self.stubs is None:
            raise RunnerError("the process has no stub table yet")
        return self.stubs

    # -- API dispatch ------------------------------------------------------------------
    def dispatch(self, spec: ApiSpec) -> None:
        """Run the handler of the stub the CPU has reached; the stub's ``ret`` follows."""
        args: list[int] = []
        observer = self.observer
        try:
            if observer is None:
                args = self.abi.read_args(self.uc, self.mm, spec.argc)
            else:
                caller, args = self.abi.read_frame(self.uc, self.mm, spec.argc)
                self._busy = True
                observer.api_call(spec.qualified, args, caller)
            if spec.dwords and self.abi.is_64bit:
                args = spec.narrow(args)
            result = spec.handler(ApiCall(self, spec, args))
        except MemoryAccessError:  # a bad guest pointer: the call fails as kernel32's probes make it
            self.k32.SetLastError(C.ERROR_NOACCESS)
            result = 0
        if observer is not None:
            observer.api_return(None if result is None else result & self.abi.ptr_mask)
        if result is not None:
            self.abi.set_result(self.uc, result)
        if self.env is not None:
            self.env.store_last_error(self.mm, self.k32.GetLastError())
        if self.api_trace is not None:
            shown = ", ".join(f"{a:#x}" for a in args)
            ret = "" if result is None else f" = {result & self.abi.ptr_mask:#x}"
            self.api_trace.write(f"[api] {spec.qualified}({shown}){ret}\n")

    def terminate(self, exit_code: int) -> None:
        """ExitProcess: record the exit code and stop the CPU (from inside a hook)."""
        self.exit_code = exit_code & 0xFFFFFFFF
        self.uc.emu_stop()

    def runner_stub(self, name: str) -> int:
        """The address of one of the runner's own stub slots (``<runner>!name``)."""
        spec = lookup(RUNNER_DLL, name)
        try:
            if spec is not None:
                return self._require_stubs().address_of(spec)
        except KeyError:
            pass
        raise RunnerError(f"this process has no {RUNNER_DLL}!{name} slot (a snapshot from an older runner?)")

    def end_with_exception(self, code: int, information: list[int], address: int) -> None:
        """An exception nobody handled: report it, end the process, stop the CPU if running."""
        self._die(code, information, address=address)
        self.uc.emu_stop()

    def _on_interrupt(self, uc: Uc, vector: int, _data: Any) -> None:
        """CPU exceptions (#DE, #BP, #UD…) arrive here; stop and report them after emu_start."""
        self._interrupt = vector
        uc.emu_stop()

    # -- running -----------------------------------------------------------------------
    def run(
        self,
        max_instructions: int | None = None,
        *,
        snapshot_at: int | None = None,
        snapshot_to: str | Path | None = None,
        progress: Progress | None = None,
        progress_every: int = DEFAULT_PROGRESS,
        chunk: int = DEFAULT_CHUNK,
    ) -> RunResult:
        """Run until the process exits or ``max_instructions`` have run in this call.

        With ``snapshot_at``, the process is saved to ``snapshot_to`` once that many
        instructions of this call have run, and the run continues. ``progress(total, seconds)``
        is called after each chunk that crosses a multiple of ``progress_every`` instructions.
        ``chunk`` is the most instructions one ``emu_start`` may run. With an
        :attr:`observer`, chunks are short while the guest calls APIs (the larger of
        256 instructions and 1/1024 of the run so far) and double while it computes:
        Unicorn reports how many instructions ran only when ``emu_start`` returns, so what
        the observer sees lands on the instruction axis to within one chunk, while a
        compute loop still runs in full-size chunks.
        """
        if chunk <= 0 or progress_every <= 0:
            raise RunnerError("chunk and progress_every must be positive")
        if (snapshot_at is None) != (snapshot_to is None):
            raise RunnerError("snapshot_at and snapshot_to go together")
        ran = 0
        started = time.monotonic()
        saved: str | None = None
        limit_reached = False
        while self.exit_code is None:
            budget = chunk
            if max_instructions is not None:
                budget = min(budget, max_instructions - ran)
            if snapshot_at is not None and saved is None:
                budget = min(budget, snapshot_at - ran)
                if budget <= 0:
                    saved = str(snapshot_to)
                    self.save(saved)
                    continue
            if budget <= 0:
                limit_reached = True
                break
            if self.observer is not None:
                budget = min(budget, self._observed_chunk)
                self.observer.chunk_start(budget)
                self._busy = False
            done = self._run_chunk(budget)
            ran += done
            before, self.instructions = self.instructions, self.instructions + done
            shared_data.advance(self.mm, before, self.instructions)
            if self.observer is not None:
                self._observed_chunk = (
                    max(OBSERVED_MIN_CHUNK, self.instructions >> OBSERVED_CHUNK_SHIFT) if self._busy
                    else min(chunk, 2 * self._observed_chunk))
            if progress is not None and before // progress_every != self.instructions // progress_every:
                progress(self.instructions, time.monotonic() - started)
        return RunResult(self.exit_code, bytes(self.console.stdout), bytes(self.console.stderr),
                         self.instructions, self.exception, limit_reached, saved)

    def _run_chunk(self, budget: int) -> int:
        """One ``emu_start``; returns the instructions to count (see the module docstring)."""
        stubs = self._require_stubs()
        pc = self.abi.pc(self.uc)
        if pc == stubs.sentinel:
            self._die(C.STATUS_ACCESS_VIOLATION, [8, pc])
            return 0
        self._interrupt = None
        try:
            self.uc.emu_start(pc, stubs.sentinel, count=budget)
        except UcError as err:
            delivered = self._stopped_by_error(err)
            return budget if self.exit_code is not None else int(delivered)
        if self._interrupt is not None:
            self._stopped_by_interrupt(self._interrupt)
            return budget if self.exit_code is not None else 1
        if self.exit_code is None and self.abi.pc(self.uc) == stubs.sentinel:
            self._die(C.STATUS_ACCESS_VIOLATION, [8, stubs.sentinel])
        return budget

    def _stopped_by_error(self, err: UcError) -> bool:
        """Handle a stop by error; True when an exception was delivered to the guest."""
        fault = self.mm.take_fault()
        pc = self.abi.pc(self.uc)
        if self._interrupt is not None:
            self._stopped_by_interrupt(self._interrupt)
            return True
        if fault is None:
            illegal = err.errno == UC_ERR_INSN_INVALID
            code = C.STATUS_ILLEGAL_INSTRUCTION if illegal else C.STATUS_PRIVILEGED_INSTRUCTION
            self.exceptions.raise_exception(code, [], pc)
            return True
        env = self._require_env()
        observer = self.observer
        if fault.is_guard_page and env.in_stack(fault.address):
            # the kernel grows the stack; no handler sees this guard page
            status = env.grow_stack(self.mm, fault)
            if observer is not None:
                self._busy = True
                observer.guest_fault(fault, "stack grew" if status is None else "stack overflow")
            if status is None:
                return False
            self.exceptions.raise_exception(status, [fault.access, fault.address], pc)
            return True
        if observer is not None:
            self._busy = True
            observer.guest_fault(fault, "exception raised in the guest")
        self.exceptions.raise_exception(fault.status, [fault.access, fault.address], pc)
        return True

    def _stopped_by_interrupt(self, vector: int) -> None:
        if vector in TRACKED_VECTORS:  # or the next #DE/#GP would arrive as a double fault
            clear_exception_in_flight(self.uc, self.mm.is_64bit)
        status = report.VECTOR_STATUS.get(vector, C.STATUS_ACCESS_VIOLATION)
        pc = self.abi.pc(self.uc)
        if status == C.STATUS_BREAKPOINT:  # int3 traps after itself; Windows reports it at itself
            pc -= 1
            self.uc.reg_write(self.abi.pc_reg, pc)
        info: list[int] = []
        if vector == 13:  # #GP: a privileged instruction, else an access violation
            status, info = general_protection(self.mm, pc)
        elif status == C.STATUS_BREAKPOINT:
            info = [0]  # BREAKPOINT_BREAK
        self.exceptions.raise_exception(status, info, pc)

    def _die(self, code: int, information: list[int] | None = None, *, address: int | None = None) -> None:
        """An unhandled exception: report it and end the process with its code."""
        pc = self.abi.pc(self.uc) if address is None else address
        self.exception = report.capture(self.uc, self.mm, code, information, address=address,
                                        location=self.describe_address(pc))
        self.exit_code = code & 0xFFFFFFFF
        if self.observer is not None:
            self.observer.guest_exception(self.exception)

    # -- introspection -----------------------------------------------------------------
    def describe_address(self, address: int) -> str:
        """``module+0xoffset`` for image addresses, ``dll!function`` for stubs, else a region name."""
        stubs = self.stubs
        if stubs is not None:
            spec = stubs.spec_at(address)
            if spec is not None:
                return spec.qualified
        alloc = self.mm.allocation_at(address)
        if alloc is None:
            return ""
        if alloc.base == self.image_base and self.image_name:
            return f"{self.image_name}+{address - alloc.base:#x}"
        return alloc.name or ""

    def symbols(self) -> dict[int, str]:
        """Addresses worth naming in a trace: stubs, IAT slots, the entry point."""
        out: dict[int, str] = {}
        if self.stubs is not None:
            out.update(self.stubs.symbols())
        image = self.mm.images.get(self.image_base)
        if image is not None:
            for imp in image.imports:
                label = imp.name if imp.name is not None else f"#{imp.ordinal}"
                out[self.image_base + imp.iat_rva] = f"__imp_{imp.dll}!{label}"
            for exp in image.exports:
                if exp.name and exp.forwarder is None:
                    out[self.image_base + exp.rva] = f"{self.image_name}!{exp.name}"
        if self.entry_point:
            out.setdefault(self.entry_point, f"{self.image_name}!entry")
        return out

    def install_hook(self, name: str, **options: Any) -> HookHandle:
        """Install a plugin from ``hooks/`` (``tracer``, ``access_log``, ``devices``…)."""
        options.setdefault("symbols", self.symbols())
        options.setdefault("output", self.console.emit)
        handle = install_plugin(name, self.uc, self.mm, **options)
        self.plugins.append(handle)
        return handle

    def read_pointer(self, address: int) -> int:
        return self.abi.unpack_ptr(self.mm.read(address, self.abi.ptr_size))

    # -- snapshots (see persist.py) ------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Save memory, registers and the runner's own state to one snapshot file."""
        save_process(self, path)

    @classmethod
    def resume(cls, path: str | Path, *, stdout: Sink | None = None, stderr: Sink | None = None) -> Process:
        """A fresh process restored from a snapshot written by :meth:`save`."""
        return load_process(cls, path, stdout=stdout, stderr=stderr)
