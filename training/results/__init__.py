"""Tables and plots of ``docs/results.md`` from a study folder (``python -m training study``).

    python -m training results runs/study --speed runs/study/speed.json \\
        --doc docs/results.md --figures docs/results

The document keeps its prose; only the blocks between ``<!-- results:NAME -->`` and
``<!-- /results:NAME -->`` are regenerated, so every number in them comes from the study folder.

:mod:`~training.results.records` reads the study folder, :mod:`~training.results.tables` and
:mod:`~training.results.plots` turn the records into tables and figures, and
:mod:`~training.results.document` fills the document; ``python -m training results`` runs it
(:mod:`training.cli`).
"""
