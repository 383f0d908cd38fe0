"""Run a Python script in a network namespace of its own: only a loopback interface, up.

``python tests/private_network.py SCRIPT ARGS...`` must itself be started under ``unshare -rn``
(see :func:`command`); it brings the loopback interface up (ioctl, no ``ip`` binary needed) and
runs SCRIPT as ``__main__``. Whatever the script starts (a Ray instance) cannot reach any address
but the loopback: a regression that makes it probe the network fails instead of sending traffic.
"""

from __future__ import annotations

import fcntl
import runpy
import shutil
import socket
import struct
import subprocess
import sys

_SIOCGIFFLAGS, _SIOCSIFFLAGS, _IFF_UP = 0x8913, 0x8914, 0x1


def loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(sock.fileno(), _SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock.fileno(), _SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | _IFF_UP))


def command(script: str, *args: str) -> list[str]:
    """The argv that runs ``script`` in a private network namespace (unshare -rn)."""
    return ["unshare", "-rn", sys.executable, __file__, script, *args]


def available() -> bool:
    """Whether this machine lets an unprivileged user create a network namespace."""
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rn", "true"], capture_output=True, timeout=30)
    return probe.returncode == 0


if __name__ == "__main__":
    loopback_up()
    script, *rest = sys.argv[1:]
    sys.argv = [script, *rest]
    runpy.run_path(script, run_name="__main__")
