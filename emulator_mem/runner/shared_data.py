"""KUSER_SHARED_DATA: the read-only page at 0x7FFE0000 every Windows process can read.

Windows maps the kernel's shared data page into each process at ``USER_SHARED_DATA``
(0x7FFE0000, MEM_PRIVATE, PAGE_READONLY, one page); user code reads the tick count, the
time, the OS version, the product type and the processor features from it directly, and
ntdll/kernelbase implement GetTickCount, GetVersion, IsProcessorFeaturePresent… on top of
it. On a 32-bit system the page sits in the top 64 KiB granule of user space, so
``MEM_TOP_DOWN`` allocations land below it.

Layout: ``KUSER_SHARED_DATA`` of Windows 10 (ntddk.h / Wine's ``include/ddk/wdm.h``
``KSHARED_USER_DATA``); only the fields below are filled, the rest of the page is zero.

* Time is deterministic, derived from the instructions the process has run
  (:data:`NS_PER_INSTRUCTION`; a 100 MIPS CPU), stepping every :data:`TIME_STEP`
  instructions (10 ms; the timer tick is 15.625 ms). The step does not depend on how the
  runner cuts the run into ``emu_start`` chunks, so a run recorded for a report (short
  chunks) reads the same clock as a plain one: InterruptTime (100 ns units since boot),
  SystemTime (UTC FILETIME, boot at :data:`BOOT_SYSTEM_TIME`), TickCount (15.625 ms timer
  ticks, TickCountMultiplier 0x0FA00000 so ``(TickCountQuad * TickCountMultiplier) >> 24``
  is milliseconds, as GetTickCount computes it).
* The OS version is the PEB's (:data:`emulator_mem.runner.environment.OS_VERSION`).
* ProcessorFeatures (PF_* indexes of winnt.h) come from the emulated CPU's own CPUID, asked
  of a scratch Unicorn instance of the same mode: what the guest is told is what it gets.
"""

from __future__ import annotations

import struct
from functools import cache

from unicorn import UC_ARCH_X86, UC_MODE_32, UC_MODE_64, Uc
from unicorn import x86_const as X

from ..manager import MemoryManager
from ..space.address_space import PAGE_SIZE
from ..windows import constants as C
from .environment import OS_VERSION

USER_SHARED_DATA = 0x7FFE0000

# field offsets (Windows 10, the same in 32- and 64-bit processes)
TICK_COUNT_LOW_DEPRECATED = 0x000
TICK_COUNT_MULTIPLIER = 0x004
INTERRUPT_TIME = 0x008
SYSTEM_TIME = 0x014
TIME_ZONE_BIAS = 0x020
IMAGE_NUMBER_LOW = 0x02C
IMAGE_NUMBER_HIGH = 0x02E
NT_SYSTEM_ROOT = 0x030
LARGE_PAGE_MINIMUM = 0x244
NT_BUILD_NUMBER = 0x260
NT_PRODUCT_TYPE = 0x264
PRODUCT_TYPE_IS_VALID = 0x268
NATIVE_PROCESSOR_ARCHITECTURE = 0x26A
NT_MAJOR_VERSION = 0x26C
NT_MINOR_VERSION = 0x270
PROCESSOR_FEATURES = 0x274
MITIGATION_POLICIES = 0x2D5
ACTIVE_CONSOLE_ID = 0x2D8
NUMBER_OF_PHYSICAL_PAGES = 0x2E8
QPC_FREQUENCY = 0x300
TICK_COUNT = 0x320
COOKIE = 0x330
ACTIVE_PROCESSOR_COUNT = 0x3C0
ACTIVE_GROUP_COUNT = 0x3C4

PROCESSOR_FEATURE_MAX = 64
NT_PRODUCT_WIN_NT = 1  # a workstation
TICK_COUNT_MULTIPLIER_VALUE = 0x0FA00000  # 15.625 ms per tick, in 8.24 fixed point
TICK_100NS = 156_250  # one 15.625 ms timer tick in 100 ns units
NS_PER_INSTRUCTION = 10
TIME_STEP = 1_000_000  # instructions between two updates of the time fields (10 ms)
INITIAL_UPTIME_100NS = 600 * 10_000_000  # the machine has been up ten minutes at load
BOOT_SYSTEM_TIME = 133_485_408_000_000_000  # 2024-01-01 00:00:00 UTC as a FILETIME
QPC_FREQUENCY_VALUE = 10_000_000
PHYSICAL_PAGES = 0x100000  # 4 GiB
NX_SUPPORT_POLICY_OPTIN = 2
COOKIE_VALUE = 0x6A0DC7E5  # Windows picks a random one at boot; fixed here for repeatable runs

