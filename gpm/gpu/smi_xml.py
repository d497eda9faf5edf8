"""Parse ``nvidia-smi -q -x`` into ``GpuSample``s: the fallback when NVML cannot be used.

``parse_smi_xml`` turns nvidia-smi's XML into the same ``GpuSample`` objects
``NvmlReader`` fills, with the same units and the same meaning:

- A value nvidia-smi cannot give (``N/A``, ``[Not Supported]``, ``ERR!``,
  ``Unknown Error``, ``[Insufficient Permissions]``, empty, ...) is ``None``,
  never 0. A number whose unit is not the expected one is ``None`` too.
- Element names changed over driver versions; both spellings are read:
  ``clocks_throttle_reasons`` / ``clocks_event_reasons``, ``power_readings`` /
  ``gpu_power_readings``, ``enforced_power_limit`` / ``current_power_limit``,
  ``power_draw`` / ``average_power_draw`` / ``instant_power_draw``.
- ``memory_used_bytes`` is ``used + reserved`` when the driver reports a
  ``reserved`` line (drivers >= 510), which is what NVML's
  ``nvmlDeviceGetMemoryInfo`` (v1, the one ``NvmlReader`` calls) calls "used".
- ``power_watts`` prefers ``power_draw``, then ``average_power_draw`` (what
  NVML's power usage reports on newer GPUs), then ``instant_power_draw``.
- ``index`` is the position of the ``<gpu>`` element, which is NVML's index
  order; ``minor_number`` (the /dev/nvidiaN number) can differ and is unused.
- MIG device blocks are skipped: every value is read from the elements directly
  under ``<gpu>``, never from ``<mig_devices>``.

The XML is parsed with the standard library after any ``DOCTYPE`` is removed;
a document declaring entities is refused, so no entity (external or not) is
ever expanded.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from gpm.gpu.sample import THROTTLE_REASONS, GpuProcess, GpuSample

if TYPE_CHECKING:
    import xml.etree.ElementTree as ET

SOURCE = "nvidia-smi"

_MIB = 1024 * 1024
_MEMORY_UNITS = {"b": 1, "kib": 1024, "mib": _MIB, "gib": 1024 * _MIB}
_POWER_UNITS = {"w": 1.0, "mw": 0.001}
_ENERGY_UNITS = {"mj": 0.001, "j": 1.0, "kj": 1000.0}

# Texts nvidia-smi writes instead of a value (compared stripped, without
# brackets, lowercased). Any text that is not a well-formed number with the
# expected unit is also None; this list matters for the string fields.
_UNAVAILABLE = {
    "",
    "n/a",
    "na",
    "not supported",
    "not available",
    "unknown",
    "unknown error",
    "err!",
    "insufficient permissions",
    "no permission",
    "gpu is lost",
    "gpu requires reset",
    "requested functionality has been deprecated",
    "not found",
}

# Texts that mean the GPU itself failed, and the status they give.
_FAILURE_STATUS = {
    "gpu is lost": "gpu_is_lost",
    "gpu requires reset": "reset_required",
    "unknown error": "unknown_error",
    "err!": "unknown_error",
}

# nvidia-smi reason names that differ from THROTTLE_REASONS' names.
_REASON_ALIASES = {"display_clocks_setting": "display_clock_setting"}

# Unsigned ASCII digits only: no reading is negative, and ``\d`` alone would
# take Arabic-Indic or fullwidth digits that float() accepts.
_NUMBER = re.compile(r"^([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z%!/]*)$")
_INT64_LIMIT = 2.0 ** 63  # SQLite's INTEGER; beyond it a reading is garbage, not a GPU's
_PSTATE = re.compile(r"^P(\d{1,2})$", re.IGNORECASE)
_DOCTYPE = re.compile(r"<!DOCTYPE\b(?:[^\[>]|\[[^\]]*\])*>", re.IGNORECASE)
_XML_DECL = re.compile(r"^\s*<\?xml\b[^>]*\?>")


class SmiParseError(ValueError):
    """The text is not nvidia-smi XML; the message says what is wrong."""


# --- text helpers -----------------------------------------------------------


def _norm(text: str | None) -> str | None:
    """Stripped text, or None when it is one of nvidia-smi's "no value" words."""
    if text is None:
        return None
    value = " ".join(text.split())
    key = value.strip("[]").strip().lower()
    if key in _UNAVAILABLE:
        return None
    return value


def _child_text(elem: ET.Element | None, tag: str) -> str | None:
    if elem is None:
        return None
    child = elem.find(tag)
    return None if child is None else _norm(child.text)


def _number(text: str | None, units: dict[str, float], default_unit: str) -> float | None:
    """``"24564 MiB"`` -> 24564 * scale of MiB. Unknown unit or no number -> None."""
    text = _norm(text)
    if text is None:
        return None
    m = _NUMBER.match(text)
    if m is None:
        return None
    unit = (m.group(2) or default_unit).lower()
    scale = units.get(unit)
    if scale is None:
        return None
    value = float(m.group(1)) * scale
    # 400 digits make inf, which int() refuses; 25 make an int no INTEGER holds
    return value if value < _INT64_LIMIT else None


