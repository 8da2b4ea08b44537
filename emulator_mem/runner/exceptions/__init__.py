"""Guest exceptions delivered as Windows delivers them: vectored handlers, SEH, filters.

* :mod:`.layouts` — EXCEPTION_RECORD, CONTEXT (x86/x64), registration and dispatcher
  context layouts, flags and dispositions (winnt.h);
* :mod:`.context` — the CPU written as a CONTEXT and read back on continue;
* :mod:`.frame` — the records' place on the guest stack;
* :mod:`.dispatcher` — RtlDispatchException as a resumable state machine (VEH, the x86
  ``fs:[0]`` chain, x64 unwind tables, the unhandled filter, RtlUnwind);
* :mod:`.unwind64` — RtlLookupFunctionEntry / RtlVirtualUnwind over ``.pdata``/``.xdata``;
* :mod:`.functions` — the guest-callable APIs (AddVectoredExceptionHandler & co.).
"""

from __future__ import annotations

from . import functions as _functions  # noqa: F401  (registers the APIs)
from .dispatcher import NESTED_STUB, RETURN_STUB, Dispatch, ExceptionDispatcher

__all__ = ["NESTED_STUB", "RETURN_STUB", "Dispatch", "ExceptionDispatcher"]
