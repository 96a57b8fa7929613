"""A sweep's report: Tables I-III, the memorisation section, Fig. 6 and the curves, computed once and written at once.

``pipeline`` (``build_report`` / ``write_report``, what ``scripts/make_tables.py`` and the sweep call) over
``runs`` (run folders -> one DataFrame -> table rows), ``paper`` (the paper's and other papers' numbers), ``tables``
(cells, Markdown and LaTeX), ``memorisation``, ``fig6`` (Fig. 6's numbers and text), ``figures`` (the drawings) and
``output`` (file formats, the all-at-once write). Nothing is imported here, so reading runs (``runs``) or tables
(``tables``) never loads matplotlib.
"""
