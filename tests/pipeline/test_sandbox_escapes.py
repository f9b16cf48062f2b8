"""Hostile candidates against the eval sandbox: each escape must be stopped and reported.

These run the real sandbox (real processes, real uid drop, real network namespace).  Where this
machine cannot provide a protection (not root, no namespaces) the test that needs it is skipped
with the reason, and `protections().describe()` says the same to `diffill eval` users.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pytest

from infill_engine.pipeline.sandbox import MAX_PROCS, protections, run_program

REPO = Path(__file__).resolve().parents[2]


def _visible_dir() -> Path:
    """A folder of the evaluator's that candidates see too: the checkout, unless it lies where
    the sandbox (as root) mounts a private tmpfs over it, as a CI clone under /tmp does."""
    if os.geteuid() == 0 and str(REPO).startswith(("/tmp/", "/var/tmp/", "/dev/shm/")):
        base = Path("/var/lib/diffill-escape-tests")
        base.mkdir(mode=0o755, exist_ok=True)
        return base
    return REPO


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def _processes_in(workdir: str) -> list[int]:
    """Live processes whose cwd is (or was) the program's throwaway directory."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                cwd = os.readlink(f"/proc/{name}/cwd")
            except OSError:
                continue
            if cwd.startswith(workdir) and _alive(int(name)):
                found.append(int(name))
    return found


@pytest.fixture
def shared() -> Iterator[Path]:
    # A place the unprivileged candidate may write to, so a surviving grandchild would leave a
    # trace: not under pytest's tmp_path (a 0700 directory) nor /tmp (the candidate gets its own).
    d = Path(tempfile.mkdtemp(prefix=".escape-test-", dir=_visible_dir()))
    d.chmod(0o777)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_protections_are_described() -> None:
    lines = protections().describe()
    assert any("process tree" in ln for ln in lines)
    assert any("network" in ln for ln in lines)
    if os.geteuid() == 0:
        assert protections().uid >= 0, lines  # root must not run candidates as root on this machine


def test_world_writable_scratch_space_is_private() -> None:
    prot = protections()
    if not prot.private_tmp:
        pytest.skip(f"no private /tmp here: {prot.private_tmp_error}")
    token = f"diffill-escape-{os.getpid()}-{time.monotonic_ns()}"
    writes = "".join(f"open({d!r} + '/{token}', 'w').write('x')\n" for d in prot.private_tmp)
    outcome = run_program(writes + f"import os\nassert sorted(os.listdir('/tmp')) == ['{token}']\n")
    assert outcome.passed, outcome  # it may write there: into its own tmpfs, seen by no one else
    assert not any(os.path.exists(f"{d}/{token}") for d in prot.private_tmp)


def test_writing_outside_the_temp_dir_is_refused() -> None:
    if os.geteuid() != 0 or protections().uid < 0:
        pytest.skip("only a root evaluator has a uid to drop to; as a user, candidates write as that user")
    owned = Path(tempfile.mkdtemp(prefix=".escape-test-", dir=_visible_dir()))  # the evaluator's, like the repo
    owned.chmod(0o755)
    targets = [owned / "pwned.txt", _visible_dir() / "pwned-by-candidate.txt", Path(os.path.expanduser("~root")) / "pwned.txt"]
    program = "import os\nprint(os.getuid(), flush=True)\n" + "".join(
        f"try:\n    open({str(t)!r}, 'w').write('x')\n    print('WROTE', {str(t)!r}, flush=True)\n"
        f"except PermissionError:\n    pass\n"
        for t in targets
    ) + "open({!r}, 'w').write('x')\n".format(str(targets[0]))  # the last attempt uncaught: the reason
    outcome = run_program(program, timeout_s=10)
    try:
        assert "WROTE" not in outcome.stdout, outcome
        assert outcome.stdout.split()[0] == str(protections().uid)
        assert not outcome.passed and outcome.reason.startswith("PermissionError"), outcome
    finally:
        for t in targets:
            t.unlink(missing_ok=True)
        shutil.rmtree(owned, ignore_errors=True)
    assert not any(t.exists() for t in targets)


