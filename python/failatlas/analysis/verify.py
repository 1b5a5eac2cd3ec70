"""``failatlas verify``: is an analyze run folder still what the run wrote, and does it reproduce here?

A run folder is evidence: a validation engineer hands it on, archives it, cites its figures. Its
``manifest.json`` records every file it wrote with its sha256 (``file_sha256``: all but the manifest and the
report), the models it used with theirs, the versions of the code and libraries, and the command that redoes
it. :func:`verify_run` checks a folder against that record:

* **files**: every file the manifest lists is there and has the bytes the run wrote; no other file is there;
* **report**: every image embedded in ``report.html`` is one of the run's PNGs and every PNG is embedded, and
  the manifest the report shows is ``manifest.json`` (the two files the digests leave out vouch for each
  other: an edit of one shows against the other);
* **models**: the generator and classifiers at the paths the manifest records (a shipped model, found by its
  name when its path is not on this machine) still have the recorded sha256;
* **versions**: which of the recorded versions (failatlas' source digests, torch, numpy, …) differ here;
* with ``rerun``: the analysis is run again with the recorded options on the models found, into a temporary
  folder (or ``rerun_out``), and each file is compared with the recorded digest. On CPU the same code,
  libraries and models give every file byte for byte (README, "Reproducibility").

The folders of the other commands are checked against their records: ``export.json`` of ``failatlas export``
(each exported file's sha256 and size: the file to deploy is the one whose parity with eager torch was
measured), ``compare.json`` of ``failatlas compare`` and ``ranking.json`` of ``failatlas rank`` (each file's
sha256, ``file_sha256``, and the models); the versions for all. These commands write into folders that may
hold other files, which are not theirs and not checked; ``--rerun`` is for analyze runs only.

Digests catch a file damaged, replaced, edited or left over from another run; they are not a signature: an
edit made consistently in the files, the manifest and the report is not detected. To seal a run, keep the
``manifest_sha256`` that verify prints somewhere the run folder does not travel.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import html
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import _io
from ..errors import FailatlasError
from .pipeline import UNDIGESTED

_IMAGE = re.compile(r'src="data:image/png;base64,([A-Za-z0-9+/=]*)"')


@dataclass(frozen=True)
class ModelCheck:
    """One model of the run: ``role`` ("generator" or "classifier"), its display ``name``, the path the
    manifest records, where it was ``found`` here (None: nowhere) and ``status``: "same" (every recorded file
    has its recorded sha256), "changed" (``differ`` names the files that differ, are missing or are new) or
    "missing"."""

    role: str
    name: str
    recorded_path: str
    found: str | None
    status: str
    differ: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "differ": list(self.differ)}


@dataclass(frozen=True)
class RerunCheck:
    """The run done again: ``folder`` (None once a temporary one is removed), the files whose bytes differ
    from the recorded digests, those recorded but not written again and those written but not recorded;
    ``skipped``: why it was not run (a model missing or changed), else None."""

    folder: str | None
    differ: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    extra: tuple[str, ...] = ()
    seconds: float | None = None
    skipped: str | None = None

    @property
    def identical(self) -> bool:
        return self.skipped is None and not (self.differ or self.missing or self.extra)

    def to_json(self) -> dict[str, Any]:
        return {**{k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()},
                "identical": self.identical}


@dataclass(frozen=True)
class RunCheck:
    """What :func:`verify_run` found in ``folder`` (``kind``: "analysis", "export", "compare" or "rank";
    for the last three ``listed`` ends with the record checked against and ``manifest_sha256`` is its digest).

    ``listed``: the files the manifest lists; ``missing``: listed by the manifest, not in the folder;
    ``changed``: bytes differ from the recorded sha256; ``extra``: in the folder, not written by the run;
    ``unchecked``: listed without a digest (a manifest written before digests were recorded); ``report``:
    what is wrong with report.html (empty: it has its recorded digest and shows exactly the run's figures
    and manifest); ``models``, ``versions`` (name → (recorded, here), only those that differ),
    ``unrecorded`` (versions known here that the run did not record), ``others`` (records of other commands
    in the folder, not checked: ``record=`` checks one of them) and ``rerun`` (None unless asked).
    ``manifest_sha256``: the digest that seals the run (the manifest holds every other file's)."""

    folder: Path
    kind: str
    created: str | None
    command: str | None
    manifest_sha256: str
    listed: tuple[str, ...]
    missing: tuple[str, ...]
    changed: tuple[str, ...]
    extra: tuple[str, ...]
    unchecked: tuple[str, ...]
    report: tuple[str, ...]
    models: tuple[ModelCheck, ...]
    versions: dict[str, tuple[Any, Any]]
    unrecorded: tuple[str, ...] = ()
    rerun: RerunCheck | None = None
    others: tuple[str, ...] = ()

    @property
    def intact(self) -> bool:
        """The folder holds what the run wrote, no more, no less (as far as the digests recorded tell)."""
        return not (self.missing or self.changed or self.extra or self.report)

    @property
    def ok(self) -> bool:
        """Nothing found that differs: intact, no recorded model changed (a model not found here is not
        checked: the verdict says so) and, when the run was done again, the same bytes (a rerun that could
        not be done differs in nothing: :attr:`complete` says so)."""
        return self.intact and not any(m.status == "changed" for m in self.models) and (
            self.rerun is None or self.rerun.skipped is not None or self.rerun.identical)

    @property
    def complete(self) -> bool:
        """Every check asked for was made: False when a rerun was asked for and could not be done."""
        return self.rerun is None or self.rerun.skipped is None

    def to_json(self) -> dict[str, Any]:
        return _io.jsonable({
            "format": "failatlas-run-check", "version": 1, "folder": str(self.folder), "kind": self.kind,
            "ok": self.ok, "complete": self.complete, "other_records": list(self.others),
            "intact": self.intact, "created": self.created, "command": self.command,
            "manifest_sha256": self.manifest_sha256, "files": list(self.listed),
            "missing": list(self.missing), "changed": list(self.changed), "extra": list(self.extra),
            "unchecked": list(self.unchecked), "report": list(self.report),
            "models": [m.to_json() for m in self.models],
            "versions": {k: {"recorded": a, "here": b} for k, (a, b) in self.versions.items()},
            "unrecorded_versions": list(self.unrecorded),
            "rerun": None if self.rerun is None else self.rerun.to_json()})

    def format(self) -> str:
        def names(items: tuple[str, ...], limit: int = 8) -> str:
            shown = ", ".join(items[:limit])
            return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")

        record = self.listed[-1] if self.kind != "analysis" else _io.RUN_MANIFEST
        if self.kind != "analysis":
            lines = [f"{self.kind} folder {self.folder}",
                     f"  {record} sha256 {self.manifest_sha256} (keep it apart from the folder to seal it)"]
        else:
            lines = [f"run folder {self.folder} (made {self.created or 'at an unrecorded time'})",
                     f"  manifest sha256 {self.manifest_sha256} (keep it apart from the folder to seal the run)"]
        digested = len(self.listed) - len(self.unchecked) - 1  # the record holds the digests
        if self.intact:
            lines.append(f"  files: OK, all {len(self.listed)} there and nothing added; "
                         + (f"{digested} have the bytes the run wrote ({record}, the record of their digests, is the other)"
                            if digested == len(self.listed) - 1 else f"{digested} have the bytes the run wrote" if digested else "none could be checked byte "
                            "for byte") + "; the report shows the run's figures and manifest"
                         if self.kind == "analysis" else
                         f"  files: OK, the {digested} files have the bytes {record} records (other files in the "
                         f"folder are not {self.kind}'s)")
        else:
            lines.append("  files: NOT AS WRITTEN")
            for label, items in (("missing", self.missing), ("changed since the run", self.changed),
                                 ("not written by the run", self.extra)):
                if items:
                    lines.append(f"    {label}: {names(items)}")
            lines += [f"    report.html: {problem}" for problem in self.report]
        if self.unchecked:
            lines.append(f"  not checked byte for byte, the manifest records no digest for them (it was written by an "
                         f"older failatlas; run it again to get them): {names(self.unchecked)}")
        for m in self.models:
            where = "" if m.found is None or m.found == m.recorded_path else f" (found at {m.found})"
            text = {"same": "same files as the run's" + where,
                    "changed": f"CHANGED since the run{where}: {names(m.differ)}",
                    "missing": f"NOT FOUND at {m.recorded_path}"}[m.status]
            lines.append(f"  {m.role} {m.name}: {text}")
        if self.versions:
            lines.append("  versions that differ here (a rerun may differ in its last digits or more): "
                         + "; ".join(f"{k} {_short(a)} → {_short(b)}" for k, (a, b) in self.versions.items()))
        else:
            lines.append("  versions: " + ("the same code (source digests) and libraries as the run's"
                                           if not self.unrecorded else "those the run recorded match here"))
        if self.unrecorded:
            lines.append("  not recorded by the run (an older failatlas), so not compared: "
                         + ", ".join(self.unrecorded))
        r = self.rerun
        if r is not None:
            if r.skipped:
                lines.append(f"  rerun: NOT RUN: {r.skipped}")
            elif r.identical:
                lines.append(f"  rerun: IDENTICAL, every recorded file written again byte for byte "
                             f"({r.seconds:.1f} s" + (f"; kept in {r.folder})" if r.folder else ")"))
            else:
                lines.append(f"  rerun: DIFFERENT ({r.seconds:.1f} s" + (f"; kept in {r.folder})" if r.folder else ")"))
                for label, items in (("differ", r.differ), ("not written again", r.missing),
                                     ("new", r.extra)):
                    if items:
                        lines.append(f"    {label}: {names(items)}")
        if self.command:
            lines.append(f"  command: {self.command}")
        for other in self.others:
            lines.append(f"  also holds {other} ({RECORDS[other][2]}'s record), not checked: verify --record {other}")
        qualifiers = []
        if self.ok and self.unchecked:
            qualifiers.append(f"{len(self.unchecked)} file{'s' if len(self.unchecked) > 1 else ''} checked for "
                              "presence only")
        if self.ok and not self.complete:
            qualifiers.append("the rerun could not be done")
        lost = [m.name for m in self.models if m.status == "missing"]
        if self.ok and lost:
            qualifiers.append(f"models not found here, so not checked: {', '.join(lost)}")
        if self.ok and self.rerun is None and not lost and self.kind == "analysis":
            qualifiers.append("add --rerun to check that it reproduces")
        lines.append("verdict: " + ("OK" if self.ok else "NOT OK")
                     + (f" ({'; '.join(qualifiers)})" if qualifiers else ""))
        return "\n".join(lines)


def _short(value: Any) -> str:
    """A version for a line: a sha256 cut to its first 12 digits (the JSON keeps it whole)."""
    text = str(value)
    return text[:12] + "…" if re.fullmatch(r"[0-9a-f]{64}", text) else text


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """The manifest of an analyze run folder, checked for the keys :func:`verify_run` reads; a
    :class:`FailatlasError` naming the problem otherwise."""
    from .pipeline import MANIFEST_FORMAT

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise FailatlasError(f"{folder} is a file, not a run folder: give the --out folder of failatlas analyze, "
                             "export, compare or rank (the folder that holds its record)")
    if not folder.is_dir():
        raise FailatlasError(f"run folder not found: {folder} (give the --out folder of a failatlas analyze run)")
    path = folder / _io.RUN_MANIFEST
    if not path.is_file():
        raise FailatlasError(f"{folder} holds no record verify can check (manifest.json, export.json, compare.json "
                             "or ranking.json): give the --out folder of failatlas analyze, export, compare or rank "
                             "(or demo's analysis/ folder)")
    m = _io.read_json(path, "run manifest")
    if not isinstance(m, dict) or m.get("format") != MANIFEST_FORMAT:
        raise FailatlasError(f"{path} holds {_io.describe_json(m)}, not an analyze run's manifest (format "
                             f"{MANIFEST_FORMAT!r})")
    files = m.get("files")
    digests = m.get("file_sha256", {})
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files) or not isinstance(digests, dict):
        raise FailatlasError(f"{path} is damaged (its files are not a list of names with a table of digests); "
                             "restore it from a copy of the run folder")
    outside = [f for f in [*files, *digests] if not isinstance(f, str) or Path(f).name != f or f in ("", ".", "..")]
    if outside:
        raise FailatlasError(f"{path} names files outside the run folder ({', '.join(map(str, outside[:3]))}); "
                             "it is damaged or not failatlas'; restore it from a copy of the run folder")
    _model_entries(m.get("models"), path, "restore it from a copy of the run folder")
    return m


