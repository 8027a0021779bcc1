"""The sandbox's worker process, and the data codec both sides of the boundary share.

:class:`feedprop.sandbox.SandboxExecutor` starts this file as a script (standard library only, so the
worker never imports feedprop or anything the caller loaded). The process stays warm: for every
call it forks a child, and the child

1. moves into a fresh private working directory and a process group of its own,
2. applies resource limits: address space, CPU time, file size, open files, and no new processes,
3. drops to an unprivileged user id of its own (when the worker runs as root),
4. installs audit hooks that refuse process creation, signals, sockets, ``ctypes`` and writes
   outside the working directory,
5. defines the function from its source, calls it, and writes the outcome back as JSON.

The worker itself only relays: it enforces the wall-clock deadline, kills whatever the child left
behind and removes the working directory. Requests and replies are one JSON object per line on
stdin/stdout; data crosses as JSON, never pickle (see :func:`encode`).

Example (the codec):
    >>> encode({"xs": (1, 2.5, None)})
    {'xs': {'__feedprop_tuple__': [1, 2.5, None]}}
    >>> decode(encode({"xs": (1, 2.5, None)}))
    {'xs': (1, 2.5, None)}
"""

from __future__ import annotations
import __future__

import builtins
import collections
import contextlib
import errno
import gc
import importlib
import io
import json
import os
import posix
import select
import shutil
import signal
import stat
import sys
import tempfile
import time
import types
from collections.abc import Callable
from typing import Any

try:
    import resource
except ImportError:  # not POSIX: only the codec of this module is usable there
    resource = None  # type: ignore[assignment]

#: Filename given to compiled trainable code, so traceback frames can be mapped back to it.
CODE_FILENAME = "<feedprop-code>"

TUPLE_TAG = "__feedprop_tuple__"
DICT_TAG = "__feedprop_dict__"
MAX_DEPTH = 200
PLAIN_TYPES = "str, int, float, bool, None, list, tuple, dict with str keys"

# Standard-library modules loaded once in the warm worker so that each call finds them ready.
PRELOAD = (
    "re", "math", "cmath", "json", "collections", "itertools", "functools", "operator", "string",
    "random", "statistics", "datetime", "_strptime", "time", "decimal", "fractions", "heapq",
    "bisect", "typing", "dataclasses", "textwrap", "unicodedata", "difflib", "copy", "enum",
    "numbers", "array", "struct", "base64", "hashlib", "binascii", "zlib", "csv", "html",
    "urllib.parse", "pprint", "calendar", "keyword", "contextlib", "types", "weakref",
    "encodings.idna", "fnmatch", "pathlib", "shlex",
)  # fmt: skip

# Imports refused inside the child: they reach below the interpreter, past the audit hook.
BLOCKED_IMPORTS = frozenset({"ctypes", "_ctypes", "cffi", "_cffi_backend"})

# Audited events refused inside the child, with the reason shown to whoever reads the feedback.
BLOCKED_EVENTS = {
    "os.fork": "starting processes",
    "os.forkpty": "starting processes",
    "os.exec": "starting programs",
    "os.posix_spawn": "starting processes",
    "os.spawn": "starting processes",
    "os.system": "starting programs",
    "subprocess.Popen": "starting programs",
    "pty.spawn": "starting programs",
    "os.kill": "sending signals",
    "os.killpg": "sending signals",
    "signal.pthread_kill": "sending signals",
    "socket.__new__": "network access",
    "socket.connect": "network access",
    "socket.bind": "network access",
    "socket.getaddrinfo": "network access",
    "socket.gethostbyname": "network access",
    "socket.sendto": "network access",
    "urllib.Request": "network access",
    "http.client.connect": "network access",
    "ctypes.dlopen": "loading native code",
    "ctypes.dlsym": "loading native code",
    "ctypes.cdata": "loading native code",
    "webbrowser.open": "starting programs",
    # Walking every object of the interpreter is how code would find this hook and switch it off.
    "gc.get_objects": "walking the interpreter's objects",
    "gc.get_referrers": "walking the interpreter's objects",
    "gc.get_referents": "walking the interpreter's objects",
    # A link inside the working directory could point anywhere; paths are checked without resolving links.
    "os.symlink": "creating links",
    "os.link": "creating links",
}
#: Entries of /proc/<pid>/ that lead to other files or processes (magic links, descriptors, threads).
PROC_MAGIC_LINKS = frozenset({"root", "cwd", "exe", "fd", "fdinfo", "map_files", "task", "ns"})
#: Attributes whose replacement would rewrite a function the guard rail relies on.
GUARDED_SETATTR = frozenset({"__code__", "__closure__", "__globals__", "__defaults__", "__kwdefaults__"})

