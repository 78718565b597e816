"""`DataError`, the one exception of bad input data (images and annotation files).

Shapes: none.
"""


class DataError(ValueError):
    """An image or annotation that cannot be read; the message names the file and the problem.

    `kind` names the problem for counting (see `data.validation.KINDS`), or is None.
    """

    def __init__(self, message, kind=None):
        super().__init__(message)
        self.kind = kind
