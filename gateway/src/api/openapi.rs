//! `GET /v1/openapi.json`, generated from the handlers' annotations.

use utoipa::OpenApi;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};

use crate::api;

#[derive(OpenApi)]
#[openapi(
    info(title = "RauskuClaw", description = "Self-hosted orchestration gateway: durable jobs, skills, sessions with an agent loop, approvals, events."),
    paths(
        api::runtime::health, api::runtime::metrics, api::runtime::runtime, api::runtime::reload,
        api::jobs::create, api::jobs::list, api::jobs::get_one, api::jobs::cancel, api::jobs::retry,
        api::jobs::logs, api::jobs::stream,
        api::job_types::list, api::job_types::get_one, api::job_types::create, api::job_types::patch,
        api::keys::list, api::keys::create, api::keys::revoke,
        api::events::list, api::events::stream,
        api::sessions::list, api::sessions::get_one, api::sessions::send, api::sessions::interrupt,
        api::sessions::events, api::sessions::stream,
        api::approvals::list, api::approvals::decide,
        api::console::console,
        api::github::receive,
        openapi,
    ),
    modifiers(&Security),
    security(("bearer" = []), ("api_key" = [])),
)]
pub struct ApiDoc;

struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
    }
}

#[utoipa::path(get, path = "/v1/openapi.json", tag = "operations", responses((status = 200, description = "this document")))]
pub async fn openapi() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(ApiDoc::openapi())
}