def _report_problems(folder: Path, manifest: dict[str, Any], here: dict[str, str]) -> list[str]:
    """What is wrong with report.html against its recorded digest (``report_sha256``, when the manifest
    has one), the run's PNGs (``here``: the sha256 of the folder's files, by name) and the manifest (empty:
    nothing)."""
    from ..report.html import MANIFEST_SECTION, manifest_html, report_sha256

    path = folder / "report.html"
    if not os.path.lexists(path):
        return []  # listed as missing already
    if not path.is_file():
        return ["not a file"]
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        return ["not UTF-8 text: damaged or replaced"]
    except OSError as exc:
        return [f"cannot be read ({exc.strerror or exc})"]
    problems = []
    recorded = manifest.get("report_sha256")
    if recorded is not None and report_sha256(text) != recorded:
        problems.append("its text differs from what the run wrote (outside the manifest it shows)")
    pngs = {digest: name for name, digest in here.items() if name.endswith(".png")}
    shown = set()
    for data in _IMAGE.findall(text):
        try:
            shown.add(hashlib.sha256(base64.b64decode(data, validate=True)).hexdigest())
        except ValueError:
            shown.add("")
    foreign = len(shown - set(pngs))
    if foreign:
        problems.append(f"{foreign} embedded image{'s are' if foreign > 1 else ' is'} none of the run's PNGs")
    absent = sorted(name for digest, name in pngs.items() if digest not in shown)
    if absent:
        problems.append(f"does not show {', '.join(absent)}")
    match = MANIFEST_SECTION.search(text)
    if match is None:
        problems.append("shows no manifest")
    elif match.group(1) != manifest_html(manifest):
        problems.append("shows another manifest than manifest.json (one of the two was edited or replaced)")
    return problems


