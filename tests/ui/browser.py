"""The web console in a real browser (Debian's chromium, driven by Playwright): the seed lab.

Run by tests/tests/ui_browser.rs against `corral proxy` in front of a daemon with pod networking:
  browser.py --url http://127.0.0.1:PORT/ui/ --chromium /usr/bin/chromium --shots DIR
             --vmirs SEED_VMIRS_YAML --hpa SEED_HPA_YAML [--timeout SECONDS]
With --token TOKEN (and the daemon's HTTPS listener as --url), the sign-in instead: the page asks
for the token, refuses a wrong one, and with the right one lists, creates a Service and sees it
arrive through a watch that carries the token as a WebSocket subprotocol.
Every step is found by accessible role and name (so the names are tested too), waits for what
the page shows (no sleeps as assertions), saves a screenshot, and prints its elapsed time. A step
that does not happen in time fails with its name, a screenshot of the page and exit status 1.
"""

import argparse
import re
import sys
import time

from playwright.sync_api import sync_playwright

SET = "lab05-cirros-replicaset"
LOAD = "load() { dd if=/dev/zero of=/dev/null & }; load; read; killall dd"


class StepFailed(Exception):
    pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--chromium", required=True)
    ap.add_argument("--shots", required=True)
    ap.add_argument("--vmirs")
    ap.add_argument("--hpa")
    ap.add_argument("--token")
    ap.add_argument("--timeout", type=float, default=240)
    a = ap.parse_args()
    if a.token:
        return token_flow(a)
    vmirs = open(a.vmirs).read()
    hpa = open(a.hpa).read()
    t0 = time.monotonic()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=a.chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: m.type == "error" and errors.append(m.text))

        def shot(name):
            page.screenshot(path=f"{a.shots}/{name}", full_page=True)

        def step(name):
            print(f"[{time.monotonic() - t0:6.1f}s] {name}", flush=True)

        def wait_until(what, fn, timeout=a.timeout):
            end = time.monotonic() + timeout
            last = None
            while time.monotonic() < end:
                try:
                    last = fn()
                    if last:
                        return last
                except Exception as e:  # the DOM re-renders under us: try again
                    last = e
                page.wait_for_timeout(500)
            shot("failed.png")
            raise StepFailed(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r}); "
                             f"page errors: {errors}")

        def rows(table):
            """The table's body rows as lists of cell texts."""
            t = page.get_by_role("table", name=table)
            out = []
            for r in t.locator("tbody tr").all():
                out.append([c.inner_text().strip() for c in r.locator("td").all()])
            return [r for r in out if len(r) > 1]

        def create(text):
            page.get_by_role("button", name="Create from YAML").click()
            box = page.get_by_role("textbox", name="YAML or JSON")
            box.fill(text)
            page.get_by_role("button", name="Create", exact=True).click()

        try:
            # a. The page, empty.
            page.goto(a.url)
            ns = page.get_by_label("Namespace")
            wait_until("the namespace selector on default", lambda: ns.input_value() == "default")
            wait_until("the empty replica set table", lambda: "No replica sets" in
                       page.get_by_role("table", name="Replica sets").inner_text())
            shot("01-empty.png")
            step("page loaded, namespace default, no replica sets")

            # b. An unknown field: the server's error shown at its line.
            lines = vmirs.splitlines()
            spec = lines.index("spec:")
            bad = "\n".join(lines[:spec + 1] + ["  bogusField: 1"] + lines[spec + 1:]) + "\n"
            bad_line = spec + 2
            create(bad)
            alert = page.get_by_role("alert")
            text = wait_until("the unknown field error", lambda: "bogusField" in alert.inner_text()
                              and alert.inner_text())
            if f"line {bad_line}:" not in text:
                shot("failed.png")
                raise StepFailed(f"the error does not point at line {bad_line}: {text!r}")
            shot("02-invalid.png")
            errors.clear()  # the browser logs the (expected) 400 as a console error
            step(f"unknown field refused and shown at line {bad_line}: {text.splitlines()[-1]!r}")

            # c. The seed set: two Running VMIs with pod IPs.
            page.get_by_role("textbox", name="YAML or JSON").fill(vmirs)
            page.get_by_role("button", name="Create", exact=True).click()
            wait_until("the dialog to close", lambda: not page.get_by_role("dialog").is_visible())
            wait_until("the set Ready 2/2", lambda: any(r[0] == SET and r[1] == "2" and r[3] == "2"
                                                       for r in rows("Replica sets")))

            def running():
                return [r for r in rows("Virtual machine instances")
                        if r[1] == "Running" and re.match(r"^\d+\.\d+\.\d+\.\d+$", r[2])]
            vmis = wait_until("two Running VMIs with IPs", lambda: len(running()) == 2 and running())
            shot("03-running.png")
            step("two VMIs Running: " + ", ".join(f"{r[0]} {r[2]}" for r in vmis))
            if vmis[0][2] == vmis[1][2]:
                raise StepFailed(f"both VMIs show the IP {vmis[0][2]}")

            # d. Scale to 1 with the page's control.
            page.get_by_role("spinbutton", name=f"Replicas for {SET}").fill("1")
            page.get_by_role("button", name=f"Scale {SET}").click()
            wait_until("one VMI left", lambda: len(rows("Virtual machine instances")) == 1
                       and len(running()) == 1)
            vmi = running()[0][0]
            shot("04-scaled.png")
            step(f"scaled to 1: {vmi} left")

            # e. The lab's HPA.
            create(hpa)
            wait_until("the dialog to close", lambda: not page.get_by_role("dialog").is_visible())
            wait_until("the HPA with a measured utilization", lambda: any(
                r[0] == SET and re.match(r"^\d+%/75%$", r[2]) for r in rows("Horizontal pod autoscalers")))
            step("HPA created: " + " | ".join(" ".join(r) for r in rows("Horizontal pod autoscalers")))

            # f. The lab's load line in the serial console.
            page.get_by_role("link", name=vmi).click()
            state = page.locator("#console-state")
            wait_until("the console connected", lambda: state.inner_text() == "connected")
            term = page.get_by_role("region", name=f"Serial console of {vmi}")
            term.click()
            page.keyboard.press("Enter")
            page.keyboard.type(LOAD)
            page.keyboard.press("Enter")
            wait_until("the guest's burn to start", lambda: "burn started" in
                       term.locator(".xterm-rows").inner_text())
            shot("05-console.png")
            step("load line typed; the guest burns")

            # g. The HPA scales the set to 2; the charts show it.
            page.get_by_role("button", name="Back").click()
            wait_until("the HPA at 2 replicas and the set at 2", lambda: any(
                r[0] == SET and r[5] == "2" for r in rows("Horizontal pod autoscalers")) and any(
                r[0] == SET and r[1] == "2" for r in rows("Replica sets")))
            wait_until("two Running VMIs again", lambda: len(running()) == 2)
            page.wait_for_timeout(5500)  # one more chart sample with both VMIs
            shot("06-scaled-up.png")
            step("HPA scaled the set to 2: " + " | ".join(" ".join(r) for r in rows("Horizontal pod autoscalers")))
            page.set_viewport_size({"width": 390, "height": 844})
            page.wait_for_timeout(500)
            width = page.evaluate("document.documentElement.scrollWidth")
            shot("07-phone.png")
            if width > 390:
                raise StepFailed(f"at 390 px the page scrolls sideways ({width} px wide)")
            page.set_viewport_size({"width": 1280, "height": 800})
            step("phone width: no sideways scrolling")

            # h. Stop the load.
            page.get_by_role("link", name=vmi).click()
            wait_until("the console connected", lambda: state.inner_text() == "connected")
            page.get_by_role("region", name=f"Serial console of {vmi}").click()
            page.keyboard.press("Enter")
            wait_until("the burn to stop", lambda: "burn stopped" in
                       page.get_by_role("region", name=f"Serial console of {vmi}").locator(".xterm-rows").inner_text())
            step("load stopped")
            if errors:
                raise StepFailed(f"the page logged errors: {errors}")
        except StepFailed as e:
            print(f"FAIL: {e}", file=sys.stderr)
            browser.close()
            return 1
        browser.close()
    print(f"PASS in {time.monotonic() - t0:.1f}s")
    return 0


