"""``python -m experiments tour --quick`` writes a complete report page.

The tour runs every study of ``experiments.tour.ENTRIES`` at its tiny ``--quick`` config, where
each expectation is written for that size and is either met there or "not measured at this size"
(the studies' own tests check their results), and must write
``index.html`` and ``README.md`` whose every image is a real PNG, whose every study section has
its claim, key numbers, verdict, figures, wall time and full-study command, and no leftover
template text.
"""

from __future__ import annotations

import base64
import html.parser
import json
import pathlib
import re
import struct
import subprocess
import sys

import pytest

from experiments import EXPERIMENTS, tour

# The slow tier (see tests/slow_tests.txt): every test reads one `tour --quick` run (~2 min).
pytestmark = pytest.mark.slow

ROOT = pathlib.Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def check_png(data: bytes, what: str) -> tuple[int, int]:
    """Assert ``data`` is a PNG with a non-empty IHDR and image data; return (width, height)."""
    assert data[:8] == PNG_SIGNATURE, f"{what} is not a PNG (signature {data[:8]!r})"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13, f"{what} has no IHDR chunk first"
    width, height = struct.unpack(">II", data[16:24])
    assert width >= 200 and height >= 150, f"{what} is {width}×{height} pixels"
    assert b"IDAT" in data and data.rstrip().endswith(b"IEND\xaeB`\x82"), f"{what} is truncated"
    return width, height


def assert_no_leftovers(text: str, what: str) -> None:
    """No template placeholders, no TODO, no unformatted None or NaN."""
    for pattern in (r"[{}]", r"TODO", r"\bNone\b", r"\bnan\b"):
        match = re.search(pattern, text)
        assert match is None, f"leftover {match.group()!r} in {what}: {text[max(match.start() - 60, 0):match.end() + 60]!r}"


class _Page(html.parser.HTMLParser):
    """Collects image sources, the text of each study section (by its h2 id) and the page text."""

    def __init__(self):
        super().__init__()
        self.images, self.sections, self.text = [], {}, []
        self._section, self._in_style = None, False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append((self._section, attrs["src"]))
        if tag == "h2":
            self._section = attrs.get("id")
            self.sections[self._section] = []
        self._in_style = tag == "style"

    def handle_endtag(self, tag):
        if tag == "style":
            self._in_style = False

    def handle_data(self, data):
        if self._in_style:
            return
        self.text.append(data)
        if self._section is not None:
            self.sections[self._section].append(data)


@pytest.fixture(scope="module")
def tour_dir(tmp_path_factory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("tour") / "tour"
    completed = subprocess.run([sys.executable, "-m", "experiments", "tour", "--quick", "--out", str(out)],
                               check=False, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert completed.returncode == 0, completed.stderr[-3000:]
    unmeasured = sum(entry.quick_verdict is None for entry in tour.ENTRIES)
    assert f"{len(tour.ENTRIES) - unmeasured} of {len(tour.ENTRIES)} expectations met ({unmeasured} not measured " \
        "at this size)" in completed.stdout  # the printed summary
    return out


def test_tour_is_registered():
    assert EXPERIMENTS["tour"] == "experiments.tour"
    names = [entry.name for entry in tour.ENTRIES]
    assert len(set(names)) == len(names) and set(names) <= set(EXPERIMENTS)
    for entry in tour.ENTRIES:  # every override names a field of the study's config
        tour.study_config(entry, quick=False)
        tour.study_config(entry, quick=True)


def test_html_page_is_complete(tour_dir):
    page_text = (tour_dir / "index.html").read_text(encoding="utf-8")
    page = _Page()
    page.feed(page_text)
    saved = json.loads((tour_dir / "results.json").read_text())["results"]["studies"]
    assert [s["name"] for s in saved] == [entry.name for entry in tour.ENTRIES]
    for entry, study in zip(tour.ENTRIES, saved):
        section = " ".join(page.sections[entry.name])
        assert entry.claim in section and entry.quick_expectation in section
        assert re.search(r"\b(MET|NOT MET|not measured at this size)\b", section), f"{entry.name}: no verdict"
        assert study["numbers"] and study["expectation"] == entry.quick_expectation
        # Measured at the quick size and met, or not measured there: never a "NOT MET" that measures nothing.
        assert study["met"] is (None if entry.quick_verdict is None else True), (entry.name, study["met"])
        for quantity, value in study["numbers"]:  # the key numbers, in the section's table
            assert value.strip() and quantity in section and value in section, (entry.name, quantity)
        assert f"python -m experiments {entry.name}" in section
        assert re.search(r"Wall time \d+\.\d s", section)
        images = [src for name, src in page.images if name == entry.name]
        assert len(images) == len(entry.figures) >= 1, entry.name
    for name, src in page.images:  # self-contained: embedded PNGs, nothing fetched
        assert src.startswith("data:image/png;base64,"), f"{name}: {src[:60]}"
        check_png(base64.b64decode(src.split(",", 1)[1], validate=True), f"{name} image")
    assert_no_leftovers(" ".join(page.text), "index.html")
    assert "<script" not in page_text and not re.search(r"(src|href)=\"(https?:)?//", page_text)


def test_markdown_page_is_complete(tour_dir):
    text = (tour_dir / "README.md").read_text(encoding="utf-8")
    figures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert len(figures) == sum(len(entry.figures) for entry in tour.ENTRIES)
    for figure in figures:
        path = tour_dir / figure
        assert path.is_file(), figure
        check_png(path.read_bytes(), figure)
    for entry in tour.ENTRIES:
        assert f"## {entry.title}" in text and f"> {entry.claim}" in text
        assert f"```bash\npython -m experiments {entry.name}\n```" in text
    verdicts = re.findall(r"\*\*(MET|NOT MET|not measured at this size)\*\*", text)
    assert len(verdicts) == 2 * len(tour.ENTRIES)  # summary + sections
    assert verdicts.count("not measured at this size") == 2 * sum(e.quick_verdict is None for e in tour.ENTRIES)
    assert_no_leftovers(text, "README.md")
