"""Confinement for the child that runs an artifact: running an artifact is running code.

The child (:mod:`zoo.export.isolated`) calls :data:`CONFINE_SOURCE`'s ``confine(work,
memory)`` first thing, before it imports a runtime or opens the artifact:

* a memory ceiling: ``RLIMIT_DATA`` (private writable memory: heap and anonymous maps, what a
  hostile program grows; unlike ``RLIMIT_AS`` it does not count the address space that a
  CUDA-enabled torch reserves for its libraries);
* ``PR_SET_NO_NEW_PRIVS``, then, on Linux, Landlock (kernel 5.13+): read and execute
  anywhere, write only inside the child's private folder (and ``/dev/null``); with Landlock
  ABI 4+ no TCP bind or connect; with ABI 6+ no signals to, and no abstract sockets of,
  processes outside the sandbox;
* no network: a fresh network namespace where the kernel allows one (``unshare``), and a
  seccomp filter that fails every ``socket()`` (x86_64, aarch64; also ``io_uring_setup``),
  else Landlock's TCP rules.

On macOS the child is started under ``sandbox-exec`` with a profile that denies writes
outside its folder and all network (:func:`macos_prefix`). Where nothing can confine it, the
child says so and the verdict reads ``VERIFIED (unconfined: reason)``.

The confinement code is sent to the child as source text, like the runtime modules: the child
imports neither zoo nor torchvision.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

#: Default memory ceiling of the child (``--memory-limit`` raises it).
DEFAULT_MEMORY_LIMIT = 8 << 30

CONFINE_SOURCE = r'''
import ctypes, os, sys

_SYS = {"x86_64": (444, 445, 446), "aarch64": (444, 445, 446), "arm64": (444, 445, 446),
        "riscv64": (444, 445, 446), "ppc64le": (444, 445, 446), "s390x": (444, 445, 446)}
_FS = [1 << i for i in range(13)]  # execute .. make_sym: ABI 1
_READ = (1 << 0) | (1 << 2) | (1 << 3)  # execute, read_file, read_dir
_CLONE_NEWUSER, _CLONE_NEWNET = 0x10000000, 0x40000000


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("fs", ctypes.c_uint64), ("net", ctypes.c_uint64), ("scoped", ctypes.c_uint64)]


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed", ctypes.c_uint64), ("fd", ctypes.c_int32)]


def _memory(limit):
    import resource
    try:
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
        return None
    except (ValueError, OSError) as exc:
        return "memory ceiling not set: " + str(exc)


def _network(libc):
    for flags in (_CLONE_NEWNET, _CLONE_NEWUSER | _CLONE_NEWNET):
        if libc.unshare(flags) == 0:
            return "network namespace"
    return None


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8),
                ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


_SECCOMP = {"x86_64": (0xC000003E, 41), "aarch64": (0xC00000B7, 198)}  # audit arch, socket


def _no_sockets(libc):
    """seccomp (needs no_new_privs): socket() and io_uring_setup() fail with EACCES, and so
    does every system call of another ABI (x32, i386). No TCP, UDP, Unix or netlink socket
    can be made, network namespace or not."""
    import platform
    if platform.machine() not in _SECCOMP:
        return False
    arch, socket_nr = _SECCOMP[platform.machine()]
    deny, allow = 0x00050000 | 13, 0x7FFF0000  # SECCOMP_RET_ERRNO | EACCES, SECCOMP_RET_ALLOW
    ld, jeq, jge, ret = 0x20, 0x15, 0x35, 0x06  # BPF_LD|W|ABS, JMP|JEQ|K, JMP|JGE|K, RET|K
    program = [(ld, 0, 0, 4), (jeq, 1, 0, arch), (ret, 0, 0, deny),  # A = arch
               (ld, 0, 0, 0), (jge, 3, 0, 0x40000000),  # A = nr; x32 system calls
               (jeq, 2, 0, socket_nr), (jeq, 1, 0, 425),  # socket, io_uring_setup
               (ret, 0, 0, allow), (ret, 0, 0, deny)]
    filters = (_SockFilter * len(program))(*[_SockFilter(*ins) for ins in program])
    prog = _SockFprog(len(program), filters)
    return libc.prctl(22, 2, ctypes.byref(prog), 0, 0) == 0  # PR_SET_SECCOMP, MODE_FILTER


def _landlock(libc, work):
    import platform
    numbers = _SYS.get(platform.machine())
    if numbers is None:
        return None, "Landlock: unknown syscall numbers on " + platform.machine()
    create, add, restrict = numbers
    libc.syscall.restype = ctypes.c_long
    abi = libc.syscall(create, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    if abi < 1:
        return None, "Landlock is not available (kernel 5.13+ with landlock in the LSM list)"
    fs = sum(_FS) | ((1 << 13) if abi >= 2 else 0) | ((1 << 14) if abi >= 3 else 0) | \
        ((1 << 15) if abi >= 5 else 0)
    net = 3 if abi >= 4 else 0  # bind_tcp, connect_tcp: no rule allows either
    scoped = 3 if abi >= 6 else 0  # abstract unix sockets, signals
    attr = _RulesetAttr(fs, net, scoped)
    size = 24 if abi >= 6 else (16 if abi >= 4 else 8)
    ruleset = libc.syscall(create, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    if ruleset < 0:
        return None, "Landlock ruleset refused (errno %d)" % ctypes.get_errno()
    try:
        for path, allowed in (("/", _READ), (work, fs), ("/dev/null", (1 << 1) | (1 << 2) |
                                                         ((1 << 14) if abi >= 3 else 0))):
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            try:
                if path == "/dev/null":
                    allowed &= ~((1 << 0) | (1 << 3))
                rule = _PathBeneath(allowed, fd)
                if libc.syscall(add, ruleset, 1, ctypes.byref(rule), 0) != 0:
                    return None, "Landlock rule for %s refused (errno %d)" % (
                        path, ctypes.get_errno())
            finally:
                os.close(fd)
        if libc.syscall(restrict, ruleset, 0) != 0:
            return None, "Landlock restriction refused (errno %d)" % ctypes.get_errno()
    finally:
        os.close(ruleset)
    return abi, None


def confine(work, memory):
    """Confine this process (see zoo.export.sandbox); returns what was applied."""
    info = {"memory_limit": memory, "filesystem": None, "network": None, "problems": []}
    why = _memory(memory) if memory else None
    if why:
        info["problems"].append(why)
    if os.environ.get("ZOO_SANDBOX") == "macos":  # sandbox-exec started us, already confined
        info["filesystem"] = info["network"] = "sandbox-exec"
        return info
    if not sys.platform.startswith("linux"):
        info["problems"].append("no confinement on " + sys.platform)
        return info
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
        info["problems"].append("no_new_privs refused")
    info["network"] = _network(libc)
    if _no_sockets(libc):
        info["network"] = " + ".join(filter(None, [info["network"], "seccomp (no sockets)"]))
    abi, why = _landlock(libc, work)
    if abi is None:
        info["problems"].append(why)
    else:
        info["filesystem"] = "landlock ABI %d" % abi
        if info["network"] is None and abi >= 4:
            info["network"] = "landlock ABI %d (TCP)" % abi
    if info["network"] is None:
        info["problems"].append("network not confined")
    return info
'''

MACOS_PROFILE = """(version 1)
(allow default)
(deny network*)
(deny file-write*)
(allow file-write* (subpath "{work}") (literal "/dev/null"))
"""


def macos_prefix(work: Path) -> list[str]:
    """``sandbox-exec -p PROFILE`` for the child on macOS, or [] where it is unavailable."""
    if sys.platform != "darwin" or shutil.which("sandbox-exec") is None:
        return []
    profile = MACOS_PROFILE.format(work=str(work.resolve()).replace('"', ""))
    return ["sandbox-exec", "-p", profile]


def unconfined_reason(info: dict[str, object] | None) -> str | None:
    """None when the child ran confined (filesystem, network and memory), else why not."""
    if info is None:
        return "the child reported no confinement"
    problems = [str(p) for p in info.get("problems") or []]  # type: ignore[attr-defined]
    if info.get("filesystem") is None and not problems:
        problems.append("no file-system confinement")
    return "; ".join(problems) or None


def copy_artifact(artifact: Path, folder: Path) -> Path:
    """A private copy of ``artifact`` (a file or a folder) inside ``folder``."""
    dest = folder / "artifact" / artifact.name
    dest.parent.mkdir(parents=True)
    if artifact.is_dir():
        shutil.copytree(artifact, dest, symlinks=False)
    else:
        shutil.copyfile(artifact, dest)
    return dest


def artifact_digest(path: Path) -> str:
    """The manifest's hash of an artifact: the file's sha256, or a folder's tree digest."""
    from zoo._core.fs import sha256_file

    if path.is_file():
        return sha256_file(path)
    from zoo.export.manifest import FileFacts, tree_digest

    files = []
    for root, _dirs, names in os.walk(path):
        for name in names:
            item = Path(root, name)
            files.append(FileFacts(path=item.relative_to(path).as_posix(),
                                   size=item.stat().st_size, sha256=sha256_file(item)))
    return tree_digest(files)
