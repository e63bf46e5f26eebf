//! Overlapping windows over long token sequences.
//!
//! Encoders accept a bounded number of tokens, but news articles are longer. Token
//! classification (NER) therefore runs on overlapping windows, and each token's
//! prediction is taken from the window that saw the most context around it. These
//! functions work on token *indices* only, so they are independent of any tokenizer
//! and of special tokens (callers add `[CLS]`/`[SEP]` per window themselves and
//! subtract them from the model limit before calling).

use std::ops::Range;

use crate::Error;

/// Splits `n_tokens` tokens into windows of at most `max_tokens` tokens, where
/// consecutive windows share `stride` tokens (Hugging Face's meaning of stride).
///
/// Windows start at 0 and advance by `max_tokens - stride`. Rather than ending with
/// a short tail window, the last window is shifted back so it ends exactly at
/// `n_tokens` and is full-size: the same number of model calls, but the final tokens
/// get a full window of context (its overlap with the previous window may therefore
/// exceed `stride`). A sequence that fits gives a single window, and `n_tokens == 0`
/// gives the single empty window `0..0` so callers need no special case.
///
/// # Errors
///
/// [`Error::ZeroMaxTokens`] if `max_tokens == 0`, [`Error::StrideTooLarge`] if
/// `stride >= max_tokens` (windows could not advance).
pub fn token_windows(
    n_tokens: usize,
    max_tokens: usize,
    stride: usize,
) -> Result<Vec<Range<usize>>, Error> {
    if max_tokens == 0 {
        return Err(Error::ZeroMaxTokens);
    }
    if stride >= max_tokens {
        return Err(Error::StrideTooLarge { stride, max_tokens });
    }
    if n_tokens <= max_tokens {
        // One window holding the whole sequence (not the token list itself).
        #[allow(clippy::single_range_in_vec_init)]
        return Ok(vec![0..n_tokens]);
    }
    let step = max_tokens - stride;
    let last_start = n_tokens - max_tokens;
    let mut windows = Vec::with_capacity(last_start.div_ceil(step) + 1);
    let mut start = 0;
    while start < last_start {
        windows.push(start..start + max_tokens);
        start += step;
    }
    windows.push(last_start..n_tokens);
    Ok(windows)
}

/// For each token, the index of the window whose prediction should be kept.
///
/// A token near a window edge was classified with little context on that side, so
/// each token goes to the window where its *smaller* side context is largest (the
/// window where it is farthest from an edge). Edges at the start or end of the whole
/// sequence do not count as lost context, since no window could see past them. Ties
/// go to the earlier window. With windows from [`token_windows`] this splits each
/// overlap at its middle, and owners are non-decreasing.
///
/// The sequence length is taken as the largest window end. Tokens that no window
/// covers (only possible with hand-made windows) go to the nearest window rather
/// than causing a panic. An empty slice gives an empty result.
pub fn assign_tokens(windows: &[Range<usize>]) -> Vec<usize> {
    let n_tokens = windows.iter().map(|w| w.end).max().unwrap_or(0);
    let mut owners = Vec::with_capacity(n_tokens);
    for t in 0..n_tokens {
        let mut best = 0;
        let mut best_score = i128::MIN;
        for (wi, w) in windows.iter().enumerate() {
            let score = context_score(t, w, n_tokens);
            if score > best_score {
                best = wi;
                best_score = score;
            }
        }
        owners.push(best);
    }
    owners
}

/// How much context token `t` has in window `w` on its poorer side; negative when
/// the window does not contain `t` (minus the distance to it).
fn context_score(t: usize, w: &Range<usize>, n_tokens: usize) -> i128 {
    let (t, start, end) = (t as i128, w.start as i128, w.end as i128);
    let left = if w.start == 0 && w.end > w.start {
        i128::MAX
    } else {
        t - start
    };
    let right = if w.end == n_tokens && w.end > w.start {
        i128::MAX
    } else {
        end - 1 - t
    };
    left.min(right)
}

