"""What a record keeps through dlog's Kafka listener, with confluent-kafka
(librdkafka): a producer sends records with headers in a chosen order (a
name repeated, a header with a null value), a null value (a tombstone), an
empty value, and chosen timestamps; a consumer reads them back.

Checks, record by record: the key, the value (None stays None, b"" stays
b""), the headers in order (a null header value comes back as b""), and
the timestamp with its type (CreateTime, the producer's time).

Usage: kafka_record_model.py HOST:PORT TOPIC. Prints one JSON line with
the records as consumed; exits non-zero on the first failed check.
"""

import json
import sys
import time

from confluent_kafka import (
    TIMESTAMP_CREATE_TIME,
    Consumer,
    KafkaError,
    Producer,
    TopicPartition,
)

BROKER, TOPIC = sys.argv[1], sys.argv[2]

# (key, value, headers, timestamp); the headers as the consumer must see them.
SENT = [
    (
        b"k1",
        None,
        [("a", b"1"), ("b", b"x"), ("a", b"2")],
        1_600_000_000_123,
    ),
    (None, b"v2", [("z", b"last"), ("n", None), ("m", b"")], 1_600_000_000_456),
    (b"k3", b"", [], 1_600_000_000_789),
]
EXPECTED_HEADERS = [
    [("a", b"1"), ("b", b"x"), ("a", b"2")],
    [("z", b"last"), ("n", b""), ("m", b"")],
    None,
]


def check(ok, what):
    if not ok:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)


failed = []
producer = Producer({"bootstrap.servers": BROKER, "linger.ms": 5})
for key, value, headers, timestamp in SENT:
    producer.produce(
        TOPIC,
        key=key,
        value=value,
        headers=headers,
        timestamp=timestamp,
        partition=0,
        on_delivery=lambda err, msg: err and failed.append(str(err)),
    )
left = producer.flush(60)
check(left == 0 and not failed, f"produce: {left} left, errors {failed}")

consumer = Consumer(
    {
        "bootstrap.servers": BROKER,
        "group.id": "record-model-check",
        "enable.auto.commit": False,
        "enable.partition.eof": True,
    }
)
consumer.assign([TopicPartition(TOPIC, 0, 0)])
messages = []
deadline = time.time() + 60
while len(messages) < len(SENT) and time.time() < deadline:
    msg = consumer.poll(1.0)
    if msg is None:
        continue
    if msg.error():
        check(msg.error().code() == KafkaError._PARTITION_EOF, f"consume: {msg.error()}")
        continue
    messages.append(msg)
consumer.close()
check(len(messages) == len(SENT), f"consumed {len(messages)} of {len(SENT)} records")

consumed = []
for msg, (key, value, _, timestamp), headers in zip(messages, SENT, EXPECTED_HEADERS):
    kind, ts = msg.timestamp()
    got = {
        "offset": msg.offset(),
        "key": msg.key(),
        "value": msg.value(),
        "headers": msg.headers(),
        "timestamp": ts,
    }
    check(msg.key() == key, f"key of {got}")
    check(msg.value() == value, f"value of {got}: expected {value!r}")
    check(msg.headers() == headers, f"headers of {got}: expected {headers!r}")
    check(kind == TIMESTAMP_CREATE_TIME, f"timestamp type {kind} of {got}")
    check(ts == timestamp, f"timestamp of {got}: expected {timestamp}")
    consumed.append(
        {
            "offset": msg.offset(),
            "key": None if msg.key() is None else msg.key().decode(),
            "value": None if msg.value() is None else msg.value().decode(),
            "headers": [[n, v.decode()] for n, v in (msg.headers() or [])],
            "timestamp": ts,
        }
    )
print(json.dumps({"records": consumed}))