SERVICE = """apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector:
    kubevirt.io/domain: lab05-cirros
  ports:
    - port: 80
"""


def token_flow(a):
    t0 = time.monotonic()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=a.chromium, args=["--no-sandbox"])
        # The listener's certificate comes from the daemon's own CA, which this browser lacks.
        page = browser.new_context(ignore_https_errors=True,
                                   viewport={"width": 1280, "height": 800}).new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: m.type == "error" and errors.append(m.text))

        def fail(msg):
            page.screenshot(path=f"{a.shots}/token-failed.png", full_page=True)
            print(f"FAIL: {msg}; page errors: {errors}", file=sys.stderr)
            browser.close()
            return 1

        login = page.get_by_role("dialog", name="corral needs a token")
        page.goto(a.url)
        try:
            login.wait_for(state="visible", timeout=10000)
            page.get_by_label("API token").fill("wrong-token")
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_timeout(1000)
            login.wait_for(state="visible", timeout=10000)
            print(f"[{time.monotonic() - t0:6.1f}s] asked for a token; a wrong one is refused")
            page.get_by_label("API token").fill(a.token)
            page.get_by_role("button", name="Sign in").click()
            login.wait_for(state="hidden", timeout=10000)
            errors.clear()  # the 401s before signing in
            page.get_by_role("table", name="Services").get_by_text("No services").wait_for(timeout=10000)
            page.get_by_role("button", name="Create from YAML").click()
            page.get_by_role("textbox", name="YAML or JSON").fill(SERVICE)
            page.get_by_role("button", name="Create", exact=True).click()
            page.get_by_role("table", name="Services").get_by_role("cell", name="web", exact=True) \
                .wait_for(timeout=10000)
        except Exception as e:  # Playwright's timeouts name what was awaited
            return fail(str(e).splitlines()[0])
        page.screenshot(path=f"{a.shots}/token-signed-in.png", full_page=True)
        if errors:
            return fail("the page logged errors")
        print(f"[{time.monotonic() - t0:6.1f}s] signed in; the Service arrived through the watch")
        browser.close()
    print("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
