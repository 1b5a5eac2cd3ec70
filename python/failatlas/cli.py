"""The ``failatlas`` command line.

The CLI holds no logic: each subcommand parses its options and makes one library call. Problems with
the user's input surface as :class:`~failatlas.errors.FailatlasError`, printed as one line
(``failatlas: error: ...``) with exit status 2 and no traceback.

To add a subcommand, write a function decorated with ``@command(name, help)`` that receives the
subparser, adds its options and returns the function to call with the parsed arguments.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
from typing import Callable

from . import __version__
from .errors import FailatlasError

_COMMANDS: list[tuple[str, str, str, Callable]] = []


def command(name: str, help: str, description: str | None = None):
    def register(setup: Callable[[argparse.ArgumentParser], Callable[[argparse.Namespace], int | None]]):
        _COMMANDS.append((name, help, description or help, setup))
        return setup

    return register


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=2))


def _print_result(result, as_json: bool) -> int:
    """A result object with ``to_json()`` and ``format()``: JSON with --json, else its text."""
    if as_json:
        _print_json(result.to_json())
    else:
        print(result.format())
    return 0


MAX_SEED = 2**32 - 1  # what every library behind the commands takes (numpy, scikit-learn's t-SNE, torch)


def _seed(text: str) -> int:
    """argparse type of every seed option: an integer in [0, 2³² − 1]."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a seed is a whole number, got {text!r}") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"a seed must be between 0 and {MAX_SEED}, got {text}")
    return value


def _generator_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--generator", default="mnist/generator",
                   help="generator folder, or the name of a shipped one (default: the shipped MNIST generator)")


#: how a classifier may also be given, for the commands that take classifier files
CLASSIFIER_FILES_HELP = ("or a file of images [N,1,28,28] in [0,1] -> logits: .pt (TorchScript) or .pt2 "
                         "(torch.export), differentiated like a folder's model, or .onnx (run by ONNX Runtime, "
                         "ranked by finite differences)")


def _black_box_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--black-box-n", type=int, default=64, metavar="N",  # failatlas.analysis.ranking.BLACK_BOX_N
                   help="samples (at least 2) a classifier without gradients (.onnx) is ranked on by finite "
                   "differences; it classifies 2 x N x (style dims) images, and more samples stand better for the "
                   "population")


def _class_index(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--classes takes class indices, whole numbers 0, 1, …, not names: got {text!r} (`failatlas data` "
            "lists each index with its name)") from None


def _classes_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--classes", type=_class_index, nargs="+", default=None, metavar="C",
                   help="class indices: draw the population from these classes only (e.g. --classes 3 8: the failure "
                        "conditions of those classes; or every class but those the generator had no training "
                        "image of); default: every class, uniformly")


def _model_options(p: argparse.ArgumentParser, files: bool = False) -> None:
    """--generator and --classifier: a folder, or the name of a shipped model (found from any directory);
    ``files``: the command also takes a classifier as an .onnx, .pt or .pt2 file."""
    _generator_option(p)
    p.add_argument("--classifier", default="mnist/classifier-corrupted",
                   help="classifier folder, or the name of a shipped one (default: the corrupted-trained one)"
                   + ("; " + CLASSIFIER_FILES_HELP if files else ""))


# --- subcommands -----------------------------------------------------------------------------------
# (each: options, then one library call)


@command("data", "Summarize a dataset (class counts, corruption cells) and optionally write a preview grid.")
def _data(p: argparse.ArgumentParser):
    p.add_argument("--dataset", default="mnist",
                   help="mnist (embedded MNIST-10k, or full MNIST with --idx-dir), mnist10k, fashion, "
                   "or any name with --idx-dir for a 28x28 IDX dataset")
    p.add_argument("--idx-dir", default=None, help="folder with train-/t10k- images and labels IDX files (raw or .gz)")
    p.add_argument("--split", choices=("train", "test"), default="train", help="which split to summarize")
    p.add_argument("--corruption", choices=("corrupted", "clean"), default="corrupted",
                   help="the corrupted mix (half blurred and noised, DESIGN §1) or clean images")
    p.add_argument("--blur", choices=("paper", "isotropic"), default="paper",
                   help="paper: vertical-only blur as in the authors' code; isotropic: both axes")
    p.add_argument("--seed", type=_seed, default=0, help="corruption seed (train uses 2*seed, test 2*seed+1)")
    p.add_argument("--preview", default=None, metavar="OUT.png",
                   help="write a grid of clean and blur x noise images here, with OUT.json beside it")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")

    def run(args: argparse.Namespace) -> int:
        from .data.preview import format_description, summarize_dataset

        summary = summarize_dataset(args.dataset, args.split, corruption=args.corruption, blur=args.blur,
                                    idx_dir=args.idx_dir, seed=args.seed, preview=args.preview)
        if args.json:
            _print_json(summary)
        else:
            print(format_description(summary))
        return 0

    return run


