"""The exception APIs a guest imports, registered with ``@api`` like the kernel32 ones.

kernel32 names forward to ntdll's on Windows, so both are registered where both exist:
AddVectoredExceptionHandler / RtlAddVectoredExceptionHandler, RemoveVectoredExceptionHandler
/ RtlRemoveVectoredExceptionHandler, RaiseException / RtlRaiseException (x86's takes a
record), SetUnhandledExceptionFilter, RtlUnwind (x86), RtlLookupFunctionEntry (x64), and
the runner's two own slots: the return address of every handler call and the handler of
the dispatcher's nested-exception registration record.
"""

from __future__ import annotations

import struct

from ...errors import RunnerError
from ..api import ApiCall, api
from ..stubs import RUNNER_DLL
from . import layouts as L
from .context import capture_context, read_registers
from .dispatcher import ExceptionDispatcher
from .frame import unpack_record
from .state import NESTED_STUB, RETURN_STUB
from .unwind64 import lookup_function_entry

K32 = "kernel32.dll"
NTDLL = "ntdll.dll"


def _dispatcher(call: ApiCall) -> ExceptionDispatcher:
    """The exception dispatcher of the calling process (every runner Process has one)."""
    dispatcher = getattr(call.process, "exceptions", None)
    if not isinstance(dispatcher, ExceptionDispatcher):
        raise RunnerError(f"{call.spec.qualified} needs a process with an exception dispatcher")
    return dispatcher


# -- the runner's own slots ------------------------------------------------------------------
@api(RUNNER_DLL, 0, name=RETURN_STUB)
def _handler_returned(call: ApiCall) -> None:
    _dispatcher(call).on_handler_return()
    return None


@api(RUNNER_DLL, 0, name=NESTED_STUB)
def _nested_frame_handler(call: ApiCall) -> int:
    """Only reached if guest code calls the registration's handler itself."""
    return L.ExceptionContinueSearch


# -- vectored handlers ----------------------------------------------------------------------
def _add_vectored(call: ApiCall) -> int:
    first, handler = call.args
    return _dispatcher(call).add_vectored(bool(first & 0xFFFFFFFF), handler)


def _remove_vectored(call: ApiCall) -> int:
    return int(_dispatcher(call).remove_vectored(call.args[0]))


for _dll, _name in ((K32, "AddVectoredExceptionHandler"), (NTDLL, "RtlAddVectoredExceptionHandler")):
    api(_dll, 2, name=_name)(_add_vectored)
for _dll, _name in ((K32, "RemoveVectoredExceptionHandler"), (NTDLL, "RtlRemoveVectoredExceptionHandler")):
    api(_dll, 1, name=_name)(_remove_vectored)


@api(K32, 1)
def SetUnhandledExceptionFilter(call: ApiCall) -> int:
    """Returns the previous filter (Windows stores it encoded and returns it decoded)."""
    exceptions = _dispatcher(call)
    previous, exceptions.unhandled_filter = exceptions.unhandled_filter, call.args[0]
    return previous


# -- raising ------------------------------------------------------------------------------------
def _caller_context(call: ApiCall, argc: int) -> bytes:
    """The caller's registers as if the stub had returned (stdcall pops ``argc`` slots)."""
    process = call.process
    uc, abi, is_64bit = process.uc, process.abi, process.mm.is_64bit
    sp = abi.sp(uc)
    ret = call.read_ptr(sp)
    if is_64bit:
        return capture_context(uc, True, {"Rip": ret, "Rsp": sp + 8})
    return capture_context(uc, False, {"Eip": ret, "Esp": sp + 4 + 4 * argc})


