"""x64 table-based SEH: the frame walk, RtlUnwindEx and ``__C_specific_handler``.

The dispatcher's second phase on x64 (:meth:`X64Unwinder._next_frame_64`) walks outward
from the faulting function with :mod:`.unwind64`: each function with an exception handler
(UNW_FLAG_EHANDLER) gets ``handler(record, establisher frame, context, dispatcher
context)``, the DISPATCHER_CONTEXT holding the context unwound to the caller, as
RtlDispatchException passes it.

**RtlUnwindEx(TargetFrame, TargetIp, ExceptionRecord, ReturnValue, ContextRecord, History)**
is the second pass: from its caller outward, every function with a termination handler
(UNW_FLAG_UHANDLER) is called with EXCEPTION_UNWINDING (plus EXCEPTION_TARGET_UNWIND for the
target frame) until the frame whose establisher is TargetFrame; then execution continues at
TargetIp with that function's registers and RAX = ReturnValue. Walking out of a handler
called by the dispatcher continues from the exception's CONTEXT, which is where Windows'
walk goes through KiUserExceptionDispatcher's machine frame.

**__C_specific_handler** is the language handler of MSVC's ``__try``/``__except``/``__finally``
(and of mingw-w64's ``__try1``); it reads the SCOPE_TABLE in the handler data: in the
exception phase it calls each enclosing scope's filter (``filter(&pointers, frame)``) and, for
EXCEPTION_EXECUTE_HANDLER, unwinds to the scope's JumpTarget with RtlUnwindEx
(ReturnValue = the exception code, which the ``__except`` block reads from RAX); -1
continues execution; in the unwind phase it calls the ``__finally`` blocks
(``handler(TRUE, frame)``). The logic follows Windows' (and Wine's) C runtime.
"""

from __future__ import annotations

import struct

from ...errors import RunnerError
from . import layouts as L
from .context import apply_context, capture_context, context_size, read_registers, write_registers
from .frame import StackExhausted, commit_stack, pack_record, plan, write_frame
from .state import (
    C_HANDLER_KIND,
    CALLED,
    END,
    EXCEPTION_KIND,
    INVALID,
    RETURN_STUB,
    STATUS_BAD_STACK,
    UNWIND,
    UNWIND64_KIND,
    Dispatch,
    Host,
)
from .unwind64 import UNW_FLAG_UHANDLER, lookup_function_entry, virtual_unwind

SCOPE_RECORD = struct.Struct("<IIII")  # BeginAddress, EndAddress, HandlerAddress, JumpTarget
C_FILTER, C_FINALLY = "c_filter", "c_finally"
_WALK_LIMIT = 100_000


