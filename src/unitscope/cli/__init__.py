"""The `unitscope` command."""

from .main import main

__all__ = ["main"]
