"""The web console in real headless Chromium, driven by Playwright.

Started by `runtime/tests/ui.rs`, which runs the real `eflow` server, makes
tenants, flows and runs through the API, and passes what it made in
`EFLOW_UI_FACTS`. This script uses the console as people do (log in, filter,
page, open a run, approve, reject, cancel, log out), checks tenant scoping,
runs axe-core on every page, fails on any console error or any request to a
host other than the server, saves a screenshot of every page, and prints what
it did as JSON on its last line for the Rust side to check through the API.
"""

import json
import os
import sys
import urllib.parse

from playwright.sync_api import expect, sync_playwright

BASE = os.environ["EFLOW_URL"].rstrip("/")
HOST = urllib.parse.urlsplit(BASE).netloc
FACTS = json.loads(os.environ["EFLOW_UI_FACTS"])
SHOTS = os.environ["EFLOW_UI_SHOTS"]
with open(os.environ["EFLOW_UI_AXE"], encoding="utf-8") as f:
    AXE = f.read()
CHROMIUM = os.environ.get("EFLOW_CHROMIUM", "/usr/bin/chromium")
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

problems = []
shots = []

# Deadlines for what the pages must come to show, generous for a busy CI
# machine (a test waits for a state, it never times one).
expect.set_options(timeout=20_000)


LONG_TASKS = """
window.__eflowLongTasks = [];
try {
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) window.__eflowLongTasks.push(e.duration);
  }).observe({ type: "longtask", buffered: true });
} catch (e) {}
"""

# The longest main-thread task (ms, 0 when none passed 50 ms) of each page checked.
long_tasks = {}


def say(*a):
    print(*a, flush=True)


class Watched:
    """A browser context whose pages are watched: console errors, uncaught
    errors, and requests to any host but the server (which are also refused)."""

    def __init__(self, browser, name):
        self.name = name
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.context.route(lambda url: urllib.parse.urlsplit(url).netloc != HOST, self.refuse)
        # Main-thread tasks over 50 ms, as the browser reports them (read
        # before axe runs, which makes its own): reported, not asserted.
        self.context.add_init_script(LONG_TASKS)
        self.page = self.context.new_page()
        self.page.set_default_timeout(30_000)
        self.page.on("console", self.console)
        self.page.on("pageerror", lambda e: problems.append(f"{self.name}: uncaught error on {self.page.url}: {e}"))
        self.page.on("request", self.request)
        # Pages the test opens to see them refused: the browser logs their
        # status as a console error, which is the point there.
        self.refused = set()

    def refuse(self, route):
        problems.append(f"{self.name}: a request left the server: {route.request.url}")
        route.abort()

    def console(self, msg):
        expected = msg.location.get("url") in self.refused and msg.text.startswith(
            "Failed to load resource: the server responded with a status of 4"
        )
        if msg.type == "error" and not expected:
            problems.append(f"{self.name}: console error on {self.page.url}: {msg.text}")

    def request(self, req):
        if urllib.parse.urlsplit(req.url).netloc != HOST:
            problems.append(f"{self.name}: request to another host: {req.url}")

    def goto(self, path, refused=False):
        if refused:
            self.refused.add(BASE + path)
        resp = self.page.goto(BASE + path)
        self.page.wait_for_load_state("load")
        return resp

    def login(self, token):
        self.goto("/ui")
        expect(self.page).to_have_url(BASE + "/ui/login")
        self.page.fill("#token", token)
        self.page.click("form.login button[type=submit]")
        expect(self.page).to_have_url(BASE + "/ui")
        expect(self.page.locator("h1")).to_have_text("Overview")

    def check(self, shot):
        """axe-core on the page as it is now, and its screenshot."""
        tasks = self.page.evaluate("() => window.__eflowLongTasks || []")
        long_tasks[f"{self.name} {shot}"] = max(tasks, default=0)
        axe(self.page, f"{self.name} {shot}")
        path = os.path.join(SHOTS, f"{self.name}-{shot}.png")
        self.page.screenshot(path=path, full_page=True)
        shots.append(path)
        # What a person sees first, for the docs (docs/ui/).
        path = os.path.join(SHOTS, "top", f"{self.name}-{shot}.png")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self.page.screenshot(path=path)

    def csrf(self):
        return self.page.locator("header form input[name=csrf]").get_attribute("value")


