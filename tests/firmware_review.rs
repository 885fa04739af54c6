//! Hostile review of firmware update end to end: the job engine's firmware steps, the
//! device library's Firmware Update object /5 and its Block1 push / Block2 pull.
//! Every test here failed on the code as reviewed because of the bug it names; each is
//! fixed since, and the test keeps it fixed.

#![cfg(all(feature = "lwm2m", feature = "device"))]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use twinhub::coap::{BlockOption, Code, ContentFormat, Message, MessageType, OptionNumber};
use twinhub::job::{ChildState, EngineConfig, JobEngine, JobId, JobSpec, JobType};
use twinhub::lwm2m::client::{
    ClientConfig, FirmwareUpdate, ObjectTree, UpdateResult, UpdateState, objects,
};
use twinhub::transport::{DeviceError, DeviceEvent, DeviceReply, DeviceRequest};
use twinhub::{Content, DeviceId, Lwm2mPath, ResourceValue, Timestamp};

mod job_support;
use job_support::{answer, fw_state, registered};

// ---------------------------------------------------------------- client harness

mod client_support;
use client_support::{Harness, SERVER};

fn tree_with(fw: FirmwareUpdate) -> ObjectTree {
    let mut t = ObjectTree::new();
    t.add(objects::security(&format!("coap://{SERVER}"), 1));
    t.add(objects::server(1, 300, "U"));
    t.add(objects::device("Contoso", "MX1", "SN-42", "1.0.0"));
    t.set_firmware(fw);
    t
}

fn block1_put(num: u32, more: bool, szx: u8, payload: Vec<u8>) -> Message {
    let mut m = Message::request(Code::PUT, "/5/0/0");
    m.set_content_format(ContentFormat::OCTET_STREAM);
    m.set_block1(BlockOption::new(num, more, szx).unwrap());
    m.payload = payload;
    m
}

/// A package pull: the Package URI is written; returns the device's first GET and the
/// collected packages the application was handed.
fn pulling() -> (Harness, Arc<Mutex<Vec<Vec<u8>>>>, Message) {
    pulling_configured(ClientConfig::new("dev-1", client_support::server()))
}

/// [`pulling`] by a client set up so.
fn pulling_configured(config: ClientConfig) -> (Harness, Arc<Mutex<Vec<Vec<u8>>>>, Message) {
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    let fw = FirmwareUpdate::new().on_package(move |p| {
        g.lock().unwrap().push(p.to_vec());
        Ok(())
    });
    let mut h = Harness::registered_configured(config, tree_with(fw));
    assert_eq!(
        h.put_text("/5/0/1", "coap://127.0.0.7:5700/fw/v2.bin").code,
        Code::CHANGED
    );
    let get = h
        .sent()
        .into_iter()
        .find(|m| m.code == Code::GET)
        .expect("download GET");
    (h, got, get)
}

fn pkg_server() -> SocketAddr {
    "127.0.0.7:5700".parse().unwrap()
}

fn serve_block(h: &mut Harness, get: &Message, r: Message) {
    let mut r = r;
    r.mtype = MessageType::Acknowledgement;
    r.message_id = get.message_id;
    r.with_token(get.token());
    h.client
        .handle_datagram(h.now, pkg_server(), &r.to_bytes().unwrap());
}

// ---------------------------------------------------------------- client tests

/// Checks: State /5/0/3 while a Block1 push of /5/0/0 is under way.
/// Failed on the code as reviewed (fixed since): the module doc of src/lwm2m/client/firmware.rs draws "write URI (valid) / first
/// package bytes: Idle(0) -> Downloading(1)" (OMA object 5: State 1 while the package is
/// being received). The client engine buffers Block1 blocks and only calls
/// `write_package` with the complete body, so after the first block State still reads 0
/// (Idle): the server cannot tell a push in progress from nothing.
#[test]
fn block1_push_in_progress_reports_downloading() {
    let mut h = Harness::registered_with(tree_with(FirmwareUpdate::new()));
    let r = h.request(block1_put(0, true, 6, vec![7; 1024]));
    assert_eq!(r.code, Code::CONTINUE);
    assert_eq!(
        h.get_text("/5/0/3"),
        "1",
        "the first package bytes arrived: State must be Downloading"
    );
}

