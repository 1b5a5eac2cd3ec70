"""Training the conditional StyleGAN2 (DESIGN §2).

Non-saturating logistic loss, lazy R1 on reals, style mixing, optional path-length regularization,
an optional corruption-mix term (``mix_weight``, :func:`mix_kl`), generator EMA, Adam β = (0.0, 0.99). One output folder holds everything:

* ``checkpoint.pt``: G, D, G_ema, both optimizers, the step, the RNG state and both configs: ``--resume``
  continues exactly where it stopped (read back with ``weights_only=True``);
* ``generator.safetensors`` + ``config.json``: the EMA generator alone, loadable by
  :func:`failatlas.load_generator` (this is what gets shipped);
* ``metrics.jsonl``: one line per logged step; ``samples-latest.png`` (+ ``.json``): a grid of fixed z, one
  row per class, refreshed every ``sample_kimg``.

Every file is written atomically. Ctrl-C finishes the current step, saves and stops (so does
``max_minutes``); a non-finite loss stops training with a message and leaves the last good checkpoint
untouched.

Training runs on CPU or on a CUDA device (``device``). Latents, labels and batch indices are always drawn
from the CPU generator, so both devices see the same batches; only the per-pixel noise of ``random`` noise
mode is drawn on the device (its RNG state is in the checkpoint too). A resumed run continues exactly on
the device it was saved on. On CUDA, TF32 matrix arithmetic is allowed (5× faster for the ``paper``
config; the losses are logged in float32 either way).

**Under torchrun** (``torchrun --nproc_per_node=P -m failatlas -- train-gan ...``, gloo, CPU only for now)
every rank builds the same G and D (from ``seed``), then draws its own part of every batch: ``batch / P``
fakes and reals (a multiple of D's minibatch-stddev group, so the class-grouped batches stay whole within
a rank) from its own RNG, seeded from (``seed``, rank). After each backward the gradients are averaged
over the ranks by one explicit ``all_reduce`` of all of them, flattened (as StyleGAN2-ADA does), not by
``DistributedDataParallel``: DDP reduces in hooks armed by the wrapped module's ``forward``, expects every
parameter that requires a gradient to get one in each backward, and does not support the second-order
``torch.autograd.grad(..., create_graph=True)`` of the lazy R1 and path-length terms, while this loop calls
G's sub-networks directly, switches ``requires_grad`` between the G and D phases, runs R1 only every
``r1_interval`` steps and accumulates two backwards (loss and path length) before one G step. With the
explicit reduction the R1 steps need nothing special (the R1 term is in the same backward), and since
every rank applies the same averaged gradients with the same Adam, G, D and so the EMA generator (updated
locally from G) stay identical on every rank. The mapping's running mean w (``w_avg``) and the
path-length mean are averaged with them, so they follow the global batch too. Losses in
``metrics.jsonl`` are the ranks' means. Ctrl-C and ``max_minutes`` are agreed on each step (any rank
stopping stops all at the same step). Rank 0 alone writes the checkpoint, the EMA generator, the metrics
and the sample grid; every rank reads the checkpoint on ``--resume`` (multi-node: put ``--out`` on a
shared filesystem).

The checkpoint format is the single-process one: ``rng`` is rank 0's RNG state; a distributed run adds
``world_size`` and ``rng_ranks`` (every rank's state). A resume with the same number of processes restores
every rank's state and continues exactly; with another number (including a single process, which reads
``rng`` as always) rank 0 continues its stream and the other ranks are seeded from (``seed``, rank,
images shown): the run continues statistically (same options, same global batch), not bit for bit.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import shlex
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .. import _io
from .._device import resolve_device
from .._paths import absolute_folder
from .._seeding import latent_generator
from ..errors import FailatlasError
from ..models.stylegan2 import (CONFIGS, Discriminator, Generator, StyleGANConfig, get_config, shapes_only,
                                save_generator)

CHECKPOINT = "checkpoint.pt"


@dataclass(frozen=True)
class GANTrainConfig:
    """Options of one training run (saved in the checkpoint; a resumed run must use the same ones,
    except ``kimg``, which may be raised to train longer)."""

    dataset: str = "mnist"
    idx_dir: str | None = None
    corruption: str = "corrupted"
    blur: str = "paper"
    data_seed: int = 0
    config: str = "cpu-small"
    kimg: float = 300.0
    batch: int = 32
    lr: float = 0.0025
    beta1: float = 0.0
    beta2: float = 0.99
    r1_gamma: float | None = None  # None: 0.0002 · resolution² / batch (DESIGN §2)
    r1_interval: int = 16
    style_mixing: float = 0.9
    pl_weight: float = 0.0  # path-length regularization; 0 disables it (it costs a second G backward)
    pl_interval: int = 4
    ema_kimg: float = 20.0  # EMA half-life in thousands of images
    ema_rampup: float = 0.05
    snapshot_kimg: float = 4.0
    sample_kimg: float = 4.0
    log_every: int = 20  # steps
    seed: int = 0
    # Each minibatch-stddev group of D (4 consecutive samples) holds one class, for fakes and reals alike,
    # so the statistic shows D a generator that varies too little within a class (see _Batches).
    class_groups: bool = True
    # Transitional conditioning: the label's weight in G's mapping and D's projection rises linearly from
    # 0 to 1 over the first cond_ramp_kimg (D also gets an unconditional head); 0 turns it off.
    cond_ramp_kimg: float = 0.0
    # Corruption-mix term of G's loss: mix_weight · KL(q_real ‖ q̄_fake), q the mean softmax over the
    # corruption cells of a corruption classifier trained (seed mix_judge_seed) on the real train split;
    # q_real over the training images, q̄_fake over each batch of fakes (under torchrun: each rank's part
    # of it, and the ranks' gradients are averaged as usual). 0 turns it off. See mix_kl.
    mix_weight: float = 0.0
    mix_judge_seed: int = 2

    def gamma(self, resolution: int) -> float:
        return self.r1_gamma if self.r1_gamma is not None else 0.0002 * resolution ** 2 / self.batch

    def validate(self) -> None:
        if self.config not in CONFIGS:
            raise FailatlasError(f"unknown --config {self.config!r}; choose one of {sorted(CONFIGS)}")
        if self.batch < 4:
            raise FailatlasError(f"--batch must be at least 4, got {self.batch}")
        if self.batch % 4:
            raise FailatlasError(f"--batch must be a multiple of 4 (the minibatch-stddev group), got {self.batch}")
        if not (self.kimg > 0 and math.isfinite(self.kimg)):
            raise FailatlasError(f"--kimg must be a positive number, got {self.kimg}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise FailatlasError(f"--lr must be positive, got {self.lr}")
        for flag, value in (("--r1-gamma", self.r1_gamma), ("--pl-weight", self.pl_weight)):
            if value is not None and not (value >= 0 and math.isfinite(value)):
                raise FailatlasError(f"{flag} must be 0 (off) or a positive number, got {value}")
        for flag, value in (("--snapshot-kimg", self.snapshot_kimg), ("sample_kimg", self.sample_kimg)):
            if not (math.isfinite(value) and value >= 0.001):  # counted in whole images: at least one
                raise FailatlasError(f"{flag} must be at least 0.001 (one image), got {value}")
        if not (self.cond_ramp_kimg >= 0 and math.isfinite(self.cond_ramp_kimg)):
            raise FailatlasError(f"--cond-ramp-kimg must be 0 (off) or a positive number, got {self.cond_ramp_kimg}")
        if not (self.mix_weight >= 0 and math.isfinite(self.mix_weight)):
            raise FailatlasError(f"--mix-weight must be 0 (off) or a positive number, got {self.mix_weight}")
        if not 0.0 <= self.style_mixing <= 1.0:
            raise FailatlasError(f"style mixing probability must be in [0, 1], got {self.style_mixing}")

    def cond_weight(self, nimg: int) -> float:
        """Weight of the label at ``nimg`` images shown (transitional conditioning; 1 when it is off)."""
        return min(nimg / (self.cond_ramp_kimg * 1000), 1.0) if self.cond_ramp_kimg > 0 else 1.0

    @classmethod
    def from_saved(cls, saved: dict) -> "GANTrainConfig":
        """The options saved in a checkpoint; options added later get the value that reproduces runs saved
        before they existed."""
        return cls(**{"class_groups": False, "cond_ramp_kimg": 0.0, "mix_weight": 0.0, "mix_judge_seed": 2, **saved})

    def resumable_with(self, other: "GANTrainConfig") -> list[str]:
        a, b = dataclasses.asdict(self), dataclasses.asdict(other)
        for d in (a, b):  # runs saved before IDX folders were recorded absolute
            d["idx_dir"] = absolute_folder(d["idx_dir"])
        return [k for k in a if k != "kimg" and a[k] != b[k]]


def _adam_hparams(cfg: GANTrainConfig) -> tuple[dict, dict]:
    """Learning rate and betas of G's and D's Adam. Lazy regularization (R1 every ``r1_interval`` steps)
    scales D's as StyleGAN2 does: lr · c and β^c with c = r1_interval / (r1_interval + 1)."""
    c = cfg.r1_interval / (cfg.r1_interval + 1)
    return ({"lr": cfg.lr, "betas": (cfg.beta1, cfg.beta2)},
            {"lr": cfg.lr * c, "betas": (cfg.beta1 ** c, cfg.beta2 ** c)})


