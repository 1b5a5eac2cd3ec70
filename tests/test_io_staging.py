"""_io.staged_files: files written into a staging folder arrive together, and the staging folder never stays
behind, even when a SIGTERM (kill) arrives while they are moved in (it ends the process once they are).
Temporaries left by a process killed with kill -9 are removed by the next writer of the same target, and
only those: never a running process's, another host's, or one named by an older failatlas; analyze's run
moved aside by a killed --overwrite is never lost."""

import json
import os
import shlex
import signal
import subprocess
import sys
import textwrap

import pytest

from failatlas import _io
from failatlas.errors import FailatlasError


def _ended_pid() -> int:
    """The pid of a process that has ended (a short subprocess, waited for)."""
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    return done.pid


@pytest.fixture
def dead_pid():
    return _ended_pid()


@pytest.fixture
def live_pid():
    """The pid of another process that runs until the test ends."""
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    yield sleeper.pid
    sleeper.kill()
    sleeper.wait()


def _name(prefix: str, pid: int, suffix: str = "", host: str | None = None, token: str | None = None) -> str:
    """A temporary's name as :func:`_io.owned_prefix` makes it, for ``pid`` (on ``host``, else this one;
    ``token`` None: this process's for its own pid, another for any other pid)."""
    token = token or (_io.process_token() if pid == os.getpid() else "0123abcd")
    return f"{prefix}{_io.host() if host is None else host}.{pid}.{token}.x1_y2z3{suffix}"


def test_temporary_names_carry_a_safe_host_name_and_the_pid(tmp_path, monkeypatch):
    monkeypatch.setattr(_io.socket, "gethostname", lambda: "node 7.cluster/../é")
    made = _io.make_temp(tmp_path, ".run.", ".partial")
    assert made.parent == tmp_path and made.is_dir()
    assert made.name.startswith(f".run.node-7-cluster-----.{os.getpid()}.{_io.process_token()}.")
    assert made.name.endswith(".partial") and _io.temp_owner(made, ".run.", ".partial") == _io.process_record()
    assert _io.dead_owner(made, ".run.", ".partial") is None  # this process runs
    # this pid with another token: an earlier process whose pid this one was given (containers reuse pids)
    earlier = tmp_path / _name(".run.", os.getpid(), ".partial", host="node-7-cluster-----", token="0123abcd")
    assert _io.dead_owner(earlier, ".run.", ".partial") == os.getpid()


def test_a_killed_writers_temporary_is_removed_by_the_next_write_and_said(tmp_path, dead_pid, capsys):
    stale = tmp_path / _name(".result.json.", dead_pid, ".tmp")
    stale.write_text("half")
    other_target = tmp_path / _name(".other.json.", dead_pid, ".tmp")  # another file's: not this write's to clear
    other_target.write_text("half")
    _io.write_json(tmp_path / "result.json", {"a": 1})
    assert not stale.exists() and other_target.exists()
    err = capsys.readouterr().err
    assert err == (f"failatlas: removed 1 temporary file left by an interrupted run (pid {dead_pid}): {stale}\n")


def test_temporaries_of_running_processes_other_hosts_and_older_failatlas_are_left(tmp_path, live_pid, dead_pid,
                                                                                     capsys):
    kept = [_name(".result.json.", live_pid, ".tmp"), _name(".result.json.", os.getpid(), ".tmp"),
            _name(".result.json.", 1, ".tmp"),  # init: another user's (PermissionError) or root's, running
            _name(".result.json.", dead_pid, ".tmp", host="elsewhere"),  # that host's pids are not ours
            ".result.json.k3j2x9_a.tmp"]  # an older failatlas's, without host and pid
    for name in kept:
        (tmp_path / name).write_text("half")
    _io.write_json(tmp_path / "result.json", {"a": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*kept, "result.json"])
    assert capsys.readouterr().err == ""