/// Checks: a Block1 last block whose payload is larger than the block size.
/// Failed on the code as reviewed (fixed since): RFC 7959 §2.2/2.3: a block holds at most 2^(SZX+4) bytes (only the last may be
/// smaller). `block1_step` (src/lwm2m/client/engine.rs ~1822) checks the payload length
/// only for blocks with M=1, so a final "block 1" of 16-byte blocks carrying 600 bytes is
/// appended and the package applied (State Downloaded) instead of refused.
#[test]
fn block1_last_block_larger_than_block_size_is_refused() {
    let mut h = Harness::registered_with(tree_with(FirmwareUpdate::new()));
    assert_eq!(
        h.request(block1_put(0, true, 0, vec![1; 16])).code,
        Code::CONTINUE
    );
    let r = h.request(block1_put(1, false, 0, vec![2; 600]));
    assert!(
        !r.code.is_success(),
        "a 600-byte block of a 16-byte block size must be refused, got {:?}",
        r.code
    );
    assert_eq!(h.get_text("/5/0/3"), "0", "nothing applied");
}

/// Checks: the package server answers a request for block 1 with a plain 2.05 (no
/// Block2 option).
/// Failed on the code as reviewed (fixed since): `download_block` (src/lwm2m/client/engine.rs ~2570) treats any 2.05 without
/// Block2 as the whole package, even mid-transfer: it throws away the blocks received so
/// far and hands the application the last payload as a complete package (State
/// Downloaded). A truncated/foreign package is accepted; RFC 7959 gives no such reply to a
/// Block2 num>0 request, so it must fail the download (e.g. result 4 or 5), not install.
#[test]
fn plain_answer_mid_block2_download_is_not_a_complete_package() {
    let (mut h, got, get0) = pulling();
    let mut r = Message::response(Code::CONTENT);
    r.set_block2(BlockOption::new(0, true, get0.block2().unwrap().szx).unwrap());
    r.payload = vec![0xAA; get0.block2().unwrap().size()];
    serve_block(&mut h, &get0, r);
    let get1 = h
        .sent()
        .into_iter()
        .find(|m| m.code == Code::GET)
        .expect("second block requested");
    assert_eq!(get1.block2().unwrap().num, 1);
    let mut r = Message::response(Code::CONTENT);
    r.payload = b"tail".to_vec();
    serve_block(&mut h, &get1, r);
    assert!(
        got.lock().unwrap().is_empty(),
        "a 4-byte 'package' was handed over as complete: {:?}",
        got.lock().unwrap()
    );
    assert_ne!(h.get_text("/5/0/3"), "2", "must not be Downloaded");
}

/// Checks: the package changes between two blocks of a pull (ETag differs).
/// Failed on the code as reviewed (fixed since): RFC 7959 §2.4: the ETag of a Block2 response lets the client detect that the
/// representation changed; a client must not splice blocks of two representations. The
/// client never looks at ETag (no reference to it in src/lwm2m/client/engine.rs), so the
/// first block of version A and the last of version B are installed as one package. (The
/// hub's endpoint re-serves an evicted transfer "afresh" from the current body, so a
/// replaced package does reach a device this way.)
#[test]
fn block2_download_rejects_a_change_of_etag() {
    let (mut h, got, get0) = pulling();
    let szx = get0.block2().unwrap().szx;
    let size = get0.block2().unwrap().size();
    let mut r = Message::response(Code::CONTENT);
    r.add_option(OptionNumber::ETAG, b"A");
    r.set_block2(BlockOption::new(0, true, szx).unwrap());
    r.payload = vec![b'A'; size];
    serve_block(&mut h, &get0, r);
    let get1 = h
        .sent()
        .into_iter()
        .find(|m| m.code == Code::GET)
        .expect("second block requested");
    let mut r = Message::response(Code::CONTENT);
    r.add_option(OptionNumber::ETAG, b"B");
    r.set_block2(BlockOption::new(1, false, szx).unwrap());
    r.payload = vec![b'B'; 10];
    serve_block(&mut h, &get1, r);
    assert!(
        got.lock().unwrap().is_empty(),
        "a splice of two package versions was installed"
    );
}

