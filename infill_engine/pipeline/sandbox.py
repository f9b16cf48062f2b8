"""Run untrusted, model-written Python in a separate, resource-limited process.

The evaluator never imports or executes model output itself.  Each program runs in a
fresh `python -I` (isolated: no user site-packages, no PYTHON* variables, no cwd on
sys.path) in its own temporary working directory and process session, with stdin
closed and stdout/stderr going to size-limited files.  Limits:

* RLIMIT_AS (address space) = memory_mb, so a memory bomb gets a MemoryError instead
  of swapping the machine;
* RLIMIT_CPU = timeout + 1 s, a backstop to the wall clock;
* RLIMIT_CORE = 0 (no core dumps) and RLIMIT_FSIZE (no disk filling, bounded output);
* a wall-clock timeout after which the whole process group is SIGKILLed;
* when the evaluator runs as root and `nobody` can run this interpreter (its standard
  library is world-readable; a pyenv under /root is not), the program runs as `nobody`,
  so it cannot write to the repository or home directory.

The limits are set by a small bootstrap running *inside* the child before it reads the
program, not by `preexec_fn`: the evaluator calls this from worker threads while torch
has threads of its own, and Python documents `preexec_fn` as unsafe with threads (the
forked child can deadlock).  The effect is the same — the program starts already limited.

"Passed" means the program ran to its end: the bootstrap reports completion on a
private pipe only after the whole program (including `check(...)`) returned, so a
completion that calls `exit()`, `sys.exit(0)` or `os._exit(0)` does not count as a pass.

This guards against accidents (loops, memory, stray exits, files written to the cwd);
it is not a security boundary against deliberately hostile code — use a container or
VM for that.
"""

from __future__ import annotations

import functools
import math
import os
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

# Runs in the child as `python -I -c BOOTSTRAP status_fd memory_bytes cpu_s fsize_bytes drop_uid`.
# It limits itself, drops root, then executes program.py from the cwd and reports on status_fd.
_BOOTSTRAP = r"""
import os, resource, sys
status_fd, mem, cpu, fsize, uid = (int(a) for a in sys.argv[1:6])
del sys.argv[1:]
def _limit(kind, value):
    soft, hard = resource.getrlimit(kind)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(kind, (value, value))
_limit(resource.RLIMIT_CORE, 0)
_limit(resource.RLIMIT_CPU, cpu)
_limit(resource.RLIMIT_FSIZE, fsize)
if uid >= 0:
    try:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    except OSError:
        pass  # no CAP_SETUID (some containers): the resource limits still hold
with open("program.py", encoding="utf-8") as f:
    source = f.read()
status = os.fdopen(status_fd, "w", encoding="utf-8")
_limit(resource.RLIMIT_AS, mem)  # last: reading the program must not be what runs out of memory
def _report(line):
    try:
        status.write(line[:500])
        status.flush()
    except BaseException:
        pass
try:
    code = compile(source, "program.py", "exec")
    namespace = {"__name__": "__main__", "__file__": "program.py", "__builtins__": __builtins__}
    del source
    exec(code, namespace)
except SystemExit as e:
    _report("exit: the program exited (%r) before its tests finished" % (e.code,))
    raise
except BaseException as e:
    _report("%s: %s" % (type(e).__name__, " ".join(str(e).split())))
    raise
_report("passed")
"""


@dataclass(frozen=True)
class ExecOutcome:
    passed: bool
    reason: str  # "passed", "timeout", "memory limit", "AssertionError: ...", ...
    stdout: str = ""  # tails, truncated to KEEP_OUTPUT_CHARS
    stderr: str = ""
    wall_ms: float = 0.0


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


@functools.lru_cache(maxsize=1)
def _sandbox_uid() -> int:
    """`nobody` when we are root and an unprivileged child can still import the stdlib, else -1 (keep uid)."""
    if os.geteuid() != 0:
        return -1
    probe = "import os; os.setgroups([]); os.setgid(%d); os.setuid(%d); import math, json, decimal, hashlib" % (
        NOBODY,
        NOBODY,
    )
    try:
        ok = subprocess.run(
            [sys.executable, "-I", "-c", probe], cwd="/", stdin=subprocess.DEVNULL,
            capture_output=True, timeout=30, env=_child_env("/tmp"),
        ).returncode == 0  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    return NOBODY if ok else -1


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _classify(returncode: int, status: str, stderr: str) -> str:
    if status == "passed":
        return "passed" if returncode == 0 else f"crashed after its tests (exit code {returncode})"
    # Python ignores SIGXFSZ, so RLIMIT_FSIZE shows up as an OSError (EFBIG) instead of a signal.
    if "[Errno 27]" in status or returncode == -signal.SIGXFSZ:
        return "output/file size limit"
    if status.startswith("MemoryError") or "MemoryError" in stderr or "Cannot allocate memory" in stderr:
        return "memory limit"
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
    drop_uid = _sandbox_uid()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="diffill-exec-", ignore_cleanup_errors=True) as workdir:
        work = Path(workdir)
        (work / "program.py").write_text(source, encoding="utf-8")
        if drop_uid >= 0:
            for p in (work, work / "program.py"):
                os.chown(p, drop_uid, drop_uid)
        returncode, status, timed_out = _run_bootstrap(work, timeout_s, memory_mb, drop_uid)
        stdout, stderr = _tail(work / ".stdout"), _tail(work / ".stderr")
    wall_ms = (time.perf_counter() - start) * 1000
    reason = "timeout" if timed_out else _classify(returncode, status, stderr)
    return ExecOutcome(reason == "passed", reason, stdout, stderr, wall_ms)


def _run_bootstrap(work: Path, timeout_s: float, memory_mb: int, drop_uid: int) -> tuple[int, str, bool]:
    """Run work/program.py under the limiting bootstrap, output to work/.stdout and .stderr.
    Returns (exit code, the bootstrap's status line, whether the wall clock ran out)."""
    status_r, status_w = os.pipe()
    try:
        with open(work / ".stdout", "wb") as out_f, open(work / ".stderr", "wb") as err_f:
            args = [
                sys.executable, "-I", "-c", _BOOTSTRAP, str(status_w),
                str(memory_mb * 1024 * 1024), str(math.ceil(timeout_s) + 1), str(OUTPUT_LIMIT_BYTES),
                str(drop_uid),
            ]  # fmt: skip
            proc = subprocess.Popen(
                args,
                cwd=work,
                env=_child_env(str(work)),
                stdin=subprocess.DEVNULL,
                stdout=out_f,
                stderr=err_f,
                pass_fds=(status_w,),
                start_new_session=True,  # own process group, so a timeout kills its children too
                close_fds=True,
            )
        os.close(status_w)
        status_w = -1
        timed_out = False
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
        _kill_group(proc.pid)  # also reaps stragglers the program forked
        proc.wait()
        return proc.returncode, _read_status(status_r), timed_out
    finally:
        os.close(status_r)
        if status_w >= 0:
            os.close(status_w)


def _read_status(fd: int) -> str:
    # Non-blocking: a grandchild that inherited the pipe must not hang the evaluator.
    os.set_blocking(fd, False)
    try:
        return os.read(fd, 1024).decode("utf-8", errors="replace").strip()
    except BlockingIOError:
        return ""


def run_programs(
    sources: Iterable[str], timeout_s: float = 5.0, memory_mb: int = 1024, workers: int | None = None
) -> list[ExecOutcome]:
    """Run many programs in parallel (one subprocess each), results in input order."""
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        return list(pool.map(lambda s: run_program(s, timeout_s, memory_mb), sources))