def _model_entries(models: Any, path: Path, fix: str) -> list[tuple[str, dict[str, Any]]]:
    """(role, entry) of every model a record lists (``models``: ``{"generator": {...}, "classifiers": [...]}``,
    or ``"classifier": {...}`` for rank), each an object with a ``path`` and a non-empty ``sha256`` table;
    else a FailatlasError naming the record as damaged (``fix``: how to get a whole one)."""
    entries = None
    if isinstance(models, dict):
        classifiers = models.get("classifiers", [models["classifier"]] if "classifier" in models else None)
        if isinstance(classifiers, list) and classifiers:
            entries = [("generator", models.get("generator")), *(("classifier", c) for c in classifiers)]
    if entries is None or not all(
            isinstance(e, dict) and isinstance(e.get("path"), str) and isinstance(e.get("sha256"), dict)
            and e["sha256"] and all(isinstance(k, str) and isinstance(v, str) for k, v in e["sha256"].items())
            for _, e in entries):
        raise FailatlasError(f"{path} is damaged: its models are not a generator and classifiers, each with a path "
                             f"and the sha256 of its files; {fix}")
    return entries


def _find_model(entry: dict[str, Any], role: str) -> ModelCheck:
    """Where the model of a manifest entry is now and whether it still has its recorded files."""
    from .._paths import shipped_model
    from .pipeline import model_info

    recorded = str(entry.get("path", ""))
    name = str(entry.get("name", recorded))
    sha = entry.get("sha256") if isinstance(entry.get("sha256"), dict) else {}
    candidates = [Path(recorded)] if recorded else []
    try:
        candidates.append(shipped_model(str(entry.get("given", ""))))
    except FailatlasError:
        pass
    found = next((p for p in candidates if p.is_file() or p.is_dir()), None)
    if found is None:
        return ModelCheck(role, name, recorded, None, "missing")
    here = model_info(entry.get("given", ""), found, name, folder=role == "generator").sha256
    differ = tuple(sorted(f for f in set(sha) | set(here) if sha.get(f) != here.get(f)))
    return ModelCheck(role, name, recorded, str(found.resolve()), "changed" if differ else "same", differ)


