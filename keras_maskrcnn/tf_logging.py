"""TensorFlow's own log output, kept off the command line unless asked for.

TensorFlow's C++ runtime writes start-up lines to the process's stderr (file descriptor 2)
while it loads, before its log level is read ("cudart_stub ... Could not find cuda drivers"),
later "failed call to cuInit" on a machine without a GPU, which reads as a failure, and the
TFLite converter prints its own lines ("fully_quantize: 0, ..."). The command line switches
quiet mode on (`import_tensorflow_quietly`); library code marks noisy native calls with
`native_stderr_hidden`, which hides their stderr only in quiet mode.
"""

import contextlib
import os
import sys
import tempfile

LOG_LEVEL_VARIABLE = "TF_CPP_MIN_LOG_LEVEL"
ERRORS_ONLY = "3"  # TF_CPP_MIN_LOG_LEVEL: 0 everything, 1 no info, 2 no warnings, 3 no errors
_quiet = False


@contextlib.contextmanager
def _stderr_captured():
    """Send what anything, C++ included, writes to file descriptor 2 into a temporary file
    while the block runs; replay it if the block raises, so a failure still says why."""
    sys.stderr.flush()
    saved_stderr = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved_stderr, 2)
            captured.seek(0)
            sys.stderr.buffer.write(captured.read())
            sys.stderr.flush()
            raise
        finally:
            os.dup2(saved_stderr, 2)
            os.close(saved_stderr)


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
