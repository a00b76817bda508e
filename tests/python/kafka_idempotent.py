"""An idempotent confluent-kafka (librdkafka) producer through dlog's Kafka
listener while the test kills the partition's owner.

Produces distinct values (`m-N`) to one partition for DURATION seconds,
then reads the whole partition back with a consumer. Every acknowledged
value must be there, and no value twice (a retried batch lands once).
Records of other writers of the partition are skipped.

Usage: kafka_idempotent.py HOST:PORT TOPIC DURATION. Prints one JSON line;
exits non-zero on a failed check.
"""

import json
import sys
import time

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

BROKER, TOPIC, DURATION = sys.argv[1], sys.argv[2], float(sys.argv[3])

acked, failed = [], []


def delivered(err, msg):
    if err is None:
        acked.append(msg.value().decode())
    else:
        failed.append(str(err))


producer = Producer({
    "bootstrap.servers": BROKER,
    "enable.idempotence": True,
    "linger.ms": 5,
    "message.timeout.ms": 120000,
})
sent = 0
start = time.time()
while time.time() - start < DURATION:
    for _ in range(200):
        while True:
            try:
                producer.produce(TOPIC, value=f"m-{sent}".encode(), partition=0, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.05)
        sent += 1
    producer.poll(0.05)
left = producer.flush(180)

consumer = Consumer({
    "bootstrap.servers": BROKER,
    "group.id": "idempotence-check",
    "enable.auto.commit": False,
    "enable.partition.eof": True,
})
consumer.assign([TopicPartition(TOPIC, 0, 0)])
values = []
deadline = time.time() + 120
while time.time() < deadline:
    msg = consumer.poll(1.0)
    if msg is None:
        continue
    if msg.error():
        if msg.error().code() == KafkaError._PARTITION_EOF:
            break
        print(f"consumer error: {msg.error()}", file=sys.stderr)
        continue
    value = msg.value().decode()
    # Other writers' records (the test's gRPC writer) are not this producer's.
    if value.startswith("m-"):
        values.append(value)
consumer.close()

seen = set(values)
duplicates = len(values) - len(seen)
lost = [v for v in acked if v not in seen]
print(json.dumps({
    "sent": sent,
    "acked": len(acked),
    "failed": len(failed),
    "unflushed": left,
    "consumed": len(values),
    "duplicates": duplicates,
    "lost": len(lost),
    "first_failures": failed[:3],
}))
if duplicates or lost or not acked:
    sys.exit(1)
