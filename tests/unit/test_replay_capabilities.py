"""Which sources can resume at a checkpoint's position (``replayable``), and what the
others say a checkpointed restart loses (``replay_gap``): declared, not guessed."""

from __future__ import annotations

import pyarrow as pa
import pytest

from sqlstream.connectors.options import RawOption
from sqlstream.connectors.registry import source_connector

SCHEMA = pa.schema([("v", pa.int64())])


def _create(name: str, **options):
    raw = {key: RawOption(value) for key, value in {"connector": name, **options}.items()}
    return source_connector(name).create("src", SCHEMA, raw, None)


def test_jetstream_replays_and_core_nats_does_not():
    assert _create("nats", stream="S").replayable is True
    assert _create("nats", stream="S").replay_gap() is None
    core = _create("nats", subject="a.b")
    assert core.replayable is False
    assert core.replay_gap().startswith("source 'src' cannot replay: core NATS keeps no messages, so those "
                                        "published to 'a.b' while the pipeline is down are lost")


@pytest.mark.parametrize(
    ("options", "gap"),
    [
        ({"qos": "1", "clean_session": "false", "client_id": "c"},
         "source 'src' cannot replay from a position: a resumed run gets what its persistent session still holds, "
         "i.e. the QoS 1/2 messages not acked when it stopped (acks wait for the checkpoint), redelivered at least "
         "once: messages whose ack was on its way at the crash are counted twice"),
        ({"qos": "0"},
         "source 'src' cannot replay: messages published while the pipeline is down are lost (only qos >= 1 with "
         "clean_session = false keeps them for a resumed run)"),
        ({"qos": "1"},
         "source 'src' cannot replay: messages published while the pipeline is down are lost (only qos >= 1 with "
         "clean_session = false keeps them for a resumed run)"),
    ],
    ids=["persistent-session", "qos0", "clean-session"],
)
def test_mqtt_does_not_replay_and_says_what_a_restart_gets(options, gap):
    source = _create("mqtt", topic="a/b", **options)
    assert source.replayable is False
    assert source.replay_gap() == gap
