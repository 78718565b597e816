"""Balanced, seeded sampling of foreground/background candidates, and gathering them."""

import numpy as np
import tensorflow as tf

from keras_maskrcnn.ops.matching import BACKGROUND, FOREGROUND, IGNORE
from keras_maskrcnn.ops.sampling import gather_sampled, sample_balanced

SEED = tf.constant([3, 4], tf.int32)


def _labels(rng, num_fg, num_bg, num_ignore):
    labels = np.array([FOREGROUND] * num_fg + [BACKGROUND] * num_bg + [IGNORE] * num_ignore, np.int32)
    return labels[rng.permutation(len(labels))]


def _image_seeds(seed, batch):
    """One seed per image: (seed[0], seed[1] + image index)."""
    return tf.stack([tf.fill([batch], seed[0]), seed[1] + tf.range(batch)], axis=1)


def _sample(labels, num_samples, fraction, seed=SEED):
    fg, bg = sample_balanced(tf.constant(labels), num_samples, fraction,
                             _image_seeds(seed, len(labels)))
    fg, bg = fg.numpy(), bg.numpy()
    assert not np.any(fg & bg)
    assert np.all(labels[fg] == FOREGROUND) and np.all(labels[bg] == BACKGROUND)
    return fg, bg


def test_counts_follow_the_quota():
    rng = np.random.default_rng(0)
    labels = np.stack([
        _labels(rng, 100, 300, 50),   # plenty of both: 32 fg + 96 bg
        _labels(rng, 10, 400, 40),    # few fg: all 10 + 118 bg
        _labels(rng, 5, 20, 425),     # few of both: everything, under quota
        _labels(rng, 0, 450, 0),      # no fg: all bg
    ])
    fg, bg = _sample(labels, 128, 0.25)
    assert fg.sum(1).tolist() == [32, 10, 5, 0]
    assert bg.sum(1).tolist() == [96, 118, 20, 128]


def test_zero_positive_fraction_samples_only_background():
    labels = _labels(np.random.default_rng(1), 20, 50, 0)[None]
    fg, bg = _sample(labels, 16, 0.0)
    assert fg.sum() == 0 and bg.sum() == 16


def test_seeded_determinism_and_variety():
    labels = np.tile(_labels(np.random.default_rng(2), 100, 100, 0), (16, 1))
    fg_a, bg_a = _sample(labels, 40, 0.5)
    fg_b, bg_b = _sample(labels, 40, 0.5)
    np.testing.assert_array_equal(fg_a, fg_b)
    np.testing.assert_array_equal(bg_a, bg_b)
    fg_c, _ = _sample(labels, 40, 0.5, seed=tf.constant([5, 6], tf.int32))
    assert not np.array_equal(fg_a, fg_c)
    # Images draw independently, and the draw is not biased towards the first candidates.
    assert len({row.tobytes() for row in fg_a}) == 16
    assert fg_a.any(0).sum() > 80
    assert 0.35 < np.flatnonzero(fg_a.any(0)).mean() / labels.shape[1] < 0.65


def test_an_image_samples_alike_whatever_else_its_batch_holds():
    rng = np.random.default_rng(5)
    labels = np.stack([_labels(rng, 60, 200, 40) for _ in range(4)])
    seeds = _image_seeds(SEED, 4)
    whole = sample_balanced(tf.constant(labels), 64, 0.25, seeds)
    for half in (slice(0, 2), slice(2, 4)):
        part = sample_balanced(tf.constant(labels[half]), 64, 0.25, seeds[half])
        for found, expected in zip(part, whole):
            np.testing.assert_array_equal(found.numpy(), expected.numpy()[half])


def test_gather_sampled_orders_foreground_first_and_pads():
    sampled_fg = np.zeros((2, 10), bool)
    sampled_bg = np.zeros((2, 10), bool)
    sampled_fg[0, [7, 2]] = True
    sampled_bg[0, [9, 0, 4]] = True
    sampled_bg[1, [3]] = True
    indices, is_fg, valid = gather_sampled(tf.constant(sampled_fg), tf.constant(sampled_bg), 6)
    indices, is_fg, valid = indices.numpy(), is_fg.numpy(), valid.numpy()
    assert indices.shape == is_fg.shape == valid.shape == (2, 6)
    assert indices[0, :5].tolist() == [2, 7, 0, 4, 9]
    assert is_fg[0].tolist() == [True, True, False, False, False, False]
    assert valid[0].tolist() == [True] * 5 + [False]
    assert indices[1, 0] == 3
    assert is_fg[1].tolist() == [False] * 6
    assert valid[1].tolist() == [True] + [False] * 5


def test_sample_then_gather_round_trip():
    labels = _labels(np.random.default_rng(3), 30, 200, 20)[None]
    fg, bg = _sample(labels, 64, 0.25)
    indices, is_fg, valid = (t.numpy() for t in gather_sampled(tf.constant(fg), tf.constant(bg), 64))
    assert valid.all()
    assert is_fg.sum() == 16
    assert sorted(indices[0][is_fg[0]].tolist()) == np.flatnonzero(fg[0]).tolist()
    assert sorted(indices[0][~is_fg[0]].tolist()) == np.flatnonzero(bg[0]).tolist()


def test_never_more_than_the_quota_on_anchor_scale_inputs():
    # float32 uniform noise has only 2^23 distinct values, so among ~10^5 candidates two often
    # share the value at the cut-off; the sample must still hold exactly the quota.
    labels = tf.zeros((64, 65536), tf.int32)  # all background
    for seed in range(6):
        fg, bg = sample_balanced(labels, 256, 0.5, _image_seeds(tf.constant([seed, 0]), 64))
        assert not fg.numpy().any()
        counts = tf.reduce_sum(tf.cast(bg, tf.int32), axis=1).numpy()
        assert counts.tolist() == [256] * 64, f"seed {seed}: counts {sorted(set(counts.tolist()))}"