/// Checks: `update_finished(Err(..))` with a non-failure code.
/// Failed on the code as reviewed (fixed since): the doc of `FirmwareUpdate::update_finished` (src/lwm2m/client/firmware.rs) says
/// "failure -> Downloaded with the given result (8 if none better)". Given
/// `Err(UpdateResult::Initial)` it sets State Downloaded with result 0, which is exactly
/// what a successfully downloaded, never-run package reports: the failure is invisible to
/// the server (and the hub's engine, seeing (2, 0) after its Execute, waits for the job's
/// timeout instead of failing it with result 8).
#[test]
fn update_failure_without_a_failure_code_reports_update_failed() {
    let mut fw = FirmwareUpdate::new();
    fw.write_package(b"FW-2").unwrap();
    fw.execute_update().unwrap();
    assert_eq!(fw.state(), UpdateState::Updating);
    fw.update_finished(Err(UpdateResult::Initial));
    assert_eq!(
        (fw.state(), fw.result()),
        (UpdateState::Downloaded, UpdateResult::UpdateFailed)
    );
}

// ---------------------------------------------------------------- job engine

/// Checks: a firmware job on a device whose /5 already holds a package (State 2
/// Downloaded, e.g. left by a cancelled or timed-out earlier job: cancel sends the device
/// nothing).
/// Failed on the code as reviewed (fixed since): OMA object 5 (and this crate's own device library, `write_uri`: "Other states
/// refuse a non-empty URI (4.05)") accept a new Package URI only in Idle; from Downloaded
/// only an empty URI/package (reset to Idle) or Update is allowed. `firmware_content`
/// (src/job/engine.rs ~2150, the final `else { FW_WRITE_URI }`) writes the job's URI
/// straight away, so every such device fails the job with `rejected:4.05` (retries too:
/// they start over the same way). The engine must reset the object first (write an empty
/// URI) or otherwise not send a write the state machine forbids.
#[test]
fn a_job_on_a_device_holding_a_stale_package_does_not_write_the_uri_in_downloaded() {
    let t0 = Instant::now();
    let mut engine = JobEngine::new(EngineConfig::default(), t0, Timestamp::from_millis(0));
    let dev = DeviceId::new("d").unwrap();
    engine.handle_event(t0, &registered(&dev));
    let uri = "coap://127.0.0.1:5700/fw/2.0";
    engine
        .create(
            t0,
            JobSpec::new(
                JobId::new("fw").unwrap(),
                JobType::FirmwareUpdate {
                    package_uri: uri.into(),
                    expected_version: None,
                },
                vec![dev.clone()],
            ),
        )
        .unwrap();
    let observe = engine.poll_op().expect("observe /5/0");
    answer(
        &mut engine,
        t0 + Duration::from_millis(10),
        &observe,
        DeviceReply::Content(fw_state(2, 0)),
    );
    while let Some(op) = engine.poll_op() {
        if let DeviceRequest::Write { path, content, .. } = &op.request
            && *path == Lwm2mPath::resource(5, 0, 1)
        {
            assert_ne!(
                content.get(&Lwm2mPath::resource(5, 0, 1)),
                Some(&ResourceValue::String(uri.into())),
                "non-empty Package URI written while the device is Downloaded (OMA: 4.05)"
            );
        }
    }
}

