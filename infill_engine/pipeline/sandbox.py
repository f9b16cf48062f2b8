"""Run untrusted, model-written Python in a separate, resource-limited process.

The evaluator never imports or executes model output itself.  Each program runs in a fresh
`python -I` (isolated: no user site-packages, no PYTHON* variables, no cwd on sys.path) in its
own temporary working directory, with stdin closed and stdout/stderr going to size-limited
files.  The child is a small supervisor (sandbox_child.py) that forks the program; see there for
the mechanics.  What holds, and what it depends on (`protections()` says which are active here;
`diffill eval` prints it):

* **uid** — when the evaluator runs as root the program runs as `nobody` (65534), so it cannot
  write to the repository, a home directory or anything else only root may write.  The
  interpreter must be one `nobody` can run: the evaluator's own if it can (a venv under a 0700
  /root cannot), else the system python3 — candidates need only the standard library.
  Not root: the program keeps the evaluator's uid (and can write where the evaluator can).
* **process tree** — the supervisor is a child subreaper (PR_SET_CHILD_SUBREAPER): orphans,
  `setsid` + double-fork grandchildren included, are re-parented to it, and when the program ends
  or times out it SIGKILLs every descendant until none is left.  RLIMIT_NPROC caps a fork bomb
  (not enforced on root, so it needs the uid drop).
* **shared scratch space** — as root, a mount namespace gives the program its own empty tmpfs
  on /tmp, /var/tmp and /dev/shm (the world-writable places `nobody` could otherwise leave
  files in), discarded with it.
* **network** — a fresh network namespace (unshare(CLONE_NEWNET) as root, or with a user
  namespace where unprivileged ones are allowed): only a down loopback, no route anywhere.
* **resources** — RLIMIT_AS (memory_mb per process: a memory bomb gets MemoryError instead of
  swapping the machine), RLIMIT_CPU = timeout + 1 s, RLIMIT_FSIZE (no disk filling, bounded
  output), RLIMIT_CORE = 0, and a wall clock after which the tree is killed.  Reaching the
  memory cap is reported as "memory limit" even when the program swallowed the MemoryError and
  ran on into the timeout (the supervisor watches each descendant's peak address space).

The limits are set inside the child before it reads the program, not by `preexec_fn`: the
evaluator calls this from worker threads while torch has threads of its own, and Python
documents `preexec_fn` as unsafe with threads.

"Passed" means the program ran to its end: the program process reports completion on a private
pipe only after the whole program (including `check(...)`) returned, so a completion that calls
`exit()`, `sys.exit(0)` or `os._exit(0)` does not count as a pass.

Not covered: the program can still read world-readable files, and it shares the kernel; if
the supervisor itself is SIGKILLed (it ignored SIGTERM for STOP_GRACE_S) descendants that left
the process group survive.  For code you believe is hostile use a VM.
"""

from __future__ import annotations

import functools
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

OUTPUT_LIMIT_BYTES = 4 * 1024 * 1024  # RLIMIT_FSIZE: caps stdout/stderr files and any file the program writes
KEEP_OUTPUT_CHARS = 2000  # tail of stdout/stderr kept in an ExecOutcome
NOBODY = 65534
MAX_PROCS = 64  # processes a program may add to its uid's count (RLIMIT_NPROC)
STOP_GRACE_S = 5.0  # after SIGTERM at the timeout, how long the supervisor gets to kill the tree
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
SCRATCH_DIRS = ("/tmp", "/var/tmp", "/dev/shm")  # world-writable: replaced by private tmpfs
# Peak address space at or above this share of the cap counts as having hit it: the program asked
# for more than the last step it was granted (growth in 64 MB steps under a 1024 MB cap peaks ≥ 960).
MEMORY_HIT_SHARE = 0.9

_CHILD_SOURCE = (Path(__file__).with_name("sandbox_child.py")).read_text(encoding="utf-8")


@dataclass(frozen=True)
class ExecOutcome:
    passed: bool
    reason: str  # "passed", "timeout", "memory limit", "process limit", "AssertionError: ...", ...
    stdout: str = ""  # tails, truncated to KEEP_OUTPUT_CHARS
    stderr: str = ""
    wall_ms: float = 0.0
    stragglers_killed: int = 0  # descendants still alive when the program ended or timed out


