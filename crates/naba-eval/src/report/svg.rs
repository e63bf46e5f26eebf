//! Hand-written SVG charts: a confusion-matrix heat map and an F1 bar chart.
//!
//! Labels may be Arabic: text is drawn with a font list that has Arabic glyphs, escaped for
//! XML, and long labels are shortened with an ellipsis (the full label is in a `<title>`
//! tooltip).

use crate::bootstrap::Ci95;
use crate::metrics::ConfusionMatrix;
use std::fmt::Write;

const FONT: &str =
    "'Noto Sans Arabic','Noto Sans','DejaVu Sans','Segoe UI',Tahoma,Arial,sans-serif";
const MAX_LABEL_CHARS: usize = 28;

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

fn short(label: &str) -> String {
    if label.chars().count() <= MAX_LABEL_CHARS {
        label.to_string()
    } else {
        let mut s: String = label.chars().take(MAX_LABEL_CHARS - 1).collect();
        s.push('…');
        s
    }
}

/// Rough width in pixels at 12px (no font metrics here; errs on the wide side).
fn text_width(label: &str) -> f64 {
    short(label)
        .chars()
        .map(|c| match c {
            'A'..='Z' | 'm' | 'w' => 8.4,
            'a'..='z' | '0'..='9' | '-' | '_' | ' ' => 6.8,
            '\u{0600}'..='\u{06FF}' | '\u{0750}'..='\u{077F}' | '\u{FB50}'..='\u{FEFF}' => 6.2,
            _ => 8.0,
        })
        .sum()
}

/// Blend from near-white to dark blue; `t` in 0..=1.
fn blue(t: f64) -> String {
    let t = t.clamp(0.0, 1.0);
    let (a, b) = ((247.0, 251.0, 255.0), (8.0, 48.0, 107.0));
    let mix = |x: f64, y: f64| (x + (y - x) * t).round() as u8;
    format!(
        "#{:02x}{:02x}{:02x}",
        mix(a.0, b.0),
        mix(a.1, b.1),
        mix(a.2, b.2)
    )
}

fn header(out: &mut String, width: f64, height: f64, title: &str) {
    let _ = writeln!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{height:.0}\" \
         viewBox=\"0 0 {width:.0} {height:.0}\" font-family=\"{FONT}\" font-size=\"12\">"
    );
    let _ = writeln!(out, "<title>{}</title>", esc(title));
    let _ = writeln!(
        out,
        "<rect x=\"0\" y=\"0\" width=\"{width:.0}\" height=\"{height:.0}\" fill=\"#ffffff\"/>"
    );
    let _ = writeln!(
        out,
        "<text x=\"16\" y=\"24\" font-size=\"15\" font-weight=\"bold\" fill=\"#222\">{}</text>",
        esc(title)
    );
}

/// A confusion matrix as a heat map. Cell colour is the share of the gold row (so rare labels
/// are as visible as common ones); the number in each cell is the count. Rows are gold labels,
/// columns predicted.
pub fn confusion_matrix_svg(m: &ConfusionMatrix, title: &str) -> String {
    let n = m.labels.len();
    let cell = if n > 16 { 30.0 } else { 44.0 };
    let label_w = m.labels.iter().map(|l| text_width(l)).fold(40.0, f64::max);
    let left = 16.0 + 18.0 + label_w + 10.0;
    let top = 48.0;
    let grid = cell * n as f64;
    // x labels are rotated 45°, so they need about label_w·sin45 below the grid.
    let bottom = label_w * 0.72 + 44.0;
    let title_w = title.chars().count() as f64 * 8.5 + 32.0;
    let width = (left + grid + 24.0).max(title_w);
    let height = top + grid + bottom;
    let mut out = String::new();
    header(&mut out, width, height, title);
    let font = if n > 16 { 10 } else { 12 };
    for (i, row) in m.matrix.iter().enumerate() {
        let total: u64 = row.iter().sum();
        for (j, &v) in row.iter().enumerate() {
            let share = if total == 0 {
                0.0
            } else {
                v as f64 / total as f64
            };
            let (x, y) = (left + j as f64 * cell, top + i as f64 * cell);
            let colour = blue(share);
            let ink = if share > 0.5 { "#ffffff" } else { "#222222" };
            let _ = writeln!(
                out,
                "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{cell:.1}\" height=\"{cell:.1}\" \
                 fill=\"{colour}\" stroke=\"#d0d0d0\"><title>gold {} → predicted {}: {v} \
                 ({:.1}% of the row)</title></rect>",
                esc(&m.labels[i]),
                esc(&m.labels[j]),
                share * 100.0
            );
            if v > 0 {
                let _ = writeln!(
                    out,
                    "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"{font}\" text-anchor=\"middle\" \
                     dominant-baseline=\"central\" fill=\"{ink}\">{v}</text>",
                    x + cell / 2.0,
                    y + cell / 2.0
                );
            }
        }
    }
    for (i, l) in m.labels.iter().enumerate() {
        let y = top + i as f64 * cell + cell / 2.0;
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{y:.1}\" text-anchor=\"end\" dominant-baseline=\"central\" \
             fill=\"#222\"><title>{}</title>{}</text>",
            left - 8.0,
            esc(l),
            esc(&short(l))
        );
        let x = left + i as f64 * cell + cell / 2.0;
        let yb = top + grid + 10.0;
        let _ = writeln!(
            out,
            "<text x=\"{x:.1}\" y=\"{yb:.1}\" text-anchor=\"end\" dominant-baseline=\"central\" \
             transform=\"rotate(-45 {x:.1} {yb:.1})\" fill=\"#222\"><title>{}</title>{}</text>",
            esc(l),
            esc(&short(l))
        );
    }
    let gy = top + grid / 2.0;
    let _ = writeln!(
        out,
        "<text x=\"24\" y=\"{gy:.1}\" text-anchor=\"middle\" font-weight=\"bold\" fill=\"#444\" \
         transform=\"rotate(-90 24 {gy:.1})\">gold</text>"
    );
    let _ = writeln!(
        out,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-weight=\"bold\" \
         fill=\"#444\">predicted</text>",
        left + grid / 2.0,
        height - 10.0
    );
    out.push_str("</svg>\n");
    out
}