/// Checks: the answer to the Package URI Write is lost (the transport times it out).
/// Failed on the code as reviewed (fixed since): README "Jobs that finish": lost answers to writes "are re-sent". For the firmware
/// URI that is not idempotent: the device got the first Write and is Downloading, and
/// object 5 (and this crate's `FirmwareUpdate::write_uri`: "Other states refuse a
/// non-empty URI (4.05)") refuses the second. `on_op_timeout` (src/job/engine.rs ~1955)
/// re-drives FW_WRITE_URI blindly (it checks the State first only for the Execute, via
/// FW_SYNC), and the 4.05 then fails the child (`rejected:4.05`) while its download is in
/// fact going fine. It should read /5/0 first, as it does for a lost Execute answer.
#[test]
fn a_lost_package_uri_write_answer_does_not_fail_a_running_download() {
    let t0 = Instant::now();
    let mut engine = JobEngine::new(EngineConfig::default(), t0, Timestamp::from_millis(0));
    let dev = DeviceId::new("d").unwrap();
    let id = JobId::new("fw").unwrap();
    engine.handle_event(t0, &registered(&dev));
    let uri = "coap://127.0.0.1:5700/fw/2.0";
    engine
        .create(
            t0,
            JobSpec::new(
                id.clone(),
                JobType::FirmwareUpdate {
                    package_uri: uri.into(),
                    expected_version: None,
                },
                vec![dev.clone()],
            ),
        )
        .unwrap();
    let now = t0 + Duration::from_millis(10);
    let observe = engine.poll_op().expect("observe /5/0");
    answer(
        &mut engine,
        now,
        &observe,
        DeviceReply::Content(fw_state(0, 0)),
    );
    let write = engine.poll_op().expect("write /5/0/1");
    assert!(
        matches!(&write.request, DeviceRequest::Write { path, .. } if *path == Lwm2mPath::resource(5, 0, 1))
    );
    // The device took the write (it is Downloading now) but the answer is lost.
    engine.handle_event(
        now,
        &DeviceEvent::TimedOut {
            op: write.id,
            device: dev.clone(),
        },
    );
    // Play the device: State 1 Downloading; a second non-empty URI gets 4.05.
    while let Some(op) = engine.poll_op() {
        match &op.request {
            DeviceRequest::Write { path, .. } if *path == Lwm2mPath::resource(5, 0, 1) => {
                engine.handle_event(
                    now,
                    &DeviceEvent::Response {
                        op: op.id,
                        device: dev.clone(),
                        result: Err(DeviceError::MethodNotAllowed),
                    },
                );
            }
            DeviceRequest::Read { .. } => {
                answer(&mut engine, now, &op, DeviceReply::Content(fw_state(1, 0)))
            }
            _ => {}
        }
    }
    let (state, reason) = engine.child_state(&id, &dev).unwrap();
    assert_ne!(
        state,
        ChildState::Failed,
        "the download runs on the device, yet the child failed: {reason:?}"
    );
}

// ---------------------------------------------------------------- package serving

/// Checks: a package replaced while a device downloads it, once the endpoint has dropped
/// that device's transfer (README: the endpoint keeps at most `max_block_transfers` (256)
/// transfers "and past that drops the oldest, whose device's next block request is then
/// checked and served afresh").
/// Failed on the code as reviewed (fixed since): "served afresh" means from the *current* body, and no block carries an ETag
/// (src/hub/package.rs and src/lwm2m/server/mod.rs `package_request` answer 2.05 with
/// only Content-Format), so block 1 of the new version follows block 0 of the old one and
/// nothing lets the device notice (RFC 7959 §2.4: blocks of one transfer must come from one
/// representation; the ETag is how a client detects a change). The device installs a
/// splice of two versions. Correct: serve the rest of the old body, or mark the
/// representations (ETag) / refuse (4.08 / 4.12) so the client restarts.
#[test]
fn a_replaced_package_is_not_spliced_into_a_download_under_way() {
    use std::net::UdpSocket;
    use twinhub::hub::PackageServer;
    let server = PackageServer::bind("127.0.0.1:0").unwrap();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    // Generous: each answer comes at once, unless a loaded machine does not run the
    // server's thread for a while.
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut mid = 1u16;
    let mut get = |path: &str, num: u32| -> Message {
        mid += 1;
        let mut m = Message::request(Code::GET, path);
        m.mtype = MessageType::Confirmable;
        m.message_id = mid;
        m.set_token(&mid.to_be_bytes());
        m.set_block2(BlockOption::new(num, false, 6).unwrap());
        sock.send_to(&m.to_bytes().unwrap(), server.local_addr())
            .unwrap();
        let mut buf = [0u8; 2048];
        loop {
            let (n, _) = sock.recv_from(&mut buf).expect("an answer");
            let r = Message::decode(&buf[..n]).unwrap();
            if r.message_id == mid {
                return r;
            }
        }
    };
    server.publish("fw/a", vec![b'A'; 2048]).unwrap();
    let first = get("/fw/a", 0);
    assert_eq!(first.code, Code::CONTENT);
    assert_eq!(first.payload, vec![b'A'; 1024]);
    // The operator replaces the package; meanwhile other downloads fill the endpoint.
    server.publish("fw/a", vec![b'B'; 2048]).unwrap();
    for i in 0..256 {
        let path = format!("fw/o{i}");
        server.publish(&path, vec![0; 2048]).unwrap();
        assert_eq!(get(&format!("/{path}"), 0).code, Code::CONTENT);
    }
    let second = get("/fw/a", 1);
    let spliced = second.code == Code::CONTENT
        && second.payload.first() == Some(&b'B')
        && first.etag() == second.etag();
    assert!(
        !spliced,
        "block 1 of the new version served after block 0 of the old one, ETags {:?} / {:?}",
        first.etag(),
        second.etag()
    );
    server.stop();
}

