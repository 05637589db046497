//! `GET /api/v1/openapi.json`: valid JSON, every REST route of `gateway::configure`, and the
//! statuses the contract requires on each (401 on authenticated routes, 400/413/415 where a
//! JSON body is read, 404 where an id is looked up, …). Each listed route is also called
//! without a token, which proves it is mounted and that its answer is documented.

use std::collections::BTreeSet;
use std::time::Duration;

use actix_web::{App, test};
use gateway::{JwtKeys, Pulse, PulseOptions};
use serde_json::Value;
use services::{Database, PoolOptions};

/// Who may call a route.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Access {
    Public,
    Bearer,
}
use Access::{Bearer, Public};

/// Every REST route `gateway::configure` mounts (`/ws` and `/metrics` are not REST and are
/// left out of the document on purpose), with the statuses it must document besides the
/// ones derived from its shape.
const ROUTES: &[(&str, &str, Access, &[u16])] = &[
    ("get", "/healthz", Public, &[200]),
    ("get", "/readyz", Public, &[200, 503]),
    ("get", "/api/v1/openapi.json", Public, &[200]),
    ("post", "/api/v1/auth/login", Public, &[200, 401, 429, 503]),
    ("get", "/api/v1/me", Bearer, &[200, 503]),
    ("post", "/api/v1/me/password", Bearer, &[204, 403, 429, 503]),
    ("post", "/api/v1/ws-ticket", Bearer, &[200, 503]),
    ("get", "/api/v1/users", Bearer, &[200, 403, 503]),
    ("post", "/api/v1/users", Bearer, &[201, 403, 409, 429, 503]),
    ("patch", "/api/v1/users/{id}", Bearer, &[200, 403, 409, 429, 503]),
    ("get", "/api/v1/tasks", Bearer, &[200, 400, 503]),
    ("post", "/api/v1/tasks", Bearer, &[201, 503]),
    ("get", "/api/v1/tasks/stats", Bearer, &[200, 503]),
    ("get", "/api/v1/tasks/{id}", Bearer, &[200, 503]),
    ("post", "/api/v1/tasks/{id}/assign", Bearer, &[200, 409, 503]),
    ("post", "/api/v1/tasks/{id}/complete", Bearer, &[200, 409, 503]),
    ("get", "/api/v1/conversations", Bearer, &[200, 400, 503]),
    ("post", "/api/v1/conversations", Bearer, &[201, 503]),
    ("get", "/api/v1/conversations/stats", Bearer, &[200, 503]),
    ("get", "/api/v1/conversations/{id}", Bearer, &[200, 503]),
    ("patch", "/api/v1/conversations/{id}", Bearer, &[200, 409, 503]),
    ("post", "/api/v1/conversations/{id}/escalate", Bearer, &[200, 409, 503]),
    ("post", "/api/v1/conversations/{id}/deescalate", Bearer, &[200, 409, 503]),
    ("post", "/api/v1/conversations/{id}/resolve", Bearer, &[200, 409, 503]),
    ("get", "/api/v1/approvals", Bearer, &[200, 400, 503]),
    ("post", "/api/v1/approvals", Bearer, &[201, 503]),
    ("get", "/api/v1/approvals/stats", Bearer, &[200, 503]),
    ("get", "/api/v1/approvals/{id}", Bearer, &[200, 503]),
    ("post", "/api/v1/approvals/{id}/decide", Bearer, &[200, 403, 409, 503]),
    ("post", "/api/v1/approvals/{id}/execute", Bearer, &[200, 403, 409, 503]),
    ("get", "/api/v1/tasks/stats/departments", Bearer, &[200, 503]),
    ("get", "/api/v1/stats/sla", Bearer, &[200, 503]),
    ("get", "/api/v1/stats/history", Bearer, &[200, 400, 503]),
];

const METHODS: &[&str] = &["get", "put", "post", "delete", "options", "head", "patch", "trace"];

async fn pulse() -> (Pulse, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("pulse.db").display());
    let db = Database::connect(&url, PoolOptions::default()).await.expect("connects");
    db.migrate().await.expect("migrates");
    let jwt = JwtKeys::new(&[7u8; 32], Duration::from_secs(3600)).expect("keys");
    let pulse = Pulse::start(db, PulseOptions::new(jwt)).await.expect("starts");
    (pulse, dir)
}

fn statuses(operation: &Value) -> BTreeSet<u16> {
    operation["responses"]
        .as_object()
        .expect("responses")
        .keys()
        .map(|k| k.parse().unwrap_or_else(|_| panic!("status {k} is a number")))
        .collect()
}

