"""failatlas-eval, the C++ runner: walks equal the Python walk engine, the corner search equals
CornerCaseSearch row for row, and every bad input exits 2 with one error line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from failatlas._torchscript import quiet_jit
from failatlas.analysis import CornerCaseSearch
from failatlas.analysis.ranking import Ranking, _order
from failatlas.engine import WalkEngine
from failatlas.engine.fused import export_torchscript
from failatlas.models.adapter import classifier_view
from failatlas.models.classifier import PaperCNN
from failatlas.models.stylegan2 import CONFIGS, Generator


def _find_runner() -> str | None:
    beside = Path(sys.executable).with_name("failatlas-eval")  # the venv's bin folder first
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("failatlas-eval")


RUNNER = _find_runner()
pytestmark = pytest.mark.skipif(
    RUNNER is None, reason="failatlas-eval is not built: `make install` (pip install --no-build-isolation -e .) "
                           "builds and installs it with the native module")

N = 6


def run(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([RUNNER, *map(str, args)], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The tiny generator and a random PaperCNN whose last layer is scaled up (confident enough that some
    starts have p_y > 0.5, so the corner search brackets, bisects, and sometimes gives up), the fused
    graph, and the .npy inputs."""
    folder = tmp_path_factory.mktemp("runner")
    torch.manual_seed(0)
    G = Generator(CONFIGS["tiny"]).eval()
    torch.manual_seed(1)
    C = PaperCNN().eval()
    with torch.no_grad():
        C.fc2.weight.mul_(40.0)
        C.fc2.bias.zero_()
    model = export_torchscript(G, C, folder / "fused.pt")
    g = torch.Generator().manual_seed(0)
    z = torch.randn(N, G.z_dim, generator=g)
    with torch.no_grad():
        s = G.styles(G.mapping(z, torch.randint(0, G.num_classes, (N,), generator=g))).float().contiguous()
        p = torch.softmax(C(classifier_view(G.synthesis_from_styles(s, noise_mode="const"))).double(), dim=1)
    y = p.argmax(dim=1)  # each start's own prediction: p_y ranges from about 0.3 to above 0.5
    sigma = torch.rand(G.style_dim, generator=g) * 0.3 + 0.05
    dims = [t.start + 1 for t in G.style_layers()]  # one dimension of every style layer, ToRGB included
    sign = [1 if i % 2 == 0 else -1 for i in range(len(dims))]
    paths = {"model": model, "styles": folder / "s.npy", "labels": folder / "y.npy", "sigma": folder / "sigma.npy"}
    np.save(paths["styles"], s.numpy())
    np.save(paths["labels"], y.numpy().astype(np.int64))
    np.save(paths["sigma"], sigma.numpy())
    return dict(G=G, C=C, s=s, y=y, sigma=sigma, dims=dims, sign=sign, folder=folder, paths=paths)


def common_args(st, **override) -> list[str]:
    args = {"--model": st["paths"]["model"], "--styles": st["paths"]["styles"], "--labels": st["paths"]["labels"],
            "--dims": ",".join(map(str, st["dims"])), "--sigma": st["paths"]["sigma"],
            "--sign": ",".join(map(str, st["sign"])), "--out": st["folder"] / "result.json"}
    args.update(override)
    out = []
    for k, v in args.items():
        if v is not None:
            out += [k, str(v)]
    return out


def ranking_for(G, dims, sign, sigma) -> Ranking:
    """A ranking whose degrading directions are `sign` on `dims` and whose σ is `sigma` (as the runner gets)."""
    S = G.style_dim
    score = torch.zeros(S, dtype=torch.float64)
    for i, (d, g) in enumerate(zip(dims, sign)):
        score[d] = g * (len(dims) - i)
    sig = sigma.to(torch.float64)
    return Ranking(order=_order(score), score=score, sigma=sig, direction=torch.sign(score).to(torch.int64),
                   mean_grad=-score / sig, layout=tuple(G.style_layout()), target="probability", n=1)


# --- walks ---------------------------------------------------------------------------------------------


