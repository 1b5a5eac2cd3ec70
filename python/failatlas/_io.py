"""Safe, atomic file I/O shared by every module that writes or reads results and weights.

* Writes go to a temporary file in the destination folder and are renamed into place, so a crash or
  Ctrl-C never leaves a half-written file behind.
* Temporary names carry the host name and pid of the process that made them (:func:`owned_prefix`), so
  the next command that writes the same output removes those of a process that was killed (``kill -9``,
  out of memory, power loss) and never those of one still running (:func:`make_temp`).
* Weights are stored as safetensors (no code can be executed on load); training checkpoints that need
  nested optimizer state use ``torch.save`` and are read back with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import re
import shutil
import signal
import socket
import struct
import sys
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any, Iterator

import torch

from .errors import FailatlasError, ResultFileError, ResultFileNotFoundError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def host() -> str:
    """This machine's name as it goes into temporary names: characters other than letters, digits, ``_``
    and ``-`` (the dots of a domain name too) become ``-``, at most 63 of them."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname())[:63] or "-"


_TOKEN: tuple[int, str] = (0, "")


def process_token() -> str:
    """8 random hex digits drawn once per process (again in a forked child): with the pid they tell this
    process from an earlier one that had the same pid (pids are reused, in a container often the same)."""
    global _TOKEN
    if _TOKEN[0] != os.getpid():
        _TOKEN = (os.getpid(), os.urandom(4).hex())
    return _TOKEN[1]


def process_record() -> dict[str, Any]:
    """This process as a record names it (``{"host", "pid", "token"}``, as in temporary names): what proves
    that a run folder was published by the process that left a temporary (:func:`owned_prefix`)."""
    return {"host": host(), "pid": os.getpid(), "token": process_token()}


def owned_prefix(prefix: str) -> str:
    """``prefix`` followed by this host's name, this process's pid and its :func:`process_token`: the prefix
    to give ``mkdtemp`` or ``mkstemp``, whose names then read ``PREFIX<host>.<pid>.<token>.<random>SUFFIX``
    (e.g. ``.run.node1.4242.5f0c9a1e.k3j2x9_a.partial``), so that :func:`dead_owner` can tell who made them."""
    return f"{prefix}{host()}.{os.getpid()}.{process_token()}."


def temp_owner(path: str | os.PathLike, prefix: str, suffix: str = "") -> dict[str, Any] | None:
    """The :func:`process_record` of the process of this host that named the temporary ``path``
    (:func:`owned_prefix` ``(prefix)`` + ``suffix``); None for another host's or a name of another pattern."""
    match = re.fullmatch(re.escape(prefix + host() + ".") + r"([1-9][0-9]{0,9})\.([0-9a-f]{8})\.[A-Za-z0-9_]+"
                         + re.escape(suffix), Path(path).name)
    return None if match is None else {"host": host(), "pid": int(match.group(1)), "token": match.group(2)}


def dead_owner(path: str | os.PathLike, prefix: str, suffix: str = "") -> int | None:
    """The pid that made the temporary ``path`` (named from :func:`owned_prefix` ``(prefix)`` and ``suffix``)
    when it was made on this host by a process that no longer runs: the temporary is stale, left by a
    process killed before it could clean up. This very process's pid with another token is such a process
    (its pid was reused by this one). Else None: a running process's (``os.kill(pid, 0)`` succeeds, or is
    refused for another user's process), another host's (its processes cannot be seen from here), or a name
    of another pattern. Names without host, pid and token were made by an earlier failatlas and are never
    removed automatically (an older failatlas may still be using one): remove them by hand when no failatlas
    runs. A pid reused since by another running process keeps its temporary (until that process ends); two
    machines, or containers with their own process ids, of one host name that write into one shared folder
    would see each other's running processes as ended."""
    owner = temp_owner(path, prefix, suffix)
    if owner is None or os.name != "posix":  # elsewhere os.kill(pid, 0) is not a harmless probe
        return None
    pid = owner["pid"]
    if pid == os.getpid():
        return pid if owner != process_record() else None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return pid
    except (PermissionError, OverflowError):  # alive (another user's), or no such pid at all on this system
        return None
    return None


