"""Guest exceptions delivered as Windows delivers them: vectored handlers, SEH, filters.

* :mod:`.layouts` — EXCEPTION_RECORD, CONTEXT (x86/x64), registration and dispatcher
  context layouts, flags and dispositions (winnt.h);
* :mod:`.context` — the CPU written as a CONTEXT and read back on continue;
* :mod:`.frame` — the records' place on the guest stack;
* :mod:`.state` — the JSON-ready record of a dispatch in progress, the process protocol;
* :mod:`.dispatcher` — RtlDispatchException as a resumable state machine (VEH, the x86
  ``fs:[0]`` chain and RtlUnwind, the unhandled filter);
* :mod:`.seh64` — x64: the unwind-table frame walk, RtlUnwindEx, ``__C_specific_handler``;
* :mod:`.unwind64` — RtlLookupFunctionEntry / RtlVirtualUnwind over ``.pdata``/``.xdata``;
* :mod:`.functions` — the guest-callable APIs (AddVectoredExceptionHandler & co.).
"""

from __future__ import annotations

from . import functions as _functions  # noqa: F401  (registers the APIs)
from .dispatcher import ExceptionDispatcher
from .state import NESTED_STUB, RETURN_STUB, Dispatch

__all__ = ["NESTED_STUB", "RETURN_STUB", "Dispatch", "ExceptionDispatcher"]
