"""Warnings that are not the user's to act on, silenced narrowly where they arise."""

from __future__ import annotations

import warnings

__all__ = ["quiet_brian2_parsing"]

# Brian2 2.9 parses equations with pyparsing's camelCase API (parseString, scanString, parseAll), which
# pyparsing >= 3.3 deprecates with a warning per call site; Brian2's logger then repeats each as a WARNING.
_PYPARSING = r"'\w+' (argument is deprecated|deprecated - use)"


def quiet_brian2_parsing() -> None:
    """Ignore pyparsing's deprecation warnings raised from inside Brian2 (call before using Brian2)."""
    warnings.filterwarnings("ignore", message=_PYPARSING, category=DeprecationWarning)
