"""What a pack prints is captured for its own thread only: other threads keep their standard output."""

from __future__ import annotations

import threading

import pytest

from nodes.comfy_surface.guard import captured_stdout


def test_a_capture_in_one_thread_leaves_the_others_printing(capsys: pytest.CaptureFixture[str]) -> None:
    inside, started, printed = threading.Event(), threading.Event(), threading.Event()

    def pack_import() -> None:
        with captured_stdout("chatty") as buffer:
            print("from the pack")
            started.set()
            printed.wait(5)
            inside.set()
            assert buffer.getvalue() == "from the pack\n"

    thread = threading.Thread(target=pack_import)
    thread.start()
    assert started.wait(5)
    print("noodlebox: serving on http://127.0.0.1:1")  # the main thread, while the pack is capturing
    printed.set()
    thread.join(5)
    assert inside.is_set()
    out = capsys.readouterr().out
    assert "serving on" in out and "from the pack" not in out