def test_walk_equals_the_walk_engine(setup):
    st = setup
    shifts = [0.0, 0.5, 1.0, -2.5, 7.0]
    out = st["folder"] / "walk.json"
    result = run("walk", *common_args(st, **{"--out": out}), "--shifts", ",".join(map(str, shifts)),
                 "--batch-size", "17")
    assert result.returncode == 0, result.stderr
    got = json.loads(out.read_text())
    want = WalkEngine(st["G"], st["C"]).walk(st["s"], st["y"], torch.tensor(st["dims"]), torch.tensor(shifts),
                                            st["sigma"], torch.tensor(st["sign"], dtype=torch.float64),
                                            progress_bar=False)
    p_y = torch.tensor(got["p_y"], dtype=torch.float64)
    pred = torch.tensor(got["pred"], dtype=torch.int64)
    assert p_y.shape == (N, len(st["dims"]), len(shifts)) == want.p_y.shape
    assert (p_y - want.p_y).abs().max() <= 1e-5
    assert (pred == want.pred).double().mean() > 0.99  # an argmax tie at float32 rounding may flip, no more
    assert got["images"] == N * len(st["dims"]) * len(shifts)
    # not vacuous: the walks move p_y
    assert (want.p_y[:, :, -1] - want.p_y[:, :, 0]).abs().max() > 1e-2


# --- corners -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("step,max_shift,tol,refine", [(5.0, 100.0, 0.01, "secant"), (5.0, 100.0, 0.01, "bisection"),
                                                       (5.0, 23.0, 0.03, "secant")],
                         ids=["defaults", "bisection", "capped-unaligned"])
def test_corners_equal_the_python_search(setup, step, max_shift, tol, refine):
    """(5, 23, 0.03): the last bracket point is max_shift itself (20 → 23), and no bracket is a whole number
    of tol wide (the bisection grid hi − m·tol does not end on lo)."""
    st = setup
    out = st["folder"] / "corners.json"
    extra = [] if (step, max_shift, tol) == (5.0, 100.0, 0.01) else \
        ["--step", str(step), "--max-shift", str(max_shift), "--tol", str(tol)]
    extra += [] if refine == "secant" else ["--refine", refine]
    result = run("corners", *common_args(st, **{"--out": out}), *extra)
    assert result.returncode == 0, result.stderr
    got = json.loads(out.read_text())
    ranking = ranking_for(st["G"], st["dims"], st["sign"], st["sigma"])
    # backend="reference": every image synthesized from its full style vector, as the fused graph does
    cc = CornerCaseSearch(st["G"], st["C"], ranking, progress_bar=False, backend="reference").search(
        starts=st["s"], labels=st["y"], dims=st["dims"], pairs=False, verify=False, step=step,
        max_shift=max_shift, tol=tol, refine=refine)
    K = len(st["dims"])
    assert len(cc.cases) == N * K
    assert got["rounds"] == cc.rounds and got["images"] == cc.evaluations
    assert got["method"] == cc.method == f"batched-{refine}"
    np.testing.assert_allclose(got["p_start"], cc.p_start.numpy(), rtol=0, atol=1e-6)
    kinds = {"at_start": 0, "found": 0, "not_found": 0}
    for row in cc.cases:
        n, k = row.start, st["dims"].index(row.dims[0])
        where = f"start {n} dim {row.dims[0]}"
        assert got["found"][n][k] == row.found, where
        assert got["at_start"][n][k] == row.at_start, where
        assert got["evaluations"][n][k] == row.evaluations, where
        for key, want in (("shift", row.shift), ("shift_before", row.shift_before)):
            if want is None:
                assert got[key][n][k] is None, (where, key)
            else:
                assert abs(got[key][n][k] - want) <= 1e-9, (where, key, got[key][n][k], want)
        for key, want in (("p_at_shift", row.p_at_shift), ("p_before", row.p_before), ("p_last", row.p_last)):
            if want is None:
                assert got[key][n][k] is None, (where, key)
            else:
                assert abs(got[key][n][k] - want) <= 1e-6, (where, key, got[key][n][k], want)
        kinds["at_start" if row.at_start else "found" if row.found else "not_found"] += 1
    # not vacuous: rows of every kind
    assert all(v > 0 for v in kinds.values()), kinds


# --- bad input -----------------------------------------------------------------------------------------


class _Meta(nn.Module):
    """A TorchScript module with the fused graph's meta buffers but the wrong output."""

    def __init__(self, width: int, classes: int) -> None:
        super().__init__()
        self.register_buffer("meta_style_dim", torch.tensor(width, dtype=torch.int64))
        self.register_buffer("meta_num_classes", torch.tensor(classes, dtype=torch.int64))

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return s[:, :3]


