"""A driver script for tests that kill a training run at a named moment.

It runs the command line (`python driver.py train ...`), with two environment variables:

- PAUSE_AFTER_BACKUP=FILE: once the first epoch's backup is written, create FILE and sleep for
  good, so the test can SIGKILL the process (and others of a multi-worker run) knowing what
  the run folder holds.
- KILL_AT=POINT[#N]: the process SIGKILLs itself the N-th time (default 1) it reaches POINT:
    train_step        after a training step (N counts this process's steps)
    val_step          after a validation step
    write:NAME        a file named NAME (history.json, epoch-002.keras, model.keras, ...) is
                      written under its temporary name, not yet renamed into place (`atomic`)
    written:NAME      just after NAME is renamed into place
    removed:NAME      just after NAME is deleted (`atomic.remove`)
  A kill while the temporary file is half written leaves the same state as `write:NAME`: the
  file itself as it was, and a temporary file that nothing reads.
"""

import textwrap

DRIVER = textwrap.dedent("""
    import os, signal, sys, time
    import keras
    from keras_maskrcnn import atomic, callbacks, cli

    marker = os.environ.pop("PAUSE_AFTER_BACKUP", None)
    if marker:
        backup = callbacks.RunBackup.on_epoch_end
        def pause(self, epoch, logs=None):
            backup(self, epoch, logs)
            open(marker, "w").close()
            time.sleep(3600)
        callbacks.RunBackup.on_epoch_end = pause

    kill_at = os.environ.pop("KILL_AT", None)
    if kill_at:
        target, _, count = kill_at.partition("#")
        times = [int(count or 1)]

        def reached(point):
            if point == target:
                times[0] -= 1
                if not times[0]:
                    os.kill(os.getpid(), signal.SIGKILL)

        commit, remove = atomic.commit, atomic.remove
        def commit_and_report(temporary, path):
            reached("write:" + os.path.basename(path))
            commit(temporary, path)
            reached("written:" + os.path.basename(path))
        def remove_and_report(path):
            remove(path)
            reached("removed:" + os.path.basename(path))
        atomic.commit, atomic.remove = commit_and_report, remove_and_report

        class Steps(keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                reached("train_step")
            def on_test_batch_end(self, batch, logs=None):
                reached("val_step")
        fit = keras.Model.fit
        def fit_reporting_steps(self, *args, callbacks=None, **kwargs):
            return fit(self, *args, callbacks=[Steps(), *(callbacks or [])], **kwargs)
        keras.Model.fit = fit_reporting_steps

    sys.exit(cli.main(sys.argv[1:]))
""")
