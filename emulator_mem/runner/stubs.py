"""The stub region: one guest slot per imported function, one code hook over all of them.

Imports resolve to slots in a small PAGE_EXECUTE_READ allocation ("api stubs"). A slot holds
the function's real epilogue (``ret n`` for x86 stdcall, ``ret`` for x64, ``jmp $`` for
functions that never return). A single ``UC_HOOK_CODE`` restricted to the region fires when
the CPU reaches a slot, *before* the slot's instruction runs: the handler reads the
arguments, calls the Python implementation and sets EAX/RAX; then the ``ret`` returns to the
caller. Unicorn only instruments code inside a hook's range, so code elsewhere runs without
any per-instruction callback.

Two slots are the runner's own: slot 0 is the ``until`` address handed to ``emu_start``
(an address Unicorn must be able to translate as executable, which is why it lives here;
it is never meant to run) and slot 1 is the return address of the entry point, which ends
the process with the entry point's return value as exit code, as BaseThreadInitThunk does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from unicorn import UC_HOOK_CODE, Uc

from ..errors import RunnerError
from ..manager import MemoryManager
from ..space.address_space import page_round_up
from ..windows import constants as C
from .abi import STUB_SLOT, Abi
from .api import ApiCall, ApiSpec, lookup

SENTINEL_SLOT = 0
EXIT_SLOT = 1
FIRST_API_SLOT = 2
RUNNER_DLL = "<runner>"
EXIT_NAME = "return from entry point"

Dispatch = Callable[[ApiSpec], None]


class StubTable:
    """The stub region of one process and the hook that dispatches its slots."""

    def __init__(self, base: int, size: int, specs: list[ApiSpec | None]) -> None:
        self.base = base
        self.size = size
        self.specs = specs  # per slot; None for the sentinel
        self._by_name = {s.qualified: self.base + i * STUB_SLOT for i, s in enumerate(specs) if s}
        self._hook: Any = None
        self._uc: Uc | None = None

    @property
    def sentinel(self) -> int:
        return self.base + SENTINEL_SLOT * STUB_SLOT

    @property
    def exit_address(self) -> int:
        return self.base + EXIT_SLOT * STUB_SLOT

    @classmethod
    def create(cls, mm: MemoryManager, abi: Abi, exit_spec: ApiSpec, apis: list[ApiSpec]) -> StubTable:
        specs: list[ApiSpec | None] = [None, exit_spec, *apis]
        size = page_round_up(len(specs) * STUB_SLOT)
        base = mm.allocate(size, C.PAGE_READWRITE, top_down=True, name="api stubs")
        code = bytearray()
        for spec in specs:
            if spec is None:
                code += b"\xcc" * STUB_SLOT
            else:
                code += abi.stub_code(spec.argc, noreturn=spec.noreturn)
        mm.write(base, bytes(code))
        mm.protect(base, size, C.PAGE_EXECUTE_READ)
        return cls(base, size, specs)

    @classmethod
    def from_json(cls, data: dict[str, Any], exit_spec: ApiSpec) -> StubTable:
        """Rebuild the table of a restored process (the slots' bytes came back with memory)."""
        specs: list[ApiSpec | None] = []
        for name in data["slots"]:
            if name is None:
                specs.append(None)
            elif name == exit_spec.qualified:
                specs.append(exit_spec)
            else:
                dll, _, func = str(name).partition("!")
                spec = lookup(dll, func)
                if spec is None:
                    raise RunnerError(f"the snapshot calls {name}, which this runner does not implement")
                specs.append(spec)
        return cls(int(data["base"]), int(data["size"]), specs)

    def to_json(self) -> dict[str, Any]:
        return {"base": self.base, "size": self.size,
                "slots": [None if s is None else s.qualified for s in self.specs]}

    def address_of(self, spec: ApiSpec) -> int:
        return self._by_name[spec.qualified]

    def symbols(self) -> dict[int, str]:
        return {self.base + i * STUB_SLOT: s.qualified for i, s in enumerate(self.specs) if s}

    def spec_at(self, address: int) -> ApiSpec | None:
        offset = address - self.base
        if offset < 0 or offset >= len(self.specs) * STUB_SLOT or offset % STUB_SLOT:
            return None
        return self.specs[offset // STUB_SLOT]

    # -- the hook ----------------------------------------------------------------------
    def install(self, uc: Uc, dispatch: Dispatch) -> None:
        def on_code(_uc: Uc, address: int, _size: int, _data: Any) -> None:
            spec = self.spec_at(address)
            if spec is not None:
                dispatch(spec)

        self._uc = uc
        self._hook = uc.hook_add(UC_HOOK_CODE, on_code, begin=self.base, end=self.base + self.size - 1)

    def remove(self) -> None:
        if self._uc is not None and self._hook is not None:
            self._uc.hook_del(self._hook)
            self._hook = None


def _exit_from_entry(call: ApiCall) -> int | None:
    """The entry point returned: ExitProcess(EAX/RAX), as BaseThreadInitThunk does."""
    value = int(call.process.uc.reg_read(call.process.abi.result_reg)) & 0xFFFFFFFF
    call.process.terminate(value)
    return None


EXIT_SPEC = ApiSpec(RUNNER_DLL, EXIT_NAME, 0, _exit_from_entry, noreturn=True)
