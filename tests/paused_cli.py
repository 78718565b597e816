"""A driver script for tests that kill a training run at a known point.

It runs the command line; with PAUSE_AFTER_BACKUP set to a file path, it creates that file
once the first epoch's backup is written and then sleeps for good, so the test can SIGKILL it
knowing what the run folder holds.
"""

import textwrap

DRIVER = textwrap.dedent("""
    import os, sys, time
    import keras
    from keras_maskrcnn import cli
    marker = os.environ.pop("PAUSE_AFTER_BACKUP", None)
    if marker:
        backup = keras.callbacks.BackupAndRestore.on_epoch_end
        def pause(self, epoch, logs=None):
            backup(self, epoch, logs)
            open(marker, "w").close()
            time.sleep(3600)
        keras.callbacks.BackupAndRestore.on_epoch_end = pause
    sys.exit(cli.main(sys.argv[1:]))
""")