def _set_hparams(opt: torch.optim.Optimizer, hparams: dict) -> None:
    for group in opt.param_groups:
        group.update(hparams)


#: train-gan's command-line flag of each option (sample_kimg follows --snapshot-kimg); the others have none
FLAGS = {"dataset": "--dataset", "idx_dir": "--idx-dir", "corruption": "--train-on", "blur": "--blur",
         "config": "--config", "kimg": "--kimg", "batch": "--batch", "lr": "--lr", "pl_weight": "--pl-weight",
         "r1_gamma": "--r1-gamma", "cond_ramp_kimg": "--cond-ramp-kimg", "mix_weight": "--mix-weight",
         "mix_judge_seed": "--mix-judge-seed", "snapshot_kimg": "--snapshot-kimg", "sample_kimg": "--snapshot-kimg",
         "seed": "--seed"}


def _as_flags(cfg: GANTrainConfig, names: list[str]) -> str:
    """The options ``names`` of ``cfg`` as train-gan's flags ("--dataset fashion --idx-dir /x --config tiny");
    an option without a flag as name=value."""
    parts: list[str] = []
    for name in names:
        value = getattr(cfg, name)
        if name == "class_groups":
            part = "--class-groups" if value else "--no-class-groups"
        elif name == "sample_kimg" and value != cfg.snapshot_kimg:  # a run made through the library
            part = f"sample_kimg={value:g} (no flag: --snapshot-kimg sets both)"
        elif name in FLAGS:
            shown = ("(none)" if value is None else f"{value:g}" if isinstance(value, float)
                     else shlex.quote(str(value)))
            part = f"{FLAGS[name]} {shown}"
        else:
            part = f"{name}={value!r} (no flag: set in the library)"
        if part not in parts:  # --snapshot-kimg stands for sample_kimg too
            parts.append(part)
    return " ".join(parts)


def _resume_command(cfg: GANTrainConfig, out: Path) -> str:
    """The train-gan command that continues the run in ``out``: --resume with every option that differs from
    the defaults (a bare --resume is refused when they differ)."""
    default = GANTrainConfig()
    names = [f.name for f in dataclasses.fields(cfg)
             if f.name != "kimg" and getattr(cfg, f.name) != getattr(default, f.name)
             and not (f.name == "sample_kimg" and cfg.sample_kimg == cfg.snapshot_kimg)]
    flags = _as_flags(cfg, names)
    return (f"failatlas train-gan --resume --out {shlex.quote(str(out))} --kimg {cfg.kimg:g}"
            + (f" {flags}" if flags else ""))


def _rank_seed(seed: int, rank: int, nimg: int | None = None) -> int:
    """A 63-bit seed for one rank's RNG, a fixed function of the run seed and the rank (and, for ranks that
    a resume with another number of processes starts afresh, of the images shown)."""
    from .._seeding import derive_seed, seed_key

    key = seed_key(seed) + [int(rank)]
    if nimg is not None:
        key += [int(nimg) & 0xFFFFFFFF, int(nimg) >> 32]
    return derive_seed(key)


class _Ranks:
    """The collectives of a distributed run (gloo): gradient averaging and the small agreements."""

    def __init__(self, rank: int, size: int) -> None:
        import torch.distributed as dist

        self.dist, self.rank, self.size = dist, rank, size

    def average_grads(self, module: torch.nn.Module, buffers: tuple[torch.Tensor, ...] = ()) -> None:
        """Every gradient of ``module`` (and the given buffers) replaced by its mean over the ranks, in one
        all_reduce of one flat tensor. Every rank must hold gradients for the same parameters."""
        params = [q for q in module.parameters() if q.grad is not None]
        parts = [q.grad.reshape(-1) for q in params] + [b.reshape(-1) for b in buffers]
        flat = torch.cat(parts + [torch.ones(1, dtype=parts[0].dtype if parts else torch.float32)])
        self.dist.all_reduce(flat)
        if int(round(float(flat[-1]))) != self.size:  # pragma: no cover - a broken invariant, not user input
            raise FailatlasError("distributed train-gan: the ranks disagree on the collective")
        flat /= self.size
        i = 0
        for tgt in [q.grad for q in params] + list(buffers):
            k = tgt.numel()
            tgt.copy_(flat[i:i + k].view_as(tgt))
            i += k

    def mean(self, values: list[float]) -> list[float]:
        t = torch.tensor(values, dtype=torch.float64)
        self.dist.all_reduce(t)
        return (t / self.size).tolist()

    def any(self, *flags: bool) -> list[bool]:
        t = torch.tensor([float(bool(f)) for f in flags])
        self.dist.all_reduce(t)
        return [bool(v > 0) for v in t.tolist()]

    def first_bad(self, local: int) -> int:
        """The earliest step any rank saw a non-finite loss (-1: none)."""
        big = 1 << 62
        t = torch.tensor([local if local >= 0 else big], dtype=torch.int64)
        self.dist.all_reduce(t, op=self.dist.ReduceOp.MIN)
        return int(t) if int(t) < big else -1

    def rng_states(self) -> list[torch.Tensor]:
        from .. import distributed as fdist

        every = fdist.all_gather_cat(torch.get_rng_state()[None])
        return [every[r].clone() for r in range(self.size)]


