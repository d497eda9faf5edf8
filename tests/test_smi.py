"""The nvidia-smi fallback: XML parsing against real captures, and the reader.

The captures live outside the repository (../shared/fixtures/nvidia-smi); the
tests that need them skip when that folder is absent. Expected values are
pulled from the raw text with regexes written here, independently of the
parser in gpm.gpu.smi_xml.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import time
from pathlib import Path

import pytest

from gpm.errors import EXIT_NO_BACKEND, NoBackendError
from gpm.gpu.sample import THROTTLE_REASONS
from gpm.gpu.smi import SmiReader
from gpm.gpu.smi_xml import SmiParseError, parse_smi_xml

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "nvidia-smi"
FAKE_SMI = Path(__file__).resolve().parent / "fakes" / "nvidia-smi"
CAPTURES = sorted(p.name for p in FIXTURES.glob("*.xml")) if FIXTURES.is_dir() else []
MIB = 1024 * 1024
TS = 1_700_000_000_000


def _capture(name: str) -> str:
    if not FIXTURES.is_dir():
        pytest.skip(f"captures folder {FIXTURES} is absent")
    return (FIXTURES / name).read_text(encoding="utf-8")


# --- an independent reading of the raw XML text --------------------------------

# What nvidia-smi writes when it has no value.
NO_VALUE = {
    "", "N/A", "[N/A]", "Not Supported", "[Not Supported]", "Unknown Error",
    "[Unknown Error]", "ERR!", "[Insufficient Permissions]",
    "Requested functionality has been deprecated",
}


def _gpu_blocks(raw: str) -> list[tuple[str, str]]:
    """(id attribute, body) of each <gpu>, with MIG device blocks cut out."""
    blocks = []
    for m in re.finditer(r'<gpu(?:\s+id="([^"]*)")?\s*>(.*?)</gpu>', raw, re.S):
        body = re.sub(r"<mig_devices>.*?</mig_devices>", "", m.group(2), flags=re.S)
        blocks.append((m.group(1), body))
    return blocks


def _section(body: str | None, tag: str) -> str | None:
    if body is None:
        return None
    m = re.search(rf"<{tag}>(.*?)</{tag}>", body, re.S)
    return m.group(1) if m else None


def _raw(body: str | None, tag: str) -> str | None:
    """Stripped text of the first <tag>; None if the element is absent."""
    if body is None:
        return None
    m = re.search(rf"<{tag}>([^<]*)</{tag}>", body)
    return " ".join(m.group(1).split()) if m else None


def _text(raw: str | None) -> str | None:
    return None if raw is None or raw in NO_VALUE else raw


def _num(raw: str | None, unit: str) -> float | None:
    if raw is None:
        return None
    m = re.fullmatch(rf"(-?\d+(?:\.\d+)?) ?{re.escape(unit)}", raw)
    return float(m.group(1)) if m else None


def _int(raw: str | None, unit: str) -> int | None:
    value = _num(raw, unit)
    return None if value is None else int(value)


def _first(*values):
    return next((v for v in values if v is not None), None)


def _expected_throttle(body: str) -> int | None:
    section = _section(body, "clocks_event_reasons") or _section(body, "clocks_throttle_reasons")
    if section is None:
        return None
    names = {"display_clocks_setting": "display_clock_setting"}
    mask, known = 0, False
    for name, value in re.findall(
        r"<clocks_(?:event|throttle)_reason_(\w+)>([^<]*)</", section
    ):
        value = " ".join(value.split())
        if value in NO_VALUE:
            continue
        known = True
        if value == "Active":
            mask |= THROTTLE_REASONS[names.get(name, name)]
        else:
            assert value == "Not Active", value
    return mask if known else None


PROCESS_TYPES = {"C": "compute", "G": "graphics", "C+G": "compute+graphics"}


def _expected_processes(body: str) -> list[tuple]:
    section = _section(body, "processes") or ""
    found = []
    for info in re.findall(r"<process_info>(.*?)</process_info>", section, re.S):
        mem = _int(_raw(info, "used_memory"), "MiB")
        found.append((
            int(_raw(info, "pid")),
            PROCESS_TYPES[_raw(info, "type")],
            _text(_raw(info, "process_name")),
            None if mem is None else mem * MIB,
        ))
    pids = [p[0] for p in found]
    assert len(pids) == len(set(pids)), "a capture lists a pid twice on one GPU"
    return sorted(found)


def _expected(raw: str) -> list[dict]:
    head = raw.split("<gpu", 1)[0]
    driver = _text(_raw(head, "driver_version"))
    cuda = _text(_raw(head, "cuda_version"))
    out = []
    for gpu_id, body in _gpu_blocks(raw):
        mem = _section(body, "fb_memory_usage")
        used = _int(_raw(mem, "used"), "MiB")
        reserved = _int(_raw(mem, "reserved"), "MiB")
        power = _section(body, "gpu_power_readings") or _section(body, "power_readings")
        clocks = _section(body, "clocks")
        util = _section(body, "utilization")
        total = _int(_raw(mem, "total"), "MiB")
        pstate = _first(
            *(re.fullmatch(r"P(\d+)", _raw(b, t) or "") for b, t in
              ((body, "performance_state"), (power, "power_state")))
        )
        out.append({
            "uuid": _text(_raw(body, "uuid")),
            "name": _text(_raw(body, "product_name")),
            "serial": _text(_raw(body, "serial")),
            "pci_bus_id": _first(_text(_raw(_section(body, "pci"), "pci_bus_id")), gpu_id),
            "driver_version": driver,
            "cuda_version": cuda,
            "utilization_gpu_percent": _int(_raw(util, "gpu_util"), "%"),
            "utilization_memory_percent": _int(_raw(util, "memory_util"), "%"),
            "memory_total_bytes": None if total is None else total * MIB,
            "memory_used_bytes": None if used is None else (used + (reserved or 0)) * MIB,
            "temperature_celsius": _int(_raw(_section(body, "temperature"), "gpu_temp"), "C"),
            "power_watts": _first(*(_num(_raw(power, t), "W") for t in
                                    ("power_draw", "average_power_draw", "instant_power_draw"))),
            "power_limit_watts": _first(*(_num(_raw(power, t), "W") for t in
                                          ("enforced_power_limit", "current_power_limit",
                                           "power_limit"))),
            "sm_clock_mhz": _int(_raw(clocks, "sm_clock"), "MHz"),
            "memory_clock_mhz": _int(_raw(clocks, "mem_clock"), "MHz"),
            "fan_percent": _int(_raw(body, "fan_speed"), "%"),
            "pstate": None if pstate is None else int(pstate.group(1)),
            "throttle_reasons": _expected_throttle(body),
            "processes": _expected_processes(body),
            # for the "None, never 0" check
            "_raw": {
                "utilization_gpu_percent": _raw(util, "gpu_util"),
                "fan_percent": _raw(body, "fan_speed"),
                "temperature_celsius": _raw(_section(body, "temperature"), "gpu_temp"),
                "sm_clock_mhz": _raw(clocks, "sm_clock"),
                "memory_total_bytes": _raw(mem, "total"),
            },
        })
    return out


# --- (a) every capture, every field -----------------------------------------


@pytest.mark.parametrize("name", CAPTURES or ["<no captures>"])
def test_capture_matches_raw_text(name):
    raw = _capture(name)
    expected = _expected(raw)
    samples = parse_smi_xml(raw, TS)
    assert len(samples) == len(expected) >= 1
    for index, (sample, exp) in enumerate(zip(samples, expected)):
        assert sample.index == index
        assert sample.ts_ms == TS
        assert sample.source == "nvidia-smi"
        assert sample.status == "ok"
        assert sample.name, "every capture names its GPU"
        assert sample.energy_joules is None  # no capture reports an energy counter
        raws = exp.pop("_raw")
        procs = exp.pop("processes")
        for field, want in exp.items():
            got = getattr(sample, field)
            if isinstance(want, float):
                assert got == pytest.approx(want), field
                assert isinstance(got, float), field
            else:
                assert got == want, (field, got, want)
                assert type(got) is type(want), field
        # Unsupported is None, never a made-up 0.
        for field, text in raws.items():
            if text is None or text in NO_VALUE:
                assert getattr(sample, field) is None, field
            if getattr(sample, field) == 0:
                assert text is not None and re.match(r"0\b", text), field
        got_procs = [(p.pid, p.type, p.name, p.used_memory_bytes) for p in sample.processes]
        assert got_procs == procs
        assert all(p.sm_utilization_percent is None for p in sample.processes)
        assert not parse_smi_xml(raw, TS, processes=False)[index].processes


# --- (b) hand-picked values --------------------------------------------------


def test_rtx_4090_exact():
    (s,) = parse_smi_xml(_capture("netdata__rtx-4090-driver-535.xml"), TS)
    assert s.name == "NVIDIA GeForce RTX 4090"
    assert s.uuid == "GPU-71d1acc2-662d-2166-bf9f-65272d2fc437"
    assert s.pci_bus_id == "00000000:84:00.0"
    assert s.serial is None  # "N/A"
    assert s.driver_version == "535.86.05" and s.cuda_version == "12.2"
    assert s.memory_total_bytes == 24564 * 1048576 == 25_757_220_864
    assert s.memory_used_bytes == (2 + 346) * 1048576  # used + reserved, as NVML v1
    assert s.power_watts == pytest.approx(26.84)
    assert s.power_limit_watts == pytest.approx(450.0)  # current_power_limit
    assert s.temperature_celsius == 40
    assert (s.sm_clock_mhz, s.memory_clock_mhz) == (210, 405)
    assert s.fan_percent == 0  # a real 0 %
    assert s.pstate == 8
    assert s.throttle_reasons == THROTTLE_REASONS["gpu_idle"]  # clocks_event_reasons
    assert s.to_json("h")["throttle_reasons"] == ["gpu_idle"]
    assert s.to_json("h")["pstate"] == "P8"


def test_rtx_pro_6000_instant_power_only():
    (s,) = parse_smi_xml(_capture("netdata__rtx-pro-6000-driver-580.xml"), TS)
    assert s.power_watts == pytest.approx(66.84)  # power_draw and average are N/A
    assert s.fan_percent == 40 and s.temperature_celsius == 37 and s.pstate == 8
    assert s.pci_bus_id == "00000000:01:00.0"  # from the <gpu id=...> attribute
    assert s.driver_version is None and s.memory_total_bytes is None


def test_old_driver_two_gpus_processes():
    a, b = parse_smi_xml(_capture("pai__nvidia_smi_sample.xml"), TS)
    assert (a.index, b.index) == (0, 1)
    assert a.pstate == 2 and a.power_watts == pytest.approx(119.47)
    assert a.power_limit_watts == pytest.approx(180.0)  # enforced_power_limit
    assert a.throttle_reasons == 0  # clocks_throttle_reasons, none active
    assert a.cuda_version is None
    by_pid = {p.pid: p for p in a.processes}
    assert by_pid[1357].type == "graphics" and by_pid[1357].name == "/usr/lib/xorg/Xorg"
    assert by_pid[1357].used_memory_bytes == 99 * MIB
    assert by_pid[3093].type == "compute" and by_pid[3093].used_memory_bytes == 2283 * MIB
    assert [p.pid for p in b.processes] == [3093]


def test_windows_wddm_processes():
    (s,) = parse_smi_xml(_capture("netdata__rtx-2080-win.xml"), TS)
    assert len(s.processes) == 26
    assert all(p.used_memory_bytes is None for p in s.processes)  # N/A under WDDM
    assert {p.type for p in s.processes} <= {"compute+graphics", "graphics", "compute"}
    assert any(p.name.endswith("PhoneExperienceHost.exe") for p in s.processes)


def test_mig_reads_the_whole_gpu():
    (s,) = parse_smi_xml(_capture("telegraf__a100-sxm4-v12.xml"), TS)
    assert s.memory_total_bytes == 81920 * MIB  # not a MIG slice's 19968 MiB
    assert s.utilization_gpu_percent is None  # N/A with MIG enabled
    assert s.fan_percent is None and s.processes == []
    (s,) = parse_smi_xml(_capture("netdata__a100-sxm4-mig.xml"), TS)
    assert s.memory_total_bytes == 40960 * MIB
    assert s.memory_used_bytes == (38 + 605) * MIB


def test_minimal_old_gpu_is_all_none():
    (s,) = parse_smi_xml(_capture("pai__nvidia_smi_outdated_gpu.xml"), TS)
    assert s.status == "ok" and s.name == "GeForce GT 730"
    for field in ("utilization_gpu_percent", "memory_total_bytes", "power_watts",
                  "temperature_celsius", "pstate", "throttle_reasons", "fan_percent"):
        assert getattr(s, field) is None, field


def test_v13_average_power_and_deprecated_text():
    (s,) = parse_smi_xml(_capture("telegraf__rtx-3080-v13.xml"), TS)
    assert s.power_watts == pytest.approx(139.62)  # average before instant
    assert s.memory_clock_mhz == 9251  # <clocks>, not the deprecated app clocks
    assert s.throttle_reasons == 0


# --- synthetic documents: failure, odd values, hostile XML --------------------


def _doc(*gpus: str, head: str = "<driver_version>550.1</driver_version>") -> str:
    return ('<?xml version="1.0" ?>\n<!DOCTYPE nvidia_smi_log SYSTEM "nvsmi_device_v12.dtd">\n'
            f"<nvidia_smi_log>{head}{''.join(gpus)}</nvidia_smi_log>")


HEALTHY = """<gpu id="00000000:02:00.0"><product_name>Good</product_name>
<fb_memory_usage><total>1024 MiB</total><used>0 MiB</used></fb_memory_usage>
<temperature><gpu_temp>30 C</gpu_temp></temperature></gpu>"""


def test_failed_gpu_gets_status_and_others_still_read():
    lost = """<gpu id="00000000:01:00.0"><product_name>Unknown Error</product_name>
    <uuid>Unknown Error</uuid><fb_memory_usage><total>Unknown Error</total></fb_memory_usage>
    <temperature><gpu_temp>Unknown Error</gpu_temp></temperature></gpu>"""
    bad, good = parse_smi_xml(_doc(lost, HEALTHY), TS)
    assert bad.status == "unknown_error" and not bad.ok
    assert bad.pci_bus_id == "00000000:01:00.0" and bad.name is None
    assert bad.memory_total_bytes is None and bad.temperature_celsius is None
    assert good.ok and good.index == 1 and good.memory_total_bytes == 1024 * MIB
    assert good.driver_version == "550.1"

    gone = '<gpu id="00000000:01:00.0"><product_name>GPU is lost</product_name></gpu>'
    assert parse_smi_xml(_doc(gone), TS)[0].status == "gpu_is_lost"


def test_one_broken_sensor_is_none_not_a_failure():
    gpu = """<gpu id="x"><product_name>G</product_name><fan_speed>ERR!</fan_speed>
    <temperature><gpu_temp>[Unknown Error]</gpu_temp></temperature>
    <utilization><gpu_util>[Insufficient Permissions]</gpu_util><memory_util>[N/A]</memory_util>
    </utilization><gpu_power_readings><power_draw>[Not Supported]</power_draw>
    <current_power_limit>Not Supported</current_power_limit></gpu_power_readings>
    <performance_state>Unknown</performance_state><serial></serial><uuid>[N/A]</uuid>
    <fb_memory_usage><total>512 KiB</total><used>12 W</used></fb_memory_usage></gpu>"""
    (s,) = parse_smi_xml(_doc(gpu), TS)
    assert s.ok and s.name == "G"
    assert s.memory_total_bytes == 512 * 1024
    for field in ("fan_percent", "temperature_celsius", "utilization_gpu_percent",
                  "utilization_memory_percent", "power_watts", "power_limit_watts",
                  "pstate", "serial", "uuid", "memory_used_bytes"):  # "12 W" is not memory
        assert getattr(s, field) is None, field


def test_process_types_and_mig_duplicates():
    gpu = """<gpu id="x"><product_name>G</product_name><processes>
    <process_info><gpu_instance_id>1</gpu_instance_id><pid>10</pid><type>C</type>
      <process_name>python</process_name><used_memory>100 MiB</used_memory></process_info>
    <process_info><gpu_instance_id>2</gpu_instance_id><pid>10</pid><type>C</type>
      <process_name>python</process_name><used_memory>50 MiB</used_memory></process_info>
    <process_info><pid>11</pid><type>M+C</type><process_name>mps</process_name>
      <used_memory>N/A</used_memory></process_info>
    <process_info><pid>12</pid><type>C+G</type><process_name>both</process_name>
      <used_memory>1 MiB</used_memory></process_info>
    <process_info><pid>N/A</pid><type>G</type></process_info>
    </processes></gpu>"""
    (s,) = parse_smi_xml(_doc(gpu), TS)
    assert [(p.pid, p.type, p.used_memory_bytes) for p in s.processes] == [
        (10, "compute", 150 * MIB), (11, "compute", None), (12, "compute+graphics", MIB),
    ]


def test_throttle_names_and_energy_units():
    gpu = """<gpu id="x"><product_name>G</product_name><clocks_event_reasons>
    <clocks_event_reason_sw_power_cap>Active</clocks_event_reason_sw_power_cap>
    <clocks_event_reason_display_clocks_setting>Active</clocks_event_reason_display_clocks_setting>
    <clocks_event_reason_gpu_idle>Not Active</clocks_event_reason_gpu_idle>
    </clocks_event_reasons><gpu_power_readings>
    <total_energy_consumption>123456 mJ</total_energy_consumption></gpu_power_readings></gpu>"""
    (s,) = parse_smi_xml(_doc(gpu), TS)
    assert s.throttle_reasons == THROTTLE_REASONS["sw_power_cap"] | THROTTLE_REASONS[
        "display_clock_setting"]
    assert s.energy_joules == pytest.approx(123.456)
    (s,) = parse_smi_xml(_doc(gpu.replace("123456 mJ", "42.5 J")), TS)
    assert s.energy_joules == pytest.approx(42.5)


def test_external_entities_are_never_resolved(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET")
    xxe = (f'<?xml version="1.0"?><!DOCTYPE nvidia_smi_log [<!ENTITY e SYSTEM "{secret.as_uri()}">]>'
           "<nvidia_smi_log><gpu><product_name>&e;</product_name></gpu></nvidia_smi_log>")
    with pytest.raises(SmiParseError) as info:
        parse_smi_xml(xxe, TS)
    assert "TOP-SECRET" not in str(info.value)
    laughs = ('<!DOCTYPE nvidia_smi_log [<!ENTITY a "aaaaaaaaaa">'
              + "".join(f'<!ENTITY {chr(98 + i)} "{("&" + chr(97 + i) + ";") * 10}">'
                        for i in range(8))
              + ']><nvidia_smi_log><gpu><product_name>&i;</product_name></gpu></nvidia_smi_log>')
    with pytest.raises(SmiParseError):
        parse_smi_xml(laughs, TS)
    # An entity reference with no declaration is an error, not a lookup.
    with pytest.raises(SmiParseError):
        parse_smi_xml("<nvidia_smi_log><gpu><uuid>&e;</uuid></gpu></nvidia_smi_log>", TS)
    # A DOCTYPE that does not look like one we can remove is refused too.
    with pytest.raises(SmiParseError):
        parse_smi_xml('<!DOCTYPE a [<!ATTLIST a b CDATA "]">]><nvidia_smi_log/>', TS)


@pytest.mark.parametrize("text", ["", "   ", "garbage <<<", "<html></html>", "<nvidia_smi_log>"])
def test_not_nvidia_smi_xml(text):
    with pytest.raises(SmiParseError):
        parse_smi_xml(text, TS)


def test_no_gpus_is_an_empty_list():
    assert parse_smi_xml(_doc(), TS) == []


# --- (c) SmiReader with the stand-in binary ----------------------------------


@pytest.fixture
def fake_smi(tmp_path, monkeypatch):
    """A private executable copy of tests/fakes/nvidia-smi and its XML file."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    exe = bindir / "nvidia-smi"
    shutil.copyfile(FAKE_SMI, exe)
    exe.chmod(0o755)
    xml = tmp_path / "out.xml"
    xml.write_text(_doc(HEALTHY, HEALTHY.replace("02:00.0", "03:00.0"),
                        head="<driver_version>550.1</driver_version><cuda_version>12.4"
                             "</cuda_version>"))
    for var in ("FAKE_SMI_SLEEP", "FAKE_SMI_EXIT", "FAKE_SMI_STDERR", "FAKE_SMI_PIDFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("FAKE_SMI_XML", str(xml))
    return exe


def test_reader_reads_through_path_lookup(fake_smi, monkeypatch):
    monkeypatch.setenv("PATH", f"{fake_smi.parent}{os.pathsep}{os.environ.get('PATH', '')}")
    reader = SmiReader()
    assert reader.source == "nvidia-smi" and reader.gpu_count == 0
    assert reader.open() is reader
    assert reader.executable == str(fake_smi)
    samples = reader.read()
    assert [s.pci_bus_id for s in samples] == ["00000000:02:00.0", "00000000:03:00.0"]
    assert all(s.source == "nvidia-smi" and s.ok for s in samples)
    assert samples[0].cuda_version == "12.4" and reader.driver_version == "550.1"
    assert reader.gpu_count == 2
    reader.close()


def test_reader_with_a_real_capture(fake_smi, monkeypatch):
    raw = _capture("telegraf__tesla-t4.xml")
    monkeypatch.setenv("FAKE_SMI_XML", str(FIXTURES / "telegraf__tesla-t4.xml"))
    (s,) = SmiReader(str(fake_smi)).read()  # read() opens by itself
    (want,) = parse_smi_xml(raw, s.ts_ms)
    assert s == want and len(s.processes) == 2
    (s,) = SmiReader(str(fake_smi)).open().read(processes=False)
    assert s.processes == []


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def test_reader_timeout_kills_the_whole_group(fake_smi, monkeypatch, tmp_path):
    pidfile = tmp_path / "pids"
    monkeypatch.setenv("FAKE_SMI_SLEEP", "30")
    monkeypatch.setenv("FAKE_SMI_PIDFILE", str(pidfile))
    reader = SmiReader(str(fake_smi), timeout_secs=0.5).open()
    start = time.monotonic()
    with pytest.raises(NoBackendError, match=r"^nvidia-smi timed out after 0\.5 s \(killed\)$") as info:
        reader.read()
    assert time.monotonic() - start < 5
    assert info.value.exit_code == EXIT_NO_BACKEND
    pids = [int(p) for p in pidfile.read_text().split()]
    assert len(pids) == 2  # the shell and its `sleep` child
    deadline = time.monotonic() + 3
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(p) for p in pids), "a nvidia-smi process survived the timeout"


