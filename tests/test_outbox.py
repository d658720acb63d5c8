"""The outbox without sockets: direct writes through ``write_now``, and the queue behind them."""

from __future__ import annotations

import asyncio
import gc

from server import outbox as outbox_module
from server.errors import CloseCode
from server.outbox import LARGE, Outbox


class Transport:
    """A ``write_now`` that accepts while ``open``, and a ``send_text`` that can be held."""

    def __init__(self) -> None:
        self.open = True
        self.direct: list[str] = []
        self.shared: list[bool] = []  # per direct write: offered as a frame others share
        self.sent: list[str] = []
        self.release = asyncio.Event()
        self.release.set()

    def write_now(self, text: str, shared: bool = True) -> bool:
        if self.open:
            self.direct.append(text)
            self.shared.append(shared)
        return self.open

    async def send_text(self, text: str) -> None:
        await self.release.wait()
        self.sent.append(text)

    @property
    def received(self) -> list[str]:
        return self.direct + self.sent


async def turn() -> None:
    """Let the callbacks of this turn of the loop (the outbox's end-of-turn write) run."""
    await asyncio.sleep(0)


def test_direct_writes_at_the_end_of_the_turn_and_queue_when_refused() -> None:
    async def main() -> None:
        t = Transport()
        out = Outbox(t.send_text, write_now=t.write_now)
        out.put('{"a":1}')
        assert t.direct == [] and out.depth == 0
        await turn()
        assert t.direct == ['{"a":1}'] and out.sent_frames == 1  # one message: as it is
        out.put('{"b":2}')
        out.put('{"c":3}')
        await turn()
        assert t.direct[-1] == '[{"b":2},{"c":3}]'  # a round: coalesced, one frame
        t.open = False  # backed up: queued for the sender, and what follows too, in order
        out.put('{"d":4}')
        await turn()
        t.open = True
        out.put('{"e":5}')
        assert out.depth == 2
        await turn()
        assert t.sent == ['[{"d":4},{"e":5}]'] and out.depth == 0 and out.sent_frames == 3
        out.put('{"f":6}')  # the queue is empty again: direct
        await turn()
        assert t.direct[-1] == '{"f":6}'
        out.shutdown(None)
        await out.stop()
        assert out._task is None  # nothing queued, no sender task

    asyncio.run(main())


def test_slow_consumer_rule_is_unchanged() -> None:
    async def main() -> None:
        t = Transport()
        out = Outbox(t.send_text, write_now=t.write_now, max_messages=3)
        t.open = False
        t.release.clear()  # the socket does not drain: the sender stays in send_text
        out.put("1")
        await turn()  # refused: queued, the sender takes it and stays in send_text
        await turn()
        for i in range(2, 6):
            out.put(str(i))
        assert out.closed and out.close_code == CloseCode.TRY_AGAIN_LATER
        await out.stop()  # the send stuck on the stalled client is cancelled
        assert out._task is None

    asyncio.run(main())


def test_backlog_is_written_directly_and_the_rest_queued_in_order() -> None:
    async def main() -> None:
        t = Transport()
        out = Outbox(t.send_text, write_now=t.write_now)
        big = '{"type":"snapshot","state":"' + "x" * LARGE + '"}'
        out.put_backlog([big, '{"type":"synced"}'])
        assert t.direct == [big, '{"type":"synced"}']
        out.put('{"type":"live"}')  # a live message of this turn, then a catch-up: it goes first
        out.put_backlog(['{"type":"snapshot"}'])
        await turn()
        assert t.sent == ['[{"type":"snapshot"},{"type":"live"}]']
        t.sent.clear()
        t.open = False
        out.put_backlog([big, '{"type":"synced"}'])
        out.put('{"type":"patch"}')
        await turn()
        await turn()
        # the large message goes alone (its prepared frame is shared); the rest coalesce
        assert t.sent == [big, '[{"type":"synced"},{"type":"patch"}]']
        out.shutdown(None)
        await out.stop()
        assert out._task is None  # nothing queued, no sender task

    asyncio.run(main())


