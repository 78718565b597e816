"""`python -m keras_maskrcnn`: the keras-maskrcnn command line."""

import sys

from keras_maskrcnn.cli import main

if __name__ == "__main__":
    sys.exit(main())
