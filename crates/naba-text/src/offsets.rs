//! Conversion between UTF-8 byte offsets and char offsets.
//!
//! naba reports char offsets (see the crate docs), but tokenizers report byte offsets
//! in some APIs. Scanning the text for every conversion would make span mapping
//! quadratic on long articles, so [`CharIndex`] is built once per text and then
//! answers each conversion in O(1) (char → byte) or O(log n) (byte → char).

use std::ops::Range;

use crate::Error;

/// Precomputed char ↔ byte offset table for one text.
///
/// Pure-ASCII texts store no table at all, because byte and char offsets coincide;
/// other texts store the byte offset at which every char starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CharIndex {
    /// Byte offset of each char start, plus a final entry equal to `byte_len`.
    /// Empty when the text is ASCII (offsets are then the identity).
    starts: Vec<usize>,
    byte_len: usize,
    char_len: usize,
}

impl CharIndex {
    /// Indexes `text`; keep the result for as long as you convert offsets for it.
    pub fn new(text: &str) -> Self {
        let byte_len = text.len();
        if text.is_ascii() {
            return Self {
                starts: Vec::new(),
                byte_len,
                char_len: byte_len,
            };
        }
        let mut starts: Vec<usize> = text.char_indices().map(|(b, _)| b).collect();
        let char_len = starts.len();
        starts.push(byte_len);
        Self {
            starts,
            byte_len,
            char_len,
        }
    }

    /// Length of the indexed text in chars, i.e. the largest valid char offset.
    pub fn char_len(&self) -> usize {
        self.char_len
    }

    /// Length of the indexed text in bytes, i.e. the largest valid byte offset.
    pub fn byte_len(&self) -> usize {
        self.byte_len
    }

    /// Converts a byte offset that must sit on a char boundary (or at the end).
    ///
    /// Strict on purpose: an offset inside a character usually means the offsets
    /// belong to another text, and silently rounding would hide that bug. Use
    /// [`CharIndex::byte_to_char_floor`] / [`CharIndex::byte_to_char_ceil`] when the
    /// offsets legitimately split characters (byte-level BPE).
    pub fn byte_to_char(&self, byte: usize) -> Result<usize, Error> {
        let floor = self.byte_to_char_floor(byte)?;
        if self.char_to_byte_unchecked(floor) == byte {
            Ok(floor)
        } else {
            Err(Error::NotCharBoundary {
                offset: byte,
                char_index: floor,
            })
        }
    }

    /// Like [`CharIndex::byte_to_char`] but returns `None` instead of an error, for
    /// callers that only need to know whether the offset is usable.
    pub fn checked_byte_to_char(&self, byte: usize) -> Option<usize> {
        self.byte_to_char(byte).ok()
    }

    /// Char index of the character containing `byte` (or `char_len` at the end).
    ///
    /// This is the right rounding for the *start* of a span that may begin inside a
    /// character: the span then still covers that whole character.
    pub fn byte_to_char_floor(&self, byte: usize) -> Result<usize, Error> {
        if byte > self.byte_len {
            return Err(Error::ByteOffsetOutOfRange {
                offset: byte,
                len: self.byte_len,
            });
        }
        if self.starts.is_empty() {
            return Ok(byte);
        }
        // `starts` is strictly increasing; the partition point is the number of char
        // starts <= byte, so the containing char is one before it.
        let after = self.starts.partition_point(|&s| s <= byte);
        Ok(after.saturating_sub(1))
    }

    /// Char offset of the first char boundary at or after `byte`.
    ///
    /// This is the right rounding for the *end* of a span that may stop inside a
    /// character: the span then still covers that whole character.
    pub fn byte_to_char_ceil(&self, byte: usize) -> Result<usize, Error> {
        let floor = self.byte_to_char_floor(byte)?;
        if self.char_to_byte_unchecked(floor) == byte {
            Ok(floor)
        } else {
            Ok(floor + 1)
        }
    }

    /// Converts a char offset (0..=char_len) to the byte offset where it starts.
    pub fn char_to_byte(&self, ch: usize) -> Result<usize, Error> {
        if ch > self.char_len {
            return Err(Error::CharOffsetOutOfRange {
                offset: ch,
                len: self.char_len,
            });
        }
        Ok(self.char_to_byte_unchecked(ch))
    }

    /// Converts a half-open byte span whose ends sit on char boundaries.
    pub fn byte_span_to_char_span(&self, start: usize, end: usize) -> Result<Range<usize>, Error> {
        if start > end {
            return Err(Error::ReversedRange { start, end });
        }
        Ok(self.byte_to_char(start)?..self.byte_to_char(end)?)
    }

    /// Converts a half-open byte span to the smallest char span covering it.
    ///
    /// Byte-level tokenizers can cut a two-byte Arabic letter between two tokens; the
    /// only char span that does not lose either token's text is the covering one.
    pub fn covering_char_span(&self, start: usize, end: usize) -> Result<Range<usize>, Error> {
        if start > end {
            return Err(Error::ReversedRange { start, end });
        }
        Ok(self.byte_to_char_floor(start)?..self.byte_to_char_ceil(end)?)
    }