@command("train-classifier", "Train the paper's CNN on clean or corrupted data and save it to a folder.")
def _train_classifier_command(p: argparse.ArgumentParser):
    p.add_argument("--dataset", default="mnist", help="dataset name")
    p.add_argument("--train-on", required=True, choices=["clean", "corrupted"],
                   help="clean images, or the corrupted mix (half blurred and noised)")
    p.add_argument("--blur", default="paper", choices=["paper", "isotropic"], help="blur of the corrupted images")
    p.add_argument("--idx-dir", default=None, help="folder with IDX files (datasets read from IDX files)")
    p.add_argument("--epochs", type=int, default=20, help="passes over the training split")
    p.add_argument("--batch-size", type=int, default=64, help="images per Adam step")
    p.add_argument("--max-lr", type=float, default=1e-3, help="peak learning rate of the one-cycle schedule")
    p.add_argument("--translate-px", type=int, default=2, help="random shifts of up to ± this many pixels")
    p.add_argument("--seed", type=_seed, default=0, help="seed of the initial weights, shuffling and shifts")
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="train on the first N training images only (quick checks; at least 2; default: all)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 or auto")
    p.add_argument("--overwrite", action="store_true",
                   help="train into a non-empty --out, replacing the classifier files there (others stay; a "
                   "generator's folder is refused)")
    p.add_argument("--out", required=True, help="folder to write config.json, model.safetensors and "
                   "training.json to (must not exist or be empty, unless --overwrite)")

    def run(a: argparse.Namespace) -> int:
        from .training.classifier import TrainClassifierConfig, train_classifier

        result = train_classifier(TrainClassifierConfig(
            dataset=a.dataset, train_on=a.train_on, blur=a.blur, idx_dir=a.idx_dir, epochs=a.epochs,
            batch_size=a.batch_size, max_lr=a.max_lr, translate_px=a.translate_px, seed=a.seed, limit=a.limit,
            device=a.device), a.out, overwrite=a.overwrite)
        last = result.history[-1]
        epochs = len(result.history)
        print(f"saved {result.folder} ({result.n_train} images, {epochs} epoch{'' if epochs == 1 else 's'}, "
              f"{result.wall_time_s:.1f} s; last epoch loss {last.loss:.4f}, train acc {last.accuracy:.4f})")
        return 0

    return run


@command("eval-classifier", "Accuracy of a saved classifier on a dataset split (test by default), per corruption "
         "severity.")
def _eval_classifier_command(p: argparse.ArgumentParser):
    p.add_argument("--model", required=True, help="classifier folder (config.json + model.safetensors), the "
                   "name of a shipped one (mnist/classifier-clean, mnist/classifier-corrupted), or a file of images "
                   "[N,1,28,28] in [0,1] -> logits (.pt TorchScript, .pt2 torch.export, .onnx): the check that a "
                   "model of your own reads the images failatlas gives it")
    p.add_argument("--dataset", default=None, help="dataset name (default: the one the classifier folder's "
                   "config.json records it was trained on, with its IDX folder and blur; else mnist)")
    p.add_argument("--on", default="clean", choices=["clean", "corrupted"], help="clean or corrupted images")
    p.add_argument("--split", default="test", choices=["train", "test"], help="which split to evaluate on")
    p.add_argument("--blur", default=None, choices=["paper", "isotropic"],
                   help="blur of the corrupted images (default: the recorded one unless --dataset is given; else paper)")
    p.add_argument("--idx-dir", default=None, help="folder with IDX files (datasets read from IDX files)")
    p.add_argument("--seed", type=_seed, default=0, help="seed of the corruption draw")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 or auto")
    p.add_argument("--json", action="store_true", help="print the result as JSON")

    def run(a: argparse.Namespace) -> int:
        from .deploy import evaluate_any_classifier
        from .training.classifier import format_evaluation

        result = evaluate_any_classifier(a.model, dataset=a.dataset, on=a.on, idx_dir=a.idx_dir, blur=a.blur,
                                         seed=a.seed, split=a.split, device=a.device)
        if result.get("model") is None:  # a classifier file, loaded before the evaluation: record its path
            result["model"] = os.path.abspath(a.model)
        if a.json:
            _print_json(result)
        else:
            print(format_evaluation(result))
        return 0

    return run


