"""A room event leaves no reference cycles behind: with 200 phones answering at once, cyclic
garbage from every event fed the garbage collector, whose passes paused the whole burst
(benchmarks/room_fanout.py). What an event allocates goes when the event ends: 40 events left
2,614 objects in cycles before (Flask kept each event's routing miss and its traceback), 334 now."""

from __future__ import annotations

import gc

from room_helpers import act, create_room, guess, host_of, student


def test_answers_leave_no_cycles_for_the_collector(scored_app, client):
    room = create_room(client, rounds=1, show_histogram=True)
    code = room["code"]
    host, _ = host_of(scored_app, room)
    socks = [student(scored_app, code, f"s{i}")[0] for i in range(25)]
    act(host, code, "start")

    def answer(i: int) -> None:
        assert guess(socks[i], code, " the", f"garbage-key-{i:04d}")["ok"]
        assert socks[i].emit("guess", {"code": "ZZZZZ"}, callback=True)["ok"] is False  # refused

    for i in range(5):  # first calls create what lives on (compiled queries, caches)
        answer(i)
    gc.collect()
    gc.disable()
    try:
        for i in range(5, 25):
            answer(i)
        left = gc.collect()
    finally:
        gc.enable()
    assert left < 40 * 15, left  # about 8 per event: werkzeug's URL matcher makes one small cycle
