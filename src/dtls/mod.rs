//! DTLS 1.2 with pre-shared keys (`TLS_PSK_WITH_AES_128_CCM_8`, the RFC 7925 profile
//! LWM2M devices speak on `coaps`), between the UDP driver and the CoAP endpoint.
//!
//! Sans-IO, like the layers around it: [`DtlsServer`] (the hub side, many peers) and
//! [`DtlsClient`] (the device side, one server) take datagrams and plaintext and return
//! records, plaintext and events; drivers own the sockets. The cryptography and the
//! handshake are the [`dimpl`](https://crates.io/crates/dimpl) crate's (pure-Rust
//! crypto); this module decides who may hold state and for how long, and carries the
//! peer's authenticated identity ([`PeerIdentity`]) up to the LWM2M layer.
//!
//! Keys live in a [`PskStore`] (identity -> key and the device it belongs to). A key is a
//! [`PskKey`] (the twin's type): its `Debug` is redacted and it is never serialized.
//!
//! # Bounds (all counts, see [`DtlsServerConfig`])
//!
//! | table | default | at the bound |
//! |---|---|---|
//! | unverified peers (ClientHello answered with a cookie) | 1,024, 5 s each | new ClientHellos dropped |
//! | handshakes in progress | 256, 10 s timeout | cookie-verified peer dropped |
//! | sessions | 100,000 | idle ones evicted, else the new one refused |
//! | sessions per identity | 2 | the identity's least recently active one closed |
//! | idle session | 25 h | evicted |
//!
//! `dimpl` keeps its cookie secret per state machine, so the cookie exchange here is
//! *bounded*, not stateless: a peer that has not echoed its cookie costs one entry of the
//! unverified table. It cannot be made stateless around `dimpl` 0.9 either: a state
//! machine with its own cookie step off cannot begin a handshake at the ClientHello that
//! echoes a cookie (it waits for the first one, message_seq 0), so neither a throwaway
//! instance nor a cookie of ours can answer the first ClientHello (a unit test pins this,
//! and fails once a `dimpl` upgrade allows it). Two quirks of `dimpl` 0.9 worth knowing: it reads at most 8 records
//! of one datagram (CoAP sends one per datagram), and a PSK ClientHello carries an empty
//! `supported_groups` extension (libcoap/OpenSSL and GnuTLS accept it).
//!
//! # How a session ends, and what the peer sees
//!
//! A session the server drops is closed with a `close_notify` alert (`dimpl`'s
//! `Dtls::close`: sent once, not retransmitted, RFC 6347 §4.2.7), so the device learns at
//! once instead of by its requests timing out; [`DtlsClient`] then handshakes again at its
//! next send. By [`CloseReason`]:
//!
//! | reason | close_notify | when |
//! |---|---|---|
//! | `Idle` | yes | at the sweep (every idle timeout / 4, at most a minute), or when a full table makes room |
//! | `CredentialsChanged` | yes | the key was rotated or removed: at the server's next call of [`DtlsServer::handle_datagram`] (from any peer), [`DtlsServer::send`] or [`DtlsServer::handle_timeout`] (the hub's driver: within a quarter second; a driver of your own: see "Withdrawn keys" on [`DtlsServer`]); its records are refused from the change on |
//! | `Superseded` | yes, to the old address | the identity opened one session too many |
//! | `Replaced` | yes, under the old keys | a new handshake from the same address completed: the new session's client cannot read it and discards it |
//! | `Local` | yes | [`DtlsServer::close_identity`] |
//! | `Shutdown` | yes | [`DtlsServer::close_all`]: the hub's UDP driver stopping (the hub stopped or dropped) |
//! | `PeerClosed` | `dimpl` answers the peer's with its own | the peer sent close_notify ([`DtlsClient::close`]) |
//! | `Error` | no | a fatal DTLS error (`dimpl` sends its own alert where the protocol says so) |
//!
//! Each ended session is counted once in [`DtlsStats`], under its reason.
//!
//! A handshake refused at [`DtlsServerConfig::max_sessions`] gets no close_notify (it never
//! was a session): its first record is dropped and the device handshakes again once its
//! request times out, which keeps a full server from being asked again at once. When the
//! hub stops (or its last handle is dropped), its UDP driver closes every session with one
//! close_notify ([`DtlsServer::close_all`]: at most [`DtlsServerConfig::max_sessions`]
//! datagrams, sent back to back before the driver's thread ends; handshakes in progress
//! get nothing); a [`DtlsServer`] merely dropped sends nothing. A session's end is the transport's:
//! the LWM2M registration made over it outlives it (as in Leshan), and the device Updates
//! it over a new session.
//!
//! # Not yet
//!
//! Raw public keys, X.509 certificates, DTLS 1.3, OSCORE, session resumption.

mod client;
mod psk;
mod record;
mod server;
#[cfg(test)]
mod tests;

pub use client::{DtlsClient, MAX_QUEUED_PLAINTEXT};
pub use psk::{
    CredentialsError, MAX_IDENTITY, MAX_KEY, PskCredentials, PskKey, PskStore, PskStoreView,
    key_from_hex,
};
pub use server::{
    CloseReason, DtlsConfigError, DtlsEvent, DtlsServer, DtlsServerConfig, DtlsStats,
    DtlsStatsHandle, NoSession,
};

/// Who a DTLS peer proved to be (the transport's neutral type).
pub use crate::transport::PeerIdentity;
use dimpl::crypto::Dtls12CipherSuite;
use std::sync::Arc;
use std::time::Duration;

/// The longest handshake timeout `dimpl` takes (ten years): a longer one (e.g. "no limit"
/// in a configuration) is taken as this.
const DIMPL_MAX_TIMEOUT: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);

/// The one `dimpl` configuration both sides use: DTLS 1.2 only, PSK with AES-128-CCM-8.
fn psk_config(
    builder: dimpl::ConfigBuilder,
    mtu: usize,
    handshake_timeout: Duration,
) -> Arc<dimpl::Config> {
    let config = builder
        .dtls12_cipher_suites(&[Dtls12CipherSuite::PSK_AES128_CCM_8])
        .dtls13_cipher_suites(&[])
        .mtu(mtu.max(64))
        .handshake_timeout(handshake_timeout.clamp(Duration::from_millis(1), DIMPL_MAX_TIMEOUT))
        .build()
        // Only fails for settings outside the crate's limits, and ours are constants or
        // clamped into them; a failure is a bug in this module.
        .expect("the dtls psk configuration is valid");
    Arc::new(config)
}
