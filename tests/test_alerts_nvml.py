"""What the alerts read from NVML (#15): uncorrected ECC errors and critical Xid
events, through the real pynvml on the fake NVML, in this process."""

from __future__ import annotations

from gpm.gpu.nvml import NvmlReader
from tests import test_fake_nvml
from tests.fakes.nvml import Scenario, make_gpu

# The fake loaded in this process (test_fake_nvml's fixtures).
lib_dir, fake, inproc = test_fake_nvml.lib_dir, test_fake_nvml.fake, test_fake_nvml.inproc


def test_xid_events_reach_their_gpu_once_and_ecc_counts_where_supported(inproc):
    inproc.set(Scenario(gpus=[make_gpu(0, ecc_uncorrected=0, xids=[48]),
                              make_gpu(1, xids=[79, 94])]))
    reader = NvmlReader(watch_xid=True).open()
    try:
        first = reader.read()
        assert [(s.ok, s.xid_errors, s.ecc_uncorrected_errors) for s in first] == \
            [(True, [48], 0), (True, [79, 94], None)]  # GPU 1 has no ECC: None, not 0
        assert [s.xid_errors for s in reader.read()] == [[], []]  # each event once
        inproc.set(Scenario(gpus=[make_gpu(0, ecc_uncorrected=2, xids=[13]), make_gpu(1)]))
        assert [(s.xid_errors, s.ecc_uncorrected_errors) for s in reader.read()] == [([13], 2), ([], None)]
    finally:
        reader.close()


def test_without_watching_or_without_event_support_there_are_no_xids_and_no_failure(inproc):
    inproc.set(Scenario(gpus=[make_gpu(0, xids=[79]),
                              make_gpu(1, xids=[79], fails={"nvmlDeviceRegisterEvents": "NOT_SUPPORTED"})]))
    for watch in (False, True):
        reader = NvmlReader(watch_xid=watch).open()
        try:
            samples = reader.read()
        finally:
            reader.close()
        assert [(s.ok, s.xid_errors) for s in samples] == [(True, [79] if watch else []), (True, [])]