/// Horizontal bars of F1 per label, with the 95% interval as a whisker and the value printed.
pub fn f1_bar_chart_svg(items: &[(String, f64, Option<Ci95>)], title: &str) -> String {
    let label_w = items
        .iter()
        .map(|(l, ..)| text_width(l))
        .fold(40.0, f64::max);
    let left = 16.0 + label_w + 12.0;
    let bar_w = 420.0;
    let row = 28.0;
    let top = 52.0;
    let title_w = title.chars().count() as f64 * 8.5 + 32.0;
    let width = (left + bar_w + 120.0).max(title_w);
    let height = top + row * items.len().max(1) as f64 + 40.0;
    let mut out = String::new();
    header(&mut out, width, height, title);
    let plot_bottom = top + row * items.len() as f64;
    for k in 0..=4 {
        let v = f64::from(k) / 4.0;
        let x = left + v * bar_w;
        let _ = writeln!(
            out,
            "<line x1=\"{x:.1}\" y1=\"{:.1}\" x2=\"{x:.1}\" y2=\"{plot_bottom:.1}\" \
             stroke=\"#e0e0e0\"/>",
            top - 6.0
        );
        let _ = writeln!(
            out,
            "<text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#666\" \
             font-size=\"11\">{v:.2}</text>",
            plot_bottom + 16.0
        );
    }
    for (i, (label, f1, ci)) in items.iter().enumerate() {
        let y = top + i as f64 * row;
        let mid = y + row / 2.0 - 2.0;
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{mid:.1}\" text-anchor=\"end\" dominant-baseline=\"central\" \
             fill=\"#222\"><title>{}</title>{}</text>",
            left - 8.0,
            esc(label),
            esc(&short(label))
        );
        let w = f1.clamp(0.0, 1.0) * bar_w;
        let ci_text = ci.map_or(String::new(), |[lo, hi]| {
            format!(", 95% CI [{lo:.3}, {hi:.3}]")
        });
        let _ = writeln!(
            out,
            "<rect x=\"{left:.1}\" y=\"{:.1}\" width=\"{w:.1}\" height=\"{:.1}\" \
             fill=\"#3b75af\"><title>{}: F1 {f1:.4}{ci_text}</title></rect>",
            y + 4.0,
            row - 12.0,
            esc(label)
        );
        let mut value_x = left + w + 6.0;
        if let Some([lo, hi]) = ci {
            let (x1, x2) = (
                left + lo.clamp(0.0, 1.0) * bar_w,
                left + hi.clamp(0.0, 1.0) * bar_w,
            );
            let _ = writeln!(
                out,
                "<line x1=\"{x1:.1}\" y1=\"{mid:.1}\" x2=\"{x2:.1}\" y2=\"{mid:.1}\" \
                 stroke=\"#222\" stroke-width=\"1.5\"/>\n<line x1=\"{x1:.1}\" y1=\"{:.1}\" \
                 x2=\"{x1:.1}\" y2=\"{:.1}\" stroke=\"#222\" stroke-width=\"1.5\"/>\n<line \
                 x1=\"{x2:.1}\" y1=\"{:.1}\" x2=\"{x2:.1}\" y2=\"{:.1}\" stroke=\"#222\" \
                 stroke-width=\"1.5\"/>",
                mid - 5.0,
                mid + 5.0,
                mid - 5.0,
                mid + 5.0
            );
            value_x = value_x.max(x2 + 6.0);
        }
        let _ = writeln!(
            out,
            "<text x=\"{value_x:.1}\" y=\"{mid:.1}\" dominant-baseline=\"central\" \
             fill=\"#222\">{f1:.3}</text>"
        );
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_shortens() {
        let m = ConfusionMatrix {
            labels: vec!["<a&b>".into(), "رياضة".into()],
            matrix: vec![vec![3, 1], vec![0, 2]],
        };
        let svg = confusion_matrix_svg(&m, "t");
        assert!(svg.contains("&lt;a&amp;b&gt;") && svg.contains("رياضة"));
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        let long = "ا".repeat(60);
        let bars = f1_bar_chart_svg(&[(long.clone(), 0.5, Some([0.4, 0.6]))], "F1");
        assert!(bars.contains('…') && bars.contains(&long));
    }
}
