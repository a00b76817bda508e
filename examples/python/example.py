"""distributedlog from Python, end to end: create a log, follow it from its
tail in a thread, append batches with `expected_offset` (each written once,
even when retried), check that the follower saw every record, and commit a
subscription at the end. See README.md beside this file.

    example.py --endpoint HOST:PORT[,HOST:PORT...] [--read-endpoint ...]
               [--ca CA.pem] [--log ns/name] [--subscription NAME]
               [--batches 5] [--batch-size 100]

Prints what it does, then one JSON line of figures (offsets, records,
redirects followed by method); exits non-zero on the first failure.
"""

import argparse, json, threading, time, uuid
import grpc
from dlog_client import MAX_ATTEMPTS, RETRYABLE, Client, Failed, load_stubs

STUBS = load_stubs()
pb, log_pb, read_pb = STUBS["common"][0], STUBS["log"][0], STUBS["read"][0]


class Follower(threading.Thread):
    """Reads `log` from `start` with `follow` into `seen` (offset -> record)
    until stopped; resumes after the next offset on a retryable failure."""
    def __init__(self, client, log, start):
        super().__init__(daemon=True)
        self.client, self.log, self.next, self.seen = client, log, start, {}
        self.stopped, self.stream, self.error = threading.Event(), None, None

    def run(self):
        failures = 0
        while not self.stopped.is_set():
            address = self.client.read_endpoints[failures % len(self.client.read_endpoints)]
            request = read_pb.ReadRequest(log=self.log, offset=self.next, follow=True)
            self.stream = self.client.stub(address, "ReadService").Read(request)
            try:
                for response in self.stream:
                    for record in response.records:
                        self.seen[record.offset], self.next, failures = record, record.offset + 1, 0
            except grpc.RpcError as err:
                if self.stopped.is_set():
                    return
                failures += 1
                if err.code() not in RETRYABLE or failures >= MAX_ATTEMPTS:
                    self.error = f"{self.log} at {address}: {err.code().name} {err.details()}"
                    return
                time.sleep(0.05 * 2 ** min(failures, 4))

    def stop(self):
        self.stopped.set()
        if self.stream is not None:
            self.stream.cancel()


def landed(client, log, at, records):
    """Whether the log holds exactly `records` from offset `at` (read back)."""
    request = read_pb.ReadRequest(log=log, offset=at, limit=len(records))
    stream = client.stub(client.read_endpoints[0], "ReadService").Read(request, timeout=10)
    got = [r for response in stream for r in response.records]
    return [(r.payload, r.key, list(r.headers)) for r in got] == [
        (r.payload, r.key, list(r.headers)) for r in records]


def append(client, log, records, expected, first):
    """Appends `records` only at `expected`; returns the log's next offset."""
    request = log_pb.AppendRequest(log=log, records=records, expected_offset=expected)
    try:
        return client.call("Append", request, log=log).last_offset + 1
    except Failed as err:
        actual = err.metadata.get("dlog-next-offset")
        if err.code != grpc.StatusCode.FAILED_PRECONDITION or actual is None:
            raise
        actual = int(actual)
        # An attempt in doubt and the log exactly one batch further: ours if it reads back so.
        one_batch_further = actual == expected + len(records)
        if err.in_doubt and one_batch_further and landed(client, log, expected, records):
            return actual
        if first and not err.in_doubt:  # the tail learnt was stale: go again at the log's end
            return append(client, log, records, actual, False)
        raise


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--endpoint", default="127.0.0.1:7070")
    parser.add_argument("--read-endpoint")
    parser.add_argument("--ca", help="the cluster CA (PEM), for https:// nodes")
    parser.add_argument("--log", default="demo/python")
    parser.add_argument("--subscription", default="python-example")
    parser.add_argument("--batches", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=100)
    args = parser.parse_args()
    ca = open(args.ca, "rb").read() if args.ca else None
    reads = args.read_endpoint.split(",") if args.read_endpoint else None
    client = Client(STUBS, args.endpoint.split(","), reads, ca)

    try:
        client.call("CreateLog", log_pb.CreateLogRequest(log=args.log))
        print(f"created {args.log}")
    except Failed as err:
        if err.code != grpc.StatusCode.ALREADY_EXISTS:
            raise
        print(f"{args.log} exists: appending after its records")
    # The tail: CheckTail's next offset, where the follower starts and the first batch goes.
    tail = client.call("CheckTail", read_pb.CheckTailRequest(log=args.log), service="ReadService")
    follower = Follower(client, args.log, tail.next_offset)
    follower.start()

    run, sent, next_offset = uuid.uuid4().hex[:8], {}, tail.next_offset
    for batch in range(args.batches):
        records = [pb.Record(payload=f"{run} {batch}.{i}".encode(), key=f"k{i % 7}".encode(),
                             headers=[pb.Header(name="batch", value=str(batch).encode())])
                   for i in range(args.batch_size)]
        at = append(client, args.log, records, next_offset, first=batch == 0)
        sent.update(zip(range(at - len(records), at), records))
        print(f"appended batch {batch} at offsets {at - len(records)}..{at - 1}")
        next_offset = at

    deadline = time.monotonic() + 60
    while follower.next < next_offset and follower.error is None and time.monotonic() < deadline:
        time.sleep(0.05)
    follower.stop()
    if follower.error or follower.next < next_offset:
        raise SystemExit(follower.error or f"the follower is at {follower.next}, not {next_offset}")
    for offset, record in sent.items():
        seen = follower.seen.get(offset)
        if seen is None or (seen.payload, seen.key, list(seen.headers)) != (
                record.payload, record.key, list(record.headers)):
            raise SystemExit(f"offset {offset}: followed {seen}, appended {record}")
    print(f"followed {len(sent)} records from the tail")

    commit = read_pb.CommitSubscriptionRequest(
        log=args.log, subscription=args.subscription, offset=next_offset)
    client.call("CommitSubscription", commit, service="ReadService")
    stored = client.call("GetSubscription", read_pb.GetSubscriptionRequest(
        log=args.log, subscription=args.subscription), service="ReadService").offset
    print(f"subscription {args.subscription} committed at {stored}")
    print(json.dumps({"log": args.log, "first_offset": tail.next_offset,
                      "next_offset": next_offset, "appended": len(sent),
                      "followed": sum(o in follower.seen for o in sent),
                      "subscription": stored, "redirects": client.redirects}))


if __name__ == "__main__":
    try:
        main()
    except Failed as err:
        raise SystemExit(f"example.py: {err}") from None