# winnt.h PF_* indexes
PF_COMPARE_EXCHANGE_DOUBLE = 2
PF_MMX_INSTRUCTIONS_AVAILABLE = 3
PF_XMMI_INSTRUCTIONS_AVAILABLE = 6
PF_3DNOW_INSTRUCTIONS_AVAILABLE = 7
PF_RDTSC_INSTRUCTION_AVAILABLE = 8
PF_PAE_ENABLED = 9
PF_XMMI64_INSTRUCTIONS_AVAILABLE = 10
PF_NX_ENABLED = 12
PF_SSE3_INSTRUCTIONS_AVAILABLE = 13
PF_COMPARE_EXCHANGE128 = 14
PF_XSAVE_ENABLED = 17
PF_RDWRFSGSBASE_AVAILABLE = 22
PF_FASTFAIL_AVAILABLE = 23
PF_RDRAND_INSTRUCTION_AVAILABLE = 28
PF_RDTSCP_INSTRUCTION_AVAILABLE = 32
PF_RDPID_INSTRUCTION_AVAILABLE = 33
PF_SSSE3_INSTRUCTIONS_AVAILABLE = 36
PF_SSE4_1_INSTRUCTIONS_AVAILABLE = 37
PF_SSE4_2_INSTRUCTIONS_AVAILABLE = 38
PF_AVX_INSTRUCTIONS_AVAILABLE = 39
PF_AVX2_INSTRUCTIONS_AVAILABLE = 40
PF_AVX512F_INSTRUCTIONS_AVAILABLE = 41
PF_ERMS_AVAILABLE = 42

#: PF_* index -> (CPUID leaf, register, bit) that says the CPU has it
_CPUID_FEATURES: dict[int, tuple[int, str, int]] = {
    PF_COMPARE_EXCHANGE_DOUBLE: (1, "edx", 8),
    PF_MMX_INSTRUCTIONS_AVAILABLE: (1, "edx", 23),
    PF_XMMI_INSTRUCTIONS_AVAILABLE: (1, "edx", 25),
    PF_3DNOW_INSTRUCTIONS_AVAILABLE: (0x80000001, "edx", 31),
    PF_RDTSC_INSTRUCTION_AVAILABLE: (1, "edx", 4),
    PF_PAE_ENABLED: (1, "edx", 6),
    PF_XMMI64_INSTRUCTIONS_AVAILABLE: (1, "edx", 26),
    PF_NX_ENABLED: (0x80000001, "edx", 20),
    PF_SSE3_INSTRUCTIONS_AVAILABLE: (1, "ecx", 0),
    PF_COMPARE_EXCHANGE128: (1, "ecx", 13),
    PF_XSAVE_ENABLED: (1, "ecx", 27),  # OSXSAVE: XSAVE present and enabled
    PF_RDRAND_INSTRUCTION_AVAILABLE: (1, "ecx", 30),
    PF_RDTSCP_INSTRUCTION_AVAILABLE: (0x80000001, "edx", 27),
    PF_RDPID_INSTRUCTION_AVAILABLE: (7, "ecx", 22),
    PF_SSSE3_INSTRUCTIONS_AVAILABLE: (1, "ecx", 9),
    PF_SSE4_1_INSTRUCTIONS_AVAILABLE: (1, "ecx", 19),
    PF_SSE4_2_INSTRUCTIONS_AVAILABLE: (1, "ecx", 20),
    PF_AVX_INSTRUCTIONS_AVAILABLE: (1, "ecx", 28),
    PF_AVX2_INSTRUCTIONS_AVAILABLE: (7, "ebx", 5),
    PF_AVX512F_INSTRUCTIONS_AVAILABLE: (7, "ebx", 16),
    PF_ERMS_AVAILABLE: (7, "ebx", 9),
}
_REGS = {"ebx": X.UC_X86_REG_EBX, "ecx": X.UC_X86_REG_ECX, "edx": X.UC_X86_REG_EDX}


@cache
def cpuid(is_64bit: bool, leaf: int) -> dict[str, int]:
    """EBX/ECX/EDX of CPUID ``leaf`` (subleaf 0) on Unicorn's CPU model for this mode."""
    uc = Uc(UC_ARCH_X86, UC_MODE_64 if is_64bit else UC_MODE_32)
    uc.mem_map(0x1000, PAGE_SIZE)
    uc.mem_write(0x1000, b"\x0f\xa2")  # cpuid
    uc.reg_write(X.UC_X86_REG_EAX, leaf)
    uc.reg_write(X.UC_X86_REG_ECX, 0)
    uc.emu_start(0x1000, 0x1002)
    return {name: int(uc.reg_read(reg)) for name, reg in _REGS.items()}


def processor_features(is_64bit: bool) -> bytes:
    """The 64 ProcessorFeatures booleans Windows would report on the emulated CPU."""
    features = bytearray(PROCESSOR_FEATURE_MAX)
    for index, (leaf, reg, bit) in _CPUID_FEATURES.items():
        features[index] = cpuid(is_64bit, leaf)[reg] >> bit & 1
    if features[PF_AVX2_INSTRUCTIONS_AVAILABLE] and not features[PF_AVX_INSTRUCTIONS_AVAILABLE]:
        features[PF_AVX2_INSTRUCTIONS_AVAILABLE] = 0  # AVX2 needs the OS to enable AVX state
    features[PF_FASTFAIL_AVAILABLE] = 1  # __fastfail (int 0x29), Windows 8 and later
    if is_64bit:  # only 64-bit Windows turns on CR4.FSGSBASE for user code
        features[PF_RDWRFSGSBASE_AVAILABLE] = cpuid(True, 7)["ebx"] & 1
    return bytes(features)