@dataclass(frozen=True)
class Protections:
    """What the sandbox can enforce on this machine, found once by trying each in a child."""

    interpreter: str  # runs the supervisor and the program
    uid: int  # the program's uid; -1: keeps the evaluator's
    unshare: int  # clone flags for a fresh network namespace; 0: none available
    unshare_error: str = ""
    private_tmp: tuple[str, ...] = ()  # directories given a private tmpfs; (): none
    private_tmp_error: str = ""

    def describe(self) -> list[str]:
        lines = []
        if self.uid >= 0:
            lines.append(f"candidates run as uid {self.uid} (nobody) with {self.interpreter}")
        elif os.geteuid() == 0:
            lines.append("NOT ACTIVE: uid drop (no interpreter that nobody can run) - candidates run as root")
        else:
            lines.append(f"candidates run as the evaluator's uid {os.geteuid()} (not root: nothing to drop)")
        if self.unshare:
            how = "with a user namespace" if self.unshare & CLONE_NEWUSER else "as root"
            lines.append(f"no network: a fresh network namespace ({how})")
        else:
            lines.append(f"NOT ACTIVE: network isolation ({self.unshare_error or 'unshare unavailable'})")
        if self.private_tmp:
            lines.append(f"private, empty {', '.join(self.private_tmp)} (mount namespace, tmpfs)")
        else:
            lines.append(f"NOT ACTIVE: private /tmp ({self.private_tmp_error or 'needs root'})")
        lines.append("process tree: child subreaper, every descendant killed at the end")
        fork_cap = "RLIMIT_NPROC" if (self.uid >= 0 or os.geteuid() != 0) else "NOT ACTIVE for root: RLIMIT_NPROC"
        lines.append(f"limits: RLIMIT_AS (memory), RLIMIT_CPU, RLIMIT_FSIZE, {fork_cap} (+{MAX_PROCS} processes)")
        return lines


def build_program(prompt: str, completion: str, suffix: str, test: str, entry_point: str) -> str:
    """The HumanEval-Infilling program: the filled file, then its tests, then the call that runs them."""
    return prompt + completion + suffix + "\n" + test + f"\ncheck({entry_point})\n"


def _tail(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 4 * KEEP_OUTPUT_CHARS))
            data = f.read()
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace")
    return text[-KEEP_OUTPUT_CHARS:]


def _child_env(workdir: str) -> dict[str, str]:
    # A clean environment: nothing of the evaluator's (tokens, proxies, CUDA settings) leaks in.
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": workdir,
        "TMPDIR": workdir,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
    }


def _probe(interpreter: str, code: str) -> tuple[bool, str]:
    try:
        r = subprocess.run(
            [interpreter, "-I", "-c", code], cwd="/", stdin=subprocess.DEVNULL,
            capture_output=True, text=True, timeout=60, env=_child_env("/tmp"),
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, str(e)
    return r.returncode == 0, (r.stderr.strip().splitlines() or [""])[-1]


def _interpreters() -> list[str]:
    found = [sys.executable, "/usr/bin/python3", "/usr/local/bin/python3", shutil.which("python3") or ""]
    return list(dict.fromkeys(p for p in found if p and os.path.exists(p)))


@functools.lru_cache(maxsize=1)
def protections() -> Protections:
    """Probe (once per process) which protections hold here; the evaluator runs with all of them."""
    interpreter, uid = sys.executable, -1
    if os.geteuid() == 0:
        drop = f"import os; os.setgroups([]); os.setgid({NOBODY}); os.setuid({NOBODY}); "
        for candidate in _interpreters():
            # the program process imports after the drop: the stdlib must be readable by nobody
            if _probe(candidate, drop + "import math, json, decimal, hashlib, re, collections")[0]:
                interpreter, uid = candidate, NOBODY
                break
    flags = [CLONE_NEWNET] if os.geteuid() == 0 else [CLONE_NEWUSER | CLONE_NEWNET]
    unshare, error = 0, ""
    for flag in flags:
        ok, error = _probe(
            interpreter,
            "import ctypes, os, socket; libc = ctypes.CDLL(None, use_errno=True)\n"
            f"if libc.unshare({flag}) != 0: raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))\n"
            "s = socket.socket(); s.settimeout(2)\n"
            "assert s.connect_ex(('127.0.0.1', 9)) != 0",
        )  # fmt: skip
        if ok:
            unshare, error = flag, ""
            break
    scratch = tuple(d for d in SCRATCH_DIRS if os.path.isdir(d))
    private_tmp, tmp_error = (), "needs root"
    if os.geteuid() == 0 and scratch:
        ok, tmp_error = _probe(
            interpreter,
            "import ctypes, os; libc = ctypes.CDLL(None, use_errno=True)\n"
            "def check(r):\n    if r != 0: raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))\n"
            f"check(libc.unshare({0x00020000}))\n"
            f"check(libc.mount(b'none', b'/', None, {0x4000 | 0x40000}, None))\n"
            f"for d in {scratch!r}:\n    check(libc.mount(b'tmpfs', d.encode(), b'tmpfs', 6, b'size=1m'))\n"
            f"    assert os.listdir(d) == []",
        )  # fmt: skip
        private_tmp = scratch if ok else ()
    return Protections(interpreter, uid, unshare, error, private_tmp, "" if private_tmp else tmp_error)


# kept for callers of the old name: the uid candidates run as (-1: the evaluator's)
def _sandbox_uid() -> int:
    return protections().uid


def _classify(returncode: int, status: str, stderr: str, memory_hit: bool, timed_out: bool,
              process_hit: bool = False) -> str:
    if status == "passed":
        return "passed" if returncode == 0 else f"crashed after its tests (exit code {returncode})"
    if status.startswith("sandbox: setup failed"):
        return status
    # Python ignores SIGXFSZ, so RLIMIT_FSIZE shows up as an OSError (EFBIG) instead of a signal.
    if "[Errno 27]" in status or returncode == -signal.SIGXFSZ:
        return "output/file size limit"
    if status.startswith("MemoryError") or "MemoryError" in stderr or "Cannot allocate memory" in stderr:
        return "memory limit"
    if memory_hit:  # reached the cap and swallowed the MemoryError (or died of it silently)
        return "memory limit"
    if (status.startswith("BlockingIOError") and "Errno 11" in status) or process_hit:  # fork() beyond RLIMIT_NPROC
        return "process limit"
    if timed_out:
        return "timeout"
    if returncode < 0:
        sig = -returncode
        if sig == signal.SIGXCPU:
            return "cpu time limit"
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
        return f"killed by {name}"
    if status:
        return status
    if returncode == 0:
        return "exit: the program exited before its tests finished"
    return f"crashed (exit code {returncode})"


def run_program(source: str, timeout_s: float = 5.0, memory_mb: int = 1024) -> ExecOutcome:
    """Execute `source` in a sandboxed subprocess; passed iff it runs to the end without raising."""
    if timeout_s <= 0:
        raise ValueError("timeout_s must be positive")
    if memory_mb < 64:
        raise ValueError("memory_mb below 64 leaves too little for the Python interpreter itself")
    prot = protections()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="diffill-exec-", ignore_cleanup_errors=True) as workdir:
        work = Path(workdir)
        (work / "program.py").write_text(source, encoding="utf-8")
        if prot.uid >= 0:
            for p in (work, work / "program.py"):
                os.chown(p, prot.uid, prot.uid)
        returncode, lines, timed_out = _run_supervised(work, timeout_s, memory_mb, prot)
        stdout, stderr = _tail(work / ".stdout"), _tail(work / ".stderr")
    wall_ms = (time.perf_counter() - start) * 1000
    status = next((ln for ln in lines if not ln.startswith("sandbox: exit=")), "")
    summary = dict(kv.split("=", 1) for ln in lines if ln.startswith("sandbox: exit=") for kv in ln[9:].split())
    if "exit" in summary:
        returncode = int(summary["exit"])  # the program's own status, not the supervisor's
    memory_hit = int(summary.get("peak", 0)) >= MEMORY_HIT_SHARE * memory_mb * 1024 * 1024
    # Half the cap alive at once: it forked until refused (other sandboxes of the same uid share the cap).
    process_hit = int(summary.get("procs", 0)) >= MAX_PROCS // 2
    reason = _classify(returncode, status, stderr, memory_hit, timed_out, process_hit)
    return ExecOutcome(reason == "passed", reason, stdout, stderr, wall_ms, int(summary.get("killed", 0)))


