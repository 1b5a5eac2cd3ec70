"""Summarize the eval-gan results of the runs of benchmarks/gpu_check.sh and name the best one.

Usage: python benchmarks/pick_best.py WORKDIR NAME... — prints one line per run (kimg, conditional
accuracy, lowest class, FD, corruption_tv per noise mode, within-class diversity), then the best run's
name alone on the last line: lowest corruption_tv (const noise) + the shortfall of diversity below 0.8 +
the shortfall of the lowest class accuracy below 0.9 (issue 3's shipping bar)."""

import json
import sys


def main(workdir: str, names: list[str]) -> str:
    scored = []
    for n in names:
        try:
            e = json.load(open(f"{workdir}/eval-gan-{n}.json"))
            kimg = json.load(open(f"{workdir}/{n}/config.json"))["training"]["kimg"]
        except (OSError, ValueError, KeyError):
            print(f"{n}: no eval")
            continue
        tv, div, low = e["corruption_tv"], e.get("diversity", 0.0), min(e["per_class_accuracy"])
        print(f"{n}: kimg {kimg:.1f} acc {e['conditional_accuracy']:.4f} min {low:.3f} fd {e['fd']:.1f} "
              f"tv {tv:.3f} by mode {e['corruption_tv_by_noise_mode']} diversity {div:.3f}")
        scored.append((tv + max(0.0, 0.8 - div) + max(0.0, 0.9 - low), n))
    return min(scored)[1] if scored else ""


if __name__ == "__main__":
    print(main(sys.argv[1], sys.argv[2:]))
