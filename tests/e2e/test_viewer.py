"""End to end: the web viewer and its JSON listings on a real server holding real jobs.

The jobs (see ``tests/fakes/viewer_jobs.py``) run through the NeMo and Llama Stack front doors on
two fake models, one of which writes ``<script>alert(1)</script><img src=x onerror=alert(1)>``.
The browser tests drive Debian's Chromium through playwright and skip, saying why, without one.
"""

from __future__ import annotations

import html
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import yaml
from tests.fakes.browser import BrowserUnavailable, chromium, find_browser
from tests.fakes.model_server import FakeModelServer
from tests.fakes.serving import free_port
from tests.fakes.viewer_jobs import ROWS, SECRET, XSS, ViewerJobs, answer_a, answer_b, right

from evalstack.auth import key_settings_entry

pytestmark = pytest.mark.slow

METRIC = "accuracy/string-check"


@pytest.fixture(scope="module")
def jobs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ViewerJobs]:
    running = ViewerJobs.start(tmp_path_factory.mktemp("viewer"))
    try:
        yield running
    finally:
        running.stop()


def get(jobs: ViewerJobs, path: str, **params: Any) -> httpx.Response:
    return jobs.http.get(jobs.url + path, params=params)


def wrong_a() -> list[int]:
    return [n for n in range(ROWS) if not right(answer_a, n)]


# ---- the JSON listings --------------------------------------------------------------------------


def test_job_listing_shows_every_front_door_with_labels_and_headline(jobs: ViewerJobs) -> None:
    body = get(jobs, "/v1/evalstack/jobs").json()
    by_id = {job["id"]: job for job in body["data"]}
    assert body["total"] == 3 and set(by_id) == {jobs.baseline, jobs.candidate, jobs.llama}
    baseline = by_id[jobs.baseline]
    assert (baseline["front"], baseline["benchmark"], baseline["model"]) == ("nemo", "custom: qa", "model-a")
    accuracy = sum(right(answer_a, n) for n in range(ROWS)) / ROWS
    assert baseline["headline"]["value"] == pytest.approx(accuracy) and baseline["headline"]["n"] == ROWS
    assert baseline["headline"]["ci_low"] < accuracy < baseline["headline"]["ci_high"]
    llama = by_id[jobs.llama]
    assert (llama["front"], llama["benchmark"], llama["model"]) == ("llama_stack", "squares-ls", "model-a-ls")
    assert llama["progress"]["samples_processed"] == 10


def test_job_listing_filters_and_pages(jobs: ViewerJobs) -> None:
    only_b = get(jobs, "/v1/evalstack/jobs", model="model-b").json()
    assert [j["id"] for j in only_b["data"]] == [jobs.candidate]
    first = get(jobs, "/v1/evalstack/jobs", limit=2).json()
    second = get(jobs, "/v1/evalstack/jobs", limit=2, page=2).json()
    assert first["next_page"] == 2 and second["next_page"] is None
    assert [j["id"] for j in first["data"] + second["data"]] == [jobs.llama, jobs.candidate, jobs.baseline]
    assert get(jobs, "/v1/evalstack/jobs", status="running").json()["data"] == []
    bad = get(jobs, "/v1/evalstack/jobs", status="finished")
    assert bad.status_code == 400 and "accepted: created" in bad.json()["error"]["message"]


def test_sample_listing_filters_pages_and_searches(jobs: ViewerJobs) -> None:
    path = f"/v1/evalstack/jobs/{jobs.baseline}/samples"
    seen: list[int] = []
    query: dict[str, Any] = {"metric": METRIC, "outcome": "wrong", "limit": 4}
    while True:
        body = get(jobs, path, **query).json()
        seen += [s["index"] for s in body["data"]]
        if body["next"] is None:
            break
        query = {**dict(httpx.QueryParams(body["next"])), "limit": 4}
    assert seen == wrong_a()
    count = get(jobs, f"{path}/count", metric=METRIC, outcome="wrong").json()
    assert count == {"count": len(wrong_a()), "at_least": False}
    assert get(jobs, f"{path}/count").json() == {"count": ROWS, "at_least": False}
    found = get(jobs, path, q="onerror").json()
    assert [s["index"] for s in found["data"]] == [n for n in range(ROWS) if n % 10 == 3]
    assert found["data"][0]["output_text"] == XSS
    assert found["data"][0]["request"]["messages"] == [{"role": "user", "content": "What is 3 squared?"}]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"outcome": "wrong"}, "need a metric"),
        ({"after": "x"}, "after must be a sample key 'index:task'"),
        ({"limit": "0"}, "limit must be at least 1"),
        ({"truncated": "maybe"}, "truncated must be 1 or 0"),
    ],
)
def test_sample_listing_rejects_bad_parameters_saying_why(
    jobs: ViewerJobs, params: dict[str, str], message: str
) -> None:
    response = get(jobs, f"/v1/evalstack/jobs/{jobs.baseline}/samples", **params)
    assert response.status_code == 400 and message in response.json()["error"]["message"]
    missing = get(jobs, "/v1/evalstack/jobs/eval-nope/samples")
    assert missing.status_code == 404 and "eval-nope" in missing.json()["error"]["message"]


