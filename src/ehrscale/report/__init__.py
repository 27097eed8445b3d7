"""Report: the figures and summary.md of the fits.

* :mod:`.figures` and :mod:`.sections`: the loss laws' figures and their section (``ehrscale fit``);
* :mod:`.utility`: the utility laws' figures and section (``ehrscale fit-utility``);
* :mod:`.summary`: ``ehrscale summary`` joins the sections into summary.md;
* :mod:`.style`: what every figure shares.
"""
