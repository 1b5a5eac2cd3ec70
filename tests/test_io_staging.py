"""_io.staged_files: files written into a staging folder arrive together, and the staging folder never stays
behind, even when a SIGTERM (kill) arrives while they are moved in (it ends the process once they are)."""

import os
import signal
import subprocess
import sys
import textwrap

from failatlas import _io


def test_files_arrive_together_and_stale_staging_folders_are_cleared(tmp_path):
    (tmp_path / f"{_io.STAGING_PREFIX}stale").mkdir()  # left by a process killed with kill -9
    (tmp_path / "old.txt").write_text("kept")
    with _io.staged_files(tmp_path) as stage:
        (stage / "a.txt").write_text("a")
        (stage / "b.txt").write_text("b")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt", "old.txt"]
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