def stale_temps(folder: str | os.PathLike, prefix: str, suffix: str = "") -> list[tuple[Path, int]]:
    """The stale temporaries (:func:`dead_owner`) named ``prefix…suffix`` in ``folder``, with their pids,
    sorted by name."""
    try:
        names = sorted(entry.name for entry in os.scandir(folder) if entry.name.startswith(prefix)
                       and entry.name.endswith(suffix))
    except OSError:  # no such folder, or one this process may write in but not list: nothing to clear
        return []
    found = [(Path(folder) / name, dead_owner(name, prefix, suffix)) for name in names]
    return [(path, pid) for path, pid in found if pid is not None]


def remove_temps(stale: list[tuple[Path, int]]) -> None:
    """Remove the stale temporaries ``stale`` (from :func:`stale_temps`) and say so in one line on stderr,
    naming those removed (one that cannot be removed is left, unnamed)."""
    removed, folders = [], False
    for path, pid in stale:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
            folders = True
        else:
            with contextlib.suppress(FileNotFoundError, PermissionError):
                path.unlink()
        if not os.path.lexists(path):
            removed.append((path, pid))
    if removed:
        pids = sorted({pid for _, pid in removed})
        print(f"failatlas: removed {len(removed)} temporary {'folder' if folders else 'file'}"
              f"{'s' if len(removed) > 1 else ''} left by "
              f"{'an interrupted run (pid' if len(pids) == 1 else 'interrupted runs (pids'} "
              f"{', '.join(map(str, pids))}): {', '.join(str(path) for path, _ in removed)}",
              file=sys.stderr, flush=True)


def make_temp(folder: str | os.PathLike, prefix: str, suffix: str = "", file: bool = False) -> Path:
    """Create a temporary folder (or empty ``file``) in ``folder`` named
    ``prefix<host>.<pid>.<token>.<random>suffix`` (:func:`owned_prefix`), after removing the stale ones of the
    same name pattern there (:func:`remove_temps`): each writer clears what an earlier killed run of the same
    kind and target left, and nothing else."""
    remove_temps(stale_temps(folder, prefix, suffix))
    if not file:
        return Path(tempfile.mkdtemp(prefix=owned_prefix(prefix), suffix=suffix, dir=folder))
    fd, tmp = tempfile.mkstemp(prefix=owned_prefix(prefix), suffix=suffix, dir=folder)
    os.close(fd)
    return Path(tmp)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``, else delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = make_temp(path.parent, f".{path.name}.", ".tmp", file=True)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; results are meant to be shared
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Hold SIGINT and SIGTERM (Ctrl-C, ``kill``) until the block ends, then deliver them to the handlers
    that were in place: for a few renames that must happen together. (Python runs signal handlers in the
    main thread, so handlers are swapped rather than the signal mask, which other threads would not share.)
    Outside the main thread a no-op."""
    caught: list[int] = []
    previous: dict = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda signum, frame: caught.append(signum))
    except ValueError:  # not the main thread: signals cannot be handled here
        pass
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        for sig in dict.fromkeys(caught):
            signal.raise_signal(sig)


STAGING_PREFIX = ".failatlas-staging-"


@contextlib.contextmanager
def staged_files(folder: str | os.PathLike) -> Iterator[Path]:
    """Yield a staging folder inside ``folder`` (created if needed); when the block succeeds, move every
    file written there into ``folder`` (replacing files of the same names, leaving others) with signals
    held, so the files arrive together: a Ctrl-C or a failure never leaves some new files beside old ones
    (a model's weights beside another model's config). The staging folder is removed either way; one left
    by a killed process is removed by the next (:func:`make_temp`)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stage = make_temp(folder, STAGING_PREFIX)  # another process's, staging into the same folder, is left
    try:
        yield stage
        files = sorted(p for p in stage.iterdir() if p.is_file())
        for f in files:
            os.chmod(f, 0o666 & ~_umask())
        with signals_held():  # a held SIGTERM ends the process when the block ends: clean up inside it
            for f in files:
                os.replace(f, folder / f.name)
            shutil.rmtree(stage, ignore_errors=True)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _check_can_create(path: Path, flag: str) -> None:
    """``path`` (a file or folder to be written) can be created: its nearest existing ancestor is a folder
    this process may write in. Checked before any work, so a long run never ends on a failed write."""
    for parent in path.absolute().parents:
        if not parent.exists():
            continue
        if not parent.is_dir():
            raise FailatlasError(f"{flag} {path}: {parent} is a file, not a folder; choose a path under a folder")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise FailatlasError(f"{flag} {path}: no permission to write in {parent}; choose a folder you can "
                                 "write to")
        _probe_folder(parent, path, flag)
        return


