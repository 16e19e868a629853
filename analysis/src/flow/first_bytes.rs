//! The first payload bytes of one direction of a flow, bounded, with in-order TCP segments
//! joined (out-of-order segments are dropped: the bound is small and the identity is in the
//! first segments).

/// Bytes kept per direction.
pub const FIRST_BYTES: usize = 1024;

#[derive(Clone, Debug, Default)]
pub struct FirstBytes {
    buf: Vec<u8>,
    /// Next expected TCP sequence number, once known.
    next_seq: Option<u32>,
    /// Stop collecting: full, a gap, or the identity is settled.
    closed: bool,
}

impl FirstBytes {
    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    pub fn is_full(&self) -> bool {
        self.buf.len() >= FIRST_BYTES
    }

    pub fn close(&mut self) {
        self.closed = true;
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// A SYN carries sequence number ISN; data starts at ISN + 1.
    pub fn syn(&mut self, seq: u32) {
        if self.buf.is_empty() {
            self.next_seq = Some(seq.wrapping_add(1));
        }
    }

    /// A TCP segment's payload at `seq`. Returns whether bytes were added.
    pub fn tcp(&mut self, seq: u32, data: &[u8]) -> bool {
        if self.closed || data.is_empty() || self.is_full() {
            return false;
        }
        let next = *self.next_seq.get_or_insert(seq);
        // How far `seq` is behind what we have (a retransmission overlapping our end).
        let behind = next.wrapping_sub(seq) as usize;
        let fresh = if seq == next {
            data
        } else if behind < data.len() {
            &data[behind..]
        } else if next.wrapping_sub(seq) < (1 << 31) {
            return false; // wholly old
        } else {
            // A gap: later bytes than we expect; we keep only contiguous bytes.
            return false;
        };
        self.append(fresh);
        self.next_seq = Some(next.wrapping_add(fresh.len() as u32));
        true
    }

    /// A datagram: only the first one is kept (each is its own message).
    pub fn datagram(&mut self, data: &[u8]) -> bool {
        if self.closed || data.is_empty() || !self.buf.is_empty() {
            return false;
        }
        self.append(data);
        self.closed = true;
        true
    }

    fn append(&mut self, data: &[u8]) {
        let room = FIRST_BYTES - self.buf.len();
        self.buf.extend_from_slice(&data[..data.len().min(room)]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_in_order_segments_and_overlaps_and_drops_gaps() {
        let mut f = FirstBytes::default();
        f.syn(999);
        assert!(f.tcp(1000, b"abc"));
        assert!(!f.tcp(1000, b"abc"), "a retransmission adds nothing");
        assert!(
            f.tcp(1001, b"bcde"),
            "an overlapping retransmission adds its new tail"
        );
        assert!(!f.tcp(1010, b"zz"), "a gap is not joined");
        assert!(f.tcp(1005, b"f"));
        assert_eq!(f.bytes(), b"abcdef");
    }

    #[test]
    fn bounded_and_wraps() {
        let mut f = FirstBytes::default();
        f.syn(u32::MAX);
        let big = vec![7u8; 3000];
        assert!(f.tcp(0, &big));
        assert_eq!(f.bytes().len(), FIRST_BYTES);
        assert!(f.is_full());
        assert!(!f.tcp(3000, b"x"));
    }

    #[test]
    fn datagram_keeps_the_first() {
        let mut f = FirstBytes::default();
        assert!(f.datagram(b"one"));
        assert!(!f.datagram(b"two"));
        assert_eq!(f.bytes(), b"one");
    }
}
