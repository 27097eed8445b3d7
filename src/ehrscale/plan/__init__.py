"""Plan: which cells to train and how, without torch.

* :mod:`.rules`: the ``train`` settings and the batch, LR and branch-point rules;
* :mod:`.grid`: the IsoFLOPs grid (cells, sizes, WSD chains, scheduler estimates);
* :mod:`.workflow`: the DAG's logic for the Snakemake rules;
* :mod:`.command`: ``ehrscale plan``.
"""