# ---- the pages, as HTML -------------------------------------------------------------------------


def page_paths(jobs: ViewerJobs) -> list[tuple[str, bool]]:
    """Every kind of page, and whether it shows a model output holding XSS."""
    both = {"baseline": jobs.baseline, "candidate": jobs.candidate}
    flips = {**both, "task": "qa", "metric": "accuracy"}
    return [
        ("/ui/", False),
        (f"/ui/jobs/{jobs.baseline}", False),
        (f"/ui/jobs/{jobs.baseline}/samples", True),
        (f"/ui/jobs/{jobs.baseline}/samples?" + urlencode({"q": "onerror"}), True),
        (f"/ui/jobs/{jobs.baseline}/sample?key=3:qa", True),
        (f"/ui/compare?{urlencode(both)}", False),
        (f"/ui/compare/flips?{urlencode({**flips, 'direction': 'n01'})}", True),
        (f"/ui/compare/flips?{urlencode({**flips, 'direction': 'n10'})}", False),
    ]


def test_every_page_escapes_model_output_under_a_strict_policy(jobs: ViewerJobs) -> None:
    escaped = html.escape(XSS, quote=False)
    for path, shows_output in page_paths(jobs):
        response = jobs.http.get(jobs.url + path)
        assert response.status_code == 200, path
        policy = response.headers["content-security-policy"]
        assert (
            "script-src 'self'" in policy and "default-src 'none'" in policy and "unsafe-inline" not in policy
        )
        assert "<script>alert" not in response.text and "<img src=x" not in response.text, path
        assert not re.search(r"<script(?![^>]*\bsrc=)", response.text), f"inline script on {path}"
        assert (escaped in response.text) == shows_output, path


def test_sample_page_and_json_show_the_extracted_answer(jobs: ViewerJobs) -> None:
    page = get(jobs, f"/ui/jobs/{jobs.baseline}/sample", key="4:qa").text
    extracted = re.search(r'<tr class="extracted"><th>extracted \(accuracy\)</th><td>(.*?)</td></tr>', page)
    assert extracted is not None and ">16</pre>" in extracted.group(1)  # model A: 4 squared, trimmed
    body = get(jobs, f"/v1/evalstack/jobs/{jobs.baseline}/samples", q="onerror").json()
    assert body["data"][0]["extracted"] == {"accuracy": XSS}  # JSON as recorded; pages escape it
    assert body["data"][0]["judgement"] == {}  # string-check has no judge


def test_job_page_redacts_secrets_and_links_counts_to_samples(jobs: ViewerJobs) -> None:
    page = get(jobs, f"/ui/jobs/{jobs.baseline}").text
    assert SECRET not in page and "*****" in page
    assert f"/ui/jobs/{jobs.baseline}/samples?error=inference" in page
    assert f"/ui/jobs/{jobs.baseline}/samples?unparsed=1" in page


def test_job_page_draws_each_score_distribution_as_an_image(jobs: ViewerJobs) -> None:
    page = get(jobs, f"/ui/jobs/{jobs.baseline}").text
    assert f"/ui/jobs/{jobs.baseline}/distribution.svg?metric=accuracy%2Fstring-check" in page
    image = get(jobs, f"/ui/jobs/{jobs.baseline}/distribution.svg", metric=METRIC)
    assert image.status_code == 200 and image.headers["content-type"].startswith("image/svg+xml")
    right_count = sum(right(answer_a, n) for n in range(ROWS))
    assert f"right {right_count} · wrong {ROWS - right_count}" in image.text
    assert get(jobs, f"/ui/jobs/{jobs.baseline}/distribution.svg", metric="nope").status_code == 404


def test_pages_say_what_is_wrong_with_bad_input(jobs: ViewerJobs) -> None:
    missing = get(jobs, "/ui/jobs/eval-nope")
    assert missing.status_code == 404 and "Job eval-nope not found" in missing.text
    bad = get(jobs, f"/ui/jobs/{jobs.baseline}/samples", outcome="sideways", metric="m")
    assert bad.status_code == 400 and "outcome must be one of right, wrong" in bad.text
    unknown = get(jobs, f"/ui/jobs/{jobs.baseline}/sample", key="99:qa")
    assert unknown.status_code == 404 and "no sample 99" in unknown.text


