"""Reading the doctor's inputs from the host: cmdline, kernel log, CPU vendor, ``ip``."""

from __future__ import annotations

import errno
import os
import subprocess

from sriov.hostd.doctor._core import IpProbe


def read_cmdline(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return None


def read_kernel_log(path: str | None) -> list[str] | None:
    """A text kernel log (``dmesg`` output) or, when no path is given, /dev/kmsg."""
    if path:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                return f.read().splitlines()
        except OSError:
            return None
    try:
        fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    lines: list[str] = []
    try:
        while True:
            try:
                rec = os.read(fd, 8192)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.EPIPE:  # overwritten record: keep reading
                    continue
                break
            if not rec:
                break
            _head, _, msg = rec.decode("utf-8", "replace").partition(";")
            lines.append(msg.split("\n", 1)[0])
    finally:
        os.close(fd)
    return lines


def read_cpu_vendor(path: str = "/proc/cpuinfo") -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    v = line.split(":", 1)[1].strip()
                    return "intel" if "Intel" in v else "amd" if "AMD" in v else None
    except OSError:
        return None
    return None


def ip_probe(netns: str | None) -> IpProbe:
    """Run ``ip link show <ifname>`` (in ``netns``) the way an operator would."""

    def probe(ifname: str) -> tuple[int, str] | None:
        cmd = ["ip", *(["-n", netns] if netns else []), "link", "show", ifname]
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return res.returncode, res.stderr

    return probe