def test_files_arrive_together_and_only_dead_processes_staging_folders_are_cleared(tmp_path, live_pid, capsys):
    pids = sorted({_ended_pid(), _ended_pid()})
    stale = [tmp_path / _name(_io.STAGING_PREFIX, pid) for pid in pids]
    for folder in stale:  # left by processes killed with kill -9
        folder.mkdir()
        (folder / "model.safetensors").write_text("half")
    running = tmp_path / _name(_io.STAGING_PREFIX, live_pid)  # another process staging into the same folder
    running.mkdir()
    (running / "config.json").write_text("theirs")
    (tmp_path / "old.txt").write_text("kept")
    with _io.staged_files(tmp_path) as stage:
        (stage / "a.txt").write_text("a")
        (stage / "b.txt").write_text("b")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["a.txt", "b.txt", "old.txt", running.name])
    assert (running / "config.json").read_text() == "theirs"
    assert len(pids) == 2 and capsys.readouterr().err == (f"failatlas: removed 2 temporary folders left by interrupted runs (pids "
                                       f"{pids[0]}, {pids[1]}): {stale[0]}, {stale[1]}\n")
    _io.check_out_folder(tmp_path / "none", overwrite=False)  # (a staging folder alone is not content)


def test_a_sigterm_while_moving_in_ends_the_process_without_leaving_the_staging_folder(tmp_path):
    script = textwrap.dedent(f"""
        import os, signal
        from failatlas import _io
        real = os.replace
        def replace(a, b):  # the kill arrives after the first file is moved in
            real(a, b)
            os.kill(os.getpid(), signal.SIGTERM)
        os.replace = replace
        with _io.staged_files({str(tmp_path)!r}) as stage:
            for name in ("config.json", "model.safetensors"):
                (stage / name).write_text(name)
        print("not reached")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == -signal.SIGTERM and "not reached" not in done.stdout
    assert sorted(os.listdir(tmp_path)) == ["config.json", "model.safetensors"]  # both, and nothing else


_PUBLISH = textwrap.dedent("""
    import json, os, shutil, signal, sys
    from pathlib import Path
    from failatlas import _io
    from failatlas.analysis import pipeline
    out, when = Path(sys.argv[1]), sys.argv[2]
    tmp = pipeline._make_staging(out)
    (tmp / "summary.json").write_text("new")
    (tmp / "manifest.json").write_text(json.dumps({"process": _io.process_record()}))  # as run_analysis records it
    def killed(*args, **kwargs):  # kill -9: no clean-up runs
        os.kill(os.getpid(), signal.SIGKILL)
    if when == "between-renames":
        real, renames = os.rename, []
        def rename(a, b):
            renames.append(a)
            if len(renames) == 2:  # the old run is aside, the new one not yet in place
                killed()
            real(a, b)
        os.rename = rename
    else:  # the new run is in place; the old one is being deleted
        shutil.rmtree = killed
    pipeline._publish(tmp, out, overwrite=True)
""")


def _killed_publish(tmp_path, when: str):
    """A run folder ``run`` replaced (--overwrite) by a process killed ``when``: (run, the killed pid)."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "summary.json").write_text("old")
    killed = subprocess.Popen([sys.executable, "-c", _PUBLISH, str(out), when], stderr=subprocess.PIPE, text=True)
    err = killed.communicate(timeout=120)[1]
    assert killed.returncode == -signal.SIGKILL, err
    return out, killed.pid


def _left(folder, pid: int, suffix: str):
    """The one folder ``.run.<host>.<pid>.<random>SUFFIX`` in ``folder``."""
    (found,) = folder.glob(f".run.{_io.host()}.{pid}.*{suffix}")
    return found


def test_a_run_moved_aside_by_a_killed_overwrite_is_refused_with_the_way_back(tmp_path, capsys):
    from failatlas.analysis import pipeline
    from failatlas.cli import main

    out, pid = _killed_publish(tmp_path, "between-renames")
    old, partial = _left(tmp_path, pid, ".old"), _left(tmp_path, pid, ".partial")
    assert set(tmp_path.iterdir()) == {old, partial} and (old / "summary.json").read_text() == "old"
    out.mkdir()  # something made run again since: it is not the new run, the old one is still the only copy
    with pytest.raises(FailatlasError, match=f"after moving {out} away"):
        pipeline._check_moved_aside(out, remove=True)
    out.rmdir()
    assert main(["analyze", "--out", str(out)]) == 2  # refused before anything is loaded
    err = capsys.readouterr().err
    assert err == (f"failatlas: error: --out {out}: the run that was in it was moved aside to {old} by a failatlas "
                   f"process (pid {pid}) that was killed before its new run was in place; to keep it, rename it "
                   f"back (mv {shlex.quote(str(old))} {shlex.quote(str(out))}); or delete it; then run again\n")
    assert set(tmp_path.iterdir()) == {old, partial}  # nothing removed
    old.rename(out)  # the fix
    pipeline._check_moved_aside(out, remove=True)
    staging = pipeline._make_staging(out)  # the killed run's staging folder goes with the next run's
    assert set(tmp_path.iterdir()) == {staging, out} and (out / "summary.json").read_text() == "old"
    assert capsys.readouterr().err == (f"failatlas: removed 1 temporary folder left by an interrupted run (pid "
                                       f"{pid}): {partial}\n")


def test_a_run_replaced_before_the_kill_leaves_only_litter_which_the_next_run_removes(tmp_path, live_pid, capsys):
    from failatlas.analysis import pipeline

    out, pid = _killed_publish(tmp_path, "deleting-the-old-run")
    old = _left(tmp_path, pid, ".old")
    assert set(tmp_path.iterdir()) == {old, out} and (out / "summary.json").read_text() == "new"
    manifest = (out / "manifest.json").read_text()
    process = json.loads(manifest)["process"]
    for other in ({**process, "pid": pid + 1}, {**process, "token": "0123abcd"}):  # another process's run
        (out / "manifest.json").write_text(json.dumps({"process": other}))
        with pytest.raises(FailatlasError, match="after moving"):  # no proof that the new run is in place
            pipeline._check_moved_aside(out, remove=True)
    (out / "manifest.json").write_text(manifest)
    running = tmp_path / _name(".run.", live_pid, ".old")  # a run replacing it now: not ours to judge
    (running / "x").mkdir(parents=True)
    pipeline._check_moved_aside(out, remove=False)  # (a torchrun rank other than 0)
    assert old.exists() and capsys.readouterr().err == ""
    pipeline._check_moved_aside(out, remove=True)
    assert set(tmp_path.iterdir()) == {running, out}
    assert capsys.readouterr().err == (f"failatlas: removed 1 temporary folder left by an interrupted run (pid "
                                       f"{pid}): {old}\n")
    partial, empty = (tmp_path / _name(".run.", pid, suffix) for suffix in (".partial", ".old"))
    partial.mkdir()
    empty.mkdir()  # killed just after naming the folder aside, before moving the run there: nothing in it
    pipeline._check_moved_aside(out, remove=True)
    assert not empty.exists() and partial.exists()


def test_a_run_folder_made_by_another_while_replacing_keeps_both_runs_named(tmp_path, monkeypatch):
    """Something creates --out between _publish's two renames: neither run is lost, and the error names
    where each one is (the earlier run's folder is then never removed automatically: no manifest of this
    process is in --out)."""
    from failatlas.analysis import pipeline

    out = tmp_path / "run"
    out.mkdir()
    (out / "summary.json").write_text("old")
    tmp = pipeline._make_staging(out)
    (tmp / "summary.json").write_text("new")
    real, calls = os.rename, []

    def rename(a, b):
        calls.append(a)
        if len(calls) == 2:  # the old run is aside: another program makes the folder again
            out.mkdir()
            (out / "theirs.txt").write_text("x")
        real(a, b)

    monkeypatch.setattr(pipeline.os, "rename", rename)
    with pytest.raises(FailatlasError, match="was created by something else while this run replaced it") as err:
        pipeline._publish(tmp, out, overwrite=True)
    monkeypatch.setattr(pipeline.os, "rename", real)
    (old,) = tmp_path.glob(".run.*.old")
    assert f"kept in {old} (move it where you want it); this run is discarded" in str(err.value)
    assert (old / "summary.json").read_text() == "old" and (out / "theirs.txt").exists()
