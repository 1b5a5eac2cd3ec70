"""The whole analysis of DESIGN §4 in one run: the ``failatlas analyze`` job.

>>> run = run_analysis(AnalysisOptions(generator="mnist/generator", n=10000), out="runs/atlas")
>>> run.summary["corner_cases"]

Stages (each announced on stderr with its elapsed seconds):

1. population: N samples (seed) classified by the primary classifier (the first one); the same samples
   re-labelled by every other classifier (:func:`~failatlas.analysis.curves.with_classifier`);
2. ranking: :class:`GradientRanking` per classifier, with ``bootstrap`` resamples for 95% intervals unless
   ``quick`` (:class:`BlackBoxRanking`, without intervals, for one without gradients, e.g. ONNX); the
   primary's also per class;
3. separation of well- vs mis-classified samples (Fig. 4: the primary's; the summary: every classifier's),
   and per classifier the one direction of W that separates them best (:mod:`failatlas.analysis.direction`:
   how much of the per-dimension separation one entangled factor explains; ``failure_direction.json``);
4. t-SNE of Z, W and S (Fig. 3; at most ``tsne_points``; skipped with ``skip_tsne``);
5. corner cases of the primary along its top-10 dimensions, every class, and pairs of the top 3 (gallery);
   then the margins (beyond the paper, :mod:`failatlas.analysis.margins`): the same search from
   ``margin_starts`` well-classified samples per class, the quantiles of their shifts per dimension;
6. a manipulation grid (Fig. 5) per class with a start (the first 3 with ``quick``);
7. accuracy-vs-distance curves (top-K) of every classifier, each on its own ranking (Fig. 6), and the
   primary's per class;
8. overlap of the primary's per-class top-10 dimensions (Jaccard) and the shared dimensions.

Everything is written into a temporary sibling of ``out`` and renamed onto ``out`` at the end, so a
failure or Ctrl-C never leaves a half-written run folder (one left by a killed run is removed by the next
run of ``out``, and a run it had moved aside is never lost: :func:`_check_moved_aside`); an existing
non-empty ``out`` is refused unless ``overwrite``. The folder holds every figure (PNG + its JSON), the
tables (CSV/JSON), ``population.npz``, ``summary.json``, ``manifest.json`` (versions with the source
digest, the command that reruns the run, seeds, options, model checksums, timings, files with their sha256,
the report's digest) and ``report.html`` (self-contained, drawn from the results); ``failatlas verify``
checks the folder against the manifest (:mod:`failatlas.analysis.verify`).

Under ``torchrun`` (WORLD_SIZE > 1; gloo on CPU, :mod:`failatlas.distributed`) the two expensive stages
are sharded: the population (:func:`sample_population` with ``distributed=True``, and the re-labelling by
every other classifier, each rank re-labelling its own block of whole batches) and the gradient rankings
(:meth:`GradientRanking.rank` with ``distributed=True``; the primary's per-class rankings and the bootstraps on
rank 0). Everything after the rankings (separation, t-SNE, corner cases, grids, curves, overlap, summary,
manifest, report and the move of the run folder into place) runs on rank 0 alone; the other ranks make
the same collective calls in the same order, return an :class:`AnalysisShard` after the last one and
write nothing (not even the staging folder). The results equal the single-process ones. A classifier
without gradients (ONNX) is refused under torchrun, on every rank.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import json
import math
import os
import platform
import re
import shlex
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from .. import _io, _provenance
from .._progress import Stages
from ..errors import FailatlasError, error_line
from ..report.figures import class_label
from .corners import CornerCases, CornerCaseSearch
from .margins import DEFAULT_PER_CLASS, CornerMargins, MarginResult
from .direction import FailureDirection, effective_dimension, walk_failure_direction
from .direction import describe as describe_direction
from .curves import CENTRES, CURVES_FORMAT, AccuracyCurve, CurveResult, with_classifier
from .manipulation import ManipulationGrid, manipulation_grid
from .overlap import ClassDirections, ClassOverlap
from .population import Population, check_batch_size, check_classes, describe_classes, sample_population
from .ranking import BLACK_BOX_N, GradientRanking, Ranking, check_black_box_n, is_differentiable, rank_any
from .separation import Separation, SeparationResult, weak_separation
from .tsne import LatentTSNE, TSNEResult

DEFAULT_GENERATOR = "mnist/generator"
DEFAULT_CLASSIFIERS = ("mnist/classifier-corrupted", "mnist/classifier-clean")
DEFAULT_N, QUICK_N = 10000, 2000
DEFAULT_TSNE_POINTS, QUICK_TSNE_POINTS = 2000, 500
DEFAULT_BOOTSTRAP = 200
QUICK_GRID_CLASSES = 3
TOP = 10  # corner-case dimensions, separation summary, class overlap
N_PAIRS = 3  # pairs of the top dimensions moved together
STAGES = ("population", "real test images", "ranking", "separation", "tsne", "corner cases", "margins",
          "manipulation", "accuracy curves", "overlap")
MANIFEST_FORMAT = _io.RUN_MANIFEST_FORMAT
#: the files of a run folder whose digests the manifest leaves out: the manifest itself and the report that
#: shows it (the report's own digest, without that section, is ``report_sha256``)
UNDIGESTED = (_io.RUN_MANIFEST, "report.html")
FAILURE_DIRECTION_NOTE = (
    "per classifier: the Fisher direction of class-centred w fitted on half of the population, measured on "
    "the other half (failatlas.analysis.direction): KS/AUROC of the projection, the mean KS of every style "
    "dimension as it is, with the direction removed and with shuffled labels, share_explained, and the "
    "number of style dimensions that hold half of its effect (in σ units); direction and style_shift as lists")


@dataclass(frozen=True)
class AnalysisOptions:
    """What :func:`run_analysis` does.

    generator: a generator folder or a shipped model's name; classifiers: folders or shipped names, the
    first is the primary (None: both shipped MNIST classifiers, corrupted-trained first). classes: the
    classes the population is drawn from (None: all; the corner cases, grids and per-class curves follow
    it). n: population size (None: 10,000, or 2,000 with ``quick``); seed: of the population, the bootstrap, the random
    comparison dimensions and the t-SNE; k: dimensions of the accuracy-curve distance (K); curve_centre:
    "class" (each sample's distance to its own class's well-classified mean) or "global"; corner_step: the
    corner search's bracketing step in σ (DESIGN: 5; smaller finds dips of p_y narrower than 5σ, at a
    proportional cost; at least 0.01, the search's tolerance, at most its 100σ limit); black_box_n: the
    samples a classifier without gradients (ONNX) is ranked on by finite differences. quick: a fast
    pass (N = 2,000, 500 t-SNE points, grids for 3 classes, no bootstrap, no margins);
    skip_tsne: no t-SNE stage. margin_starts: well-classified samples per class the margins search from
    (None: 10, or none with ``quick``, which they would take past its 2 minutes; 0: no margins).
    bootstrap / tsne_points / grid_classes: override what ``quick`` chooses (None: its choice).
    batch_size: samples per forward pass (None: 64 on CPU, 512 on an accelerator); threads: torch CPU
    threads for the run (0 or None: leave torch's setting). One by default: the per-image work is small
    ops, and on a 2-core machine with one core busy two threads ran them up to 9× slower than one
    (measured with 'cpu-small', batches of 32/64: population 4.7 ms/image with one thread vs 4.7–40 ms
    with two, gradients 10 vs 32–43 ms/image). overwrite: replace an existing non-empty ``out``;
    progress_bar: tqdm bars (None: only on a terminal); verbose: stage lines on stderr.
    """

    generator: str = DEFAULT_GENERATOR
    classifiers: tuple[str, ...] | None = None
    classes: tuple[int, ...] | None = None
    n: int | None = None
    seed: int = 0
    k: int = 100
    curve_centre: str = "class"
    corner_step: float = 5.0
    black_box_n: int = BLACK_BOX_N
    quick: bool = False
    skip_tsne: bool = False
    bootstrap: int | None = None
    tsne_points: int | None = None
    grid_classes: int | None = None
    margin_starts: int | None = None
    batch_size: int | None = None
    threads: int | None = 1
    overwrite: bool = False
    progress_bar: bool | None = None
    verbose: bool = True

    # the values actually used ---------------------------------------------------------------------------
    @property
    def classifier_list(self) -> tuple[str, ...]:
        return tuple(str(c) for c in (self.classifiers or DEFAULT_CLASSIFIERS))

    @property
    def population_size(self) -> int:
        return self.n if self.n is not None else (QUICK_N if self.quick else DEFAULT_N)

    @property
    def bootstrap_resamples(self) -> int:
        return self.bootstrap if self.bootstrap is not None else (0 if self.quick else DEFAULT_BOOTSTRAP)

    @property
    def tsne_max_points(self) -> int:
        return self.tsne_points if self.tsne_points is not None else (
            QUICK_TSNE_POINTS if self.quick else DEFAULT_TSNE_POINTS)

    @property
    def grid_class_limit(self) -> int | None:
        return self.grid_classes if self.grid_classes is not None else (QUICK_GRID_CLASSES if self.quick else None)

    @property
    def margin_starts_per_class(self) -> int:
        return self.margin_starts if self.margin_starts is not None else (
            0 if self.quick else DEFAULT_PER_CLASS)

    def effective(self) -> dict[str, Any]:
        """Every option as given, plus the values chosen for the ones left to defaults (JSON-ready)."""
        return {**{k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()},
                "classifiers": list(self.classifier_list), "n": self.population_size,
                "classes": None if self.classes is None else list(check_classes(self.classes)),
                "bootstrap": self.bootstrap_resamples, "tsne_points": self.tsne_max_points,
                "grid_classes": self.grid_class_limit, "margin_starts": self.margin_starts_per_class,
                "corner_dims": TOP, "corner_pairs_of_top": N_PAIRS,
                "overlap_k": TOP}

    def check(self) -> None:
        """Raise :class:`FailatlasError` for an impossible option (before anything is loaded)."""
        def positive(name: str, v: Any, allow_none: bool = True, minimum: int = 1) -> None:
            if v is None and allow_none:
                return
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum:
                raise FailatlasError(f"{name} must be an integer ≥ {minimum}, got {v!r}")

        positive("--n", self.n)
        check_classes(self.classes)
        positive("--k", self.k, allow_none=False)
        positive("--bootstrap", self.bootstrap, minimum=0)
        positive("tsne_points", self.tsne_points, minimum=5)
        positive("grid_classes", self.grid_classes, minimum=0)
        positive("--margin-starts", self.margin_starts, minimum=0)
        positive("--batch-size", self.batch_size)
        positive("--threads", self.threads, minimum=0)
        from ..engine.native import MAX_THREADS  # the bound of train-gan's, the engine's and failatlas-eval's

        if self.threads is not None and self.threads > MAX_THREADS:  # torch's thread pool crashes far beyond it
            raise FailatlasError(f"--threads must be at most {MAX_THREADS} (0: torch's choice), got {self.threads}")
        check_black_box_n(self.black_box_n)
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or not 0 <= self.seed < 2**32:
            raise FailatlasError(f"--seed must be an integer between 0 and {2**32 - 1}, got {self.seed!r}")
        step = self.corner_step
        if isinstance(step, bool) or not isinstance(step, (int, float, np.integer, np.floating)) \
                or not 0.01 <= float(step) <= 100:
            raise FailatlasError(f"--corner-step must be a number of σ between 0.01 (the search's tolerance) and "
                                 f"100 (its limit), got {step!r}")
        if self.curve_centre not in CENTRES:
            raise FailatlasError(f"--curve-centre must be one of {', '.join(CENTRES)}, got {self.curve_centre!r}")
        if self.classifiers is not None and (isinstance(self.classifiers, str) or not len(self.classifiers)):
            raise FailatlasError("classifiers must be a non-empty list of folders or shipped names "
                                 "(repeat --classifier DIR)")


@dataclass(frozen=True)
class ModelInfo:
    """A model of the run: the name the user gave, its resolved folder, its display name (the folder's
    name, made unique) and the sha256 of its files (weights and config)."""

    given: str
    path: Path
    name: str
    sha256: dict[str, str]

    def to_json(self) -> dict[str, Any]:
        return {"given": self.given, "path": str(self.path), "name": self.name, "sha256": dict(self.sha256)}


@dataclass(frozen=True)
class Figure:
    """A figure of the run: its PNG (``file``, relative to the run folder), a title and a caption."""

    file: str
    title: str
    caption: str = ""


@dataclass(frozen=True, eq=False)
class AnalysisRun:
    """What :func:`run_analysis` computed and wrote (the report is drawn from these objects).

    populations / rankings / curves: classifier name → result (insertion order: primary first);
    separation_summary: the primary's mean KS of the top-10 vs 10 random dims (and every classifier's
    under ``by_classifier``); tsne: None when skipped; grids: one
    :class:`ManipulationGrid` per class drawn; figures: the PNGs in report order; files: name → final
    path; timings: stage → seconds.
    """

    out: Path
    options: AnalysisOptions
    generator: ModelInfo
    classifiers: tuple[ModelInfo, ...]
    populations: dict[str, Population]
    rankings: dict[str, Ranking]
    separation: SeparationResult
    separation_summary: dict[str, Any]
    tsne: TSNEResult | None
    corner_cases: CornerCases
    margins: MarginResult | None  # None with --margin-starts 0
    grids: tuple[ManipulationGrid, ...]
    curves: dict[str, CurveResult]
    overlap: ClassOverlap | None  # None when the primary has no per-class rankings (no gradients)
    summary: dict[str, Any]
    manifest: dict[str, Any]
    figures: tuple[Figure, ...]
    files: dict[str, Path]
    timings: dict[str, float]
    notes: tuple[str, ...] = ()
    class_names: tuple[str, ...] | None = None  # when a classifier records names other than the indices

    @property
    def primary(self) -> str:
        return self.classifiers[0].name

    def class_label(self, c: int) -> str:
        """``"6 (Shirt)"`` with class names, ``"6"`` without."""
        return class_label(c, self.class_names)

    @property
    def k(self) -> int:
        return self.options.k

    def format(self) -> str:
        """What ``failatlas analyze`` prints."""
        pop = self.populations[self.primary]
        sep = self.summary["separation"]
        cc = self.summary["corner_cases"]
        lines = [f"population: {pop.n} samples (seed {pop.seed}{describe_classes(pop.classes)}); accuracy "
                 + ", ".join(f"{name} {p.accuracy:.4f}" for name, p in self.populations.items())]
        real = self.summary.get("real_accuracy")
        if real:
            lines.append(f"real {real['dataset']} test images (clean / corrupted): " + ", ".join(
                f"{name} {r['clean']:.4f} / {r['corrupted']:.4f}" for name, r in real["classifiers"].items()))
        lines.append(f"top {TOP} dimensions of {self.primary}:")
        lines.append(self.rankings[self.primary].format(TOP))
        for name, s in sep.get("by_classifier", {self.primary: sep}).items():
            if s is None:
                lines.append(f"separation ({name}): none (no mis-classified or no well-classified sample)")
                continue
            lines.append(f"separation ({name}, {s['n_mis']} mis-classified): mean KS of the top {TOP} "
                         f"{s[f'top{TOP}_mean_ks']:.3f}, of {TOP} random others {s[f'random{TOP}_mean_ks']:.3f}, "
                         f"of all {s['all_mean_ks']:.3f}, of the best {TOP} {s[f'best{TOP}_mean_ks']:.3f}; "
                         f"by chance {s['chance_mean_ks']:.3f}")
            lines.append(f"  {describe_direction(s.get('latent_direction'), s.get('latent_direction_error'))}")
        at_start = (f"; {cc['at_start']} start at p_y ≤ 0.5 already (not counted as found)"
                    if cc.get("at_start") else "")
        lines.append(f"corner cases: {cc['found']}/{cc['pairs']} found, {cc['verified']} verified ({cc['flipped']} "
                     f"predicted as another class at the shift); pairs of "
                     f"dimensions {cc['combinations']['found']}/{cc['combinations']['pairs']}{at_start}")
        if self.margins is not None:
            lines.append(self.margins.format())
        for name, curve in self.curves.items():
            rest = curve.not_plotted()
            plotted = int(curve.n_well[curve.plotted].sum() + curve.n_mis[curve.plotted].sum())
            lines.append(f"accuracy curve (K={self.k}) {name}: mean {_fmt(curve.mean_accuracy)}, slope "
                         f"{_fmt(curve.slope)}, largest rise between plotted bins {_fmt(curve.max_rise)}; "
                         f"{plotted} samples in the plotted bins, {rest['n_well'] + rest['n_mis']} beyond them "
                         f"({rest['n_mis']} mis-classified)")
        lines.extend(f"note: {n}" for n in self.notes)
        total = sum(self.timings.values())
        lines.append(f"wrote {len(self.files)} files to {self.out} in {total:.1f} s "
                     f"({', '.join(f'{k} {v:.1f} s' for k, v in self.timings.items())})")
        lines.append(f"check it later, or after copying it: failatlas verify {shlex.quote(str(self.out))}")
        return "\n".join(lines)


@dataclass(frozen=True, eq=False)
class AnalysisShard:
    """What :func:`run_analysis` returns on a rank other than 0 under torchrun: its shards of the
    population and the rankings are done and rank 0 writes the run folder ``out``."""

    out: Path
    rank: int
    world_size: int
    timings: dict[str, float]

    def format(self) -> str:
        return (f"rank {self.rank} of {self.world_size}: shard done; rank 0 writes the run to {self.out}")


def _fmt(x: float) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{x:+.3f}" if x < 0 else f"{x:.3f}"


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name) or "classifier"


def _model_files(folder: Path) -> dict[str, str]:
    """sha256 of the weights and config files of a model folder (sorted by name)."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and (p.suffix in (".safetensors", ".onnx", ".pt")
                                                                    or p.name == "config.json"))
    return {p.name: _io.sha256(p) for p in files}


