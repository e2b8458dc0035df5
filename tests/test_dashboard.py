"""optuna-dashboard (the `dashboard` extra) on a small study: the objective's name, the study's description and
question, and each trial's metrics with units, overrides, run directory and sample grid, read over HTTP."""

import json

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


@pytest.mark.skipif(__import__("harness.reporting.dashboard", fromlist=["find_browser"]).find_browser() is None, reason="no headless Chromium installed")
def test_screenshot_command_renders_the_study_page(toy_smoke_results, tmp_path):
    from harness.reporting import dashboard

    out = tmp_path / "shot.png"
    dashboard.main(["toy_study-smoke", "--results-dir", str(toy_smoke_results), "--out", str(out)])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 20_000
    manifest = json.loads(out.with_suffix(".json").read_text())
    assert manifest["config"]["study"] == "toy_study" and manifest["command"].startswith("python -m harness.dashboard")
