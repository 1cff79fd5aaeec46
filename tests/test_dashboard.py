"""optuna-dashboard on a real study: notes, crops and the RD plot reach its HTTP API."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from shrink.search.cli import main

from .helpers import load, write_spec

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get_json(url: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return json.loads(response.read())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def test_dashboard_lists_each_trials_artifacts_and_the_study_plot(tmp_path, image_folder):
    spec = write_spec(tmp_path / "toy.toml", image_folder, n_trials=2)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    assert main(["study", "create", str(spec), "--storage", url]) == 0
    assert main(["worker", "--storage", url, "--study-name", "toy"]) == 0
    artifacts = tmp_path / "study.runs" / "artifacts"
    assert len(list(artifacts.iterdir())) == 4  # crops PNG + RD JSON per trial

    port = free_port()
    server = subprocess.Popen(
        [str(BIN / "shrink"), "dashboard", "--storage", url, "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        studies = get_json(f"http://127.0.0.1:{port}/api/studies")["study_summaries"]
        study_id = next(s["study_id"] for s in studies if s["study_name"] == "toy")
        detail = get_json(f"http://127.0.0.1:{port}/api/studies/{study_id}")
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert len(detail["trials"]) == 2
    for trial in detail["trials"]:
        names = sorted(a["filename"] for a in trial["artifacts"])
        assert names == [f"trial-{trial['number']}-crops.png", f"trial-{trial['number']}-rd.json"]
        assert f"## Trial {trial['number']}" in trial["note"]["body"]
    plots = {plot["id"]: json.loads(plot["graph_object"]) for plot in detail["plotly_graph_objects"]}
    assert set(plots) == {"rd-vs-jpeg"}  # two objectives: no 3-D front
    names = [trace.get("name") for trace in plots["rd-vs-jpeg"]["data"]]
    assert names[0] == "JPEG (dev)" and "Pareto front" in names
    assert load(url).trials[0].user_attrs["rd_point"]["dev_bpp"] > 0