def test_reader_nonzero_exit(fake_smi, monkeypatch):
    monkeypatch.setenv("FAKE_SMI_EXIT", "9")
    monkeypatch.setenv("FAKE_SMI_STDERR", "NVIDIA-SMI has failed because it couldn't "
                       "communicate with the NVIDIA driver.\nsecond line")
    with pytest.raises(NoBackendError) as info:
        SmiReader(str(fake_smi)).open().read()
    msg = str(info.value)
    assert "exit code 9" in msg and "couldn't communicate with the NVIDIA driver" in msg
    assert "\n" not in msg and "second line" not in msg


def test_reader_garbage_output(fake_smi, monkeypatch, tmp_path):
    bad = tmp_path / "bad.xml"
    bad.write_text("Segmentation fault <<< not xml")
    monkeypatch.setenv("FAKE_SMI_XML", str(bad))
    with pytest.raises(NoBackendError, match="not valid XML") as info:
        SmiReader(str(fake_smi)).open().read()
    assert "\n" not in str(info.value)
    bad.write_text("")
    with pytest.raises(NoBackendError, match="empty output"):
        SmiReader(str(fake_smi)).open().read()


def test_reader_missing_binary(tmp_path, monkeypatch):
    with pytest.raises(NoBackendError, match="^nvidia-smi not found") as info:
        SmiReader(str(tmp_path / "nope" / "nvidia-smi")).open()
    assert info.value.exit_code == EXIT_NO_BACKEND
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(NoBackendError, match="^nvidia-smi not found"):
        SmiReader().open()
    with pytest.raises(NoBackendError, match="^nvidia-smi not found"):
        SmiReader().read()
    plain = tmp_path / "nvidia-smi"
    plain.write_text("#!/bin/sh\n")
    plain.chmod(plain.stat().st_mode & ~(stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH))
    if not os.access(plain, os.X_OK):
        with pytest.raises(NoBackendError, match="not executable"):
            SmiReader(str(plain)).open()


def test_reader_unstartable_binary(tmp_path):
    exe = tmp_path / "nvidia-smi"
    exe.write_bytes(b"\x7fELF garbage")
    exe.chmod(0o755)
    with pytest.raises(NoBackendError, match="could not be started"):
        SmiReader(str(exe)).open().read()