def _unique_names(paths: Sequence[Path]) -> list[str]:
    names: list[str] = []
    for p in paths:
        base = _safe_name(p.resolve().name if p.name in ("", ".", "..") else p.name)
        name, i = base, 2
        while name in names:
            name, i = f"{base}-{i}", i + 1
        names.append(name)
    return names


# --- the output folder ------------------------------------------------------------------------------



def _make_staging(out: Path) -> Path:
    """The staging folder ``.OUT.<host>.<pid>.<token>.<random>.partial`` beside ``out``, after removing
    those of earlier runs of ``out`` that were killed (:func:`~failatlas._io.make_temp`)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = _io.make_temp(out.parent, f".{out.name}.", ".partial")
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp, 0o777 & ~mask)  # mkdtemp makes 0700; a run folder is meant to be shared
    return tmp


def _publish(tmp: Path, out: Path, overwrite: bool) -> None:
    """Move the finished run from ``tmp`` onto ``out`` (replacing an empty folder, or with ``overwrite``
    a non-empty one: the old run is moved aside to ``.OUT.<host>.<pid>.<token>.<random>.old`` first and
    deleted only once the new one is in place; a process killed in between leaves it for
    :func:`_check_moved_aside`)."""
    _io.check_out_folder(out, overwrite)
    old = None
    if out.is_dir():
        if any(out.iterdir()):
            # (not _io.make_temp: that would remove the stale .old folders, which _check_moved_aside judges)
            old = Path(tempfile.mkdtemp(prefix=_io.owned_prefix(f".{out.name}."), suffix=".old", dir=out.parent))
            os.rmdir(old)
            os.rename(out, old)
        else:
            os.rmdir(out)
    try:
        os.rename(tmp, out)
    except BaseException as exc:
        if old is not None:
            try:
                os.rename(old, out)
            except OSError:  # something made ``out`` in between: the earlier run stays aside, named
                raise FailatlasError(f"--out {out} was created by something else while this run replaced it "
                                     f"({error_line(exc)}); the run that was in it is kept in {old} (move it "
                                     "where you want it); this run is discarded: run it again") from None
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _published_by(out: Path, old: Path) -> bool:
    """Whether the run folder ``out`` was published by the process that named ``old`` (the host, pid and
    token of its name are the manifest's ``process``)."""
    owner = _io.temp_owner(old, f".{out.name}.", ".old")
    try:
        m = json.loads((out / _io.RUN_MANIFEST).read_bytes().decode("utf-8"))
        return owner is not None and m["process"] == owner
    except (OSError, ValueError, TypeError, KeyError, RecursionError):
        return False


def _check_moved_aside(out: Path, remove: bool) -> None:
    """Before a run of ``out``: the earlier run that :func:`_publish` moved aside (``.OUT.….old``) in a process
    killed since (:func:`~failatlas._io.stale_temps`) is deleted only when it is empty (killed before the
    move) or when ``out`` holds the run that same process published (its manifest names the process: it
    was killed while deleting the old run); then, with ``remove``, it is removed as that process would
    have. Else it may hold the only copy of the earlier run: a FailatlasError says where it is and how to
    put it back (a refusal, not a warning that a long run's output would bury, leaving the earlier run
    hidden for ever). One that vanishes meanwhile (another torchrun rank removing it) is passed over."""
    for old, pid in _io.stale_temps(out.parent, f".{out.name}.", ".old"):
        try:
            empty = not any(old.iterdir())
        except OSError:  # removed meanwhile, or not a folder: nothing of a run to keep
            continue
        if empty or _published_by(out, old):
            if remove:
                _io.remove_temps([(old, pid)])
            continue
        raise FailatlasError(
            f"--out {out}: the run that was in it was moved aside to {old} by a failatlas process (pid {pid}) that "
            "was killed before its new run was in place; to keep it, rename it back "
            + (f"after moving {out} away (it holds other files now)" if out.exists()
               else f"(mv {shlex.quote(str(old))} {shlex.quote(str(out))})")
            + "; or delete it; then run again")


@contextlib.contextmanager
def _torch_threads(n: int | None):
    if not n:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


# --- the job ------------------------------------------------------------------------------------------


def _load_models(options: AnalysisOptions):
    from .._paths import resolve_classifier, resolve_model
    from ..deploy import load_any_classifier
    from ..models.stylegan2 import load_generator
    from .population import classifier_num_classes

    gpath = resolve_model(options.generator)
    G = load_generator(gpath)
    cpaths = [resolve_classifier(c) for c in options.classifier_list]
    names = _unique_names(cpaths)
    classifiers = []
    for given, path, name in zip(options.classifier_list, cpaths, names):
        C = load_any_classifier(path)
        got = classifier_num_classes(C)
        if got is not None and got != G.num_classes:
            raise FailatlasError(
                f"classifier {name} ({path}) has {got} classes but generator {gpath.name} ({gpath}) has "
                f"{G.num_classes}; every classifier must describe the generator's {G.num_classes} labels"
                + ("" if options.classifiers else f" (without --classifier analyze takes the shipped MNIST "
                   f"classifiers: pass --classifier with one trained on the generator's {G.num_classes} classes)"))
        classifiers.append((model_info(given, path, name), C))
    gen_info = model_info(options.generator, gpath, _safe_name(gpath.resolve().name), folder=True)
    return G, gen_info, classifiers


def model_info(given: object, path: Path, name: str, folder: bool = False) -> ModelInfo:
    """What a run records of a model: the name given, the resolved path, the display name and the sha256 of
    its file (a classifier file) or of its folder's weights and config. ``folder``: a model that is always a
    folder (a generator given as one of its files, config.json say, is recorded as its folder)."""
    if folder and path.is_file():
        path = path.parent
    files = {path.name: _io.sha256(path)} if path.is_file() else _model_files(path)
    return ModelInfo(str(given), path.resolve(), name, files)


def generator_info(given: object, path: Path) -> ModelInfo:
    """:func:`model_info` of a generator as rank, compare and export record it: its folder, named as it is."""
    return model_info(given, path, path.resolve().name, folder=True)


def _model_argument(info: ModelInfo) -> str:
    """How a command names a model of the run: a shipped model by its name (found again on any machine where
    failatlas ships it: its sha256 in the manifest says whether it is the same model), anything else by its
    absolute path (a relative one named a folder under the working directory of the run)."""
    from .._paths import shipped_model

    try:
        if shipped_model(info.given).resolve() == info.path:
            return info.given
    except FailatlasError:
        pass
    return str(info.path)


def command_line(command: str, generator: ModelInfo, classifiers: Sequence[ModelInfo], options: Sequence[str],
                 out: str | Path, note: str = "") -> str:
    """The ``failatlas COMMAND`` line that redoes a run: the models as :func:`_model_argument` names them,
    ``options`` (words, quoted here), ``--out`` made absolute, and a comment: the folder named is the
    original run's, so a rerun needs another (``analyze`` refuses a non-empty one; ``rank`` and ``compare``
    would replace the record being checked); ``note`` is added to it."""
    q = shlex.quote
    parts = ["failatlas", command, "--generator", q(_model_argument(generator))]
    for info in classifiers:
        parts += ["--classifier", q(_model_argument(info))]
    parts += [q(str(o)) for o in options] + ["--out", q(str(Path(out).absolute()))]
    return " ".join(parts) + "  # --out: name a new folder (this one holds the run)" + (f"; {note}" if note else "")


def rerun_command(options: AnalysisOptions, out: str | Path, generator: ModelInfo,
                  classifiers: Sequence[ModelInfo]) -> str:
    """The ``failatlas analyze`` command that runs ``options`` again (:func:`command_line`), with every
    option spelled out (the defaults of a later version cannot change it). Options the command line cannot
    set (``tsne_points``, ``grid_classes`` other than what ``--quick`` chooses) are named after it."""
    parts = ["--n", str(options.population_size)]
    if options.classes is not None:
        parts += ["--classes", *map(str, check_classes(options.classes))]
    parts += ["--seed", str(int(options.seed)), "--k", str(options.k), "--curve-centre", options.curve_centre,
              "--corner-step", repr(float(options.corner_step)), "--black-box-n", str(options.black_box_n),
              "--bootstrap", str(options.bootstrap_resamples), "--margin-starts", str(options.margin_starts_per_class)]
    if options.quick:
        parts.append("--quick")
    if options.skip_tsne:
        parts.append("--skip-tsne")
    if options.batch_size is not None:
        parts += ["--batch-size", str(options.batch_size)]
    parts += ["--threads", str(options.threads or 0)]
    quick = dataclasses.replace(options, tsne_points=None, grid_classes=None)
    unset = [f"{name}={getattr(options, attr)}" for name, attr, chosen in (
        ("tsne_points", "tsne_max_points", quick.tsne_max_points),
        ("grid_classes", "grid_class_limit", quick.grid_class_limit)) if getattr(options, attr) != chosen]
    return command_line("analyze", generator, classifiers, parts, out,
                        f"and {', '.join(unset)} (no flag: set in the library)" if unset else "")


def _curves_csv(curves: dict[str, CurveResult], path: Path) -> Path:
    """Every classifier's curve (overall, then per class) in one table: ``classifier`` + the curve columns."""
    from .curves import CSV_COLUMNS

    def cell(v: Any) -> str:
        return "" if v is None else repr(v) if isinstance(v, float) else str(v).lower() if isinstance(v, bool) \
            else str(v)

    lines = [",".join(("classifier",) + CSV_COLUMNS)]
    for name, curve in curves.items():
        for c in [curve] + [r for _, r in sorted(curve.per_class.items())]:
            for row in c.rows():
                lines.append(",".join([name] + [cell(row[col]) for col in CSV_COLUMNS]))
    _io.write_bytes(path, ("\n".join(lines) + "\n").encode("utf-8"))
    return path


#: below this accuracy on real clean test images a classifier probably does not read failatlas's input
REAL_ACCURACY_WARNING = 0.5


def real_accuracy(generator_folder: Path, models: dict[str, torch.nn.Module],
                  classes: Sequence[int] | None = None) -> tuple[dict[str, Any] | None, list[str]]:
    """Each classifier's accuracy on the real clean and corrupted test split of the data the generator was
    trained on (its ``config.json`` → ``training``: dataset, blur, IDX folder), the context for what the
    analysis finds on generated images, and a check that a classifier of one's own reads failatlas's input.
    Returns ``({"dataset", "blur", "classifiers": {name: {"clean", "corrupted"}}} or None, notes)``: None (with a
    note saying why) when the config names no dataset or the data cannot be loaded here. ``classes``: the
    population's classes (None: all), so that the notes name only classes it holds."""
    from .._paths import data_notes, recorded_data

    if isinstance(generator_folder, torch.nn.Module):
        raise FailatlasError("real_accuracy reads the generator's record from its folder: pass the folder or "
                             "shipped name (e.g. 'mnist/generator'), not a loaded Generator")
    from ..training.classifier import evaluate_classifier

    notes = data_notes(generator_folder, models, classes)
    data = recorded_data(generator_folder)
    if data is None:
        return None, [*notes, "no accuracy on real test images: the generator's config.json names no training "
                      "dataset"]
    dataset, blur, idx_dir = data["dataset"], data["blur"], data["idx_dir"]
    result: dict[str, Any] = {"dataset": dataset, "blur": blur, "split": "test", "classifiers": {}}
    try:
        for name, model in models.items():
            evaluated = {on: evaluate_classifier(model, dataset=dataset, on=on, blur=blur, idx_dir=idx_dir)
                         for on in ("clean", "corrupted")}
            row = {on: e["accuracy"] for on, e in evaluated.items()}
            result["dataset"] = evaluated["clean"]["dataset"]  # the name it loads as ("mnist" → "mnist10k")
            result["classifiers"][name] = row
            if row["clean"] < REAL_ACCURACY_WARNING:
                notes.append(f"{name} gets {row['clean']:.3f} of the real clean test images of {result['dataset']} "
                             "right: "
                             "check that it takes failatlas's input (float [N, 1, 28, 28] in [0, 1], logits out; "
                             "README: your own classifier)")
    except FailatlasError as exc:
        return None, [*notes, f"no accuracy on real test images of {dataset}: {exc}"]
    return result, notes


#: a classifier right on fewer generated samples than this share of its accuracy on the real test images does not
#: recognise the generator's images: the analysis would map the generator's failures, not the classifier's
GENERATED_ACCURACY_WARNING = 0.5


def unrecognised_generator(real: dict[str, Any] | None, accuracy: Mapping[str, float]) -> list[str]:
    """A note for each classifier whose accuracy on the generated population is below half of its accuracy on
    the real test images (the lower of clean and corrupted, :func:`real_accuracy`): then most of what the run
    maps are images the generator draws badly (an undertrained or foreign generator), not conditions under which
    the classifier fails. ``accuracy``: name → accuracy on the population."""
    if not real:
        return []
    notes = []
    for name, row in real["classifiers"].items():
        lowest = min(row["clean"], row["corrupted"])
        if name in accuracy and accuracy[name] < GENERATED_ACCURACY_WARNING * lowest:
            notes.append(f"{name} gets only {accuracy[name]:.3f} of the generated samples right, against "
                         f"{lowest:.3f} or more of the real test images of {real['dataset']}: it does not recognise "
                         "most of what the generator draws, so this run maps the generator's flaws more than the "
                         "classifier's failures; check the generator first (failatlas eval-gan: conditional "
                         "accuracy, README \"Shipped models\"), or train it longer")
    return notes


def class_names(classifier: Any, dataset: str | None = None) -> tuple[str, ...] | None:
    """The class names the (primary) ``classifier`` records (its ``config.class_names``), else those of
    ``dataset`` (the generator's recorded training data: "fashion" has names; an ONNX file records none),
    when they say more than the indices (MNIST's "0".."9" do not); None otherwise. Other classifiers'
    names are not used: a second classifier trained on other data must not rename the generator's classes."""
    from ..data.datasets import FASHION_CLASSES, canonical_name

    recorded = getattr(getattr(classifier, "config", None), "class_names", None)
    for names in (recorded, FASHION_CLASSES if canonical_name(dataset) == "fashion" else None):
        if names and any(str(n) != str(i) for i, n in enumerate(names)):
            return tuple(str(n) for n in names)
    return None


FEW_WELL = 10  # a class centre and scale resting on fewer well-classified samples than this is named as such


def sparse_class_curves(curves: dict[str, CurveResult], names: Sequence[str] | None = None) -> list[str]:
    """A note per classifier whose per-class curves leave out more than half of a class's samples (beyond
    distance 1 of its panel): such a panel shows only the samples nearest the class's centre, and can show a
    high accuracy for a class that is mostly mis-classified (the more so when few well-classified samples
    set its centre and scale)."""
    out = []
    for name, curve in curves.items():
        parts = []
        for c, r in sorted(curve.per_class.items()):
            rest = r.not_plotted()
            off = rest["n_well"] + rest["n_mis"]
            if 2 * off > r.n:
                well = int(r.n_well.sum())
                parts.append(f"class {class_label(c, names)}: {off} of {r.n}, {rest['n_mis']} of them "
                             "mis-classified"
                             + (f"; its centre and scale rest on {well} well-classified sample{'s' * (well != 1)}"
                                if well < FEW_WELL else ""))
        if parts:
            out.append(f"{name}'s per-class accuracy curves leave out most samples of some classes "
                       f"({'; '.join(parts)}): those panels show only the samples nearest the class's centre, not "
                       "the class's accuracy (curves.json → per_class → not_plotted counts the rest)")
    return out


def _report_order(figures: list[Figure]) -> tuple[Figure, ...]:
    """The figures in the paper's order: the t-SNE maps (Fig. 3) before the separation (Fig. 4), which the
    analysis computes first; the others in the order they were made."""
    return tuple(sorted(figures, key=lambda f: f.file != "tsne.png"))


def _curve_summary(curve: CurveResult) -> dict[str, Any]:
    b = curve.plotted_bins()
    return {"accuracy": b["accuracy"], "bin_centres": b["centres"],
            "n": [w + m for w, m in zip(b["n_well"], b["n_mis"])], "ci_low": b["ci_low"], "ci_high": b["ci_high"],
            "mean_accuracy": curve.mean_accuracy, "slope": curve.slope, "max_rise": curve.max_rise, "k": curve.k,
            "centre": curve.centre_mode}


def run_analysis(options: AnalysisOptions | None = None,
                 out: str | Path | None = None) -> AnalysisRun | AnalysisShard:
    """Run every analysis of DESIGN §4 and write the run folder ``out`` (see the module docstring).

    Raises :class:`FailatlasError` for bad options, models that do not fit together, an existing
    non-empty ``out`` (without ``overwrite``), or a population too small for an analysis; then ``out`` is
    left as it was. Under torchrun, rank 0 returns the :class:`AnalysisRun` and the other ranks an
    :class:`AnalysisShard` (they write nothing).
    """
    from .. import distributed as dist

    options = options or AnalysisOptions()
    if not isinstance(options, AnalysisOptions):
        raise FailatlasError(f"run_analysis takes AnalysisOptions, got {type(options).__name__}")
    if out is None:
        raise FailatlasError("run_analysis needs an output folder (--out DIR)")
    options.check()
    out = Path(out)
    rank, world_size = dist.world()
    _check_moved_aside(out, remove=rank == 0)  # every rank refuses alike; rank 0 alone removes
    _io.check_out_folder(out, options.overwrite)
    sharded = world_size > 1
    if rank != 0:  # rank 0 alone announces the stages and shows progress
        options = dataclasses.replace(options, verbose=False, progress_bar=False)
    with _torch_threads(options.threads):
        G, gen_info, loaded = _load_models(options)
        if options.k > G.style_dim:
            raise FailatlasError(f"--k {options.k} exceeds the generator's {G.style_dim} StyleSpace dimensions")
        if sharded:  # every rank checks the same things, so they all fail or all get to init()
            for info, C in loaded:
                if not is_differentiable(C):
                    raise FailatlasError(
                        f"classifier {info.name} ({info.path}) has no gradients (ONNX): `failatlas analyze` does "
                        "not shard its black-box ranking under torchrun (`rank` and `compare` do); run `failatlas "
                        "analyze` in one process (python -m failatlas analyze)")
            if next(G.parameters()).device.type != "cpu":
                raise FailatlasError("failatlas under torchrun runs on the CPU (gloo) only for now")
            dist.init()
        if rank != 0:
            return _run(options, out, None, G, gen_info, loaded, sharded=True, rank=rank, world_size=world_size)
        tmp = _make_staging(out)
        try:
            run = _run(options, out, tmp, G, gen_info, loaded, sharded=sharded, world_size=world_size)
            _publish(tmp, out, options.overwrite)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return run


def _relabel(pop: Population, G, C, batch_size: int | None, progress_bar: bool | None,
             sharded: bool) -> Population:
    """:func:`with_classifier`; sharded: each rank re-labels its block of whole batches (the same batches
    as one process) and the logits are all-gathered, so every rank gets the whole re-labelled population."""
    if not sharded:
        return with_classifier(pop, G, C, batch_size=batch_size, progress_bar=progress_bar)
    from .. import distributed as dist

    part = dist.shard(pop.n, block=check_batch_size(batch_size, G))
    if part.stop > part.start:
        mine = with_classifier(pop.subset(torch.arange(part.start, part.stop)), G, C, batch_size=batch_size,
                               progress_bar=progress_bar).logits
    else:  # a rank with no batch
        mine = torch.zeros(0, G.num_classes)
    logits = dist.all_gather_cat(mine)
    y = pop.y  # as with_classifier does, on the whole population
    p_y = torch.softmax(logits.double(), dim=1).gather(1, y[:, None]).squeeze(1).float()
    pred = logits.argmax(dim=1)
    return Population(z=pop.z, y=y, w=pop.w, s=pop.s, logits=logits, p_y=p_y, pred=pred, well=pred == y,
                      seed=pop.seed, classes=pop.classes)


def _run(options: AnalysisOptions, out: Path, tmp: Path | None, G, gen_info: ModelInfo, loaded, *,
         sharded: bool = False, rank: int = 0, world_size: int = 1) -> AnalysisRun | AnalysisShard:
    """The stages; ``tmp`` None (a rank other than 0 under torchrun): only the sharded population and
    rankings, nothing written, an :class:`AnalysisShard` returned after the last collective."""
    from ..report.curves_figures import (plot_accuracy_curves, plot_accuracy_curves_per_class, plot_overlap,
                                         plot_tsne)
    from ..report.figures import plot_separation
    from ..report.gallery import plot_corner_gallery, plot_failure_direction, plot_manipulation_grid, plot_margins
    from ..report.html import render_report, report_sha256, with_manifest

    created = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()
    stage = Stages("analyze", STAGES, options.verbose)
    seed, bar, bs = int(options.seed), options.progress_bar, options.batch_size
    infos = tuple(info for info, _ in loaded)
    models = {info.name: C for info, C in loaded}
    primary = infos[0].name
    C0 = models[primary]
    from .._paths import recorded_data

    data = recorded_data(gen_info.path)
    names = class_names(C0, dataset=None if data is None else data["dataset"])
    layout = tuple(G.style_layout())
    written: list[str] = []
    figures: list[Figure] = []
    notes: list[str] = []

    def wrote(*names: str) -> None:
        written.extend(names)

    def figure(file: str, title: str, caption: str = "") -> None:
        figures.append(Figure(file, title, caption))
        wrote(file, Path(file).with_suffix(".json").name)

    # 1. population ------------------------------------------------------------------------------------
    n = options.population_size
    real = None  # each classifier's accuracy on the real test split (rank 0)
    drawn_from = check_classes(options.classes)
    with stage("population", f"{n} samples, seed {seed}{describe_classes(drawn_from)}, {len(infos)} classifier(s)"):
        pop0 = sample_population(G, C0, n, seed=seed, classes=drawn_from, batch_size=bs, progress_bar=bar,
                                 distributed=sharded)
        populations = {primary: pop0}
        for info in infos[1:]:
            populations[info.name] = _relabel(pop0, G, models[info.name], bs, bar, sharded)
        if tmp is not None:
            pop0.to_npz(tmp / "population.npz")
            wrote("population.npz")
    # fails here, before any other work, if a group is empty (on every rank alike: they hold the same population)
    separation = Separation(pop0, layout=layout)
    if tmp is not None:  # seconds on MNIST-10k's 2,000 test images; about a minute on Fashion-MNIST's 10,000
        with stage("real test images", f"{len(infos)} classifier(s), clean and corrupted"):
            real, real_notes = real_accuracy(gen_info.path, models, pop0.classes)
            notes.extend(real_notes)
            notes.extend(unrecognised_generator(real, {name: p.accuracy for name, p in populations.items()}))

    # 2. ranking ---------------------------------------------------------------------------------------
    boot = options.bootstrap_resamples
    rankings: dict[str, Ranking] = {}
    with stage("ranking", f"bootstrap {boot}" if boot else "no bootstrap"):
        for info in infos:
            is_primary = info.name == primary
            # bootstrap for every classifier with gradients (a black-box ranking has none: rank_any ignores it)
            kw = dict(per_class=is_primary, bootstrap=boot, seed=seed)
            if sharded:  # rank 0 gets the ranking, the others None (their shard is done)
                ranking = GradientRanking(G, models[info.name], batch_size=bs, progress_bar=bar).rank(
                    populations[info.name], distributed=True, **kw)
            else:
                ranking = rank_any(G, models[info.name], populations[info.name], batch_size=bs, progress_bar=bar,
                                   black_box_n=options.black_box_n, **kw)
            if tmp is None:
                continue
            rankings[info.name] = ranking
            rankings[info.name].to_csv(tmp / f"ranking-{info.name}.csv")
            wrote(f"ranking-{info.name}.csv")
        if tmp is not None:
            rankings[primary].to_csv(tmp / "ranking.csv")
            _io.write_json(tmp / "ranking.json", {**rankings[primary].to_json(), "classifier": primary})
            wrote("ranking.csv", "ranking.json")
    if tmp is None:  # not rank 0: the last collective is done, rank 0 does the rest
        return AnalysisShard(out=out, rank=rank, world_size=world_size, timings=dict(stage.timings))

    # 3. separation ------------------------------------------------------------------------------------
    with stage("separation", f"{len(infos)} classifier(s)"):
        sep = separation.compute()
        sep_summary = sep.summary(rankings[primary], k=TOP, seed=seed)
        sep.to_csv(tmp / "separation.csv")
        wrote("separation.csv")
        # every classifier's own well/mis split and ranking: a classifier that rarely fails gives few
        # mis-classified samples to separate, so its figure alone can hide that the method works
        by_classifier: dict[str, Any] = {primary: dict(sep_summary)}
        for info in infos[1:]:
            pop = populations[info.name]
            if pop.n_well in (0, pop.n):
                by_classifier[info.name] = None
                notes.append(f"no separation for {info.name}: it classifies "
                             f"{'every' if pop.n_well == pop.n else 'no'} sample of the population correctly")
                continue
            other = Separation(pop, layout=layout).compute()
            by_classifier[info.name] = other.summary(rankings[info.name], k=TOP, seed=seed)
            other.to_csv(tmp / f"separation-{info.name}.csv")
            wrote(f"separation-{info.name}.csv")
        # a diagnostic beside DESIGN's: does one direction of W explain the separation (entanglement)?
        directions: dict[str, Any] = {}
        directions_found = {}
        span = effective_dimension(pop0.s)  # every classifier's population has these styles: once
        for info in infos:
            if by_classifier.get(info.name) is None:
                continue
            try:
                found = FailureDirection(G, populations[info.name], seed=seed, style_effective_dims=span).fit()
            except FailatlasError as e:
                notes.append(f"no failure direction for {info.name}: {e}")
                by_classifier[info.name] = {**by_classifier[info.name], "latent_direction": None,
                                            "latent_direction_error": str(e)}
                continue
            directions[info.name], directions_found[info.name] = found.to_json(), found
            by_classifier[info.name] = {**by_classifier[info.name], "latent_direction": found.summary()}
        if directions:
            _io.write_json(tmp / "failure_direction.json", {"note": FAILURE_DIRECTION_NOTE, **directions})
            wrote("failure_direction.json")
        sep_summary = {**by_classifier[primary], "by_classifier": by_classifier}  # the primary's at the top
        notes.extend(weak_separation(by_classifier))
        plot_separation(sep, rankings[primary], tmp / "separation.png", k=3, seed=seed, classifier=primary)
        figure("separation.png", "Separation of well- vs mis-classified samples (Fig. 4)",
               f"Histograms of s_k for the top 3 dimensions of {primary}'s ranking (top row) and 3 of the 10 random "
               "other dimensions the summary compares them with (bottom row), each as a fraction of its group, "
               "with its rank, KS statistic and AUROC. Every dimension's figures are in separation.csv.")
        found = directions_found.get(primary)
        if found is not None:
            plot_failure_direction(walk_failure_direction(G, C0, found, batch_size=bs),
                                   tmp / "failure_direction_walk.png", classifier=primary, class_names=names)
            figure("failure_direction_walk.png", "The failure direction in W",
                   f"The one direction of W that best separates {primary}'s mis-classified samples, fitted on "
                   f"half of the population and measured on the other half: {describe_direction(found.summary())}. "
                   "Rows: each class's average image; columns: moved along it, in units of the projection's "
                   "spread among the well-classified samples. What changes along a row is what the failures "
                   "have in common.")

    # 4. t-SNE -----------------------------------------------------------------------------------------
    tsne = None
    if options.skip_tsne:
        stage.skip("tsne", "--skip-tsne")
        notes.append("t-SNE skipped (--skip-tsne)")
    else:
        with stage("tsne", f"at most {options.tsne_max_points} points"):
            tsne = LatentTSNE(max_points=options.tsne_max_points, seed=seed).embed(pop0)
            plot_tsne(tsne, tmp / "tsne.png", classifier=primary)
            figure("tsne.png", "t-SNE of Z, W and S (Fig. 3)",
                   f"{tsne.n} samples, coloured by {primary}'s verdict: well- (blue) vs mis-classified (red).")

    # 5. corner cases ----------------------------------------------------------------------------------
    with stage("corner cases", f"top {TOP} dims, pairs of the top {N_PAIRS}, steps of {options.corner_step:g}σ"):
        cc = CornerCaseSearch(G, C0, rankings[primary], batch_size=bs, progress_bar=bar).search(
            pop0, dims=TOP, pairs=True, n_pairs=N_PAIRS, step=float(options.corner_step), classes=pop0.classes)
        cc.to_csv(tmp / "corner_cases.csv")
        _io.write_json(tmp / "corner_cases.json", _io.jsonable(cc.to_json()))
        wrote("corner_cases.csv", "corner_cases.json")
        with warnings.catch_warnings():  # many long titles in a small grid: matplotlib says so, harmlessly
            warnings.filterwarnings("ignore", message="Tight layout not applied", category=UserWarning)
            plot_corner_gallery(cc, G, tmp / "corner_gallery.png", classifier=primary, class_names=names)
        figure("corner_gallery.png", "Corner cases: start and corner-case images",
               "The class's average image (left) and, along a failure direction, the smallest signed shift at "
               f"which p_y ≤ 0.5 for {primary} (right), with the class it predicts there. Chosen to show many "
               "directions: one case per class, each along a dimension not shown for an earlier class where it "
               "has one (so not always the class's smallest shift), then pairs of directions. Every case is in "
               "the corner-case table below and in corner_cases.csv.")
        notes.extend(cc.warnings)
        failing_starts = sorted({r.cls for r in cc.cases if r.at_start})
        if failing_starts:
            notes.append(f"class{'es' if len(failing_starts) > 1 else ''} {', '.join(map(str, failing_starts))}: "
                         f"the average of the well-classified samples already has p_y ≤ 0.5 for {primary} (the "
                         "average image is ambiguous), so there is no corner case to find from it; those pairs "
                         "are counted as 'at start', not as found")

    # margins (beyond the paper): the corner search from many well-classified samples -----------------------
    margins = None
    per = options.margin_starts_per_class
    if per == 0:
        stage.skip("margins", "--margin-starts 0" if options.margin_starts == 0 else "--quick; --margin-starts M runs "
                   "them")
    else:
        with stage("margins", f"{per} well-classified samples per class, top {TOP} dims"):
            margins = CornerMargins(G, C0, rankings[primary], batch_size=bs, progress_bar=bar).compute(
                pop0, per_class=per, dims=TOP, seed=seed, step=float(options.corner_step))
            margins.to_csv(tmp / "margins.csv")
            plot_margins(margins, tmp / "margins.png", cases=cc, classifier=primary)
            wrote("margins.csv")
            figure("margins.png", "Margins: corner shifts of many samples (beyond the paper)",
                   f"The corner search of the table below, run from {margins.index.numel()} well-classified samples "
                   f"({per} per class at most, drawn with seed {seed}) instead of each class's average image: "
                   "one dot per sample and dimension, the 5% and 25% quantiles and the median; red crosses: the "
                   "average images' shifts. A 5% quantile of 3σ means 95% of these samples need at least 3σ "
                   "along that dimension before p_y ≤ 0.5. Per sample in margins.csv.")
            if margins.skipped_classes:
                notes.append(f"margins: no start for class{'es' if len(margins.skipped_classes) > 1 else ''} "
                             f"{', '.join(class_label(c, names) for c in margins.skipped_classes)} (no "
                             "well-classified sample)")

    # 6. manipulation grids ----------------------------------------------------------------------------
    classes = sorted({int(c) for c in cc.labels.tolist()})
    limit = options.grid_class_limit  # a class whose start already fails makes a grid of one image: last
    grid_classes = classes if limit is None else sorted(([c for c in classes if c not in failing_starts]
                                                         + [c for c in classes if c in failing_starts])[:limit])
    grids: list[ManipulationGrid] = []
    # (class, dim, fraction, p_y, signed shift in σ): grid cells failing short of the corner shift
    earlier: list[tuple[int, int, float, float, float]] = []
    with stage("manipulation", f"classes {', '.join(map(str, grid_classes)) or 'none'}"):
        for c in grid_classes:
            grid = manipulation_grid(G, C0, cc, c, batch_size=bs)
            grids.append(grid)
            for d, f, q in grid.earlier_failures:
                j = grid.dims.index(d)
                earlier.append((c, d, f, q, f * grid.directions[j] * grid.base_shifts[j]))
            name = f"manipulation-class{c}.png"
            plot_manipulation_grid(grid, tmp / name, classifier=primary)
            figure(name, f"Manipulation grid, class {class_label(c, names)} (Fig. 5)",
                   "Columns: the top dimensions, each headed by its signed corner-case shift t; rows: fractions of "
                   f"t; p_y of {primary} in each cell (red when ≤ 0.5).")
    if earlier:
        cells = "; ".join(f"class {class_label(c, names)} dim {d} at {f:g} × ({t:+.2f}σ, p_y {q:.3f})"
                          for c, d, f, q, t in earlier)
        notes.append(f"the manipulation grids show p_y ≤ 0.5 short of {len(earlier)} corner shift(s) ({cells}): "
                     f"the corner search brackets in steps of {options.corner_step:g}σ and can step over a narrower "
                     "dip, so a nearer corner case exists there; rerun with a smaller --corner-step to find it")

    # 7. accuracy curves -------------------------------------------------------------------------------
    curves: dict[str, CurveResult] = {}
    with stage("accuracy curves", f"K = {options.k}"):
        for info in infos:
            curves[info.name] = AccuracyCurve(rankings[info.name], k=options.k, per_class=True,
                                              centre=options.curve_centre).compute(populations[info.name])
        _curves_csv(curves, tmp / "curves.csv")
        _io.write_json(tmp / "curves.json", _io.jsonable({"format": CURVES_FORMAT, "k": options.k,
                                                       "primary": primary,
                                                       "classifiers": {k: v.to_json() for k, v in curves.items()}}))
        wrote("curves.csv", "curves.json")
        plot_accuracy_curves(curves, tmp / "accuracy_curves.png")
        where = "its class's" if options.curve_centre == "class" else "the"
        figure("accuracy_curves.png", f"Accuracy vs distance to {where} well-classified centre (Fig. 6)",
               f"Top-{options.k} dimensions of each classifier's own ranking; a steeper fall = less resilient. "
               "Shaded: each bin's 95% interval; the legend's slope is accuracy per unit of distance; samples "
               "outside the plotted bins (beyond distance 1) are counted under the plot, not drawn.")
        if curves[primary].per_class:
            # a classifier without a curve for any class is kept: each panel names it, and so does a note
            per_class = {name: c for name, c in curves.items() if c.per_class or c.skipped_classes}
            plot_accuracy_curves_per_class(per_class, tmp / "accuracy_curves_per_class.png", class_names=names)
            figure("accuracy_curves_per_class.png", f"Accuracy vs distance per class ({', '.join(per_class)})",
                   "Each class with its own centre and normalization; shaded: 95% intervals; a panel counts the "
                   "samples it leaves out (beyond distance 1).")
            notes.extend(sparse_class_curves(per_class, names))
            for name, c in per_class.items():
                if c.skipped_classes:
                    cs = c.skipped_classes
                    notes.append(f"{name} has no per-class accuracy curve for class"
                                 f"{'es' if len(cs) > 1 else ''} {', '.join(class_label(x, names) for x in cs)}: "
                                 "fewer than two of its samples are well classified, at distinct distances "
                                 "(its panel says so)")
        else:
            notes.append(f"no per-class accuracy curve for {primary}: no class has 2 well-classified samples")

    # 8. class overlap ---------------------------------------------------------------------------------
    overlap = None
    if not rankings[primary].per_class:  # a classifier without gradients: its finite differences are too few
        why = (f"{primary} has no per-class rankings: it has no gradients and its finite-difference ranking "
               f"uses {rankings[primary].n} samples, too few per class")
        stage.skip("overlap", why)
        notes.append(f"no class overlap: {why}")
    else:
        with stage("overlap", f"top {TOP} per class"):
            overlap = ClassDirections(k=min(TOP, G.style_dim)).compare(rankings[primary])
            overlap.to_csv(tmp / "overlap.csv")
            wrote("overlap.csv")
            plot_overlap(overlap, tmp / "overlap.png", classifier=primary, class_names=names)  # + overlap.json
            figure("overlap.png", "Class-specific vs global directions",
                   f"Jaccard overlap of the per-class top-{overlap.k} dimensions of {primary}, and of each class "
                   "with the global top.")

    # summary, manifest, report ------------------------------------------------------------------------
    summary = _io.jsonable({
        "primary": primary,
        "class_names": None if names is None else list(names),
        "population": {"n": pop0.n, "seed": seed, "classes": None if pop0.classes is None else list(pop0.classes),
                       "accuracy": {name: p.accuracy for name, p in populations.items()},
                       "n_mis": {name: p.n_mis for name, p in populations.items()}},
        "real_accuracy": real,
        "top_dims": {name: r.order[:TOP].tolist() for name, r in rankings.items()},
        "separation": sep_summary,
        "corner_cases": cc.summary(),
        "margins": None if margins is None else _io.jsonable(margins.summary()),
        "accuracy_curves": {name: {f"K{options.k}": _curve_summary(c)} for name, c in curves.items()},
        "overlap": None if overlap is None else {"k": overlap.k, "mean_pairwise_jaccard": overlap.mean_pairwise,
                                                 "shared_dims": [d.dim for d in overlap.shared]},
        "tsne": None if tsne is None else {"n": tsne.n, "perplexity": tsne.perplexity,
                                           "kl_divergence": tsne.kl_divergence},
    })
    _io.write_json(tmp / "summary.json", summary)
    wrote("summary.json", "report.html", _io.RUN_MANIFEST)
    timings = dict(stage.timings)
    used = dataclasses.replace(options, batch_size=check_batch_size(bs, G))  # the batch size chosen, recorded
    manifest = _io.jsonable({
        "format": MANIFEST_FORMAT, "created": created,
        "versions": _provenance.versions(),
        "command": rerun_command(used, out, gen_info, infos),
        "platform": {"system": platform.platform(), "machine": platform.machine(),
                     "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
                     "world_size": world_size},
        # who published the folder: the proof that lets the next run remove the earlier run this process
        # moved aside if it was killed while deleting it (_check_moved_aside)
        "process": _io.process_record(),
        "seeds": {"population": seed, "bootstrap": seed, "separation_random_dims": seed, "tsne": seed},
        "options": used.effective(),
        "models": {"generator": gen_info.to_json(), "classifiers": [i.to_json() for i in infos],
                   "primary": primary},
        "timings": {stage_name: round(seconds, 3) for stage_name, seconds in timings.items()},
        "files": sorted(written),
        # every file but these two (the report shows this manifest), to tell a run folder edited later
        "file_sha256": _io.folder_sha256(tmp, leave_out=UNDIGESTED),
        "notes": notes,
    })
    files = {name: out / name for name in sorted(written)}
    run = AnalysisRun(out=out, options=options, generator=gen_info, classifiers=infos, populations=populations,
                      rankings=rankings, separation=sep, separation_summary=sep_summary, tsne=tsne,
                      corner_cases=cc, margins=margins, grids=tuple(grids), curves=curves, overlap=overlap,
                      summary=summary, manifest=manifest, figures=_report_order(figures), files=files,
                      timings=timings, notes=tuple(notes), class_names=names)
    # the report shows the manifest, and the manifest records the digest of the report without that section
    report = render_report(run, folder=tmp)
    manifest["report_sha256"] = report_sha256(report)
    _io.write_bytes(tmp / "report.html", with_manifest(report, manifest).encode("utf-8"))
    _io.write_json(tmp / _io.RUN_MANIFEST, manifest)
    missing = sorted(name for name in written if not (tmp / name).is_file())
    if missing:  # a figure function that changed its twin's name, say: fail loudly rather than mis-list
        raise RuntimeError(f"analysis run lists files it did not write: {missing}")
    return run
