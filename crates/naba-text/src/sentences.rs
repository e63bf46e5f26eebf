//! Sentence splitting for Arabic (and Latin) news text.
//!
//! Models see one sentence or a few at a time, and stance is judged per sentence,
//! so the splitter must cope with what scrapers actually produce: Arabic and Latin
//! punctuation mixed, missing spaces after full stops, and artefacts such as
//! "الكرملين.,وقال" or "،." where a comma and a full stop collide. It is a small
//! rule-based splitter on purpose: predictable, fast, and with char spans that
//! always point into the user's text.

/// Splits `text` into sentences, returned as half-open **char** spans.
///
/// A sentence ends at `.` `!` `?` `؟` `؛` `…` `۔` (together with any run of further
/// terminators, commas and closing quotes/brackets right after it, so "!؟", "...",
/// ".," and `."` stay with the sentence they close) and at every line break.
/// A `.` does not end a sentence when it is a decimal point (`3.5`, `٣.٥`), sits
/// between ASCII letters or digits (`aljazeera.net`, `e.g`), or follows a
/// single-letter abbreviation (`د. محمد`, `J. K. Rowling`); the latter also means a
/// sentence ending in a one-letter word is not split, an accepted trade-off.
///
/// Spans exclude surrounding whitespace and invisible format characters (bidi
/// marks, zero-width space, BOM), are never empty, are sorted and disjoint, and
/// together cover every other character of the text.
pub fn split_sentences(text: &str) -> Vec<(usize, usize)> {
    let chars: Vec<char> = text.chars().collect();
    let n = chars.len();
    let mut spans = Vec::new();
    let mut seg_start = 0;
    let mut i = 0;
    while i < n {
        let c = chars[i];
        if is_line_break(c) {
            push_trimmed(&chars, seg_start, i, &mut spans);
            i += 1;
            seg_start = i;
        } else if is_terminator(c) && ends_sentence(&chars, i) {
            let mut j = i + 1;
            while chars.get(j).is_some_and(|&c| is_trailing(c)) {
                j += 1;
            }
            push_trimmed(&chars, seg_start, j, &mut spans);
            i = j;
            seg_start = j;
        } else {
            i += 1;
        }
    }
    push_trimmed(&chars, seg_start, n, &mut spans);
    spans
}

/// Chars that never belong at the edge of a sentence span.
fn is_blank(c: char) -> bool {
    c.is_whitespace()
        || matches!(c,
            '\u{200B}'..='\u{200F}'   // zero-width space/joiners, LRM, RLM
            | '\u{202A}'..='\u{202E}' // bidi embeddings and overrides
            | '\u{2060}'              // word joiner
            | '\u{2066}'..='\u{2069}' // bidi isolates
            | '\u{061C}'              // Arabic letter mark
            | '\u{FEFF}') // BOM / zero-width no-break space
}

fn is_line_break(c: char) -> bool {
    matches!(
        c,
        '\n' | '\r' | '\u{000B}' | '\u{000C}' | '\u{0085}' | '\u{2028}' | '\u{2029}'
    )
}

fn is_terminator(c: char) -> bool {
    matches!(
        c,
        '.' | '!' | '?' | '\u{061F}' // ؟
            | '\u{061B}' // ؛
            | '\u{06D4}' // ۔ Arabic full stop
            | '\u{2026}' // …
    )
}

/// Punctuation that, right after a terminator, still belongs to the ending sentence.
fn is_trailing(c: char) -> bool {
    is_terminator(c)
        || matches!(
            c,
            ',' | '\u{060C}' // ،
                | '"' | '\'' | '\u{00BB}' // »
                | '\u{201D}' | '\u{2019}' // ” ’
                | '\u{203A}' // ›
                | ')' | ']' | '}'
        )
}

fn is_digit(c: char) -> bool {
    c.is_ascii_digit() || matches!(c, '\u{0660}'..='\u{0669}' | '\u{06F0}'..='\u{06F9}')
}

/// Whether the terminator at `i` really ends a sentence (only `.` and `?` have
/// exceptions).
fn ends_sentence(chars: &[char], i: usize) -> bool {
    let c = chars[i];
    let prev = i.checked_sub(1).and_then(|p| chars.get(p)).copied();
    let next = chars.get(i + 1).copied();
    if let (Some(p), Some(nx)) = (prev, next) {
        // Decimal point, or URL / domain / "e.g" / "?id=" between ASCII characters.
        if c == '.' && is_digit(p) && is_digit(nx) {
            return false;
        }
        if (c == '.' || c == '?') && p.is_ascii_alphanumeric() && nx.is_ascii_alphanumeric() {
            return false;
        }
    }
    if c == '.' {
        // Single-letter abbreviation: a lone letter before the dot, not followed by
        // another dot (which would make it an ellipsis) and with text following.
        let lone_letter = prev.is_some_and(char::is_alphabetic)
            && i.checked_sub(2)
                .and_then(|p| chars.get(p))
                .is_none_or(|&pp| !pp.is_alphanumeric() && !is_combining(pp));
        let followed = next.is_some_and(|nx| !is_terminator(nx) && !is_trailing(nx));
        if lone_letter && followed {
            return false;
        }
    }
    true
}

