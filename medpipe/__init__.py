"""medpipe: the library behind the DVC stages in ``stages/``.

Each stage module is a thin shell; the work it does lives here, in modules that a
test, a benchmark script or a GPU machine without DVC can import directly.
"""


class PipelineError(Exception):
    """A problem with the user's data, params or environment.

    Stage shells print it as one line and exit non-zero; no traceback is shown
    because the message itself says what is wrong and where.
    """