def test_fork_bomb_is_capped_and_every_process_killed() -> None:
    if os.geteuid() == 0 and protections().uid < 0:
        pytest.skip("RLIMIT_NPROC does not bind root: without a uid drop a fork bomb is uncapped")
    bomb = (
        "import os, time\n"
        "print(os.getcwd(), flush=True)\n"
        "while True:\n"
        "    try:\n"
        "        os.fork()\n"
        "    except OSError:\n"
        "        time.sleep(0.01)\n"
    )
    start = time.perf_counter()
    outcome = run_program(bomb, timeout_s=2)
    assert (outcome.passed, outcome.reason) == (False, "process limit"), outcome
    assert time.perf_counter() - start < 60
    assert 1 <= outcome.stragglers_killed <= MAX_PROCS + 1, outcome
    workdir = outcome.stdout.split()[0]
    assert _processes_in(workdir) == []


@pytest.mark.parametrize("main_part", ["time.sleep(0.3)\n", "time.sleep(60)\n"], ids=["program-ends", "timeout"])
def test_setsid_double_fork_grandchild_is_killed(shared: Path, main_part: str) -> None:
    marker, pidfile = shared / "marker", shared / "grandchild.pid"
    program = (
        "import os, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        f"        open({str(pidfile)!r}, 'w').write(str(os.getpid()))\n"
        "        time.sleep(2)\n"
        f"        open({str(marker)!r}, 'w').write('escaped')\n"
        "        os._exit(0)\n"
        "    os._exit(0)\n" + main_part
    )
    outcome = run_program(program, timeout_s=1.5)
    assert outcome.reason == ("passed" if "0.3" in main_part else "timeout"), outcome
    assert outcome.stragglers_killed >= 1, outcome  # the grandchild, still asleep when the program ended
    grandchild = int(pidfile.read_text())
    assert not _alive(grandchild)
    time.sleep(2.5)  # past the moment it would have written its marker
    assert not marker.exists()


def test_candidate_cannot_reach_a_loopback_listener() -> None:
    if not protections().unshare:
        pytest.skip(f"no network namespace here: {protections().unshare_error}")
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        program = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=3).sendall(b'pwned')\n"
        outcome = run_program(program, timeout_s=10)
        listener.settimeout(0.5)
        with pytest.raises(TimeoutError):
            listener.accept()  # nobody ever connected
    assert not outcome.passed and "Network is unreachable" in outcome.reason, outcome
    udp = run_program("import socket\nsocket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('127.0.0.1', 9))\n")
    assert not udp.passed and "unreachable" in udp.reason, udp


GROW = "b'x' * (64 * 1024 * 1024)"  # touched pages: real memory, not only address space


@pytest.mark.parametrize(
    "program",
    [
        f"hoard = []\nwhile True:\n    hoard.append({GROW})\n",
        # swallows the MemoryError and runs on into the timeout: still a memory limit, not a timeout
        f"import time\nhoard = []\nwhile True:\n    try:\n        hoard.append({GROW})\n"
        "    except MemoryError:\n        time.sleep(0.05)\n",
        # the growth happens in a child that swallows it; the parent only waits
        f"import os, time\nif os.fork() == 0:\n    hoard = []\n    while True:\n        try:\n"
        f"            hoard.append({GROW})\n        except MemoryError:\n            time.sleep(0.05)\n"
        "os.wait()\n",
    ],
    ids=["uncaught", "swallowed", "in-a-child"],
)
def test_memory_growth_in_64mb_steps_is_a_memory_limit(program: str) -> None:
    outcome = run_program(program, timeout_s=3, memory_mb=512)
    assert (outcome.passed, outcome.reason) == (False, "memory limit"), outcome
