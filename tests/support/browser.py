"""Headless Chromium (the Debian ``chromium`` package) for checking what a person sees in ``dag.html``.

    measured = measure(Path("dag.html"), tmp_path, width=1400)   # layout facts from the real browser
    screenshot(Path("dag.html"), Path("docs/dag.png"), tmp_path)

The page itself carries no script. :func:`measure` copies it, appends one inline script that reads the
layout (scroll width, every node's box and whether it is the element actually painted at its centre)
into a ``<pre>``, and reads that back with ``--dump-dom``. Nothing is downloaded: the browser runs with
a fresh profile, no network services, on ``file://`` only.

    python -m tests.support.browser DAG_HTML OUT_PNG        # regenerate docs/dag.png
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["chromium", "measure", "screenshot"]

_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)

_MEASURE = """
<script>
(function () {
  var root = document.documentElement;
  var out = {innerWidth: window.innerWidth, clientWidth: root.clientWidth, scrollWidth: root.scrollWidth,
             bodyScrollWidth: document.body.scrollWidth, scrollHeight: root.scrollHeight, nodes: [], svgs: []};
  document.querySelectorAll("svg.dag").forEach(function (svg) {
    var box = svg.getBoundingClientRect();
    out.svgs.push({left: box.left, right: box.right, scale: box.width / svg.viewBox.baseVal.width});
  });
  document.querySelectorAll("g.node").forEach(function (g) {
    window.scrollTo(0, Math.max(0, g.getBoundingClientRect().top + window.scrollY - 200));
    var box = g.getBoundingClientRect();
    var hit = document.elementFromPoint(box.left + box.width / 2, box.top + box.height / 2);
    var title = g.querySelector("text.t");
    var style = window.getComputedStyle(g);
    out.nodes.push({id: g.getAttribute("data-id"), kind: g.getAttribute("data-kind"),
                    left: box.left, right: box.right, width: box.width, height: box.height,
                    title: title ? title.textContent : "", visible: style.visibility === "visible"
                    && style.display !== "none", painted: !!(hit && hit.closest("g.node") === g)});
  });
  window.scrollTo(0, 0);
  var pre = document.createElement("pre");
  pre.id = "layout-measured";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
})();
</script>
"""


def chromium() -> str | None:
    """The Chromium executable, if installed."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _run(page: Path, profile: Path, *args: str, timeout: float = 90.0) -> str:
    executable = chromium()
    if executable is None:
        raise FileNotFoundError("chromium is not installed")
    command = [executable, *_FLAGS, f"--user-data-dir={profile}", *args, page.resolve().as_uri()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"chromium exited with {done.returncode}: {done.stderr[-2000:]}")
    return done.stdout


def measure(page: Path, workdir: Path, *, width: int = 1400, height: int = 1000) -> dict[str, Any]:
    """Layout facts of ``page`` rendered at ``width`` x ``height`` CSS pixels (see the module docstring)."""
    text = page.read_text(encoding="utf-8")
    probe = workdir / f"measure-{page.name}"
    probe.write_text(text.replace("</body>", _MEASURE + "</body>"), encoding="utf-8")
    dom = _run(probe, workdir / "profile-measure", f"--window-size={width},{height}", "--dump-dom")
    found = re.search(r'<pre id="layout-measured">(.*?)</pre>', dom, re.S)
    if found is None:
        raise RuntimeError("the measuring script did not run")
    measured: dict[str, Any] = json.loads(html.unescape(found.group(1)))
    return measured


def screenshot(page: Path, out: Path, workdir: Path, *, width: int = 1400, scale: float = 0.75) -> None:
    """A PNG of the whole of ``page`` at ``width`` CSS pixels, ``scale`` device pixels per CSS pixel."""
    height = int(measure(page, workdir, width=width)["scrollHeight"])
    _run(
        page,
        workdir / "profile-shot",
        f"--window-size={width},{height}",
        f"--force-device-scale-factor={scale}",
        f"--screenshot={out.resolve()}",
    )


if __name__ == "__main__":  # python -m tests.support.browser DAG_HTML OUT_PNG
    with tempfile.TemporaryDirectory() as scratch:
        screenshot(Path(sys.argv[1]), Path(sys.argv[2]), Path(scratch))
    print(f"wrote {sys.argv[2]} ({os.path.getsize(sys.argv[2])} bytes)")
