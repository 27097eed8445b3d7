"""Fit: the loss laws (:mod:`.loss`: IsoFLOPs parabolas, L(N, D), calibration, backtests) from the trained
cells, and the utility laws (:mod:`.utility`) from their probes. ``ehrscale fit`` and ``ehrscale fit-utility``
(:mod:`.command`) are two rules, so a new probe record never reruns the loss-law bootstraps.
"""