/// Arabic harakat and generic combining marks, which belong to the letter before
/// them, so "بَ." is not a lone letter "َ".
fn is_combining(c: char) -> bool {
    matches!(c, '\u{0300}'..='\u{036F}' | '\u{064B}'..='\u{065F}' | '\u{0670}')
}

/// Pushes `start..end` with blank chars trimmed from both ends, unless nothing is
/// left.
fn push_trimmed(chars: &[char], start: usize, end: usize, spans: &mut Vec<(usize, usize)>) {
    let Some(seg) = chars.get(start..end) else {
        return;
    };
    let Some(first) = seg.iter().position(|&c| !is_blank(c)) else {
        return;
    };
    let last = seg.iter().rposition(|&c| !is_blank(c)).unwrap_or(first);
    spans.push((start + first, start + last + 1));
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sentences(text: &str) -> Vec<String> {
        let chars: Vec<char> = text.chars().collect();
        split_sentences(text)
            .into_iter()
            .map(|(s, e)| chars[s..e].iter().collect())
            .collect()
    }

    #[test]
    fn arabic_punctuation() {
        let text = "قال الرئيس إن الوضع مستقر. هل هذا صحيح؟ نعم؛ بالتأكيد!";
        assert_eq!(
            sentences(text),
            [
                "قال الرئيس إن الوضع مستقر.",
                "هل هذا صحيح؟",
                "نعم؛",
                "بالتأكيد!"
            ]
        );
    }

    #[test]
    fn scraped_separators() {
        let text = "وأعلن الكرملين.,وقال المتحدث إن المحادثات مستمرة،.وأضاف أن";
        assert_eq!(
            sentences(text),
            [
                "وأعلن الكرملين.,",
                "وقال المتحدث إن المحادثات مستمرة،.",
                "وأضاف أن"
            ]
        );
        // Missing space after a full stop between Arabic words still splits.
        assert_eq!(sentences("انتهى الاجتماع.وبدأ"), ["انتهى الاجتماع.", "وبدأ"]);
    }

    #[test]
    fn runs_of_punctuation_and_quotes_stay_together() {
        let text = "حقاً؟! قال: «انتهى.» ثم غادر... وعاد";
        assert_eq!(
            sentences(text),
            ["حقاً؟!", "قال: «انتهى.»", "ثم غادر...", "وعاد"]
        );
    }

    #[test]
    fn decimals_urls_and_abbreviations_do_not_split() {
        assert_eq!(
            sentences("ارتفع النمو 3.5 بالمئة و٢.٧ في المئة. انتهى"),
            ["ارتفع النمو 3.5 بالمئة و٢.٧ في المئة.", "انتهى"]
        );
        assert_eq!(
            sentences("راجع aljazeera.net للمزيد. شكرا"),
            ["راجع aljazeera.net للمزيد.", "شكرا"]
        );
        assert_eq!(
            sentences("قال د. محمد أ. علي إن J. K. Rowling كتبت. ثم"),
            ["قال د. محمد أ. علي إن J. K. Rowling كتبت.", "ثم"]
        );
    }

    #[test]
    fn newlines_split_and_whitespace_is_trimmed() {
        let text = "  العنوان الرئيسي\n\n\u{200F}النص الأول  \r\nالنص الثاني \n";
        assert_eq!(
            sentences(text),
            ["العنوان الرئيسي", "النص الأول", "النص الثاني"]
        );
        let spans = split_sentences(text);
        assert_eq!(spans[0], (2, 17));
    }

    #[test]
    fn mixed_scripts_and_emoji() {
        let text = "Putin said yes. قال بوتين نعم 😀! Done";
        assert_eq!(
            sentences(text),
            ["Putin said yes.", "قال بوتين نعم 😀!", "Done"]
        );
    }

    #[test]
    fn degenerate_inputs() {
        assert!(split_sentences("").is_empty());
        assert!(split_sentences(" \n\t \u{200F} ").is_empty());
        assert_eq!(sentences("..."), ["..."]);
        assert_eq!(sentences("؟"), ["؟"]);
        assert_eq!(sentences("بلا نقطة"), ["بلا نقطة"]);
        assert_eq!(sentences(". ."), [".", "."]);
    }

    fn any_text() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            "[\u{0621}-\u{064A}\u{064B}-\u{0652} a-cA-C0-9٠-٩.,!?؟؛،…\"»\n\r\u{200F}]{0,60}",
        ]
    }

    proptest! {
        #[test]
        fn span_properties(text in any_text()) {
            let chars: Vec<char> = text.chars().collect();
            let spans = split_sentences(&text);
            let mut covered = vec![false; chars.len()];
            let mut prev_end = 0;
            for &(s, e) in &spans {
                prop_assert!(s < e, "empty span");
                prop_assert!(e <= chars.len(), "span outside text");
                prop_assert!(s >= prev_end, "unsorted or overlapping");
                prop_assert!(!is_blank(chars[s]) && !is_blank(chars[e - 1]));
                for c in covered.iter_mut().take(e).skip(s) {
                    *c = true;
                }
                prev_end = e;
            }
            for (i, &c) in chars.iter().enumerate() {
                prop_assert!(covered[i] || is_blank(c), "char {} not covered", i);
            }
        }
    }
}