def _version_changes(recorded: Any) -> tuple[dict[str, tuple[Any, Any]], tuple[str, ...]]:
    """The recorded versions that differ here, and the names of those known here that the run did not
    record (an older failatlas: nothing to compare them with)."""
    from .. import _provenance

    here = _provenance.versions()
    recorded = recorded if isinstance(recorded, dict) else {}
    return ({k: (v, here.get(k)) for k, v in sorted(recorded.items()) if v != here.get(k)},
            tuple(k for k in here if k not in recorded))


def rerun_options(manifest: dict[str, Any], generator: str, classifiers: tuple[str, ...], *,
                  verbose: bool = True, progress_bar: bool | None = None):
    """The :class:`~failatlas.analysis.AnalysisOptions` of a recorded run (its ``options``, every value as
    used), on the models given here. A :class:`FailatlasError` when the record cannot be rerun by this
    failatlas (an option it does not know, or constants of the analysis that changed since)."""
    from .pipeline import N_PAIRS, TOP, AnalysisOptions

    recorded = manifest.get("options")
    if not isinstance(recorded, dict):
        raise FailatlasError("the manifest records no options: the run cannot be redone from it")
    fields = {f.name for f in dataclasses.fields(AnalysisOptions)}
    constants = {"corner_dims": TOP, "corner_pairs_of_top": N_PAIRS, "overlap_k": TOP}
    unknown = sorted(set(recorded) - fields - set(constants))
    changed = sorted(k for k, v in constants.items() if k in recorded and recorded[k] != v)
    absent = sorted(fields - set(recorded))  # this version would fill them in with its own defaults
    problems = [*([f"options {', '.join(unknown)} are unknown here"] if unknown else []),
                *([f"{', '.join(changed)} differ from this version's"] if changed else []),
                *([f"it records no {', '.join(absent)}"] if absent else [])]
    if problems:
        raise FailatlasError("the run was made by another version of failatlas: " + "; ".join(problems)
                             + "; rerun it with the failatlas that made it (its versions are in the manifest)")
    flags = [f.name for f in dataclasses.fields(AnalysisOptions) if isinstance(f.default, bool)
             and not isinstance(recorded[f.name], bool)]
    if flags:
        raise FailatlasError(f"the manifest's options {', '.join(flags)} are not true/false: it is damaged; "
                             "restore it from a copy of the run folder")
    values = {k: (tuple(v) if isinstance(v, list) else v) for k, v in recorded.items() if k in fields}
    values.update(generator=generator, classifiers=classifiers, overwrite=False, verbose=verbose,
                  progress_bar=progress_bar)
    options = AnalysisOptions(**values)
    options.check()
    return options