# Audited events that change the file system, with the positions of their path arguments.
PATH_EVENTS = {
    "os.remove": (0,),
    "os.rmdir": (0,),
    "os.mkdir": (0,),
    "os.rename": (0, 1),
    "os.chmod": (0,),
    "os.chown": (0,),
    "os.link": (0, 1),
    "os.symlink": (0, 1),
    "os.truncate": (0,),
    "os.utime": (0,),
    "shutil.rmtree": (0,),
    "shutil.copyfile": (1,),
    "shutil.copytree": (1,),
    "shutil.move": (0, 1),
}
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


class NotPlainData(TypeError):
    """A value that cannot cross the sandbox boundary. ``path`` says where inside the value it sits."""

    def __init__(self, path: str, value: object, why: str = "") -> None:
        self.path = path
        self.type_name = type(value).__qualname__
        super().__init__(f"{path} is {why or 'a ' + self.type_name}, which cannot cross the sandbox boundary")


def encode(value: Any, path: str = "value", depth: int = 0) -> Any:
    """Turn plain data into JSON-ready data; tuples are tagged so they come back as tuples.

    Subclasses of the plain types cross as their base type (a ``namedtuple`` arrives as a ``tuple``).
    Raises :class:`NotPlainData` naming the offending position for anything else.
    """
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    if depth >= MAX_DEPTH:
        raise NotPlainData(path, value, f"nested more than {MAX_DEPTH} levels deep (or contains itself)")
    if isinstance(value, tuple):
        return {TUPLE_TAG: [encode(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [encode(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(value)]
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                why = f"a {type(key).__qualname__} dict key (keys must be str)"
                raise NotPlainData(f"{path} key {key!r}", key, why)
            out[str(key)] = encode(item, f"{path}[{key!r}]", depth + 1)
        if len(out) == 1 and (TUPLE_TAG in out or DICT_TAG in out):
            return {DICT_TAG: out}  # a genuine dict that looks like a tag is wrapped, so it stays a dict
        return out
    raise NotPlainData(path, value)


def decode(data: Any) -> Any:
    """Invert :func:`encode`."""
    if isinstance(data, list):
        return [decode(v) for v in data]
    if isinstance(data, dict):
        if len(data) == 1 and TUPLE_TAG in data:
            return tuple(decode(v) for v in data[TUPLE_TAG])
        if len(data) == 1 and DICT_TAG in data:
            return {k: decode(v) for k, v in data[DICT_TAG].items()}
        return {k: decode(v) for k, v in data.items()}
    return data


def annotations_flag() -> int:
    """Compiler flag of ``from __future__ import annotations``: annotations stay strings, never evaluated."""
    return __future__.annotations.compiler_flag


# ---------------------------------------------------------------------------------------------
# The child: runs one call of trainable code, then exits.
# ---------------------------------------------------------------------------------------------


class _BoundedText(io.StringIO):
    """Captured print output that stops growing at ``limit`` characters."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.room = limit
        self.dropped = 0

    def write(self, s: str) -> int:
        kept = s[: max(self.room, 0)]
        super().write(kept)
        self.room -= len(kept)
        self.dropped += len(s) - len(kept)
        return len(s)

    def text(self) -> str:
        suffix = f"\n[... {self.dropped} more characters not shown]" if self.dropped else ""
        return self.getvalue() + suffix


class _SelfSnapshot:
    """Stands in for ``self`` inside the sandbox: a read-only copy of the plain-data attributes read."""

    def __init__(self, values: dict[str, Any], missing: dict[str, str]) -> None:
        for key, value in values.items():
            object.__setattr__(self, key, value)
        object.__setattr__(self, "_feedprop_missing", missing)

    def __getattr__(self, attr: str) -> Any:
        missing = object.__getattribute__(self, "_feedprop_missing")
        reason = missing.get(attr, "it was not read as self.<name> in the code's source")
        raise AttributeError(
            f"self.{attr} is not available inside the sandbox: {reason}. Only plain-data attributes of self "
            "cross the boundary; pass other values as arguments, or run trusted code with InProcessExecutor()"
        )

    def __setattr__(self, attr: str, value: Any) -> None:
        raise AttributeError(
            f"cannot set self.{attr} inside the sandbox: changes to self cannot cross the boundary; "
            "return the new value instead"
        )

    def __repr__(self) -> str:
        return "<self: read-only snapshot inside the feedprop sandbox>"


#: Functions that reach other processes without raising an audit event, removed before the code runs.
UNAUDITED = (
    ("os", "pidfd_open"),
    ("posix", "pidfd_open"),
    ("signal", "pidfd_send_signal"),
    ("_signal", "pidfd_send_signal"),
)


def _drop_unaudited_calls() -> None:
    for module_name, attribute in UNAUDITED:
        module = sys.modules.get(module_name) or importlib.import_module(module_name)
        with contextlib.suppress(AttributeError):
            delattr(module, attribute)


AuditHook = Callable[[str, tuple[Any, ...]], None]


def _install_audit_hooks(workdir: str, own_pid: int) -> None:
    """The child's guard rail: audit hooks for refused events, for opening files, for changing them.

    Code can reach a hook's frame (through the traceback of an event it refused) and with it
    everything the hook uses, so each hook uses only what code cannot change: immutable data
    (strings, frozensets, read-only mappings) and functions written in C. No helper function, no
    module-level Python function (whose module globals code could patch), no mutable dict: each
    hook is self-contained, and the rail is split by hook, not by helper. No variable holds a hook
    once installed (its closure's cells could be rewritten). Every event goes to every hook, in
    this order. Paths are resolved lexically; creating links is refused, and so is opening a
    directory outside the working directory (whose descriptor could anchor ``dir_fd`` or
    ``/dev/fd`` paths).
    """
    sys.addaudithook(_event_hook())
    sys.addaudithook(_open_hook(workdir, own_pid))
    sys.addaudithook(_change_hook(workdir))


def _event_hook() -> AuditHook:
    """Refuses the events of :data:`BLOCKED_EVENTS`, rewriting functions, and :data:`BLOCKED_IMPORTS`."""
    blocked = types.MappingProxyType(dict(BLOCKED_EVENTS))
    blocked_imports = BLOCKED_IMPORTS
    guarded_setattr = GUARDED_SETATTR
    deny = PermissionError
    pure = "trainable code must be a pure computation on its arguments"

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event in blocked:
            raise deny(f"{event} is blocked inside the feedprop sandbox (no {blocked[event]}): {pure}")
        if event == "object.__setattr__":
            if len(args) > 1 and args[1] in guarded_setattr:
                why = "no rewriting functions at run time"
                raise deny(f"setting {args[1]} is blocked inside the feedprop sandbox ({why}): {pure}")
        elif event == "import":
            name = args[0] if args else ""
            if isinstance(name, str) and name.partition(".")[0] in blocked_imports:
                raise ImportError(f"import of {name!r} is blocked inside the feedprop sandbox")

    return hook


def _open_hook(workdir: str, own_pid: int) -> AuditHook:
    """Refuses opening another process's data, descriptor paths, and (outside ``workdir``) writing or directories."""
    magic = PROC_MAGIC_LINKS
    normpath = getattr(posix, "_path_normpath", None) or os.path.normpath  # C where the interpreter has it
    getcwd, fspath, stat = posix.getcwd, posix.fspath, posix.stat
    root = os.path.realpath(workdir)
    root_slash = root + "/"
    own = str(own_pid)
    write_flags = WRITE_FLAGS
    deny = PermissionError
    directory_bits, directory_mask = 0o040000, 0o170000

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event != "open":
            return
        path, mode, flags = (*args, None, None, None)[:3]
        if isinstance(path, int) or path is None:
            return  # an already-open descriptor: opening it was checked when it was opened
        text = fspath(path)
        if isinstance(text, bytes):
            text = text.decode("utf-8", "surrogateescape")
        resolved = normpath(text if text.startswith("/") else getcwd() + "/" + text)
        parts = resolved.split("/", 4)
        is_inside = resolved == root or resolved.startswith(root_slash) or resolved == "/dev/null"
        if parts[1] == "proc" and len(parts) > 2:
            other = parts[2].isdigit() and parts[2] != own
            if other or (len(parts) > 3 and parts[3] in magic and parts[2] in ("self", "thread-self", own)):
                raise deny(f"reading {resolved} is blocked inside the feedprop sandbox (another process's data)")
        if parts[1] == "dev" and len(parts) > 2 and parts[2] == "fd":
            raise deny(f"opening {resolved} is blocked inside the feedprop sandbox (descriptor paths)")
        writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or bool(
            isinstance(flags, int) and flags & write_flags
        )
        if writing and not is_inside:
            raise deny(
                f"writing {resolved} is blocked inside the feedprop sandbox: "
                "the code may write only inside its working directory"
            )
        if not is_inside:
            try:
                is_directory = stat(resolved).st_mode & directory_mask == directory_bits
            except OSError:
                is_directory = False
            if is_directory:
                raise deny(
                    f"opening the directory {resolved} is blocked inside the feedprop sandbox: "
                    "the code may open directories only inside its working directory"
                )

    return hook


def _change_hook(workdir: str) -> AuditHook:
    """Refuses the file-system changes of :data:`PATH_EVENTS` outside ``workdir``."""
    path_events = types.MappingProxyType(dict(PATH_EVENTS))
    normpath = getattr(posix, "_path_normpath", None) or os.path.normpath  # C where the interpreter has it
    getcwd, fspath = posix.getcwd, posix.fspath
    root = os.path.realpath(workdir)
    root_slash = root + "/"
    deny = PermissionError

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event not in path_events:
            return
        for i in path_events[event]:
            if i < len(args) and args[i] is not None and not isinstance(args[i], int):
                text = fspath(args[i])
                if isinstance(text, bytes):
                    text = text.decode("utf-8", "surrogateescape")
                resolved = normpath(text if text.startswith("/") else getcwd() + "/" + text)
                if not (resolved == root or resolved.startswith(root_slash)):
                    raise deny(
                        f"{event} on {resolved} is blocked inside the feedprop sandbox: "
                        "the code may change files only inside its working directory"
                    )

    return hook


#: Frames of the code kept in a failure report (the innermost ones).
KEPT_FRAMES = 200
#: A failure this many calls deep inside the code is reported as runaway recursion.
DEEP_RECURSION = 10_000
#: CPython's "error return without exception set" this many calls deep is a frame it could not allocate.
LOST_MEMORY_ERROR_DEPTH = 1_000


def code_frames(tb: Any, keep: int | None = KEPT_FRAMES) -> tuple[list[list[Any]], int]:
    """The innermost ``keep`` frames of the code in a traceback (all with None), and how many there were.

    Each frame is ``[lineno, function name]``. Walks the traceback without building a summary of
    every frame: a runaway recursion leaves a traceback of a million frames, and in the sandbox the
    memory limit that stopped it is still in force while the failure is reported.
    """
    kept: collections.deque[list[Any]] = collections.deque(maxlen=keep)
    depth = 0
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_filename == CODE_FILENAME:
            kept.append([tb.tb_lineno, code.co_name])
            depth += 1
        tb = tb.tb_next
    return list(kept), depth


def _failure(exc: BaseException, limits: dict[str, Any]) -> dict[str, Any]:
    """Describe an exception raised by the code: type, message and the frames inside the code."""
    try:
        frames, depth = code_frames(exc.__traceback__)
    except MemoryError:  # drop the code's frames to get memory back, and report without them
        exc.__traceback__ = None
        frames, depth = [], 0
    try:
        message = str(exc)
    except Exception:
        message = "<the exception's message could not be printed>"
    type_name = type(exc).__name__
    lineno = frames[-1][0] if frames else None
    limit = f"exceeded the {limits['memory_mb']} MB memory limit"
    if type(exc) is SystemError and depth >= LOST_MEMORY_ERROR_DEPTH and "without exception set" in message:
        # CPython 3.11 reports a frame it could not allocate this way instead of raising MemoryError
        # (also when the allocation fails inside an audit hook, which can happen well before
        # DEEP_RECURSION when the worker itself holds much of the memory limit).
        type_name, message = "MemoryError", f"{limit} (CPython: {message})"
    elif isinstance(exc, MemoryError) and not message:
        message = limit
    elif isinstance(exc, SystemExit):
        message = f"the code called sys.exit({exc.code!r}); return a value or raise an exception instead"
    elif isinstance(exc, SyntaxError) and exc.filename == CODE_FILENAME:
        lineno = exc.lineno
        message = str(exc.msg)
    if type_name == "MemoryError" and depth >= DEEP_RECURSION:
        message += f"; the code was {depth} calls deep: runaway recursion"
    return {"ok": False, "type": type_name, "message": message[:20_000], "frames": frames, "lineno": lineno}


def _unavailable_name_error(exc: NameError, unavailable: dict[str, str], withheld: dict[str, str]) -> None:
    """Rewrite a NameError for a global that exists in the caller but could not cross, or was withheld."""
    name = getattr(exc, "name", None)
    if isinstance(name, str) and name in withheld:
        exc.args = (withheld[name],)
    elif isinstance(name, str) and name in unavailable:
        exc.args = (
            f"global {name!r} is not available inside the sandbox: {unavailable[name]}. Pass the value as an "
            "argument, or run trusted code with InProcessExecutor()",
        )


def _execute(request: dict[str, Any], workdir: str, import_hint: str = "") -> dict[str, Any]:
    """Define and call the function (this runs in the child, under its limits)."""
    flags = annotations_flag()
    namespace: dict[str, Any] = {"__name__": "__feedprop_sandbox__", "__builtins__": builtins}
    # Helper functions the caller's code calls run here, with the globals they need; the code
    # sees only its own namespace.
    helper_namespace: dict[str, Any] = dict(namespace)
    unavailable, withheld, functions = _place_globals(request["globals"], namespace, helper_namespace)
    args = decode(request["args"])
    kwargs = decode(request["kwargs"])
    self_spec = request.get("self")
    if self_spec is not None:
        args[self_spec["index"]] = _SelfSnapshot(decode(self_spec["attrs"]), self_spec["missing"])
    limits = request["limits"]
    if request.get("audit", True):
        _drop_unaudited_calls()
        _install_audit_hooks(workdir, os.getpid())
    try:
        _define_functions(functions, namespace, helper_namespace, flags)
        exec(compile(request["source"], CODE_FILENAME, "exec", flags, dont_inherit=True), namespace)
        fn = namespace.get(request["name"])
        if not callable(fn):
            return {
                "ok": False,
                "type": "NameError",
                "message": f"the code does not define a function named {request['name']!r}",
                "frames": [],
                "lineno": None,
            }
        result = fn(*args, **kwargs)
    except BaseException as e:
        if isinstance(e, NameError):
            _unavailable_name_error(e, unavailable, withheld)
        if isinstance(e, ModuleNotFoundError) and import_hint:
            e.msg = f"{e.msg}; {import_hint}"
        return _failure(e, limits)
    return _result(result)


#: A function that crosses by source: (global name, name it defines, source, scope).
SentFunction = tuple[str, str, str, str]


def _place_globals(
    specs: list[tuple[str, dict[str, Any]]], namespace: dict[str, Any], helper_namespace: dict[str, Any]
) -> tuple[dict[str, str], dict[str, str], list[SentFunction]]:
    """Put the globals that crossed into the code's namespace, the helpers' namespace, or both.

    Returns why each global that could not be placed is unavailable, the reasons of the withheld
    ones, and the functions that crossed by source (defined later, under the audit hooks).
    """
    unavailable: dict[str, str] = {}
    withheld: dict[str, str] = {}
    functions: list[SentFunction] = []
    for name, spec in specs:
        where = spec.get("scope", "both")
        targets = [ns for ns, w in ((namespace, "code"), (helper_namespace, "helpers")) if where in (w, "both")]
        if "value" in spec:
            value = decode(spec["value"])
            for ns in targets:
                ns[name] = value
        elif "module" in spec or "ref" in spec:
            module_name, _, qualname = (spec.get("module") or spec["ref"]).partition(":")
            try:
                obj: Any = importlib.import_module(module_name)
                for part in filter(None, qualname.split(".")):
                    obj = getattr(obj, part)
                for ns in targets:
                    ns[name] = obj
            except Exception as e:
                what = spec.get("what", f"it comes from {module_name}")
                unavailable[name] = f"{what}, and importing {module_name} there failed ({type(e).__name__}: {e})"
        elif "function" in spec:
            functions.append((name, spec["def"], spec["function"], where))
        elif "withheld" in spec:
            withheld[name] = str(spec["withheld"])
        else:
            unavailable[name] = spec.get("unavailable", "it cannot cross the boundary")
    return unavailable, withheld, functions


def _define_functions(
    functions: list[SentFunction], namespace: dict[str, Any], helper_namespace: dict[str, Any], flags: int
) -> None:
    """Define the functions that crossed by source, in the helpers' namespace, and place them."""
    for name, def_name, source, where in functions:
        exec(compile(source, f"<feedprop-global {name}>", "exec", flags, dont_inherit=True), helper_namespace)
        defined = helper_namespace[def_name]
        if where != "code":
            helper_namespace[name] = defined
        if where != "helpers":
            namespace[name] = defined


def _result(result: Any) -> dict[str, Any]:
    """The reply for a value the code returned: encoded, or a ``TypeError`` if it is not plain data."""
    try:
        return {"ok": True, "result": encode(result, "the return value")}
    except NotPlainData as e:
        message = f"{e}: return plain data ({PLAIN_TYPES})"
    except Exception as e:
        message = f"the return value could not be encoded ({type(e).__name__}: {e})"
    return {"ok": False, "type": "TypeError", "message": message, "frames": [], "lineno": None}


def _apply_limits(limits: dict[str, Any]) -> None:
    def cap(which: int, value: int) -> None:
        hard = resource.getrlimit(which)[1]
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(which, (value, value))

    page = os.sysconf("SC_PAGE_SIZE")
    with open("/proc/self/statm") as f:
        baseline = int(f.read().split()[0]) * page
    cap(resource.RLIMIT_AS, baseline + int(limits["memory_mb"]) * 1024 * 1024)
    cpu = int(limits["cpu_seconds"])
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    cap(resource.RLIMIT_FSIZE, int(limits["memory_mb"]) * 1024 * 1024)
    cap(resource.RLIMIT_NOFILE, 256)
    cap(resource.RLIMIT_CORE, 0)
    # No new processes or threads: effective for any user id but root, which the child drops first.
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))


def _child(request: dict[str, Any], result_fd: int, workdir: str, config: dict[str, Any], close: list[int]) -> None:
    """Body of the forked child. Never returns."""
    status = 0
    try:
        os.setpgid(0, 0)
        for fd in close:
            with contextlib.suppress(OSError):
                os.close(fd)
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.chdir(workdir)
        os.environ["HOME"] = os.environ["TMPDIR"] = workdir
        tempfile.tempdir = workdir
        limits = request["limits"]
        out, err = _BoundedText(limits["output_chars"]), _BoundedText(limits["output_chars"])
        sys.stdout, sys.stderr = out, err
        uid = config.get("uid")
        if config.get("drop_uid") and isinstance(uid, int):
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
        _apply_limits(limits)
        hint = ""
        if config.get("drop_uid") and not config.get("pid_namespace"):
            hint = (
                "the code runs as an unprivileged user that may not read this interpreter's files, so only "
                "modules the caller has imported are sure to be available"
            )
        reply = _execute(request, workdir, hint)
        reply["stdout"], reply["stderr"] = out.text(), err.text()
    except BaseException as e:  # the sandbox itself failed before or after the code ran
        reply = {"ok": False, "type": "SandboxError", "message": f"{type(e).__name__}: {e}", "frames": []}
    try:
        data = json.dumps(reply).encode()
        view = memoryview(data)
        while view:
            view = view[os.write(result_fd, view) :]
    except BaseException:
        status = 70
    os._exit(status)


# ---------------------------------------------------------------------------------------------
# The warm worker: relays requests, forks one child per call, enforces the deadline.
# ---------------------------------------------------------------------------------------------

SIGNAL_NOTES = {
    "SIGSEGV": "segmentation fault; often recursion too deep for the C stack",
    "SIGABRT": "aborted",
    "SIGBUS": "bus error",
    "SIGILL": "illegal instruction",
    "SIGFPE": "arithmetic fault",
    "SIGKILL": "killed from outside, most likely by the system for using too much memory",
}


def _describe_exit(status: int, cpu_used: float, limits: dict[str, Any]) -> tuple[str, str]:
    code = os.waitstatus_to_exitcode(status)
    if code >= 0:
        how = "os._exit" if code else "closing the result channel"
        return "WorkerDied", f"the code ended its process with exit status {code} before returning a result ({how})"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    if name == "SIGXCPU" or (name == "SIGKILL" and cpu_used >= limits["cpu_seconds"]):
        return "TimeoutError", f"exceeded {limits['cpu_seconds']} s of CPU time"
    note = SIGNAL_NOTES.get(name)
    return "WorkerDied", f"the code's process was killed by {name}" + (f" ({note})" if note else "")


def _kill_leftovers(child: int, in_pid_namespace: bool) -> None:
    """Kill the child and anything it started; in a PID namespace of our own that is everyone but us."""
    with contextlib.suppress(OSError):
        os.killpg(child, signal.SIGKILL)
    if in_pid_namespace:
        for entry in os.listdir("/proc"):
            if entry.isdigit() and int(entry) != 1:
                with contextlib.suppress(OSError):
                    os.kill(int(entry), signal.SIGKILL)
    while True:  # reap: as PID 1 we also inherit every orphan
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _wait_child(pid: int, result_fd: int, limits: dict[str, Any]) -> dict[str, Any]:
    """Collect the child's reply within the wall-clock deadline; describe its death if it sent none."""
    deadline = time.monotonic() + float(limits["timeout"])
    cap = int(limits["result_bytes"])
    try:
        exit_fd: int | None = os.pidfd_open(pid)
    except (AttributeError, OSError):
        exit_fd = None
    chunks: list[bytes] = []
    verdict, reading, reaped = _collect(pid, result_fd, exit_fd, deadline, cap, chunks)
    if verdict:
        for kill in (os.killpg, os.kill):  # the group may not exist yet if the child never got to run
            with contextlib.suppress(OSError):
                kill(pid, signal.SIGKILL)
    status, cpu_used = reaped or _reap(pid)
    if exit_fd is not None:
        os.close(exit_fd)
    if not verdict and reading:  # the child has exited: take what is left in the pipe
        verdict = _drain(result_fd, chunks, cap)
    if verdict == "timeout":
        return _worker_failure("TimeoutError", f"exceeded {float(limits['timeout'])} s wall clock")
    if verdict == "too_big":
        return _worker_failure("ValueError", f"the result is larger than {cap // (1 << 20)} MB; return less data")
    if status == 0 and chunks:
        try:
            reply: dict[str, Any] = json.loads(b"".join(chunks))
            return reply
        except ValueError:
            return _worker_failure("WorkerDied", "the code's process sent back something that is not a reply")
    return _worker_failure(*_describe_exit(status, cpu_used, limits))


def _collect(
    pid: int, result_fd: int, exit_fd: int | None, deadline: float, cap: int, chunks: list[bytes]
) -> tuple[str, bool, tuple[int, float] | None]:
    """Read the child's reply into ``chunks`` until the child exits, the deadline passes or the reply is too big.

    Returns the verdict (``""``, ``"timeout"`` or ``"too_big"``), whether the pipe may hold more,
    and the child's (status, CPU seconds) when polling (no pidfd) has already reaped it.
    """
    size, reading = 0, True
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return "timeout", reading, None
        watch = ([result_fd] if reading else []) + ([exit_fd] if exit_fd is not None else [])
        ready, _, _ = select.select(watch, [], [], remaining if exit_fd is not None else min(remaining, 0.005))
        if reading and result_fd in ready:
            data = os.read(result_fd, 1 << 16)
            reading = bool(data)
            size += len(data)
            if size > cap:
                return "too_big", reading, None
            chunks.append(data)
        if exit_fd is not None:
            if exit_fd in ready:
                return "", reading, None
        else:  # no pidfd (old kernel, other POSIX): poll
            done, status, usage = os.wait4(pid, os.WNOHANG)
            if done == pid:
                return "", reading, (status, usage.ru_utime + usage.ru_stime)


def _reap(pid: int) -> tuple[int, float]:
    """Wait for the child to end: its status and the CPU seconds it used (0 and 0.0 if already reaped)."""
    status, cpu_used = 0, 0.0
    with contextlib.suppress(ChildProcessError):
        _, status, usage = os.wait4(pid, 0)
        cpu_used = usage.ru_utime + usage.ru_stime
    return status, cpu_used


def _drain(result_fd: int, chunks: list[bytes], cap: int) -> str:
    """Add to ``chunks`` what is left in the pipe of an exited child: ``"too_big"`` past ``cap``, else ``""``."""
    size = sum(len(chunk) for chunk in chunks)
    os.set_blocking(result_fd, False)
    with contextlib.suppress(BlockingIOError):
        while data := os.read(result_fd, 1 << 16):
            chunks.append(data)
            size += len(data)
            if size > cap:
                return "too_big"
    return ""


def _worker_failure(type_name: str, message: str) -> dict[str, Any]:
    return {"ok": False, "type": type_name, "message": message, "frames": [], "lineno": None}


def _private_scratch(dirs: list[str]) -> list[str]:
    """Those of ``dirs`` that are tmpfs mounts made for this worker (never anything of the host's)."""
    ours = set()
    with contextlib.suppress(OSError), open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if " - " in line and len(fields) > 4:
                after = line.split(" - ", 1)[1].split()
                if after[:2] == ["tmpfs", "feedprop-sandbox"]:
                    ours.add(fields[4])
    return [d for d in dirs if d in ours]


def _wipe(dirs: list[str]) -> None:
    """Empty the private scratch directories so nothing one call leaves behind reaches the next.

    Only what lies on the scratch tmpfs itself is removed. Host directories bound back into it
    (the interpreter's or the project's, when they live under /tmp) are other filesystems: the
    walk never enters them and never deletes them.
    """
    for d in dirs:
        with contextlib.suppress(OSError):
            _empty_same_filesystem(d)


def _empty_same_filesystem(top: str) -> None:
    device = os.lstat(top).st_dev
    doomed_dirs: list[str] = []
    for root, subdirs, files in os.walk(top, topdown=True, onerror=None, followlinks=False):
        keep = []
        for name in subdirs:
            path = os.path.join(root, name)
            with contextlib.suppress(OSError):
                st = os.lstat(path)
                if stat.S_ISLNK(st.st_mode):
                    os.unlink(path)  # the link itself, never what it points to
                elif st.st_dev == device:
                    keep.append(name)
                    doomed_dirs.append(path)
        subdirs[:] = keep  # a mount point (another device) is neither entered nor removed
        for name in files:
            path = os.path.join(root, name)
            with contextlib.suppress(OSError):
                if os.lstat(path).st_dev == device:
                    os.unlink(path)
    for path in reversed(doomed_dirs):  # deepest first
        with contextlib.suppress(OSError):
            os.rmdir(path)


def _call(
    request: dict[str, Any], config: dict[str, Any], protocol_fds: list[int], notify: Callable[[int], None]
) -> dict[str, Any]:
    for module in request.get("modules", ()):
        with contextlib.suppress(Exception):  # failures show up as a clear NameError in the child
            importlib.import_module(module)
    workdir = tempfile.mkdtemp(prefix="call-", dir=config["base_dir"])
    if config.get("drop_uid"):
        os.chown(workdir, config["uid"], config["uid"])
    read_fd, write_fd = os.pipe()
    try:
        gc.freeze()  # the child's collections then skip the worker's objects instead of copying their pages
        pid = os.fork()
        if pid == 0:
            _child(request, write_fd, workdir, config, [*protocol_fds, read_fd])
        gc.unfreeze()  # the worker itself keeps collecting as usual
        with contextlib.suppress(OSError):  # also done by the child; whichever runs first wins the race
            os.setpgid(pid, pid)
        os.close(write_fd)
        notify(pid)
        try:
            return _wait_child(pid, read_fd, request["limits"])
        finally:
            _kill_leftovers(pid, config["pid_namespace"])
    finally:
        os.close(read_fd)
        with contextlib.suppress(OSError):
            os.close(write_fd)
        shutil.rmtree(workdir, ignore_errors=True)
        _wipe(config["scratch_dirs"])


def _can_drop_privileges(uid: int) -> bool:
    """Try, in a throwaway child, to switch to ``uid``: root in the initial user namespace can."""
    if os.geteuid() != 0:
        return False
    pid = os.fork()
    if pid == 0:
        try:
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            os._exit(0 if os.getuid() == uid else 1)
        except BaseException:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    return status == 0


def _no_new_privs() -> bool:
    with contextlib.suppress(OSError), open("/proc/self/status") as f:
        return any(line.split() == ["NoNewPrivs:", "1"] for line in f)
    return False


def main() -> None:
    """Serve requests from stdin until it closes."""
    requests = os.fdopen(os.dup(0), "rb")
    replies = os.dup(1)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.close(null)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # a vanished parent ends the worker

    def send(obj: dict[str, Any]) -> None:
        view = memoryview(json.dumps(obj).encode() + b"\n")
        while view:
            view = view[os.write(replies, view) :]

    init = json.loads(requests.readline() or b"{}")
    for module in PRELOAD:
        with contextlib.suppress(Exception):
            importlib.import_module(module)
    config: dict[str, Any] = {
        "uid": init.get("uid"),
        "base_dir": init.get("base_dir") or tempfile.gettempdir(),
        "pid_namespace": os.getpid() == 1,
        "scratch_dirs": _private_scratch(list(init.get("scratch_dirs", ()))),
    }
    config["drop_uid"] = isinstance(config["uid"], int) and _can_drop_privileges(config["uid"])
    protections = ["env_scrubbed", "rlimits", "private_workdir"]
    if config["pid_namespace"]:
        protections.append("pid_namespace")
    protections += [p for p in os.environ.get("FEEDPROP_SANDBOX_NAMESPACES", "").split(",") if p]
    if config["drop_uid"]:
        protections.append("separate_uid")
    if _no_new_privs():
        protections.append("no_new_privs")
    send({"op": "ready", "protections": sorted(protections)})
    protocol_fds = [requests.fileno(), replies]

    def notify(pid: int) -> None:
        if not config["pid_namespace"]:  # the parent cannot address processes inside a PID namespace
            send({"op": "started", "pid": pid})

    while line := requests.readline():
        request = json.loads(line)
        try:
            reply = _call(request, config, protocol_fds, notify)
        except Exception as e:  # keep serving: report the worker's own trouble as a failure
            reply = _worker_failure("SandboxError", f"{type(e).__name__}: {e}")
        reply["id"] = request.get("id")
        try:
            send(reply)
        except OSError as e:
            if e.errno != errno.EPIPE:
                raise
            break
    if init.get("remove_base_dir"):
        shutil.rmtree(config["base_dir"], ignore_errors=True)


if __name__ == "__main__":
    main()
