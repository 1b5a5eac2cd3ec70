"""Dataset summaries and preview grids, through the library and the ``data`` command."""

from __future__ import annotations

import json

import pytest
import torch

from failatlas.cli import main
from failatlas.data.datasets import load_dataset
from failatlas.data.preview import describe_dataset, write_preview
from failatlas.errors import FailatlasError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def small():
    return load_dataset("mnist", "test").subset(slice(0, 600))


def test_describe_counts(small):
    d = describe_dataset(small)
    assert d["num_samples"] == 600 and sum(d["per_class"].values()) == 600
    assert d["num_corrupted"] == int(small.corrupted.sum())
    assert len(d["cells"]) == 9 and sum(c["count"] for c in d["cells"]) == d["num_corrupted"]
    cell = next(c for c in d["cells"] if c["blur"] == 2 and c["noise"] == 3)
    assert cell["count"] == int(((small.blur == 2) & (small.noise == 3)).sum())
    json.dumps(d)


def test_write_preview_png_and_json(small, tmp_path):
    out = tmp_path / "sub" / "grid.png"
    data = write_preview(small, out)
    assert out.read_bytes()[:8] == PNG_MAGIC
    saved = json.loads(out.with_suffix(".json").read_text())
    assert saved == json.loads(json.dumps(data)) and saved["image"] == "grid.png"
    rows = saved["rows"]
    assert [r["row"] for r in rows][:2] == ["clean", "blur 1 / noise 1"] and len(rows) == 10
    for r in rows:
        idx = torch.tensor(r["indices"], dtype=torch.long)
        assert 0 < len(idx) <= 10
        assert (small.blur[idx] == r["blur"]).all() and (small.noise[idx] == r["noise"]).all()
        assert (small.corrupted[idx] == (r["blur"] > 0)).all()
    assert len(set(rows[0]["labels"])) == 10          # one digit of each class in the clean row
    assert sorted(p.name for p in out.parent.iterdir()) == ["grid.json", "grid.png"]   # no temp files left


def test_preview_needs_png_suffix(small, tmp_path):
    with pytest.raises(FailatlasError, match=r"\.png"):
        write_preview(small, tmp_path / "grid.json")


def test_cli_data_json_and_preview(tmp_path, capsys):
    out = tmp_path / "p.png"
    rc = main(["data", "--dataset", "mnist", "--split", "test", "--blur", "isotropic", "--seed", "2",
               "--preview", str(out), "--json"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["num_samples"] == 2000 and summary["blur_mode"] == "isotropic" and summary["seed"] == 2
    assert out.is_file() and out.with_suffix(".json").is_file()
    rc = main(["data", "--split", "test", "--corruption", "clean"])
    text = capsys.readouterr().out
    assert rc == 0 and "mnist10k (test): 2000 images" in text and "corrupted: 0 " in text


def test_preview_of_clean_set_has_empty_severity_rows(tmp_path):
    clean = load_dataset("mnist", "test", corruption="clean").subset(slice(0, 50))
    rows = write_preview(clean, tmp_path / "c.png")["rows"]
    assert len(rows[0]["indices"]) == 10 and all(r["indices"] == [] for r in rows[1:])


def test_preview_shows_every_class_up_to_the_column_cap(tmp_path):
    """With more than 10 classes the clean row still holds one image of each (it held classes 0..9 only)."""
    import numpy as np

    from failatlas.data.datasets import make_imageset
    from failatlas.data.preview import MAX_COLUMNS

    rng = np.random.default_rng(0)
    for classes, columns in ((12, 12), (MAX_COLUMNS + 5, MAX_COLUMNS)):
        labels = np.arange(3 * classes) % classes
        data = make_imageset(rng.integers(0, 256, (len(labels), 28, 28), dtype=np.uint8), labels, name="many",
                             corruption="clean")
        got = write_preview(data, tmp_path / f"p{classes}.png")
        assert got["columns"] == columns and got["rows"][0]["labels"] == [str(c) for c in range(columns)]


def test_named_classes_are_listed_with_the_index_that_classes_options_take(capsys):
    from failatlas.data.datasets import make_imageset
    from failatlas.data.preview import format_description

    named = make_imageset(torch.zeros(4, 28, 28, dtype=torch.uint8).numpy(), [0, 1, 1, 2], name="f",
                          class_names=("Coat", "Bag", "Shirt"), corruption="clean")
    assert "per class: 0 Coat=1, 1 Bag=2, 2 Shirt=1" in format_description(describe_dataset(named))
    twice = make_imageset(torch.zeros(4, 28, 28, dtype=torch.uint8).numpy(), [0, 1, 2, 2], name="f",
                          class_names=("x", "x", "y"), corruption="clean")  # a name shared by two classes
    assert "per class: 0 x=1, 1 x=1, 2 y=2" in format_description(describe_dataset(twice))
    digits = load_dataset("mnist", "test", corruption="clean")
    assert "per class: 0=200, 1=225," in format_description(describe_dataset(digits))
    # and --classes refuses a name with the pointer to those indices, in one argparse line
    with pytest.raises(SystemExit):
        main(["rank", "--classes", "Trouser", "--out", "x"])
    err = capsys.readouterr().err
    assert "--classes takes class indices, whole numbers 0, 1, …, not names: got 'Trouser'" in err
