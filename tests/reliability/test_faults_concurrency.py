"""Two runs into one directory: the second is refused with a message naming the holder, and the first one's
run is exactly what it would have been alone."""

import pathlib
import sys
import time

HERE = pathlib.Path(__file__).parent
sys.path.insert(0, str(HERE))
from test_faults_kill import _assert_complete, _run, _start, reference  # noqa: E402,F401


def test_a_second_run_into_a_busy_directory_is_refused_and_changes_nothing(tmp_path, reference):
    out = tmp_path / "run"
    first = _start(out, "--hold", "1.0")
    deadline = time.time() + 120
    while not ((out / ".lock").exists() and (out / ".lock").read_text().strip()) and time.time() < deadline:
        time.sleep(0.2)
    code, _, stderr = _run(out, "--resume")
    assert code == 3, stderr[-2000:]
    assert f"in use by another training run (pid {first.pid} on host" in stderr
    stdout, stderr = first.communicate(timeout=300)
    assert first.returncode == 0 and "DONE" in stdout, stderr[-2000:]
    _assert_complete(out, reference)  # the refused run wrote nothing into the first one's files
    # the holder has ended: the directory is free (nothing to resume, the run is complete)
    code, stdout, stderr = _run(out, "--resume")
    assert code == 0, stderr[-2000:]
    _assert_complete(out, reference)