def axe(page, what):
    # Evaluated through the DevTools protocol: the page's content security
    # policy (scripts from the server only) stays as it is.
    page.evaluate(AXE)
    violations = page.evaluate(
        """async () => {
            const r = await axe.run(document, { resultTypes: ["violations"] });
            return r.violations.map(v => ({
                id: v.id, impact: v.impact, help: v.help,
                nodes: v.nodes.slice(0, 5).map(n => n.target.join(" ")),
            }));
        }"""
    )
    if violations:
        problems.append(f"axe on {what} ({page.url}): {json.dumps(violations, indent=1)}")


def run_ids(page):
    return [a.inner_text() for a in page.locator("#runs tbody tr td:first-child a").all()]


def statuses(page):
    return [s.inner_text() for s in page.locator("#runs tbody tr td .badge").all()]


def main():
    a_runs = FACTS["a_runs"]
    retrain = FACTS["retrain"]
    wide = FACTS["wide"]
    long_run = FACTS["long"]
    failed = FACTS["failed"]
    done = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS, headless=True)

        # ---- tenant A: log in ------------------------------------------------
        a = Watched(browser, "acme")
        a.goto("/ui/runs")
        expect(a.page).to_have_url(BASE + "/ui/login?next=%2Fui%2Fruns")
        # The long-task observer sees a task the test makes itself (so its
        # report of none on the console's pages means none), then forgets it.
        # (a task of the page's own: one run through DevTools is not counted)
        a.page.evaluate("() => setTimeout(() => { const t = performance.now(); while (performance.now() - t < 120) {} }, 0)")
        a.page.wait_for_function("() => window.__eflowLongTasks.some(d => d >= 100)")
        a.page.evaluate("() => { window.__eflowLongTasks = []; }")
        a.check("login")
        a.refused.add(BASE + "/ui/login")
        a.page.fill("#token", "eflow_not-a-token")
        a.page.click("form.login button[type=submit]")
        expect(a.page.locator("p.error")).to_be_visible()
        # The login goes on to the page asked for.
        a.page.fill("#token", FACTS["a_token"])
        a.page.click("form.login button[type=submit]")
        expect(a.page).to_have_url(BASE + "/ui/runs")
        a.goto("/ui")
        expect(a.page.locator("h1")).to_have_text("Overview")
        expect(a.page.locator("#flows")).to_contain_text("Retrain")
        counts = a.page.locator("#status-counts tbody tr")
        assert counts.count() == 1, counts.count()
        expect(counts.first.locator("th")).to_have_text("acme")
        # One failed run; the failed count opens it.
        failed_count = counts.first.locator("a[aria-label*=' failed runs ']")
        expect(failed_count).to_have_text("1")
        failed_count.click()
        assert "status=failed" in a.page.url, a.page.url
        assert run_ids(a.page) == [failed["id"]], run_ids(a.page)
        a.goto("/ui")
        expect(a.page.locator("#schedules")).to_contain_text("Long")
        expect(a.page.locator("#schedules")).to_contain_text("Europe/Berlin")
        a.check("overview")

        # The browser gets the script gzip-compressed.
        script = a.page.request.get(BASE + "/ui/static/htmx.min.js", headers={"Accept-Encoding": "gzip"})
        assert script.ok, script.status
        assert script.headers.get("content-encoding") == "gzip", script.headers
        with_script = [r for r in a.page.evaluate(
            "() => performance.getEntriesByType('resource').map(e => [e.name, e.encodedBodySize, e.decodedBodySize])"
        ) if r[0].endswith("/ui/static/htmx.min.js")]
        assert with_script, "the overview loads htmx"
        for name, encoded, decoded in with_script:
            assert 0 < encoded < decoded, (name, encoded, decoded)
            say(f"htmx.min.js in the browser: {encoded} bytes over the wire, {decoded} decoded")

        # ---- runs: every filter in the URL, pages ---------------------------
        a.goto("/ui/runs")
        assert sorted(run_ids(a.page)) == sorted(a_runs), (run_ids(a.page), a_runs)
        a.check("runs")
        a.page.select_option("#f-status", "failed")
        a.page.click("form.filters button[type=submit]")
        assert "status=failed" in a.page.url, a.page.url
        assert run_ids(a.page) == [failed["id"]], run_ids(a.page)
        a.page.fill("#f-error", failed["code"])
        a.page.click("form.filters button[type=submit]")
        assert f"error={urllib.parse.quote(failed['code'])}" in a.page.url, a.page.url
        assert run_ids(a.page) == [failed["id"]], run_ids(a.page)
        a.check("runs-filtered")
        a.goto("/ui/runs?status=running&flow=Retrain")
        assert set(statuses(a.page)) == {"running"}, statuses(a.page)
        assert sorted(run_ids(a.page)) == sorted(retrain + [wide]), run_ids(a.page)
        a.goto("/ui/runs?error=NoSuchCode")
        expect(a.page.locator("#no-runs")).to_be_visible()
        a.goto("/ui/runs?since=2999-01-01T00:00")
        expect(a.page.locator("#no-runs")).to_be_visible()
        a.goto("/ui/runs?until=2999-01-01T00:00")
        assert sorted(run_ids(a.page)) == sorted(a_runs)
        a.goto("/ui/runs?status=bogus", refused=True)
        expect(a.page.locator("p.error")).to_contain_text("invalid_status")
        # Two at a time, following "Next page" to the end: each run once.
        a.goto("/ui/runs?limit=2")
        seen = []
        for _ in range(100):
            page_ids = run_ids(a.page)
            assert 1 <= len(page_ids) <= 2, page_ids
            seen += page_ids
            nxt = a.page.locator("a[rel=next]")
            if nxt.count() == 0:
                break
            nxt.click()
            a.page.wait_for_load_state("load")
            assert "cursor=" in a.page.url and "limit=2" in a.page.url, a.page.url
        assert sorted(seen) == sorted(a_runs), (seen, a_runs)
        a.check("runs-last-page")

        # ---- a run: graph, steps, events paged -------------------------------
        a.goto("/ui/runs/" + urllib.parse.quote(wide, safe=""))
        expect(a.page.locator("#run-status")).to_have_text("running")
        nodes = a.page.locator("svg.graph g.node")
        assert nodes.count() == 5, nodes.count()
        fan = a.page.locator("svg.graph g.node.fan-out")
        assert fan.count() == 1, fan.count()
        expect(fan).to_contain_text(f"{FACTS['wide_children']} of {FACTS['wide_children']} done")
        # The attempts in time: a bar each (the fan-out one), the table behind it.
        bars = a.page.locator("svg.gantt g.bar")
        assert bars.count() == 4, bars.count()
        expect(a.page.locator("svg.gantt g.bar.st-running")).to_have_count(1)
        a.page.click("details.attempts summary")
        expect(a.page.locator("#attempts")).to_contain_text(f"scores (fan-out, {FACTS['wide_children']} children)")
        a.check("run")
        first = [int(t) for t in a.page.locator("#event-log tbody tr td:first-child").all_inner_texts()]
        assert len(first) == 50, len(first)
        a.page.click("a[rel=next]")
        a.page.wait_for_load_state("load")
        second = [int(t) for t in a.page.locator("#event-log tbody tr td:first-child").all_inner_texts()]
        assert second and second[0] == first[-1] + 1, (first[-1], second[:3])
        a.check("run-events-page-2")

        # ---- approvals: what is decided on, approve, reject, pages ----------
        a.goto("/ui/approvals")
        cards = a.page.locator("article.approval")
        assert cards.count() == len(retrain) + 1, cards.count()
        evidence = a.page.locator(".evidence").first
        expect(evidence).to_contain_text("primary_metric")
        expect(evidence).to_contain_text("metrics")
        a.check("approvals")
        a.goto("/ui/approvals?limit=1")
        first_card = a.page.locator("form.decide").get_attribute("data-approval")
        a.page.click("a[rel=next]")
        second_card = a.page.locator("form.decide").get_attribute("data-approval")
        assert first_card != second_card, first_card
        a.goto("/ui/approvals")
        form = a.page.locator(f'form.decide[data-approval="{retrain[0]}/decision"]')
        form.locator("textarea").fill("looks good: AUC above the bar")
        form.locator("button.approve").click()
        expect(a.page.locator("p.notice")).to_contain_text("Approved")
        done["approved"] = retrain[0]
        form = a.page.locator(f'form.decide[data-approval="{retrain[1]}/decision"]')
        form.locator("textarea").fill("the metrics are off")
        form.locator("button.danger").click()
        expect(a.page.locator("p.notice")).to_contain_text("Rejected")
        done["rejected"] = retrain[1]
        assert a.page.locator("article.approval").count() == len(retrain) - 1
        a.check("approvals-after")

        # A run's page follows the run (htmx) without being loaded again: a
        # decision made elsewhere (the API) shows up on the open page.
        a.goto("/ui/runs/" + urllib.parse.quote(failed["id"], safe=""))
        failed_bars = a.page.locator("svg.gantt g.bar.st-failed")
        assert failed_bars.count() >= 2, failed_bars.count()
        a.check("run-failed")
        a.goto("/ui/runs/" + urllib.parse.quote(wide, safe=""))
        expect(a.page.locator("#run-status")).to_have_text("running")
        a.page.evaluate("() => { window.stillTheSamePage = true; }")
        decided = a.page.request.post(
            BASE + "/v1/runs/" + urllib.parse.quote(wide, safe="") + "/approvals/decision",
            headers={"Authorization": "Bearer " + FACTS["a_token"]},
            data={"approve": False, "comment": "decided through the API"},
        )
        assert decided.ok, decided.status
        expect(a.page.locator("#run-status")).to_have_text("succeeded", timeout=30_000)
        assert a.page.evaluate("() => window.stillTheSamePage === true"), "the page was loaded again"
        expect(a.page.locator("svg.graph g.node.st-skipped")).to_have_count(1)

        # The approved run goes on to the end; its page follows it (htmx).
        a.goto("/ui/runs/" + urllib.parse.quote(retrain[0], safe=""))
        expect(a.page.locator("#run-status")).to_have_text("succeeded", timeout=30_000)
        a.check("run-succeeded")

        # ---- cancel, and a forged form refused --------------------------------
        a.goto("/ui/runs/" + urllib.parse.quote(retrain[2], safe=""))
        expect(a.page.locator(f'#decide form.decide[data-approval="{retrain[2]}/decision"]')).to_have_count(1)
        expect(a.page.locator("#decide .evidence")).to_contain_text("metrics")
        a.check("run-waiting")
        forged = a.page.request.post(
            BASE + "/ui/runs/" + urllib.parse.quote(retrain[2], safe="") + "/cancel",
            form={"csrf": "forged"},
        )
        assert forged.status == 403, forged.status
        a.goto("/ui/runs/" + urllib.parse.quote(long_run, safe=""))
        a.page.click("#cancel")
        expect(a.page.locator("#run-status")).to_have_text("cancelled")
        done["cancelled"] = long_run
        a.check("run-cancelled")

        # ---- schedules: fire times in the zone and UTC, last runs, pause,
        # resume, a backfill previewed before it is confirmed ------------------
        yearly = FACTS["yearly"]
        a.goto("/ui/schedules")
        row = a.page.locator(f'tr[data-schedule="{yearly}"]')
        expect(row.locator("td.fires li").first.locator(".local")).to_contain_text("-01-01 03:00:00 CET (+01:00)")
        expect(row.locator("td.fires li").first.locator(".utc")).to_contain_text("-01-01T02:00:00Z")
        assert row.locator("td.fires li").count() == 3, row.locator("td.fires li").count()
        # A schedule that fires every second (a run failing at once): its last runs show up.
        made = a.page.request.post(
            BASE + "/v1/schedules",
            headers={"Authorization": "Bearer " + FACTS["a_token"]},
            data={"flow": "Flaky", "cron": "* * * * * *", "key": "every-second"},
        )
        assert made.ok, made.status
        every = made.json()["id"]
        for _ in range(60):
            a.goto("/ui/schedules?key=every-second")
            last = a.page.locator(f'tr[data-schedule="{every}"] td.last a')
            if last.count() >= 2:
                break
            a.page.wait_for_timeout(500)
        assert last.count() >= 2, last.count()
        assert all(t.startswith(every + ".") for t in last.all_inner_texts()), last.all_inner_texts()
        a.page.locator(f'tr[data-schedule="{every}"] button.pause').click()
        expect(a.page.locator("p.notice")).to_contain_text("Paused schedule " + every)
        expect(a.page.locator(f'tr[data-schedule="{every}"] .st-paused')).to_have_text("paused")
        a.check("schedules")
        a.page.locator(f'tr[data-schedule="{every}"] button.resume').click()
        expect(a.page.locator("p.notice")).to_contain_text("Resumed schedule " + every)
        a.page.locator(f'tr[data-schedule="{every}"] button.pause').click()
        expect(a.page.locator("p.notice")).to_contain_text("Paused schedule " + every)
        done["paused_schedule"] = every
        # Backfill: the preview lists the fire times and starts nothing.
        a.goto("/ui/schedules?key=yearly")
        a.page.locator(f'tr[data-schedule="{yearly}"] a.backfill').click()
        a.page.fill("#b-from", "2020-06-01T00:00")
        a.page.fill("#b-to", "2023-06-01T00:00")
        a.page.click("#preview")
        expect(a.page.locator("#preview-h")).to_have_text("3 fire times, 3 runs to start")
        rows = a.page.locator("#preview-fires tbody tr")
        assert rows.count() == 3, rows.count()
        expect(rows.first).to_contain_text("2021-01-01 03:00:00 CET (+01:00)")
        expect(rows.first).to_contain_text("2021-01-01T02:00:00Z")
        a.check("backfill-preview")
        a.page.click("#confirm-backfill")
        expect(a.page.locator("#backfilled")).to_contain_text("Backfilled: 3 fire times")
        expect(a.page.locator("#preview-h")).to_have_text("3 fire times, 0 runs to start")
        expect(a.page.locator("#confirm-backfill")).to_have_count(0)
        done["backfilled"] = [a_.inner_text() for a_ in a.page.locator("#preview-fires tbody a").all()]
        a.check("backfill-done")

        # ---- a bulk retry over a filtered set: the confirmation counts the
        # runs, the job's page follows it live to the end --------------------
        def flaky(status):
            r = a.page.request.get(
                BASE + "/v1/runs?flow=Flaky&status=" + status + "&limit=1000",
                headers={"Authorization": "Bearer " + FACTS["a_token"]},
            )
            assert r.ok, r.status
            return [x["id"] for x in r.json()["items"]]
        for _ in range(120):
            if not flaky("running"):
                break
            a.page.wait_for_timeout(250)
        to_retry = flaky("failed")
        assert to_retry and not flaky("running"), to_retry
        a.goto("/ui/runs?flow=Flaky&status=failed")
        a.page.click("#bulk-actions a:text-is('Retry these')")
        expect(a.page.locator("h1")).to_have_text("Retry these runs")
        expect(a.page.locator("#bulk-count strong")).to_have_text(str(len(to_retry)))
        a.check("bulk-confirm")
        a.page.fill("#bulk-reason", "retried in the browser")
        a.page.click("#confirm-bulk")
        expect(a.page.locator("#job-state")).to_have_text("done", timeout=30_000)
        expect(a.page.locator("#job-acted")).to_have_text(str(len(to_retry)))
        job = a.page.url.rsplit("/", 1)[1]
        assert job.startswith("b-"), a.page.url
        a.check("bulk-job")
        forged = a.page.request.post(BASE + "/ui/bulk/" + job + "/cancel", form={"csrf": "forged"})
        assert forged.status == 403, forged.status
        a.goto("/ui/bulk")
        expect(a.page.locator("#jobs")).to_contain_text(job)
        a.check("bulk-list")
        done["bulk_job"] = job
        done["bulk_retried"] = to_retry

        # ---- flows: versions with their runs, graph, source and IR ------------
        a.goto("/ui/flows")
        for f in ("Retrain", "Long", "Flaky"):
            expect(a.page.locator("#flows-list")).to_contain_text(f)
        a.check("flows")
        a.page.click("#flows-list a:text-is('Retrain')")
        expect(a.page.locator("h1")).to_have_text("Flow Retrain")
        assert a.page.locator("svg.graph g.node").count() == 5
        runs_link = a.page.locator("#versions a.count").first
        shown = int(runs_link.inner_text().rstrip("+"))
        assert shown >= len(retrain) + 1, shown
        a.page.click("details.source summary")
        expect(a.page.locator("details.source pre")).to_contain_text("flow Retrain(")
        a.page.click("#ir summary")
        expect(a.page.locator("#ir pre")).to_contain_text('"nodes"')
        a.check("flow")
        runs_link.click()
        assert "version=" in a.page.url and "flow=Retrain" in a.page.url, a.page.url
        assert len(run_ids(a.page)) == shown, (run_ids(a.page), shown)

        # ---- lineage: the model the approved run registered, then shipped ----
        shipped = a.page.request.post(
            BASE + "/v1/runs",
            headers={"Authorization": "Bearer " + FACTS["a_token"]},
            data={"flow": "Ship", "input": {"name": "churn"}},
        )
        assert shipped.ok, shipped.status
        ship = shipped.json()["id"]
        a.goto("/ui/runs/" + urllib.parse.quote(ship, safe=""))
        expect(a.page.locator("#run-status")).to_have_text("succeeded", timeout=30_000)
        a.goto("/ui/lineage")
        a.page.click("#registered a:text-is('churn')")
        expect(a.page.locator("h1")).to_have_text("Lineage of model churn")
        expect(a.page.locator("section.version[data-version='1'] .made-by")).to_contain_text(retrain[0])
        uses = a.page.locator("section.version[data-version='1'] table.uses tbody tr")
        expect(uses).to_have_count(2)
        expect(uses.first).to_contain_text(ship)
        a.check("lineage")
        a.page.click(f"section.version[data-version='1'] .made-by a")
        expect(a.page.locator("h1")).to_contain_text(retrain[0])

        # ---- population: a flow's keys with their latest runs -----------------
        a.goto("/ui/population")
        expect(a.page.locator("#pick-a-flow")).to_be_visible()
        a.page.select_option("#f-flow", "Retrain")
        a.page.click("form.filters button[type=submit]")
        assert "flow=Retrain" in a.page.url, a.page.url
        expect(a.page.locator("#counts-by-status")).to_be_visible()
        keys = a.page.locator("#population tbody tr td:first-child").all_inner_texts()
        assert keys == ["churn", "fraud", "ltv", "wide"], keys
        a.check("population")
        # A count is a link that filters the keys by it, in the URL.
        a.page.locator("#counts-by-status a.count").first.click()
        assert "status=" in a.page.url and "flow=Retrain" in a.page.url, a.page.url
        # The scheduled model whose runs failed every second: failed twice in a row.
        twice = a.page.locator("#population td:text-is('every-second')")
        for _ in range(60):
            a.goto("/ui/population?flow=Flaky&failed_in_a_row=2")
            if twice.count() == 1:
                break
            a.page.wait_for_timeout(500)
        expect(twice).to_have_count(1)
        assert a.page.locator("#f-failed").input_value() == "2"
        a.check("population-failed")
        a.page.locator("#population tbody tr td:nth-child(2) a").first.click()
        expect(a.page.locator("h1")).to_contain_text(every)
        # A bulk retry over the filtered population: the latest run of each
        # key that failed twice in a row (the schedule is paused: it stays so).
        a.goto("/ui/population?flow=Flaky&failed_in_a_row=2")
        latest = a.page.locator("#population tbody tr td:nth-child(2) a").first.inner_text()
        a.page.click("#bulk-actions a:text-is('Retry these')")
        expect(a.page.locator("h1")).to_have_text("Retry these runs")
        expect(a.page.locator("#bulk-count strong")).to_have_text("1")
        expect(a.page.locator("#bulk-count")).to_contain_text("the latest run of each key")
        expect(a.page.locator("#bulk-first")).to_contain_text(latest)
        a.check("bulk-population-confirm")
        a.page.click("#confirm-bulk")
        expect(a.page.locator("#job-state")).to_have_text("done", timeout=30_000)
        expect(a.page.locator("#job-acted")).to_have_text("1")
        pjob = a.page.url.rsplit("/", 1)[1]
        events = a.page.request.get(
            BASE + "/v1/runs/" + urllib.parse.quote(latest, safe="") + "/events?limit=1000",
            headers={"Authorization": "Bearer " + FACTS["a_token"]},
        )
        assert events.ok, events.status
        retries = [e["event"].get("reason") for e in events.json() if e["event"]["type"] == "retry_requested"]
        assert ("bulk " + pjob) in retries, retries
        a.check("bulk-population-job")

        # ---- tenant B sees none of A ------------------------------------------
        b = Watched(browser, "globex")
        b.login(FACTS["b_token"])
        expect(b.page.locator("#status-counts")).not_to_contain_text("acme")
        expect(b.page.locator("#schedules")).to_have_count(0)
        b.check("overview")
        b.goto("/ui/runs")
        shown = run_ids(b.page)
        assert shown == [FACTS["b_run"]], shown
        content = b.page.content()
        leaked = [r for r in a_runs if r in content]
        assert not leaked, leaked
        b.goto("/ui/approvals")
        expect(b.page.locator("#no-approvals")).to_be_visible()
        b.goto("/ui/lineage")
        assert "churn" not in b.page.content()
        resp = b.goto("/ui/lineage/model/churn", refused=True)
        assert resp.status == 404, resp.status
        b.goto("/ui/flows")
        assert "/ui/flows/acme/" not in b.page.content()
        expect(b.page.locator("#flows-list")).to_contain_text("Retrain")
        resp = b.goto("/ui/flows/acme/Retrain", refused=True)
        assert resp.status == 404, resp.status
        b.goto("/ui/population?flow=Retrain")
        expect(b.page.locator("#no-keys")).to_be_visible()
        assert "churn" not in b.page.content()
        b.check("population")
        b.goto("/ui/bulk")
        expect(b.page.locator("#no-jobs")).to_be_visible()
        b.check("bulk-list")
        for path in ["", "/live"]:
            resp = b.goto("/ui/bulk/" + done["bulk_job"] + path, refused=True)
            assert resp.status == 404, (path, resp.status)
        b.goto("/ui/bulk")
        refused = b.page.request.post(BASE + "/ui/bulk/" + done["bulk_job"] + "/pause", form={"csrf": b.csrf()})
        assert refused.status == 404, refused.status
        b.goto("/ui/schedules")
        expect(b.page.locator("#no-schedules")).to_be_visible()
        assert yearly not in b.page.content()
        b.check("schedules")
        resp = b.goto("/ui/schedules/" + urllib.parse.quote(yearly, safe="") + "/backfill", refused=True)
        assert resp.status == 404, resp.status
        refused = b.page.request.post(
            BASE + "/ui/schedules/" + urllib.parse.quote(every, safe="") + "/resume",
            form={"csrf": b.csrf()},
        )
        assert refused.status == 404, refused.status
        b.check("approvals")
        for path in ["", "/live"]:
            resp = b.goto("/ui/runs/" + urllib.parse.quote(retrain[2], safe="") + path, refused=True)
            assert resp.status == 404, (path, resp.status)
        expect(b.page.locator("h1")).to_have_text("Not found")
        b.check("other-tenants-run")
        b.goto("/ui/runs")
        refused = b.page.request.post(
            BASE + "/ui/runs/" + urllib.parse.quote(retrain[2], safe="") + "/cancel",
            form={"csrf": b.csrf()},
        )
        assert refused.status == 404, refused.status
        refused = b.page.request.post(
            BASE + "/ui/runs/" + urllib.parse.quote(retrain[2], safe="") + "/approvals/decision",
            form={"csrf": b.csrf(), "decision": "approve", "comment": ""},
        )
        assert refused.status == 404, refused.status

        # ---- the admin sees every tenant --------------------------------------
        admin = Watched(browser, "admin")
        admin.login(FACTS["admin_token"])
        admin.check("overview")
        admin.goto("/ui/runs")
        ids = run_ids(admin.page)
        assert FACTS["b_run_admin"] in ids, ids
        admin.check("runs")
        admin.goto("/ui/runs?tenant=globex")
        assert run_ids(admin.page) == [FACTS["b_run_admin"]], run_ids(admin.page)
        admin.goto("/ui/population?flow=Retrain")
        expect(admin.page.locator("#population thead")).to_contain_text("Tenant")
        admin.check("population")

        # ---- log out ---------------------------------------------------------
        a.goto("/ui")
        a.page.click("header form button[type=submit]")
        expect(a.page).to_have_url(BASE + "/ui/login")
        a.goto("/ui/approvals")
        expect(a.page).to_have_url(BASE + "/ui/login?next=%2Fui%2Fapprovals")

        for w in (a, b, admin):
            w.context.close()
        browser.close()

    assert not problems, f"{len(problems)} problems"
    say(f"{len(shots)} screenshots in {SHOTS}")
    worst = max(long_tasks.items(), key=lambda kv: kv[1], default=("none", 0))
    over = sorted(k for k, v in long_tasks.items() if v > 0)
    say(
        f"main-thread tasks over 50 ms: on {len(over)} of {len(long_tasks)} pages checked; "
        f"the longest {worst[1]:.0f} ms ({worst[0]}){': ' + ', '.join(over) if over else ''}"
    )
    print(json.dumps(done), flush=True)


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        for p_ in problems:
            say("PROBLEM:", p_)
        say("FAILED:", repr(e))
        sys.exit(1)
