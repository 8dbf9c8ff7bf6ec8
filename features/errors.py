"""The one error type for bad input data; the CLI turns it into a message and exit code 2."""


class DataError(ValueError):
    """Input data or arguments that break a contract. The message names the column or field."""


class DataWarning(UserWarning):
    """Something about the input worth telling the user, that does not stop the run; the CLI prints it as one line."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when empty), for one-line errors."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
