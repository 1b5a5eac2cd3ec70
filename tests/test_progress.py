import pytest

from failatlas._progress import Stages


def test_stages_announce_time_and_skip(capsys):
    stage = Stages("rank", ("one", "two", "three"))
    with stage("one", "detail"):
        pass
    stage.skip("two", "--no-two")
    with pytest.raises(KeyError):
        with stage("three"):
            raise KeyError("x")
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "failatlas rank: [1/3] one (detail) …"
    assert err[1].startswith("failatlas rank: [1/3] one done in ") and "elapsed" in err[1]
    assert err[2] == "failatlas rank: [2/3] two skipped (--no-two)"
    assert err[3] == "failatlas rank: [3/3] three …" and len(err) == 4  # a failed stage is not "done"
    assert list(stage.timings) == ["one"] and stage.timings["one"] >= 0


def test_stages_silent_still_time(capsys):
    stage = Stages("compare", ("a",), verbose=False)
    with stage("a"):
        pass
    assert capsys.readouterr().err == "" and "a" in stage.timings
    with pytest.raises(ValueError):  # an unknown stage is a programming error, caught by the tests
        with stage("b"):
            pass


def test_a_later_stages_object_counts_elapsed_time_from_the_command_start(capsys):
    import re
    import time

    late = Stages("compare", ("a", "x"), start=time.perf_counter() - 100)  # made after the command began
    with late("x"):
        pass
    err = capsys.readouterr().err
    assert "failatlas compare: [2/2] x done in " in err and float(re.search(r"elapsed ([\d.]+) s", err).group(1)) >= 100
