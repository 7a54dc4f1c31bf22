//! Fuzz target: `Signal::parse` on arbitrary bytes.
//!
//! Beyond "does not panic, does not hang", it checks what the rest of the
//! service relies on: an accepted body is kept byte for byte, and every
//! field fits its `public.signals` column, so a parsed signal can never
//! fail a database check.

#![no_main]

use ingest::signal::{ParseError, Signal};
use libfuzzer_sys::fuzz_target;
use rust_decimal::Decimal;
use serde_json::Value;

fuzz_target!(|body: &[u8]| {
    match Signal::parse(body) {
        Ok(signal) => {
            assert_eq!(signal.raw_message().as_bytes(), body);
            let ticker = signal.ticker().to_string();
            assert!(!ticker.is_empty() && ticker.len() <= 80, "{ticker:?}");
            assert!(signal.ticker().symbol().len() <= 40);
            assert!(signal.ticker().exchange().is_none_or(|e| !e.is_empty() && e.len() <= 40));
            assert!(signal.indicator().is_none_or(|s| s.chars().count() <= 200 && !s.contains('\0')));
            assert!(signal.signal_type().is_none_or(|s| s.chars().count() <= 100 && !s.contains('\0')));
            assert!(signal.interval().is_none_or(|i| i.to_string().len() <= 20));
            assert!(signal.chart_id().is_none_or(|c| (1..=32).contains(&c.as_str().len())));
            if let Some(price) = signal.price() {
                let value = price.as_decimal();
                assert!(!value.is_sign_negative() || value.is_zero());
                assert!(value < Decimal::from(1_000_000_000_000_000_u64));
            }
            // `extra` must be storable as jsonb, which cannot hold NUL.
            assert!(
                signal.extra().iter().all(|(k, v)| !k.contains('\0') && !has_nul(v)),
                "{:?}",
                signal.extra()
            );
        }
        Err(ParseError::NotUtf8(_)) => assert!(std::str::from_utf8(body).is_err()),
        Err(ParseError::NulByte { offset }) => assert_eq!(body.get(offset), Some(&0)),
        Err(ParseError::Empty | ParseError::NoTicker) => {}
    }
});

fn has_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}
