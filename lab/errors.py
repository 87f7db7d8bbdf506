"""One error type for bad input: its message names the fix. The CLI prints it on one line, exit code 2."""


class LabError(ValueError):
    """Bad input to the lab (unknown method or model, empty prompt, invalid option ...)."""