class _NanLogits(_Meta):
    """A fused-graph look-alike whose logits are NaN (a broken model, or styles so large they overflow)."""

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return torch.full((s.shape[0], 10), float("nan")) + s[:, :1] * 0


@pytest.fixture(scope="module")
def bad_files(setup):
    st = setup
    folder, D = st["folder"], st["G"].style_dim
    s = st["s"].numpy()
    files = {}

    def save(name, array):
        files[name] = folder / f"{name}.npy"
        np.save(files[name], array)

    save("styles_f64", s.astype(np.float64))
    save("styles_1d", s[0])
    save("styles_fortran", np.asfortranarray(s))
    save("styles_big_endian", s.astype(">f4"))
    save("styles_narrow", s[:, :10])
    save("sigma_narrow", st["sigma"].numpy()[:10])
    save("sigma_negative", -st["sigma"].numpy())
    save("labels_i32", st["y"].numpy().astype(np.int32))
    save("labels_short", st["y"].numpy()[:-1].astype(np.int64))
    save("labels_range", np.full(N, 10, dtype=np.int64))
    save("styles_nan", np.where(np.arange(D) == 3, np.nan, s).astype(np.float32))
    files["a_folder"] = folder / "a_folder.npy"
    files["a_folder"].mkdir()
    files["not_npy"] = folder / "not_npy.npy"
    files["not_npy"].write_text("hello\n")
    files["truncated"] = folder / "truncated.npy"
    files["truncated"].write_bytes(st["paths"]["styles"].read_bytes()[:-7])
    files["corrupt_model"] = folder / "corrupt.pt"
    files["corrupt_model"].write_bytes(b"PK\x03\x04 not really a zip archive" * 10)
    files["no_meta"] = folder / "no_meta.pt"
    files["wrong_output"] = folder / "wrong_output.pt"
    with quiet_jit():
        torch.jit.script(nn.Linear(D, 10)).save(str(files["no_meta"]))
        torch.jit.script(_Meta(D, 10)).save(str(files["wrong_output"]))
        files["nan_model"] = folder / "nan_model.pt"
        torch.jit.script(_NanLogits(D, 10)).save(str(files["nan_model"]))
    files["state_dict"] = folder / "state_dict.pt"
    torch.save(st["C"].state_dict(), files["state_dict"])
    return files


