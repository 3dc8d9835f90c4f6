//! The API's one error shape, Outpost's `{"status": N, "message": "…", "data": …}`, and how
//! store and ingest failures map onto it. Server-side failures are logged here and answered
//! without internals (no SQL, no driver messages).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tracing::{error, warn};

use crate::store::{ErrorKind, StoreError};

/// An error response. `data` is Outpost's: an array of messages for body validation, an object
/// keyed `query.<param>` for query validation, or other details.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub data: Option<Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            data: None,
        }
    }

    pub fn with_data(mut self, data: Value) -> ApiError {
        self.data = Some(data);
        self
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(what: &str) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, format!("{what} not found"))
    }

    pub fn unauthorized() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized: send Authorization: Bearer <API key or tenant JWT>",
        )
    }

    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, message)
    }

    /// 422 for a request body: each message names the field at fault.
    pub fn validation(messages: Vec<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "validation error")
            .with_data(json!(messages))
    }

    /// 422 for a query parameter, keyed as Outpost does (`query.dir`, `query.time[gte]`).
    pub fn query(param: &str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "validation error")
            .with_data(json!({ format!("query.{param}"): message.into() }))
    }

    /// 422 for a body that is not JSON (Outpost's status and message for it).
    pub fn invalid_json(reason: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid JSON")
            .with_data(json!([reason.into()]))
    }

    pub fn internal() -> ApiError {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal server error (see jetpost's log)",
        )
    }

    pub fn unavailable() -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the store is unavailable; retry later",
        )
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> ApiError {
        match err.kind() {
            ErrorKind::Transient => {
                warn!("store unavailable: {err}");
                ApiError::unavailable()
            }
            ErrorKind::NotFound => match &err {
                StoreError::NotFound { what, .. } => ApiError::not_found(what),
                _ => ApiError::new(StatusCode::NOT_FOUND, err.to_string()),
            },
            ErrorKind::Conflict => ApiError::new(StatusCode::CONFLICT, err.to_string()),
            ErrorKind::Invalid => ApiError::bad_request(err.to_string()),
            ErrorKind::Permanent => {
                error!("store error: {err}");
                ApiError::internal()
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({
            "status": self.status.as_u16(),
            "message": self.message,
        });
        if let Some(data) = self.data {
            body["data"] = data;
        }
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            // RFC 6750: say which scheme the API expects.
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// A handler that panicked answers 500 in the one error shape, for that request only; the
/// panic is logged (the connection and the process carry on).
pub(crate) fn panicked(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("(no message)");
    error!("API handler panicked: {message}");
    ApiError::internal().into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_errors_map_to_statuses_without_internals() {
        let e: ApiError = StoreError::NotFound {
            what: "destination",
            id: "d1".into(),
        }
        .into();
        assert_eq!(
            (e.status, e.message.as_str()),
            (StatusCode::NOT_FOUND, "destination not found")
        );
        let e: ApiError = StoreError::Corrupt {
            what: "column",
            detail: "SELECT secret FROM x".into(),
        }
        .into();
        assert_eq!(e.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!e.message.contains("SELECT"));
        let e: ApiError = StoreError::Invalid("bad cursor".into()).into();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_500_in_the_error_shape() {
        let app = axum::Router::new()
            .route(
                "/boom",
                axum::routing::get(|| async {
                    if true {
                        panic!("handler bug");
                    }
                }),
            )
            .layer(tower_http::catch_panic::CatchPanicLayer::custom(panicked));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        for _ in 0..2 {
            // Twice: the server carries on after a panic.
            use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
            let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
            stream
                .write_all(b"GET /boom HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                .await
                .unwrap();
            let mut response = String::new();
            stream.read_to_string(&mut response).await.unwrap();
            assert!(response.starts_with("HTTP/1.1 500"), "{response}");
            let body: Value =
                serde_json::from_str(response.split("\r\n\r\n").nth(1).unwrap()).unwrap();
            assert_eq!(body["status"], 500);
            assert!(body["message"].as_str().unwrap().contains("internal"));
        }
    }
}
