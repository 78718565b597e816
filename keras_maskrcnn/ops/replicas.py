"""Sums over the replicas that each hold a slice of the global batch.

Under a tf.distribute strategy every replica runs the step on its own images; a quantity of the
global batch (a count, a loss, a gradient) is the sum of the replicas' shares. Outside a
strategy, or with one replica, the sum is the value itself.
"""

import tensorflow as tf


def num_replicas():
    """Replicas that run the current step in sync (1 outside a strategy)."""
    context = tf.distribute.get_replica_context()
    return 1 if context is None else context.num_replicas_in_sync


def replica_index():
    """This replica's place in the sync group: 0..num_replicas() − 1 (int32 scalar)."""
    context = tf.distribute.get_replica_context()
    return tf.constant(0) if context is None else tf.cast(context.replica_id_in_sync_group,
                                                          tf.int32)


def sum_over_replicas(values):
    """`values` (a tensor, or a list or dict of them; None entries stay None) summed over the
    replicas in sync: every replica gets the global batch's total."""
    if num_replicas() == 1:
        return values
    if isinstance(values, dict):
        return dict(zip(values, sum_over_replicas(list(values.values()))))
    if not isinstance(values, list):
        return sum_over_replicas([values])[0]
    present = [value for value in values if value is not None]
    summed = iter(tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM,
                                                                 present))
    return [None if value is None else next(summed) for value in values]
