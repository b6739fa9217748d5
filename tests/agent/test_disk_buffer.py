"""The agent's on-disk outbox: order, bounds, counted drops, survival across restarts."""

from __future__ import annotations

from pathlib import Path

from hub.agent.disk_buffer import DiskBuffer


def test_fifo_bounded_with_counted_drops_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    buffer = DiskBuffer(path, max_messages=5)
    for i in range(8):
        buffer.append(f"t/{i}", f"p{i}".encode(), retain=i == 7)
    assert len(buffer) == 5
    assert buffer.dropped == 3
    batch = buffer.peek(2)
    assert [m.topic for m in batch] == ["t/3", "t/4"]
    buffer.remove_through(batch[-1].id)
    assert len(buffer) == 3
    buffer.close()

    reopened = DiskBuffer(path, max_messages=5)
    try:
        assert len(reopened) == 3
        assert reopened.dropped == 3
        rest = reopened.peek(10)
        assert [(m.topic, m.payload, m.retain) for m in rest] == [
            ("t/5", b"p5", False),
            ("t/6", b"p6", False),
            ("t/7", b"p7", True),
        ]
    finally:
        reopened.close()