    /// Converts a half-open char span to the byte span to slice the text with.
    pub fn char_span_to_byte_span(&self, start: usize, end: usize) -> Result<Range<usize>, Error> {
        if start > end {
            return Err(Error::ReversedRange { start, end });
        }
        Ok(self.char_to_byte(start)?..self.char_to_byte(end)?)
    }

    /// Byte offset of char `ch`; callers guarantee `ch <= char_len`.
    fn char_to_byte_unchecked(&self, ch: usize) -> usize {
        if self.starts.is_empty() {
            ch
        } else {
            self.starts.get(ch).copied().unwrap_or(self.byte_len)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ascii_is_identity() {
        let idx = CharIndex::new("hello");
        assert_eq!(idx.char_len(), 5);
        assert_eq!(idx.byte_len(), 5);
        for i in 0..=5 {
            assert_eq!(idx.byte_to_char(i), Ok(i));
            assert_eq!(idx.char_to_byte(i), Ok(i));
        }
        assert!(matches!(
            idx.byte_to_char(6),
            Err(Error::ByteOffsetOutOfRange { offset: 6, len: 5 })
        ));
    }

    #[test]
    fn arabic_letters_are_two_bytes() {
        // "قال بوتين" : Arabic letters are 2 bytes each, the space 1.
        let text = "قال بوتين";
        let idx = CharIndex::new(text);
        assert_eq!(idx.char_len(), 9);
        assert_eq!(idx.byte_len(), text.len());
        assert_eq!(idx.byte_to_char(0), Ok(0));
        assert_eq!(idx.byte_to_char(2), Ok(1));
        assert_eq!(idx.byte_to_char(6), Ok(3)); // the space
        assert_eq!(idx.byte_to_char(7), Ok(4)); // ب
        assert_eq!(idx.byte_to_char(text.len()), Ok(9));
        assert_eq!(
            idx.byte_to_char(1),
            Err(Error::NotCharBoundary {
                offset: 1,
                char_index: 0
            })
        );
        assert_eq!(idx.checked_byte_to_char(3), None);
        assert_eq!(idx.char_to_byte(4), Ok(7));
        assert_eq!(idx.char_span_to_byte_span(4, 9), Ok(7..text.len()));
        assert_eq!(&text[7..], "بوتين");
    }

    #[test]
    fn covering_span_rounds_outwards() {
        // Mixed scripts and an emoji (4 bytes): "أ😀b"
        let text = "أ😀b";
        let idx = CharIndex::new(text);
        assert_eq!(idx.char_len(), 3);
        // Byte 3 is inside the emoji (bytes 2..6).
        assert_eq!(idx.byte_to_char_floor(3), Ok(1));
        assert_eq!(idx.byte_to_char_ceil(3), Ok(2));
        assert_eq!(idx.covering_char_span(1, 3), Ok(0..2));
        assert!(idx.byte_span_to_char_span(1, 3).is_err());
        assert_eq!(idx.byte_span_to_char_span(2, 6), Ok(1..2));
        assert_eq!(idx.byte_to_char_ceil(7), Ok(3));
        assert!(idx.byte_to_char_ceil(8).is_err());
    }

    #[test]
    fn reversed_and_out_of_range_are_errors() {
        let idx = CharIndex::new("سلام");
        assert_eq!(
            idx.byte_span_to_char_span(4, 2),
            Err(Error::ReversedRange { start: 4, end: 2 })
        );
        assert!(idx.covering_char_span(3, 1).is_err());
        assert!(idx.char_span_to_byte_span(2, 1).is_err());
        assert_eq!(
            idx.char_to_byte(5),
            Err(Error::CharOffsetOutOfRange { offset: 5, len: 4 })
        );
        let msg = idx.char_to_byte(5).map_err(|e| e.to_string());
        assert!(msg.is_err_and(|m| m.contains("past the end")));
    }

    #[test]
    fn empty_text() {
        let idx = CharIndex::new("");
        assert_eq!(idx.byte_to_char(0), Ok(0));
        assert_eq!(idx.char_to_byte(0), Ok(0));
        assert!(idx.byte_to_char(1).is_err());
    }

    proptest! {
        #[test]
        fn agrees_with_char_indices(text in any::<String>()) {
            let idx = CharIndex::new(&text);
            let n = text.chars().count();
            prop_assert_eq!(idx.char_len(), n);
            for (ci, (b, _)) in text.char_indices().enumerate() {
                prop_assert_eq!(idx.byte_to_char(b), Ok(ci));
                prop_assert_eq!(idx.char_to_byte(ci), Ok(b));
            }
            prop_assert_eq!(idx.byte_to_char(text.len()), Ok(n));
            for b in 0..=text.len() {
                let ok = idx.byte_to_char(b).is_ok();
                prop_assert_eq!(ok, text.is_char_boundary(b));
                let floor = idx.byte_to_char_floor(b);
                let ceil = idx.byte_to_char_ceil(b);
                prop_assert!(floor.is_ok() && ceil.is_ok());
                let (f, c) = (floor.unwrap_or(0), ceil.unwrap_or(0));
                prop_assert!(f <= c && c <= n);
                prop_assert!(c - f <= 1);
            }
        }
    }
}
