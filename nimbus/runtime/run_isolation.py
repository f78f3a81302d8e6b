"""What a run's script can reach on the local platform and instance agents: decided by the worker, applied by the runner.

The platform's state (its home: admin credentials, the signing key, the secrets key, the database, the
blobs; every run's job folder) must stay out of the script's reach. One of three mechanisms does it:

- `uid`: the platform runs as root and the run's interpreter is reachable by any user. The script runs
  under a uid/gid of its own, drawn per run from a reserved range (no passwd entry), with no
  supplementary groups and umask 077. Its code, HOME and TMPDIR folders are chowned to that uid; the
  job folder around them, the jobs folder and the platform's home (and the folders on the way to the
  environments) are traverse-only (0711); everything else in the home is owner-only.
- `landlock`: otherwise, on Linux with Landlock (5.13+). The script is confined to read the system
  folders, its interpreter and the paths it imports from, and to write its code, HOME and TMPDIR folders
  and /dev; nothing at or under the platform's home or the jobs folder is granted besides. Run as root,
  it also loses every capability (so open-by-handle and raw devices cannot go round the rules). With
  Landlock 6+ it cannot signal processes outside its own sandbox.
- `none`: neither is available; the platform says so at start-up and the script runs as the
  platform's own user.

The worker hands the runner its decision in NIMBUS_RUN_ISOLATION (JSON); a runner without it (AWS
Batch, whose container is the boundary) starts the script as it always did. See docs/execution.md,
"What a run can reach". Standard library only.
"""
from __future__ import annotations

import contextlib
import ctypes
import json
import os
import random
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Mapping

ENV = "NIMBUS_RUN_ISOLATION"
UID_FIRST, UID_COUNT = 1_900_000_000, 1_000_000  # above systemd's container range, below 2**31
SYSTEM_READ = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt", "/run", "/proc", "/sys")
SYSTEM_WRITE = ("/dev",)  # /dev/null, /dev/shm (multiprocessing's semaphores), ttys
RUN_FOLDERS = ("home", "tmp")  # beside the job's code folder: the script's HOME and TMPDIR

# Landlock (include/uapi/linux/landlock.h); the syscall numbers are the same on every architecture.
_CREATE_RULESET, _ADD_RULE, _RESTRICT_SELF = 444, 445, 446
_CREATE_RULESET_VERSION, _RULE_PATH_BENEATH = 1, 1
_EXECUTE, _WRITE_FILE, _READ_FILE, _READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
_MAKE_AND_REMOVE = sum(1 << bit for bit in range(4, 13))  # remove dir/file, make char/dir/reg/sock/fifo/block/sym
_REFER, _TRUNCATE, _IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15  # Landlock ABI 2, 3 and 5
_FILE_ONLY = _EXECUTE | _WRITE_FILE | _READ_FILE | _TRUNCATE | _IOCTL_DEV  # the rights a rule on a file may hold
_SCOPE_SIGNAL = 1 << 1  # ABI 6
_PR_SET_NO_NEW_PRIVS, _PR_CAPBSET_DROP = 38, 24
_LAST_CAPABILITY = 63


class IsolationError(OSError):
    """The run's confinement could not be set up; the script is not started without it."""


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


_libc = ctypes.CDLL(None, use_errno=True)


# The SDK a script imports: an editable install maps it from outside sys.path (an import hook in site-packages)
SDK_FOLDER = Path(__file__).resolve().parents[1]


def landlock_abi() -> int:
    """The kernel's Landlock ABI version; 0 when it has none (older than 5.13, disabled, or not Linux)."""
    if not sys.platform.startswith("linux"):
        return 0
    version = _libc.syscall(_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(_CREATE_RULESET_VERSION))
    return max(int(version), 0)


# --- the decision (in the worker) -------------------------------------------------------------------
@dataclass(frozen=True)
class Isolation:
    """How this worker's runs are confined, and why that mechanism."""

    mechanism: str  # "uid", "landlock" or "none"
    reason: str
    protected: tuple[str, ...] = ()  # the platform's folders: nothing at or under them is granted (landlock)...
    landlock_abi: int = 0
    shared: tuple[str, ...] = ()  # ...but what is under these (the environments), read-only

    @property
    def warning(self) -> str | None:
        if self.mechanism != "none":
            return None
        return ("runs are NOT isolated from the platform: their scripts run as this platform's user and can read "
                f"its credentials, signing key, secrets key, database and other runs' folders ({self.reason}). "
                "Run the platform as root, or on Linux 5.13+ with Landlock enabled; see docs/execution.md, "
                "\"What a run can reach\".")

    @property
    def notice(self) -> str:
        """The line `nimbus up` and `nimbus agent` print at start-up."""
        if self.warning:
            return f"WARNING: {self.warning}"
        if self.mechanism == "uid":
            return f"runs are isolated: each run's script runs under a uid of its own ({self.reason})"
        return f"runs are isolated: each run's script is confined by Landlock ({self.reason})"


