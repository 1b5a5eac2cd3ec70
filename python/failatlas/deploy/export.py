"""Every deployable form of a generator + classifier pair, in one folder (``failatlas export``).

:func:`export_models` writes, into ``out``:

=========================  ===========================================================================
``classifier.onnx``        images float32 ``[N, 1, 28, 28]`` in [0, 1] → ``logits [N, C]``
                           (:func:`~failatlas.deploy.export_classifier_onnx`)
``classifier.pt``          the same classifier as TorchScript (:func:`~failatlas.deploy.export_classifier_torchscript`)
``classifier.pt2``         the same classifier as a ``torch.export`` program
                           (:func:`~failatlas.deploy.export_classifier_program`)
``synthesis.onnx``         ``styles [N, dim S]`` → ``images [N, 1, 32, 32]`` in about [-1, 1]
                           (the synthesis network with deterministic ``noise_mode``)
``fused.onnx``             ``styles [N, dim S]`` → ``logits [N, C]``
                           (:class:`~failatlas.engine.fused.FusedModel`: synthesis → adapter → classifier)
``fused.pt``               the same graph as TorchScript (:func:`~failatlas.engine.fused.export_torchscript`)
``fused.pt2``              the same graph as a ``torch.export`` program (:func:`~failatlas.engine.fused.export_program`)
``classifier-int8.onnx``   with ``int8=True``: static int8 QDQ quantization of ``classifier.onnx``,
                           calibrated on real training images (:func:`~failatlas.deploy.quantize_classifier_int8`)
``export.json``            every file above: sha256, bytes, input/output names and shapes, opset and
                           exporter, the parity figures measured against eager torch; ``style_dim``,
                           ``num_classes``; with ``int8`` the accuracy table (torch fp32, ONNX fp32, ONNX int8
                           on the clean and corrupted test splits)
=========================  ===========================================================================

Every ONNX file is one self-contained file (no external weights), has a dynamic batch dimension ``N`` and
passes ``onnx.checker.check_model(full_check=True)``. Every float32 file is compared with the eager torch
model before anything is written: on styles drawn as real ones are, ``s = G.styles(G.mapping(z, y))``, at
batch sizes :data:`PARITY_BATCHES` (the graphs are exported at batch :data:`EXAMPLE_BATCH`); the largest
difference relative to ``max(1, |largest eager output|)`` must be ≤ :data:`PARITY_RTOL`, else nothing is
written.

Atomicity: everything is built in a temporary folder beside ``out`` (in ``out``'s parent, so on the same
file system), which is removed if anything fails, also on Ctrl-C: a failed export leaves no file behind.
A new ``out`` appears in one rename; into an existing (empty, or with ``overwrite``) folder the files are
renamed in one by one, ``export.json`` last, so each file is always whole.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from .._io import check_out_folder, make_temp, sha256, signals_held, write_bytes, write_json
from .._provenance import versions
from ..errors import FailatlasError
from .onnx_classifier import _first_line, _quiet_exporter, set_metadata

__all__ = ["EXPORT_FILES", "ExportResult", "INT8_FILE", "MANIFEST_FILE", "PARITY_BATCHES", "PARITY_RTOL",
           "export_models"]

CLASSIFIER_FILE = "classifier.onnx"
CLASSIFIER_TS_FILE = "classifier.pt"
CLASSIFIER_EP_FILE = "classifier.pt2"
SYNTHESIS_FILE = "synthesis.onnx"
FUSED_ONNX_FILE = "fused.onnx"
FUSED_TS_FILE = "fused.pt"
FUSED_EP_FILE = "fused.pt2"
INT8_FILE = "classifier-int8.onnx"
MANIFEST_FILE = "export.json"
#: the files every export writes (besides export.json), in the order they are written
EXPORT_FILES = (CLASSIFIER_FILE, CLASSIFIER_TS_FILE, CLASSIFIER_EP_FILE, SYNTHESIS_FILE, FUSED_ONNX_FILE, FUSED_TS_FILE,
                FUSED_EP_FILE)

MANIFEST_FORMAT = "failatlas-export"
MANIFEST_VERSION = 1
EXPORT_NOISE_MODES = ("const", "none")
#: the batch size the ONNX graphs are exported at, and those their parity is measured at (others)
EXAMPLE_BATCH = 5
PARITY_BATCHES = (1, 7)
#: largest |exported − eager| / max(1, |largest eager output|) allowed for a float32 file
PARITY_RTOL = 1e-4
#: generated digits the int8 classifier's top-1 agreement with the float32 one is measured on
INT8_AGREEMENT_SAMPLES = 256
_STYLE_SEEDS = {"example": 0, "parity": 1, "agreement": 2}


# --------------------------------------------------------------------------------------------- result


@dataclass
class ExportResult:
    """What :func:`export_models` wrote: ``out`` (the folder), ``manifest`` (the content of export.json),
    ``wall_time_s``. ``files`` maps each file name (export.json included) to its path."""

    out: Path
    manifest: dict[str, Any]
    wall_time_s: float
    files: dict[str, Path] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"out": str(self.out), **self.manifest}

    def format(self) -> str:
        m = self.manifest
        lines = [f"exported to {self.out} in {self.wall_time_s:.1f} s (style_dim {m['style_dim']}, "
                 f"{m['num_classes']} classes, noise_mode {m['noise_mode']!r})"]
        for name, entry in m["files"].items():
            parity = entry.get("parity")
            if parity is None:
                check = ""
            elif "max_rel_error" in parity:
                check = f"  parity max rel err {parity['max_rel_error']:.2e} at N={parity['batch_sizes']}"
            else:
                check = (f"  top-1 agreement with fp32 {parity['top1_agreement']:.4f} "
                         f"on {parity['samples']} generated digits")
            ins = ", ".join(f"{i['name']} {_shape_text(i['shape'])}" for i in entry["inputs"])
            outs = ", ".join(f"{o['name']} {_shape_text(o['shape'])}" for o in entry["outputs"])
            lines.append(f"  {name:<22} {entry['bytes'] / 1e6:8.2f} MB  {ins} → {outs}{check}")
        int8 = m.get("int8")
        if int8:
            lines.append(f"accuracy ({int8['dataset']} test, {int8['accuracy_n']} images per split; int8 "
                         f"calibrated on {int8['calibration_images']} train images):")
            lines.append(f"  {'model':<12} {'clean':>8} {'corrupted':>10}")
            for name, row in int8["accuracy"].items():
                lines.append(f"  {name:<12} {row['clean']:>8.4f} {row['corrupted']:>10.4f}")
        lines.append(f"manifest: {self.out / MANIFEST_FILE}")
        return "\n".join(lines)


def _shape_text(shape: list[Any]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


# --------------------------------------------------------------------------------------------- export


DEFAULT_CALIBRATION = 1000  # real training images that calibrate the int8 activation ranges


def export_models(generator: nn.Module | str | os.PathLike, classifier: nn.Module | str | os.PathLike,
                  out: str | os.PathLike, *, int8: bool = False, noise_mode: str = "const",
                  calibration: int | None = None, dataset: str | None = None,
                  idx_dir: str | os.PathLike | None = None,
                  overwrite: bool = False, seed: int = 0) -> ExportResult:
    """Export ``generator`` + ``classifier`` into the folder ``out`` (see the module doc for the files).

    ``generator``: a failatlas StyleGAN2 :class:`~failatlas.models.stylegan2.Generator`, its folder, or a
    shipped name (``"mnist/generator"``); ``classifier``: a torch classifier of ``[N, 1, 28, 28]`` images,
    its folder or a shipped name (``"mnist/classifier-corrupted"``); it must predict the generator's classes.
    ``noise_mode``: the generator's deterministic noise, ``"const"`` (default) or ``"none"``; ``"random"``
    is refused (an exported graph must give the same output for the same styles).
    ``int8``: also write ``classifier-int8.onnx``, calibrated on ``calibration`` (None: 1,000) real training
    images of
    ``dataset`` (default: the dataset the classifier records it was trained on, with its IDX folder and blur;
    else ``"mnist"``; ``idx_dir``: the IDX folder of a ``dataset`` given here), and measure the accuracy table.
    ``out`` must not exist or be empty, unless ``overwrite``: then the files named above are replaced (and
    a ``classifier-int8.onnx`` of an earlier export is removed when ``int8`` is off), others are left alone.
    ``seed``: seed of the styles the graphs are exported and checked with.

    Every problem (a missing model, a classifier with other classes, an op an exporter cannot handle, a
    file that disagrees with eager torch) raises :class:`FailatlasError`, and then no file is written.
    """
    start = time.perf_counter()
    out = Path(out)
    if noise_mode not in EXPORT_NOISE_MODES:
        raise FailatlasError(f"an exported graph must be deterministic: noise_mode must be one of "
                             f"{', '.join(EXPORT_NOISE_MODES)}, got {noise_mode!r} (random noise differs on "
                             "every call)")
    if not int8 and (calibration is not None or dataset is not None or idx_dir is not None):
        raise FailatlasError("--calibration, --dataset and --idx-dir set up the int8 export: add --int8, or leave "
                             "them out")
    calibration = DEFAULT_CALIBRATION if calibration is None else calibration
    if isinstance(calibration, bool) or not isinstance(calibration, (int, np.integer)) or calibration < 1:
        raise FailatlasError(f"the number of calibration images must be a positive integer, got {calibration!r}")
    check_out_folder(out, overwrite, "to replace the exported files in it")
    G, g_name = _load_generator(generator)
    C, c_name = _load_classifier(classifier)
    num_classes = _check_classes(G, C, g_name, c_name)
    from ..models.classifier import classifier_config_of

    config = classifier_config_of(C)
    images, data = None, None
    if int8:
        from .quantize import calibration_images

        from .._paths import data_to_judge

        data = data_to_judge(None if isinstance(classifier, nn.Module) else classifier, dataset, idx_dir,
                             training=config.training if config is not None else None)  # recorded, unless named
        if not data["recorded"] and dataset is None and config is not None and config.dataset:
            data["dataset"] = config.dataset  # a classifier module without a record: the dataset it names
        images = calibration_images(data["dataset"], n=int(calibration), seed=seed, blur=data["blur"],
                                    idx_dir=data["idx_dir"])

    target = out.resolve()  # "." or "a/.." have no usable name and parent
    target.parent.mkdir(parents=True, exist_ok=True)
    stage = make_temp(target.parent, f".{target.name}.export-")  # (after removing a killed export's)
    try:
        with torch.no_grad():
            manifest = _build(stage, G, C, num_classes, noise_mode=noise_mode, seed=seed, images=images,
                              data=data)
        manifest.update(generator=str(generator) if not isinstance(generator, nn.Module) else g_name,
                        classifier=str(classifier) if not isinstance(classifier, nn.Module) else c_name,
                        class_names=None if config is None or config.class_names is None
                        else list(config.class_names),
                        **_provenance(generator, classifier, out, int8=int8, noise_mode=noise_mode, seed=seed,
                                      calibration=calibration, data=data if dataset is not None else None),
                        wall_time_s=round(time.perf_counter() - start, 2))
        write_json(stage / MANIFEST_FILE, manifest)
        names = list(manifest["files"]) + [MANIFEST_FILE]
        _commit(stage, target, names, stale=() if int8 else (INT8_FILE,))
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return ExportResult(out=out, manifest=manifest, wall_time_s=time.perf_counter() - start,
                        files={name: out / name for name in names})


def _provenance(generator: Any, classifier: Any, out: Path, *, int8: bool, noise_mode: str, seed: int,
                calibration: int, data: dict[str, Any] | None) -> dict[str, Any]:
    """What export.json records of where the files came from, as rank and compare record it: ``models`` (each
    model's path and the sha256 of its files, which ``failatlas verify`` checks) and ``command`` (the ``failatlas
    export`` line that redoes the export). Nothing for models passed as loaded modules: they have no files.
    ``data``: the dataset named for the int8 calibration (None: the classifier's own, not an option)."""
    if isinstance(generator, nn.Module) or isinstance(classifier, nn.Module):
        return {}
    from .._paths import absolute_folder, resolve_classifier, resolve_model
    from ..analysis.pipeline import command_line, generator_info, model_info

    gpath, cpath = resolve_model(generator), resolve_classifier(classifier)
    ginfo, cinfo = generator_info(generator, gpath), model_info(classifier, cpath, cpath.resolve().name)
    options = ["--noise-mode", noise_mode, "--seed", seed]
    if int8:
        options += ["--int8", "--calibration", calibration]
        if data is not None:
            options += ["--dataset", data["dataset"], *(["--idx-dir", absolute_folder(data["idx_dir"])] if data["idx_dir"] else [])]
    return {"models": {"generator": ginfo.to_json(), "classifier": cinfo.to_json()},
            "command": command_line("export", ginfo, [cinfo], options, out)}


def _build(stage: Path, G: nn.Module, C: nn.Module, num_classes: int, *, noise_mode: str, seed: int,
           images: torch.Tensor | None, data: dict[str, Any] | None) -> dict[str, Any]:
    """Write every file into ``stage``; returns the manifest (without the file-independent extras)."""
    from ..engine.fused import FusedModel, export_program, export_torchscript, load_fused
    from ..models.adapter import classifier_view
    from .onnx_classifier import export_classifier_onnx
    from .torch_classifier import TorchFileClassifier, export_classifier_program, export_classifier_torchscript

    fused = FusedModel(G, C, noise_mode)
    synthesis = _SynthesisModule(fused.synthesis, noise_mode)
    classifier = fused.classifier
    style_dim = fused.style_dim
    example = _real_styles(G, EXAMPLE_BATCH, seed + _STYLE_SEEDS["example"])
    parity_styles = {n: _real_styles(G, n, seed * 1000 + _STYLE_SEEDS["parity"] * 100 + n)
                     for n in PARITY_BATCHES}
    files: dict[str, dict[str, Any]] = {}
    styles_io = {"name": "styles", "dtype": "float32", "shape": ["N", style_dim]}
    logits_io = {"name": "logits", "dtype": "float32", "shape": ["N", num_classes]}

    # classifier.onnx: on images the generator draws, as the classifier sees them
    path = stage / CLASSIFIER_FILE
    export_classifier_onnx(classifier, path)
    parity_images = {n: classifier_view(synthesis(s)) for n, s in parity_styles.items()}
    files[CLASSIFIER_FILE] = _onnx_entry(path, "classifier: images [N, 1, 28, 28] in [0, 1] → logits",
                                         _onnx_parity(path, classifier, parity_images, CLASSIFIER_FILE))
    images_io = {"name": "images", "dtype": "float32", "shape": ["N", 1, 28, 28]}
    for name, writer, fmt, how in ((CLASSIFIER_TS_FILE, export_classifier_torchscript, "torchscript", "torch.jit.trace"),
                                   (CLASSIFIER_EP_FILE, export_classifier_program, "torch.export", "torch.export.export")):
        path = stage / name
        writer(classifier, path)
        files[name] = {"format": fmt, "description": "classifier: images [N, 1, 28, 28] in [0, 1] → logits "
                       "(failatlas.deploy.TorchFileClassifier)", **_file_facts(path), "inputs": [images_io],
                       "outputs": [logits_io], "exporter": how,
                       "parity": _parity(TorchFileClassifier(path), classifier, parity_images, name)}

    res = int(G.cfg.resolution)
    img = f"[N, {int(G.cfg.img_channels)}, {res}, {res}]"
    meta = {"style_dim": str(style_dim), "num_classes": str(num_classes), "noise_mode": noise_mode,
            "torch_version": torch.__version__}
    path = stage / SYNTHESIS_FILE
    exporter = _export_onnx(synthesis, example, path, "styles", "images", "the synthesis network",
                            {**meta, "failatlas_format": "failatlas-onnx-synthesis",
                             "input": f"styles: float32 [N, {style_dim}], s = G.styles(G.mapping(z, y))",
                             "output": f"images: float32 {img} in about [-1, 1]"})
    files[SYNTHESIS_FILE] = _onnx_entry(path, f"synthesis: styles → images {img} in about [-1, 1]",
                                        _onnx_parity(path, synthesis, parity_styles, SYNTHESIS_FILE), exporter)

    path = stage / FUSED_ONNX_FILE
    exporter = _export_onnx(fused, example, path, "styles", "logits", "the fused graph",
                            {**meta, "failatlas_format": "failatlas-onnx-fused",
                             "input": f"styles: float32 [N, {style_dim}], s = G.styles(G.mapping(z, y))",
                             "output": f"logits: float32 [N, {num_classes}]"})
    files[FUSED_ONNX_FILE] = _onnx_entry(path, "fused: styles → synthesis → adapter → classifier → logits",
                                         _onnx_parity(path, fused, parity_styles, FUSED_ONNX_FILE), exporter)

    for name, writer, fmt, how in ((FUSED_TS_FILE, export_torchscript, "torchscript", "torch.jit.trace"),
                                   (FUSED_EP_FILE, export_program, "torch.export", "torch.export.export")):
        path = stage / name
        try:
            writer(G, C, path, noise_mode=noise_mode)
        except FailatlasError:
            raise
        except Exception as exc:  # noqa: BLE001 - tracing/export errors come in many types
            raise FailatlasError(f"cannot write {name} ({fmt}) of the fused graph ({_first_line(exc)}); "
                                 "export without it is not possible: please report this") from None
        graph = load_fused(path)
        files[name] = {"format": fmt, "description": "fused: styles → logits (failatlas.engine.fused.load_fused)",
                       **_file_facts(path), "inputs": [styles_io], "outputs": [logits_io], "exporter": how,
                       "parity": _parity(graph, fused, parity_styles, name)}

    int8_info = None
    if images is not None:
        int8_info = _int8(stage, classifier, synthesis, G, images, data, seed, files)

    return {"format": MANIFEST_FORMAT, "format_version": MANIFEST_VERSION, "style_dim": style_dim,
            "num_classes": num_classes, "noise_mode": noise_mode,
            "image_shape": [int(G.cfg.img_channels), int(G.cfg.resolution), int(G.cfg.resolution)],
            "classifier_input_shape": [1, 28, 28],
            "parity": {"tolerance": PARITY_RTOL, "batch_sizes": list(PARITY_BATCHES), "export_batch": EXAMPLE_BATCH,
                       "measure": "max |exported - eager torch| / max(1, max |eager|), over all outputs",
                       "styles": "s = G.styles(G.mapping(z, y)), z ~ N(0, I), y uniform over the classes",
                       "runtime": "onnxruntime CPUExecutionProvider for .onnx, torch for .pt/.pt2"},
            "files": files, "int8": int8_info, "versions": versions()}


def _int8(stage: Path, classifier: nn.Module, synthesis: nn.Module, G: nn.Module, images: torch.Tensor,
          data: dict[str, Any], seed: int, files: dict[str, dict[str, Any]]) -> dict[str, Any]:
    from ..models.adapter import classifier_view
    from .onnx_classifier import OnnxClassifier
    from .quantize import compare_accuracy, quantize_classifier_int8

    fp32_path, int8_path = stage / CLASSIFIER_FILE, stage / INT8_FILE
    quantize_classifier_int8(fp32_path, int8_path, images)
    fp32, q = OnnxClassifier(fp32_path), OnnxClassifier(int8_path)
    x = classifier_view(synthesis(_real_styles(G, INT8_AGREEMENT_SAMPLES, seed * 1000 + _STYLE_SEEDS["agreement"])))
    want, got = fp32(x), q(x)
    agreement = {"samples": INT8_AGREEMENT_SAMPLES, "reference": CLASSIFIER_FILE,
                 "top1_agreement": float((want.argmax(1) == got.argmax(1)).float().mean()),
                 "max_abs_logit_diff": float((want - got).abs().max())}
    files[INT8_FILE] = _onnx_entry(int8_path, "classifier, static int8 QDQ: images [N, 1, 28, 28] → logits",
                                   agreement, "onnxruntime.quantization.quantize_static of " + CLASSIFIER_FILE)
    table = compare_accuracy({"torch fp32": classifier, "onnx fp32": fp32, "onnx int8": q},
                             dataset=data["dataset"], idx_dir=data["idx_dir"], blur=data["blur"])
    n = next(iter(table.values()))["n"]
    sizes = {"torch fp32": None, "onnx fp32": files[CLASSIFIER_FILE]["bytes"], "onnx int8": files[INT8_FILE]["bytes"]}
    accuracy = {name: {"clean": row["clean"], "corrupted": row["corrupted"], "bytes": sizes[name]}
                for name, row in table.items()}
    return {"file": INT8_FILE, "dataset": data["dataset"], "idx_dir": data["idx_dir"], "blur": data["blur"],
            "calibration_images": int(len(images)),
            "calibration": "class-balanced real TRAIN images (failatlas.deploy.calibration_images)",
            "accuracy_n": n, "accuracy": accuracy}


# --------------------------------------------------------------------------------------------- helpers


class _SynthesisModule(nn.Module):
    """styles Tensor[N, dim S] → images Tensor[N, C, R, R] with a fixed deterministic noise mode."""

    def __init__(self, synthesis: nn.Module, noise_mode: str) -> None:
        super().__init__()
        self.synthesis, self.noise_mode = synthesis, noise_mode
        self.eval()

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return self.synthesis(s, self.noise_mode)



def _load_generator(generator: Any) -> tuple[nn.Module, str]:
    from .._paths import resolve_model
    from ..models.stylegan2 import load_generator

    if isinstance(generator, nn.Module):
        if not hasattr(generator, "synthesis_network") or not hasattr(generator, "mapping"):
            raise FailatlasError(f"export needs a failatlas StyleGAN2 Generator, got {type(generator).__name__}; "
                                 "load one with failatlas.load_generator(path)")
        return generator, type(generator).__name__
    return load_generator(resolve_model(generator)), str(generator)


def _load_classifier(classifier: Any) -> tuple[nn.Module, str]:
    from .._paths import resolve_model
    from ..models.classifier import load_classifier

    if isinstance(classifier, nn.Module):
        from ..analysis.ranking import is_differentiable

        if not is_differentiable(classifier):
            raise FailatlasError(f"export needs a torch classifier with weights, got {type(classifier).__name__} "
                                 "(an ONNX classifier cannot be fused); pass the classifier folder")
        return classifier, type(classifier).__name__
    from .._paths import classifier_file_format

    if classifier_file_format(classifier):
        kind = {"onnx": "an ONNX", "torchscript": "a TorchScript", "torch.export": "a torch.export"}[
            classifier_file_format(classifier)]
        raise FailatlasError(f"--classifier {classifier} is {kind} file, but export "
                             "needs the torch classifier it came from (it writes every format from it); pass its "
                             "folder or a shipped name such as mnist/classifier-corrupted")
    return load_classifier(resolve_model(classifier)), str(classifier)


def _check_classes(G: nn.Module, C: nn.Module, g_name: str, c_name: str) -> int:
    """The classifier's class count, checked against the generator's (from a probe, not only the config)."""
    from ..models.classifier import classifier_config_of

    try:
        with torch.no_grad():
            probe = C.eval()(torch.zeros(2, 1, 28, 28, dtype=next(C.parameters()).dtype,
                                         device=next(C.parameters()).device))
    except Exception as exc:  # noqa: BLE001 - any failure of the user's module is reported the same way
        raise FailatlasError(f"the classifier {c_name} fails on [2, 1, 28, 28] images ({_first_line(exc)}); "
                             "export needs a classifier of 28×28 one-channel images") from None
    if not isinstance(probe, torch.Tensor) or probe.ndim != 2 or probe.shape[0] != 2:
        raise FailatlasError(f"the classifier {c_name} must return logits [N, num_classes]")
    k = int(probe.shape[1])
    config = classifier_config_of(C)
    if config is not None and config.num_classes != k:
        raise FailatlasError(f"the classifier {c_name} says num_classes={config.num_classes} in its config but "
                             f"returns {k} logits; fix its config.json or retrain it")
    if k != int(G.num_classes):
        raise FailatlasError(f"the classifier {c_name} predicts {k} classes but the generator {g_name} draws "
                             f"{G.num_classes}; export a classifier trained on the generator's {G.num_classes} "
                             "classes (e.g. --classifier mnist/classifier-corrupted with mnist/generator)")
    return k


def _real_styles(G: nn.Module, n: int, seed: int) -> torch.Tensor:
    """Styles drawn as real ones are: s = G.styles(G.mapping(z, y)), z ~ N(0, I), y uniform; float32 CPU."""
    from .._seeding import latent_generator

    gen = latent_generator(int(seed))
    z = torch.randn(n, G.z_dim, generator=gen)
    y = torch.randint(0, G.num_classes, (n,), generator=gen)
    param = next(G.parameters())
    with torch.no_grad():
        s = G.styles(G.mapping(z.to(param.device, param.dtype), y.to(param.device)))
    return s.detach().to("cpu", torch.float32)


def _export_onnx(model: nn.Module, example: torch.Tensor, path: Path, input_name: str, output_name: str,
                 what: str, metadata: dict[str, str]) -> str:
    """Export ``model`` (one input with a dynamic batch, one output) to a single-file ONNX ``path``:
    the dynamo exporter, else the TorchScript one; checked with onnx.checker. Returns the exporter used."""
    import onnx

    from .onnx_classifier import FALLBACK_OPSET

    errors: list[str] = []
    proto, exporter = None, ""
    try:
        batch = torch.export.Dim("batch", min=1)
        with _quiet_exporter(), contextlib.redirect_stdout(None):
            program = torch.onnx.export(model, (example,), None, input_names=[input_name],
                                        output_names=[output_name], dynamo=True, external_data=False,
                                        dynamic_shapes=({0: batch},), verbose=False, optimize=True)
        proto, exporter = program.model_proto, "torch.onnx dynamo"
    except Exception as exc:  # noqa: BLE001 - try the TorchScript exporter below
        errors.append(f"dynamo exporter: {_first_line(exc)}")
    if proto is None:
        import io

        buf = io.BytesIO()
        try:
            with _quiet_exporter(), contextlib.redirect_stdout(None):
                torch.onnx.export(model, (example,), buf, input_names=[input_name], output_names=[output_name],
                                  dynamo=False, opset_version=FALLBACK_OPSET, do_constant_folding=True,
                                  dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}})
            proto, exporter = onnx.load_from_string(buf.getvalue()), "torch.onnx torchscript"
        except Exception as exc:  # noqa: BLE001
            errors.append(f"TorchScript exporter: {_first_line(exc)}")
            raise FailatlasError(f"cannot export {what} to ONNX ({'; '.join(errors)})") from None
    set_metadata(proto, {**metadata, "exporter": exporter})
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as exc:  # noqa: BLE001
        raise FailatlasError(f"the ONNX export of {what} fails onnx.checker ({_first_line(exc)}); this is a "
                             "failatlas bug: please report it") from None
    write_bytes(path, proto.SerializeToString())
    return exporter


