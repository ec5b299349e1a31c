//! Reads a connection's length-prefixed frames, holding a read buffer only
//! while bytes are buffered. Most of 10,000 watching sessions are idle:
//! a buffer each (8 KiB in a `BufReader`) was over half of what a session
//! cost. Waiting for the next frame therefore drops the buffer and waits
//! for the socket to be readable with nothing allocated; the buffer comes
//! back when bytes do, one read fetching as many pipelined frames as fit.

use std::future::Future;
use std::io;

use tokio::io::{AsyncRead, AsyncReadExt};

/// Read size: a batch of pipelined small requests in one read.
const CHUNK: usize = 8 * 1024;

/// A read side that can wait for data without a buffer.
pub trait WaitReadable: AsyncRead + Unpin {
    fn wait_readable(&self) -> impl Future<Output = io::Result<()>> + Send;
}

impl WaitReadable for tokio::net::tcp::OwnedReadHalf {
    fn wait_readable(&self) -> impl Future<Output = io::Result<()>> + Send {
        self.readable()
    }
}

/// TLS decrypts into its own buffers; it waits inside the read, with the
/// buffer held (TLS sessions do not get the idle saving).
impl<S: AsyncRead + Unpin> WaitReadable for tokio::io::ReadHalf<S> {
    fn wait_readable(&self) -> impl Future<Output = io::Result<()>> + Send {
        std::future::ready(Ok(()))
    }
}

pub struct Frames<R> {
    rd: R,
    buf: Vec<u8>,
    pos: usize,
}

impl<R: WaitReadable> Frames<R> {
    pub fn new(rd: R) -> Frames<R> {
        Frames {
            rd,
            buf: Vec::new(),
            pos: 0,
        }
    }

    fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Reads until at least `want` bytes are buffered.
    async fn fill(&mut self, want: usize) -> io::Result<()> {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        while self.buf.len() < want {
            self.buf.reserve(CHUNK.max(want - self.buf.len()));
            if self.rd.read_buf(&mut self.buf).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        Ok(())
    }

    /// The next frame's 4-byte length prefix.
    pub async fn head(&mut self) -> io::Result<[u8; 4]> {
        if self.buffered() == 0 {
            self.buf = Vec::new();
            self.pos = 0;
            self.rd.wait_readable().await?;
        }
        if self.buffered() < 4 {
            self.fill(4).await?;
        }
        let h = self.buf[self.pos..self.pos + 4]
            .try_into()
            .expect("four bytes");
        self.pos += 4;
        Ok(h)
    }

    /// A body of `len` bytes (checked against the frame limit already).
    pub async fn body(&mut self, len: usize) -> io::Result<Vec<u8>> {
        if self.buffered() < len {
            let have = self.buffered();
            if len - have >= CHUNK {
                // Big: the rest goes straight into the body.
                let mut body = Vec::with_capacity(len);
                body.extend_from_slice(&self.buf[self.pos..]);
                self.pos = self.buf.len();
                body.resize(len, 0);
                self.rd.read_exact(&mut body[have..]).await?;
                return Ok(body);
            }
            self.fill(len).await?;
        }
        let body = self.buf[self.pos..self.pos + len].to_vec();
        self.pos += len;
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every split of a stream of frames into reads gives back the frames.
    #[tokio::test]
    async fn frames_come_back_whole_however_the_bytes_arrive() {
        let sizes = [0usize, 1, 3, 100, CHUNK - 4, CHUNK, CHUNK + 1, 3 * CHUNK, 5];
        let mut wire = Vec::new();
        for (i, n) in sizes.iter().enumerate() {
            wire.extend_from_slice(&(*n as u32).to_be_bytes());
            wire.extend((0..*n).map(|j| (i + j) as u8));
        }
        for step in [1usize, 2, 5, 4096, 100_000] {
            let (mut tx, rx) = tokio::io::duplex(step.max(64));
            let data = wire.clone();
            let writer = tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                for c in data.chunks(step) {
                    tx.write_all(c).await.unwrap();
                }
            });
            let (rd, _wr) = tokio::io::split(rx);
            let mut f = Frames::new(rd);
            for (i, n) in sizes.iter().enumerate() {
                let len = u32::from_be_bytes(f.head().await.unwrap()) as usize;
                assert_eq!(len, *n, "step {step}");
                let body = f.body(len).await.unwrap();
                assert!(body.iter().enumerate().all(|(j, b)| *b == (i + j) as u8));
            }
            writer.await.unwrap();
        }
    }

    #[tokio::test]
    async fn an_idle_tcp_connection_holds_no_buffer() {
        use tokio::io::AsyncWriteExt;
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut c = tokio::net::TcpStream::connect(l.local_addr().unwrap())
            .await
            .unwrap();
        let (s, _) = l.accept().await.unwrap();
        let (rd, _wr) = s.into_split();
        let mut f = Frames::new(rd);
        c.write_all(&[0, 0, 0, 2, 7, 8]).await.unwrap();
        let n = u32::from_be_bytes(f.head().await.unwrap()) as usize;
        assert_eq!(f.body(n).await.unwrap(), [7, 8]);
        assert!(f.buf.capacity() >= CHUNK, "read with a buffer");
        // Waiting for the next frame: the buffer is gone meanwhile.
        let next = tokio::time::timeout(std::time::Duration::from_millis(50), f.head()).await;
        assert!(next.is_err(), "nothing was sent");
        assert_eq!(f.buf.capacity(), 0);
        c.write_all(&[0, 0, 0, 0]).await.unwrap();
        assert_eq!(f.head().await.unwrap(), [0, 0, 0, 0]);
    }
}