def test_without_write_now_everything_goes_through_the_sender() -> None:
    async def main() -> None:
        t = Transport()
        out = Outbox(t.send_text)
        big = '"' + "y" * LARGE + '"'
        out.put_backlog([big, "{}"])
        await asyncio.sleep(0)
        assert t.direct == [] and t.sent == [f"[{big},{{}}]"]
        out.shutdown(None)
        await out.stop()
        assert out._task is None  # nothing queued, no sender task

    asyncio.run(main())


def test_a_sender_task_exists_only_while_something_is_queued() -> None:
    async def main() -> None:
        t = Transport()
        done: list[bool] = []
        out = Outbox(t.send_text)
        out.on_done = lambda: done.append(True)
        assert out._task is None
        out.put("1")
        assert out._task is not None
        await turn()
        assert t.sent == ["1"] and out._task is None and not done
        out.shutdown(1013, "overflow")
        out.shutdown(None)  # the first shutdown wins; on_done is called once
        assert done == [True] and out.close_code == 1013

    asyncio.run(main())


def test_a_failed_send_shuts_the_outbox_down_without_a_close_code() -> None:
    async def main() -> None:
        async def gone(text: str) -> None:
            raise ConnectionResetError("the client went away")

        done: list[bool] = []
        out = Outbox(gone)
        out.on_done = lambda: done.append(True)
        out.put("1")
        await turn()
        assert out.closed and out.close_code is None and done == [True]
        out.put("2")  # ignored once closed: no new sender
        assert out._task is None

    asyncio.run(main())


def test_one_end_of_turn_callback_writes_every_outbox_and_survives_a_failing_one() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        scheduled = 0
        call_soon = loop.call_soon

        def counting(*args: object, **kwargs: object) -> asyncio.Handle:
            nonlocal scheduled
            scheduled += 1
            return call_soon(*args, **kwargs)  # type: ignore[arg-type]

        loop.call_soon = counting  # type: ignore[method-assign]
        transports = [Transport() for _ in range(50)]
        outboxes = [Outbox(t.send_text, write_now=t.write_now) for t in transports]

        def broken(text: str, shared: bool = True) -> bool:
            raise RuntimeError("this connection's transport is broken")

        outboxes[10]._write_now = broken
        for out in outboxes:
            out.put('{"a":1}')
        loop.call_soon = call_soon  # type: ignore[method-assign]
        assert scheduled == 1  # one callback for the 50 connections
        await turn()
        assert all(t.direct == ['{"a":1}'] for i, t in enumerate(transports) if i != 10)
        assert outboxes[10].closed and outboxes[10].close_code is None

    asyncio.run(main())


def test_the_same_round_coalesced_for_many_connections_is_one_text_object() -> None:
    async def main() -> None:
        transports = [Transport() for _ in range(3)]
        outboxes = [Outbox(t.send_text, write_now=t.write_now) for t in transports]
        first, second = '{"type":"patch","v":1}', '{"type":"patch","v":2}'
        ack = '{"type":"ack","id":1,"version":2}'
        outboxes[0].put(first)
        outboxes[0].put(ack)  # the submitter's round: its own, written unshared
        for out in outboxes[1:]:
            out.put(first)
            out.put(second)
        await turn()
        assert transports[0].direct == [f"[{first},{ack}]"] and transports[0].shared == [False]
        one, two = transports[1].direct[0], transports[2].direct[0]
        assert one == f"[{first},{second}]" and two is one  # built once: its frame is shared
        assert transports[1].shared == [False] and transports[2].shared == [True]

    asyncio.run(main())


def test_a_finished_event_loop_leaves_nothing_behind() -> None:
    async def main() -> None:
        out = Outbox(Transport().send_text, write_now=Transport().write_now)
        out.put("{}")
        await turn()

    gc.collect()
    before = len(outbox_module._END_OF_TURN)
    for _ in range(3):
        asyncio.run(main())
    gc.collect()
    assert len(outbox_module._END_OF_TURN) <= before  # each loop's entry went with it