/// Checks: the observation of /5/0 a firmware child opened is closed when the child
/// ends, also when it took a retry.
/// Failed on the code as reviewed (fixed since): the engine observes /5/0 itself and cancels "that observation when the child
/// ends" (EngineConfig docs, src/job/engine.rs ~84). A failed attempt that is retried
/// goes to RetryWait (not terminal: no CancelObserve), and `retry_due` (src/job/engine.rs
/// ~1447) clears `flags` (FLAG_OBSERVING with them), so attempt 2 sends a second Observe
/// and only one CancelObserve ever goes out: an observation per retry stays on the
/// device for good (notifications of /5/0 keep coming to the hub).
#[test]
fn a_retried_firmware_child_cancels_every_observation_it_opened() {
    use twinhub::job::RetryRule;
    let t0 = Instant::now();
    let mut engine = JobEngine::new(EngineConfig::default(), t0, Timestamp::from_millis(0));
    let dev = DeviceId::new("d").unwrap();
    let id = JobId::new("fw").unwrap();
    engine.handle_event(t0, &registered(&dev));
    engine
        .create(
            t0,
            JobSpec::new(
                id.clone(),
                JobType::FirmwareUpdate {
                    package_uri: "coap://127.0.0.1:5700/fw/2.0".into(),
                    expected_version: None,
                },
                vec![dev.clone()],
            )
            .retry(RetryRule::new(None, 1)),
        )
        .unwrap();
    let (mut observes, mut cancels) = (0, 0);
    let mut now = t0;
    // The device: first download fails with result 5, the second one works.
    let mut downloads = 0;
    for _ in 0..40 {
        let Some(op) = engine.poll_op() else {
            let Some(at) = engine.poll_timeout() else {
                break;
            };
            now = now.max(at);
            engine.handle_timeout(now);
            continue;
        };
        let notify = |engine: &mut JobEngine, s, r| {
            engine.handle_event(
                now,
                &DeviceEvent::Notification {
                    device: dev.clone(),
                    registration_id: "r1".into(),
                    path: Lwm2mPath::instance(5, 0),
                    content: fw_state(s, r),
                },
            )
        };
        match &op.request {
            DeviceRequest::Observe { .. } => {
                observes += 1;
                answer(&mut engine, now, &op, DeviceReply::Content(fw_state(0, 0)));
            }
            DeviceRequest::CancelObserve { .. } => cancels += 1,
            DeviceRequest::Write { .. } => {
                downloads += 1;
                answer(&mut engine, now, &op, DeviceReply::Done);
                if downloads == 1 {
                    notify(&mut engine, 0, 5);
                } else {
                    notify(&mut engine, 2, 0);
                }
            }
            DeviceRequest::Execute { .. } => {
                answer(&mut engine, now, &op, DeviceReply::Done);
                notify(&mut engine, 0, 1);
            }
            DeviceRequest::Read { path } if *path == Lwm2mPath::resource(3, 0, 3) => answer(
                &mut engine,
                now,
                &op,
                DeviceReply::Content(Content::single(
                    Lwm2mPath::resource(3, 0, 3),
                    ResourceValue::String("2.0".into()),
                )),
            ),
            DeviceRequest::Read { .. } => {
                let s = if downloads >= 2 {
                    fw_state(0, 1)
                } else {
                    fw_state(0, 0)
                };
                answer(&mut engine, now, &op, DeviceReply::Content(s))
            }
            _ => {}
        }
    }
    let (state, why) = engine.child_state(&id, &dev).unwrap();
    assert_eq!(
        state,
        ChildState::Succeeded,
        "setup: the retry succeeds ({why:?})"
    );
    assert_eq!(downloads, 2, "setup: two attempts");
    assert_eq!(
        observes, cancels,
        "{observes} Observes of /5/0 sent, {cancels} cancelled"
    );
}

