//! Arabic orthographic normalization that remembers where every char came from.
//!
//! Arabic news text writes the same word in several ways (with or without harakat,
//! hamza on the alef, ى for ي, tatweel for justification, presentation-form
//! ligatures from PDF copy-paste). Models trained on normalized text do better when
//! their input is normalized the same way, but naba must report spans on the text
//! the user sent. [`normalize`] therefore returns the normalized text together with
//! a char-level map back to the original, and [`Normalized::to_original_span`]
//! converts predicted spans back.

use std::fmt;
use std::str::FromStr;

use unicode_normalization::char::{canonical_combining_class, decompose_compatible};
use unicode_normalization::{is_nfkc_quick, IsNormalized, UnicodeNormalization};

use crate::Error;

/// Which normalizations to apply; all off by default so that doing nothing is the
/// explicit, cheap choice and every change to the user's text is opted into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NormalizeOptions {
    /// Drop harakat, superscript alef and Quranic annotation marks, which most news
    /// text omits and which would otherwise split one word into many spellings.
    pub remove_diacritics: bool,
    /// Drop tatweel (U+0640), a purely typographic elongation.
    pub remove_tatweel: bool,
    /// Map أ إ آ ٱ to bare ا, because hamza placement on alef is written
    /// inconsistently.
    pub normalize_alef: bool,
    /// Map ى (alef maqsura) to ي, which are confused word-finally (Egyptian style).
    pub normalize_ya: bool,
    /// Map ة to ه, which are confused word-finally.
    pub normalize_ta_marbuta: bool,
    /// Map Arabic-Indic and Extended Arabic-Indic digits to ASCII so numbers look
    /// alike whichever keyboard produced them.
    pub normalize_digits: bool,
    /// Apply Unicode NFKC first, which expands presentation forms and ligatures
    /// (e.g. ﻻ U+FEFB → لا) that copy-paste from PDFs leaves behind.
    pub nfkc: bool,
}

/// Item names accepted by [`NormalizeOptions::from_str`], in canonical order.
const ITEM_NAMES: &str = "diacritics, tatweel, alef, ya, ta-marbuta, digits, nfkc";

impl NormalizeOptions {
    /// Every normalization on: the usual choice for models trained on normalized
    /// Arabic.
    pub fn all() -> Self {
        Self {
            remove_diacritics: true,
            remove_tatweel: true,
            normalize_alef: true,
            normalize_ya: true,
            normalize_ta_marbuta: true,
            normalize_digits: true,
            nfkc: true,
        }
    }

    /// Nothing on; same as `Default`, spelled out for readability at call sites.
    pub fn none() -> Self {
        Self::default()
    }

    /// True when [`normalize`] would return the text unchanged, so callers can skip
    /// the map entirely.
    pub fn is_identity(&self) -> bool {
        *self == Self::default()
    }

    /// True when a per-character rewrite (anything but NFKC) is enabled.
    fn has_char_ops(&self) -> bool {
        Self {
            nfkc: false,
            ..*self
        } != Self::default()
    }

    /// (name, flag) pairs in canonical order, shared by parsing and display so the
    /// two can never disagree.
    fn items(&mut self) -> [(&'static str, &mut bool); 7] {
        [
            ("diacritics", &mut self.remove_diacritics),
            ("tatweel", &mut self.remove_tatweel),
            ("alef", &mut self.normalize_alef),
            ("ya", &mut self.normalize_ya),
            ("ta-marbuta", &mut self.normalize_ta_marbuta),
            ("digits", &mut self.normalize_digits),
            ("nfkc", &mut self.nfkc),
        ]
    }
}

impl FromStr for NormalizeOptions {
    type Err = Error;

    /// Parses a comma list such as `"diacritics,tatweel,alef"`, or `"all"` / `"none"`,
    /// so the same spelling works in CLI flags, config files and HTTP parameters.
    ///
    /// Items are case-insensitive, surrounding whitespace and empty items are
    /// ignored (an empty string means none), `_` is accepted for `-`, and `all` /
    /// `none` may be combined with other items (they are additive).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut opts = Self::default();
        for raw in s.split(',') {
            let item = raw.trim();
            if item.is_empty() {
                continue;
            }
            let key = item.to_ascii_lowercase().replace('_', "-");
            match key.as_str() {
                "all" => opts = Self::all(),
                "none" => {}
                _ => {
                    let mut found = false;
                    for (name, flag) in opts.items() {
                        if name == key {
                            *flag = true;
                            found = true;
                        }
                    }
                    if !found {
                        return Err(Error::UnknownNormalizeOption {
                            item: item.to_string(),
                            valid: ITEM_NAMES,
                        });
                    }
                }
            }
        }
        Ok(opts)
    }
}

