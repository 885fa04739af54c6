//! A tiny CoAP server on the std UDP driver, and a client request against it.
//!
//! ```text
//! cargo run --example coap_server            # binds 127.0.0.1 on an ephemeral port
//! cargo run --example coap_server -- 5683    # or on a port of your choice
//! coap-client-notls -B 5 coap://127.0.0.1:<port>/hello
//! ```
//!
//! It answers GET /hello with "world" and GET /count (observable) with a counter that is
//! notified every second, runs for 30 s and stops.

use std::time::{Duration, Instant};
use twinhub::coap::{Code, EndpointConfig, Message, ServerEvent, UdpDriver};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = std::env::args().nth(1).map_or(Ok(0), |p| p.parse())?;
    let server = UdpDriver::bind(("127.0.0.1", port), EndpointConfig::default())?;
    let addr = server.local_addr();
    println!("serving coap://{addr}/hello and coap://{addr}/count for 30 s");

    // Our own client, once, to show the other side of the API.
    let client = UdpDriver::bind("127.0.0.1:0", EndpointConfig::default())?;
    let probe = std::thread::spawn(move || {
        let r = client.handle().request(
            addr,
            Message::request(Code::GET, "/hello"),
            Duration::from_secs(5),
        );
        println!("client got {r:?}");
    });

    let handle = server.handle();
    let mut observers = Vec::new();
    let mut count = 0u32;
    let mut next_tick = Instant::now() + Duration::from_secs(1);
    let end = Instant::now() + Duration::from_secs(30);
    while Instant::now() < end {
        if let Some(ServerEvent::Request { id, peer, request }) =
            server.next_event(Duration::from_millis(100))
        {
            println!("{peer} {} /{}", request.code, request.uri_path_string());
            let mut resp = Message::response(Code::CONTENT);
            match request.uri_path_string().as_str() {
                "hello" => {
                    resp.payload = b"world".to_vec();
                    handle.respond(id, resp)?;
                }
                "count" => {
                    resp.payload = count.to_string().into_bytes();
                    if let Some(obs) = handle.respond_and_observe(id, resp)? {
                        observers.push(obs);
                    }
                }
                _ => handle.respond(id, Message::response(Code::NOT_FOUND))?,
            }
        }
        if Instant::now() >= next_tick {
            next_tick += Duration::from_secs(1);
            count += 1;
            observers.retain(|obs| {
                let mut n = Message::response(Code::CONTENT);
                n.payload = count.to_string().into_bytes();
                handle.notify(*obs, n).is_ok()
            });
        }
    }
    let _ = probe.join();
    server.stop();
    Ok(())
}
