//! Reading a [`Direction`] (long or short) from whatever words the alert
//! used.
//!
//! Traders write `buy`/`sell`, `long`/`short`, Spanish `compra`/`venta`;
//! TradingView's `{{strategy.order.action}}` gives `buy`/`sell` and
//! `{{strategy.market_position}}` gives `long`/`short`/`flat`. The database
//! stores only `long` or `short`: the type itself lives in
//! `signal-vocabulary`, shared with the capture daemon that reads it back;
//! the words are ingest's alone.

use signal_vocabulary::Direction;

use super::words::{fold, words};

/// Words that say which way, in a field meant for it (`direction`, `side`,
/// `Señal: ...`). Folded: lower case, no accents.
const FIELD_WORDS: &[(&str, Direction)] = &[
    ("buy", Direction::Long),
    ("long", Direction::Long),
    ("compra", Direction::Long),
    ("comprar", Direction::Long),
    ("bull", Direction::Long),
    ("bullish", Direction::Long),
    ("alcista", Direction::Long),
    ("largo", Direction::Long),
    ("sell", Direction::Short),
    ("short", Direction::Short),
    ("venta", Direction::Short),
    ("vender", Direction::Short),
    ("bear", Direction::Short),
    ("bearish", Direction::Short),
    ("bajista", Direction::Short),
    ("corto", Direction::Short),
];

/// The subset trusted anywhere in free text: the unambiguous order words.
/// (`bull`, `largo` and friends appear in indicator names and prose.)
const TEXT_WORDS: &[&str] = &[
    "buy", "long", "compra", "comprar", "sell", "short", "venta", "vender",
];

/// Words that turn a following direction word into its opposite's exit
/// (`Exit Long`, `Close short`, `Cerrar compra`): no direction is inferred.
const EXIT_WORDS: &[&str] = &[
    "exit", "close", "cerrar", "cierre", "salida", "salir", "flat",
];

/// Reads a field meant to carry a direction or a signal kind
/// (`"BUY"`, `"Long Entry"`, `"COMPRA"`, `"venta fuerte"`): the first
/// direction word decides, unless an exit word precedes it.
pub(crate) fn from_field(value: &str) -> Option<Direction> {
    find(value, |word| {
        FIELD_WORDS
            .iter()
            .find(|(known, _)| *known == word)
            .map(|&(_, direction)| direction)
    })
}

/// Finds the first unambiguous buy/sell word anywhere in free text.
pub(crate) fn from_text(text: &str) -> Option<Direction> {
    find(text, |word| {
        TEXT_WORDS
            .contains(&word)
            .then(|| from_field(word))
            .flatten()
    })
}

fn find(text: &str, lookup: impl Fn(&str) -> Option<Direction>) -> Option<Direction> {
    let mut previous_was_exit = false;
    for (_, word) in words(text) {
        let word = fold(word);
        if let Some(direction) = lookup(&word)
            && !previous_was_exit
        {
            return Some(direction);
        }
        previous_was_exit = EXIT_WORDS.contains(&word.as_str());
    }
    None
}

#[cfg(test)]
mod tests {
    use signal_vocabulary::Direction::{Long, Short};

    use super::{from_field, from_text};

    #[test]
    fn field_words() {
        for (value, expected) in [
            ("buy", Some(Long)),
            ("SELL", Some(Short)),
            ("Long Entry", Some(Long)),
            ("COMPRA", Some(Long)),
            ("Venta", Some(Short)),
            ("Bajista", Some(Short)),
            ("Exit Long", None),
            ("flat", None),
            ("Crossing", None),
        ] {
            assert_eq!(from_field(value), expected, "{value}");
        }
    }

    #[test]
    fn free_text_uses_only_clear_words() {
        assert_eq!(from_text("Bull Power says BUY now"), Some(Long));
        assert_eq!(from_text("Bull Power crossed"), None);
        assert_eq!(from_text("close long; nothing else"), None);
    }
}
