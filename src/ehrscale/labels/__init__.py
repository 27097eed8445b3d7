"""Labels: clinical task labels in the MEDS label schema (``ehrscale labels``, :mod:`.make`)."""
