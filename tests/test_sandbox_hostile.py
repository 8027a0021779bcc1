"""Hostile code parameters: each is contained, comes back as clear feedback, and the next call works.

Every case runs with the default protections (``guarded``), and with the audit hook turned off
(``os_only``) to check that the operating system's protections hold on their own, as they must
against code that gets past the hook (for instance through native code).

And the whole suite runs in three settings: as this process's user (root in CI, with namespaces),
with the namespace tools absent from ``PATH`` (the basic mode: rlimits, a user id of its own, the
audit hook, which must then hold against code that tries to switch it off), and, from
:func:`test_the_suite_holds_for_an_unprivileged_user`, as an unused user id (unprivileged user
namespaces).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from feedprop.sandbox import CodeFailure, SandboxExecutor, SandboxWeakWarning
from feedprop.sandbox.namespaces import _closed_ancestors, _cover, _interpreter_dirs
from feedprop.sandbox.process import UID_BASE

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the hostile suite targets Linux")

NAMESPACES = {"pid_namespace", "net_namespace", "mount_namespace", "private_tmp"}
#: The code cannot touch this process's files: a user id of its own, or (same user) read-only file systems.
OWN_FILES_SAFE = ({"separate_uid"}, {"user_namespace", "read_only_fs", "private_home"})
UNUSED_UID = 1_999_999


def os_layers_in_force(protections: frozenset[str]) -> bool:
    return protections >= NAMESPACES and any(protections >= need for need in OWN_FILES_SAFE)


@pytest.fixture(
    scope="module",
    params=[("path", "guarded"), ("path", "os_only"), ("no_tools", "guarded"), ("no_tools", "os_only")],
    ids=lambda p: "-".join(p),
)
def ex(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxExecutor]:
    tools, layers = request.param
    with pytest.MonkeyPatch.context() as patch:
        if tools == "no_tools":  # unshare, setpriv and mount cannot be found: the basic mode
            patch.setenv("PATH", str(tmp_path_factory.mktemp("empty-path")))
        executor = SandboxExecutor(timeout=1.0, memory_mb=128, max_workers=1, audit_hooks=layers == "guarded")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            protections = executor.protections()
        if tools == "no_tools":
            assert "pid_namespace" not in protections
            assert [w for w in caught if issubclass(w.category, SandboxWeakWarning)] or basic_warned_before()
        if tools == "path" and os.environ.get("FEEDPROP_HOSTILE_REQUIRE_NAMESPACES"):
            assert os_layers_in_force(protections), sorted(protections)  # run as an unused user id: no skipping
        if layers == "os_only" and not os_layers_in_force(protections):
            executor.close()
            pytest.skip(f"the operating-system protections are not all in force here: {sorted(protections)}")
        yield executor
    executor.close()


def basic_warned_before() -> bool:
    from feedprop.sandbox import pool

    return bool(pool._warned_basic)


def run(executor: SandboxExecutor, source: str, *args: Any) -> Any:
    name = re.search(r"def (\w+)", source)
    assert name is not None
    return executor.run(source, name.group(1), args, {}, {})


def failure_of(executor: SandboxExecutor, source: str, *args: Any) -> CodeFailure:
    with pytest.raises(CodeFailure) as info:
        run(executor, source, *args)
    return info.value


def still_works(executor: SandboxExecutor) -> None:
    assert run(executor, "def f(x):\n    return x * 2\n", 21) == 42


def sandbox_processes() -> list[int]:
    """This process's descendants running as a sandbox user id (a contained call leaves none behind).

    Only ours count (other test runs on the same machine have sandbox workers of their own): a
    descendant, or an orphan whose user id names one of our workers (``UID_BASE + worker pid``).
    """
    found: list[tuple[int, int]] = []
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                status = Path(f"/proc/{entry}/status").read_text()
            except OSError:
                continue
            uid = int(re.search(r"^Uid:\s+(\d+)", status, re.M).group(1))  # type: ignore[union-attr]
            parents[int(entry)] = int(re.search(r"^PPid:\s+(\d+)", status, re.M).group(1))  # type: ignore[union-attr]
            if UID_BASE <= uid < UID_BASE + (1 << 23):
                found.append((int(entry), uid - UID_BASE))
    me = os.getpid()
    return [pid for pid, worker in found if _descends_from(pid, me, parents) or _descends_from(worker, me, parents)]


def _descends_from(pid: int, ancestor: int, parents: dict[int, int]) -> bool:
    seen = set()
    while pid not in seen and pid > 1:
        seen.add(pid)
        pid = parents.get(pid, 0)
        if pid == ancestor:
            return True
    return False


def test_infinite_loop(ex: SandboxExecutor) -> None:
    failure = failure_of(ex, "def f():\n    while True:\n        pass\n")
    assert str(failure) == "TimeoutError: exceeded 1.0 s wall clock"
    still_works(ex)


def test_memory_bomb(ex: SandboxExecutor) -> None:
    failure = failure_of(ex, "def f():\n    hoard = []\n    while True:\n        hoard.append(bytearray(8 << 20))\n")
    assert str(failure) == "MemoryError: exceeded the 128 MB memory limit (line 4)"
    failure = failure_of(ex, "def f():\n    return bytearray(1 << 40)\n")
    assert failure.type_name == "MemoryError" and failure.lineno == 2
    still_works(ex)


def test_fork_bomb(ex: SandboxExecutor) -> None:
    failure = failure_of(ex, "import os\ndef f():\n    while True:\n        os.fork()\n")
    assert failure.lineno == 4
    if ex.audit_hooks:
        assert failure.message.startswith("os.fork is blocked inside the feedprop sandbox")
    else:  # the process limit refuses the very first fork
        assert failure.type_name == "BlockingIOError" and "Resource temporarily unavailable" in failure.message
    stubborn = (
        "import os, time\n"
        "def f():\n"
        "    forked, end = 0, time.time() + 0.3\n"
        "    while time.time() < end:\n"
        "        try:\n"
        "            if os.fork() == 0:\n"
        "                while True:\n"
        "                    pass\n"
        "            forked += 1\n"
        "        except OSError:\n"
        "            pass\n"
        "    return forked\n"
    )
    assert run(ex, stubborn) == 0
    assert sandbox_processes() == []
    failure = failure_of(ex, "import subprocess\ndef f():\n    return subprocess.run(['sh', '-c', 'echo hi'])\n")
    assert failure.type_name in ("PermissionError", "BlockingIOError")
    still_works(ex)


def test_threads_cannot_be_started(ex: SandboxExecutor) -> None:
    failure = failure_of(ex, "import threading\ndef f():\n    threading.Thread(target=print).start()\n")
    assert failure.type_name == "RuntimeError" and "can't start new thread" in failure.message
    still_works(ex)


def test_deep_recursion(ex: SandboxExecutor) -> None:
    failure = failure_of(ex, "def f(n=0):\n    return f(n + 1)\n")
    assert failure.type_name == "RecursionError" and failure.lineno == 2
    assert "[Previous line repeated" in failure.traceback
    unbounded = "import sys\ndef f(n=0):\n    sys.setrecursionlimit(10**8)\n    return f(n + 1)\n"
    failure = failure_of(ex, unbounded)
    assert failure.type_name in ("RecursionError", "MemoryError", "WorkerDied", "TimeoutError")
    still_works(ex)


def test_runaway_recursion_is_reported_as_memory() -> None:
    """Given time, unbounded recursion fills the memory limit: a MemoryError of the code, not of the sandbox."""
    unbounded = "import sys\ndef f(n=0):\n    sys.setrecursionlimit(10**8)\n    return f(n + 1)\n"
    with SandboxExecutor(timeout=120.0, cpu_seconds=60, memory_mb=64, max_workers=1) as executor:
        failure = failure_of(executor, unbounded)
        assert failure.type_name == "MemoryError" and failure.lineno == 4, failure
        assert "64 MB memory limit" in failure.message and "runaway recursion" in failure.message
        assert failure.traceback.count("line 4, in f") == 3
        assert "[Previous line repeated 197 more times]" in failure.traceback
        still_works(executor)


def test_os_exit(ex: SandboxExecutor) -> None:
    failure = failure_of(ex, "import os\ndef f():\n    os._exit(3)\n")
    assert failure.type_name == "WorkerDied" and "exit status 3" in failure.message
    still_works(ex)


def test_sys_exit(ex: SandboxExecutor) -> None:
    failure = failure_of(ex, "import sys\ndef f():\n    sys.exit(2)\n")
    assert failure.type_name == "SystemExit" and "sys.exit(2)" in failure.message and failure.lineno == 3
    still_works(ex)


def test_writing_outside_the_working_directory(ex: SandboxExecutor, tmp_path: Path) -> None:
    target = tmp_path / "escaped.txt"
    spill = Path("/var/tmp") / f"feedprop-escape-{uuid.uuid4().hex}"
    src = "def f(path):\n    with open(path, 'w') as out:\n        out.write('escaped')\n    return 'wrote'\n"
    failure = failure_of(ex, src, str(target))
    assert failure.type_name in ("PermissionError", "FileNotFoundError") and failure.lineno == 2
    if ex.audit_hooks:
        assert "may write only inside its working directory" in failure.message
        assert failure_of(ex, src, str(spill)).type_name == "PermissionError"
    else:  # /var/tmp inside the sandbox is a private tmpfs: writing works there and never reaches the host
        assert run(ex, src, str(spill)) == "wrote"
        assert run(ex, "import os\ndef f(p):\n    return os.path.exists(p)\n", str(spill)) is False  # emptied
    assert not target.exists() and not spill.exists()
    assert failure_of(ex, src, "/etc/feedprop-escaped").type_name in ("PermissionError", "OSError")  # or read-only
    assert not Path("/etc/feedprop-escaped").exists()
    still_works(ex)


def test_reading_the_parents_environment(ex: SandboxExecutor, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = f"s3cret-{uuid.uuid4().hex}"
    monkeypatch.setenv("FEEDPROP_API_KEY", secret)  # set in this (the parent's parent) process
    src = (
        "import os\n"
        "def f(pid):\n"
        "    seen = [repr(dict(os.environ))]\n"
        "    for path in (f'/proc/{pid}/environ', f'/proc/{os.getppid()}/environ', '/proc/1/environ'):\n"
        "        try:\n"
        "            seen.append(open(path, 'rb').read().decode(errors='replace'))\n"
        "        except OSError as e:\n"
        "            seen.append(type(e).__name__)\n"
        "    return seen\n"
    )
    seen = run(ex, src, os.getpid())
    assert not any(secret in text for text in seen)
    assert "FEEDPROP_API_KEY" not in seen[0]
    still_works(ex)


def test_killing_the_parent(ex: SandboxExecutor) -> None:
    me = os.getpid()
    failure = failure_of(ex, "import os, signal\ndef f(pid):\n    os.kill(pid, signal.SIGKILL)\n", me)
    assert failure.type_name in ("PermissionError", "ProcessLookupError") and failure.lineno == 3
    kill_worker = "import os, signal\ndef f():\n    os.kill(os.getppid(), signal.SIGKILL)\n"
    if ex.audit_hooks or "separate_uid" in ex.protections():
        failure = failure_of(ex, kill_worker)
        assert failure.type_name in ("PermissionError", "ProcessLookupError")
        if ex.audit_hooks:
            assert "os.kill is blocked inside the feedprop sandbox" in failure.message
    else:  # the worker's own user in a user namespace: the kernel ignores SIGKILL sent to the namespace's init
        assert run(ex, kill_worker) is None
    assert os.getpid() == me  # this process is alive to check
    still_works(ex)


def test_network_connection_to_a_local_listener(ex: SandboxExecutor) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        src = "import socket\ndef f(port):\n    socket.create_connection(('127.0.0.1', port), timeout=0.5)\n"
        failure = failure_of(ex, src, port)
        if ex.audit_hooks:
            assert failure.type_name == "PermissionError" and "no network access" in failure.message
        else:  # a network namespace of its own: its loopback is down and the host's is not there
            assert failure.type_name == "OSError" and "Network is unreachable" in failure.message
        listener.settimeout(0.2)
        with pytest.raises(TimeoutError):
            listener.accept()
    still_works(ex)


def test_native_code(ex: SandboxExecutor) -> None:
    src = (
        "import ctypes, os\n"
        "def f(pid):\n"
        "    libc = ctypes.CDLL(None, use_errno=True)\n"
        "    return libc.fork(), libc.kill(pid, 9), libc.kill(1, 9)\n"
    )
    if ex.audit_hooks:
        failure = failure_of(ex, src, os.getpid())
        # Blocked at the import, or, when the warm worker already holds ctypes (an earlier call's
        # globals imported it), at loading the library: either way no native code runs.
        blocked_import = failure.type_name == "ImportError" and "import of 'ctypes' is blocked" in failure.message
        blocked_load = failure.type_name == "PermissionError" and "native code" in failure.message
        assert blocked_import or blocked_load, failure
    else:  # past the hook, the kernel still refuses: no new process, no signal outside
        forked, killed_parent, killed_init = run(ex, src, os.getpid())
        assert (forked, killed_parent) == (-1, -1)
        # A user id of its own cannot signal the worker; as the worker's own user (user namespace)
        # it may signal it, which only ends the call.
        assert killed_init == -1 or "separate_uid" not in ex.protections()
    assert sandbox_processes() == []
    still_works(ex)


def test_breaking_the_result_channel(ex: SandboxExecutor) -> None:
    failure = failure_of(ex, "import os\ndef f():\n    os.closerange(3, 1024)\n    return 1\n")
    assert failure.type_name == "WorkerDied"
    still_works(ex)


GC_BYPASS = """
import gc, os, signal, socket
def attack(parent, path, port):
    out = {}
    try:  # find the audit hook among all objects and switch it off
        for obj in gc.get_objects():
            if type(obj).__name__ == "function" and obj.__name__ == "hook" and obj.__closure__:
                for cell in obj.__closure__:
                    if isinstance(cell.cell_contents, (dict, frozenset)):
                        cell.cell_contents = type(cell.cell_contents)()
                obj.__code__ = (lambda event, args: None).__code__
                out["hook"] = "neutralised"
    except Exception as e:
        out["hook"] = "refused: " + type(e).__name__ + ": " + str(e)
    try:
        out["environ"] = open(f"/proc/{parent}/environ", "rb").read().decode(errors="replace")
    except Exception as e:
        out["environ"] = "refused: " + type(e).__name__
    try:
        os.kill(parent, signal.SIGUSR1)
        out["signal"] = "sent"
    except Exception as e:
        out["signal"] = "refused: " + type(e).__name__
    try:
        with open(path, "w") as f:
            f.write("escaped")
        out["write"] = "written"
    except Exception as e:
        out["write"] = "refused: " + type(e).__name__
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        out["connect"] = "connected"
    except Exception as e:
        out["connect"] = "refused: " + type(e).__name__
    return out