@command("train-gan", "Train a conditional StyleGAN2 on a dataset (resumable).",
         "Train a conditional StyleGAN2 (non-saturating loss, lazy R1, style mixing, EMA). The output folder "
         "holds checkpoint.pt (resume with --resume), the EMA generator (generator.safetensors + "
         "config.json, usable as --generator), metrics.jsonl and samples-latest.png. Ctrl-C saves and stops. "
         "Under torchrun (`torchrun --nproc_per_node=P -m failatlas -- train-gan ...`, CPU/gloo) each process "
         "draws batch/P of every batch and the gradients are averaged; rank 0 writes.")
def _train_gan(p: argparse.ArgumentParser):
    from .training.gan import GANTrainConfig

    d = GANTrainConfig()
    p.add_argument("--dataset", default=d.dataset, help="mnist (embedded MNIST-10k unless --idx-dir), fashion, ...")
    p.add_argument("--idx-dir", default=None, help="folder with MNIST-format IDX files")
    p.add_argument("--train-on", dest="corruption", choices=("corrupted", "clean"), default=d.corruption,
                   help="train on the corrupted mix (DESIGN §1) or on clean images")
    p.add_argument("--blur", choices=("paper", "isotropic"), default=d.blur, help="corruption blur")
    p.add_argument("--config", default=d.config,
                   help="architecture: cpu-small (the shipped one), wide-latent (cpu-small with the paper's "
                        "512-dimensional z and w), paper or tiny")
    p.add_argument("--kimg", type=float, default=d.kimg, help="train until this many thousand images were shown")
    p.add_argument("--batch", type=int, default=d.batch, help="batch size")
    p.add_argument("--lr", type=float, default=d.lr,
                   help="Adam learning rate of G; D's is lr · 16/17 (StyleGAN2's lazy-R1 scaling, R1 every 16 steps)")
    p.add_argument("--pl-weight", type=float, default=d.pl_weight, help="path-length regularization weight (0: off)")
    p.add_argument("--r1-gamma", type=float, default=None,
                   help="R1 weight (default 0.0002 · resolution² / batch, StyleGAN2-ADA's heuristic)")
    p.add_argument("--class-groups", action=argparse.BooleanOptionalAction, default=d.class_groups,
                   help="each of D's minibatch-stddev groups holds one class, so D sees a generator that "
                        "varies too little within a class (off reproduces runs made before it)")
    p.add_argument("--cond-ramp-kimg", type=float, default=d.cond_ramp_kimg, metavar="KIMG",
                   help="transitional conditioning: fade the label in over the first KIMG (0: off)")
    p.add_argument("--mix-weight", type=float, default=d.mix_weight, metavar="W",
                   help="add W · KL(data's corruption mix ‖ the batch's) to G's loss, the mixes judged by a "
                        "corruption classifier trained on the real train split (0: off; see the model card)")
    p.add_argument("--mix-judge-seed", type=_seed, default=d.mix_judge_seed, metavar="SEED",
                   help="seed of that corruption classifier (default 2: not eval-gan's judge, seed 0)")
    p.add_argument("--snapshot-kimg", type=float, default=d.snapshot_kimg,
                   help="save a checkpoint (and the EMA generator) and redraw samples-latest.png every this many kimg")
    p.add_argument("--seed", type=_seed, default=d.seed, help="random seed (weights, latents, batches)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads, at most 4096 (default: torch's "
                   "choice)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (CUDA when available)")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="save and stop after this much wall time (continue later with --resume)")
    p.add_argument("--out", required=True, help="run folder: a new or empty one (created if needed), or with "
                   "--resume one that holds a checkpoint")
    p.add_argument("--resume", action="store_true", help="continue the checkpoint in --out exactly")
    p.add_argument("--init-from", default=None, metavar="DIR",
                   help="warm start: begin from another run's weights, optimizer states and image count "
                        "(same --config and number of classes), then train with these options into --out")

    def run(a: argparse.Namespace) -> int:
        from .training.gan import train_gan

        cfg = GANTrainConfig(dataset=a.dataset, idx_dir=a.idx_dir, corruption=a.corruption, blur=a.blur,
                             config=a.config, kimg=a.kimg, batch=a.batch, lr=a.lr, pl_weight=a.pl_weight,
                             r1_gamma=a.r1_gamma, class_groups=a.class_groups, cond_ramp_kimg=a.cond_ramp_kimg,
                             mix_weight=a.mix_weight, mix_judge_seed=a.mix_judge_seed,
                             snapshot_kimg=a.snapshot_kimg, sample_kimg=a.snapshot_kimg, seed=a.seed)
        from . import distributed

        result = train_gan(cfg, a.out, resume=a.resume, threads=a.threads, device=a.device,
                           max_minutes=a.max_minutes, init_from=a.init_from)
        rank, size = distributed.world()
        if rank == 0:
            _print_json(result.to_json())
        else:  # under torchrun: rank 0 wrote the run and prints its summary
            print(f"rank {rank} of {size}: done; rank 0 wrote the run to {a.out}")
        return (143 if result.terminated else 130) if result.interrupted else 0

    return run