def _rerun(folder: Path, manifest: dict[str, Any], models: tuple[ModelCheck, ...], rerun_out: str | Path | None,
           verbose: bool, progress_bar: bool | None) -> RerunCheck:
    import time

    from .pipeline import run_analysis

    unusable = [m for m in models if m.status != "same"]
    if unusable:
        return RerunCheck(None, skipped="; ".join(
            f"{m.role} {m.name} {'is not found' if m.status == 'missing' else 'has changed'}" for m in unusable)
            + ": a rerun needs the models the run used")
    if not manifest.get("file_sha256"):
        return RerunCheck(None, skipped="the manifest records no file digests (an older failatlas): there is "
                                        "nothing to compare a rerun with; run the recorded command into another "
                                        "folder and compare the files yourself")
    try:
        options = rerun_options(manifest, models[0].found, tuple(m.found for m in models[1:]), verbose=verbose,
                                progress_bar=progress_bar)
    except FailatlasError as exc:
        return RerunCheck(None, skipped=str(exc))
    temporary = rerun_out is None
    base = _io.make_temp(tempfile.gettempdir(), "failatlas-verify-") if temporary else None
    out = base / folder.name if temporary else Path(rerun_out)
    try:
        start = time.perf_counter()
        run_analysis(options, out)
        seconds = time.perf_counter() - start
        recorded = manifest.get("file_sha256") or {}
        written = _io.folder_sha256(out, leave_out=UNDIGESTED)
        return RerunCheck(None if temporary else str(out.resolve()),
                          differ=tuple(sorted(n for n in set(recorded) & set(written) if recorded[n] != written[n])),
                          missing=tuple(sorted(set(recorded) - set(written))),
                          extra=tuple(sorted(set(written) - set(recorded))), seconds=seconds)
    finally:
        if base is not None:
            shutil.rmtree(base, ignore_errors=True)


