"""Read GPUs by running ``nvidia-smi -q -x``: the fallback when NVML cannot be used.

The XML it prints is parsed by gpm.gpu.smi_xml into the same ``GpuSample``
objects ``NvmlReader`` fills, with the same units and the same meaning.

``SmiReader`` runs the binary in its own session with a timeout; on timeout the
whole process group is killed. Every failure becomes ``NoBackendError`` with a
one-line reason.
"""

from __future__ import annotations

import os
import selectors
import shutil
import signal
import subprocess
import time

from gpm.errors import NoBackendError
from gpm.gpu.sample import GpuSample, now_ms
from gpm.gpu.smi_xml import SOURCE, SmiParseError, parse_smi_xml

_MIB = 1024 * 1024


def _first_line(*texts: bytes) -> str:
    for raw in texts:
        for line in raw.decode("utf-8", errors="replace").splitlines():
            line = line.strip()
            if line:
                return line[:300]
    return ""


# A real `nvidia-smi -q -x` prints ~10 KiB per GPU and a few hundred bytes per process.
MAX_OUTPUT_BYTES = 32 * _MIB


class _TooMuchOutput(Exception):
    pass


class SmiReader:
    """Samples every GPU by running ``nvidia-smi -q -x``.

    Mirrors ``NvmlReader``: ``open()`` raises ``NoBackendError`` with a
    one-line reason; ``read()`` returns one ``GpuSample`` per GPU.
    """

    source = SOURCE

    def __init__(self, path: str = "nvidia-smi", timeout_secs: float = 5.0) -> None:
        self.path = path
        self.timeout_secs = float(timeout_secs)
        self.executable: str | None = None
        self.driver_version: str | None = None
        self.cuda_version: str | None = None
        self._gpu_count = 0

    def open(self) -> "SmiReader":
        if self.executable is not None:
            return self
        path = os.path.expanduser(self.path)
        if os.path.isabs(path):
            if not os.path.isfile(path):
                raise NoBackendError(f"nvidia-smi not found: {path} does not exist")
            if not os.access(path, os.X_OK):
                raise NoBackendError(f"nvidia-smi not found: {path} is not executable")
            self.executable = path
        else:
            found = shutil.which(path)
            if found is None:
                where = "" if path == "nvidia-smi" else f": no {path!r}"
                raise NoBackendError(f"nvidia-smi not found{where} on PATH")
            self.executable = found
        return self

    def close(self) -> None:
        self.executable = None

    @property
    def gpu_count(self) -> int:
        return self._gpu_count

    def read(self, *, processes: bool = True) -> list[GpuSample]:
        if self.executable is None:
            self.open()
        ts = now_ms()
        out = self._run()
        try:
            samples = parse_smi_xml(out, ts, processes=processes)
        except SmiParseError as err:
            raise NoBackendError(f"nvidia-smi output unusable: {err}") from None
        self._gpu_count = len(samples)
        if samples:
            self.driver_version = samples[0].driver_version
            self.cuda_version = samples[0].cuda_version
        return samples

    def _run(self) -> bytes:
        assert self.executable is not None
        argv = [self.executable, "-q", "-x"]
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,  # its own process group, killable as one
            )
        except OSError as err:
            raise NoBackendError(
                f"nvidia-smi could not be started ({self.executable}): "
                f"{err.strerror or err}"
            ) from None
        try:
            out, err = self._collect(proc)
        except (subprocess.TimeoutExpired, _TooMuchOutput) as why:
            self._kill(proc)
            if isinstance(why, _TooMuchOutput):
                raise NoBackendError(
                    f"nvidia-smi printed more than {MAX_OUTPUT_BYTES // _MIB} MiB (killed); "
                    f"run `{self.executable} -q -x` to see what it prints"
                ) from None
            raise NoBackendError(
                f"nvidia-smi timed out after {self.timeout_secs:g} s (killed)"
            ) from None
        except BaseException:  # Ctrl-C while waiting: leave nothing behind
            self._kill(proc)
            raise
        if proc.returncode != 0:
            line = _first_line(err, out)
            if proc.returncode < 0:
                how = f"killed by signal {-proc.returncode}"
            else:
                how = f"exit code {proc.returncode}"
            raise NoBackendError(
                f"nvidia-smi failed ({how})" + (f": {line}" if line else "")
            )
        return out

    def _collect(self, proc: subprocess.Popen) -> tuple[bytes, bytes]:
        """Its stdout and stderr by the deadline, reading at most ``MAX_OUTPUT_BYTES``.

        ``communicate()`` would buffer whatever a broken nvidia-smi prints
        until the timeout: gigabytes from one stuck in a loop (#12.3).
        Raises ``TimeoutExpired`` or ``_TooMuchOutput``; the caller kills.
        """
        deadline = time.monotonic() + self.timeout_secs
        out, err = bytearray(), bytearray()
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ, out)
            sel.register(proc.stderr, selectors.EVENT_READ, err)
            while sel.get_map():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise subprocess.TimeoutExpired(proc.args, self.timeout_secs)
                for key, _ in sel.select(left):
                    chunk = os.read(key.fd, 1 << 16)
                    if not chunk:
                        sel.unregister(key.fileobj)
                    elif key.data is out:
                        out += chunk
                        if len(out) > MAX_OUTPUT_BYTES:
                            raise _TooMuchOutput
                    elif len(err) < 1 << 16:  # its first lines say enough
                        err += chunk
        proc.wait(timeout=max(deadline - time.monotonic(), 0.01))
        for pipe in (proc.stdout, proc.stderr):
            pipe.close()
        return bytes(out), bytes(err)

    @staticmethod
    def _kill(proc: subprocess.Popen) -> None:
        """Kill the whole group and reap the child, without hanging forever.

        A process stuck in the kernel (a hung driver call) cannot die at once;
        we wait a little, then give up rather than hang the sampler.
        """
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            try:
                proc.kill()
            except ProcessLookupError:
                pass
        try:
            proc.communicate(timeout=2.0)
        except subprocess.TimeoutExpired:
            # Someone outside the group holds the pipes, or the child is stuck
            # in the kernel: close our ends and reap if it is already gone.
            for pipe in (proc.stdout, proc.stderr):
                if pipe is not None:
                    try:
                        pipe.close()
                    except OSError:
                        pass
            try:
                proc.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                pass


def smi_read_once(path: str = "nvidia-smi", timeout_secs: float = 5.0) -> list[GpuSample]:
    """Open, read every GPU once, close: the cron path."""
    reader = SmiReader(path, timeout_secs).open()
    try:
        return reader.read()
    finally:
        reader.close()
