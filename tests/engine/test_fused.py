"""The fused graph s → synthesis → adapter → classifier → logits: eager, TorchScript and torch.export."""

from __future__ import annotations

import warnings

import pytest
import torch

from failatlas import _torchscript
from failatlas.engine.fused import (FusedGraph, FusedModel, export_program, export_torchscript,
                                    load_fused)
from failatlas.errors import FailatlasError
from failatlas.models.adapter import classifier_view
from failatlas.models.classifier import PaperCNN

BATCHES = (1, 3, 17)  # the exports trace/export at batch 5
TOL = 1e-5


@pytest.fixture(scope="module")
def classifier():
    torch.manual_seed(1)
    model = PaperCNN().eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so eval-mode BN is visible in the logits
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    return model


@pytest.fixture(scope="module")
def exported(tiny_generator, classifier, tmp_path_factory):
    """Both files written and loaded once, with every warning raised on the way recorded."""
    folder = tmp_path_factory.mktemp("fused")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ts_path = export_torchscript(tiny_generator, classifier, folder / "fused.pt")
        ep_path = export_program(tiny_generator, classifier, folder / "fused.pt2")
        graphs = {"torchscript": load_fused(ts_path), "export": load_fused(ep_path)}
        s = torch.randn(3, tiny_generator.style_dim)
        for graph in graphs.values():
            graph(s)
    return {"ts_path": ts_path, "ep_path": ep_path, "graphs": graphs, "warnings": list(caught)}



def test_eager_is_the_composition(tiny_generator, classifier, real_styles):
    fused = FusedModel(tiny_generator, classifier)
    s = real_styles(tiny_generator, 4, seed=0)
    with torch.no_grad():
        want = classifier(classifier_view(tiny_generator.synthesis_from_styles(s, "const")))
        got = fused(s)
    assert got.shape == (4, 10) and got.dtype == torch.float32
    assert torch.equal(got, want)
    assert (fused.style_dim, fused.num_classes) == (tiny_generator.style_dim, 10)
    assert not fused.training and all(not m.training for m in fused.modules())
    assert not any(p.requires_grad for p in fused.parameters())
    fused.train()
    assert not any(m.training for m in fused.modules())
    # copies: the caller's models keep their own state
    assert fused.synthesis is not tiny_generator.synthesis_network and fused.classifier is not classifier
    assert any(p.requires_grad for p in classifier.parameters())


@pytest.mark.parametrize("n", BATCHES)
def test_eager_torchscript_export_agree(tiny_generator, classifier, exported, n, real_styles):
    fused = FusedModel(tiny_generator, classifier)
    s = real_styles(tiny_generator, n, seed=n)
    with torch.no_grad():
        want = fused(s)
        for name, graph in exported["graphs"].items():
            got = graph(s)
            assert got.shape == (n, 10), name
            assert (got - want).abs().max().item() <= TOL, name


def test_round_trip_metadata(tiny_generator, exported, real_styles):
    for fmt, graph in exported["graphs"].items():
        assert isinstance(graph, FusedGraph) and graph.format == fmt
        assert (graph.style_dim, graph.num_classes) == (tiny_generator.style_dim, 10)
    # reloading gives the same numbers
    again = load_fused(exported["ts_path"])
    s = real_styles(tiny_generator, 2, seed=7)
    assert torch.equal(again(s), exported["graphs"]["torchscript"](s))
    # the .pt2 also loads with plain torch.export
    plain = torch.export.load(str(exported["ep_path"])).module()
    assert torch.equal(plain(s), exported["graphs"]["export"](s))


def test_no_jit_warnings_escape(exported):
    noisy = [str(w.message) for w in exported["warnings"]
             if issubclass(w.category, (DeprecationWarning, FutureWarning))
             and any(k in str(w.message).lower() for k in ("jit", "torchscript"))]
    assert noisy == []


def test_missing_file(tmp_path):
    for name in ("nope.pt", "nope.pt2"):
        with pytest.raises(FailatlasError, match="not found.*nope"):
            load_fused(tmp_path / name)


