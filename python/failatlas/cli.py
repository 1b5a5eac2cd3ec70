"""The ``failatlas`` command line.

The CLI holds no logic: each subcommand parses its options and makes one library call. Problems with
the user's input surface as :class:`~failatlas.errors.FailatlasError`, printed as one line
(``failatlas: error: ...``) with exit status 2 and no traceback.

To add a subcommand, write a function decorated with ``@command(name, help)`` that receives the
subparser, adds its options and returns the function to call with the parsed arguments.
"""

from __future__ import annotations

import argparse
import json
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


# --- subcommands -----------------------------------------------------------------------------------
# (each: options, then one library call)


@command("data", "Summarize a dataset (class counts, corruption cells) and optionally write a preview grid.")
def _data(p: argparse.ArgumentParser):
    p.add_argument("--dataset", default="mnist",
                   help="mnist (embedded MNIST-10k, or full MNIST with --idx-dir), mnist10k, fashion, "
                   "or any name with --idx-dir for a 28x28 IDX dataset")
    p.add_argument("--idx-dir", default=None, help="folder with train-/t10k- images and labels IDX files (raw or .gz)")
    p.add_argument("--split", choices=("train", "test"), default="train")
    p.add_argument("--corruption", choices=("corrupted", "clean"), default="corrupted")
    p.add_argument("--blur", choices=("paper", "isotropic"), default="paper",
                   help="paper: vertical-only blur as in the authors' code; isotropic: both axes")
    p.add_argument("--seed", type=int, default=0, help="corruption seed (train uses 2*seed, test 2*seed+1)")
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="failatlas",
        description="Map where an image classifier fails: StyleSpace failure directions, corner cases, "
        "accuracy against corruption level.",
    )
    parser.add_argument("--version", action="version", version=f"failatlas {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_, description, setup in _COMMANDS:
        p = sub.add_parser(name, help=help_, description=description,
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        p.set_defaults(_run=setup(p))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        rc = args._run(args)
    except FailatlasError as exc:
        print(f"failatlas: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("failatlas: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)