impl fmt::Display for NormalizeOptions {
    /// Writes the canonical comma list (`none` when nothing is set), which parses
    /// back to the same options; handy for logging the effective configuration.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut copy = *self;
        let names: Vec<&str> = copy
            .items()
            .into_iter()
            .filter(|(_, flag)| **flag)
            .map(|(name, _)| name)
            .collect();
        if names.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&names.join(","))
        }
    }
}

/// Normalized text plus the way back to the original.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normalized {
    /// The normalized text, to be fed to tokenizers and models.
    pub text: String,
    /// `map[i]` is the char index in the original text of the i-th char of `text`.
    /// Non-decreasing; a char produced by merging several original chars points at
    /// the first of them, and every char of an expansion points at its source.
    pub map: Vec<usize>,
    /// Length of the original text in chars, needed to map spans that reach the end
    /// of the normalized text (trailing removed chars still belong to them).
    pub original_len: usize,
}

impl Normalized {
    /// Number of chars in the normalized text (equals `map.len()`), to avoid
    /// recounting `text`.
    pub fn char_len(&self) -> usize {
        self.map.len()
    }

    /// Maps a half-open char range of the normalized text back to the original.
    ///
    /// The result starts at the original char that produced normalized char `start`
    /// and ends just after the original char(s) that produced normalized char
    /// `end - 1`, *including* any chars that normalization removed right after it
    /// (diacritics, tatweel, combining marks merged by NFKC). Those marks belong to
    /// the preceding letter, so an entity "محمد" found in normalized text maps back to
    /// the whole "مُحَمَّدٌ" rather than cutting off the final tanwin.
    ///
    /// An empty range maps to an empty range at the corresponding original
    /// position (the end of the original for `start == char_len()`). Out-of-range
    /// arguments are clamped (`end` to `char_len()`, `start` to `end`) rather than
    /// panicking, because spans may come from model output.
    pub fn to_original_span(&self, start: usize, end: usize) -> (usize, usize) {
        let len = self.map.len();
        let end = end.min(len);
        let start = start.min(end);
        let orig_start = self.map.get(start).copied().unwrap_or(self.original_len);
        if start == end {
            return (orig_start, orig_start);
        }
        // end >= 1 here because start < end.
        let last = self.map.get(end - 1).copied().unwrap_or(orig_start);
        let orig_end = match self.map.get(end) {
            // The next normalized char comes from a later original char: everything
            // in between was consumed by (or removed after) the last char.
            Some(&next) if next > last => next,
            // The next normalized char comes from the same original char (an
            // expansion such as ﻻ → لا): cover that original char.
            Some(_) => last + 1,
            None => self.original_len.max(last + 1),
        };
        (orig_start, orig_end)
    }

    /// Maps an original-text char range to normalized chars, the inverse direction,
    /// for callers that want to feed a user-chosen span to the model: returns the
    /// normalized chars whose source lies in `start..end` of the original.
    pub fn from_original_span(&self, start: usize, end: usize) -> (usize, usize) {
        let end = end.max(start);
        let s = self.map.partition_point(|&m| m < start);
        let e = self.map.partition_point(|&m| m < end);
        (s, e.max(s))
    }
}

/// Diacritics as defined for naba: harakat, superscript alef and Quranic marks.
fn is_diacritic(c: char) -> bool {
    matches!(c,
        '\u{064B}'..='\u{065F}'
        | '\u{0670}'
        | '\u{0610}'..='\u{061A}'
        | '\u{06D6}'..='\u{06DC}'
        | '\u{06DF}'..='\u{06E8}'
        | '\u{06EA}'..='\u{06ED}')
}

const TATWEEL: char = '\u{0640}';