@dataclass(frozen=True)
class GANTrainResult:
    out: str
    kimg: float
    steps: int
    seconds: float
    images_per_second: float
    interrupted: bool
    time_limited: bool = False
    device: str = "cpu"
    terminated: bool = False  # the interruption was SIGTERM (kill, a scheduler), not Ctrl-C

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def training_record(cfg: GANTrainConfig, nimg: int, step: int, init_from: str | None = None,
                    classes_without_data: list[int] | None = None) -> dict:
    """What a generator's config.json says about its training: the options, and how far it got
    (``init_from``: the run it was warm-started from, whose options held before; ``classes_without_data``:
    classes the training images held none of, which the generator draws without having learnt them)."""
    return {**dataclasses.asdict(cfg), "kimg_target": cfg.kimg, "kimg": nimg / 1000, "step": step,
            **({"init_from": init_from} if init_from else {}),
            **({"classes_without_data": list(classes_without_data)} if classes_without_data else {})}


#: the end of every message about a damaged training checkpoint
DAMAGED_CHECKPOINT = "the file is damaged or was edited: restore it from a copy, or retrain"


def _read_checkpoint(path: Path) -> tuple[dict, GANTrainConfig, StyleGANConfig]:
    state = _io.load_checkpoint(path, "training checkpoint")
    try:
        saved_cfg, arch = GANTrainConfig.from_saved(state["train_config"]), StyleGANConfig.from_json(state["arch"])
    except (KeyError, TypeError) as exc:
        why = f"it holds no {exc.args[0]}" if isinstance(exc, KeyError) and exc.args else str(exc)
        raise FailatlasError(f"{path} is not a failatlas GAN checkpoint ({why}); give a train-gan output folder or "
                             "its checkpoint.pt") from None
    _check_progress(state, path)
    # the weights against the recorded architecture, on the meta device: an edited architecture of absurd
    # sizes is one line here, before G and D are built for real (which would try to allocate it)
    fix = DAMAGED_CHECKPOINT
    for key, what, build in (("G", "generator (G)", lambda: Generator(arch)),
                             ("D", "discriminator (D)", lambda: Discriminator(arch, unconditional_head=True))):
        saved = state.get(key)
        with shapes_only(arch, state.get("G"), f"{path}: the architecture it records", fix):
            module = build()
        _load_part(module, saved, what, path, fresh="uncond." if key == "D" else None, check_only=True)
    return state, saved_cfg, arch


def _check_progress(state: dict, path: Path) -> None:
    """The counters, statistics and random state a checkpoint resumes from are of the types train-gan
    writes: an edited or damaged one is one line, not a traceback from int(), .to() or set_rng_state (or
    from inside a training step)."""
    def damaged(what: str, found) -> FailatlasError:
        shown = f"a tensor of shape {list(found.shape)} and dtype {found.dtype}" if isinstance(found, torch.Tensor) \
            else "nothing" if found is None else repr(found) if isinstance(found, (int, float, str)) \
            else type(found).__name__
        return FailatlasError(f"{path}: {what}, found {shown}; {DAMAGED_CHECKPOINT}")

    for key in ("step", "nimg"):
        value = state.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**62:
            raise damaged(f"its {key} must be a whole number ≥ 0", value)
    for key, required in (("pl_mean", True), ("r1_last", False)):
        value = state.get(key)
        if (required or key in state) and not (isinstance(value, torch.Tensor) and value.is_floating_point()
                                               and value.numel() == 1):
            raise damaged(f"its {key} must be a one-number float tensor", value)
    rng, own = state.get("rng"), torch.get_rng_state()
    if not (isinstance(rng, torch.Tensor) and rng.dtype == own.dtype and rng.shape == own.shape):
        raise damaged(f"its rng must be torch's random state (uint8, shape {list(own.shape)})", rng)
    seconds = state.get("seconds")
    if "seconds" in state and (isinstance(seconds, bool) or not isinstance(seconds, (int, float))
                               or not math.isfinite(seconds) or seconds < 0):
        raise damaged("its seconds must be a number ≥ 0", seconds)


def set_noise_threshold(G: Generator, layer: str, threshold: float, gain: float = 1.0) -> set[int]:
    """In place, on a generator with ``noise_threshold``: scale ``layer``'s noise amplitude (strength and
    ``noise_gain``) by ``gain`` and set its threshold to ``threshold`` (in the scaled units), so its noise
    amplitude becomes sign(a)·max(gain·|a| − threshold, 0) of the unthresholded a. Returns the ids of the
    parameters it changed."""
    if not G.cfg.noise_threshold:
        raise FailatlasError("this generator has no noise thresholds (StyleGANConfig.noise_threshold)")
    if not threshold >= 0 or not gain > 0:
        raise FailatlasError(f"the threshold must be ≥ 0 and the gain > 0, got {threshold} and {gain}")
    names = G.synthesis_network.names
    if layer not in names or G.synthesis_network.layers[names.index(layer)].kind != "conv":
        raise FailatlasError(f"no conv layer {layer!r}; choose one of "
                             f"{[n for n, m in zip(names, G.synthesis_network.layers) if m.kind == 'conv']}")
    conv = G.synthesis_network.layers[names.index(layer)]
    scaled = [conv.noise_strength] + ([] if conv.noise_gain is None else list(conv.noise_gain.parameters()))
    with torch.no_grad():
        for p in scaled:
            p.mul_(gain)
        conv.noise_threshold.fill_(threshold)
    return {id(p) for p in scaled} | {id(conv.noise_threshold)}