def decide(python: str, protected: Iterable[os.PathLike | str], opened: Iterable[os.PathLike | str],
           shared: Iterable[os.PathLike | str] = (), *, euid: int | None = None, abi: int | None = None,
           search_path: Iterable[str] | None = None) -> Isolation:
    """The mechanism for runs started with `python`. `protected`: the platform's folders (its home, the jobs
    folder); `opened`: the folders the uid mechanism makes traversable (the jobs and environments folders);
    `shared`: those a run may read (the environments). The keyword arguments stand for the machine's facts
    (effective uid, Landlock ABI, the runner's sys.path)."""
    euid = os.geteuid() if euid is None else euid
    abi = landlock_abi() if abi is None else abi
    protected = tuple(str(Path(p).absolute()) for p in protected)
    shared = tuple(str(Path(p).absolute()) for p in shared)
    if euid == 0:
        blocked = _first_unreachable(python, list(sys.path if search_path is None else search_path),
                                     [Path(p).absolute() for p in opened], protected)
        if blocked is None:
            return Isolation("uid", "the platform runs as root", protected, abi, shared)
        why = f"root, but {blocked} is closed to other users, so a run's own uid could not reach its interpreter"
    else:
        why = "the platform does not run as root"
    if abi >= 1:
        return Isolation("landlock", f"{why}; Landlock ABI {abi}", protected, abi, shared)
    return Isolation("none", f"{why}, and this kernel has no Landlock (Linux 5.13+)", protected, 0, shared)


def _first_unreachable(python: str, search_path: list[str], opened: list[Path], protected: tuple[str, ...]) -> str | None:
    """The first folder a user other than root cannot pass on the way to the interpreter, the paths it imports
    from, or the folders the worker opens (those and the platform's folders are made traversable, not checked)."""
    managed = {str(p) for p in opened} | set(protected)
    targets = [Path(python).absolute(), Path(os.path.realpath(python)), *_python_prefixes(python), *opened]
    targets += [Path(entry) for entry in search_path if entry and os.path.exists(entry)] + [SDK_FOLDER]
    for target in targets:
        for folder in [*reversed(target.parents), target]:
            if str(folder) in managed or any(str(folder).startswith(m + os.sep) for m in managed):
                break  # from here on the worker sets the modes itself
            try:
                mode = os.stat(folder).st_mode
            except OSError:
                break
            if stat.S_ISDIR(mode) and not mode & stat.S_IXOTH:
                return str(folder)
    return None


def _python_prefixes(python: str) -> list[Path]:
    """The interpreter's installation: its venv (bin/..) and the real binary's prefix."""
    found = [Path(python).absolute().parent.parent, Path(os.path.realpath(python)).parent.parent]
    return [p for p in dict.fromkeys(found) if p != Path("/")]


# --- a run's confinement (the worker makes it, the runner applies it) -------------------------------
@dataclass(frozen=True)
class Confinement:
    mechanism: str
    uid: int | None = None
    protected: tuple[str, ...] = ()
    drop_capabilities: bool = False
    shared: tuple[str, ...] = ()

    def to_env(self) -> str:
        return json.dumps({"mechanism": self.mechanism, "uid": self.uid, "protected": list(self.protected),
                           "drop_capabilities": self.drop_capabilities, "shared": list(self.shared)})

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> "Confinement | None":
        text = environ.get(ENV)
        if not text:
            return None
        try:
            data = json.loads(text)
            confinement = cls(str(data["mechanism"]), data.get("uid"), tuple(map(str, data.get("protected") or ())),
                              bool(data.get("drop_capabilities")), tuple(map(str, data.get("shared") or ())))
        except (ValueError, KeyError, TypeError) as err:
            raise IsolationError(f"{ENV} is not a confinement: {err}") from None
        if confinement.mechanism not in ("uid", "landlock") or (
                confinement.mechanism == "uid" and not isinstance(confinement.uid, int)):
            raise IsolationError(f"{ENV} names no known confinement: {text!r}")
        return confinement


