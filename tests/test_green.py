"""Under the gevent server (webapp/launch.py), long C work runs on gevent's native threads
(webapp/green.py): a llama.cpp forward pass of a room's prompts, the analysis of a study's
report. Each check runs in a patched process of its own, with a greenlet ticking every
millisecond: it keeps ticking while the work runs (run on the hub's own thread, the work would
freeze it: 0 ticks)."""

from __future__ import annotations

import subprocess
import sys

from support import MODEL_SPEC

from webapp.green import in_native_thread, patched

TICKING = """
from gevent import monkey
monkey.patch_all()
import gevent
from webapp.green import NativeThreadModel, in_native_thread, patched
assert patched()
ticks = 0
def tick():
    global ticks
    while True:
        gevent.sleep(0.001)
        ticks += 1
def ticks_during(work):
    ticker = gevent.spawn(tick)
    gevent.sleep(0.01)
    before = ticks
    result = work()
    during = ticks - before
    ticker.kill()
    return result, during
"""

MODEL_SCRIPT = TICKING + """
from webapp.lm import load_model
model = NativeThreadModel(load_model({spec!r}, max_tokens=128))
ids = model.tokenize("The quick brown fox jumps over the lazy dog. " * 12)[:120]
scores, during = ticks_during(lambda: model.score(ids, 8))
print(len(scores.top_ids), during)
"""

REPORT_SCRIPT = TICKING + """
import tempfile
from pathlib import Path
from analysis import synthetic as syn
from analysis.report import write_report
world = syn.make_world(n_items=60, vocab_size=80, top_k=12, seed=7)
answers = syn.simulate(world, [("sample", 1.2)] * 24, items_per_player=40, seed=8)
folder = Path(tempfile.mkdtemp())
export = syn.write_export(syn.export_tables(world, answers), folder / "export.zip", "csv", as_zip=True)
path, during = ticks_during(lambda: in_native_thread(write_report, export, folder / "r.html", "html",
                                                     n_boot=400))
print(int("<h2" in path.read_text()), during)
"""


def _run(script: str) -> tuple[int, int]:
    done = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == 0, done.stderr
    first, ticks = map(int, done.stdout.split()[-2:])
    return first, ticks


def test_a_forward_pass_leaves_the_other_greenlets_running():
    rows, ticks = _run(MODEL_SCRIPT.format(spec=MODEL_SPEC))
    assert rows == 120  # the model's own numbers, one row per position
    assert ticks > 0


def test_a_report_leaves_the_other_greenlets_running():
    has_sections, ticks = _run(REPORT_SCRIPT)
    assert has_sections == 1
    assert ticks > 0


def test_unpatched_processes_call_directly():
    """Tests, the job process and the gthread server are not patched: the call runs right here."""
    import threading

    assert not patched()
    assert in_native_thread(threading.get_ident) == threading.get_ident()
