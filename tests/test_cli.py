"""The command line as a whole: help texts, unknown options, output paths checked before any work, and
errors from the file system as one line."""

import argparse

import pytest

from failatlas import cli


def _subcommands():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices


@pytest.mark.parametrize("name", sorted(_subcommands()))
def test_help_states_each_default_once_and_never_none(name, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main([name, "--help"])
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: None)" not in text and "(default: False)" not in text
    for chunk in text.split(" --")[1:]:  # one option's help each
        assert chunk.lower().count("default") <= 1 or "(default:" not in chunk, chunk


def test_unknown_option_is_reported_with_the_subcommands_usage(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["data", "--root", "/tmp/x"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "usage: failatlas data" in err and "unrecognized arguments: --root /tmp/x" in err


def _a_file(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    return blocker


@pytest.mark.parametrize("argv", [
    ["rank", "--n", "64", "--out", "{f}/sub"],
    ["analyze", "--quick", "--n", "64", "--out", "{f}/sub"],
    ["compare", "--classifier", "mnist/classifier-clean", "--classifier", "mnist/classifier-corrupted",
     "--out", "{f}/sub"],
    ["export", "--out", "{f}/sub"],
    ["train-gan", "--config", "tiny", "--kimg", "0.01", "--out", "{f}/sub"],
    ["demo", "--out", "{f}"],
    ["demo", "--out", "{f}/sub"],
    ["data", "--preview", "{f}/p.png"],
])
def test_an_output_path_through_a_file_is_one_error_before_any_work(argv, tmp_path, capsys):
    blocker = _a_file(tmp_path)
    argv = [a.format(f=blocker) for a in argv]
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith("failatlas: error:") and "\n" not in err and str(blocker) in err
    assert captured.out == ""  # refused before any work: the demo printed no table
    assert blocker.read_text() == "x" and sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_train_gan_refuses_negative_threads(tmp_path, capsys):
    assert cli.main(["train-gan", "--config", "tiny", "--threads", "-2", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "--threads must be between 1 and 4096" in err and not (tmp_path / "run").exists()


def test_models_passed_in_each_others_place_are_named(capsys):
    assert cli.main(["eval-classifier", "--model", "mnist/generator"]) == 2
    assert "holds a generator, not a classifier" in capsys.readouterr().err
    assert cli.main(["eval-gan", "--generator", "mnist/classifier-clean", "--n", "10"]) == 2
    assert "holds a classifier, not a generator" in capsys.readouterr().err


def test_a_file_system_error_is_one_line(monkeypatch, capsys):
    import failatlas.data.preview as preview

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device", "/some/out.png")

    monkeypatch.setattr(preview, "summarize_dataset", full_disk)
    assert cli.main(["data"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("failatlas: error:") and "No space left on device" in err and "\n" not in err


def test_demo_checks_its_analysis_folder_before_the_table(tmp_path, capsys):
    (tmp_path / "analysis").write_text("x")
    assert cli.main(["demo", "--out", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert "analysis" in captured.err and captured.out == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["analysis"]


@pytest.mark.parametrize("argv", [
    ["rank", "--n", "64"],
    ["compare", "--classifier", "mnist/classifier-clean", "--classifier", "mnist/classifier-corrupted", "--n", "64"],
    ["train-gan", "--config", "tiny", "--kimg", "0.01"],
])
def test_commands_that_add_files_refuse_an_analyze_run_folder(argv, tmp_path, capsys):
    """rank once replaced an analyze run's population, ranking and separation files without a word, and
    verify then found the run changed: a folder sealed by a manifest.json is refused before any work."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text('{"format": "failatlas-analysis-manifest"}')
    (run / "ranking.csv").write_text("the run's")
    assert cli.main([*argv, "--out", str(run)]) == 2
    captured = capsys.readouterr()
    assert captured.err.strip() == (f"failatlas: error: --out {run} is an analyze run folder (its manifest.json "
                                    "seals the files in it): writing into it would change the run, and failatlas "
                                    "verify would say so; choose another folder")
    assert sorted(p.name for p in run.iterdir()) == ["manifest.json", "ranking.csv"]
    assert (run / "ranking.csv").read_text() == "the run's"


def test_the_default_classifier_is_named_when_its_classes_do_not_match(tmp_path, capsys):
    """A generator of one's own data with the default (shipped MNIST) classifier: the message says which
    classifier was taken and how to pass another (it once said only 'the classifier has 10 classes')."""
    import dataclasses

    from failatlas.models.stylegan2 import Generator, get_config, save_generator

    save_generator(Generator(dataclasses.replace(get_config("tiny"), num_classes=3)), tmp_path / "g3")
    assert cli.main(["rank", "--generator", str(tmp_path / "g3"), "--n", "64", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert ("the classifier mnist/classifier-corrupted (rank's default; --classifier names another) has 10 classes "
            "but the generator has 3") in err
    assert cli.main(["analyze", "--generator", str(tmp_path / "g3"), "--quick", "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "has 10 classes but generator g3" in err and err.rstrip().endswith(
        "(without --classifier analyze takes the shipped MNIST classifiers: pass --classifier with one trained on "
        "the generator's 3 classes)")
    assert not (tmp_path / "r").exists() and not (tmp_path / "a").exists()


def test_an_impossible_population_size_is_refused_before_the_first_stage(tmp_path, capsys):
    assert cli.main(["rank", "--n", "0", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.strip() == ("failatlas: error: the population size must be a positive integer, got 0 "
                           "(use e.g. --n 10000)")  # no "[1/4] population (0 samples …)" line before it
    assert not (tmp_path / "r").exists()


def test_another_programs_manifest_does_not_make_a_run_folder(tmp_path):
    from failatlas import _io

    for content in ('{"name": "my web app"}', "{not json", '["failatlas-analysis-manifest"]'):
        (tmp_path / "manifest.json").write_text(content)
        assert not _io.is_run_folder(tmp_path) and _io.check_out_folder(tmp_path) == tmp_path
    (tmp_path / "manifest.json").write_text('{"format": "failatlas-analysis-manifest"}')
    assert _io.is_run_folder(tmp_path)


def test_a_dangling_link_as_out_is_refused_before_any_work(tmp_path, capsys):
    link = tmp_path / "out"
    link.symlink_to(tmp_path / "gone")
    assert cli.main(["rank", "--n", "64", "--out", str(link)]) == 2
    assert "link to nothing" in capsys.readouterr().err and not (tmp_path / "gone").exists()


def test_devices_each_command_takes(one_error):
    from failatlas._device import resolve_device
    from failatlas.training.classifier import CLASSIFIER_DEVICES

    one_error(lambda: resolve_device("mps"), "only cpu and cuda")  # the GAN commands
    import torch

    if not torch.backends.mps.is_available():
        one_error(lambda: resolve_device("mps", CLASSIFIER_DEVICES), "no MPS device")


def test_a_mistyped_classifier_folder_is_reported_as_missing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["eval-classifier", "--model", "runs/typo"]) == 2
    assert "classifier folder not found: runs/typo" in capsys.readouterr().err


@pytest.mark.parametrize("seed", ["-1", "4294967296", "18446744073709551616", "1.5", "x"])
def test_seeds_outside_what_every_library_takes_are_refused_up_front(seed, tmp_path, capsys):
    for command in ("rank", "analyze", "export"):
        with pytest.raises(SystemExit) as info:
            cli.main([command, "--seed", seed, "--out", str(tmp_path / command)])
        err = capsys.readouterr().err
        assert info.value.code == 2 and "argument --seed" in err and "Traceback" not in err
        assert "between 0 and 4294967295" in err or "whole number" in err
        assert not (tmp_path / command).exists()
    assert cli._seed("4294967295") == 2**32 - 1 and cli._seed("0") == 0


@pytest.mark.parametrize("k", ["0", "-3", "2000"])
def test_compare_k_is_checked_before_any_work(k, tmp_path, capsys):
    rc = cli.main(["compare", "--classifier", "mnist/classifier-corrupted", "--classifier", "mnist/classifier-clean",
                   "--k", k, "--n", "20", "--out", str(tmp_path / "cmp")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--k must be a number of dimensions between 1 and" in err[0], err
    assert not (tmp_path / "cmp").exists() or not any((tmp_path / "cmp").iterdir())


def test_rank_bootstrap_is_checked_before_any_work(tmp_path, capsys):
    rc = cli.main(["rank", "--bootstrap", "-1", "--n", "20", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--bootstrap must be a non-negative" in err[0], err
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())


def test_export_int8_options_without_int8_are_refused(tmp_path, capsys):
    for extra in (["--calibration", "5"], ["--dataset", "mnist"], ["--idx-dir", "data"]):
        rc = cli.main(["export", *extra, "--out", str(tmp_path / "e")])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and err[0].startswith("failatlas: error: ") and "add --int8" in err[0]
        assert not (tmp_path / "e").exists()


@pytest.mark.parametrize("command, name", [("rank", "ranking.csv"), ("compare", "report.html")])
def test_a_folder_where_a_result_file_goes_is_refused_up_front(command, name, tmp_path, capsys):
    out = tmp_path / "out"
    (out / name).mkdir(parents=True)
    argv = [command, "--n", "20", "--out", str(out)]
    if command == "compare":
        argv += ["--classifier", "mnist/classifier-corrupted", "--classifier", "mnist/classifier-clean"]
    rc = cli.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and f"holds a folder named {name}" in err[0], err
    assert [p.name for p in out.iterdir()] == [name]


def test_an_option_that_takes_one_value_given_twice_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["rank", "--classifier", "mnist/classifier-clean", "--classifier=mnist/classifier-corrupted",
                  "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "--classifier is given twice; it takes one value" in err
    assert not (tmp_path / "r").exists()
    with pytest.raises(SystemExit):  # argparse takes unambiguous prefixes: so does the check
        cli.main(["rank", "--classifier", "A", "--classif", "B", "--out", str(tmp_path / "r")])
    assert "--classifier is given twice" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["analyze", "--n", "5", "--n", "6", "--out", str(tmp_path / "a")])
    assert "--n is given twice" in capsys.readouterr().err
    # collecting options may repeat: compare's --classifier (checked past parsing: it fails on --k)
    rc = cli.main(["compare", "--classifier", "a", "--classifier", "b", "--k", "0", "--out", str(tmp_path / "c")])
    assert rc == 2 and "given twice" not in capsys.readouterr().err


def test_a_reader_that_closes_the_pipe_ends_the_command_quietly(tmp_path):
    """`failatlas data --json | head -1`: the reader goes away before the output is written; no error line
    and no traceback, exit status 141 as for a process that SIGPIPE ended."""
    import subprocess
    import sys

    code = ("import sys\n"
            "class Closed:\n"
            "    def write(self, s): raise BrokenPipeError(32, 'Broken pipe')\n"
            "    def flush(self): pass\n"
            "    def fileno(self): return sys.__stdout__.fileno()\n"
            "sys.stdout = Closed()\n"
            "from failatlas.cli import main\n"
            "sys.exit(main(['data', '--json']))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 141 and result.stderr == "", result.stderr


@pytest.mark.parametrize("existing", [False, True])
def test_a_file_system_that_refuses_new_entries_is_named_before_any_work(existing, tmp_path, monkeypatch, capsys):
    """Permissions can say yes where the file system says no (a read-only mount, /proc as root): the folder
    is probed by creating an entry in it, and the error names --out, not a staging folder."""
    import tempfile

    out = tmp_path / "run"
    if existing:
        out.mkdir()

    def refuse(*args, **kwargs):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkdtemp", refuse)
    assert cli.main(["rank", "--n", "50", "--out", str(out)]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith(f"failatlas: error: --out {out}: nothing can be created in") and "Read-only" in err
    assert "\n" not in err and "population" not in captured.err and captured.out == ""


def test_another_processs_probe_does_not_make_an_empty_out_non_empty(tmp_path, monkeypatch):
    """torchrun ranks check --out at the same moment: one rank's probe folder is not content."""
    import os

    from failatlas import _io
    from failatlas.errors import FailatlasError

    out = tmp_path / "run"
    (out / f"{_io.PROBE_PREFIX}other-rank").mkdir(parents=True)
    assert _io.check_out_folder(out, overwrite=False) == out
    (out / "result.json").write_text("{}")
    with pytest.raises(FailatlasError, match="exists and is not empty"):
        _io.check_out_folder(out, overwrite=False)

    def cannot_remove(path):
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(os, "rmdir", cannot_remove)
    with pytest.raises(FailatlasError, match="can be created in .* but not removed or replaced"):
        _io.check_out_folder(tmp_path / "fresh")


def test_version_prints_the_source_digest_that_run_records_hold(capsys, monkeypatch):
    """`failatlas --version` on one line with the digest a manifest's versions record (failatlas_source_sha256),
    so an installation can be checked against a run folder; a narrow terminal does not wrap it."""
    from failatlas import __version__, _provenance

    monkeypatch.setenv("COLUMNS", "40")
    with pytest.raises(SystemExit) as info:
        cli.main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == (f"failatlas {__version__} (source sha256 {_provenance.source_sha256()}, "
                                       f"native source sha256 {_provenance.native_source_sha256()})\n")