BAD = {
    # name: (mode, option overrides, extra args, a phrase the message must contain)
    "missing model": ("walk", {"--model": "nowhere/fused.pt"}, [], "model not found"),
    "corrupt model": ("walk", {"--model": "@corrupt_model"}, [], "not a readable TorchScript archive"),
    "state_dict, not TorchScript": ("walk", {"--model": "@state_dict"}, [], "not a readable TorchScript archive"),
    "no meta buffers": ("walk", {"--model": "@no_meta"}, [], "not a failatlas fused graph"),
    "wrong model output": ("corners", {"--model": "@wrong_output"}, [], "returned logits of shape [6, 3]"),
    "style width": ("walk", {"--styles": "@styles_narrow", "--sigma": "@sigma_narrow", "--dims": "3",
                             "--sign": "1"}, [], "takes styles of width 272"),
    "style width, sigma of the model's": ("walk", {"--styles": "@styles_narrow", "--dims": "3", "--sign": "1"}, [],
                                          "takes styles of width 272"),
    "float64 styles": ("walk", {"--styles": "@styles_f64"}, [], "dtype '<f8', expected little-endian float32"),
    "big-endian styles": ("walk", {"--styles": "@styles_big_endian"}, [], "dtype '>f4'"),
    "1-D styles": ("walk", {"--styles": "@styles_1d"}, [], "expected [N, D]"),
    "fortran order": ("walk", {"--styles": "@styles_fortran"}, [], "Fortran order"),
    "not a .npy": ("walk", {"--styles": "@not_npy"}, [], "not a .npy file"),
    "truncated .npy": ("corners", {"--styles": "@truncated"}, [], "truncated or damaged"),
    "missing styles": ("walk", {"--styles": "nowhere/s.npy"}, [], "cannot open it"),
    "NaN styles": ("walk", {"--styles": "@styles_nan"}, [], "NaN"),
    "int32 labels": ("walk", {"--labels": "@labels_i32"}, [], "expected little-endian int64"),
    "labels count": ("walk", {"--labels": "@labels_short"}, [], "one int64 label per row"),
    "label range": ("corners", {"--labels": "@labels_range"}, [], "out of range for a model with 10 classes"),
    "sigma width": ("walk", {"--sigma": "@sigma_narrow"}, [], "one float32 sigma per style dimension"),
    "dim out of range": ("walk", {"--dims": "3,272", "--sign": "1,1"}, [], "dimension 272 is out of range"),
    "negative dim": ("corners", {"--dims": "-1", "--sign": "1"}, [], "dimension -1 is out of range"),
    "sign/dims count": ("walk", {"--sign": "1,-1"}, [], "--sign has 2 entries but --dims has 11"),
    "sign not ±1": ("corners", {"--dims": "3", "--sign": "0.5"}, [], "direction 1 or -1"),
    "sign not ±1, walk": ("walk", {"--dims": "3,4", "--sign": "0,2"}, [], "entry 0 is 0; each dimension is walked"),
    "negative sigma": ("walk", {"--sigma": "@sigma_negative"}, [], "contains a negative value"),
    "tol above its default step": ("corners", {}, ["--step", "0.001"], "--tol (0.01, its default) must not exceed"),
    "repeated dim": ("corners", {"--dims": "3,3", "--sign": "1,1"}, [], "listed twice"),
    "bad number": ("walk", {"--dims": "3,x", "--sign": "1,1"}, [], "'x' is not an integer"),
    "number beyond a double": ("corners", {}, ["--step", "1e400"], "'1e400' is out of the range of a double"),
    "missing shifts": ("walk", {}, [], "--shifts is required"),
    "walk option in corners": ("corners", {}, ["--shifts", "1"], "unknown option --shifts"),
    "NaN logits, walk": ("walk", {"--model": "@nan_model"}, [], "returned NaN or infinite logits"),
    "NaN logits, corners": ("corners", {"--model": "@nan_model"}, [], "returned NaN or infinite logits"),
    "too many brackets": ("corners", {}, ["--step", "1e-3", "--max-shift", "1e4", "--tol", "1e-3"],
                          "more than 1,000,000 bracket points"),
    "too fine a grid": ("corners", {}, ["--step", "1e12", "--max-shift", "1e12", "--tol", "1e-9"],
                        "1e12 grid points per step"),
    "tol above step": ("corners", {}, ["--step", "1", "--tol", "2"], "must not exceed --step"),
    "negative step": ("corners", {}, ["--step", "-5"], "--step must be a positive number"),
    "unknown refinement": ("corners", {}, ["--refine", "newton"], "--refine must be secant or bisection"),
    "out folder": ("walk", {"--out": "nowhere/result.json"}, [], "its folder does not exist"),
    "out is a folder": ("walk", {"--out": "@a_folder"}, [], "is a folder; give the name of the result file"),
    "styles is a folder": ("walk", {"--styles": "@a_folder"}, [], "not a regular file"),
    "unknown mode": ("stroll", {}, [], "unknown mode 'stroll'"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_input_exits_2_with_one_line(setup, bad_files, name):
    mode, override, extra, phrase = BAD[name]
    override = {k: (bad_files[v[1:]] if isinstance(v, str) and v.startswith("@") else v) for k, v in override.items()}
    if mode == "walk" and name != "missing shifts":
        extra = ["--shifts", "0,1", *extra]
    out = setup["folder"] / f"bad-{abs(hash(name))}.json"
    result = run(mode, *common_args(setup, **{"--out": out, **override}), *extra)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert len(lines) == 1 and lines[0].startswith("failatlas-eval: error: "), result.stderr
    assert phrase in lines[0], lines[0]
    assert not out.exists()


def test_usage_and_version():
    result = run("--help")
    assert result.returncode == 0 and "failatlas-eval walk" in result.stdout
    for argv in (("corners", "--help"), ("walk", "--dims", "3", "-h")):  # help after the mode too
        result = run(*argv)
        assert result.returncode == 0 and "failatlas-eval corners" in result.stdout, result.stderr
    result = run("--version")
    assert result.returncode == 0 and result.stdout.startswith("failatlas-eval ")
    result = run()
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1


def test_runs_without_python_in_the_environment(setup, tmp_path):
    """Only libtorch: no Python variables, no PATH, a fresh working folder."""
    st = setup
    out = tmp_path / "walk.json"
    result = subprocess.run([RUNNER, "walk", *common_args(st, **{"--out": out, "--dims": "3", "--sign": "1"}),
                             "--shifts", "0"], capture_output=True, text=True, timeout=300, env={}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert len(json.loads(out.read_text())["p_y"]) == N