#: the records of the other commands' folders, in the order verify looks for them (a folder written by
#: several commands is checked against the first found): file → (kind, format, what writes it)
RECORDS = {"export.json": ("export", "failatlas-export", "failatlas export"),
           "compare.json": ("compare", "failatlas-comparison", "failatlas compare"),
           "ranking.json": ("rank", "failatlas-ranking", "failatlas rank")}
#: the files each of those commands always writes (besides its record)
REQUIRED = {"export": ("classifier.onnx", "classifier.pt", "classifier.pt2", "synthesis.onnx", "fused.onnx",
                       "fused.pt", "fused.pt2"),
            "compare": ("corner_shifts.csv", "corner_shifts.json", "corner_shifts.png", "report.html"),
            "rank": ("population.npz", "ranking.csv", "separation.csv", "separation.json", "separation.png")}


def _verify_record(folder: Path, record: str) -> RunCheck:
    """The files of an export, compare or rank folder against its record (``RECORDS``): each file's sha256
    (and, for an export, its size), the models (compare, rank) and the versions. Other files in the folder
    are not the command's: these commands write into folders that may hold more."""
    kind, fmt, command = RECORDS[record]
    path = folder / record
    m = _io.read_json(path, f"{command} record")
    if not isinstance(m, dict) or m.get("format") != fmt:
        raise FailatlasError(f"{path} holds {_io.describe_json(m)}, not the record of {command} (format {fmt!r})")
    if kind == "export":
        entries = m.get("files")
        ok = isinstance(entries, dict) and all(isinstance(e, dict) for e in entries.values())
        digests = {f: e.get("sha256") for f, e in entries.items()} if ok else None
        sizes = {f: e.get("bytes") for f, e in entries.items()} if ok else {}
    else:
        digests, sizes = m.get("file_sha256"), {}
        if digests is None:
            raise FailatlasError(f"{path} records no file digests: it was written by an older failatlas (run "
                                 f"{command} again, its command is in the record, to get them)"
                                 + (", or it belongs to an analyze run folder that lost its manifest.json"
                                    if kind == "rank" else ""))
    if not isinstance(digests, dict) or not all(isinstance(d, str) for d in digests.values()):
        raise FailatlasError(f"{path} is damaged (its files' sha256 are not a table of names and digests); "
                             f"restore it, or run {command} again")
    outside = [f for f in digests if Path(f).name != f or f in ("", ".", "..", record)]
    if outside:
        raise FailatlasError(f"{path} names files outside the folder ({', '.join(outside[:3])}); it is damaged "
                             f"or not failatlas'; run {command} again")
    lacking = sorted(set(REQUIRED[kind]) - set(digests))
    if lacking:
        raise FailatlasError(f"{path} is damaged: it records no digest of {', '.join(lacking)}, which {command} "
                             f"always writes; run {command} again")
    # an export.json written before exports recorded their models has none to check
    entries = () if kind == "export" and "models" not in m else _model_entries(m.get("models"), path,
                                                                               f"run {command} again")
    missing = tuple(f for f in digests if not os.path.lexists(folder / f))
    changed = tuple(f for f, digest in digests.items() if f not in missing and (
        not (folder / f).is_file() or (isinstance(sizes.get(f), int) and (folder / f).stat().st_size != sizes[f])
        or _io.sha256(folder / f) != digest))
    models = tuple(_find_model(entry, role) for role, entry in entries)
    versions, unrecorded = _version_changes(m.get("versions"))
    return RunCheck(folder=folder.resolve(), kind=kind, created=None,
                    command=m.get("command") if isinstance(m.get("command"), str) else None,
                    manifest_sha256=_io.sha256(path), listed=(*digests, record), missing=missing,
                    changed=changed, extra=(), unchecked=(), report=(), models=models, versions=versions,
                    unrecorded=unrecorded)


