"""How full each link was, from the wires' per-second counts (live/linkload.py), against hand-computed values."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from analysis.records import RECORD_NAMES
from live.linkload import (
    LOAD_NAME,
    LinkWindow,
    direction_label,
    format_full,
    full_links,
    link_load,
    load_windows,
)

# K 2, t0 at 1000.5 s (real epoch): real second 1000 is half before t0 (a quarter window each side of it), 1001
# falls in window 0, 1002 half in window 0 and half in window 1.
ROWS = [[1000, 1_000_000, 1_000_000_000, 10_000], [1001, 2_000_000, 500_000_000, 0],
        [1002, 1_000_000, 1_000_000_000, 20_000]]


def test_directions_are_named_by_their_sites() -> None:
    assert direction_label("radio-ant1", "a->b") == "up"
    assert direction_label("radio-ant1", "b->a") == "down"
    assert direction_label("co1-dc1", "a->b") == "co1->dc1"
    assert direction_label("co1-dc1", "b->a") == "dc1->co1"
    assert direction_label("odd-name-x", "a->b") == "a->b"


def test_each_real_second_is_shared_out_over_the_virtual_seconds_it_overlaps() -> None:
    d = {"link": "co1-dc1", "direction": "a->b", "load_per_s": ROWS}
    w0, w1 = load_windows([d], 1000.5, 2.0, None)
    # window 0: half of 1000, all of 1001, half of 1002: 3 MB in one virtual second; busy 1.5 of its 2 real s
    assert w0 == LinkWindow(0.0, "co1-dc1", "co1->dc1", 24.0, 0.75, 20.0)
    assert w1 == LinkWindow(1.0, "co1-dc1", "co1->dc1", 4.0, 0.25, 20.0)
    # the traffic ends with window 0: window 1 (the run closing down) is left out
    assert load_windows([d], 1000.5, 2.0, 1002.5) == [w0]
    assert load_windows([{"link": "x", "direction": "a->b"}], 1000.5, 2.0, None) == []  # an older wire's stats


def test_the_directions_full_in_some_second_are_named_longest_first() -> None:
    ws = [LinkWindow(float(t), "co1-dc1", "co1->dc1", 19.0, busy, wait) for t, busy, wait in
          [(0, 0.5, 0.0), (1, 0.95, 12.0), (2, 0.99, 40.0), (3, 0.8, 5.0)]]
    ws += [LinkWindow(3.0, "radio-ant1", "up", 380.0, 0.92, 1.5), LinkWindow(4.0, "radio-ant1", "up", 10.0, 0.1, 0.0)]
    a, b = full_links(ws)
    assert (a.link, a.full_s, a.first_full_s, a.busy_max, a.wait_max_ms, a.radio) == ("co1-dc1", 2.0, 1.0, 0.99,
                                                                                      40.0, False)
    assert (b.link, b.full_s, b.first_full_s, b.radio) == ("radio-ant1", 1.0, 3.0, True)
    assert full_links(ws, busy=0.995) == []


def test_a_run_dir_gets_its_link_load_and_its_full_links(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"time_dilation": {"factor": 2.0, "t0_real_epoch_s": 1000.5}}))
    rows = [{"stream_id": 1, "query": 0, "t_send_ms": 0.0, "t_response_ms": 1500.0}]  # traffic to 1.5 virtual s
    lines = [",".join(RECORD_NAMES)]
    for r in rows:
        full = {"antenna": "ant1", "app": "ar-vr", "cluster": "ant1", "variant": "v", "t_sched_ms": "",
                "t_worker_ms": "", "t_infer_start_ms": "", "t_infer_end_ms": "", "batch_size": 1,
                "outcome": "ontime", "reason": "", **r}
        lines.append(",".join(str(full[n]) for n in RECORD_NAMES))
    (tmp_path / "records.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "wire-co1.stats.json").write_text(json.dumps(
        [{"link": "co1-dc1", "direction": "a->b", "load_per_s": ROWS},
         {"link": "co1-dc1", "direction": "b->a", "load_per_s": [[1001, 100, 1_000_000, 0]]}]))
    assert link_load(tmp_path) == []  # busy 0.75 at most: nothing full
    assert (tmp_path / LOAD_NAME).read_text().splitlines() == [
        "t_s,link,direction,mbps,busy,wait_max_ms", "0,co1-dc1,co1->dc1,24,0.75,20", "0,co1-dc1,dc1->co1,0.0008,0.0005,0",
        "1,co1-dc1,co1->dc1,4,0.25,20"]
    rows2 = [[1001, 2_000_000, 1_900_000_000, 433_000]]
    (tmp_path / "wire-co1.stats.json").write_text(json.dumps([{"link": "co1-dc1", "direction": "a->b",
                                                               "load_per_s": rows2}]))
    (full,) = link_load(tmp_path)
    assert full == {"link": "co1-dc1", "direction": "co1->dc1", "radio": False, "full_s": 1.0, "first_full_s": 0.0,
                    "busy_max": 0.95, "wait_max_ms": 433.0}
    text = "\n".join(format_full({"links_full": [full]}))
    assert "link co1-dc1 co1->dc1 full" in text and "(busy at most 0.95)" in text
    # a wire older than the counts: measured, nothing to count
    (tmp_path / "wire-co1.stats.json").write_text(json.dumps([{"link": "co1-dc1", "direction": "a->b"}]))
    assert link_load(tmp_path) == []
    assert (tmp_path / LOAD_NAME).read_text() == "t_s,link,direction,mbps,busy,wait_max_ms\n"
    assert format_full({"links_full": []}) == []


@pytest.mark.parametrize("config", [{}, {"time_dilation": {"factor": 2.0}}])
def test_without_wires_or_t0_the_load_is_not_counted_and_the_run_says_so(tmp_path: Path, config: dict) -> None:
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert link_load(tmp_path) is None  # no wire: links shaped by netem
    (tmp_path / "wire-co1.stats.json").write_text(json.dumps([{"link": "co1-dc1", "direction": "a->b",
                                                               "load_per_s": ROWS}]))
    assert link_load(tmp_path) is None  # wires, but no t0 to put their seconds on
    assert not (tmp_path / LOAD_NAME).exists()
    assert "not counted: no userspace wire" in format_full({"links_full": None})[0]
    assert format_full({"links_full": None, "link_load_error": "KeyError: 'link'"}) == [
        "link load not counted: KeyError: 'link'"]
    assert format_full({}) == []  # a summary from before the counts