/// Applies the per-character options; `None` means the char is removed.
fn map_char(c: char, opts: &NormalizeOptions) -> Option<char> {
    // Everything we touch is in the Arabic block; ASCII and other scripts pass
    // straight through without a chain of comparisons.
    if !('\u{0610}'..='\u{06FF}').contains(&c) {
        return Some(c);
    }
    if opts.remove_diacritics && is_diacritic(c) {
        return None;
    }
    if opts.remove_tatweel && c == TATWEEL {
        return None;
    }
    let mapped = match c {
        '\u{0623}' | '\u{0625}' | '\u{0622}' | '\u{0671}' if opts.normalize_alef => '\u{0627}',
        '\u{0649}' if opts.normalize_ya => '\u{064A}',
        '\u{0629}' if opts.normalize_ta_marbuta => '\u{0647}',
        '\u{0660}'..='\u{0669}' if opts.normalize_digits => {
            char::from(b'0' + (c as u32 - 0x0660) as u8)
        }
        '\u{06F0}'..='\u{06F9}' if opts.normalize_digits => {
            char::from(b'0' + (c as u32 - 0x06F0) as u8)
        }
        other => other,
    };
    Some(mapped)
}

/// Accumulates output chars and their origins, applying the per-char options.
struct Sink<'a> {
    opts: &'a NormalizeOptions,
    text: String,
    map: Vec<usize>,
}

impl Sink<'_> {
    fn push(&mut self, c: char, origin: usize) {
        if let Some(m) = map_char(c, self.opts) {
            self.text.push(m);
            self.map.push(origin);
        }
    }
}

/// Normalizes `text` according to `opts`, keeping a char map to the original.
///
/// NFKC runs first (so presentation forms become ordinary letters that the other
/// options can then see), then removals and letter maps. With no option set the
/// text is returned unchanged with an identity map, without any Unicode lookups.
///
/// NFKC is applied per cluster of characters that normalize independently, which
/// gives the same result as whole-text NFKC while letting every output char be
/// traced to its source. Note that NFKC followed by removals is not always
/// idempotent (removing a tatweel can bring a letter and a combining hamza together,
/// which a second NFKC pass would compose); the char-level options alone are.
pub fn normalize(text: &str, opts: &NormalizeOptions) -> Normalized {
    let original_len = text.chars().count();
    if opts.is_identity() {
        return Normalized {
            text: text.to_string(),
            map: (0..original_len).collect(),
            original_len,
        };
    }
    let mut sink = Sink {
        opts,
        text: String::with_capacity(text.len()),
        map: Vec::with_capacity(original_len),
    };
    if opts.nfkc {
        nfkc_mapped(text, &mut sink);
    } else if opts.has_char_ops() {
        for (i, c) in text.chars().enumerate() {
            sink.push(c, i);
        }
    }
    Normalized {
        text: sink.text,
        map: sink.map,
        original_len,
    }
}

/// True when NFKC of the text before `c` cannot depend on `c` or anything after it,
/// so the text can be cut just before `c` and each side normalized separately.
///
/// That holds when the first char of `c`'s compatibility decomposition is a starter
/// (combining class 0, so no reordering of marks across it and it blocks any earlier
/// starter from composing with later marks) that never composes with a preceding
/// char (quick-check `Yes` rather than `Maybe`).
fn is_cluster_start(c: char) -> bool {
    if c.is_ascii() {
        return true;
    }
    let mut first = None;
    decompose_compatible(c, |d| {
        if first.is_none() {
            first = Some(d);
        }
    });
    let d0 = first.unwrap_or(c);
    canonical_combining_class(d0) == 0 && is_nfkc_quick(std::iter::once(d0)) == IsNormalized::Yes
}

/// NFKC over `text`, pushing each output char with its origin into `sink`.
fn nfkc_mapped(text: &str, sink: &mut Sink<'_>) {
    let chars: Vec<char> = text.chars().collect();
    let mut start = 0;
    for i in 1..=chars.len() {
        if i == chars.len() || chars.get(i).is_some_and(|&c| is_cluster_start(c)) {
            if let Some(cluster) = chars.get(start..i) {
                nfkc_cluster(cluster, start, sink);
            }
            start = i;
        }
    }
}

