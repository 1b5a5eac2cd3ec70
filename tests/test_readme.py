"""The README's Python API example runs as written (from another working directory, on the shipped models)."""

import re

import pytest
import torch


def test_readme_python_api_example_runs(repo_root, tmp_path, monkeypatch):
    text = (repo_root / "README.md").read_text(encoding="utf-8")
    section = text.split("## Python API", 1)[1]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert blocks, "the README's Python API section has no python block"
    monkeypatch.chdir(tmp_path)  # shipped models by name work from anywhere; files land in tmp_path
    scope: dict = {}
    exec(compile(blocks[0], "README.md (Python API)", "exec"), scope)

    G, s, N = scope["G"], scope["s"], scope["s"].shape[0]
    K, M = scope["dims"].numel(), scope["shifts"].numel()
    assert scope["img"].shape == (N, 1, 32, 32)
    assert scope["walked"].shape == (N, K, M, G.style_dim)
    assert scope["res"].p_y.shape == (N, K, M)
    assert scope["logits"].shape == (len(scope["test"]), 10)
    assert (tmp_path / "fused.pt").is_file() and (tmp_path / "classifier.onnx").is_file()
    # the ONNX classifier agrees with the torch one it was exported from
    x = scope["test"].classifier_input()[:64]
    with torch.no_grad():
        assert (scope["C_onnx"](x).argmax(1) == scope["C"](x).argmax(1)).all()


def test_loaders_take_shipped_names_and_report_missing_folders(tmp_path, monkeypatch):
    import failatlas

    monkeypatch.chdir(tmp_path)
    assert failatlas.load_classifier("mnist/classifier-clean").config.num_classes == 10
    with pytest.raises(failatlas.FailatlasError, match="generator folder not found: no/such"):
        failatlas.load_generator("no/such")


def test_readme_wrapper_example_saves_a_classifier_failatlas_loads(repo_root, tmp_path, monkeypatch):
    """The 'Your own classifier' wrapper, run as written around a model that expects normalized input."""
    from failatlas.deploy import load_any_classifier
    from failatlas.models.classifier import ClassifierConfig, build_classifier

    text = (repo_root / "README.md").read_text(encoding="utf-8")
    section = text.split("## Your own classifier", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    model = build_classifier(ClassifierConfig()).eval()
    scope: dict = {"model": model}
    exec(compile(blocks[0], "README.md (Your own classifier)", "exec"), scope)
    loaded = load_any_classifier(tmp_path / "model.pt2", expected_classes=10)
    x = torch.rand(5, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(loaded(x), model((x - 0.1307) / 0.3081), atol=1e-5)


def test_readme_run_folder_example_runs(repo_root, tmp_path, monkeypatch):
    """'Working from a run folder', run as written on a run folder of the shipped models (a small one)."""
    import failatlas
    from failatlas import _io
    from failatlas.analysis import AccuracyCurve, CornerCaseSearch, GradientRanking, sample_population
    from failatlas.analysis.curves import CURVES_FORMAT

    text = (repo_root / "README.md").read_text(encoding="utf-8")
    section = text.split("**Working from a run folder.**", 1)[1]
    block = re.findall(r"```python\n(.*?)```", section, flags=re.S)[0]
    G = failatlas.load_generator("mnist/generator")
    C = failatlas.load_classifier("mnist/classifier-clean")  # misses enough of 200 samples for every figure
    pop = sample_population(G, C, 200, seed=0)
    run = tmp_path / "runs" / "analyze"
    run.mkdir(parents=True)
    pop.to_npz(run / "population.npz")
    ranking = GradientRanking(G, C).rank(pop)
    _io.write_json(run / "ranking.json", ranking.to_json())
    curve = AccuracyCurve(ranking).compute(pop)  # curves.json and corner_cases.json as analyze writes them
    _io.write_json(run / "curves.json", _io.jsonable({"format": CURVES_FORMAT, "k": 100, "primary": "clean",
                                                     "classifiers": {"clean": curve.to_json()}}))
    corners = CornerCaseSearch(G, C, ranking).search(pop, dims=1, classes=[0, 1], pairs=False)
    _io.write_json(run / "corner_cases.json", _io.jsonable(corners.to_json()))
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(block, "README.md (Working from a run folder)", "exec"), scope)
    assert scope["curve"].k == 50 and scope["sep"].style_dim == G.style_dim
    assert (tmp_path / "separation-again.png").is_file() and (tmp_path / "separation-again.json").is_file()
    assert list(scope["curves"]) == ["clean"] and torch.equal(scope["curves"]["clean"].distance, curve.distance)
    assert scope["corners"].rows == corners.rows
    assert (tmp_path / "curves-again.png").is_file() and (tmp_path / "curves-again.json").is_file()
