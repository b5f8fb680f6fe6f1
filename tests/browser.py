"""Open an HTML file in headless Chromium (Debian's `chromium`) and measure it: images decoded, page overflow.

The page is measured inside a probe page (an iframe holding it, and a script that writes its findings into the
DOM, which `chromium --dump-dom` prints). The report itself carries no script.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

# The page goes into an iframe of the asked width (headless Chromium's window is at least 500 px wide; phones are
# narrower); the parent's script measures it once everything loaded and writes the result into the DOM.
PROBE = """<!doctype html><html><head><meta charset="utf-8"></head><body style="margin:0">
<iframe id="page" style="border:0" width="WIDTH" height="HEIGHT" srcdoc="SRCDOC"></iframe>
<script>
window.addEventListener("load", () => {
  const frame = document.getElementById("page"), d = frame.contentDocument, W = d.documentElement.clientWidth;
  const imgs = [...d.images];
  // after load: a broken or undecodable image is complete with naturalWidth 0 (img.decode() stalls headless)
  const decoded = imgs.map(i => i.complete && i.naturalWidth > 0);
  const overflowing = [...d.body.querySelectorAll("*")]
    .filter(e => !e.closest(".table-wrap, pre") && e.getBoundingClientRect().right > W + 0.5)
    .map(e => e.tagName + ":" + (e.textContent || e.alt || "").slice(0, 40));
  const out = document.createElement("output");
  out.id = "probe";
  out.textContent = JSON.stringify({
    clientWidth: W, scrollWidth: d.documentElement.scrollWidth, images: imgs.length,
    decoded: decoded.filter(Boolean).length, undecoded: imgs.filter((_, k) => !decoded[k]).map(i => i.alt),
    imgWidths: imgs.map(i => Math.round(i.getBoundingClientRect().width)), overflowing,
    external: [...d.querySelectorAll("[src],[href]")].map(e => e.getAttribute("src") || e.getAttribute("href"))
      .filter(u => !u.startsWith("data:") && !u.startsWith("#")),
  });
  document.body.appendChild(out);
});
</script></body></html>"""


# .ci/run installs Chromium and sets this: there, a missing browser fails the browser tests instead of skipping them.
REQUIRE_ENV = "CIFAR_TUNE_REQUIRE_BROWSER"


def available() -> bool:
    return Path(CHROMIUM).exists()


def require() -> None:
    """Call first in a test that needs Chromium. The README's install brings no browser, so without one the test is
    skipped, saying why; with CIFAR_TUNE_REQUIRE_BROWSER=1 (CI) the missing browser is a failure."""
    import pytest

    if available():
        return
    why = f"no {CHROMIUM} (Debian's chromium, which requirements.txt cannot install: apt-get install chromium)"
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{why}, and {REQUIRE_ENV}=1 requires the browser tests to run")
    pytest.skip(why)


def _chromium(*args, tmp: Path, timeout: float = 90) -> subprocess.CompletedProcess:
    # --no-sandbox: CI runs as root; a private profile so parallel runs do not share one
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
           f"--user-data-dir={tmp / 'profile'}", *args]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def measure(page: Path, width: int, height: int, tmp: Path) -> dict:
    """What the probe found with the page in a width x height window."""
    probe = tmp / f"probe_{width}.html"
    doc = PROBE.replace("WIDTH", str(width)).replace("HEIGHT", str(height))
    probe.write_text(doc.replace("SRCDOC", html.escape(page.read_text(), quote=True)))
    proc = _chromium(f"--window-size={max(width, 800)},{height}", "--virtual-time-budget=20000", "--dump-dom",
                     probe.as_uri(), tmp=tmp)  # fmt: skip
    found = re.search(r'<output id="probe">(.*?)</output>', proc.stdout, re.S)
    assert found, f"chromium printed no probe result: {proc.stderr[-2000:]}"
    return json.loads(html.unescape(found.group(1)))


def screenshot(page: Path, png: Path, width: int, height: int, tmp: Path) -> Path:
    _chromium(f"--window-size={width},{height}", f"--screenshot={png}", page.as_uri(), tmp=tmp)
    return png