@pytest.mark.parametrize("name", ["garbage.pt", "garbage.pt2"])
def test_garbage_file(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"this is not a model\x00\x01" * 50)
    with pytest.raises(FailatlasError, match="garbage"):
        load_fused(path)


@pytest.mark.parametrize("which", ["ts_path", "ep_path"])
def test_truncated_file(tmp_path, exported, which):
    data = exported[which].read_bytes()
    path = tmp_path / exported[which].name
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(FailatlasError, match=str(path.name)):
        load_fused(path)


class _Marker:
    """Unpickling this creates a file: proof that pickled code ran."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _rewrite_pt2(src, dst, edit):
    """A copy of the .pt2 archive src with edit(name, data) → data applied to every entry."""
    import zipfile

    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            zout.writestr(info, edit(info.filename, zin.read(info.filename)))
    return dst


@pytest.mark.parametrize("where", ["weight", "sample_inputs"])
def test_a_pt2_with_pickled_objects_is_refused_without_running_them(tmp_path, exported, where):
    """torch.export.load unpickles a weight marked use_pickle, and sample inputs (falling back to
    weights_only=False): a crafted file could run code. load_fused refuses it, and nothing runs."""
    import io
    import json

    marker = tmp_path / "ran"
    buf = io.BytesIO()
    torch.save(_Marker(marker), buf)

    def edit(name, data):
        if where == "weight" and name.endswith("weights/model_weights_config.json"):
            config = json.loads(data)
            first = next(iter(config["config"]))
            config["config"][first]["use_pickle"] = True
            return json.dumps(config).encode()
        if where == "weight" and name.endswith("weights/weight_0"):
            return buf.getvalue()
        if where == "sample_inputs" and "/sample_inputs/" in name:
            return buf.getvalue()
        return data

    path = _rewrite_pt2(exported["ep_path"], tmp_path / "evil.pt2", edit)
    with pytest.raises(FailatlasError, match="holds pickled Python objects"):
        load_fused(path)
    assert not marker.exists()
    assert load_fused(exported["ep_path"]).format == "export"  # the archive torch writes passes the scan


def test_a_pt2_with_the_older_formats_files_is_refused_without_unpickling_them(tmp_path, exported):
    """torch.export.load falls back to the 2.7 archive format when the current reader fails (top-level entries
    make it fail), and that loader unpickles serialized_state_dict.pt with weights_only=False."""
    import io
    import zipfile

    marker = tmp_path / "ran"
    buf = io.BytesIO()
    torch.save({"a": _Marker(marker)}, buf)
    path = tmp_path / "legacy.pt2"
    with zipfile.ZipFile(exported["ep_path"]) as zin, zipfile.ZipFile(path, "w") as zout:
        for info in zin.infolist():
            zout.writestr(info, zin.read(info.filename))
        zout.writestr("version", "8.0")
        zout.writestr("serialized_exported_program.json", b"{}")
        zout.writestr("serialized_state_dict.pt", buf.getvalue())
    with pytest.raises(FailatlasError, match="holds pickled Python objects or compiled code.*outside"):
        load_fused(path)
    assert not marker.exists()


def _with_entry(exported, path, rel, data):
    """A copy of the exported .pt2 at ``path`` with one more entry ``rel`` (relative to its root folder)."""
    import zipfile

    path = _rewrite_pt2(exported["ep_path"], path, lambda name, data: data)
    with zipfile.ZipFile(path, "a") as z:
        root = z.namelist()[0].split("/", 1)[0]
        z.writestr(f"{root}/{rel}", data)
    return path


def test_a_pt2_with_a_compiled_library_is_refused(tmp_path, exported):
    """An AOTInductor entry would be dlopen-ed (its constructors run) by torch's loader."""
    path = _with_entry(exported, tmp_path / "aoti.pt2", "data/aotinductor/model/model.wrapper.so",
                       b"\x7fELF not really")
    with pytest.raises(FailatlasError, match="unexpected entry data/aotinductor/"):
        load_fused(path)


