"""The MLflow UI as a user sees it: a real `mlflow server` on loopback, opened in headless Chromium.

Opt-in (`-m browser`, run by default when Debian's chromium is installed): skipped, saying why, without
/usr/bin/chromium or the playwright package. Screenshots land in the test's temporary folder.
"""

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.test_mlflow_server import run_module, synthetic_run

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WAIT_MS = 180_000  # a page of the UI on a loaded 2-core machine: up to a minute
CURVE = ".js-plotly-plot .scatterlayer .js-line"  # one drawn line per run in a plotly chart


@pytest.fixture(scope="module")
def browser():
    """Debian's chromium, headless, driven by Playwright."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no {CHROMIUM}: apt-get install -y chromium chromium-driver (.ci/run does)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield chromium
        chromium.close()


def printed_links(stderr: str) -> dict[str, str]:
    """The `MLflow run:` and `MLflow runs:` links a job printed."""
    links = {}
    for line in stderr.splitlines():
        for label in ("run", "runs"):
            if line.startswith(f"MLflow {label}:"):
                links[label] = line.split(":", 1)[1].strip()
    return links


def test_the_ui_opens_on_the_runs_named_by_their_settings_with_headline_and_curves(mlflow_server, browser, tmp_path):
    links = []
    for temperature in (0.7, 1.0):
        run_dir = tmp_path / f"t{temperature}"
        synthetic_run(str(run_dir), temperature=temperature)
        done = run_module("jobs.aggregate", f"run_dir={run_dir}", f"tracking.uri={mlflow_server}",
                          "tracking.experiment=browser")
        assert done.returncode == 0, done.stderr[-3000:]
        links.append(printed_links(done.stderr))
    client = MlflowClient(tracking_uri=mlflow_server)
    runs = client.search_runs([client.get_experiment_by_name("browser").experiment_id], order_by=["attributes.start_time ASC"])
    names = [run.info.run_name for run in runs]
    assert names == ["synthetic/arith/cot t0.7 n4 number", "synthetic/arith/cot t1.0 n4 number"]

    page = browser.new_context(viewport={"width": 1600, "height": 1000}).new_page()
    page.goto(links[-1]["runs"])  # the experiment, on its runs table rather than GenAI traces
    for name in names:
        page.get_by_text(name, exact=True).first.wait_for(timeout=WAIT_MS)
    assert "/runs?" in page.url
    page.screenshot(path=tmp_path / "experiment-runs.png")

    page.locator('label:has(input[name="runs-view-mode"][value="CHART"])').click()  # the chart view
    card = page.locator('[data-testid="experiment-view-compare-runs-card"]').filter(has=page.locator('[title="accuracy/maj"]'))
    card.first.locator(CURVE).nth(len(runs) - 1).wait_for(timeout=WAIT_MS)  # both runs' maj@k curves, overlaid
    page.wait_for_timeout(2000)  # let the chart settle before the screenshot
    page.screenshot(path=tmp_path / "experiment-charts.png")
    lines = card.first.locator(CURVE)
    assert lines.count() >= len(runs) and all(lines.nth(i).get_attribute("d") for i in range(lines.count()))

    for i, (run, link) in enumerate(zip(runs, links)):
        assert link["run"].endswith(f"/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}")
        page.goto(link["run"])
        page.locator("strong", has_text=run.info.run_name).first.wait_for(timeout=WAIT_MS)  # the description's title
        page.get_by_text("maj@4: 66.7% (95% CI", exact=False).first.wait_for(timeout=WAIT_MS)
        assert page.get_by_text("3 problems, 12 samples").count() >= 1
        page.screenshot(path=tmp_path / f"run-{i}.png", full_page=True)
        page.get_by_text("Model metrics", exact=True).first.click()
        page.locator(CURVE).first.wait_for(timeout=WAIT_MS)
        page.screenshot(path=tmp_path / f"run-{i}-charts.png")
    print(f"screenshots: {tmp_path}")