/// Checks: Cancel /5/0/10 (or a reset by an empty Package URI) during a pull stops the
/// download.
/// Failed on the code as reviewed (fixed since): `FirmwareUpdate::cancel` (src/lwm2m/client/firmware.rs) only drops the *queued*
/// pull request and sets Idle/result 10; the client engine's download under way
/// (`Lwm2mClient::download`, src/lwm2m/client/engine.rs `download_block`) is not told and
/// goes on requesting every remaining block of a package the server cancelled (OMA
/// object 5: Cancel "cancels the firmware update", State Idle: nothing is downloading),
/// spending the device's radio and the package server's bandwidth on it.
#[test]
fn cancel_during_a_pull_stops_the_download() {
    let (mut h, got, get0) = pulling();
    let r = h.request(Message::request(Code::POST, "/5/0/10"));
    assert_eq!(r.code, Code::CHANGED);
    assert_eq!(h.get_text("/5/0/3"), "0");
    let mut b0 = Message::response(Code::CONTENT);
    b0.set_block2(BlockOption::new(0, true, get0.block2().unwrap().szx).unwrap());
    b0.payload = vec![1; get0.block2().unwrap().size()];
    serve_block(&mut h, &get0, b0);
    let more: Vec<Message> = h
        .sent()
        .into_iter()
        .filter(|m| m.code == Code::GET)
        .collect();
    assert!(
        more.is_empty(),
        "the cancelled download goes on: {:?}",
        more.iter().map(|m| m.block2()).collect::<Vec<_>>()
    );
    assert!(got.lock().unwrap().is_empty());
}

// ------------------------------------------- from the review of the fixes (session_review)

/// Checks: a Block2 pull from a package server that puts an ETag on the first block
/// only (the later blocks carry none) installs the package.
/// Why wrong: an absent ETag is not a different ETag: nothing says the representation
/// changed (RFC 7959 §2.4 only asks the client to notice a *changed* ETag; many
/// servers tag the first answer only). src/lwm2m/client/engine.rs `download_block`
/// (~line 2653) stores block 0's tag and compares `Option`s, so `None != Some(tag)`.
/// Before the fix: the download fails with Update Result 5 (integrity check failure): the package
/// is refused and the server is told it was corrupt, though every byte was right.
#[test]
fn a_pull_whose_later_blocks_carry_no_etag_installs() {
    let (mut h, got, get0) = pulling();
    let szx = get0.block2().unwrap().szx;
    let size = get0.block2().unwrap().size();
    let mut r = Message::response(Code::CONTENT);
    r.add_option(OptionNumber::ETAG, b"A");
    r.set_block2(BlockOption::new(0, true, szx).unwrap());
    r.payload = vec![b'A'; size];
    serve_block(&mut h, &get0, r);
    let get1 = h
        .sent()
        .into_iter()
        .find(|m| m.code == Code::GET)
        .expect("block 1 requested");
    let mut r = Message::response(Code::CONTENT);
    r.set_block2(BlockOption::new(1, false, szx).unwrap());
    r.payload = vec![b'A'; 10];
    serve_block(&mut h, &get1, r);
    assert_eq!(
        got.lock().unwrap().len(),
        1,
        "package refused: State {} Update Result {}",
        h.get_text("/5/0/3"),
        h.get_text("/5/0/5")
    );
}

