"""Where training runs: the tf.distribute strategy of each `--distribute` mode, logical CPU
devices standing in for GPUs, each worker's shard of the input, and which worker writes the
run's files.

Modes (`train_config.DISTRIBUTE_MODES`): "none" runs on one device (TensorFlow's default
strategy); "mirrored" replicates the model over this machine's GPUs (MirroredStrategy), or
over `cpu_replicas` logical CPU devices; "multi-worker" over the machines of the cluster that
the TF_CONFIG environment variable describes (MultiWorkerMirroredStrategy), each using its
GPUs, or its CPU. The batch size is the global batch, split evenly over the replicas.
"""

import dataclasses
import json
import os
import shutil
import tempfile

import tensorflow as tf

from keras_maskrcnn.train_config import TrainConfigError, batch_split_problem, option

TF_CONFIG = "TF_CONFIG"


def split_cpu(replicas):
    """Make the CPU `replicas` logical devices (`--cpu-replicas`), which MirroredStrategy then
    replicates over as it would over GPUs. Must run before TensorFlow initialises its devices."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(replicas)])
    except RuntimeError as error:
        if len(tf.config.list_logical_devices("CPU")) != replicas:
            raise TrainConfigError(
                f"{option('cpu_replicas')} {replicas}: TensorFlow initialised its devices before "
                f"the CPU could be split; start a fresh process ({error})") from None


def make_strategy(mode, cpu_replicas=None):
    """The tf.distribute strategy of `mode` (see the module docstring).

    Raises:
      TrainConfigError: "multi-worker" without a usable TF_CONFIG.
    """
    if mode == "none":
        return tf.distribute.get_strategy()
    if mode == "mirrored":
        if cpu_replicas is not None:
            split_cpu(cpu_replicas)
            return tf.distribute.MirroredStrategy(
                [device.name for device in tf.config.list_logical_devices("CPU")])
        return tf.distribute.MirroredStrategy()  # every visible GPU, else the CPU
    cluster = _tf_config_cluster()
    if not cluster.get("worker") and not cluster.get("chief"):
        raise TrainConfigError(f"{option('distribute')} multi-worker: {TF_CONFIG} names no "
                               f"workers: {os.environ[TF_CONFIG]}")
    return tf.distribute.MultiWorkerMirroredStrategy()


def _tf_config_cluster():
    text = os.environ.get(TF_CONFIG)
    if not text:
        raise TrainConfigError(
            f"{option('distribute')} multi-worker reads the cluster from the {TF_CONFIG} "
            f"environment variable, which is not set. Set it on every worker, e.g. "
            f'{TF_CONFIG}=\'{{"cluster": {{"worker": ["host0:port", "host1:port"]}}, '
            f'"task": {{"type": "worker", "index": 0}}}}\'')
    try:
        config = json.loads(text)
        return dict(config["cluster"])
    except (ValueError, KeyError, TypeError) as error:
        raise TrainConfigError(f"{option('distribute')} multi-worker: {TF_CONFIG} is not a "
                               f"cluster description ({error!r}): {text}") from None


def check_batch_split(batch_size, strategy):
    """Refuse a global batch that the replicas cannot share evenly."""
    problem = batch_split_problem(batch_size, strategy.num_replicas_in_sync)
    if problem:
        raise TrainConfigError(problem)


def distributed_batches(strategy, make_batches, global_batch_size):
    """The training input: `make_batches(batch_size, shard_index, num_shards)` → a
    tf.data.Dataset that yields this input pipeline's batches of `batch_size`.

    On one replica that is the whole stream at the global batch size. Otherwise each worker
    (input pipeline) builds its own shard, which must be the shard_index-th of num_shards equal
    contiguous slices of every global batch, at the per-replica batch size: the worker's
    replicas take its consecutive batches, so replica r of the sync group holds images
    r·B .. r·B + B − 1 of each global batch, as `MaskRCNN.image_sampling_seeds` expects.
    """
    if strategy.num_replicas_in_sync == 1:
        return make_batches(global_batch_size, 0, 1)

    def pipeline(context):
        return make_batches(context.get_per_replica_batch_size(global_batch_size),
                            context.input_pipeline_id, context.num_input_pipelines)

    return strategy.distribute_datasets_from_function(pipeline)


@dataclasses.dataclass(frozen=True)
class WorkerRole:
    """This process's part in a run: the chief writes the run folder; other workers write the
    same files to a temporary folder of their own (Keras' usual multi-worker pattern, since
    saving under MultiWorkerMirroredStrategy takes every worker) that `finish` removes."""
    is_chief: bool
    name: str  # e.g. "worker 1", for messages

    def writable_dir(self, out):
        """Where this worker writes the run's files: `out` for the chief."""
        if self.is_chief:
            return out
        return tempfile.mkdtemp(prefix=f"keras-maskrcnn-{self.name.replace(' ', '-')}-")

    def finish(self, written_dir, out):
        if written_dir != out:
            shutil.rmtree(written_dir, ignore_errors=True)


def worker_role(strategy):
    """The `WorkerRole` of this process: the chief is the TF_CONFIG task of type "chief", or
    worker 0 when the cluster has no chief; a single-process run is its own chief."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or resolver is None:
        return WorkerRole(is_chief=True, name="chief")
    task_type, task_id = resolver.task_type, resolver.task_id
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    is_chief = task_type == "chief" or (task_type == "worker" and task_id == 0 and not has_chief)
    return WorkerRole(is_chief=is_chief, name=f"{task_type} {task_id}")
