//! The Supabase project settings both binaries read, declared once.
//!
//! ingest calls PostgREST with the project's service key; the capture
//! daemon uploads to Storage with the same key. Both read the same three
//! variables with the same rule for which key wins, so they live here and
//! each binary flattens [`SupabaseSettings`] into its own config. What a
//! binary needs on top (ingest: a URL or a direct database; capture: a URL
//! and a key for `STORAGE=supabase`) it states in its own config, where the
//! reason is.

use secrecy::SecretString;
use url::Url;

/// The id of the argument group holding the two service keys, for a binary
/// that wants to say "the URL needs a key" (`requires = SERVICE_KEY`).
pub const SERVICE_KEY: &str = "supabase_service_key";

/// `SUPABASE_URL` and the service key.
#[derive(Clone, Debug, Default, clap::Args)]
#[command(group(
    clap::ArgGroup::new(SERVICE_KEY)
        .args(["supabase_secret_key", "supabase_service_role_key"])
        .multiple(true)
))]
pub struct SupabaseSettings {
    /// Base URL of the Supabase project (or the local stack's gateway), e.g.
    /// `https://abcd.supabase.co`. PostgREST is reached at `/rest/v1`,
    /// Storage at `/storage/v1`.
    #[arg(
        id = "supabase_url",
        long = "supabase-url",
        value_name = "SUPABASE_URL",
        env = "SUPABASE_URL"
    )]
    pub url: Option<Url>,

    /// Supabase secret key (`sb_secret_...`), sent as `apikey`. Wins over
    /// `SUPABASE_SERVICE_ROLE_KEY` when both are set.
    #[arg(
        id = "supabase_secret_key",
        long = "supabase-secret-key",
        value_name = "SUPABASE_SECRET_KEY",
        env = "SUPABASE_SECRET_KEY",
        hide_env_values = true
    )]
    secret_key: Option<SecretString>,

    /// Legacy service-role JWT, used only when `SUPABASE_SECRET_KEY` is not
    /// set (projects that have not moved to the new API keys yet).
    #[arg(
        id = "supabase_service_role_key",
        long = "supabase-service-role-key",
        value_name = "SUPABASE_SERVICE_ROLE_KEY",
        env = "SUPABASE_SERVICE_ROLE_KEY",
        hide_env_values = true
    )]
    service_role_key: Option<SecretString>,
}

impl SupabaseSettings {
    /// The key that calls Supabase as the service: `SUPABASE_SECRET_KEY` if
    /// set, else the legacy `SUPABASE_SERVICE_ROLE_KEY`.
    pub fn service_key(&self) -> Option<&SecretString> {
        self.secret_key.as_ref().or(self.service_role_key.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory as _, FromArgMatches as _, Parser};
    use secrecy::ExposeSecret;

    use super::{SERVICE_KEY, SupabaseSettings};

    #[derive(Debug, Parser)]
    struct Config {
        #[command(flatten)]
        supabase: SupabaseSettings,
    }

    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        let matches = Config::command()
            .mut_args(|arg| arg.env(None))
            .try_get_matches_from(std::iter::once("test").chain(args.iter().copied()))?;
        Config::from_arg_matches(&matches)
    }

    #[test]
    fn verify_cli() {
        Config::command().debug_assert();
    }

    #[test]
    fn the_secret_key_wins_and_never_prints() {
        let config = parse(&[
            "--supabase-url=http://127.0.0.1:54321",
            "--supabase-service-role-key=legacy",
            "--supabase-secret-key=sb_secret_new",
        ])
        .expect("valid");
        let key = config.supabase.service_key().expect("a key");
        assert_eq!(key.expose_secret(), "sb_secret_new");
        assert!(!format!("{config:?}").contains("sb_secret_new"));
        assert!(!format!("{config:?}").contains("legacy"));
    }

    #[test]
    fn the_legacy_key_alone_is_used_and_none_is_none() {
        let config = parse(&["--supabase-service-role-key=legacy"]).expect("valid");
        assert_eq!(
            config
                .supabase
                .service_key()
                .map(ExposeSecret::expose_secret),
            Some("legacy")
        );
        assert!(parse(&[]).expect("valid").supabase.service_key().is_none());
    }

    #[test]
    fn the_key_group_names_both_keys() {
        let command = Config::command();
        let group = command
            .get_groups()
            .find(|group| group.get_id() == SERVICE_KEY)
            .expect("the group");
        let args: Vec<_> = group.get_args().map(clap::Id::as_str).collect();
        assert_eq!(args, ["supabase_secret_key", "supabase_service_role_key"]);
    }
}
