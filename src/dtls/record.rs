//! Reading DTLS record headers (RFC 6347 §4.1) to route a datagram before any state is
//! kept: is it a ClientHello, did the server's flight carry a ServerHello. Only the
//! plaintext headers of epoch 0 are read; everything else is the `dimpl` crate's job.

/// Record header length: type (1), version (2), epoch (2), sequence number (6), length (2).
const HEADER: usize = 13;
/// ContentType handshake.
const HANDSHAKE: u8 = 22;
/// ContentType alert.
const ALERT: u8 = 21;
/// ContentType application_data.
const APPLICATION_DATA: u8 = 23;
/// HandshakeType client_hello.
const CLIENT_HELLO: u8 = 1;
/// HandshakeType server_hello.
const SERVER_HELLO: u8 = 2;

/// The records of a datagram as (content type, epoch, fragment). Stops at the first record
/// whose length runs past the datagram.
fn records(mut bytes: &[u8]) -> impl Iterator<Item = (u8, u16, &[u8])> {
    std::iter::from_fn(move || {
        if bytes.len() < HEADER {
            return None;
        }
        let content_type = bytes[0];
        let epoch = u16::from_be_bytes([bytes[3], bytes[4]]);
        let len = usize::from(u16::from_be_bytes([bytes[11], bytes[12]]));
        let end = HEADER.checked_add(len)?;
        if end > bytes.len() {
            return None;
        }
        let fragment = &bytes[HEADER..end];
        bytes = &bytes[end..];
        Some((content_type, epoch, fragment))
    })
}

/// Whether the datagram starts with an epoch-0 handshake record holding the first
/// ClientHello of a handshake (`message_seq` 0): the only datagram from an unknown address
/// that may create state. A ClientHello that echoes a cookie (`message_seq` 1) for state the
/// server no longer holds is not one: `dimpl` begins a handshake only at 0, so the client
/// must start again (after its retransmissions time out).
pub(crate) fn is_first_client_hello(bytes: &[u8]) -> bool {
    records(bytes).next().is_some_and(|(ct, epoch, f)| {
        // msg_type (1), length (3), message_seq (2)
        ct == HANDSHAKE
            && epoch == 0
            && f.first() == Some(&CLIENT_HELLO)
            && f.get(4..6) == Some(&[0, 0])
    })
}

/// Whether the datagram starts with a protected record of an established session
/// (application data or an alert, epoch 1 or later): never part of a handshake in progress.
pub(crate) fn is_session_traffic(bytes: &[u8]) -> bool {
    records(bytes)
        .next()
        .is_some_and(|(ct, epoch, _)| matches!(ct, APPLICATION_DATA | ALERT) && epoch != 0)
}

/// Whether a datagram the server sends carries a ServerHello: the cookie was verified and
/// the handshake proper has begun.
pub(crate) fn has_server_hello(bytes: &[u8]) -> bool {
    records(bytes)
        .any(|(ct, epoch, f)| ct == HANDSHAKE && epoch == 0 && f.first() == Some(&SERVER_HELLO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(ct: u8, epoch: u16, body: &[u8]) -> Vec<u8> {
        let mut r = vec![ct, 0xfe, 0xfd];
        r.extend_from_slice(&epoch.to_be_bytes());
        r.extend_from_slice(&[0; 6]);
        r.extend_from_slice(&(body.len() as u16).to_be_bytes());
        r.extend_from_slice(body);
        r
    }

    #[test]
    fn a_first_client_hello_is_recognised_only_in_epoch_zero() {
        let hello = [1, 0, 0, 0, 0, 0];
        assert!(is_first_client_hello(&record(22, 0, &hello)));
        assert!(!is_first_client_hello(&record(22, 1, &hello)));
        assert!(!is_first_client_hello(&record(23, 0, &hello)));
        assert!(!is_first_client_hello(&record(22, 0, &[])));
        // The ClientHello echoing a cookie (message_seq 1), and one cut short.
        assert!(!is_first_client_hello(&record(22, 0, &[1, 0, 0, 0, 0, 1])));
        assert!(!is_first_client_hello(&record(22, 0, &[1, 0, 0, 0, 0])));
        // A length running past the datagram is not a record.
        let mut short = record(22, 0, &hello);
        short.truncate(14);
        assert!(!is_first_client_hello(&short));
        assert!(!is_first_client_hello(&[]));
    }

    #[test]
    fn session_traffic_is_protected_data_or_alerts() {
        assert!(is_session_traffic(&record(23, 1, &[0; 8])));
        assert!(is_session_traffic(&record(21, 1, &[0; 8])));
        // A handshake's own epoch-1 record (its Finished) is not.
        assert!(!is_session_traffic(&record(22, 1, &[0; 8])));
        assert!(!is_session_traffic(&record(23, 0, &[0; 8])));
        assert!(!is_session_traffic(&[]));
    }

    #[test]
    fn server_hello_is_found_in_any_record() {
        let mut flight = record(22, 0, &[12, 0]);
        flight.extend(record(22, 0, &[2, 0]));
        assert!(has_server_hello(&flight));
        assert!(!has_server_hello(&record(22, 0, &[3, 0])));
    }
}