def create(mm: MemoryManager) -> int:
    """Map and fill the page at 0x7FFE0000; call before anything allocates top-down."""
    base = mm.allocate(PAGE_SIZE, C.PAGE_READONLY, address=USER_SHARED_DATA, name="KUSER_SHARED_DATA")
    page = bytearray(PAGE_SIZE)
    machine = 0x8664 if mm.is_64bit else 0x14C  # IMAGE_FILE_MACHINE_AMD64 / _I386
    struct.pack_into("<I", page, TICK_COUNT_MULTIPLIER, TICK_COUNT_MULTIPLIER_VALUE)
    struct.pack_into("<HH", page, IMAGE_NUMBER_LOW, machine, machine)
    root = "C:\\Windows".encode("utf-16-le")
    page[NT_SYSTEM_ROOT : NT_SYSTEM_ROOT + len(root)] = root
    struct.pack_into("<I", page, LARGE_PAGE_MINIMUM, 0x200000)
    major, minor, build = OS_VERSION
    struct.pack_into("<I", page, NT_BUILD_NUMBER, build)
    struct.pack_into("<IB", page, NT_PRODUCT_TYPE, NT_PRODUCT_WIN_NT, 1)
    struct.pack_into("<H", page, NATIVE_PROCESSOR_ARCHITECTURE, 9 if mm.is_64bit else 0)  # AMD64 / INTEL
    struct.pack_into("<II", page, NT_MAJOR_VERSION, major, minor)
    page[PROCESSOR_FEATURES : PROCESSOR_FEATURES + PROCESSOR_FEATURE_MAX] = processor_features(mm.is_64bit)
    page[MITIGATION_POLICIES] = NX_SUPPORT_POLICY_OPTIN
    struct.pack_into("<I", page, ACTIVE_CONSOLE_ID, 1)
    struct.pack_into("<I", page, NUMBER_OF_PHYSICAL_PAGES, PHYSICAL_PAGES)
    struct.pack_into("<q", page, QPC_FREQUENCY, QPC_FREQUENCY_VALUE)
    struct.pack_into("<I", page, COOKIE, COOKIE_VALUE)
    struct.pack_into("<IB", page, ACTIVE_PROCESSOR_COUNT, 1, 1)
    mm.write(base, bytes(page))
    refresh(mm, 0)
    return base


def _ksystem_time(value: int) -> bytes:
    """A KSYSTEM_TIME: LowPart, High1Time, High2Time (both highs equal when consistent)."""
    high = value >> 32 & 0xFFFFFFFF
    return struct.pack("<III", value & 0xFFFFFFFF, high, high)


def uptime_100ns(instructions: int) -> int:
    """Time since boot after ``instructions`` guest instructions, in 100 ns units."""
    return INITIAL_UPTIME_100NS + instructions * NS_PER_INSTRUCTION // 100


def time_stamp(instructions: int) -> int:
    """The instruction count the time fields show after ``instructions``: the last step."""
    return instructions - instructions % TIME_STEP


def advance(mm: MemoryManager, before: int, after: int) -> None:
    """The guest ran from ``before`` to ``after`` instructions: step the clock if it crossed
    a :data:`TIME_STEP` (the page always shows ``time_stamp`` of the instructions run)."""
    if before // TIME_STEP != after // TIME_STEP:
        refresh(mm, time_stamp(after))


def refresh(mm: MemoryManager, instructions: int) -> None:
    """Write the time fields for ``instructions`` run (two host writes: the first 0x20 bytes
    hold TickCountLowDeprecated, the constant multiplier, InterruptTime and SystemTime)."""
    uptime = uptime_100ns(instructions)
    ticks = uptime // TICK_100NS
    base = USER_SHARED_DATA
    head = struct.pack("<II", ticks & 0xFFFFFFFF, TICK_COUNT_MULTIPLIER_VALUE)
    mm.write(base, head + _ksystem_time(uptime) + _ksystem_time(BOOT_SYSTEM_TIME + uptime))
    mm.write(base + TICK_COUNT, _ksystem_time(ticks))


def tick_count(mm: MemoryManager) -> int:
    """GetTickCount as kernelbase computes it from the page (milliseconds since boot)."""
    quad = struct.unpack("<Q", mm.read(USER_SHARED_DATA + TICK_COUNT, 8))[0]
    multiplier = struct.unpack("<I", mm.read(USER_SHARED_DATA + TICK_COUNT_MULTIPLIER, 4))[0]
    return int(quad * multiplier >> 24) & 0xFFFFFFFF


def processor_feature_present(mm: MemoryManager, feature: int) -> bool:
    """IsProcessorFeaturePresent as kernelbase implements it: a read of the page."""
    if not 0 <= feature < PROCESSOR_FEATURE_MAX:
        return False
    return mm.read(USER_SHARED_DATA + PROCESSOR_FEATURES + feature, 1) != b"\0"