"""


def test_switching_off_the_audit_hook_through_gc_is_contained(ex: SandboxExecutor, tmp_path: Path) -> None:
    """The bypass of the basic mode: walk gc for the hook's closure, then go for this process."""
    received: list[int] = []
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: received.append(signum))
    target = tmp_path / "escaped.txt"
    os.chmod(tmp_path, 0o777)  # writable by any user: only the sandbox may stop the write
    try:
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen(1)
            out = run(ex, GC_BYPASS, os.getpid(), str(target), listener.getsockname()[1])
            listener.settimeout(0.2)
            with pytest.raises(TimeoutError):
                listener.accept()
    finally:
        signal.signal(signal.SIGUSR1, previous)
    if ex.audit_hooks:
        assert out["hook"].startswith("refused: PermissionError") and "gc.get_objects is blocked" in out["hook"]
    assert out["environ"].startswith("refused") and "PATH=" not in out["environ"]
    assert out["signal"].startswith("refused") and received == []
    assert out["write"].startswith("refused") and not target.exists()
    assert out["connect"].startswith("refused")
    still_works(ex)


HOOK_FRAME_AND_DESCRIPTORS = """
import os, signal
def attack(parent):
    out = {"mutable": [], "hook_frame": False}
    try:
        os.kill(parent, 0)
        out["probe"] = "allowed"
    except PermissionError as e:  # refused by the hook: its frame is in this traceback
        tb = e.__traceback__
        while tb is not None:
            frame = tb.tb_frame
            if frame.f_code.co_name == "hook":
                out["hook_frame"] = True
                for name, value in frame.f_locals.items():
                    if isinstance(value, (dict, list, set)) or getattr(value, "__closure__", None):
                        out["mutable"].append(name)
                        if isinstance(value, (dict, list, set)):
                            value.clear()
            tb = tb.tb_next
    except OSError as e:
        out["probe"] = type(e).__name__
    try:
        os.kill(parent, signal.SIGUSR1)
        out["signal"] = "sent"
    except Exception as e:
        out["signal"] = "refused: " + type(e).__name__
    try:
        top = os.open("/", os.O_RDONLY)
        fd = os.open(f"proc/{parent}/environ", os.O_RDONLY, dir_fd=top)
        out["dir_fd"] = os.read(fd, 4096).decode(errors="replace")
    except Exception as e:
        out["dir_fd"] = "refused: " + type(e).__name__
    try:
        with open(f"/proc/self/root/proc/{parent}/environ", "rb") as f:
            out["proc_root"] = f.read(4096).decode(errors="replace")
    except Exception as e:
        out["proc_root"] = "refused: " + type(e).__name__
    try:
        signal.pidfd_send_signal(os.pidfd_open(parent), signal.SIGUSR1)
        out["pidfd"] = "sent"
    except Exception as e:
        out["pidfd"] = "refused: " + type(e).__name__
    return out
"""


