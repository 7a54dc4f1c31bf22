//! The closed sets of words both binaries use about a signal and its
//! screenshot.
//!
//! Each type here is one column whose values the database's CHECK
//! constraints fix: ingest writes [`Direction`] (having read it from
//! whatever words the alert used), the trader picks [`Resolution`] and
//! [`ChartTheme`] in their settings, and the capture daemon reads all three
//! back to draw the picture. Spelled once, here, the two binaries cannot
//! drift apart on what `"short"` or `"1080p"` means, and neither has to
//! compare strings to decide anything.
//!
//! Reading a value back from the database is strict ([`std::str::FromStr`]
//! accepts exactly the stored spelling, [`UnknownValue`] otherwise): the
//! constraints make anything else impossible, so one that appears means the
//! schema changed under the binary, which should say so rather than guess.
//! Reading the words a trader typed is ingest's business, not this crate's.
//!
//! # Layout
//!
//! - [`Direction`]: `signals.direction`, `long` or `short`.
//! - [`Resolution`]: `user_config.screenshot_resolution`, `720p` or `1080p`,
//!   with the viewport each means.
//! - [`ChartTheme`]: `user_config.chart_theme`, `dark` or `light`.

use std::fmt;
use std::str::FromStr;

/// A stored value that is none of a column's known spellings.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a known {column}")]
pub struct UnknownValue {
    /// The column the value came from, e.g. `signals.direction`.
    pub column: &'static str,
    /// The value as read.
    pub value: String,
}

/// Implements `as_str`, `Display` and a strict `FromStr` for a unit enum
/// from its stored spellings, so the three cannot disagree.
macro_rules! stored_words {
    ($type:ident, $column:literal, { $($variant:ident => $word:literal),+ $(,)? }) => {
        impl $type {
            /// Every value, in declaration order.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            /// The spelling the database stores.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $word),+
                }
            }
        }

        impl fmt::Display for $type {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $type {
            type Err = UnknownValue;

            /// Exactly the stored spelling; anything else is an error.
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($word => Ok(Self::$variant),)+
                    _ => Err(UnknownValue {
                        column: $column,
                        value: s.to_owned(),
                    }),
                }
            }
        }
    };
}

/// Which way a signal points.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Buy / go long.
    Long,
    /// Sell / go short.
    Short,
}

stored_words!(Direction, "signals.direction", { Long => "long", Short => "short" });

/// How large a trader's screenshots are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Resolution {
    /// 1280x720, the column's default.
    #[default]
    Hd,
    /// 1920x1080.
    FullHd,
}

stored_words!(Resolution, "user_config.screenshot_resolution", { Hd => "720p", FullHd => "1080p" });

impl Resolution {
    /// The browser viewport, width and height in CSS pixels.
    pub fn viewport(self) -> (u32, u32) {
        match self {
            Self::Hd => (1280, 720),
            Self::FullHd => (1920, 1080),
        }
    }
}

/// The colour scheme a trader's charts are drawn in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ChartTheme {
    /// Light text on a dark background, the column's default.
    #[default]
    Dark,
    /// Dark text on a white background.
    Light,
}

stored_words!(ChartTheme, "user_config.chart_theme", { Dark => "dark", Light => "light" });

impl ChartTheme {
    /// Whether the page should be asked for its dark colour scheme.
    pub fn is_dark(self) -> bool {
        self == Self::Dark
    }
}

#[cfg(test)]
mod tests {
    use super::{ChartTheme, Direction, Resolution, UnknownValue};

    #[test]
    fn every_value_reads_back_as_itself() {
        for &direction in Direction::ALL {
            assert_eq!(direction.as_str().parse(), Ok(direction));
            assert_eq!(direction.to_string(), direction.as_str());
        }
        for &resolution in Resolution::ALL {
            assert_eq!(resolution.as_str().parse(), Ok(resolution));
        }
        for &theme in ChartTheme::ALL {
            assert_eq!(theme.as_str().parse(), Ok(theme));
        }
    }

    /// The spellings the database's CHECK constraints allow, and nothing else.
    #[test]
    fn the_stored_spellings() {
        let directions: Vec<_> = Direction::ALL.iter().map(|d| d.as_str()).collect();
        assert_eq!(directions, ["long", "short"]);
        let resolutions: Vec<_> = Resolution::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(resolutions, ["720p", "1080p"]);
        let themes: Vec<_> = ChartTheme::ALL.iter().map(|t| t.as_str()).collect();
        assert_eq!(themes, ["dark", "light"]);
        assert_eq!(Resolution::default(), Resolution::Hd);
        assert_eq!(ChartTheme::default(), ChartTheme::Dark);
    }

    #[test]
    fn anything_else_is_refused_and_named() {
        for (value, column) in [
            ("Long", "signals.direction"),
            ("buy", "signals.direction"),
            (" short", "signals.direction"),
            ("", "signals.direction"),
        ] {
            assert_eq!(
                value.parse::<Direction>(),
                Err(UnknownValue {
                    column,
                    value: value.to_owned()
                })
            );
        }
        let error = "4k".parse::<Resolution>().unwrap_err();
        assert_eq!(
            error.to_string(),
            "\"4k\" is not a known user_config.screenshot_resolution"
        );
        assert!("Dark".parse::<ChartTheme>().is_err());
    }

    #[test]
    fn what_each_value_means() {
        assert_eq!(Resolution::Hd.viewport(), (1280, 720));
        assert_eq!(Resolution::FullHd.viewport(), (1920, 1080));
        assert!(ChartTheme::Dark.is_dark());
        assert!(!ChartTheme::Light.is_dark());
    }
}