def _session(path: Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _onnx_parity(path: Path, eager: nn.Module, inputs: dict[int, torch.Tensor], name: str) -> dict[str, Any]:
    session = _session(path)
    input_name = session.get_inputs()[0].name

    def run(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {input_name: x.numpy()})[0])

    return _parity(run, eager, inputs, name)


def _parity(graph: Callable[[torch.Tensor], torch.Tensor], eager: nn.Module, inputs: dict[int, torch.Tensor],
            name: str) -> dict[str, Any]:
    """Compare ``graph`` with ``eager`` on each batch of ``inputs``; refuse a file beyond PARITY_RTOL."""
    per_batch: dict[str, Any] = {}
    worst = 0.0
    for n, x in inputs.items():
        with torch.no_grad():
            want = eager(x)
            try:
                got = graph(x)
            except Exception as exc:  # noqa: BLE001 - ORT/torch errors alike
                raise FailatlasError(f"{name} fails at batch size {n} ({_first_line(exc)}); it does not take a "
                                     "dynamic batch: please report this") from None
        if tuple(got.shape) != tuple(want.shape):
            raise FailatlasError(f"{name} returns {list(got.shape)} at batch size {n}, eager torch "
                                 f"{list(want.shape)}; please report this")
        max_abs = float((got.float() - want.float()).abs().max())
        rel = max_abs / max(1.0, float(want.abs().max()))
        if not np.isfinite(rel) or rel > PARITY_RTOL:
            raise FailatlasError(f"{name} differs from eager torch by {rel:.3g} (relative; tolerance "
                                 f"{PARITY_RTOL:g}) at batch size {n}; the export is wrong, nothing was written")
        per_batch[str(n)] = {"max_abs_error": max_abs, "max_rel_error": rel}
        worst = max(worst, rel)
    return {"batch_sizes": [int(n) for n in inputs], "max_rel_error": worst, "per_batch": per_batch}


