"""medpipe: the library behind the DVC stages in ``stages/``.

Each stage module is a thin shell; the work it does lives here, in modules that a
test, a benchmark script or a GPU machine without DVC can import directly.
"""


class PipelineError(Exception):
    """A problem with the user's data, params or environment.

    Stage shells print it as one line and exit non-zero; no traceback is shown
    because the message itself says what is wrong and where.
    """


def error_line(e: BaseException) -> str:
    """The first line of an exception's message (its type name if it has none), for
    quoting a library's error inside a one-line PipelineError."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
