"""The one error type for bad input data; the CLI turns it into a message and exit code 2."""


class DataError(ValueError):
    """Input data or arguments that break a contract. The message names the column or field."""