def _int(text: str | None, unit: str) -> int | None:
    value = _number(text, {unit.lower(): 1.0}, unit)
    return None if value is None else int(round(value))


def _bytes(text: str | None) -> int | None:
    value = _number(text, _MEMORY_UNITS, "mib")
    return None if value is None else int(round(value))


def _watts(text: str | None) -> float | None:
    return _number(text, _POWER_UNITS, "w")


def _joules(text: str | None) -> float | None:
    # NVML's counter is in mJ, so a bare number is taken as mJ.
    return _number(text, _ENERGY_UNITS, "mj")


def _pstate(text: str | None) -> int | None:
    text = _norm(text)
    if text is None:
        return None
    m = _PSTATE.match(text)
    if m is None:
        return None
    value = int(m.group(1))
    return value if 0 <= value <= 15 else None


def _first(*values):
    for value in values:
        if value is not None:
            return value
    return None


# --- XML ----------------------------------------------------------------------


def _parse_root(text: str | bytes) -> ET.Element:
    import xml.etree.ElementTree as ET  # only when nvidia-smi is read: `gpm --help` loads this module too

    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    if not text.strip():
        raise SmiParseError("empty output")
    if re.search(r"<!ENTITY\b", text, re.IGNORECASE):
        raise SmiParseError("XML declares entities (refused)")
    # The DOCTYPE only names nvidia-smi's DTD file; drop it so nothing is ever
    # looked up, and drop the XML declaration since we parse a str.
    text = _XML_DECL.sub("", text, count=1)
    text = _DOCTYPE.sub("", text, count=1)
    if re.search(r"<!DOCTYPE\b", text, re.IGNORECASE):
        raise SmiParseError("XML has a DOCTYPE that could not be removed (refused)")
    try:
        root = ET.fromstring(text)
    except ET.ParseError as err:
        raise SmiParseError(f"not valid XML ({err})") from None
    if root.tag != "nvidia_smi_log":
        raise SmiParseError(f"unexpected root element <{root.tag}>, expected <nvidia_smi_log>")
    return root


def _ecc_uncorrected(gpu: ET.Element) -> int | None:
    """Volatile uncorrected ECC errors: ``double_bit/total`` (older drivers) or the
    sum of the ``*_uncorrectable*`` counts (newer ones); None where all are N/A."""
    volatile = gpu.find("ecc_errors/volatile")
    if volatile is None:
        return None
    total = _child_text(volatile.find("double_bit"), "total")
    if total is not None:
        return _int(total, "")
    counts = [_int(_norm(child.text), "") for child in volatile if "uncorrectable" in child.tag]
    known = [c for c in counts if c is not None]
    return sum(known) if known else None


def _throttle(gpu: ET.Element) -> int | None:
    block = gpu.find("clocks_event_reasons")
    prefix = "clocks_event_reason_"
    if block is None:
        block = gpu.find("clocks_throttle_reasons")
        prefix = "clocks_throttle_reason_"
    if block is None:
        return None
    mask = 0
    known = False
    for child in block:
        if not child.tag.startswith(prefix):
            continue
        value = _norm(child.text)
        if value is None:
            continue
        known = True
        name = child.tag[len(prefix):]
        name = _REASON_ALIASES.get(name, name)
        if value.lower() == "active":
            mask |= THROTTLE_REASONS.get(name, 0)
    return mask if known else None


def _power_block(gpu: ET.Element) -> ET.Element | None:
    block = gpu.find("gpu_power_readings")
    return block if block is not None else gpu.find("power_readings")


def _process_type(text: str | None) -> str:
    letters = set((_norm(text) or "").upper().replace(" ", "").split("+"))
    graphics = "G" in letters
    compute = bool(letters & {"C", "M"})
    if graphics and compute:
        return "compute+graphics"
    if graphics:
        return "graphics"
    return "compute"


def _merge_type(a: str, b: str) -> str:
    return a if a == b else "compute+graphics"


def _processes(gpu: ET.Element) -> list[GpuProcess]:
    block = gpu.find("processes")
    if block is None:
        return []
    found: dict[int, GpuProcess] = {}
    for info in block.findall("process_info"):
        pid_text = _child_text(info, "pid")
        if pid_text is None or not re.fullmatch(r"[0-9]{1,18}", pid_text):
            continue  # isdigit() passes '²', which int() refuses
        pid = int(pid_text)
        kind = _process_type(_child_text(info, "type"))
        used = _bytes(_child_text(info, "used_memory"))
        name = _child_text(info, "process_name")
        existing = found.get(pid)
        if existing is None:
            found[pid] = GpuProcess(pid=pid, used_memory_bytes=used, type=kind, name=name)
        else:
            # The same process in several MIG instances: one entry, summed.
            existing.type = _merge_type(existing.type, kind)
            if used is not None:
                existing.used_memory_bytes = (existing.used_memory_bytes or 0) + used
            existing.name = existing.name or name
    return sorted(found.values(), key=lambda p: p.pid)


