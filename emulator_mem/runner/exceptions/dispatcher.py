"""The exception dispatcher: Windows' RtlDispatchException as a resumable state machine.

An exception (a refused access from ``mm.take_fault()``, a CPU trap, ``hlt``,
``RaiseException``) is delivered the way ntdll delivers it:

1. the records are written to the guest stack (:mod:`.frame`);
2. **vectored handlers** run in list order with EXCEPTION_POINTERS; -1
   (EXCEPTION_CONTINUE_EXECUTION) resumes from the CONTEXT as the handler left it, anything
   else goes on to the next one;
3. **frame handlers**: on x86 the ``fs:[0]`` EXCEPTION_REGISTRATION chain, each record
   checked against the TEB's stack bounds, each handler called as
   ``handler(record, frame, context, dispatcher_context)`` (cdecl) while the dispatcher's
   own registration sits on top of the chain, so an exception inside the handler sees it
   and becomes a *nested* exception (EXCEPTION_NESTED_CALL until the walk passes the frame
   whose handler faulted, as RtlpExecuteHandler2's frame makes it on Windows); on x64 the
   stack is walked with the image's ``.pdata``/``.xdata`` unwind tables (:mod:`.unwind64`)
   and language handlers get a DISPATCHER_CONTEXT. ExceptionContinueExecution resumes
   (STATUS_NONCONTINUABLE_EXCEPTION for a non-continuable one), ExceptionContinueSearch
   walks on, anything else is STATUS_INVALID_DISPOSITION;
4. the **unhandled-exception filter** of SetUnhandledExceptionFilter (Windows calls it from
   the thread's outermost frame): -1 resumes, 1 ends the process quietly with the
   exception code, 0 gives the default: the unhandled-exception report and the end.

Handlers are guest code, so the dispatcher cannot call them and wait: it sets up a call
whose return address is a runner stub (``<runner>!return from exception handler``), lets the
CPU run, and continues when that stub is reached. Every dispatch in progress is a small
JSON-ready :class:`Dispatch` record; the records themselves are in guest memory. A snapshot
taken while a handler runs therefore resumes correctly (the state travels with the runner's
``extras=``). A dispatch is *active* while the stack still holds its frame: a return to the
stub finds its dispatch by the stack pointer, and dispatches whose frames the stack has
unwound past (a handler that longjmp'd out) are dropped.

``RtlUnwind`` (x86) is the second pass: it calls each frame handler above the target with
EXCEPTION_UNWINDING, unlinks the frames from ``fs:[0]`` and returns to its caller with EAX =
ReturnValue and the caller's other registers intact.
"""

from __future__ import annotations

import struct
from dataclasses import asdict
from typing import Any

from unicorn import x86_const as X

from ...windows import constants as C
from . import layouts as L
from .context import (
    apply_context,
    capture_context,
    context_size,
    context_sp,
    read_registers,
)
from .frame import FrameLayout, StackExhausted, pack_record, plan, write_frame
from .seh64 import X64Unwinder
from .state import (
    C_HANDLER_KIND,
    CALLED,
    EFLAGS_DF,
    EFLAGS_TF,
    END,
    EXCEPTION_KIND,
    FILTER,
    FRAMES,
    INVALID,
    NESTED_STUB,
    RETURN_STUB,
    STATUS_BAD_STACK,
    UNWIND,
    UNWIND64_KIND,
    UNWIND_KIND,
    VECTORED,
    Dispatch,
    Host,
)


