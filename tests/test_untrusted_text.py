"""Untrusted text is data wherever it lands (issue 35, class 2).

Curve names from files, study and trial attributes, zoo cards and shrink file headers reach a terminal
without a control code, the report's HTML and Plotly labels without markup (Plotly draws ``<a href>`` as a
live link and ``<b style>`` as styled text), and shown to a person bounded in length. The report in a real
browser: tests/test_report_browser.py.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from types import SimpleNamespace

import optuna
from optuna.trial import TrialState, create_trial
from PIL import Image

from shrink.compression import zoo
from shrink.compression.container import MAGIC
from shrink.compression.metrics import msssim_db
from shrink.compression.rd import RDCurve, RDPoint, save_curves
from shrink.compression.text import NAME_LIMIT, plain_text
from shrink.dashboards import html, plots
from shrink.dashboards.gallery import get_gallery_info
from shrink.dashboards.refined import RefinedInfo, render_refined
from shrink.dashboards.report import ReportOptions, gather_report, render_report
from shrink.dashboards.study_info import BDRateRow, ImportanceInfo, LearningCurve, get_rd_points_info
from shrink.search.cli import main
from shrink.search.cli._common import format_rd_table
from shrink.search.cli.evaluate import envelope_on
from shrink.search.cli.zoo import list_text, show_text
from shrink.search.worker import describe

LINK = '<a href="https://evil.example/">click</a>'
BIG = '<b style="font-size:200px">BIG</b>'
ENTITY = "x &lt;i&gt; y"  # shown as written, not as <i>
MARKUP_NAMES = (LINK, BIG, ENTITY)
TERMINAL = "evil\x1b]0;pwned\x07\x1b[2J\x9b31m\u202ename"  # retitle, clear, C1 CSI, bidi override
CONTROL_BYTES = ("\x1b", "\x07", "\x9b", "\u202e")


def rd_curve(name: str, scale: float = 1.0) -> RDCurve:
    rates_and_values = [(0.3, 0.95), (0.6, 0.97), (1.2, 0.985)]
    return RDCurve(
        name, [RDPoint(q, scale * b, m, msssim_db(m), 30.0 + q) for q, (b, m) in enumerate(rates_and_values)]
    )


def hostile_curves_file(path: Path) -> Path:
    """Our curve JSON whose curves are named with HTML and Plotly label markup."""
    save_curves(path, {name: rd_curve(name, 1 + i / 10) for i, name in enumerate(MARKUP_NAMES)})
    return path


STUDY_NAME = f"study {BIG}" + "s" * 200


def hostile_study() -> optuna.Study:
    """An in-memory study (nothing trained) whose name, parameter names and values and prune reason carry
    markup: four completed trials, each with a checkpoint path no system takes, and a pruned one."""
    study = optuna.create_study(study_name=STUDY_NAME, directions=["minimize", "maximize"])
    distributions = {
        LINK: optuna.distributions.IntDistribution(1, 9),
        "codec": optuna.distributions.CategoricalDistribution([BIG, "jpeg"]),
    }
    for i in range(4):
        point = {
            "epoch": 1,
            "step": 2,
            "seconds": 1.0,
            "dev_bpp": 0.3 + 0.2 * i,
            "dev_msssim": 0.9 + 0.02 * i,
        }
        point |= {"dev_msssim_db": 10.0 + i, "dev_psnr": 30.0 + i, "dev_gain_db": 0.1 * i}
        study.add_trial(
            create_trial(
                values=[point["dev_bpp"], point["dev_msssim"]],
                params={LINK: i + 1, "codec": [BIG, "jpeg"][i % 2]},
                distributions=distributions,
                user_attrs={"rd_point": point, "epochs": [point], "checkpoint": TERMINAL + "c" * 5000},
            )
        )
    study.add_trial(
        create_trial(
            state=TrialState.PRUNED, user_attrs={"epochs": [point], "prune_reason": f"reason {LINK}"}
        )
    )
    return study


def no_markup(text: str) -> bool:
    """No tag of the hostile names in ``text`` (a link, a styled tag, <i>), whatever our own markup is."""
    return re.search(r"<a\b|<[a-z]+ style=|<i>", text) is None


# ---------------------------------------------------------------- the sanitisers


def test_plain_text_leaves_one_line_without_control_codes_keeping_both_ends():
    assert plain_text("jpeg") == "jpeg" and plain_text("a\tb\nc\r\nd") == "a b c  d"
    shown = plain_text(TERMINAL)
    assert not any(code in shown for code in CONTROL_BYTES) and shown.startswith("evil") and "name" in shown
    assert plain_text("\ud800x") == " x"  # a lone surrogate (JSON's "\ud800") no terminal can print
    long = plain_text("a" * 1000 + " (file.json)")
    assert len(long) == NAME_LIMIT and "…" in long and long.endswith("(file.json)")
    assert plain_text("b" * 1000, limit=None) == "b" * 1000


def test_plotly_labels_are_escaped_so_plotly_shows_the_markup_as_text():
    assert html.plotly_label(LINK) == '&lt;a href="https://evil.example/"&gt;click&lt;/a&gt;'
    assert html.plotly_label(ENTITY) == "x &amp;lt;i&amp;gt; y"  # Plotly decodes &amp; back to &
    assert html.plotly_label("a\x1bb") == "a b" and len(html.plotly_label("c" * 500)) == NAME_LIMIT
    assert html.esc_name(LINK) == "&lt;a href=&quot;https://evil.example/&quot;&gt;click&lt;/a&gt;"


# ---------------------------------------------------------------- the terminal


def test_bdrate_prints_curve_names_without_control_codes_and_bounded(tmp_path, capsys):
    long = "long" + "-" * 100
    save_curves(tmp_path / "anchor.json", {TERMINAL: rd_curve(TERMINAL)})
    save_curves(tmp_path / "test.json", {TERMINAL: rd_curve(TERMINAL, 0.8), long: rd_curve(long, 0.9)})
    assert main(["bdrate", str(tmp_path / "anchor.json"), str(tmp_path / "test.json")]) == 0
    out = capsys.readouterr().out
    assert not any(code in out for code in CONTROL_BYTES) and "pwned" in out
    [row] = [line for line in out.splitlines() if line.startswith("long")]
    assert len(row.split()[0]) == NAME_LIMIT and "…" in row.split()[0]


def test_an_error_line_quoting_curve_names_holds_no_control_code(tmp_path, capsys):
    save_curves(tmp_path / "curves.json", {TERMINAL: rd_curve(TERMINAL), "jpeg": rd_curve("jpeg")})
    assert (
        main(["bdrate", str(tmp_path / "curves.json"), str(tmp_path / "curves.json"), "--test-curve", "x"])
        == 2
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "has no curve 'x'" in err and "pwned" in err
    assert not any(code in err for code in CONTROL_BYTES)


def test_a_workers_line_about_a_trial_holds_no_control_code():
    trial = create_trial(state=TrialState.PRUNED, user_attrs={"prune_reason": TERMINAL})
    line = describe(trial)
    assert line.startswith("trial ") and "pwned" in line and not any(c in line for c in CONTROL_BYTES)


def test_eval_of_a_family_prints_its_test_folder_without_control_codes(capsys):
    family = SimpleNamespace(test=TERMINAL, measured_on=lambda data: False)
    assert envelope_on(family, "kodak", "mine-envelope") == {}
    out = capsys.readouterr().out
    assert "measured on evil" in out and not any(code in out for code in CONTROL_BYTES)


def test_an_rd_table_bounds_its_anchor_name():
    table = format_rd_table(rd_curve("mine"), rd_curve(TERMINAL + "x" * 200))
    assert not any(code in table for code in CONTROL_BYTES) and len(table.splitlines()[0]) < 160


def test_zoo_list_and_show_print_a_card_without_control_codes_and_bounded():
    card = zoo.card("cpu")
    hostile = card.model_copy(
        update={
            "description": TERMINAL + "d" * 1000,
            "train_command": TERMINAL,
            "kodak_bd_rate": {TERMINAL: next(iter(card.kodak_bd_rate.values())), **card.kodak_bd_rate},
        }
    )
    for text in (list_text(hostile), show_text(hostile)):
        assert not any(code in text for code in CONTROL_BYTES) and "pwned" in text
        assert max(len(line) for line in text.splitlines()) < 400
    assert list_text(card).splitlines()[0] == f"zoo:cpu: {card.description}"  # a plain card is as it was


HEADER = {"format": "shrink-jpeg/2", "width": 8, "height": 8, "ratio": 1, "quality": 50, "bundle": "0" * 64}


def shrink_file_with_header(path: Path, fields: dict) -> Path:
    """A JPEG with a SHRINK APP11 segment holding ``fields`` (no model involved)."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (90, 120, 150)).save(buffer, format="JPEG")
    jpeg = buffer.getvalue()
    payload = MAGIC + json.dumps(fields).encode()
    app11 = bytes([0xFF, 0xEB]) + (len(payload) + 2).to_bytes(2, "big") + payload
    path.write_bytes(jpeg[:2] + app11 + jpeg[2:])
    return path


