"""clp2p Studio: the PySide6 desktop workstation for prompt-to-prompt editing."""
