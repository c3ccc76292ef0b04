"""The ``medgen`` entry point when the reader of its output goes away (``medgen ... | head``)."""

import subprocess
import sys


def test_a_closed_output_pipe_ends_quietly_with_exit_code_1():
    # the reader closes the pipe before model-info has printed its table
    proc = subprocess.Popen([sys.executable, "-m", "medgen", "model-info", "--preset", "tiny", "--size", "32"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 1, err
    assert "Traceback" not in err and "BrokenPipeError" not in err and "Exception ignored" not in err, err
