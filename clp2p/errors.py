"""User-facing errors: each message says what to change."""


class Clp2pError(ValueError):
    """Bad input from the user (a prompt, a parameter, a file). The message is one line that
    names the problem and what to change; the CLI prints it and exits non-zero."""


class RenderCancelled(RuntimeError):
    """A render was cancelled between denoising steps; nothing it produced is kept."""
