"""The search harness on Optuna: study specs and search spaces (``spec``, ``space``), studies with an exact
budget of claim tickets (``study``, ``budget``), storage with retries and heartbeats (``storage``), one trial
and the worker loop (``trial_runner``, ``worker``, ``launch``), pruners (``pruning``), refine and export to
bundles or codec families (``refine``, ``export``), the Pareto front (``results``), and the ``shrink`` CLI
(``search.cli``)."""
