"""One exception type for bad input, so the CLI can print it plainly and exit non-zero."""


class EhrscaleError(ValueError):
    """Bad input or configuration. The message names the file, table, column or key at fault."""
