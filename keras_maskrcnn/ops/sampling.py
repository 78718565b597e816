"""Seeded, balanced sampling of foreground and background candidates.

Shapes: B batch, N candidates, S samples per image.
Each image draws from its own seed, so what it samples does not depend on the other images of
its batch (nor on how a batch is split across replicas).
"""

import tensorflow as tf

from keras_maskrcnn.ops.matching import BACKGROUND, FOREGROUND


def _take_random(candidates, count, max_count, noise):
    """Mark exactly `count` [B] random entries of bool `candidates` [B, N]; count ≤ max_count.

    Chosen by rank, not by a noise threshold: float32 noise repeats often enough over
    ~10⁵ anchors that a threshold would sometimes take one too many.
    """
    top = tf.math.top_k(tf.where(candidates, noise, -1.0), k=max_count)
    in_quota = tf.range(max_count)[None, :] < count[:, None]
    rows = tf.broadcast_to(tf.range(tf.shape(candidates)[0])[:, None], tf.shape(top.indices))
    chosen = tf.scatter_nd(tf.stack([rows, top.indices], axis=-1), tf.cast(in_quota, tf.int32),
                           tf.shape(candidates))
    return candidates & (chosen > 0)


def image_noise(shape, seeds):
    """Uniform [0, 1) noise of `shape` [B, N], row b drawn from seeds[b] (int [B, 2] for
    `tf.random.stateless_uniform`) alone."""
    return tf.map_fn(lambda seed: tf.random.stateless_uniform(shape[1:], seed), seeds,
                     fn_output_signature=tf.float32)


def sample_balanced(labels, num_samples, positive_fraction, seeds):
    """Pick up to `num_samples` candidates per image, at most a `positive_fraction` of them
    foreground; background fills the rest (Faster R-CNN §3.1.3).

    Args:
      labels: int32 [B, N], FOREGROUND / BACKGROUND / anything else (ignored).
      num_samples: S (≤ N).
      positive_fraction: upper bound on the foreground share.
      seeds: int [B, 2], each image's seed for `tf.random.stateless_uniform`.
    Returns: sampled_fg bool [B, N], sampled_bg bool [B, N].
    """
    is_fg = tf.equal(labels, FOREGROUND)
    is_bg = tf.equal(labels, BACKGROUND)
    max_fg = int(num_samples * positive_fraction)
    num_fg = tf.minimum(tf.reduce_sum(tf.cast(is_fg, tf.int32), axis=1), max_fg)
    num_bg = tf.minimum(tf.reduce_sum(tf.cast(is_bg, tf.int32), axis=1), num_samples - num_fg)
    noise = image_noise(tf.shape(labels), seeds)
    sampled_fg = _take_random(is_fg, num_fg, max_fg, noise) if max_fg > 0 else tf.zeros_like(is_fg)
    sampled_bg = _take_random(is_bg, num_bg, num_samples, noise)
    return sampled_fg, sampled_bg


def gather_sampled(sampled_fg, sampled_bg, num_samples):
    """Indices of the sampled candidates, foreground first.

    Returns: indices int32 [B, S], is_fg bool [B, S], valid bool [B, S] (False on padding
    when fewer than S candidates were sampled).
    """
    # Ties inside each group are broken by position, which keeps the order deterministic.
    num_candidates = tf.shape(sampled_fg)[1]
    position = tf.cast(tf.range(num_candidates, 0, -1), tf.float32) / tf.cast(num_candidates + 1, tf.float32)
    priority = tf.where(sampled_fg, 2.0 + position, tf.where(sampled_bg, 1.0 + position, 0.0))
    top = tf.math.top_k(priority, k=num_samples)
    return top.indices, top.values >= 2.0, top.values > 0.0