def with_noise_threshold(src: str | Path, dst: str | Path, layer: str, threshold: float,
                         gain: float = 1.0) -> Path:
    """Write ``dst/checkpoint.pt``: the training checkpoint ``src`` (a train-gan folder or its checkpoint)
    with a learned noise threshold in every conv layer (``StyleGANConfig.noise_threshold``), ready for
    ``train-gan --init-from dst`` or for shipping as it is.

    ``layer``'s noise amplitude (strength and ``noise_gain``) is scaled by ``gain`` and its threshold set to
    ``threshold`` (in the scaled units), in G and G_ema alike; every other layer keeps its threshold (0, the
    same model, when ``src`` had none). So a checkpoint that already has thresholds can be recalibrated: the
    result of :func:`failatlas.training.quality.calibrate_noise_threshold` on it is expressed in these terms.
    D, the image count, the RNG state and the other Adam moments carry over; the new and the changed
    parameters start with fresh Adam moments. Returns the checkpoint path."""
    src = Path(src)
    src = src / CHECKPOINT if src.is_dir() else src
    if not src.is_file():
        raise FailatlasError(f"{src} does not exist; give a train-gan output folder or its {CHECKPOINT}")
    state, _, arch = _read_checkpoint(src)
    new_arch = dataclasses.replace(arch, noise_threshold=True)
    old_names = [n for n, _ in Generator(arch).named_parameters()]
    changed: set[str] = set()
    for key in ("G", "G_ema"):
        g = Generator(new_arch)
        missing, unexpected = g.load_state_dict(state[key], strict=False)
        if unexpected or any(not m.endswith("noise_threshold") for m in missing):
            raise FailatlasError(f"{src}: the generator's weights do not fit its own config ({missing}, {unexpected})")
        ids = set_noise_threshold(g, layer, threshold, gain)
        changed |= {n for n, p in g.named_parameters()
                    if id(p) in ids or (n.endswith("noise_threshold") and not arch.noise_threshold)}
        state[key] = g.state_dict()
    new_names = [n for n, _ in Generator(new_arch).named_parameters()]
    opt = state["G_opt"]
    kept = {new_names.index(n): opt["state"][i] for i, n in enumerate(old_names)
            if i in opt["state"] and n not in changed}
    group = dict(opt["param_groups"][0], params=list(range(len(new_names))))
    state["G_opt"] = {"state": kept, "param_groups": [group]}
    state["arch"] = new_arch.to_json()
    out = Path(dst) / CHECKPOINT
    out.parent.mkdir(parents=True, exist_ok=True)
    _io.save_checkpoint(out, state)
    return out


