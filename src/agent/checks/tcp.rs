//! `type = "tcp"`: can a TCP connection be made (an instrument's LAN port,
//! the DUT's SSH)?

use serde::Deserialize;

use super::{Code, Outcome};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `host:port`.
    pub address: String,
}

impl Config {
    pub async fn run(&self) -> Outcome {
        match tokio::net::TcpStream::connect(&self.address).await {
            Ok(_) => Outcome::ok(format!("connected to {}", self.address)),
            Err(e) if is_unreachable(&e) => {
                Outcome::fail(Code::ConnectionFailed, format!("{}: {e}", self.address))
            }
            Err(e) => Outcome::fail(Code::Error, format!("{}: {e}", self.address)),
        }
    }
}

fn is_unreachable(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionReset | HostUnreachable | NetworkUnreachable | TimedOut
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn open_and_closed_ports() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let ok = Config {
            address: addr.to_string(),
        };
        assert_eq!(ok.run().await.code, Code::Ok);
        drop(listener);
        assert_eq!(ok.run().await.code, Code::ConnectionFailed);
    }
}
