"""Bad input to a scoring job (the command line reports it as exit 2, one line)."""


class ScoringError(ValueError):
    """The input, the output folder or the model version of a scoring job is wrong; the message says
    which and what to do."""
