//! The open-file limit, raised at start to what the connection limit needs.
//!
//! Every connection is a file descriptor. At a bar close thousands of
//! webhooks arrive at once, each on a new connection, so
//! `INGEST_MAX_CONNECTIONS` is in the thousands; but many hosts start a
//! process with a soft limit of 1,024 open files (Docker since 25, a shell's
//! default) and a much higher hard limit. Past the soft limit `accept`
//! fails with `EMFILE` and alerts wait or are lost, so ingest raises its
//! soft limit to what it needs, up to the hard limit (as Go's runtime does
//! for every program), and says so when even the hard limit is too low.

use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// Descriptors beyond the connections: the database pool, the spool's
/// files, the admin listener, logs and the runtime's own.
pub const HEADROOM: u64 = 256;

/// What [`raise`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Raised {
    /// The soft limit was already enough.
    Enough { soft: u64 },
    /// The soft limit was raised from `from` to `to`, which is enough.
    To { from: u64, to: u64 },
    /// The hard limit is below what is needed: the soft limit is now the
    /// hard limit, `to`, and connections past it fail to be accepted.
    Short { needed: u64, to: u64 },
}

/// The soft limit to ask for, given the current `soft` and `hard` limits,
/// for `connections` connections at once.
#[must_use]
pub fn plan(soft: u64, hard: u64, connections: u64) -> Raised {
    let needed = connections.saturating_add(HEADROOM);
    if soft >= needed {
        Raised::Enough { soft }
    } else if hard >= needed {
        Raised::To {
            from: soft,
            to: needed,
        }
    } else {
        Raised::Short { needed, to: hard }
    }
}

/// Raises the soft open-file limit for `connections` connections at once.
///
/// # Errors
/// The limits could not be read or set.
pub fn raise(connections: u64) -> nix::Result<Raised> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    let raised = plan(soft, hard, connections);
    match raised {
        Raised::Enough { .. } => {}
        Raised::To { to, .. } | Raised::Short { to, .. } => {
            if to > soft {
                setrlimit(Resource::RLIMIT_NOFILE, to, hard)?;
            }
        }
    }
    Ok(raised)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_is_raised_only_as_far_as_needed_and_the_hard_limit_allows() {
        assert_eq!(
            plan(65_536, 65_536, 16_384),
            Raised::Enough { soft: 65_536 }
        );
        assert_eq!(
            plan(1_024, 524_288, 16_384),
            Raised::To {
                from: 1_024,
                to: 16_384 + HEADROOM
            }
        );
        assert_eq!(
            plan(1_024, 4_096, 16_384),
            Raised::Short {
                needed: 16_384 + HEADROOM,
                to: 4_096
            }
        );
    }

    #[test]
    fn raising_leaves_the_process_with_enough_descriptors() {
        let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        let wanted = hard.min(4_096).saturating_sub(HEADROOM);
        let raised = raise(wanted).unwrap();
        let (soft, _) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        assert!(soft >= wanted + HEADROOM, "{raised:?}: soft limit {soft}");
    }
}
