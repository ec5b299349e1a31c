//! The Prometheus endpoint (opt-in, configured as ZooKeeper's): `GET /metrics`
//! answers the `mntr` figures in the Prometheus text format, under the names
//! ZooKeeper's Prometheus provider uses (the `mntr` key without `zk_`).
//! A tiny HTTP/1.1 responder: one request per connection, bounded reads.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

use crate::runtime::Msg;

/// `mntr` text → Prometheus text format. Numeric rows become gauges; the
/// server state and version become labels of an info gauge.
pub fn prometheus_text(mntr: &str) -> String {
    let mut out = String::new();
    for line in mntr.lines() {
        let Some((k, v)) = line.split_once('\t') else {
            continue;
        };
        let name = k.strip_prefix("zk_").unwrap_or(k);
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        if v.parse::<f64>().is_ok() {
            out.push_str(&format!("# TYPE {name} gauge\n{name} {v}\n"));
        } else {
            let label = v.replace('\\', "\\\\").replace('"', "\\\"");
            out.push_str(&format!(
                "# TYPE {name} gauge\n{name}{{{name}=\"{label}\"}} 1\n"
            ));
        }
    }
    out
}

pub async fn serve(listener: TcpListener, core: mpsc::Sender<Msg>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let core = core.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(10), answer(stream, core)).await;
        });
    }
}

async fn answer(mut stream: TcpStream, core: mpsc::Sender<Msg>) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await?;
        if n == 0 || buf.len() > 8192 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let first = buf.split(|b| *b == b'\n').next().unwrap_or_default();
    let first = String::from_utf8_lossy(first);
    let mut parts = first.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, body) = if method != "GET" {
        ("405 Method Not Allowed", "only GET\n".to_string())
    } else if path == "/metrics" || path.starts_with("/metrics?") {
        let (tx, rx) = oneshot::channel();
        if core
            .send(Msg::FourLetter {
                word: "mntr",
                reply: tx,
            })
            .await
            .is_err()
        {
            return Ok(());
        }
        ("200 OK", prometheus_text(&rx.await.unwrap_or_default()))
    } else {
        ("404 Not Found", "try /metrics\n".to_string())
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mntr_rows_become_gauges() {
        let t = prometheus_text("zk_version\t3.9.2-zkd\nzk_znode_count\t5\nzk_avg_latency\t0.5\nzk_server_state\tstandalone\n");
        assert!(t.contains("# TYPE znode_count gauge\nznode_count 5\n"));
        assert!(t.contains("avg_latency 0.5\n"));
        assert!(t.contains("server_state{server_state=\"standalone\"} 1\n"));
        assert!(t.contains("version{version=\"3.9.2-zkd\"} 1\n"));
    }
}
