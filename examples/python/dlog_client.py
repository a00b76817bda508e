"""A small distributedlog client over gRPC stubs that grpcio-tools generates
from infra/wire/proto at run time. It follows the wire conventions of the
Rust SDK (docs/wire.md, examples/python/README.md): a node that does not own
a log answers UNAVAILABLE with the owner in `dlog-owner`, and the call goes
there; UNAVAILABLE, DEADLINE_EXCEEDED, ABORTED and RESOURCE_EXHAUSTED are
retried with backoff, `dlog-retry-after-ms` waited out as given; any other
code is final. A call that failed after an attempt that may have been
applied raises `Failed` with `in_doubt` set."""

import atexit, importlib, pathlib, random, shutil, sys, tempfile, time
import grpc
from grpc_tools import protoc

PROTOS = pathlib.Path(__file__).resolve().parents[2] / "infra/wire/proto"
RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
             grpc.StatusCode.ABORTED, grpc.StatusCode.RESOURCE_EXHAUSTED}
MAX_ATTEMPTS, DEADLINE_S, TIMEOUT_S = 10, 60.0, 5.0  # as sdk/src/retry.rs


def load_stubs(protos=PROTOS):
    """Generates dlog.v1's Python stubs into a temporary directory (removed at
    exit); returns {"common"|"log"|"read": (messages module, stubs module)}."""
    out = tempfile.mkdtemp(prefix="dlog-stubs-")
    atexit.register(shutil.rmtree, out, ignore_errors=True)
    files = [str(p.relative_to(protos)) for p in sorted(protos.glob("dlog/v1/*.proto"))]
    if protoc.main(["protoc", f"-I{protos}", f"--python_out={out}",
                    f"--grpc_python_out={out}", *files]) != 0:
        raise RuntimeError(f"grpcio-tools could not compile {files} in {protos}")
    sys.path.insert(0, out)
    load = lambda name: importlib.import_module(f"dlog.v1.{name}")
    return {n: (load(f"{n}_pb2"), load(f"{n}_pb2_grpc")) for n in ("common", "log", "read")}


class Failed(Exception):
    """A call that failed for good: its last status, its trailing metadata."""
    def __init__(self, err, in_doubt):
        doubt = " (an earlier attempt may have been applied)" if in_doubt else ""
        super().__init__(f"{err.code().name}: {err.details()}{doubt}")
        self.code, self.in_doubt = err.code(), in_doubt
        self.metadata = dict(err.trailing_metadata() or ())


class Client:
    """Calls on `endpoints` (host:port, LogService) and `read_endpoints`
    (ReadService); TLS when `ca_pem` is given. Thread-safe enough for a
    writer and a follower: channels are shared, the owner cache is a dict."""
    def __init__(self, stubs, endpoints, read_endpoints=None, ca_pem=None):
        self.stubs, self.endpoints, self.current = stubs, list(endpoints), 0
        self.read_endpoints = list(read_endpoints or endpoints)
        self.credentials = ca_pem and grpc.ssl_channel_credentials(root_certificates=ca_pem)
        self.channels, self.owners, self.redirects = {}, {}, {}

    def stub(self, address, service):
        address = address.split("://", 1)[-1]  # dlog-owner names http(s)://host:port
        if address not in self.channels:
            self.channels[address] = (grpc.secure_channel(address, self.credentials)
                                      if self.credentials else grpc.insecure_channel(address))
        rpc = self.stubs["log" if service == "LogService" else "read"][1]
        return getattr(rpc, f"{service}Stub")(self.channels[address])

    def call(self, method, request, log=None, service="LogService"):
        """One unary call with the SDK's redirects and retries."""
        endpoints = self.endpoints if service == "LogService" else self.read_endpoints
        deadline, pause, attempts, in_doubt = time.monotonic() + DEADLINE_S, 0.05, 0, False
        while True:
            attempts += 1
            address = self.owners.get(log) or endpoints[self.current % len(endpoints)]
            try:
                return getattr(self.stub(address, service), method)(request, timeout=TIMEOUT_S)
            except grpc.RpcError as err:
                metadata = dict(err.trailing_metadata() or ())
                owner = metadata.get("dlog-owner")
                if owner and log and owner.split("://", 1)[-1] != address.split("://", 1)[-1]:
                    # A redirect counts as an attempt: two nodes naming each other cannot loop.
                    self.owners[log] = owner
                    self.redirects[method] = self.redirects.get(method, 0) + 1
                    if attempts < MAX_ATTEMPTS:
                        continue
                if err.code() not in RETRYABLE or attempts >= MAX_ATTEMPTS:
                    raise Failed(err, in_doubt) from None
                # RESOURCE_EXHAUSTED wrote nothing; any other failure may have been applied.
                in_doubt |= err.code() != grpc.StatusCode.RESOURCE_EXHAUSTED
                hint = metadata.get("dlog-retry-after-ms")
                if hint is not None:  # over a quota: wait as told (10 ms to 10 s), no attempt used
                    wait, attempts = min(max(int(hint) / 1000, 0.01), 10.0), attempts - 1
                else:  # the cached owner may be gone; else try the next endpoint
                    if self.owners.pop(log, None) is None:
                        self.current += 1
                    wait, pause = pause * (1 + random.random()), min(pause * 2, 1.0)
                if time.monotonic() + wait > deadline:
                    raise Failed(err, in_doubt) from None
                time.sleep(wait)