def test_the_hooks_own_frame_descriptors_and_pidfds_lead_nowhere(ex: SandboxExecutor) -> None:
    """Past the gc walk: the hook's frame (in a refused event's traceback), dir_fd, /proc/self/root, pidfds."""
    received: list[int] = []
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: received.append(signum))
    try:
        out = run(ex, HOOK_FRAME_AND_DESCRIPTORS, os.getpid())
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert out["hook_frame"] or not ex.audit_hooks, out
    assert out["mutable"] == [], out  # nothing the hook relies on can be changed from its frame
    for key in ("signal", "dir_fd", "proc_root", "pidfd"):
        assert out[key].startswith("refused"), (key, out[key])
    assert received == []
    still_works(ex)


def _unprivileged_command(uid: int) -> list[str] | None:
    """``unshare --mount`` + ``setpriv`` to ``uid``, with this interpreter made reachable for that user."""
    tools = [shutil.which(t) for t in ("unshare", "setpriv", "sh", "mount")]
    if not all(tools):
        return None
    needed = _interpreter_dirs() | {os.path.dirname(os.path.dirname(os.path.abspath(sys.executable)))}
    needed |= {str(Path(__file__).resolve().parents[1])}
    covers: dict[str, str] = {}
    for path in needed:
        for ancestor in _closed_ancestors(path):
            covers.setdefault(ancestor, "0755")
    lines = ["set -e"]
    for target in sorted(covers, key=lambda p: (p.count("/"), p)):
        keep = sorted({os.path.join(target, Path(p).relative_to(target).parts[0]) for p in needed
                       if p.startswith(target + "/")})  # fmt: skip
        lines += _cover(target, "0755", 1, keep)
    lines.append('exec "$@"')
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", "\n".join(lines), "sh",
            "setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--"]  # fmt: skip


