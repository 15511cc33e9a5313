"""The one exception type that the CLI turns into a clean one-line error."""


class GPT2Error(Exception):
    """A user-facing error: bad input, missing files, wrong configuration.

    The CLI prints ``error: <message>`` and exits non-zero without a traceback
    (``gpt2 --debug ...`` shows it). Messages should name the offending file,
    line or option and say what to do about it.
    """

    option: str  # set by gpt2.generate.sampling.option_error: the option a bad value came in