def confinement_for(isolation: Isolation, taken: Iterable[int] = ()) -> Confinement | None:
    """A new run's confinement: None when runs are not isolated; for `uid`, a uid no live job holds."""
    if isolation.mechanism == "uid":
        return Confinement("uid", allocate_uid(taken))
    if isolation.mechanism == "landlock":
        return Confinement("landlock", protected=isolation.protected, drop_capabilities=os.geteuid() == 0,
                           shared=isolation.shared)
    return None


def allocate_uid(taken: Iterable[int] = ()) -> int:
    """A uid of the reserved range that neither a live job of this worker nor any running process holds."""
    busy = set(taken) | _process_uids()
    start = random.randrange(UID_COUNT)  # random: two workers on one machine rarely try the same one first
    for step in range(UID_COUNT):
        uid = UID_FIRST + (start + step) % UID_COUNT
        if uid not in busy:
            return uid
    raise IsolationError("no free uid is left in the reserved range")


def _process_uids() -> set[int]:
    uids = set()
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    uids.add(os.stat(entry.path).st_uid)
    return uids


def open_for_runs(homes: Iterable[Path], opened: Iterable[Path]) -> None:
    """uid mechanism: the folders on the way from the platform's home(s) to `opened` (jobs, environments) become
    traverse-only, and every other entry along the way owner-only. Called at each launch, so entries made
    since the last one are closed too."""
    homes = [Path(h).absolute() for h in homes]
    chains: set[Path] = set()
    for folder in opened:
        folder = Path(folder).absolute()
        folder.mkdir(parents=True, exist_ok=True)
        chains.add(folder)
        for home in homes:
            if home in folder.parents:
                chains.update(p for p in folder.parents if p == home or home in p.parents)
    for folder in chains:
        os.chmod(folder, 0o711)
    for folder in chains - {Path(p).absolute() for p in opened}:  # the opened folders' own entries are the runs'
        for entry in os.scandir(folder):
            if Path(entry.path) not in chains:
                mode = entry.stat(follow_symlinks=False).st_mode
                if not stat.S_ISLNK(mode) and mode & 0o077:
                    os.chmod(entry.path, stat.S_IMODE(mode) & 0o700)


def close_job_folder(job_dir: Path) -> None:
    """uid mechanism: once its run is over, nobody but the platform enters the job folder (its uid may be drawn again)."""
    with contextlib.suppress(OSError):
        os.chmod(job_dir, 0o700)


# --- applying it (in the runner) --------------------------------------------------------------------
def prepare_folders(confinement: Confinement | None, job_dir: Path, code_dir: Path) -> dict[str, str]:
    """The script's HOME and TMPDIR inside the job folder (and, for `uid`, its folders chowned to its uid).
    Returns the variables the script's environment gets."""
    if confinement is None:
        return {}
    folders = [job_dir / name for name in RUN_FOLDERS]
    for folder in folders:
        folder.mkdir(mode=0o700, exist_ok=True)
    if confinement.mechanism == "uid":
        os.chmod(job_dir, 0o711)
        for folder in [code_dir, *folders]:
            _chown_tree(folder, confinement.uid)
            os.chmod(folder, 0o700)
    home, tmp = (str(folder) for folder in folders)
    return {"HOME": home, "TMPDIR": tmp, "TMP": tmp, "TEMP": tmp}


def _chown_tree(root: Path, uid: int) -> None:
    os.lchown(root, uid, uid)
    for folder, dirs, files in os.walk(root):  # does not follow links: they are chowned, not their targets
        for name in dirs + files:
            os.lchown(os.path.join(folder, name), uid, uid)


@contextlib.contextmanager
def popen_options(confinement: Confinement | None, python: str, writable: Iterable[Path]) -> Iterator[dict]:
    """What subprocess.Popen needs to start the script confined, valid while the block runs (a Landlock
    ruleset is an open descriptor the child applies to itself before exec). `python`: the interpreter the
    runner prepared (its own, or the environment's), whose installation the script may read; never taken
    from the run's command or variables, which the run's author chose."""
    if confinement is None:
        yield {}
    elif confinement.mechanism == "uid":
        yield {"user": confinement.uid, "group": confinement.uid, "extra_groups": [], "umask": 0o077}
    else:
        ruleset = _landlock_ruleset(_readable(python), [*map(Path, SYSTEM_WRITE), *writable], confinement.protected,
                                    confinement.shared)
        try:
            yield {"preexec_fn": _Restrict(ruleset, confinement.drop_capabilities)}
        finally:
            os.close(ruleset)


