"""Clinical utility: frozen models embed the labelled examples, a logistic-regression probe
scores each task (``ehrscale embed``, ``ehrscale probe``), beside a no-model baseline on
bag-of-codes counts (``ehrscale baseline``).

* :mod:`ehrscale.probe.embed`: the final hidden state (after the last norm) at the last token
  before each prediction time; one forward pass per patient window serves every prediction
  time that fits in it. Cached per cell, so probe settings never re-embed.
* :mod:`ehrscale.probe.linear`: standardize, choose the L2 strength on tuning, fit on train,
  report on held_out with stratified bootstrap intervals (:mod:`ehrscale.probe.metrics`).
* :mod:`ehrscale.probe.baseline`: the same probe on log counts of every token before the
  prediction time (the whole history, no model).
"""