@contextmanager
def evalstack_view(tmp_path: Path, *args: str) -> Iterator[str]:
    """Run ``evalstack view ARGS`` on a free port; yield its loopback URL once it answers."""
    port = free_port()
    env = {**os.environ, "EVALSTACK_DATA_HOME": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "evalstack.cli", "view", "--port", str(port), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{url}/openapi.json", timeout=5)
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, "evalstack view did not start"
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def test_evalstack_view_serves_the_same_store_alone(jobs: ViewerJobs, tmp_path: Path) -> None:
    with evalstack_view(tmp_path, "--db", jobs.server_db) as url:
        response = httpx.get(f"{url}/ui/", timeout=5)
        assert response.status_code == 200 and jobs.baseline in response.text
        listing = httpx.get(
            f"{url}/v1/evalstack/jobs/{jobs.baseline}/samples", params={"q": "onerror"}
        ).json()
        assert [s["index"] for s in listing["data"]] == [n for n in range(ROWS) if n % 10 == 3]
        assert httpx.get(f"{url}/v1/evaluation/jobs").status_code == 404  # the viewer alone


READER_KEY, RUNNER_KEY = "viewer-key-read", "viewer-key-run"


def settings_with_keys(jobs: ViewerJobs, folder: Path) -> Path:
    """A settings file over the jobs' store with two keys: ``ops`` may read, ``ci`` may only run."""
    settings = folder / "settings.yaml"
    keys = [key_settings_entry("ops", READER_KEY, ["read"]), key_settings_entry("ci", RUNNER_KEY, ["run"])]
    settings.write_text(yaml.safe_dump({"db_url": jobs.server_db, "auth": {"api_keys": keys}}))
    return settings


def test_evalstack_view_asks_for_the_servers_keys_and_may_then_listen_beyond_loopback(
    jobs: ViewerJobs, tmp_path: Path
) -> None:
    reader, runner_only = READER_KEY, RUNNER_KEY
    settings = settings_with_keys(jobs, tmp_path)
    with evalstack_view(tmp_path, "--config", str(settings), "--host", "0.0.0.0") as url:
        page = f"{url}/ui/jobs/{jobs.baseline}"
        anonymous = httpx.get(page)
        assert anonymous.status_code == 401
        assert anonymous.headers["www-authenticate"] == 'Basic realm="evalstack"'  # the browser's prompt
        assert jobs.baseline not in anonymous.text
        assert httpx.get(page, auth=("anyone", "not-a-key")).status_code == 401
        shown = httpx.get(page, auth=("anyone", reader))
        assert shown.status_code == 200 and jobs.baseline in shown.text
        listing = f"{url}/v1/evalstack/jobs"
        assert httpx.get(listing).status_code == 401
        bearer = httpx.get(listing, headers={"Authorization": f"Bearer {reader}"})
        assert bearer.status_code == 200 and jobs.baseline in {j["id"] for j in bearer.json()["data"]}
        refused = httpx.get(listing, headers={"Authorization": f"Bearer {runner_only}"})
        assert refused.status_code == 403 and "lacks the 'read' scope" in refused.json()["error"]["message"]


# ---- in a real browser --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        find_browser()
        with chromium() as running:
            yield running
    except BrowserUnavailable as exc:
        pytest.skip(f"browser tests need a system Chromium: {exc}")


@pytest.fixture
def page(browser: Any, tmp_path: Path) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.dialogs = []  # type: ignore[attr-defined]
    page.on("dialog", lambda dialog: (page.dialogs.append(dialog.message), dialog.dismiss()))
    problems: list[str] = []
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    try:
        yield page
        assert problems == []  # no script error, nothing the Content-Security-Policy had to block
    finally:
        context.close()


def test_browser_path_from_jobs_to_a_wrong_answer_and_back(jobs: ViewerJobs, page: Any) -> None:
    page.goto(f"{jobs.url}/ui/")
    page.click(f"a[href='/ui/jobs/{jobs.baseline}']")
    page.wait_for_url(f"**/ui/jobs/{jobs.baseline}")
    assert page.locator("h1").inner_text().startswith("custom: qa on model-a")
    unparsed = page.locator("a[href$='samples?unparsed=1'] .lazy-count")
    unparsed.filter(has_text="0").wait_for()  # counted apart, after the page
    loaded = "async () => { const i = document.images[0]; await i.decode(); return i.naturalWidth }"
    assert page.evaluate(loaded) == 420  # the distribution image, drawn apart from the page
    page.click("text=wrong answers")
    page.wait_for_url("**/samples?*outcome=wrong*")
    page.locator("#match-count").filter(has_text="matching").wait_for()
    assert page.locator("#match-count").inner_text() == f"{len(wrong_a())} matching"  # counted apart
    links = page.locator("a.sample-link")
    assert [int(t.lstrip("#")) for t in links.all_inner_texts()] == wrong_a()
    page.get_by_role("link", name="#3", exact=True).click()
    page.wait_for_url("**/sample?key=3*")
    assert page.locator("pre.output").inner_text() == XSS  # shown as text, never run
    page.keyboard.press("j")
    page.wait_for_url("**/sample?key=5*")
    page.keyboard.press("k")
    page.wait_for_url("**/sample?key=3*")
    page.click("#back-to-list")
    page.wait_for_url("**/samples?*outcome=wrong*")
    assert page.locator("a.sample-link").count() == len(wrong_a())
    assert page.dialogs == []  # type: ignore[attr-defined]


def test_browser_compares_two_jobs_and_opens_a_flipped_pair(jobs: ViewerJobs, page: Any) -> None:
    page.goto(f"{jobs.url}/ui/jobs/{jobs.baseline}")
    page.select_option("select[name=candidate]", jobs.candidate)
    page.click("form[action='/ui/compare'] button")
    page.wait_for_url("**/ui/compare?*")
    n10 = [n for n in range(ROWS) if right(answer_a, n) and not right(answer_b, n)]
    n01 = [n for n in range(ROWS) if not right(answer_a, n) and right(answer_b, n)]
    assert page.locator("#flip-n10-1").inner_text() == str(len(n10))
    assert page.locator("#flip-n01-1").inner_text() == str(len(n01))
    page.click("#flip-n10-1")
    page.wait_for_url("**/compare/flips?*")
    pairs = page.locator("section.flip-pair")
    assert pairs.count() == len(n10)
    first = pairs.nth(0).locator("pre.output")
    assert first.nth(0).inner_text() == answer_a(f"What is {n10[0]} squared?")
    assert first.nth(1).inner_text() == answer_b(f"What is {n10[0]} squared?")
    assert page.dialogs == []  # type: ignore[attr-defined]


def test_browser_runs_no_model_written_markup_on_any_page(jobs: ViewerJobs, page: Any) -> None:
    for path, shows_output in page_paths(jobs):
        page.goto(jobs.url + path)
        if shows_output:
            assert page.get_by_text(XSS).count() >= 1, path
        assert page.locator("img[src=x]").count() == 0, path
        assert page.evaluate("document.querySelectorAll('script:not([src])').length") == 0, path
    assert page.dialogs == []  # type: ignore[attr-defined]


def test_browser_shows_live_progress_of_a_running_job(jobs: ViewerJobs, page: Any) -> None:
    """Runs last: it adds a job to the store the other tests count."""
    with FakeModelServer(answer=answer_a, latency=0.25) as slow:
        job_id = jobs.nemo_job(slow, "slow-model", parallelism=1)  # 40 rows, one at a time: about 10 s
        page.goto(f"{jobs.url}/ui/?{urlencode({'model': 'slow-model'})}")
        cell = page.locator(f".progress[data-job='{job_id}'] .progress-text")
        done_at_load = cell.inner_text().split(" / ")[0]
        assert done_at_load != "40"  # still running when the page loaded
        moved_on = re.compile(rf"^(?!{done_at_load} / )[\d,]+ / 40")
        cell.filter(has_text=moved_on).wait_for(timeout=15_000)  # updated in place by the page's script
        assert page.locator(f"a[href='/ui/jobs/{job_id}']").count() == 1
        jobs.wait(job_id)
        page.wait_for_selector("span.status-completed", timeout=15_000)  # the page reloads once it ends
        assert (
            page.locator(f".progress[data-job='{job_id}'] .progress-text").inner_text().startswith("40 / 40")
        )


def test_browser_signs_in_to_evalstack_view_with_a_key(
    jobs: ViewerJobs, browser: Any, tmp_path: Path
) -> None:
    settings = settings_with_keys(jobs, tmp_path)
    with evalstack_view(tmp_path, "--config", str(settings)) as url:
        stranger = browser.new_context(http_credentials={"username": "ops", "password": "not-a-key"})
        try:  # the browser answers the Basic prompt with a bad key: refused, nothing shown
            refused = stranger.new_page().goto(f"{url}/ui/jobs/{jobs.baseline}")
            assert refused is not None and refused.status == 401 and jobs.baseline not in refused.text()
        finally:
            stranger.close()
        context = browser.new_context(http_credentials={"username": "ops", "password": READER_KEY})
        problems: list[str] = []
        try:
            page = context.new_page()
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.goto(f"{url}/ui/jobs/{jobs.baseline}")
            assert page.locator("h1").inner_text().startswith("custom: qa on model-a")
            # the counts the page fetches afterwards are authorized too
            page.locator("a[href$='samples?unparsed=1'] .lazy-count").filter(has_text="0").wait_for()
        finally:
            context.close()
        assert problems == []