class ExceptionDispatcher(X64Unwinder):
    """Vectored handlers, the unhandled filter and the dispatches in progress of a process."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.vectored: list[tuple[int, int]] = []  # (handle, handler) in call order
        self.unhandled_filter = 0
        self.active: list[Dispatch] = []

    # -- persistence ----------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {"vectored": [list(v) for v in self.vectored], "filter": self.unhandled_filter,
                "active": [asdict(d) for d in self.active]}

    def restore(self, data: dict[str, Any]) -> None:
        self.vectored = [(int(h), int(f)) for h, f in data.get("vectored", [])]
        self.unhandled_filter = int(data.get("filter", 0))
        self.active = [Dispatch.from_json(d) for d in data.get("active", [])]

    # -- vectored handler list (RtlAddVectoredExceptionHandler & co.) --------------------
    def add_vectored(self, first: bool, handler: int) -> int:
        """Register ``handler``; the handle is a process-heap block, as ntdll's entries are."""
        heap = self.host.heap
        handle = heap.alloc(2 * self.host.abi.ptr_size) if heap is not None else 0
        if not handle:
            handle = 0x1000 + 0x10 * (len(self.vectored) + 1)
        else:
            self.host.mm.write(handle, self.host.abi.pack_ptr(handler))
        entry = (handle, handler)
        if first:
            self.vectored.insert(0, entry)
        else:
            self.vectored.append(entry)
        return handle

    def remove_vectored(self, handle: int) -> bool:
        for i, (h, _) in enumerate(self.vectored):
            if h == handle:
                del self.vectored[i]
                if self.host.heap is not None:
                    self.host.heap.free(handle)
                return True
        return False

    # -- raising --------------------------------------------------------------------------
    def raise_exception(
        self, code: int, information: list[int], address: int, *, context: bytes | None = None,
        flags: int = 0, link: int = 0,
    ) -> None:
        """Deliver an exception; the CPU afterwards runs a handler, resumes, or has stopped."""
        host = self.host
        is_64bit = host.mm.is_64bit
        sp = host.abi.sp(host.uc)
        if context is None:
            context = capture_context(host.uc, is_64bit)
        self._prune(sp)
        layout = plan(min(sp, context_sp(context, is_64bit)), is_64bit)
        record = pack_record(is_64bit, code, flags, address, information, link)
        try:
            write_frame(host.mm, host.env, layout, record, context, is_64bit)
        except StackExhausted:
            # no room for the records: Windows cannot deliver it either and ends the process
            apply_context(host.uc, context, is_64bit)
            host.end_with_exception(code, information, address)
            return
        dispatch = self._new(EXCEPTION_KIND, code, flags, address, information, layout)
        dispatch.handlers = [handle for handle, _ in self.vectored]
        self.active.append(dispatch)
        self._advance(dispatch)

    def start_unwind(self, target: int, record: int, return_value: int) -> None:
        """x86 RtlUnwind(TargetFrame, TargetIp, ExceptionRecord, ReturnValue), at its stub."""
        host = self.host
        mm, uc = host.mm, host.uc
        sp = host.abi.sp(uc)
        ret = host.abi.unpack_ptr(mm.read(sp, 4))
        context = capture_context(uc, False, {"Eip": ret, "Esp": sp + 20, "Eax": return_value})
        self._prune(sp)
        layout = plan(sp, False)
        own = pack_record(False, L.STATUS_UNWIND, 0, ret, [])
        try:
            write_frame(mm, host.env, layout, own, context, False)
        except StackExhausted:
            host.end_with_exception(L.STATUS_UNWIND, [], ret)
            return
        dispatch = self._new(UNWIND_KIND, L.STATUS_UNWIND, 0, ret, [], layout)
        if record:
            dispatch.record = record
            dispatch.flags = struct.unpack("<I", mm.read(record + L.RECORD_FLAGS_OFFSET, 4))[0]
        dispatch.flags |= L.EXCEPTION_UNWINDING | (0 if target else L.EXCEPTION_EXIT_UNWIND)
        dispatch.phase, dispatch.target = UNWIND, target
        self.active.append(dispatch)
        self._advance_unwind(dispatch)

    @staticmethod
    def _new(kind: str, code: int, flags: int, address: int, information: list[int],
             layout: FrameLayout) -> Dispatch:
        return Dispatch(kind, code, flags, address, list(information), layout.record,
                        layout.context, layout.pointers, layout.scratch, layout.base,
                        walk_context=layout.walk_context)

    def _prune(self, sp: int) -> None:
        """Forget dispatches whose frames lie below ``sp``: the stack was unwound past them."""
        self.active = [d for d in self.active if not (d.call_sp and d.call_sp < sp)]

    # -- calling guest handlers ------------------------------------------------------------
    def _call(self, dispatch: Dispatch, target: int, args: list[int]) -> None:
        host = self.host
        uc, abi = host.uc, host.abi
        ret = host.runner_stub(RETURN_STUB)
        if host.mm.is_64bit:
            sp = dispatch.base - 0x28  # shadow space above the return address; RSP = 8 mod 16
            regs = (X.UC_X86_REG_RCX, X.UC_X86_REG_RDX, X.UC_X86_REG_R8, X.UC_X86_REG_R9)
            for reg, value in zip(regs, args, strict=False):
                uc.reg_write(reg, value)
            host.mm.write(sp, abi.pack_ptr(ret))
        else:
            sp = dispatch.base - 4 * (len(args) + 1)
            host.mm.write(sp, struct.pack(f"<{len(args) + 1}I", ret, *args))
        self._write_flags(dispatch)
        uc.reg_write(abi.sp_reg, sp)
        flags = int(uc.reg_read(X.UC_X86_REG_EFLAGS))
        uc.reg_write(X.UC_X86_REG_EFLAGS, flags & ~(EFLAGS_TF | EFLAGS_DF))
        dispatch.call_sp = sp
        uc.reg_write(abi.pc_reg, target)

    def on_handler_return(self) -> None:
        """The return stub was reached: continue the dispatch whose handler returned."""
        host = self.host
        sp = host.abi.sp(host.uc)
        live = [d for d in self.active if d.call_sp and d.call_sp < sp]
        if not live:  # nothing called this: a stray jump to the stub
            pc = host.abi.pc(host.uc)
            host.end_with_exception(C.STATUS_ACCESS_VIOLATION, [8, pc], pc)
            return
        dispatch = max(live, key=lambda d: d.call_sp)
        self.active = [d for d in self.active if not (d.call_sp and d.call_sp < dispatch.call_sp)]
        raw = int(host.uc.reg_read(host.abi.result_reg)) & 0xFFFFFFFF
        result = raw - (1 << 32) if raw & 0x80000000 else raw
        dispatch.call_sp = 0
        if dispatch.kind == UNWIND_KIND:
            self._unwind_returned(dispatch, result)
        elif dispatch.kind == UNWIND64_KIND:
            self._unwind64_returned(dispatch, result)
        elif dispatch.kind == C_HANDLER_KIND:
            self._c_handler_returned(dispatch, result)
        elif dispatch.phase == VECTORED:
            if result == L.EXCEPTION_CONTINUE_EXECUTION:
                self._resume(dispatch)
            else:
                self._advance(dispatch)
        elif dispatch.phase == FRAMES:
            self._frame_returned(dispatch, result)
        else:
            self._filter_returned(dispatch, result)

    # -- the phases -------------------------------------------------------------------------
    def _advance(self, dispatch: Dispatch) -> None:
        if dispatch.phase == VECTORED:
            live = dict(self.vectored)
            while dispatch.index < len(dispatch.handlers):
                handle = dispatch.handlers[dispatch.index]
                dispatch.index += 1
                if handle in live:  # a handler removed by an earlier one is not called (Wine)
                    self._call(dispatch, live[handle], [dispatch.pointers])
                    return
            dispatch.phase = FRAMES
            if self.host.mm.is_64bit:
                context = self.host.mm.read(dispatch.context, context_size(True))
                dispatch.walk = read_registers(context, True)
            else:
                dispatch.frame = self._chain_head()
        outcome = self._next_frame_64(dispatch) if self.host.mm.is_64bit else self._next_frame_32(dispatch)
        if outcome == CALLED:
            return
        if outcome == END and self.unhandled_filter:
            dispatch.phase = FILTER
            self._call(dispatch, self.unhandled_filter, [dispatch.pointers])
            return
        self._unhandled(dispatch)

    def _frame_returned(self, dispatch: Dispatch, result: int) -> None:
        mm = self.host.mm
        if not mm.is_64bit:
            self._set_chain_head(dispatch.saved_chain)
            if dispatch.nested_frame == dispatch.frame:
                dispatch.flags &= ~L.EXCEPTION_NESTED_CALL
                dispatch.nested_frame = 0
        if result == L.ExceptionContinueExecution:
            self._continue(dispatch)
        elif result == L.ExceptionContinueSearch or (
                result == L.ExceptionNestedException and not mm.is_64bit):
            if result == L.ExceptionNestedException:
                nested = struct.unpack("<I", mm.read(dispatch.scratch + 8, 4))[0]
                dispatch.flags |= L.EXCEPTION_NESTED_CALL
                dispatch.nested_frame = max(dispatch.nested_frame, nested)
            if not mm.is_64bit:
                dispatch.frame = struct.unpack("<I", mm.read(dispatch.frame, 4))[0]
            self._advance(dispatch)
        else:
            self._raise_from(dispatch, L.STATUS_INVALID_DISPOSITION)

    def _filter_returned(self, dispatch: Dispatch, result: int) -> None:
        if result == L.EXCEPTION_CONTINUE_EXECUTION:
            self._continue(dispatch)
        elif result == L.EXCEPTION_EXECUTE_HANDLER:  # the process ends quietly with the code
            self._drop(dispatch)
            self.host.terminate(dispatch.code)
        else:
            self._unhandled(dispatch)

    def _continue(self, dispatch: Dispatch) -> None:
        if dispatch.flags & L.EXCEPTION_NONCONTINUABLE:
            self._raise_from(dispatch, L.STATUS_NONCONTINUABLE_EXCEPTION)
        else:
            self._resume(dispatch)

    def _raise_from(self, dispatch: Dispatch, code: int) -> None:
        """A new, non-continuable exception about ``dispatch`` (its record chained)."""
        self._drop(dispatch)
        context = self.host.mm.read(dispatch.context, context_size(self.host.mm.is_64bit))
        self.raise_exception(code, [], dispatch.address, context=context,
                             flags=L.EXCEPTION_NONCONTINUABLE, link=dispatch.record)

    def _resume(self, dispatch: Dispatch) -> None:
        """NtContinue: the CPU takes the (possibly edited) CONTEXT."""
        is_64bit = self.host.mm.is_64bit
        context = self.host.mm.read(dispatch.context, context_size(is_64bit))
        self._drop(dispatch)
        apply_context(self.host.uc, context, is_64bit)

    def _unhandled(self, dispatch: Dispatch) -> None:
        """Nobody handled it: registers back to the fault, then the report and the end."""
        is_64bit = self.host.mm.is_64bit
        context = self.host.mm.read(dispatch.context, context_size(is_64bit))
        self._drop(dispatch)
        apply_context(self.host.uc, context, is_64bit)
        self.host.end_with_exception(dispatch.code, dispatch.information, dispatch.address)

    def _drop(self, dispatch: Dispatch) -> None:
        self.active = [d for d in self.active if d is not dispatch]

    def _write_flags(self, dispatch: Dispatch) -> None:
        self.host.mm.write(dispatch.record + L.RECORD_FLAGS_OFFSET, struct.pack("<I", dispatch.flags))

    # -- x86: the fs:[0] chain ----------------------------------------------------------------
    def _chain_head(self) -> int:
        env = self.host.env
        if env is None:
            return L.SEH_CHAIN_END
        return int(struct.unpack("<I", self.host.mm.read(env.teb, 4))[0])

    def _set_chain_head(self, value: int) -> None:
        env = self.host.env
        if env is not None:
            self.host.mm.write(env.teb, struct.pack("<I", value & 0xFFFFFFFF))

    def _stack_bounds(self) -> tuple[int, int]:
        env = self.host.env
        if env is None:
            return 0, 0
        return env.load_stack_limit(self.host.mm), env.stack_base

    def _owner_of(self, registration: int) -> Dispatch | None:
        """The active dispatch whose own registration record is at ``registration``."""
        for d in self.active:
            if d.kind == EXCEPTION_KIND and d.scratch == registration and d.call_sp:
                return d
        return None

    def _next_frame_32(self, dispatch: Dispatch) -> str:
        mm = self.host.mm
        low, high = self._stack_bounds()
        while True:
            frame = dispatch.frame
            if frame == L.SEH_CHAIN_END:
                return END
            if frame < low or frame + L.REGISTRATION.size > high or frame & 3:
                dispatch.flags |= L.EXCEPTION_STACK_INVALID
                self._write_flags(dispatch)
                return INVALID
            next_frame, handler = L.REGISTRATION.unpack(mm.read(frame, L.REGISTRATION.size))
            outer = self._owner_of(frame)
            if outer is not None:  # the frame of a dispatch whose handler raised this one
                dispatch.flags |= L.EXCEPTION_NESTED_CALL
                dispatch.nested_frame = max(dispatch.nested_frame, outer.frame)
                dispatch.frame = next_frame
                continue
            if low <= handler < high:
                dispatch.flags |= L.EXCEPTION_STACK_INVALID
                self._write_flags(dispatch)
                return INVALID
            head = self._chain_head()
            mm.write(dispatch.scratch, L.REGISTRATION.pack(head, self.host.runner_stub(NESTED_STUB)))
            mm.write(dispatch.scratch + 8, bytes(4))
            dispatch.saved_chain = head
            self._set_chain_head(dispatch.scratch)
            self._call(dispatch, handler, [dispatch.record, frame, dispatch.context, dispatch.scratch + 8])
            return CALLED

    # -- x86: RtlUnwind --------------------------------------------------------------------------
    def _advance_unwind(self, dispatch: Dispatch) -> None:
        mm = self.host.mm
        low, high = self._stack_bounds()
        while True:
            frame = self._chain_head()
            if frame == dispatch.target or (frame == L.SEH_CHAIN_END and not dispatch.target):
                self._resume(dispatch)
                return
            if frame == L.SEH_CHAIN_END or (dispatch.target and dispatch.target < frame):
                self._raise_from(dispatch, L.STATUS_INVALID_UNWIND_TARGET)
                return
            if frame < low or frame + L.REGISTRATION.size > high or frame & 3:
                self._raise_from(dispatch, STATUS_BAD_STACK)
                return
            next_frame, handler = L.REGISTRATION.unpack(mm.read(frame, L.REGISTRATION.size))
            outer = self._owner_of(frame)
            if outer is not None:  # unwinding out of a handler: that dispatch is over
                self._drop(outer)
                self._set_chain_head(next_frame)
                continue
            dispatch.frame = frame
            self._call(dispatch, handler, [dispatch.record, frame, dispatch.context, dispatch.scratch + 8])
            return

    def _unwind_returned(self, dispatch: Dispatch, result: int) -> None:
        if result not in (L.ExceptionContinueSearch, L.ExceptionCollidedUnwind):
            self._raise_from(dispatch, L.STATUS_INVALID_DISPOSITION)
            return
        next_frame = struct.unpack("<I", self.host.mm.read(dispatch.frame, 4))[0]
        self._set_chain_head(next_frame)
        self._advance_unwind(dispatch)