def _file_facts(path: Path) -> dict[str, Any]:
    return {"bytes": path.stat().st_size, "sha256": sha256(path)}


def _onnx_entry(path: Path, description: str, parity: dict[str, Any], exporter: str | None = None) -> dict[str, Any]:
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    meta = {p.key: p.value for p in proto.metadata_props}

    def io(values: Any) -> list[dict[str, Any]]:
        result = []
        for v in values:
            t = v.type.tensor_type
            shape = ["N" if d.dim_param or not d.HasField("dim_value") else int(d.dim_value) for d in t.shape.dim]
            result.append({"name": v.name, "dtype": onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name,
                           "shape": shape})
        return result

    initializers = {i.name for i in proto.graph.initializer}
    return {"format": "onnx", "description": description, **_file_facts(path),
            "inputs": io([i for i in proto.graph.input if i.name not in initializers]),
            "outputs": io(proto.graph.output),
            "opset": max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=None),
            "exporter": exporter or meta.get("exporter"), "external_data": False,
            "metadata": meta, "parity": parity}


def _commit(stage: Path, out: Path, names: list[str], stale: tuple[str, ...]) -> None:
    """Move the staged files into ``out``: one rename for a new folder, else file by file (names last is
    export.json), removing ``stale`` files of an earlier export first."""
    mask = os.umask(0)
    os.umask(mask)
    if not out.exists():
        os.chmod(stage, 0o777 & ~mask)  # mkdtemp makes 0700; an export is meant to be shared
        os.rename(stage, out)
        return
    with signals_held():  # a Ctrl-C or kill waits until every file of this export is in place
        for name in stale:
            with contextlib.suppress(FileNotFoundError):
                (out / name).unlink()
        for name in names:
            os.replace(stage / name, out / name)
        shutil.rmtree(stage, ignore_errors=True)
