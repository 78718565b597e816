"""TensorFlow's own log output, kept off the command line unless asked for.

TensorFlow's C++ runtime writes start-up lines to the process's stderr (file descriptor 2)
while it loads, before its log level is read ("cudart_stub ... Could not find cuda drivers"),
later "failed call to cuInit" on a machine without a GPU, which reads as a failure, and the
TFLite converter prints its own lines ("fully_quantize: 0, ..."). The command line switches
quiet mode on (`import_tensorflow_quietly`); library code marks noisy native calls with
`native_stderr_hidden`, which hides their stderr only in quiet mode.

One warning is dropped in every mode, since Python users see TensorFlow's log lines too:
TensorFlow's graph optimiser estimates each op's cost when a function first runs, and its
estimator fails on a `CropAndResize` whose box count is known only at run time (the host
inference path's by-level RoIAlign, docs/design.md §4.4), logging a few hundred characters per
such op. `run_first_call_quietly` drops those lines, and only those.
"""

import contextlib
import os
import sys
import tempfile
import threading

LOG_LEVEL_VARIABLE = "TF_CPP_MIN_LOG_LEVEL"
ERRORS_ONLY = "3"  # TF_CPP_MIN_LOG_LEVEL: 0 everything, 1 no info, 2 no warnings, 3 no errors
# All of these are in each line the cost estimator logs for a CropAndResize it cannot estimate.
COST_ESTIMATOR_NOTICE = (b"op_level_cost_estimator", b"Error in PredictCost()",
                         b'"CropAndResize"')
_quiet = False


@contextlib.contextmanager
def _stderr_captured(keep_line=None):
    """Send what anything, C++ included, writes to file descriptor 2 into a temporary file
    while the block runs. Without `keep_line`, replay it only if the block raises, so a failure
    still says why; with it (bytes line → bool), replay the lines it keeps in any case."""
    sys.stderr.flush()
    saved_stderr = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        failed = False
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved_stderr, 2)
            os.close(saved_stderr)
            if failed or keep_line is not None:
                captured.seek(0)
                lines = captured.read().splitlines(keepends=True)
                sys.stderr.buffer.write(b"".join(line for line in lines
                                                 if keep_line is None or keep_line(line)))
                sys.stderr.flush()


def _not_a_cost_estimator_notice(line):
    return not all(part in line for part in COST_ESTIMATOR_NOTICE)


def run_first_call_quietly(function):
    """`function` (a tf.function or a SavedModel signature) whose first call, when TensorFlow
    optimises its graph, drops the cost estimator's CropAndResize notices from stderr (see
    the module docstring); everything else it writes there still shows. The function's own
    attributes (e.g. `experimental_get_tracing_count`) stay reachable."""
    return _QuietFirstCall(function)


class _QuietFirstCall:
    def __init__(self, function):
        self._function = function
        self._lock = threading.Lock()
        self._called = False

    def __call__(self, *args, **kwargs):
        if not self._called:
            with self._lock:
                if not self._called:
                    with _stderr_captured(keep_line=_not_a_cost_estimator_notice):
                        result = self._function(*args, **kwargs)
                    self._called = True
                    return result
        return self._function(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._function, name)


def import_tensorflow_quietly():
    """Switch quiet mode on and import TensorFlow and Keras with their C++ log lines and
    Python INFO/WARNING logs off.

    Does nothing when the user has set TF_CPP_MIN_LOG_LEVEL (their choice stands).
    """
    global _quiet
    if LOG_LEVEL_VARIABLE in os.environ:
        return
    os.environ[LOG_LEVEL_VARIABLE] = ERRORS_ONLY
    _quiet = True
    with _stderr_captured():
        import keras  # noqa: F401
        import tensorflow as tf
    tf.get_logger().setLevel("ERROR")


@contextlib.contextmanager
def native_stderr_hidden():
    """Hide what the block writes to stderr in quiet mode (replayed if it raises)."""
    if not _quiet:
        yield
        return
    with _stderr_captured():
        yield
