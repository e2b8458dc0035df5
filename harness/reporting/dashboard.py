"""A screenshot of a study in optuna-dashboard, for the README.

    python -m harness.dashboard NAME [--results-dir results] [--out DIR/NAME/dashboard.png]

Starts optuna-dashboard (the ``dashboard`` extra) on results/NAME/study.db at a free local port, has headless
Chromium render the study's page, writes the PNG and its manifest (``dashboard.json``), and stops the server.
Without Chromium or the dashboard extra it says so in one line and exits 0: the screenshot is optional.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from harness.common.manifest import make_manifest, write_json

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")
# Headless, as root, on a closed network: no sandbox (root), no GPU, and none of the background connections that a
# machine without internet access refuses; a fresh profile per call. Virtual time lets the single-page app fetch the
# study and draw its charts before the page is read.
BROWSER_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
                 "--virtual-time-budget=15000")


def find_browser() -> str | None:
    return next((p for p in map(shutil.which, BROWSERS) if p), None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_json(url: str, timeout: float = 60.0):
    deadline = time.time() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return json.loads(r.read())
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.3)


def serve(db: Path) -> tuple[subprocess.Popen, int]:
    """optuna-dashboard on ``db`` at a free local port, in a child process (stop it with ``.terminate()``)."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", "from optuna_dashboard import run_server; "
                               f"run_server({f'sqlite:///{db}'!r}, host='127.0.0.1', port={port})"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return server, port


def run_browser(browser: str, args: list[str]) -> str:
    """Headless Chromium with ``args`` (after BROWSER_FLAGS) in a fresh profile; returns what it printed."""
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run([browser, *BROWSER_FLAGS, f"--user-data-dir={profile}", *args], check=True,
                              capture_output=True, text=True, timeout=120)
    return done.stdout


def visible_text(html: str) -> str:
    """The text a reader sees in a rendered page's DOM: tags, styles and scripts dropped, white space collapsed."""
    html = re.sub(r"<(style|script)\b[^>]*>.*?</\1>", " ", html, flags=re.S | re.I)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)).strip()


def rendered_text(browser: str, url: str) -> str:
    """The visible text of ``url`` after its scripts ran (the DOM, not the HTML the server sent)."""
    return visible_text(run_browser(browser, ["--window-size=1600,1000", "--dump-dom", url]))


def screenshot(db: Path, study_name: str, out: Path, browser: str, size: tuple[int, int] = (1600, 1000)) -> dict:
    """Render the study page to ``out``; returns what the manifest records."""
    server, port = serve(db)
    try:
        summaries = wait_json(f"http://127.0.0.1:{port}/api/studies")["study_summaries"]
        study_id = next((s["study_id"] for s in summaries if s["study_name"] == study_name), None)
        if study_id is None:
            raise SystemExit(f"error: no study {study_name!r} in {db}")
        url = f"http://127.0.0.1:{port}/dashboard/studies/{study_id}"
        out.parent.mkdir(parents=True, exist_ok=True)
        run_browser(browser, [f"--window-size={size[0]},{size[1]}", f"--screenshot={out.resolve()}", url])
    finally:
        server.terminate()
        server.wait(timeout=10)
    return {"url_path": f"/dashboard/studies/{study_id}", "browser": browser, "window": list(size)}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m harness.dashboard", description=__doc__.split("\n\n")[0])
    p.add_argument("name", help="study directory under the results directory (results/NAME/study.db)")
    p.add_argument("--results-dir", type=Path, default=Path("results"))
    p.add_argument("--out", type=Path, default=None, help="PNG path (default: RESULTS_DIR/NAME/dashboard.png)")
    args = p.parse_args(argv)
    db = args.results_dir / args.name / "study.db"
    if not db.is_file():
        raise SystemExit(f"error: no study storage {db}; run `python -m harness.study {args.name}` first")
    try:
        import optuna_dashboard  # noqa: F401
    except ImportError:
        print("skipped: optuna-dashboard is not installed (pip install -e '.[dashboard]')")
        return
    browser = find_browser()
    if browser is None:
        print(f"skipped: no headless Chromium found ({', '.join(BROWSERS)}); on Debian: apt-get install chromium")
        return
    import optuna

    study_name = optuna.get_all_study_summaries(f"sqlite:///{db}")[0].study_name
    out = args.out or db.parent / "dashboard.png"
    t0 = time.time()
    info = screenshot(db, study_name, out, browser)
    write_json(out.with_suffix(".json"), make_manifest(
        command=" ".join(["python -m harness.dashboard"] + (argv if argv is not None else sys.argv[1:])),
        config={"storage": str(db), "study": study_name, "out": str(out), **info}, seed=None, wall_s=time.time() - t0))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
