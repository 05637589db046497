//! Black-box integration tests of the Pulse server, against `docs/protocol.md` §1–5.
//!
//! Every case in `both_databases!` runs twice, on SQLite and on PostgreSQL, each time on its
//! own server process and its own fresh database; `postgres_only` and `config` hold the few
//! cases that only make sense on one backend. Run with (PostgreSQL on 127.0.0.1:5432, or an
//! admin URL in `TEST_DATABASE_URL`):
//!
//! ```text
//! PULSE_SERVER_BIN=target/debug/server cargo test -p suites --test integration
//! ```

#[cfg(test)]
#[path = "integration/cases.rs"]
mod cases;

suites::both_databases!(cases =>
    bootstrap_admin_only_when_there_are_no_users,
    login_returns_token_expiry_and_user,
    bad_credentials_are_401_and_indistinguishable,
    protected_routes_refuse_missing_and_bad_tokens,
    token_minted_with_the_secret_is_accepted,
    me_returns_the_caller,
    users_are_created_by_admins_only_and_unique,
    malformed_and_invalid_input_is_400,
    content_type_and_body_size_are_enforced,
    unknown_routes_methods_and_ids,
    task_create_and_get,
    task_assign_complete_and_conflicts,
    task_list_filters_and_pagination,
    conversation_lifecycle,
    approval_lifecycle_and_roles,
    health_endpoints,
    ws_refuses_bad_tokens_before_upgrade,
    ws_opening_messages,
    ws_clients_receive_every_stats_change,
    ws_burst_of_200_task_creations_converges,
    ws_refused_requests_emit_nothing,
    ws_ping_and_bad_messages,
    ws_oversize_frame_closes_1009,
    ws_graceful_shutdown_closes_1001,
    ws_token_expiry_closes_4401,
    ws_heartbeat_pings_and_drops_silent_clients,
    tokens_never_appear_in_logs,
);

mod postgres_only {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unavailable_database_gives_503() {
        crate::cases::unavailable_database_gives_503(
            suites::TestDatabase::postgres().expect("creating a PostgreSQL database"),
        )
        .await;
    }
}

/// Section 1: configuration defaults (the default database is SQLite, so these run once).
mod config {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn defaults_generate_and_keep_secrets() {
        crate::cases::config_defaults_generate_and_keep_secrets().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn short_jwt_secret_is_refused() {
        crate::cases::config_short_jwt_secret_is_refused().await;
    }
}
