"""Reports and dashboard artifacts built from what shrink.search stores.

- ``trial_artifacts``: notes and crops per trial for optuna-dashboard (``shrink dashboard``), and the
  study's plots there (RD against JPEG; the 3-D Pareto front when decoder cost is a third objective).
- ``report`` (``shrink report``): one self-contained HTML page per study. Data gathering (``study_info``,
  ``curves``, ``gallery``: plain dataclasses, no plotly) is kept apart from drawing (``plots``, ``html``);
  measured baseline and bundle curves are cached in a JSON file beside the report (``cache``).
"""
