"""optuna-dashboard (the `dashboard` extra) on a small study: the objective's name, the study's description and
question, and each trial's metrics with units, overrides, run directory and sample grid, read over HTTP."""

import json
import os

import pytest

pytest.importorskip("optuna_dashboard")


def test_dashboard_shows_the_objective_the_question_and_each_trials_metrics(toy_smoke_results):
    from harness.reporting.dashboard import serve, wait_json

    server, port = serve(toy_smoke_results / "toy_study-smoke" / "study.db")
    try:
        summaries = wait_json(f"http://127.0.0.1:{port}/api/studies")["study_summaries"]
        study_id = next(s["study_id"] for s in summaries if s["study_name"] == "toy_study")
        detail = wait_json(f"http://127.0.0.1:{port}/api/studies/{study_id}")
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert detail["objective_names"] == ["final MMD² of the toy generator (RBF kernels)"]
    attrs = {a["key"]: a["value"] for a in detail["user_attrs"]}
    assert attrs["description"] == "test study on the exact-score toy" and attrs["question"]
    assert "Question" in detail["note"]["body"] and "`mmd2`: MMD² (RBF kernels, toy)" in detail["note"]["body"]
    done = [t for t in detail["trials"] if t["state"] == "Complete"]
    assert len(done) == 6
    for t in done:
        ua = {a["key"]: a["value"] for a in t["user_attrs"]}
        assert "final MMD² (RBF kernels, toy)" in ua and "final in-mode fraction" in ua
        assert "lr_gen" in ua["config_overrides"] and ua["run_dir"] and ua["samples"].endswith(".png")


def test_screenshot_command_skips_cleanly_without_a_browser(toy_smoke_results, monkeypatch, capsys):
    from harness.reporting import dashboard

    monkeypatch.setattr(dashboard, "find_browser", lambda: None)
    dashboard.main(["toy_study-smoke", "--results-dir", str(toy_smoke_results), "--out", str(toy_smoke_results / "d.png")])
    assert capsys.readouterr().out.startswith("skipped: no headless Chromium")
    assert not (toy_smoke_results / "d.png").exists()
    with pytest.raises(SystemExit, match="no study storage"):
        dashboard.main(["nothing", "--results-dir", str(toy_smoke_results)])


# .ci/run installs Debian's Chromium and sets HARNESS_REQUIRE_BROWSER: there the browser tests must run, not skip.
NO_BROWSER = __import__("harness.reporting.dashboard", fromlist=["find_browser"]).find_browser() is None
needs_browser = pytest.mark.skipif(NO_BROWSER and not os.environ.get("HARNESS_REQUIRE_BROWSER"),
                                   reason="no headless Chromium installed (apt-get install chromium; .ci/run does)")


@needs_browser
def test_the_rendered_dashboard_shows_the_study_its_objective_and_a_trials_metrics(toy_smoke_results):
    """What a reader sees, read from the DOM after the page's scripts ran (not from the API): the study page names
    the study and its objective with its unit; the trials page shows a trial's value and its metrics."""
    from harness.reporting.dashboard import find_browser, rendered_text, serve, wait_json

    browser = find_browser()
    assert browser, "HARNESS_REQUIRE_BROWSER is set but no Chromium is installed"
    server, port = serve(toy_smoke_results / "toy_study-smoke" / "study.db")
    try:
        study_id = next(s["study_id"] for s in wait_json(f"http://127.0.0.1:{port}/api/studies")["study_summaries"]
                        if s["study_name"] == "toy_study")
        detail = wait_json(f"http://127.0.0.1:{port}/api/studies/{study_id}")
        study_page = rendered_text(browser, f"http://127.0.0.1:{port}/dashboard/studies/{study_id}")
        trials_page = rendered_text(browser, f"http://127.0.0.1:{port}/dashboard/studies/{study_id}/trials")
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert "toy_study" in study_page
    assert "final MMD² of the toy generator (RBF kernels)" in study_page  # the objective, with its unit
    first = min((t for t in detail["trials"] if t["state"] == "Complete"), key=lambda t: t["number"])
    attrs = {a["key"]: a["value"] for a in first["user_attrs"]}
    assert f"Trial {first['number']}" in trials_page and "Complete" in trials_page
    assert "final MMD² (RBF kernels, toy)" in trials_page  # the trial's metric, by its name with its unit
    assert str(attrs["final MMD² (RBF kernels, toy)"]) in trials_page  # and its value as stored
    assert "Loading" not in trials_page[:200]


@needs_browser
def test_screenshot_command_renders_the_study_page(toy_smoke_results, tmp_path):
    from harness.reporting import dashboard

    out = tmp_path / "shot.png"
    dashboard.main(["toy_study-smoke", "--results-dir", str(toy_smoke_results), "--out", str(out)])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 20_000
    manifest = json.loads(out.with_suffix(".json").read_text())
    assert manifest["config"]["study"] == "toy_study" and manifest["command"].startswith("python -m harness.dashboard")
