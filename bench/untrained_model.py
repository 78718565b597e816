"""Write an untrained `.keras` model of a preset with some of its config sections changed, so
that `train --init-from FILE` trains that architecture from scratch through the command line
(the random weights it starts from are drawn as the preset's would be, with FILE's seed).

The benchmarks use it to train a preset as it was before a change next to the preset now:

  .venv/bin/python bench/untrained_model.py --preset tiny --out outputs/tiny_before.keras \\
      --changes '{"backbone": {"stem_filters": 16, "bottleneck_widths": [8, 16, 32, 64]},
                  "roi": {"sampling_ratio": 2, "fc_dim": 256}}'
  .venv/bin/python bench/tiny_shapes.py --variant before="--init-from outputs/tiny_before.keras" ...
"""

import argparse
import json

import keras

from keras_maskrcnn.config import MaskRCNNConfig, preset
from keras_maskrcnn.model import MaskRCNN


def changed_config(name, changes):
    """Preset `name` with {section: {field: value}} replaced, read back through
    `MaskRCNNConfig.from_dict` (which turns JSON lists into tuples and checks the result)."""
    values = preset(name).to_dict()
    for section, fields in changes.items():
        values[section].update(fields)
    return MaskRCNNConfig.from_dict(values)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--changes", type=json.loads, default={},
                        help='JSON {"section": {"field": value}}, e.g. {"fpn": {"channels": 96}}')
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    keras.utils.set_random_seed(args.seed)
    MaskRCNN(changed_config(args.preset, args.changes), seed=args.seed).save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