PROBE_PREFIX = ".failatlas-probe-"  # another process's probe (torchrun ranks) does not make a folder non-empty


def _probe_folder(folder: Path, path: Path, flag: str) -> None:
    """Create and remove an empty folder in ``folder``: permissions alone do not show a file system that
    refuses new entries (read-only, /proc, a full disk's inodes)."""
    try:
        probe = make_temp(folder, PROBE_PREFIX)
    except OSError as exc:
        raise FailatlasError(f"{flag} {path}: nothing can be created in {folder} ({exc.strerror or exc}); choose "
                             "another folder") from None
    try:
        os.rmdir(probe)
    except OSError as exc:  # results are moved into place by renames, which such a folder refuses too
        raise FailatlasError(f"{flag} {path}: entries can be created in {folder} but not removed or replaced "
                             f"({exc.strerror or exc}; the empty folder {probe.name} is left there); choose "
                             "another folder") from None


#: the record of an ``analyze`` run folder (``failatlas.analysis.pipeline`` writes it; ``verify`` reads it)
RUN_MANIFEST = "manifest.json"
RUN_MANIFEST_FORMAT = "failatlas-analysis-manifest"


def is_run_folder(folder: Path) -> bool:
    """Whether ``folder`` holds an ``analyze`` run's manifest (a ``manifest.json`` of that format; another
    program's file of that name does not count)."""
    try:
        record = json.loads((folder / RUN_MANIFEST).read_bytes().decode("utf-8"))
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(record, dict) and record.get("format") == RUN_MANIFEST_FORMAT


def check_out_folder(out: str | os.PathLike, overwrite: bool | None = None,
                     replace: str = "to replace it", flag: str = "--out", names: tuple[str, ...] = ()) -> Path:
    """The checks every command that writes into ``--out`` makes before any work: ``out`` must not be a
    file, it must be a folder this process can write in or be creatable (no file in its path, permission
    to write), and (unless ``overwrite`` is None: a command that adds files to a folder) a non-empty folder
    needs ``overwrite``; ``replace`` says what --overwrite does; none of the files ``names`` the command
    writes may be a folder there. A command that adds files (``overwrite`` None) may not add them to an
    ``analyze`` run folder (one that holds ``manifest.json``): they would replace or add to the files the
    manifest seals, and ``failatlas verify`` would then find the run changed. Returns ``out`` as a Path."""
    out = Path(out)
    if out.is_symlink() and not out.exists():
        raise FailatlasError(f"{flag} {out} is a link to nothing ({os.readlink(out)}); remove it or choose another "
                             "folder")
    if out.exists() and not out.is_dir():
        raise FailatlasError(f"{flag} {out} is a file; pass a folder for the results")
    if out.is_dir():
        if not os.access(out, os.W_OK | os.X_OK):
            raise FailatlasError(f"{flag} {out}: no permission to write in it; choose a folder you can write to")
        if overwrite is False and any(not p.name.startswith((PROBE_PREFIX, STAGING_PREFIX)) for p in out.iterdir()):
            raise FailatlasError(f"{flag} {out} exists and is not empty; choose a new or empty folder, or pass "
                                 f"--overwrite {replace}")
        if overwrite is None and is_run_folder(out):
            raise FailatlasError(f"{flag} {out} is an analyze run folder (its {RUN_MANIFEST} seals the files in it): "
                                 "writing into it would change the run, and failatlas verify would say so; choose "
                                 "another folder")
        taken = [name for name in names if (out / name).is_dir()]
        if taken:
            raise FailatlasError(f"{flag} {out} holds a folder named {taken[0]}, where a result file goes; move it "
                                 "or choose another folder")
        _probe_folder(out, out, flag)
    else:
        _check_can_create(out, flag)
    return out


