"""Tokens: MEDS timelines as ETHOS-style token streams (``ehrscale tokenize``, :mod:`.encode`).

* :mod:`.vocab` and :mod:`.codemap`: the token design and how a dataset's codes map onto it;
* :mod:`.store`: the token store's on-disk layout, its one reader and writer, and the prediction-time cut;
* :mod:`.toy`: a small synthetic store for tests and benchmarks.
"""