def test_a_pt2_with_a_pickled_weights_file_or_a_twin_entry_is_refused(tmp_path, exported):
    """torch's reader prefers data/weights/model.pt (unpickled, weights_only falling back to False) to the raw
    weight files; and of two entries with one name it reads the first where Python's zipfile reads the last."""
    import io
    import json
    import zipfile

    marker = tmp_path / "ran"
    buf = io.BytesIO()
    torch.save({"w": _Marker(marker)}, buf)
    with zipfile.ZipFile(exported["ep_path"]) as z:
        root = z.namelist()[0].split("/", 1)[0]
        config_name = f"{root}/data/weights/model_weights_config.json"
        config = json.loads(z.read(config_name))
    path = _rewrite_pt2(exported["ep_path"], tmp_path / "pt-weights.pt2", lambda name, data: data)
    with zipfile.ZipFile(path, "a") as z:
        z.writestr(f"{root}/data/weights/model.pt", buf.getvalue())
    with pytest.raises(FailatlasError, match="unexpected entry data/weights/model.pt"):
        load_fused(path)
    first = next(iter(config["config"]))
    evil = json.loads(json.dumps(config))
    evil["config"][first]["use_pickle"] = True
    path = tmp_path / "twin.pt2"
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name it is asked to write
        with zipfile.ZipFile(exported["ep_path"]) as zin, zipfile.ZipFile(path, "w") as zout:
            for info in zin.infolist():
                if info.filename == config_name:
                    zout.writestr(info.filename, json.dumps(evil))  # the one torch would read
                zout.writestr(info, zin.read(info.filename))
    with pytest.raises(FailatlasError, match="entries with the same name"):
        load_fused(path)
    assert not marker.exists()


def test_a_pt2_with_a_binary_extra_file_is_named(tmp_path, exported):
    """torch.export.save writes extra files as text; a binary one (a pickle, say) gets a message that names it."""
    import pickle

    path = _with_entry(exported, tmp_path / "binary-extra.pt2", "extra/notes.pkl", pickle.dumps({"a": 1}))
    with pytest.raises(FailatlasError, match="the extra file extra/notes.pkl is not text"):
        load_fused(path)


def test_not_a_fused_graph(tmp_path):
    path = tmp_path / "linear.pt"
    _torchscript.save(_torchscript.trace(torch.nn.Linear(3, 2).eval(), (torch.randn(2, 3),)), path)
    with pytest.raises(FailatlasError, match="not a failatlas fused graph"):
        load_fused(path)


def test_wrong_width(tiny_generator, exported):
    d = tiny_generator.style_dim
    for graph in exported["graphs"].values():
        for bad in (torch.randn(2, d + 1), torch.randn(2, d - 16), torch.randn(d)):
            with pytest.raises(FailatlasError, match=rf"expects styles of shape \[N, {d}\]"):
                graph(bad)


def test_bad_export_arguments(tiny_generator, classifier, tmp_path):
    with pytest.raises(FailatlasError, match="fused.pt2"):
        export_torchscript(tiny_generator, classifier, tmp_path / "fused.pt2")
    with pytest.raises(FailatlasError, match="fused.pt2"):
        export_program(tiny_generator, classifier, tmp_path / "fused.onnx")
    with pytest.raises(FailatlasError, match="deterministic"):
        export_torchscript(tiny_generator, classifier, tmp_path / "fused.pt", noise_mode="random")
    with pytest.raises(FailatlasError, match="must end in"):
        load_fused(tmp_path / "fused.onnx")
    assert list(tmp_path.iterdir()) == []


def test_shipped_models_torchscript(repo_root, tmp_path, real_styles):
    """The shipped generator (style layers without per-sample noise gain) and classifier, traced at
    batch 5 and run at batch 3."""
    import failatlas
    from failatlas.models.classifier import load_classifier

    G = failatlas.load_generator(repo_root / "models/mnist/generator")
    C = load_classifier(repo_root / "models/mnist/classifier-clean")
    graph = load_fused(export_torchscript(G, C, tmp_path / "shipped.pt"))
    s = real_styles(G, 3, seed=3)
    with torch.no_grad():
        want = C(classifier_view(G.synthesis_from_styles(s, "const")))
        assert (graph(s) - want).abs().max().item() <= TOL
    assert graph.style_dim == G.style_dim
