//! Jute, the encoding behind every ZooKeeper record: big-endian fixed-width
//! integers, one-byte booleans, and int32-length-prefixed buffers, strings and
//! vectors where a length of -1 stands for null.

use std::fmt;

/// Why a record could not be decoded. Every variant means the peer sent bytes
/// that are not the record it claimed; the server answers by closing the
/// connection, as the reference does on a marshalling error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The frame ended before the record did.
    Truncated { wanted: usize, left: usize },
    /// A length prefix is negative (other than the -1 null marker) or larger
    /// than what is left of the frame.
    BadLength(i32),
    /// A string is not UTF-8.
    BadUtf8,
    /// A value outside the field's domain (unknown opcode in a multi, ...).
    BadValue(&'static str, i64),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated { wanted, left } => {
                write!(f, "record truncated: wanted {wanted} bytes, {left} left")
            }
            DecodeError::BadLength(n) => write!(f, "bad length prefix {n}"),
            DecodeError::BadUtf8 => write!(f, "string is not valid UTF-8"),
            DecodeError::BadValue(what, v) => write!(f, "bad {what}: {v}"),
        }
    }
}

impl std::error::Error for DecodeError {}

pub type Result<T> = std::result::Result<T, DecodeError>;

/// Reads jute primitives from a slice; never panics on short or hostile input.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.remaining() < n {
            return Err(DecodeError::Truncated {
                wanted: n,
                left: self.remaining(),
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub fn i32(&mut self) -> Result<i32> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn i64(&mut self) -> Result<i64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(i64::from_be_bytes(a))
    }

    pub fn bool(&mut self) -> Result<bool> {
        Ok(self.take(1)?[0] != 0)
    }

    /// A length prefix: -1 is null, other negatives and lengths beyond the
    /// frame are errors (checked before anything is allocated).
    fn len(&mut self, elem_min_bytes: usize) -> Result<Option<usize>> {
        let n = self.i32()?;
        if n == -1 {
            return Ok(None);
        }
        if n < 0 || (n as usize).saturating_mul(elem_min_bytes) > self.remaining() {
            return Err(DecodeError::BadLength(n));
        }
        Ok(Some(n as usize))
    }

    /// `buffer`: null is returned as None.
    pub fn buffer_opt(&mut self) -> Result<Option<&'a [u8]>> {
        match self.len(1)? {
            None => Ok(None),
            Some(n) => Ok(Some(self.take(n)?)),
        }
    }

    /// `buffer` where null and empty mean the same (data of a znode).
    pub fn buffer(&mut self) -> Result<Vec<u8>> {
        Ok(self.buffer_opt()?.map(|b| b.to_vec()).unwrap_or_default())
    }

    pub fn ustring_opt(&mut self) -> Result<Option<String>> {
        match self.buffer_opt()? {
            None => Ok(None),
            Some(b) => std::str::from_utf8(b)
                .map(|s| Some(s.to_owned()))
                .map_err(|_| DecodeError::BadUtf8),
        }
    }

    /// `ustring` where null reads as the empty string (the reference's
    /// deserializer does the same for paths, which then fail validation).
    pub fn ustring(&mut self) -> Result<String> {
        Ok(self.ustring_opt()?.unwrap_or_default())
    }

    /// `vector<T>`: null reads as empty. `elem_min_bytes` bounds the count by
    /// what is left, so a hostile count cannot make us allocate.
    pub fn vec<T>(
        &mut self,
        elem_min_bytes: usize,
        mut f: impl FnMut(&mut Self) -> Result<T>,
    ) -> Result<Vec<T>> {
        match self.len(elem_min_bytes.max(1))? {
            None => Ok(Vec::new()),
            Some(n) => {
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(f(self)?);
                }
                Ok(v)
            }
        }
    }

    pub fn strings(&mut self) -> Result<Vec<String>> {
        self.vec(4, |r| r.ustring())
    }
}

/// Appends jute primitives to a growable buffer.
#[derive(Default)]
pub struct Writer {
    pub buf: Vec<u8>,
}

impl Writer {
    pub fn new() -> Self {
        Writer {
            buf: Vec::with_capacity(64),
        }
    }

    /// A writer with room for `n` bytes: a big record (10 KiB of znode
    /// data) written into a small buffer is copied again at each doubling.
    pub fn with_capacity(n: usize) -> Self {
        Writer {
            buf: Vec::with_capacity(n),
        }
    }

    /// A writer whose first 4 bytes are reserved for the frame length, filled
    /// in by `finish_frame`.
    pub fn framed() -> Self {
        Writer { buf: vec![0; 4] }
    }

    /// `framed`, with room for a body of `n` bytes.
    pub fn framed_with_capacity(n: usize) -> Self {
        let mut w = Writer::with_capacity(4 + n);
        w.buf.extend_from_slice(&[0; 4]);
        w
    }

    pub fn finish_frame(mut self) -> Vec<u8> {
        self.end_frame(0);
        self.buf
    }

    /// Starts a frame after what the buffer holds (several frames written
    /// into one buffer, sent in one write): reserves its length and returns
    /// where the frame starts, for `end_frame`.
    pub fn begin_frame(&mut self) -> usize {
        let at = self.buf.len();
        self.buf.extend_from_slice(&[0; 4]);
        at
    }

    /// Fills in the length of the frame that starts at `at`.
    pub fn end_frame(&mut self, at: usize) {
        let n = (self.buf.len() - at - 4) as i32;
        self.buf[at..at + 4].copy_from_slice(&n.to_be_bytes());
    }

    pub fn i32(&mut self, v: i32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn i64(&mut self, v: i64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn bool(&mut self, v: bool) -> &mut Self {
        self.buf.push(v as u8);
        self
    }

    pub fn buffer(&mut self, b: &[u8]) -> &mut Self {
        self.i32(b.len() as i32);
        self.buf.extend_from_slice(b);
        self
    }

    pub fn null(&mut self) -> &mut Self {
        self.i32(-1)
    }

    pub fn ustring(&mut self, s: &str) -> &mut Self {
        self.buffer(s.as_bytes())
    }

    pub fn strings<S: AsRef<str>>(&mut self, v: &[S]) -> &mut Self {
        self.i32(v.len() as i32);
        for s in v {
            self.ustring(s.as_ref());
        }
        self
    }

    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(b);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn null_and_empty_buffers() {
        let mut r = Reader::new(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]);
        assert_eq!(r.buffer_opt().unwrap(), None);
        assert_eq!(r.buffer_opt().unwrap(), Some(&[][..]));
    }

    #[test]
    fn hostile_lengths_are_errors_not_allocations() {
        let mut r = Reader::new(&[0x7f, 0xff, 0xff, 0xff, 1, 2]);
        assert_eq!(r.buffer_opt(), Err(DecodeError::BadLength(i32::MAX)));
        let mut r = Reader::new(&[0xff, 0xff, 0xff, 0xfe]);
        assert_eq!(r.buffer_opt(), Err(DecodeError::BadLength(-2)));
        let mut r = Reader::new(&[0x10, 0, 0, 0]);
        assert!(r.strings().is_err());
    }

    #[test]
    fn truncated_ints() {
        let mut r = Reader::new(&[0, 0, 1]);
        assert_eq!(r.i32(), Err(DecodeError::Truncated { wanted: 4, left: 3 }));
    }
}