def check_out_file(path: str | os.PathLike, flag: str) -> Path:
    """The same checks for one output file given by option ``flag``: not a folder, and creatable."""
    path = Path(path)
    if path.is_dir():
        raise FailatlasError(f"{flag} {path} is a folder; give a file name")
    _check_can_create(path, flag)  # the file is written beside itself and renamed: the folder must be writable
    return path


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike, what: str = "JSON file") -> Any:
    path = Path(path)
    if not path.is_file():
        raise FailatlasError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FailatlasError(f"{what} {path} is not valid JSON ({exc}); restore or regenerate it") from None
    except RecursionError:
        raise FailatlasError(f"{what} {path} is not a failatlas file (its JSON is nested too deeply to read); "
                             "restore or regenerate it") from None


#: the results written as JSON, by their ``format`` key → what a file of that format is (for the readers'
#: messages: a file of another kind is named for what it is)
RESULT_FORMATS = {
    "failatlas-ranking": "a ranking (ranking.json)",
    "failatlas-accuracy-curve": "one accuracy curve (CurveResult.to_json)",
    "failatlas-accuracy-curves": "the accuracy curves of an analyze run (curves.json)",
    "failatlas-corner-cases": "a corner-case result (corner_cases.json)",
    "failatlas-comparison": "a comparison (compare.json)",
    "failatlas-separation": "a separation result (SeparationResult.to_json)",
    "failatlas-tsne": "a t-SNE result (tsne.json)",
    "failatlas-class-overlap": "a class overlap (overlap.json)",
    "failatlas-failure-direction": "a failure direction (failure_direction.json)",
    "failatlas-margins": "corner-shift margins (margins.json)",
}


def describe_json(obj: Any) -> str:
    """What a parsed JSON file holds, in words: a failatlas result by its ``format``, a figure's data (the
    ``.json`` beside a figure's PNG), or the kind of JSON value."""
    if isinstance(obj, dict):
        fmt = obj.get("format")
        if isinstance(fmt, str) and fmt in RESULT_FORMATS:
            return RESULT_FORMATS[fmt]
        if isinstance(obj.get("figure"), str):
            return f"the data plotted in the {obj['figure']} figure ({obj.get('png', 'its PNG')})"
        return f"a file of format {fmt!r}" if fmt is not None else "a JSON object without a failatlas format"
    return "JSON null" if obj is None else \
        f"a JSON {({list: 'list', str: 'string', bool: 'boolean'}).get(type(obj), 'number')}"


def check_result_json(obj: Any, formats: tuple[str, ...], source: str, what: str, version: int, hint: str) -> dict:
    """``obj`` (a parsed JSON file, ``source`` naming it) is a result of one of ``formats`` at a version
    this failatlas reads (``version``; a file without a ``version`` key is version 1), else one
    :class:`~failatlas.errors.ResultFileError` naming the file, what it holds and what was expected
    (``what``, ``hint``: how to get the right file). Returns ``obj``."""
    if not isinstance(obj, dict) or obj.get("format") not in formats:
        raise ResultFileError(f"{source} holds {describe_json(obj)}, not {what} (format {formats[0]!r}); {hint}")
    found = obj.get("version", 1)
    if isinstance(found, bool) or not isinstance(found, int) or found < 1:
        raise ResultFileError(f"{source} has an invalid format version {found!r} (expected a whole number from 1 "
                              f"to {version}); restore or regenerate it")
    if found > version:
        raise ResultFileError(f"{source} was written by a newer failatlas (format {obj['format']!r} version {found}; "
                              f"this one reads up to version {version}); update failatlas to read it")
    return obj


@contextlib.contextmanager
def rebuilding(source: str, what: str, fix: str) -> Iterator[None]:
    """Around the rebuilding of a result from parsed JSON: a key missing, a value of the wrong type or an
    array of the wrong shape becomes one :class:`~failatlas.errors.ResultFileError` naming ``source``,
    ``what`` it should be and the ``fix``."""
    try:
        yield
    except FailatlasError:  # a nested result's own line (ResultFileError is a ValueError too): as it is
        raise
    except (AttributeError, KeyError, TypeError, ValueError, RuntimeError, OverflowError) as exc:
        raise ResultFileError(f"{source} is not a valid failatlas {what} ({type(exc).__name__}: {exc}); "
                              f"{fix}") from None


