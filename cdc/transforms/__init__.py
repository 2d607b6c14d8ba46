"""The transforms stage (see ``_apply``'s docstring) and its configuration (``config``)."""

from cdc.transforms._apply import MASKED, Transformer, hash_function, transformer

__all__ = ["MASKED", "Transformer", "hash_function", "transformer"]
