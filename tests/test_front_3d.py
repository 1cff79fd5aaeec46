"""A study with decoder cost as a third objective: the report draws its 3-D Pareto front, and the worker's
hook stores it for optuna-dashboard; a two-objective study gets neither.

The studies are in memory, their trials made with ``create_trial`` and the attributes the report reads, so
the front is known by hand: trial 1 is dominated in (bpp, MS-SSIM) by trial 0 but has the cheaper decoder.
"""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import optuna
import pytest
from optuna.distributions import IntDistribution
from optuna.trial import create_trial

from shrink.compression.rd import RDCurve, RDPoint
from shrink.dashboards import trial_artifacts
from shrink.dashboards.report import FRONT_3D_SECTION, SECTIONS, ReportOptions, gather_report, render_report
from shrink.dashboards.study_info import get_front_3d_info
from shrink.dashboards.trial_artifacts import FRONT_3D_GRAPH_ID, RD_GRAPH_ID
from shrink.search.cli._hooks import dashboard_hooks
from shrink.search.records import DECODER_MACS_ATTR, RD_POINT_ATTR

from .helpers import stored_graphs

THREE = ["minimize", "maximize", "minimize"]
NAMES = ["dev_bpp", "dev_msssim", "decoder_macs_per_pixel"]
TRIALS = [  # (bpp, MS-SSIM, decoder MACs/px, RecCNN width)
    (0.50, 0.95, 1000.0, 32),  # 0: front
    (0.50, 0.94, 500.0, 16),  # 1: front (cheapest decoder), dominated in 2-D by trial 0
    (0.60, 0.93, 2000.0, 48),  # 2: dominated by trial 0 in all three
    (0.30, 0.90, 5000.0, 64),  # 3: front (lowest bpp)
]
FRONT = {0, 1, 3}
DEV_JPEG = RDCurve("jpeg", [RDPoint(q, b, m, -10, 30) for q, b, m in [(20, 0.2, 0.85), (80, 1.0, 0.97)]])


def make_study(directions: list[str], names: list[str]) -> optuna.Study:
    study = optuna.create_study(directions=directions)
    study.set_metric_names(names)
    for bpp, msssim, macs, width in TRIALS:
        point = {
            "epoch": 1, "step": 2, "seconds": 1.0, "dev_bpp": bpp, "dev_msssim": msssim,
            "dev_msssim_db": -10.0, "dev_psnr": 30.0, "dev_gain_db": 0.1,
        }  # fmt: skip
        study.add_trial(
            create_trial(
                values=[bpp, msssim, macs][: len(directions)],
                params={"model.reccnn.width": width},
                distributions={"model.reccnn.width": IntDistribution(8, 64)},
                user_attrs={RD_POINT_ATTR: point, DECODER_MACS_ATTR: macs},
            )
        )
    return study


@pytest.fixture
def three_objectives() -> optuna.Study:
    return make_study(THREE, NAMES)


@pytest.fixture
def two_objectives() -> optuna.Study:
    return make_study(THREE[:2], NAMES[:2])


def report_html(study: optuna.Study) -> str:
    return render_report(gather_report(study, ReportOptions(gallery_images=0), log=lambda _: None))


def plotted_traces(text: str, div_id: str) -> list[dict]:
    """The traces Plotly.newPlot draws in ``div_id``, as JSON."""
    start = re.search(rf'Plotly\.newPlot\(\s*"{div_id}",\s*', text).end()
    traces, _ = json.JSONDecoder().raw_decode(text, start)
    return traces


def hovered_trials(trace: dict) -> set[int]:
    return {int(re.search(r"trial (\d+)", hover).group(1)) for hover in trace["hovertext"]}


def test_the_3d_info_holds_each_trials_values_and_optunas_front(three_objectives):
    info = get_front_3d_info(three_objectives)
    assert info.names == NAMES and info.directions == THREE
    assert [p.values for p in info.points] == [list(t[:3]) for t in TRIALS]
    assert {p.number for p in info.points if p.on_front} == FRONT
    assert get_front_3d_info(make_study(THREE[:2], NAMES[:2])) is None


def test_the_report_of_three_objectives_draws_the_front_in_3d(three_objectives):
    text = report_html(three_objectives)
    key, title = FRONT_3D_SECTION
    assert f'<h2 id="{key}">{title}</h2>' in text
    assert text.index('<h2 id="rd">') < text.index(f'<h2 id="{key}">') < text.index('<h2 id="bd-rate">')
    assert f'href="#{key}"' in text  # in the page's navigation too
    traces = {trace["name"]: trace for trace in plotted_traces(text, "plot-front-3d")}
    assert {trace["type"] for trace in traces.values()} == {"scatter3d"}
    front, others = traces["Pareto front"], traces["trials"]
    assert hovered_trials(front) == FRONT and hovered_trials(others) == {2}
    by_trial = {n: TRIALS[n] for n in sorted(FRONT)}
    assert front["x"] == [t[0] for t in by_trial.values()] and front["z"] == [t[2] for t in by_trial.values()]
    assert all("model.reccnn.width = " in hover for hover in front["hovertext"])


def test_the_report_of_two_objectives_has_no_3d_section(two_objectives):
    text = report_html(two_objectives)
    assert FRONT_3D_SECTION[0] not in text and "plot-front-3d" not in text
    assert all(f'<h2 id="{key}">' in text for key in SECTIONS)
    divs = re.findall(r'Plotly\.newPlot\(\s*"([^"]+)"', text)
    assert divs and all(trace["type"] != "scatter3d" for div in divs for trace in plotted_traces(text, div))


def run_trial_end_hook(study: optuna.Study, tmp_path, log=print) -> None:
    handle = SimpleNamespace(study=study, dev_jpeg=DEV_JPEG)
    dashboard_hooks(handle, tmp_path, log=log)["on_trial_end"](study.trials[-1])


def test_the_worker_hook_stores_the_3d_front_for_three_objectives(three_objectives, tmp_path):
    run_trial_end_hook(three_objectives, tmp_path)
    graphs = stored_graphs(three_objectives)
    assert set(graphs) == {RD_GRAPH_ID, FRONT_3D_GRAPH_ID}
    traces = {trace["name"]: trace for trace in graphs[FRONT_3D_GRAPH_ID]["data"]}
    assert traces["Pareto front"]["type"] == "scatter3d" and hovered_trials(traces["Pareto front"]) == FRONT


def test_the_worker_hook_stores_no_3d_front_for_two_objectives(two_objectives, tmp_path):
    run_trial_end_hook(two_objectives, tmp_path)
    assert set(stored_graphs(two_objectives)) == {RD_GRAPH_ID}


def test_a_plot_the_dashboard_cannot_store_is_logged_not_raised(three_objectives, tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("storage gone")

    monkeypatch.setattr(trial_artifacts, "save_plotly_graph_object", refuse)
    lines = []
    run_trial_end_hook(three_objectives, tmp_path, log=lines.append)
    assert lines == [
        "dashboard RD plot not stored (OSError: storage gone)",
        "dashboard 3-D Pareto front not stored (OSError: storage gone)",
    ]