def verify_run(folder: str | Path, rerun: bool = False, rerun_out: str | Path | None = None, *,
               record: str | None = None, verbose: bool = True, progress_bar: bool | None = None) -> RunCheck:
    """Check an analyze run folder against its manifest (module docstring): its files, its report, its
    models and the versions; with ``rerun`` (or a ``rerun_out`` folder, which keeps the rerun; it must not
    exist or be empty) run it again and compare every file (in one process: not under torchrun).
    ``verbose``/``progress_bar``: the rerun's stage lines and bars. A folder without manifest.json is checked
    against the first record of :data:`RECORDS` it holds (export.json, compare.json, ranking.json; the others
    are named in the result), or against ``record`` (one of those, or manifest.json). Returns a
    :class:`RunCheck`; raises :class:`FailatlasError` for a folder verify cannot check or a damaged record."""
    folder = Path(folder)
    if record is not None and record not in (_io.RUN_MANIFEST, *RECORDS):
        raise FailatlasError(f"--record must be one of manifest.json, {', '.join(RECORDS)}; got {record!r}")
    records = [r for r in RECORDS if (folder / r).is_file()] if folder.is_dir() else []
    if record is None and records and not os.path.lexists(folder / _io.RUN_MANIFEST):
        record = records[0]
    if record in RECORDS:
        if not (folder / record).is_file():
            raise FailatlasError(f"{folder} holds no {record}; records there: {', '.join(records) or 'none'}")
        if rerun or rerun_out is not None:
            raise FailatlasError(f"{folder} holds what {RECORDS[record][2]} wrote: --rerun redoes analyze runs; run "
                                 "its command again into another folder (the same models give the same files) "
                                 "and verify that one")
        return dataclasses.replace(_verify_record(folder, record), others=tuple(r for r in records if r != record))
    manifest = read_manifest(folder)
    if rerun or rerun_out is not None:
        from .. import distributed as dist

        if dist.world()[1] > 1:
            raise FailatlasError("verify --rerun runs in one process: run it without torchrun (the rerun's "
                                 "files are the same either way)")
    if rerun_out is not None:
        if Path(rerun_out).is_dir() and any(Path(rerun_out).iterdir()):
            raise FailatlasError(f"--rerun-out {rerun_out} exists and is not empty; choose a new or empty folder")
        _io.check_out_folder(rerun_out, flag="--rerun-out")
    listed = list(dict.fromkeys(manifest["files"]))
    digests = manifest.get("file_sha256") or {}
    present = {p.name for p in folder.iterdir()}
    here = _io.folder_sha256(folder)  # each file hashed once, for the digests and the report's images
    missing = tuple(f for f in listed if f not in present)
    changed = tuple(f for f in listed if f in digests and f in present and here.get(f) != digests[f])
    # (report.html is checked by _report_problems: its digest leaves out the manifest it shows)
    unchecked = tuple(f for f in listed if f not in digests and f != _io.RUN_MANIFEST
                      and (f != "report.html" or "report_sha256" not in manifest))
    extra = tuple(sorted(present - set(listed)))
    versions, unrecorded = _version_changes(manifest.get("versions"))
    models = tuple(_find_model(entry, role) for role, entry in _model_entries(
        manifest["models"], folder / _io.RUN_MANIFEST, "restore it from a copy of the run folder"))
    check = RunCheck(folder=folder.resolve(), kind="analysis", created=manifest.get("created"),
                     command=manifest.get("command"), manifest_sha256=_io.sha256(folder / _io.RUN_MANIFEST),
                     listed=tuple(listed), missing=missing, changed=changed, extra=extra, unchecked=unchecked,
                     report=tuple(_report_problems(folder, manifest, here)), models=models, versions=versions,
                     unrecorded=unrecorded)
    if rerun or rerun_out is not None:
        check = dataclasses.replace(check, rerun=_rerun(folder, manifest, models, rerun_out, verbose, progress_bar))
    return check
