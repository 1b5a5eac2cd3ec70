import csv
import json

import pytest
import torch

from failatlas import demo
from failatlas.cli import main
from failatlas.models.classifier import ClassifierConfig, build_classifier, save_classifier


@pytest.fixture
def fake_shipped(tmp_path, monkeypatch):
    """Two untrained classifiers stand in for the shipped ones."""
    folders = {}
    for i, name in enumerate(demo.SHIPPED_CLASSIFIERS):
        torch.manual_seed(i)
        folders[name] = tmp_path / name
        save_classifier(build_classifier(ClassifierConfig()), ClassifierConfig(), folders[name])
    monkeypatch.setattr(demo, "shipped_model", lambda name: folders[name])
    return folders


def test_demo_table_json_and_csv(fake_shipped, tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "out"), "--no-analysis"]) == 0
    text = capsys.readouterr().out
    assert "classifier-clean" in text and "classifier-corrupted" in text and "b3n3" in text
    results = json.loads((tmp_path / "out" / "classifiers.json").read_text())
    assert set(results) == {"classifier-clean", "classifier-corrupted"}
    r = results["classifier-clean"]
    assert r["clean"]["n"] == r["corrupted"]["n"] == 2000
    assert len(r["corrupted"]["by_severity"]) == 10
    rows = list(csv.DictReader(open(tmp_path / "out" / "classifiers.csv")))
    assert len(rows) == 2 * (2 + 1 + 10)  # per model: clean (all + clean cell), corrupted (all + 10 cells)
    row = next(x for x in rows if x["classifier"] == "classifier-clean" and x["split"] == "clean" and x["cell"] == "all")
    assert float(row["accuracy"]) == pytest.approx(r["clean"]["accuracy"])
    # the table's numbers are the results'
    line = next(l for l in text.splitlines() if l.startswith("classifier-corrupted"))
    assert f"{results['classifier-corrupted']['corrupted']['accuracy']:.4f}" in line
    # each cell's count is printed under it, and the mix's clean half is named
    n_line = next(l for l in text.splitlines() if l.startswith("n "))
    by = results["classifier-corrupted"]["corrupted"]["by_severity"]
    assert n_line.split()[1:] == ["2000", "2000", *(str(by[c]["n"]) for c in by if c != "clean")]
    assert f"({by['clean']['n']} of its digits left clean" in text
