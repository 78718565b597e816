"""TensorFlow's own log output, kept off the command line unless asked for.

TensorFlow's C++ runtime writes start-up lines to the process's stderr (file descriptor 2)
while it loads, before its log level is read ("cudart_stub ... Could not find cuda drivers"),
and later "failed call to cuInit" on a machine without a GPU, which reads as a failure.
"""

import os
import sys
import tempfile

LOG_LEVEL_VARIABLE = "TF_CPP_MIN_LOG_LEVEL"
ERRORS_ONLY = "3"  # TF_CPP_MIN_LOG_LEVEL: 0 everything, 1 no info, 2 no warnings, 3 no errors


def import_tensorflow_quietly():
    """Import TensorFlow and Keras with their C++ log lines and Python INFO/WARNING logs off.

    Does nothing when the user has set TF_CPP_MIN_LOG_LEVEL (their choice stands). What the
    import wrote to stderr is replayed if it fails, so a broken installation still says why.
    """
    if LOG_LEVEL_VARIABLE in os.environ:
        return
    os.environ[LOG_LEVEL_VARIABLE] = ERRORS_ONLY
    sys.stderr.flush()
    saved_stderr = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import keras  # noqa: F401
            import tensorflow as tf
        except BaseException:
            os.dup2(saved_stderr, 2)
            captured.seek(0)
            sys.stderr.buffer.write(captured.read())
            raise
        finally:
            os.dup2(saved_stderr, 2)
            os.close(saved_stderr)
    tf.get_logger().setLevel("ERROR")