def test_decompress_bounds_what_its_error_line_echoes_of_a_header(tmp_path, capsys):
    for fields, problem in [
        ({"format": "shrink-jpeg/" + "9" * 5000}, "file format shrink-jpeg/999"),
        (HEADER | {TERMINAL + "k" * 5000: 1}, "corrupt shrink header: evil"),
    ]:
        source = shrink_file_with_header(tmp_path / "x.jpg", fields)
        assert main(["decompress", str(source), "-o", str(tmp_path / "x.png")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and problem in err and len(err) < 600, err[:200]
        assert not any(code in err for code in CONTROL_BYTES) and not (tmp_path / "x.png").exists()


# ---------------------------------------------------------------- the report


def test_curve_names_reach_the_legend_and_hover_as_text_never_as_a_template():
    for name in (*MARKUP_NAMES, "%{x} %{customdata}"):
        trace = plots.curve_trace(rd_curve(name), "psnr", "#000")
        assert trace.name == html.plotly_label(name) and no_markup(trace.name)
        assert name not in trace.hovertemplate and "%{customdata}<br>" in trace.hovertemplate
        assert trace.customdata[1] == f"{html.plotly_label(name)} q1"
    assert len(plots.curve_trace(rd_curve("n" * 5000), "psnr", "#000").name) == NAME_LIMIT


def test_study_and_trial_attributes_reach_plotly_labels_as_text():
    study = hostile_study()
    hovers = [plots.trial_hover(point) for point in get_rd_points_info(study)]
    assert all(no_markup(hover) and "&lt;a href" in hover for hover in hovers)
    curve = LearningCurve(5, "PRUNED", [1], [0.9], [0.3], [0.1], f"reason {LINK}")
    [trace] = plots.learning_curves_figure([curve], 3).data
    assert no_markup(trace.hovertext[-1]) and trace.hovertext[-1].endswith(
        '<b>reason &lt;a href="https://evil.example/"&gt;click&lt;/a&gt;</b>'
    )
    bars = plots.importance_figure(ImportanceInfo({LINK: 0.7, BIG: 0.3}, "test")).data[0]
    assert list(bars.y) == [html.plotly_label(BIG), html.plotly_label(LINK)]
    assert plots.axis_title(LINK, "minimize") == f"{html.plotly_label(LINK)} (lower is better)"
    assert plots.axis_title("dev_bpp", "minimize") == "dev bpp (lower is better)"


def test_a_stored_checkpoint_path_no_system_takes_is_a_bounded_gallery_note(tmp_path):
    study = hostile_study()
    info = get_gallery_info(study, get_rd_points_info(study), [tmp_path])
    [note] = info.notes
    assert note.startswith("checkpoint 'evil\\x1b") and len(note) < 120, note[:200]


def test_report_tables_escape_and_bound_names_and_stored_attributes():
    refined = render_refined(RefinedInfo(fidelity=[("epochs", LINK, "3")]))
    assert no_markup(refined) and html.esc_name(LINK) in refined
    rows = [BDRateRow(LINK + "z" * 1000, BIG, {"msssim_db": -1.0, "psnr": None})]
    table = html.bd_table(rows)
    assert no_markup(table) and "z" * 100 not in table and html.esc_name(BIG) in table


def test_a_report_of_a_hostile_study_and_curves_file_holds_their_text_only_as_data(tmp_path):
    options = ReportOptions(curves=[hostile_curves_file(tmp_path / "hostile.json")])
    data = gather_report(hostile_study(), options, log=lambda _: None)
    page = render_report(data)
    body = page.split("</head>", 1)[1]
    header = body.split("<nav>", 1)[0]
    assert f"<h1>shrink study report: {html.esc_name(STUDY_NAME)}</h1>" in header and "s" * 100 not in page
    assert f"<title>shrink report: {html.esc_name(STUDY_NAME)}</title>" in page
    for trace in plots.rd_figure(data.points, {}, "psnr", "", None, data.extra_curves).data:
        assert no_markup(trace.name)
