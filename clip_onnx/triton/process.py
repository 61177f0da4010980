"""A server started by clip-onnx: one child in its own process group, its log forwarded, stopped with its children.

``tritonserver`` (with the Python-backend stubs it starts) and the OpenAI API
process of `clip-onnx serve` both run this way: a signal to the group reaches
every child, and a child left behind by a killed parent is told to stop too
(PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import collections
import logging
import os
import signal
import subprocess
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

log = logging.getLogger(__name__)


class ManagedProcess:
    """One child process group: started, its output forwarded line by line (less ``quiet`` ones), stopped."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], cwd: Path, quiet: Sequence[str] = ()):
        self.name, self.command, self.env, self.cwd, self.quiet = name, command, env, cwd, tuple(quiet)
        self.process: subprocess.Popen | None = None
        self.tail: collections.deque[str] = collections.deque(maxlen=60)
        self._pump: threading.Thread | None = None

    def start(self, sink: Callable[[str], None] = lambda line: None) -> None:
        """Start the process; every line it writes, less those holding a ``quiet`` pattern, goes to ``sink``."""
        self.process = subprocess.Popen(
            self.command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.env,
            cwd=self.cwd,
            start_new_session=True,  # its own process group: what it starts is stopped with it
            preexec_fn=_stop_with_parent,
        )
        self._pump = threading.Thread(target=self._forward, args=(sink,), name=f"{self.name}-log", daemon=True)
        self._pump.start()
        log.info("started %s (pid %d): %s", self.name, self.process.pid, " ".join(self.command))

    def _forward(self, sink: Callable[[str], None]) -> None:
        assert self.process is not None and self.process.stdout is not None
        for raw in self.process.stdout:
            line = raw.decode("utf-8", errors="replace").rstrip()
            if line and not any(pattern in line for pattern in self.quiet):
                self.tail.append(line)
                sink(line)

    def exited(self) -> str | None:
        """None while running; else how it ended, with the last lines it wrote."""
        if self.process is None or self.process.poll() is None:
            return None
        self._join_log()
        return f"{self.name} exited with {self.process.returncode}:\n" + "\n".join(self.tail)

    def processes(self) -> list[int]:
        """The process's pid and those of its process group."""
        if self.process is None:
            return []
        return [self.process.pid, *_group_members(self.process.pid, exclude=self.process.pid)]

    def stop(self, timeout: float = 20) -> int | None:
        """Stop it gracefully (SIGTERM), then kill what is left of its process group; its exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop within %.0fs; killing its process group", self.name, timeout)
        _kill_group(self.process.pid)
        self.process.wait(timeout=30)
        self._join_log()
        return self.process.returncode

    def _join_log(self) -> None:
        if self._pump is not None:
            self._pump.join(timeout=5)


def _stop_with_parent() -> None:
    # Runs in the child before exec: SIGTERM when the process that started us dies, even by SIGKILL.
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the child outlives a killed parent, as any child would


def _group_members(pgid: int, exclude: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == exclude:
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        if int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # every member already exited
