//! Framing: every packet on the client port is an int32 length and a body.
//! A length over `jute.maxbuffer` (or negative) is refused, and the caller
//! closes the connection, as the reference does ("Len error").
//!
//! Four-letter words share the port: a new connection whose first four bytes
//! spell a known command (`ruok`, `srvr`, ...) is an admin command, not a
//! frame length. Their lengths as integers are all far above any sane
//! `jute.maxbuffer`, so the check happens only on a connection's first bytes.

/// The reference's default `jute.maxbuffer`: 0xfffff bytes.
pub const FRAME_BYTES_MAX_DEFAULT: usize = 0xfffff;

/// The four-letter words the reference knows.
pub const FOUR_LETTER_WORDS: &[&str] = &[
    "conf", "cons", "crst", "dirs", "dump", "envi", "gtmk", "ruok", "stmk", "srvr", "srst", "stat",
    "wchc", "wchp", "wchs", "mntr", "isro", "hash",
];

/// If `head` (a connection's first four bytes) spells a four-letter word, it.
pub fn four_letter_word(head: [u8; 4]) -> Option<&'static str> {
    FOUR_LETTER_WORDS
        .iter()
        .copied()
        .find(|w| w.as_bytes() == head)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// Declared length is negative or above the limit; the connection must close.
    BadLength { len: i64, max: usize },
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::BadLength { len, max } => {
                write!(f, "frame length {len} outside 0..={max} (jute.maxbuffer)")
            }
        }
    }
}

impl std::error::Error for FrameError {}

/// Checks a declared frame length against the limit.
pub fn check_len(head: [u8; 4], frame_bytes_max: usize) -> Result<usize, FrameError> {
    let len = i32::from_be_bytes(head);
    if len < 0 || len as usize > frame_bytes_max {
        return Err(FrameError::BadLength {
            len: len as i64,
            max: frame_bytes_max,
        });
    }
    Ok(len as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn four_letter_words_are_not_lengths() {
        for w in FOUR_LETTER_WORDS {
            let head: [u8; 4] = w.as_bytes().try_into().unwrap();
            assert_eq!(four_letter_word(head), Some(*w));
            assert!(check_len(head, FRAME_BYTES_MAX_DEFAULT).is_err());
        }
    }

    #[test]
    fn lengths_outside_the_limit_are_refused() {
        assert_eq!(check_len([0, 0, 0, 2], 10), Ok(2));
        assert!(check_len([0, 0x10, 0, 0], FRAME_BYTES_MAX_DEFAULT).is_err());
        assert!(check_len([0xff, 0xff, 0xff, 0xfe], FRAME_BYTES_MAX_DEFAULT).is_err());
    }
}
