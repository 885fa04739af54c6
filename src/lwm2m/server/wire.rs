//! A deliberately small, independent CoAP codec (RFC 7252 §3) with which the server's
//! unit tests script devices byte by byte. It shares no code with `crate::coap`, so the
//! tests also cross-check the real codec: header, token, options (delta/length nibbles
//! with their extended forms) and payload. Bounded: at most [`MAX_OPTIONS`] options.

/// Most options a decoded message may carry.
pub(crate) const MAX_OPTIONS: usize = 64;

pub(crate) const OBSERVE: u16 = 6;
pub(crate) const LOCATION_PATH: u16 = 8;
pub(crate) const URI_PATH: u16 = 11;
pub(crate) const CONTENT_FORMAT: u16 = 12;
pub(crate) const URI_QUERY: u16 = 15;
pub(crate) const ACCEPT: u16 = 17;

/// Request method codes (0.01 GET ... 0.04 DELETE).
pub(crate) const GET: u8 = 1;
pub(crate) const POST: u8 = 2;
pub(crate) const PUT: u8 = 3;
pub(crate) const DELETE: u8 = 4;

/// `c.dd` as one byte.
pub(crate) const fn code(class: u8, detail: u8) -> u8 {
    class << 5 | detail
}

/// The four message types.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum MsgType {
    Con,
    Non,
    Ack,
    Rst,
}

/// One CoAP message. Options are kept in the order added; [`Packet::encode`] sorts them.
#[derive(Clone, PartialEq, Eq, Debug)]
pub(crate) struct Packet {
    pub mtype: MsgType,
    pub code: u8,
    pub mid: u16,
    pub token: Vec<u8>,
    pub options: Vec<(u16, Vec<u8>)>,
    pub payload: Vec<u8>,
}

fn ext(nibble: u8, b: &[u8], i: &mut usize) -> Option<u32> {
    Some(match nibble {
        0..=12 => nibble as u32,
        13 => {
            let v = *b.get(*i)? as u32 + 13;
            *i += 1;
            v
        }
        14 => {
            let v = u16::from_be_bytes([*b.get(*i)?, *b.get(*i + 1)?]) as u32 + 269;
            *i += 2;
            v
        }
        _ => return None,
    })
}

fn put_ext(v: u32) -> (u8, Vec<u8>) {
    match v {
        0..=12 => (v as u8, vec![]),
        13..=268 => (13, vec![(v - 13) as u8]),
        _ => (14, ((v - 269) as u16).to_be_bytes().to_vec()),
    }
}

impl Packet {
    pub(crate) fn new(mtype: MsgType, code: u8, mid: u16, token: &[u8]) -> Packet {
        Packet {
            mtype,
            code,
            mid,
            token: token.to_vec(),
            options: Vec::new(),
            payload: Vec::new(),
        }
    }