#[actix_web::test]
async fn the_document_covers_every_route_with_its_statuses() {
    let (pulse, _dir) = pulse().await;
    let state = pulse.state();
    let app = test::init_service(App::new().configure(|cfg| gateway::configure(cfg, state))).await;

    let response =
        test::call_service(&app, test::TestRequest::get().uri("/api/v1/openapi.json").to_request()).await;
    assert_eq!(response.status(), 200, "served without a token");
    assert!(
        response.headers().get("content-type").is_some_and(|v| v.as_bytes().starts_with(b"application/json")),
        "JSON content type"
    );
    let doc: Value = serde_json::from_slice(&test::read_body(response).await).expect("valid JSON");
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")), "OpenAPI 3: {}", doc["openapi"]);

    // Exactly the routes of `configure`.
    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, item)| {
            METHODS.iter().filter(|m| item.get(**m).is_some()).map(move |m| ((*m).to_owned(), path.clone()))
        })
        .collect();
    let expected: BTreeSet<(String, String)> =
        ROUTES.iter().map(|(m, p, _, _)| ((*m).to_owned(), (*p).to_owned())).collect();
    assert_eq!(documented, expected, "documented routes differ from configure's");

    // Unique operation ids (OpenAPI requires it; the dashboard's generated types key on them).
    let ids: Vec<&str> = doc["paths"]
        .as_object()
        .expect("paths")
        .values()
        .flat_map(|item| METHODS.iter().filter_map(move |m| item.get(*m)))
        .map(|operation| operation["operationId"].as_str().expect("every operation has an operationId"))
        .collect();
    let unique: BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "repeated operationIds: {ids:?}");

    let scheme = &doc["components"]["securitySchemes"]["bearer"];
    assert_eq!(scheme["type"], "http");
    assert_eq!(scheme["scheme"], "bearer");
    assert_eq!(scheme["bearerFormat"], "JWT");

    for (method, path, access, extra) in ROUTES {
        let operation = &doc["paths"][*path][*method];
        let what = format!("{} {path}", method.to_uppercase());
        let declared = statuses(operation);

        let mut required: BTreeSet<u16> = extra.iter().copied().collect();
        let security = operation.get("security");
        match access {
            Bearer => {
                required.insert(401);
                assert_eq!(security, Some(&serde_json::json!([{"bearer": []}])), "{what}: bearer security");
            }
            Public => assert!(
                security.is_none_or(|s| s.as_array().is_some_and(|a| a.is_empty())),
                "{what}: no security"
            ),
        }
        if operation.get("requestBody").is_some() {
            required.extend([400, 413, 415]);
            assert!(
                operation["requestBody"]["content"].get("application/json").is_some(),
                "{what}: JSON request body"
            );
        }
        if path.contains("{id}") {
            required.insert(404);
            let id = operation["parameters"]
                .as_array()
                .and_then(|ps| ps.iter().find(|p| p["name"] == "id" && p["in"] == "path"))
                .unwrap_or_else(|| panic!("{what}: path parameter id"));
            assert_eq!(id["schema"]["type"], "integer", "{what}: integer id");
            assert_eq!(id["schema"]["format"], "int64", "{what}: int64 id");
        }
        let missing: Vec<_> = required.difference(&declared).collect();
        assert!(missing.is_empty(), "{what}: statuses {missing:?} are not documented (has {declared:?})");

        for status in declared.iter().filter(|s| **s >= 400) {
            let schema = &operation["responses"][status.to_string()]["content"]["application/json"]["schema"];
            assert_eq!(
                schema["$ref"], "#/components/schemas/ErrorBody",
                "{what}: {status} answers the contract's error body"
            );
        }

        // The route is mounted, and its answer to a call without a token is documented.
        let uri = path.replace("{id}", "1");
        let request = match *method {
            "get" => test::TestRequest::get(),
            "post" => test::TestRequest::post(),
            "patch" => test::TestRequest::patch(),
            other => panic!("no request for method {other}"),
        };
        let response = test::call_service(&app, request.uri(&uri).to_request()).await;
        let status = response.status().as_u16();
        if *access == Bearer {
            assert_eq!(status, 401, "{what} without a token");
        }
        assert!(declared.contains(&status), "{what} answered {status}, which is not documented");
    }

    // An undocumented method: 405 with `Allow` listing the documented ones.
    for (path, item) in doc["paths"].as_object().expect("paths") {
        let uri = path.replace("{id}", "1");
        let request = test::TestRequest::default().method(actix_web::http::Method::TRACE).uri(&uri);
        let response = test::call_service(&app, request.to_request()).await;
        assert_eq!(response.status(), 405, "TRACE {path}");
        let expected: Vec<String> =
            METHODS.iter().filter(|m| item.get(**m).is_some()).map(|m| m.to_uppercase()).collect();
        let allow = response.headers().get("allow").and_then(|v| v.to_str().ok()).unwrap_or_default();
        assert_eq!(allow, expected.join(", "), "Allow of {path}");
    }
}