@api(K32, 4)
def RaiseException(call: ApiCall) -> None:
    """Raise (code, flags & EXCEPTION_NONCONTINUABLE, up to 15 arguments) through the
    dispatcher; a handler that continues returns from this call. ExceptionAddress is
    inside RaiseException (its stub), as on Windows where it lies in KERNELBASE."""
    code, flags, count, arguments = call.args
    count = min(count & 0xFFFFFFFF, L.EXCEPTION_MAXIMUM_PARAMETERS) if arguments else 0
    size = call.ptr_size
    raw = call.read(arguments, size * count) if count else b""
    info = [int.from_bytes(raw[i * size : (i + 1) * size], "little") for i in range(count)]
    process = call.process
    _dispatcher(call).raise_exception(
        code & 0xFFFFFFFF, info, process.abi.pc(process.uc), context=_caller_context(call, 4),
        flags=flags & L.EXCEPTION_NONCONTINUABLE)
    return None


@api(NTDLL, 1)
def RtlRaiseException(call: ApiCall) -> None:
    """RtlRaiseException(record): the guest's own EXCEPTION_RECORD, raised as it is."""
    process = call.process
    is_64bit = process.mm.is_64bit
    size = L.RECORD_64.size if is_64bit else L.RECORD_32.size
    code, flags, link, _address, info = unpack_record(call.read(call.args[0], size), is_64bit)
    _dispatcher(call).raise_exception(code, info, process.abi.pc(process.uc),
                                       context=_caller_context(call, 1), flags=flags, link=link)
    return None


# -- unwinding ----------------------------------------------------------------------------------
def _caller_registers(call: ApiCall) -> dict[str, int]:
    """x64: the caller's registers as if the stub had returned (the unwind starts there)."""
    return read_registers(_caller_context(call, 0), True)


def _rtl_unwind(call: ApiCall) -> None:
    """RtlUnwind(TargetFrame, TargetIp, ExceptionRecord, ReturnValue): the x86 frame-chain
    unwind, or on x64 RtlUnwindEx without a context."""
    dispatcher = _dispatcher(call)
    target, target_ip, record, return_value = call.args
    if call.mm.is_64bit:
        dispatcher.start_unwind64(target, target_ip, record, return_value, _caller_registers(call))
    else:
        dispatcher.start_unwind(target, record, return_value)
    return None


api(K32, 4, name="RtlUnwind")(_rtl_unwind)
api(NTDLL, 4, name="RtlUnwind")(_rtl_unwind)


def _rtl_unwind_ex(call: ApiCall) -> None:
    """RtlUnwindEx (x64): ContextRecord and HistoryTable are scratch space for the caller."""
    target, target_ip, record, return_value, _context, _history = call.args
    _dispatcher(call).start_unwind64(target, target_ip, record, return_value, _caller_registers(call))
    return None


api(K32, 6, name="RtlUnwindEx")(_rtl_unwind_ex)
api(NTDLL, 6, name="RtlUnwindEx")(_rtl_unwind_ex)


def _c_specific_handler(call: ApiCall) -> None:
    """__C_specific_handler(record, frame, context, dispatcher_context): MSVC's and
    mingw-w64's language handler for __try/__except/__finally (x64)."""
    record, frame, context, dispatcher_context = call.args
    _dispatcher(call).start_c_handler(record, frame, context, dispatcher_context)
    return None


for _dll in (K32, NTDLL, "msvcrt.dll", "vcruntime140.dll"):
    api(_dll, 4, name="__C_specific_handler")(_c_specific_handler)


@api(NTDLL, 3)
def RtlLookupFunctionEntry(call: ApiCall) -> int:
    """RtlLookupFunctionEntry(ControlPc, &ImageBase, HistoryTable) (x64)."""
    pc, image_base_out, _history = call.args
    entry = lookup_function_entry(call.mm, pc)
    if entry is None:
        return 0
    if image_base_out:
        call.write(image_base_out, struct.pack("<Q", entry.image_base))
    return entry.address


api(K32, 3, name="RtlLookupFunctionEntry")(RtlLookupFunctionEntry)


@api(K32, 1)
def RtlCaptureContext(call: ApiCall) -> None:
    """RtlCaptureContext(&context): the caller's registers as they are after the call."""
    call.write(call.args[0], _caller_context(call, 0 if call.mm.is_64bit else 1))
    return None


api(NTDLL, 1, name="RtlCaptureContext")(RtlCaptureContext)
