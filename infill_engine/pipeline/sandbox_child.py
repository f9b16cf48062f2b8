"""The code that runs inside a sandboxed child: a supervisor that forks the candidate program.

Not imported by the evaluator: sandbox.py passes this file's text to `python -I -c` (so the
interpreter that runs it may be the system python3, which cannot import this package) with one
JSON argument.  Standard library only.

Two processes:

* the **supervisor** (this script's first process; root when the evaluator is root) makes itself
  a child subreaper, optionally moves into a fresh network namespace and a mount namespace with
  its own empty /tmp, /var/tmp and /dev/shm (inherited by everything it forks), forks the
  program, and waits.  Every orphan the program leaves — a `setsid` +
  double-fork grandchild included — is re-parented to it, not to init, so when the program ends
  or the evaluator sends SIGTERM (timeout) it SIGKILLs every descendant until none is left, and
  reaps them.  It watches the peak address space of each descendant, because a program that
  swallows MemoryError and sleeps would otherwise look like a timeout.
* the **program** process limits itself (core, cpu, file size, process count, address space),
  drops to the unprivileged uid, and executes program.py.  It reports its own end on the status
  pipe: "passed" only after the whole program, `check(...)` included, returned.

The supervisor reports on the same pipe with lines starting "sandbox:", so the evaluator learns
the program's real exit status, whether the memory cap was reached, and how many stragglers it
had to kill.  A protection that was asked for and cannot be set up ends the run with a
"sandbox: setup failed" line rather than running the program without it.
"""

import ctypes
import json
import os
import resource
import signal
import sys
import time

cfg = json.loads(sys.argv[1])
del sys.argv[1:]
STATUS_FD = cfg["status_fd"]
PR_SET_CHILD_SUBREAPER = 36
CLONE_NEWNS = 0x00020000
MS_NOSUID, MS_NODEV, MS_REC, MS_PRIVATE = 0x2, 0x4, 0x4000, 0x40000
POLL_S = 0.02


def report(line):
    try:
        os.write(STATUS_FD, (line[:500] + "\n").encode("utf-8", "replace"))
    except OSError:
        pass


def setup_failed(what):
    report("sandbox: setup failed: " + what)
    os._exit(121)


def limit(kind, value):
    soft, hard = resource.getrlimit(kind)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(kind, (value, value))


def processes_of(uid):
    n = 0
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.stat("/proc/" + name).st_uid == uid:
                    n += 1
            except OSError:
                pass
    return n


def descendants(root):
    # /proc/<pid>/task/*/children is not built into every kernel; the ppid map always is.
    children = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name, "rb") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(b")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(name))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), ()):
            found.append(child)
            todo.append(child)
    return found


def vm_peak(pid):
    try:
        with open("/proc/%d/status" % pid, "rb") as f:
            for line in f:
                if line.startswith(b"VmPeak:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def run_program():
    """In the forked program process: limit, drop privileges, execute program.py."""
    limit(resource.RLIMIT_CORE, 0)
    limit(resource.RLIMIT_CPU, cfg["cpu_s"])
    limit(resource.RLIMIT_FSIZE, cfg["fsize"])
    uid = cfg["uid"]
    if uid >= 0:
        try:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
        except OSError as e:
            setup_failed("dropping to uid %d: %s" % (uid, e))
    # RLIMIT_NPROC counts every process of the (real) uid, so leave room for those already running.
    limit(resource.RLIMIT_NPROC, cfg["nproc_base"] + cfg["max_procs"])
    with open("program.py", encoding="utf-8") as f:
        source = f.read()
    limit(resource.RLIMIT_AS, cfg["memory"])  # last: reading the program must not be what runs out
    try:
        code = compile(source, "program.py", "exec")
        namespace = {"__name__": "__main__", "__file__": "program.py", "__builtins__": __builtins__}
        del source
        exec(code, namespace)
    except SystemExit as e:
        report("exit: the program exited (%r) before its tests finished" % (e.code,))
        raise
    except BaseException as e:
        report("%s: %s" % (type(e).__name__, " ".join(str(e).split())))
        raise
    report("passed")


def private_tmp(libc, dirs):
    """Empty, private world-writable directories: the only places outside its cwd an
    unprivileged program could write to are then thrown away with it.  The cwd (under the
    real /tmp) stays reachable: it is already this process's working directory."""
    if libc.unshare(CLONE_NEWNS) != 0:
        setup_failed("unshare(CLONE_NEWNS): errno %d" % ctypes.get_errno())
    # private propagation first, or the tmpfs mounts would appear in the evaluator's namespace too
    if libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        setup_failed("making / private: errno %d" % ctypes.get_errno())
    for d in dirs:
        if libc.mount(b"tmpfs", d.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, b"size=16m,mode=1777") != 0:
            setup_failed("tmpfs on %s: errno %d" % (d, ctypes.get_errno()))


class Stop(Exception):
    pass


def on_term(signum, frame):
    raise Stop


def kill_descendants(me):
    killed = set()
    for _ in range(1000):  # a fork bomb under RLIMIT_NPROC runs out of new pids long before this
        alive = descendants(me)
        if not alive:
            break
        for pid in alive:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            except OSError:
                pass
        reap()
        time.sleep(0.005)
    return killed


def reap():
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def supervise():
    me = os.getpid()
    limit(resource.RLIMIT_CORE, 0)
    libc = ctypes.CDLL(None, use_errno=True)
    # counted before any namespace: inside a user namespace our own uid would read as unmapped
    cfg["nproc_base"] = processes_of(cfg["uid"] if cfg["uid"] >= 0 else os.getuid())
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        setup_failed("PR_SET_CHILD_SUBREAPER: errno %d" % ctypes.get_errno())
    if cfg["unshare"] and libc.unshare(cfg["unshare"]) != 0:  # a fresh network namespace: no network
        setup_failed("unshare(0x%x): errno %d" % (cfg["unshare"], ctypes.get_errno()))
    if cfg["private_tmp"]:
        private_tmp(libc, cfg["private_tmp"])
    signal.signal(signal.SIGTERM, on_term)
    pid = os.fork()
    if pid == 0:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        run_program()
        sys.exit(0)  # out of this branch: the supervisor's code below is not the program's
    status, peak, most, stopped, tick = None, 0, 0, False, 0
    try:
        while status is None:
            # the program itself every tick; its descendants (a scan of all /proc) every 10th
            watched = descendants(me) if tick % 10 == 9 else [pid]
            most = max(most, len(watched))
            tick += 1
            for p in watched:
                peak = max(peak, vm_peak(p))
            while True:
                try:
                    done, st = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    done = 0
                if done == 0:
                    break
                if done == pid:
                    status = st
            if status is None:
                time.sleep(POLL_S)
    except Stop:
        stopped = True
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the sweep short
    alive = descendants(me)
    most = max(most, len(alive))
    for p in alive:  # last look at the peaks of those still alive, before they are killed
        peak = max(peak, vm_peak(p))
    killed = kill_descendants(me) - {pid}
    if status is None:  # stopped at the timeout: the program itself was killed above
        try:
            _, status = os.waitpid(pid, 0)
        except ChildProcessError:
            status = signal.SIGKILL
    code = os.waitstatus_to_exitcode(status) if status is not None else -signal.SIGKILL
    report("sandbox: exit=%d peak=%d procs=%d killed=%d stopped=%d" % (code, peak, most, len(killed), stopped))
    os._exit(0)


supervise()