/// NFKC of one independent cluster whose first char is at original index `offset`.
fn nfkc_cluster(cluster: &[char], offset: usize, sink: &mut Sink<'_>) {
    // Common case (plain letters, letters with harakat): already NFKC, so each
    // char maps to itself.
    if is_nfkc_quick(cluster.iter().copied()) == IsNormalized::Yes {
        for (k, &c) in cluster.iter().enumerate() {
            sink.push(c, offset + k);
        }
        return;
    }
    let whole: Vec<char> = cluster.iter().copied().nfkc().collect();
    // If normalizing char by char gives the same result, each piece can keep its
    // own origin (e.g. a ligature followed by an unrelated mark).
    let pieces: Vec<Vec<char>> = cluster
        .iter()
        .map(|&c| std::iter::once(c).nfkc().collect())
        .collect();
    let concat_matches = pieces.iter().flatten().eq(whole.iter());
    if concat_matches {
        for (k, piece) in pieces.iter().enumerate() {
            for &c in piece {
                sink.push(c, offset + k);
            }
        }
    } else {
        // Composition or reordering mixed the sources: attribute everything to the
        // cluster's first char, which keeps the map non-decreasing.
        for c in whole {
            sink.push(c, offset);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn norm(text: &str, opts: NormalizeOptions) -> Normalized {
        normalize(text, &opts)
    }

    #[test]
    fn identity_fast_path() {
        let n = norm("مُحَمَّد 123", NormalizeOptions::none());
        assert_eq!(n.text, "مُحَمَّد 123");
        assert_eq!(n.map, (0..12).collect::<Vec<_>>());
        assert_eq!(n.char_len(), 12);
        assert_eq!(n.original_len, 12);
    }

    #[test]
    fn removes_diacritics_and_maps_back() {
        // "مُحَمَّدٌ" = م ُ ح َ م َّ د ٌ  (9 chars: shadda + fatha on the second mim)
        let text = "قال مُحَمَّدٌ";
        let opts = NormalizeOptions {
            remove_diacritics: true,
            ..Default::default()
        };
        let n = norm(text, opts);
        assert_eq!(n.text, "قال محمد");
        assert_eq!(n.map, vec![0, 1, 2, 3, 4, 6, 8, 11]);
        // The entity "محمد" (normalized 4..8) covers the whole vocalised word,
        // including the final tanwin.
        let (s, e) = n.to_original_span(4, 8);
        let orig: String = text.chars().skip(s).take(e - s).collect();
        assert_eq!(orig, "مُحَمَّدٌ");
        // A word in the middle keeps its own diacritics only.
        assert_eq!(n.to_original_span(0, 3), (0, 3));
        assert_eq!(n.to_original_span(5, 6), (6, 8));
    }

    #[test]
    fn superscript_alef_and_quranic_marks() {
        let text = "هٰذا الرَّحْمٰنِ ۖ";
        let opts = NormalizeOptions {
            remove_diacritics: true,
            ..Default::default()
        };
        assert_eq!(norm(text, opts).text, "هذا الرحمن ");
    }

    #[test]
    fn removes_tatweel() {
        let opts = NormalizeOptions {
            remove_tatweel: true,
            ..Default::default()
        };
        let n = norm("جـــميل", opts);
        assert_eq!(n.text, "جميل");
        assert_eq!(n.map, vec![0, 4, 5, 6]);
        assert_eq!(n.to_original_span(0, 1), (0, 4));
    }

    #[test]
    fn letter_maps() {
        let opts = NormalizeOptions {
            normalize_alef: true,
            normalize_ya: true,
            normalize_ta_marbuta: true,
            ..Default::default()
        };
        let n = norm("أحمد إلى آخر ٱلمدينة", opts);
        assert_eq!(n.text, "احمد الي اخر المدينه");
        assert_eq!(n.char_len(), "أحمد إلى آخر ٱلمدينة".chars().count());
    }

    #[test]
    fn digits() {
        let opts = NormalizeOptions {
            normalize_digits: true,
            ..Default::default()
        };
        assert_eq!(
            norm("عام ٢٠٢٤ و۱۹۹۰ و3.5", opts).text,
            "عام 2024 و1990 و3.5"
        );
    }

    #[test]
    fn nfkc_expands_lam_alef_ligature() {
        // U+FEFB ARABIC LIGATURE LAM WITH ALEF ISOLATED FORM between two words.
        let text = "قال \u{FEFB} شيء";
        let opts = NormalizeOptions {
            nfkc: true,
            ..Default::default()
        };
        let n = norm(text, opts);
        assert_eq!(n.text, "قال لا شيء");
        assert_eq!(n.map, vec![0, 1, 2, 3, 4, 4, 5, 6, 7, 8]);
        // Just the lam maps to the whole ligature; so does the pair.
        assert_eq!(n.to_original_span(4, 5), (4, 5));
        assert_eq!(n.to_original_span(4, 6), (4, 5));
        assert_eq!(n.to_original_span(5, 6), (4, 5));
    }

    #[test]
    fn nfkc_then_alef_on_hamza_ligature() {
        // U+FEF7 LAM WITH ALEF WITH HAMZA ABOVE → ل أ → ل ا with alef normalization.
        let n = norm("\u{FEF7}", NormalizeOptions::all());
        assert_eq!(n.text, "لا");
        assert_eq!(n.map, vec![0, 0]);
        // Presentation forms of single letters, e.g. U+FE8D ALEF ISOLATED FORM.
        assert_eq!(norm("\u{FE8D}\u{FEE3}", NormalizeOptions::all()).text, "ام");
    }

    #[test]
    fn nfkc_composition_maps_to_first() {
        // alef + combining hamza above (U+0654) composes to أ.
        let opts = NormalizeOptions {
            nfkc: true,
            ..Default::default()
        };
        let n = norm("ب\u{0627}\u{0654}ب", opts);
        assert_eq!(n.text, "بأب");
        assert_eq!(n.map, vec![0, 1, 3]);
        assert_eq!(n.to_original_span(1, 2), (1, 3));
        // Latin e + combining acute.
        let n = norm("cafe\u{0301}!", opts);
        assert_eq!(n.text, "café!");
        assert_eq!(n.map, vec![0, 1, 2, 3, 5]);
    }

    #[test]
    fn emoji_and_mixed_scripts_pass_through() {
        let text = "قالَ 😀 Putin ﷺ";
        let n = norm(text, NormalizeOptions::all());
        assert!(n.text.starts_with("قال 😀 Putin "));
        // U+FDFA expands to a long phrase, all mapped to the ligature.
        let tail = &n.map[12..];
        assert!(!tail.is_empty());
        assert!(tail.iter().all(|&m| m == 13));
        assert_eq!(n.map[..12], [0, 1, 2, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
    }

    #[test]
    fn empty_text_and_spans() {
        let n = norm("", NormalizeOptions::all());
        assert_eq!(n.text, "");
        assert_eq!(n.to_original_span(0, 0), (0, 0));
        // Everything removed: only diacritics.
        let n = norm("ًٌٍ", NormalizeOptions::all());
        assert_eq!(n.char_len(), 0);
        assert_eq!(n.to_original_span(0, 0), (3, 3));
        // Clamping of out-of-range arguments.
        let n = norm("كتب", NormalizeOptions::all());
        assert_eq!(n.to_original_span(2, 99), (2, 3));
        assert_eq!(n.to_original_span(5, 1), (1, 1));
        assert_eq!(n.to_original_span(1, 1), (1, 1));
        assert_eq!(n.to_original_span(3, 3), (3, 3));
    }

    #[test]
    fn from_original_span_inverts() {
        let text = "قال مُحَمَّدٌ";
        let n = norm(text, NormalizeOptions::all());
        assert_eq!(n.from_original_span(4, 13), (4, 8));
        assert_eq!(n.from_original_span(0, 3), (0, 3));
        assert_eq!(n.from_original_span(5, 5), (5, 5));
    }

    #[test]
    fn parse_options() {
        assert_eq!(
            "all".parse::<NormalizeOptions>(),
            Ok(NormalizeOptions::all())
        );
        assert_eq!(
            "none".parse::<NormalizeOptions>(),
            Ok(NormalizeOptions::none())
        );
        assert_eq!("".parse::<NormalizeOptions>(), Ok(NormalizeOptions::none()));
        assert_eq!(
            "diacritics,tatweel,alef,ya,ta-marbuta,digits,nfkc".parse::<NormalizeOptions>(),
            Ok(NormalizeOptions::all())
        );
        assert_eq!(
            " Alef , ta_marbuta ,".parse::<NormalizeOptions>(),
            Ok(NormalizeOptions {
                normalize_alef: true,
                normalize_ta_marbuta: true,
                ..Default::default()
            })
        );
        let err = "alef,hamza".parse::<NormalizeOptions>();
        assert!(matches!(
            &err,
            Err(Error::UnknownNormalizeOption { item, .. }) if item == "hamza"
        ));
        let msg = err.map_err(|e| e.to_string()).err().unwrap_or_default();
        assert!(msg.contains("`hamza`"), "{msg}");
        assert!(msg.contains("ta-marbuta"), "{msg}");
        assert!(msg.contains("all"), "{msg}");
    }

    #[test]
    fn display_round_trips() {
        assert_eq!(NormalizeOptions::none().to_string(), "none");
        assert_eq!(
            NormalizeOptions::all().to_string(),
            "diacritics,tatweel,alef,ya,ta-marbuta,digits,nfkc"
        );
    }

    fn any_options() -> impl Strategy<Value = NormalizeOptions> {
        proptest::array::uniform7(any::<bool>()).prop_map(|b| NormalizeOptions {
            remove_diacritics: b[0],
            remove_tatweel: b[1],
            normalize_alef: b[2],
            normalize_ya: b[3],
            normalize_ta_marbuta: b[4],
            normalize_digits: b[5],
            nfkc: b[6],
        })
    }

    /// Arbitrary Unicode, or text dense in Arabic letters, marks, presentation forms
    /// and combining characters, where the interesting cases live.
    fn any_text() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            "[\u{0600}-\u{06FF}\u{0300}-\u{036F}\u{FB50}-\u{FDFF}\u{FE70}-\u{FEFF}\u{AC00}-\u{AC10}\u{1100}-\u{1112}\u{1161}-\u{1175}\u{11A8}-\u{11C2}\u{0F71}-\u{0F81} a-e0-9.😀]{0,40}",
        ]
    }

    proptest! {
        #[test]
        fn map_invariants(text in any_text(), opts in any_options()) {
            let n = normalize(&text, &opts);
            let orig_len = text.chars().count();
            prop_assert_eq!(n.original_len, orig_len);
            prop_assert_eq!(n.map.len(), n.text.chars().count());
            prop_assert_eq!(n.char_len(), n.map.len());
            prop_assert!(n.map.windows(2).all(|w| w[0] <= w[1]));
            prop_assert!(n.map.iter().all(|&m| m < orig_len));
            let (s, e) = n.to_original_span(0, n.char_len());
            prop_assert!(s <= e && e <= orig_len);
            if n.char_len() > 0 {
                prop_assert!(s < e);
            }
        }

        #[test]
        fn nfkc_matches_whole_text_nfkc(text in any_text()) {
            let opts = NormalizeOptions { nfkc: true, ..Default::default() };
            let n = normalize(&text, &opts);
            let expected: String = text.nfkc().collect();
            prop_assert_eq!(n.text, expected);
        }

        #[test]
        fn char_level_options_are_idempotent(text in any_text(), opts in any_options()) {
            let opts = NormalizeOptions { nfkc: false, ..opts };
            let once = normalize(&text, &opts);
            let twice = normalize(&once.text, &opts);
            prop_assert_eq!(&twice.text, &once.text);
        }

        #[test]
        fn spans_are_ordered_and_in_range(
            text in any_text(),
            opts in any_options(),
            a in 0usize..50,
            b in 0usize..50,
        ) {
            let n = normalize(&text, &opts);
            let (start, end) = (a.min(b).min(n.char_len()), b.max(a).min(n.char_len()));
            let (s, e) = n.to_original_span(start, end);
            prop_assert!(s <= e && e <= n.original_len);
            if start < end {
                // Covers the sources of every normalized char in the range.
                for &m in &n.map[start..end] {
                    prop_assert!(s <= m && m < e);
                }
                // And no normalized char outside the range comes from inside it,
                // except chars of the same expansion.
                for (i, &m) in n.map.iter().enumerate() {
                    if (i < start || i >= end) && s <= m && m < e {
                        prop_assert!(m == n.map[start] || m == n.map[end - 1]);
                    }
                }
            }
        }

        #[test]
        fn options_round_trip_through_display(opts in any_options()) {
            prop_assert_eq!(opts.to_string().parse::<NormalizeOptions>(), Ok(opts));
        }
    }
}
