"""The export's own error (a module of its own, so that the package's lazy names and its
modules do not import each other)."""


class ExportError(RuntimeError):
    """The export failed a check; nothing was written in place."""