@command("eval-gan", "Quality of a generator: conditional accuracy, Fréchet distance, corruption mix.",
         "Judge a generator with a reference classifier: conditional_accuracy (and per class), fd (Fréchet "
         "distance to real test images in the classifier's penultimate features) against fd_real_vs_real "
         "(real train vs real test, the floor), corruption_tv (total variation between the corruption "
         "cells a small corruption classifier finds in real and in generated images, for every noise mode), "
         "diversity (within-class spread against the data's) and style_effective_dims (how many independent "
         "directions the StyleSpace samples span, of style_dims). Inception FID only with --inception-weights "
         "(a TorchScript feature extractor); nothing is downloaded.")
def _eval_gan(p: argparse.ArgumentParser):
    _model_options(p)
    p.add_argument("--n", type=int, default=10000, help="number of generated samples; their labels cycle through "
                   "the classes (0, 1, ..., 0, 1, ...), so a multiple of the number of classes is balanced")
    p.add_argument("--n-real", type=int, default=None, help="use at most this many real images per split (quick checks)")
    p.add_argument("--dataset", default=None, help="the real data to judge against (default: the dataset the "
                   "generator's config.json records it was trained on, with its IDX folder and blur; else mnist)")
    p.add_argument("--idx-dir", default=None, help="folder with MNIST-format IDX files")
    p.add_argument("--blur", choices=("paper", "isotropic"), default=None,
                   help="corruption blur of the real data (default: the recorded one unless --dataset is given; else paper)")
    p.add_argument("--noise-mode", choices=("const", "random", "none"), default="const",
                   help="generator noise inputs for the accuracy and FD figures")
    p.add_argument("--seed", type=_seed, default=0, help="seed of the latents and of the corruption classifier")
    p.add_argument("--inception-weights", default=None,
                   help="TorchScript file mapping float [N,3,299,299] in [0,255] to features [N,F]")
    p.add_argument("--device", default="cpu", help="where the generator runs: cpu, cuda, cuda:N or auto")
    p.add_argument("--json", action="store_true", help="print the result as JSON")

    def run(a: argparse.Namespace) -> int:
        from .training.quality import evaluate_generator_folders

        result = evaluate_generator_folders(a.generator, a.classifier, n=a.n, dataset=a.dataset, idx_dir=a.idx_dir,
                                            blur=a.blur, seed=a.seed, noise_mode=a.noise_mode, n_real=a.n_real,
                                            inception_weights=a.inception_weights, device=a.device)
        return _print_result(result, a.json)

    return run


@command("demo", "The main job on the shipped models (what `make demo` runs).",
         "Evaluate the shipped MNIST classifiers (clean- and corrupted-trained) on the clean and corrupted "
         "MNIST-10k test splits and print one table, overall and per blur x noise cell; with --out, also run "
         "the quick analysis of the shipped generator and classifiers into OUT/analysis (report.html).")