#[cfg(test)]
// Single-window vectors are exactly what these tests expect, not a typo for a range.
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn errors() {
        assert_eq!(token_windows(10, 0, 0), Err(Error::ZeroMaxTokens));
        assert_eq!(
            token_windows(10, 4, 4),
            Err(Error::StrideTooLarge {
                stride: 4,
                max_tokens: 4
            })
        );
        let msg = token_windows(10, 4, 9).map_err(|e| e.to_string());
        assert!(msg.is_err_and(|m| m.contains("stride (9)") && m.contains("max_tokens (4)")));
    }

    #[test]
    fn short_sequences_fit_in_one_window() {
        assert_eq!(token_windows(0, 512, 128), Ok(vec![0..0]));
        assert_eq!(token_windows(5, 512, 128), Ok(vec![0..5]));
        assert_eq!(token_windows(512, 512, 128), Ok(vec![0..512]));
    }

    #[test]
    fn long_sequences_overlap_by_stride() {
        assert_eq!(token_windows(10, 4, 1), Ok(vec![0..4, 3..7, 6..10]));
        // The last window is pulled back to stay full-size.
        assert_eq!(token_windows(11, 4, 1), Ok(vec![0..4, 3..7, 6..10, 7..11]));
        assert_eq!(token_windows(5, 4, 0), Ok(vec![0..4, 1..5]));
        assert_eq!(
            token_windows(1000, 510, 128),
            Ok(vec![0..510, 382..892, 490..1000])
        );
    }

    #[test]
    fn ownership_splits_overlaps_in_the_middle() {
        let w = vec![0..10, 6..16];
        // Tokens 0..8 belong to the first window, 8..16 to the second.
        let owners = assign_tokens(&w);
        assert_eq!(owners, [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1]);
        // Sequence edges are not context loss: token 1 stays with window 0 here.
        let owners = assign_tokens(&[0..10, 1..11]);
        assert_eq!(owners[1], 0);
        assert_eq!(owners[9], 1);
        assert_eq!(owners[10], 1);
        assert_eq!(assign_tokens(&[0..5]), vec![0; 5]);
        assert!(assign_tokens(&[]).is_empty());
        assert!(assign_tokens(&[0..0]).is_empty());
    }

    #[test]
    fn uncovered_tokens_go_to_nearest_window() {
        let owners = assign_tokens(&[0..2, 5..7]);
        // Token 3 is equally far from both; ties go to the earlier window.
        assert_eq!(owners, vec![0, 0, 0, 0, 1, 1, 1]);
        // Reversed ranges are treated as empty, without panicking.
        #[allow(clippy::reversed_empty_ranges)]
        let owners = assign_tokens(&[3..1, 0..4]);
        assert_eq!(owners, vec![1, 1, 1, 1]);
    }

    proptest! {
        #[test]
        fn window_properties(n in 0usize..3000, max in 1usize..600, stride_frac in 0.0f64..1.0) {
            let stride = ((max as f64) * stride_frac) as usize;
            let stride = stride.min(max - 1);
            let windows = token_windows(n, max, stride);
            prop_assert!(windows.is_ok());
            let windows = windows.unwrap_or_default();
            prop_assert!(!windows.is_empty());
            prop_assert_eq!(windows[0].start, 0);
            prop_assert_eq!(windows[windows.len() - 1].end, n);
            for w in &windows {
                prop_assert!(w.start <= w.end && w.end - w.start <= max);
                if n >= max {
                    prop_assert_eq!(w.end - w.start, max);
                }
            }
            for (i, pair) in windows.windows(2).enumerate() {
                let (a, b) = (&pair[0], &pair[1]);
                prop_assert!(a.start < b.start && a.end < b.end);
                // No gap: every token is covered.
                prop_assert!(b.start <= a.end);
                let overlap = a.end - b.start;
                if i + 2 < windows.len() {
                    prop_assert_eq!(overlap, stride);
                } else {
                    prop_assert!(overlap >= stride);
                }
            }

            let owners = assign_tokens(&windows);
            prop_assert_eq!(owners.len(), n);
            prop_assert!(owners.windows(2).all(|p| p[0] <= p[1]));
            for (t, &o) in owners.iter().enumerate() {
                prop_assert!(windows[o].contains(&t));
            }
        }

        #[test]
        fn bad_parameters_are_errors(n in 0usize..100, max in 0usize..50, extra in 0usize..50) {
            prop_assert!(token_windows(n, max, max + extra).is_err());
        }
    }
}
