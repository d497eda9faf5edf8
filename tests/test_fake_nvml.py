"""The fake NVML is honest: the real pynvml and gpustat read exactly its scenario.

pynvml runs in a subprocess (LD_LIBRARY_PATH) and in-process (preload by
soname); gpustat --json runs against the same fake and must agree.  Faults
come back as the pynvml exception classes a real driver would cause.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
import time
from dataclasses import replace

import pytest

from tests.fakes.nvml import (
    LIB_NAME,
    MiB,
    FakeGpu,
    FakeNvml,
    FakeProcess,
    Scenario,
    build_fake_nvml,
    fake_env,
    make_gpu,
    preload,
    reset,
)

pynvml = pytest.importorskip("pynvml")

# Reads everything gpm and gpustat read, through the public pynvml API; an
# error becomes "!NVMLError_Xxx". Run in-process (exec) or with python -c.
PROBE = r'''
import pynvml as N

def _call(fn, *args):
    try:
        value = fn(*args)
    except N.NVMLError as err:
        return "!" + type(err).__name__
    if isinstance(value, bytes):
        value = value.decode()
    return value

def _procs(fn, h):
    procs = _call(fn, h)
    if isinstance(procs, str):
        return procs
    return [[p.pid, p.usedGpuMemory] for p in procs]

def probe():
    out = {"init": _call(N.nvmlInit)}
    if out["init"] is not None:
        return out
    out["driver"] = _call(N.nvmlSystemGetDriverVersion)
    out["nvml_version"] = _call(N.nvmlSystemGetNVMLVersion)
    out["cuda"] = _call(N.nvmlSystemGetCudaDriverVersion)
    out["cuda_v2"] = _call(N.nvmlSystemGetCudaDriverVersion_v2)
    count = _call(N.nvmlDeviceGetCount)
    out["count"] = count
    out["gpus"] = []
    for i in range(count if isinstance(count, int) else 0):
        h = _call(N.nvmlDeviceGetHandleByIndex, i)
        if isinstance(h, str):
            out["gpus"].append({"handle": h})
            continue
        g = {"index": _call(N.nvmlDeviceGetIndex, h),
             "name": _call(N.nvmlDeviceGetName, h),
             "uuid": _call(N.nvmlDeviceGetUUID, h),
             "serial": _call(N.nvmlDeviceGetSerial, h)}
        pci = _call(N.nvmlDeviceGetPciInfo, h)
        g["pci"] = pci if isinstance(pci, str) else [pci.busId, pci.domain, pci.bus, pci.device, pci.pciDeviceId]
        mem = _call(N.nvmlDeviceGetMemoryInfo, h)
        g["memory"] = mem if isinstance(mem, str) else [mem.total, mem.used, mem.free]
        mem = _call(N.nvmlDeviceGetMemoryInfo, h, N.nvmlMemory_v2)
        g["memory_v2"] = mem if isinstance(mem, str) else [mem.total, mem.reserved, mem.used, mem.free]
        util = _call(N.nvmlDeviceGetUtilizationRates, h)
        g["util"] = util if isinstance(util, str) else [util.gpu, util.memory]
        g["temperature"] = _call(N.nvmlDeviceGetTemperature, h, N.NVML_TEMPERATURE_GPU)
        g["temperature_v"] = _call(N.nvmlDeviceGetTemperatureV, h, N.NVML_TEMPERATURE_GPU)
        g["power"] = _call(N.nvmlDeviceGetPowerUsage, h)
        g["power_limit"] = _call(N.nvmlDeviceGetEnforcedPowerLimit, h)
        g["pm_limit"] = _call(N.nvmlDeviceGetPowerManagementLimit, h)
        g["energy"] = _call(N.nvmlDeviceGetTotalEnergyConsumption, h)
        g["clocks"] = [_call(N.nvmlDeviceGetClockInfo, h, t) for t in range(4)]
        g["max_clocks"] = [_call(N.nvmlDeviceGetMaxClockInfo, h, t) for t in range(4)]
        g["fan"] = _call(N.nvmlDeviceGetFanSpeed, h)
        g["pstate"] = _call(N.nvmlDeviceGetPerformanceState, h)
        g["event_reasons"] = _call(N.nvmlDeviceGetCurrentClocksEventReasons, h)
        g["throttle_reasons"] = _call(N.nvmlDeviceGetCurrentClocksThrottleReasons, h)
        enc = _call(N.nvmlDeviceGetEncoderUtilization, h)
        g["encoder"] = enc if isinstance(enc, str) else enc[0]
        dec = _call(N.nvmlDeviceGetDecoderUtilization, h)
        g["decoder"] = dec if isinstance(dec, str) else dec[0]
        g["compute"] = _procs(N.nvmlDeviceGetComputeRunningProcesses, h)
        g["graphics"] = _procs(N.nvmlDeviceGetGraphicsRunningProcesses, h)
        samples = _call(N.nvmlDeviceGetProcessUtilization, h, 0)
        g["process_util"] = samples if isinstance(samples, str) else sorted([s.pid, s.smUtil] for s in samples)
        out["gpus"].append(g)
    out["shutdown"] = _call(N.nvmlShutdown)
    return out
'''

NOT_SUPPORTED = "!NVMLError_NotSupported"


def _value(v):
    return NOT_SUPPORTED if v is None else v


def expected(scenario: Scenario) -> dict:
    """What PROBE must see for ``scenario`` (energy counters must be fixed)."""
    out = {
        "init": None, "driver": scenario.driver_version,
        "nvml_version": scenario.nvml_version or f"{scenario.cuda_version // 1000}.{scenario.driver_version}",
        "cuda": scenario.cuda_version, "cuda_v2": scenario.cuda_version,
        "count": len(scenario.gpus), "gpus": [], "shutdown": None,
    }
    for i, g in enumerate(scenario.gpus):
        assert g.energy_fixed or g.energy_mj is None
        dom, bus, rest = g.pci_bus_id.split(":")
        taken = g.memory_used + g.memory_reserved
        pm = g.power_limit_mw if g.power_management_limit_mw == "same" else g.power_management_limit_mw

        def procs(kind):
            return [[p.pid, p.used_memory] for p in g.processes if p.type in (kind, "both")]

        out["gpus"].append({
            "index": i, "name": g.name, "uuid": g.uuid, "serial": _value(g.serial),
            "pci": [g.pci_bus_id, int(dom, 16), int(bus, 16), int(rest.split(".")[0], 16),
                    g.pci_device_id],
            "memory": [g.memory_total, taken, g.memory_total - taken],
            "memory_v2": [g.memory_total, g.memory_reserved, g.memory_used, g.memory_total - taken],
            "util": [g.util_gpu, g.util_memory],
            "temperature": g.temperature, "temperature_v": g.temperature,
            "power": _value(g.power_mw), "power_limit": _value(g.power_limit_mw),
            "pm_limit": _value(pm), "energy": _value(g.energy_mj),
            "clocks": [_value(v) for v in (g.clock_graphics, g.clock_sm, g.clock_mem, g.clock_video)],
            "max_clocks": [_value(v) for v in (g.max_clock_graphics, g.max_clock_sm,
                                                g.max_clock_mem, g.max_clock_video)],
            "fan": _value(g.fan), "pstate": _value(g.pstate),
            "event_reasons": _value(g.clocks_event_reasons),
            "throttle_reasons": _value(g.clocks_event_reasons),
            "encoder": _value(g.encoder_util), "decoder": _value(g.decoder_util),
            "compute": procs("compute"), "graphics": procs("graphics"),
            "process_util": sorted([p.pid, p.sm_util] for p in g.processes
                                   if p.sm_util is not None) or "!NVMLError_NotFound",
        })
    return out


def busy_scenario() -> Scenario:
    """Three distinct GPUs, fixed energy, processes of every kind."""
    gpus = [make_gpu(i, energy_fixed=True) for i in range(3)]
    gpus[0].processes = [
        FakeProcess(4242, used_memory=3 * 1024 * MiB, sm_util=61),
        FakeProcess(4343, used_memory=None, type="graphics"),
        FakeProcess(4444, used_memory=200 * MiB, type="both", sm_util=7),
    ]
    gpus[2].processes = [FakeProcess(5151, used_memory=70 * 1024 * MiB, sm_util=99)]
    gpus[1].memory_reserved = 321 * MiB
    return Scenario(gpus=gpus)


def run_probe(env: dict) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE + "\nimport json\nprint(json.dumps(probe()))"],
        env=env, capture_output=True, text=True, timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def probe_in_process() -> dict:
    namespace: dict = {}
    exec(PROBE, namespace)
    return namespace["probe"]()


@pytest.fixture(scope="session")
def lib_dir():
    return build_fake_nvml()


@pytest.fixture
def fake(lib_dir, tmp_path):
    return FakeNvml(lib_dir, tmp_path / "nvml.scenario")


@pytest.fixture
def inproc(lib_dir, fake, monkeypatch):
    """The fake loaded in this process, pynvml bound to it, state fresh."""
    try:
        lib = preload(lib_dir)
    except RuntimeError as err:  # a real NVML got here first (a GPU machine)
        pytest.skip(str(err))
    reset(lib)
    monkeypatch.setenv("FAKE_NVML_SCENARIO", str(fake.scenario_path))
    yield fake
    reset(lib)


def gpustat_json(env: dict) -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "gpustat", "--json"],
        env=env, capture_output=True, text=True, timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


# ---- the library itself ----


def test_build_is_cached_and_has_the_soname(lib_dir, tmp_path):
    lib = lib_dir / LIB_NAME
    assert lib.is_file()
    assert build_fake_nvml() == lib_dir  # second call: no compile
    elf = lib.read_bytes()
    assert b"libnvidia-ml.so.1\0" in elf
    out = build_fake_nvml(tmp_path / "other")
    assert (out / LIB_NAME).is_file() and out.name == lib_dir.name


def test_fake_env_prepends_library_path(lib_dir, tmp_path):
    env = fake_env(lib_dir, tmp_path / "s", base={"LD_LIBRARY_PATH": "/usr/lib/x", "A": "1"})
    assert env["LD_LIBRARY_PATH"] == f"{lib_dir}{os.pathsep}/usr/lib/x"
    assert env["FAKE_NVML_SCENARIO"] == str(tmp_path / "s")
    assert env["A"] == "1"


def test_many_gives_distinct_gpus():
    gpus = Scenario.many(8).gpus
    for attr in ("name", "uuid", "pci_bus_id", "temperature", "power_mw", "memory_used"):
        assert len({getattr(g, attr) for g in gpus}) == 8, attr


# ---- pynvml reads exactly the scenario ----


def test_pynvml_subprocess_reads_the_scenario(fake):
    scenario = fake.set(busy_scenario())
    assert run_probe(fake.env()) == expected(scenario)


def test_pynvml_in_process_reads_the_scenario(inproc):
    scenario = inproc.set(busy_scenario())
    assert probe_in_process() == expected(scenario)
    # pynvml found the fake by soname
    assert hasattr(pynvml.nvmlLib, "fakeNvmlMarker")


def test_defaults_are_a_realistic_rtx_4090(inproc):
    inproc.set(Scenario(gpus=[FakeGpu(energy_fixed=True)]))
    got = probe_in_process()
    assert got["driver"] == "550.54.14" and got["cuda"] == 12040
    gpu = got["gpus"][0]
    assert gpu["name"] == "NVIDIA GeForce RTX 4090"
    assert gpu["memory"][0] == 24564 * MiB
    assert gpu["power_limit"] == 450000
    assert gpu["serial"] == NOT_SUPPORTED  # GeForce boards have none


def test_zero_gpus(fake, inproc):
    fake.set(Scenario(gpus=[]))
    got = probe_in_process()
    assert got["count"] == 0 and got["gpus"] == []
    assert gpustat_json(fake.env())["gpus"] == []


def test_rewriting_the_file_changes_the_world_without_reinit(inproc):
    scenario = inproc.set(Scenario.many(2))
    pynvml.nvmlInit()
    try:
        h = pynvml.nvmlDeviceGetHandleByIndex(1)
        # many quick rewrites, same file size each time: every one is seen
        for temp in range(40, 90):
            scenario.gpus[1].temperature = temp
            inproc.set(scenario)
            assert pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU) == temp
        inproc.set(Scenario.many(5))
        assert pynvml.nvmlDeviceGetCount() == 5
    finally:
        pynvml.nvmlShutdown()


def test_energy_fixed_or_growing_at_the_power_draw(inproc):
    gpu = FakeGpu(power_mw=1_000_000, energy_mj=5_000_000, energy_fixed=False)
    fixed = replace(gpu, uuid="GPU-fixed", energy_fixed=True)
    scenario = inproc.set(Scenario(gpus=[gpu, fixed]))
    pynvml.nvmlInit()
    try:
        h0, h1 = (pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(2))
        e0 = pynvml.nvmlDeviceGetTotalEnergyConsumption(h0)
        time.sleep(0.05)
        e1 = pynvml.nvmlDeviceGetTotalEnergyConsumption(h0)
        # 1 kW for >= 50 ms is >= 50 J = 50000 mJ
        assert 5_000_000 <= e0 < e1 and e1 - e0 >= 50_000
        assert e1 - e0 < 2_000_000  # not more than 2 s worth
        assert pynvml.nvmlDeviceGetTotalEnergyConsumption(h1) == 5_000_000
        # a rewrite (power drop) continues the counter, it never runs back
        scenario.gpus[0].power_mw = 100_000
        inproc.set(scenario)
        assert pynvml.nvmlDeviceGetTotalEnergyConsumption(h0) >= e1
    finally:
        pynvml.nvmlShutdown()


def test_memory_v1_counts_reserved_as_used_v2_apart(inproc):
    inproc.set(Scenario(gpus=[FakeGpu(memory_used=1000 * MiB, memory_reserved=300 * MiB)]))
    pynvml.nvmlInit()
    try:
        h = pynvml.nvmlDeviceGetHandleByIndex(0)
        v1 = pynvml.nvmlDeviceGetMemoryInfo(h)
        v2 = pynvml.nvmlDeviceGetMemoryInfo(h, version=pynvml.nvmlMemory_v2)
        assert v1.used == 1300 * MiB and v1.free == v2.free
        assert (v2.used, v2.reserved) == (1000 * MiB, 300 * MiB)
        assert v2.total == v2.reserved + v2.used + v2.free
    finally:
        pynvml.nvmlShutdown()


# ---- gpustat agrees ----


@pytest.fixture
def live_pids():
    """Pids psutil can see (gpustat drops processes that do not exist)."""
    children = [subprocess.Popen(["sleep", "60"]) for _ in range(2)]
    yield [os.getpid()] + [c.pid for c in children]
    for child in children:
        child.kill()
        child.wait()


def test_gpustat_reports_the_same_values(fake, live_pids):
    a, b, c = live_pids
    scenario = Scenario.many(3)
    scenario.gpus[0].processes = [
        FakeProcess(a, used_memory=1536 * MiB),
        FakeProcess(b, used_memory=None, type="graphics"),
    ]
    scenario.gpus[2].processes = [FakeProcess(c, used_memory=40 * 1024 * MiB, type="both")]
    scenario.gpus[1].memory_reserved = 500 * MiB  # gpustat reads v2: excluded
    fake.set(scenario)

    got = gpustat_json(fake.env())
    assert got["driver_version"] == "550.54.14"
    assert len(got["gpus"]) == 3
    for i, (g, s) in enumerate(zip(got["gpus"], scenario.gpus)):
        assert g["index"] == i
        assert g["name"] == s.name and g["uuid"] == s.uuid
        assert g["temperature.gpu"] == s.temperature
        assert g["fan.speed"] == s.fan
        assert g["utilization.gpu"] == s.util_gpu
        assert g["utilization.enc"] == s.encoder_util and g["utilization.dec"] == s.decoder_util
        assert g["power.draw"] == s.power_mw // 1000
        assert g["enforced.power.limit"] == s.power_limit_mw // 1000
        assert g["memory.used"] == s.memory_used // MiB
        assert g["memory.total"] == s.memory_total // MiB
        assert [(p["pid"], p["gpu_memory_usage"]) for p in g["processes"]] == [
            (p.pid, None if p.used_memory is None else p.used_memory // MiB)
            for p in sorted(s.processes, key=lambda p: p.type == "graphics")
        ]

    # and pynvml through the same fake agrees with gpustat
    probe = run_probe(fake.env())
    for g, p in zip(got["gpus"], probe["gpus"]):
        assert (g["name"], g["uuid"], g["temperature.gpu"]) == (p["name"], p["uuid"], p["temperature"])
        assert g["memory.used"] == p["memory_v2"][2] // MiB


def test_gpustat_shows_lost_and_unknown_gpus(fake):
    scenario = Scenario.many(3)
    scenario.gpus[1].handle_error = "GPU_IS_LOST"
    scenario.gpus[2].lost_after = 2  # gpustat's name and uuid succeed, then lost
    fake.set(scenario)
    got = gpustat_json(fake.env())
    assert got["gpus"][0]["uuid"] == scenario.gpus[0].uuid
    assert got["gpus"][1]["name"] == "((GPU is lost))"
    assert got["gpus"][2]["name"] == "((GPU is lost))"

    scenario.gpus[1].handle_error = "UNKNOWN"
    fake.set(scenario)
    assert gpustat_json(fake.env())["gpus"][1]["name"] == "((Unknown Error))"


# ---- faults become the right pynvml exceptions ----


@pytest.mark.parametrize("error, exc", [
    ("DRIVER_NOT_LOADED", "NVMLError_DriverNotLoaded"),
    ("LIB_RM_VERSION_MISMATCH", "NVMLError_LibRmVersionMismatch"),
    ("NO_PERMISSION", "NVMLError_NoPermission"),
    ("INSUFFICIENT_RESOURCES", "NVMLError_InsufficientResources"),
    ("UNKNOWN", "NVMLError_Unknown"),
])
def test_init_error(inproc, error, exc):
    inproc.set(Scenario(init_error=error))
    with pytest.raises(getattr(pynvml, exc)) as info:
        pynvml.nvmlInit()
    assert info.value.value == getattr(pynvml, f"NVML_ERROR_{error}")
    # not initialised: calls say so
    with pytest.raises(pynvml.NVMLError_Uninitialized):
        pynvml.nvmlDeviceGetCount()


def test_init_error_in_a_subprocess(fake):
    fake.set(Scenario(init_error="LIB_RM_VERSION_MISMATCH"))
    assert run_probe(fake.env()) == {"init": "!NVMLError_LibRmVersionMismatch"}


def test_no_scenario_file_means_driver_not_loaded(lib_dir, tmp_path):
    env = fake_env(lib_dir, tmp_path / "missing")
    assert run_probe(env) == {"init": "!NVMLError_DriverNotLoaded"}


def test_function_faults(inproc):
    gpu = FakeGpu(fails={
        "nvmlDeviceGetFanSpeed": "NOT_SUPPORTED",
        "nvmlDeviceGetTemperature": "UNKNOWN",
        "nvmlDeviceGetPowerUsage": "NO_PERMISSION",
        "nvmlDeviceGetComputeRunningProcesses": "NOT_SUPPORTED",  # every version
        "nvmlDeviceGetGraphicsRunningProcesses_v3": "NOT_FOUND",  # only _v3
        "nvmlDeviceGetTotalEnergyConsumption": "GPU_IS_LOST",
    }, processes=[FakeProcess(77, type="both")])
    inproc.set(Scenario(gpus=[gpu, FakeGpu(uuid="GPU-other", fan=None)],
                        fails={"nvmlSystemGetDriverVersion": "NOT_SUPPORTED"}))
    pynvml.nvmlInit()
    try:
        h = pynvml.nvmlDeviceGetHandleByIndex(0)
        N = pynvml
        with pytest.raises(N.NVMLError_NotSupported):
            N.nvmlDeviceGetFanSpeed(h)
        with pytest.raises(N.NVMLError_Unknown):
            N.nvmlDeviceGetTemperature(h, N.NVML_TEMPERATURE_GPU)
        with pytest.raises(N.NVMLError_NoPermission):
            N.nvmlDeviceGetPowerUsage(h)
        with pytest.raises(N.NVMLError_GpuIsLost):
            N.nvmlDeviceGetTotalEnergyConsumption(h)
        for fn in (N.nvmlDeviceGetComputeRunningProcesses, N.nvmlDeviceGetComputeRunningProcesses_v2):
            with pytest.raises(N.NVMLError_NotSupported):
                fn(h)
        with pytest.raises(N.NVMLError_NotFound):
            N.nvmlDeviceGetGraphicsRunningProcesses(h)
        assert [p.pid for p in N.nvmlDeviceGetGraphicsRunningProcesses_v2(h)] == [77]
        with pytest.raises(N.NVMLError_NotSupported):
            N.nvmlSystemGetDriverVersion()
        # the other GPU is untouched; its missing fan is "not supported"
        h1 = N.nvmlDeviceGetHandleByIndex(1)
        assert N.nvmlDeviceGetPowerUsage(h1) == 123456
        with pytest.raises(N.NVMLError_NotSupported):
            N.nvmlDeviceGetFanSpeed(h1)
        # an unimplemented function does not exist, as with an older driver
        with pytest.raises(N.NVMLError_FunctionNotFound):
            N.nvmlDeviceGetBrand(h)
    finally:
        pynvml.nvmlShutdown()


def test_lost_after_n_calls(inproc):
    inproc.set(Scenario(gpus=[FakeGpu(lost_after=3), FakeGpu(uuid="GPU-fine")]))
    N = pynvml
    N.nvmlInit()
    try:
        h = N.nvmlDeviceGetHandleByIndex(0)
        assert N.nvmlDeviceGetName(h) == "NVIDIA GeForce RTX 4090"
        N.nvmlDeviceGetUUID(h)
        N.nvmlDeviceGetPowerUsage(h)
        for _ in range(2):
            with pytest.raises(N.NVMLError_GpuIsLost):
                N.nvmlDeviceGetPowerUsage(h)
        with pytest.raises(N.NVMLError_GpuIsLost):
            N.nvmlDeviceGetHandleByIndex(0)
        assert N.nvmlDeviceGetName(N.nvmlDeviceGetHandleByIndex(1))
    finally:
        N.nvmlShutdown()


def test_handle_lookup_failure(inproc):
    gpus = [FakeGpu(handle_error="GPU_IS_LOST"), FakeGpu(uuid="GPU-b", handle_error="UNKNOWN"),
            FakeGpu(uuid="GPU-c")]
    inproc.set(Scenario(gpus=gpus))
    N = pynvml
    N.nvmlInit()
    try:
        assert N.nvmlDeviceGetCount() == 3
        with pytest.raises(N.NVMLError_GpuIsLost):
            N.nvmlDeviceGetHandleByIndex(0)
        with pytest.raises(N.NVMLError_Unknown):
            N.nvmlDeviceGetHandleByIndex(1)
        with pytest.raises(N.NVMLError_InvalidArgument):
            N.nvmlDeviceGetHandleByIndex(3)
        assert N.nvmlDeviceGetUUID(N.nvmlDeviceGetHandleByIndex(2)) == "GPU-c"
        assert N.nvmlDeviceGetUUID(N.nvmlDeviceGetHandleByUUID("GPU-c")) == "GPU-c"
    finally:
        N.nvmlShutdown()


def test_shutdown_is_refcounted(inproc):
    inproc.set(Scenario())
    N = pynvml
    N.nvmlInit()
    N.nvmlInit()
    N.nvmlShutdown()
    assert N.nvmlDeviceGetCount() == 1
    N.nvmlShutdown()
    with pytest.raises(N.NVMLError_Uninitialized):
        N.nvmlDeviceGetCount()
    with pytest.raises(N.NVMLError_Uninitialized):
        N.nvmlShutdown()


# ---- the two-call size protocol, at the C level ----


class ProcessInfo(ctypes.Structure):
    _fields_ = [("pid", ctypes.c_uint), ("usedGpuMemory", ctypes.c_ulonglong),
                ("gpuInstanceId", ctypes.c_uint), ("computeInstanceId", ctypes.c_uint)]


def test_process_list_size_protocol(inproc):
    procs = [FakeProcess(100 + i) for i in range(3)]
    inproc.set(Scenario(gpus=[FakeGpu(processes=procs), FakeGpu(uuid="GPU-idle")]))
    pynvml.nvmlInit()
    try:
        lib = ctypes.CDLL(LIB_NAME)
        fn = lib.nvmlDeviceGetComputeRunningProcesses_v3
        h = pynvml.nvmlDeviceGetHandleByIndex(0)
        count = ctypes.c_uint(0)
        assert fn(h, ctypes.byref(count), None) == pynvml.NVML_ERROR_INSUFFICIENT_SIZE
        assert count.value == 3
        buf = (ProcessInfo * 3)()
        count.value = 2
        assert fn(h, ctypes.byref(count), buf) == pynvml.NVML_ERROR_INSUFFICIENT_SIZE
        assert count.value == 3
        assert fn(h, ctypes.byref(count), buf) == pynvml.NVML_SUCCESS
        assert [p.pid for p in buf] == [100, 101, 102]
        assert buf[0].gpuInstanceId == 0xFFFFFFFF  # not MIG
        idle = pynvml.nvmlDeviceGetHandleByIndex(1)
        count.value = 0
        assert fn(idle, ctypes.byref(count), None) == pynvml.NVML_SUCCESS
        assert count.value == 0
    finally:
        pynvml.nvmlShutdown()


def test_process_utilization_and_names(inproc):
    procs = [FakeProcess(os.getpid(), sm_util=55), FakeProcess(99999, name="python3 train.py")]
    inproc.set(Scenario(gpus=[FakeGpu(processes=procs)]))
    N = pynvml
    N.nvmlInit()
    try:
        h = N.nvmlDeviceGetHandleByIndex(0)
        samples = N.nvmlDeviceGetProcessUtilization(h, 0)
        assert [(s.pid, s.smUtil) for s in samples] == [(os.getpid(), 55)]
        assert abs(samples[0].timeStamp / 1e6 - time.time()) < 5
        with pytest.raises(N.NVMLError_NotFound):  # nothing newer than that
            N.nvmlDeviceGetProcessUtilization(h, samples[0].timeStamp + 10**9)
        assert N.nvmlSystemGetProcessName(99999) == "python3 train.py"
        with open("/proc/self/cmdline", "rb") as f:
            argv0 = f.read().split(b"\0")[0].decode()
        assert N.nvmlSystemGetProcessName(os.getpid()) == argv0  # from /proc
    finally:
        N.nvmlShutdown()

