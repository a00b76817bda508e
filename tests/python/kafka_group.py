"""A kafka-python consumer group against dlog's Kafka listener.

Three members share a six-partition topic: once the group is stable each
member owns two partitions, and every record produced is consumed once, by
the member that owns its partition. Then a member commits and leaves: the
other two take its partitions over and resume at the committed offsets
(nothing consumed before is delivered again, nothing after is missed).

Usage: kafka_group.py HOST:PORT TOPIC GROUP. Prints one JSON line of
figures; exits non-zero on the first failed check.
"""

import json
import sys
import threading
import time

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

BROKER, TOPIC, GROUP = sys.argv[1], sys.argv[2], sys.argv[3]
PARTITIONS = 6
DEADLINE = 120  # seconds for each phase


def check(ok, what):
    if not ok:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)


class Member(threading.Thread):
    """One consumer, polling in its own thread until told to stop."""

    def __init__(self, name):
        super().__init__(daemon=True)
        self.name = name
        self.consumer = KafkaConsumer(
            TOPIC,
            bootstrap_servers=BROKER,
            group_id=GROUP,
            client_id=name,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=6000,
            heartbeat_interval_ms=500,
        )
        self.lock = threading.Lock()
        self.records = []  # (partition, offset, value)
        self.assigned = set()
        self.stopping = threading.Event()
        self.commit_now = threading.Event()
        self.committed = threading.Event()
        self.leave = threading.Event()

    def run(self):
        while not self.stopping.is_set():
            batches = self.consumer.poll(timeout_ms=200)
            with self.lock:
                for part, records in batches.items():
                    for r in records:
                        self.records.append((part.partition, r.offset, r.value.decode()))
                self.assigned = {tp.partition for tp in self.consumer.assignment()}
            if self.commit_now.is_set() and not self.committed.is_set():
                self.consumer.commit()
                self.committed.set()
            if self.leave.is_set():
                self.consumer.close()
                return
        self.consumer.close()

    def snapshot(self):
        with self.lock:
            return set(self.assigned), list(self.records)


def wait_for(condition, what):
    deadline = time.time() + DEADLINE
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.2)
    check(False, f"timed out waiting for {what}")


admin = KafkaAdminClient(bootstrap_servers=BROKER)
admin.create_topics([NewTopic(TOPIC, PARTITIONS, 1)])
check(TOPIC in admin.list_topics(), "the created topic is listed")

members = [Member(f"member-{i}") for i in range(3)]
for m in members:
    m.start()


def stable(expected):
    def condition():
        owned = [m.snapshot()[0] for m in expected]
        union = set().union(*owned)
        return (
            union == set(range(PARTITIONS))
            and sum(len(o) for o in owned) == PARTITIONS
            and all(owned)
        )

    return condition


wait_for(stable(members), "three members to share six partitions")
start = time.time()

# Idempotence is the confluent-kafka test's subject; this one is about groups.
producer = KafkaProducer(bootstrap_servers=BROKER, acks="all", enable_idempotence=False)
FIRST = 600
for i in range(FIRST):
    producer.send(TOPIC, value=f"first-{i}".encode(), partition=i % PARTITIONS)
producer.flush()

wait_for(
    lambda: sum(len(m.snapshot()[1]) for m in members) >= FIRST,
    f"{FIRST} records consumed",
)
owners = {}
seen = []
for m in members:
    owned, records = m.snapshot()
    check(len(owned) == 2, f"{m.name} owns two partitions, not {sorted(owned)}")
    for partition, offset, value in records:
        check(partition in owned, f"{m.name} got partition {partition}, not its own")
        owners.setdefault(partition, set()).add(m.name)
        seen.append(value)
check(sorted(seen) == sorted(f"first-{i}" for i in range(FIRST)), "every record once")
check(all(len(o) == 1 for o in owners.values()), f"one member per partition: {owners}")

# The leaving member commits first; the others commit too.
for m in members:
    m.commit_now.set()
wait_for(lambda: all(m.committed.is_set() for m in members), "the commits")
leaver, stayers = members[0], members[1:]
left_partitions = leaver.snapshot()[0]
leaver.leave.set()
leaver.join(30)
wait_for(stable(stayers), "two members to take all six partitions")

SECOND = 300
for i in range(SECOND):
    producer.send(TOPIC, value=f"second-{i}".encode(), partition=i % PARTITIONS)
producer.flush()
wait_for(
    lambda: sum(1 for m in stayers for r in m.snapshot()[1] if r[2].startswith("second-"))
    >= SECOND,
    f"{SECOND} more records consumed",
)
time.sleep(1)  # anything delivered twice would arrive now
after = [r for m in stayers for r in m.snapshot()[1]]
firsts = [r[2] for r in after if r[2].startswith("first-")]
check(len(firsts) == len(set(firsts)), "no first-round record twice to the stayers")
check(
    all(int(r[2].split("-")[1]) % PARTITIONS not in left_partitions for r in after if r[2].startswith("first-")),
    "the taken-over partitions resumed at the committed offsets",
)
seconds = sorted(r[2] for r in after if r[2].startswith("second-"))
check(seconds == sorted(f"second-{i}" for i in range(SECOND)), "every second-round record once")

# The committed offsets are dlog subscriptions, visible through Kafka too.
probe = KafkaConsumer(bootstrap_servers=BROKER, group_id=GROUP, enable_auto_commit=False)
committed = {p: probe.committed(TopicPartition(TOPIC, p)) for p in left_partitions}
probe.close()
check(all(c == FIRST // PARTITIONS for c in committed.values()), f"committed offsets {committed}")

for m in stayers:
    m.stopping.set()
for m in stayers:
    m.join(30)
print(json.dumps({
    "members": 3,
    "partitions": PARTITIONS,
    "first_round": FIRST,
    "second_round": SECOND,
    "taken_over": sorted(left_partitions),
    "committed": committed,
    "seconds": round(time.time() - start, 1),
}))