class _StopFlag:
    """Turns SIGINT (Ctrl-C) and SIGTERM (``kill``, a batch scheduler's time limit) into a flag checked
    between steps, so the run saves a checkpoint at a step boundary and stops; a second signal stops at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.stop = False
        self.signum: int | None = None
        self._previous: dict = {}

    def __enter__(self) -> "_StopFlag":
        try:
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        except ValueError:  # not the main thread: no signal handling there
            pass
        return self

    def _handle(self, signum, frame) -> None:
        if self.stop:  # a second signal: stop at once
            raise KeyboardInterrupt
        self.stop, self.signum = True, signum

    def __exit__(self, *exc) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)


def _ema_update(G_ema: Generator, G: Generator, beta: float) -> None:
    with torch.no_grad():
        torch._foreach_lerp_(list(G_ema.parameters()), list(G.parameters()), 1.0 - beta)
        for b_ema, b in zip(G_ema.buffers(), G.buffers()):
            b_ema.copy_(b)


def _sample_grid(G: Generator, path: Path, seed: int = 12345, per_class: int = 10) -> None:
    """Fixed z, one row per class; writes PNG and a JSON of what it shows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gen = latent_generator(seed)
    n = G.num_classes * per_class
    device = G.synthesis_network.const.device
    z = torch.randn(n, G.z_dim, generator=gen).to(device)
    y = torch.arange(G.num_classes).repeat_interleave(per_class).to(device)
    with torch.no_grad():
        img = G(z, y, noise_mode="const")
    img = ((img + 1) * 127.5).clamp(0, 255).to(torch.uint8)[:, 0].cpu()
    r = img.shape[-1]
    grid = img.reshape(G.num_classes, per_class, r, r).permute(0, 2, 1, 3).reshape(G.num_classes * r, per_class * r)
    fig = plt.figure(figsize=(per_class * 0.6, G.num_classes * 0.6), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(grid.numpy(), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    ax.axis("off")
    with _io.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    _io.write_json(path.with_suffix(".json"), {"z_seed": seed, "z_stream": "failatlas._seeding.latent_generator(z_seed)",
                                               "rows": "classes 0..%d" % (G.num_classes - 1),
                                               "per_class": per_class, "noise_mode": "const", "truncation_psi": 1.0})


class _Batches:
    """Draws labels, latents and real batches (always from the CPU generator, so every device sees the
    same batches).

    With ``class_groups`` the labels come in runs of ``group`` equal labels (the group's label is drawn
    from the data's label distribution) and each real in a run is drawn from that class. D's
    minibatch-stddev groups are runs of consecutive samples, so each group then compares samples of one
    class: a generator that draws every "3" alike shows a small statistic next to four different real
    "3"s. With mixed-class groups the spread between classes hides that."""

    def __init__(self, labels: torch.Tensor, num_classes: int, group: int, class_groups: bool, z_dim: int,
                 dev: torch.device) -> None:
        self.labels_cpu = labels.cpu()
        self.n, self.group, self.class_groups, self.z_dim, self.dev = len(labels), group, class_groups, z_dim, dev
        self.order = torch.argsort(self.labels_cpu, stable=True)
        self.counts = torch.bincount(self.labels_cpu, minlength=num_classes)
        self.offsets = torch.cumsum(self.counts, 0) - self.counts

    def labels(self, n: int) -> torch.Tensor:
        if not self.class_groups:
            return self.labels_cpu[torch.randint(0, self.n, (n,))]
        g = self.group
        return self.labels_cpu[torch.randint(0, self.n, (-(-n // g),))].repeat_interleave(g)[:n]

    def fake(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.labels(n)
        return torch.randn(n, self.z_dim).to(self.dev), y.to(self.dev)

    def real_indices(self, n: int) -> torch.Tensor:
        if not self.class_groups:
            return torch.randint(0, self.n, (n,)).to(self.dev)
        y = self.labels(n)
        pick = (torch.rand(n, dtype=torch.float64) * self.counts[y]).long().minimum(self.counts[y] - 1)
        return self.order[self.offsets[y] + pick].to(self.dev)


def mix_kl(judge: torch.nn.Module, fake: torch.Tensor, q_real: torch.Tensor) -> torch.Tensor:
    """KL(q_real ‖ q̄): q̄ the mean over ``fake`` [N, 1, r, r] of ``judge``'s softmax over the corruption
    cells, ``q_real`` the same mean over real images (Tensor[cells]). Differentiable in ``fake``; 0 when
    the batch's mix equals the data's. The shares are clamped at 1e-6 so an empty cell stays finite."""
    q = torch.softmax(judge(fake), dim=1).mean(dim=0).clamp_min(1e-6)
    p = q_real.clamp_min(1e-6)
    return (p * (p.log() - q.log())).sum()


def _mix_judge(cfg: GANTrainConfig, reals: torch.Tensor, dev: torch.device, progress: bool | None):
    """The corruption classifier of the mix term (trained on the train split with its own seed, without
    touching the training's RNG streams) and its mean softmax over the training images."""
    from .quality import _batched, train_corruption_classifier

    with torch.random.fork_rng(devices=[]):
        judge = train_corruption_classifier(cfg.dataset, idx_dir=cfg.idx_dir, blur=cfg.blur,
                                            seed=cfg.mix_judge_seed, progress=progress)
    q_real = _batched(lambda x: torch.softmax(judge(x), dim=1), reals).mean(dim=0)
    return judge.to(dev), q_real.to(dev)


def _load_training_images(cfg: GANTrainConfig):
    from ..data.datasets import load_dataset

    from .classifier import warn_missing_classes

    data = load_dataset(cfg.dataset, "train", corruption=cfg.corruption, blur=cfg.blur,
                        idx_dir=cfg.idx_dir, seed=cfg.data_seed)
    missing = warn_missing_classes(data.labels, data.num_classes, cfg.dataset)
    return data.generator_input().contiguous(), data.labels.clone(), data.num_classes, missing


def _generator_saved_at(out: Path, step: int) -> bool:
    """Whether ``out`` holds the EMA generator of ``step`` (config.json and generator.safetensors), as the
    save at that step wrote it."""
    from ..models.stylegan2 import GENERATOR_WEIGHTS

    try:
        meta = json.loads((out / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    training = meta.get("training") if isinstance(meta, dict) else None
    return (out / GENERATOR_WEIGHTS).is_file() and isinstance(training, dict) and training.get("step") == step


def _divergence_message(cfg: GANTrainConfig, out: Path, init_name: str | None, bad_step: int, bad_nimg: int,
                        step: int, lg: float, ld: float, saved: dict) -> str:
    """What a non-finite loss means for the run, and what can be done (steps and kimg as metrics.jsonl counts
    them: the loss of step k is the one logged with "step": k). A --resume repeats the same steps with the
    same options (another --lr is refused), so a lower --lr goes through --init-from."""
    lower = f"--lr {cfg.lr / 4:g}"
    said = (f"training diverged: the loss became non-finite in step {bad_step} (kimg {bad_nimg / 1000:g}; at "
            f"step {step}: G {lg}, D {ld}); ")
    if saved:
        return said + (f"{out / CHECKPOINT} (step {saved['step']}, kimg {saved['nimg'] / 1000:g}, before the "
                       f"divergence) was kept. --resume would repeat the same steps; to go on from it with a lower "
                       f"learning rate, start a new run from it: --init-from {out} {lower} --out NEW_FOLDER")
    again = (f"--init-from {init_name} {lower}" if init_name else lower)
    return said + (f"no checkpoint was saved before it (one is saved every --snapshot-kimg "
                   f"{cfg.snapshot_kimg:g}); start again with a lower learning rate, e.g. {again}, into a new folder "
                   f"(or remove {out} first)")


def _load_part(module: torch.nn.Module, saved, what: str, source, fresh: str | None = None,
               check_only: bool = False) -> list[str]:
    """Load the state dict ``saved`` into ``module`` after checking that it fits (keys and shapes), so a
    damaged or edited checkpoint gives one message instead of torch's size-mismatch traceback. Keys starting
    with ``fresh`` may be missing (a head the source lacked: it keeps its fresh weights) or extra (a head
    this run does not have, e.g. the unconditional one of --cond-ramp-kimg: dropped); returns those keys.
    ``check_only``: check, load nothing (``module`` may be on the meta device)."""
    own = module.state_dict()
    dropped = []
    if not isinstance(saved, dict):
        problems = [f"found {type(saved).__name__}, not a dict of tensors"]
        missing = []
    else:
        if fresh:
            dropped = [k for k in saved if k not in own and k.startswith(fresh)]
            saved = {k: v for k, v in saved.items() if k not in dropped}
        missing = [k for k in own if k not in saved]
        problems = [f"unexpected {', '.join(k for k in saved if k not in own)}"] if set(saved) - set(own) else []
        if missing and not (fresh and all(k.startswith(fresh) for k in missing)):
            problems.append(f"missing {', '.join(missing[:3])}{' …' if len(missing) > 3 else ''}")
        problems += [f"{k} has shape {list(saved[k].shape) if isinstance(saved[k], torch.Tensor) else '?'}, the "
                     f"architecture makes {list(t.shape)}" for k, t in own.items()
                     if k in saved and (not isinstance(saved[k], torch.Tensor) or saved[k].shape != t.shape)][:2]
    if problems:
        raise FailatlasError(f"{source}: the {what} weights do not fit the architecture the checkpoint records "
                             f"({'; '.join(problems)}); the file is damaged or was edited, or comes from another "
                             "architecture: restore it from a copy, or retrain")
    if not check_only:
        module.load_state_dict(saved, strict=not missing)
    return missing + dropped


def _load_optimizer(opt: torch.optim.Optimizer, saved, which: str, source) -> None:
    """Load an optimizer state after checking that it fits: torch compares only the counts of groups and
    parameters, so a moment of the wrong shape would fail at the first step with a traceback."""
    def damaged(why: str) -> FailatlasError:
        return FailatlasError(f"{source}: {which}'s optimizer state does not fit its weights ({why}); "
                              f"{DAMAGED_CHECKPOINT}")

    if not isinstance(saved, dict):
        raise damaged(f"found {'nothing' if saved is None else type(saved).__name__}, not an optimizer state")
    try:
        opt.load_state_dict(saved)
    except (ValueError, KeyError, TypeError, RuntimeError, IndexError, AttributeError) as exc:
        raise damaged(type(exc).__name__) from None
    # what Adam's step reads of every weight it has a state for (a state it lacks starts fresh)
    needs = ("step", "exp_avg", "exp_avg_sq") if isinstance(opt, torch.optim.Adam) else ()
    for group in opt.param_groups:
        for param in group["params"]:
            state = opt.state.get(param, {})
            if not isinstance(state, dict):
                raise damaged(f"the state of a weight is {type(state).__name__}, not a dict")
            lacking = [name for name in needs if state and not isinstance(state.get(name), torch.Tensor)]
            if lacking:
                raise damaged(f"the state of a weight {list(param.shape)} has no tensor {lacking[0]}")
            for name, value in state.items():
                if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape != param.shape:
                    raise damaged(f"{name} has shape {list(value.shape)}, its weight {list(param.shape)}")


def _trim_metrics(path: Path, step: int) -> dict | None:
    """Drop the lines of ``metrics.jsonl`` logged after the checkpoint being resumed (``step``), and a line
    cut short: a run killed without saving (kill -9, a power cut) logged steps that the resumed run
    will log again. Returns the last line kept (None: none)."""
    if not path.is_file():
        return None
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    kept = []
    for line in lines:
        try:
            logged = json.loads(line)
        except ValueError:
            continue
        if isinstance(logged, dict) and isinstance(logged.get("step"), int) and logged["step"] <= step \
                and line.endswith("\n"):
            kept.append(line)
    if kept != lines:
        _io.write_text(path, "".join(kept))
    return json.loads(kept[-1]) if kept else None


#: what a run writes before its first checkpoint (a run killed then leaves only these)
RUN_LEFTOVERS = {"metrics.jsonl", "samples-latest.png", "samples-latest.json"}


def _refuse_other_files(out: Path, ckpt_path: Path) -> None:
    """A new run goes into a new or empty folder: one holding other files (a shipped generator, a
    classifier, another run's leftovers) would get its config.json and weights replaced and its
    metrics.jsonl appended to. A folder with a checkpoint is left to the "already exists" refusal."""
    if ckpt_path.exists() or not out.is_dir():
        return
    others = sorted(p.name for p in out.iterdir() if not p.name.startswith((_io.PROBE_PREFIX, _io.STAGING_PREFIX))
                    and p.name != ".DS_Store")
    if others and set(others) <= RUN_LEFTOVERS:
        raise FailatlasError(f"--out {out} holds what a run that ended before its first checkpoint left "
                             f"({', '.join(others)}): there is nothing to resume; remove those files, or choose "
                             "another --out")
    if others:
        shown = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
        raise FailatlasError(f"--out {out} holds other files ({shown}) and no {CHECKPOINT}: a new run would "
                             "replace or mix with them; choose a new or empty folder, or --resume a run folder")


def _check_batch_fits(cfg: GANTrainConfig, dev: torch.device) -> None:
    """Refuse a --batch whose activations cannot fit this machine's memory (on the CPU): a lower bound, one
    float32 activation map per resolution of G and of D per image (a training step keeps several for the
    backward pass); ``--batch 100000000`` was otherwise killed for memory a minute in, with no message. Under torchrun
    each process holds its share of the batch."""
    if dev.type != "cpu":
        return
    from .. import distributed as fdist
    from .._alloc import require_memory

    arch = get_config(cfg.config)
    per_image = sum((g + d) * r * r for r, g, d in zip(arch.resolutions, arch.channels, arch.d_channels))
    require_memory(4 * per_image * (cfg.batch // fdist.world()[1]), f"--batch {cfg.batch} images",
                   "lower --batch (e.g. --batch 64, the shipped generator's)", at_least=True)


def train_gan(cfg: GANTrainConfig, out: str | Path, *, resume: bool = False, progress: bool | None = None,
              threads: int | None = None, device: str | torch.device | None = "cpu",
              max_minutes: float | None = None, init_from: str | Path | None = None) -> GANTrainResult:
    """Train (or resume training) a conditional StyleGAN2 into the folder ``out``.

    ``device``: "cpu", "cuda[:N]" or "auto". ``max_minutes``: save and stop after this much wall time
    (the run can be continued with ``resume=True``). ``init_from``: warm start from another run's folder
    (or checkpoint file): its weights, optimizer states and image count, trained on with this run's
    options (the architecture must match; a discriminator head that run lacked starts fresh)."""
    from .._progress import progress as progress_bar

    cfg.validate()
    # numpy numbers from a library caller become Python's: the checkpoint's pickle must hold plain values only
    # (a numpy scalar there makes the weights-only load refuse the run's own checkpoint)
    plain = {f.name: getattr(cfg, f.name).item() for f in dataclasses.fields(cfg)
             if type(getattr(cfg, f.name)).__module__ == "numpy" and hasattr(getattr(cfg, f.name), "item")}
    cfg = dataclasses.replace(cfg, idx_dir=absolute_folder(cfg.idx_dir), **plain)
    if max_minutes is not None and not max_minutes > 0:
        raise FailatlasError(f"--max-minutes must be positive, got {max_minutes}")
    if resume and init_from is not None:
        raise FailatlasError("--init-from starts a new run from another run's weights; it cannot be combined "
                             "with --resume (which continues the run in --out)")
    from ..engine.native import MAX_THREADS  # the bound of the engine and failatlas-eval's --threads

    if threads is not None and not 0 <= threads <= MAX_THREADS:
        raise FailatlasError(f"--threads must be between 1 and {MAX_THREADS} (or 0 for torch's choice), got {threads}")
    dev = resolve_device(device)
    out = _io.check_out_folder(out)
    _check_batch_fits(cfg, dev)
    ckpt_path = out / CHECKPOINT
    if not resume:
        _refuse_other_files(out, ckpt_path)
    from .. import distributed as fdist

    rank, world = fdist.world()
    distributed = world > 1
    if distributed:
        if dev.type != "cpu":
            raise FailatlasError("train-gan under torchrun runs on the CPU (gloo) only for now; use --device cpu, "
                                 "or one process per GPU run alone")
        if cfg.batch % (4 * world):
            raise FailatlasError(f"--batch {cfg.batch} split over {world} processes must leave each a multiple of 4 "
                                 f"(D's minibatch-stddev group): use a multiple of {4 * world}")
        fdist.init()  # every rank checked the same things above
    main = rank == 0
    if not main:
        progress = False
    if threads:
        torch.set_num_threads(threads)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True

    reals, labels, num_classes, empty_classes = _load_training_images(cfg)
    arch = dataclasses.replace(get_config(cfg.config), num_classes=num_classes)
    if reals.shape[-1] != arch.resolution:
        raise FailatlasError(f"dataset images are {reals.shape[-1]}px but config {cfg.config} makes {arch.resolution}px")

    state, init_name = None, None
    if resume:
        if not ckpt_path.is_file():
            left = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
            if left and set(left) <= RUN_LEFTOVERS:
                raise FailatlasError(f"--resume given but {ckpt_path} does not exist: the run ended before its "
                                     f"first checkpoint ({', '.join(left)} left), so there is nothing to resume; "
                                     "remove those files and start without --resume, or choose another --out")
            raise FailatlasError(f"--resume given but {ckpt_path} does not exist; start without --resume")
        state, saved_cfg, saved_arch = _read_checkpoint(ckpt_path)
        init_name = state.get("init_from")
        differ = saved_cfg.resumable_with(cfg)
        if differ:
            raise FailatlasError(f"cannot resume {ckpt_path}: it was trained with {_as_flags(saved_cfg, differ)}, "
                                 f"not {_as_flags(cfg, differ)}; resume with the checkpoint's options (only --kimg "
                                 "may change), or train with these into a new --out")
        arch = saved_arch
    elif ckpt_path.exists():
        raise FailatlasError(f"{ckpt_path} already exists; pass --resume to continue it or choose another --out")
    if init_from is not None:
        src = Path(init_from)
        src = src / CHECKPOINT if src.is_dir() else src
        if not src.is_file():
            raise FailatlasError(f"--init-from: {src} does not exist; give a train-gan output folder or its "
                                 f"{CHECKPOINT}")
        state, _, src_arch = _read_checkpoint(src)
        if src_arch.name != cfg.config:
            raise FailatlasError(f"--init-from: {src} is a {src_arch.name!r} generator but --config is "
                                 f"{cfg.config!r}; use --config {src_arch.name}")
        if src_arch.num_classes != num_classes:
            raise FailatlasError(f"--init-from: {src} makes {src_arch.num_classes} classes but the training data "
                                 f"(--dataset {cfg.dataset}) has {num_classes}; warm-start from a run trained on "
                                 f"data with {num_classes} classes, or train without --init-from")
        arch, init_name = src_arch, str(src.absolute())  # recorded absolute, as idx_dir
        src_nimg = state.get("nimg")
        if isinstance(src_nimg, int) and src_nimg >= math.ceil(cfg.kimg * 1000):  # before --out is made
            raise FailatlasError(f"--init-from: {src} is already at kimg {src_nimg / 1000:g}, which reaches --kimg "
                                 f"{cfg.kimg:g}: nothing would be trained; pass a --kimg above {src_nimg / 1000:g}")

    torch.manual_seed(cfg.seed)  # the same weights on every rank
    G = Generator(arch).train().to(dev)
    D = Discriminator(arch, unconditional_head=cfg.cond_ramp_kimg > 0).train().to(dev)
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    g_hparams, d_hparams = _adam_hparams(cfg)
    G_opt = torch.optim.Adam(G.parameters(), eps=1e-8, **g_hparams)
    D_opt = torch.optim.Adam(D.parameters(), eps=1e-8, **d_hparams)
    step, nimg, pl_mean = 0, 0, torch.zeros([], device=dev)
    r1_last = torch.zeros([])  # the last lazy R1 value, logged until the next R1 step
    if dev.type == "cuda":
        torch.cuda.manual_seed(cfg.seed)
    ranks = _Ranks(rank, world) if distributed else None
    if distributed:  # from here on each rank draws its own latents, labels, reals and noise
        torch.manual_seed(_rank_seed(cfg.seed, rank))
    if state is not None:
        source = ckpt_path if resume else init_name
        _load_part(G, state.get("G"), "generator (G)", source)
        _load_part(G_ema, state.get("G_ema"), "EMA generator (G_ema)", source)
        _load_optimizer(G_opt, state.get("G_opt"), "G", source)
        step, nimg = int(state["step"]), int(state["nimg"])
        pl_mean = state["pl_mean"].to(dev)
        r1_last = state.get("r1_last", r1_last).cpu()
        if resume:
            _load_part(D, state.get("D"), "discriminator (D)", source)
            _load_optimizer(D_opt, state.get("D_opt"), "D", source)
            saved_ranks = state.get("rng_ranks") if distributed else None
            if saved_ranks is not None and len(saved_ranks) == world:  # the same number of processes: exact
                torch.set_rng_state(saved_ranks[rank])
            elif main:  # one process, or rank 0 of another number: rank 0's stream
                torch.set_rng_state(state["rng"])
            else:  # another number of processes: a fresh stream, continued statistically
                torch.manual_seed(_rank_seed(cfg.seed, rank, nimg))
            if dev.type == "cuda" and "cuda_rng" in state:
                torch.cuda.set_rng_state(state["cuda_rng"], dev)
        else:  # warm start: a head the source lacked starts fresh (one this run lacks is dropped), and then so
            # does D's optimizer
            missing = _load_part(D, state.get("D"), "discriminator (D)", source, fresh="uncond.")
            if not missing:
                _load_optimizer(D_opt, state.get("D_opt"), "D", source)
        # The loaded optimizer states carry the source run's learning rates and betas: this run's options
        # hold (a warm start with another --lr trains with it; config.json records it).
        _set_hparams(G_opt, g_hparams)
        _set_hparams(D_opt, d_hparams)
    if main:
        out.mkdir(parents=True, exist_ok=True)
    batches = _Batches(labels, num_classes, arch.mbstd_group, cfg.class_groups, arch.z_dim, dev)
    reals, labels = reals.to(dev), labels.to(dev)

    judge, q_real = _mix_judge(cfg, reals, dev, progress) if cfg.mix_weight > 0 else (None, None)
    gamma = cfg.gamma(arch.resolution)
    local = cfg.batch // world  # this rank's part of every batch (all of it in one process)
    w_avg = (G.mapping_network.w_avg,) if hasattr(G.mapping_network, "w_avg") else ()
    total = int(math.ceil(cfg.kimg * 1000))
    next_snapshot = (nimg // int(cfg.snapshot_kimg * 1000) + 1) * int(cfg.snapshot_kimg * 1000)
    next_sample = (nimg // int(cfg.sample_kimg * 1000) + 1) * int(cfg.sample_kimg * 1000)

    saved = {"step": step, "nimg": nimg} if resume else {}  # the checkpoint in --out, if any

    def save() -> None:
        rng_ranks = ranks.rng_states() if ranks is not None else None  # a collective: every rank calls save()
        saved.update(step=step, nimg=nimg)
        if not main:
            return
        _io.save_checkpoint(ckpt_path, {
            "format": "failatlas-gan-checkpoint", "G": G.state_dict(), "D": D.state_dict(),
            "G_ema": G_ema.state_dict(), "G_opt": G_opt.state_dict(), "D_opt": D_opt.state_dict(),
            "step": step, "nimg": nimg, "pl_mean": pl_mean, "r1_last": r1_last, "rng": torch.get_rng_state(),
            "seconds": prior_seconds + time.perf_counter() - t0,  # training time over every session of the run
            **({"cuda_rng": torch.cuda.get_rng_state(dev)} if dev.type == "cuda" else {}),
            **({"world_size": world, "rng_ranks": rng_ranks} if rng_ranks is not None else {}),
            "train_config": dataclasses.asdict(cfg), "arch": arch.to_json(),
            **({"init_from": init_name} if init_name else {}),
        })
        save_generator(G_ema, out, extra={"training": training_record(cfg, nimg, step, init_name, empty_classes)})

    # The labels come from the data, so the mapping's input checks (which would wait for the device) are
    # skipped by calling the mapping network directly.
    def mixed_ws(z: torch.Tensor, y: torch.Tensor, update_w_avg: bool, cw: float) -> torch.Tensor:
        w = G.mapping_network(z, y, update_w_avg=update_w_avg, cond_weight=cw)
        ws = w.unsqueeze(1).repeat(1, G.num_ws, 1)
        if cfg.style_mixing > 0 and float(torch.rand([])) < cfg.style_mixing:
            cutoff = int(torch.randint(1, G.num_ws, []))
            ws[:, cutoff:] = G.mapping_network(torch.randn(z.shape).to(dev), y, cond_weight=cw).unsqueeze(1)
        return ws

    # Non-finite losses are noted on the device (no wait per step) and checked before anything is logged
    # or saved, so a checkpoint never holds weights updated by a non-finite loss.
    first_bad = torch.full([], -1, dtype=torch.long, device=dev)

    def check_finite(lg: float, ld: float) -> None:
        bad = int(first_bad) if ranks is None else ranks.first_bad(int(first_bad))
        if bad >= 0:
            raise FailatlasError(_divergence_message(cfg, out, init_name, bad + 1,
                                                     nimg - (step - bad - 1) * cfg.batch, step, lg, ld, saved))

    if nimg >= total:  # a --resume past the target (--init-from was refused above): say so, and leave the files
        rewrote = ""
        if main and resume and not _generator_saved_at(out, step):  # an interrupted final save: complete it
            with _StopFlag():  # the run's own record (its --kimg target), not this command's
                save_generator(G_ema, out, extra={"training": training_record(saved_cfg, nimg, step, init_name,
                                                                              empty_classes)})
            rewrote = f"; the generator in {out} was missing or older than the checkpoint and was rewritten from it"
        if main:
            print(f"failatlas: {out} is already at kimg {nimg / 1000:g} (--kimg {cfg.kimg:g}): nothing to train; "
                  f"pass a larger --kimg to continue{rewrote}", file=sys.stderr, flush=True)
        return GANTrainResult(str(out), nimg / 1000, step, 0.0, 0.0, False, False, str(dev))
    metrics_path = out / "metrics.jsonl"
    last_logged = _trim_metrics(metrics_path, step) if main and resume else None
    # metrics.jsonl's "seconds" counts the training time of the whole run, resumed sessions included (a
    # checkpoint saved before it was recorded: the last line logged up to it)
    prior_seconds = 0.0
    if resume:
        prior_seconds = state.get("seconds", (last_logged or {}).get("seconds", 0.0))
        prior_seconds = float(prior_seconds) if isinstance(prior_seconds, (int, float)) else 0.0
    start_nimg, t0 = nimg, time.perf_counter()
    interrupted = time_limited = False
    bar = progress_bar(total, desc="train-gan", unit="img", unit_scale=True, initial=nimg,
                       disable=None if progress is None else not progress)
    log: dict[str, float] = {}
    with _StopFlag() as flag, bar:
        while nimg < total:
            # --- G: non-saturating loss (and optional path-length regularization) ---
            cw = cfg.cond_weight(nimg)
            G.requires_grad_(True)
            D.requires_grad_(False)
            z, y = batches.fake(local)
            img = G.synthesis_network(G.styles(mixed_ws(z, y, True, cw)), "random")
            loss_G = F.softplus(-D(img, y, cw)).mean()
            if judge is not None:
                kl = mix_kl(judge, img, q_real)
                loss_G = loss_G + cfg.mix_weight * kl
                kl_last = kl.detach()
            G_opt.zero_grad(set_to_none=True)
            loss_G.backward()
            if cfg.pl_weight > 0 and step % cfg.pl_interval == 0:
                z, y = batches.fake(max(local // 2, 1))
                ws = mixed_ws(z, y, False, cw).detach().requires_grad_(True)
                img = G.synthesis_network(G.styles(ws), "random")
                noise = torch.randn_like(img) / arch.resolution
                (grad,) = torch.autograd.grad((img * noise).sum(), ws, create_graph=True)
                lengths = grad.square().sum(2).mean(1).sqrt()
                batch_mean = lengths.mean().detach()
                if ranks is not None:  # the global batch's mean, so pl_mean stays the same on every rank
                    batch_mean = torch.tensor(ranks.mean([float(batch_mean)])[0], dtype=batch_mean.dtype)
                pl_mean = pl_mean.lerp(batch_mean, 0.01)
                (((lengths - pl_mean).square()).mean() * cfg.pl_weight * cfg.pl_interval).backward()
            if ranks is not None:  # the global batch's gradient (and running mean w)
                ranks.average_grads(G, w_avg)
            G_opt.step()

            # --- D: logistic loss on fakes and reals, lazy R1 ---
            G.requires_grad_(False)
            D.requires_grad_(True)
            z, y = batches.fake(local)
            with torch.no_grad():
                fake = G.synthesis_network(G.styles(mixed_ws(z, y, False, cw)), "random")
            idx = batches.real_indices(local)
            real, y_real = reals[idx], labels[idx]
            do_r1 = step % cfg.r1_interval == 0
            real.requires_grad_(do_r1)
            # One D call on fakes and reals; minibatch-stddev groups are consecutive samples, so (batch being
            # a multiple of the group size) no group mixes the two halves.
            scores = D(torch.cat([fake, real]), torch.cat([y, y_real]), cw)
            score_fake, score_real = scores[:local], scores[local:]
            loss_D = F.softplus(score_fake).mean() + F.softplus(-score_real).mean()
            r1 = torch.zeros([], device=dev)
            if do_r1:
                (grad,) = torch.autograd.grad(score_real.sum(), real, create_graph=True)
                r1 = grad.square().sum(dim=(1, 2, 3)).mean()
                loss_D = loss_D + r1 * (gamma / 2) * cfg.r1_interval
            D_opt.zero_grad(set_to_none=True)
            loss_D.backward()
            if ranks is not None:  # with the R1 term on R1 steps: it is in the same backward
                ranks.average_grads(D)
            D_opt.step()

            finite = torch.isfinite(loss_G.detach()) & torch.isfinite(loss_D.detach())
            first_bad = torch.where(finite | (first_bad >= 0), first_bad, step)

            # --- EMA ---
            nimg += cfg.batch
            step += 1
            ema_nimg = min(cfg.ema_kimg * 1000, nimg * cfg.ema_rampup) if cfg.ema_rampup else cfg.ema_kimg * 1000
            _ema_update(G_ema, G, 0.5 ** (cfg.batch / max(ema_nimg, 1e-8)))

            bar.update(cfg.batch)
            elapsed = time.perf_counter() - t0
            rate = (nimg - start_nimg) / max(elapsed, 1e-9)
            if do_r1:
                r1_last = r1.detach()
            time_up = max_minutes is not None and elapsed >= max_minutes * 60
            if ranks is not None:  # all ranks stop at the same step
                flag.stop, time_up = ranks.any(flag.stop, time_up)
            snapshot, sample = nimg >= next_snapshot, nimg >= next_sample
            stopping = flag.stop or time_up or nimg >= total
            if step % cfg.log_every == 0 or snapshot or sample or stopping:
                lg, ld = float(loss_G.detach()), float(loss_D.detach())
                r1_log = float(r1_last)
                if ranks is not None:  # the ranks' means
                    lg, ld, r1_log = ranks.mean([lg, ld, r1_log])
                check_finite(lg, ld)
            if main and (step % cfg.log_every == 0 or stopping):
                log.update({"step": step, "kimg": nimg / 1000, "loss_G": lg, "loss_D": ld,
                            "r1": r1_log, "images_per_s": rate, "seconds": prior_seconds + elapsed})
                if judge is not None:  # this rank's last batch
                    log["mix_kl"] = float(kl_last)
                bar.set_postfix(G=f"{lg:.2f}", D=f"{ld:.2f}", img_s=f"{rate:.0f}")
                with open(metrics_path, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(log) + "\n")
            if snapshot:
                save()
                next_snapshot += int(cfg.snapshot_kimg * 1000)
            if sample:
                if main:
                    _sample_grid(G_ema, out / "samples-latest.png")
                next_sample += int(cfg.sample_kimg * 1000)
            if flag.stop or time_up:
                interrupted, time_limited = flag.stop, time_up and not flag.stop
                break
        # Still with signals turned into the flag: a Ctrl-C now cannot leave a checkpoint without its generator.
        save()
        if main:
            _sample_grid(G_ema, out / "samples-latest.png")
    elapsed = time.perf_counter() - t0
    result = GANTrainResult(str(out), nimg / 1000, step, elapsed, (nimg - start_nimg) / max(elapsed, 1e-9),
                            interrupted, time_limited, str(dev),
                          terminated=interrupted and flag.signum == signal.SIGTERM)
    if time_limited and main:
        print(f"failatlas: stopped after {max_minutes:g} minutes at kimg {nimg / 1000:g}; checkpoint saved in "
              f"{out}; continue with: {_resume_command(cfg, out)}", file=sys.stderr, flush=True)
    if interrupted and main:
        print(f"failatlas: interrupted at kimg {nimg / 1000:g}; checkpoint saved in {out}; "
              f"continue with: {_resume_command(cfg, out)}", file=sys.stderr, flush=True)
    return result
