"""A real browser for the tests of the HTML report: Debian's chromium, headless, with no
network (every host name resolves to nothing, and no proxy).

Tests that need it skip when it is missing; CI installs Debian's chromium (see
``.ci/run``). ``MEDPIPE_TEST_CHROMIUM`` names another binary.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

NAMES = ("chromium", "chromium-browser", "google-chrome")

# Run in the page before its own content: records failed loads and console errors, and
# once loaded writes what it saw as JSON into <pre id="medpipe-check">.
CHECKER = """<script>
(() => {
  const errors = [];
  window.addEventListener("error", e => errors.push(
    String(e.message || (e.target && (e.target.src || e.target.href)) || "error")), true);
  for (const level of ["error", "warn"]) {
    const original = console[level];
    console[level] = (...args) => { errors.push(level + ": " + args.join(" "));
                                    original.apply(console, args); };
  }
  window.addEventListener("load", () => {
    const images = [...document.images];
    const out = document.createElement("pre");
    out.id = "medpipe-check";
    out.textContent = JSON.stringify({
      images: images.length,
      broken: images.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt),
      fetched: performance.getEntriesByType("resource").map(r => r.name)
                 .filter(n => !n.startsWith("data:")),
      errors});
    document.body.appendChild(out);
  });
})();
</script>"""


def find() -> str | None:
    override = os.environ.get("MEDPIPE_TEST_CHROMIUM")
    if override:
        return override if shutil.which(override) else None
    return next((path for name in NAMES if (path := shutil.which(name))), None)


def require() -> str:
    """The browser's path; skip the calling test when there is none."""
    path = find()
    if path is None:
        pytest.skip("chromium not installed; apt-get install chromium (CI installs it)")
    return path


def _command(binary: str, profile: Path, *args: str) -> list[str]:
    return [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--no-first-run", "--disable-extensions", "--disable-sync",
            f"--user-data-dir={profile}", "--host-resolver-rules=MAP * ~NOTFOUND",
            "--no-proxy-server", "--enable-logging=stderr", "--v=0", *args]


@dataclass(frozen=True)
class Loaded:
    images: int
    broken: list[str]  # alt texts of images that did not decode
    fetched: list[str]  # resources loaded from anywhere but a data: URI
    errors: list[str]  # failed loads and console errors or warnings
    console: list[str]  # the browser's own log lines of console messages


def load(binary: str, page: Path, work: Path, timeout: float = 120) -> Loaded:
    """Open a copy of ``page`` with :data:`CHECKER` in its head; what the checker saw."""
    work.mkdir(parents=True, exist_ok=True)
    text = page.read_text(encoding="utf-8")
    checked = work / "checked.html"
    checked.write_text(text.replace("<head>", "<head>" + CHECKER, 1), encoding="utf-8")
    proc = subprocess.run(_command(binary, work / "profile-dom", "--virtual-time-budget=10000",
                                   "--dump-dom", checked.resolve().as_uri()),
                          capture_output=True, text=True, timeout=timeout)
    found = re.search(r'<pre id="medpipe-check">(.*?)</pre>', proc.stdout, re.S)
    assert found, f"chromium exited {proc.returncode}; no check in the page\n{proc.stderr}"
    seen = json.loads(html.unescape(found.group(1)))
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    return Loaded(seen["images"], seen["broken"], seen["fetched"], seen["errors"], console)


def screenshot(binary: str, page: Path, out: Path, size: tuple[int, int],
               timeout: float = 120) -> Path:
    """A PNG of ``page`` as a window of ``size`` px shows it."""
    proc = subprocess.run(_command(binary, out.parent / "profile-shot", "--hide-scrollbars",
                                   f"--window-size={size[0]},{size[1]}",
                                   f"--screenshot={out}", page.resolve().as_uri()),
                          capture_output=True, text=True, timeout=timeout)
    assert out.is_file(), f"chromium exited {proc.returncode}; no screenshot\n{proc.stderr}"
    return out
