"""Files gpm writes for people never destroy what is at the path (#12; a trial as root
turned /dev/null into a regular file with `gpm report -o /dev/null`)."""

from __future__ import annotations

import os
import stat
import subprocess

import pytest

from tests.conftest import run_gpm

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="making a device node or mounting a tmpfs needs root")


def _null_device(path):
    os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))  # what /dev/null is


@needs_root
@pytest.mark.parametrize("argv", [
    ["report", "-o", "{target}"],
    ["export", "-t", "gpu_metrics", "-o", "{target}"],
    ["sample", "--textfile", "{target}"],
])
def test_a_device_stays_a_device(fake_nvml, tmp_path, argv):
    db = tmp_path / "gpm.db"
    run_gpm("--db", db, "sample", env=fake_nvml.env(), check=True)
    target = tmp_path / "null"
    _null_device(target)
    run_gpm("--db", db, *(a.format(target=target) for a in argv), env=fake_nvml.env(), check=True)
    assert stat.S_ISCHR(os.lstat(target).st_mode)
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.parametrize("argv", [
    ["report", "-o", "{link}"],
    ["export", "-t", "gpu_metrics", "-o", "{link}"],
])
def test_a_symlink_is_followed_and_kept(fake_nvml, tmp_path, argv):
    db = tmp_path / "gpm.db"
    run_gpm("--db", db, "sample", env=fake_nvml.env(), check=True)
    real = tmp_path / "real.txt"
    real.write_text("old\n")
    link = tmp_path / "link.txt"
    link.symlink_to(real.name)
    run_gpm("--db", db, *(a.format(link=link) for a in argv), env=fake_nvml.env(), check=True)
    assert link.is_symlink() and os.readlink(link) == real.name
    assert real.read_text() != "old\n" and len(real.read_text()) > 20


@needs_root
def test_export_on_a_full_disk_leaves_no_empty_file(fake_nvml, tmp_path):
    db = tmp_path / "gpm.db"
    run_gpm("--db", db, "sample", "-n", "3", "-i", "0.1", env=fake_nvml.env(), check=True)
    mnt = tmp_path / "full"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        fd = os.open(mnt / "filler", os.O_WRONLY | os.O_CREAT)
        try:  # every block taken
            while os.write(fd, b"\0" * 4096):
                pass
        except OSError:
            pass
        finally:
            os.close(fd)
        out = mnt / "rows.csv"
        big = run_gpm("--db", db, "export", "-t", "gpu_metrics", "-o", out, env=fake_nvml.env())
        assert big.returncode == 1 and "No space left on device" in big.stderr
        assert big.stderr.count("\n") == 1 and "Traceback" not in big.stderr
        assert sorted(p.name for p in mnt.iterdir()) == ["filler"]
    finally:
        subprocess.run(["umount", str(mnt)])