class X64Unwinder:
    """The x64 half of :class:`~.dispatcher.ExceptionDispatcher` (a mixin: the dispatcher
    provides the handler calls, the list of dispatches and the common steps)."""

    host: Host
    active: list[Dispatch]

    # provided by the dispatcher
    def _call(self, dispatch: Dispatch, target: int, args: list[int]) -> None:
        raise NotImplementedError

    def _drop(self, dispatch: Dispatch) -> None:
        raise NotImplementedError

    def _raise_from(self, dispatch: Dispatch, code: int) -> None:
        raise NotImplementedError

    def _stack_bounds(self) -> tuple[int, int]:
        raise NotImplementedError

    def _write_flags(self, dispatch: Dispatch) -> None:
        raise NotImplementedError

    # -- walking out of the dispatcher's own calls ------------------------------------------
    def _outer_dispatch(self, rsp: int) -> Dispatch | None:
        """The exception dispatch whose handler call returns to the stub at ``rsp - 8``
        (through a ``__C_specific_handler`` in between, if that is what was called)."""
        outer = next((d for d in self.active if d.call_sp == rsp - 8), None)
        while outer is not None and outer.kind == C_HANDLER_KIND:
            ret_sp = outer.ret_sp
            outer = next((d for d in self.active if d.call_sp == ret_sp), None)
        return outer if outer is not None and outer.kind == EXCEPTION_KIND else None

    def _step_leaf(self, walk: dict[str, int]) -> None:
        walk["Rip"] = self.host.abi.unpack_ptr(self.host.mm.read(walk["Rsp"], 8))
        walk["Rsp"] += 8

    # -- the exception phase ---------------------------------------------------------------
    def _next_frame_64(self, dispatch: Dispatch) -> str:
        host = self.host
        mm = host.mm
        low, high = self._stack_bounds()
        walk = dispatch.walk
        ret_stub = host.runner_stub(RETURN_STUB)
        for _ in range(_WALK_LIMIT):
            pc, rsp = walk["Rip"], walk["Rsp"]
            if not low <= rsp < high or pc == 0:
                return END
            if pc == ret_stub:  # out of a handler: go on after the frame its dispatch handles
                outer = self._outer_dispatch(rsp)
                if outer is None or not outer.walk:
                    return END
                dispatch.flags |= L.EXCEPTION_NESTED_CALL
                walk = dict(outer.walk)
                continue
            entry = lookup_function_entry(mm, pc)
            if entry is None:  # a leaf function: the return address is at RSP
                self._step_leaf(walk)
                continue
            handler, handler_data, establisher = virtual_unwind(mm, entry, pc, walk)
            if not handler:
                continue
            if not low <= establisher < high or establisher & 7:
                dispatch.flags |= L.EXCEPTION_STACK_INVALID
                self._write_flags(dispatch)
                return INVALID
            dispatch.walk, dispatch.frame = walk, establisher
            # as RtlDispatchException: the handler's ContextRecord argument is the exception's
            # CONTEXT, DISPATCHER_CONTEXT.ContextRecord the copy unwound to the caller
            original = mm.read(dispatch.context, context_size(True))
            mm.write(dispatch.walk_context, write_registers(original, True, walk))
            mm.write(dispatch.scratch, L.DISPATCHER_CONTEXT_64.pack(
                pc, entry.image_base, entry.address, establisher, 0, dispatch.walk_context,
                handler, handler_data, 0, 0, 0))
            self._call(dispatch, handler, [dispatch.record, establisher, dispatch.context, dispatch.scratch])
            return CALLED
        return END

    # -- RtlUnwindEx -----------------------------------------------------------------------
    def start_unwind64(
        self, target: int, target_ip: int, record: int, return_value: int, start: dict[str, int],
    ) -> None:
        """Unwind from the frame whose registers are ``start`` up to ``target``."""
        host = self.host
        mm, uc = host.mm, host.uc
        sp = host.abi.sp(uc)
        context = capture_context(uc, True)
        layout = plan(sp, True)
        own = pack_record(True, L.STATUS_UNWIND, 0, target_ip, [])
        try:
            write_frame(mm, host.env, layout, own, write_registers(context, True, start), True)
        except StackExhausted:
            host.end_with_exception(L.STATUS_UNWIND, [], target_ip)
            return
        dispatch = Dispatch(UNWIND64_KIND, L.STATUS_UNWIND, 0, target_ip, [], layout.record,
                            layout.context, layout.pointers, layout.scratch, layout.base,
                            phase=UNWIND, target=target, walk=dict(start),
                            walk_context=layout.walk_context, target_ip=target_ip,
                            return_value=return_value)
        if record:
            dispatch.record = record
            dispatch.flags = struct.unpack("<I", mm.read(record + L.RECORD_FLAGS_OFFSET, 4))[0]
        dispatch.flags |= L.EXCEPTION_UNWINDING | (0 if target else L.EXCEPTION_EXIT_UNWIND)
        self.active.append(dispatch)
        self._advance_unwind64(dispatch)

    def _advance_unwind64(self, dispatch: Dispatch) -> None:
        host = self.host
        mm = host.mm
        low, high = self._stack_bounds()
        ret_stub = host.runner_stub(RETURN_STUB)
        walk = dispatch.walk
        for _ in range(_WALK_LIMIT):
            pc, rsp = walk["Rip"], walk["Rsp"]
            if not low <= rsp < high:
                if not dispatch.target:  # an exit unwind ran off the stack: done
                    self._finish_unwind64(dispatch, walk)
                else:
                    self._raise_from(dispatch, STATUS_BAD_STACK)
                return
            if pc == ret_stub:  # out of a handler: continue from the exception's context
                outer = self._outer_dispatch(rsp)
                if outer is None:
                    self._raise_from(dispatch, L.STATUS_INVALID_UNWIND_TARGET)
                    return
                walk = read_registers(mm.read(outer.context, context_size(True)), True)
                continue
            entry = lookup_function_entry(mm, pc)
            if entry is None:
                self._step_leaf(walk)
                continue
            caller = dict(walk)
            handler, handler_data, establisher = virtual_unwind(
                mm, entry, pc, caller, handler_type=UNW_FLAG_UHANDLER)
            if dispatch.target and establisher > dispatch.target:
                self._raise_from(dispatch, L.STATUS_INVALID_UNWIND_TARGET)
                return
            flags = dispatch.flags & ~L.EXCEPTION_TARGET_UNWIND
            if establisher == dispatch.target:
                flags |= L.EXCEPTION_TARGET_UNWIND
            if handler:
                dispatch.flags = flags
                dispatch.walk, dispatch.walk_next, dispatch.frame = walk, caller, establisher
                original = mm.read(dispatch.context, context_size(True))
                mm.write(dispatch.walk_context, write_registers(original, True, walk))
                mm.write(dispatch.scratch, L.DISPATCHER_CONTEXT_64.pack(
                    pc, entry.image_base, entry.address, establisher, dispatch.target_ip,
                    dispatch.walk_context, handler, handler_data, 0, 0, 0))
                self._call(dispatch, handler, [dispatch.record, establisher, dispatch.context,
                                               dispatch.scratch])
                return
            if establisher == dispatch.target:
                self._finish_unwind64(dispatch, walk)
                return
            walk = caller
        self._raise_from(dispatch, STATUS_BAD_STACK)

    def _unwind64_returned(self, dispatch: Dispatch, result: int) -> None:
        if result not in (L.ExceptionContinueSearch, L.ExceptionCollidedUnwind):
            self._raise_from(dispatch, L.STATUS_INVALID_DISPOSITION)
        elif dispatch.frame == dispatch.target:
            self._finish_unwind64(dispatch, dispatch.walk)
        else:
            dispatch.walk = dispatch.walk_next
            self._advance_unwind64(dispatch)

    def _finish_unwind64(self, dispatch: Dispatch, walk: dict[str, int]) -> None:
        """Continue at TargetIp with the target function's registers, RAX = ReturnValue."""
        mm = self.host.mm
        regs = dict(walk, Rip=dispatch.target_ip, Rax=dispatch.return_value)
        context = write_registers(mm.read(dispatch.context, context_size(True)), True, regs)
        rsp = regs["Rsp"]
        self.active = [d for d in self.active
                       if d is not dispatch and not (d.call_sp and d.call_sp < rsp)]
        apply_context(self.host.uc, context, True)

    # -- __C_specific_handler ----------------------------------------------------------------
    def start_c_handler(self, record: int, frame: int, context: int, dispatcher_context: int) -> None:
        """``__C_specific_handler`` reached through its stub (return address at RSP)."""
        host = self.host
        mm, uc, abi = host.mm, host.uc, host.abi
        sp = abi.sp(uc)
        layout = plan(sp, True)
        try:
            commit_stack(mm, host.env, layout.base - 0x80)
            mm.write(layout.pointers, struct.pack("<QQ", record, context))
        except (StackExhausted, RunnerError):
            host.end_with_exception(L.STATUS_INVALID_DISPOSITION, [], abi.pc(uc))
            return
        scope = struct.unpack("<I", mm.read(dispatcher_context + 0x48, 4))[0]
        dispatch = Dispatch(C_HANDLER_KIND, 0, 0, 0, [], record, context, layout.pointers,
                            layout.scratch, layout.base, frame=frame,
                            dispatcher_context=dispatcher_context, scope=scope,
                            ret_pc=abi.unpack_ptr(mm.read(sp, 8)), ret_sp=sp)
        self.active.append(dispatch)
        self._advance_c_handler(dispatch)

    def _advance_c_handler(self, dispatch: Dispatch) -> None:
        mm = self.host.mm
        dc = dispatch.dispatcher_context
        control_pc, image_base = struct.unpack("<QQ", mm.read(dc, 16))
        target_ip = struct.unpack("<Q", mm.read(dc + 0x20, 8))[0]
        table = struct.unpack("<Q", mm.read(dc + 0x38, 8))[0]
        flags = struct.unpack("<I", mm.read(dispatch.record + L.RECORD_FLAGS_OFFSET, 4))[0]
        count = struct.unpack("<I", mm.read(table, 4))[0]
        unwinding = bool(flags & (L.EXCEPTION_UNWINDING | L.EXCEPTION_EXIT_UNWIND))
        while dispatch.scope < count:
            index = dispatch.scope
            dispatch.scope += 1
            begin, end, handler, jump = SCOPE_RECORD.unpack(
                mm.read(table + 4 + SCOPE_RECORD.size * index, SCOPE_RECORD.size))
            if not image_base + begin <= control_pc < image_base + end:
                continue
            if unwinding:
                if jump:
                    continue
                if flags & L.EXCEPTION_TARGET_UNWIND and image_base + begin <= target_ip < image_base + end:
                    break
                mm.write(dc + 0x48, struct.pack("<I", index + 1))  # ScopeIndex: past this one
                dispatch.phase = C_FINALLY
                self._call(dispatch, image_base + handler, [1, dispatch.frame])
                return
            if not jump:
                continue
            if handler == L.EXCEPTION_EXECUTE_HANDLER:
                self._execute_handler(dispatch, image_base + jump)
                return
            dispatch.phase, dispatch.index = C_FILTER, index
            self._call(dispatch, image_base + handler, [dispatch.pointers, dispatch.frame])
            return
        self._finish_c_handler(dispatch, L.ExceptionContinueSearch)

    def _c_handler_returned(self, dispatch: Dispatch, result: int) -> None:
        if dispatch.phase == C_FILTER:
            if result < 0:
                self._finish_c_handler(dispatch, L.ExceptionContinueExecution)
                return
            if result > 0:
                mm = self.host.mm
                image_base = struct.unpack("<Q", mm.read(dispatch.dispatcher_context + 8, 8))[0]
                table = struct.unpack("<Q", mm.read(dispatch.dispatcher_context + 0x38, 8))[0]
                jump = SCOPE_RECORD.unpack(mm.read(
                    table + 4 + SCOPE_RECORD.size * dispatch.index, SCOPE_RECORD.size))[3]
                self._execute_handler(dispatch, image_base + jump)
                return
        self._advance_c_handler(dispatch)

    def _execute_handler(self, dispatch: Dispatch, target_ip: int) -> None:
        """RtlUnwindEx(frame, JumpTarget, record, ExceptionCode): the ``__except`` block."""
        mm = self.host.mm
        code = struct.unpack("<I", mm.read(dispatch.record, 4))[0]
        start = read_registers(mm.read(dispatch.context, context_size(True)), True)
        self._drop(dispatch)
        self.start_unwind64(dispatch.frame, target_ip, dispatch.record, code, start)

    def _finish_c_handler(self, dispatch: Dispatch, disposition: int) -> None:
        """Return from ``__C_specific_handler`` with ``disposition`` in RAX."""
        host = self.host
        uc, abi = host.uc, host.abi
        self._drop(dispatch)
        abi.set_result(uc, disposition)
        uc.reg_write(abi.sp_reg, dispatch.ret_sp + 8)
        uc.reg_write(abi.pc_reg, dispatch.ret_pc)
        if dispatch.ret_pc == host.runner_stub(RETURN_STUB):
            self.on_handler_return()

    def on_handler_return(self) -> None:
        raise NotImplementedError