#[actix_web::test]
async fn the_schemas_tell_the_truth() {
    let (pulse, _dir) = pulse().await;
    let state = pulse.state();
    let app = test::init_service(App::new().configure(|cfg| gateway::configure(cfg, state))).await;
    let doc: Value = test::call_and_read_body_json(
        &app,
        test::TestRequest::get().uri("/api/v1/openapi.json").to_request(),
    )
    .await;
    let schemas = &doc["components"]["schemas"];
    let nullable = |schema: &str, field: &str| {
        let s = &schemas[schema];
        let required = s["required"].as_array().is_some_and(|r| r.iter().any(|f| f == field));
        let types = &s["properties"][field]["type"];
        let null = types.as_array().is_some_and(|t| t.iter().any(|t| t == "null"))
            || s["properties"][field]["oneOf"]
                .as_array()
                .is_some_and(|o| o.iter().any(|v| v["type"] == "null"));
        assert!(required, "{schema}.{field} is always sent");
        assert!(null, "{schema}.{field} may be null: {}", s["properties"][field]);
    };
    for (schema, field) in [
        ("Task", "assignee"),
        ("Task", "completedAt"),
        ("Conversation", "escalationReason"),
        ("Conversation", "resolvedAt"),
        ("Approval", "decidedBy"),
        ("Approval", "decisionReason"),
        ("Approval", "decidedAt"),
        ("Approval", "executedBy"),
        ("Approval", "executedAt"),
    ] {
        nullable(schema, field);
    }
    let values = |name: &str| -> Vec<String> {
        schemas[name]["enum"]
            .as_array()
            .unwrap_or_else(|| panic!("{name} is an enum"))
            .iter()
            .map(|v| v.as_str().unwrap_or_default().to_owned())
            .collect()
    };
    fn wire<T: Copy + std::fmt::Display>(all: &[T]) -> Vec<String> {
        all.iter().map(ToString::to_string).collect()
    }
    use domain_events::model::{ApprovalStatus, ConversationState, Decision, Role, TaskStatus};
    assert_eq!(values("TaskStatus"), wire(TaskStatus::ALL));
    assert_eq!(values("TaskStatus"), ["pending", "in_progress", "completed"]);
    assert_eq!(values("ConversationState"), wire(ConversationState::ALL));
    assert_eq!(values("ApprovalStatus"), wire(ApprovalStatus::ALL));
    assert_eq!(values("Role"), wire(Role::ALL));
    assert_eq!(values("Decision"), wire(Decision::ALL));

    let user_required = schemas["User"]["required"].as_array().expect("User.required");
    for field in ["id", "username", "role", "active", "createdAt"] {
        assert!(user_required.iter().any(|f| f == field), "User.{field} is always sent");
    }
    assert!(schemas["User"]["properties"].get("passwordHash").is_none());
    assert_eq!(schemas["User"]["properties"]["active"]["type"], "boolean");
    for field in ["role", "active", "password"] {
        assert!(schemas["UserChanges"]["properties"].get(field).is_some(), "UserChanges.{field}");
    }
    assert!(
        schemas["UserChanges"]["required"].as_array().is_none_or(|r| r.is_empty()),
        "every UserChanges field is optional"
    );
    let change = &schemas["PasswordChange"];
    assert_eq!(change["required"], serde_json::json!(["currentPassword", "newPassword"]));
    assert_eq!(schemas["Task"]["properties"]["id"]["format"], "int64");
    assert_eq!(schemas["Task"]["properties"]["createdAt"]["format"], "date-time");
    assert!(schemas["Task"]["properties"].get("type").is_some(), "Task.kind is sent as `type`");
    assert_eq!(schemas["ErrorBody"]["properties"]["error"]["$ref"], "#/components/schemas/ErrorDetail");
    let stats = &doc["paths"]["/api/v1/approvals/stats"]["get"]["responses"]["200"]["content"]["application/json"]
        ["schema"]["$ref"];
    let wrapper = stats.as_str().expect("a named schema").trim_start_matches("#/components/schemas/");
    assert_eq!(schemas[wrapper]["properties"]["stats"]["$ref"], "#/components/schemas/ApprovalStats");
    let page =
        &doc["paths"]["/api/v1/tasks"]["get"]["responses"]["200"]["content"]["application/json"]["schema"];
    let page =
        page["$ref"].as_str().map_or(page, |r| &schemas[r.trim_start_matches("#/components/schemas/")]);
    let item = &page["properties"]["items"]["items"];
    let item =
        item["$ref"].as_str().map_or(item, |r| &schemas[r.trim_start_matches("#/components/schemas/")]);
    assert_eq!(item, &schemas["Task"], "a page of tasks holds tasks");
    assert!(
        page["required"].as_array().is_some_and(|r| r.iter().any(|f| f == "nextCursor")),
        "nextCursor is always sent: {page}"
    );
}