/// Checks: a Block1 push of /5/0/0 refused at its first block as too large (Size1 past
/// the device's limit, 4.13) does not report Update Result 4 "connection lost".
/// Why wrong: nothing was lost: the device refused the size. OMA object 5 has result 2
/// (not enough flash) for that, and this library's pull of a too-large package reports
/// 2 (`NotEnoughFlash`, engine.rs `download_block`); before this change the refused
/// push left State Idle with result 0. `package_push_step` (engine.rs ~line 1833) puts
/// the object in Downloading before `block1_step` checks the size, and the 4.13 then
/// goes through `push_abandoned` (firmware.rs ~line 350): Idle with result 4.
/// Before the fix: State 0, Update Result 4 (connection lost during download).
#[test]
fn a_push_refused_as_too_large_does_not_report_connection_lost() {
    let mut h = Harness::registered_with(tree_with(FirmwareUpdate::new()));
    let mut m = Message::request(Code::PUT, "/5/0/0");
    m.set_content_format(ContentFormat::OCTET_STREAM);
    m.set_block1(BlockOption::new(0, true, 6).unwrap());
    m.set_size1(200_000_000);
    m.payload = vec![1; 1024];
    let r = h.request(m);
    assert_eq!(r.code, Code::REQUEST_ENTITY_TOO_LARGE);
    let result = h.get_text("/5/0/5");
    assert!(
        result == "0" || result == "2",
        "a push refused for its size reports Update Result {result} (4: connection lost)"
    );
}

// ------------------------------------------- Package URI the device refuses (dev-fix)

/// Checks: a Package URI the device refuses (Update Result 7, invalid URI, or 9,
/// unsupported protocol) is not kept in /5/0/1.
/// Why wrong: /5/0/1 names the package the device downloads or downloaded; a URI it
/// refused names nothing, yet it stayed readable, so a server reading the object saw State
/// Idle beside a URI it could take for one about to be fetched (Wakaama's client keeps no
/// URI, Anjay refuses an unsupported scheme without storing it). A URI over 255 bytes was
/// already not kept: the other refusals now match it (firmware.rs module docs).
/// Before the fix: /5/0/1 read back the refused URI after results 9 and 7.
#[test]
fn a_refused_package_uri_is_not_kept() {
    let mut h = Harness::registered_with(tree_with(FirmwareUpdate::new()));
    for (uri, result) in [
        ("http://example.com/fw", "9"),
        ("coap://not a host/fw", "7"),
        ("nonsense", "7"),
        ("coaps://127.0.0.1/fw", "9"),
        (&format!("coap://127.0.0.1/{}", "a".repeat(300)), "7"),
    ] {
        assert_eq!(h.put_text("/5/0/1", uri).code, Code::CHANGED, "{uri}");
        assert_eq!(
            (h.get_text("/5/0/3"), h.get_text("/5/0/5")),
            ("0".to_string(), result.to_string()),
            "{uri}"
        );
        assert_eq!(h.get_text("/5/0/1"), "", "refused URI {uri} kept in /5/0/1");
    }
    // A URI the package server does not know (4.04): result 7 too, and not kept.
    let (mut h, _got, get) = pulling();
    serve_block(&mut h, &get, Message::response(Code::NOT_FOUND));
    assert_eq!(
        (h.get_text("/5/0/3"), h.get_text("/5/0/5")),
        ("0".to_string(), "7".to_string())
    );
    assert_eq!(h.get_text("/5/0/1"), "", "URI answered 4.04 kept in /5/0/1");
}

