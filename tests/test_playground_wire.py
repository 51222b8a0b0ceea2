"""The playground's pure parts (no server, no Gradio): family detection, readable errors, streaming.

    .venv/bin/python -m pytest tests/test_playground_wire.py -q
"""

from __future__ import annotations

import threading

import grpc
import pytest

from genserve import contract as C
from genserve.clients import GenserveError
from genserve.playground.wire import Cancelled, family_of, readable, stream


@pytest.mark.parametrize("model", [C.TEXT, C.VAE, C.GAN, C.STYLE, C.DREAM])
def test_each_family_is_known_by_its_own_signatures(model):
    names = [sig.name for sig in model.signatures] + [C.DEFAULT_SIGNATURE_KEY]
    assert family_of(names) == model.name
    assert family_of([sig.name for sig in C.TOY.signatures]) is None


def test_errors_read_as_one_line_with_what_to_do():
    down = readable(GenserveError(grpc.StatusCode.UNAVAILABLE, "failed to connect\n(all addresses)"),
                    "127.0.0.1:1")
    assert down.startswith("UNAVAILABLE from 127.0.0.1:1: failed to connect") and "is it running" in down
    missing = readable(GenserveError(grpc.StatusCode.NOT_FOUND, "Servable not found for request: Latest(x)"))
    assert missing.startswith("NOT_FOUND: Servable not found") and "not served" in missing
    assert readable(ValueError("length must be\n  from 1")) == "length must be from 1"
    assert readable(KeyError("k")).startswith("unexpected KeyError")


def test_stream_yields_progress_then_the_result_and_reraises():
    def work(emit):
        for i in range(5):
            emit(i)
        return "done"

    events = list(stream(work, every=0.0))
    assert events[-1] == ("done", "done")
    assert [p for kind, p in events[:-1]] == sorted(p for kind, p in events[:-1]) and events[-2][1] == 4

    def broken(emit):
        raise ValueError("no such picture")

    with pytest.raises(ValueError, match="no such picture"):
        list(stream(broken))


def test_closing_the_stream_stops_the_job_at_its_next_step():
    release, stopped = threading.Event(), threading.Event()

    def work(emit):
        emit("first")
        release.wait(10)
        try:
            emit("second")
        except Cancelled:
            stopped.set()
            raise
        return "finished"

    events = stream(work)
    assert next(events) == ("progress", "first")
    events.close()  # the page went away
    release.set()
    assert stopped.wait(10)
