"""An experiment on issue 4's separation goal: are the primary classifier's misses the generator's
ambiguous digits, and would a generator that drew fewer of them let the top-ranked dimensions separate?

A second, independently trained classifier (the judge) re-labels the population of an analyze run. The
misses both get wrong are digits that two classifiers read as another class (ambiguous by drawing, which
a generator trained for class fidelity would draw less often); the script then drops every sample the
judge gets wrong and measures the separation of what is left: the primary classifier's own misses, along
the run's ranking and along a ranking computed afresh on the kept samples.

    failatlas train-classifier --dataset mnist --train-on corrupted --epochs 8 --seed 1 --out runs/judge
    .venv/bin/python scripts/shared_misses.py runs/analyze runs/judge

It prints JSON: the miss counts (primary, judge, both) and, for the whole population and for the samples
the judge gets right, the separation summary (mean KS of the top 10 vs 10 random dimensions, of every
dimension, of the best 10, and by chance).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch


def separation(G, population, ranking, seed: int) -> dict:
    from failatlas.analysis import Separation

    summary = Separation(population, layout=tuple(G.style_layout())).compute().summary(ranking, 10, seed=seed)
    return {"n": population.n, "n_mis": int((~population.well).sum()),
            **{k: v for k, v in summary.items() if k.endswith("_ks")}}


def shared_misses(run: Path, judge: str, generator: str | None = None, classifier: str | None = None) -> dict:
    """The experiment on the run folder ``run`` (its population.npz, ranking.json and manifest.json) with
    the classifier folder ``judge``; the generator and primary classifier default to the run's."""
    import failatlas
    from failatlas import FailatlasError
    from failatlas.analysis import GradientRanking, Population, Ranking, with_classifier

    manifest = json.loads((run / "manifest.json").read_text())
    G = failatlas.load_generator(generator or manifest["models"]["generator"]["path"])
    primary = next(c for c in manifest["models"]["classifiers"] if c["name"] == manifest["models"]["primary"])
    C = failatlas.load_classifier(classifier or primary["path"])
    pop = Population.from_npz(run / "population.npz")
    ranking = Ranking.read_json(run / "ranking.json")
    if classifier is not None:  # another primary: its own verdicts and its own ranking of them
        pop = with_classifier(pop, G, C)
        ranking = GradientRanking(G, C).rank(pop)
    seed = int(manifest["seeds"]["separation_random_dims"])  # the run's draw of random dimensions
    judged = with_classifier(pop, G, failatlas.load_classifier(judge))
    mis, judge_mis = ~pop.well, ~judged.well
    if not bool((mis & ~judge_mis).any()):
        raise FailatlasError(f"the judge misses every one of the primary's {int(mis.sum())} misses, so no miss is "
                             "left to separate once its misses are dropped; take another judge")
    kept = pop.subset(torch.nonzero(judged.well).squeeze(1))
    return {
        "n": pop.n, "primary_misses": int(mis.sum()), "judge_misses": int(judge_mis.sum()),
        "both": int((mis & judge_mis).sum()), "primary_only": int((mis & ~judge_mis).sum()),
        "all": separation(G, pop, ranking, seed),
        "judge_right_run_ranking": separation(G, kept, ranking, seed),
        "judge_right_own_ranking": separation(G, kept, GradientRanking(G, C).rank(kept), seed),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path, help="an analyze run folder (population.npz, ranking.json, manifest.json)")
    p.add_argument("judge", help="the second classifier's folder")
    p.add_argument("--generator", help="instead of the run's (manifest.json)")
    p.add_argument("--classifier", help="the primary classifier, instead of the run's (its misses, ranked afresh)")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    from failatlas import FailatlasError

    try:
        print(json.dumps(shared_misses(a.run, a.judge, a.generator, a.classifier), indent=2))
    except FailatlasError as exc:  # e.g. the judge misses every sample the primary misses: nothing left
        raise SystemExit(f"shared_misses: {exc}") from None


if __name__ == "__main__":
    main()
