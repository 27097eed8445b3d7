"""Train: one IsoFLOPs cell per job (``ehrscale train``), WSD stable segments (``ehrscale stable``) and
each size's LR sweep (``ehrscale tune``).

* :mod:`.trainer`: the loop, checkpoints and resume; :mod:`.command`: the two training commands;
* :mod:`.data`: training and validation windows over the token store (never across patients);
* :mod:`.schedule`: the LR schedule; :mod:`.optim`: AdamW; :mod:`.tune`: the sweep's choice.

The rules planning shares with training (batch, LR, branch point, settings) are :mod:`ehrscale.plan.rules`.
"""