def _demo(p: argparse.ArgumentParser):
    p.add_argument("--out", default=None, help="write classifiers.json/.csv and the quick analysis of the "
                   "shipped models (out/analysis, replaced each time) into this folder")
    p.add_argument("--seed", type=_seed, default=0, help="corruption seed of the test split and analysis seed")
    p.add_argument("--no-analysis", action="store_true", help="only the classifier table")

    def run(a: argparse.Namespace) -> int:
        from .demo import run_demo

        run_demo(a.out, seed=a.seed, analysis=not a.no_analysis)
        return 0

    return run


@command("rank", "Rank StyleSpace dimensions by how much they lower the classifier's confidence.",
         "Sample a population of generated images, rank every StyleSpace dimension by -sigma * mean gradient of "
         "p_y (DESIGN 4.1), and measure how each separates well- from mis-classified samples (4.2, Fig. 4). "
         "Writes ranking.csv, ranking.json, population.npz, separation.csv, separation.png and "
         "separation.json into --out and prints the top 10.")
def _rank(p: argparse.ArgumentParser):
    _model_options(p, files=True)
    p.add_argument("--n", type=int, default=10000, help="population size")
    _classes_option(p)
    p.add_argument("--seed", type=_seed, default=0, help="seed of the population, the bootstrap and the random dims")
    p.add_argument("--target", choices=("probability", "logit"), default="probability",
                   help="differentiate p_y or the logit of y")
    p.add_argument("--per-class", action="store_true", help="also rank within each class (in ranking.json)")
    p.add_argument("--bootstrap", type=int, default=0, metavar="B",
                   help="bootstrap resamples for 95%% intervals of the scores (0: none)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="samples per forward/backward pass; None: 64 on CPU, 512 on an accelerator")
    _black_box_option(p)
    p.add_argument("--out", required=True, help="output folder (created if needed; in an existing one, files of "
                   "the same names are replaced and other files stay; an analyze run folder is refused)")

    def run(a: argparse.Namespace) -> int:
        from .analysis.ranking import run_rank

        result = run_rank(a.generator, a.classifier, out=a.out, n=a.n, seed=a.seed, target=a.target,
                          per_class=a.per_class, bootstrap=a.bootstrap, batch_size=a.batch_size,
                          black_box_n=a.black_box_n, classes=a.classes)
        print(result.format(10))
        return 0

    return run


@command("analyze", "The whole analysis (ranking, separation, t-SNE, corner cases, curves) and its report.",
         "Sample a population of generated images and run every analysis of DESIGN 4 on it: gradient ranking per "
         "classifier, separation (Fig. 4), t-SNE of Z/W/S (Fig. 3), corner cases along the top dimensions, their "
         "margins (the same search from many well-classified samples: quantiles of the shifts) and "
         "manipulation grids (Fig. 5), accuracy vs distance curves (Fig. 6) and class overlap. Writes every "
         "figure (PNG + JSON), the tables (CSV/JSON), summary.json, manifest.json and a self-contained "
         "report.html into --out (a new or empty folder; built aside and moved there at the end).")
def _analyze(p: argparse.ArgumentParser):
    _generator_option(p)
    p.add_argument("--classifier", action="append", default=None, metavar="DIR",
                   help="classifier folder or shipped name, " + CLASSIFIER_FILES_HELP + "; repeat for several, "
                   "the first is the primary (default: mnist/classifier-corrupted then mnist/classifier-clean)")
    p.add_argument("--n", type=int, default=None, help="population size (default 10000; 2000 with --quick)")
    _classes_option(p)
    p.add_argument("--seed", type=_seed, default=0, help="seed of the population, bootstrap, random dims and t-SNE")
    p.add_argument("--k", type=int, default=100, help="top-K dimensions of the accuracy-curve distance")
    p.add_argument("--curve-centre", choices=("class", "global"), default="class",
                   help="accuracy curve: distance of each sample to the average of its own class (default) or "
                        "to one average of all classes")
    p.add_argument("--corner-step", type=float, default=5.0, metavar="SIGMA",
                   help="the corner search brackets each crossing in steps of this many σ before narrowing it to "
                        "0.01σ (DESIGN: 5); smaller steps also find dips of p_y narrower than 5σ, at a "
                        "proportional cost")
    p.add_argument("--margin-starts", type=int, default=None, metavar="M",
                   help="margins: run the corner search from M well-classified samples per class as well, and "
                        "report the quantiles of their shifts per dimension (default 10; none with --quick; 0: no "
                        "margins)")
    _black_box_option(p)
    p.add_argument("--quick", action="store_true",
                   help="a fast pass: N=2000, 500 t-SNE points, grids for 3 classes, no bootstrap, no margins")
    p.add_argument("--bootstrap", type=int, default=None, metavar="B",
                   help="bootstrap resamples for 95%% intervals of every classifier's ranking scores (default 200; "
                        "0 with --quick; 0: none)")
    p.add_argument("--skip-tsne", action="store_true", help="leave out the t-SNE stage")
    p.add_argument("--batch-size", type=int, default=None,
                   help="samples per forward pass; None: 64 on CPU, 512 on an accelerator")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads, at most 4096 (0: torch's choice; one ran fastest on a busy 2-core machine)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists and is not empty")
    p.add_argument("--out", required=True, help="output folder (must not exist or be empty)")

    def run(a: argparse.Namespace) -> int:
        from .analysis.pipeline import AnalysisOptions, run_analysis

        result = run_analysis(AnalysisOptions(
            generator=a.generator, classifiers=tuple(a.classifier) if a.classifier else None,
            classes=tuple(a.classes) if a.classes else None, n=a.n, seed=a.seed,
            k=a.k, curve_centre=a.curve_centre, corner_step=a.corner_step, margin_starts=a.margin_starts,
            black_box_n=a.black_box_n, quick=a.quick,
            bootstrap=a.bootstrap, skip_tsne=a.skip_tsne, batch_size=a.batch_size, threads=a.threads,
            overwrite=a.overwrite), a.out)
        print(result.format())
        return 0

    return run


@command("export", "Export the classifier, the synthesis network and the fused graph to ONNX, TorchScript "
         "and torch.export (one folder, with export.json).",
         "Write into --out: classifier.onnx (images [N,1,28,28] in [0,1] -> logits) and the same classifier as "
         "classifier.pt (TorchScript) and classifier.pt2 (torch.export), synthesis.onnx (styles "
         "s [N,dim S] -> images [N,1,32,32]), fused.onnx (s -> logits), fused.pt (TorchScript) and fused.pt2 "
         "(torch.export) of the same fused graph, with --int8 also classifier-int8.onnx, and export.json "
         "(sha256, size, input/output shapes, style_dim, num_classes, parity with eager torch, int8 accuracy). "
         "ONNX files are single files with a dynamic batch that pass onnx.checker; every float32 file must "
         "match eager torch within 1e-4 on real styles s = G.styles(G.mapping(z, y)), else nothing is written. "
         "Files are built in a temporary folder beside --out and moved in at the end: a failed export leaves "
         "no file behind.")
def _export(p: argparse.ArgumentParser):
    _model_options(p)
    p.add_argument("--int8", action="store_true",
                   help="also write classifier-int8.onnx (static int8 QDQ, calibrated on real training images) "
                   "and measure its accuracy next to float32 on the clean and corrupted test splits")
    p.add_argument("--calibration", type=int, default=None, metavar="N",
                   help="with --int8: number of real training images that calibrate the int8 activation ranges "
                        "(default 1000)")
    p.add_argument("--dataset", default=None,
                   help="with --int8: dataset of the calibration images and the accuracy table (default: the one "
                        "the classifier records it was trained on, with its IDX folder)")
    p.add_argument("--idx-dir", default=None, help="with --int8 and --dataset: that dataset's folder of IDX files")
    p.add_argument("--noise-mode", choices=("const", "none"), default="const",
                   help="the generator's deterministic noise baked into synthesis.onnx and the fused graphs")
    p.add_argument("--seed", type=_seed, default=0, help="seed of the styles the graphs are exported and checked with")
    p.add_argument("--overwrite", action="store_true",
                   help="export into a non-empty --out, replacing the exported files there")
    p.add_argument("--json", action="store_true", help="print export.json (and the folder) as JSON")
    p.add_argument("--out", required=True, help="output folder (must not exist or be empty, unless --overwrite)")

    def run(a: argparse.Namespace) -> int:
        from .deploy.export import export_models

        result = export_models(a.generator, a.classifier, a.out, int8=a.int8, noise_mode=a.noise_mode,
                               calibration=a.calibration, dataset=a.dataset, idx_dir=a.idx_dir,
                               overwrite=a.overwrite, seed=a.seed)
        return _print_result(result, a.json)

    return run


@command("compare", "Compare classifiers on one generated population: agreement, curves, corner shifts.",
         "Sample one population of generated images and compare two or more classifiers on it (e.g. a torch model "
         "and its ONNX int8 export, or the clean- and the corrupted-trained models): accuracy and the rate at "
         "which their predictions agree, each one's accuracy-vs-distance curve on one plot, and corner shifts "
         "side by side: the same starts (per class, the mean of the samples every classifier gets right) walked "
         "along the first classifier's top dimensions, searched with each classifier, showing which directions "
         "fail earlier and by how much. Writes compare.json, corner_shifts.csv, corner_shifts.png (+ .json), "
         "accuracy_curves.png (+ .json) and a self-contained report.html into --out.")
def _compare(p: argparse.ArgumentParser):
    _generator_option(p)
    p.add_argument("--classifier", action="append", required=True, metavar="DIR",
                   help="classifier folder or shipped name, " + CLASSIFIER_FILES_HELP + "; give it at least "
                   "twice, the first is the reference (its top dimensions and directions are walked)")
    p.add_argument("--n", type=int, default=2000, help="population size")
    _classes_option(p)
    p.add_argument("--seed", type=_seed, default=0, help="seed of the population")
    p.add_argument("--k", type=int, default=10, help="number of top dimensions whose corner shifts are compared")
    p.add_argument("--curve-dims", choices=("reference", "own"), default="reference",
                   help="the accuracy curves measure distance along the top-100 dimensions of the first "
                        "classifier (reference, default: curves then differ only by the models, e.g. an export "
                        "and its original) or of each classifier's own ranking (own, as analyze does)")
    _black_box_option(p)
    p.add_argument("--batch-size", type=int, default=None,
                   help="images per forward pass; None: 64 on CPU, 512 on an accelerator")
    p.add_argument("--out", required=True, help="output folder (created if needed; in an existing one, files of "
                   "the same names are replaced and other files stay; an analyze run folder is refused)")

    def run(a: argparse.Namespace) -> int:
        from .analysis.compare import run_compare

        print(run_compare(a.generator, a.classifier, out=a.out, n=a.n, seed=a.seed, k=a.k,
                          batch_size=a.batch_size, black_box_n=a.black_box_n, classes=a.classes,
                          curve_dims=a.curve_dims).format())
        return 0

    return run


@command("verify", "Check an analyze run folder against its manifest (files, report, models, versions; "
         "optionally run it again and compare every file), or an export, compare or rank folder against its "
         "record.",
         "Check the folder that `failatlas analyze --out DIR` wrote (or demo's analysis/ folder) against its "
         "manifest.json: every listed file is there with the sha256 the run recorded and no other file is; "
         "report.html has its recorded digest and shows exactly the run's PNGs and manifest; the generator and "
         "classifiers still have the recorded sha256 (at the recorded path, or a shipped model by its name); "
         "which versions of failatlas (source digests) and libraries differ here. With --rerun the analysis "
         "runs again with the recorded options into a temporary folder (or --rerun-out) and every file is "
         "compared with the recorded digest (on CPU the same code, libraries and models give the same bytes). "
         "Prints the manifest's sha256: kept apart from the folder, it seals the run. A folder of `failatlas "
         "export`, `compare` or `rank` is checked against its export.json, compare.json or ranking.json (each "
         "file's sha256, the models, the versions; other files in the folder are not checked; --record names "
         "the one to check where several commands wrote). Exit status 0: OK; 1: something differs (a file, the "
         "report, a model, the rerun); 2: not a folder verify can check; 3: nothing differs but the rerun asked "
         "for could not be done (the reason is printed).")
def _verify(p: argparse.ArgumentParser):
    p.add_argument("run", metavar="RUN", help="the --out folder of failatlas analyze (or of export, compare, rank)")
    p.add_argument("--rerun", action="store_true",
                   help="run the analysis again with the recorded options and compare every file (takes as long "
                        "as the run did)")
    p.add_argument("--rerun-out", default=None, metavar="DIR",
                   help="keep the rerun in DIR (must not exist or be empty; implies --rerun)")
    p.add_argument("--record", default=None, metavar="FILE",
                   help="the record to check against: manifest.json, export.json, compare.json or ranking.json "
                        "(default: manifest.json if there, else the first of the others found)")
    p.add_argument("--json", action="store_true", help="print the check as JSON")

    def run(a: argparse.Namespace) -> int:
        from .analysis.verify import verify_run

        check = verify_run(a.run, rerun=a.rerun, rerun_out=a.rerun_out, record=a.record)
        _print_result(check, a.json)
        return (0 if check.complete else 3) if check.ok else 1

    return run


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: X)" only where it tells something: not when the help already states its default,
    the option is required, or the default is None or False (a flag, or a value chosen at run time)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if ("default" in text.lower() or action.required or action.default is None or action.default is False
                or action.default is argparse.SUPPRESS):
            return text
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="failatlas",
        description="Map where an image classifier fails: StyleSpace failure directions, corner cases, "
        "accuracy against corruption level.",
    )
    parser.add_argument("--version", action=_Version, nargs=0,
                        help="show the version and the source digests (Python, C++) that run records hold, "
                             "and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_, description, setup in _COMMANDS:
        p = sub.add_parser(name, help=help_, description=description,
                           formatter_class=_HelpFormatter)
        p.set_defaults(_run=setup(p), _parser=p)
    return parser


class _Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, ``timeout``, a batch scheduler) raised as an interrupt, so that every writer's
    clean-up runs as it does for Ctrl-C: no staging folder or temporary file is left behind."""


@contextlib.contextmanager
def _terminate_as_interrupt():
    def handler(signum, frame):
        raise _Terminated()

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _refuse_repeated_options(p: argparse.ArgumentParser, argv: list[str]) -> None:
    """An option that takes one value, given twice (argparse keeps the last silently): `rank --classifier A
    --classifier B` would rank B alone. Options that collect several values (`--classifier` of analyze and
    compare) may repeat."""
    actions = {opt: action for action in p._actions for opt in action.option_strings}
    seen: set[argparse.Action] = set()
    for token in argv:
        if token == "--":
            break
        name = token.split("=", 1)[0]
        if not name.startswith("--"):
            continue
        matches = [name] if name in actions else [o for o in actions if o.startswith(name)]  # argparse's prefixes
        action = actions[matches[0]] if len(matches) == 1 else None
        if not isinstance(action, argparse._StoreAction):
            continue
        if action in seen:
            plural = " (analyze and compare take several)" if "--classifier" in action.option_strings else ""
            p.error(f"{action.option_strings[-1]} is given twice; it takes one value{plural}")
        seen.add(action)


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's last flush does not fail on a closed pipe again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no file descriptor behind stdout (e.g. captured): nothing to flush there
        pass


class _Version(argparse.Action):
    """--version on one line (argparse's own action wraps it): the digest a run's manifest records."""

    def __call__(self, parser, namespace, values, option_string=None):
        from ._provenance import native_source_sha256, source_sha256

        print(f"failatlas {__version__} (source sha256 {source_sha256()}, native source sha256 "
              f"{native_source_sha256() or 'none: not built'})")
        parser.exit()


def main(argv: list[str] | None = None) -> int:
    from ._alloc import keep_freed_memory

    keep_freed_memory()  # large tensors reuse freed pages instead of faulting in new ones (see _alloc)
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # reported with the subcommand's usage, not the top level's
        getattr(args, "_parser", parser).error(f"unrecognized arguments: {' '.join(unknown)}")
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    _refuse_repeated_options(args._parser, sys.argv[1:] if argv is None else argv)
    try:
        with _terminate_as_interrupt():
            rc = args._run(args)
    except FailatlasError as exc:
        print(f"failatlas: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except _Terminated:
        print("failatlas: terminated", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("failatlas: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader of stdout went away (`failatlas data --json | head`): stop quietly
        _silence_stdout()
        return 141  # as a process that SIGPIPE ended, which pipelines treat as normal
    except OSError as exc:  # the file system refused (disk full, a path changed under the run): one line
        print(f"failatlas: error: {exc}; check the path, its permissions and the free space, then run again",
              file=sys.stderr)
        return 2
    return int(rc or 0)