def classifier_entry(entries: dict[str, Any] | None, classifier: str | None, source: str, what: str,
                     hint: str = "") -> tuple[str, Any]:
    """One classifier's entry of a run file that holds one per classifier (``entries``: name → JSON; None for a
    file that holds one result): ``classifier``'s, or without it the only one; else one
    :class:`~failatlas.errors.ResultFileError` naming those held (``what``: e.g. "curves"; ``hint`` ends the
    advice). Returns ``(name, entry)``; for a file of one result ``classifier`` must be None: ``(None, None)``."""
    if entries is None:
        if classifier is not None:
            raise ResultFileError(f"{source} holds one result, not one per classifier; read it without classifier=")
        return None, None
    if classifier is None and len(entries) == 1:
        classifier = next(iter(entries))
    if classifier not in entries:
        raise ResultFileError(f"{source} holds the {what} of {', '.join(map(repr, entries))}"
                              + ("" if classifier is None else f", not of {classifier!r}")
                              + f"; pass classifier= one of them{hint}")
    return classifier, entries[classifier]


def load_result_json(path: str | os.PathLike, what: str) -> Any:
    """A result file read by :func:`read_json` (named ``what`` in the messages): "ranking file not found: …"
    as a :class:`~failatlas.errors.ResultFileNotFoundError`, "… is not valid JSON" as a
    :class:`~failatlas.errors.ResultFileError`."""
    if not Path(path).is_file():
        raise ResultFileNotFoundError(f"{what} not found: {path}")
    try:
        return read_json(path, what)
    except FailatlasError as exc:  # not JSON: the same line, as the error every reader raises
        raise ResultFileError(str(exc)) from None


def read_result_json(path: str | os.PathLike, formats: tuple[str, ...], what: str, expected: str, version: int,
                     hint: str) -> dict:
    """A result file read by :func:`load_result_json` and checked by :func:`check_result_json`
    (``expected``: what it should hold)."""
    return check_result_json(load_result_json(path, what), formats, f"{what} {path}", expected, version, hint)


def save_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Write ``tensors`` as a safetensors file, atomically."""
    from safetensors.torch import save_file

    contiguous = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(contiguous, str(tmp), metadata=metadata)


def load_tensors(path: str | os.PathLike, what: str = "weights file") -> dict[str, torch.Tensor]:
    """Read a safetensors file; a missing or corrupt file raises :class:`FailatlasError`."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FailatlasError(f"{what} not found: {path}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise FailatlasError(f"{what} {path} is corrupt or not a safetensors file ({exc}); re-export or retrain it") from None


def save_checkpoint(path: str | os.PathLike, obj: dict[str, Any]) -> None:
    """Write a training checkpoint (nested dicts of tensors and plain values) atomically."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load_checkpoint(path: str | os.PathLike, what: str = "checkpoint") -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``: a pickle that carries code is refused, never run. A file
    torch cannot read is told apart (without running it): damaged or not a checkpoint at all, or one that
    holds objects other than tensors and plain values."""
    path = Path(path)
    if not path.is_file():
        raise FailatlasError(f"{what} not found: {path}")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols of files it then refuses
            warnings.simplefilter("ignore", UserWarning)
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError,
            IndexError, KeyError, TypeError, AttributeError, struct.error) as exc:
        # (torch's weights-only unpickler meets malformed bytes with IndexError, KeyError, … of its own)
        unsafe, reason = _why_unreadable(path)
        if isinstance(exc, OSError) and not isinstance(exc, zipfile.BadZipFile) and reason is None:
            raise  # the file system's error (permissions, I/O): the CLI reports it as such
        if unsafe:
            raise FailatlasError(f"{what} {path} holds objects that are not tensors or plain values ({unsafe}) and "
                                 "was not loaded: loading it could run code; only load checkpoints written by "
                                 "failatlas") from None
        reason = reason or "torch cannot read it"
        raise FailatlasError(f"{what} {path} is damaged or not a torch checkpoint ({reason}): restore it from a "
                             "copy, or retrain") from None
    if not isinstance(obj, dict):
        raise FailatlasError(f"{what} {path} does not hold a failatlas checkpoint (found {type(obj).__name__})")
    return obj


