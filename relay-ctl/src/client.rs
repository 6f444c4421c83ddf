//! The NG client behind relay-ctl's operator subcommands. It speaks NG with JSON dictionaries
//! (`COOKIE SP {json}`), which rtpengine and our daemon both accept, and retransmits a request
//! with the same cookie on timeout, which the server answers from its cache.

use std::{
    net::{SocketAddr, UdpSocket},
    time::Duration,
};

use serde_json::{Map, Value};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("no reply from {server} after {tries} tries (is `relay-ctl daemon` running there?)")]
    NoReply { server: SocketAddr, tries: u32 },
    #[error("malformed reply from {server}: {why}")]
    BadReply { server: SocketAddr, why: String },
    #[error("{command} refused: {reason}")]
    Refused { command: String, reason: String },
}

pub struct NgClient {
    sock: UdpSocket,
    server: SocketAddr,
    timeout: Duration,
    tries: u32,
}

impl NgClient {
    pub fn new(server: SocketAddr, timeout: Duration, tries: u32) -> Result<NgClient, ClientError> {
        let bind: SocketAddr = if server.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let sock = UdpSocket::bind(bind)?;
        sock.set_read_timeout(Some(timeout))?;
        Ok(NgClient {
            sock,
            server,
            timeout,
            tries: tries.max(1),
        })
    }

    /// Sends `request` (a dictionary with `command`) and returns the reply dictionary; an
    /// `error` result becomes [`ClientError::Refused`].
    pub fn call(&self, request: &Map<String, Value>) -> Result<Map<String, Value>, ClientError> {
        let cookie = format!("{:016x}", rand::random::<u64>());
        let mut datagram = format!("{cookie} ").into_bytes();
        datagram.extend_from_slice(Value::Object(request.clone()).to_string().as_bytes());
        let mut buf = vec![0u8; 65_536];
        for _ in 0..self.tries {
            self.sock.send_to(&datagram, self.server)?;
            let deadline = std::time::Instant::now() + self.timeout;
            while std::time::Instant::now() < deadline {
                let (n, from) = match self.sock.recv_from(&mut buf) {
                    Ok(x) => x,
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) =>
                    {
                        break;
                    }
                    Err(e) => return Err(e.into()),
                };
                // Late replies to an earlier cookie, or stray datagrams, are skipped.
                let Some(body) = buf[..n].strip_prefix(format!("{cookie} ").as_bytes()) else {
                    continue;
                };
                if from != self.server {
                    continue;
                }
                return self.parse_reply(request, body);
            }
        }
        Err(ClientError::NoReply {
            server: self.server,
            tries: self.tries,
        })
    }

    fn parse_reply(
        &self,
        request: &Map<String, Value>,
        body: &[u8],
    ) -> Result<Map<String, Value>, ClientError> {
        let bad = |why: String| ClientError::BadReply {
            server: self.server,
            why,
        };
        let v: Value = serde_json::from_slice(body).map_err(|e| bad(format!("not JSON: {e}")))?;
        let Value::Object(map) = v else {
            return Err(bad("not a dictionary".into()));
        };
        match map.get("result").and_then(Value::as_str) {
            Some("error") => Err(ClientError::Refused {
                command: request
                    .get("command")
                    .and_then(Value::as_str)
                    .unwrap_or("request")
                    .to_owned(),
                reason: map
                    .get("error-reason")
                    .and_then(Value::as_str)
                    .unwrap_or("no reason given")
                    .to_owned(),
            }),
            Some(_) => Ok(map),
            None => Err(bad("no result key".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server() -> UdpSocket {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s
    }

    fn req(cmd: &str) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("command".into(), cmd.into());
        m
    }

    #[test]
    fn retransmits_with_the_same_cookie_and_reads_the_reply() {
        let srv = server();
        let addr = srv.local_addr().unwrap();
        let h = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            let (n1, _) = srv.recv_from(&mut buf).unwrap();
            let first = buf[..n1].to_vec();
            // Ignore the first try; answer the retransmission, after a stray datagram.
            let (n2, from) = srv.recv_from(&mut buf).unwrap();
            assert_eq!(
                &buf[..n2],
                first.as_slice(),
                "retransmission is byte-identical"
            );
            let cookie = std::str::from_utf8(&first)
                .unwrap()
                .split(' ')
                .next()
                .unwrap()
                .to_owned();
            srv.send_to(b"othercookie {\"result\":\"pong\"}", from)
                .unwrap();
            srv.send_to(format!("{cookie} {{\"result\":\"pong\"}}").as_bytes(), from)
                .unwrap();
            String::from_utf8(first).unwrap()
        });
        let c = NgClient::new(addr, Duration::from_millis(300), 3).unwrap();
        let reply = c.call(&req("ping")).unwrap();
        assert_eq!(reply["result"], "pong");
        let sent = h.join().unwrap();
        assert!(sent.ends_with(" {\"command\":\"ping\"}"), "{sent}");
    }

    #[test]
    fn error_results_and_garbage_are_errors() {
        let srv = server();
        let addr = srv.local_addr().unwrap();
        let h = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            for reply in [
                "{\"result\":\"error\",\"error-reason\":\"Unknown call-id\"}",
                "[1,2]",
                "{\"x\":1}",
            ] {
                let (n, from) = srv.recv_from(&mut buf).unwrap();
                let cookie = std::str::from_utf8(&buf[..n])
                    .unwrap()
                    .split(' ')
                    .next()
                    .unwrap()
                    .to_owned();
                srv.send_to(format!("{cookie} {reply}").as_bytes(), from)
                    .unwrap();
            }
        });
        let c = NgClient::new(addr, Duration::from_secs(2), 1).unwrap();
        let e = c.call(&req("delete")).unwrap_err().to_string();
        assert_eq!(e, "delete refused: Unknown call-id");
        assert!(matches!(
            c.call(&req("x")),
            Err(ClientError::BadReply { .. })
        ));
        assert!(matches!(
            c.call(&req("x")),
            Err(ClientError::BadReply { .. })
        ));
        h.join().unwrap();
        let silent = server();
        let c = NgClient::new(silent.local_addr().unwrap(), Duration::from_millis(50), 2).unwrap();
        assert!(matches!(
            c.call(&req("ping")),
            Err(ClientError::NoReply { tries: 2, .. })
        ));
    }
}