def _readable(python: str) -> list[Path]:
    """The system folders, the interpreter's installation and everything the runner imports from."""
    paths = [*map(Path, SYSTEM_READ), *_python_prefixes(python), Path(os.path.realpath(python))]
    venv_config = Path(python).absolute().parent.parent / "pyvenv.cfg"
    with contextlib.suppress(OSError):
        for line in venv_config.read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "home" and value.strip():  # the base interpreter of an environment's venv
                paths.append(Path(value.strip()).parent)
    # The runner's own paths (its PYTHONPATH included): an environment's venv adds them through its .pth
    return [*paths, Path(sys.prefix), Path(sys.base_prefix), *(Path(p) for p in sys.path if p), SDK_FOLDER]


def _landlock_ruleset(readable: list[Path], writable: list[Path], protected: Iterable[str],
                      shared: Iterable[str] = ()) -> int:
    abi = landlock_abi()
    if abi < 1:
        raise IsolationError("this kernel has no Landlock, which this run's confinement needs")
    read = _EXECUTE | _READ_FILE | _READ_DIR
    write = read | _WRITE_FILE | _MAKE_AND_REMOVE | (_REFER if abi >= 2 else 0) | (_TRUNCATE if abi >= 3 else 0)
    handled = write | (_IOCTL_DEV if abi >= 5 else 0)
    attr = _RulesetAttr(handled, 0, _SCOPE_SIGNAL if abi >= 6 else 0)
    size = 24 if abi >= 6 else 16 if abi >= 4 else 8
    fd = _libc.syscall(_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    if fd < 0:
        raise IsolationError(ctypes.get_errno(), f"landlock_create_ruleset: {os.strerror(ctypes.get_errno())}")
    try:
        fenced, allowed = [Path(p) for p in protected], [Path(p) for p in shared]
        for path in dict.fromkeys(p.absolute() for p in readable):
            if any(path == a or a in path.parents for a in allowed):
                _add_rule(fd, path, read)  # the run's environment, say, though it lies in the platform's home
                continue
            for granted in _outside(path, fenced):
                _add_rule(fd, granted, read)
        for path in dict.fromkeys(p.absolute() for p in writable):
            _add_rule(fd, path, handled)  # the script's own folders (inside the job folder) and /dev
    except BaseException:
        os.close(fd)
        raise
    return fd


def _outside(path: Path, protected: list[Path]) -> Iterator[Path]:
    """`path`, unless the platform's folders are at, under or over it: then none of it, or its parts beside them."""
    if any(path == p or p in path.parents for p in protected):
        return
    if not any(path in p.parents for p in protected):
        yield path
        return
    with contextlib.suppress(OSError):
        for entry in os.scandir(path):
            yield from _outside(Path(entry.path), protected)


def _add_rule(ruleset: int, path: Path, access: int) -> None:
    try:
        target = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return  # nothing there: nothing to grant
    try:
        if not stat.S_ISDIR(os.fstat(target).st_mode):
            access &= _FILE_ONLY
        rule = _PathBeneathAttr(access, target)
        if _libc.syscall(_ADD_RULE, ctypes.c_int(ruleset), ctypes.c_int(_RULE_PATH_BENEATH), ctypes.byref(rule),
                         ctypes.c_uint32(0)) != 0:
            errno = ctypes.get_errno()
            raise IsolationError(errno, f"landlock_add_rule {path}: {os.strerror(errno)}")
    finally:
        os.close(target)


@dataclass(frozen=True)
class _Restrict:
    """Runs in the forked child before exec: no new privileges, no capabilities (as root), then the ruleset
    (its descriptor is close-on-exec: the script does not inherit it)."""

    ruleset: int
    drop_capabilities: bool

    def __call__(self) -> None:
        if _libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise IsolationError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
        if self.drop_capabilities:  # an empty bounding set: exec grants root no capability back
            for capability in range(_LAST_CAPABILITY + 1):
                _libc.prctl(_PR_CAPBSET_DROP, capability, 0, 0, 0)  # EINVAL past the kernel's last one
        if _libc.syscall(_RESTRICT_SELF, ctypes.c_int(self.ruleset), ctypes.c_uint32(0)) != 0:
            raise IsolationError(ctypes.get_errno(), "landlock_restrict_self")
