"""The one error type for bad input data; the CLI turns it into a message and exit code 2."""


class DataError(ValueError):
    """Input data or arguments that break a contract. The message names the column or field."""


class DataWarning(UserWarning):
    """Something about the input worth telling the user, that does not stop the run; the CLI prints it as one line."""