    /// Decodes one datagram; `None` when it is not a well-formed CoAP message.
    pub(crate) fn decode(b: &[u8]) -> Option<Packet> {
        let (&b0, _) = b.split_first()?;
        if b0 >> 6 != 1 || b.len() < 4 {
            return None;
        }
        let mtype = match (b0 >> 4) & 3 {
            0 => MsgType::Con,
            1 => MsgType::Non,
            2 => MsgType::Ack,
            _ => MsgType::Rst,
        };
        let tkl = (b0 & 0x0f) as usize;
        if tkl > 8 {
            return None;
        }
        let code = b[1];
        let mid = u16::from_be_bytes([b[2], b[3]]);
        let token = b.get(4..4 + tkl)?.to_vec();
        let mut i = 4 + tkl;
        let mut options = Vec::new();
        let mut number = 0u32;
        let mut payload = Vec::new();
        while i < b.len() {
            let h = b[i];
            i += 1;
            if h == 0xff {
                if i == b.len() {
                    return None; // a payload marker with no payload
                }
                payload = b[i..].to_vec();
                break;
            }
            let delta = ext(h >> 4, b, &mut i)?;
            let len = ext(h & 0x0f, b, &mut i)? as usize;
            number += delta;
            if number > u16::MAX as u32 || options.len() >= MAX_OPTIONS {
                return None;
            }
            let v = b.get(i..i + len)?;
            options.push((number as u16, v.to_vec()));
            i += len;
        }
        if code == 0 && (!token.is_empty() || !options.is_empty() || !payload.is_empty()) {
            return None; // an empty message carries nothing (RFC 7252 §4.1)
        }
        Some(Packet {
            mtype,
            code,
            mid,
            token,
            options,
            payload,
        })
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let t = match self.mtype {
            MsgType::Con => 0,
            MsgType::Non => 1,
            MsgType::Ack => 2,
            MsgType::Rst => 3,
        };
        let mut out = Vec::with_capacity(16 + self.payload.len());
        out.push(1 << 6 | t << 4 | self.token.len().min(8) as u8);
        out.push(self.code);
        out.extend_from_slice(&self.mid.to_be_bytes());
        out.extend_from_slice(&self.token[..self.token.len().min(8)]);
        let mut opts: Vec<&(u16, Vec<u8>)> = self.options.iter().collect();
        opts.sort_by_key(|(n, _)| *n);
        let mut last = 0u16;
        for (n, v) in opts {
            let (dn, dx) = put_ext((n - last) as u32);
            let (ln, lx) = put_ext(v.len().min(65_535 + 269) as u32);
            out.push(dn << 4 | ln);
            out.extend_from_slice(&dx);
            out.extend_from_slice(&lx);
            out.extend_from_slice(v);
            last = *n;
        }
        if !self.payload.is_empty() {
            out.push(0xff);
            out.extend_from_slice(&self.payload);
        }
        out
    }

    pub(crate) fn opts(&self, n: u16) -> impl Iterator<Item = &[u8]> {
        self.options
            .iter()
            .filter(move |(k, _)| *k == n)
            .map(|(_, v)| v.as_slice())
    }

    /// An unsigned-integer option (at most 4 bytes).
    pub(crate) fn uint(&self, n: u16) -> Option<u32> {
        let v = self.opts(n).next()?;
        (v.len() <= 4).then(|| v.iter().fold(0u32, |a, &b| a << 8 | b as u32))
    }

    pub(crate) fn add(&mut self, n: u16, v: &[u8]) {
        self.options.push((n, v.to_vec()));
    }

    pub(crate) fn add_uint(&mut self, n: u16, v: u32) {
        let b = v.to_be_bytes();
        let skip = b.iter().take_while(|&&x| x == 0).count();
        self.options.push((n, b[skip..].to_vec()));
    }

    pub(crate) fn is_request(&self) -> bool {
        (1..32).contains(&self.code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_extended_options() {
        let mut p = Packet::new(MsgType::Con, code(0, POST), 0x1234, &[1, 2, 3]);
        p.add(URI_PATH, b"rd");
        p.add(URI_QUERY, b"ep=a-very-long-endpoint-name");
        p.add_uint(CONTENT_FORMAT, 40);
        p.add(2000, &[7; 300]);
        p.payload = b"</3/0>".to_vec();
        let b = p.encode();
        let back = Packet::decode(&b).unwrap();
        let mut sorted = p.clone();
        sorted.options.sort_by_key(|(n, _)| *n);
        assert_eq!(back, sorted);
        assert_eq!(back.uint(CONTENT_FORMAT), Some(40));
        assert!(back.is_request());
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            &[][..],
            &[0x40, 1, 0],
            &[0x80, 1, 0, 0],
            &[0x49, 1, 0, 0],
            &[0x40, 1, 0, 0, 0xff],
            &[0x40, 1, 0, 0, 0xf0],
            &[0x40, 1, 0, 0, 0x0f],
            &[0x41, 0, 0, 0, 9],
            &[0x40, 1, 0, 0, 0xd1],
        ] {
            assert_eq!(Packet::decode(bad), None, "{bad:?}");
        }
        assert!(Packet::decode(&[0x60, 0, 0, 7]).is_some());
    }
}