def _run_supervised(work: Path, timeout_s: float, memory_mb: int, prot: Protections) -> tuple[int, list[str], bool]:
    """Run work/program.py under the supervisor, output to work/.stdout and .stderr.
    Returns (the supervisor's exit code, the status lines, whether the wall clock ran out)."""
    status_r, status_w = os.pipe()
    try:
        cfg = {
            "status_fd": status_w, "memory": memory_mb * 1024 * 1024, "cpu_s": math.ceil(timeout_s) + 1,
            "fsize": OUTPUT_LIMIT_BYTES, "uid": prot.uid, "unshare": prot.unshare, "max_procs": MAX_PROCS,
            "private_tmp": list(prot.private_tmp),
        }  # fmt: skip
        with open(work / ".stdout", "wb") as out_f, open(work / ".stderr", "wb") as err_f:
            proc = subprocess.Popen(
                [prot.interpreter, "-I", "-c", _CHILD_SOURCE, json.dumps(cfg)],
                cwd=work,
                env=_child_env(str(work)),
                stdin=subprocess.DEVNULL,
                stdout=out_f,
                stderr=err_f,
                pass_fds=(status_w,),
                start_new_session=True,  # own process group: the backstop below kills it whole
                close_fds=True,
            )
        os.close(status_w)
        status_w = -1
        timed_out = False
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            proc.send_signal(signal.SIGTERM)  # the supervisor kills every descendant, then reports
            try:
                proc.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                pass
        _kill_group(proc.pid)  # backstop, should the supervisor itself be stuck
        proc.wait()
        return proc.returncode, _read_status(status_r), timed_out
    finally:
        os.close(status_r)
        if status_w >= 0:
            os.close(status_w)


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _read_status(fd: int) -> list[str]:
    # Non-blocking: a straggler that inherited the pipe must not hang the evaluator.
    os.set_blocking(fd, False)
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    text = b"".join(chunks).decode("utf-8", errors="replace")
    return [ln.strip() for ln in text.splitlines() if ln.strip()]


def run_programs(
    sources: Iterable[str], timeout_s: float = 5.0, memory_mb: int = 1024, workers: int | None = None
) -> list[ExecOutcome]:
    """Run many programs in parallel (one subprocess each), results in input order."""
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        return list(pool.map(lambda s: run_program(s, timeout_s, memory_mb), sources))
