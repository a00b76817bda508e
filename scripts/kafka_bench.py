"""Kafka-protocol benchmark of dlog's listener with librdkafka
(confluent-kafka), run by scripts/bench-kafka.sh. Prints one JSON line.

    kafka_bench.py throughput HOST:PORT TOPIC PARTITIONS SIZE SECONDS
        produce as fast as the producer goes (acks=all, linger 5 ms),
        counting acknowledged messages per second;
    kafka_bench.py latency HOST:PORT TOPIC SIZE RATE SECONDS LINGER_MS
        produce RATE messages/s (librdkafka's linger.ms = LINGER_MS; its
        default is 5) and time each from produce() to its acknowledgement;
        a consumer reads them as they come and times each from produce() to
        its arrival (end to end).
"""

import json
import sys
import threading
import time

from confluent_kafka import Consumer, Producer, TopicPartition


def percentiles(samples):
    samples = sorted(samples)
    if not samples:
        return {}
    pick = lambda q: samples[min(len(samples) - 1, int(q * len(samples)))]
    return {"p50": pick(0.50), "p90": pick(0.90), "p99": pick(0.99), "max": samples[-1]}


def throughput(broker, topic, partitions, size, seconds):
    # Only failures are reported one by one (delivery.report.only.error):
    # a Python callback per message would cost the producer more CPU than
    # the listener spends on it, on the same 2 cores. A message that did
    # not fail and is no longer queued after the flush was acknowledged.
    errors = [0]

    def failed(_err, _msg):
        errors[0] += 1

    producer = Producer({
        "bootstrap.servers": broker,
        "acks": "all",
        "linger.ms": 5,
        "batch.size": 1000000,
        "queue.buffering.max.messages": 500000,
        "queue.buffering.max.kbytes": 1048576,
        "delivery.report.only.error": True,
        "on_delivery": failed,
    })
    value = b"x" * size
    # Warm up: the topic's owners and reads exist before the clock starts.
    for p in range(partitions):
        producer.produce(topic, value=value, partition=p)
    producer.flush(30)
    errors[0] = 0
    start = time.time()
    sent = 0
    while time.time() - start < seconds:
        for _ in range(1000):
            try:
                producer.produce(topic, value=value, partition=sent % partitions)
                sent += 1
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
    producer.flush(60)
    elapsed = time.time() - start
    acked = sent - errors[0] - len(producer)
    return {
        "mode": "throughput",
        "partitions": partitions,
        "size": size,
        "messages_per_s": acked / elapsed,
        "mb_per_s": acked * size / elapsed / 1e6,
        "errors": errors[0],
        "unflushed": len(producer),
        "seconds": elapsed,
    }


def latency(broker, topic, size, rate, seconds, linger_ms):
    produced_at = {}
    ack_ms, e2e_ms = [], []
    errors = [0]
    lock = threading.Lock()
    done = threading.Event()

    def delivered(err, msg):
        now = time.perf_counter()
        if err is not None:
            errors[0] += 1
            return
        with lock:
            sent = produced_at.get(msg.key())
        if sent is not None:
            ack_ms.append((now - sent) * 1000)

    consumer = Consumer({
        "bootstrap.servers": broker,
        "group.id": "bench-e2e",
        "enable.auto.commit": False,
        "fetch.wait.max.ms": 100,
        "fetch.min.bytes": 1,
    })
    consumer.assign([TopicPartition(topic, 0, -1)])  # -1: the end

    def consume():
        while not done.is_set():
            msg = consumer.poll(0.1)
            now = time.perf_counter()
            if msg is None or msg.error():
                continue
            with lock:
                sent = produced_at.get(msg.key())
            if sent is not None:
                e2e_ms.append((now - sent) * 1000)

    reader = threading.Thread(target=consume, daemon=True)
    reader.start()
    producer = Producer({"bootstrap.servers": broker, "acks": "all", "linger.ms": linger_ms})
    producer.produce(topic, value=b"warm", partition=0)
    producer.flush(30)
    time.sleep(1)  # the consumer is positioned
    value = b"x" * size
    interval = 1.0 / rate
    start = time.perf_counter()
    n = 0
    while True:
        due = start + n * interval
        now = time.perf_counter()
        if now - start >= seconds:
            break
        if now < due:
            producer.poll(min(due - now, 0.001))
            continue
        key = str(n).encode()
        with lock:
            produced_at[key] = now
        producer.produce(topic, key=key, value=value, partition=0, on_delivery=delivered)
        producer.poll(0)
        n += 1
    producer.flush(30)
    time.sleep(1)
    done.set()
    reader.join(5)
    consumer.close()
    return {
        "mode": "latency",
        "linger_ms": linger_ms,
        "size": size,
        "rate": rate,
        "sent": n,
        "acked": len(ack_ms),
        "consumed": len(e2e_ms),
        "errors": errors[0],
        "ack_ms": percentiles(ack_ms),
        "e2e_ms": percentiles(e2e_ms),
    }


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "throughput":
        _, _, broker, topic, partitions, size, seconds = sys.argv
        result = throughput(broker, topic, int(partitions), int(size), float(seconds))
    else:
        _, _, broker, topic, size, rate, seconds, linger = sys.argv
        result = latency(broker, topic, int(size), int(rate), float(seconds), int(linger))
    print(json.dumps(result))