def _failure_status(text: str) -> str | None:
    key = " ".join(text.split()).strip("[]").strip().lower()
    if "gpu is lost" in key:
        return "gpu_is_lost"
    if "gpu requires reset" in key:
        return "reset_required"
    return _FAILURE_STATUS.get(key)


def _failure(gpu: ET.Element) -> str | None:
    """A status when the block shows the GPU itself failed, else None.

    Failed means: the identity and core readings are all absent or error
    texts, and at least one of them is an error text (not merely N/A; a
    hand-trimmed or very old capture that lacks fields is still "ok").
    Some drivers also write the error as bare text directly inside <gpu>.
    """
    probes = [
        gpu.find("product_name"),
        gpu.find("uuid"),
        gpu.find("fb_memory_usage/total"),
        gpu.find("temperature/gpu_temp"),
        gpu.find("utilization/gpu_util"),
        gpu.find("performance_state"),
    ]
    statuses = []
    for probe in probes:
        if probe is None:
            continue
        text = probe.text or ""
        status = _failure_status(text)
        if status is not None:
            statuses.append(status)
        elif _norm(text) is not None:
            return None  # a real value: the GPU answers
    own = _failure_status(gpu.text or "")
    if own is not None:
        statuses.append(own)
    if not statuses:
        return None
    for preferred in ("gpu_is_lost", "reset_required"):
        if preferred in statuses:
            return preferred
    return statuses[0]


def _gpu_sample(gpu: ET.Element, index: int, ts_ms: int, driver: str | None,
                cuda: str | None, with_processes: bool) -> GpuSample:
    s = GpuSample(
        ts_ms=ts_ms,
        index=index,
        source=SOURCE,
        uuid=_child_text(gpu, "uuid"),
        name=_child_text(gpu, "product_name"),
        pci_bus_id=_first(_child_text(gpu.find("pci"), "pci_bus_id"), _norm(gpu.get("id"))),
        serial=_child_text(gpu, "serial"),
        driver_version=driver,
        cuda_version=cuda,
    )
    status = _failure(gpu)
    if status is not None:
        s.status = status
        return s

    util = gpu.find("utilization")
    s.utilization_gpu_percent = _int(_child_text(util, "gpu_util"), "%")
    s.utilization_memory_percent = _int(_child_text(util, "memory_util"), "%")

    mem = gpu.find("fb_memory_usage")
    s.memory_total_bytes = _bytes(_child_text(mem, "total"))
    used = _bytes(_child_text(mem, "used"))
    reserved = _bytes(_child_text(mem, "reserved"))
    s.memory_used_bytes = used if used is None or reserved is None else used + reserved

    s.temperature_celsius = _int(_child_text(gpu.find("temperature"), "gpu_temp"), "C")

    power = _power_block(gpu)
    s.power_watts = _first(
        _watts(_child_text(power, "power_draw")),
        _watts(_child_text(power, "average_power_draw")),
        _watts(_child_text(power, "instant_power_draw")),
    )
    s.power_limit_watts = _first(
        _watts(_child_text(power, "enforced_power_limit")),
        _watts(_child_text(power, "current_power_limit")),
        _watts(_child_text(power, "power_limit")),
    )
    s.energy_joules = _first(
        _joules(_child_text(power, "total_energy_consumption")),
        _joules(_child_text(gpu, "total_energy_consumption")),
    )

    clocks = gpu.find("clocks")
    s.sm_clock_mhz = _int(_child_text(clocks, "sm_clock"), "MHz")
    s.memory_clock_mhz = _int(_child_text(clocks, "mem_clock"), "MHz")
    s.fan_percent = _int(_child_text(gpu, "fan_speed"), "%")
    s.pstate = _first(
        _pstate(_child_text(gpu, "performance_state")),
        _pstate(_child_text(power, "power_state")),
    )
    s.throttle_reasons = _throttle(gpu)
    s.ecc_uncorrected_errors = _ecc_uncorrected(gpu)
    if with_processes:
        s.processes = _processes(gpu)
    return s


def parse_smi_xml(text: str, ts_ms: int, *, processes: bool = True) -> list[GpuSample]:
    """``nvidia-smi -q -x`` output -> one ``GpuSample`` per ``<gpu>``, in order.

    Raises ``SmiParseError`` (a ``ValueError``) when the text is not
    nvidia-smi's XML.
    """
    root = _parse_root(text)
    driver = _child_text(root, "driver_version")
    cuda = _child_text(root, "cuda_version")
    return [
        _gpu_sample(gpu, index, ts_ms, driver, cuda, processes)
        for index, gpu in enumerate(root.findall("gpu"))
    ]