/// Checks: the URI of a download that failed for another reason (here the package
/// server unreachable: result 4) stays in /5/0/1, and a refused URI written after it
/// clears it (the refused one replaces it; it is not kept either).
/// The documented other half of the rule above. Before the fix: the refused URI replaced
/// the kept one in /5/0/1 (`write_uri` stored a URI before parsing it).
#[test]
fn a_failed_download_keeps_its_uri_until_a_refused_one_replaces_it() {
    let (mut h, _got, _get) = pulling();
    for _ in 0..100 {
        h.now += Duration::from_secs(5);
        h.client.handle_timeout(h.now);
        h.sent();
    }
    assert_eq!(
        (h.get_text("/5/0/3"), h.get_text("/5/0/5")),
        ("0".to_string(), "4".to_string())
    );
    assert_eq!(h.get_text("/5/0/1"), "coap://127.0.0.7:5700/fw/v2.bin");
    assert_eq!(h.put_text("/5/0/1", "ftp://x/fw").code, Code::CHANGED);
    assert_eq!(h.get_text("/5/0/5"), "9");
    assert_eq!(h.get_text("/5/0/1"), "");
}

// ------------------------------------------- a pull at the size bound (dev-fix)

/// A pull by a device whose `max_body` is 1,024 bytes, as `pulling` does; the package
/// server answers the first GET with `size` bytes in one 2.05 without Block2 (a server
/// may send a body that fits one datagram whole, RFC 7959 §2.4). Returns the packages
/// the application was handed and /5/0/3, /5/0/5.
fn pull_whole(size: usize) -> (Vec<Vec<u8>>, String, String) {
    let mut config = ClientConfig::new("dev-1", client_support::server());
    config.max_body = 1024;
    let (mut h, got, get) = pulling_configured(config);
    let mut r = Message::response(Code::CONTENT);
    r.payload = vec![0x5a; size];
    serve_block(&mut h, &get, r);
    let packages = got.lock().unwrap().clone();
    (packages, h.get_text("/5/0/3"), h.get_text("/5/0/5"))
}

/// Checks: `ClientConfig::max_body` ("largest package downloaded") holds for a package
/// pulled in one answer. Why wrong: `download_block` checked the bound only on Block2
/// blocks; a first answer without Block2 was taken whole whatever its size, so a device
/// configured for 1 KiB was handed a 2,000-byte package (State Downloaded). Right: past
/// the bound the download fails with result 2 (not enough flash), as a block-wise pull
/// past it does; at the bound the package is taken.
/// Before the fix: the 2,000-byte package was handed over, State 2, result 0.
#[test]
fn a_package_pulled_whole_past_max_body_is_refused() {
    let (packages, state, result) = pull_whole(2000);
    assert!(
        packages.is_empty(),
        "handed over: {} bytes",
        packages[0].len()
    );
    assert_eq!((state.as_str(), result.as_str()), ("0", "2"));
    let (packages, state, _) = pull_whole(1024);
    assert_eq!(packages, vec![vec![0x5a; 1024]], "at the bound it is taken");
    assert_eq!(state, "2", "Downloaded");
}

/// Checks: a package server that answers a block with "more" set and a short payload
/// (RFC 7959 §2.2: every block but the last carries the full 2^(SZX+4) bytes). Why wrong:
/// `download_block` appended the short payload and asked for the block its length
/// pointed at, the same one again: with an empty payload it asked for it again and
/// again with no end, and with a short one it spliced the block's bytes in twice and
/// installed a corrupt package. Right: the download fails (result 4, as for a block out
/// of turn), nothing is handed over, and nothing more is asked.
#[test]
fn a_short_block_that_is_not_the_last_fails_the_download() {
    for short in [0usize, 100] {
        let (mut h, got, get0) = pulling();
        let szx = get0.block2().unwrap().szx;
        let mut r = Message::response(Code::CONTENT);
        r.set_block2(BlockOption::new(0, true, szx).unwrap());
        r.payload = vec![0xAA; short];
        serve_block(&mut h, &get0, r);
        let again = h.sent().into_iter().filter(|m| m.code == Code::GET).count();
        assert_eq!(again, 0, "{short}-byte block: asked again");
        assert!(
            got.lock().unwrap().is_empty(),
            "{short}-byte block: handed over"
        );
        assert_eq!(
            (h.get_text("/5/0/3").as_str(), h.get_text("/5/0/5").as_str()),
            ("0", "4"),
            "{short}-byte block"
        );
    }
}
