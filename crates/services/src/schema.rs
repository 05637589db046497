//! The one schema both backends share (migrations/sqlite and migrations/postgres create it).

diesel::table! {
    users (id) {
        id -> BigInt,
        username -> Text,
        password_hash -> Text,
        role -> Text,
        created_at -> Timestamp,
        active -> Bool,
        tokens_valid_after_ms -> BigInt,
    }
}

diesel::table! {
    tasks (id) {
        id -> BigInt,
        kind -> Text,
        department -> Text,
        description -> Text,
        status -> Text,
        assignee -> Nullable<Text>,
        created_by -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        completed_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    conversations (id) {
        id -> BigInt,
        guest_name -> Text,
        channel -> Text,
        subject -> Text,
        state -> Text,
        escalation_reason -> Nullable<Text>,
        created_by -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        resolved_at -> Nullable<Timestamp>,
        escalated_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    approvals (id) {
        id -> BigInt,
        kind -> Text,
        summary -> Text,
        payload -> Nullable<Text>,
        status -> Text,
        requested_by -> Text,
        decided_by -> Nullable<Text>,
        decision_reason -> Nullable<Text>,
        decided_at -> Nullable<Timestamp>,
        executed_by -> Nullable<Text>,
        executed_at -> Nullable<Timestamp>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    events (seq) {
        seq -> BigInt,
        name -> Text,
        actor -> Text,
        event -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    stats_counters (topic, bucket, shard) {
        topic -> Text,
        bucket -> Text,
        shard -> Integer,
        n -> BigInt,
    }
}

diesel::table! {
    ws_tickets (ticket_hash) {
        ticket_hash -> Text,
        user_id -> BigInt,
        username -> Text,
        role -> Text,
        session_expires_at -> Timestamp,
        expires_at -> Timestamp,
        token_issued_at_ms -> BigInt,
    }
}

diesel::table! {
    department_counters (department, status, shard) {
        department -> Text,
        status -> Text,
        shard -> Integer,
        n -> BigInt,
    }
}

diesel::table! {
    stats_history (topic, minute) {
        topic -> Text,
        minute -> Timestamp,
        payload -> Text,
    }
}

diesel::table! {
    cluster_settings (name) {
        name -> Text,
        value -> Text,
    }
}

diesel::allow_tables_to_appear_in_same_query!(
    users,
    tasks,
    conversations,
    approvals,
    events,
    stats_counters,
    ws_tickets,
    department_counters,
    stats_history,
    cluster_settings
);