_CHECKPOINT_MODULES = ("torch", "collections", "_codecs")  # what torch.save's own pickles refer to


def _why_unreadable(path: Path) -> tuple[str | None, str | None]:
    """(the first global a checkpoint's pickle refers to outside torch's own, or None; why it cannot be
    read, or None when no reason was found). The pickle is parsed by :mod:`pickletools`, never run."""
    import io

    try:
        data = path.read_bytes()
    except OSError:
        return None, None
    if not data:
        return None, "an empty file"
    if data[:4] == b"PK\x03\x04":  # torch.save's zip format
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                names = [n for n in archive.namelist() if n.endswith("data.pkl")]
                if not names:
                    return None, "a zip archive, not a torch checkpoint"
                stream = archive.read(names[0])
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, KeyError):
            return None, "truncated or corrupt: its zip archive is incomplete"
    elif data[:1] == b"\x80":  # a bare pickle (protocol 2 or later)
        stream = data
    else:
        shown = data[:16].decode("ascii", "replace") if data[:16].isascii() else data[:8].hex(" ")
        return None, f"not a torch checkpoint at all: it begins with {shown!r}"
    try:
        globals_ = _pickle_globals(stream)
    except Exception:  # noqa: BLE001 - pickletools' errors on malformed input are of several kinds
        return None, "truncated or corrupt: its pickle is incomplete or malformed"
    unsafe = [g for g in globals_ if g != "?" and g.split(".")[0] not in _CHECKPOINT_MODULES]
    return (unsafe[0] if unsafe else None), (None if unsafe else "torch cannot read its content")


def _pickle_globals(stream: bytes) -> list[str]:
    """The names (module.name) of the globals a pickle refers to, read with :func:`pickletools.genops`,
    which parses the opcodes without running anything. Raises on a truncated or malformed pickle."""
    import io
    import pickletools

    # STACK_GLOBAL takes its module and name from the stack: strings pushed just before, or fetched from the
    # memo (a module name used twice is stored once and got back by index), so the memo is tracked too. A
    # name that cannot be told is "?" (not counted as unsafe by the caller).
    found, strings, memo = [], [], {}
    last: str | None = None
    for op, arg, _ in pickletools.genops(io.BytesIO(stream)):
        if op.name in ("GLOBAL", "INST"):
            found.append(str(arg).replace(" ", "."))
            last = None
        elif op.name == "STACK_GLOBAL":
            found.append(".".join(strings[-2:]) if len(strings) >= 2 and None not in strings[-2:] else "?")
            last = None
        elif op.name == "MEMOIZE":
            memo[len(memo)] = last
        elif op.name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[arg] = last
        elif op.name in ("GET", "BINGET", "LONG_BINGET"):
            last = memo.get(arg)
            strings.append(last)
        elif isinstance(arg, str):
            last = arg
            strings.append(arg)
        else:
            last = None
    return found


def jsonable(obj: Any) -> Any:
    """NaN and ±inf → None (JSON has no such numbers: Python's json would write a bare NaN that other readers
    refuse), tuples → lists, Paths → strings, numpy scalars → Python's, recursively."""
    import math

    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if type(obj).__module__ == "numpy" and hasattr(obj, "item"):  # a numpy scalar
        return jsonable(obj.item())
    return obj


def sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def folder_sha256(folder: str | os.PathLike, leave_out: tuple[str, ...] = ()) -> dict[str, str]:
    """sha256 of every file in ``folder`` (not in subfolders) but ``leave_out``, by name, in name order: what a
    run's record (manifest.json, ranking.json, compare.json) lists for ``failatlas verify``."""
    return {p.name: sha256(p) for p in sorted(Path(folder).iterdir()) if p.is_file() and p.name not in leave_out}
