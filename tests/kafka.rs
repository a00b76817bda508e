//! The Kafka listener against clients no one here wrote: `kcat` (librdkafka)
//! produces and consumes through a `dlog standalone` node, and raw frames
//! bring the bad input a broken or hostile client could send.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use dlog_testkit::{Process, free_port, require_binary, stdout_of, wait_for_port};
use futures::TryStreamExt;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, CreateTopicsRequest, CreateTopicsResponse,
    DeleteTopicsRequest, DeleteTopicsResponse, FindCoordinatorRequest, FindCoordinatorResponse,
    GroupId, HeartbeatRequest, HeartbeatResponse, MetadataRequest, MetadataResponse,
    ProduceRequest, ProduceResponse, RequestHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::{
    Compression, NO_PARTITION_LEADER_EPOCH, NO_PRODUCER_EPOCH, NO_PRODUCER_ID, Record,
    RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

/// A standalone node with its Kafka listener on a port of its own.
struct Node {
    dir: tempfile::TempDir,
    grpc: u16,
    kafka: u16,
    _process: Process,
}

impl Node {
    fn start() -> Node {
        let dir = tempfile::tempdir().unwrap();
        let (grpc, kafka) = (free_port(), free_port());
        let mut command = Command::new(env!("CARGO_BIN_EXE_dlog"));
        command
            .arg("standalone")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--listen", &format!("127.0.0.1:{grpc}")])
            .args(["--kafka-listen", &format!("127.0.0.1:{kafka}")]);
        let log = dir.path().join("standalone.log");
        let process = Process::spawn("standalone", command, &log).unwrap();
        for port in [grpc, kafka] {
            assert!(
                wait_for_port(([127, 0, 0, 1], port).into(), Duration::from_secs(20)),
                "standalone did not start: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        Node {
            dir,
            grpc,
            kafka,
            _process: process,
        }
    }

    fn broker(&self) -> String {
        format!("127.0.0.1:{}", self.kafka)
    }

    fn client(&self) -> distributedlog::Client {
        distributedlog::Client::new(format!("http://127.0.0.1:{}", self.grpc))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("standalone.log")).unwrap_or_default()
    }
}

/// Every record of `log`, through dlog.
async fn read_all(client: &distributedlog::Client, log: &str) -> Vec<distributedlog::StoredRecord> {
    let options = distributedlog::ReadOptions::default();
    client
        .reader(log, distributedlog::Start::Earliest, options)
        .try_collect()
        .await
        .unwrap()
}

/// The `count` records of `log`, waiting for them: a read that stops at
/// the tail stops at the LAC the cache nodes know, which reaches the last
/// acknowledged append a moment after its answer (the owner's next add,
/// or its idle LAC update). Then checks that the log holds no more.
async fn read_acknowledged(
    client: &distributedlog::Client,
    log: &str,
    count: usize,
) -> Vec<distributedlog::StoredRecord> {
    let options = distributedlog::ReadOptions {
        limit: Some(count as u64),
        follow: true,
        ..distributedlog::ReadOptions::default()
    };
    let read = client
        .reader(log, distributedlog::Start::Earliest, options)
        .try_collect();
    let records: Vec<distributedlog::StoredRecord> =
        tokio::time::timeout(Duration::from_secs(30), read)
            .await
            .expect("the acknowledged records are read within 30 s")
            .unwrap();
    // The LAC covers them now: a read to the tail shows anything past them.
    let all = read_all(client, log).await;
    assert_eq!(
        all.len(),
        count,
        "{log} holds exactly the acknowledged records"
    );
    records
}

fn kcat() -> Option<PathBuf> {
    require_binary(
        "kcat",
        &[],
        "apt-get install kcat, or run scripts/install-test-deps.sh",
    )
}

/// Runs kcat with `args` and `stdin`; asserts it succeeded.
fn run_kcat(kcat: &PathBuf, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(kcat)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_vec();
    let writer = std::thread::spawn(move || input.write_all(&stdin));
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(
        output.status.success(),
        "kcat {args:?} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kcat_writes_and_reads_100000_records_with_keys_and_headers() {
    let Some(kcat) = kcat() else { return };
    let node = Node::start();
    let broker = node.broker();
    let client = node.client();

    // A topic made through dlog is a Kafka topic.
    client.create_log("kafka/made-by-dlog.0").await.unwrap();
    client.create_log("kafka/made-by-dlog.1").await.unwrap();

    let count = 100_000;
    let mut input = String::new();
    for i in 0..count {
        input.push_str(&format!("key{i}:value {i} {}\n", "x".repeat(i % 37)));
    }
    run_kcat(
        &kcat,
        &[
            "-b",
            &broker,
            "-P",
            "-t",
            "events",
            "-K:",
            "-H",
            "a=1",
            "-H",
            "b=two",
            "-H",
            "a=3",
            "-X",
            "linger.ms=5",
        ],
        input.as_bytes(),
    );

    let metadata = run_kcat(&kcat, &["-b", &broker, "-L"], b"");
    let metadata = String::from_utf8_lossy(&metadata.stdout);
    assert!(
        metadata.contains("topic \"events\" with 1 partitions"),
        "{metadata}"
    );
    assert!(
        metadata.contains("topic \"made-by-dlog\" with 2 partitions"),
        "{metadata}"
    );
    assert!(metadata.contains("1 brokers:"), "{metadata}");
    assert!(metadata.contains(&format!(" at {broker}")), "{metadata}");

    let consumed = run_kcat(
        &kcat,
        &[
            "-b",
            &broker,
            "-C",
            "-t",
            "events",
            "-o",
            "beginning",
            "-e",
            "-q",
            "-f",
            "%p %o %k:%s|%h\n",
        ],
        b"",
    );
    let consumed = String::from_utf8_lossy(&consumed.stdout);
    let lines: Vec<&str> = consumed.lines().collect();
    assert_eq!(lines.len(), count, "every record comes back once");
    for (i, (line, sent)) in lines.iter().zip(input.lines()).enumerate() {
        assert_eq!(*line, format!("0 {i} {sent}|a=1,b=two,a=3"), "record {i}");
    }

    // The same records through dlog: key, headers in order, the producer's
    // timestamp (librdkafka's CreateTime) beside the append time.
    let records = read_acknowledged(&client, "kafka/events.0", count).await;
    assert_eq!(records.len(), count);
    let seventh = &records[7].record;
    assert_eq!(seventh.key.as_deref(), Some(&b"key7"[..]));
    assert_eq!(seventh.payload, format!("value 7 {}", "x".repeat(7)));
    let headers: Vec<(&str, &[u8])> = (seventh.headers.iter())
        .map(|(name, value)| (name.as_str(), &value[..]))
        .collect();
    assert_eq!(headers, [("a", &b"1"[..]), ("b", b"two"), ("a", b"3")]);
    let produced_at = seventh
        .producer_time_ms
        .expect("librdkafka sends CreateTime");
    let appended_at = records[7].timestamp_ms;
    assert!(
        (appended_at - 60_000..=appended_at + 5_000).contains(&produced_at),
        "produced at {produced_at}, appended at {appended_at}"
    );

    // ListOffsets by time: the first record at or after a record's time.
    let middle = records[count / 2].timestamp_ms;
    let query = run_kcat(
        &kcat,
        &["-b", &broker, "-Q", "-t", &format!("events:0:{middle}")],
        b"",
    );
    let query = String::from_utf8_lossy(&query.stdout);
    let expected = records
        .iter()
        .position(|r| r.timestamp_ms >= middle)
        .unwrap();
    assert!(
        query.contains(&format!("offset {expected}")),
        "kcat -Q at {middle} ms answered {query}; expected offset {expected}"
    );

    // A record appended through gRPC is fetched by a Kafka consumer, with
    // its repeated header and its producer time as the timestamp.
    let mut record = distributedlog::Record::new("from grpc");
    record.key = Some(Bytes::from_static(b"g"));
    record.headers.push("via", "dlog");
    record.headers.push("via", "grpc");
    record.producer_time_ms = Some(1_500_000_000_000);
    let appended = client
        .append("kafka/events.0", vec![record], None)
        .await
        .unwrap();
    assert_eq!(appended.first_offset, count as u64);
    let last = |format: &str| {
        let out = run_kcat(
            &kcat,
            &[
                "-b", &broker, "-C", "-t", "events", "-o", "-1", "-c", "1", "-q", "-f", format,
            ],
            b"",
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(
        last("%o %k:%s|%h|%T\n"),
        format!("{count} g:from grpc|via=dlog,via=grpc|1500000000000\n")
    );

    // kcat -Z sends an empty value as NULL: a tombstone, kept as one
    // (%S is the value's length, -1 for NULL).
    run_kcat(
        &kcat,
        &["-b", &broker, "-P", "-t", "events", "-K:", "-Z"],
        b"tomb:\n",
    );
    assert_eq!(last("%o %k %S\n"), format!("{} tomb -1\n", count + 1));
    let records = read_acknowledged(&client, "kafka/events.0", count + 2).await;
    let tombstone = &records[count + 1].record;
    assert!(tombstone.null_payload, "{tombstone:?}");
    assert_eq!(tombstone.nullable_payload(), None);
}

/// confluent-kafka (librdkafka): records with headers in a chosen order (a
/// name repeated, a null header value), a null value, an empty value and
/// chosen timestamps are consumed back as produced, CreateTime with the
/// producer's time (tests/python/kafka_record_model.py); dlog's client and
/// `dlog read --json` show the same records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confluent_kafka_record_keeps_header_order_a_null_value_and_its_timestamp() {
    let Some(python) = dlog_testkit::require_python_module("confluent_kafka") else {
        return;
    };
    let node = Node::start();
    let out = run_python(
        &python,
        "kafka_record_model.py",
        &[&node.broker(), "model"],
        &node,
    );
    let consumed: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let consumed = consumed["records"].as_array().unwrap().clone();
    assert_eq!(consumed.len(), 3, "{out}");

    let records = read_acknowledged(&node.client(), "kafka/model.0", 3).await;
    assert_eq!(records.len(), 3);
    let first = &records[0].record;
    assert!(first.null_payload);
    assert_eq!(first.producer_time_ms, Some(1_600_000_000_123));
    assert_eq!(first.headers.get_all("a").collect::<Vec<_>>(), ["1", "2"]);
    assert!(!records[2].record.null_payload, "empty, not null");
    assert_eq!(records[2].record.payload, "");

    let output = Command::new(env!("CARGO_BIN_EXE_dlog"))
        .args(["read", "kafka/model.0", "--json"])
        .env("DLOG_ENDPOINT", format!("http://127.0.0.1:{}", node.grpc))
        .output()
        .unwrap();
    let lines: Vec<serde_json::Value> = stdout_of(output, "dlog read")
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    let times = [
        "2020-09-13T12:26:40.123Z",
        "2020-09-13T12:26:40.456Z",
        "2020-09-13T12:26:40.789Z",
    ];
    for ((line, kafka), time) in lines.iter().zip(&consumed).zip(times) {
        assert_eq!(line["offset"], kafka["offset"], "{line}");
        assert_eq!(line["key"], kafka["key"], "{line}");
        assert_eq!(line["payload"], kafka["value"], "{line}");
        assert_eq!(line["producer_time"], time, "{line}");
        let headers: Vec<serde_json::Value> = (kafka["headers"].as_array().unwrap().iter())
            .map(|pair| serde_json::json!({"name": pair[0], "value": pair[1]}))
            .collect();
        let shown = line.get("headers").cloned().unwrap_or_default();
        let shown = shown.as_array().cloned().unwrap_or_default();
        assert_eq!(shown, headers, "{line}");
    }
    assert_eq!(lines[0]["payload"], serde_json::Value::Null);
    assert_eq!(
        lines[0]["headers"],
        serde_json::json!([
            {"name": "a", "value": "1"},
            {"name": "b", "value": "x"},
            {"name": "a", "value": "2"},
        ])
    );
}

/// One connection speaking raw Kafka frames.
struct Raw {
    stream: TcpStream,
    correlation: i32,
}

impl Raw {
    fn connect(node: &Node) -> Raw {
        Raw::connect_port(node.kafka)
    }

    fn connect_port(port: u16) -> Raw {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        Raw {
            stream,
            correlation: 0,
        }
    }

    /// Sends one frame as it is; the response frame, or `None` if the node
    /// closed the connection.
    fn send_frame(&mut self, frame: &[u8]) -> Option<Bytes> {
        if self.stream.write_all(frame).is_err() {
            return None; // closed (and reset) by the node already
        }
        let mut length = [0u8; 4];
        match self.stream.read_exact(&mut length) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return None,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
            Err(e) => panic!("reading the response: {e}"),
        }
        let mut body = vec![0u8; i32::from_be_bytes(length) as usize];
        self.stream.read_exact(&mut body).unwrap();
        Some(Bytes::from(body))
    }

    /// A request with a proper header and `body` (already encoded); the
    /// response body after its header (v0: the correlation id only).
    fn request(&mut self, api: ApiKey, version: i16, body: &[u8]) -> Option<Bytes> {
        let frame = self.frame(api, version, body);
        let response = self.send_frame(&frame)?;
        Some(Self::response_body(
            response,
            api,
            version,
            self.correlation,
        ))
    }

    /// The frame of a request with the next correlation id.
    fn frame(&mut self, api: ApiKey, version: i16, body: &[u8]) -> Vec<u8> {
        self.correlation += 1;
        let mut header = RequestHeader::default();
        header.request_api_key = api as i16;
        header.request_api_version = version;
        header.correlation_id = self.correlation;
        header.client_id = Some(StrBytes::from_static_str("raw-test"));
        let mut buf = BytesMut::new();
        header
            .encode(&mut buf, api.request_header_version(version))
            .unwrap();
        buf.extend_from_slice(body);
        let mut frame = (buf.len() as i32).to_be_bytes().to_vec();
        frame.extend_from_slice(&buf);
        frame
    }

    /// The next response frame.
    fn read_frame(&mut self) -> Bytes {
        let mut length = [0u8; 4];
        self.stream.read_exact(&mut length).unwrap();
        let mut body = vec![0u8; i32::from_be_bytes(length) as usize];
        self.stream.read_exact(&mut body).unwrap();
        Bytes::from(body)
    }

    /// The body of a response to request `correlation`, after checking
    /// that it answers that request.
    fn response_body(mut response: Bytes, api: ApiKey, version: i16, correlation: i32) -> Bytes {
        let header_len = if api.response_header_version(version) >= 1 {
            5 // correlation id and an empty tagged-field set
        } else {
            4
        };
        assert_eq!(
            i32::from_be_bytes(response[..4].try_into().unwrap()),
            correlation,
            "responses come in request order"
        );
        response.split_off(header_len)
    }

    fn api_versions_answer(&mut self) -> bool {
        let mut body = BytesMut::new();
        ApiVersionsRequest::default().encode(&mut body, 1).unwrap();
        match self.request(ApiKey::ApiVersions, 1, &body) {
            Some(mut response) => {
                let decoded = ApiVersionsResponse::decode(&mut response, 1).unwrap();
                decoded.error_code == 0 && !decoded.api_keys.is_empty()
            }
            None => false,
        }
    }

    fn create_topic(&mut self, topic: &str, partitions: i32) -> i16 {
        let mut creatable = CreatableTopic::default();
        creatable.name = TopicName(StrBytes::from_string(topic.to_owned()));
        creatable.num_partitions = partitions;
        creatable.replication_factor = -1;
        let mut request = CreateTopicsRequest::default();
        request.topics = vec![creatable];
        request.timeout_ms = 10_000;
        let mut body = BytesMut::new();
        request.encode(&mut body, 4).unwrap();
        let mut response = self.request(ApiKey::CreateTopics, 4, &body).unwrap();
        CreateTopicsResponse::decode(&mut response, 4)
            .unwrap()
            .topics[0]
            .error_code
    }

    fn delete_topic(&mut self, topic: &str) -> i16 {
        let mut request = DeleteTopicsRequest::default();
        request.topic_names = vec![TopicName(StrBytes::from_string(topic.to_owned()))];
        request.timeout_ms = 10_000;
        let mut body = BytesMut::new();
        request.encode(&mut body, 4).unwrap();
        let mut response = self.request(ApiKey::DeleteTopics, 4, &body).unwrap();
        DeleteTopicsResponse::decode(&mut response, 4)
            .unwrap()
            .responses[0]
            .error_code
    }

    /// A Produce with acks=0 and, after it, an ApiVersions request: its
    /// answer, or `None` if the node closed the connection.
    fn produce_without_ack(&mut self, topic: &str, records: Bytes) -> Option<()> {
        let mut request = produce_request(topic, records);
        request.acks = 0;
        let mut body = BytesMut::new();
        request.encode(&mut body, 7).unwrap();
        self.correlation += 1;
        let mut header = RequestHeader::default();
        header.request_api_key = ApiKey::Produce as i16;
        header.request_api_version = 7;
        header.correlation_id = self.correlation;
        let mut buf = BytesMut::new();
        header.encode(&mut buf, 1).unwrap();
        buf.extend_from_slice(&body);
        let mut frame = (buf.len() as i32).to_be_bytes().to_vec();
        frame.extend_from_slice(&buf);
        self.stream.write_all(&frame).unwrap();
        self.api_versions_answer().then_some(())
    }

    fn produce(&mut self, topic: &str, records: Bytes) -> (i16, i64) {
        let request = produce_request(topic, records);
        let mut body = BytesMut::new();
        request.encode(&mut body, 7).unwrap();
        let mut response = self
            .request(ApiKey::Produce, 7, &body)
            .expect("a produce is answered");
        let decoded = ProduceResponse::decode(&mut response, 7).unwrap();
        let answer = &decoded.responses[0].partition_responses[0];
        (answer.error_code, answer.base_offset)
    }
}

fn produce_request(topic: &str, records: Bytes) -> ProduceRequest {
    produce_request_to(topic, 0, records)
}

fn produce_request_to(topic: &str, index: i32, records: Bytes) -> ProduceRequest {
    {
        let mut partition = PartitionProduceData::default();
        partition.index = index;
        partition.records = Some(records);
        let mut data = TopicProduceData::default();
        data.name = TopicName(StrBytes::from_string(topic.to_owned()));
        data.partition_data = vec![partition];
        let mut request = ProduceRequest::default();
        request.acks = -1;
        request.timeout_ms = 10_000;
        request.topic_data = vec![data];
        request
    }
}

fn batch(values: &[Bytes]) -> Bytes {
    let records: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(i, value)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
            producer_id: NO_PRODUCER_ID,
            producer_epoch: NO_PRODUCER_EPOCH,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: i as i32,
            timestamp: 0,
            key: None,
            value: Some(value.clone()),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(&mut buf, records.iter(), &options).unwrap();
    buf.freeze()
}

const CORRUPT_MESSAGE: i16 = 2;
const MESSAGE_TOO_LARGE: i16 = 10;
const UNSUPPORTED_VERSION: i16 = 35;
const TOPIC_ALREADY_EXISTS: i16 = 36;
const NOT_LEADER_OR_FOLLOWER: i16 = 6;
const NOT_COORDINATOR: i16 = 16;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_kafka_errors_and_loses_nothing_acknowledged() {
    let node = Node::start();
    let client = node.client();
    client.create_log("kafka/safe.0").await.unwrap();

    // Acknowledged before any bad input.
    let mut raw = Raw::connect(&node);
    let values: Vec<Bytes> = (0..10).map(|i| Bytes::from(format!("v{i}"))).collect();
    assert_eq!(raw.produce("safe", batch(&values)), (0, 0));

    // A wrong CRC: CORRUPT_MESSAGE, and the connection stays.
    let mut corrupt = batch(&[Bytes::from_static(b"flipped")]).to_vec();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0x20;
    assert_eq!(raw.produce("safe", Bytes::from(corrupt)).0, CORRUPT_MESSAGE);
    assert!(
        raw.api_versions_answer(),
        "the connection stays after a bad batch"
    );

    // A record over the record limit (1 MiB): MESSAGE_TOO_LARGE.
    let huge = Bytes::from(vec![b'x'; 2 * 1024 * 1024]);
    assert_eq!(raw.produce("safe", batch(&[huge])).0, MESSAGE_TOO_LARGE);
    assert!(raw.api_versions_answer());

    // ApiVersions at a version past the listener's: UNSUPPORTED_VERSION,
    // in a v0 answer that lists the versions.
    let mut body = BytesMut::new();
    ApiVersionsRequest::default().encode(&mut body, 0).unwrap();
    let mut response = raw
        .request(ApiKey::ApiVersions, 9, &body)
        .expect("ApiVersions is always answered");
    let decoded = ApiVersionsResponse::decode(&mut response, 0).unwrap();
    assert_eq!(decoded.error_code, UNSUPPORTED_VERSION);
    assert!(
        decoded
            .api_keys
            .iter()
            .any(|k| k.api_key == ApiKey::Produce as i16)
    );

    // What Kafka closes the connection on, closes it here; the node lives.
    let closed = |frame: &[u8]| {
        let mut raw = Raw::connect(&node);
        assert!(raw.send_frame(frame).is_none(), "{frame:?} was answered");
    };
    // An API key Kafka does not define.
    closed(&[0, 0, 0, 8, 0x03, 0xe7, 0, 0, 0, 0, 0, 1]);
    // A frame shorter than a request header.
    closed(&[0, 0, 0, 3, 0, 3, 0]);
    // A frame longer than the limit.
    closed(&[0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 0]);
    // A Metadata v1 request declaring 2^31 - 1 topics in a few bytes: the
    // decoder refuses it instead of reserving for them (third_party/README.md).
    let mut hostile = vec![0, 3, 0, 1, 0, 0, 0, 7, 0xff, 0xff];
    hostile.extend_from_slice(&[0x7f, 0xff, 0xff, 0xff, 0, 1, b'x']);
    let mut frame = (hostile.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&hostile);
    closed(&frame);

    // A delete cut short left partition 1 with records and no partition 0:
    // a new topic of that name does not inherit them, and a delete
    // removes the leftover.
    client.create_log("kafka/left.1").await.unwrap();
    client
        .append(
            "kafka/left.1",
            vec![distributedlog::Record::new("old")],
            None,
        )
        .await
        .unwrap();
    assert_eq!(raw.create_topic("left", 2), TOPIC_ALREADY_EXISTS);
    assert_eq!(raw.delete_topic("left"), 0);
    // Deleting takes a moment; meanwhile a create answers TOPIC_ALREADY_EXISTS.
    let mut created = raw.create_topic("left", 2);
    for _ in 0..100 {
        if created != TOPIC_ALREADY_EXISTS {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        created = raw.create_topic("left", 2);
    }
    assert_eq!(created, 0);
    assert_eq!(read_all(&client, "kafka/left.1").await.len(), 0);

    // A failed Produce with acks=0 closes the connection, as in Kafka.
    let mut silent = Raw::connect(&node);
    let mut corrupt = batch(&[Bytes::from_static(b"unheard")]).to_vec();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0x20;
    assert!(
        silent
            .produce_without_ack("safe", Bytes::from(corrupt))
            .is_none()
    );

    let mut after = Raw::connect(&node);
    assert!(
        after.api_versions_answer(),
        "the node answers after the bad input: {}",
        node.log()
    );
    let stored = read_acknowledged(&client, "kafka/safe.0", values.len()).await;
    let payloads: Vec<Bytes> = stored.into_iter().map(|r| r.record.payload).collect();
    assert_eq!(payloads, values, "exactly the acknowledged records");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_produce_requests_are_appended_and_answered_in_order() {
    let node = Node::start();
    let client = node.client();
    let mut raw = Raw::connect(&node);
    assert_eq!(raw.create_topic("piped", 2), 0);

    // 40 Produce requests of 10 records each, alternating between the two
    // partitions, and an ApiVersions in the middle, all sent before any
    // answer is read: the listener takes them in while earlier appends
    // wait for their fsync.
    const REQUESTS: usize = 40;
    let mut frames = Vec::new();
    let mut expected: [Vec<Bytes>; 2] = Default::default();
    let mut asked = Vec::new();
    for i in 0..REQUESTS {
        if i == REQUESTS / 2 {
            let mut body = BytesMut::new();
            ApiVersionsRequest::default().encode(&mut body, 1).unwrap();
            frames.extend(raw.frame(ApiKey::ApiVersions, 1, &body));
            asked.push((ApiKey::ApiVersions, raw.correlation, 0));
        }
        let partition = i % 2;
        let values: Vec<Bytes> = (0..10)
            .map(|j| Bytes::from(format!("request {i} record {j}")))
            .collect();
        expected[partition].extend(values.iter().cloned());
        let request = produce_request_to("piped", partition as i32, batch(&values));
        let mut body = BytesMut::new();
        request.encode(&mut body, 7).unwrap();
        frames.extend(raw.frame(ApiKey::Produce, 7, &body));
        asked.push((ApiKey::Produce, raw.correlation, partition));
    }
    raw.stream.write_all(&frames).unwrap();

    let mut batches_seen = [0i64; 2];
    for (api, correlation, partition) in asked {
        let response = raw.read_frame();
        let version = if api == ApiKey::Produce { 7 } else { 1 };
        let mut body = Raw::response_body(response, api, version, correlation);
        if api == ApiKey::Produce {
            let decoded = ProduceResponse::decode(&mut body, 7).unwrap();
            let answer = &decoded.responses[0].partition_responses[0];
            assert_eq!(answer.error_code, 0, "request {correlation}");
            // Each partition's batches got consecutive offsets in the
            // order they were sent.
            assert_eq!(answer.base_offset, batches_seen[partition] * 10);
            batches_seen[partition] += 1;
        } else {
            let decoded = ApiVersionsResponse::decode(&mut body, 1).unwrap();
            assert_eq!(decoded.error_code, 0);
        }
    }
    for (partition, expected) in expected.iter().enumerate() {
        let log = format!("kafka/piped.{partition}");
        let stored = read_acknowledged(&client, &log, expected.len()).await;
        let payloads: Vec<Bytes> = stored.into_iter().map(|r| r.record.payload).collect();
        assert_eq!(
            &payloads, expected,
            "partition {partition} in request order"
        );
    }
}

const INVALID_RECORD: i16 = 87;

/// A namespace with a payload schema: a producer's batch with a record that
/// does not match gets INVALID_RECORD, and only that batch, though the
/// listener merges the batches queued behind an append into one append
/// (it then appends them one by one); the log holds every other batch, in
/// order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_does_not_match_the_payload_schema_fails_alone() {
    let node = Node::start();
    let client = node.client();
    let change = distributedlog::SettingsChange {
        payload_schema: Some(r#"{"fields":[{"name":"n","type":"int64","required":true}]}"#.into()),
        ..distributedlog::SettingsChange::default()
    };
    client.configure_namespace("kafka", &change).await.unwrap();
    let mut raw = Raw::connect(&node);
    assert_eq!(raw.create_topic("typed", 1), 0);

    // Sent before any answer is read, so that batches queue and merge.
    const REQUESTS: usize = 30;
    const BAD: usize = 15;
    let mut frames = Vec::new();
    let mut expected = Vec::new();
    let mut asked = Vec::new();
    for i in 0..REQUESTS {
        let values: Vec<Bytes> = (0..10)
            .map(|j| match (i, j) {
                (BAD, 4) => Bytes::from(r#"{"n":"four"}"#),
                _ => Bytes::from(format!(r#"{{"n":{}}}"#, i * 10 + j)),
            })
            .collect();
        if i != BAD {
            expected.extend(values.iter().cloned());
        }
        let mut body = BytesMut::new();
        produce_request("typed", batch(&values))
            .encode(&mut body, 7)
            .unwrap();
        frames.extend(raw.frame(ApiKey::Produce, 7, &body));
        asked.push(raw.correlation);
    }
    raw.stream.write_all(&frames).unwrap();
    for (i, correlation) in asked.into_iter().enumerate() {
        let mut body = Raw::response_body(raw.read_frame(), ApiKey::Produce, 7, correlation);
        let decoded = ProduceResponse::decode(&mut body, 7).unwrap();
        let answer = &decoded.responses[0].partition_responses[0];
        let want = if i == BAD { INVALID_RECORD } else { 0 };
        assert_eq!(
            answer.error_code, want,
            "request {i}: {:?}",
            answer.error_message
        );
    }
    let stored = read_acknowledged(&client, "kafka/typed.0", expected.len()).await;
    let payloads: Vec<Bytes> = stored.into_iter().map(|r| r.record.payload).collect();
    assert_eq!(payloads, expected, "every other batch, in order");
}

/// Runs `tests/python/SCRIPT` with `args`; its stdout, after asserting it
/// succeeded.
fn run_python(python: &PathBuf, script: &str, args: &[&str], node: &Node) -> String {
    let script = format!("{}/tests/python/{script}", env!("CARGO_MANIFEST_DIR"));
    let output = Command::new(python)
        .arg(&script)
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{script} failed ({}):\n{stdout}\n{}\nnode log:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr),
        node.log()
    );
    stdout
}

/// kafka-python: three members of a group over six partitions, each
/// partition consumed by one member; committed offsets resume after a
/// member leaves (tests/python/kafka_group.py).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kafka_python_group_shares_partitions_and_resumes_at_committed_offsets() {
    let Some(python) = dlog_testkit::require_python_module("kafka") else {
        return;
    };
    let node = Node::start();
    let out = run_python(
        &python,
        "kafka_group.py",
        &[&node.broker(), "shared", "readers"],
        &node,
    );
    assert!(out.contains("\"members\": 3"), "{out}");
    // The committed offsets are subscriptions of the partitions' logs.
    let client = node.client();
    let mut committed = 0;
    for partition in 0..6 {
        let log = format!("kafka/shared.{partition}");
        if let Some(offset) = client.subscription(&log, "readers").await.unwrap() {
            assert!(offset >= 100, "{log}: {offset}");
            committed += 1;
        }
    }
    assert_eq!(committed, 6, "every partition has the group's subscription");
}

/// confluent-kafka (librdkafka) with `enable.idempotence=true` produces
/// through one node's listener while the partition's owner, another ingest
/// node, is killed with kill -9: every acknowledged value is read back, and
/// no value twice (tests/python/kafka_idempotent.py).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idempotent_producer_loses_and_duplicates_nothing_when_the_owner_is_killed() {
    let Some(python) = dlog_testkit::require_python_module("confluent_kafka") else {
        return;
    };
    // The listener runs on ingest-1; ingest-2 owns the partition.
    let Some((mut cluster, ports)) = kafka_cluster(&[0], "kafka/failover.0").await else {
        return;
    };
    let kafka = ports[0];

    let script = format!(
        "{}/tests/python/kafka_idempotent.py",
        env!("CARGO_MANIFEST_DIR")
    );
    let producer = Command::new(&python)
        .args([&script, &format!("127.0.0.1:{kafka}"), "failover", "16"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    cluster.ingests[1].kill();
    let output = tokio::task::spawn_blocking(move || producer.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}\nlistener node:\n{}",
        String::from_utf8_lossy(&output.stderr),
        cluster.ingests[0].log_text()
    );
    eprintln!("idempotent producer across the owner's kill -9: {stdout}");
    assert_eq!(cluster.owner_of("kafka/failover.0").await, Some(0));

    // The same through dlog: each value once.
    let reader = cluster.client(cluster.ingests[0].address());
    let stored = read_all(&reader, "kafka/failover.0").await;
    let mut values: Vec<&Bytes> = stored.iter().map(|r| &r.record.payload).collect();
    let total = values.len();
    values.sort();
    values.dedup();
    assert_eq!(values.len(), total, "a value stored twice");
    let summary: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert!(summary["acked"].as_u64().unwrap() > 1000, "{summary}");
    assert_eq!(summary["duplicates"], 0);
    assert_eq!(summary["lost"], 0);
}

/// Metadata names each partition's owner as its leader, a Produce sent to
/// another node is answered NOT_LEADER_OR_FOLLOWER, and a Kafka client
/// bootstrapped on the other node follows to the owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metadata_names_the_owner_and_a_produce_elsewhere_is_redirected() {
    let Some(kcat) = kcat() else { return };
    let Some((cluster, ports)) = kafka_cluster(&[0, 1], "kafka/routed.0").await else {
        return;
    };

    let mut raw = Raw::connect_port(ports[0]);
    let mut request = MetadataRequest::default();
    let mut asked = MetadataRequestTopic::default();
    asked.name = Some(TopicName(StrBytes::from_static_str("routed")));
    request.topics = Some(vec![asked]);
    let mut body = BytesMut::new();
    request.encode(&mut body, 5).unwrap();
    let mut response = raw.request(ApiKey::Metadata, 5, &body).unwrap();
    let metadata = MetadataResponse::decode(&mut response, 5).unwrap();
    let owner_id = dlog_kafka::broker_id("ingest-2");
    let leader = metadata.topics[0].partitions[0].leader_id.0;
    assert_eq!(leader, owner_id, "{metadata:?}");
    let brokers: Vec<i32> = metadata.brokers.iter().map(|b| b.node_id.0).collect();
    assert!(
        brokers.contains(&dlog_kafka::broker_id("ingest-1")),
        "{brokers:?}"
    );
    let owner_broker = metadata
        .brokers
        .iter()
        .find(|b| b.node_id.0 == owner_id)
        .unwrap();
    assert_eq!(owner_broker.port, i32::from(ports[1]));

    let (code, _) = raw.produce("routed", batch(&[Bytes::from_static(b"elsewhere")]));
    assert_eq!(code, NOT_LEADER_OR_FOLLOWER);

    // One coordinator per group, whichever node is asked; the other node
    // sends group requests back to it.
    let coordinators: Vec<i32> = ports
        .iter()
        .map(|&port| {
            let mut raw = Raw::connect_port(port);
            let mut request = FindCoordinatorRequest::default();
            request.key = StrBytes::from_static_str("readers");
            let mut body = BytesMut::new();
            request.encode(&mut body, 2).unwrap();
            let mut response = raw.request(ApiKey::FindCoordinator, 2, &body).unwrap();
            FindCoordinatorResponse::decode(&mut response, 2)
                .unwrap()
                .node_id
                .0
        })
        .collect();
    assert_eq!(coordinators[0], coordinators[1]);
    let other = if coordinators[0] == dlog_kafka::broker_id("ingest-1") {
        1
    } else {
        0
    };
    let mut raw_other = Raw::connect_port(ports[other]);
    let mut beat = HeartbeatRequest::default();
    beat.group_id = GroupId(StrBytes::from_static_str("readers"));
    beat.member_id = StrBytes::from_static_str("someone");
    let mut body = BytesMut::new();
    beat.encode(&mut body, 1).unwrap();
    let mut response = raw_other.request(ApiKey::Heartbeat, 1, &body).unwrap();
    let code = HeartbeatResponse::decode(&mut response, 1)
        .unwrap()
        .error_code;
    assert_eq!(code, NOT_COORDINATOR);

    // kcat, bootstrapped on the node that does not own the partition.
    run_kcat(
        &kcat,
        &[
            "-b",
            &format!("127.0.0.1:{}", ports[0]),
            "-P",
            "-t",
            "routed",
            "-p",
            "0",
        ],
        b"followed\n",
    );
    let reader = cluster.client(cluster.ingests[0].address());
    let stored = read_acknowledged(&reader, "kafka/routed.0", 2).await;
    let payloads: Vec<&[u8]> = stored.iter().map(|r| &r.record.payload[..]).collect();
    assert_eq!(payloads, vec![&b"first"[..], &b"followed"[..]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_produce_for_a_partition_owned_by_a_node_without_a_listener_reaches_the_owner() {
    // ingest-2 owns the log and serves no Kafka clients, so Metadata names
    // the listener node itself as leader: its append must reach the owner.
    let Some((cluster, ports)) = kafka_cluster(&[0], "kafka/unlisted.0").await else {
        return;
    };
    let mut raw = Raw::connect_port(ports[0]);
    let (code, base_offset) = raw.produce("unlisted", batch(&[Bytes::from_static(b"forwarded")]));
    assert_eq!((code, base_offset), (0, 1));
    let reader = cluster.client(cluster.ingests[0].address());
    let stored = read_acknowledged(&reader, "kafka/unlisted.0", 2).await;
    let payloads: Vec<&[u8]> = stored.iter().map(|r| &r.record.payload[..]).collect();
    assert_eq!(payloads, vec![&b"first"[..], &b"forwarded"[..]]);
    assert_eq!(cluster.owner_of("kafka/unlisted.0").await, Some(1));
}

/// 3 cache nodes and 2 ingest nodes (with the reader role); the ingest nodes
/// at `listeners` serve Kafka clients (on the returned ports, in order);
/// `log` is created and owned by ingest-2.
async fn kafka_cluster(listeners: &[usize], log: &str) -> Option<(common::Cluster, Vec<u16>)> {
    let spec = common::ClusterSpec {
        caches: 3,
        ingests: 2,
        ingest_roles: "ingest,reader",
        ..common::ClusterSpec::default()
    };
    let mut cluster = common::Cluster::start_spec(spec).await?;
    let mut ports = Vec::new();
    for &i in listeners {
        let port = free_port();
        let node = &mut cluster.ingests[i];
        node.kill();
        node.start_with_args(&["--kafka-listen", &format!("127.0.0.1:{port}")]);
        assert!(
            wait_for_port(([127, 0, 0, 1], port).into(), Duration::from_secs(30)),
            "the listener did not start: {}",
            node.log_text()
        );
        ports.push(port);
    }
    let owner = cluster.client(cluster.ingests[1].address());
    owner.create_log(log).await.unwrap();
    // Owned by ingest-2 whatever the placement rule says of its name.
    cluster.place(&owner, log, 1).await;
    let first = vec![distributedlog::Record::new("first")];
    owner.append(log, first, None).await.unwrap();
    assert_eq!(cluster.owner_of(log).await, Some(1));
    Some((cluster, ports))
}
