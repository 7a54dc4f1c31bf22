//! Small text helpers the parsers share: accent folding, placeholders,
//! cleaning free-text fields to what the database accepts.

/// Lower-cases `s` and removes the accents Spanish and Portuguese traders
/// type (á, é, í, ó, ú, ü, ñ, ç, and combining marks), so `Señal`, `SEÑAL`
/// and `Senal` all fold to `senal`. Accents are optional in labels and words.
pub(crate) fn fold(s: &str) -> String {
    s.chars()
        .flat_map(char::to_lowercase)
        .filter_map(|c| match c {
            'á' | 'à' | 'â' | 'ä' | 'ã' | 'å' => Some('a'),
            'é' | 'è' | 'ê' | 'ë' => Some('e'),
            'í' | 'ì' | 'î' | 'ï' => Some('i'),
            'ó' | 'ò' | 'ô' | 'ö' | 'õ' => Some('o'),
            'ú' | 'ù' | 'û' | 'ü' => Some('u'),
            'ñ' => Some('n'),
            'ç' => Some('c'),
            // Combining diacritical marks (text typed on systems that
            // decompose accents, e.g. "n" + U+0303).
            '\u{300}'..='\u{36f}' => None,
            c => Some(c),
        })
        .collect()
}

/// A TradingView placeholder that was not filled in, like `{{close}}`:
/// TradingView leaves unknown or misspelt placeholders verbatim. Such a
/// value carries no information and counts as missing.
pub(crate) fn is_placeholder(value: &str) -> bool {
    value
        .find("{{")
        .is_some_and(|open| value[open..].contains("}}"))
}

/// Trims `value`, drops NUL characters (a JSON `\u0000` escape decodes to
/// one, and Postgres text cannot hold it), and cuts it to at most
/// `max_chars` characters (the column's limit). Empty or placeholder values
/// become `None`.
pub(crate) fn clean_text(value: &str, max_chars: usize) -> Option<String> {
    let value = value.trim();
    if value.is_empty() || is_placeholder(value) {
        return None;
    }
    let cleaned: String = value
        .chars()
        .filter(|&c| c != '\0')
        .take(max_chars)
        .collect();
    let cleaned = cleaned.trim_end();
    (!cleaned.is_empty()).then(|| cleaned.to_owned())
}

/// Splits `text` into words: maximal runs of letters and digits, with their
/// byte offsets.
pub(crate) fn words(text: &str) -> impl Iterator<Item = (usize, &str)> {
    let mut rest = text.char_indices().peekable();
    std::iter::from_fn(move || {
        while let Some(&(_, c)) = rest.peek() {
            if c.is_alphanumeric() {
                break;
            }
            rest.next();
        }
        let &(start, _) = rest.peek()?;
        let mut end = start;
        while let Some(&(i, c)) = rest.peek() {
            if !c.is_alphanumeric() {
                break;
            }
            end = i + c.len_utf8();
            rest.next();
        }
        Some((start, &text[start..end]))
    })
}

#[cfg(test)]
mod tests {
    use super::{clean_text, fold, is_placeholder, words};

    #[test]
    fn folds_case_and_accents() {
        assert_eq!(fold("SEÑAL"), "senal");
        assert_eq!(fold("Dirección"), "direccion");
        assert_eq!(fold("Símbolo"), "simbolo");
        assert_eq!(fold("Sen\u{303}al"), "senal");
    }

    #[test]
    fn placeholders() {
        assert!(is_placeholder("{{close}}"));
        assert!(is_placeholder("{{close}} USD"));
        assert!(!is_placeholder("{close}"));
        assert!(!is_placeholder("}}{{"));
    }

    #[test]
    fn clean_text_trims_cuts_and_drops_nul() {
        assert_eq!(
            clean_text("  Trend\0 Pro  ", 200).as_deref(),
            Some("Trend Pro")
        );
        assert_eq!(clean_text("ñandú", 3).as_deref(), Some("ñan"));
        assert_eq!(clean_text("   ", 10), None);
        assert_eq!(clean_text("{{strategy}}", 10), None);
    }

    #[test]
    fn splits_words_with_offsets() {
        let found: Vec<_> = words("🚨 Señal: COMPRA!").collect();
        assert_eq!(found, vec![(5, "Señal"), (13, "COMPRA")]);
    }
}