@pytest.mark.slow
def test_the_suite_holds_for_an_unprivileged_user() -> None:
    if os.geteuid() != 0:
        pytest.skip("this run is itself unprivileged: the suite above already ran as an ordinary user")
    prefix = _unprivileged_command(UNUSED_UID)
    if prefix is None:
        pytest.skip("util-linux (unshare, setpriv, mount) is not installed")
    home = Path(tempfile.mkdtemp(prefix="feedprop-unprivileged-"))  # pytest's own tmp dirs are root's alone
    os.chown(home, UNUSED_UID, UNUSED_UID)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "PYTHONPATH": os.pathsep.join(p for p in sys.path if p.endswith("src")),
        "PYTHONDONTWRITEBYTECODE": "1",
        "FEEDPROP_HOSTILE_REQUIRE_NAMESPACES": "1",
    }
    pytest_args = [sys.executable, "-m", "pytest", str(Path(__file__)), "-q", "-p", "no:cacheprovider",
                   "--basetemp", str(home / "pytest"), "-k", "not unprivileged_user"]  # fmt: skip
    try:
        done = subprocess.run([*prefix, *pytest_args], env=env, cwd=home, capture_output=True, text=True, timeout=600)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    report = done.stdout[-4000:] + done.stderr[-2000:]
    assert done.returncode == 0, report
    counts = re.search(r"(\d+) passed", done.stdout)
    assert counts is not None and int(counts.group(1)) >= 20, report
